//! Process tests of repair: three real `hypercache` processes on loopback. A node restarted
//! empty catches up through anti-entropy; a paused node (a gray failure) converges through hints
//! and sync; a node with `maxmemory` is never pushed past it by repair. Every loop is bounded.

mod common;

use std::time::{Duration, Instant};

use common::TestCluster;
use redis::{Connection, Value};

/// One `HC.METRICS` value of node `i`.
fn metric(c: &TestCluster, i: usize, name: &str) -> i64 {
    c.metric(i, name)
}

/// SETs `prefix:i` = `i` for `range`, pipelined in batches, at the connection's levels; every
/// reply must be OK.
fn set_range(conn: &mut Connection, prefix: &str, range: std::ops::Range<usize>) {
    let all: Vec<usize> = range.collect();
    for chunk in all.chunks(500) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET").arg(format!("{prefix}:{i}")).arg(i);
        }
        let r: Vec<String> = p.query(conn).unwrap();
        assert!(r.iter().all(|x| x == "OK"));
    }
}

/// The keys of `prefix:0..n` that `conn` reads as missing or wrong, pipelined.
fn missing(conn: &mut Connection, prefix: &str, n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(500) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("GET").arg(format!("{prefix}:{i}"));
        }
        let r: Vec<Option<String>> = p.query(conn).unwrap();
        for (i, v) in chunk.iter().zip(r) {
            if v != Some(i.to_string()) {
                out.push(*i);
            }
        }
    }
    out
}

/// A map reply (RESP3 map, or RESP2 flat array) as name/value pairs.
fn to_pairs(r: Value) -> Vec<(String, Value)> {
    match r {
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| match k {
                Value::BulkString(k) => (String::from_utf8(k).unwrap(), v),
                other => panic!("{other:?}"),
            })
            .collect(),
        Value::Array(flat) => flat
            .chunks(2)
            .map(|p| match &p[0] {
                Value::BulkString(k) => (String::from_utf8(k.clone()).unwrap(), p[1].clone()),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// `HC.SYNC` through node `i`: one map per peer.
fn sync(c: &TestCluster, i: usize) -> Vec<Vec<(String, Value)>> {
    let v: Value = redis::cmd("HC.SYNC").query(&mut c.conn(i)).unwrap();
    let Value::Array(rounds) = v else {
        panic!("HC.SYNC: {v:?}")
    };
    rounds.into_iter().map(to_pairs).collect()
}

fn field(round: &[(String, Value)], name: &str) -> Value {
    round
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {round:?}"))
}

/// A node killed while 20,000 keys are written at QUORUM and restarted empty catches up
/// through anti-entropy: while it does, no ONE read through it misses a key; once caught up it
/// serves every key itself at ONE.
#[test]
fn a_node_restarted_empty_catches_up_and_never_misses_at_one() {
    let n = 20_000;
    let mut c = TestCluster::start(3, &["--request-timeout-ms", "500"]);
    c.kill(2);
    c.wait_live(0, 2);
    let mut q = c.conn_at(0, "quorum", "quorum");
    set_range(&mut q, "k", 0..n);
    c.restart(2);
    // Read at ONE through the returning node as soon as it has joined (before, it answers
    // -NOREPLICAS: it has no ring yet), while it catches up: its slots that have not caught up
    // are read from another replica.
    c.wait_joined(2);
    let mut one = c.conn_at(2, "one", "quorum");
    let gaps = missing(&mut one, "k", n);
    assert!(
        gaps.is_empty(),
        "{} ONE reads through the returning node missed (first {:?})",
        gaps.len(),
        gaps.first()
    );
    // Caught up within a bounded time.
    c.wait_synced(2);
    let local = metric(&c, 2, "dist.read.local");
    let forwards = metric(&c, 2, "dist.forward.sent");
    assert!(missing(&mut one, "k", n).is_empty());
    assert_eq!(
        metric(&c, 2, "dist.read.local") - local,
        n as i64,
        "every ONE read served from its own copy"
    );
    assert_eq!(metric(&c, 2, "dist.forward.sent"), forwards);
    // What it holds came from its own rounds and from the hints its peers kept for it.
    let hinted: i64 = (0..2).map(|i| metric(&c, i, "dist.hinted.replayed")).sum();
    assert!(metric(&c, 2, "dist.merkle.keys_pulled") + hinted >= n as i64);
    assert_eq!(metric(&c, 2, "dist.catch_up.slots"), 0);
    // Its peers see it caught up too (it reports in every heartbeat).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let members: Vec<Value> = redis::cmd("HC.MEMBERS").query(&mut c.conn(0)).unwrap();
        let seen: Vec<i64> = members
            .iter()
            .map(|m| match field(&to_pairs(m.clone()), "catching_up_slots") {
                Value::Int(n) => n,
                other => panic!("{other:?}"),
            })
            .collect();
        if seen == vec![0, 0, 0] {
            break;
        }
        assert!(Instant::now() < deadline, "HC.MEMBERS on node 0: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A gray failure: one node is paused (SIGSTOP) during writes for longer than the request
/// timeout and the heartbeat, so its peers' links to it break; then it resumes. No QUORUM write
/// fails, and the cluster converges through hints and anti-entropy.
/// A node paused (SIGSTOP) through a FLUSHALL kept the flushed keys and served them at ONE for
/// good. The flush horizons ride on the heartbeat: once back, it runs the flush it missed, and
/// keeps a write newer than the flush. Its peers' hints for the keys, written before the
/// flush, are not replayed.
#[test]
fn a_node_paused_through_a_flushall_runs_it_when_it_is_back() {
    let n = 200;
    let c = TestCluster::start(3, &[]);
    let mut all = c.conn_at(0, "quorum", "all");
    set_range(&mut all, "f", 0..n / 2);
    c.nodes[2].as_ref().unwrap().signal("STOP");
    let mut q = c.conn_at(0, "quorum", "quorum");
    // Written while node 2 is paused: hints for it.
    set_range(&mut q, "f", n / 2..n);
    c.wait_live(0, 2);
    c.wait_live(1, 2);
    let ok: String = redis::cmd("FLUSHALL").query(&mut c.conn(0)).unwrap();
    assert_eq!(ok, "OK");
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut q)
        .unwrap();
    c.nodes[2].as_ref().unwrap().signal("CONT");
    for i in 0..3 {
        c.wait_live(i, 3);
    }
    let mut one = c.conn_at(2, "one", "one");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kept = n - missing(&mut one, "f", n).len();
        if kept == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 still serves {kept} flushed keys"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&c, 2, "dist.flush.missed"), 1);
    assert_eq!(metric(&c, 0, "dist.flush.missed"), 0);
    let after: Option<String> = redis::cmd("GET")
        .arg("after")
        .query(&mut c.conn_at(2, "quorum", "quorum"))
        .unwrap();
    assert_eq!(after.as_deref(), Some("1"));
    // Nothing brings them back later: not hints, not anti-entropy.
    for i in [2, 0] {
        for round in sync(&c, i) {
            assert_eq!(field(&round, "status"), Value::BulkString(b"ok".to_vec()));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        let mut one = c.conn_at(i, "one", "one");
        assert_eq!(missing(&mut one, "f", n).len(), n, "node {i}");
    }
}

#[test]
fn a_paused_node_converges_through_hints_and_sync() {
    let n = 3_000;
    let c = TestCluster::start(
        3,
        &[
            "--request-timeout-ms",
            "300",
            "--anti-entropy-interval",
            "1000",
        ],
    );
    let mut q = c.conn_at(0, "quorum", "quorum");
    set_range(&mut q, "g", 0..n / 3);
    c.nodes[2].as_ref().unwrap().signal("STOP");
    // A write at ALL waits for the paused node until its deadline: a call timed out.
    let r: redis::RedisResult<()> = redis::cmd("SET")
        .arg("probe")
        .arg("1")
        .query(&mut c.conn_at(0, "quorum", "all"));
    assert!(r.is_err(), "{r:?}");
    // (Booked when the write's machine closes, just after its reply.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&c, 0, "dist.transport.timeouts") == 0 {
        assert!(Instant::now() < deadline, "no call timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
    set_range(&mut q, "g", n / 3..2 * n / 3);
    // Past the heartbeat's 2 s: the links to node 2 break.
    c.wait_live(0, 2);
    set_range(&mut q, "g", 2 * n / 3..n);
    c.nodes[2].as_ref().unwrap().signal("CONT");
    for i in 0..3 {
        c.wait_live(i, 3);
    }
    // Node 2 holds every key itself, bounded in time.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut one = c.conn_at(2, "one", "quorum");
    loop {
        let gaps = missing(&mut one, "g", n);
        if gaps.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 still misses {} keys (first {:?})",
            gaps.len(),
            gaps.first()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let replayed: i64 = (0..2).map(|i| metric(&c, i, "dist.hinted.replayed")).sum();
    assert!(replayed > 0, "hints were replayed");
    // HC.HINTS: nothing left queued, once replay has drained what is still due. A write's
    // accept to the paused node becomes a hint when it fails or at the write's deadline, so on a
    // loaded machine some hints are queued after node 2 already caught up through anti-entropy
    // (CI saw 976 queued 35 ms before this check); replay drains them, bounded in time.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hints: Vec<Value> = redis::cmd("HC.HINTS").query(&mut c.conn(0)).unwrap();
        if hints.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{hints:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // HC.SYNC names an unknown node in Redis's words.
    let err = redis::cmd("HC.SYNC")
        .arg("nosuch")
        .query::<Value>(&mut c.conn(0))
        .unwrap_err();
    assert_eq!(
        (err.code(), err.detail()),
        (Some("ERR"), Some("Unknown node nosuch"))
    );
    // Converged: a round from each node finds nothing to repair.
    for i in 0..3 {
        for round in sync(&c, i) {
            assert_eq!(field(&round, "status"), Value::BulkString(b"ok".to_vec()));
            assert_eq!(field(&round, "slots_differing"), Value::Int(0), "{round:?}");
        }
    }
}

fn used_memory(c: &TestCluster, i: usize) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut c.conn(i))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

/// A node with `maxmemory` that comes back empty while the others hold more than its budget:
/// its catch-up stores what fits and never takes it past the budget.
#[test]
fn repair_never_pushes_a_node_past_its_maxmemory() {
    let budget: u64 = 24 << 20;
    let mut c = TestCluster::start(3, &["--request-timeout-ms", "500"]);
    c.kill(2);
    c.wait_live(0, 2);
    let mut q = c.conn_at(0, "quorum", "quorum");
    // About 40 MB of values: more than node 2's budget.
    let value = "x".repeat(1000);
    let all: Vec<usize> = (0..40_000).collect();
    for chunk in all.chunks(500) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET").arg(format!("big:{i}")).arg(&value);
        }
        let _: Vec<String> = p.query(&mut q).unwrap();
    }
    c.node_args[2] = vec![
        "--maxmemory".into(),
        budget.to_string(),
        "--maxmemory-policy".into(),
        "allkeys-lru".into(),
    ];
    c.restart(2);
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        peak = peak.max(used_memory(&c, 2));
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query(&mut c.conn(2))
            .unwrap();
        if info.contains("hc_synced:1") {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 did not catch up");
        std::thread::sleep(Duration::from_millis(10));
    }
    peak = peak.max(used_memory(&c, 2));
    // Hints and later rounds do not push it either.
    for round in sync(&c, 2) {
        assert_eq!(field(&round, "status"), Value::BulkString(b"ok".to_vec()));
    }
    peak = peak.max(used_memory(&c, 2));
    eprintln!("node 2: peak used_memory {peak} of {budget}");
    assert!(
        peak <= budget,
        "node 2 used {peak} bytes, over its budget of {budget}"
    );
    assert!(metric(&c, 2, "dist.repair.skipped_full") > 0);
    // It still answers every key (from another replica when it does not hold it).
    let mut one = c.conn_at(2, "quorum", "quorum");
    let v: Option<String> = redis::cmd("GET").arg("big:39999").query(&mut one).unwrap();
    assert_eq!(v.as_deref(), Some(value.as_str()));
}
