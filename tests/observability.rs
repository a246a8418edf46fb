//! Observability with real processes: `/metrics` scraped after known traffic and read by a real
//! Prometheus parser, `/health` and `/ready` through a drain and a join, OpenTelemetry traces
//! across three processes into an OTLP receiver inside the test, and no log line per request.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestCluster;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message as _;

/// `GET path` on `127.0.0.1:port`: the status and the body.
fn http_get(port: u16, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The metric families of a scrape, parsed by the Python Prometheus client's own parsers (the
/// text format's, or OpenMetrics' when `openmetrics`): `(name, type)` -> samples
/// `(sample name, labels, value)`.
type Families = BTreeMap<(String, String), Vec<(String, BTreeMap<String, String>, f64)>>;

fn parse_with_prometheus_client(text: &str, openmetrics: bool) -> Families {
    let parser = if openmetrics {
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families"
    } else {
        "from prometheus_client.parser import text_string_to_metric_families"
    };
    let script = format!(
        "import sys, json\n{parser}\nout = []\nfor f in text_string_to_metric_families(sys.stdin.read()):\n    out.append([f.name, f.type, [[s.name, s.labels, s.value] for s in f.samples]])\nprint(json.dumps(out))\n"
    );
    // Debian's python3-prometheus-client is installed for the system's interpreter.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut child = Command::new(python)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with python3-prometheus-client; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape (is python3-prometheus-client installed? \
         scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut families = Families::new();
    for f in v.as_array().unwrap() {
        let name = f[0].as_str().unwrap().to_string();
        let kind = f[1].as_str().unwrap().to_string();
        let samples = f[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (
                    s[0].as_str().unwrap().to_string(),
                    labels,
                    s[2].as_f64().unwrap(),
                )
            })
            .collect();
        families.insert((name, kind), samples);
    }
    families
}

/// The value of `sample` with exactly `labels` in a parsed scrape (0 if absent).
fn value(f: &Families, sample: &str, labels: &[(&str, &str)]) -> f64 {
    f.values()
        .flatten()
        .find(|(n, l, _)| {
            n == sample
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map_or(0.0, |s| s.2)
}

fn scrape(c: &TestCluster, i: usize) -> Families {
    let (status, body) = http_get(c.http_ports[i], "/metrics", None);
    assert_eq!(status, 200);
    parse_with_prometheus_client(&body, false)
}

#[test]
fn metrics_after_known_traffic_parse_and_count_exactly() {
    let c = TestCluster::start(3, &[]);
    let before: Vec<Families> = (0..3).map(|i| scrape(&c, i)).collect();
    let mut conn = c.conn_at(0, "quorum", "quorum");
    for k in ["m:a", "m:b", "m:c"] {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut conn).unwrap();
    }
    let got: Option<String> = redis::cmd("GET").arg("m:a").query(&mut conn).unwrap();
    assert_eq!(got.as_deref(), Some("v"));
    // A write's machine books its counts when it finishes, which can be just after the client's
    // reply (a QUORUM write answers before the last replica's ack): scrape until the three
    // writes are booked, or 5 s pass (then the assertion below fails).
    let attempts = |after: &[Families]| -> f64 {
        (0..3)
            .map(|i| {
                value(&after[i], "hypercache_dist_write_attempts_total", &[])
                    - value(&before[i], "hypercache_dist_write_attempts_total", &[])
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let after: Vec<Families> = loop {
        let after: Vec<Families> = (0..3).map(|i| scrape(&c, i)).collect();
        if attempts(&after) >= 3.0 || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // The parser typed them as the catalogue says.
    let f = &after[0];
    for (name, kind) in [
        ("hypercache_dist_write_attempts", "counter"),
        ("hypercache_store_keys", "gauge"),
        ("hypercache_dist_latency_seconds", "histogram"),
        ("hypercache_dist_transport_bytes_out", "counter"),
        ("hypercache_dist_members_alive", "gauge"),
    ] {
        assert!(
            f.contains_key(&(name.to_string(), kind.to_string())),
            "{name} is not a {kind} in the scrape"
        );
    }
    // 3 SETs at QUORUM through one node of 3: 3 write attempts in the cluster (each at the
    // slot's coordinator), 3 client-facing set latencies at QUORUM on the node asked.
    let delta = |name: &str, labels: &[(&str, &str)]| -> f64 {
        (0..3)
            .map(|i| value(&after[i], name, labels) - value(&before[i], name, labels))
            .sum()
    };
    assert_eq!(delta("hypercache_dist_write_attempts_total", &[]), 3.0);
    let set_q = [("op", "set"), ("level", "quorum")];
    assert_eq!(
        value(&after[0], "hypercache_dist_latency_seconds_count", &set_q)
            - value(&before[0], "hypercache_dist_latency_seconds_count", &set_q),
        3.0
    );
    let get_q = [("op", "get"), ("level", "quorum")];
    assert_eq!(
        value(&after[0], "hypercache_dist_latency_seconds_count", &get_q)
            - value(&before[0], "hypercache_dist_latency_seconds_count", &get_q),
        1.0
    );
    // Buckets are cumulative and end at +Inf with the count.
    let inf = value(
        &after[0],
        "hypercache_dist_latency_seconds_bucket",
        &[("op", "set"), ("level", "quorum"), ("le", "+Inf")],
    );
    assert_eq!(
        inf,
        value(&after[0], "hypercache_dist_latency_seconds_count", &set_q)
    );
    // Each SET is a key on all 3 replicas.
    for (i, a) in after.iter().enumerate() {
        assert_eq!(value(a, "hypercache_store_keys", &[]), 3.0, "node {i}");
    }
    // Bytes flowed to each peer, labelled by its node id.
    let peers: BTreeSet<String> = after[0]
        .values()
        .flatten()
        .filter(|(n, _, v)| n == "hypercache_dist_transport_bytes_out_total" && *v > 0.0)
        .filter_map(|(_, l, _)| l.get("peer").cloned())
        .collect();
    assert_eq!(peers.len(), 2, "{peers:?}");
    // The same figures in OpenMetrics, read by its stricter parser.
    let (status, body) = http_get(
        c.http_ports[0],
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"));
    let om = parse_with_prometheus_client(&body, true);
    assert_eq!(
        value(&om, "hypercache_dist_latency_seconds_count", &set_q),
        value(&after[0], "hypercache_dist_latency_seconds_count", &set_q)
    );
    // HC.METRICS reads the same registry.
    assert_eq!(
        c.metric(0, "dist.latency.set.quorum.count") as f64,
        value(&after[0], "hypercache_dist_latency_seconds_count", &set_q)
    );
    // An INCR runs at its slot's first replica: each one node 0 forwarded books one round trip
    // to its coordinator, and every call to a peer one round trip.
    let (sent, forward, peer) = (
        c.metric(0, "dist.forward.sent"),
        c.metric(0, "dist.latency.forward.count"),
        c.metric(0, "dist.latency.peer.count"),
    );
    for i in 0..20 {
        let n: i64 = redis::cmd("INCR")
            .arg(format!("fw:{i}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(n, 1);
    }
    // (A machine books its counters when it closes, just after its reply: read until both
    // figures are in, bounded.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let (sent, forward) = loop {
        let d = (
            c.metric(0, "dist.forward.sent") - sent,
            c.metric(0, "dist.latency.forward.count") - forward,
        );
        if (d.0 > 0 && d.0 == d.1) || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(sent > 0, "none of 20 keys has another first replica");
    assert_eq!(forward, sent);
    assert!(c.metric(0, "dist.latency.peer.count") - peer >= sent);
    // Every peer answered: no call timed out (a read's hedge is not a timeout).
    for i in 0..3 {
        assert_eq!(c.metric(i, "dist.transport.timeouts"), 0, "node {i}");
    }
}

#[test]
fn health_turns_503_on_drain_and_ready_waits_for_the_catch_up() {
    let mut c = TestCluster::start(3, &[]);
    for i in 0..3 {
        assert_eq!(http_get(c.http_ports[i], "/health", None).0, 200);
        assert_eq!(http_get(c.http_ports[i], "/ready", None).0, 200);
    }
    // Data for a newcomer to receive, at a pace slow enough to watch.
    let mut conn = c.conn_at(0, "one", "all");
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("SET")
            .arg(format!("r:{i}"))
            .arg("x".repeat(100))
            .ignore();
    }
    let _: () = pipe.query(&mut conn).unwrap();
    c.node_args.push(Vec::new());
    let extra = vec![
        "--rebalance-max-bytes-per-sec".to_string(),
        "300kb".to_string(),
    ];
    c.extra.extend(extra);
    let n = c.add(0);
    // Answering PING is not being ready: it has not joined, or not received its slots yet.
    let (status, body) = http_get(c.http_ports[n], "/ready", None);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("joining") || body.contains("catching up"),
        "{body}"
    );
    assert_eq!(http_get(c.http_ports[n], "/health", None).0, 200);
    wait_for("the newcomer to be ready", Duration::from_secs(90), || {
        http_get(c.http_ports[n], "/ready", None).0 == 200
    });
    assert_eq!(c.info_field(n, "hc_synced"), "1");

    // A drain takes the node out of the load balancer at once; the others stay in.
    let _: String = redis::cmd("HC.DRAIN").query(&mut c.conn(2)).unwrap();
    let (status, body) = http_get(c.http_ports[2], "/health", None);
    assert_eq!((status, body.trim()), (503, r#"{"status":"draining"}"#));
    assert_eq!(http_get(c.http_ports[2], "/ready", None).0, 503);
    for i in [0, 1, n] {
        assert_eq!(
            http_get(c.http_ports[i], "/health", None).0,
            200,
            "node {i}"
        );
    }
    // The membership as JSON, the drain included.
    let (status, body) = http_get(c.http_ports[0], "/cluster/members", None);
    assert_eq!(status, 200);
    let members: serde_json::Value = serde_json::from_str(&body).unwrap();
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 4);
    wait_for("the drain to be gossiped", Duration::from_secs(10), || {
        let (_, body) = http_get(c.http_ports[0], "/cluster/members", None);
        let m: serde_json::Value = serde_json::from_str(&body).unwrap();
        m.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["draining"] == 1)
            .count()
            == 1
    });
}

#[test]
fn the_default_configuration_logs_nothing_per_request() {
    let dir = std::env::temp_dir().join(format!("hc-obs-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = TestCluster::start_logged(2, &[], Some(dir.clone()));
    let lines = || -> usize {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .lines()
                    .count()
            })
            .sum()
    };
    // Let start-up settle (links, membership, the first rings).
    std::thread::sleep(Duration::from_secs(2));
    let before = lines();
    assert!(before > 0, "the nodes log at info");
    for node in 0..2 {
        let mut conn = c.conn_at(node, "quorum", "quorum");
        for i in 0..500 {
            let k = format!("l:{i}");
            let _: () = redis::cmd("SET").arg(&k).arg(i).query(&mut conn).unwrap();
            let _: Option<String> = redis::cmd("GET").arg(&k).query(&mut conn).unwrap();
            let _: i64 = redis::cmd("DEL").arg(&k).query(&mut conn).unwrap();
            // An error reply is a request too.
            let _: redis::RedisResult<()> = redis::cmd("INCR").arg("nonnumeric").query(&mut conn);
        }
        let _: () = redis::cmd("SET")
            .arg("nonnumeric")
            .arg("x")
            .query(&mut conn)
            .unwrap();
    }
    let _ = http_get(c.http_ports[0], "/metrics", None);
    assert_eq!(lines(), before, "requests wrote log lines");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A span as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: BTreeMap<String, String>,
    node: String,
}

fn kv(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|a| {
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (a.key.clone(), v)
        })
        .collect()
}

/// An OTLP/HTTP receiver on a free port: every body posted to `/v1/traces` decoded, and every
/// raw body kept (to look for key bytes).
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Received>>>,
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Metric points exported: (node id, metric name, value of a sum or gauge point).
    metrics: Arc<Mutex<Vec<(String, String, i64)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let spans: Arc<Mutex<Vec<Received>>> = Default::default();
        let raw: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
        let metrics: Arc<Mutex<Vec<(String, String, i64)>>> = Default::default();
        let (sp, rw, me) = (spans.clone(), raw.clone(), metrics.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (sp, rw, me) = (sp.clone(), rw.clone(), me.clone());
                std::thread::spawn(move || serve_otlp(conn, &sp, &rw, &me));
            }
        });
        Receiver {
            port,
            spans,
            raw,
            metrics,
        }
    }
}

/// The `node_id` attribute of an export's resource (empty if none).
fn node_of(r: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    r.map(|r| kv(&r.attributes))
        .and_then(|a| a.get("node_id").cloned())
        .unwrap_or_default()
}

/// Serves one keep-alive connection of OTLP posts.
fn serve_otlp(
    conn: TcpStream,
    spans: &Mutex<Vec<Received>>,
    raw: &Mutex<Vec<Vec<u8>>>,
    metrics: &Mutex<Vec<(String, String, i64)>>,
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if path == "/v1/traces" {
            let req = ExportTraceServiceRequest::decode(&body[..]).expect("valid OTLP traces");
            let mut got = spans.lock().unwrap();
            for rs in &req.resource_spans {
                let node = node_of(rs.resource.as_ref());
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        got.push(Received {
                            name: s.name.clone(),
                            trace_id: s.trace_id.clone(),
                            span_id: s.span_id.clone(),
                            parent: s.parent_span_id.clone(),
                            attrs: kv(&s.attributes),
                            node: node.clone(),
                        });
                    }
                }
            }
        }
        if path == "/v1/metrics" {
            use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
            use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
            let req = ExportMetricsServiceRequest::decode(&body[..]).expect("valid OTLP metrics");
            let mut got = metrics.lock().unwrap();
            for rm in &req.resource_metrics {
                let node = node_of(rm.resource.as_ref());
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        let points = match &m.data {
                            Some(metric::Data::Sum(x)) => &x.data_points,
                            Some(metric::Data::Gauge(x)) => &x.data_points,
                            _ => continue,
                        };
                        for p in points {
                            let v = match p.value {
                                Some(number_data_point::Value::AsInt(i)) => i,
                                Some(number_data_point::Value::AsDouble(d)) => d as i64,
                                None => continue,
                            };
                            got.push((node.clone(), m.name.clone(), v));
                        }
                    }
                }
            }
        }
        raw.lock().unwrap().push(body);
        let _ = w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        );
    }
}

#[test]
fn one_set_at_quorum_is_one_trace_across_three_processes_without_key_bytes() {
    let rx = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", rx.port);
    let c = TestCluster::start(
        3,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-sampling-ratio",
            "1",
            "--otlp-metrics-interval",
            "500",
        ],
    );
    let key = "user:4711:secret-key-bytes";
    let val = "secret-value-bytes";
    let mut conn = c.conn_at(0, "quorum", "quorum");
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(val)
        .query(&mut conn)
        .unwrap();

    // The root span of that SET, on node 0.
    let mut root = None;
    wait_for("the dist.set span", Duration::from_secs(20), || {
        root = rx
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.name == "dist.set"
                    && s.attrs.get("cache.key.length").map(String::as_str)
                        == Some(&key.len().to_string())
            })
            .cloned();
        root.is_some()
    });
    let root = root.unwrap();
    assert!(root.parent.is_empty(), "dist.set is a root span");
    assert_eq!(root.attrs["dist.consistency"], "quorum");
    assert_eq!(root.attrs["dist.owners.count"], "3");
    let acks: i64 = root.attrs["dist.acks"].parse().unwrap();
    assert!((2..=3).contains(&acks), "dist.acks {acks}");
    // Its trace reaches all three processes: the replicas' spans arrive as they export.
    let trace = root.trace_id.clone();
    let in_trace = || -> Vec<Received> {
        rx.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect()
    };
    wait_for(
        "spans of the SET from all three nodes",
        Duration::from_secs(20),
        || {
            in_trace()
                .iter()
                .map(|s| s.node.clone())
                .collect::<BTreeSet<_>>()
                .len()
                == 3
        },
    );
    let spans = in_trace();
    let ids: BTreeSet<&Vec<u8>> = spans.iter().map(|s| &s.span_id).collect();
    for s in &spans {
        assert!(
            s.parent.is_empty() || ids.contains(&s.parent),
            "{} has a parent outside the trace",
            s.name
        );
    }
    let replicate: Vec<&Received> = spans
        .iter()
        .filter(|s| s.name == "dist.replicate.set")
        .collect();
    assert!(replicate.len() >= 2, "a child span per replica: {spans:#?}");
    for r in &replicate {
        assert!(!r.attrs["peer.id"].is_empty());
    }
    assert!(spans.iter().any(|s| s.name == "dist.serve.put"));
    // An anti-entropy round is a span with a child per request.
    let _: redis::Value = redis::cmd("HC.SYNC").query(&mut c.conn(0)).unwrap();
    wait_for(
        "an anti-entropy round's spans",
        Duration::from_secs(20),
        || {
            let got = rx.spans.lock().unwrap().clone();
            got.iter()
                .filter(|r| r.name == "dist.merkle.round" && r.parent.is_empty())
                .any(|r| {
                    got.iter()
                        .any(|s| s.name == "dist.merkle.tree" && s.parent == r.span_id)
                })
        },
    );
    // The metrics go out too (every 500 ms here): the write attempts of that SET among them.
    wait_for("exported metrics", Duration::from_secs(20), || {
        rx.metrics
            .lock()
            .unwrap()
            .iter()
            .any(|(_, name, v)| name == "hypercache.dist.write.attempts" && *v >= 1)
    });
    assert!(rx
        .metrics
        .lock()
        .unwrap()
        .iter()
        .any(|(_, name, _)| name == "hypercache.dist.members.alive"));
    // No key (or value) bytes in anything exported: spans, attributes, resources, metrics.
    std::thread::sleep(Duration::from_secs(1));
    let raw = rx.raw.lock().unwrap();
    assert!(raw.len() > 1, "traces and metrics were exported");
    for body in raw.iter() {
        for secret in [key.as_bytes(), val.as_bytes(), b"secret-key-bytes"] {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret),
                "exported data contains key or value bytes"
            );
        }
    }
}

/// Every `tracing` record of the node names the node and the component it comes from (the
/// shared docs' rule: logs are filtered by both). A source check, since most records only
/// happen on failures no test provokes.
#[test]
fn every_log_record_carries_node_id_and_component() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    walk(&root.join("cluster/src"), &mut files);
    let mut missing = Vec::new();
    let mut seen = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for level in ["info", "warn", "error", "debug", "trace"] {
            let pat = format!("tracing::{level}!(");
            let mut from = 0;
            while let Some(at) = text[from..].find(&pat) {
                let start = from + at;
                let mut depth = 0;
                let mut end = start;
                for (i, ch) in text[start..].char_indices() {
                    match ch {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = start + i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let call = &text[start..=end];
                seen += 1;
                if !call.contains("node_id") || !call.contains("component") {
                    let line = text[..start].lines().count() + 1;
                    missing.push(format!("{}:{line}", f.display()));
                }
                from = end;
            }
        }
    }
    assert!(
        seen >= 40,
        "found only {seen} log records: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "records without node_id or component: {missing:?}"
    );
}

/// The Grafana dashboard and the Prometheus rules in `deploy/` query only metrics the node
/// exports (the Prometheus names of docs/metrics.md, which a unit test keeps equal to the
/// registry): a renamed metric breaks this test, not an operator's dashboard.
#[test]
fn dashboards_and_alerts_use_only_exported_metric_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    let mut exported = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let prom = cells[2].trim_matches('`').to_string();
        if cells[3] == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{prom}{suffix}"));
            }
        }
        exported.insert(prom);
    }
    assert!(
        exported.len() > 80,
        "{} names in docs/metrics.md",
        exported.len()
    );
    let mut used = BTreeSet::new();
    for file in [
        "deploy/grafana/hypercache-dashboard.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("hypercache_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert((file, name));
        }
    }
    assert!(
        used.len() > 30,
        "the dashboard and rules query hypercache metrics"
    );
    let unknown: Vec<_> = used.iter().filter(|(_, n)| !exported.contains(n)).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/hypercache-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 20));
}
