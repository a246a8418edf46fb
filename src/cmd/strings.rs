//! String commands.

use bytes::Bytes;
use hypercache_cluster::op::{ExpiryChange, SetCond};
use hypercache_cluster::{Op, Outcome};
use hypercache_resp::{errors, frame, Frame};

use super::{err, err_owned, int_arg, keyed, keyed_many, reply};
use crate::cluster::exec;
use crate::session::{ReplyMode, Session};
use crate::state::Stats;

fn read(s: &Session, key: &[u8]) -> Outcome {
    let o = s.shared.store.apply(key, &Op::Get, &s.ctx());
    let counter = if o == Outcome::Nil {
        &s.shared.metrics.server.keyspace_misses
    } else {
        &s.shared.metrics.server.keyspace_hits
    };
    Stats::add(counter, 1);
    o
}

/// # Format
/// `GET key`
pub(super) fn get(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return keyed(s, &a[1], Op::Get, reply);
    }
    if s.reply_mode != ReplyMode::On {
        return Some(reply(read(s, &a[1])));
    }
    // The hot path: encode the value straight from the store into the reply buffer, no copy.
    let ctx = s.ctx();
    let (store, out, proto) = (&s.shared.store, &mut s.out, s.proto);
    let hit = store.read_with(&a[1], &ctx, |v| match v {
        Some(v) => {
            frame::bulk(out, b'$', v);
            true
        }
        None => {
            Frame::Null.encode(proto, out);
            false
        }
    });
    let stats = &s.shared.metrics.server;
    Stats::add(
        if hit {
            &stats.keyspace_hits
        } else {
            &stats.keyspace_misses
        },
        1,
    );
    None
}

/// Expiry options shared by SET and GETEX.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ex,
    Px,
    ExAt,
    PxAt,
}

/// Converts an expiry argument into an absolute unix ms time, with Redis's checks and error.
fn deadline(raw: &[u8], unit: Unit, now: u64, cmd: &str) -> Result<u64, Option<Frame>> {
    let v = int_arg(raw)?;
    let invalid = || err_owned(errors::invalid_expire(cmd));
    if v <= 0 || (matches!(unit, Unit::Ex | Unit::ExAt) && v > i64::MAX / 1000) {
        return Err(invalid());
    }
    let mut ms = if matches!(unit, Unit::Ex | Unit::ExAt) {
        v * 1000
    } else {
        v
    };
    if matches!(unit, Unit::Ex | Unit::Px) {
        ms = ms.checked_add(now as i64).ok_or_else(invalid)?;
    }
    Ok(ms as u64)
}

struct SetOpts<'a> {
    cond: SetCond,
    get: bool,
    keepttl: bool,
    persist: bool,
    expire: Option<(Unit, &'a [u8])>,
}

/// Redis's `parseExtendedStringArgumentsOrReply`: same acceptance rules, same errors.
fn parse_opts(args: &[Bytes], set: bool) -> Result<SetOpts<'_>, Option<Frame>> {
    let mut o = SetOpts {
        cond: SetCond::Always,
        get: false,
        keepttl: false,
        persist: false,
        expire: None,
    };
    let mut j = 0;
    while j < args.len() {
        let opt = &args[j][..];
        let next = args.get(j + 1);
        let is = |s: &str| opt.eq_ignore_ascii_case(s.as_bytes());
        let has_expire = o.expire.is_some();
        if set && is("nx") && o.cond != SetCond::IfExists {
            o.cond = SetCond::IfMissing;
        } else if set && is("xx") && o.cond != SetCond::IfMissing {
            o.cond = SetCond::IfExists;
        } else if set && is("get") {
            o.get = true;
        } else if set && is("keepttl") && !o.persist && !has_expire {
            o.keepttl = true;
        } else if !set && is("persist") && !has_expire && !o.keepttl {
            o.persist = true;
        } else if let (Some(unit), Some(n)) = (
            [
                ("ex", Unit::Ex),
                ("px", Unit::Px),
                ("exat", Unit::ExAt),
                ("pxat", Unit::PxAt),
            ]
            .iter()
            .find(|(name, _)| is(name))
            .map(|(_, u)| *u),
            next,
        ) {
            // The same unit may repeat (the last wins); mixing units is a syntax error.
            if o.keepttl || o.persist || o.expire.is_some_and(|(u, _)| u != unit) {
                return Err(err(errors::SYNTAX));
            }
            o.expire = Some((unit, &n[..]));
            j += 1;
        } else {
            return Err(err(errors::SYNTAX));
        }
        j += 1;
    }
    Ok(o)
}

/// # Format
/// `SET key value [NX | XX] [GET] [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT unix-time-milliseconds | KEEPTTL]`
pub(super) fn set(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let o = match parse_opts(&a[3..], true) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let ctx = s.ctx();
    let expiry = match o.expire {
        Some((unit, raw)) => match deadline(raw, unit, ctx.now, "set") {
            Ok(t) => ExpiryChange::At(t),
            Err(e) => return e,
        },
        None if o.keepttl => ExpiryChange::Keep,
        None => ExpiryChange::Clear,
    };
    let op = Op::Set {
        value: &a[2],
        cond: o.cond,
        expiry,
        get: o.get,
    };
    keyed(s, &a[1], op, reply)
}

/// # Format
/// `SETNX key value`
pub(super) fn setnx(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let op = Op::Set {
        value: &a[2],
        cond: SetCond::IfMissing,
        expiry: ExpiryChange::Clear,
        get: false,
    };
    keyed(s, &a[1], op, |o| {
        Frame::Integer(i64::from(o == Outcome::Ok))
    })
}

fn set_with_expiry(s: &mut Session, a: &[Bytes], unit: Unit, cmd: &str) -> Option<Frame> {
    let ctx = s.ctx();
    let at = match deadline(&a[2], unit, ctx.now, cmd) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let op = Op::Set {
        value: &a[3],
        cond: SetCond::Always,
        expiry: ExpiryChange::At(at),
        get: false,
    };
    keyed(s, &a[1], op, reply)
}

/// # Format
/// `SETEX key seconds value`
pub(super) fn setex(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    set_with_expiry(s, a, Unit::Ex, "setex")
}

/// # Format
/// `PSETEX key milliseconds value`
pub(super) fn psetex(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    set_with_expiry(s, a, Unit::Px, "psetex")
}

/// # Format
/// `GETSET key value`
pub(super) fn getset(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let op = Op::Set {
        value: &a[2],
        cond: SetCond::Always,
        expiry: ExpiryChange::Clear,
        get: true,
    };
    keyed(s, &a[1], op, reply)
}

/// # Format
/// `GETDEL key`
pub(super) fn getdel(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::GetDel, reply)
}

/// # Format
/// `GETEX key [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT unix-time-milliseconds | PERSIST]`
pub(super) fn getex(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let o = match parse_opts(&a[2..], false) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let ctx = s.ctx();
    let change = match o.expire {
        Some((unit, raw)) => match deadline(raw, unit, ctx.now, "getex") {
            Ok(t) => ExpiryChange::At(t),
            Err(e) => return e,
        },
        None if o.persist => ExpiryChange::Clear,
        None => ExpiryChange::Keep,
    };
    keyed(s, &a[1], Op::GetEx(change), reply)
}

/// # Format
/// `MGET key [key ...]`
pub(super) fn mget(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if let Some(cl) = s.shared.cluster.clone() {
        let items: Vec<_> = a[1..].iter().map(|k| (k, Op::Get)).collect();
        return keyed_many(s, &cl, &items, |v| {
            Frame::Array(v.into_iter().map(reply).collect())
        });
    }
    Some(Frame::Array(
        a[1..].iter().map(|k| reply(read(s, k))).collect(),
    ))
}

fn pairs(a: &[Bytes]) -> Vec<(&[u8], &[u8])> {
    a[1..]
        .chunks_exact(2)
        .map(|p| (&p[0][..], &p[1][..]))
        .collect()
}

/// # Format
/// `MSET key value [key value ...]`
pub(super) fn mset(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if a.len().is_multiple_of(2) {
        return err_owned(errors::wrong_arity("mset"));
    }
    if let Some(cl) = s.shared.cluster.clone() {
        // A key given twice keeps its last value, as in Redis: only that write is sent (the
        // per-key writes run in parallel and could land in either order).
        let mut items: Vec<_> = Vec::new();
        for p in a[1..].chunks_exact(2).rev() {
            if !items.iter().any(|(k, _)| *k == &p[0]) {
                items.push((&p[0], Op::set(&p[1])));
            }
        }
        return keyed_many(s, &cl, &items, |_| Frame::ok());
    }
    s.shared.store.mset(&pairs(a), false, &s.ctx());
    for p in a[1..].chunks_exact(2) {
        crate::notify::generic(&s.shared, "set", &p[0], s.tracking_id);
    }
    Some(Frame::ok())
}

/// # Format
/// `MSETNX key value [key value ...]`
pub(super) fn msetnx(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if a.len().is_multiple_of(2) {
        return err_owned(errors::wrong_arity("msetnx"));
    }
    if let Some(cl) = s.shared.cluster.clone() {
        // Across slots there is no atomicity: check that no key exists, then write them all.
        let (shared, lv, ctx) = (s.shared.clone(), s.levels(), s.ctx());
        let pairs: Vec<(Bytes, Bytes)> = a[1..]
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        s.defer(
            async move {
                for (k, _) in &pairs {
                    match exec::run(&shared, &cl, k, Op::Exists, lv, ctx).await {
                        Ok(Outcome::Int(0)) => {}
                        Ok(_) => return Frame::Integer(0),
                        Err(e) => return Frame::error(e.text()),
                    }
                }
                for (k, v) in &pairs {
                    if let Err(e) = exec::run(&shared, &cl, k, Op::set(v), lv, ctx).await {
                        return Frame::error(e.text());
                    }
                }
                Frame::Integer(1)
            },
            None,
        );
        return None;
    }
    let done = s.shared.store.mset(&pairs(a), true, &s.ctx());
    if done {
        for p in a[1..].chunks_exact(2) {
            crate::notify::generic(&s.shared, "set", &p[0], s.tracking_id);
        }
    }
    Some(Frame::Integer(i64::from(done)))
}

fn incr_by(s: &mut Session, key: &Bytes, by: i64) -> Option<Frame> {
    keyed(s, key, Op::IncrBy(by), reply)
}

/// # Format
/// `INCR key`
pub(super) fn incr(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    incr_by(s, &a[1], 1)
}

/// # Format
/// `DECR key`
pub(super) fn decr(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    incr_by(s, &a[1], -1)
}

/// # Format
/// `INCRBY key increment`
pub(super) fn incrby(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match int_arg(&a[2]) {
        Ok(by) => incr_by(s, &a[1], by),
        Err(e) => e,
    }
}

/// # Format
/// `DECRBY key decrement`
pub(super) fn decrby(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match int_arg(&a[2]) {
        Ok(i64::MIN) => err("ERR decrement would overflow"),
        Ok(by) => incr_by(s, &a[1], -by),
        Err(e) => e,
    }
}

/// # Format
/// `INCRBYFLOAT key increment`
pub(super) fn incrbyfloat(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::IncrByFloat(&a[2]), reply)
}

/// # Format
/// `APPEND key value`
pub(super) fn append(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::Append(&a[2]), reply)
}

/// # Format
/// `STRLEN key`
pub(super) fn strlen(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::Strlen, reply)
}

/// # Format
/// `GETRANGE key start end` (also `SUBSTR`)
pub(super) fn getrange(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let (start, end) = match (int_arg(&a[2]), int_arg(&a[3])) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    keyed(s, &a[1], Op::GetRange(start, end), reply)
}

/// # Format
/// `SETRANGE key offset value`
pub(super) fn setrange(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let offset = match int_arg(&a[2]) {
        Ok(o) if o < 0 => return err(errors::OFFSET_OUT_OF_RANGE),
        Ok(o) => o as u64,
        Err(e) => return e,
    };
    keyed(s, &a[1], Op::SetRange(offset, &a[3]), reply)
}

/// LCS's options.
struct LcsOpts {
    len: bool,
    idx: bool,
    with_match_len: bool,
    min_len: u64,
}

/// # Format
/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]`
///
/// Reads both keys (missing ones are empty strings) and computes as Redis does. In a cluster the
/// two keys are read at the session's read level, one after the other.
pub(super) fn lcs(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let mut o = LcsOpts {
        len: false,
        idx: false,
        with_match_len: false,
        min_len: 0,
    };
    let mut j = 3;
    while j < a.len() {
        let opt = &a[j][..];
        if opt.eq_ignore_ascii_case(b"idx") {
            o.idx = true;
        } else if opt.eq_ignore_ascii_case(b"len") {
            o.len = true;
        } else if opt.eq_ignore_ascii_case(b"withmatchlen") {
            o.with_match_len = true;
        } else if opt.eq_ignore_ascii_case(b"minmatchlen") && j + 1 < a.len() {
            match int_arg(&a[j + 1]) {
                Ok(n) => o.min_len = n.max(0) as u64,
                Err(e) => return e,
            }
            j += 1;
        } else {
            return err(errors::SYNTAX);
        }
        j += 1;
    }
    if o.len && o.idx {
        return err("ERR If you want both the length and indexes, please just use IDX.");
    }
    let max = s.ctx().max_len;
    let Some(cl) = s.shared.cluster.clone() else {
        let value = |s: &Session, k: &Bytes| match read(s, k) {
            Outcome::Value(v) => v,
            _ => Bytes::new(),
        };
        let (x, y) = (value(s, &a[1]), value(s, &a[2]));
        return Some(lcs_reply(&x, &y, &o, max));
    };
    let (shared, lv, ctx) = (s.shared.clone(), s.levels(), s.ctx());
    let (k1, k2) = (a[1].clone(), a[2].clone());
    s.defer(
        async move {
            let mut values = Vec::with_capacity(2);
            for k in [&k1, &k2] {
                match exec::run(&shared, &cl, k, Op::Get, lv, ctx).await {
                    Ok(Outcome::Value(v)) => values.push(v),
                    Ok(_) => values.push(Bytes::new()),
                    Err(e) => return Frame::error(e.text()),
                }
            }
            lcs_reply(&values[0], &values[1], &o, max)
        },
        None,
    );
    None
}

fn lcs_reply(x: &[u8], y: &[u8], o: &LcsOpts, max: u64) -> Frame {
    use hypercache_cluster::lcs;
    if x.len() as u64 >= u64::from(u32::MAX) - 1 || y.len() as u64 >= u64::from(u32::MAX) - 1 {
        return Frame::error("ERR String too long for LCS");
    }
    if lcs::table_bytes(x.len(), y.len()) > max {
        return Frame::error(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        );
    }
    let r = lcs::lcs(x, y, o.min_len);
    if o.idx {
        let pair = |p: (u32, u32)| {
            Frame::Array(vec![
                Frame::Integer(i64::from(p.0)),
                Frame::Integer(i64::from(p.1)),
            ])
        };
        let matches = r
            .matches
            .iter()
            .map(|m| {
                let mut v = vec![pair(m.a), pair(m.b)];
                if o.with_match_len {
                    v.push(Frame::Integer(i64::from(m.len())));
                }
                Frame::Array(v)
            })
            .collect();
        Frame::Map(vec![
            (Frame::bulk(b"matches"), Frame::Array(matches)),
            (Frame::bulk(b"len"), Frame::Integer(i64::from(r.len))),
        ])
    } else if o.len {
        Frame::Integer(i64::from(r.len))
    } else {
        Frame::Bulk(Bytes::from(r.seq))
    }
}
