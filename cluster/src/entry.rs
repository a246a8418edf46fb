//! One stored key's value and bookkeeping.

use crate::version::Version;

/// How Redis would encode the value, which `OBJECT ENCODING` reports. Redis decides this when the
/// value is written: `SET` tries the integer encoding, `APPEND`/`SETRANGE` leave a raw string,
/// `INCRBYFLOAT` never produces an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum EncodingHint {
    /// `int` if the value is a 64-bit integer of at most 20 chars, else `embstr`/`raw` by length.
    #[default]
    Auto,
    /// Always `raw`.
    Raw,
    /// `embstr` up to 44 bytes, else `raw`.
    NoInt,
}

/// A live value.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Version of the last write.
    pub version: Version,
    /// Absolute expiry in unix milliseconds; 0 means none.
    pub expire_at: u64,
    /// LRU clock (seconds, wrapping) of the last access.
    pub access: u32,
    /// See [`EncodingHint`].
    pub enc: EncodingHint,
}

impl Entry {
    /// A new entry.
    pub fn new(value: Vec<u8>, expire_at: u64, access: u32, enc: EncodingHint) -> Entry {
        Entry {
            value,
            version: Version::default(),
            expire_at,
            access,
            enc,
        }
    }

    /// Whether the entry has expired at `now` (unix ms). Redis treats a key as gone once
    /// `now > expire_at`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expire_at != 0 && now > self.expire_at
    }

    /// The encoding name `OBJECT ENCODING` reports.
    pub fn encoding(&self) -> &'static str {
        let v = &self.value;
        match self.enc {
            EncodingHint::Raw => "raw",
            EncodingHint::Auto if v.len() <= 20 && hypercache_num::is_long(v) => "int",
            _ if v.len() <= 44 => "embstr",
            _ => "raw",
        }
    }
}

/// Number helpers shared by the store (Redis's `string2ll`).
pub(crate) mod hypercache_num {
    /// Redis's `string2ll`: `0` or `-?[1-9][0-9]*` within `i64`.
    pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
        if s.is_empty() || s.len() > 20 {
            return None;
        }
        if s == b"0" {
            return Some(0);
        }
        let (neg, digits) = if s[0] == b'-' {
            (true, &s[1..])
        } else {
            (false, s)
        };
        if !matches!(digits.first(), Some(b'1'..=b'9')) {
            return None;
        }
        let mut v: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        if neg {
            if v > 1 << 63 {
                None
            } else {
                Some((v as i64).wrapping_neg())
            }
        } else {
            i64::try_from(v).ok()
        }
    }

    pub(crate) fn is_long(s: &[u8]) -> bool {
        parse_i64(s).is_some()
    }
}
