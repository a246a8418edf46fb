//! Process tests of membership and elasticity: real `hypercache` processes on loopback. A node
//! joins through one seed and takes its share while clients keep reading; a drained node hands
//! everything over and stops with nothing lost; a killed node's slots get their replicas back
//! after `remove-after`. Every loop is bounded.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestCluster;
use redis::{Connection, Value};

fn key(i: usize) -> String {
    format!("elastic:{i}")
}

/// SETs `elastic:i` = `v{i}` for `0..n` at QUORUM, pipelined, through the nodes in turn.
fn load(c: &TestCluster, nodes: &[usize], n: usize) {
    let mut conns: Vec<Connection> = nodes
        .iter()
        .map(|&i| c.conn_at(i, "quorum", "quorum"))
        .collect();
    let all: Vec<usize> = (0..n).collect();
    for (b, chunk) in all.chunks(1000).enumerate() {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET").arg(key(*i)).arg(format!("v{i}"));
        }
        let conn = &mut conns[b % nodes.len()];
        let r: Vec<String> = p.query(conn).unwrap();
        assert!(r.iter().all(|x| x == "OK"));
    }
}

/// The keys of `0..n` that `conn` does not read back right, pipelined.
fn wrong(conn: &mut Connection, n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("GET").arg(key(*i));
        }
        let r: Vec<Option<String>> = p.query(conn).unwrap();
        for (i, v) in chunk.iter().zip(r) {
            if v.as_deref() != Some(format!("v{i}").as_str()) {
                out.push(*i);
            }
        }
    }
    out
}

/// A client reading random keys at QUORUM through `nodes` until stopped (at most 2,000,000
/// reads): counts reads, errors and wrong values.
struct Reader {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

impl Reader {
    fn start(c: &TestCluster, nodes: &[usize], n: usize) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut conns: Vec<Connection> = nodes
            .iter()
            .map(|&i| c.conn_at(i, "quorum", "quorum"))
            .collect();
        let (s, r) = (stop.clone(), reads.clone());
        let handle = std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for round in 0..2_000_000u64 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % n as u64) as usize;
                let k = conns.len() as u64;
                let conn = &mut conns[(round % k) as usize];
                let got: redis::RedisResult<Option<String>> =
                    redis::cmd("GET").arg(key(i)).query(conn);
                r.fetch_add(1, Ordering::Relaxed);
                match got {
                    Ok(Some(v)) if v == format!("v{i}") => {}
                    other => bad.push(format!("{}: {other:?}", key(i))),
                }
            }
            bad
        });
        Reader {
            stop,
            reads,
            handle,
        }
    }

    /// Stops the reader: (reads, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let bad = self.handle.join().unwrap();
        (self.reads.load(Ordering::Relaxed), bad)
    }
}

fn members(c: &TestCluster, i: usize) -> Vec<BTreeMap<String, Value>> {
    redis::cmd("HC.MEMBERS").query(&mut c.conn(i)).unwrap()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// Waits (bounded) until `ok` holds.
fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Node `i` has the ring of `n` members and nothing left to receive.
fn settled(c: &TestCluster, i: usize, n: usize) -> bool {
    c.info_field(i, "hc_members") == n.to_string() && c.info_field(i, "hc_synced") == "1"
}

const KEYS: usize = 100_000;

#[test]
fn a_fourth_node_joins_through_one_seed_takes_its_share_then_drains_with_nothing_lost() {
    let mut c = TestCluster::start(3, &["--rebalance-grace", "1000"]);
    load(&c, &[0, 1, 2], KEYS);
    let reader = Reader::start(&c, &[0, 1, 2], KEYS);
    // A fourth node, told about node 0 only.
    let d = c.add(0);
    wait_for("the join", Duration::from_secs(60), || {
        (0..4).all(|i| settled(&c, i, 4))
    });
    // The old replicas drop what moved once the grace is over.
    wait_for("the old copies dropped", Duration::from_secs(30), || {
        (0..4).map(|i| c.metric(i, "store.keys")).sum::<i64>() == 3 * KEYS as i64
    });
    let (reads, bad) = reader.finish();
    assert!(reads > 100, "the reader ran: {reads}");
    assert!(
        bad.is_empty(),
        "{} of {reads} reads failed during the join: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    // Slot and key counts within 2% of ideal: 3/4 of the slots and keys on each node.
    let ideal_slots = 16384.0 * 3.0 / 4.0;
    let ideal_keys = KEYS as f64 * 3.0 / 4.0;
    let m = members(&c, 0);
    assert_eq!(m.len(), 4);
    for e in &m {
        let slots = int(&e["slots"]) as f64;
        assert!(
            (slots / ideal_slots - 1.0).abs() < 0.02,
            "{}: {slots} slots",
            text(&e["id"])
        );
        assert_eq!(text(&e["state"]), "alive");
    }
    for i in 0..4 {
        let keys = c.metric(i, "store.keys") as f64;
        assert!(
            (keys / ideal_keys - 1.0).abs() < 0.02,
            "node {i}: {keys} keys"
        );
    }
    assert!(c.metric(d, "dist.rebalance.keys") > 0);
    assert!(c.metric(d, "dist.rebalance.batches") > 0);
    assert!(c.metric(d, "dist.rebalance.last_ns") > 0);
    // Every key reads back through the newcomer too.
    assert_eq!(
        wrong(&mut c.conn_at(d, "quorum", "quorum"), KEYS),
        Vec::<usize>::new()
    );

    // Drain the newcomer: it refuses writes, keeps serving reads, hands its slots back.
    let reader = Reader::start(&c, &[0, 1, 2, d], KEYS);
    let mut dc = c.conn(d);
    let _: () = redis::cmd("HC.DRAIN").query(&mut dc).unwrap();
    let e = redis::cmd("SET")
        .arg("x")
        .arg("1")
        .query::<()>(&mut dc)
        .unwrap_err();
    assert!(e.to_string().contains("draining"), "{e}");
    let node: BTreeMap<String, Value> = redis::cmd("HC.NODE").query(&mut dc).unwrap();
    assert_eq!(node["draining"], Value::Int(1));
    // Writes through the others keep working.
    let _: () = redis::cmd("SET")
        .arg("during-drain")
        .arg("1")
        .query(&mut c.conn(0))
        .unwrap();
    wait_for("the drain", Duration::from_secs(60), || {
        let st: BTreeMap<String, Value> =
            redis::cmd("HC.DRAIN").arg("STATUS").query(&mut dc).unwrap();
        st["safe_to_stop"] == Value::Int(1)
    });
    let (reads, bad) = reader.finish();
    assert!(reads > 100);
    assert!(
        bad.is_empty(),
        "{} of {reads} reads failed during the drain: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    c.stop(d);
    // Nothing lost: every key on all three remaining replicas.
    for i in 0..3 {
        assert_eq!(
            wrong(&mut c.conn_at(i, "all", "quorum"), KEYS),
            Vec::<usize>::new(),
            "node {i}"
        );
        assert_eq!(c.metric(i, "store.keys"), KEYS as i64 + 1, "node {i}");
    }
    // The others saw it leave, and it left their ring.
    wait_for("node 3 seen as left", Duration::from_secs(10), || {
        members(&c, 0)
            .iter()
            .any(|e| text(&e["state"]) == "left" && e["in_ring"] == Value::Int(0))
    });
}

#[test]
fn a_killed_node_s_slots_get_their_replicas_back_after_remove_after() {
    const N: usize = 20_000;
    let mut c = TestCluster::start(4, &["--rebalance-grace", "1000"]);
    // Set at run time, as an operator would: the membership picks it up.
    for i in 0..4 {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("remove-after")
            .arg("3000")
            .query(&mut c.conn(i))
            .unwrap();
    }
    load(&c, &[0, 1, 2, 3], N);
    let reader = Reader::start(&c, &[0, 2, 3], N);
    c.kill(1);
    // Down, then removed, then every slot re-replicated among the three left.
    wait_for(
        "node 1 removed and its slots re-replicated",
        Duration::from_secs(60),
        || [0, 2, 3].iter().all(|&i| settled(&c, i, 3)),
    );
    let (reads, bad) = reader.finish();
    assert!(reads > 100);
    assert!(
        bad.is_empty(),
        "{} of {reads} QUORUM reads failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    for i in [0, 2, 3] {
        assert_eq!(
            wrong(&mut c.conn_at(i, "all", "quorum"), N),
            Vec::<usize>::new(),
            "node {i}"
        );
    }
    assert!(c.metric(0, "dist.nodes.removed") >= 1);
    let m = members(&c, 0);
    let gone = m
        .iter()
        .find(|e| text(&e["cluster_addr"]) == format!("127.0.0.1:{}", c.ports[1].1))
        .expect("still listed");
    assert_eq!(text(&gone["state"]), "down");
    assert_eq!(gone["in_ring"], Value::Int(0));
}

#[test]
fn a_stopped_node_leaves_and_a_killed_one_is_only_suspected() {
    let mut c = TestCluster::start(4, &["--suspect-timeout", "30000"]);
    let state_of = |c: &TestCluster, i: usize, port: u16| -> String {
        members(c, i)
            .iter()
            .find(|e| text(&e["cluster_addr"]) == format!("127.0.0.1:{port}"))
            .map(|e| text(&e["state"]))
            .unwrap_or_default()
    };
    // SIGTERM: it announces its departure; its peers see it left (and leave it out of the ring).
    // "left" can only come from that announcement: a node that merely went silent is suspect,
    // then down. The budget stays under the 30 s suspect timeout, but is not a timing claim
    // (a loaded CI machine once needed over 5 s to stop the process and rebuild the ring).
    let cport = c.ports[3].1;
    c.stop(3);
    wait_for("node 3 left", Duration::from_secs(20), || {
        state_of(&c, 0, cport) == "left" && c.info_field(0, "hc_members") == "3"
    });
    // SIGKILL: the reset links make its peers suspect it; it is not down before the (long)
    // suspect timeout, and keeps its slots.
    let cport = c.ports[2].1;
    c.kill(2);
    wait_for("node 2 suspected", Duration::from_secs(10), || {
        state_of(&c, 0, cport) == "suspect" && state_of(&c, 1, cport) == "suspect"
    });
    assert_eq!(c.info_field(0, "hc_members"), "3");
    assert!(c.metric(0, "dist.members.suspect") == 1);
}
