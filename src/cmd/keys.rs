//! Keyspace commands.

use bytes::Bytes;
use hypercache_cluster::op::{ExpireCond, ExpiryChange, SetCond};
use hypercache_cluster::{notify, Op, Outcome};
use hypercache_resp::{errors, Frame};

use super::{err, err_owned, help, int_arg, keyed, keyed_many, reply};
use crate::cluster::exec;
use crate::session::Session;

fn count(s: &mut Session, keys: &[Bytes], op: Op<'_>) -> Option<Frame> {
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
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, pattern, t) = (s.shared.clone(), a[1].clone(), s.levels().timeout);
        s.defer(
            async move {
                match exec::keys(shared, cl, pattern, t).await {
                    Ok(keys) => Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    let keys = s.shared.store.keys(Some(&a[1]), &s.ctx());
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
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        let pattern = pattern.map(Bytes::copy_from_slice);
        s.defer(
            async move {
                match exec::scan(shared, cl, cursor, pattern, count, t).await {
                    Ok((next, keys)) => scan_reply(next, keys),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    let (next, keys) = s.shared.store.scan(cursor, pattern, count, &s.ctx());
    Some(scan_reply(next, keys))
}

/// # Format
/// `RANDOMKEY`
pub(super) fn randomkey(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        s.defer(
            async move {
                exec::randomkey(shared, cl, t)
                    .await
                    .map_or(Frame::Null, Frame::Bulk)
            },
            None,
        );
        return None;
    }
    let ctx = s.ctx();
    let key = s.shared.store.random_key(&mut *s.shared.rng.lock(), &ctx);
    Some(key.map_or(Frame::Null, Frame::Bulk))
}

/// # Format
/// `RENAME key newkey`
pub(super) fn rename(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return move_key(s, a, Move::Rename);
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
        return move_key(s, a, Move::RenameNx);
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
    let mut i = 3;
    while i < a.len() {
        if a[i].eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if a[i].eq_ignore_ascii_case(b"db") && i + 1 < a.len() {
            match int_arg(&a[i + 1]) {
                Ok(db) if i32::try_from(db).is_err() => return err(errors::NOT_INTEGER),
                Ok(0) => {}
                Ok(_) => return err(errors::DB_OUT_OF_RANGE),
                Err(e) => return e,
            }
            i += 1;
        } else {
            return err(errors::SYNTAX);
        }
        i += 1;
    }
    if a[1] == a[2] {
        return err("ERR source and destination objects are the same");
    }
    if s.shared.cluster.is_some() {
        return move_key(s, a, Move::Copy { replace });
    }
    let done = s.shared.store.copy(&a[1], &a[2], replace, &s.ctx());
    if done {
        crate::notify::generic(&s.shared, "copy_to", &a[2], s.tracking_id);
    }
    Some(Frame::Integer(i64::from(done)))
}

/// # Format
/// `DBSIZE`
pub(super) fn dbsize(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        s.defer(
            async move {
                match exec::dbsize(shared, cl, t).await {
                    Ok(n) => Frame::Integer(n),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    Some(Frame::Integer(s.shared.store.len() as i64))
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
    if let Some(cl) = s.shared.cluster.clone() {
        let (shared, t) = (s.shared.clone(), s.levels().timeout);
        s.defer(
            async move {
                match exec::flushall(shared, cl, t).await {
                    Ok(()) => Frame::ok(),
                    Err(e) => Frame::error(e.text()),
                }
            },
            None,
        );
        return None;
    }
    let keys = s.shared.store.len();
    let dropped = s.shared.store.flush();
    s.shared.tracking.flush_all(&s.shared);
    if asynchronous {
        // Free the maps off the request path.
        crate::memory::free_later(dropped, keys);
    } else {
        drop(dropped);
    }
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

/// RENAME, RENAMENX and COPY in a cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Move {
    Rename,
    RenameNx,
    Copy { replace: bool },
}

/// RENAME/RENAMENX/COPY across the cluster: read the source's value and expiry, write the
/// destination, and (for RENAME) delete the source. The keys may live on different nodes, so this
/// is a sequence of single-key operations, not atomic (docs/cluster.md).
fn move_key(s: &mut Session, a: &[Bytes], how: Move) -> Option<Frame> {
    let cl = s.shared.cluster.clone()?;
    let (shared, lv, ctx) = (s.shared.clone(), s.levels(), s.ctx());
    let (src, dst) = (a[1].clone(), a[2].clone());
    s.defer(
        async move {
            let missing = match how {
                Move::Copy { .. } => Frame::Integer(0),
                _ => Frame::error(errors::NO_SUCH_KEY),
            };
            let value = match exec::run(&shared, &cl, &src, Op::Get, lv, ctx).await {
                Ok(Outcome::Value(v)) => v,
                Ok(_) => return missing,
                Err(e) => return Frame::error(e.text()),
            };
            let expiry =
                match exec::run(&shared, &cl, &src, Op::ExpireTime { ms: true }, lv, ctx).await {
                    Ok(Outcome::Int(t)) if t > 0 => ExpiryChange::At(t as u64),
                    Ok(Outcome::Int(-1)) => ExpiryChange::Clear,
                    // -2: it expired or was deleted since the read.
                    Ok(_) => return missing,
                    Err(e) => return Frame::error(e.text()),
                };
            if src == dst {
                return match how {
                    Move::Rename => Frame::ok(),
                    _ => Frame::Integer(0),
                };
            }
            let must_be_free = matches!(how, Move::RenameNx | Move::Copy { replace: false });
            if must_be_free {
                match exec::run(&shared, &cl, &dst, Op::Exists, lv, ctx).await {
                    Ok(Outcome::Int(0)) => {}
                    Ok(_) => return Frame::Integer(0),
                    Err(e) => return Frame::error(e.text()),
                }
            }
            let set = Op::Set {
                value: &value,
                cond: SetCond::Always,
                expiry,
                get: false,
            };
            if let Err(e) = exec::run(&shared, &cl, &dst, set, lv, ctx).await {
                return Frame::error(e.text());
            }
            if !matches!(how, Move::Copy { .. }) {
                if let Err(e) = exec::run(&shared, &cl, &src, Op::Del, lv, ctx).await {
                    return Frame::error(e.text());
                }
            }
            match how {
                Move::Rename => Frame::ok(),
                _ => Frame::Integer(1),
            }
        },
        None,
    );
    None
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
