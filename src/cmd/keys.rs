//! Keyspace commands.

use bytes::Bytes;
use hypercache_cluster::op::ExpireCond;
use hypercache_cluster::{Op, Outcome};
use hypercache_resp::{errors, Frame};

use super::{err, err_owned, help, int_arg, reply};
use crate::session::Session;

fn count(s: &Session, keys: &[Bytes], op: Op<'_>) -> Option<Frame> {
    let ctx = s.ctx();
    let n = keys
        .iter()
        .map(|k| match s.shared.store.apply(k, &op, &ctx) {
            Outcome::Int(i) => i,
            _ => 0,
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
    Some(reply(s.shared.store.apply(&a[1], &Op::Type, &s.ctx())))
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
    Some(reply(s.shared.store.apply(
        &a[1],
        &Op::Expire { at: when, cond },
        &ctx,
    )))
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
    Some(reply(s.shared.store.apply(
        &a[1],
        &Op::Ttl { ms: false },
        &s.ctx(),
    )))
}

/// # Format
/// `PTTL key`
pub(super) fn pttl(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    Some(reply(s.shared.store.apply(
        &a[1],
        &Op::Ttl { ms: true },
        &s.ctx(),
    )))
}

/// # Format
/// `EXPIRETIME key`
pub(super) fn expiretime(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    Some(reply(s.shared.store.apply(
        &a[1],
        &Op::ExpireTime { ms: false },
        &s.ctx(),
    )))
}

/// # Format
/// `PEXPIRETIME key`
pub(super) fn pexpiretime(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    Some(reply(s.shared.store.apply(
        &a[1],
        &Op::ExpireTime { ms: true },
        &s.ctx(),
    )))
}

/// # Format
/// `PERSIST key`
pub(super) fn persist(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    Some(reply(s.shared.store.apply(&a[1], &Op::Persist, &s.ctx())))
}

/// # Format
/// `KEYS pattern`
pub(super) fn keys(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
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
    let (next, keys) = s.shared.store.scan(cursor, pattern, count, &s.ctx());
    let keys = if type_ok { keys } else { Vec::new() };
    Some(Frame::Array(vec![
        Frame::Bulk(Bytes::from(next.to_string())),
        Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
    ]))
}

/// # Format
/// `RANDOMKEY`
pub(super) fn randomkey(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let ctx = s.ctx();
    let key = s.shared.store.random_key(&mut *s.shared.rng.lock(), &ctx);
    Some(key.map_or(Frame::Null, Frame::Bulk))
}

/// # Format
/// `RENAME key newkey`
pub(super) fn rename(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match s.shared.store.rename(&a[1], &a[2], false, &s.ctx()) {
        Ok(_) => Some(Frame::ok()),
        Err(()) => err(errors::NO_SUCH_KEY),
    }
}

/// # Format
/// `RENAMENX key newkey`
pub(super) fn renamenx(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match s.shared.store.rename(&a[1], &a[2], true, &s.ctx()) {
        Ok(done) => Some(Frame::Integer(i64::from(done))),
        Err(()) => err(errors::NO_SUCH_KEY),
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
    let done = s.shared.store.copy(&a[1], &a[2], replace, &s.ctx());
    Some(Frame::Integer(i64::from(done)))
}

/// # Format
/// `DBSIZE`
pub(super) fn dbsize(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
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
    let dropped = s.shared.store.flush();
    if asynchronous {
        // Free the maps off the request path.
        std::thread::spawn(move || drop(dropped));
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
                return match s.shared.store.apply(&a[2], &Op::Exists, &s.ctx()) {
                    Outcome::Int(1) if wants_freq => err(errors::OBJECT_FREQ_NOT_LFU),
                    Outcome::Int(1) => err(errors::OBJECT_IDLE_LFU),
                    _ => Some(Frame::Null),
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
    Some(reply(s.shared.store.apply(&a[2], &op, &s.ctx())))
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
