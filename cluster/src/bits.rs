//! Bitmaps: the arithmetic of `SETBIT`, `GETBIT`, `BITCOUNT`, `BITPOS`, `BITOP` and `BITFIELD`
//! on a string value, as pure functions (Redis's `bitops.c`, same results on every input).
//!
//! Bits are numbered from the most significant bit of the first byte: bit 0 is `0x80` of byte 0.
//! A value is an infinite string of zero bits past its end.

use serde::{Deserialize, Serialize};

use crate::op::OpError;

/// The range argument of `BITCOUNT` and `BITPOS`, as parsed. Redis parses it only once it knows
/// the key exists, so a bad range is carried here and becomes an error only then (a missing key
/// answers 0, or -1, whatever the range says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitSpan {
    /// No range: the whole value.
    Whole,
    /// `start [end]` in bytes (`BYTE`, the default); no end: to the end of the value.
    Bytes(i64, Option<i64>),
    /// `start [end] BIT`.
    Bits(i64, Option<i64>),
    /// The range did not parse: the error to answer if the key exists.
    Invalid(OpError),
}

/// Redis's index arithmetic for a range of `total` units: negative indexes count from the end,
/// both ends are clamped into the value, and `None` is an empty range.
fn clamp(start: i64, end: i64, total: i64) -> Option<(u64, u64)> {
    let (mut s, mut e) = (start, end);
    if s < 0 {
        s = s.saturating_add(total);
    }
    if e < 0 {
        e = e.saturating_add(total);
    }
    s = s.max(0);
    e = e.max(0).min(total - 1);
    (s <= e && total > 0).then_some((s as u64, e as u64))
}

/// The inclusive bit range a span covers in a value of `len` bytes (`None`: empty), and whether
/// an end was given.
fn bit_range(span: BitSpan, len: usize) -> Result<(Option<(u64, u64)>, bool), OpError> {
    let bytes = len as i64;
    Ok(match span {
        BitSpan::Whole => (
            clamp(0, bytes - 1, bytes).map(|(s, e)| (s * 8, e * 8 + 7)),
            false,
        ),
        BitSpan::Bytes(s, e) => (
            clamp(s, e.unwrap_or(bytes - 1), bytes).map(|(s, e)| (s * 8, e * 8 + 7)),
            e.is_some(),
        ),
        BitSpan::Bits(s, e) => (clamp(s, e.unwrap_or(bytes * 8 + 7), bytes * 8), e.is_some()),
        BitSpan::Invalid(err) => return Err(err),
    })
}

fn bit_at(v: &[u8], pos: u64) -> bool {
    let byte = (pos >> 3) as usize;
    byte < v.len() && v[byte] & (0x80 >> (pos & 7)) != 0
}

/// `GETBIT`: the bit at `offset` (zero past the end).
pub fn get_bit(v: &[u8], offset: u64) -> bool {
    bit_at(v, offset)
}

/// `BITCOUNT`: the set bits of `v` in the span.
pub fn count(v: &[u8], span: BitSpan) -> Result<i64, OpError> {
    // Redis answers 0 for two negative indexes in the wrong order before it reads BIT/BYTE.
    let (range, _) = bit_range(span, v.len())?;
    let Some((s, e)) = range else {
        return Ok(0);
    };
    let (first, last) = ((s >> 3) as usize, (e >> 3) as usize);
    let mut n: u64 = v[first..=last]
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    // Take away the bits of the edge bytes outside the range.
    let head = v[first] & !(0xFFu8 >> (s & 7));
    let tail = v[last] & (0x7Fu8 >> (e & 7));
    n -= u64::from(head.count_ones()) + u64::from(tail.count_ones());
    Ok(n as i64)
}

/// `BITPOS`: the first bit equal to `bit` in the span of `v`; -1 when there is none, except that
/// a search for 0 without an explicit end sees the zeros past the value's end.
pub fn position(v: &[u8], bit: bool, span: BitSpan) -> Result<i64, OpError> {
    let (range, end_given) = bit_range(span, v.len())?;
    let Some((s, e)) = range else {
        return Ok(-1);
    };
    let skip = if bit { 0u8 } else { 0xFF };
    let mut pos = s;
    while pos <= e {
        // Whole bytes that cannot hold the bit are skipped at once.
        if pos & 7 == 0 && pos + 7 <= e && v[(pos >> 3) as usize] == skip {
            pos += 8;
            continue;
        }
        if bit_at(v, pos) == bit {
            return Ok(pos as i64);
        }
        pos += 1;
    }
    if bit || end_given {
        return Ok(-1);
    }
    // Redis's search for 0 runs to the end of the last byte of the range, then past it.
    Ok(((e >> 3) + 1) as i64 * 8)
}

/// `SETBIT`: sets the bit at `offset` in `v` (grown with zeros to reach it) and returns its old
/// value.
pub fn set_bit(v: &mut Vec<u8>, offset: u64, on: bool) -> bool {
    let byte = (offset >> 3) as usize;
    if v.len() <= byte {
        v.resize(byte + 1, 0);
    }
    let mask = 0x80u8 >> (offset & 7);
    let old = v[byte] & mask != 0;
    if on {
        v[byte] |= mask;
    } else {
        v[byte] &= !mask;
    }
    old
}

/// The operation of `BITOP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOp {
    /// `AND`
    And,
    /// `OR`
    Or,
    /// `XOR`
    Xor,
    /// `NOT` (one source).
    Not,
}

/// `BITOP`: the result of `op` over the sources (a missing key is an empty string), as long as the
/// longest source; empty when every source is.
pub fn bitop(op: BitOp, srcs: &[Option<&[u8]>]) -> Vec<u8> {
    let len = srcs
        .iter()
        .map(|s| s.map_or(0, <[u8]>::len))
        .max()
        .unwrap_or(0);
    let byte = |s: &Option<&[u8]>, j: usize| s.and_then(|s| s.get(j).copied()).unwrap_or(0);
    (0..len)
        .map(|j| {
            let first = byte(&srcs[0], j);
            srcs[1..].iter().fold(
                if op == BitOp::Not { !first } else { first },
                |acc, s| match op {
                    BitOp::And => acc & byte(s, j),
                    BitOp::Or => acc | byte(s, j),
                    BitOp::Xor => acc ^ byte(s, j),
                    BitOp::Not => acc,
                },
            )
        })
        .collect()
}

/// What `BITFIELD` does when a `SET` or `INCRBY` leaves the field's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Wrap around (the default).
    Wrap,
    /// Saturate at the minimum or maximum.
    Sat,
    /// Do nothing and answer nil.
    Fail,
}

/// One `BITFIELD` subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldOp {
    /// `GET`, `SET value` or `INCRBY increment`.
    pub kind: FieldKind,
    /// The `OVERFLOW` in force when it was given.
    pub overflow: Overflow,
    /// Signed (`i`) or unsigned (`u`).
    pub signed: bool,
    /// Width, 1..=64 signed or 1..=63 unsigned.
    pub bits: u8,
    /// Bit offset (`#n` already multiplied by the width).
    pub offset: u64,
}

/// What a [`FieldOp`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `GET`
    Get,
    /// `SET value`
    Set(i64),
    /// `INCRBY increment`
    IncrBy(i64),
}

/// Bytes of one encoded [`FieldOp`].
const FIELD_OP_LEN: usize = 20;

impl FieldOp {
    /// Appends the operation's fixed 20-byte encoding: kind (0 get, 1 set, 2 incrby), overflow
    /// (0 wrap, 1 sat, 2 fail), signed, width, offset (u64 LE), value (i64 LE).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, value) = match self.kind {
            FieldKind::Get => (0, 0),
            FieldKind::Set(v) => (1, v),
            FieldKind::IncrBy(v) => (2, v),
        };
        let overflow = match self.overflow {
            Overflow::Wrap => 0,
            Overflow::Sat => 1,
            Overflow::Fail => 2,
        };
        out.extend_from_slice(&[kind, overflow, u8::from(self.signed), self.bits]);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }

    /// Whether the operation writes.
    pub fn writes(&self) -> bool {
        self.kind != FieldKind::Get
    }
}

/// Decodes a `BITFIELD` program written by [`FieldOp::encode`]; `None` if any part is out of
/// range (a program from another node is checked before it runs).
pub fn decode_fields(prog: &[u8]) -> Option<Vec<FieldOp>> {
    if !prog.len().is_multiple_of(FIELD_OP_LEN) {
        return None;
    }
    prog.chunks_exact(FIELD_OP_LEN)
        .map(|c| {
            let value = i64::from_le_bytes(c[12..20].try_into().ok()?);
            let kind = match c[0] {
                0 => FieldKind::Get,
                1 => FieldKind::Set(value),
                2 => FieldKind::IncrBy(value),
                _ => return None,
            };
            let overflow = match c[1] {
                0 => Overflow::Wrap,
                1 => Overflow::Sat,
                2 => Overflow::Fail,
                _ => return None,
            };
            let signed = match c[2] {
                0 => false,
                1 => true,
                _ => return None,
            };
            let bits = c[3];
            if bits == 0 || bits > if signed { 64 } else { 63 } {
                return None;
            }
            let offset = u64::from_le_bytes(c[4..12].try_into().ok()?);
            offset.checked_add(u64::from(bits))?;
            Some(FieldOp {
                kind,
                overflow,
                signed,
                bits,
                offset,
            })
        })
        .collect()
}

/// The highest bit a program writes, if it writes.
pub fn highest_write(ops: &[FieldOp]) -> Option<u64> {
    ops.iter()
        .filter(|o| o.writes())
        .map(|o| o.offset + u64::from(o.bits) - 1)
        .max()
}

fn get_unsigned(v: &[u8], offset: u64, bits: u8) -> u64 {
    (0..u64::from(bits)).fold(0u64, |acc, j| (acc << 1) | u64::from(bit_at(v, offset + j)))
}

fn set_unsigned(v: &mut [u8], offset: u64, bits: u8, value: u64) {
    for j in 0..u64::from(bits) {
        let on = value & (1u64 << (u64::from(bits) - 1 - j)) != 0;
        let pos = offset + j;
        let mask = 0x80u8 >> (pos & 7);
        let b = &mut v[(pos >> 3) as usize];
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }
}

fn get_signed(v: &[u8], offset: u64, bits: u8) -> i64 {
    let u = get_unsigned(v, offset, bits);
    if bits < 64 && u & (1u64 << (bits - 1)) != 0 {
        (u | (u64::MAX << bits)) as i64
    } else {
        u as i64
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: `Some(result)` when `value + incr` leaves the range
/// of `bits` unsigned bits (wrapped or saturated as `overflow` says; FAIL gives `Some(0)`, which
/// is never written).
fn unsigned_overflow(value: u64, incr: i64, bits: u8, overflow: Overflow) -> Option<u64> {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = (value as i64).wrapping_neg();
    let wrap = || value.wrapping_add(incr as u64) & !(u64::MAX << bits);
    if value > max || (incr > 0 && incr > maxincr) {
        Some(match overflow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => max,
            Overflow::Fail => 0,
        })
    } else if incr < 0 && incr < minincr {
        Some(match overflow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => 0,
            Overflow::Fail => 0,
        })
    } else {
        None
    }
}

/// Redis's `checkSignedBitfieldOverflow`, as [`unsigned_overflow`] for signed fields.
fn signed_overflow(value: i64, incr: i64, bits: u8, overflow: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                (c | mask) as i64
            } else {
                (c & !mask) as i64
            }
        } else {
            c as i64
        }
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        Some(match overflow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => max,
            Overflow::Fail => 0,
        })
    } else if value < min
        || (bits != 64 && incr < minincr)
        || (value < 0 && incr < 0 && incr < minincr)
    {
        Some(match overflow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => min,
            Overflow::Fail => 0,
        })
    } else {
        None
    }
}

/// Runs a `BITFIELD` program over `v`, which the caller has already grown to hold every bit the
/// program writes. Returns each operation's reply (nil for an overflow under `FAIL`) and how
/// many operations changed a field.
pub fn run_fields(v: &mut [u8], ops: &[FieldOp]) -> (Vec<Option<i64>>, usize) {
    let mut out = Vec::with_capacity(ops.len());
    let mut changes = 0;
    for op in ops {
        let (bits, offset) = (op.bits, op.offset);
        let reply = match op.kind {
            FieldKind::Get if op.signed => Some(get_signed(v, offset, bits)),
            FieldKind::Get => Some(get_unsigned(v, offset, bits) as i64),
            FieldKind::Set(x) | FieldKind::IncrBy(x) if op.signed => {
                let old = get_signed(v, offset, bits);
                let incr = matches!(op.kind, FieldKind::IncrBy(_));
                let (of, new) = if incr {
                    match signed_overflow(old, x, bits, op.overflow) {
                        Some(w) => (true, w),
                        None => (false, old.wrapping_add(x)),
                    }
                } else {
                    match signed_overflow(x, 0, bits, op.overflow) {
                        Some(w) => (true, w),
                        None => (false, x),
                    }
                };
                if of && op.overflow == Overflow::Fail {
                    None
                } else {
                    set_unsigned(v, offset, bits, new as u64);
                    changes += usize::from(old != new);
                    Some(if incr { new } else { old })
                }
            }
            FieldKind::Set(x) | FieldKind::IncrBy(x) => {
                let old = get_unsigned(v, offset, bits);
                let incr = matches!(op.kind, FieldKind::IncrBy(_));
                let (of, new) = if incr {
                    match unsigned_overflow(old, x, bits, op.overflow) {
                        Some(w) => (true, w),
                        None => (false, old.wrapping_add(x as u64)),
                    }
                } else {
                    match unsigned_overflow(x as u64, 0, bits, op.overflow) {
                        Some(w) => (true, w),
                        None => (false, x as u64),
                    }
                };
                if of && op.overflow == Overflow::Fail {
                    None
                } else {
                    set_unsigned(v, offset, bits, new);
                    changes += usize::from(old != new);
                    Some(if incr { new as i64 } else { old as i64 })
                }
            }
        };
        out.push(reply);
    }
    (out, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit by bit, the definition BITCOUNT and BITPOS must agree with.
    fn naive_count(v: &[u8], s: u64, e: u64) -> i64 {
        (s..=e).filter(|&p| bit_at(v, p)).count() as i64
    }

    #[test]
    fn count_matches_bit_by_bit_over_every_range() {
        let v = [0b1011_0001u8, 0xFF, 0x00, 0b0100_0010];
        for s in -40i64..40 {
            for e in -40i64..40 {
                let got = count(&v, BitSpan::Bits(s, Some(e))).unwrap();
                let want = clamp(s, e, 32).map_or(0, |(s, e)| naive_count(&v, s, e));
                assert_eq!(got, want, "bits {s} {e}");
            }
        }
        assert_eq!(count(&v, BitSpan::Whole).unwrap(), 14);
        assert_eq!(count(&v, BitSpan::Bytes(1, Some(1))).unwrap(), 8);
        assert_eq!(count(&v, BitSpan::Bytes(-1, Some(-1))).unwrap(), 2);
        assert_eq!(count(&[], BitSpan::Whole).unwrap(), 0);
        assert_eq!(
            count(&v, BitSpan::Invalid(OpError::Syntax)),
            Err(OpError::Syntax)
        );
    }

    #[test]
    fn position_follows_redis() {
        // Redis's own examples (BITPOS docs).
        let v = [0xFF, 0xF0, 0x00];
        assert_eq!(position(&v, false, BitSpan::Whole), Ok(12));
        let v = [0x00, 0xFF, 0xF0];
        assert_eq!(position(&v, true, BitSpan::Bytes(0, None)), Ok(8));
        assert_eq!(position(&v, true, BitSpan::Bytes(2, None)), Ok(16));
        assert_eq!(position(&v, true, BitSpan::Bytes(2, Some(-1))), Ok(16));
        assert_eq!(position(&v, true, BitSpan::Bits(7, Some(15))), Ok(8));
        assert_eq!(position(&[0], true, BitSpan::Whole), Ok(-1));
        // All ones: a 0 is found past the end, unless the end was given.
        assert_eq!(position(&[0xFF, 0xFF], false, BitSpan::Whole), Ok(16));
        assert_eq!(
            position(&[0xFF, 0xFF], false, BitSpan::Bytes(0, Some(-1))),
            Ok(-1)
        );
        assert_eq!(
            position(&[0xFF, 0xFF], false, BitSpan::Bits(3, None)),
            Ok(16)
        );
        assert_eq!(position(&[], false, BitSpan::Whole), Ok(-1));
    }

    #[test]
    fn bitop_pads_short_sources_with_zeros() {
        let a: &[u8] = &[0xF0, 0x0F];
        let b: &[u8] = &[0xFF];
        assert_eq!(bitop(BitOp::And, &[Some(a), Some(b)]), vec![0xF0, 0x00]);
        assert_eq!(bitop(BitOp::Or, &[Some(a), None]), vec![0xF0, 0x0F]);
        assert_eq!(bitop(BitOp::Xor, &[Some(a), Some(b)]), vec![0x0F, 0x0F]);
        assert_eq!(bitop(BitOp::Not, &[Some(a)]), vec![0x0F, 0xF0]);
        assert!(bitop(BitOp::Or, &[None, None]).is_empty());
    }

    fn field(kind: FieldKind, overflow: Overflow, signed: bool, bits: u8, offset: u64) -> FieldOp {
        FieldOp {
            kind,
            overflow,
            signed,
            bits,
            offset,
        }
    }

    #[test]
    fn fields_wrap_saturate_and_fail_as_redis() {
        let mut v = vec![0u8; 2];
        let ops = [
            field(FieldKind::IncrBy(200), Overflow::Wrap, false, 8, 0),
            field(FieldKind::IncrBy(100), Overflow::Wrap, false, 8, 0),
            field(FieldKind::IncrBy(250), Overflow::Sat, false, 8, 0),
            field(FieldKind::IncrBy(1), Overflow::Fail, false, 8, 0),
            field(FieldKind::Set(-1), Overflow::Wrap, true, 4, 8),
            field(FieldKind::Get, Overflow::Wrap, false, 4, 8),
            field(FieldKind::IncrBy(-10), Overflow::Sat, true, 4, 8),
            field(FieldKind::IncrBy(20), Overflow::Wrap, true, 4, 8),
        ];
        let (out, changes) = run_fields(&mut v, &ops);
        assert_eq!(
            out,
            vec![
                Some(200),
                Some(44),
                Some(255),
                None,
                Some(0),
                Some(15),
                Some(-8),
                Some(-4)
            ]
        );
        assert_eq!(changes, 6);
        let mut prog = Vec::new();
        for o in &ops {
            o.encode(&mut prog);
        }
        assert_eq!(decode_fields(&prog).unwrap(), ops.to_vec());
        assert!(decode_fields(&prog[1..]).is_none());
        assert_eq!(highest_write(&ops), Some(11));
    }

    #[test]
    fn sixty_four_bit_fields() {
        let mut v = vec![0u8; 8];
        let ops = [
            field(FieldKind::Set(i64::MAX), Overflow::Wrap, true, 64, 0),
            field(FieldKind::IncrBy(1), Overflow::Wrap, true, 64, 0),
            field(FieldKind::IncrBy(-1), Overflow::Sat, true, 64, 0),
            field(FieldKind::Get, Overflow::Wrap, false, 63, 1),
        ];
        let (out, _) = run_fields(&mut v, &ops);
        assert_eq!(out, vec![Some(0), Some(i64::MIN), Some(i64::MIN), Some(0)]);
    }
}
