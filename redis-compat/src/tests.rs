//! Tests of the runner against small fake servers: it must see every difference, and must not
//! hang on a server that does not answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypercache_resp::frame::{decode, DecodeLimits};
use hypercache_resp::Frame;

use super::*;

/// What a fake server does with one command.
enum Answer {
    Reply(&'static [u8]),
    Silent,
    Close,
}

type Behaviour = dyn Fn(&[u8], &[Vec<u8>]) -> Answer + Send + Sync;

/// A server on 127.0.0.1 that answers `FLUSHALL` with `+OK` and everything else with `answer(name,
/// args)`. Its threads live until the test process exits.
fn fake_server(answer: impl Fn(&[u8], &[Vec<u8>]) -> Answer + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer: Arc<Behaviour> = Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let answer = Arc::clone(&answer);
            std::thread::spawn(move || serve(conn, &*answer));
        }
    });
    addr
}

fn serve(mut conn: TcpStream, answer: &Behaviour) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some((frame, used))) = decode(&buf, &DecodeLimits::default()) {
            buf.drain(..used);
            let Frame::Array(items) = frame else { return };
            let args: Vec<Vec<u8>> = items
                .into_iter()
                .map(|f| match f {
                    Frame::Bulk(b) => b.to_vec(),
                    _ => Vec::new(),
                })
                .collect();
            let name = args[0].to_ascii_uppercase();
            let reply: &[u8] = match (&name[..], answer(&name, &args[1..])) {
                (b"FLUSHALL", _) => b"+OK\r\n",
                (_, Answer::Reply(r)) => r,
                (_, Answer::Silent) => continue,
                (_, Answer::Close) => return,
            };
            if conn.write_all(reply).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A server that answers PING with `pong`, ECHO with `*2 a b` (in `order`), QUIT by closing,
/// HANG never, and anything else with `+OK`.
fn server(pong: &'static [u8], ab_order: bool) -> SocketAddr {
    fake_server(move |name, _| match name {
        b"PING" => Answer::Reply(pong),
        b"ECHO" if ab_order => Answer::Reply(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        b"ECHO" => Answer::Reply(b"*2\r\n$1\r\nb\r\n$1\r\na\r\n"),
        b"QUIT" => Answer::Close,
        b"HANG" => Answer::Silent,
        _ => Answer::Reply(b"+OK\r\n"),
    })
}

fn cases(text: &str) -> Vec<Case> {
    parse_corpus("t.txt", text.as_bytes()).unwrap()
}

fn fast() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        reply: Duration::from_millis(300),
        close: Duration::from_millis(300),
    }
}

#[test]
fn identical_servers_pass() {
    let (a, b) = (server(b"+PONG\r\n", true), server(b"+PONG\r\n", true));
    let corpus = cases("@case c\nPING\nECHO x\n!sleep 1\n@case p pipeline\nPING\nSET k v\nPING\n");
    let report = compare_with(a, b, &corpus, &KnownDifferences::default(), &fast()).unwrap();
    assert!(report.differences.is_empty(), "{report}");
    assert_eq!(report.compared, 5, "the sleep is not counted");
    assert_eq!(report.summary(), "5 passed, 0 failed");
}

#[test]
fn a_difference_is_detected_and_printed() {
    let (a, b) = (server(b"+PONG\r\n", true), server(b"+PANG\r\n", true));
    let corpus = cases("@case c\nSET k v\nPING\n");
    let report = compare_with(a, b, &corpus, &KnownDifferences::default(), &fast()).unwrap();
    assert_eq!(report.failed(), 1);
    assert_eq!(report.passed(), 1);
    let d = &report.differences[0];
    assert_eq!(
        (d.key().as_str(), d.line, d.source.as_str()),
        ("t.txt:c:2", 3, "PING")
    );
    assert_eq!(d.sent, b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(
        d.expected,
        Observed::Replies(vec![Reply::Bytes(b"+PONG\r\n".to_vec())])
    );
    assert_eq!(
        d.actual,
        Observed::Replies(vec![Reply::Bytes(b"+PANG\r\n".to_vec())])
    );
    let text = report.to_string();
    assert!(text.contains("DIFF t.txt:c:2 (line 3): PING"), "{text}");
    assert!(text.contains(r#"expected: "+PONG\r\n""#), "{text}");
    assert!(text.contains(r#"actual:   "+PANG\r\n""#), "{text}");
    assert!(text.ends_with("1 passed, 1 failed"), "{text}");
}

#[test]
fn differences_in_pipelines_and_raw_steps_are_detected() {
    let (a, b) = (server(b"+PONG\r\n", true), server(b":1\r\n", true));
    let corpus = cases("@case p pipeline\nSET k v\nPING\nSET k w\n@case r\n!raw 2 \"*1\\r\\n$3\\r\\nSET\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n\"\n");
    let report = compare_with(a, b, &corpus, &KnownDifferences::default(), &fast()).unwrap();
    let keys: Vec<_> = report.differences.iter().map(|d| d.key()).collect();
    assert_eq!(keys, ["t.txt:p:2", "t.txt:r:1"]);
    assert_eq!(
        report.differences[1].actual,
        Observed::Replies(vec![
            Reply::Bytes(b"+OK\r\n".to_vec()),
            Reply::Bytes(b":1\r\n".to_vec())
        ])
    );
}

#[test]
fn sorted_and_type_checks() {
    let (a, b) = (server(b":1\r\n", true), server(b":2\r\n", false));
    let corpus = cases("@case c\n!sorted ECHO x\n!type PING\nECHO x\nPING\n");
    let report = compare_with(a, b, &corpus, &KnownDifferences::default(), &fast()).unwrap();
    let keys: Vec<_> = report.differences.iter().map(|d| d.key()).collect();
    assert_eq!(keys, ["t.txt:c:3", "t.txt:c:4"]);
}

#[test]
fn known_differences_pass_and_stale_entries_are_reported() {
    let (a, b) = (server(b"+PONG\r\n", true), server(b"+PANG\r\n", true));
    let corpus = cases("@case c\nSET k v\nPING\n@case d\nPING\n@case e\nPING\n");
    let known = KnownDifferences::parse(
        "- `t.txt:c:2` — pang\n- `t:d` — whole case\n- `t.txt:c:1` — no longer differs\n- `other:x` — not run\n",
    )
    .unwrap();
    let report = compare_with(a, b, &corpus, &known, &fast()).unwrap();
    assert_eq!(report.differences.len(), 3);
    assert_eq!(report.known().count(), 2);
    assert_eq!(
        report.unexpected().map(|d| d.key()).collect::<Vec<_>>(),
        ["t.txt:e:1"]
    );
    assert_eq!(
        report.stale.iter().map(|e| e.key()).collect::<Vec<_>>(),
        ["t.txt:c:1"]
    );
    assert_eq!(report.summary(), "3 passed, 1 failed");
    let text = report.to_string();
    assert!(text.contains("known `t.txt:c:2` (steps 2): pang"), "{text}");
    assert!(text.contains("known `t:d` (steps 1): whole case"), "{text}");
    assert!(
        text.contains("STALE known-differences entry `t.txt:c:1`"),
        "{text}"
    );
}

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    let addr = server(b"+PONG\r\n", true);
    let corpus = cases("@case c\nPING\nHANG\nPING\n!closed\n");
    let start = Instant::now();
    let observed = run_case_with(addr, &corpus[0], &fast());
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(observed.len(), 4);
    assert_eq!(
        observed[0],
        Observed::Replies(vec![Reply::Bytes(b"+PONG\r\n".to_vec())])
    );
    assert_eq!(
        observed[1],
        Observed::Failed {
            replies: vec![],
            failure: Failure::Timeout(vec![])
        }
    );
    assert_eq!(observed[2..], [Observed::NotRun, Observed::NotRun]);
    assert_eq!(observed[1].to_string(), "!!! TIMEOUT waiting for a reply");
}

#[test]
fn closed_and_still_open_connections() {
    let addr = server(b"+PONG\r\n", true);
    let corpus = cases("@case quit\nPING\nQUIT\n@case open\nPING\n!closed\n@case after pipeline\nPING\n!raw 0 \"*1\\r\\n$4\\r\\nQUIT\\r\\n\"\n!closed\n");
    let t = fast();
    let quit = run_case_with(addr, &corpus[0], &t);
    assert!(matches!(
        quit[1],
        Observed::Failed {
            failure: Failure::ConnectionClosed(_),
            ..
        }
    ));
    let open = run_case_with(addr, &corpus[1], &t);
    assert_eq!(open[1], Observed::NotClosed { unread: vec![] });
    let piped = run_case_with(addr, &corpus[2], &t);
    assert_eq!(piped[1], Observed::Replies(vec![]));
    assert_eq!(piped[2], Observed::Closed);
}

#[test]
fn an_unreachable_reference_is_an_error_and_an_unreachable_candidate_a_difference() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let live = server(b"+PONG\r\n", true);
    let corpus = cases("@case c\nPING\nPING\n");
    let none = KnownDifferences::default();
    let err = compare_with(dead, live, &corpus, &none, &fast()).unwrap_err();
    assert!(matches!(err, CompatError::Reference { .. }), "{err}");
    let report = compare_with(live, dead, &corpus, &none, &fast()).unwrap();
    assert_eq!(report.failed(), 2);
    assert!(report.differences[0]
        .actual
        .to_string()
        .contains("case could not start"));
    assert_eq!(report.differences[1].actual, Observed::NotRun);
}

#[test]
fn escape_is_readable_and_pastable() {
    assert_eq!(escape(b"+OK\r\n"), r#""+OK\r\n""#);
    assert_eq!(escape(b"a\"b\\c\0\xff\t"), r#""a\"b\\c\x00\xff\t""#);
    let back = hypercache_resp::args::split_args(escape(b"x\"\\\0\xff\r\n").as_bytes()).unwrap();
    assert_eq!(back, [b"x\"\\\0\xff\r\n".to_vec()]);
}
