//! The request parser on arbitrary bytes: it must never panic, never consume more than it was
//! given, and must make progress or stop on every call.
#![no_main]

use bytes::BytesMut;
use hypercache_resp::request::{parse, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_bulk_len: 4096, max_multibulk_len: 64, max_inline_len: 1024, max_query_buffer: 8192 };
    for authenticated in [true, false] {
        let mut buf = BytesMut::from(data);
        let mut need = 0;
        loop {
            let before = buf.len();
            match parse(&mut buf, &limits, authenticated, Some(&mut need)) {
                Ok(Some(req)) => {
                    assert!(buf.len() < before, "a request consumes input");
                    assert!(req.args.iter().all(|a| a.len() as u64 <= limits.max_bulk_len || a.len() <= 1024));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "incomplete input is left untouched");
                    break;
                }
                Err(_) => break,
            }
        }
    }
});
