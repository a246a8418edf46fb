//! Process tests of a cluster: three real `hypercache` processes on loopback, talking over their
//! cluster ports, driven through the `redis` crate. Nodes are killed with SIGKILL and restarted on
//! the same ports. Every loop is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestCluster;
use redis::{Connection, RedisResult, Value};

fn get(c: &mut Connection, k: &str) -> Option<String> {
    redis::cmd("GET").arg(k).query(c).unwrap()
}

fn is_noreplicas<T: std::fmt::Debug>(r: &RedisResult<T>) -> bool {
    match r {
        Err(e) => e.code() == Some("NOREPLICAS"),
        Ok(_) => false,
    }
}

/// Settings that leave only the repair a request does itself (read repair, the read round of a
/// read-modify-write): no hints queued, no automatic anti-entropy rounds.
const NO_BACKGROUND_REPAIR: [&str; 6] = [
    "--request-timeout-ms",
    "300",
    "--hint-max-per-node",
    "0",
    "--anti-entropy-interval",
    "0",
];

#[test]
fn a_write_through_one_node_is_read_through_every_other() {
    let c = TestCluster::start(3, &[]);
    let mut n0 = c.conn(0);
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("value:{i}"))
            .query(&mut n0)
            .unwrap();
    }
    for node in 0..3 {
        let mut conn = c.conn(node);
        for i in 0..50 {
            assert_eq!(
                get(&mut conn, &format!("key:{i}")).as_deref(),
                Some(format!("value:{i}").as_str()),
                "key:{i} through node {node}"
            );
        }
        // Keyspace commands answer for the whole cluster, not one node's share.
        let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        assert_eq!(n, 50, "DBSIZE through node {node}");
        let keys: Vec<String> = redis::cmd("KEYS").arg("key:*").query(&mut conn).unwrap();
        assert_eq!(keys.len(), 50);
        let mget: Vec<Option<String>> = redis::cmd("MGET")
            .arg("key:1")
            .arg("nope")
            .arg("key:49")
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            mget,
            [Some("value:1".into()), None, Some("value:49".into())]
        );
    }
    // A SCAN cursor from one node continues on another.
    let mut seen = BTreeSet::new();
    let mut cursor = 0u64;
    for step in 0..10_000 {
        let mut conn = c.conn(step % 3);
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query(&mut conn)
            .unwrap();
        for k in keys {
            assert!(seen.insert(k.clone()), "{k} returned twice");
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "SCAN did not finish");
    assert_eq!(seen.len(), 50);
    // Multi-key commands across slots.
    let n: i64 = redis::cmd("DEL")
        .arg("key:1")
        .arg("key:2")
        .arg("nope")
        .query(&mut c.conn(1))
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("EXISTS")
        .arg("key:1")
        .arg("key:3")
        .query(&mut c.conn(2))
        .unwrap();
    assert_eq!(n, 1);
    let _: () = redis::cmd("FLUSHALL").query(&mut c.conn(2)).unwrap();
    for node in 0..3 {
        let n: i64 = redis::cmd("DBSIZE").query(&mut c.conn(node)).unwrap();
        assert_eq!(n, 0, "after FLUSHALL, node {node}");
    }
}

/// Each key's acknowledged value, as the test wrote it.
type Acked = BTreeMap<String, String>;

/// A connection to node `i` of `c` with database `db` selected.
fn conn_in_db(c: &TestCluster, i: usize, db: i64) -> Connection {
    let mut conn = c.conn(i);
    let _: () = redis::cmd("SELECT").arg(db).query(&mut conn).unwrap();
    conn
}

/// The database is part of a key's identity on every node: written in one database through one
/// node, a key is read in that database through each replica at ALL (so every replica holds it
/// there) and nowhere else; MOVE and FLUSHDB act on one database cluster-wide; SWAPDB, which
/// would have to change every node's map of databases at once, is refused.
#[test]
fn databases_are_part_of_a_key_on_every_node() {
    let c = TestCluster::start(3, &[]);
    let mut w = conn_in_db(&c, 0, 3);
    for i in 0..40 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("three:{i}"))
            .query(&mut w)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("k0")
        .arg("zero")
        .query(&mut c.conn(1))
        .unwrap();
    for node in 0..3 {
        let mut all = c.conn_at(node, "all", "quorum");
        let _: () = redis::cmd("SELECT").arg(3).query(&mut all).unwrap();
        for i in 0..40 {
            assert_eq!(
                get(&mut all, &format!("k{i}")).as_deref(),
                Some(format!("three:{i}").as_str()),
                "k{i} in db 3 through node {node}"
            );
        }
        let n: i64 = redis::cmd("DBSIZE").query(&mut all).unwrap();
        assert_eq!(n, 40, "DBSIZE of db 3 through node {node}");
        let mut zero = c.conn_at(node, "all", "quorum");
        assert_eq!(get(&mut zero, "k0").as_deref(), Some("zero"), "node {node}");
        assert_eq!(get(&mut zero, "k1"), None, "node {node}");
    }
    // MOVE through another node; the key leaves db 3 and arrives in db 4 on every replica.
    let mut m = conn_in_db(&c, 2, 3);
    let moved: i64 = redis::cmd("MOVE").arg("k1").arg(4).query(&mut m).unwrap();
    assert_eq!(moved, 1);
    for node in 0..3 {
        let mut all = c.conn_at(node, "all", "quorum");
        let _: () = redis::cmd("SELECT").arg(4).query(&mut all).unwrap();
        assert_eq!(
            get(&mut all, "k1").as_deref(),
            Some("three:1"),
            "node {node}"
        );
        let _: () = redis::cmd("SELECT").arg(3).query(&mut all).unwrap();
        assert_eq!(get(&mut all, "k1"), None, "node {node}");
    }
    // FLUSHDB of db 3 through node 1: db 4 and db 0 keep theirs.
    let _: () = redis::cmd("FLUSHDB")
        .query(&mut conn_in_db(&c, 1, 3))
        .unwrap();
    for node in 0..3 {
        let n: i64 = redis::cmd("DBSIZE")
            .query(&mut conn_in_db(&c, node, 3))
            .unwrap();
        assert_eq!(n, 0, "node {node}");
        let mut four = conn_in_db(&c, node, 4);
        assert_eq!(get(&mut four, "k1").as_deref(), Some("three:1"));
        assert_eq!(get(&mut c.conn(node), "k0").as_deref(), Some("zero"));
    }
    let refused: RedisResult<()> = redis::cmd("SWAPDB").arg(0).arg(1).query(&mut c.conn(0));
    let e = refused.unwrap_err();
    assert_eq!(
        e.detail(),
        Some("SWAPDB is not allowed in cluster mode"),
        "{e:?}"
    );
}

fn write_all(c: &TestCluster, nodes: &[usize], round: &str, acked: &mut Acked) {
    for (j, &node) in nodes.iter().enumerate() {
        let mut conn = c.conn_at(node, "quorum", "quorum");
        for i in 0..40 {
            let k = format!("k:{j}:{i}");
            let v = format!("{round}:{node}:{i}");
            let r: RedisResult<()> = redis::cmd("SET").arg(&k).arg(&v).query(&mut conn);
            assert!(r.is_ok(), "SET {k} through node {node} in {round}: {r:?}");
            acked.insert(k, v);
            let r: RedisResult<i64> = redis::cmd("INCR").arg("counter").query(&mut conn);
            let n = r.unwrap_or_else(|e| panic!("INCR through node {node} in {round}: {e}"));
            acked.insert("counter".into(), n.to_string());
        }
    }
}

fn check_all(c: &TestCluster, nodes: &[usize], acked: &Acked) {
    for &node in nodes {
        let mut conn = c.conn_at(node, "quorum", "quorum");
        for (k, v) in acked {
            let r: RedisResult<Option<String>> = redis::cmd("GET").arg(k).query(&mut conn);
            assert_eq!(
                r.as_ref().ok().cloned().flatten().as_deref(),
                Some(v.as_str()),
                "QUORUM GET {k} through node {node}: {r:?}"
            );
        }
    }
}

#[test]
fn quorum_survives_a_killed_node_and_the_cluster_heals_when_it_returns() {
    let mut c = TestCluster::start(3, &["--request-timeout-ms", "500"]);
    let mut acked = Acked::new();
    write_all(&c, &[0, 1, 2], "all-up", &mut acked);
    check_all(&c, &[0, 1, 2], &acked);

    // One node killed: every QUORUM write and read through the other two succeeds, and nothing
    // acknowledged is lost.
    c.kill(2);
    c.wait_live(0, 2);
    c.wait_live(1, 2);
    write_all(&c, &[0, 1], "one-down", &mut acked);
    check_all(&c, &[0, 1], &acked);

    // Two killed: QUORUM writes fail with Redis's NOREPLICAS; reads at ONE still serve.
    c.kill(1);
    c.wait_live(0, 1);
    let mut q = c.conn_at(0, "quorum", "quorum");
    let r: RedisResult<()> = redis::cmd("SET").arg("k:0:0").arg("lost").query(&mut q);
    assert!(is_noreplicas(&r), "{r:?}");
    assert_eq!(
        r.unwrap_err().detail(),
        Some("Not enough good replicas to write.")
    );
    let r: RedisResult<Option<String>> = redis::cmd("GET").arg("k:0:0").query(&mut q);
    assert!(
        is_noreplicas(&r),
        "QUORUM read with one live replica: {r:?}"
    );
    let mut one = c.conn_at(0, "one", "quorum");
    for (k, v) in &acked {
        if k != "k:0:0" {
            assert_eq!(
                get(&mut one, k).as_deref(),
                Some(v.as_str()),
                "ONE read of {k}"
            );
        }
    }
    // The failed write reached the coordinator's own copy (nothing is rolled back), so the
    // acknowledged value of k:0:0 is whichever the next successful write decides.
    acked.remove("k:0:0");

    // Both return, empty: a killed node loses its memory. Without restarting node 0, the cluster
    // serves QUORUM again: each returning node first copies its slots from a replica that kept
    // them, then every acknowledged write is found through any node, and the returned nodes
    // serve it from their own copy at ONE.
    c.restart(1);
    c.restart(2);
    for i in 0..3 {
        c.wait_live(i, 3);
    }
    c.wait_synced(1);
    c.wait_synced(2);
    check_all(&c, &[0, 1, 2], &acked);
    for node in [1, 2] {
        let mut one = c.conn_at(node, "one", "quorum");
        for (k, v) in &acked {
            assert_eq!(
                get(&mut one, k).as_deref(),
                Some(v.as_str()),
                "ONE read of {k} on node {node}"
            );
        }
    }
    write_all(&c, &[0, 1, 2], "healed", &mut acked);
    check_all(&c, &[0, 1, 2], &acked);
}

/// One `HC.METRICS` value of node `i`.
fn metric(c: &TestCluster, i: usize, name: &str) -> i64 {
    c.metric(i, name)
}

#[test]
fn read_modify_write_commands_serialize_across_nodes() {
    let c = TestCluster::start(3, &[]);
    let threads: Vec<_> = (0..3)
        .map(|node| {
            let mut conn = c.conn(node);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..150 {
                    let n: i64 = redis::cmd("INCR").arg("hits").query(&mut conn).unwrap();
                    got.push(n);
                    let _: i64 = redis::cmd("APPEND")
                        .arg("log")
                        .arg("x")
                        .query(&mut conn)
                        .unwrap();
                }
                let won: i64 = redis::cmd("SETNX")
                    .arg("winner")
                    .arg(node)
                    .query(&mut conn)
                    .unwrap();
                (got, won)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut winners = 0;
    for t in threads {
        let (got, won) = t.join().unwrap();
        all.extend(got);
        winners += won;
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=450).collect::<Vec<i64>>(),
        "every INCR saw a distinct value"
    );
    assert_eq!(winners, 1, "exactly one SETNX wins");
    for node in 0..3 {
        let mut conn = c.conn(node);
        assert_eq!(get(&mut conn, "hits").as_deref(), Some("450"));
        let len: i64 = redis::cmd("STRLEN").arg("log").query(&mut conn).unwrap();
        assert_eq!(len, 450, "APPEND through node {node}");
    }
    // SET NX / XX / GET and GETDEL keep their semantics through any node.
    let mut a = c.conn(0);
    let mut b = c.conn(1);
    let r: Option<String> = redis::cmd("SET")
        .arg("s")
        .arg("1")
        .arg("NX")
        .arg("GET")
        .query(&mut a)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = redis::cmd("SET")
        .arg("s")
        .arg("2")
        .arg("XX")
        .arg("GET")
        .query(&mut b)
        .unwrap();
    assert_eq!(r.as_deref(), Some("1"));
    let mut n2 = c.conn(2);
    let r: Option<String> = redis::cmd("GETDEL").arg("s").query(&mut n2).unwrap();
    assert_eq!(r.as_deref(), Some("2"));
    // Read-your-writes at ONE holds through the node that took the write (docs/cluster.md); a
    // ONE read through another node may still race the third replica's copy.
    assert_eq!(get(&mut n2, "s"), None);
    let r: i64 = redis::cmd("EXPIRE")
        .arg("hits")
        .arg(100)
        .arg("NX")
        .query(&mut b)
        .unwrap();
    assert_eq!(r, 1);
    let r: i64 = redis::cmd("EXPIRE")
        .arg("hits")
        .arg(50)
        .arg("GT")
        .query(&mut a)
        .unwrap();
    assert_eq!(r, 0);
    let ttl: i64 = redis::cmd("TTL").arg("hits").query(&mut c.conn(2)).unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
}

#[test]
fn admin_commands_describe_the_cluster() {
    let c = TestCluster::start(3, &[]);
    let mut conn = c.conn(0);
    let node: BTreeMap<String, Value> = redis::cmd("HC.NODE").query(&mut conn).unwrap();
    let id = format!("127.0.0.1:{}", c.ports[0].1);
    assert_eq!(node["id"], Value::BulkString(id.clone().into_bytes()));
    assert_eq!(node["members"], Value::Int(3));
    let members: Vec<BTreeMap<String, Value>> = redis::cmd("HC.MEMBERS").query(&mut conn).unwrap();
    assert_eq!(members.len(), 3);
    let total: i64 = members
        .iter()
        .map(|m| match m["primary_slots"] {
            Value::Int(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(total, 16384, "every slot has one primary");
    assert!(members
        .iter()
        .all(|m| m["state"] == Value::BulkString(b"alive".to_vec())));
    assert_eq!(members[0]["self"], Value::Int(1), "this node first");
    assert!(members
        .iter()
        .all(|m| m["in_ring"] == Value::Int(1) && m["draining"] == Value::Int(0)));
    let mut addrs: Vec<(String, String)> = members
        .iter()
        .map(|m| {
            let s = |k: &str| match &m[k] {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{k}: {other:?}"),
            };
            (s("client_addr"), s("cluster_addr"))
        })
        .collect();
    addrs.sort();
    let mut want: Vec<(String, String)> = c
        .ports
        .iter()
        .map(|(p, cp)| (format!("127.0.0.1:{p}"), format!("127.0.0.1:{cp}")))
        .collect();
    want.sort();
    assert_eq!(addrs, want, "HC.MEMBERS addresses");
    let (slot, replicas): (i64, Vec<(String, String)>) = redis::cmd("HC.KEYSLOT")
        .arg("user:{42}:name")
        .query(&mut conn)
        .unwrap();
    let (slot2, _): (i64, Vec<(String, String)>) = redis::cmd("HC.KEYSLOT")
        .arg("{42}")
        .query(&mut conn)
        .unwrap();
    assert_eq!(slot, slot2, "hash tags");
    assert_eq!(replicas.len(), 3);
    // Per-connection consistency.
    let levels: BTreeMap<String, String> = redis::cmd("HC.CONSISTENCY").query(&mut conn).unwrap();
    assert_eq!(levels["read"], "quorum");
    assert_eq!(levels["write"], "quorum");
    let _: () = redis::cmd("HC.CONSISTENCY")
        .arg("WRITE")
        .arg("ALL")
        .query(&mut conn)
        .unwrap();
    let w: String = redis::cmd("HC.CONSISTENCY")
        .arg("WRITE")
        .query(&mut conn)
        .unwrap();
    assert_eq!(w, "all");
    let r: RedisResult<()> = redis::cmd("HC.CONSISTENCY")
        .arg("READ")
        .arg("TWO")
        .query(&mut conn);
    assert!(r.is_err());
    let other: BTreeMap<String, String> =
        redis::cmd("HC.CONSISTENCY").query(&mut c.conn(0)).unwrap();
    assert_eq!(other["write"], "quorum", "levels are per connection");
    // Metrics count what happened.
    let _: () = redis::cmd("SET")
        .arg("m")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let flat: Vec<Value> = redis::cmd("HC.METRICS").query(&mut conn).unwrap();
    let metrics: BTreeMap<String, i64> = flat
        .chunks(2)
        .map(|p| match (&p[0], &p[1]) {
            (Value::BulkString(k), Value::Int(v)) => (String::from_utf8_lossy(k).into(), *v),
            other => panic!("not a name/value pair: {other:?}"),
        })
        .collect();
    assert!(metrics["dist.write.attempts"] >= 1);
    assert!(
        metrics["dist.write.acks"] >= 3,
        "ALL write acked by 3: {metrics:?}"
    );
    assert!(metrics.contains_key("dist.latency.write.p99_us"));
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut conn).unwrap();
    assert!(info.contains("hc_members_live:3"), "{info}");
}

#[test]
fn nodes_of_another_cluster_are_refused_and_bad_frames_close_the_link() {
    let c = TestCluster::start(2, &[]);
    // A third process with the same seeds but another cluster name: no link either way.
    let seeds = format!("127.0.0.1:{},127.0.0.1:{}", c.ports[0].1, c.ports[1].1);
    let stranger = common::start("hypercache", move |port| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hypercache"));
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--http-port", "0"])
            .args([
                "--cluster-name",
                "other",
                "--seeds",
                &seeds,
                "--log-level",
                "error",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut s = stranger.client().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut s).unwrap();
    assert!(info.contains("hc_members_live:1"), "{info}");
    // Its membership datagrams (another cluster name) were dropped, and counted.
    assert!(metric(&c, 0, "dist.heartbeat.bad_datagrams") > 0);
    let members: Vec<BTreeMap<String, Value>> =
        redis::cmd("HC.MEMBERS").query(&mut c.conn(0)).unwrap();
    assert_eq!(members.len(), 2, "the stranger is no member");
    stranger.signal("KILL");
    // Garbage on the cluster port closes that link; the node keeps serving.
    let mut raw = TcpStream::connect(("127.0.0.1", c.ports[0].1)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    let _: () = redis::cmd("SET")
        .arg("still")
        .arg("here")
        .query(&mut c.conn(0))
        .unwrap();
    assert_eq!(get(&mut c.conn(1), "still").as_deref(), Some("here"));
    c.wait_live(0, 2);
}

#[test]
fn with_fewer_replicas_than_members_requests_are_forwarded() {
    // Replication 2 over 3 nodes: a third of the keys are on neither replica of a given node, so
    // their reads and writes go to a replica over the cluster link.
    let c = TestCluster::start(3, &["--replication", "2"]);
    for node in 0..3 {
        let mut conn = c.conn(node);
        for i in 0..60 {
            let _: () = redis::cmd("SET")
                .arg(format!("r2:{node}:{i}"))
                .arg(i)
                .query(&mut conn)
                .unwrap();
            let n: i64 = redis::cmd("INCR").arg("r2:count").query(&mut conn).unwrap();
            assert!(n >= 1);
        }
    }
    for node in 0..3 {
        let mut conn = c.conn(node);
        for w in 0..3 {
            for i in 0..60 {
                let v: Option<i64> = redis::cmd("GET")
                    .arg(format!("r2:{w}:{i}"))
                    .query(&mut conn)
                    .unwrap();
                assert_eq!(v, Some(i), "r2:{w}:{i} through node {node}");
            }
        }
        assert_eq!(get(&mut conn, "r2:count").as_deref(), Some("180"));
        let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        assert_eq!(n, 181, "DBSIZE through node {node}");
    }
    let forwarded: i64 = (0..3).map(|i| metric(&c, i, "dist.forward.sent")).sum();
    assert!(forwarded > 0, "no request was forwarded");
    // Each member holds about two thirds of the slots.
    let members: Vec<BTreeMap<String, Value>> =
        redis::cmd("HC.MEMBERS").query(&mut c.conn(0)).unwrap();
    for m in &members {
        let Value::Int(slots) = m["slots"] else {
            panic!("{m:?}")
        };
        assert!((10_900..=10_950).contains(&slots), "{slots}");
    }
}

#[test]
fn a_paused_node_is_taken_out_by_the_heartbeat_and_comes_back() {
    // No hints and no automatic anti-entropy: this test is about read repair alone (hints
    // would bring node 2 up to date as soon as it is back).
    let c = TestCluster::start(3, &NO_BACKGROUND_REPAIR);
    // SIGSTOP keeps its sockets open: only the heartbeat can tell it is gone.
    c.nodes[2].as_ref().unwrap().signal("STOP");
    c.wait_live(0, 2);
    c.wait_live(1, 2);
    let mut q = c.conn_at(0, "quorum", "quorum");
    for i in 0..50 {
        let r: RedisResult<i64> = redis::cmd("INCR").arg("paused").query(&mut q);
        assert_eq!(r.ok(), Some(i + 1), "INCR {i} with a paused node");
    }
    c.nodes[2].as_ref().unwrap().signal("CONT");
    for i in 0..3 {
        c.wait_live(i, 3);
    }
    // Node 2 kept running, so it did not bootstrap: it missed the increments. A QUORUM read
    // through it finds its own copy stale, answers from the newest and repairs it; then it
    // serves the value at ONE from its own copy.
    let repairs =
        |c: &TestCluster| -> i64 { (0..3).map(|i| metric(c, i, "dist.read.repairs")).sum() };
    let before = repairs(&c);
    let mut q2 = c.conn_at(2, "quorum", "quorum");
    assert_eq!(get(&mut q2, "paused").as_deref(), Some("50"));
    assert!(repairs(&c) > before, "node 2 was repaired");
    let mut one = c.conn_at(2, "one", "quorum");
    assert_eq!(
        get(&mut one, "paused").as_deref(),
        Some("50"),
        "ONE read on the repaired node"
    );
}

#[test]
fn a_client_reads_its_own_forwarded_writes_at_one() {
    // Read-modify-write commands run on each key's first replica; a node that forwarded one holds
    // the new value before it answers, so the same client's next read at ONE (served locally)
    // sees it. At write level ONE the coordinator answers before its copies are even sent, which
    // makes the race this guards against likely.
    let c = TestCluster::start(3, &["--write-consistency", "one"]);
    for node in 0..3 {
        let mut conn = c.conn(node);
        for i in 0..100 {
            let k = format!("ryw:{i}");
            let _: Option<String> = redis::cmd("SET")
                .arg(&k)
                .arg(format!("{node}:{i}"))
                .arg("GET")
                .query(&mut conn)
                .unwrap();
            assert_eq!(
                get(&mut conn, &k),
                Some(format!("{node}:{i}")),
                "{k} through node {node}"
            );
            let n: i64 = redis::cmd("INCR")
                .arg(format!("ryw:n:{i}"))
                .query(&mut conn)
                .unwrap();
            assert_eq!(get(&mut conn, &format!("ryw:n:{i}")), Some(n.to_string()));
            let d: i64 = redis::cmd("DEL").arg(&k).query(&mut conn).unwrap();
            assert_eq!(d, 1);
            assert_eq!(get(&mut conn, &k), None, "{k} deleted through node {node}");
        }
    }
}

#[test]
fn a_returning_node_copies_what_it_missed_before_its_reads_count() {
    // The writes below are acknowledged by nodes 0 and 1 only; then node 1 dies too, and both
    // dead nodes come back empty. Node 0 is the only copy left. Without the bootstrap copy, a
    // QUORUM read through node 1 could be answered by nodes 1 and 2 (both empty): nil.
    let mut c = TestCluster::start(3, &["--request-timeout-ms", "500"]);
    c.kill(2);
    c.wait_live(0, 2);
    let mut q = c.conn_at(0, "quorum", "quorum");
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("only:{i}"))
            .arg(i)
            .query(&mut q)
            .unwrap();
    }
    let _: i64 = redis::cmd("INCRBY")
        .arg("only:n")
        .arg(7)
        .query(&mut q)
        .unwrap();
    c.kill(1);
    c.restart(1);
    c.restart(2);
    for i in 0..3 {
        c.wait_live(i, 3);
    }
    for node in [1, 2] {
        c.wait_synced(node);
        let mut conn = c.conn_at(node, "quorum", "quorum");
        for i in 0..200 {
            let v: Option<i64> = redis::cmd("GET")
                .arg(format!("only:{i}"))
                .query(&mut conn)
                .unwrap();
            assert_eq!(v, Some(i), "only:{i} through node {node}");
        }
        // A read-modify-write coordinated by a returned node continues from the right value.
        let n: i64 = redis::cmd("INCR").arg("only:n").query(&mut conn).unwrap();
        assert_eq!(n, if node == 1 { 8 } else { 9 });
    }
    // And each returned node holds the copies itself: reads at ONE, locally.
    for node in [1, 2] {
        let mut one = c.conn_at(node, "one", "quorum");
        assert_eq!(get(&mut one, "only:199").as_deref(), Some("199"));
    }
}

#[test]
fn five_nodes_survive_rolling_kills_without_losing_acknowledged_writes() {
    // Five nodes, three copies of each slot. Each round kills one node (SIGKILL), writes through
    // the live ones at QUORUM, brings the node back (empty; it bootstraps), and checks every
    // acknowledged write through every node. A fixed order of victims keeps the run repeatable.
    let mut c = TestCluster::start(5, &["--request-timeout-ms", "500"]);
    let mut acked = Acked::new();
    for (round, victim) in [3usize, 0, 4, 1, 2].into_iter().enumerate() {
        c.kill(victim);
        let live: Vec<usize> = (0..5).filter(|&n| n != victim).collect();
        for &n in &live {
            c.wait_live(n, 4);
        }
        for (j, &node) in live.iter().enumerate() {
            let mut conn = c.conn_at(node, "quorum", "quorum");
            for i in 0..25 {
                let k = format!("roll:{j}:{i}");
                let v = format!("{round}:{node}");
                let r: RedisResult<()> = redis::cmd("SET").arg(&k).arg(&v).query(&mut conn);
                assert!(r.is_ok(), "round {round}: SET {k} through {node}: {r:?}");
                acked.insert(k, v);
            }
            let n: i64 = redis::cmd("INCR").arg("roll:n").query(&mut conn).unwrap();
            acked.insert("roll:n".into(), n.to_string());
        }
        c.restart(victim);
        for n in 0..5 {
            c.wait_live(n, 5);
        }
        c.wait_synced(victim);
        check_all(&c, &[0, 1, 2, 3, 4], &acked);
    }
    assert_eq!(acked["roll:n"], "20");
}

/// Bug 1 of the node-machine issue: a restarted node counted as synced before its peers linked
/// back to it, and the writes they coordinated meanwhile skipped it for good. Its start-up copy
/// now waits until every source sees it live, so every write made after it is synced reaches it.
#[test]
fn writes_right_after_a_restart_reach_the_restarted_node() {
    let mut c = TestCluster::start(3, &[]);
    c.kill(2);
    // Long enough for the others' redial backoff to reach its 1 s ceiling.
    std::thread::sleep(std::time::Duration::from_millis(4000));
    c.restart(2);
    c.wait_synced(2);
    let mut q = c.conn_at(0, "quorum", "quorum");
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut n = 0;
    while std::time::Instant::now() < deadline && n < 20_000 {
        let _: () = redis::cmd("SET")
            .arg(format!("fresh:{n}"))
            .arg(n)
            .query(&mut q)
            .unwrap();
        n += 1;
    }
    // Replication to the third replica is not waited for at QUORUM: give it a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut one = c.conn_at(2, "one", "quorum");
    let missing: Vec<i32> = (0..n)
        .filter(|i| get(&mut one, &format!("fresh:{i}")).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {n} keys written after the restart are missing on the restarted node (first: {:?})",
        missing.len(),
        missing.first()
    );
}

/// Bug 3 of the node-machine issue: a SET acknowledged through one node, then another SET of
/// the same key through a second node right after the OK, could be stamped below the first and
/// refused by every replica that held it, yet acknowledged. The later write must win.
#[test]
fn a_write_after_an_acknowledged_write_through_another_node_wins() {
    let c = TestCluster::start(3, &[]);
    let mut a = c.conn_at(0, "quorum", "quorum");
    // Node 0's clock runs 300 ms ahead: b, stamped by node 1 before it hears of a, is older.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("clock-offset-ms")
        .arg(300)
        .query(&mut a)
        .unwrap();
    let mut b = c.conn_at(1, "quorum", "quorum");
    let mut all = c.conn_at(2, "all", "quorum");
    let mut ones: Vec<_> = (0..3).map(|i| c.conn_at(i, "one", "quorum")).collect();
    let mut lost = Vec::new();
    for round in 0..500 {
        let key = format!("race:{}", round % 50);
        let _: () = redis::cmd("SET").arg(&key).arg("a").query(&mut a).unwrap();
        let _: () = redis::cmd("SET").arg(&key).arg("b").query(&mut b).unwrap();
        let got = get(&mut all, &key);
        if got.as_deref() != Some("b") {
            let each: Vec<_> = ones.iter_mut().map(|o| get(o, &key)).collect();
            std::thread::sleep(std::time::Duration::from_millis(200));
            let later = get(&mut all, &key);
            lost.push((round, got, each, later));
        }
    }
    assert!(lost.is_empty(), "the later SET lost in rounds {lost:?}");
}

/// SETs `prefix:0..n` to `value` through `conn`.
fn set_all(conn: &mut Connection, prefix: &str, n: usize, value: &str) {
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}:{i}"))
            .arg(value)
            .query(conn)
            .unwrap();
    }
}

/// Bug 2 of the node-machine issue: the start-up copy stopped at the first replica that
/// answered, so a restarted node inherited that replica's gaps. Node 2 is paused through the
/// second round of writes; node 1 then restarts empty. With node 0 (the only other holder of
/// round 2) paused, a QUORUM read through node 2 is answered by nodes 1 and 2: node 1 must have
/// copied round 2 from node 0, not round 1 from node 2.
#[test]
fn a_restarted_node_copies_from_every_replica_not_the_first() {
    let mut c = TestCluster::start(3, &["--request-timeout-ms", "300"]);
    let keys = 100;
    let mut q = c.conn_at(0, "quorum", "quorum");
    set_all(&mut q, "gap", keys, "v1");
    c.nodes[2].as_ref().unwrap().signal("STOP");
    c.wait_live(0, 2);
    set_all(&mut q, "gap", keys, "v2");
    c.nodes[2].as_ref().unwrap().signal("CONT");
    c.wait_live(0, 3);
    c.kill(1);
    c.restart(1);
    c.wait_synced(1);
    for i in 0..3 {
        c.wait_live(i, 3);
    }
    c.nodes[0].as_ref().unwrap().signal("STOP");
    c.wait_live(2, 2);
    let mut q2 = c.conn_at(2, "quorum", "quorum");
    let stale: Vec<usize> = (0..keys)
        .filter(|i| get(&mut q2, &format!("gap:{i}")).as_deref() != Some("v2"))
        .collect();
    c.nodes[0].as_ref().unwrap().signal("CONT");
    assert!(
        stale.is_empty(),
        "QUORUM reads returned round 1 for keys {stale:?}"
    );
}

/// The replicas of `key` as node indexes, coordinator first (from `HC.KEYSLOT` through node 0).
fn replicas_of(c: &TestCluster, key: &str) -> Vec<usize> {
    let (_, replicas): (i64, Vec<(String, String)>) = redis::cmd("HC.KEYSLOT")
        .arg(key)
        .query(&mut c.conn(0))
        .unwrap();
    replicas
        .iter()
        .map(|(id, _)| {
            (0..c.ports.len())
                .find(|&i| *id == format!("127.0.0.1:{}", c.ports[i].1))
                .unwrap_or_else(|| panic!("member {id} is not a node of the test cluster"))
        })
        .collect()
}

/// The process twin of the simulator's `next_replica_coordinates_when_the_primary_is_down`
/// (cluster/src/simnode.rs): the same steps, the same outcome. The second replica misses an
/// INCRBY 5; the primary then dies with an INCR on its way; the second replica coordinates it,
/// reads the 5 from the third in its prepare round, and answers 6.
#[test]
fn the_next_replica_coordinates_when_the_primary_dies() {
    // Without hints: the second replica must still miss the INCRBY when it is back.
    let mut c = TestCluster::start(3, &NO_BACKGROUND_REPAIR);
    let key = "counter:failover";
    let reps = replicas_of(&c, key);
    let (primary, second, third) = (reps[0], reps[1], reps[2]);
    c.nodes[second].as_ref().unwrap().signal("STOP");
    // Both others see it down: nothing is even queued for it.
    c.wait_live(third, 2);
    c.wait_live(primary, 2);
    let mut t = c.conn_at(third, "quorum", "quorum");
    let n: i64 = redis::cmd("INCRBY").arg(key).arg(5).query(&mut t).unwrap();
    assert_eq!(n, 5);
    c.nodes[second].as_ref().unwrap().signal("CONT");
    for i in 0..3 {
        c.wait_live(i, 3);
    }
    let mut s1 = c.conn_at(second, "one", "quorum");
    assert_eq!(
        get(&mut s1, key),
        None,
        "the second replica missed the INCRBY"
    );
    c.kill(primary);
    let n: i64 = redis::cmd("INCR").arg(key).query(&mut t).unwrap();
    assert_eq!(
        n, 6,
        "the next replica took over with the value it had missed"
    );
    assert_eq!(
        get(&mut s1, key).as_deref(),
        Some("6"),
        "and holds the result"
    );
    // The primary comes back empty, copies the slot, and serves the newest value itself.
    c.restart(primary);
    c.wait_synced(primary);
    let mut p = c.conn_at(primary, "one", "quorum");
    assert_eq!(get(&mut p, key).as_deref(), Some("6"));
}

/// Two node ids whose version origins collide would tie on equal clocks and never converge:
/// each node refuses the other at the handshake, logs why and counts it.
#[test]
fn peers_whose_ids_share_a_version_origin_are_refused() {
    use hypercache_cluster::version::origin_of;
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..2_000_000u32)
        .map(|i| format!("node-{i}"))
        .find_map(|id| {
            seen.insert(origin_of(&id), id.clone())
                .map(|other| (other, id))
        })
        .expect("32 bits collide within a few hundred thousand ids");
    assert_eq!(origin_of(&a), origin_of(&b));
    let cports = [common::free_port(), common::free_port()];
    let seeds = format!("127.0.0.1:{},127.0.0.1:{}", cports[0], cports[1]);
    let nodes: Vec<_> = [(&a, cports[0]), (&b, cports[1])]
        .into_iter()
        .map(|(id, cport)| {
            let (id, seeds) = (id.clone(), seeds.clone());
            common::start("hypercache", move |port| {
                let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hypercache"));
                cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--cluster-port", &cport.to_string(), "--node-id", &id])
                    .args(["--http-port", "0"])
                    .args(["--seeds", &seeds, "--log-level", "error"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                cmd
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for n in &nodes {
        let mut conn = n.client().get_connection().unwrap();
        let info: String = redis::cmd("INFO").arg("cluster").query(&mut conn).unwrap();
        assert!(info.contains("hc_members_live:1"), "{info}");
        let failures: i64 = info
            .lines()
            .find_map(|l| l.strip_prefix("dist_link_handshake_failures:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(failures > 0, "{info}");
    }
}

/// Every background task belongs to the node's tracker and ends on shutdown: a node whose peers
/// are all gone (its start-up copy and links still waiting for them) stops promptly on SHUTDOWN.
#[test]
fn shutdown_stops_background_work_promptly_with_the_peers_gone() {
    let mut c = TestCluster::start(3, &[]);
    c.kill(1);
    c.kill(2);
    let mut conn = c.conn(0);
    let _: RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut conn);
    let mut node = c.nodes[0].take().unwrap();
    assert!(
        node.wait_exit(Duration::from_secs(3)),
        "node 0 did not stop within 3 s of SHUTDOWN"
    );
}

/// One metrics registry: a cluster counts keyspace hits and misses as a single node does, and
/// `HC.METRICS` reports the server, store and memory figures beside `dist.*`.
#[test]
fn a_cluster_counts_keyspace_hits_and_misses_and_reports_one_registry() {
    let c = TestCluster::start(3, &[]);
    let mut conn = c.conn_at(0, "quorum", "quorum");
    let _: () = redis::cmd("SET")
        .arg("there")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    for _ in 0..3 {
        assert_eq!(get(&mut conn, "there").as_deref(), Some("1"));
    }
    assert_eq!(get(&mut conn, "absent"), None);
    let mut one = c.conn_at(0, "one", "quorum");
    assert_eq!(get(&mut one, "there").as_deref(), Some("1"));
    assert_eq!(metric(&c, 0, "server.keyspace_hits"), 4);
    assert_eq!(metric(&c, 0, "server.keyspace_misses"), 1);
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut c.conn(0))
        .unwrap();
    assert!(info.contains("keyspace_hits:4\r\n"), "{info}");
    assert!(info.contains("keyspace_misses:1\r\n"), "{info}");
    assert_eq!(metric(&c, 0, "store.keys"), 1);
    assert!(metric(&c, 0, "memory.used") > 0);
    assert!(metric(&c, 0, "dist.write.attempts") >= 1);
}

/// The deadline rule, through real processes: a forward whose coordinator is connected but
/// paused (its link is still up: the heartbeat needs 2 s) gets `NOREPLICAS` after three request
/// timeouts, not before. The simulator twin is in cluster/src/simnode.rs.
#[test]
fn a_forward_to_a_silent_coordinator_fails_after_three_timeouts() {
    let c = TestCluster::start(3, &["--request-timeout-ms", "300"]);
    let key = "counter:silent";
    let reps = replicas_of(&c, key);
    let (primary, third) = (reps[0], reps[2]);
    let mut t = c.conn_at(third, "quorum", "quorum");
    c.nodes[primary].as_ref().unwrap().signal("STOP");
    let started = std::time::Instant::now();
    let r: RedisResult<i64> = redis::cmd("INCR").arg(key).query(&mut t);
    let took = started.elapsed();
    c.nodes[primary].as_ref().unwrap().signal("CONT");
    assert!(is_noreplicas(&r), "{r:?}");
    assert!(
        took >= Duration::from_millis(900),
        "gave up after {took:?}, before 3 x 300 ms"
    );
    assert!(took < Duration::from_millis(1900), "took {took:?}");
}

/// A peer that speaks protocol version 1 is refused at the handshake and counted.
#[test]
fn a_version_1_peer_is_refused() {
    let c = TestCluster::start(2, &[]);
    let before = metric(&c, 0, "dist.link.handshake_failures");
    let mut raw = TcpStream::connect(("127.0.0.1", c.ports[0].1)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A version-1 header: magic, version 1, kind hello, no flags, id 0, an empty body.
    let mut frame = b"HC\x01\x01\x00\x00".to_vec();
    frame.extend_from_slice(&0u64.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    raw.write_all(&frame).unwrap();
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    assert_eq!(metric(&c, 0, "dist.link.handshake_failures"), before + 1);
    c.wait_live(0, 2);
}

/// Before the handshake, a stranger learns nothing and cannot make a node allocate: a hello
/// with another cluster name gets the link closed without a byte (no cluster name, no node id),
/// and a compressed frame (an lz4 bomb that would inflate to 1 GiB) is refused from its header.
#[test]
fn strangers_learn_nothing_and_cannot_make_a_node_allocate_before_the_handshake() {
    use hypercache_cluster::wire::{self, Hello, Kind};
    let c = TestCluster::start(2, &[]);
    let failures = || metric(&c, 0, "dist.link.handshake_failures");
    let before = failures();
    let talk = |frame: &[u8]| -> Vec<u8> {
        let mut raw = TcpStream::connect(("127.0.0.1", c.ports[0].1)).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = raw.write_all(frame);
        let mut buf = Vec::new();
        let _ = raw.read_to_end(&mut buf);
        buf
    };
    let mut frame = bytes::BytesMut::new();
    wire::encode(
        Kind::Hello,
        0,
        &wire::to_body(&Hello {
            cluster: "not-this-one".into(),
            node_id: "stranger".into(),
            protocol: wire::VERSION,
            client_addr: String::new(),
            nonce: [0; 16],
        }),
        &mut frame,
    );
    assert_eq!(talk(&frame), Vec::<u8>::new(), "a refusal says nothing");
    assert_eq!(failures(), before + 1);
    // A compressed hello whose body inflates 250-fold (64 MB of zeros in about 256 KB): the
    // header alone is enough to refuse it.
    let used = |c: &TestCluster| -> i64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut c.conn(0))
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let mem_before = used(&c);
    let mut frame = bytes::BytesMut::new();
    wire::encode(Kind::Hello, 0, &vec![0u8; 64 << 20], &mut frame);
    assert_eq!(frame[4], 1, "compressed");
    assert!(frame.len() < 1 << 20);
    assert_eq!(talk(&frame), Vec::<u8>::new());
    assert_eq!(failures(), before + 2);
    assert!(
        used(&c) - mem_before < 8 << 20,
        "the node allocated for a stranger's frame"
    );
    // The cluster still works.
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("strangers")
        .query(&mut c.conn(0))
        .unwrap();
    assert_eq!(get(&mut c.conn(1), "after").as_deref(), Some("strangers"));
}

/// Reads one handshake-sized frame from `raw` (panics if the peer closes first).
fn read_frame(raw: &mut TcpStream) -> hypercache_cluster::wire::Frame {
    use hypercache_cluster::wire::{self, WireLimits};
    let mut got = bytes::BytesMut::new();
    loop {
        let mut buf = [0u8; 4096];
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a frame");
        got.extend_from_slice(&buf[..n]);
        if let Some(f) = wire::decode(&mut got, &WireLimits::handshake()).unwrap() {
            return f;
        }
    }
}

/// With `cluster-secret`, the nodes link and gossip only with nodes that prove it: a process
/// that speaks the protocol and knows the cluster name, but not the secret, is refused by every
/// node, learns nothing about them, and changes nothing (its Put is never acted on).
#[test]
fn a_cluster_secret_keeps_outsiders_out() {
    use hypercache_cluster::msg::{Request, State};
    use hypercache_cluster::version::Version;
    use hypercache_cluster::wire::{self, Challenge, Hello, Kind};
    let c = TestCluster::start(3, &["--cluster-secret", "s3cret"]);
    assert_eq!(
        c.live_seen(0),
        3,
        "members that share the secret link and gossip"
    );
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut c.conn_at(0, "quorum", "all"))
        .unwrap();

    // Processes with the right name and seeds but another secret, or none.
    let seeds = format!("127.0.0.1:{},127.0.0.1:{}", c.ports[0].1, c.ports[1].1);
    let strangers: Vec<common::Server> = [Some("guess"), None]
        .into_iter()
        .map(|secret| {
            let seeds = seeds.clone();
            common::start("hypercache", move |port| {
                let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hypercache"));
                cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args([
                        "--http-port",
                        "0",
                        "--seeds",
                        &seeds,
                        "--log-level",
                        "error",
                    ]);
                if let Some(s) = secret {
                    cmd.args(["--cluster-secret", s]);
                }
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                cmd
            })
        })
        .collect();
    // They announce themselves over UDP to their seeds; untagged or mis-tagged, every datagram
    // is dropped, so they never learn a member (and never dial one).
    let dropped = || {
        metric(&c, 0, "dist.heartbeat.bad_datagrams")
            + metric(&c, 1, "dist.heartbeat.bad_datagrams")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dropped() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dropped() >= 4, "the strangers' gossip reached no one");
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..3 {
        let members: Vec<redis::Value> = redis::cmd("HC.MEMBERS").query(&mut c.conn(i)).unwrap();
        assert_eq!(members.len(), 3, "node {i} let a stranger in");
    }
    assert!(
        metric(&c, 0, "dist.heartbeat.bad_datagrams") > 0,
        "their gossip is dropped"
    );
    for s in &strangers {
        let live: String = redis::cmd("INFO")
            .arg("cluster")
            .query(&mut s.conn())
            .unwrap();
        assert!(live.contains("hc_members_live:1"), "{live}");
        let got: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg("k").query(&mut s.conn());
        assert!(
            !matches!(got, Ok(Some(_))),
            "a stranger read a member's key"
        );
    }

    // By hand: a correct hello gets a challenge that names nothing, and a Put sent instead of
    // the proof closes the link with nothing applied.
    let mut raw = TcpStream::connect(("127.0.0.1", c.ports[0].1)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = bytes::BytesMut::new();
    wire::encode(
        Kind::Hello,
        0,
        &wire::to_body(&Hello {
            cluster: "hypercache".into(),
            node_id: "outsider".into(),
            protocol: wire::VERSION,
            client_addr: String::new(),
            nonce: [9; 16],
        }),
        &mut out,
    );
    raw.write_all(&out).unwrap();
    let challenge = read_frame(&mut raw);
    assert_eq!(challenge.kind, Kind::Auth);
    let _: Challenge = wire::from_body(&challenge.body).unwrap();
    let node_id = format!("127.0.0.1:{}", c.ports[0].1);
    for secret in [&b"hypercache"[..], node_id.as_bytes()] {
        assert!(
            !challenge.body.windows(secret.len()).any(|w| w == secret),
            "the challenge names the cluster or the node"
        );
    }
    let mut put = bytes::BytesMut::new();
    wire::encode(
        Kind::Request,
        1,
        &wire::to_body(&Request::Put {
            key: b"k",
            state: State::Live {
                value: bytes::Bytes::from_static(b"planted"),
                version: Version {
                    hlc: u64::MAX / 2,
                    origin: 1,
                },
                expire_at: 0,
                enc: 0,
            },
        }),
        &mut put,
    );
    let _ = raw.write_all(&put);
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.is_empty(), "answered an unauthenticated request");
    assert_eq!(metric(&c, 0, "dist.link.auth_failures"), 1);

    // A proof made with another secret is refused the same way.
    let mut raw = TcpStream::connect(("127.0.0.1", c.ports[1].1)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(&out).unwrap();
    let challenge = read_frame(&mut raw);
    let ch: Challenge = wire::from_body(&challenge.body).unwrap();
    let guess = wire::Secret::new("guess");
    let proof = guess.proof(wire::Role::Dialer, &[9; 16], &ch.nonce, "outsider");
    let mut pf = bytes::BytesMut::new();
    wire::encode(
        Kind::Auth,
        0,
        &wire::to_body(&wire::Proof { proof }),
        &mut pf,
    );
    pf.extend_from_slice(&put);
    let _ = raw.write_all(&pf);
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a wrong proof was answered");
    assert_eq!(metric(&c, 1, "dist.link.auth_failures"), 1);
    for i in 0..3 {
        assert_eq!(
            get(&mut c.conn_at(i, "all", "quorum"), "k").as_deref(),
            Some("v"),
            "node {i}"
        );
    }

    // A Dump (every slot), a Flush and a change of the users sent instead of the proof: each
    // closes the link unanswered, and nothing is read, erased or changed.
    let users_before: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut c.conn(2)).unwrap();
    let future = Version {
        hlc: u64::MAX / 2,
        origin: 1,
    };
    let requests = [
        Request::Dump {
            slots: (0..16384).collect(),
            budget: 1 << 20,
        },
        Request::Flush {
            horizon: future,
            db: None,
        },
        Request::PutSettings {
            doc: hypercache_cluster::settings::USERS,
            entries: vec![(
                bytes::Bytes::from_static(b"default"),
                future,
                Some(bytes::Bytes::from_static(b"user default off")),
            )],
        },
    ];
    let refused = metric(&c, 2, "dist.link.handshake_failures");
    for (n, req) in requests.iter().enumerate() {
        let mut raw = TcpStream::connect(("127.0.0.1", c.ports[2].1)).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        raw.write_all(&out).unwrap();
        let challenge = read_frame(&mut raw);
        assert_eq!(challenge.kind, Kind::Auth);
        let mut frame = bytes::BytesMut::new();
        wire::encode(Kind::Request, 1, &wire::to_body(req), &mut frame);
        let _ = raw.write_all(&frame);
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest);
        assert!(rest.is_empty(), "answered an unauthenticated {req:?}");
        // Refused for its size (the Dump, over the 4 KB of a handshake frame) or as a missing
        // proof: a refused handshake either way.
        assert_eq!(
            metric(&c, 2, "dist.link.handshake_failures"),
            refused + n as i64 + 1
        );
    }
    for i in 0..3 {
        assert_eq!(
            get(&mut c.conn_at(i, "all", "quorum"), "k").as_deref(),
            Some("v"),
            "node {i}"
        );
    }
    let users_after: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut c.conn(2)).unwrap();
    assert_eq!(users_after, users_before, "an outsider changed the users");
}

/// At the default levels (QUORUM reads and writes: R + W > N), a read through one node right
/// after an acknowledged write through another returns that write: 0 stale in 10,000 tries.
/// (With ONE reads, 45 of 2,000 tries were stale: an application behind a load balancer posts
/// through one app server and reads through another.)
#[test]
fn default_levels_read_the_last_write_through_any_node() {
    let c = TestCluster::start(3, &[]);
    let mut conns: Vec<_> = (0..3).map(|i| c.conn(i)).collect();
    let mut stale = Vec::new();
    for i in 0..10_000u32 {
        let (w, r) = ((i % 3) as usize, ((i + 1) % 3) as usize);
        let key = format!("raw:{}", i % 64);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query(&mut conns[w])
            .unwrap();
        let got: Option<u32> = redis::cmd("GET").arg(&key).query(&mut conns[r]).unwrap();
        if got != Some(i) {
            stale.push((i, got));
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale reads: {:?}",
        stale.len(),
        &stale[..stale.len().min(10)]
    );
}

/// `MSET`, `DEL` and `UNLINK` on keys of one slot are one round of that slot, as in Redis
/// Cluster: concurrent MSETs through every node (racing each other on the same keys, which
/// restamps them) all succeed and leave both keys with the same client's value on every
/// replica, each counts as one round, and a DEL of both answers 2.
#[test]
fn multi_key_writes_of_one_slot_are_one_round() {
    let cluster = TestCluster::start(3, &[]);
    let rounds = |cluster: &TestCluster| -> i64 {
        (0..3)
            .map(|n| {
                let v = cluster.info_in(n, "cluster", "dist_group_rounds");
                v.parse::<i64>().unwrap_or_else(|_| panic!("{v:?}"))
            })
            .sum()
    };
    let before = rounds(&cluster);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let mut c = cluster.conn(t % 3);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let v = format!("{t}-{i}");
                    let _: () = redis::cmd("MSET")
                        .arg("{m}a")
                        .arg(&v)
                        .arg("{m}b")
                        .arg(&v)
                        .query(&mut c)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for node in 0..3 {
        let (a, b): (String, String) = redis::cmd("MGET")
            .arg("{m}a")
            .arg("{m}b")
            .query(&mut cluster.conn_at(node, "all", "quorum"))
            .unwrap();
        assert_eq!(a, b, "through node {node}");
    }
    // Each MSET was one round (the counts are booked once the last acknowledgement is in).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rounds(&cluster) < before + 240 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(rounds(&cluster), before + 240);
    let mut c = cluster.conn(1);
    let n: i64 = redis::cmd("DEL")
        .arg("{m}a")
        .arg("{m}b")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("EXISTS")
        .arg("{m}a")
        .arg("{m}b")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0);
    // A member's client port is its identity for the others: it does not change at run time.
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("port")
        .arg(common::free_port())
        .query::<()>(&mut cluster.conn(0))
        .unwrap_err();
    assert!(e.to_string().contains("cannot change at run time"), "{e}");
}
