//! Pub/Sub with real processes: messages between clients of one node, across the nodes of a
//! cluster (once each, in the publisher's order), slow subscribers disconnected at their output
//! buffer limit, and ACL channel rules.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, TestCluster};

/// A raw RESP connection.
struct Conn(TcpStream);

impl Conn {
    fn to(addr: std::net::SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(s)
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.0.write_all(&req).unwrap();
    }

    /// One reply, as its raw bytes.
    fn read(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_into(&mut out);
        out
    }

    fn read_into(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        let mut b = [0u8; 1];
        while !out[start..].ends_with(b"\r\n") {
            assert_eq!(self.0.read(&mut b).unwrap(), 1, "closed");
            out.push(b[0]);
        }
        let head = out[start];
        let n: i64 = String::from_utf8_lossy(&out[start + 1..out.len() - 2])
            .parse()
            .unwrap_or(-1);
        match head {
            b'$' if n >= 0 => {
                let mut data = vec![0u8; n as usize + 2];
                self.0.read_exact(&mut data).unwrap();
                out.extend_from_slice(&data);
            }
            b'*' | b'>' | b'~' => {
                for _ in 0..n.max(0) {
                    self.read_into(out);
                }
            }
            b'%' => {
                for _ in 0..2 * n.max(0) {
                    self.read_into(out);
                }
            }
            _ => {}
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.read()
    }
}

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
    slow.call(&[b"SUBSCRIBE", b"firehose"]);
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
