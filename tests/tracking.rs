//! Client-side caching (`CLIENT TRACKING`) with real processes: invalidations redirected to
//! another connection, byte-equal to redis-server's; and through a cluster, a write on one node
//! invalidating a key cached by a client of another.

mod common;

use std::time::Duration;

use common::resp::Conn;
use common::{Server, TestCluster};

/// Redirected invalidations (RESP2 Pub/Sub on `__redis__:invalidate` and RESP3 pushes), BCAST
/// prefixes batched per command, NOLOOP, an expired key, FLUSHALL, and a redirect target that
/// went away: the same bytes from redis-server and from a node.
#[test]
fn redirected_invalidations_are_as_redis_sends_them() {
    let ours = Server::start(&[]);
    let redis = Server::redis();
    let mut transcripts = Vec::new();
    for s in [&redis, &ours] {
        let mut t = Vec::new();
        let mut sink = Conn::to(s.addr);
        let sink_id = sink.id();
        t.extend(sink.call(&[b"SUBSCRIBE", b"__redis__:invalidate"]));
        let mut reader = Conn::to(s.addr);
        let mut writer = Conn::to(s.addr);
        t.extend(reader.call(&[
            b"CLIENT",
            b"TRACKING",
            b"on",
            b"REDIRECT",
            sink_id.as_bytes(),
        ]));
        t.extend(reader.call(&[b"MGET", b"a", b"b", b"c"]));
        t.extend(writer.call(&[b"SET", b"b", b"1"]));
        t.extend(sink.read());
        // Read again before it counts again: one invalidation per read.
        t.extend(writer.call(&[b"SET", b"b", b"2"]));
        t.extend(writer.call(&[b"SET", b"a", b"1"]));
        t.extend(sink.read());
        t.extend(reader.call(&[b"GET", b"e"]));
        t.extend(writer.call(&[b"SET", b"e", b"v", b"PX", b"30"]));
        t.extend(sink.read());
        t.extend(reader.call(&[b"GET", b"e"]));
        // Expired by the cycle (or this read), either way one invalidation.
        std::thread::sleep(Duration::from_millis(300));
        t.extend(sink.read());
        t.extend(reader.call(&[b"GET", b"f"]));
        t.extend(writer.call(&[b"FLUSHALL"]));
        t.extend(sink.read());
        // BCAST: every key under the prefixes, one message per prefix per command.
        t.extend(reader.call(&[b"CLIENT", b"TRACKING", b"off"]));
        t.extend(reader.call(&[
            b"CLIENT",
            b"TRACKING",
            b"on",
            b"BCAST",
            b"REDIRECT",
            sink_id.as_bytes(),
            b"PREFIX",
            b"user:",
            b"NOLOOP",
        ]));
        t.extend(writer.call(&[b"MSET", b"user:1", b"a", b"other", b"b", b"user:1", b"c"]));
        t.extend(sink.read());
        t.extend(reader.call(&[b"SET", b"user:2", b"own write"]));
        t.extend(writer.call(&[b"DEL", b"user:1"]));
        t.extend(sink.read());
        t.extend(reader.call(&[b"CLIENT", b"TRACKINGINFO"]));
        // The redirect target goes away: a RESP3 client is told at its next invalidation.
        t.extend(reader.call(&[b"CLIENT", b"TRACKING", b"off"]));
        // (HELLO's reply names the client id, which differs between the servers.)
        reader.call(&[b"HELLO", b"3"]);
        t.extend(reader.call(&[
            b"CLIENT",
            b"TRACKING",
            b"on",
            b"REDIRECT",
            sink_id.as_bytes(),
        ]));
        t.extend(reader.call(&[b"GET", b"g"]));
        drop(sink);
        std::thread::sleep(Duration::from_millis(100));
        t.extend(writer.call(&[b"SET", b"g", b"1"]));
        t.extend(reader.read());
        t.extend(reader.call(&[b"CLIENT", b"TRACKINGINFO"]));
        // The servers number their clients differently: the sink's id is named, not compared.
        let text = String::from_utf8_lossy(&t)
            .replace(
                &format!("redirect\r\n:{sink_id}\r\n"),
                "redirect\r\n:ID\r\n",
            )
            .replace(
                &format!("tracking-redir-broken\r\n:{sink_id}\r\n"),
                "tracking-redir-broken\r\n:ID\r\n",
            );
        transcripts.push(text);
    }
    assert!(
        transcripts[1].contains("tracking-redir-broken"),
        "{}",
        transcripts[1]
    );
    assert_eq!(
        transcripts[1], transcripts[0],
        "HyperCache (left), redis-server (right)"
    );
}

/// In a 3-node cluster a client of node 0 caches keys; writes through the other nodes (and an
/// expiry) invalidate them at that client, within the bound the docs state.
#[test]
fn a_write_on_another_node_invalidates_a_cached_key() {
    let c = TestCluster::start(3, &[]);
    let mut cached = Conn::to(c.addr(0));
    cached.call(&[b"HELLO", b"3"]);
    assert_eq!(cached.call(&[b"CLIENT", b"TRACKING", b"on"]), b"+OK\r\n");
    // The other nodes hear of node 0's tracking clients before they coordinate its writes.
    std::thread::sleep(Duration::from_millis(300));
    let push = |key: &str| {
        format!(
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n",
            key.len()
        )
        .into_bytes()
    };
    for (i, key) in ["k1", "k2", "k3", "k4"].iter().enumerate() {
        let mut w = Conn::to(c.addr(i % 3));
        assert_eq!(w.call(&[b"SET", key.as_bytes(), b"v1"]), b"+OK\r\n");
        assert_eq!(cached.call(&[b"GET", key.as_bytes()]), b"$2\r\nv1\r\n");
        let mut other = Conn::to(c.addr((i + 1) % 3));
        assert_eq!(other.call(&[b"SET", key.as_bytes(), b"v2"]), b"+OK\r\n");
        // The invalidation comes within the read timeout (5 s; the docs state one link hop).
        assert_eq!(cached.read(), push(key), "{key}");
    }
    // An expiry on the key's replicas invalidates it too.
    let mut w = Conn::to(c.addr(2));
    assert_eq!(w.call(&[b"SET", b"soon", b"v", b"PX", b"200"]), b"+OK\r\n");
    assert_eq!(cached.call(&[b"GET", b"soon"]), b"$1\r\nv\r\n");
    assert_eq!(cached.read(), push("soon"));
    // BCAST through the cluster: writes through node 1 under the prefix.
    assert_eq!(cached.call(&[b"CLIENT", b"TRACKING", b"off"]), b"+OK\r\n");
    assert_eq!(
        cached.call(&[b"CLIENT", b"TRACKING", b"on", b"BCAST", b"PREFIX", b"p:"]),
        b"+OK\r\n"
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut w = Conn::to(c.addr(1));
    assert_eq!(w.call(&[b"SET", b"q:1", b"x"]), b"+OK\r\n");
    assert_eq!(w.call(&[b"SET", b"p:1", b"x"]), b"+OK\r\n");
    assert_eq!(cached.read(), push("p:1"));
}
