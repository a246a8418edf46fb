//! Pub/Sub: `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH` and `PUBSUB`
//! ([`crate::pubsub`]), with Redis 7.0's replies: a confirmation per channel, as a RESP3 push or
//! a RESP2 array, written even under `CLIENT REPLY OFF` (as Redis writes pushes).

use bytes::Bytes;
use hypercache_resp::{Frame, Protocol};

use super::{err_owned, help_with};
use crate::pubsub::{Mailbox, Subscriptions};
use crate::session::Session;

/// Writes one Pub/Sub frame (`kind`, then `items`) straight to the client: a push in RESP3, an
/// array in RESP2.
fn push(s: &mut Session, items: Vec<Frame>) {
    let f = if s.proto == Protocol::Resp3 {
        Frame::Push(items)
    } else {
        Frame::Array(items)
    };
    f.encode(s.proto, &mut s.out);
}

/// The connection's subscriptions, made on first use.
pub(crate) fn subs(s: &mut Session) -> &mut Subscriptions {
    if s.subs.is_none() {
        let (mailbox, rx) = Mailbox::new(s.handle.clone());
        *s.handle.mailbox.lock() = Some(mailbox.clone());
        s.subs = Some(Box::new(Subscriptions {
            channels: Vec::new(),
            patterns: Vec::new(),
            mailbox,
            rx,
        }));
    }
    s.subs.as_mut().expect("made above")
}

fn count(s: &Session) -> i64 {
    s.subs.as_ref().map_or(0, |x| x.count() as i64)
}

fn note_counts(s: &Session) {
    let c = s
        .subs
        .as_ref()
        .map_or((0, 0), |x| (x.channels.len(), x.patterns.len()));
    s.handle.meta.lock().subs = c;
}

fn join(s: &mut Session, a: &[Bytes], pattern: bool) -> Option<Frame> {
    let kind: &'static [u8] = if pattern { b"psubscribe" } else { b"subscribe" };
    for name in &a[1..] {
        let id = s.handle.id;
        let shared = s.shared.clone();
        let sub = subs(s);
        let list = if pattern {
            &mut sub.patterns
        } else {
            &mut sub.channels
        };
        if !list.contains(name) {
            list.push(name.clone());
            shared.pubsub.subscribe(pattern, name, id, &sub.mailbox);
        }
        let n = count(s);
        push(
            s,
            vec![
                Frame::Bulk(Bytes::from_static(kind)),
                Frame::Bulk(name.clone()),
                Frame::Integer(n),
            ],
        );
    }
    note_counts(s);
    None
}

fn leave(s: &mut Session, a: &[Bytes], pattern: bool) -> Option<Frame> {
    let kind: &'static [u8] = if pattern {
        b"punsubscribe"
    } else {
        b"unsubscribe"
    };
    let names: Vec<Bytes> = if a.len() > 1 {
        a[1..].to_vec()
    } else {
        s.subs.as_ref().map_or(Vec::new(), |x| {
            if pattern {
                x.patterns.clone()
            } else {
                x.channels.clone()
            }
        })
    };
    if names.is_empty() {
        // Nothing to leave: one reply all the same, with a null name.
        let n = count(s);
        push(
            s,
            vec![
                Frame::Bulk(Bytes::from_static(kind)),
                Frame::Null,
                Frame::Integer(n),
            ],
        );
        return None;
    }
    for name in names {
        let id = s.handle.id;
        if let Some(sub) = s.subs.as_mut() {
            let list = if pattern {
                &mut sub.patterns
            } else {
                &mut sub.channels
            };
            if let Some(i) = list.iter().position(|c| *c == name) {
                list.remove(i);
                s.shared.pubsub.unsubscribe(pattern, &name, id);
            }
        }
        let n = count(s);
        push(
            s,
            vec![
                Frame::Bulk(Bytes::from_static(kind)),
                Frame::Bulk(name),
                Frame::Integer(n),
            ],
        );
    }
    note_counts(s);
    None
}

/// # Format
/// `SUBSCRIBE channel [channel ...]`
pub(super) fn subscribe(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    join(s, a, false)
}

/// # Format
/// `PSUBSCRIBE pattern [pattern ...]`
pub(super) fn psubscribe(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    join(s, a, true)
}

/// # Format
/// `UNSUBSCRIBE [channel ...]`
pub(super) fn unsubscribe(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    leave(s, a, false)
}

/// # Format
/// `PUNSUBSCRIBE [pattern ...]`
pub(super) fn punsubscribe(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    leave(s, a, true)
}

/// # Format
/// `PUBLISH channel message`: delivered to this node's subscribers now and, in a cluster,
/// sent to every other live member for theirs. The reply counts this node's receivers (as in
/// Redis Cluster).
pub(super) fn publish(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let limits = s.shared.config.read().client_output_buffer_limit;
    let n = s
        .shared
        .pubsub
        .publish(&a[1], &a[2], &limits, crate::state::now_ms());
    if let Some(cl) = &s.shared.cluster {
        crate::cluster::exec::publish_to_peers(&s.shared, cl, &a[1], &a[2]);
    }
    // A subscriber that publishes gets its own messages before the reply.
    s.deliver_own_messages();
    // Redis replicas get every message (their subscribers too).
    s.force_propagation();
    Some(Frame::Integer(n as i64))
}

/// # Format
/// `PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT | SHARDCHANNELS [pattern] |
/// SHARDNUMSUB [channel ...] | HELP`
pub(super) fn pubsub(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    let wrong = || {
        err_owned(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
            String::from_utf8_lossy(&a[1])
        ))
    };
    match sub.as_slice() {
        b"channels" | b"shardchannels" => {
            if a.len() > 3 {
                return wrong();
            }
            if sub == b"shardchannels" {
                // No shard channels: SSUBSCRIBE is not served.
                return Some(Frame::Array(Vec::new()));
            }
            let chans = s.shared.pubsub.channels(a.get(2).map(|p| p.as_ref()));
            Some(Frame::Array(chans.into_iter().map(Frame::Bulk).collect()))
        }
        b"numsub" | b"shardnumsub" => {
            let shard = sub == b"shardnumsub";
            let mut out = Vec::with_capacity((a.len() - 2) * 2);
            for ch in &a[2..] {
                out.push(Frame::Bulk(ch.clone()));
                let n = if shard {
                    0
                } else {
                    s.shared.pubsub.numsub(ch)
                };
                out.push(Frame::Integer(n as i64));
            }
            Some(Frame::Array(out))
        }
        b"numpat" => Some(Frame::Integer(s.shared.pubsub.numpat() as i64)),
        _ => help_with(
            "PUBSUB",
            &[
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
            ],
            "    Prints this help.",
        ),
    }
}
