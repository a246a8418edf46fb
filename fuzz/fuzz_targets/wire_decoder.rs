//! The inter-node frame decoder on arbitrary bytes: never panics, never allocates past its
//! limits, and every frame it accepts re-encodes to a frame that decodes to the same thing. Bodies
//! are also decoded as every message type a node accepts (handshake, request, response), and a
//! request that decodes re-encodes to the same request.
#![no_main]

use bytes::BytesMut;
use hypercache_cluster::msg::{Request, Response};
use hypercache_cluster::wire::{decode, encode, from_body, to_body, Hello, WireLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = WireLimits { max_body: 4096, max_decompressed: 1 << 16, lz4: true };
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode(&mut buf, &limits) {
        assert!(frame.body.len() <= limits.max_decompressed);
        let _ = from_body::<Hello>(&frame.body);
        let _ = from_body::<Response>(&frame.body);
        if let Ok(req) = from_body::<Request<'_>>(&frame.body) {
            assert_eq!(from_body::<Request<'_>>(&to_body(&req)).unwrap(), req);
        }
        let mut again = BytesMut::new();
        encode(frame.kind, frame.id, &frame.body, &mut again);
        let back = decode(&mut again, &hypercache_cluster::wire::WireLimits::default()).unwrap().unwrap();
        assert_eq!(back, frame);
    }
});
