//! The server-side request parser: what Redis's `processMultibulkBuffer` and
//! `processInlineBuffer` do, as two pure phases.
//!
//! 1. [`check`] walks the headers of the first request in the buffer, allocates nothing, enforces
//!    every [`Limits`] field and says whether the request is complete (and how many bytes it spans)
//!    or how many bytes it will need at least.
//! 2. [`parse`] takes a complete request off the front of the buffer as argument slices that share
//!    the buffer's memory (no copy).
//!
//! Errors carry Redis's exact text; after one, the connection replies and closes, as Redis does.

use bytes::{Buf, Bytes, BytesMut};

/// Protocol limits, each a Redis setting with Redis's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk argument in bytes (`proto-max-bulk-len`, default 512 MB).
    pub max_bulk_len: u64,
    /// Most arguments in one multibulk request (Redis 7 accepts up to `INT_MAX`).
    pub max_multibulk_len: u64,
    /// Longest inline request line, and longest `*`/`$` header line (Redis's `PROTO_INLINE_MAX_SIZE`,
    /// 64 KB).
    pub max_inline_len: usize,
    /// Most bytes a client may have buffered for one incomplete request (`client-query-buffer-limit`,
    /// default 1 GB). Past it the connection is closed without a reply, as Redis does.
    pub max_query_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as u64,
            max_inline_len: 64 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
        }
    }
}

/// A request that cannot be parsed. The connection is closed after the error reply (if any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*<n>` where n is not a number or is above the limit.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `*` header line longer than the inline limit.
    #[error("too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$` header line longer than the inline limit.
    #[error("too big bulk count string")]
    TooBigBulkCount,
    /// An argument header that does not start with `$`; holds the byte found.
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedDollar(u8),
    /// `$<n>` where n is not a number, negative, or above `proto-max-bulk-len`.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// More than 10 arguments before authentication.
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// An argument over 16 KB before authentication.
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// An inline line longer than the inline limit.
    #[error("too big inline request")]
    TooBigInline,
    /// An inline line whose quotes do not balance.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// The client buffered more than `client-query-buffer-limit`; closed without a reply.
    #[error("query buffer limit reached")]
    QueryBufferLimit,
}

impl ProtocolError {
    /// The error reply Redis sends for this error (`ERR Protocol error: ...`), or `None` when Redis
    /// closes the connection without a reply.
    pub fn reply_text(&self) -> Option<Vec<u8>> {
        match self {
            ProtocolError::QueryBufferLimit => None,
            ProtocolError::ExpectedDollar(c) => {
                // Redis prints the raw byte, with CR and LF turned into spaces.
                let c = if *c == b'\r' || *c == b'\n' { b' ' } else { *c };
                let mut v = b"ERR Protocol error: expected '$', got '".to_vec();
                v.extend_from_slice(&[c, b'\'']);
                Some(v)
            }
            other => Some(format!("ERR Protocol error: {other}").into_bytes()),
        }
    }
}

/// What [`check`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The first request is not all there yet; at least `need` bytes in total are required.
    Incomplete {
        /// Lower bound of the buffer length that could complete the request.
        need: usize,
    },
    /// The first request spans `len` bytes.
    Complete {
        /// Bytes the request occupies.
        len: usize,
        /// Multibulk (`*`) rather than inline.
        multibulk: bool,
    },
}

/// One parsed request: its arguments, the command name first. Empty for an empty line or `*0`,
/// which Redis ignores without a reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Arguments, sharing the read buffer's memory.
    pub args: Vec<Bytes>,
}

fn find(buf: &[u8], from: usize, b: u8) -> Option<usize> {
    memchr::memchr(b, &buf[from..]).map(|i| from + i)
}

/// Checks the first request in `buf` against `limits`. `authenticated` is false while a password is
/// required and not yet given (Redis then allows at most 10 arguments of at most 16 KB).
pub fn check(buf: &[u8], limits: &Limits, authenticated: bool) -> Result<Check, ProtocolError> {
    let out = match buf.first() {
        None => Check::Incomplete { need: 1 },
        Some(b'*') => check_multibulk(buf, limits, authenticated)?,
        Some(_) => match find(buf, 0, b'\n') {
            Some(nl) => Check::Complete {
                len: nl + 1,
                multibulk: false,
            },
            None if buf.len() > limits.max_inline_len => return Err(ProtocolError::TooBigInline),
            None => Check::Incomplete {
                need: buf.len() + 1,
            },
        },
    };
    if let Check::Incomplete { .. } = out {
        if buf.len() > limits.max_query_buffer {
            return Err(ProtocolError::QueryBufferLimit);
        }
    }
    Ok(out)
}

/// Reads a `<tag><digits>\r` header at `pos`: `Ok(None)` if incomplete, else the value and the
/// position after `\r\n`.
fn header(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
    too_big: ProtocolError,
) -> Result<Option<(Option<i64>, usize)>, ProtocolError> {
    match find(buf, pos, b'\r') {
        None if buf.len() - pos > limits.max_inline_len => Err(too_big),
        None => Ok(None),
        // Redis waits for the byte after '\r' but does not look at it.
        Some(cr) if cr + 1 >= buf.len() => Ok(None),
        // The header may be just "\r" (no tag, no digits): then there is no number.
        Some(cr) => Ok(Some((
            buf.get(pos + 1..cr).and_then(crate::num::parse_i64),
            cr + 2,
        ))),
    }
}

fn check_multibulk(
    buf: &[u8],
    limits: &Limits,
    authenticated: bool,
) -> Result<Check, ProtocolError> {
    let Some((n, mut pos)) = header(buf, 0, limits, ProtocolError::TooBigMultibulkCount)? else {
        return Ok(Check::Incomplete {
            need: buf.len() + 1,
        });
    };
    let n = match n {
        Some(n) if n <= limits.max_multibulk_len.min(i32::MAX as u64) as i64 => n,
        _ => return Err(ProtocolError::InvalidMultibulkLength),
    };
    if n > 10 && !authenticated {
        return Err(ProtocolError::UnauthenticatedMultibulkLength);
    }
    for _ in 0..n.max(0) {
        if pos >= buf.len() {
            return Ok(Check::Incomplete { need: pos + 1 });
        }
        let Some((len, after)) = header(buf, pos, limits, ProtocolError::TooBigBulkCount)? else {
            return Ok(Check::Incomplete {
                need: buf.len() + 1,
            });
        };
        if buf[pos] != b'$' {
            return Err(ProtocolError::ExpectedDollar(buf[pos]));
        }
        let len = match len {
            Some(l) if l >= 0 && (l as u64) <= limits.max_bulk_len => l as usize,
            _ => return Err(ProtocolError::InvalidBulkLength),
        };
        if len > 16384 && !authenticated {
            return Err(ProtocolError::UnauthenticatedBulkLength);
        }
        let end = after.saturating_add(len).saturating_add(2);
        if buf.len() < end {
            return Ok(Check::Incomplete { need: end });
        }
        pos = end;
    }
    Ok(Check::Complete {
        len: pos,
        multibulk: true,
    })
}

/// Takes the first complete request off `buf`. `Ok(None)` means more bytes are needed; the buffer
/// is then untouched, and `need` (if given) receives the length the buffer must reach.
pub fn parse(
    buf: &mut BytesMut,
    limits: &Limits,
    authenticated: bool,
    need: Option<&mut usize>,
) -> Result<Option<Request>, ProtocolError> {
    let mut req = Request::default();
    Ok(parse_into(buf, limits, authenticated, need, &mut req)?.then_some(req))
}

/// Like [`parse`], but fills `req` (cleared first), so a connection reuses one argument vector
/// for all its requests. Returns whether a request was taken.
pub fn parse_into(
    buf: &mut BytesMut,
    limits: &Limits,
    authenticated: bool,
    need: Option<&mut usize>,
    req: &mut Request,
) -> Result<bool, ProtocolError> {
    req.args.clear();
    match check(buf, limits, authenticated)? {
        Check::Incomplete { need: n } => {
            if let Some(slot) = need {
                *slot = n;
            }
            Ok(false)
        }
        Check::Complete {
            len,
            multibulk: true,
        } => {
            let frame = buf.split_to(len).freeze();
            parse_multibulk(&frame, &mut req.args);
            Ok(true)
        }
        Check::Complete {
            len,
            multibulk: false,
        } => {
            let line = buf.split_to(len);
            let mut l = &line[..len - 1];
            if l.last() == Some(&b'\r') {
                l = &l[..l.len() - 1];
            }
            let args = crate::args::split_args(l).map_err(|_| ProtocolError::UnbalancedQuotes)?;
            req.args.extend(args.into_iter().map(Bytes::from));
            Ok(true)
        }
    }
}

/// Splits a checked multibulk request into argument slices of `frame`.
fn parse_multibulk(frame: &Bytes, args: &mut Vec<Bytes>) {
    let mut cur: &[u8] = frame;
    let line = |cur: &mut &[u8]| -> i64 {
        let cr = memchr::memchr(b'\r', cur).unwrap_or(cur.len().saturating_sub(2));
        let v = crate::num::parse_i64(&cur[1..cr]).unwrap_or(0);
        cur.advance((cr + 2).min(cur.len()));
        v
    };
    let n = line(&mut cur);
    args.reserve(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let len = line(&mut cur).max(0) as usize;
        let start = frame.len() - cur.len();
        args.push(frame.slice(start..start + len));
        cur.advance(len + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = parse(&mut buf, &Limits::default(), true, None)? {
            out.push(r.args.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    #[test]
    fn multibulk_and_inline() {
        let got =
            parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\nSET a \"b c\"\n\r\n*0\r\n").unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], vec![b"GET".to_vec(), b"a".to_vec()]);
        assert_eq!(got[1], vec![b"PING".to_vec()]);
        assert_eq!(
            got[2],
            vec![b"SET".to_vec(), b"a".to_vec(), b"b c".to_vec()]
        );
        assert!(got[3].is_empty() && got[4].is_empty());
    }

    #[test]
    fn errors_have_redis_text() {
        let cases: &[(&[u8], &str)] = &[
            (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
            (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
            (b"*1\r\nX1\r\n", "ERR Protocol error: expected '$', got 'X'"),
            // Found by cargo fuzz: an argument header that is only CRLF.
            (b"*1\r\n\r\nxx", "ERR Protocol error: expected '$', got ' '"),
            (
                b"SET \"a\r\n",
                "ERR Protocol error: unbalanced quotes in request",
            ),
            (
                b"*1\r\n$536870913\r\n",
                "ERR Protocol error: invalid bulk length",
            ),
        ];
        for (input, text) in cases {
            let e = parse_all(input).unwrap_err();
            assert_eq!(e.reply_text().as_deref(), Some(text.as_bytes()));
        }
        let long = vec![b'a'; 64 * 1024 + 1];
        assert_eq!(parse_all(&long), Err(ProtocolError::TooBigInline));
        let mut long = b"*".to_vec();
        long.extend(vec![b'1'; 64 * 1024 + 1]);
        assert_eq!(parse_all(&long), Err(ProtocolError::TooBigMultibulkCount));
    }

    #[test]
    fn unauthenticated_limits() {
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            parse(&mut buf, &Limits::default(), false, None),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"[..]);
        assert_eq!(
            parse(&mut buf, &Limits::default(), false, None),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
    }

    #[test]
    fn query_buffer_limit() {
        let limits = Limits {
            max_query_buffer: 100,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"*1\r\n$1000\r\n"[..]);
        buf.extend_from_slice(&[b'x'; 200]);
        assert_eq!(
            parse(&mut buf, &limits, true, None),
            Err(ProtocolError::QueryBufferLimit)
        );
    }

    proptest! {
        #[test]
        fn roundtrip_and_every_split_is_incomplete(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..6)
        ) {
            let bytes = encode(&args);
            prop_assert_eq!(parse_all(&bytes).unwrap(), vec![args.clone()]);
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                prop_assert_eq!(parse(&mut buf, &Limits::default(), true, None), Ok(None));
                prop_assert_eq!(buf.len(), cut);
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_all(&data);
        }
    }
}
