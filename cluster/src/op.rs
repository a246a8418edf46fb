//! Operations: what a key command does to one entry, as a pure function of the current entry.
//!
//! [`apply`] takes the entry (already checked for expiry: a missing key is `None`) and returns the
//! [`Effect`] on the store and the [`Outcome`] for the client. Read-modify-write commands are
//! therefore serialized by whoever holds the entry (the slot lock on one node, the coordinator in a
//! cluster), and replicas only ever receive resulting values.

use bytes::Bytes;

use crate::bits::{self, BitSpan};
use crate::entry::{num::parse_i64, EncodingHint, Entry, ACCESS_MASK};

use crate::float::{incr_by_float, FloatError};
use crate::version::Version;

/// The condition of a `SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SetCond {
    /// Always.
    #[default]
    Always,
    /// `NX`: only if the key does not exist.
    IfMissing,
    /// `XX`: only if it does.
    IfExists,
}

/// What a write does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ExpiryChange {
    /// Remove any expiry (plain `SET`, `GETEX PERSIST`).
    #[default]
    Clear,
    /// Keep the current expiry (`SET KEEPTTL`, or `GETEX` with no option).
    Keep,
    /// Expire at this unix millisecond (already validated as positive).
    At(u64),
}

/// The conditions of an `EXPIRE` (Redis checks each given flag in turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ExpireCond {
    /// `NX`: only if the key has no expiry.
    pub nx: bool,
    /// `XX`: only if it has one.
    pub xx: bool,
    /// `GT`: only if the new expiry is later (no expiry counts as infinite, so this fails).
    pub gt: bool,
    /// `LT`: only if the new expiry is earlier (no expiry counts as infinite, so this passes).
    pub lt: bool,
}

/// One operation on one key.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op<'a> {
    /// `GET`
    Get,
    /// `SET` and its relatives (`SETNX`, `SETEX`, `PSETEX`, `GETSET`).
    Set {
        /// New value.
        value: &'a [u8],
        /// `NX`/`XX`.
        cond: SetCond,
        /// `EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`.
        expiry: ExpiryChange,
        /// `GET`: reply with the old value.
        get: bool,
    },
    /// `GETDEL`
    GetDel,
    /// `GETEX`: `Keep` leaves the expiry, `Clear` is `PERSIST`, `At(ms)` sets it (a time in the
    /// past deletes the key after reading it).
    GetEx(ExpiryChange),
    /// `INCRBY` (and `INCR`, `DECR`, `DECRBY`).
    IncrBy(i64),
    /// `INCRBYFLOAT`, with the increment as the client sent it.
    IncrByFloat(&'a [u8]),
    /// `APPEND`
    Append(&'a [u8]),
    /// `STRLEN`
    Strlen,
    /// `GETRANGE start end`
    GetRange(i64, i64),
    /// `SETRANGE offset value` (offset already checked non-negative).
    SetRange(u64, &'a [u8]),
    /// `DEL`/`UNLINK` of one key.
    Del,
    /// `EXISTS` of one key (does not touch the access time).
    Exists,
    /// `TOUCH` of one key.
    Touch,
    /// `TYPE`
    Type,
    /// `EXPIRE` family with the absolute deadline in unix ms (may be in the past or negative).
    Expire {
        /// Absolute deadline, unix ms.
        at: i64,
        /// NX/XX/GT/LT.
        cond: ExpireCond,
    },
    /// `TTL` (`ms == false`) or `PTTL`.
    Ttl {
        /// Milliseconds rather than seconds.
        ms: bool,
    },
    /// `EXPIRETIME` or `PEXPIRETIME`.
    ExpireTime {
        /// Milliseconds rather than seconds.
        ms: bool,
    },
    /// `PERSIST`
    Persist,
    /// `OBJECT ENCODING`
    ObjectEncoding,
    /// `OBJECT IDLETIME` (seconds since last access; meaningful under LRU bookkeeping).
    ObjectIdleTime,
    /// `OBJECT FREQ` (the decayed LFU counter; meaningful under LFU bookkeeping).
    ObjectFreq,
    /// `OBJECT REFCOUNT`
    ObjectRefcount,
    /// `SETBIT offset value` (offset already checked against `proto-max-bulk-len`).
    SetBit {
        /// Bit offset.
        offset: u64,
        /// The new bit.
        on: bool,
    },
    /// `GETBIT offset`
    GetBit(u64),
    /// `BITCOUNT [range]`
    BitCount(BitSpan),
    /// `BITPOS bit [range]`
    BitPos {
        /// The bit looked for.
        bit: bool,
        /// The range.
        span: BitSpan,
    },
    /// `BITFIELD`/`BITFIELD_RO`: a program of [`bits::FieldOp`]s as [`bits::FieldOp::encode`]
    /// writes them.
    BitField(&'a [u8]),
    /// The result of `BITOP` stored at its destination: the value (raw encoding, no expiry), or
    /// the key deleted when the result is empty. Answers the result's length.
    StoreBitOp(&'a [u8]),
    /// The key's newest version (`None`: absent or expired): what `WATCH` remembers in a
    /// cluster. Answers [`Outcome::Version`].
    Version,
    /// `WATCH`'s check and a transaction's command as one read-modify-write: `then` runs only if
    /// the key's newest version is still `expect` (`None`: still absent); otherwise nothing
    /// changes and the answer is [`Outcome::Changed`]. Coordinated at QUORUM/ALL, the version is
    /// the newest of the round's quorum, and the round's promises keep any other
    /// read-modify-write from slipping in between the check and the write.
    IfVersion {
        /// The version `WATCH` saw.
        expect: Option<Version>,
        /// The command's operation in its wire form ([`crate::msg::guard_bytes`]).
        then: &'a [u8],
    },
    /// A transaction's commands on one key, applied in order as one operation: one
    /// read-modify-write round, so no other write to the key comes between them, and all of
    /// them or none take effect. Each command's errors are its own (the others still run), as in
    /// `EXEC`. Answers [`Outcome::Batch`]. The bytes are [`crate::msg::batch_bytes`]: never a
    /// batch, a guard or a version read inside.
    Batch(&'a [u8]),
}

/// An operation that owns its bytes (an [`Op`] borrows them): what a request that outlives the
/// client's buffer holds. Every operation borrows at most one byte string, kept here as
/// [`Bytes`] beside the operation's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct OpBuf {
    shape: Op<'static>,
    bytes: Bytes,
}

impl OpBuf {
    /// Copies `op`'s bytes (if any) once.
    pub fn new(op: &Op<'_>) -> OpBuf {
        let (shape, bytes): (Op<'static>, &[u8]) = match *op {
            Op::Set {
                value,
                cond,
                expiry,
                get,
            } => (
                Op::Set {
                    value: &[],
                    cond,
                    expiry,
                    get,
                },
                value,
            ),
            Op::IncrByFloat(b) => (Op::IncrByFloat(&[]), b),
            Op::Append(b) => (Op::Append(&[]), b),
            Op::SetRange(o, b) => (Op::SetRange(o, &[]), b),
            Op::BitField(b) => (Op::BitField(&[]), b),
            Op::StoreBitOp(b) => (Op::StoreBitOp(&[]), b),
            Op::IfVersion { expect, then } => (Op::IfVersion { expect, then: &[] }, then),
            Op::Batch(b) => (Op::Batch(&[]), b),
            Op::Version => (Op::Version, &[]),
            Op::SetBit { offset, on } => (Op::SetBit { offset, on }, &[]),
            Op::GetBit(o) => (Op::GetBit(o), &[]),
            Op::BitCount(sp) => (Op::BitCount(sp), &[]),
            Op::BitPos { bit, span } => (Op::BitPos { bit, span }, &[]),
            Op::Get => (Op::Get, &[]),
            Op::GetDel => (Op::GetDel, &[]),
            Op::GetEx(x) => (Op::GetEx(x), &[]),
            Op::IncrBy(n) => (Op::IncrBy(n), &[]),
            Op::Strlen => (Op::Strlen, &[]),
            Op::GetRange(a, b) => (Op::GetRange(a, b), &[]),
            Op::Del => (Op::Del, &[]),
            Op::Exists => (Op::Exists, &[]),
            Op::Touch => (Op::Touch, &[]),
            Op::Type => (Op::Type, &[]),
            Op::Expire { at, cond } => (Op::Expire { at, cond }, &[]),
            Op::Ttl { ms } => (Op::Ttl { ms }, &[]),
            Op::ExpireTime { ms } => (Op::ExpireTime { ms }, &[]),
            Op::Persist => (Op::Persist, &[]),
            Op::ObjectEncoding => (Op::ObjectEncoding, &[]),
            Op::ObjectIdleTime => (Op::ObjectIdleTime, &[]),
            Op::ObjectFreq => (Op::ObjectFreq, &[]),
            Op::ObjectRefcount => (Op::ObjectRefcount, &[]),
        };
        OpBuf {
            shape,
            bytes: Bytes::copy_from_slice(bytes),
        }
    }

    /// The operation, borrowing from `self`.
    pub fn op(&self) -> Op<'_> {
        let b = &self.bytes[..];
        match self.shape {
            Op::Set {
                cond, expiry, get, ..
            } => Op::Set {
                value: b,
                cond,
                expiry,
                get,
            },
            Op::IncrByFloat(_) => Op::IncrByFloat(b),
            Op::Append(_) => Op::Append(b),
            Op::SetRange(o, _) => Op::SetRange(o, b),
            Op::BitField(_) => Op::BitField(b),
            Op::StoreBitOp(_) => Op::StoreBitOp(b),
            Op::IfVersion { expect, .. } => Op::IfVersion { expect, then: b },
            Op::Batch(_) => Op::Batch(b),
            other => other,
        }
    }
}

impl<'a> Op<'a> {
    /// A plain `SET key value`: no condition, any expiry cleared, no `GET`.
    pub fn set(value: &'a [u8]) -> Op<'a> {
        Op::Set {
            value,
            cond: SetCond::Always,
            expiry: ExpiryChange::Clear,
            get: false,
        }
    }

    /// Whether the operation only reads (the access time aside): it can be served by any replica
    /// and needs no replication.
    pub fn is_read_only(&self) -> bool {
        // Every operation that does not even touch the access time only reads.
        match self {
            Op::BitField(prog) => {
                bits::decode_fields(prog).is_some_and(|ops| bits::highest_write(&ops).is_none())
            }
            // A transaction of reads is a read: one consistent look at the key, no round of
            // promises and no write-back.
            Op::Batch(b) => {
                crate::msg::batched(b).is_some_and(|ops| ops.iter().all(Op::is_read_only))
            }
            _ => {
                !self.touches()
                    || matches!(
                        self,
                        Op::Get
                            | Op::Strlen
                            | Op::GetRange(..)
                            | Op::Touch
                            | Op::GetBit(_)
                            | Op::BitCount(_)
                            | Op::BitPos { .. }
                    )
            }
        }
    }

    /// Whether the operation writes without reading the current entry (a plain `SET` without
    /// `NX`/`XX`/`GET`/`KEEPTTL`): any replica may coordinate it, since neither its result nor
    /// its reply depends on what the replica holds. `DEL` is not blind: it replies how many keys
    /// it removed.
    pub fn is_blind(&self) -> bool {
        match self {
            Op::Set {
                cond, expiry, get, ..
            } => *cond == SetCond::Always && !*get && *expiry != ExpiryChange::Keep,
            _ => false,
        }
    }

    /// Whether the operation describes one node's copy of the key rather than the key (OBJECT
    /// ENCODING, IDLETIME, FREQ, REFCOUNT: access bookkeeping differs between replicas). It reads
    /// at ONE whatever the level, so that it describes the copy the client's reads touch.
    pub fn describes_a_copy(&self) -> bool {
        matches!(
            self,
            Op::ObjectEncoding | Op::ObjectIdleTime | Op::ObjectFreq | Op::ObjectRefcount
        )
    }

    /// Whether the operation counts as an access for LRU bookkeeping (Redis's lookups without
    /// `LOOKUP_NOTOUCH`).
    pub fn touches(&self) -> bool {
        !matches!(
            self,
            Op::Exists
                | Op::Type
                | Op::Ttl { .. }
                | Op::ExpireTime { .. }
                | Op::ObjectEncoding
                | Op::ObjectIdleTime
                | Op::ObjectFreq
                | Op::ObjectRefcount
                | Op::Version
        )
    }
}

/// Context an operation runs in: time and limits, passed in rather than read.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Current unix time in ms.
    pub now: u64,
    /// Current LRU clock (unix seconds, wrapping at 2^32).
    pub lru: u32,
    /// Longest value a write may produce (`proto-max-bulk-len`).
    pub max_len: u64,
    /// What an entry's access field records.
    pub mode: AccessMode,
    /// A random number for this operation (LFU's probabilistic counter increment).
    pub rand: u32,
    /// Keys past their expiry count as live: the commands of the Redis primary a node
    /// replicates see what the primary saw (the primary expires its keys and sends `DEL`).
    pub keep_expired: bool,
}

/// What the 24-bit access field of an entry records, as in Redis: the LRU clock (seconds) under
/// LRU and non-LFU policies, or under LFU policies 16 bits of "last decrement time" in minutes and
/// an 8-bit logarithmic access counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessMode {
    /// LRU clock.
    #[default]
    Lru,
    /// LFU counter (`lfu-log-factor`, `lfu-decay-time` in minutes).
    Lfu {
        /// `lfu-log-factor`: how many hits it takes to saturate the counter.
        log_factor: u32,
        /// `lfu-decay-time`: minutes per counter decrement (0: never decays).
        decay_minutes: u32,
    },
}

/// Counter value of a new key under LFU (Redis's `LFU_INIT_VAL`).
pub const LFU_INIT: u32 = 5;

impl Ctx {
    /// A context at `now` (unix ms) with Redis's default 512 MB value limit, LRU bookkeeping.
    pub fn at(now: u64) -> Ctx {
        Ctx {
            now,
            lru: (now / 1000) as u32,
            max_len: 512 * 1024 * 1024,
            mode: AccessMode::Lru,
            rand: 0,
            keep_expired: false,
        }
    }

    fn minutes(&self) -> u32 {
        ((self.now / 60_000) & 0xFFFF) as u32
    }

    /// The access field of a key created now.
    pub fn initial_access(&self) -> u32 {
        match self.mode {
            AccessMode::Lru => self.lru & ACCESS_MASK,
            AccessMode::Lfu { .. } => (self.minutes() << 8) | LFU_INIT,
        }
    }

    /// The LFU counter of `access` after decay (Redis's `LFUDecrAndReturn`).
    pub fn lfu_counter(&self, access: u32) -> u32 {
        let (ldt, counter) = (access >> 8, access & 255);
        let AccessMode::Lfu { decay_minutes, .. } = self.mode else {
            return counter;
        };
        if decay_minutes == 0 {
            return counter;
        }
        let now = self.minutes();
        let elapsed = if now >= ldt {
            now - ldt
        } else {
            65535 - ldt + now
        };
        counter.saturating_sub(elapsed / decay_minutes)
    }

    /// The access field after one more access (Redis's `updateLFU`, or the LRU clock).
    pub fn touched(&self, access: u32) -> u32 {
        match self.mode {
            AccessMode::Lru => self.lru & ACCESS_MASK,
            AccessMode::Lfu { log_factor, .. } => {
                let mut counter = self.lfu_counter(access);
                if counter < 255 {
                    let base = counter.saturating_sub(LFU_INIT) as f64;
                    let p = 1.0 / (base * f64::from(log_factor) + 1.0);
                    if f64::from(self.rand) / f64::from(u32::MAX) < p {
                        counter += 1;
                    }
                }
                (self.minutes() << 8) | counter
            }
        }
    }

    /// Seconds since `access` under LRU bookkeeping (the 24-bit clock wraps, as Redis's does).
    pub fn idle_seconds(&self, access: u32) -> u32 {
        self.lru.wrapping_sub(access) & ACCESS_MASK
    }
}

/// An operation's error, turned into Redis's text by the server edge.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
pub enum OpError {
    /// The value is not an integer (INCR family). Nothing changed.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// The result would leave the `i64` range. Nothing changed.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// The value or increment is not a float. Nothing changed.
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// INCRBYFLOAT's result is NaN or infinite. Nothing changed.
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// The value would exceed `proto-max-bulk-len`. Nothing changed.
    #[error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")]
    TooLong,
    /// A range argument is malformed (BITCOUNT, BITPOS: Redis reports it once the key exists).
    #[error("ERR syntax error")]
    Syntax,
}

/// What an operation answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `+OK`
    Ok,
    /// Null bulk string.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Value(Bytes),
    /// A status reply (`TYPE`'s `string`/`none`).
    Status(&'static str),
    /// A bulk string from static text (`OBJECT ENCODING`).
    Text(&'static str),
    /// An error; nothing changed.
    Err(OpError),
    /// `BITFIELD`'s replies: one integer per subcommand, nil for an overflow under `FAIL`.
    Fields(Vec<Option<i64>>),
    /// [`Op::IfVersion`]: the key changed since its version was taken; nothing was done.
    Changed,
    /// [`Op::Version`]: the key's newest version (`None`: absent).
    Version(Option<Version>),
    /// [`Op::Batch`]: each command's outcome, and what it did to the key (for its keyspace
    /// events, known where the batch ran; empty in an outcome received from another node).
    Batch(Vec<Outcome>, Vec<Option<crate::notify::Change>>),
}

impl Outcome {
    /// The static texts a `Status` or `Text` outcome can carry, so that an outcome received from
    /// another node maps back to them (unknown text reads as `"unknown"`).
    pub fn static_text(s: &str) -> &'static str {
        const KNOWN: [&str; 6] = ["string", "none", "int", "embstr", "raw", "OK"];
        KNOWN
            .iter()
            .find(|k| **k == s)
            .copied()
            .unwrap_or("unknown")
    }
}

/// What an operation did to the store.
#[derive(Debug)]
pub enum Effect {
    /// Nothing changed (beyond the access time).
    None,
    /// The key was missing and now holds this entry.
    Created(Entry),
    /// The existing entry was changed in place (value and/or expiry).
    Modified,
    /// The key is to be removed.
    Deleted,
}

fn value_of(e: Option<&mut Entry>) -> Outcome {
    match e {
        Some(e) => Outcome::Value(Bytes::copy_from_slice(e.value())),
        None => Outcome::Nil,
    }
}

fn int_value(e: &Option<&mut Entry>) -> Result<i64, OpError> {
    match e {
        Some(e) => parse_i64(e.value()).ok_or(OpError::NotInteger),
        None => Ok(0),
    }
}

/// Writes `value` with `expire_at` over `cur`, or creates the key.
fn put(
    cur: Option<&mut Entry>,
    key: &[u8],
    value: &[u8],
    expire_at: u64,
    enc: EncodingHint,
    ctx: &Ctx,
) -> Effect {
    match cur {
        Some(e) => {
            e.set_value(value, expire_at, enc);
            Effect::Modified
        }
        None => Effect::Created(Entry::new(key, value, expire_at, ctx.initial_access(), enc)),
    }
}

/// [`Op::Batch`]: applies `ops` in order to a copy of the entry, and the result to the entry.
fn apply_batch(
    ops: &[Op<'_>],
    key: &[u8],
    cur: Option<&mut Entry>,
    ctx: &Ctx,
) -> (Effect, Outcome) {
    use crate::notify::Change;
    let mut scratch: Option<Entry> = cur.as_deref().cloned();
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut changes = Vec::with_capacity(ops.len());
    let mut changed = false;
    for op in ops {
        let existed = scratch.is_some();
        let (effect, out) = apply(op, key, scratch.as_mut(), ctx);
        let change = match effect {
            Effect::None => None,
            Effect::Created(e) => {
                scratch = Some(e);
                Some(Change::Created)
            }
            Effect::Modified => Some(Change::Modified),
            Effect::Deleted => {
                scratch = None;
                existed.then_some(Change::Deleted)
            }
        };
        changed |= change.is_some();
        outcomes.push(out);
        changes.push(change);
    }
    let effect = match (changed, cur, scratch) {
        (false, _, _) | (true, None, None) => Effect::None,
        (true, Some(c), Some(s)) => {
            *c = s;
            Effect::Modified
        }
        (true, Some(_), None) => Effect::Deleted,
        (true, None, Some(s)) => Effect::Created(s),
    };
    (effect, Outcome::Batch(outcomes, changes))
}

/// Applies `op` to `key`, whose current live entry is `cur` (`None` if missing or expired).
pub fn apply(op: &Op<'_>, key: &[u8], mut cur: Option<&mut Entry>, ctx: &Ctx) -> (Effect, Outcome) {
    if op.touches() {
        if let Some(e) = cur.as_deref_mut() {
            e.set_access(ctx.touched(e.access()));
        }
    }
    match *op {
        Op::Get => (Effect::None, value_of(cur)),
        Op::Version => (Effect::None, Outcome::Version(cur.map(|e| e.version()))),
        Op::IfVersion { expect, then } => {
            let Some(inner) = crate::msg::guarded(then) else {
                return (Effect::None, Outcome::Err(OpError::Syntax));
            };
            if cur.as_ref().map(|e| e.version()) != expect {
                return (Effect::None, Outcome::Changed);
            }
            apply(&inner, key, cur, ctx)
        }
        Op::Batch(bytes) => {
            let Some(ops) = crate::msg::batched(bytes) else {
                return (Effect::None, Outcome::Err(OpError::Syntax));
            };
            apply_batch(&ops, key, cur, ctx)
        }
        Op::Set {
            value,
            cond,
            expiry,
            get,
        } => {
            let old = if get {
                value_of(cur.as_deref_mut())
            } else {
                Outcome::Ok
            };
            let allowed = match cond {
                SetCond::Always => true,
                SetCond::IfMissing => cur.is_none(),
                SetCond::IfExists => cur.is_some(),
            };
            if !allowed {
                return (Effect::None, if get { old } else { Outcome::Nil });
            }
            let expire_at = match expiry {
                ExpiryChange::Clear => 0,
                ExpiryChange::Keep => cur.as_ref().map_or(0, |e| e.expire_at()),
                ExpiryChange::At(t) => t,
            };
            if let ExpiryChange::At(t) = expiry {
                if t < ctx.now {
                    // Redis writes it and it is gone at once; the reply is as if it was set.
                    let eff = if cur.is_some() {
                        Effect::Deleted
                    } else {
                        Effect::None
                    };
                    return (eff, old);
                }
            }
            (
                put(cur, key, value, expire_at, EncodingHint::Auto, ctx),
                old,
            )
        }
        Op::GetDel => match cur {
            Some(e) => (
                Effect::Deleted,
                Outcome::Value(Bytes::copy_from_slice(e.value())),
            ),
            None => (Effect::None, Outcome::Nil),
        },
        Op::GetEx(change) => {
            let Some(e) = cur else {
                return (Effect::None, Outcome::Nil);
            };
            let out = Outcome::Value(Bytes::copy_from_slice(e.value()));
            match change {
                ExpiryChange::Keep => (Effect::None, out),
                ExpiryChange::Clear if e.expire_at() == 0 => (Effect::None, out),
                ExpiryChange::Clear => {
                    e.set_expire_at(0);
                    (Effect::Modified, out)
                }
                ExpiryChange::At(t) if t <= ctx.now => (Effect::Deleted, out),
                ExpiryChange::At(t) => {
                    e.set_expire_at(t);
                    (Effect::Modified, out)
                }
            }
        }
        Op::IncrBy(by) => {
            let v = match int_value(&cur) {
                Ok(v) => v,
                Err(err) => return (Effect::None, Outcome::Err(err)),
            };
            let Some(n) = v.checked_add(by) else {
                return (Effect::None, Outcome::Err(OpError::Overflow));
            };
            let expire_at = cur.as_ref().map_or(0, |e| e.expire_at());
            let mut buf = itoa::Buffer::new();
            let text = buf.format(n).as_bytes();
            (
                put(cur, key, text, expire_at, EncodingHint::Auto, ctx),
                Outcome::Int(n),
            )
        }
        Op::IncrByFloat(by) => {
            let current = cur.as_ref().map(|e| e.value());
            match incr_by_float(current, by) {
                Ok(text) => {
                    let expire_at = cur.as_ref().map_or(0, |e| e.expire_at());
                    let out = Outcome::Value(Bytes::copy_from_slice(&text));
                    (
                        put(cur, key, &text, expire_at, EncodingHint::NoInt, ctx),
                        out,
                    )
                }
                Err(FloatError::NotFloat) => (Effect::None, Outcome::Err(OpError::NotFloat)),
                Err(FloatError::NanOrInfinity) => {
                    (Effect::None, Outcome::Err(OpError::NanOrInfinity))
                }
            }
        }
        Op::Append(more) => match cur {
            None => {
                if more.len() as u64 > ctx.max_len {
                    return (Effect::None, Outcome::Err(OpError::TooLong));
                }
                let n = more.len() as i64;
                (
                    Effect::Created(Entry::new(
                        key,
                        more,
                        0,
                        ctx.initial_access(),
                        EncodingHint::Auto,
                    )),
                    Outcome::Int(n),
                )
            }
            Some(e) => {
                if (e.value().len() + more.len()) as u64 > ctx.max_len {
                    return (Effect::None, Outcome::Err(OpError::TooLong));
                }
                e.append(more);
                (Effect::Modified, Outcome::Int(e.value().len() as i64))
            }
        },
        Op::Strlen => (
            Effect::None,
            Outcome::Int(cur.map_or(0, |e| e.value().len() as i64)),
        ),
        Op::GetRange(start, end) => {
            let v: &[u8] = cur.as_ref().map_or(&[], |e| e.value());
            (
                Effect::None,
                Outcome::Value(Bytes::copy_from_slice(range(v, start, end))),
            )
        }
        Op::SetRange(offset, patch) => {
            let need = offset.saturating_add(patch.len() as u64);
            match cur {
                None => {
                    if patch.is_empty() {
                        return (Effect::None, Outcome::Int(0));
                    }
                    if need > ctx.max_len {
                        return (Effect::None, Outcome::Err(OpError::TooLong));
                    }
                    let mut v = vec![0u8; offset as usize];
                    v.extend_from_slice(patch);
                    let n = v.len() as i64;
                    (
                        Effect::Created(Entry::new(
                            key,
                            &v,
                            0,
                            ctx.initial_access(),
                            EncodingHint::Raw,
                        )),
                        Outcome::Int(n),
                    )
                }
                Some(e) => {
                    if patch.is_empty() {
                        return (Effect::None, Outcome::Int(e.value().len() as i64));
                    }
                    if need > ctx.max_len {
                        return (Effect::None, Outcome::Err(OpError::TooLong));
                    }
                    e.set_range(offset as usize, patch);
                    (Effect::Modified, Outcome::Int(e.value().len() as i64))
                }
            }
        }
        Op::Del => match cur {
            Some(_) => (Effect::Deleted, Outcome::Int(1)),
            None => (Effect::None, Outcome::Int(0)),
        },
        Op::Exists | Op::Touch => (Effect::None, Outcome::Int(i64::from(cur.is_some()))),
        Op::Type => (
            Effect::None,
            Outcome::Status(if cur.is_some() { "string" } else { "none" }),
        ),
        Op::Expire { at, cond } => {
            let Some(e) = cur else {
                return (Effect::None, Outcome::Int(0));
            };
            let current = e.expire_at();
            let has_ttl = current != 0;
            let refused = (cond.nx && has_ttl)
                || (cond.xx && !has_ttl)
                || (cond.gt && (!has_ttl || at <= current as i64))
                || (cond.lt && has_ttl && at >= current as i64);
            if refused {
                return (Effect::None, Outcome::Int(0));
            }
            if at <= ctx.now as i64 {
                return (Effect::Deleted, Outcome::Int(1));
            }
            e.set_expire_at(at as u64);
            (Effect::Modified, Outcome::Int(1))
        }
        Op::Ttl { ms } => {
            let out = match cur {
                None => -2,
                Some(e) if e.expire_at() == 0 => -1,
                Some(e) => {
                    let left = e.expire_at().saturating_sub(ctx.now) as i64;
                    if ms {
                        left
                    } else {
                        (left + 500) / 1000
                    }
                }
            };
            (Effect::None, Outcome::Int(out))
        }
        Op::ExpireTime { ms } => {
            let out = match cur {
                None => -2,
                Some(e) if e.expire_at() == 0 => -1,
                Some(e) if ms => e.expire_at() as i64,
                // Redis rounds to the nearest second.
                Some(e) => ((e.expire_at() + 500) / 1000) as i64,
            };
            (Effect::None, Outcome::Int(out))
        }
        Op::Persist => match cur {
            Some(e) if e.expire_at() != 0 => {
                e.set_expire_at(0);
                (Effect::Modified, Outcome::Int(1))
            }
            _ => (Effect::None, Outcome::Int(0)),
        },
        Op::ObjectEncoding => match cur {
            Some(e) => (Effect::None, Outcome::Text(e.encoding())),
            None => (Effect::None, Outcome::Nil),
        },
        Op::ObjectIdleTime => match cur {
            // The access clock has 24 bits, like Redis's LRU clock; the difference wraps with it.
            Some(e) => (
                Effect::None,
                Outcome::Int(i64::from(ctx.idle_seconds(e.access()))),
            ),
            None => (Effect::None, Outcome::Nil),
        },
        Op::ObjectFreq => match cur {
            Some(e) => (
                Effect::None,
                Outcome::Int(i64::from(ctx.lfu_counter(e.access()))),
            ),
            None => (Effect::None, Outcome::Nil),
        },
        Op::ObjectRefcount => match cur {
            // Redis shares the objects of integers below 10000 (OBJ_SHARED_INTEGERS), which report
            // INT_MAX as their reference count.
            Some(e)
                if e.encoding() == "int"
                    && parse_i64(e.value()).is_some_and(|n| (0..10000).contains(&n)) =>
            {
                (Effect::None, Outcome::Int(i64::from(i32::MAX)))
            }
            Some(_) => (Effect::None, Outcome::Int(1)),
            None => (Effect::None, Outcome::Nil),
        },
        Op::SetBit { offset, on } => set_bit(key, cur, offset, on, ctx),
        Op::GetBit(offset) => (
            Effect::None,
            Outcome::Int(i64::from(
                cur.is_some_and(|e| bits::get_bit(e.value(), offset)),
            )),
        ),
        Op::BitCount(span) => match cur {
            None => (Effect::None, Outcome::Int(0)),
            Some(e) => (Effect::None, int_or_err(bits::count(e.value(), span))),
        },
        Op::BitPos { bit, span } => match cur {
            // A missing key is an infinite string of zeros.
            None => (Effect::None, Outcome::Int(if bit { -1 } else { 0 })),
            Some(e) => (
                Effect::None,
                int_or_err(bits::position(e.value(), bit, span)),
            ),
        },
        Op::BitField(prog) => bit_field(key, cur, prog, ctx),
        Op::StoreBitOp(value) => match cur {
            _ if value.is_empty() => (
                if cur.is_some() {
                    Effect::Deleted
                } else {
                    Effect::None
                },
                Outcome::Int(0),
            ),
            cur => (
                put(cur, key, value, 0, EncodingHint::Raw, ctx),
                Outcome::Int(value.len() as i64),
            ),
        },
    }
}

fn int_or_err(r: Result<i64, OpError>) -> Outcome {
    match r {
        Ok(n) => Outcome::Int(n),
        Err(e) => Outcome::Err(e),
    }
}

/// `SETBIT`: like Redis, the value becomes a raw string even when the bit does not change.
fn set_bit(
    key: &[u8],
    cur: Option<&mut Entry>,
    offset: u64,
    on: bool,
    ctx: &Ctx,
) -> (Effect, Outcome) {
    let byte = offset >> 3;
    if byte >= ctx.max_len {
        return (Effect::None, Outcome::Err(OpError::TooLong));
    }
    let byte = byte as usize;
    match cur {
        None => {
            let mut v = Vec::new();
            bits::set_bit(&mut v, offset, on);
            (
                Effect::Created(Entry::new(
                    key,
                    &v,
                    0,
                    ctx.initial_access(),
                    EncodingHint::Raw,
                )),
                Outcome::Int(0),
            )
        }
        Some(e) => {
            let grows = byte >= e.value().len();
            let mut patch = vec![e.value().get(byte).copied().unwrap_or(0)];
            let old = bits::set_bit(&mut patch, offset & 7, on);
            // A value that only becomes raw is a change too, so that every replica reports the
            // same encoding (a WATCH of the key then sees a write where Redis sees none).
            let changed = grows || old != on || e.enc() != EncodingHint::Raw;
            if changed {
                e.set_range(byte, &patch);
            }
            (
                if changed {
                    Effect::Modified
                } else {
                    Effect::None
                },
                Outcome::Int(i64::from(old)),
            )
        }
    }
}

/// `BITFIELD`: a program of only `GET`s reads (and creates nothing); one that writes creates the
/// key or grows it with zeros to its highest written bit first, as Redis does, even if every
/// write then fails under `OVERFLOW FAIL`.
fn bit_field(key: &[u8], cur: Option<&mut Entry>, prog: &[u8], ctx: &Ctx) -> (Effect, Outcome) {
    let Some(ops) = bits::decode_fields(prog) else {
        return (Effect::None, Outcome::Err(OpError::Syntax));
    };
    let Some(highest) = bits::highest_write(&ops) else {
        let mut v = cur.map_or_else(Vec::new, |e| e.value().to_vec());
        return (
            Effect::None,
            Outcome::Fields(bits::run_fields(&mut v, &ops).0),
        );
    };
    let len = (highest >> 3) + 1;
    if len > ctx.max_len {
        return (Effect::None, Outcome::Err(OpError::TooLong));
    }
    let len = len as usize;
    match cur {
        None => {
            let mut v = vec![0u8; len];
            let (out, _) = bits::run_fields(&mut v, &ops);
            let e = Entry::new(key, &v, 0, ctx.initial_access(), EncodingHint::Raw);
            (Effect::Created(e), Outcome::Fields(out))
        }
        Some(e) => {
            let mut v = e.value().to_vec();
            let grows = v.len() < len;
            if grows {
                v.resize(len, 0);
            }
            let (out, changes) = bits::run_fields(&mut v, &ops);
            // As SETBIT: becoming raw is a change every replica must see.
            if grows || changes > 0 || e.enc() != EncodingHint::Raw {
                let at = e.expire_at();
                e.set_value(&v, at, EncodingHint::Raw);
                (Effect::Modified, Outcome::Fields(out))
            } else {
                (Effect::None, Outcome::Fields(out))
            }
        }
    }
}

/// Redis's GETRANGE arithmetic.
fn range(v: &[u8], mut start: i64, mut end: i64) -> &[u8] {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return &[];
    }
    &v[start as usize..=end as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: Op<'_>, e: &mut Option<Entry>) -> Outcome {
        let ctx = Ctx::at(1_000_000);
        let (eff, out) = apply(&op, b"key", e.as_mut(), &ctx);
        match eff {
            Effect::Created(n) => *e = Some(n),
            Effect::Deleted => *e = None,
            Effect::None | Effect::Modified => {}
        }
        out
    }

    #[test]
    fn a_batch_applies_its_commands_in_order_to_one_entry() {
        use crate::notify::Change;
        let ctx = Ctx::at(1000);
        let g = crate::msg::guard_bytes;
        let batch = |ops: &[Op<'_>]| ops.iter().map(g).collect::<Vec<_>>();
        // Created, changed, read: one creation in the end.
        let b = crate::msg::batch_bytes(&batch(&[
            Op::IncrBy(2),
            Op::IncrBy(3),
            Op::Expire {
                at: 9000,
                cond: Default::default(),
            },
            Op::Ttl { ms: true },
            Op::IncrByFloat(b"x"),
        ]));
        let (effect, out) = apply(&Op::Batch(&b), b"k", None, &ctx);
        let Effect::Created(e) = effect else {
            panic!("{effect:?}")
        };
        assert_eq!((e.value(), e.expire_at()), (&b"5"[..], 9000));
        assert_eq!(
            out,
            Outcome::Batch(
                vec![
                    Outcome::Int(2),
                    Outcome::Int(5),
                    Outcome::Int(1),
                    Outcome::Int(8000),
                    Outcome::Err(OpError::NotFloat),
                ],
                vec![
                    Some(Change::Created),
                    Some(Change::Modified),
                    Some(Change::Modified),
                    None,
                    None
                ],
            )
        );
        // On an existing entry: the entry takes the result in place.
        let mut e = Entry::new(b"k", b"ab", 0, 0, EncodingHint::Auto);
        let b = crate::msg::batch_bytes(&batch(&[Op::Append(b"c"), Op::Strlen]));
        let (effect, out) = apply(&Op::Batch(&b), b"k", Some(&mut e), &ctx);
        assert!(matches!(effect, Effect::Modified), "{effect:?}");
        assert_eq!(e.value(), b"abc");
        assert_eq!(
            out,
            Outcome::Batch(
                vec![Outcome::Int(3), Outcome::Int(3)],
                vec![Some(Change::Modified), None]
            )
        );
        // Deleted, then written again: the entry is replaced; deleted last: the key goes.
        let b = crate::msg::batch_bytes(&batch(&[Op::Del, Op::set(b"new")]));
        let (effect, _) = apply(&Op::Batch(&b), b"k", Some(&mut e), &ctx);
        assert!(matches!(effect, Effect::Modified), "{effect:?}");
        assert_eq!(e.value(), b"new");
        let b = crate::msg::batch_bytes(&batch(&[Op::set(b"x"), Op::Del]));
        let (effect, out) = apply(&Op::Batch(&b), b"k", Some(&mut e), &ctx);
        assert!(matches!(effect, Effect::Deleted), "{effect:?}");
        assert_eq!(
            out,
            Outcome::Batch(
                vec![Outcome::Ok, Outcome::Int(1)],
                vec![Some(Change::Modified), Some(Change::Deleted)]
            )
        );
        // Created and deleted again on a missing key: nothing to do.
        let (effect, _) = apply(&Op::Batch(&b), b"k", None, &ctx);
        assert!(matches!(effect, Effect::None), "{effect:?}");
        // Reads only: nothing changes, and the batch is a read.
        let b = crate::msg::batch_bytes(&batch(&[Op::Get, Op::Exists]));
        assert!(Op::Batch(&b).is_read_only());
        let w = crate::msg::batch_bytes(&batch(&[Op::Get, Op::Persist]));
        assert!(
            !Op::Batch(&w).is_read_only(),
            "a batch with a write is a write"
        );
        let (effect, out) = apply(&Op::Batch(&b), b"k", Some(&mut e), &ctx);
        assert!(matches!(effect, Effect::None), "{effect:?}");
        assert_eq!(
            out,
            Outcome::Batch(
                vec![Outcome::Value("new".into()), Outcome::Int(1)],
                vec![None, None]
            )
        );
        // Garbage: a syntax error, nothing done.
        let (effect, out) = apply(&Op::Batch(b"\xff"), b"k", Some(&mut e), &ctx);
        assert!(matches!(effect, Effect::None));
        assert_eq!(out, Outcome::Err(OpError::Syntax));
    }

    #[test]
    fn incr_and_overflow() {
        let mut e = None;
        assert_eq!(run(Op::IncrBy(5), &mut e), Outcome::Int(5));
        assert_eq!(
            run(Op::IncrBy(i64::MAX), &mut e),
            Outcome::Err(OpError::Overflow)
        );
        assert_eq!(run(Op::Get, &mut e), Outcome::Value(Bytes::from("5")));
        let mut e = Some(Entry::new(b"key", b"1.5", 0, 0, EncodingHint::Auto));
        assert_eq!(
            run(Op::IncrBy(1), &mut e),
            Outcome::Err(OpError::NotInteger)
        );
    }

    #[test]
    fn set_conditions_and_get() {
        let mut e = None;
        let set = |v: &'static [u8], cond, get| Op::Set {
            value: v,
            cond,
            expiry: ExpiryChange::Clear,
            get,
        };
        assert_eq!(
            run(set(b"a", SetCond::IfExists, false), &mut e),
            Outcome::Nil
        );
        assert_eq!(
            run(set(b"a", SetCond::IfMissing, true), &mut e),
            Outcome::Nil
        );
        assert_eq!(
            run(set(b"b", SetCond::IfMissing, true), &mut e),
            Outcome::Value(Bytes::from("a"))
        );
        assert_eq!(run(set(b"c", SetCond::Always, false), &mut e), Outcome::Ok);
        assert_eq!(e.unwrap().value(), b"c");
    }

    #[test]
    fn getrange_matches_redis() {
        assert_eq!(range(b"This is a string", 0, 3), b"This");
        assert_eq!(range(b"This is a string", -3, -1), b"ing");
        assert_eq!(range(b"This is a string", 0, -1), b"This is a string");
        assert_eq!(range(b"This is a string", 10, 100), b"string");
        assert_eq!(range(b"abc", -1, -2), b"");
        assert_eq!(range(b"", 0, -1), b"");
        assert_eq!(range(b"abc", 5, 10), b"");
    }

    #[test]
    fn expire_conditions() {
        let mut e = Some(Entry::new(b"key", b"v", 0, 0, EncodingHint::Auto));
        let exp = |at, cond| Op::Expire { at, cond };
        let gt = ExpireCond {
            gt: true,
            ..Default::default()
        };
        let lt = ExpireCond {
            lt: true,
            ..Default::default()
        };
        let nx = ExpireCond {
            nx: true,
            ..Default::default()
        };
        let xx_lt = ExpireCond {
            xx: true,
            lt: true,
            ..Default::default()
        };
        assert_eq!(run(exp(2_000_000, gt), &mut e), Outcome::Int(0));
        assert_eq!(run(exp(2_000_000, xx_lt), &mut e), Outcome::Int(0));
        assert_eq!(run(exp(2_000_000, lt), &mut e), Outcome::Int(1));
        assert_eq!(run(exp(3_000_000, nx), &mut e), Outcome::Int(0));
        assert_eq!(run(exp(3_000_000, gt), &mut e), Outcome::Int(1));
        assert_eq!(run(Op::Ttl { ms: false }, &mut e), Outcome::Int(2000));
        assert_eq!(run(exp(5, ExpireCond::default()), &mut e), Outcome::Int(1));
        assert!(e.is_none(), "a deadline in the past deletes the key");
    }

    #[test]
    fn setrange_pads_and_limits() {
        let mut e = None;
        assert_eq!(run(Op::SetRange(3, b"x"), &mut e), Outcome::Int(4));
        assert_eq!(e.as_ref().unwrap().value(), b"\0\0\0x");
        assert_eq!(
            run(Op::SetRange(1 << 40, b"x"), &mut e),
            Outcome::Err(OpError::TooLong)
        );
        assert_eq!(run(Op::SetRange(0, b""), &mut e), Outcome::Int(4));
    }

    #[test]
    fn lfu_counter_grows_logarithmically_and_decays() {
        let mode = AccessMode::Lfu {
            log_factor: 10,
            decay_minutes: 1,
        };
        let mut ctx = Ctx {
            mode,
            ..Ctx::at(60_000 * 100)
        };
        let mut access = ctx.initial_access();
        assert_eq!(ctx.lfu_counter(access), LFU_INIT);
        // Deterministic "random" numbers spread over the range.
        for i in 0..10_000u32 {
            ctx.rand = i.wrapping_mul(2_654_435_761);
            access = ctx.touched(access);
        }
        let c = ctx.lfu_counter(access);
        assert!(
            (20..100).contains(&c),
            "10k hits with log factor 10 give a counter in the tens, got {c}"
        );
        let later = Ctx {
            now: ctx.now + 30 * 60_000,
            ..ctx
        };
        assert_eq!(
            later.lfu_counter(access),
            c - 30,
            "one decrement per minute"
        );
    }

    #[test]
    fn encodings() {
        let enc = |v: &[u8], h| Entry::new(b"k", v, 0, 0, h).encoding();
        assert_eq!(enc(b"123", EncodingHint::Auto), "int");
        assert_eq!(enc(b"0123", EncodingHint::Auto), "embstr");
        assert_eq!(enc(&[b'a'; 44], EncodingHint::Auto), "embstr");
        assert_eq!(enc(&[b'a'; 45], EncodingHint::Auto), "raw");
        assert_eq!(enc(b"5200", EncodingHint::NoInt), "embstr");
        assert_eq!(enc(b"ab", EncodingHint::Raw), "raw");
    }
}
