//! Pub/Sub: which clients of this node listen to which channels and patterns, and the delivery
//! of a message to them.
//!
//! - [`PubSub`] is the node's registry: channel -> subscribers, pattern -> subscribers.
//!   `PUBLISH` reads it, takes no lock of any connection and never waits: each subscriber has
//!   an unbounded queue ([`Mailbox`]) that its connection task drains into its socket.
//! - **Slow subscribers** are bounded as Redis bounds them, by `client-output-buffer-limit
//!   pubsub <hard> <soft> <seconds>`: the bytes queued for a subscriber are counted, and one over
//!   the hard limit, or over the soft limit for longer than `seconds`, is disconnected (logged,
//!   and counted in [`PubSub::disconnected`]).
//! - **In a cluster** a message published through any node is also sent to every other live
//!   member (`Request::Publish`, `crate::cluster`), which delivers it to its own subscribers:
//!   each subscriber gets it once, and messages from one publishing connection arrive in the
//!   order they were published (one link per pair of nodes, read in order). `PUBLISH` answers the
//!   subscribers of the node it was sent to, as in Redis Cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::state::ClientHandle;

/// One message for a subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    /// The pattern it matched (`pmessage`), or `None` (`message`).
    pub pattern: Option<Bytes>,
    /// The channel it was published to.
    pub channel: Bytes,
    /// The payload.
    pub payload: Bytes,
    /// A client-side caching invalidation instead of a published message
    /// ([`crate::tracking`]), and whether it comes through a redirection.
    pub invalidation: Option<(Invalidation, bool)>,
}

/// What a tracking invalidation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// These keys changed.
    Keys(Vec<Bytes>),
    /// Every key (FLUSHALL, FLUSHDB).
    All,
    /// The client this connection redirects to has gone (its id).
    RedirBroken(u64),
}

impl Message {
    /// An invalidation (`redirected`: for another connection's tracking).
    pub fn invalidation(what: Invalidation, redirected: bool) -> Message {
        Message {
            pattern: None,
            channel: Bytes::new(),
            payload: Bytes::new(),
            invalidation: Some((what, redirected)),
        }
    }

    /// Bytes it takes in a subscriber's output (what the buffer limits count).
    pub fn size(&self) -> usize {
        let keys = match &self.invalidation {
            Some((Invalidation::Keys(k), _)) => k.iter().map(|k| k.len() + 16).sum(),
            _ => 0,
        };
        self.pattern.as_ref().map_or(0, |p| p.len() + 16)
            + self.channel.len()
            + self.payload.len()
            + keys
            + 40
    }
}

/// A subscriber's queue: messages waiting for its connection to write them, and their bytes.
#[derive(Debug)]
pub struct Mailbox {
    tx: mpsc::UnboundedSender<Message>,
    /// Bytes queued and not written yet.
    pub queued: AtomicUsize,
    /// Since when (ms) the queue has been over the soft limit (0: it is not).
    soft_since: AtomicU64,
    /// The subscriber's connection (killed when it falls too far behind).
    handle: Arc<ClientHandle>,
}

/// `client-output-buffer-limit pubsub`: hard bytes, soft bytes, soft seconds (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Disconnect at once past this many queued bytes.
    pub hard: u64,
    /// Disconnect after `soft_secs` past this many.
    pub soft: u64,
    /// How long a subscriber may stay over `soft`.
    pub soft_secs: u64,
}

impl Default for Limits {
    /// Redis's default: `pubsub 32mb 8mb 60`.
    fn default() -> Limits {
        Limits {
            hard: 32 << 20,
            soft: 8 << 20,
            soft_secs: 60,
        }
    }
}

impl Mailbox {
    /// A mailbox for `handle`'s connection, and the receiving end its task drains.
    pub fn new(handle: Arc<ClientHandle>) -> (Arc<Mailbox>, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Mailbox {
                tx,
                queued: AtomicUsize::new(0),
                soft_since: AtomicU64::new(0),
                handle,
            }),
            rx,
        )
    }

    /// Queues `m` unless the subscriber is past its limits (then it is disconnected, and `false`
    /// is returned the first time so the node can count it).
    fn deliver(&self, m: Message, limits: &Limits, now_ms: u64) -> Result<(), bool> {
        if self.handle.killed.load(Ordering::Relaxed) {
            return Err(false);
        }
        let queued = self.queued.fetch_add(m.size(), Ordering::Relaxed) + m.size();
        let over_hard = limits.hard > 0 && queued as u64 > limits.hard;
        let over_soft = limits.soft > 0 && queued as u64 > limits.soft;
        let soft_expired = if over_soft {
            let since = self.soft_since.load(Ordering::Relaxed);
            if since == 0 {
                self.soft_since.store(now_ms.max(1), Ordering::Relaxed);
                false
            } else {
                now_ms.saturating_sub(since) > limits.soft_secs * 1000
            }
        } else {
            self.soft_since.store(0, Ordering::Relaxed);
            false
        };
        if over_hard || soft_expired {
            self.handle.kill();
            return Err(true);
        }
        let _ = self.tx.send(m);
        Ok(())
    }

    /// Queues `m` as [`Mailbox::deliver`] does (a client past its limits is disconnected).
    pub fn offer(&self, m: Message, limits: &Limits, now_ms: u64) {
        let _ = self.deliver(m, limits, now_ms);
    }

    /// The connection wrote `bytes` of queued messages.
    pub fn written(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One connection's subscriptions and the receiving end of its mailbox.
pub struct Subscriptions {
    /// Channels, in the order subscribed.
    pub channels: Vec<Bytes>,
    /// Patterns, in the order subscribed.
    pub patterns: Vec<Bytes>,
    /// Where messages for this connection are queued.
    pub mailbox: Arc<Mailbox>,
    /// What its connection task drains.
    pub rx: mpsc::UnboundedReceiver<Message>,
}

impl Subscriptions {
    /// Channels and patterns (the count subscribe replies carry).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

#[derive(Default)]
struct Registry {
    channels: HashMap<Bytes, Vec<(u64, Arc<Mailbox>)>, ahash::RandomState>,
    patterns: HashMap<Bytes, Vec<(u64, Arc<Mailbox>)>, ahash::RandomState>,
}

/// The node's subscriptions.
#[derive(Default)]
pub struct PubSub {
    /// The node's id, for logs.
    pub node_id: String,
    reg: RwLock<Registry>,
    /// Subscribers disconnected for their output buffer (INFO).
    pub disconnected: AtomicU64,
}

impl PubSub {
    /// No subscriptions yet, on node `node_id`.
    pub fn new(node_id: String) -> PubSub {
        PubSub {
            node_id,
            ..Default::default()
        }
    }

    /// Client `id` listens to `channel` (or pattern) through `mailbox`.
    pub fn subscribe(&self, pattern: bool, name: &Bytes, id: u64, mailbox: &Arc<Mailbox>) {
        let mut reg = self.reg.write();
        let map = if pattern {
            &mut reg.patterns
        } else {
            &mut reg.channels
        };
        let subs = map.entry(name.clone()).or_default();
        if !subs.iter().any(|(c, _)| *c == id) {
            subs.push((id, mailbox.clone()));
        }
    }

    /// Client `id` stops listening to `name`.
    pub fn unsubscribe(&self, pattern: bool, name: &[u8], id: u64) {
        let mut reg = self.reg.write();
        let map = if pattern {
            &mut reg.patterns
        } else {
            &mut reg.channels
        };
        if let Some(subs) = map.get_mut(name) {
            subs.retain(|(c, _)| *c != id);
            if subs.is_empty() {
                map.remove(name);
            }
        }
    }

    /// Delivers `payload` on `channel` to this node's subscribers; returns how many got it.
    pub fn publish(&self, channel: &Bytes, payload: &Bytes, limits: &Limits, now_ms: u64) -> usize {
        let reg = self.reg.read();
        let mut n = 0;
        let mut send = |mb: &Mailbox, m: Message| match mb.deliver(m, limits, now_ms) {
            Ok(()) => n += 1,
            Err(first) => {
                if first {
                    self.disconnected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node_id = %self.node_id, component = "pubsub", client_id = mb.handle.id, addr = %mb.handle.addr,
                            "subscriber closed for overcoming its output buffer limits (client-output-buffer-limit pubsub)");
                }
            }
        };
        if let Some(subs) = reg.channels.get(channel) {
            for (_, mb) in subs {
                send(
                    mb,
                    Message {
                        pattern: None,
                        channel: channel.clone(),
                        payload: payload.clone(),
                        invalidation: None,
                    },
                );
            }
        }
        for (pat, subs) in &reg.patterns {
            if hypercache_cluster::glob::matches(pat, channel) {
                for (_, mb) in subs {
                    send(
                        mb,
                        Message {
                            pattern: Some(pat.clone()),
                            channel: channel.clone(),
                            payload: payload.clone(),
                            invalidation: None,
                        },
                    );
                }
            }
        }
        n
    }

    /// Channels with at least one subscriber, matching `pattern` if given (`PUBSUB CHANNELS`).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.reg
            .read()
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| hypercache_cluster::glob::matches(p, c)))
            .cloned()
            .collect()
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.reg.read().channels.get(channel).map_or(0, Vec::len)
    }

    /// Distinct patterns subscribed to (`PUBSUB NUMPAT`).
    pub fn numpat(&self) -> usize {
        self.reg.read().patterns.len()
    }

    /// Closes subscribers whose user may no longer use one of their channels or patterns (after
    /// a change to the users), as Redis does.
    pub fn enforce_acl(&self, acl: &crate::acl::Acl) {
        let reg = self.reg.read();
        let mut doomed = Vec::new();
        for (pattern, map) in [(false, &reg.channels), (true, &reg.patterns)] {
            for (name, subs) in map {
                for (_, mb) in subs {
                    let user = mb.handle.meta.lock().user.clone();
                    let name_of = if user.is_empty() {
                        b"default".as_slice()
                    } else {
                        &user
                    };
                    let allowed = acl
                        .get(name_of)
                        .is_some_and(|u| u.may_use_channel(name, pattern));
                    if !allowed {
                        doomed.push(mb.handle.clone());
                    }
                }
            }
        }
        drop(reg);
        for h in doomed {
            h.kill();
        }
    }

    /// Channels and patterns with subscribers (INFO `pubsub_channels`, `pubsub_patterns`).
    pub fn counts(&self) -> (usize, usize) {
        let reg = self.reg.read();
        (reg.channels.len(), reg.patterns.len())
    }
}

/// Parses `client-output-buffer-limit` (Redis's `<class> <hard> <soft> <seconds>` groups; sizes
/// take Redis's units) into the pubsub class, starting from `current`. The class `normal` is
/// accepted and checked but changes nothing (HyperCache bounds normal clients by
/// `client-query-buffer-limit`); `replica`/`slave` is [`parse_replica_limits`]'s.
pub fn parse_limits(text: &str, current: Limits) -> Result<Limits, String> {
    parse_class(text, current, &["pubsub"])
}

/// The `replica` (alias `slave`) class of a `client-output-buffer-limit` value.
pub fn parse_replica_limits(text: &str, current: Limits) -> Result<Limits, String> {
    parse_class(text, current, &["replica", "slave"])
}

fn parse_class(text: &str, current: Limits, classes: &[&str]) -> Result<Limits, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(4) {
        return Err("Wrong number of arguments in buffer limit configuration.".into());
    }
    let mut out = current;
    for g in words.chunks(4) {
        let class = g[0].to_ascii_lowercase();
        if !matches!(class.as_str(), "normal" | "replica" | "slave" | "pubsub") {
            return Err("Invalid client class specified in buffer limit configuration.".into());
        }
        let hard = crate::config::parse_memory(g[1]);
        let soft = crate::config::parse_memory(g[2]);
        let secs = g[3].parse::<u64>().ok();
        let (Some(hard), Some(soft), Some(secs)) = (hard, soft, secs) else {
            return Err(
                "Error in hard, soft or soft_seconds setting in buffer limit configuration.".into(),
            );
        };
        if classes.contains(&class.as_str()) {
            out = Limits {
                hard,
                soft,
                soft_secs: secs,
            };
        }
    }
    Ok(out)
}

/// `client-output-buffer-limit` as `CONFIG GET` prints it (Redis's three classes, bytes).
pub fn render_limits(l: &Limits, replica: &Limits) -> String {
    format!(
        "normal 0 0 0 slave {} {} {} pubsub {} {} {}",
        replica.hard, replica.soft, replica.soft_secs, l.hard, l.soft, l.soft_secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: u64) -> Arc<ClientHandle> {
        let a: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        Arc::new(ClientHandle::new(id, a, a, -1))
    }

    #[test]
    fn channels_and_patterns_reach_their_subscribers_once() {
        let ps = PubSub::default();
        let (a, mut ra) = Mailbox::new(handle(1));
        let (b, mut rb) = Mailbox::new(handle(2));
        let ch = Bytes::from_static(b"news.tech");
        ps.subscribe(false, &ch, 1, &a);
        ps.subscribe(false, &ch, 1, &a);
        ps.subscribe(true, &Bytes::from_static(b"news.*"), 1, &a);
        ps.subscribe(true, &Bytes::from_static(b"news.*"), 2, &b);
        ps.subscribe(true, &Bytes::from_static(b"sport.*"), 2, &b);
        let n = ps.publish(&ch, &Bytes::from_static(b"hi"), &Limits::default(), 0);
        assert_eq!(n, 3, "one message and two pmessages");
        assert_eq!(ra.try_recv().unwrap().pattern, None);
        assert_eq!(
            ra.try_recv().unwrap().pattern.as_deref(),
            Some(&b"news.*"[..])
        );
        assert!(ra.try_recv().is_err());
        assert_eq!(rb.try_recv().unwrap().channel, ch);
        assert_eq!(ps.numpat(), 2);
        assert_eq!(ps.numsub(b"news.tech"), 1);
        ps.unsubscribe(false, b"news.tech", 1);
        assert_eq!(ps.channels(None), Vec::<Bytes>::new());
    }

    #[test]
    fn a_subscriber_past_the_hard_limit_is_disconnected() {
        let ps = PubSub::default();
        let h = handle(1);
        let (a, _ra) = Mailbox::new(h.clone());
        let ch = Bytes::from_static(b"c");
        ps.subscribe(false, &ch, 1, &a);
        let limits = Limits {
            hard: 1000,
            soft: 0,
            soft_secs: 0,
        };
        let big = Bytes::from(vec![b'x'; 400]);
        assert_eq!(ps.publish(&ch, &big, &limits, 0), 1);
        assert_eq!(ps.publish(&ch, &big, &limits, 0), 1);
        assert_eq!(
            ps.publish(&ch, &big, &limits, 0),
            0,
            "over 1000 bytes queued"
        );
        assert!(h.killed.load(Ordering::Relaxed));
        assert_eq!(ps.disconnected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_soft_limit_disconnects_only_after_its_seconds() {
        let ps = PubSub::default();
        let h = handle(1);
        let (a, _ra) = Mailbox::new(h.clone());
        let ch = Bytes::from_static(b"c");
        ps.subscribe(false, &ch, 1, &a);
        let limits = Limits {
            hard: 0,
            soft: 100,
            soft_secs: 2,
        };
        let m = Bytes::from(vec![b'x'; 200]);
        assert_eq!(ps.publish(&ch, &m, &limits, 1_000), 1);
        assert_eq!(ps.publish(&ch, &m, &limits, 2_500), 1);
        assert!(!h.killed.load(Ordering::Relaxed));
        assert_eq!(ps.publish(&ch, &m, &limits, 3_001), 0);
        assert!(h.killed.load(Ordering::Relaxed));
    }

    #[test]
    fn buffer_limits_parse_as_redis_writes_them() {
        let d = Limits::default();
        let r = crate::config::Config::default().replica_output_buffer_limit;
        assert_eq!(
            render_limits(&d, &r),
            "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
        );
        assert_eq!(parse_limits(&render_limits(&d, &r), d), Ok(d));
        assert_eq!(parse_replica_limits(&render_limits(&d, &r), d), Ok(r));
        assert_eq!(
            parse_replica_limits("replica 1mb 0 0", d),
            Ok(Limits {
                hard: 1 << 20,
                soft: 0,
                soft_secs: 0
            })
        );
        assert_eq!(
            parse_limits("pubsub 1mb 512kb 10", d),
            Ok(Limits {
                hard: 1 << 20,
                soft: 512 << 10,
                soft_secs: 10
            })
        );
        assert!(parse_limits("pubsub 1mb", d).is_err());
        assert!(parse_limits("bogus 1 1 1", d).is_err());
    }
}
