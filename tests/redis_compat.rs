//! Differential test: the whole `redis-compat` corpus against a real `redis-server` (the reference)
//! and the `hypercache` binary (the candidate). Every reply must be byte-identical unless
//! `redis-compat/KNOWN_DIFFERENCES.md` lists the step or case.
//!
//! Needs `redis-server` (7.0, the version the corpus was written against) on `PATH`; `.ci/run`
//! installs it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hypercache_compat::{compare, load_corpus, parse_corpus, KnownDifferences};

/// How long a server may take to answer PING after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A server process, killed (by pid) and reaped when dropped, so it dies even when a test panics.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago: bind 127.0.0.1:0 and let the listener go.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Starts `command(port)` on a free port and waits until it answers PING. A port taken between
/// `free_port` and the server's bind makes the server exit; that is retried on another port.
fn start(name: &'static str, command: impl Fn(u16) -> Command) -> Server {
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let mut cmd = command(port);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "redis-server" => panic!(
                "redis-server is not on PATH: this differential test needs a real Redis 7.0 \
                 (`.ci/run` installs it)"
            ),
            Err(e) => panic!("cannot start {name} ({cmd:?}): {e}"),
        };
        let mut server = Server {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        match wait_ready(&mut server) {
            Ok(()) => return server,
            Err(e) => last_error = e,
        }
    }
    panic!("{name} did not become ready: {last_error}");
}

/// Sends PING until `+PONG` arrives, for at most [`READY_TIMEOUT`].
fn wait_ready(server: &mut Server) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "{} exited with {status} before answering PING",
                server.name
            ));
        }
        if ping(server.addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no +PONG from {} at {} within {READY_TIMEOUT:?}",
                server.name, server.addr
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    conn.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && conn.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn redis_server() -> Server {
    if let Ok(out) = Command::new("redis-server").arg("--version").output() {
        let version = String::from_utf8_lossy(&out.stdout);
        if !version.contains("v=7.0.") {
            eprintln!(
                "warning: the corpus was written against Redis 7.0; found {}",
                version.trim()
            );
        }
    }
    start("redis-server", |port| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    })
}

fn hypercache() -> Server {
    start("hypercache", |port| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hypercache"));
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "warn",
        ])
        .stdin(Stdio::null());
        cmd
    })
}

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("redis-compat")
}

#[test]
fn corpus_matches_redis() {
    let cases = load_corpus(&compat_dir().join("corpus")).unwrap_or_else(|e| panic!("{e}"));
    let known = KnownDifferences::load(&compat_dir().join("KNOWN_DIFFERENCES.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    for e in known.unmatched(&cases) {
        eprintln!(
            "STALE known-differences entry `{}` (line {}): no such case or step",
            e.key(),
            e.line
        );
    }
    let redis = redis_server();
    let candidate = hypercache();
    let report =
        compare(redis.addr, candidate.addr, &cases, &known).unwrap_or_else(|e| panic!("{e}"));
    // Known differences and stale entries are printed too; only unexpected ones fail.
    eprintln!("{report}");
    assert!(
        report.compared > 1000,
        "only {} steps compared",
        report.compared
    );
    assert_eq!(
        report.failed(),
        0,
        "HyperCache differs from redis-server (printed above); fix it, or list a deliberate \
         departure in redis-compat/KNOWN_DIFFERENCES.md: {}",
        report.summary()
    );
}

/// The runner must not pass silently: against a real server, two connections get different
/// `CLIENT ID`s, which it must report unless the list says otherwise.
#[test]
fn runner_detects_differences_against_real_redis() {
    let redis = redis_server();
    let cases = parse_corpus("t.txt", b"@case ids\nCLIENT ID\nPING\n").expect("parse");
    let none = KnownDifferences::default();
    let report = compare(redis.addr, redis.addr, &cases, &none).expect("compare");
    assert_eq!(report.compared, 2);
    let keys: Vec<_> = report.unexpected().map(|d| d.key()).collect();
    assert_eq!(keys, ["t.txt:ids:1"], "{report}");
    assert!(
        report
            .to_string()
            .contains("DIFF t.txt:ids:1 (line 2): CLIENT ID"),
        "{report}"
    );

    let known = KnownDifferences::parse(
        "- `t.txt:ids:1` — every connection has its own id\n- `t:ids:2` — PING never differs\n",
    )
    .expect("parse known");
    let report = compare(redis.addr, redis.addr, &cases, &known).expect("compare");
    assert_eq!(report.summary(), "2 passed, 0 failed", "{report}");
    assert_eq!(report.known().count(), 1);
    let stale: Vec<_> = report.stale.iter().map(|e| e.key()).collect();
    assert_eq!(stale, ["t:ids:2"]);
}
