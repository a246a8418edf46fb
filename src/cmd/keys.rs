//! Keyspace commands.

use bytes::Bytes;
use hypercache_cluster::op::{ExpireCond, ExpiryChange, SetCond};
use hypercache_cluster::{db, notify, Op, Outcome};
use hypercache_resp::{errors, Frame};

use super::{err, err_owned, help, int_arg, keyed, keyed_many, reply};
use crate::cluster::exec;
use crate::session::Session;

fn count(s: &mut Session, keys: &[Bytes], op: Op<'_>) -> Option<Frame> {
    if s.shared.cluster.is_some() && keys.len() == 1 {
        // One key: one operation (and, in a watched transaction, one guarded round).
        return keyed(s, &keys[0], op, reply);
    }
    if let Some(cl) = s.shared.cluster.clone() {
        let items: Vec<_> = keys.iter().map(|k| (k, op)).collect();
        return keyed_many(s, &cl, &items, |v| {
            Frame::Integer(
                v.iter()
                    .map(|o| match o {
                        Outcome::Int(i) => *i,
                        _ => 0,
                    })
                    .sum(),
            )
        });
    }
    let ctx = s.ctx();
    let noting = crate::notify::noting(&s.shared);
    let n = keys
        .iter()
        .map(|k| {
            let o = if noting {
                let (o, change) = s.shared.store.apply_noting(k, &op, &ctx);
                crate::notify::after_write(
                    &s.shared,
                    k,
                    notify::events(&op, change),
                    s.tracking_id,
                );
                o
            } else {
                s.shared.store.apply(k, &op, &ctx)
            };
            match o {
                Outcome::Int(i) => i,
                _ => 0,
            }
        })
        .sum();
    Some(Frame::Integer(n))
}

/// # Format
/// `DEL key [key ...]` (also `UNLINK`)
pub(super) fn del(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    count(s, &a[1..], Op::Del)
}

/// # Format
/// `EXISTS key [key ...]`
pub(super) fn exists(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    count(s, &a[1..], Op::Exists)
}

/// # Format
/// `TOUCH key [key ...]`
pub(super) fn touch(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    count(s, &a[1..], Op::Touch)
}

/// # Format
/// `TYPE key`
pub(super) fn type_(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::Type, reply)
}

/// The EXPIRE family: `base` is added to the argument (now for relative forms, 0 for absolute).
fn expire_generic(
    s: &mut Session,
    a: &[Bytes],
    seconds: bool,
    relative: bool,
    cmd: &str,
) -> Option<Frame> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        match opt.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                let mut e = b"ERR Unsupported option ".to_vec();
                e.extend_from_slice(&errors::sanitize(opt));
                return err_owned(e);
            }
        }
    }
    if nx && (xx || gt || lt) {
        return err(errors::EXPIRE_NX_AND_OTHERS);
    }
    if gt && lt {
        return err(errors::EXPIRE_GT_AND_LT);
    }
    let cond = ExpireCond { nx, xx, gt, lt };
    let mut when = match int_arg(&a[2]) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let invalid = || err_owned(errors::invalid_expire(cmd));
    if seconds {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return invalid();
        }
        when *= 1000;
    }
    let ctx = s.ctx();
    let base = if relative { ctx.now as i64 } else { 0 };
    if when > i64::MAX - base {
        return invalid();
    }
    when += base;
    keyed(s, &a[1], Op::Expire { at: when, cond }, reply)
}

/// # Format
/// `EXPIRE key seconds [NX | XX | GT | LT]`
pub(super) fn expire(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    expire_generic(s, a, true, true, "expire")
}

/// # Format
/// `PEXPIRE key milliseconds [NX | XX | GT | LT]`
pub(super) fn pexpire(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    expire_generic(s, a, false, true, "pexpire")
}

/// # Format
/// `EXPIREAT key unix-time-seconds [NX | XX | GT | LT]`
pub(super) fn expireat(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    expire_generic(s, a, true, false, "expireat")
}

/// # Format
/// `PEXPIREAT key unix-time-milliseconds [NX | XX | GT | LT]`
pub(super) fn pexpireat(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    expire_generic(s, a, false, false, "pexpireat")
}

/// # Format
/// `TTL key`
pub(super) fn ttl(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::Ttl { ms: false }, reply)
}

/// # Format
/// `PTTL key`
pub(super) fn pttl(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::Ttl { ms: true }, reply)
}

/// # Format
/// `EXPIRETIME key`
pub(super) fn expiretime(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::ExpireTime { ms: false }, reply)
}

/// # Format
/// `PEXPIRETIME key`
pub(super) fn pexpiretime(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::ExpireTime { ms: true }, reply)
}

/// # Format
/// `PERSIST key`
pub(super) fn persist(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::Persist, reply)
}

/// # Format
/// `KEYS pattern`
pub(super) fn keys(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let db = s.physical_db();
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, pattern, t) = (s.shared.clone(), a[1].clone(), s.levels().timeout);
        s.defer(
            async move {
                match exec::keys(shared, cl, db, pattern, t).await {
                    Ok(keys) => Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    let keys = s.shared.store.keys(db, Some(&a[1]), &s.ctx());
    Some(Frame::Array(keys.into_iter().map(Frame::Bulk).collect()))
}

/// Redis reads SCAN cursors with `strtoul`: an optional sign, digits, nothing else; `-1` wraps.
fn parse_cursor(raw: &[u8]) -> Option<u64> {
    if raw.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let (neg, digits) = match raw.first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw),
    };
    if digits.is_empty() {
        // strtoul("") and strtoul("-") read nothing and return 0 with the end at the start:
        // Redis accepts "" (end is the terminator) but "-" leaves a character unread.
        return if raw.is_empty() { Some(0) } else { None };
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// # Format
/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`
pub(super) fn scan(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let Some(cursor) = parse_cursor(&a[1]) else {
        return err(errors::INVALID_CURSOR);
    };
    let (mut pattern, mut count, mut type_ok) = (None, 10usize, true);
    let mut i = 2;
    while i < a.len() {
        let remaining = a.len() - i;
        let opt = a[i].to_ascii_lowercase();
        if opt == b"count" && remaining >= 2 {
            match int_arg(&a[i + 1]) {
                Ok(c) if c < 1 => return err(errors::SYNTAX),
                Ok(c) => count = c as usize,
                Err(e) => return e,
            }
        } else if opt == b"match" && remaining >= 2 {
            pattern = Some(&a[i + 1][..]);
        } else if opt == b"type" && remaining >= 2 {
            type_ok = a[i + 1].eq_ignore_ascii_case(b"string");
        } else {
            return err(errors::SYNTAX);
        }
        i += 2;
    }
    let scan_reply = move |next: u64, keys: Vec<Bytes>| {
        let keys = if type_ok { keys } else { Vec::new() };
        Frame::Array(vec![
            Frame::Bulk(Bytes::from(next.to_string())),
            Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
        ])
    };
    let db = s.physical_db();
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        let pattern = pattern.map(Bytes::copy_from_slice);
        s.defer(
            async move {
                match exec::scan(shared, cl, db, cursor, pattern, count, t).await {
                    Ok((next, keys)) => scan_reply(next, keys),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    let (next, keys) = s.shared.store.scan(cursor, db, pattern, count, &s.ctx());
    Some(scan_reply(next, keys))
}

/// # Format
/// `RANDOMKEY`
pub(super) fn randomkey(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let db = s.physical_db();
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        s.defer(
            async move {
                exec::randomkey(shared, cl, db, t)
                    .await
                    .map_or(Frame::Null, Frame::Bulk)
            },
            None,
        );
        return None;
    }
    let ctx = s.ctx();
    let key = s
        .shared
        .store
        .random_key(db, &mut *s.shared.rng.lock(), &ctx);
    Some(key.map_or(Frame::Null, Frame::Bulk))
}

/// # Format
/// `RENAME key newkey`
pub(super) fn rename(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return move_key(s, a[1].clone(), a[2].clone(), Move::Rename);
    }
    match s.shared.store.rename(&a[1], &a[2], false, &s.ctx()) {
        Ok(_) => {
            renamed(s, a);
            Some(Frame::ok())
        }
        Err(()) => err(errors::NO_SUCH_KEY),
    }
}

/// # Format
/// `RENAMENX key newkey`
pub(super) fn renamenx(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return move_key(s, a[1].clone(), a[2].clone(), Move::RenameNx);
    }
    match s.shared.store.rename(&a[1], &a[2], true, &s.ctx()) {
        Ok(done) => {
            if done {
                renamed(s, a);
            }
            Some(Frame::Integer(i64::from(done)))
        }
        Err(()) => err(errors::NO_SUCH_KEY),
    }
}

/// RENAME's events on a single node: `rename_from` of the source, `rename_to` of the
/// destination (none when they are the same key, as in Redis).
fn renamed(s: &Session, a: &[Bytes]) {
    if a[1] != a[2] {
        crate::notify::generic(&s.shared, "rename_from", &a[1], s.tracking_id);
        crate::notify::generic(&s.shared, "rename_to", &a[2], s.tracking_id);
    }
}

/// # Format
/// `COPY source destination [DB destination-db] [REPLACE]`
pub(super) fn copy(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let mut replace = false;
    // The keys come in their stored form, in this session's database.
    let mut dst = a[2].clone();
    let mut i = 3;
    while i < a.len() {
        if a[i].eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if a[i].eq_ignore_ascii_case(b"db") && i + 1 < a.len() {
            match db_index(s, &a[i + 1]) {
                Ok(to) => {
                    let to = s.shared.dbs.physical(to);
                    dst = db::encode(to, db::user_key(&a[2]));
                }
                Err(e) => return e,
            }
            i += 1;
        } else {
            return err(errors::SYNTAX);
        }
        i += 1;
    }
    if a[1] == dst {
        return err(errors::SAME_OBJECT);
    }
    if s.shared.cluster.is_some() {
        return move_key(s, a[1].clone(), dst, Move::Copy { replace });
    }
    let done = s.shared.store.copy(&a[1], &dst, replace, &s.ctx());
    if done {
        crate::notify::generic(&s.shared, "copy_to", &dst, s.tracking_id);
    }
    Some(Frame::Integer(i64::from(done)))
}

/// A database number argument (`SELECT`, `MOVE`, `COPY ... DB`): an integer, below
/// `databases`, with Redis's errors.
pub(super) fn db_index(s: &Session, arg: &[u8]) -> Result<u8, Option<Frame>> {
    let n = int_arg(arg)?;
    if i32::try_from(n).is_err() {
        return Err(err(errors::NOT_AN_INT));
    }
    let max = s.shared.config.read().databases as i64;
    if !(0..max).contains(&n) {
        return Err(err(errors::DB_OUT_OF_RANGE));
    }
    Ok(n as u8)
}

/// # Format
/// `MOVE key db`
pub(super) fn move_(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let to = match db_index(s, &a[2]) {
        Ok(to) => to,
        Err(e) => return e,
    };
    if to == s.db {
        return err(errors::SAME_OBJECT);
    }
    let dst = db::encode(s.shared.dbs.physical(to), db::user_key(&a[1]));
    if s.shared.cluster.is_some() {
        return move_key(s, a[1].clone(), dst, Move::ToDb);
    }
    // RENAMENX across databases: the value, its expiry and its access time go along.
    match s.shared.store.rename(&a[1], &dst, true, &s.ctx()) {
        Ok(true) => {
            crate::notify::generic(&s.shared, "move_from", &a[1], s.tracking_id);
            crate::notify::generic(&s.shared, "move_to", &dst, s.tracking_id);
            Some(Frame::Integer(1))
        }
        Ok(false) | Err(()) => Some(Frame::Integer(0)),
    }
}

/// # Format
/// `SWAPDB index1 index2`
pub(super) fn swapdb(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        // The map of databases would have to change on every node at the same instant, or a
        // write could land in either database: refused, as Redis Cluster refuses it.
        return err(errors::SWAPDB_IN_CLUSTER);
    }
    let index = |arg: &[u8], bad: &'static str| -> Result<i64, Option<Frame>> {
        match hypercache_resp::num::parse_i64(arg) {
            Some(n) if i32::try_from(n).is_ok() => Ok(n),
            _ => Err(err(bad)),
        }
    };
    let (x, y) = match (
        index(&a[1], "ERR invalid first DB index"),
        index(&a[2], "ERR invalid second DB index"),
    ) {
        (Err(e), _) | (_, Err(e)) => return e,
        (Ok(x), Ok(y)) => (x, y),
    };
    let max = s.shared.config.read().databases as i64;
    if !(0..max).contains(&x) || !(0..max).contains(&y) {
        return err(errors::DB_OUT_OF_RANGE);
    }
    if x != y {
        s.shared.dbs.swap(x as u8, y as u8);
        // A change (INFO's dirty count): Redis replicas get it too.
        s.shared.store.add_changes(1);
    }
    Some(Frame::ok())
}

/// # Format
/// `DBSIZE`
pub(super) fn dbsize(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let db = s.physical_db();
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        s.defer(
            async move {
                match exec::dbsize(shared, cl, db, t).await {
                    Ok(n) => Frame::Integer(n),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    Some(Frame::Integer(s.shared.store.len_db(db) as i64))
}

/// # Format
/// `FLUSHDB [ASYNC | SYNC]` and `FLUSHALL [ASYNC | SYNC]`
pub(super) fn flush(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let asynchronous = match a.get(1) {
        None => false,
        Some(m) if a.len() == 2 && m.eq_ignore_ascii_case(b"sync") => false,
        Some(m) if a.len() == 2 && m.eq_ignore_ascii_case(b"async") => true,
        Some(_) => return err(errors::SYNTAX),
    };
    // FLUSHDB: this session's database only.
    let only = a[0]
        .eq_ignore_ascii_case(b"flushdb")
        .then(|| s.physical_db());
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        s.defer(
            async move {
                match exec::flushall(shared, cl, only, t).await {
                    Ok(()) => Frame::ok(),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    let keys = only.map_or_else(|| s.shared.store.len(), |db| s.shared.store.len_db(db));
    let dropped = s.shared.store.flush(only);
    s.shared.tracking.flush_all(&s.shared);
    if asynchronous {
        // Free the maps off the request path.
        crate::memory::free_later(dropped, keys);
    } else {
        drop(dropped);
    }
    s.force_propagation();
    Some(Frame::ok())
}

/// # Format
/// `OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key` and `OBJECT HELP`
pub(super) fn object(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    let op = match sub.as_slice() {
        b"encoding" => Op::ObjectEncoding,
        b"refcount" => Op::ObjectRefcount,
        // Redis answers FREQ only under an LFU policy and IDLETIME only under the others
        // (the entry's access field holds one or the other); a missing key is nil either way.
        b"freq" | b"idletime" => {
            let lfu = s.shared.config.read().maxmemory_policy.is_lfu();
            let wants_freq = sub.as_slice() == b"freq";
            if wants_freq == lfu {
                if wants_freq {
                    Op::ObjectFreq
                } else {
                    Op::ObjectIdleTime
                }
            } else {
                return if wants_freq {
                    keyed(s, &a[2], Op::Exists, |o| match o {
                        Outcome::Int(1) => Frame::error(errors::OBJECT_FREQ_NOT_LFU),
                        _ => Frame::Null,
                    })
                } else {
                    keyed(s, &a[2], Op::Exists, |o| match o {
                        Outcome::Int(1) => Frame::error(errors::OBJECT_IDLE_LFU),
                        _ => Frame::Null,
                    })
                };
            }
        }
        _ => return help(
            "OBJECT",
            &[
                "ENCODING <key>",
                "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>",
                "    Return the access frequency index of the <key>. The returned integer is",
                "    proportional to the logarithm of the recent access frequency of the key.",
                "IDLETIME <key>",
                "    Return the idle time of the <key>, that is the approximated number of",
                "    seconds elapsed since the last access to the key.",
                "REFCOUNT <key>",
                "    Return the number of references of the value associated with the specified",
                "    <key>.",
            ],
        ),
    };
    keyed(s, &a[2], op, reply)
}

/// RENAME, RENAMENX, COPY and MOVE in a cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Move {
    Rename,
    RenameNx,
    Copy {
        replace: bool,
    },
    /// MOVE to another database: the same key in the same slot, but a key of its own.
    ToDb,
}

/// RENAME/RENAMENX/COPY/MOVE across the cluster (`src` and `dst` stored keys): read the
/// source's value and expiry, write the destination, and (for RENAME and MOVE) delete the
/// source. The keys may live on different nodes, so this is a sequence of single-key operations,
/// not atomic (docs/cluster.md).
fn move_key(s: &mut Session, src: Bytes, dst: Bytes, how: Move) -> Option<Frame> {
    let cl = s.shared.cluster.clone()?;
    let ctx = s.ctx();
    if let Some(ov) = s.overlay.as_mut() {
        // A script at its slot's coordinator: between two of its keys, the same steps over
        // the states its round read; one of its keys and another may not meet here.
        match (ov.has(&src), ov.has(&dst)) {
            (true, true) => return Some(move_in_overlay(ov, &src, &dst, how, &ctx)),
            (false, false) => {}
            _ => return Some(Frame::error(crate::cluster::script::NOT_HERE)),
        }
    }
    let (shared, lv) = (s.shared.clone(), s.levels());
    s.defer(
        async move {
            let missing = how.missing();
            let value = match exec::run(&shared, &cl, &src, Op::Get, lv, ctx).await {
                Ok(Outcome::Value(v)) => v,
                Ok(_) => return missing,
                Err(e) => return Frame::error(e.text()),
            };
            let expiry =
                match exec::run(&shared, &cl, &src, Op::ExpireTime { ms: true }, lv, ctx).await {
                    // -2: it expired or was deleted since the read.
                    Ok(o) => match Move::expiry(o) {
                        Some(e) => e,
                        None => return missing,
                    },
                    Err(e) => return Frame::error(e.text()),
                };
            if src == dst {
                return how.same_key();
            }
            // The destination must be free: checked by the write itself (NX), so that a key
            // written there meanwhile is never overwritten.
            match exec::run(&shared, &cl, &dst, how.set(&value, expiry), lv, ctx).await {
                Ok(Outcome::Nil) => return Frame::Integer(0),
                Ok(_) => {}
                Err(e) => return Frame::error(e.text()),
            }
            if how.deletes_source() {
                if let Err(e) = exec::run(&shared, &cl, &src, Op::Del, lv, ctx).await {
                    return Frame::error(e.text());
                }
            }
            how.done()
        },
        None,
    );
    None
}

/// [`move_key`]'s steps over a script's keys at its slot's coordinator
/// ([`crate::cluster::script::Overlay`]).
fn move_in_overlay(
    ov: &mut crate::cluster::script::Overlay,
    src: &Bytes,
    dst: &Bytes,
    how: Move,
    ctx: &hypercache_cluster::Ctx,
) -> Frame {
    let Some(Outcome::Value(value)) = ov.apply(src, &Op::Get, ctx) else {
        return how.missing();
    };
    let expiry = ov.apply(src, &Op::ExpireTime { ms: true }, ctx);
    let Some(expiry) = expiry.and_then(Move::expiry) else {
        return how.missing();
    };
    if src == dst {
        return how.same_key();
    }
    if let Some(Outcome::Nil) = ov.apply(dst, &how.set(&value, expiry), ctx) {
        return Frame::Integer(0);
    }
    if how.deletes_source() {
        ov.apply(src, &Op::Del, ctx);
    }
    how.done()
}

impl Move {
    /// The reply when the source is missing.
    fn missing(self) -> Frame {
        match self {
            Move::Copy { .. } | Move::ToDb => Frame::Integer(0),
            _ => Frame::error(errors::NO_SUCH_KEY),
        }
    }

    /// The source's expiry from its `PEXPIRETIME` (`None`: it is gone).
    fn expiry(o: Outcome) -> Option<ExpiryChange> {
        match o {
            Outcome::Int(t) if t > 0 => Some(ExpiryChange::At(t as u64)),
            Outcome::Int(-1) => Some(ExpiryChange::Clear),
            _ => None,
        }
    }

    /// The reply when source and destination are the same key.
    fn same_key(self) -> Frame {
        match self {
            Move::Rename => Frame::ok(),
            _ => Frame::Integer(0),
        }
    }

    /// The write of the destination: only if it is free, unless this replaces it.
    fn set<'a>(self, value: &'a [u8], expiry: ExpiryChange) -> Op<'a> {
        let must_be_free = matches!(
            self,
            Move::RenameNx | Move::ToDb | Move::Copy { replace: false }
        );
        Op::Set {
            value,
            cond: if must_be_free {
                SetCond::IfMissing
            } else {
                SetCond::Always
            },
            expiry,
            get: false,
        }
    }

    /// Whether the source is deleted after the copy.
    fn deletes_source(self) -> bool {
        !matches!(self, Move::Copy { .. })
    }

    /// The reply once done.
    fn done(self) -> Frame {
        match self {
            Move::Rename => Frame::ok(),
            _ => Frame::Integer(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors_follow_strtoul() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"+12"), Some(12));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"abc"), None);
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
    }
}
