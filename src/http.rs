//! The HTTP listener for operators and their tools (`http-port`, on `bind`):
//!
//! - `GET /health`: 200, or 503 while the node drains or stops (load balancers take it out).
//! - `GET /ready`: 200 once the node has joined its cluster and caught up; 503 before, and
//!   while it drains or stops.
//! - `GET /metrics`: every metric of [`crate::metrics::collect`] in Prometheus text (format
//!   0.0.4), or OpenMetrics 1.0 when the scraper asks for it (`Accept:
//!   application/openmetrics-text`). Encoded by the `prometheus-client` crate.
//! - `GET /cluster/members`: the `HC.MEMBERS` table as JSON.
//!
//! HTTP/1.1 by `hyper`. Nothing here runs unless a request arrives: a metric is read at scrape
//! time from the registry's atomics, never pushed.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hypercache_resp::Frame;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType as PromType;
use tokio::net::TcpListener;

use crate::metrics::{Collected, HistogramData, MetricType, CATALOGUE};
use crate::state::Shared;

/// The content type of OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `listener` until the node stops.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(node_id = %shared.node_id, component = "http", error = %e, "accept failed; backing off");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let sh = shared.clone();
                let svc = service_fn(move |req| route(sh.clone(), req));
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                shared.tasks.spawn(async move {
                    // A client that resets or times out is its own business.
                    let _ = conn.await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(body.into()))
        .expect("static parts are valid")
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string() + "\n")
}

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n",
        ));
    }
    Ok(match req.uri().path() {
        "/health" => {
            let (status, code) = health(&shared);
            json(code, &serde_json::json!({ "status": status }))
        }
        "/ready" => {
            let (ready, why) = readiness(&shared);
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(code, &serde_json::json!({ "ready": ready, "status": why }))
        }
        "/metrics" => {
            let open = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            let (ctype, body) = prometheus(&shared, open);
            reply(StatusCode::OK, ctype, body)
        }
        "/cluster/members" => json(
            StatusCode::OK,
            &frame_json(&crate::cmd::hc::member_table(&shared)),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /health, /ready, /metrics or /cluster/members\n",
        ),
    })
}

fn stopping(shared: &Shared) -> bool {
    *shared.shutdown.borrow()
}

fn draining(shared: &Shared) -> bool {
    shared.cluster.as_ref().is_some_and(|c| c.is_draining())
}

/// `/health`: `ok` (200), `draining` or `stopping` (503).
pub fn health(shared: &Shared) -> (&'static str, StatusCode) {
    if stopping(shared) {
        ("stopping", StatusCode::SERVICE_UNAVAILABLE)
    } else if draining(shared) {
        ("draining", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    }
}

/// `/ready`: whether the node should get traffic, and why not.
pub fn readiness(shared: &Shared) -> (bool, &'static str) {
    if stopping(shared) {
        return (false, "stopping");
    }
    if draining(shared) {
        return (false, "draining");
    }
    match &shared.cluster {
        None => (true, "ready"),
        Some(cl) if !cl.view().joined => (false, "joining"),
        Some(cl) if !cl.is_synced() => (false, "catching up"),
        Some(_) => (true, "ready"),
    }
}

/// A RESP reply as JSON (maps as objects, arrays as arrays, bulks as strings).
fn frame_json(f: &Frame) -> serde_json::Value {
    use serde_json::Value;
    match f {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            Value::Array(items.iter().map(frame_json).collect())
        }
        Frame::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match frame_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, frame_json(v))
                })
                .collect(),
        ),
        Frame::Bulk(b) | Frame::Simple(b) | Frame::Double(b) | Frame::BigNumber(b) => {
            Value::String(String::from_utf8_lossy(b).into_owned())
        }
        Frame::Integer(i) => Value::from(*i),
        Frame::Boolean(b) => Value::from(*b),
        Frame::Null | Frame::NullArray => Value::Null,
        other => Value::String(format!("{other:?}")),
    }
}

/// The Prometheus (or OpenMetrics) text of every metric: its content type and body.
pub fn prometheus(shared: &Shared, openmetrics: bool) -> (&'static str, String) {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Exposition(crate::metrics::collect(shared))));
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        (OPENMETRICS, out)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            out,
        )
    }
}

/// The Prometheus name of a dotted metric name (`dist.write.attempts` ->
/// `hypercache_dist_write_attempts`; the encoder adds `_total` to counters).
fn prom_name(name: &str, kind: MetricType) -> String {
    let mut n = format!("hypercache_{}", name.replace('.', "_"));
    if kind == MetricType::Histogram {
        n.push_str("_seconds");
    }
    n
}

/// One scrape's figures, encoded as the catalogue describes them.
#[derive(Debug)]
struct Exposition(Collected);

/// A histogram's figures in the encoder's terms: seconds, per-bucket (not cumulative) counts,
/// `+Inf` last.
struct Hist<'a>(&'a HistogramData);

impl EncodeMetric for Hist<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let d = self.0;
        let mut buckets = Vec::with_capacity(d.cumulative.len() + 1);
        let mut prev = 0;
        for &(bound_us, below) in &d.cumulative {
            buckets.push((bound_us as f64 / 1e6, below - prev));
            prev = below;
        }
        buckets.push((f64::INFINITY, d.count - prev));
        encoder.encode_histogram::<NoLabelSet>(d.sum_us as f64 / 1e6, d.count, &buckets, None)
    }

    fn metric_type(&self) -> PromType {
        PromType::Histogram
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for desc in CATALOGUE {
            let name = prom_name(desc.name, desc.kind);
            match desc.kind {
                MetricType::Histogram => {
                    let series: Vec<_> = self
                        .0
                        .histograms
                        .iter()
                        .filter(|h| h.name == desc.name)
                        .collect();
                    if series.is_empty() {
                        continue;
                    }
                    let mut family =
                        encoder.encode_descriptor(&name, desc.help, None, PromType::Histogram)?;
                    if series.len() == 1 && series[0].labels.is_empty() {
                        Hist(&series[0].data).encode(family)?;
                        continue;
                    }
                    for h in series {
                        Hist(&h.data).encode(family.encode_family(&h.labels)?)?;
                    }
                }
                kind => {
                    let series: Vec<_> = self
                        .0
                        .samples
                        .iter()
                        .filter(|s| s.name == desc.name)
                        .collect();
                    if series.is_empty() {
                        continue;
                    }
                    let t = if kind == MetricType::Counter {
                        PromType::Counter
                    } else {
                        PromType::Gauge
                    };
                    let one = |s: &crate::metrics::Sample, enc: MetricEncoder| {
                        if kind == MetricType::Counter {
                            ConstCounter::new(s.value).encode(enc)
                        } else {
                            ConstGauge::new(s.value as i64).encode(enc)
                        }
                    };
                    let mut family = encoder.encode_descriptor(&name, desc.help, None, t)?;
                    match desc.label {
                        None => one(series[0], family)?,
                        Some(l) => {
                            for s in series {
                                let v = s.label.as_deref().unwrap_or("");
                                one(s, family.encode_family(&[(l, v)])?)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
