//! Bitmap commands: `SETBIT`, `GETBIT`, `BITCOUNT`, `BITPOS`, `BITOP`, `BITFIELD`,
//! `BITFIELD_RO`. Arguments are parsed here with Redis's errors, in Redis's order; the arithmetic
//! is `hypercache_cluster::bits`, run by the key's operation ([`Op`]), so that in a cluster each
//! command is a read-modify-write at the key's coordinator, replicated as the resulting value.

use bytes::Bytes;
use hypercache_cluster::bits::{self, BitOp, BitSpan, FieldKind, FieldOp, Overflow};
use hypercache_cluster::{Op, OpError, Outcome};
use hypercache_resp::{errors, num, Frame};

use super::{err, int_arg, keyed, reply};
use crate::cluster::exec;
use crate::session::Session;

const BIT_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const BIT_VALUE: &str = "ERR bit is not an integer or out of range";
const BITFIELD_TYPE: &str =
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

/// Redis's `getBitOffsetFromArgument`: a non-negative integer whose byte is within
/// `proto-max-bulk-len`; with `bits`, `#n` means `n * bits`.
fn bit_offset(raw: &[u8], bits: Option<u8>, max_len: u64) -> Result<u64, Option<Frame>> {
    let (hash, digits) = match (raw.first(), bits) {
        (Some(b'#'), Some(_)) => (true, &raw[1..]),
        _ => (false, raw),
    };
    let mut n = num::parse_i64(digits).ok_or_else(|| err(BIT_OFFSET))?;
    if hash {
        n = n
            .checked_mul(i64::from(bits.unwrap_or(1)))
            .ok_or_else(|| err(BIT_OFFSET))?;
    }
    if n < 0 || (n as u64 >> 3) >= max_len {
        return Err(err(BIT_OFFSET));
    }
    Ok(n as u64)
}

/// # Format
/// `SETBIT key offset value`
pub(super) fn setbit(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let offset = match bit_offset(&a[2], None, s.ctx().max_len) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let on = match num::parse_i64(&a[3]) {
        Some(0) => false,
        Some(1) => true,
        _ => return err(BIT_VALUE),
    };
    keyed(s, &a[1], Op::SetBit { offset, on }, reply)
}

/// # Format
/// `GETBIT key offset`
pub(super) fn getbit(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match bit_offset(&a[2], None, s.ctx().max_len) {
        Ok(o) => keyed(s, &a[1], Op::GetBit(o), reply),
        Err(e) => e,
    }
}

/// `BIT` or `BYTE` (any case).
fn unit(raw: &[u8]) -> Option<bool> {
    if raw.eq_ignore_ascii_case(b"bit") {
        Some(true)
    } else if raw.eq_ignore_ascii_case(b"byte") {
        Some(false)
    } else {
        None
    }
}

fn span(start: i64, end: Option<i64>, bit_unit: bool) -> BitSpan {
    if bit_unit {
        BitSpan::Bits(start, end)
    } else {
        BitSpan::Bytes(start, end)
    }
}

/// BITCOUNT's range, in Redis 7.0's order of checks: start, end, the wrong-order negative pair
/// (which answers 0 before `BIT`/`BYTE` is looked at), then the unit.
fn count_span(a: &[Bytes]) -> BitSpan {
    let (Some(start), Some(end)) = (
        a.get(2).and_then(|r| num::parse_i64(r)),
        a.get(3).and_then(|r| num::parse_i64(r)),
    ) else {
        return match a.len() {
            2 => BitSpan::Whole,
            4 | 5 => BitSpan::Invalid(OpError::NotInteger),
            _ => BitSpan::Invalid(OpError::Syntax),
        };
    };
    if a.len() > 5 {
        return BitSpan::Invalid(OpError::Syntax);
    }
    if start < 0 && end < 0 && start > end {
        return BitSpan::Bytes(1, Some(0));
    }
    match a.get(4).map(|u| unit(u)) {
        None => BitSpan::Bytes(start, Some(end)),
        Some(Some(b)) => span(start, Some(end), b),
        Some(None) => BitSpan::Invalid(OpError::Syntax),
    }
}

/// # Format
/// `BITCOUNT key [start end [BYTE|BIT]]`
pub(super) fn bitcount(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::BitCount(count_span(a)), reply)
}

/// BITPOS's range: start, then the unit, then end, as Redis checks them.
fn pos_span(a: &[Bytes]) -> BitSpan {
    if a.len() == 3 {
        return BitSpan::Whole;
    }
    if a.len() > 6 {
        return BitSpan::Invalid(OpError::Syntax);
    }
    let Some(start) = num::parse_i64(&a[3]) else {
        return BitSpan::Invalid(OpError::NotInteger);
    };
    let bit_unit = match a.get(5).map(|u| unit(u)) {
        None => false,
        Some(Some(b)) => b,
        Some(None) => return BitSpan::Invalid(OpError::Syntax),
    };
    let end = match a.get(4) {
        None => None,
        Some(r) => match num::parse_i64(r) {
            Some(e) => Some(e),
            None => return BitSpan::Invalid(OpError::NotInteger),
        },
    };
    span(start, end, bit_unit)
}

/// # Format
/// `BITPOS key bit [start [end [BYTE|BIT]]]`
pub(super) fn bitpos(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let bit = match int_arg(&a[2]) {
        Ok(0) => false,
        Ok(1) => true,
        Ok(_) => return err("ERR The bit argument must be 1 or 0."),
        Err(e) => return e,
    };
    keyed(
        s,
        &a[1],
        Op::BitPos {
            bit,
            span: pos_span(a),
        },
        reply,
    )
}

/// Redis's `getBitfieldTypeFromArgument`: `i1`..`i64` or `u1`..`u63`.
fn field_type(raw: &[u8]) -> Option<(bool, u8)> {
    let signed = match raw.first()? {
        b'i' => true,
        b'u' => false,
        _ => return None,
    };
    let bits = num::parse_i64(&raw[1..])?;
    (1..=if signed { 64 } else { 63 })
        .contains(&bits)
        .then_some((signed, bits as u8))
}

/// Parses BITFIELD's subcommands into a program (`Err`: the reply, as Redis orders its checks).
fn parse_fields(a: &[Bytes], read_only: bool, max_len: u64) -> Result<Vec<u8>, Option<Frame>> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < a.len() {
        let rem = a.len() - j - 1;
        let sub = &a[j][..];
        let is = |n: &str| sub.eq_ignore_ascii_case(n.as_bytes());
        let kind = if is("get") && rem >= 2 {
            FieldKind::Get
        } else if is("set") && rem >= 3 {
            FieldKind::Set(0)
        } else if is("incrby") && rem >= 3 {
            FieldKind::IncrBy(0)
        } else if is("overflow") && rem >= 1 {
            let t = &a[j + 1][..];
            overflow = if t.eq_ignore_ascii_case(b"wrap") {
                Overflow::Wrap
            } else if t.eq_ignore_ascii_case(b"sat") {
                Overflow::Sat
            } else if t.eq_ignore_ascii_case(b"fail") {
                Overflow::Fail
            } else {
                return Err(err("ERR Invalid OVERFLOW type specified"));
            };
            j += 2;
            continue;
        } else {
            return Err(err(errors::SYNTAX));
        };
        let (signed, bits) = field_type(&a[j + 1]).ok_or_else(|| err(BITFIELD_TYPE))?;
        let offset = bit_offset(&a[j + 2], Some(bits), max_len)?;
        let kind = match kind {
            FieldKind::Get => kind,
            FieldKind::Set(_) => FieldKind::Set(int_arg(&a[j + 3])?),
            FieldKind::IncrBy(_) => FieldKind::IncrBy(int_arg(&a[j + 3])?),
        };
        ops.push(FieldOp {
            kind,
            overflow,
            signed,
            bits,
            offset,
        });
        j += if kind == FieldKind::Get { 3 } else { 4 };
    }
    if read_only && ops.iter().any(FieldOp::writes) {
        return Err(err("ERR BITFIELD_RO only supports the GET subcommand"));
    }
    let mut prog = Vec::with_capacity(ops.len() * 20);
    for op in &ops {
        op.encode(&mut prog);
    }
    Ok(prog)
}

fn bitfield_generic(s: &mut Session, a: &[Bytes], read_only: bool) -> Option<Frame> {
    match parse_fields(a, read_only, s.ctx().max_len) {
        Ok(prog) => keyed(s, &a[1], Op::BitField(&prog), reply),
        Err(e) => e,
    }
}

/// # Format
/// `BITFIELD key [GET type offset | SET type offset value | INCRBY type offset increment |
/// OVERFLOW WRAP|SAT|FAIL] ...`
pub(super) fn bitfield(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    bitfield_generic(s, a, false)
}

/// # Format
/// `BITFIELD_RO key [GET type offset] ...`
pub(super) fn bitfield_ro(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    bitfield_generic(s, a, true)
}

/// # Format
/// `BITOP AND|OR|XOR|NOT destkey key [key ...]`
///
/// In a cluster the sources are read one by one at the session's read level and the result is
/// written at the destination's coordinator: like the other multi-key commands, not atomic
/// across slots.
pub(super) fn bitop(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let name = &a[1][..];
    let op = if name.eq_ignore_ascii_case(b"and") {
        BitOp::And
    } else if name.eq_ignore_ascii_case(b"or") {
        BitOp::Or
    } else if name.eq_ignore_ascii_case(b"xor") {
        BitOp::Xor
    } else if name.eq_ignore_ascii_case(b"not") {
        BitOp::Not
    } else {
        return err(errors::SYNTAX);
    };
    if op == BitOp::Not && a.len() != 4 {
        return err("ERR BITOP NOT must be called with a single source key.");
    }
    let Some(cl) = s.shared.cluster.clone() else {
        let srcs: Vec<&[u8]> = a[3..].iter().map(|k| &k[..]).collect();
        let (n, existed) = s
            .shared
            .store
            .bitop(&a[2], &srcs, |v| bits::bitop(op, v), &s.ctx());
        match (n, existed) {
            (0, true) => crate::notify::generic(&s.shared, "del", &a[2], s.tracking_id),
            (0, false) => {}
            _ => crate::notify::generic(&s.shared, "set", &a[2], s.tracking_id),
        }
        return Some(Frame::Integer(n as i64));
    };
    let (shared, lv, ctx) = (s.shared.clone(), s.levels(), s.ctx());
    let (dst, srcs) = (a[2].clone(), a[3..].to_vec());
    s.defer(
        async move {
            let mut values = Vec::with_capacity(srcs.len());
            for k in &srcs {
                match exec::run(&shared, &cl, k, Op::Get, lv, ctx).await {
                    Ok(Outcome::Value(v)) => values.push(Some(v)),
                    Ok(_) => values.push(None),
                    Err(e) => return Frame::error(e.text()),
                }
            }
            let views: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            let result = bits::bitop(op, &views);
            match exec::run(&shared, &cl, &dst, Op::StoreBitOp(&result), lv, ctx).await {
                Ok(o) => reply(o),
                Err(e) => Frame::error(e.text()),
            }
        },
        None,
    );
    None
}
