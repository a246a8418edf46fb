//! Pub/Sub with real processes: messages between clients of one node, across the nodes of a
//! cluster (once each, in the publisher's order), slow subscribers disconnected at their output
//! buffer limit, ACL channel rules, and commands of different clients run in arrival order.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::resp::Conn;
use common::{Server, TestCluster};

fn message(channel: &str, payload: &str) -> Vec<u8> {
    format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
        channel.len(),
        payload.len()
    )
    .into_bytes()
}

/// Between clients of one node, in RESP2 and RESP3, as on redis-server: the same bytes from
/// both servers for the same exchange.
#[test]
fn messages_between_clients_are_as_redis_sends_them() {
    let ours = Server::start(&[]);
    let redis = Server::redis();
    let mut transcripts = Vec::new();
    for s in [&redis, &ours] {
        let mut t = Vec::new();
        let mut sub2 = Conn::to(s.addr);
        let mut sub3 = Conn::to(s.addr);
        let mut publisher = Conn::to(s.addr);
        t.extend(sub2.call(&[b"SUBSCRIBE", b"news.tech", b"news.art"]));
        t.extend(sub2.read());
        t.extend(sub2.call(&[b"PSUBSCRIBE", b"news.*"]));
        sub3.call(&[b"HELLO", b"3"]);
        t.extend(sub3.call(&[b"PSUBSCRIBE", b"*.tech"]));
        t.extend(publisher.call(&[b"PUBLISH", b"news.tech", b"hello"]));
        t.extend(publisher.call(&[b"PUBLISH", b"sport", b"nobody"]));
        for _ in 0..2 {
            t.extend(sub2.read());
        }
        t.extend(sub3.read());
        t.extend(publisher.call(&[b"PUBSUB", b"NUMSUB", b"news.tech", b"sport"]));
        t.extend(publisher.call(&[b"PUBSUB", b"NUMPAT"]));
        t.extend(publisher.call(&[b"PUBSUB", b"CHANNELS", b"news.t*"]));
        t.extend(sub2.call(&[b"UNSUBSCRIBE", b"news.tech"]));
        t.extend(publisher.call(&[b"PUBLISH", b"news.tech", b"again"]));
        t.extend(sub2.read());
        t.extend(sub3.read());
        transcripts.push(String::from_utf8_lossy(&t).into_owned());
    }
    assert!(
        transcripts[1].contains(">4\r\n$8\r\npmessage\r\n"),
        "{}",
        transcripts[1]
    );
    assert_eq!(
        transcripts[1], transcripts[0],
        "HyperCache (left), redis-server (right)"
    );
}

/// Commands from different connections run in the order they arrived, as in Redis's event
/// loop: an UNSUBSCRIBE sent (not yet answered) before another client's PUBLISH takes effect
/// first, so the PUBLISH reaches nobody. On one worker (what the node runs on two cores) both
/// sockets are usually readable in the same poll; tokio's LIFO slot ran the publisher first in
/// about 3 rounds of 5 (Redis's unit/pubsub tests this, once per run), and this test fails when
/// the node is built without `--cfg tokio_unstable` (.cargo/config.toml).
///
/// A few inversions are tolerated: CI saw one, in round 0 of 300, while the other tests of this
/// file ran their clusters on the same two cores; the test passes 300 of 300 rounds alone. Under
/// such load the second request can reach the node first (the kernel does not order two
/// sockets' loopback traffic across CPUs), which a single-threaded Redis cannot help either.
#[test]
fn a_command_runs_after_one_another_client_sent_before_it() {
    const ROUNDS: usize = 300;
    let node = Server::start(&["--threads", "1"]);
    let mut sub = Conn::to(node.addr);
    let mut publisher = Conn::to(node.addr);
    let mut inverted = 0;
    for round in 0..ROUNDS {
        sub.call(&[b"SUBSCRIBE", b"ch"]);
        sub.send(&[b"UNSUBSCRIBE"]);
        let reached = publisher.call(&[b"PUBLISH", b"ch", b"m"]);
        let mut reply = sub.read();
        match &reached[..] {
            b":0\r\n" => {}
            b":1\r\n" => {
                // The PUBLISH ran first: the subscriber got the message before its reply.
                inverted += 1;
                assert_eq!(
                    String::from_utf8_lossy(&reply),
                    "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n",
                    "round {round}"
                );
                reply = sub.read();
            }
            other => panic!("round {round}: {}", String::from_utf8_lossy(other)),
        }
        assert_eq!(
            String::from_utf8_lossy(&reply),
            "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
        );
    }
    assert!(
        inverted <= ROUNDS / 20,
        "{inverted} of {ROUNDS} PUBLISHes ran before the UNSUBSCRIBE sent ahead of them"
    );
}

/// In a cluster, a message published through any node reaches subscribers on every node, once
/// each, in the order the publishing connection sent them.
#[test]
fn a_message_reaches_subscribers_on_every_node_once_in_order() {
    let c = TestCluster::start(3, &[]);
    let mut subs: Vec<Conn> = (0..3).map(|i| Conn::to(c.addr(i))).collect();
    for s in &mut subs {
        s.call(&[b"SUBSCRIBE", b"events"]);
    }
    // Subscriptions are local: wait until each node has its subscriber.
    for i in 0..3 {
        let mut p = Conn::to(c.addr(i));
        assert_eq!(
            p.call(&[b"PUBSUB", b"NUMSUB", b"events"]),
            b"*2\r\n$6\r\nevents\r\n:1\r\n"
        );
    }
    let mut publisher = Conn::to(c.addr(1));
    let n = 500;
    // Pipelined, as a busy publisher sends them.
    for i in 0..n {
        publisher.send(&[b"PUBLISH", b"events", format!("m{i}").as_bytes()]);
    }
    for _ in 0..n {
        assert_eq!(publisher.read(), b":1\r\n", "one local subscriber");
    }
    for (node, s) in subs.iter_mut().enumerate() {
        for i in 0..n {
            assert_eq!(
                s.read(),
                message("events", &format!("m{i}")),
                "node {node}: message {i} out of order or missing"
            );
        }
    }
    // Nothing else arrives (no duplicates).
    let mut probe = Conn::to(c.addr(0));
    probe.call(&[b"PUBLISH", b"events", b"last"]);
    for s in &mut subs {
        assert_eq!(
            s.read(),
            message("events", "last"),
            "a duplicate came first"
        );
    }
}

/// A subscriber that does not read is disconnected once the bytes queued for it pass
/// `client-output-buffer-limit pubsub`'s hard limit; the publisher and other subscribers go on.
/// Until then, `CLIENT LIST` shows what is queued for it as `omem`, as Redis shows its reply
/// list (what an operator looks at to find a subscriber that does not keep up).
#[test]
fn a_slow_subscriber_is_disconnected_at_its_output_buffer_limit() {
    let node = Server::start(&[]);
    let mut admin = Conn::to(node.addr);
    assert_eq!(
        admin.call(&[
            b"CONFIG",
            b"SET",
            b"client-output-buffer-limit",
            b"pubsub 1mb 0 0"
        ]),
        b"+OK\r\n"
    );
    let mut slow = Conn::to(node.addr);
    let id = String::from_utf8_lossy(&slow.call(&[b"CLIENT", b"ID"]))
        .trim_start_matches(':')
        .trim()
        .to_string();
    slow.call(&[b"SUBSCRIBE", b"firehose"]);
    // The slow client's `omem` in CLIENT LIST, while it is listed.
    let omem = |admin: &mut Conn| -> Option<usize> {
        let list = String::from_utf8_lossy(&admin.call(&[b"CLIENT", b"LIST"])).into_owned();
        let line = list
            .lines()
            .find(|l| l.contains(&format!("id={id} ")))?
            .to_string();
        let field = line.split(' ').find_map(|f| f.strip_prefix("omem="))?;
        field.parse().ok()
    };
    assert_eq!(omem(&mut admin), Some(0), "nothing queued yet");
    let mut most = 0;
    let mut fast = Conn::to(node.addr);
    fast.call(&[b"SUBSCRIBE", b"firehose"]);
    // The slow one stops reading; its socket buffers fill, then its queue on the node.
    let payload = vec![b'x'; 64 * 1024];
    let mut publisher = Conn::to(node.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    loop {
        let n = publisher.call(&[b"PUBLISH", b"firehose", &payload]);
        sent += 1;
        if let Some(queued) = omem(&mut admin) {
            most = most.max(queued);
        }
        // Drain the fast subscriber as we go.
        fast.read();
        if n == b":1\r\n" {
            break;
        }
        assert!(
            Instant::now() < deadline && sent < 2000,
            "the slow subscriber was never cut off"
        );
    }
    // What was queued for it showed, up to about the limit (1 MB and a message).
    assert!(
        most >= 256 * 1024 && most <= (1 << 20) + 2 * payload.len(),
        "omem peaked at {most}"
    );
    // It leaves the client list (its connection task ends at once).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = String::from_utf8_lossy(&admin.call(&[b"CLIENT", b"LIST"])).into_owned();
        if list.matches("sub=1").count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The slow client's connection is closed (after what was already written to it).
    slow.0
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = slow.0.read_to_end(&mut sink);
    assert!(
        sink.len() < sent * payload.len(),
        "it received everything, so it was not slow"
    );
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"firehose", b"still"]),
        b":1\r\n"
    );
    assert_eq!(fast.read(), message("firehose", "still"));
}

/// ACL channel rules: a user may publish and subscribe only where its `&` patterns allow, a
/// pattern subscription must be one of its patterns literally, and a change that revokes a
/// channel closes the subscribers that use it.
#[test]
fn acl_channel_rules_apply_to_publish_and_subscribe() {
    let node = Server::start(&[]);
    let mut admin = Conn::to(node.addr);
    assert_eq!(
        admin.call(&[b"ACL", b"SETUSER", b"app", b"on", b"nopass", b"+@all", b"~*", b"&news:*"]),
        b"+OK\r\n"
    );
    let mut app = Conn::to(node.addr);
    assert_eq!(app.call(&[b"AUTH", b"app", b"x"]), b"+OK\r\n");
    let noperm =
        b"-NOPERM this user has no permissions to access one of the channels used as arguments\r\n";
    assert_eq!(app.call(&[b"PUBLISH", b"sport", b"x"]), noperm);
    assert_eq!(app.call(&[b"SUBSCRIBE", b"news:1", b"sport"]), noperm);
    assert_eq!(app.call(&[b"PSUBSCRIBE", b"news:1*"]), noperm);
    assert_eq!(app.call(&[b"PUBLISH", b"news:1", b"x"]), b":0\r\n");
    assert_eq!(
        app.call(&[b"PSUBSCRIBE", b"news:*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$6\r\nnews:*\r\n:1\r\n"
    );
    // Revoking the channel closes the subscriber.
    assert_eq!(
        admin.call(&[b"ACL", b"SETUSER", b"app", b"resetchannels", b"&other"]),
        b"+OK\r\n"
    );
    let mut sink = Vec::new();
    let _ = app.0.read_to_end(&mut sink);
    assert!(sink.is_empty(), "{sink:?}");
}

/// Keyspace notifications of keys that expire (found by the active cycle, and by a read) are
/// the bytes redis-server sends for the same exchange.
#[test]
fn expired_key_events_are_as_redis_sends_them() {
    let ours = Server::start(&[]);
    let redis = Server::redis();
    let mut transcripts = Vec::new();
    for s in [&redis, &ours] {
        let mut t = Vec::new();
        let mut client = Conn::to(s.addr);
        client.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEx"]);
        let mut sub = Conn::to(s.addr);
        t.extend(sub.call(&[b"PSUBSCRIBE", b"__key*@0__:*"]));
        t.extend(client.call(&[b"SET", b"soon", b"v", b"PX", b"30"]));
        // The active expiry cycle finds it (10 times a second on both servers).
        t.extend(sub.read());
        t.extend(sub.read());
        t.extend(client.call(&[b"SET", b"read", b"v", b"PX", b"30"]));
        // Past its deadline: expired by the cycle or by this GET, whichever comes first.
        std::thread::sleep(Duration::from_millis(60));
        t.extend(client.call(&[b"GET", b"read"]));
        t.extend(sub.read());
        t.extend(sub.read());
        transcripts.push(String::from_utf8_lossy(&t).into_owned());
    }
    assert!(transcripts[1].contains("expired"), "{}", transcripts[1]);
    assert_eq!(
        transcripts[1], transcripts[0],
        "HyperCache (left), redis-server (right)"
    );
}

/// Under `maxmemory`, every key evicted raises `evicted` once (INFO's `evicted_keys` counts the
/// same keys).
#[test]
fn evicted_keys_raise_one_event_each() {
    let node = Server::start(&[]);
    let mut client = Conn::to(node.addr);
    client.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b"Ee"]);
    let mut sub = Conn::to(node.addr);
    sub.call(&[b"SUBSCRIBE", b"__keyevent@0__:evicted"]);
    let used: u64 = info_field(&mut client, "used_memory").parse().unwrap();
    client.call(&[
        b"CONFIG",
        b"SET",
        b"maxmemory",
        (used + 4_000_000).to_string().as_bytes(),
        b"maxmemory-policy",
        b"allkeys-lru",
    ]);
    let value = vec![b'x'; 1000];
    for i in 0..20_000 {
        client.send(&[b"SET", format!("k{i}").as_bytes(), &value]);
    }
    for _ in 0..20_000 {
        assert_eq!(client.read(), b"+OK\r\n");
    }
    client.call(&[b"CONFIG", b"SET", b"maxmemory", b"0"]);
    let evicted: usize = info_field(&mut client, "evicted_keys").parse().unwrap();
    assert!(evicted > 10_000, "only {evicted} evicted");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..evicted {
        let m = sub.read();
        let text = String::from_utf8_lossy(&m).into_owned();
        let key = text.rsplit("\r\n").nth(1).unwrap().to_string();
        assert!(key.starts_with('k'), "{text}");
        assert!(seen.insert(key.clone()), "{key} evicted twice");
        assert_eq!(
            client.call(&[b"EXISTS", key.as_bytes()]),
            b":0\r\n",
            "{key} was reported evicted"
        );
    }
    // Nothing more: the next message is the marker.
    client.call(&[b"PUBLISH", b"__keyevent@0__:evicted", b"marker"]);
    assert_eq!(sub.read(), message("__keyevent@0__:evicted", "marker"));
}

fn info_field(c: &mut Conn, field: &str) -> String {
    let info = String::from_utf8_lossy(&c.call(&[b"INFO"])).into_owned();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO"))
        .trim()
        .to_string()
}

/// Through a 3-node cluster (the setting on every node), a write through any node raises its
/// events once, at every node's subscribers, whichever node coordinated it; an expiry raises
/// `expired` once (from the key's primary replica), not once per replica.
#[test]
fn keyspace_events_reach_every_node_once_through_a_cluster() {
    let c = TestCluster::start(3, &[]);
    for i in 0..3 {
        let mut p = Conn::to(c.addr(i));
        assert_eq!(
            p.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b"EA"]),
            b"+OK\r\n"
        );
    }
    let mut subs: Vec<Conn> = (0..3).map(|i| Conn::to(c.addr(i))).collect();
    for s in &mut subs {
        s.call(&[b"PSUBSCRIBE", b"__keyevent@0__:*"]);
    }
    let ops: [(usize, &[&[u8]]); 8] = [
        (0, &[b"SET", b"k1", b"v"]),
        (1, &[b"INCR", b"counter"]),
        (2, &[b"INCR", b"counter"]),
        (0, &[b"APPEND", b"k1", b"w"]),
        (1, &[b"SETBIT", b"bits", b"7", b"1"]),
        (2, &[b"DEL", b"k1", b"nothere"]),
        (1, &[b"EXPIRE", b"counter", b"100"]),
        (0, &[b"SET", b"gone", b"v", b"PX", b"200"]),
    ];
    for (node, args) in ops {
        let mut w = Conn::to(c.addr(node));
        let r = w.call(args);
        assert!(!r.starts_with(b"-"), "{:?}", String::from_utf8_lossy(&r));
    }
    // A transaction on one key runs as one operation; each command raises its events, in order
    // (the INCR fails: none).
    let mut w = Conn::to(c.addr(2));
    let tx: [&[&[u8]]; 6] = [
        &[b"MULTI"],
        &[b"SET", b"tx", b"v"],
        &[b"INCR", b"tx"],
        &[b"APPEND", b"tx", b"w"],
        &[b"EXPIRE", b"tx", b"100"],
        &[b"DEL", b"tx"],
    ];
    for args in tx {
        w.call(args);
    }
    let r = w.call(&[b"EXEC"]);
    assert_eq!(
        String::from_utf8_lossy(&r),
        "*5\r\n+OK\r\n-ERR value is not an integer or out of range\r\n:2\r\n:1\r\n:1\r\n"
    );
    let in_tx = ["set tx", "append tx", "expire tx", "del tx"];
    let mut want = vec![
        "set tx",
        "append tx",
        "expire tx",
        "del tx",
        "set k1",
        "incrby counter",
        "incrby counter",
        "append k1",
        "setbit bits",
        "del k1",
        "expire counter",
        "set gone",
        "expire gone",
        "expired gone",
    ];
    want.sort_unstable();
    for (node, s) in subs.iter_mut().enumerate() {
        let mut got: Vec<String> = (0..want.len())
            .map(|_| {
                let m = String::from_utf8_lossy(&s.read()).into_owned();
                let parts: Vec<&str> = m.split("\r\n").collect();
                // *4 $8 pmessage $n pattern $n channel $n key
                let event = parts[6].trim_start_matches("__keyevent@0__:");
                format!("{event} {}", parts[8])
            })
            .collect();
        let tx_order: Vec<&str> = got
            .iter()
            .map(String::as_str)
            .filter(|e| e.ends_with(" tx"))
            .collect();
        assert_eq!(
            tx_order, in_tx,
            "node {node}: the transaction's events in order"
        );
        got.sort_unstable();
        assert_eq!(got, want, "node {node}");
    }
    // No duplicates: the next message each subscriber gets is the marker.
    let mut p = Conn::to(c.addr(0));
    p.call(&[b"PUBLISH", b"__keyevent@0__:marker", b"m"]);
    for (node, s) in subs.iter_mut().enumerate() {
        let m = String::from_utf8_lossy(&s.read()).into_owned();
        assert!(m.contains("marker"), "node {node}: {m}");
    }
}
