//! Keyspace notifications (`notify-keyspace-events`): which events a write raises, as a pure
//! function of the operation and what it did to the key, and Redis's class flags.
//!
//! The machine that applies a write (the local store on a single node, the coordinator's
//! [`crate::node::KeyRequest`] in a cluster) reports the [`Events`] of an acknowledged write;
//! the driver publishes them on the `__keyspace@0__:<key>` and `__keyevent@0__:<event>`
//! channels, as Redis's `notifyKeyspaceEvent` does.

use crate::op::{ExpiryChange, Op, Outcome};

/// `K`: `__keyspace@<db>__:<key>` channels.
pub const KEYSPACE: u32 = 1 << 0;
/// `E`: `__keyevent@<db>__:<event>` channels.
pub const KEYEVENT: u32 = 1 << 1;
/// `g`: generic commands (DEL, EXPIRE, RENAME, ...).
pub const GENERIC: u32 = 1 << 2;
/// `$`: string commands.
pub const STRING: u32 = 1 << 3;
/// `l`: list commands (none here).
pub const LIST: u32 = 1 << 4;
/// `s`: set commands (none here).
pub const SET: u32 = 1 << 5;
/// `h`: hash commands (none here).
pub const HASH: u32 = 1 << 6;
/// `z`: sorted-set commands (none here).
pub const ZSET: u32 = 1 << 7;
/// `x`: a key expired.
pub const EXPIRED: u32 = 1 << 8;
/// `e`: a key was evicted for `maxmemory`.
pub const EVICTED: u32 = 1 << 9;
/// `t`: stream commands (none here).
pub const STREAM: u32 = 1 << 10;
/// `m`: a read missed (not raised by HyperCache; accepted and shown).
pub const KEY_MISS: u32 = 1 << 11;
/// `d`: module events (none here).
pub const MODULE: u32 = 1 << 13;
/// `n`: a key was created.
pub const NEW: u32 = 1 << 14;
/// `A`: every class but `m` and `n`, as in Redis.
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// Redis's `keyspaceEventsStringToFlags`: `None` for a character that names no class.
pub fn parse_flags(classes: &[u8]) -> Option<u32> {
    classes.iter().try_fold(0u32, |flags, c| {
        Some(
            flags
                | match c {
                    b'A' => ALL,
                    b'g' => GENERIC,
                    b'$' => STRING,
                    b'l' => LIST,
                    b's' => SET,
                    b'h' => HASH,
                    b'z' => ZSET,
                    b'x' => EXPIRED,
                    b'e' => EVICTED,
                    b'K' => KEYSPACE,
                    b'E' => KEYEVENT,
                    b't' => STREAM,
                    b'm' => KEY_MISS,
                    b'd' => MODULE,
                    b'n' => NEW,
                    _ => return None,
                },
        )
    })
}

/// Redis's `keyspaceEventsFlagsToString` (what `CONFIG GET` shows).
pub fn render_flags(flags: u32) -> String {
    let mut s = String::new();
    if flags & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
            (NEW, 'n'),
        ] {
            if flags & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// What a write did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key did not exist (or had expired) and now does.
    Created,
    /// The key's value or expiry changed.
    Modified,
    /// The key was removed.
    Deleted,
}

/// The events of one write, in the order Redis raises them: at most three for one command
/// (`new`, then the command's event, then `expire` for a SET with an expiry), more for a
/// transaction's batch ([`crate::op::Op::Batch`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Events {
    /// Positions in [`EVENTS`] plus one (0: none): four bytes rather than three fat pointers,
    /// since every write's machine output carries them.
    list: [u8; 3],
    /// A batch's events after the first three (same coding), allocated only for a batch.
    more: Option<Box<[u8]>>,
    /// Whether Redis writes the command's reply before these events (a subscriber on the same
    /// connection sees them after the reply): commands that reply with the old value (`SET ...
    /// GET`, `GETSET`, `GETDEL`, `GETEX`), `BITFIELD`, and an `EXPIRE` that sets a deadline.
    pub after_reply: bool,
}

/// Every event a write raises, with its class.
const EVENTS: [(u32, &str); 15] = [
    (NEW, "new"),
    (STRING, "set"),
    (GENERIC, "expire"),
    (GENERIC, "del"),
    (GENERIC, "persist"),
    (STRING, "incrby"),
    (STRING, "incrbyfloat"),
    (STRING, "append"),
    (STRING, "setrange"),
    (STRING, "setbit"),
    (GENERIC, "rename_from"),
    (GENERIC, "rename_to"),
    (GENERIC, "copy_to"),
    (EXPIRED, "expired"),
    (EVICTED, "evicted"),
];

impl Events {
    fn of(list: &[(u32, &'static str)]) -> Events {
        let mut e = Events::default();
        for (slot, ev) in e.list.iter_mut().zip(list) {
            let i = EVENTS.iter().position(|x| x == ev).expect("a known event");
            *slot = i as u8 + 1;
        }
        e
    }

    /// Whether there is no event.
    pub fn is_empty(&self) -> bool {
        self.list[0] == 0
    }

    /// The events as (class, name), in order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &'static str)> + '_ {
        self.codes().map(|i| EVENTS[usize::from(i) - 1])
    }

    /// The events' codes (positions in [`EVENTS`] plus one), in order.
    fn codes(&self) -> impl Iterator<Item = u8> + '_ {
        self.list
            .iter()
            .chain(self.more.iter().flat_map(|m| m.iter()))
            .copied()
            .filter(|&i| i > 0)
    }

    /// The events of several commands, in order (a batch's).
    fn concat<'a>(all: impl Iterator<Item = &'a Events>) -> Events {
        let codes: Vec<u8> = all.flat_map(Events::codes).collect();
        let mut e = Events::default();
        for (slot, i) in e.list.iter_mut().zip(&codes) {
            *slot = *i;
        }
        if codes.len() > 3 {
            e.more = Some(codes[3..].into());
        }
        e
    }

    /// Only the events whose class is in `flags`.
    pub fn enabled(&self, flags: u32) -> impl Iterator<Item = (u32, &'static str)> + '_ {
        self.iter().filter(move |(class, _)| flags & class != 0)
    }
}

/// The events of a write whose outcome is `outcome`: [`events`], and for a transaction's batch
/// ([`Op::Batch`], guarded or not) each command's events in order, from what each did to the
/// key (`after_reply` off: `EXEC` replies once all of them ran).
pub fn write_events(op: &Op<'_>, change: Option<Change>, outcome: &Outcome) -> Events {
    let batch = match *op {
        Op::Batch(b) => Some(b),
        Op::IfVersion { then, .. } => match crate::msg::guarded(then) {
            Some(Op::Batch(b)) => Some(b),
            _ => None,
        },
        _ => None,
    };
    let (Some(bytes), Outcome::Batch(_, changes)) = (batch, outcome) else {
        return events(op, change);
    };
    let ops = crate::msg::batched(bytes).unwrap_or_default();
    let each: Vec<Events> = ops
        .iter()
        .zip(changes)
        .map(|(op, change)| events_of(op, *change))
        .collect();
    Events::concat(each.iter())
}

/// The events Redis raises for `op` when it did `change` to the key (`None`: nothing changed).
pub fn events(op: &Op<'_>, change: Option<Change>) -> Events {
    // A WATCH-guarded command raises its command's events.
    if let Op::IfVersion { then, .. } = *op {
        return crate::msg::guarded(then).map_or_else(Events::default, |o| events(&o, change));
    }
    let mut e = events_of(op, change);
    e.after_reply = match *op {
        Op::Set { get, .. } => get,
        Op::GetDel | Op::GetEx(_) | Op::BitField(_) => true,
        Op::Expire { .. } => change == Some(Change::Modified),
        _ => false,
    };
    e
}

fn events_of(op: &Op<'_>, change: Option<Change>) -> Events {
    let new = (NEW, "new");
    let one = |class, name| match change {
        Some(Change::Created) => Events::of(&[new, (class, name)]),
        Some(_) => Events::of(&[(class, name)]),
        None => Events::default(),
    };
    match *op {
        Op::Set { expiry, .. } => {
            let expires = matches!(expiry, ExpiryChange::At(_));
            match change {
                Some(Change::Created) if expires => {
                    Events::of(&[new, (STRING, "set"), (GENERIC, "expire")])
                }
                Some(Change::Created) => Events::of(&[new, (STRING, "set")]),
                // A deadline already past: Redis 7.0 writes the key with it (set, expire) and it
                // is gone at once.
                Some(_) if expires => Events::of(&[(STRING, "set"), (GENERIC, "expire")]),
                Some(_) => Events::of(&[(STRING, "set")]),
                None => Events::default(),
            }
        }
        Op::GetDel | Op::Del => one(GENERIC, "del"),
        Op::GetEx(_) | Op::Expire { .. } => match change {
            Some(Change::Deleted) => Events::of(&[(GENERIC, "del")]),
            Some(_) if matches!(op, Op::GetEx(ExpiryChange::Clear)) => {
                Events::of(&[(GENERIC, "persist")])
            }
            Some(_) => Events::of(&[(GENERIC, "expire")]),
            None => Events::default(),
        },
        Op::Persist => one(GENERIC, "persist"),
        Op::IncrBy(_) => one(STRING, "incrby"),
        Op::IncrByFloat(_) => one(STRING, "incrbyfloat"),
        Op::Append(_) => one(STRING, "append"),
        Op::SetRange(..) => one(STRING, "setrange"),
        Op::SetBit { .. } | Op::BitField(_) => one(STRING, "setbit"),
        Op::StoreBitOp(_) => match change {
            Some(Change::Deleted) => Events::of(&[(GENERIC, "del")]),
            _ => one(STRING, "set"),
        },
        Op::Get
        | Op::Strlen
        | Op::GetRange(..)
        | Op::Exists
        | Op::Touch
        | Op::Type
        | Op::Ttl { .. }
        | Op::ExpireTime { .. }
        | Op::ObjectEncoding
        | Op::ObjectIdleTime
        | Op::ObjectFreq
        | Op::ObjectRefcount
        | Op::GetBit(_)
        | Op::BitCount(_)
        | Op::BitPos { .. }
        | Op::Version
        | Op::IfVersion { .. }
        | Op::Batch(_) => Events::default(),
    }
}

/// The internal channel a coordinator sends changed keys on to the other nodes (a `Publish`
/// the receiving node's machine turns into [`crate::node::Served::Invalidate`]; never delivered
/// to subscribers).
pub const INVALIDATE_CHANNEL: &[u8] = b"\0hc:invalidate";
/// The internal channel a node announces its tracking clients on
/// ([`crate::node::Served::TrackingAnnounced`]).
pub const ANNOUNCE_CHANNEL: &[u8] = b"\0hc:tracking";

/// How often a node with tracking clients announces them to the others, ms.
pub const ANNOUNCE_EVERY_MS: u64 = 1_000;
/// How long after an announcement the others keep sending it changed keys, ms (three
/// announcements: one lost datagram-like message does not stop invalidations).
pub const ANNOUNCE_VALID_MS: u64 = 3_000;

/// Client-side caching across a cluster: whether this node must send the keys that change here to
/// the other nodes (some node has tracking clients), and when to announce its own tracking
/// clients. Time comes in as an argument; the driver sends and receives the announcements.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerTracking {
    /// Until when (ms) another node's announcement holds.
    until: u64,
    /// When this node last announced (ms; 0: never).
    last: u64,
}

impl PeerTracking {
    /// Another node announced tracking clients at `now`.
    pub fn announced(&mut self, now: u64) {
        self.until = self.until.max(now + ANNOUNCE_VALID_MS);
    }

    /// Whether a key changed here at `now` must be sent to the other nodes (this node's own
    /// tracking clients are invalidated here either way).
    pub fn sends_changes(&self, now: u64) -> bool {
        now < self.until
    }

    /// Whether this node, with tracking clients (`local`), announces them at `now`: at once when
    /// they appear (`fresh`: a `CLIENT TRACKING ON` just happened), then every
    /// [`ANNOUNCE_EVERY_MS`].
    pub fn announce_due(&mut self, now: u64, local: bool, fresh: bool) -> bool {
        let due = local && (fresh || self.last == 0 || now >= self.last + ANNOUNCE_EVERY_MS);
        if due {
            self.last = now;
        }
        due
    }
}

/// The (channel, message) pairs Redis publishes for one event of `key` in database `db`, as
/// `flags` selects them (none if the event's class is off).
pub fn messages(flags: u32, class: u32, name: &str, db: u8, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    if flags & class == 0 {
        return out;
    }
    if flags & KEYSPACE != 0 {
        let mut ch = format!("__keyspace@{db}__:").into_bytes();
        ch.extend_from_slice(key);
        out.push((ch, name.as_bytes().to_vec()));
    }
    if flags & KEYEVENT != 0 {
        let mut ch = format!("__keyevent@{db}__:").into_bytes();
        ch.extend_from_slice(name.as_bytes());
        out.push((ch, key.to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_as_redis_renders_them() {
        for (given, shown) in [
            ("", ""),
            ("KEA", "AKE"),
            ("Ex", "xE"),
            ("g$lshzxetd", "A"),
            ("Kg$", "g$K"),
            ("An", "A"),
            ("nm", "nm"),
            ("KEg$lshzxetdmn", "AKEm"),
        ] {
            let f = parse_flags(given.as_bytes()).unwrap();
            assert_eq!(render_flags(f), shown, "{given}");
        }
        assert_eq!(parse_flags(b"KEw"), None);
    }

    #[test]
    fn announcements_hold_three_seconds_and_repeat_every_second() {
        let mut p = PeerTracking::default();
        assert!(!p.sends_changes(0), "no node has announced");
        p.announced(1_000);
        assert!(p.sends_changes(1_000) && p.sends_changes(3_999));
        assert!(!p.sends_changes(4_000), "the announcement ran out");
        assert!(!p.announce_due(10, false, true), "nothing to announce");
        assert!(p.announce_due(10, true, false), "the first time");
        assert!(!p.announce_due(500, true, false));
        assert!(
            p.announce_due(600, true, true),
            "a new tracking client: at once"
        );
        assert!(!p.announce_due(1_599, true, false));
        assert!(p.announce_due(1_600, true, false));
    }

    #[test]
    fn events_follow_the_write() {
        let names = |op: Op<'_>, c| events(&op, c).iter().map(|e| e.1).collect::<Vec<_>>();
        assert_eq!(names(Op::set(b"v"), Some(Change::Created)), ["new", "set"]);
        let setex = Op::Set {
            value: b"v",
            cond: crate::op::SetCond::Always,
            expiry: ExpiryChange::At(5),
            get: false,
        };
        assert_eq!(names(setex, Some(Change::Modified)), ["set", "expire"]);
        assert_eq!(names(Op::set(b"v"), None), Vec::<&str>::new());
        assert_eq!(names(Op::Del, Some(Change::Deleted)), ["del"]);
        assert_eq!(names(Op::IncrBy(1), Some(Change::Modified)), ["incrby"]);
        assert_eq!(
            names(Op::GetEx(ExpiryChange::Clear), Some(Change::Modified)),
            ["persist"]
        );
        let past = Op::Expire {
            at: 1,
            cond: Default::default(),
        };
        assert_eq!(names(past, Some(Change::Deleted)), ["del"]);
        assert_eq!(names(past, Some(Change::Modified)), ["expire"]);
        assert_eq!(names(Op::Get, None), Vec::<&str>::new());
    }

    #[test]
    fn a_batch_raises_each_command_s_events_in_order() {
        let g = crate::msg::guard_bytes;
        let setex = Op::Set {
            value: b"v",
            cond: crate::op::SetCond::Always,
            expiry: ExpiryChange::At(5),
            get: false,
        };
        let b = crate::msg::batch_bytes(&[g(&setex), g(&Op::Get), g(&Op::IncrBy(1)), g(&Op::Del)]);
        let outcome = Outcome::Batch(
            vec![Outcome::Ok, Outcome::Nil, Outcome::Int(1), Outcome::Int(1)],
            vec![
                Some(Change::Created),
                None,
                Some(Change::Modified),
                Some(Change::Deleted),
            ],
        );
        let names = |op: &Op<'_>| {
            write_events(op, Some(Change::Modified), &outcome)
                .iter()
                .map(|e| e.1)
                .collect::<Vec<_>>()
        };
        let want = ["new", "set", "expire", "incrby", "del"];
        assert_eq!(names(&Op::Batch(&b)), want);
        let then = g(&Op::Batch(&b));
        let guarded = Op::IfVersion {
            expect: None,
            then: &then,
        };
        assert_eq!(names(&guarded), want, "guarded by WATCH");
        assert!(!write_events(&Op::Batch(&b), None, &outcome).after_reply);
        // A batch that was refused (its WATCH saw a change) raises nothing.
        assert!(write_events(&guarded, None, &Outcome::Changed).is_empty());
    }
}
