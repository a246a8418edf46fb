//! Redis replication from a single node (`SYNC`/`PSYNC`, docs/replication.md): a real
//! redis-server attached with `--replicaof` ends up holding exactly what the node holds, values
//! and expiry times, after concurrent clients wrote through every kind of write; the stream is
//! what Redis writes; a dropped link continues from the backlog; `WAIT` and
//! `min-replicas-to-write` count the replicas that acknowledge.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::resp::Conn;
use common::Server;
use rand::{Rng, SeedableRng};
use redis::Commands;

/// A redis-server primary (it starts a snapshot for a replica at once, not after 5 s; DEBUG
/// allowed, to stop its expiry cycle), in a directory of its own.
fn redis_primary() -> Server {
    common::start("redis-server", |port| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--enable-debug-command", "yes"])
            .current_dir(common::scratch_dir(port))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    })
}

/// A redis-server replicating from `primary`. It loads the snapshot from the socket, in a
/// directory of its own: a replica that loads from disk writes `dump.rdb` where it runs, and
/// another redis-server started there would load it.
fn redis_replica(primary: std::net::SocketAddr) -> Server {
    common::start("redis-server", |port| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-load", "swapdb"])
            .args([
                "--replicaof",
                &primary.ip().to_string(),
                &primary.port().to_string(),
            ])
            .current_dir(common::scratch_dir(port))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    })
}

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{info}"))
        .trim()
        .to_string()
}

/// Waits until the replica reports its link to the primary up.
fn wait_linked(replica: &mut redis::Connection) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while info_field(replica, "replication", "master_link_status") != "up" {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every key of every database with its value and absolute expiry (ms, -1: none).
fn dataset(c: &mut redis::Connection) -> Vec<Key> {
    let mut out = Vec::new();
    for db in 0..16u8 {
        let _: () = redis::cmd("SELECT").arg(db).query(c).unwrap();
        let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).unwrap();
        keys.sort();
        for k in keys {
            // Strings only: a Redis primary may hold other types, which a node passes over.
            let t: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
            if t != "string" {
                continue;
            }
            let v: Option<Vec<u8>> = c.get(&k).unwrap();
            let at: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(c).unwrap();
            // Gone between KEYS and GET (it expired): not part of the comparison.
            if let Some(v) = v {
                out.push((db, k, v, at));
            }
        }
    }
    let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    out
}

/// Four clients, each running `each` writes of [`random_write`]'s mix at once.
fn write_concurrently(client: &redis::Client, seed: u64, each: usize) {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut c = client.get_connection().unwrap();
                let mut rng = rand::rngs::SmallRng::seed_from_u64(seed + t);
                for _ in 0..each {
                    random_write(&mut c, &mut rng);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Fails with the first differences between the node's data and `other`'s (a key, its value's
/// start and its expiry).
fn assert_same(ours: &[Key], theirs: &[Key], other: &str) {
    let show = |(db, k, v, at): &Key| {
        let v = String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned();
        format!(
            "db{db} {} = {v:?} (expires {at})",
            String::from_utf8_lossy(k)
        )
    };
    let diff: Vec<_> = ours
        .iter()
        .filter(|x| !theirs.contains(x))
        .map(|x| format!("node only: {}", show(x)))
        .chain(
            theirs
                .iter()
                .filter(|x| !ours.contains(x))
                .map(|x| format!("{other} only: {}", show(x))),
        )
        .take(20)
        .collect();
    assert!(
        diff.is_empty(),
        "the {other} differs from the node ({} vs {} keys): {diff:?}",
        ours.len(),
        theirs.len()
    );
}

/// A key of [`dataset`]: database, key, value, absolute expiry (ms, -1: none).
type Key = (u8, Vec<u8>, Vec<u8>, i64);

/// One random write of the mix below, on one of a few keys of databases 0 and 1.
fn random_write(c: &mut redis::Connection, rng: &mut rand::rngs::SmallRng) {
    let k = |rng: &mut rand::rngs::SmallRng| format!("k{}", rng.random_range(0..24));
    let key = k(rng);
    let cmd = match rng.random_range(0..22) {
        0 => redis::cmd("SET").arg(&key).arg(rng.random::<u32>()).clone(),
        1 => redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .arg("EX")
            .arg(1000)
            .clone(),
        // Short-lived: expires on the node (actively or when read) during the run.
        2 => redis::cmd("SET")
            .arg(&key)
            .arg("brief")
            .arg("PX")
            .arg(rng.random_range(1..40))
            .clone(),
        3 => redis::cmd("INCR").arg(&key).clone(),
        4 => redis::cmd("INCRBYFLOAT").arg(&key).arg("1.5").clone(),
        5 => redis::cmd("APPEND").arg(&key).arg("x").clone(),
        6 => redis::cmd("DEL").arg(&key).arg(k(rng)).clone(),
        7 => redis::cmd("EXPIRE").arg(&key).arg(500).clone(),
        8 => redis::cmd("PERSIST").arg(&key).clone(),
        9 => redis::cmd("GETDEL").arg(&key).clone(),
        10 => redis::cmd("GETEX").arg(&key).arg("PX").arg(60_000).clone(),
        11 => redis::cmd("SETRANGE").arg(&key).arg(2).arg("zz").clone(),
        12 => redis::cmd("MSET")
            .arg(&key)
            .arg("m1")
            .arg(k(rng))
            .arg("m2")
            .clone(),
        13 => redis::cmd("RENAME").arg(&key).arg(k(rng)).clone(),
        14 => redis::cmd("SETBIT")
            .arg(&key)
            .arg(rng.random_range(0..64))
            .arg(1)
            .clone(),
        15 => redis::cmd("GETSET").arg(&key).arg("gs").clone(),
        16 => redis::cmd("EVAL")
            .arg("redis.call('SET', KEYS[1], ARGV[1]); redis.call('INCR', KEYS[2]); return 1")
            .arg(2)
            .arg(&key)
            .arg(k(rng))
            .arg("lua")
            .clone(),
        17 => redis::cmd("SET")
            .arg(&key)
            .arg("kept")
            .arg("KEEPTTL")
            .arg("GET")
            .clone(),
        18 => redis::cmd("PEXPIREAT").arg(&key).arg(1).clone(),
        19 => redis::cmd("COPY")
            .arg(&key)
            .arg(k(rng))
            .arg("REPLACE")
            .clone(),
        20 => redis::cmd("MOVE").arg(&key).arg(1).clone(),
        _ => {
            // A transaction of several writes.
            let mut p = redis::pipe();
            p.atomic()
                .set(&key, "t1")
                .incr(k(rng), 2)
                .append(k(rng), "t")
                .expire(&key, 300);
            let _: redis::RedisResult<redis::Value> = p.query(c);
            return;
        }
    };
    if rng.random_range(0..8) == 0 {
        let _: redis::RedisResult<()> = redis::cmd("SELECT").arg(1).query(c);
        let _: redis::RedisResult<redis::Value> = cmd.query(c);
        let _: redis::RedisResult<()> = redis::cmd("SELECT").arg(0).query(c);
        return;
    }
    // Errors (INCR of a word, RENAME of a missing key) are part of the mix.
    let _: redis::RedisResult<redis::Value> = cmd.query(c);
    // A read now and then expires a short-lived key when it finds it past its time.
    if rng.random_range(0..4) == 0 {
        let _: redis::RedisResult<Option<Vec<u8>>> = c.get(k(rng));
    }
}

/// A redis-server replica of a node, attached while the node already held data (snapshot) and
/// following four clients writing concurrently (stream): every key, value and expiry time ends
/// up the same on both; `WAIT` sees the replica acknowledge it all.
#[test]
fn a_redis_replica_ends_up_with_exactly_what_the_node_holds() {
    // Four workers, so that commands really run at once (the default is one per core but one).
    let node = Server::start(&["--threads", "4"]);
    let mut c = node.conn();
    // Before the replica: what the snapshot carries.
    for i in 0..200 {
        let _: () = c.set(format!("pre{i}"), i).unwrap();
    }
    let _: () = c.set_ex("pre-ttl", "v", 10_000).unwrap();
    let _: () = c.set("pre-big", vec![7u8; 100_000]).unwrap();
    let _: () = c.set("pre-bin", b"a\x00\r\nb".to_vec()).unwrap();
    let _: () = redis::cmd("SELECT").arg(5).query(&mut c).unwrap();
    let _: () = c.set("in-db5", "five").unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=lib\nredis.register_function('bump', function(k) return redis.call('INCR', k[1]) end)")
        .query(&mut c)
        .unwrap();

    let replica = redis_replica(node.addr);
    let mut r = replica.conn();
    wait_linked(&mut r);

    write_concurrently(&node.client(), 0, 600);
    // Writers racing on three keys, pipelined: each append's place in the value is the order
    // the node applied it, which the stream must keep.
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let client = node.client();
            std::thread::spawn(move || {
                let mut c = client.get_connection().unwrap();
                for round in 0..100u32 {
                    let mut p = redis::pipe();
                    for i in 0..20u32 {
                        let key = format!("race{}", (round + i) % 3);
                        if i % 7 == 6 {
                            p.set(&key, format!("{t}")).ignore();
                        } else {
                            p.append(&key, format!("{t}")).ignore();
                        }
                    }
                    let _: () = p.query(&mut c).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Administrative writes Redis propagates as sent.
    let _: i64 = redis::cmd("FCALL")
        .arg("bump")
        .arg(1)
        .arg("fcalled")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SWAPDB").arg(5).arg(6).query(&mut c).unwrap();
    let _: () = redis::cmd("SELECT").arg(2).query(&mut c).unwrap();
    let _: () = c.set("doomed", "x").unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let payload: Vec<u8> = redis::cmd("DUMP").arg("pre1").query(&mut c).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("restored")
        .arg(100_000)
        .arg(payload)
        .query(&mut c)
        .unwrap();
    // Past the short-lived keys' times: the node expires them (and tells the replica).
    std::thread::sleep(Duration::from_millis(300));

    let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut c).unwrap();
    assert_eq!(
        acked, 1,
        "WAIT: the replica acknowledged this client's writes"
    );
    let ours = dataset(&mut c);
    let theirs = dataset(&mut r);
    assert!(ours.len() > 200, "{} keys", ours.len());
    assert!(
        ours.iter().any(|(db, k, ..)| *db == 6 && k == b"in-db5"),
        "SWAPDB moved db 5 to 6"
    );
    assert_same(&ours, &theirs, "replica");
    let libs: redis::Value = redis::cmd("FUNCTION").arg("LIST").query(&mut r).unwrap();
    assert!(format!("{libs:?}").contains("bump"), "{libs:?}");
    assert_eq!(
        info_field(&mut c, "replication", "connected_slaves"),
        "1",
        "INFO replication"
    );
    let metrics: Vec<(String, String)> = redis::cmd("HC.METRICS").query(&mut c).unwrap();
    let metric = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in HC.METRICS"))
    };
    assert_eq!(metric("repl.replicas"), "1");
    assert_eq!(metric("repl.sync_full"), "1");
    assert_eq!(
        metric("repl.offset"),
        info_field(&mut c, "replication", "master_repl_offset")
    );
}

/// The stream, read raw after `SYNC` as Redis's own tests read it: Redis's forms, byte for byte
/// (rewritten TTLs, MULTI/EXEC around a transaction's or a script's writes, SELECT, nothing for
/// reads or for writes that changed nothing).
#[test]
fn the_stream_is_what_redis_writes() {
    let node = Server::start(&[]);
    let mut c = Conn::to(node.addr);
    c.call(&[b"SET", b"ro", b"1"]);
    let mut repl = Conn::to(node.addr);
    repl.send(&[b"SYNC"]);
    // The snapshot: $<len>\r\n<RDB> (no CRLF after it).
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        repl.0.read_exact(&mut b).unwrap();
        line.push(b[0]);
    }
    let len: usize = String::from_utf8_lossy(&line[1..line.len() - 2])
        .parse()
        .unwrap();
    let mut rdb = vec![0u8; len];
    repl.0.read_exact(&mut rdb).unwrap();
    assert!(rdb.starts_with(b"REDIS0010"), "{:?}", &rdb[..9]);

    let at_ms = 4_102_444_800_000u64.to_string();
    for cmd in [
        &[&b"SET"[..], b"a", b"1", b"EX", b"100"][..],
        &[b"GET", b"a"],
        &[b"DEL", b"missing"],
        &[b"MULTI"],
        &[b"SET", b"b", b"2"],
        &[b"INCR", b"b"],
        &[b"EXEC"],
        &[b"MULTI"],
        &[b"SET", b"c", b"3"],
        &[b"GET", b"c"],
        &[b"EXEC"],
        &[b"INCRBYFLOAT", b"f", b"1.5"],
        &[b"PEXPIREAT", b"b", at_ms.as_bytes()],
        &[b"GETEX", b"b", b"PERSIST"],
        &[b"EXPIRE", b"c", b"-1"],
        &[
            b"EVAL",
            b"redis.call('SET','d','4') redis.call('SET','e','5')",
            b"0",
        ],
        &[b"EVAL", b"return redis.call('GET','d')", b"0"],
        &[b"SELECT", b"3"],
        &[b"SETEX", b"g", b"100", b"7"],
        &[b"PUBLISH", b"ch", b"hi"],
    ] {
        c.call(cmd);
    }
    let want = [
        "SELECT 0",
        "SET a 1 PXAT *",
        "MULTI",
        "SET b 2",
        "INCR b",
        "EXEC",
        "SET c 3",
        "SET f 1.5 KEEPTTL",
        "PEXPIREAT b 4102444800000",
        "PERSIST b",
        "DEL c",
        "MULTI",
        "SET d 4",
        "SET e 5",
        "EXEC",
        "SELECT 3",
        "SET g 7 PXAT *",
        "PUBLISH ch hi",
    ];
    let got: Vec<String> = read_stream(&mut repl, want.len())
        .iter()
        .map(|cmd| {
            let words: Vec<String> = cmd
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            words.join(" ")
        })
        .collect();
    for (g, w) in got.iter().zip(want) {
        // `*`: the absolute time of a relative TTL (now + 100 s).
        let matches = match w.strip_suffix('*') {
            Some(prefix) => g.starts_with(prefix) && g.len() == prefix.len() + 13,
            None => g == w,
        };
        assert!(matches, "stream {got:#?}\nexpected {want:#?}");
    }
}

/// Reads `n` commands of the replication stream, skipping the PINGs.
fn read_stream(c: &mut Conn, n: usize) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while out.len() < n {
        let raw = c.read();
        let cmd = parse_array(&raw);
        if cmd.first().is_some_and(|a| a == b"PING") {
            continue;
        }
        out.push(cmd);
    }
    out
}

fn parse_array(raw: &[u8]) -> Vec<Vec<u8>> {
    let text = raw;
    let mut out = Vec::new();
    let mut i = text.iter().position(|&b| b == b'\n').unwrap() + 1;
    while i < text.len() {
        let nl = i + text[i..].iter().position(|&b| b == b'\n').unwrap();
        let len: usize = String::from_utf8_lossy(&text[i + 1..nl - 1])
            .parse()
            .unwrap();
        out.push(text[nl + 1..nl + 1 + len].to_vec());
        i = nl + 1 + len + 2;
    }
    out
}

/// A replica whose link drops reconnects with `PSYNC` and continues from the backlog (no new
/// snapshot), missing nothing written meanwhile.
#[test]
fn a_dropped_replica_continues_from_the_backlog() {
    let node = Server::start(&[]);
    let mut c = node.conn();
    let replica = redis_replica(node.addr);
    let mut r = replica.conn();
    wait_linked(&mut r);
    let _: () = c.set("before", "1").unwrap();
    assert_eq!(info_field(&mut c, "stats", "sync_full"), "1");
    // The replica's connection, by the command it sent last.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let id = list
        .lines()
        .find(|l| l.contains("cmd=replconf") || l.contains("cmd=psync"))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no replica in {list}"))
        .to_string();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(&mut c)
        .unwrap_or(());
    for i in 0..50 {
        let _: () = c.set(format!("during{i}"), i).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while info_field(&mut c, "stats", "sync_partial_ok") != "1" {
        assert!(Instant::now() < deadline, "the replica never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        info_field(&mut c, "stats", "sync_full"),
        "1",
        "no new snapshot"
    );
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut c).unwrap();
    assert_eq!(acked, 1);
    let (ours, theirs) = (dataset(&mut c), dataset(&mut r));
    assert_eq!(ours.len(), 51);
    assert!(ours == theirs, "the replica differs from the node");
}

/// `min-replicas-to-write` refuses writes until a replica acknowledges; `WAIT` without replicas
/// answers 0 (at once for 0 replicas, after its timeout otherwise).
#[test]
fn writes_wait_for_replicas_when_asked() {
    let node = Server::start(&[]);
    let mut c = node.conn();
    let n: i64 = redis::cmd("WAIT").arg(0).arg(0).query(&mut c).unwrap();
    assert_eq!(n, 0);
    let started = Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(200).query(&mut c).unwrap();
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(190));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(1)
        .query(&mut c)
        .unwrap();
    let e = c.set::<_, _, ()>("k", "v").unwrap_err();
    assert_eq!(e.code(), Some("NOREPLICAS"), "{e}");
    let replica = redis_replica(node.addr);
    let mut r = replica.conn();
    wait_linked(&mut r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.set::<_, _, ()>("k", "v").is_err() {
        assert!(Instant::now() < deadline, "writes stayed refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut c).unwrap();
    assert_eq!(acked, 1);
    let v: String = r.get("k").unwrap();
    assert_eq!(v, "v");
    // The replica goes away: writes are refused again.
    drop((r, replica));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.set::<_, _, ()>("k", "v").is_ok() {
        assert!(
            Instant::now() < deadline,
            "writes stayed accepted without a replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node replicating a live redis-server (`REPLICAOF`): it loads the primary's strings and
/// function libraries (other types passed over and counted), follows four concurrent writers
/// to the same keys, values and expiry times, refuses clients' writes meanwhile, and after
/// `REPLICAOF NO ONE` keeps everything and takes writes: a migration onto HyperCache.
#[test]
fn a_node_follows_a_redis_primary_then_takes_over() {
    let primary = redis_primary();
    let mut p = primary.conn();
    for i in 0..300 {
        let _: () = p.set(format!("pre{i}"), i).unwrap();
    }
    let _: () = p.set_ex("pre-ttl", "v", 10_000).unwrap();
    let _: () = p.set("pre-big", vec![b'x'; 50_000]).unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut p).unwrap();
    let _: () = p.set("in-db3", "three").unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut p).unwrap();
    let _: i64 = redis::cmd("RPUSH")
        .arg("a-list")
        .arg("x")
        .query(&mut p)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("a-hash")
        .arg("f")
        .arg("v")
        .query(&mut p)
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg("a-set")
        .arg("m")
        .query(&mut p)
        .unwrap();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=plib\nredis.register_function('pbump', function(k) return redis.call('INCR', k[1]) end)")
        .query(&mut p)
        .unwrap();

    let node = Server::start(&["--threads", "4"]);
    let mut c = node.conn();
    let ok: String = redis::cmd("REPLICAOF")
        .arg(primary.addr.ip().to_string())
        .arg(primary.addr.port())
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    wait_linked(&mut c);
    assert_eq!(info_field(&mut c, "replication", "role"), "slave");
    // As Redis answers it: `host port` while following, empty after REPLICAOF NO ONE.
    let following = format!("{} {}", primary.addr.ip(), primary.addr.port());
    for name in ["replicaof", "slaveof"] {
        let got: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(&mut c)
            .unwrap();
        assert_eq!(got, vec![name.to_string(), following.clone()]);
    }
    assert_eq!(
        info_field(&mut c, "replication", "master_sync_skipped_keys"),
        "3",
        "the list, the hash and the set"
    );
    let e = c.set::<_, _, ()>("mine", "1").unwrap_err();
    assert_eq!(e.code(), Some("READONLY"), "{e}");

    write_concurrently(&primary.client(), 100, 400);
    let _: i64 = redis::cmd("FCALL")
        .arg("pbump")
        .arg(1)
        .arg("fcalled")
        .query(&mut p)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Caught up: the node applied the primary's whole stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let theirs = info_field(&mut p, "replication", "master_repl_offset");
        if info_field(&mut c, "replication", "slave_repl_offset") == theirs {
            break;
        }
        assert!(Instant::now() < deadline, "the node never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ours, theirs) = (dataset(&mut c), dataset(&mut p));
    assert!(ours.len() > 300, "{} keys", ours.len());
    assert_same(&ours, &theirs, "primary");
    assert_eq!(
        info_field(&mut c, "replication", "master_stream_errors"),
        "0"
    );
    let libs: redis::Value = redis::cmd("FUNCTION").arg("LIST").query(&mut c).unwrap();
    assert!(format!("{libs:?}").contains("pbump"), "{libs:?}");
    let role: redis::Value = redis::cmd("ROLE").query(&mut c).unwrap();
    assert!(format!("{role:?}").contains("connected"), "{role:?}");
    assert!(redis::cmd("WAIT")
        .arg(0)
        .arg(0)
        .query::<i64>(&mut c)
        .is_err());

    // Taking over: the data stays, writes are taken.
    let ok: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    let _: () = c.set("mine", "1").unwrap();
    assert_eq!(info_field(&mut c, "replication", "role"), "master");
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("replicaof")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec!["replicaof".to_string(), String::new()]);
    let before = ours.len();
    assert_eq!(dataset(&mut c).len(), before + 1);
}

/// With `replica-serve-stale-data no`, a node whose primary cannot be reached answers
/// `-MASTERDOWN` to data commands (INFO still works), and again serves once it stops
/// replicating.
#[test]
fn a_replica_without_its_primary_refuses_stale_reads_when_asked() {
    let node = Server::start(&[]);
    let mut c = node.conn();
    let _: () = c.set("k", "v").unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-serve-stale-data")
        .arg("no")
        .query(&mut c)
        .unwrap();
    // Nothing listens there.
    let closed = common::free_port();
    let _: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(closed)
        .query(&mut c)
        .unwrap();
    let e = c.get::<_, Option<String>>("k").unwrap_err();
    assert_eq!(e.code(), Some("MASTERDOWN"), "{e}");
    assert_eq!(
        info_field(&mut c, "replication", "master_link_status"),
        "down"
    );
    let _: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c)
        .unwrap();
    let v: String = c.get("k").unwrap();
    assert_eq!(v, "v");
}

/// MIGRATE between a node and a redis-server, both ways: the keys move with their TTLs (KEYS
/// form, COPY, REPLACE), the target's refusal and an unreachable target are reported in
/// Redis's words, and MONITOR shows the credentials redacted.
#[test]
fn migrate_moves_keys_between_a_node_and_redis() {
    let node = Server::start(&[]);
    let redis = Server::redis();
    let mut c = node.conn();
    let mut r = redis.conn();
    let (host, port) = (redis.addr.ip().to_string(), redis.addr.port());
    let _: () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg("b")
        .arg(100_000)
        .query(&mut c)
        .unwrap();
    let migrate = |c: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<String> {
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg(&host).arg(port);
        for a in args {
            cmd.arg(*a);
        }
        cmd.query(c)
    };
    assert_eq!(migrate(&mut c, &["a", "0", "1000"]).unwrap(), "OK");
    assert_eq!(
        migrate(&mut c, &["", "2", "1000", "KEYS", "b", "c", "gone"]).unwrap(),
        "OK"
    );
    assert_eq!(migrate(&mut c, &["gone", "0", "1000"]).unwrap(), "NOKEY");
    let v: String = r.get("a").unwrap();
    assert_eq!(v, "1");
    let _: () = redis::cmd("SELECT").arg(2).query(&mut r).unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg("b").query(&mut r).unwrap();
    assert!((90_000..=100_000).contains(&ttl), "{ttl}");
    let _: () = redis::cmd("SELECT").arg(0).query(&mut r).unwrap();
    let left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(left.is_empty(), "moved keys are deleted: {left:?}");

    let _: () = c.set("a", "again").unwrap();
    let e = migrate(&mut c, &["a", "0", "1000"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("Target instance replied with error: BUSYKEY"),
        "{e}"
    );
    assert_eq!(
        migrate(&mut c, &["a", "0", "1000", "COPY", "REPLACE"]).unwrap(),
        "OK"
    );
    let v: String = r.get("a").unwrap();
    assert_eq!(v, "again");
    let v: String = c.get("a").unwrap();
    assert_eq!(v, "again", "COPY keeps the key");

    // Into the node.
    let _: () = r.set_ex("z", "zed", 500).unwrap();
    let ok: String = redis::cmd("MIGRATE")
        .arg(node.addr.ip().to_string())
        .arg(node.addr.port())
        .arg("z")
        .arg(0)
        .arg(1000)
        .query(&mut r)
        .unwrap();
    assert_eq!(ok, "OK");
    let ttl: i64 = c.ttl("z").unwrap();
    assert!((490..=500).contains(&ttl), "{ttl}");

    let closed = common::free_port();
    let e = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(closed)
        .arg("a")
        .arg(0)
        .arg(200)
        .query::<String>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("IOERR"), "{e}");

    // MONITOR redacts MIGRATE's credentials.
    let mut mon = Conn::to(node.addr);
    mon.call(&[b"MONITOR"]);
    let mut c2 = Conn::to(node.addr);
    c2.call(&[
        b"MIGRATE",
        b"127.0.0.1",
        b"1",
        b"nokey",
        b"0",
        b"100",
        b"AUTH2",
        b"user",
        b"secret",
    ]);
    let line = String::from_utf8_lossy(&mon.read()).into_owned();
    assert!(
        line.contains("\"AUTH2\" \"(redacted)\" \"(redacted)\"") && !line.contains("secret"),
        "{line}"
    );
}

/// As on a Redis replica, a key the primary wrote with a TTL is not expired by the node itself:
/// past its time clients do not see it, but it stays until the primary's `DEL` (so the
/// primary's later commands find what they found on the primary).
#[test]
fn a_replica_leaves_expiry_to_its_primary() {
    let primary = redis_primary();
    let mut p = primary.conn();
    let _: () = redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query(&mut p)
        .unwrap();
    let node = Server::start(&[]);
    let mut c = node.conn();
    let _: String = redis::cmd("REPLICAOF")
        .arg(primary.addr.ip().to_string())
        .arg(primary.addr.port())
        .query(&mut c)
        .unwrap();
    wait_linked(&mut c);
    let _: () = redis::cmd("SET")
        .arg("brief")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query(&mut p)
        .unwrap();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
    // Past its time, and past several of the node's expiry cycles (10 a second).
    std::thread::sleep(Duration::from_millis(500));
    let v: Option<String> = c.get("brief").unwrap();
    assert_eq!(v, None, "clients do not see it");
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 1, "but the node keeps it for its primary");
    // The primary finds it expired (a read), deletes it and tells the node.
    let v: Option<String> = p.get("brief").unwrap();
    assert_eq!(v, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap() != 0 {
        assert!(Instant::now() < deadline, "the primary's DEL never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A replica that reads nothing is dropped once its unsent stream passes the `replica` class
/// of `client-output-buffer-limit`, and the node goes on serving.
#[test]
fn a_replica_that_falls_behind_is_dropped_at_its_output_limit() {
    let node = Server::start(&[]);
    let mut c = node.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("replica 1mb 0 0")
        .query(&mut c)
        .unwrap();
    // Attaches and never reads.
    let mut stalled = Conn::to(node.addr);
    stalled.send(&[b"SYNC"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while info_field(&mut c, "replication", "connected_slaves") != "1" {
        assert!(Instant::now() < deadline, "the replica never attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 64 MB of writes: far past what the socket buffers take, far past 1 MB.
    let value = vec![b'v'; 64 * 1024];
    let mut dropped = false;
    for i in 0..1024 {
        let _: () = c.set(format!("big{}", i % 16), &value).unwrap();
        if i % 64 == 63 && info_field(&mut c, "replication", "connected_slaves") == "0" {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stalled replica is still attached");
    let _: () = c.set("after", "1").unwrap();
    // Its connection is closed (EOF after whatever was written before the drop).
    stalled
        .0
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = Vec::new();
    assert!(
        stalled.0.read_to_end(&mut sink).is_ok(),
        "the dropped replica's connection is closed"
    );
}

/// A client that takes a snapshot with `SYNC` and leaves (as `redis-cli --rdb` does) cannot
/// continue a stream: the node stops recording its writes (one command at a time) at once,
/// rather than for `repl-backlog-ttl`.
#[test]
fn a_snapshot_taker_leaves_no_backlog_behind() {
    let node = Server::start(&[]);
    let mut c = node.conn();
    let _: () = c.set("k", "v").unwrap();
    {
        let mut taker = Conn::to(node.addr);
        taker.send(&[b"SYNC"]);
        let mut b = [0u8; 1];
        taker.0.read_exact(&mut b).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while info_field(&mut c, "replication", "repl_backlog_active") != "1" {
            assert!(
                Instant::now() < deadline,
                "the snapshot taker never attached"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while info_field(&mut c, "replication", "repl_backlog_active") != "0" {
        assert!(
            Instant::now() < deadline,
            "the node still records its writes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
