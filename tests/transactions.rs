//! Transactions (`MULTI`/`EXEC`/`DISCARD`/`WATCH`) through real clients: isolation and
//! optimistic locking on a single node, ordered execution through a cluster node.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::io::Write;

use common::{Server, TestCluster};
use redis::{Commands, Value};

/// The optimistic-locking loop every client library documents: WATCH, read, MULTI, write,
/// EXEC, and again on a nil EXEC. Concurrent clients must never lose an increment.
/// Each connection of `conns` adds `each`; returns how many EXECs answered nil.
fn watched_increments(conns: Vec<redis::Connection>, each: usize) -> usize {
    let retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let retries = retries.clone();
            std::thread::spawn(move || {
                for _ in 0..each {
                    loop {
                        let _: () = redis::cmd("WATCH").arg("counter").query(&mut c).unwrap();
                        let n: Option<i64> = c.get("counter").unwrap();
                        let r: Option<(String,)> = redis::pipe()
                            .atomic()
                            .set("counter", n.unwrap_or(0) + 1)
                            .query(&mut c)
                            .unwrap();
                        if r.is_some() {
                            break;
                        }
                        retries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    retries.load(Ordering::Relaxed)
}

#[test]
fn concurrent_watched_increments_never_lose_an_update() {
    let s = Server::start(&["--threads", "4"]);
    let retries = watched_increments((0..4).map(|_| s.conn()).collect(), 250);
    let n: i64 = s.conn().get("counter").unwrap();
    assert_eq!(n, 1000, "{retries} retries");
}

/// The same loop through every node of a 3-node cluster, two clients per node: the WATCH check
/// and the write are one read-modify-write round of the key, so no increment is lost, and
/// every replica ends with the total.
#[test]
fn concurrent_watched_increments_through_every_node_never_lose_an_update() {
    let cluster = TestCluster::start(3, &[]);
    let conns = (0..6).map(|i| cluster.conn(i % 3)).collect();
    let retries = watched_increments(conns, 40);
    for node in 0..3 {
        let n: i64 = cluster
            .conn_at(node, "all", "quorum")
            .get("counter")
            .unwrap();
        assert_eq!(n, 240, "through node {node} ({retries} retries)");
    }
}

/// While one client moves a unit from `a` to `b` in transactions, another reading both keys in
/// one command (not a transaction) must always see them sum to the same total: no command runs
/// between a transaction's commands.
#[test]
fn no_command_runs_between_a_transaction_s_commands() {
    // Several workers, so that batches really run in parallel (the default on a 2-core machine
    // is one worker, where a batch is never interleaved anyway).
    let s = Server::start(&["--threads", "4"]);
    common::reads_never_see_half_a_move(&s, 3, 1_000_000, |c| {
        for _ in 0..2000 {
            // Commands in between widen the window a reader could fall into.
            let mut p = redis::pipe();
            p.atomic().decr("a", 1);
            for _ in 0..50 {
                p.incr("pad", 1).ignore();
            }
            let (a, b): (i64, i64) = p.incr("b", 1).query(c).unwrap();
            assert_eq!(a + b, 1_000_000);
        }
    });
    let got: (i64, i64) = redis::cmd("MGET")
        .arg("a")
        .arg("b")
        .query(&mut s.conn())
        .unwrap();
    assert_eq!(got, (1_000_000 - 2000, 2000));
}

/// The cases a library meets: queued replies, an error at run time reported in its place, a
/// command refused while queuing aborting everything, a watched key changed by another client,
/// by expiry, or by FLUSHALL.
#[test]
fn exec_replies_as_redis_does() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let mut other = s.conn();

    let mut raw = s.raw();
    let mut exec = |cmds: &[&[&str]], want: &str| {
        assert_eq!(exec_raw(&mut raw, cmds, want), want, "{cmds:?}");
    };
    let _: () = c.set("s", "text").unwrap();
    // An error at run time is the reply in its place; the other commands run.
    exec(
        &[&["SET", "k", "1"], &["INCR", "s"], &["INCR", "k"]],
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
         *3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n:2\r\n",
    );
    // A command refused while queuing: nothing runs.
    exec(
        &[&["SET", "k", "100"], &["GET"], &["INCR", "k"]],
        "+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n+QUEUED\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    assert_eq!(c.get::<_, i64>("k").unwrap(), 2);

    // WATCH: another client's write, an expiry and a FLUSHALL each make EXEC answer nil.
    let watch = |raw: &mut std::net::TcpStream, keys: &str| {
        raw.write_all(format!("WATCH {keys}\r\n").as_bytes())
            .unwrap();
        assert_eq!(common::read_exactly(raw, 5), b"+OK\r\n");
    };
    let mut watching = s.raw();
    let mut run = |keys: &str, between: &mut dyn FnMut(), cmds: &[&[&str]], want: &str| {
        watch(&mut watching, keys);
        between();
        assert_eq!(exec_raw(&mut watching, cmds, want), want, "WATCH {keys}");
    };
    run(
        "k",
        &mut || other.set::<_, _, ()>("k", 7).unwrap(),
        &[&["INCR", "k"]],
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    assert_eq!(c.get::<_, i64>("k").unwrap(), 7);
    let _: () = redis::cmd("SET")
        .arg("t")
        .arg(1)
        .arg("PX")
        .arg(50)
        .query(&mut c)
        .unwrap();
    run(
        "t",
        &mut || std::thread::sleep(std::time::Duration::from_millis(120)),
        &[&["SET", "t", "2"]],
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    run(
        "k never-set",
        &mut || redis::cmd("FLUSHALL").query::<()>(&mut other).unwrap(),
        &[&["PING"]],
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    // A key absent when watched and absent still (FLUSHALL changed nothing for it).
    run(
        "never-set",
        &mut || redis::cmd("FLUSHALL").query::<()>(&mut other).unwrap(),
        &[&["PING"]],
        "+OK\r\n+QUEUED\r\n*1\r\n+PONG\r\n",
    );
    // Nothing changed: the transaction runs.
    run(
        "k",
        &mut || {},
        &[&["SET", "k", "1"]],
        "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
    );

    // CLIENT LIST shows the open transaction as Redis does.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: Value = redis::cmd("SET").arg("x").arg(1).query(&mut c).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut other).unwrap();
    assert!(
        list.contains("flags=x") && list.contains("multi=1"),
        "{list}"
    );
    // ... and what its queued commands hold (`multi-mem`), which a bigger queue raises.
    let multi_mem = |list: &str| -> usize {
        let line = list.lines().find(|l| l.contains("flags=x")).unwrap_or("");
        line.split(' ')
            .find_map(|f| f.strip_prefix("multi-mem="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let one = multi_mem(&list);
    assert!(one > 0, "{list}");
    let big = "v".repeat(10_000);
    let _: Value = redis::cmd("SET").arg("y").arg(&big).query(&mut c).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut other).unwrap();
    assert!(multi_mem(&list) >= one + 10_000, "{list}");
    let _: () = redis::cmd("DISCARD").query(&mut c).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut other).unwrap();
    assert!(
        !list.contains("flags=x") && !list.contains("multi=1"),
        "{list}"
    );
    assert!(
        list.lines().all(|l| l.contains("multi-mem=0")),
        "no client holds a transaction: {list}"
    );
}

/// Sends MULTI, `cmds` and EXEC in one write on `sock` and returns as many bytes as `want` has,
/// as text.
/// Sends inline commands `text` and reads as many bytes as `want` has.
fn exec_raw_text(sock: &mut std::net::TcpStream, text: &str, want: &str) -> String {
    sock.write_all(text.as_bytes()).unwrap();
    let got = common::read_exactly(sock, want.len());
    String::from_utf8_lossy(&got).into_owned()
}

fn exec_raw(sock: &mut std::net::TcpStream, cmds: &[&[&str]], want: &str) -> String {
    let mut p = redis::pipe();
    p.cmd("MULTI");
    for cmd in cmds {
        let mut one = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            one.arg(*a);
        }
        p.add_command(one);
    }
    p.cmd("EXEC");
    sock.write_all(&p.get_packed_pipeline()).unwrap();
    let got = common::read_exactly(sock, want.len());
    String::from_utf8_lossy(&got).into_owned()
}

/// Through one node of a 3-node cluster a transaction runs every queued command in order and
/// answers like Redis. A watched transaction is one command on the one watched key: it answers
/// nil after a write through another node, a delete or an expiry, and anything else is refused
/// with a clear error before it runs.
#[test]
fn a_transaction_through_a_cluster_node_runs_in_order() {
    let cluster = TestCluster::start(3, &[]);
    let mut c = cluster.conn(0);
    let r: (String, i64, i64, Option<String>, i64) = redis::pipe()
        .atomic()
        .set("tx:a", 10)
        .incr("tx:a", 5)
        .incr("tx:b", 1)
        .get("tx:missing")
        .del(&["tx:a", "tx:b"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, ("OK".into(), 15, 1, None, 2));
    let mut d = cluster.conn(1);
    assert_eq!(d.exists::<_, i64>(&["tx:a", "tx:b"]).unwrap(), 0);
    let mut raw = std::net::TcpStream::connect(cluster.addr(0)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut send = |cmds: &[&str], want: &str| {
        let text: String = cmds.iter().map(|c| format!("{c}\r\n")).collect();
        assert_eq!(exec_raw_text(&mut raw, &text, want), want, "{cmds:?}");
    };
    // Unchanged: applies, with the command's reply in the array.
    send(
        &["SET w 1", "WATCH w", "MULTI", "INCR w", "EXEC"],
        "+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:2\r\n",
    );
    // Written through another node between WATCH and EXEC: nil, and that write stays.
    send(&["WATCH w"], "+OK\r\n");
    let _: () = d.set("w", "other").unwrap();
    send(
        &["MULTI", "SET w mine", "EXEC"],
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    assert_eq!(d.get::<_, String>("w").unwrap(), "other");
    // Deleted, or expired, since: nil.
    send(&["WATCH w"], "+OK\r\n");
    let _: i64 = d.del("w").unwrap();
    send(
        &["MULTI", "SET w mine", "EXEC"],
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    send(&["SET w v PX 1500", "WATCH w"], "+OK\r\n+OK\r\n");
    std::thread::sleep(std::time::Duration::from_millis(1700));
    send(
        &["MULTI", "SET w mine", "EXEC"],
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    // Absent when watched and still absent: applies. UNWATCH forgets.
    send(
        &["WATCH fresh", "MULTI", "SET fresh 1", "EXEC"],
        "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
    );
    send(
        &[
            "WATCH fresh",
            "UNWATCH",
            "MULTI",
            "SET fresh 2",
            "SET other 3",
            "EXEC",
        ],
        "+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n",
    );
    // An error at run time is the command's reply inside the array.
    send(
        &["WATCH fresh", "MULTI", "SET fresh v EX notanumber", "EXEC"],
        "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n-ERR value is not an integer or out of range\r\n",
    );
    // Several commands on the watched key: one batch, checked and applied as one.
    send(
        &[
            "WATCH fresh",
            "MULTI",
            "SET fresh x",
            "APPEND fresh y",
            "GET fresh",
            "EXEC",
        ],
        "+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:2\r\n$2\r\nxy\r\n",
    );
    send(&["WATCH fresh"], "+OK\r\n");
    let _: () = d.set("fresh", "theirs").unwrap();
    send(
        &["MULTI", "SET fresh x", "APPEND fresh y", "EXEC"],
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n",
    );
    assert_eq!(d.get::<_, String>("fresh").unwrap(), "theirs");
    let _: () = d.set("fresh", "2").unwrap();
    // Another key in it: refused, nothing runs.
    let refused = "-ERR in a cluster a WATCHed transaction must be single-key commands on keys of one slot (see docs/cluster.md)\r\n";
    for body in [
        &["MULTI", "SET other x", "EXEC"][..],
        &["MULTI", "SET fresh x", "SET other y", "EXEC"][..],
        &["MULTI", "MSET fresh x other y", "EXEC"][..],
    ] {
        let mut cmds = vec!["WATCH fresh"];
        cmds.extend_from_slice(body);
        let queued = "+QUEUED\r\n".repeat(body.len() - 2);
        send(&cmds, &format!("+OK\r\n+OK\r\n{queued}{refused}"));
    }
    send(
        &["WATCH fresh other", "MULTI", "SET fresh x", "EXEC"],
        &format!("+OK\r\n+OK\r\n+QUEUED\r\n{refused}"),
    );
    assert_eq!(d.get::<_, String>("fresh").unwrap(), "2");
    assert_eq!(d.get::<_, String>("other").unwrap(), "3");
}

/// A transaction's commands on one key run through a cluster as one operation: concurrent
/// transactions through every node, each `INCR k`, `INCR k`, never interleave (each gets two
/// consecutive numbers, the first odd), and a counter with its expiry set in the same
/// transaction always has both (the fixed-window rate limiter's `INCR`, `EXPIRE`).
#[test]
fn a_transaction_on_one_key_is_atomic_through_a_cluster() {
    let cluster = TestCluster::start(3, &[]);
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let mut c = cluster.conn(i % 3);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let (a, b): (i64, i64) = redis::pipe()
                        .atomic()
                        .incr("pair", 1)
                        .incr("pair", 1)
                        .query(&mut c)
                        .unwrap();
                    assert_eq!((a % 2, b), (1, a + 1), "interleaved");
                    let (hits, set, ttl): (i64, i64, i64) = redis::pipe()
                        .atomic()
                        .incr("window", 1)
                        .expire("window", 60)
                        .ttl("window")
                        .query(&mut c)
                        .unwrap();
                    assert!(
                        hits >= 1 && set == 1 && (59..=60).contains(&ttl),
                        "{hits} {set} {ttl}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for node in 0..3 {
        let mut c = cluster.conn_at(node, "all", "quorum");
        assert_eq!(c.get::<_, i64>("pair").unwrap(), 600, "through node {node}");
        assert_eq!(
            c.get::<_, i64>("window").unwrap(),
            300,
            "through node {node}"
        );
        assert!(c.ttl::<_, i64>("window").unwrap() > 0);
    }
    // A command refused at run time is reported in its place; the others run.
    let mut raw = std::net::TcpStream::connect(cluster.addr(1)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let not_int = "-ERR value is not an integer or out of range\r\n";
    let want = format!(
        "+OK\r\n{}*4\r\n+OK\r\n{not_int}{not_int}:4\r\n",
        "+QUEUED\r\n".repeat(4)
    );
    let got = exec_raw_text(
        &mut raw,
        "MULTI\r\nSET mixed abc\r\nINCR mixed\r\nSET mixed v EX no\r\nAPPEND mixed d\r\nEXEC\r\n",
        &want,
    );
    assert_eq!(got, want);
    let mut c = cluster.conn(2);
    assert_eq!(c.get::<_, String>("mixed").unwrap(), "abcd");
    // Its GETs count as keyspace hits and misses, as on their own.
    let count = |section: &str, field: &str| -> i64 {
        let v = cluster.info_in(2, section, field);
        v.parse().unwrap_or_else(|_| panic!("{field}: {v:?}"))
    };
    let (hits, misses) = (
        count("stats", "keyspace_hits"),
        count("stats", "keyspace_misses"),
    );
    let _: (Option<String>, String, String) = redis::pipe()
        .atomic()
        .get("counted")
        .set("counted", "v")
        .get("counted")
        .query(&mut c)
        .unwrap();
    assert_eq!(count("stats", "keyspace_hits"), hits + 1);
    assert_eq!(count("stats", "keyspace_misses"), misses + 1);
    // A transaction of reads on one key is one read of it (a QUORUM read, no write round).
    let (reads, writes) = (
        count("cluster", "dist_read_fanouts"),
        count("cluster", "dist_write_attempts"),
    );
    let (v, ttl): (String, i64) = redis::pipe()
        .atomic()
        .get("window")
        .ttl("window")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "300");
    assert!(ttl > 0);
    assert_eq!(count("cluster", "dist_read_fanouts"), reads + 1);
    assert_eq!(count("cluster", "dist_write_attempts"), writes);
}

/// A transaction on several keys of one slot (a `{hash tag}`) runs through a cluster as one
/// round at the slot's coordinator: concurrent transactions through every node, each
/// `INCR {acct}a`, `INCR {acct}b`, never interleave (each sees both counters equal, and no two
/// see the same number); the transfer loop (WATCH two balances, read both, move one unit, again
/// on a nil EXEC) through every node never loses or creates a unit; and a write to one of the
/// watched keys through another node aborts EXEC.
#[test]
fn a_transaction_on_keys_of_one_slot_is_atomic_through_a_cluster() {
    let cluster = TestCluster::start(3, &[]);
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let mut c = cluster.conn(i % 3);
            let seen = seen.clone();
            std::thread::spawn(move || {
                for _ in 0..30 {
                    let (a, b): (i64, i64) = redis::pipe()
                        .atomic()
                        .incr("{acct}a", 1)
                        .incr("{acct}b", 1)
                        .query(&mut c)
                        .unwrap();
                    assert_eq!(a, b, "another transaction came between");
                    assert!(seen.lock().unwrap().insert(a), "{a} twice");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let _: () = cluster.conn(0).set("{bank}x", 1000).unwrap();
    let retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let mut c = cluster.conn(i % 3);
            let retries = retries.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    loop {
                        let _: () = redis::cmd("WATCH")
                            .arg("{bank}x")
                            .arg("{bank}y")
                            .query(&mut c)
                            .unwrap();
                        let (x, y): (i64, Option<i64>) = redis::cmd("MGET")
                            .arg("{bank}x")
                            .arg("{bank}y")
                            .query(&mut c)
                            .unwrap();
                        let r: Option<((), ())> = redis::pipe()
                            .atomic()
                            .set("{bank}x", x - 1)
                            .set("{bank}y", y.unwrap_or(0) + 1)
                            .query(&mut c)
                            .unwrap();
                        if r.is_some() {
                            break;
                        }
                        retries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for node in 0..3 {
        let mut c = cluster.conn_at(node, "all", "quorum");
        let got: (i64, i64, i64, i64) = redis::cmd("MGET")
            .arg("{acct}a")
            .arg("{acct}b")
            .arg("{bank}x")
            .arg("{bank}y")
            .query(&mut c)
            .unwrap();
        assert_eq!(
            got,
            (180, 180, 880, 120),
            "through node {node} ({retries:?} retries)"
        );
    }
    // A write to a watched key through another node between WATCH and EXEC: nil, and that
    // write stays; the other key is untouched.
    let mut raw = std::net::TcpStream::connect(cluster.addr(0)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut other = cluster.conn(2);
    assert_eq!(
        exec_raw_text(&mut raw, "WATCH {bank}x {bank}y\r\n", "+OK\r\n"),
        "+OK\r\n"
    );
    let _: () = other.set("{bank}y", "theirs").unwrap();
    let want = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n";
    let got = exec_raw_text(
        &mut raw,
        "MULTI\r\nSET {bank}x 0\r\nSET {bank}y 0\r\nEXEC\r\n",
        want,
    );
    assert_eq!(got, want);
    let got: (i64, String) = redis::cmd("MGET")
        .arg("{bank}x")
        .arg("{bank}y")
        .query(&mut other)
        .unwrap();
    assert_eq!(got, (880, "theirs".to_string()));
    // Nothing queued: EXEC only says whether a watched key changed.
    let want = "+OK\r\n+OK\r\n*0\r\n";
    let got = exec_raw_text(&mut raw, "WATCH {bank}x {bank}y\r\nMULTI\r\nEXEC\r\n", want);
    assert_eq!(got, want);
    assert_eq!(
        exec_raw_text(&mut raw, "WATCH {bank}x\r\n", "+OK\r\n"),
        "+OK\r\n"
    );
    let _: () = other.set("{bank}x", "1").unwrap();
    let want = "+OK\r\n*-1\r\n";
    assert_eq!(exec_raw_text(&mut raw, "MULTI\r\nEXEC\r\n", want), want);
}
