//! INCRBYFLOAT's arithmetic, in C's `long double` so that results match Redis digit for digit.
//!
//! One of the crate's two uses of `unsafe` (the other is `thin.rs`): two FFI calls into `c/ldouble.c`, each passing slices
//! by pointer and length and an output buffer the C side never writes past.
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int, c_long};

extern "C" {
    fn hc_incrbyfloat(
        cur: *const u8,
        curlen: usize,
        has_cur: c_int,
        incr: *const u8,
        incrlen: usize,
        out: *mut c_char,
        outlen: usize,
    ) -> c_long;
    fn hc_is_long_double(s: *const u8, slen: usize) -> c_int;
}

/// Why an increment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatError {
    /// The stored value or the increment is not a float Redis accepts.
    NotFloat,
    /// The sum is NaN or infinite.
    NanOrInfinity,
}

/// `current + incr` printed as Redis prints it (`%.17Lf`, trailing zeros trimmed).
pub fn incr_by_float(current: Option<&[u8]>, incr: &[u8]) -> Result<Vec<u8>, FloatError> {
    let mut out = vec![0u8; 5 * 1024 + 64];
    let (ptr, len) = current.map_or((std::ptr::null(), 0), |c| (c.as_ptr(), c.len()));
    // SAFETY: every pointer/length pair describes a live slice; `out` is writable for its whole
    // length and the C code writes at most `outlen` bytes.
    let n = unsafe {
        hc_incrbyfloat(
            ptr,
            len,
            c_int::from(current.is_some()),
            incr.as_ptr(),
            incr.len(),
            out.as_mut_ptr().cast(),
            out.len(),
        )
    };
    match n {
        -2 => Err(FloatError::NanOrInfinity),
        n if n < 0 => Err(FloatError::NotFloat),
        n => {
            out.truncate(n as usize);
            Ok(out)
        }
    }
}

/// Whether `s` is a float Redis accepts (strtold over the whole string, no NaN, no leading space).
pub fn is_float(s: &[u8]) -> bool {
    // SAFETY: pointer and length describe a live slice; the C code only reads it.
    unsafe { hc_is_long_double(s.as_ptr(), s.len()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: Option<&str>, b: &str) -> Result<String, FloatError> {
        incr_by_float(a.map(str::as_bytes), b.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn matches_redis_digits() {
        assert_eq!(add(Some("10.50"), "0.1").unwrap(), "10.6");
        assert_eq!(add(Some("0.1"), "0.2").unwrap(), "0.3");
        assert_eq!(add(Some("5.0e3"), "2.0e2").unwrap(), "5200");
        assert_eq!(add(None, "-0").unwrap(), "0");
        assert_eq!(add(Some("3"), "-5").unwrap(), "-2");
    }

    #[test]
    fn rejects_what_redis_rejects() {
        assert_eq!(add(Some("abc"), "1"), Err(FloatError::NotFloat));
        assert_eq!(add(Some("1"), " 1"), Err(FloatError::NotFloat));
        assert_eq!(add(Some("1"), "nan"), Err(FloatError::NotFloat));
        assert_eq!(add(Some("1"), ""), Err(FloatError::NotFloat));
        assert_eq!(add(Some("inf"), "1"), Err(FloatError::NanOrInfinity));
        assert!(is_float(b"1e10") && !is_float(b"1x"));
    }
}
