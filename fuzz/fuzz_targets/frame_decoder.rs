//! The general RESP2/RESP3 frame decoder on arbitrary bytes: never panics, and whatever it decodes
//! re-encodes (as RESP3) to bytes that decode to the same frame.
#![no_main]

use hypercache_resp::frame::{decode, DecodeLimits};
use hypercache_resp::{Frame, Protocol};
use libfuzzer_sys::fuzz_target;

/// RESP3 has one null: `*-1` (NullArray) is written as `_`, which reads back as Null.
fn normalize(f: Frame) -> Frame {
    match f {
        Frame::NullArray => Frame::Null,
        Frame::Array(v) => Frame::Array(v.into_iter().map(normalize).collect()),
        Frame::Set(v) => Frame::Set(v.into_iter().map(normalize).collect()),
        Frame::Push(v) => Frame::Push(v.into_iter().map(normalize).collect()),
        Frame::Map(v) => Frame::Map(v.into_iter().map(|(k, v)| (normalize(k), normalize(v))).collect()),
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_bulk_len: 4096, max_elements: 256, max_depth: 16 };
    if let Ok(Some((frame, used))) = decode(data, &limits) {
        assert!(used <= data.len());
        let again = frame.to_bytes(Protocol::Resp3);
        let (back, n) = decode(&again, &DecodeLimits::default()).unwrap().unwrap();
        assert_eq!(n, again.len());
        assert_eq!(back, normalize(frame));
    }
});
