//! RESP2/RESP3 frames: the values servers send and the general decoder that reads them back.
//!
//! Replies are built as [`Frame`]s and encoded for the connection's [`Protocol`]: RESP3 types that
//! RESP2 lacks are downgraded the way Redis does it (maps become flat arrays, doubles and verbatim
//! strings become bulk strings, booleans become integers, null becomes `$-1` or `*-1`).

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol a connection speaks, chosen with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, every connection's starting protocol.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// One RESP value.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR ...`: the text includes the error code (`ERR`, `WRONGTYPE`, ...).
    Error(Bytes),
    /// `:1`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// The null bulk string in RESP2 (`$-1`), `_` in RESP3.
    Null,
    /// The null array in RESP2 (`*-1`), `_` in RESP3.
    NullArray,
    /// `*N`
    Array(Vec<Frame>),
    /// `%N` (RESP3); a flat array of key, value, ... in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// `~N` (RESP3); an array in RESP2.
    Set(Vec<Frame>),
    /// `,1.5` (RESP3); a bulk string in RESP2. Holds the text Redis would print.
    Double(Bytes),
    /// `#t` (RESP3); `:1`/`:0` in RESP2.
    Boolean(bool),
    /// `=15\r\ntxt:...` (RESP3); a bulk string of the text alone in RESP2.
    Verbatim {
        /// Three-letter format, `txt` or `mkd`.
        format: [u8; 3],
        /// The text.
        text: Bytes,
    },
    /// `(123...` (RESP3); a bulk string in RESP2.
    BigNumber(Bytes),
    /// `>N` (RESP3 out-of-band data); an array in RESP2.
    Push(Vec<Frame>),
}

impl Frame {
    /// A simple string from static text.
    pub fn simple(s: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(s.as_bytes()))
    }
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::simple("OK")
    }
    /// An error reply; `msg` includes the code, e.g. `"ERR syntax error"`.
    pub fn error(msg: impl Into<Bytes>) -> Frame {
        Frame::Error(msg.into())
    }
    /// A bulk string copied from `b`.
    pub fn bulk(b: &[u8]) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(b))
    }

    /// Encodes the frame for `proto` at the end of `out`.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        let r3 = proto == Protocol::Resp3;
        match self {
            Frame::Simple(s) => line(out, b'+', s),
            Frame::Error(s) => line(out, b'-', s),
            Frame::Integer(i) => int_line(out, b':', *i),
            Frame::Bulk(b) => bulk(out, b'$', b),
            Frame::Null if r3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::NullArray if r3 => out.put_slice(b"_\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                int_line(out, b'*', items.len() as i64);
                items.iter().for_each(|f| f.encode(proto, out));
            }
            Frame::Map(pairs) => {
                if r3 {
                    int_line(out, b'%', pairs.len() as i64);
                } else {
                    int_line(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Set(items) | Frame::Push(items) => {
                let tag = match (self, r3) {
                    (_, false) => b'*',
                    (Frame::Set(_), true) => b'~',
                    _ => b'>',
                };
                int_line(out, tag, items.len() as i64);
                items.iter().for_each(|f| f.encode(proto, out));
            }
            Frame::Double(d) if r3 => line(out, b',', d),
            Frame::Double(d) => bulk(out, b'$', d),
            Frame::Boolean(b) if r3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Boolean(b) => int_line(out, b':', i64::from(*b)),
            Frame::Verbatim { format, text } if r3 => {
                int_line(out, b'=', text.len() as i64 + 4);
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Frame::Verbatim { text, .. } => bulk(out, b'$', text),
            Frame::BigNumber(n) if r3 => line(out, b'(', n),
            Frame::BigNumber(n) => bulk(out, b'$', n),
        }
    }

    /// The header of an array of `len` items whose items are encoded after it one by one (the
    /// reply of `EXEC`, whose items are its commands' replies).
    pub fn encode_array_header(len: usize, out: &mut BytesMut) {
        int_line(out, b'*', len as i64);
    }

    /// The frame encoded on its own, for tests and tools.
    pub fn to_bytes(&self, proto: Protocol) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(proto, &mut out);
        out.freeze()
    }
}

fn line(out: &mut BytesMut, tag: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(tag);
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

/// Writes `<tag><n>\r\n`.
pub fn int_line(out: &mut BytesMut, tag: u8, n: i64) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(n).as_bytes();
    out.reserve(s.len() + 3);
    out.put_u8(tag);
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

/// Writes a bulk string `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut BytesMut, tag: u8, b: &[u8]) {
    int_line(out, tag, b.len() as i64);
    out.reserve(b.len() + 2);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// Limits for [`decode`].
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest bulk string, in bytes.
    pub max_bulk_len: usize,
    /// Largest aggregate (array, map, set, push) element count.
    pub max_elements: usize,
    /// Deepest nesting of aggregates.
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_elements: 1 << 24,
            max_depth: 64,
        }
    }
}

/// Why [`decode`] failed. Each variant means the input is not valid RESP within the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An unknown type byte.
    #[error("unknown frame type byte {0:#04x}")]
    UnknownType(u8),
    /// A length or integer that is not a number.
    #[error("invalid number")]
    InvalidNumber,
    /// A bulk string or aggregate larger than the limits.
    #[error("frame exceeds limits")]
    TooLarge,
    /// Aggregates nested deeper than the limit.
    #[error("frame nested too deeply")]
    TooDeep,
    /// A bulk string not followed by CRLF, or a malformed boolean/verbatim.
    #[error("malformed frame")]
    Malformed,
}

/// Decodes one frame from the front of `buf`. `Ok(None)` means more bytes are needed (a normal
/// outcome); `Ok(Some((frame, consumed)))` a whole frame.
pub fn decode(buf: &[u8], limits: &DecodeLimits) -> Result<Option<(Frame, usize)>, DecodeError> {
    let mut pos = 0;
    match decode_at(buf, &mut pos, limits, 0)? {
        Some(f) => Ok(Some((f, pos))),
        None => Ok(None),
    }
}

fn read_line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = &buf[*pos..];
    let n = rest.windows(2).position(|w| w == b"\r\n")?;
    *pos += n + 2;
    Some(&rest[..n])
}

fn read_int(buf: &[u8], pos: &mut usize) -> Result<Option<i64>, DecodeError> {
    match read_line(buf, pos) {
        None => Ok(None),
        Some(l) => crate::num::parse_i64(l)
            .map(Some)
            .ok_or(DecodeError::InvalidNumber),
    }
}

fn read_len(buf: &[u8], pos: &mut usize, max: usize) -> Result<Option<i64>, DecodeError> {
    match read_int(buf, pos)? {
        None => Ok(None),
        Some(n) if n < -1 => Err(DecodeError::InvalidNumber),
        Some(n) if n > 0 && n as u64 > max as u64 => Err(DecodeError::TooLarge),
        Some(n) => Ok(Some(n)),
    }
}

macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

fn decode_at(
    buf: &[u8],
    pos: &mut usize,
    limits: &DecodeLimits,
    depth: usize,
) -> Result<Option<Frame>, DecodeError> {
    if depth > limits.max_depth {
        return Err(DecodeError::TooDeep);
    }
    let tag = *need!(buf.get(*pos));
    *pos += 1;
    let text = |pos: &mut usize| read_line(buf, pos).map(Bytes::copy_from_slice);
    Ok(Some(match tag {
        b'+' => Frame::Simple(need!(text(pos))),
        b'-' => Frame::Error(need!(text(pos))),
        b',' => Frame::Double(need!(text(pos))),
        b'(' => Frame::BigNumber(need!(text(pos))),
        b':' => Frame::Integer(need!(read_int(buf, pos)?)),
        b'_' => {
            let l = need!(read_line(buf, pos));
            if !l.is_empty() {
                return Err(DecodeError::Malformed);
            }
            Frame::Null
        }
        b'#' => match need!(read_line(buf, pos)) {
            b"t" => Frame::Boolean(true),
            b"f" => Frame::Boolean(false),
            _ => return Err(DecodeError::Malformed),
        },
        b'$' | b'=' => {
            let n = need!(read_len(buf, pos, limits.max_bulk_len)?);
            if n == -1 {
                if tag == b'=' {
                    return Err(DecodeError::Malformed);
                }
                return Ok(Some(Frame::Null));
            }
            let n = n as usize;
            if buf.len() < *pos + n + 2 {
                return Ok(None);
            }
            if &buf[*pos + n..*pos + n + 2] != b"\r\n" {
                return Err(DecodeError::Malformed);
            }
            let body = &buf[*pos..*pos + n];
            *pos += n + 2;
            if tag == b'$' {
                Frame::Bulk(Bytes::copy_from_slice(body))
            } else {
                if n < 4 || body[3] != b':' {
                    return Err(DecodeError::Malformed);
                }
                Frame::Verbatim {
                    format: [body[0], body[1], body[2]],
                    text: Bytes::copy_from_slice(&body[4..]),
                }
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = need!(read_len(buf, pos, limits.max_elements)?);
            if n == -1 {
                if tag != b'*' {
                    return Err(DecodeError::Malformed);
                }
                return Ok(Some(Frame::NullArray));
            }
            let n = n as usize;
            if tag == b'%' {
                let mut pairs = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let k = need!(decode_at(buf, pos, limits, depth + 1)?);
                    let v = need!(decode_at(buf, pos, limits, depth + 1)?);
                    pairs.push((k, v));
                }
                Frame::Map(pairs)
            } else {
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(need!(decode_at(buf, pos, limits, depth + 1)?));
                }
                match tag {
                    b'*' => Frame::Array(items),
                    b'~' => Frame::Set(items),
                    _ => Frame::Push(items),
                }
            }
        }
        other => return Err(DecodeError::UnknownType(other)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = Bytes> {
        "[a-zA-Z0-9 .:_-]{0,20}".prop_map(|s| Bytes::from(s.into_bytes()))
    }

    fn frame(resp3: bool) -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            text().prop_map(Frame::Simple),
            text().prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Frame::Bulk(v.into())),
            Just(Frame::Null),
        ];
        let leaf = if resp3 {
            prop_oneof![
                leaf,
                any::<bool>().prop_map(Frame::Boolean),
                "-?[0-9]{1,5}\\.[0-9]{1,5}".prop_map(|s| Frame::Double(s.into_bytes().into())),
                "-?[0-9]{1,30}".prop_map(|s| Frame::BigNumber(s.into_bytes().into())),
                text().prop_map(|t| Frame::Verbatim {
                    format: *b"txt",
                    text: t
                }),
            ]
            .boxed()
        } else {
            prop_oneof![leaf, Just(Frame::NullArray)].boxed()
        };
        leaf.prop_recursive(4, 64, 8, move |inner| {
            if resp3 {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Array),
                    proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Set),
                    proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Push),
                    proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
                ]
                .boxed()
            } else {
                proptest::collection::vec(inner, 0..8)
                    .prop_map(Frame::Array)
                    .boxed()
            }
        })
    }

    fn roundtrip(f: &Frame, proto: Protocol) {
        let bytes = f.to_bytes(proto);
        let limits = DecodeLimits::default();
        let (back, used) = decode(&bytes, &limits).unwrap().unwrap();
        assert_eq!(&back, f);
        assert_eq!(used, bytes.len());
        // Every strict prefix is incomplete, never an error and never a different frame.
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], &limits), Ok(None), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn resp2_roundtrip_and_split_points(f in frame(false)) {
            roundtrip(&f, Protocol::Resp2);
        }

        #[test]
        fn resp3_roundtrip_and_split_points(f in frame(true)) {
            roundtrip(&f, Protocol::Resp3);
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&data, &DecodeLimits { max_bulk_len: 64, max_elements: 16, max_depth: 4 });
        }
    }

    #[test]
    fn resp2_downgrades() {
        let m = Frame::Map(vec![(Frame::bulk(b"a"), Frame::Integer(1))]);
        assert_eq!(&m.to_bytes(Protocol::Resp2)[..], b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(&m.to_bytes(Protocol::Resp3)[..], b"%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(&Frame::Null.to_bytes(Protocol::Resp2)[..], b"$-1\r\n");
        assert_eq!(&Frame::NullArray.to_bytes(Protocol::Resp2)[..], b"*-1\r\n");
        assert_eq!(&Frame::Null.to_bytes(Protocol::Resp3)[..], b"_\r\n");
        assert_eq!(
            &Frame::Boolean(true).to_bytes(Protocol::Resp2)[..],
            b":1\r\n"
        );
    }

    #[test]
    fn nesting_limit() {
        let deep = b"*1\r\n*1\r\n*1\r\n:1\r\n";
        let l = DecodeLimits {
            max_depth: 2,
            ..Default::default()
        };
        assert_eq!(decode(deep, &l), Err(DecodeError::TooDeep));
        let l = DecodeLimits {
            max_depth: 3,
            ..Default::default()
        };
        assert!(decode(deep, &l).unwrap().is_some());
    }
}
