//! The inter-node messages: what a request and its reply carry (bodies of [`crate::wire`] frames,
//! serialized with postcard).
//!
//! Replicas only ever receive values ([`State`]), never commands; a forwarded command
//! ([`Request::Exec`]) is run by the key's coordinator, which then replicates the value.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::op::{Op, OpError, Outcome};
use crate::version::Version;

/// What a node holds for one key, as exchanged between replicas. Ordered by version: the newest
/// state wins (last write wins), a tombstone included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Nothing known about the key.
    Missing,
    /// Deleted at this version (a tombstone, or a FLUSHALL horizon).
    Dead(Version),
    /// A value.
    Live {
        /// The value bytes.
        value: Bytes,
        /// Absolute expiry, unix ms (0: none). Replicated with the value, so every replica
        /// expires the key at the same instant. (Removing an expired key still leaves a
        /// tombstone at its version: a replica that missed this write may hold an older value.)
        expire_at: u64,
        /// The write's version.
        version: Version,
        /// [`crate::entry::EncodingHint`] bits, so `OBJECT ENCODING` answers alike everywhere.
        enc: u8,
    },
}

impl State {
    /// The version, if the state has one.
    pub fn version(&self) -> Option<Version> {
        match self {
            State::Missing => None,
            State::Dead(v) => Some(*v),
            State::Live { version, .. } => Some(*version),
        }
    }

    /// Bytes of the value (0 unless live).
    pub fn value_len(&self) -> usize {
        match self {
            State::Live { value, .. } => value.len(),
            _ => 0,
        }
    }

    /// Whether `self` should replace `other` (strictly newer; `Missing` is oldest).
    pub fn newer_than(&self, other: &State) -> bool {
        self.version() > other.version()
    }
}

/// How many replicas must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Level {
    /// One replica.
    #[default]
    One,
    /// A majority: `n / 2 + 1`.
    Quorum,
    /// Every replica.
    All,
}

impl Level {
    /// Acknowledgements needed out of `n` replicas.
    pub fn required(self, n: usize) -> usize {
        match self {
            Level::One => 1.min(n),
            Level::Quorum => n / 2 + 1,
            Level::All => n,
        }
    }

    /// Parses `one`, `quorum` or `all` (any case).
    pub fn parse(s: &[u8]) -> Option<Level> {
        [
            (&b"one"[..], Level::One),
            (b"quorum", Level::Quorum),
            (b"all", Level::All),
        ]
        .iter()
        .find(|(n, _)| s.eq_ignore_ascii_case(n))
        .map(|(_, l)| *l)
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Level::One => "one",
            Level::Quorum => "quorum",
            Level::All => "all",
        }
    }
}

/// An operation's outcome as it crosses the wire (static texts travel as strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireOutcome {
    /// See [`Outcome`].
    Ok,
    /// See [`Outcome`].
    Nil,
    /// See [`Outcome`].
    Int(i64),
    /// See [`Outcome`].
    Value(Bytes),
    /// See [`Outcome`].
    Status(String),
    /// See [`Outcome`].
    Text(String),
    /// See [`Outcome`].
    Err(OpError),
}

impl From<Outcome> for WireOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok => WireOutcome::Ok,
            Outcome::Nil => WireOutcome::Nil,
            Outcome::Int(i) => WireOutcome::Int(i),
            Outcome::Value(v) => WireOutcome::Value(v),
            Outcome::Status(s) => WireOutcome::Status(s.into()),
            Outcome::Text(s) => WireOutcome::Text(s.into()),
            Outcome::Err(e) => WireOutcome::Err(e),
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(o: WireOutcome) -> Self {
        match o {
            WireOutcome::Ok => Outcome::Ok,
            WireOutcome::Nil => Outcome::Nil,
            WireOutcome::Int(i) => Outcome::Int(i),
            WireOutcome::Value(v) => Outcome::Value(v),
            WireOutcome::Status(s) => Outcome::Status(Outcome::static_text(&s)),
            WireOutcome::Text(s) => Outcome::Text(Outcome::static_text(&s)),
            WireOutcome::Err(e) => Outcome::Err(e),
        }
    }
}

/// A request from one node to another (frame kind `Request`; the reply has the same id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Liveness check; answered with [`Response::Pong`].
    Ping,
    /// Run `op` on `key` as its coordinator, at these consistency levels (a forwarded command).
    /// Answered with [`Response::Outcome`] or [`Response::NoReplicas`].
    Exec {
        /// The key.
        #[serde(borrow)]
        key: &'a [u8],
        /// The operation.
        #[serde(borrow)]
        op: Op<'a>,
        /// Read consistency.
        read: Level,
        /// Write consistency.
        write: Level,
        /// The sender is a replica of the key: answer a write with [`Response::Written`], so it
        /// can apply the new state before answering its client (a client's next read at ONE on
        /// that node then sees its own write).
        want_state: bool,
    },
    /// Store this state if it is newer (replication, read repair). Answered with
    /// [`Response::Applied`].
    Put {
        /// The key.
        #[serde(borrow)]
        key: &'a [u8],
        /// Its new state.
        state: State,
    },
    /// What do you hold for `key`? Answered with [`Response::State`].
    Fetch {
        /// The key.
        #[serde(borrow)]
        key: &'a [u8],
    },
    /// Keys of these slots (matching `pattern`, all if `None`). Answered with [`Response::Keys`].
    Keys {
        /// Slots to list, ascending.
        slots: Vec<u16>,
        /// Glob pattern.
        #[serde(borrow)]
        pattern: Option<&'a [u8]>,
    },
    /// How many keys these slots hold. Answered with [`Response::Count`].
    Count {
        /// Slots to count.
        slots: Vec<u16>,
    },
    /// A random key of this node. Answered with [`Response::Key`].
    RandomKey,
    /// Every key's state in these slots, tombstones included (the start-up copy of a replica),
    /// in pages: whole slots, from the first, until about `budget` bytes. Answered with
    /// [`Response::Dump`], [`Response::Syncing`] or [`Response::NotLive`].
    Dump {
        /// Slots to copy.
        slots: Vec<u16>,
        /// Bytes per page (at least one whole slot is sent).
        budget: u64,
    },
    /// Remove every key and tombstone older than `horizon` (FLUSHALL). Answered with
    /// [`Response::Done`].
    Flush {
        /// The flush's version: anything older is gone, on this node and in what it receives.
        horizon: Version,
    },
    /// The read round of a read-modify-write at QUORUM/ALL: promise to accept nothing older than
    /// `ballot` for `key` for a while, and say what you hold ([`crate::store::Store::prepare`]).
    /// Answered with [`Response::State`], [`Response::Refused`] or [`Response::Syncing`].
    Prepare {
        /// The key.
        #[serde(borrow)]
        key: &'a [u8],
        /// The round's ballot: the version its write will carry.
        ballot: Version,
    },
}

/// The reply to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Ping`].
    Pong,
    /// The command's outcome.
    Outcome(WireOutcome),
    /// A write's outcome and the key's new state (to an [`Request::Exec`] with `want_state`).
    Written {
        /// The command's outcome.
        outcome: WireOutcome,
        /// The key's state after the write.
        state: State,
    },
    /// The coordinator could not reach the consistency level (`write`: for a write).
    NoReplicas {
        /// A write (else a read).
        write: bool,
    },
    /// A [`Request::Put`] is stored (or this exact version was already held).
    Stored,
    /// To [`Request::Fetch`].
    State(State),
    /// To [`Request::Keys`]: the matching keys, and how many keys the slots held in all (the work
    /// SCAN's COUNT measures).
    Keys {
        /// Matching keys.
        keys: Vec<Bytes>,
        /// Keys examined.
        examined: u64,
    },
    /// To [`Request::Count`].
    Count(u64),
    /// To [`Request::RandomKey`].
    Key(Option<Bytes>),
    /// A page of a [`Request::Dump`]: the entries of the request's first `slots` slots.
    Dump {
        /// Entries, tombstones included.
        entries: Vec<(Bytes, State)>,
        /// How many of the requested slots this page covers (the rest: ask again).
        slots: u32,
    },
    /// To [`Request::Fetch`] from a node that is still copying its data from the others after a
    /// start: its answer would not be trustworthy, so it counts as no answer.
    Syncing,
    /// Done.
    Done,
    /// The request could not be served (text for the log).
    Error(String),
    /// A [`Request::Put`] or [`Request::Prepare`] refused: this node holds or has promised this
    /// newer version.
    Refused(Version),
    /// To [`Request::Dump`] from a node that does not see the sender live yet: writes it
    /// coordinates would still skip the sender, so a copy taken now could miss them. Ask again.
    NotLive,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ExpiryChange, SetCond};
    use crate::wire::{from_body, to_body};

    #[test]
    fn requests_roundtrip_borrowing_their_bytes() {
        let reqs = [
            Request::Exec {
                key: b"k",
                op: Op::Set {
                    value: b"v",
                    cond: SetCond::IfMissing,
                    expiry: ExpiryChange::At(5),
                    get: true,
                },
                read: Level::One,
                write: Level::Quorum,
                want_state: true,
            },
            Request::Put {
                key: b"k",
                state: State::Live {
                    value: Bytes::from_static(b"v"),
                    expire_at: 9,
                    version: Version { hlc: 3, origin: 4 },
                    enc: 1,
                },
            },
            Request::Keys {
                slots: vec![1, 2],
                pattern: Some(b"a*"),
            },
            Request::Flush {
                horizon: Version { hlc: 1, origin: 2 },
            },
        ];
        for r in reqs {
            let body = to_body(&r);
            assert_eq!(from_body::<Request<'_>>(&body).unwrap(), r);
        }
        let r = Response::Outcome(Outcome::Status("string").into());
        let back: Response = from_body(&to_body(&r)).unwrap();
        let Response::Outcome(o) = back else { panic!() };
        assert_eq!(Outcome::from(o), Outcome::Status("string"));
    }

    #[test]
    fn levels() {
        assert_eq!(
            [1, 2, 3, 5].map(|n| Level::Quorum.required(n)),
            [1, 2, 2, 3]
        );
        assert_eq!(Level::All.required(3), 3);
        assert_eq!(Level::One.required(3), 1);
        assert_eq!(Level::parse(b"QUORUM"), Some(Level::Quorum));
        assert_eq!(Level::parse(b"two"), None);
    }

    #[test]
    fn newest_state_wins() {
        let v = |hlc| Version { hlc, origin: 0 };
        let live = State::Live {
            value: Bytes::new(),
            expire_at: 0,
            version: v(2),
            enc: 0,
        };
        assert!(live.newer_than(&State::Missing));
        assert!(State::Dead(v(3)).newer_than(&live));
        assert!(!State::Dead(v(2)).newer_than(&live));
    }
}
