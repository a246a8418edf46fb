//! Question: how fast are request parsing and reply encoding?
//!
//! - `parse/multibulk_set_16x100B`: a pipelined read buffer of 16 `SET key:NNNN <100-byte value>`
//!   multibulk requests, taken apart with [`request::parse`] until it returns `None`, as a connection
//!   does after one read. Throughput in requests and in bytes.
//! - `parse/inline_get_16`: 16 inline `GET key:NNNN` lines (the telnet/`redis-cli` style path).
//! - `encode/bulk_16x100B`: 16 bulk replies of 100 bytes (a pipelined batch of `GET` hits) encoded with
//!   [`Frame::encode`] into one reused `BytesMut`, as a connection encodes a batch before one flush.
//! - `encode/array_100x16B`: one 100-element array of 16-byte bulk strings (a `KEYS`/`SCAN`/`MGET`
//!   sized reply).
//!
//! Building the input buffer is outside the timed part (`iter_batched`); dropping the parsed
//! requests is inside it, as it is in the server.
//!
//! Run: `cargo bench --bench resp_parse` (add `-- --quick` for a short check).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hypercache_resp::frame::{Frame, Protocol};
use hypercache_resp::request::{self, Limits};

/// Requests in one pipelined buffer, and replies in one encoded batch.
const PIPELINE: usize = 16;
/// Value size of the `SET` requests and the bulk replies.
const VALUE_LEN: usize = 100;

/// `SET key:NNNN <value>` as a multibulk request, appended to `out`.
fn push_set(out: &mut Vec<u8>, i: usize, value: &[u8]) {
    let key = format!("key:{i:04}");
    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    out.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses every complete request in `buf`; returns how many there were.
fn parse_all(buf: &mut BytesMut, limits: &Limits) -> usize {
    let mut n = 0;
    while let Some(req) = request::parse(buf, limits, true, None).expect("valid input") {
        black_box(&req);
        n += 1;
    }
    n
}

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let value = vec![b'x'; VALUE_LEN];
    let mut multibulk = Vec::new();
    for i in 0..PIPELINE {
        push_set(&mut multibulk, i, &value);
    }
    let mut inline = Vec::new();
    for i in 0..PIPELINE {
        inline.extend_from_slice(format!("GET key:{i:04}\r\n").as_bytes());
    }
    // The inputs are what they claim to be.
    assert_eq!(
        parse_all(&mut BytesMut::from(&multibulk[..]), &limits),
        PIPELINE
    );
    assert_eq!(
        parse_all(&mut BytesMut::from(&inline[..]), &limits),
        PIPELINE
    );

    let mut g = c.benchmark_group("parse");
    for (name, input) in [
        ("multibulk_set_16x100B", &multibulk),
        ("inline_get_16", &inline),
    ] {
        g.throughput(Throughput::ElementsAndBytes {
            elements: PIPELINE as u64,
            bytes: input.len() as u64,
        });
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&input[..]),
                |buf| parse_all(buf, &limits),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let proto = Protocol::Resp2;
    let bulks: Vec<Frame> = (0..PIPELINE)
        .map(|_| Frame::Bulk(Bytes::from(vec![b'v'; VALUE_LEN])))
        .collect();
    let array = Frame::Array(
        (0..100)
            .map(|i| Frame::Bulk(Bytes::from(format!("key:{i:012}"))))
            .collect(),
    );
    let bulk_len: usize = bulks.iter().map(|f| f.to_bytes(proto).len()).sum();
    let array_len = array.to_bytes(proto).len();

    let mut g = c.benchmark_group("encode");
    let mut out = BytesMut::with_capacity(16 * 1024);
    g.throughput(Throughput::ElementsAndBytes {
        elements: PIPELINE as u64,
        bytes: bulk_len as u64,
    });
    g.bench_function("bulk_16x100B", |b| {
        b.iter(|| {
            out.clear();
            for f in &bulks {
                f.encode(proto, &mut out);
            }
            black_box(out.len())
        })
    });
    g.throughput(Throughput::ElementsAndBytes {
        elements: 100,
        bytes: array_len as u64,
    });
    g.bench_function("array_100x16B", |b| {
        b.iter(|| {
            out.clear();
            array.encode(proto, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
