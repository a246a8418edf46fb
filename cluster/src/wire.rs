//! The inter-node protocol's framing (ARCHITECTURE §5): a fixed 18-byte header and a body.
//!
//! ```text
//! 0..2    magic       "HC"
//! 2       version     protocol version (4)
//! 3       kind        message kind (see [`Kind`])
//! 4       flags       bit 0: body is lz4-compressed; other bits must be 0
//! 5       reserved    must be 0
//! 6..14   request id  u64 LE; replies carry the id of their request (multiplexing)
//! 14..18  body length u32 LE (bytes on the wire, after compression)
//! ```
//!
//! Bodies are an [`Envelope`] then a [`crate::msg`] message, serialized with postcard (compact,
//! stable, serde). Bodies over [`COMPRESS_ABOVE`] bytes are lz4-compressed. Decoding is two-phase like the RESP parser:
//! [`check`] reads only the header, allocates nothing and enforces the size limit; [`decode`]
//! takes a complete frame. Anything malformed or oversized is an error (the link is then closed),
//! never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// First bytes of every frame.
pub const MAGIC: [u8; 2] = *b"HC";
/// Protocol version this build speaks.
pub const VERSION: u8 = 14;
/// Header size in bytes.
pub const HEADER_LEN: usize = 18;
/// Bodies larger than this are compressed.
pub const COMPRESS_ABOVE: usize = 4096;
const FLAG_LZ4: u8 = 1;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Handshake, first frame in each direction.
    Hello = 1,
    /// A request that expects a reply with the same id.
    Request = 2,
    /// The reply to a request.
    Reply = 3,
    /// A one-way message (no reply).
    Oneway = 4,
    /// The `cluster-secret` exchange of a handshake ([`Challenge`], [`Proof`]).
    Auth = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Reply,
            4 => Kind::Oneway,
            5 => Kind::Auth,
            _ => return None,
        })
    }
}

/// Limits on incoming frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest body accepted, bytes on the wire (default 1 GiB).
    pub max_body: u32,
    /// Largest body after decompression (default 1 GiB), checked before inflating.
    pub max_decompressed: usize,
    /// Whether compressed bodies are accepted at all (not before the handshake).
    pub lz4: bool,
}

impl WireLimits {
    /// Before the handshake: a hello is a few hundred bytes. A frame of more than
    /// [`HANDSHAKE_MAX_BODY`] bytes, or a compressed one, is refused from its header, before
    /// its body is read, so a stranger cannot make a node allocate (a decompression bomb).
    pub fn handshake() -> WireLimits {
        WireLimits {
            max_body: HANDSHAKE_MAX_BODY,
            max_decompressed: HANDSHAKE_MAX_BODY as usize,
            lz4: false,
        }
    }
}

/// Largest frame body accepted before the handshake, bytes.
pub const HANDSHAKE_MAX_BODY: u32 = 4096;

impl Default for WireLimits {
    /// 1 GiB either way: a frame must carry the largest value a client may write
    /// (`proto-max-bulk-len`, 512 MB by default) with room to spare, or one large SET would
    /// tear down the link it travels on.
    fn default() -> Self {
        WireLimits {
            max_body: 1 << 30,
            max_decompressed: 1 << 30,
            lz4: true,
        }
    }
}

/// A frame that cannot be accepted. The link is closed after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The first two bytes are not "HC": not a HyperCache peer, or the stream lost its framing.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// An unknown message kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flag or reserved bits that must be zero are set.
    #[error("bad flags {0:#04x}")]
    BadFlags(u8),
    /// The body is larger than the limit.
    #[error("frame body of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// The body does not decompress or does not deserialize.
    #[error("malformed body: {0}")]
    Body(String),
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// At least `need` bytes in total are needed.
    Incomplete {
        /// Buffer length that would complete the frame (or at least its header).
        need: usize,
    },
    /// The first frame spans `len` bytes.
    Complete {
        /// Header plus body.
        len: usize,
    },
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Kind.
    pub kind: Kind,
    /// Request id (replies echo their request's).
    pub id: u64,
    /// The body, decompressed.
    pub body: Bytes,
}

/// Checks the header at the front of `buf`.
pub fn check(buf: &[u8], limits: &WireLimits) -> Result<Check, WireError> {
    if buf.len() < 2 {
        return Ok(Check::Incomplete { need: HEADER_LEN });
    }
    if buf[..2] != MAGIC {
        return Err(WireError::BadMagic([buf[0], buf[1]]));
    }
    if buf.len() < HEADER_LEN {
        return Ok(Check::Incomplete { need: HEADER_LEN });
    }
    if buf[2] != VERSION {
        return Err(WireError::UnsupportedVersion(buf[2]));
    }
    Kind::from_u8(buf[3]).ok_or(WireError::UnknownKind(buf[3]))?;
    if buf[4] & !FLAG_LZ4 != 0 || buf[5] != 0 || (buf[4] & FLAG_LZ4 != 0 && !limits.lz4) {
        return Err(WireError::BadFlags(buf[4] | buf[5]));
    }
    let len = u32::from_le_bytes([buf[14], buf[15], buf[16], buf[17]]);
    if len > limits.max_body {
        return Err(WireError::TooLarge(u64::from(len)));
    }
    let total = HEADER_LEN + len as usize;
    Ok(if buf.len() < total {
        Check::Incomplete { need: total }
    } else {
        Check::Complete { len: total }
    })
}

/// Takes the first complete frame off `buf` (`Ok(None)`: more bytes needed, buffer untouched).
pub fn decode(buf: &mut BytesMut, limits: &WireLimits) -> Result<Option<Frame>, WireError> {
    let Check::Complete { len } = check(buf, limits)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(len).freeze();
    let kind = Kind::from_u8(frame[3]).expect("checked");
    let compressed = frame[4] & FLAG_LZ4 != 0;
    frame.advance(6);
    let id = frame.get_u64_le();
    frame.advance(4);
    let body = if compressed {
        let size = lz4_flex::block::uncompressed_size(&frame)
            .map_err(|e| WireError::Body(e.to_string()))?
            .0;
        if size > limits.max_decompressed {
            return Err(WireError::TooLarge(size as u64));
        }
        Bytes::from(
            lz4_flex::decompress_size_prepended(&frame)
                .map_err(|e| WireError::Body(e.to_string()))?,
        )
    } else {
        frame
    };
    Ok(Some(Frame { kind, id, body }))
}

/// Appends one frame carrying `body` to `out`, compressing large bodies. Writers coalesce: many
/// frames go into one buffer and out in one write.
pub fn encode(kind: Kind, id: u64, body: &[u8], out: &mut BytesMut) {
    let compressed;
    let (flags, payload): (u8, &[u8]) = if body.len() > COMPRESS_ABOVE {
        compressed = lz4_flex::compress_prepend_size(body);
        (FLAG_LZ4, &compressed)
    } else {
        (0, body)
    };
    out.reserve(HEADER_LEN + payload.len());
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind as u8);
    out.put_u8(flags);
    out.put_u8(0);
    out.put_u64_le(id);
    out.put_u32_le(payload.len() as u32);
    out.put_slice(payload);
}

/// Appends one frame carrying `body` (a message serialized with the default envelope, epoch 0,
/// as the machines make them) with the sender's ring `epoch` written into its envelope: the
/// link stamps every message as it frames it, without copying the body.
pub fn encode_stamped(kind: Kind, id: u64, epoch: u64, body: &[u8], out: &mut BytesMut) {
    encode_stamped_traced(kind, id, epoch, None, body, out)
}

/// [`encode_stamped`] with a trace context too (the receiver's spans join the sender's trace).
pub fn encode_stamped_traced(
    kind: Kind,
    id: u64,
    epoch: u64,
    trace: Option<&TraceContext>,
    body: &[u8],
    out: &mut BytesMut,
) {
    // A default envelope is two zero bytes: epoch 0, no trace.
    let default_env = body.len() >= 2 && body[0] == 0 && body[1] == 0;
    if (epoch == 0 && trace.is_none()) || !default_env {
        return encode(kind, id, body, out);
    }
    let env = Envelope {
        epoch,
        trace: trace.copied(),
    };
    let mut head = [0u8; 48];
    let Ok(h) = postcard::to_slice(&env, &mut head) else {
        return encode(kind, id, body, out);
    };
    let rest = &body[2..];
    if h.len() + rest.len() > COMPRESS_ABOVE {
        let mut whole = Vec::with_capacity(h.len() + rest.len());
        whole.extend_from_slice(h);
        whole.extend_from_slice(rest);
        return encode(kind, id, &whole, out);
    }
    out.reserve(HEADER_LEN + h.len() + rest.len());
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind as u8);
    out.put_u8(0);
    out.put_u8(0);
    out.put_u64_le(id);
    out.put_u32_le((h.len() + rest.len()) as u32);
    out.put_slice(h);
    out.put_slice(rest);
}

/// `body` (a machine's, epoch 0) with `epoch` in its envelope, as a new buffer (the simulator's
/// messages; links use [`encode_stamped`], which writes straight into the frame).
pub fn stamp(epoch: u64, body: &[u8]) -> Vec<u8> {
    if epoch == 0 || body.first() != Some(&0) {
        return body.to_vec();
    }
    let mut varint = [0u8; 10];
    let v = postcard::to_slice(&epoch, &mut varint).map_or(&[][..], |v| &*v);
    let mut whole = Vec::with_capacity(body.len() + v.len());
    whole.extend_from_slice(v);
    whole.extend_from_slice(&body[1..]);
    whole
}

/// The sender's ring epoch in a message body's envelope (`None` if it does not decode).
pub fn peek_epoch(body: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(body).ok().map(|(e, _)| e)
}

/// The handshake each side sends first; peers of another cluster or protocol are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `cluster-name`: nodes of different clusters refuse each other.
    pub cluster: String,
    /// The sender's node id.
    pub node_id: String,
    /// The sender's protocol version.
    pub protocol: u8,
    /// The address clients reach the sender at (shown by `HC.MEMBERS`).
    pub client_addr: String,
    /// A fresh random nonce (the dialer's is what the acceptor's [`Challenge`] proof covers).
    pub nonce: [u8; 16],
}

/// The acceptor's answer to a hello when it has a `cluster-secret`, before it says anything
/// about itself: its nonce, and its proof of the secret over both nonces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The acceptor's nonce.
    pub nonce: [u8; 16],
    /// [`Secret::proof`] by the acceptor.
    pub proof: [u8; 32],
}

/// The dialer's proof of the secret, over both nonces and its node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// [`Secret::proof`] by the dialer.
    pub proof: [u8; 32],
}

/// Keys derived from `cluster-secret` (BLAKE3 `derive_key`, one per use): the secret itself is
/// never sent, and never used as a key directly.
#[derive(Clone)]
pub struct Secret {
    link: [u8; 32],
    datagram: [u8; 32],
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which side of a handshake a proof is from (a proof from one side is never valid for the
/// other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that connected.
    Dialer,
    /// The node that accepted.
    Acceptor,
}

impl Secret {
    /// The keys of `secret`.
    pub fn new(secret: &str) -> Secret {
        Secret {
            link: blake3::derive_key(
                "hypercache 2026-12 cluster-secret link handshake",
                secret.as_bytes(),
            ),
            datagram: blake3::derive_key(
                "hypercache 2026-12 cluster-secret membership datagram",
                secret.as_bytes(),
            ),
        }
    }

    /// A side's proof that it knows the secret: a keyed hash of its role, the dialer's and the
    /// acceptor's nonces, and the dialer's node id (binding the proof to this handshake).
    pub fn proof(
        &self,
        role: Role,
        dialer: &[u8; 16],
        acceptor: &[u8; 16],
        dialer_id: &str,
    ) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.link);
        h.update(match role {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        });
        h.update(dialer);
        h.update(acceptor);
        h.update(dialer_id.as_bytes());
        *h.finalize().as_bytes()
    }

    /// Whether `proof` is `role`'s proof for this handshake (compared in constant time).
    pub fn verify(
        &self,
        role: Role,
        dialer: &[u8; 16],
        acceptor: &[u8; 16],
        dialer_id: &str,
        proof: &[u8; 32],
    ) -> bool {
        blake3::Hash::from_bytes(self.proof(role, dialer, acceptor, dialer_id))
            == blake3::Hash::from_bytes(*proof)
    }

    /// The tag a membership datagram carries after its bytes.
    pub fn datagram_tag(&self, datagram: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.datagram, datagram).as_bytes()
    }

    /// `datagram` without its tag, if the tag checks out (constant time).
    pub fn open_datagram<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let split = datagram.len().checked_sub(32)?;
        let (body, tag) = datagram.split_at(split);
        let tag: [u8; 32] = tag.try_into().ok()?;
        (blake3::Hash::from_bytes(self.datagram_tag(body)) == blake3::Hash::from_bytes(tag))
            .then_some(body)
    }
}

/// Serializes a message body.
pub fn to_body<T: Serialize>(msg: &T) -> Vec<u8> {
    to_body_in(&Envelope::default(), msg)
}

/// A W3C trace context (`traceparent`: trace id, parent span id, flags), carried across nodes so
/// that one request's spans on every node join one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TraceContext {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The sender's span id (the parent of the receiver's spans).
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// What every message body starts with (protocol 2): the sender's ring epoch, so that a node
/// that sees a newer one catches up before trusting its own preference lists, and an optional
/// trace context. Membership is static in this release, so the epoch is 0; tracing comes with
/// the observability work, so the trace is `None` unless a caller sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's ring epoch.
    pub epoch: u64,
    /// The sender's trace context, if the request is traced.
    pub trace: Option<TraceContext>,
}

/// Serializes `msg` in envelope `env`.
pub fn to_body_in<T: Serialize>(env: &Envelope, msg: &T) -> Vec<u8> {
    postcard::to_allocvec(&(env, msg)).expect("serializing to memory cannot fail")
}

/// Deserializes a message body and its envelope.
pub fn from_body_in<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<(Envelope, T), WireError> {
    postcard::from_bytes(body).map_err(|e| WireError::Body(e.to_string()))
}

/// Serializes a message body into one allocation of `capacity` bytes (enough for the message:
/// no regrowth, where [`to_body`] starts small and doubles).
pub fn to_body_sized<T: Serialize>(msg: &T, capacity: usize) -> Vec<u8> {
    postcard::to_extend(&(Envelope::default(), msg), Vec::with_capacity(capacity))
        .expect("serializing to memory cannot fail")
}

/// Appends one frame carrying `msg` to `out`. Small messages (replies, acks) are serialized on
/// the stack: no allocation per message.
pub fn encode_msg<T: Serialize>(kind: Kind, id: u64, msg: &T, out: &mut BytesMut) {
    encode_msg_in(kind, id, &Envelope::default(), msg, out)
}

/// [`encode_msg`] in envelope `env`.
pub fn encode_msg_in<T: Serialize>(
    kind: Kind,
    id: u64,
    env: &Envelope,
    msg: &T,
    out: &mut BytesMut,
) {
    let mut stack = [0u8; 256];
    match postcard::to_slice(&(env, msg), &mut stack) {
        Ok(body) => encode(kind, id, body, out),
        Err(_) => encode(kind, id, &to_body_in(env, msg), out),
    }
}

/// Deserializes a message body.
pub fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WireError> {
    from_body_in(body).map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Hello),
            Just(Kind::Request),
            Just(Kind::Reply),
            Just(Kind::Oneway)
        ]
    }

    #[test]
    fn a_stamped_frame_carries_the_epoch_and_the_same_message() {
        use crate::msg::Request;
        for epoch in [0u64, 1, 300, u64::MAX] {
            for body in [
                to_body(&Request::Status),
                to_body(&Request::Ping),
                vec![7u8; 5000],
            ] {
                let mut out = BytesMut::new();
                encode_stamped(Kind::Request, 9, epoch, &body, &mut out);
                let f = decode(&mut out, &WireLimits::default()).unwrap().unwrap();
                if body[0] == 0 {
                    assert_eq!(peek_epoch(&f.body), Some(epoch));
                    let (env, req): (Envelope, Request<'_>) = from_body_in(&f.body).unwrap();
                    assert_eq!(env.epoch, epoch);
                    assert_eq!(req, from_body::<Request<'_>>(&body).unwrap());
                } else {
                    assert_eq!(
                        &f.body[..],
                        &body[..],
                        "not a machine's body: sent as it is"
                    );
                }
            }
        }
    }

    #[test]
    fn a_traced_frame_carries_the_trace_the_epoch_and_the_same_message() {
        use crate::msg::{Request, REQUEST_NAMES};
        let trace = TraceContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            flags: 1,
        };
        for epoch in [0u64, 5, u64::MAX] {
            for (body, name) in [
                (to_body(&Request::Status), "status"),
                (to_body(&Request::Fetch { key: b"k" }), "fetch"),
                (
                    to_body(&Request::Put {
                        key: b"k",
                        state: crate::msg::State::Missing,
                    }),
                    "put",
                ),
            ] {
                assert!(REQUEST_NAMES.contains(&name));
                assert_eq!(crate::msg::request_name(&body), name);
                let mut out = BytesMut::new();
                encode_stamped_traced(Kind::Request, 9, epoch, Some(&trace), &body, &mut out);
                let f = decode(&mut out, &WireLimits::default()).unwrap().unwrap();
                let (env, req): (Envelope, Request<'_>) = from_body_in(&f.body).unwrap();
                assert_eq!(env.epoch, epoch);
                assert_eq!(env.trace, Some(trace));
                assert_eq!(req, from_body::<Request<'_>>(&body).unwrap());
                assert_eq!(crate::msg::request_name(&f.body), name);
            }
        }
    }

    proptest! {
        #[test]
        fn roundtrip_and_every_split_is_incomplete(
            k in kind(), id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut out = BytesMut::new();
            encode(k, id, &body, &mut out);
            let bytes = out.clone();
            for cut in 0..bytes.len() {
                let mut part = BytesMut::from(&bytes[..cut]);
                prop_assert_eq!(decode(&mut part, &WireLimits::default()), Ok(None));
                prop_assert_eq!(part.len(), cut);
            }
            let got = decode(&mut out, &WireLimits::default()).unwrap().unwrap();
            prop_assert_eq!(got, Frame { kind: k, id, body: Bytes::from(body) });
            prop_assert!(out.is_empty());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf, &WireLimits { max_body: 256, max_decompressed: 4096, lz4: true }) {}
        }
    }

    #[test]
    fn large_bodies_are_compressed_and_restored() {
        let body = vec![7u8; 100_000];
        let mut out = BytesMut::new();
        encode(Kind::Request, 9, &body, &mut out);
        assert!(out.len() < 2_000, "compressed to {}", out.len());
        let f = decode(&mut out, &WireLimits::default()).unwrap().unwrap();
        assert_eq!(f.body.len(), 100_000);
    }

    #[test]
    fn before_the_handshake_large_or_compressed_frames_are_refused_from_their_header() {
        let hs = WireLimits::handshake();
        let mut big = BytesMut::new();
        encode(Kind::Hello, 0, &vec![7u8; 100_000], &mut big);
        assert_eq!(big[4] & FLAG_LZ4, FLAG_LZ4, "compressed");
        // Only the header is there: refused before the body arrives.
        let mut head = BytesMut::from(&big[..HEADER_LEN]);
        assert_eq!(decode(&mut head, &hs), Err(WireError::BadFlags(FLAG_LZ4)));
        // An uncompressed frame over the limit, likewise.
        let mut header = BytesMut::new();
        header.extend_from_slice(b"HC");
        header.extend_from_slice(&[VERSION, 1, 0, 0]);
        header.extend_from_slice(&0u64.to_le_bytes());
        header.extend_from_slice(&(HANDSHAKE_MAX_BODY + 1).to_le_bytes());
        assert_eq!(
            decode(&mut header, &hs),
            Err(WireError::TooLarge(u64::from(HANDSHAKE_MAX_BODY) + 1))
        );
        // A hello fits.
        let mut hello = BytesMut::new();
        encode(
            Kind::Hello,
            0,
            &to_body(&Hello {
                cluster: "c".repeat(200),
                node_id: "n".repeat(200),
                protocol: VERSION,
                client_addr: "127.0.0.1:6379".into(),
                nonce: [7; 16],
            }),
            &mut hello,
        );
        assert!(decode(&mut hello, &hs).unwrap().is_some());
    }

    #[test]
    fn malformed_headers_are_errors() {
        let limits = WireLimits {
            max_body: 1000,
            ..Default::default()
        };
        let mut good = BytesMut::new();
        encode(Kind::Oneway, 1, b"x", &mut good);
        let bad = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            decode(&mut b, &limits)
        };
        assert_eq!(bad(0, b'X'), Err(WireError::BadMagic([b'X', b'C'])));
        assert_eq!(
            bad(2, VERSION + 1),
            Err(WireError::UnsupportedVersion(VERSION + 1))
        );
        assert_eq!(
            bad(2, VERSION - 1),
            Err(WireError::UnsupportedVersion(VERSION - 1))
        );
        assert_eq!(bad(3, 0), Err(WireError::UnknownKind(0)));
        assert_eq!(bad(4, 2), Err(WireError::BadFlags(2)));
        assert_eq!(bad(17, 1), Err(WireError::TooLarge((1 << 24) + 1)));
        // A compressed flag on a body that is not lz4.
        assert!(matches!(bad(4, 1), Err(WireError::Body(_))));
    }

    #[test]
    fn messages_encode_on_the_stack_or_the_heap_alike() {
        for len in [3usize, 1000] {
            let h = Hello {
                cluster: "c".repeat(len),
                node_id: "n".into(),
                protocol: VERSION,
                client_addr: String::new(),
                nonce: [0; 16],
            };
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            encode_msg(Kind::Reply, 7, &h, &mut a);
            encode(Kind::Reply, 7, &to_body(&h), &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn proofs_of_the_secret_bind_role_nonces_and_id() {
        let (s, other) = (Secret::new("s3cret"), Secret::new("s3cret!"));
        let (d, a) = ([1u8; 16], [2u8; 16]);
        let p = s.proof(Role::Dialer, &d, &a, "n1");
        assert!(s.verify(Role::Dialer, &d, &a, "n1", &p));
        assert!(
            !other.verify(Role::Dialer, &d, &a, "n1", &p),
            "another secret"
        );
        assert!(
            !s.verify(Role::Acceptor, &d, &a, "n1", &p),
            "the other side's proof"
        );
        assert!(
            !s.verify(Role::Dialer, &d, &[3; 16], "n1", &p),
            "another handshake"
        );
        assert!(!s.verify(Role::Dialer, &d, &a, "n2", &p), "another node");
        let dg = b"HS\x01\x00datagram".to_vec();
        let mut sealed = dg.clone();
        sealed.extend_from_slice(&s.datagram_tag(&dg));
        assert_eq!(s.open_datagram(&sealed), Some(&dg[..]));
        assert_eq!(other.open_datagram(&sealed), None);
        sealed[5] ^= 1;
        assert_eq!(s.open_datagram(&sealed), None, "tampered");
        assert_eq!(s.open_datagram(&dg[..3]), None, "too short");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn hello_roundtrip() {
        let h = Hello {
            cluster: "prod".into(),
            node_id: "n1".into(),
            protocol: VERSION,
            client_addr: "127.0.0.1:6379".into(),
            nonce: [1; 16],
        };
        assert_eq!(from_body::<Hello>(&to_body(&h)), Ok(h));
        assert!(from_body::<Hello>(&[0xff, 0xff]).is_err());
    }
}
