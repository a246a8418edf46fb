//! Pieces of Redis's conversions between replies and Lua values (`script_lua.c`) shared by the
//! C API side ([`super::raw`], which does the conversions) and the error path.

use bytes::Bytes;
use mlua::{Table, Value};

/// Lua's number as Redis turns it into an integer reply (`(long long)lua_tonumber`).
pub(super) fn number_to_int(n: f64) -> i64 {
    if n.is_nan() {
        i64::MIN
    } else {
        n as i64
    }
}

/// Replaces CR and LF by spaces (a status or big number reply is one line).
pub(super) fn one_line(b: &[u8]) -> Bytes {
    b.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect::<Vec<u8>>()
        .into()
}

/// What an error table `{err=...}` becomes: the error text as the client sees it (its code
/// included). `None` if `t` is not an error table.
pub(crate) fn error_text(t: &Table) -> Option<Bytes> {
    match t.raw_get::<Value>("err").ok()? {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        _ => None,
    }
}

/// How deep a script's reply may nest (Redis stops where its Lua stack would overflow, about
/// 2,000 levels).
pub(super) const MAX_REPLY_DEPTH: usize = 1000;
