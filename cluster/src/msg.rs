//! The inter-node messages: what a request and its reply carry (bodies of [`crate::wire`] frames,
//! serialized with postcard).
//!
//! Replicas only ever receive values ([`State`]), never commands; a forwarded command
//! ([`Request::Exec`]) is run by the key's coordinator, which then replicates the value.

use bytes::Bytes;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::bits::{self, BitSpan};
use crate::op::{ExpireCond, ExpiryChange, Op, OpError, Outcome, SetCond};
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
    /// See [`Outcome`].
    Fields(Vec<Option<i64>>),
    /// See [`Outcome`].
    Changed,
    /// See [`Outcome`].
    Version(Option<Version>),
    /// [`Outcome::Batch`]'s outcomes (what each did to the key stays where the batch ran).
    Batch(Vec<WireOutcome>),
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
            Outcome::Fields(f) => WireOutcome::Fields(f),
            Outcome::Changed => WireOutcome::Changed,
            Outcome::Version(v) => WireOutcome::Version(v),
            Outcome::Batch(outs, _) => {
                WireOutcome::Batch(outs.into_iter().map(WireOutcome::from).collect())
            }
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
            WireOutcome::Fields(f) => Outcome::Fields(f),
            WireOutcome::Changed => Outcome::Changed,
            WireOutcome::Version(v) => Outcome::Version(v),
            WireOutcome::Batch(outs) => {
                Outcome::Batch(outs.into_iter().map(Outcome::from).collect(), Vec::new())
            }
        }
    }
}

/// An operation as it crosses the wire: its own type, so that the in-memory [`Op`] can change
/// without changing the protocol. Tags are the variants' positions, declared by
/// [`WireOp::tag`] and pinned by golden-bytes tests; new variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireOp<'a> {
    /// Tag 0: `GET`.
    Get,
    /// Tag 1: `SET`: value, condition (0 always, 1 NX, 2 XX), expiry, `GET`.
    Set {
        /// The value.
        #[serde(borrow)]
        value: &'a [u8],
        /// 0 always, 1 `NX`, 2 `XX`.
        cond: u8,
        /// The expiry change.
        expiry: WireExpiry,
        /// Reply with the old value.
        get: bool,
    },
    /// Tag 2: `GETDEL`.
    GetDel,
    /// Tag 3: `GETEX`.
    GetEx(WireExpiry),
    /// Tag 4: `INCRBY`.
    IncrBy(i64),
    /// Tag 5: `INCRBYFLOAT` (the increment as the client sent it).
    IncrByFloat(#[serde(borrow)] &'a [u8]),
    /// Tag 6: `APPEND`.
    Append(#[serde(borrow)] &'a [u8]),
    /// Tag 7: `STRLEN`.
    Strlen,
    /// Tag 8: `GETRANGE`.
    GetRange(i64, i64),
    /// Tag 9: `SETRANGE`.
    SetRange(u64, #[serde(borrow)] &'a [u8]),
    /// Tag 10: `DEL` of one key.
    Del,
    /// Tag 11: `EXISTS` of one key.
    Exists,
    /// Tag 12: `TOUCH` of one key.
    Touch,
    /// Tag 13: `TYPE`.
    Type,
    /// Tag 14: `EXPIRE` family: absolute deadline (unix ms) and NX/XX/GT/LT as bits 0..3.
    Expire {
        /// Deadline, unix ms.
        at: i64,
        /// Bit 0 NX, 1 XX, 2 GT, 3 LT.
        cond: u8,
    },
    /// Tag 15: `TTL`/`PTTL`.
    Ttl {
        /// Milliseconds.
        ms: bool,
    },
    /// Tag 16: `EXPIRETIME`/`PEXPIRETIME`.
    ExpireTime {
        /// Milliseconds.
        ms: bool,
    },
    /// Tag 17: `PERSIST`.
    Persist,
    /// Tag 18: `OBJECT ENCODING`.
    ObjectEncoding,
    /// Tag 19: `OBJECT IDLETIME`.
    ObjectIdleTime,
    /// Tag 20: `OBJECT FREQ`.
    ObjectFreq,
    /// Tag 21: `OBJECT REFCOUNT`.
    ObjectRefcount,
    /// Tag 22: `SETBIT`.
    SetBit {
        /// Bit offset.
        offset: u64,
        /// The new bit.
        on: bool,
    },
    /// Tag 23: `GETBIT`.
    GetBit(u64),
    /// Tag 24: `BITCOUNT`.
    BitCount(BitSpan),
    /// Tag 25: `BITPOS`.
    BitPos {
        /// The bit looked for.
        bit: bool,
        /// The range.
        span: BitSpan,
    },
    /// Tag 26: `BITFIELD`: the encoded program (checked before it runs).
    BitField(#[serde(borrow)] &'a [u8]),
    /// Tag 27: `BITOP`'s result stored at its destination.
    StoreBitOp(#[serde(borrow)] &'a [u8]),
    /// Tag 28: `WATCH`'s check and a transaction's command ([`Op::IfVersion`]).
    IfVersion {
        /// The version `WATCH` saw (none: absent).
        expect: Option<Version>,
        /// The command's operation, itself a [`WireOp`] (never another `IfVersion`).
        #[serde(borrow)]
        then: &'a [u8],
    },
    /// Tag 29: the key's newest version ([`Op::Version`]).
    Version,
    /// Tag 30: a transaction's commands on one key ([`Op::Batch`]): [`batch_bytes`].
    Batch(#[serde(borrow)] &'a [u8]),
}

/// An expiry change on the wire. Tag 0 clear, 1 keep, 2 at (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireExpiry {
    /// Tag 0: remove any expiry.
    Clear,
    /// Tag 1: keep it.
    Keep,
    /// Tag 2: expire at this unix ms.
    At(u64),
}

impl From<ExpiryChange> for WireExpiry {
    fn from(e: ExpiryChange) -> Self {
        match e {
            ExpiryChange::Clear => WireExpiry::Clear,
            ExpiryChange::Keep => WireExpiry::Keep,
            ExpiryChange::At(t) => WireExpiry::At(t),
        }
    }
}

impl From<WireExpiry> for ExpiryChange {
    fn from(e: WireExpiry) -> Self {
        match e {
            WireExpiry::Clear => ExpiryChange::Clear,
            WireExpiry::Keep => ExpiryChange::Keep,
            WireExpiry::At(t) => ExpiryChange::At(t),
        }
    }
}

impl<'a> From<&Op<'a>> for WireOp<'a> {
    fn from(op: &Op<'a>) -> Self {
        match *op {
            Op::Get => WireOp::Get,
            Op::Set {
                value,
                cond,
                expiry,
                get,
            } => WireOp::Set {
                value,
                cond: match cond {
                    SetCond::Always => 0,
                    SetCond::IfMissing => 1,
                    SetCond::IfExists => 2,
                },
                expiry: expiry.into(),
                get,
            },
            Op::GetDel => WireOp::GetDel,
            Op::GetEx(e) => WireOp::GetEx(e.into()),
            Op::IncrBy(n) => WireOp::IncrBy(n),
            Op::IncrByFloat(b) => WireOp::IncrByFloat(b),
            Op::Append(b) => WireOp::Append(b),
            Op::Strlen => WireOp::Strlen,
            Op::GetRange(a, b) => WireOp::GetRange(a, b),
            Op::SetRange(o, b) => WireOp::SetRange(o, b),
            Op::Del => WireOp::Del,
            Op::Exists => WireOp::Exists,
            Op::Touch => WireOp::Touch,
            Op::Type => WireOp::Type,
            Op::Expire { at, cond } => WireOp::Expire {
                at,
                cond: u8::from(cond.nx)
                    | u8::from(cond.xx) << 1
                    | u8::from(cond.gt) << 2
                    | u8::from(cond.lt) << 3,
            },
            Op::Ttl { ms } => WireOp::Ttl { ms },
            Op::ExpireTime { ms } => WireOp::ExpireTime { ms },
            Op::Persist => WireOp::Persist,
            Op::ObjectEncoding => WireOp::ObjectEncoding,
            Op::ObjectIdleTime => WireOp::ObjectIdleTime,
            Op::ObjectFreq => WireOp::ObjectFreq,
            Op::ObjectRefcount => WireOp::ObjectRefcount,
            Op::SetBit { offset, on } => WireOp::SetBit { offset, on },
            Op::GetBit(o) => WireOp::GetBit(o),
            Op::BitCount(sp) => WireOp::BitCount(sp),
            Op::BitPos { bit, span } => WireOp::BitPos { bit, span },
            Op::BitField(p) => WireOp::BitField(p),
            Op::StoreBitOp(v) => WireOp::StoreBitOp(v),
            Op::IfVersion { expect, then } => WireOp::IfVersion { expect, then },
            Op::Version => WireOp::Version,
            Op::Batch(b) => WireOp::Batch(b),
        }
    }
}

impl<'a> WireOp<'a> {
    /// The in-memory operation (`None` for a value out of range, such as a SET condition 3).
    pub fn op(&self) -> Option<Op<'a>> {
        Some(match *self {
            WireOp::Get => Op::Get,
            WireOp::Set {
                value,
                cond,
                expiry,
                get,
            } => Op::Set {
                value,
                cond: match cond {
                    0 => SetCond::Always,
                    1 => SetCond::IfMissing,
                    2 => SetCond::IfExists,
                    _ => return None,
                },
                expiry: expiry.into(),
                get,
            },
            WireOp::GetDel => Op::GetDel,
            WireOp::GetEx(e) => Op::GetEx(e.into()),
            WireOp::IncrBy(n) => Op::IncrBy(n),
            WireOp::IncrByFloat(b) => Op::IncrByFloat(b),
            WireOp::Append(b) => Op::Append(b),
            WireOp::Strlen => Op::Strlen,
            WireOp::GetRange(a, b) => Op::GetRange(a, b),
            WireOp::SetRange(o, b) => Op::SetRange(o, b),
            WireOp::Del => Op::Del,
            WireOp::Exists => Op::Exists,
            WireOp::Touch => Op::Touch,
            WireOp::Type => Op::Type,
            WireOp::Expire { at, cond } => {
                if cond > 0b1111 {
                    return None;
                }
                Op::Expire {
                    at,
                    cond: ExpireCond {
                        nx: cond & 1 != 0,
                        xx: cond & 2 != 0,
                        gt: cond & 4 != 0,
                        lt: cond & 8 != 0,
                    },
                }
            }
            WireOp::Ttl { ms } => Op::Ttl { ms },
            WireOp::ExpireTime { ms } => Op::ExpireTime { ms },
            WireOp::Persist => Op::Persist,
            WireOp::ObjectEncoding => Op::ObjectEncoding,
            WireOp::ObjectIdleTime => Op::ObjectIdleTime,
            WireOp::ObjectFreq => Op::ObjectFreq,
            WireOp::ObjectRefcount => Op::ObjectRefcount,
            WireOp::SetBit { offset, on } => Op::SetBit { offset, on },
            WireOp::GetBit(o) => Op::GetBit(o),
            WireOp::BitCount(sp) => Op::BitCount(sp),
            WireOp::BitPos { bit, span } => Op::BitPos { bit, span },
            WireOp::BitField(p) => {
                bits::decode_fields(p)?;
                Op::BitField(p)
            }
            WireOp::StoreBitOp(v) => Op::StoreBitOp(v),
            WireOp::IfVersion { expect, then } => {
                guarded(then)?;
                Op::IfVersion { expect, then }
            }
            WireOp::Version => Op::Version,
            WireOp::Batch(b) => {
                batched(b)?;
                Op::Batch(b)
            }
        })
    }
}

/// The wire form of `op`, as [`Op::IfVersion`] carries the command it guards.
pub fn guard_bytes(op: &Op<'_>) -> Vec<u8> {
    postcard::to_allocvec(&WireOp::from(op)).unwrap_or_default()
}

/// The commands of an [`Op::Batch`], each in its wire form ([`guard_bytes`]), in order.
pub fn batch_bytes(ops: &[Vec<u8>]) -> Vec<u8> {
    let parts: Vec<&[u8]> = ops.iter().map(Vec::as_slice).collect();
    postcard::to_allocvec(&parts).unwrap_or_default()
}

/// The most commands one [`Op::Batch`] carries: a transaction's commands on one key, each a
/// client's command queued under `client-query-buffer-limit`.
pub const MAX_BATCH: usize = 100_000;

/// The commands of an [`Op::Batch`] (`None` if one does not decode, or is a batch, a guard or
/// a version read, or there are none or more than [`MAX_BATCH`]).
pub fn batched(bytes: &[u8]) -> Option<Vec<Op<'_>>> {
    let parts: Vec<&[u8]> = postcard::from_bytes(bytes).ok()?;
    if parts.is_empty() || parts.len() > MAX_BATCH {
        return None;
    }
    parts
        .into_iter()
        .map(|p| {
            let w: WireOp<'_> = postcard::from_bytes(p).ok()?;
            // Refused before it is decoded further: nothing nests inside a batch.
            if matches!(
                w,
                WireOp::IfVersion { .. } | WireOp::Version | WireOp::Batch(_)
            ) {
                return None;
            }
            w.op()
        })
        .collect()
}

/// The command an [`Op::IfVersion`] guards (`None` if it does not decode, or is itself a guard
/// or a version read: one check per command, or one batch of them).
pub fn guarded(then: &[u8]) -> Option<Op<'_>> {
    let w: WireOp<'_> = postcard::from_bytes(then).ok()?;
    // Refused before it is decoded further: a guard nested in guards must not recurse.
    if matches!(w, WireOp::IfVersion { .. } | WireOp::Version) {
        return None;
    }
    w.op()
}

/// The name of each [`Request`] by its wire tag, in declaration order (for spans and logs).
pub const REQUEST_NAMES: [&str; 24] = [
    "ping",
    "exec",
    "put",
    "fetch",
    "keys",
    "count",
    "randomkey",
    "dump",
    "flush",
    "prepare",
    "merge",
    "tree",
    "buckets",
    "list",
    "pull",
    "status",
    "forget",
    "settings",
    "put_settings",
    "publish",
    "digests",
    "exec_group",
    "prepare_group",
    "put_group",
];

/// The name of the request a message body carries (`"unknown"` if it does not decode), read
/// from its tag without decoding the rest.
pub fn request_name(body: &[u8]) -> &'static str {
    postcard::take_from_bytes::<(crate::wire::Envelope, u32)>(body)
        .ok()
        .and_then(|((_, tag), _)| REQUEST_NAMES.get(tag as usize).copied())
        .unwrap_or("unknown")
}

/// A request from one node to another (frame kind `Request`; the reply has the same id). Tags
/// are the variants' positions ([`Request::tag`]), append-only, pinned by golden-bytes tests.
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
        op: WireOp<'a>,
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
    /// Keys of database `db` in these slots (matching `pattern`, all if `None`), without their
    /// database. Answered with [`Response::Keys`].
    Keys {
        /// Slots to list, ascending.
        slots: Vec<u16>,
        /// Glob pattern.
        #[serde(borrow)]
        pattern: Option<&'a [u8]>,
        /// The database ([`crate::db`]).
        db: u8,
    },
    /// How many keys of database `db` these slots hold. Answered with [`Response::Count`].
    Count {
        /// Slots to count.
        slots: Vec<u16>,
        /// The database.
        db: u8,
    },
    /// A random key of database `db` on this node, without its database. Answered with
    /// [`Response::Key`].
    RandomKey {
        /// The database.
        db: u8,
    },
    /// Every key's state in these slots, tombstones included (anti-entropy copies a slot whole
    /// when it holds nothing of it), in pages: whole slots, from the first, until about `budget`
    /// bytes. Answered with [`Response::Dump`] or [`Response::NotLive`].
    Dump {
        /// Slots to copy.
        slots: Vec<u16>,
        /// Bytes per page (at least one whole slot is sent).
        budget: u64,
    },
    /// Remove every key and tombstone older than `horizon` (FLUSHALL), or only those of database
    /// `db` (FLUSHDB). Answered with [`Response::Done`].
    Flush {
        /// The flush's version: anything older is gone, on this node and in what it receives.
        horizon: Version,
        /// FLUSHDB's database (`None`: FLUSHALL).
        db: Option<u8>,
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
    /// Store each of these states that is newer than what is held (hint replay, an anti-entropy
    /// push). Answered with [`Response::Merged`].
    Merge {
        /// Keys and their states, tombstones included.
        entries: Vec<(Bytes, State)>,
    },
    /// Anti-entropy: the hashes of these nodes of the Merkle tree over the slots the sender and
    /// this node both replicate ([`crate::repair::Tree`]). Answered with [`Response::Hashes`]
    /// or [`Response::NotLive`].
    Tree {
        /// The level (0: slot digests, [`crate::repair::TREE_LEVELS`]` - 1`: the root).
        level: u8,
        /// Node indexes at that level, ascending.
        nodes: Vec<u32>,
    },
    /// Anti-entropy: each slot's key count and bucket digests ([`crate::repair::BUCKETS`] per
    /// slot). Answered with [`Response::Buckets`].
    Buckets {
        /// The slots.
        slots: Vec<u16>,
    },
    /// Anti-entropy: the key and version of every entry (tombstones included) in these buckets,
    /// in pages of about `budget` bytes (whole buckets). Answered with [`Response::Listed`].
    List {
        /// `(slot, bucket)` pairs.
        items: Vec<(u16, u8)>,
        /// Bytes per page (at least one whole bucket is sent).
        budget: u64,
    },
    /// Anti-entropy: the states of these keys, in pages of about `budget` bytes (at least one
    /// key). Answered with [`Response::Entries`].
    Pull {
        /// The keys.
        keys: Vec<Bytes>,
        /// Bytes per page.
        budget: u64,
    },
    /// Liveness check that also asks how the node stands (the heartbeat). Answered with
    /// [`Response::Status`].
    Status,
    /// `HC.FORGET`: forget member `id` (it is gone for good). Answered with [`Response::Done`].
    Forget {
        /// The member's node id.
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
    /// The cluster-wide settings' entries ([`crate::settings`]): answered with
    /// [`Response::Settings`].
    Settings,
    /// A change to entries of a cluster-wide settings document: keep each that is newer.
    /// Answered with [`Response::Done`].
    PutSettings {
        /// Which document ([`crate::settings::Doc`]).
        doc: u8,
        /// The entries changed: name, version, body (`None`: removed).
        entries: Vec<crate::settings::Entry>,
    },
    /// `PUBLISH` through another member: deliver to this node's subscribers. Not answered (the
    /// sender does not wait).
    Publish {
        /// The channel.
        channel: Bytes,
        /// The message.
        message: Bytes,
    },
    /// Anti-entropy: the digest of each of these slots, as maintained by the store (xor of
    /// every entry's key-and-version hash, tombstones included): a transfer round compares the
    /// slots another round filled first this way before walking their buckets. Answered with
    /// [`Response::Digests`] or [`Response::NotLive`].
    Digests {
        /// The slots.
        slots: Vec<u16>,
    },
    /// A transaction's commands on several keys of one slot, forwarded to the slot's
    /// coordinator, which runs them as one round ([`crate::group`]). Answered with
    /// [`Response::Outcome`] (an `Outcome::Batch`, or `Outcome::Changed` when a watched key
    /// changed), [`Response::WrittenGroup`] or [`Response::NoReplicas`].
    ExecGroup {
        /// The keys, distinct, all of one slot.
        #[serde(borrow)]
        keys: Vec<&'a [u8]>,
        /// The commands ([`group_bytes`]).
        #[serde(borrow)]
        ops: &'a [u8],
        /// Watched keys (by index in `keys`) and the version `WATCH` saw.
        expect: Vec<(u16, Option<Version>)>,
        /// Write level.
        write: Level,
        /// Answer with the keys' new states (the sender is a replica).
        want_state: bool,
        /// `ops` is a program the coordinator's driver runs (a script), not commands
        /// ([`crate::group::Group::external`]).
        external: bool,
    },
    /// The read round of a transaction on several keys of one slot: [`Request::Prepare`] of
    /// every key with one ballot, all or none ([`crate::store::Store::prepare_group`]).
    /// Answered with [`Response::States`], [`Response::Refused`] or [`Response::Syncing`].
    PrepareGroup {
        /// The keys.
        #[serde(borrow)]
        keys: Vec<&'a [u8]>,
        /// The round's ballot: the version its writes will carry.
        ballot: Version,
    },
    /// The write round of a transaction on several keys of one slot: [`Request::Put`] of every
    /// entry, all or none ([`crate::store::Store::offer_group`]). Answered with
    /// [`Response::Stored`], [`Response::Refused`] or [`Response::Syncing`].
    PutGroup {
        /// Keys and their new states.
        entries: Vec<(Bytes, State)>,
    },
}

/// The commands of a transaction on several keys of one slot ([`Request::ExecGroup`]): each
/// command's key (an index in the round's keys) and its operation's wire form ([`guard_bytes`]),
/// in order.
pub fn group_bytes(ops: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let parts: Vec<(u16, &[u8])> = ops.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    postcard::to_allocvec(&parts).unwrap_or_default()
}

/// The commands of [`group_bytes`] for a round on `keys` keys (`None` if one does not decode,
/// names a key out of range, or is a batch, a guard or a version read, or there are none or
/// more than [`MAX_BATCH`]).
pub fn grouped(bytes: &[u8], keys: usize) -> Option<Vec<(usize, Op<'_>)>> {
    let parts: Vec<(u16, &[u8])> = postcard::from_bytes(bytes).ok()?;
    if parts.is_empty() || parts.len() > MAX_BATCH {
        return None;
    }
    parts
        .into_iter()
        .map(|(k, p)| {
            let k = usize::from(k);
            if k >= keys {
                return None;
            }
            let op = guarded(p)?;
            if matches!(op, Op::IfVersion { .. } | Op::Version | Op::Batch(_)) {
                return None;
            }
            Some((k, op))
        })
        .collect()
}

impl Request<'_> {
    /// The message's tag on the wire (its first body byte after the envelope).
    pub fn tag(&self) -> u8 {
        match self {
            Request::Ping => 0,
            Request::Exec { .. } => 1,
            Request::Put { .. } => 2,
            Request::Fetch { .. } => 3,
            Request::Keys { .. } => 4,
            Request::Count { .. } => 5,
            Request::RandomKey { .. } => 6,
            Request::Dump { .. } => 7,
            Request::Flush { .. } => 8,
            Request::Prepare { .. } => 9,
            Request::Merge { .. } => 10,
            Request::Tree { .. } => 11,
            Request::Buckets { .. } => 12,
            Request::List { .. } => 13,
            Request::Pull { .. } => 14,
            Request::Status => 15,
            Request::Forget { .. } => 16,
            Request::Settings => 17,
            Request::PutSettings { .. } => 18,
            Request::Publish { .. } => 19,
            Request::Digests { .. } => 20,
            Request::ExecGroup { .. } => 21,
            Request::PrepareGroup { .. } => 22,
            Request::PutGroup { .. } => 23,
        }
    }
}

/// Entries (keys and their states, tombstones included) packed one after the other in one
/// buffer, each as the postcard encoding of `(key, State)`: a page of a slot copy
/// ([`Response::Dump`]). A transfer moves every key of a slot this way, so neither side spends
/// an allocation per entry: the sender writes entries straight from its store ([`Packer`]),
/// the receiver reads keys and values as slices of the page ([`Packed::entries`]). On the wire:
/// the entry count, then the buffer as one byte string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    count: u32,
    buf: Bytes,
}

/// A key or value written and read as a byte string that borrows from its input (serde's own
/// `&[u8]` would write it byte by byte; the encoding is the same).
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Raw<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Raw<'a>, E> {
                Ok(Raw(v))
            }
        }
        d.deserialize_bytes(V(std::marker::PhantomData))
    }
}

/// [`State`] with its value borrowed: same variants, same fields, in the same order, so the
/// same encoding (a unit test compares them).
#[derive(Serialize, Deserialize)]
enum StateRef<'a> {
    Missing,
    Dead(Version),
    Live {
        #[serde(borrow)]
        value: Raw<'a>,
        expire_at: u64,
        version: Version,
        enc: u8,
    },
}

/// Builds a [`Packed`] page.
#[derive(Debug, Default)]
pub struct Packer {
    count: u32,
    buf: Vec<u8>,
}

impl Packer {
    /// An empty page with room for about `bytes`.
    pub fn with_capacity(bytes: usize) -> Packer {
        Packer {
            count: 0,
            buf: Vec::with_capacity(bytes),
        }
    }

    fn push(&mut self, key: &[u8], state: StateRef<'_>) {
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(&(Raw(key), state), buf)
            .expect("serializing to memory cannot fail");
        self.count += 1;
    }

    /// Adds a live entry.
    pub fn live(&mut self, key: &[u8], value: &[u8], expire_at: u64, version: Version, enc: u8) {
        let value = Raw(value);
        self.push(
            key,
            StateRef::Live {
                value,
                expire_at,
                version,
                enc,
            },
        );
    }

    /// Adds a tombstone.
    pub fn dead(&mut self, key: &[u8], version: Version) {
        self.push(key, StateRef::Dead(version));
    }

    /// Bytes packed so far.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The page.
    pub fn finish(self) -> Packed {
        Packed {
            count: self.count,
            buf: Bytes::from(self.buf),
        }
    }
}

impl Packed {
    /// Entries in the page.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether the page holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries in order, keys and values as slices of the page; an error for a page that
    /// does not decode (then nothing after it is read).
    pub fn entries(&self) -> impl Iterator<Item = Result<(Bytes, State), postcard::Error>> + '_ {
        let mut rest: &[u8] = &self.buf;
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return (!rest.is_empty()).then(|| {
                    rest = &[];
                    Err(postcard::Error::DeserializeBadEncoding)
                });
            }
            left -= 1;
            match postcard::take_from_bytes::<(Raw<'_>, StateRef<'_>)>(rest) {
                Ok(((key, state), tail)) => {
                    rest = tail;
                    let state = match state {
                        StateRef::Missing => State::Missing,
                        StateRef::Dead(v) => State::Dead(v),
                        StateRef::Live {
                            value,
                            expire_at,
                            version,
                            enc,
                        } => State::Live {
                            value: self.buf.slice_ref(value.0),
                            expire_at,
                            version,
                            enc,
                        },
                    };
                    Some(Ok((self.buf.slice_ref(key.0), state)))
                }
                Err(e) => {
                    left = 0;
                    rest = &[];
                    Some(Err(e))
                }
            }
        })
    }
}

impl FromIterator<(Bytes, State)> for Packed {
    fn from_iter<I: IntoIterator<Item = (Bytes, State)>>(it: I) -> Packed {
        let mut p = Packer::default();
        for (k, s) in it {
            match s {
                State::Missing => p.push(&k, StateRef::Missing),
                State::Dead(v) => p.dead(&k, v),
                State::Live {
                    value,
                    expire_at,
                    version,
                    enc,
                } => p.live(&k, &value, expire_at, version, enc),
            }
        }
        p.finish()
    }
}

/// The reply to a [`Request`]. Tags are the variants' positions ([`Response::tag`]),
/// append-only, pinned by golden-bytes tests.
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
        entries: Packed,
        /// How many of the requested slots this page covers (the rest: ask again).
        slots: u32,
    },
    /// To [`Request::Fetch`] or [`Request::Prepare`] from a node whose copy of the key's slot is
    /// still catching up after a start: its answer would not be trustworthy, so it counts as no
    /// answer.
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
    /// To [`Request::Merge`]: how many entries were stored, and how many were not (older than
    /// what is held, or refused for memory).
    Merged {
        /// Entries stored.
        stored: u32,
        /// Entries not stored.
        skipped: u32,
    },
    /// To [`Request::Tree`]: one hash per requested node.
    Hashes(Vec<u64>),
    /// To [`Request::Buckets`]: per slot, its entry count, and its bucket digests
    /// (`BUCKETS` per slot, slot after slot).
    Buckets {
        /// Entries per slot, tombstones included.
        counts: Vec<u32>,
        /// Bucket digests.
        digests: Vec<u64>,
    },
    /// A page of a [`Request::List`]: the entries of the request's first `items` buckets.
    Listed {
        /// Keys and versions.
        entries: Vec<(Bytes, Version)>,
        /// How many of the requested buckets this page covers.
        items: u32,
    },
    /// A page of a [`Request::Pull`]: the states held of its first `keys` keys (keys held
    /// nowhere are left out).
    Entries {
        /// Keys and states.
        entries: Vec<(Bytes, State)>,
        /// How many of the requested keys this page covers.
        keys: u32,
    },
    /// To [`Request::Status`].
    Status {
        /// Slots still catching up (since the start or a ring change).
        catching_up: u32,
        /// The digest of the ring set the node works with ([`crate::ring::Ring::digest`]):
        /// members that agree on the ring report the same.
        ring: u64,
        /// The digest of each cluster-wide settings document it holds
        /// ([`crate::settings`]): a node whose digest differs pulls the entries.
        settings: Vec<(u8, u64)>,
        /// The flush horizons it holds ([`crate::store::Store::horizons`]: `None` for
        /// FLUSHALL's, database n's FLUSHDB's; only those set): a node that missed a flush runs
        /// it ([`crate::store::Store::claim_missed_flushes`]).
        horizons: Vec<(Option<u8>, u64)>,
    },
    /// To [`Request::Settings`]: every entry held (removals included), by document.
    Settings(Vec<(u8, Vec<crate::settings::Entry>)>),
    /// To [`Request::Digests`]: each slot's digest, in the order asked.
    Digests(Vec<u64>),
    /// To [`Request::PrepareGroup`]: each key's state, in the order asked.
    States(Vec<State>),
    /// A transaction's outcome and its keys' new states (to a [`Request::ExecGroup`] with
    /// `want_state`).
    WrittenGroup {
        /// The transaction's outcome.
        outcome: WireOutcome,
        /// The keys it wrote and their new states.
        entries: Vec<(Bytes, State)>,
    },
}

impl Response {
    /// The message's tag on the wire (its first body byte after the envelope).
    pub fn tag(&self) -> u8 {
        match self {
            Response::Pong => 0,
            Response::Outcome(_) => 1,
            Response::Written { .. } => 2,
            Response::NoReplicas { .. } => 3,
            Response::Stored => 4,
            Response::State(_) => 5,
            Response::Keys { .. } => 6,
            Response::Count(_) => 7,
            Response::Key(_) => 8,
            Response::Dump { .. } => 9,
            Response::Syncing => 10,
            Response::Done => 11,
            Response::Error(_) => 12,
            Response::Refused(_) => 13,
            Response::NotLive => 14,
            Response::Merged { .. } => 15,
            Response::Hashes(_) => 16,
            Response::Buckets { .. } => 17,
            Response::Listed { .. } => 18,
            Response::Entries { .. } => 19,
            Response::Status { .. } => 20,
            Response::Settings { .. } => 21,
            Response::Digests(_) => 22,
            Response::States(_) => 23,
            Response::WrittenGroup { .. } => 24,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ExpiryChange, SetCond};
    use crate::wire::{from_body, to_body};

    /// A packed page gives back what was packed, keys and values as slices of the page; each
    /// entry is encoded exactly as `(key, State)` would be.
    #[test]
    fn a_packed_page_gives_back_its_entries() {
        let v = Version { hlc: 77, origin: 3 };
        let entries = vec![
            (
                Bytes::from_static(b"a"),
                State::Live {
                    value: Bytes::from_static(b"one"),
                    expire_at: 123_456,
                    version: v,
                    enc: 2,
                },
            ),
            (Bytes::from_static(b""), State::Dead(v)),
            (Bytes::from_static(b"missing"), State::Missing),
            (
                Bytes::from(vec![0u8; 300]),
                State::Live {
                    value: Bytes::new(),
                    expire_at: 0,
                    version: v,
                    enc: 0,
                },
            ),
        ];
        let packed: Packed = entries.iter().cloned().collect();
        assert_eq!(packed.len(), 4);
        let mut expected = Vec::new();
        for e in &entries {
            expected.extend(postcard::to_allocvec(e).unwrap());
        }
        assert_eq!(&packed.buf[..], &expected[..]);
        let back: Vec<(Bytes, State)> = packed.entries().map(Result::unwrap).collect();
        assert_eq!(back, entries);
        // Through the wire.
        let r = Response::Dump {
            entries: packed,
            slots: 2,
        };
        let Response::Dump { entries: p, slots } = from_body(&to_body(&r)).unwrap() else {
            panic!("a dump")
        };
        assert_eq!(slots, 2);
        assert_eq!(p.entries().collect::<Result<Vec<_>, _>>().unwrap(), entries);
    }

    /// A page that does not decode ends its entries with an error: cut short, with bytes left
    /// over, or with an entry count larger than its entries.
    #[test]
    fn a_malformed_page_ends_with_an_error() {
        let good: Packed = [(
            Bytes::from_static(b"k"),
            State::Dead(Version { hlc: 1, origin: 1 }),
        )]
        .into_iter()
        .collect();
        let cut = Packed {
            count: 1,
            buf: good.buf.slice(..good.buf.len() - 1),
        };
        assert!(cut.entries().any(|e| e.is_err()));
        let longer = Packed {
            count: 1,
            buf: [&good.buf[..], b"x"].concat().into(),
        };
        let r: Vec<_> = longer.entries().collect();
        assert_eq!(r.len(), 2);
        assert!(r[0].is_ok() && r[1].is_err());
        let more = Packed {
            count: 2,
            buf: good.buf.clone(),
        };
        let r: Vec<_> = more.entries().collect();
        assert!(r[0].is_ok() && r[1].is_err());
        let wild = Packed {
            count: 1,
            buf: Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        };
        assert!(wild.entries().all(|e| e.is_err()));
    }

    #[test]
    fn requests_roundtrip_borrowing_their_bytes() {
        let reqs = [
            Request::Exec {
                key: b"k",
                op: (&Op::Set {
                    value: b"v",
                    cond: SetCond::IfMissing,
                    expiry: ExpiryChange::At(5),
                    get: true,
                })
                    .into(),
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
                db: 3,
            },
            Request::Flush {
                horizon: Version { hlc: 1, origin: 2 },
                db: Some(4),
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

    type Goldens<T> = Vec<(T, &'static str)>;

    /// One of every message, each with its golden bytes (hex of the whole body: envelope, tag,
    /// fields). A change here is a change of the protocol: bump `wire::VERSION` and say so.
    fn every_message() -> (Goldens<Request<'static>>, Goldens<Response>) {
        let v = Version {
            hlc: 0x0102_0304_0506,
            origin: 0x0a0b_0c0d,
        };
        let live = State::Live {
            value: Bytes::from_static(b"val"),
            expire_at: 1_700_000_000_000,
            version: v,
            enc: 2,
        };
        let requests = vec![
            (Request::Ping, "000000"),
            (
                Request::Exec {
                    key: b"k",
                    op: (&Op::Set {
                        value: b"v",
                        cond: SetCond::IfMissing,
                        expiry: ExpiryChange::At(5),
                        get: true,
                    })
                        .into(),
                    read: Level::Quorum,
                    write: Level::All,
                    want_state: true,
                },
                "000001016b01017601020501010201",
            ),
            (
                Request::Exec {
                    key: b"c",
                    op: (&Op::IncrBy(-3)).into(),
                    read: Level::One,
                    write: Level::Quorum,
                    want_state: false,
                },
                "00000101630405000100",
            ),
            (
                Request::Put {
                    key: b"k",
                    state: live.clone(),
                },
                "000002016b020376616c80d095ffbc31868a9098a0208d98ac5002",
            ),
            (Request::Fetch { key: b"k" }, "000003016b"),
            (
                Request::Keys {
                    slots: vec![1, 300],
                    pattern: Some(b"a*"),
                    db: 1,
                },
                "0000040201ac020102612a01",
            ),
            (
                Request::Count {
                    slots: vec![7],
                    db: 0,
                },
                "000005010700",
            ),
            (Request::RandomKey { db: 2 }, "00000602"),
            (
                Request::Dump {
                    slots: vec![0, 16383],
                    budget: 4 << 20,
                },
                "0000070200ff7f80808002",
            ),
            (
                Request::Flush {
                    horizon: v,
                    db: None,
                },
                "000008868a9098a0208d98ac5000",
            ),
            (
                Request::Prepare {
                    key: b"k",
                    ballot: v,
                },
                "000009016b868a9098a0208d98ac50",
            ),
            (
                Request::Merge {
                    entries: vec![(Bytes::from_static(b"k"), State::Dead(v))],
                },
                "00000a01016b01868a9098a0208d98ac50",
            ),
            (
                Request::Tree {
                    level: 4,
                    nodes: vec![0, 3],
                },
                "00000b04020003",
            ),
            (Request::Buckets { slots: vec![5] }, "00000c0105"),
            (
                Request::List {
                    items: vec![(5, 15)],
                    budget: 1 << 20,
                },
                "00000d01050f808040",
            ),
            (
                Request::Pull {
                    keys: vec![Bytes::from_static(b"k")],
                    budget: 1 << 20,
                },
                "00000e01016b808040",
            ),
            (Request::Status, "00000f"),
            (
                Request::Forget {
                    id: Cow::Borrowed("n1"),
                },
                "000010026e31",
            ),
            (Request::Settings, "000011"),
            (
                Request::PutSettings {
                    doc: 1,
                    entries: vec![
                        (
                            Bytes::from_static(b"a"),
                            v,
                            Some(Bytes::from_static(b"user a")),
                        ),
                        (Bytes::from_static(b"b"), v, None),
                    ],
                },
                "00001201020161868a9098a0208d98ac5001067573657220610162868a9098a0208d98ac5000",
            ),
            (
                Request::Publish {
                    channel: Bytes::from_static(b"ch"),
                    message: Bytes::from_static(b"hi"),
                },
                "000013026368026869",
            ),
            (
                Request::Digests {
                    slots: vec![1, 300],
                },
                "0000140201ac02",
            ),
            (
                Request::ExecGroup {
                    keys: vec![b"{t}a", b"{t}b"],
                    ops: b"ops",
                    expect: vec![(1, Some(v)), (0, None)],
                    write: Level::Quorum,
                    want_state: true,
                    external: false,
                },
                "00001502047b747d61047b747d62036f7073020101868a9098a0208d98ac500000010100",
            ),
            (
                Request::PrepareGroup {
                    keys: vec![b"{t}a", b"{t}b"],
                    ballot: v,
                },
                "00001602047b747d61047b747d62868a9098a0208d98ac50",
            ),
            (
                Request::PutGroup {
                    entries: vec![(Bytes::from_static(b"{t}a"), State::Dead(v))],
                },
                "00001701047b747d6101868a9098a0208d98ac50",
            ),
        ];
        let responses = vec![
            (Response::Pong, "000000"),
            (Response::Outcome(Outcome::Int(42).into()), "0000010254"),
            (Response::Outcome(Outcome::Changed.into()), "00000108"),
            (
                Response::Outcome(Outcome::Version(Some(v)).into()),
                "0000010901868a9098a0208d98ac50",
            ),
            (
                Response::Written {
                    outcome: Outcome::Ok.into(),
                    state: State::Dead(v),
                },
                "0000020001868a9098a0208d98ac50",
            ),
            (Response::NoReplicas { write: true }, "00000301"),
            (Response::Stored, "000004"),
            (Response::State(State::Missing), "00000500"),
            (
                Response::Keys {
                    keys: vec![Bytes::from_static(b"a")],
                    examined: 9,
                },
                "00000601016109",
            ),
            (Response::Count(5), "00000705"),
            (
                Response::Key(Some(Bytes::from_static(b"k"))),
                "00000801016b",
            ),
            (
                Response::Dump {
                    entries: [(Bytes::from_static(b"k"), live)].into_iter().collect(),
                    slots: 1,
                },
                "0000090118016b020376616c80d095ffbc31868a9098a0208d98ac500201",
            ),
            (Response::Syncing, "00000a"),
            (Response::Done, "00000b"),
            (Response::Error("no".into()), "00000c026e6f"),
            (Response::Refused(v), "00000d868a9098a0208d98ac50"),
            (Response::NotLive, "00000e"),
            (
                Response::Merged {
                    stored: 2,
                    skipped: 1,
                },
                "00000f0201",
            ),
            (
                Response::Hashes(vec![1, u64::MAX]),
                "0000100201ffffffffffffffffff01",
            ),
            (
                Response::Buckets {
                    counts: vec![3],
                    digests: vec![9],
                },
                "00001101030109",
            ),
            (
                Response::Listed {
                    entries: vec![(Bytes::from_static(b"k"), v)],
                    items: 1,
                },
                "00001201016b868a9098a0208d98ac5001",
            ),
            (
                Response::Entries {
                    entries: vec![(Bytes::from_static(b"k"), State::Dead(v))],
                    keys: 2,
                },
                "00001301016b01868a9098a0208d98ac5002",
            ),
            (
                Response::Status {
                    catching_up: 300,
                    ring: 5,
                    settings: vec![(1, 5)],
                    horizons: vec![(None, 7), (Some(3), 9)],
                },
                "000014ac0205010105020007010309",
            ),
            (
                Response::Settings(vec![(
                    1,
                    vec![(
                        Bytes::from_static(b"a"),
                        v,
                        Some(Bytes::from_static(b"user a")),
                    )],
                )]),
                "0000150101010161868a9098a0208d98ac500106757365722061",
            ),
            (Response::Digests(vec![5, 300]), "0000160205ac02"),
            (
                Response::States(vec![State::Missing, State::Dead(v)]),
                "000017020001868a9098a0208d98ac50",
            ),
            (
                Response::WrittenGroup {
                    outcome: Outcome::Int(3).into(),
                    entries: vec![(Bytes::from_static(b"k"), State::Dead(v))],
                },
                "000018020601016b01868a9098a0208d98ac50",
            ),
        ];
        (requests, responses)
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn every_message_has_its_golden_bytes_and_tag() {
        let (requests, responses) = every_message();
        let mut wrong = Vec::new();
        for (r, golden) in &requests {
            let body = to_body(r);
            // The envelope (epoch 0, no trace) is two bytes; the tag follows.
            assert_eq!(body[2], r.tag(), "{r:?}");
            if hex(&body) != *golden {
                wrong.push(format!("{r:?}: {}", hex(&body)));
            }
            assert_eq!(&from_body::<Request<'_>>(&body).unwrap(), r);
        }
        for (r, golden) in &responses {
            let body = to_body(r);
            assert_eq!(body[2], r.tag(), "{r:?}");
            if hex(&body) != *golden {
                wrong.push(format!("{r:?}: {}", hex(&body)));
            }
            assert_eq!(&from_body::<Response>(&body).unwrap(), r);
        }
        assert!(wrong.is_empty(), "bytes changed:\n{}", wrong.join("\n"));
        // Tags are distinct and dense.
        let tags: Vec<u8> = requests.iter().map(|(r, _)| r.tag()).collect();
        assert!((0..24).all(|t| tags.contains(&t)));
        let tags: Vec<u8> = responses.iter().map(|(r, _)| r.tag()).collect();
        assert!((0..25).all(|t| tags.contains(&t)));
    }

    #[test]
    fn every_operation_crosses_the_wire_unchanged() {
        use crate::bits::{FieldKind, FieldOp, Overflow};
        use crate::op::ExpireCond;
        let guard = guard_bytes(&Op::IncrBy(-3));
        let batch = batch_bytes(&[guard.clone(), guard_bytes(&Op::Persist)]);
        let mut prog = Vec::new();
        FieldOp {
            kind: FieldKind::IncrBy(-2),
            overflow: Overflow::Sat,
            signed: true,
            bits: 5,
            offset: 100,
        }
        .encode(&mut prog);
        let ops = [
            Op::Get,
            Op::set(b"v"),
            Op::GetDel,
            Op::GetEx(ExpiryChange::Keep),
            Op::IncrBy(-1),
            Op::IncrByFloat(b"1.5"),
            Op::Append(b"x"),
            Op::Strlen,
            Op::GetRange(-3, 9),
            Op::SetRange(4, b"yy"),
            Op::Del,
            Op::Exists,
            Op::Touch,
            Op::Type,
            Op::Expire {
                at: -5,
                cond: ExpireCond {
                    nx: false,
                    xx: true,
                    gt: false,
                    lt: true,
                },
            },
            Op::Ttl { ms: true },
            Op::ExpireTime { ms: false },
            Op::Persist,
            Op::ObjectEncoding,
            Op::ObjectIdleTime,
            Op::ObjectFreq,
            Op::ObjectRefcount,
            Op::SetBit {
                offset: 9,
                on: true,
            },
            Op::GetBit(70),
            Op::BitCount(BitSpan::Bits(-3, Some(12))),
            Op::BitPos {
                bit: false,
                span: BitSpan::Invalid(OpError::Syntax),
            },
            Op::BitField(&prog),
            Op::StoreBitOp(b"\x0f"),
            Op::IfVersion {
                expect: Some(Version { hlc: 5, origin: 6 }),
                then: &guard,
            },
            Op::Version,
            Op::Batch(&batch),
        ];
        for (i, op) in ops.iter().enumerate() {
            let w = WireOp::from(op);
            let body = to_body(&w);
            assert_eq!(usize::from(body[2]), i, "{op:?} has tag {i}");
            assert_eq!(from_body::<WireOp<'_>>(&body).unwrap().op(), Some(*op));
        }
        let bad = WireOp::Set {
            value: b"v",
            cond: 3,
            expiry: WireExpiry::Clear,
            get: false,
        };
        assert_eq!(bad.op(), None, "an out-of-range condition is refused");
        let mut unsigned64 = prog.clone();
        unsigned64[2..4].copy_from_slice(&[0, 64]);
        let bad = WireOp::BitField(&unsigned64);
        assert_eq!(bad.op(), None, "a u64 field is refused");
        // A guard guards one command: a guard or a version read inside one is refused, without
        // decoding what is nested deeper.
        let nested = guard_bytes(&Op::IfVersion {
            expect: None,
            then: &guard,
        });
        let bad = WireOp::IfVersion {
            expect: None,
            then: &nested,
        };
        assert_eq!(bad.op(), None, "a nested guard is refused");
        let version = guard_bytes(&Op::Version);
        let bad = WireOp::IfVersion {
            expect: None,
            then: &version,
        };
        assert_eq!(bad.op(), None, "a guarded version read is refused");
        let bad = WireOp::IfVersion {
            expect: None,
            then: b"\xff\xff",
        };
        assert_eq!(bad.op(), None, "garbage is refused");
        assert_eq!(guarded(&guard), Some(Op::IncrBy(-3)));
        // A batch holds plain commands, in order; a guard may hold a batch.
        assert_eq!(batched(&batch), Some(vec![Op::IncrBy(-3), Op::Persist]));
        let guarded_batch = guard_bytes(&Op::Batch(&batch));
        assert_eq!(guarded(&guarded_batch), Some(Op::Batch(&batch)));
        for (inner, what) in [
            (guard_bytes(&Op::Batch(&batch)), "a batch in a batch"),
            (guard_bytes(&Op::Version), "a version read in a batch"),
            (
                guard_bytes(&Op::IfVersion {
                    expect: None,
                    then: &guard,
                }),
                "a guard in a batch",
            ),
            (b"\xff\xff".to_vec(), "garbage in a batch"),
        ] {
            let bad = batch_bytes(&[guard.clone(), inner]);
            assert_eq!(WireOp::Batch(&bad).op(), None, "{what} is refused");
        }
        assert_eq!(
            batched(&batch_bytes(&[])),
            None,
            "an empty batch is refused"
        );
        // The outcome crosses the wire without what each command did (kept where it ran).
        let out = Outcome::Batch(
            vec![Outcome::Int(1), Outcome::Err(OpError::NotInteger)],
            vec![Some(crate::notify::Change::Created), None],
        );
        let back: Outcome = from_body::<WireOutcome>(&to_body(&WireOutcome::from(out)))
            .unwrap()
            .into();
        assert_eq!(
            back,
            Outcome::Batch(
                vec![Outcome::Int(1), Outcome::Err(OpError::NotInteger)],
                Vec::new()
            )
        );
    }
}
