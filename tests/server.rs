//! Process tests: the real binary on 127.0.0.1, driven by the `redis` crate and by raw sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_closed, read_exactly, Server};
use redis::{Commands, Value};

#[test]
fn strings_through_a_real_client() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let _: () = c.set("greeting", "hello").unwrap();
    assert_eq!(c.get::<_, String>("greeting").unwrap(), "hello");
    assert_eq!(c.append::<_, _, i64>("greeting", " world").unwrap(), 11);
    assert_eq!(c.incr::<_, _, i64>("n", 41).unwrap(), 41);
    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 42);
    let big = vec![0xABu8; 5 << 20];
    let _: () = c.set(b"bin\x00key\r\n", &big).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>(b"bin\x00key\r\n").unwrap(), big);
    let got: Vec<Option<String>> = c.mget(&["greeting", "missing", "n"]).unwrap();
    assert_eq!(
        got,
        vec![Some("hello world".into()), None, Some("42".into())]
    );
    let err = c.incr::<_, _, i64>("greeting", 1).unwrap_err();
    assert!(
        err.to_string()
            .contains("value is not an integer or out of range"),
        "{err}"
    );
}

#[test]
fn expiry_is_exact_and_reclaimed_in_the_background() {
    let s = Server::start(&["--hz", "50"]);
    let mut c = s.conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("PX")
        .arg(150)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        c.get::<_, Option<String>>("k").unwrap().as_deref(),
        Some("v")
    );
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET")
            .arg(format!("vol{i}"))
            .arg("x")
            .arg("PX")
            .arg(100)
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Never visible after the deadline, whether or not it has been reclaimed.
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
    // The volatile keys are never touched again: the expiry cycle must reclaim them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} expired keys still held");
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    assert!(info.contains("expired_keys:2001"), "{info}");
}

/// INFO keyspace's `avg_ttl` is Redis's estimate: 0 until the background cycle has looked at the
/// keys with an expiry, then close to their remaining time to live, per database.
#[test]
fn info_keyspace_estimates_the_average_ttl_per_database() {
    let s = Server::start(&["--hz", "50"]);
    let mut c = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .arg("EX")
            .arg(100)
            .ignore();
    }
    pipe.cmd("SELECT").arg(2).ignore();
    for i in 0..100 {
        pipe.cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .arg("EX")
            .arg(1000)
            .ignore();
    }
    pipe.cmd("SET").arg("forever").arg("v").ignore();
    let _: () = pipe.query(&mut c).unwrap();
    let avg_ttl = |info: &str, db: &str| -> u64 {
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("{db}:")))
            .unwrap_or_else(|| panic!("no {db} in {info}"));
        line.rsplit("avg_ttl=").next().unwrap().parse().unwrap()
    };
    // The cycle runs 50 times a second: give it a few rounds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
        if avg_ttl(&info, "db0") > 0 && avg_ttl(&info, "db2") > 0 {
            break info;
        }
        assert!(Instant::now() < deadline, "never estimated: {info}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(info.contains("db0:keys=100,expires=100,"), "{info}");
    assert!(info.contains("db2:keys=101,expires=100,"), "{info}");
    let (db0, db2) = (avg_ttl(&info, "db0"), avg_ttl(&info, "db2"));
    assert!((90_000..=100_000).contains(&db0), "db0 avg_ttl {db0}");
    assert!((990_000..=1_000_000).contains(&db2), "db2 avg_ttl {db2}");
    // A database without keys with an expiry reports 0.
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(info.contains("db2:keys=1,expires=0,avg_ttl=0"), "{info}");
}

#[test]
fn pipelines_answer_in_order_in_one_batch() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("INCRBY").arg("ctr").arg(i);
    }
    let got: Vec<i64> = pipe.query(&mut c).unwrap();
    let mut want = 0;
    for (i, v) in got.iter().enumerate() {
        want += i as i64;
        assert_eq!(*v, want);
    }
    // Raw pipeline with an error in the middle: every reply arrives, in order.
    let mut raw = s.raw();
    raw.write_all(b"PING\r\nSET a 1\r\nINCR a\r\nNOSUCH x\r\nGET a\r\n")
        .unwrap();
    let want = b"+PONG\r\n+OK\r\n:2\r\n-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n$1\r\n2\r\n";
    assert_eq!(read_exactly(&mut raw, want.len()), want.to_vec());
}

#[test]
fn resp3_after_hello_3() {
    let s = Server::start(&[]);
    let mut raw = s.raw();
    raw.write_all(b"HELLO 3\r\n").unwrap();
    let hello = read_exactly(&mut raw, 1);
    assert_eq!(hello[0], b'%', "HELLO 3 answers with a RESP3 map");
    std::thread::sleep(Duration::from_millis(100));
    let mut sink = [0u8; 4096];
    let _ = std::io::Read::read(&mut raw, &mut sink);
    raw.write_all(b"GET missing\r\nSET f 1.5\r\nINCRBYFLOAT f 1\r\nCONFIG GET timeout\r\n")
        .unwrap();
    let want = b"_\r\n+OK\r\n$3\r\n2.5\r\n%1\r\n$7\r\ntimeout\r\n$1\r\n0\r\n";
    assert_eq!(read_exactly(&mut raw, want.len()), want.to_vec());
    // The redis crate speaks RESP3 too.
    let client = redis::Client::open(format!("redis://{}/?protocol=resp3", s.addr)).unwrap();
    let mut c = client.get_connection().unwrap();
    let v: Value = redis::cmd("GET").arg("missing").query(&mut c).unwrap();
    assert_eq!(v, Value::Nil);
}

#[test]
fn requirepass_gates_everything_but_auth() {
    let s = Server::start(&["--requirepass", "s3cret"]);
    let mut raw = s.raw();
    raw.write_all(b"GET a\r\nAUTH nope\r\nAUTH s3cret\r\nGET a\r\n")
        .unwrap();
    let want = b"-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n$-1\r\n";
    assert_eq!(read_exactly(&mut raw, want.len()), want.to_vec());
    // Before AUTH, requests are limited as Redis limits them.
    let mut raw = s.raw();
    raw.write_all(b"*11\r\n").unwrap();
    let want = b"-ERR Protocol error: unauthenticated multibulk length\r\n";
    assert_eq!(read_exactly(&mut raw, want.len()), want.to_vec());
    assert!(is_closed(&mut raw));
    let client = redis::Client::open(format!("redis://:s3cret@{}/", s.addr)).unwrap();
    let mut c = client.get_connection().unwrap();
    let _: () = c.set("x", 1).unwrap();
    assert_eq!(c.get::<_, i64>("x").unwrap(), 1);
}

#[test]
fn protocol_limits_and_errors_close_only_the_offender() {
    let s = Server::start(&["--proto-max-bulk-len", "1mb"]);
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"*1\r\n$2000000\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\nX\r\n",
            b"-ERR Protocol error: expected '$', got 'X'\r\n",
        ),
        (
            b"SET \"a b\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, reply) in cases {
        let mut raw = s.raw();
        raw.write_all(input).unwrap();
        assert_eq!(read_exactly(&mut raw, reply.len()), reply.to_vec());
        assert!(
            is_closed(&mut raw),
            "closed after {:?}",
            String::from_utf8_lossy(input)
        );
    }
    // An inline line over 64 KB.
    let mut raw = s.raw();
    raw.write_all(&vec![b'a'; 70_000]).unwrap();
    let reply = b"-ERR Protocol error: too big inline request\r\n";
    assert_eq!(read_exactly(&mut raw, reply.len()), reply.to_vec());
    // Whatever happened to the offenders, the server is alive and serving others.
    let mut c = s.conn();
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

#[test]
fn query_buffer_limit_closes_without_reply() {
    let s = Server::start(&["--client-query-buffer-limit", "1mb"]);
    let mut raw = s.raw();
    let mut req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000000\r\n".to_vec();
    req.extend(vec![b'x'; 1_200_000]);
    let _ = raw.write_all(&req);
    assert!(
        read_exactly(&mut raw, 1).is_empty(),
        "no reply, just a close"
    );
    let mut c = s.conn();
    assert!(!c.exists::<_, bool>("k").unwrap());
}

#[test]
fn maxclients_refuses_with_redis_error() {
    let s = Server::start(&["--maxclients", "2"]);
    // Two clients that are surely in. A connection closed a moment ago (the readiness probe's)
    // may still count until the server has seen the close, exactly as in Redis, so a client is
    // only known to be in once it is served.
    let served = || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = s.raw();
            c.write_all(b"PING\r\n").unwrap();
            if read_exactly(&mut c, 7) == b"+PONG\r\n" {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no place for a client under maxclients 2"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let a = served();
    let _b = served();
    let mut c = s.raw();
    let want = b"-ERR max number of clients reached\r\n";
    assert_eq!(read_exactly(&mut c, want.len()), want.to_vec());
    // Once a client leaves, a new one gets in (after the server has seen the close).
    drop(a);
    let _d = served();
}

#[test]
fn client_disconnecting_mid_pipeline_leaves_a_prefix_applied() {
    let s = Server::start(&[]);
    {
        let mut raw = s.raw();
        let mut buf = Vec::new();
        for i in 0..5000 {
            buf.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\nk{i}\r\n$1\r\nv\r\n",
                    format!("k{i}").len()
                )
                .as_bytes(),
            );
        }
        buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf");
        raw.write_all(&buf).unwrap();
        // Close without reading a single reply.
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut c = s.conn();
    let n: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(n <= 5000);
    for i in 0..n {
        assert!(
            c.exists::<_, bool>(format!("k{i}")).unwrap(),
            "k{i} missing: commands run in order"
        );
    }
    assert!(!c.exists::<_, bool>("half").unwrap());
}

#[test]
fn idle_timeout_closes_idle_clients() {
    let s = Server::start(&["--timeout", "1"]);
    let mut raw = s.raw();
    raw.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_exactly(&mut raw, 7), b"+PONG\r\n".to_vec());
    let started = Instant::now();
    assert!(is_closed(&mut raw));
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[test]
fn client_kill_and_client_list() {
    let s = Server::start(&[]);
    let mut victim = s.conn();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut victim).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("victim")
        .query(&mut victim)
        .unwrap();
    let mut admin = s.conn();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    assert!(
        list.contains(&format!("id={id} ")) && list.contains("name=victim"),
        "{list}"
    );
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    assert!(redis::cmd("PING").query::<String>(&mut victim).is_err());
}

#[test]
fn client_reply_off_skip_on() {
    let s = Server::start(&[]);
    let mut raw = s.raw();
    raw.write_all(b"CLIENT REPLY OFF\r\nSET a 1\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nGET a\r\nCLIENT REPLY SKIP\r\nGET a\r\nPING\r\n").unwrap();
    let want = b"+OK\r\n$1\r\n1\r\n+PONG\r\n";
    assert_eq!(read_exactly(&mut raw, want.len()), want.to_vec());
}

#[test]
fn shutdown_writes_pending_replies_then_exits() {
    let mut s = Server::start(&[]);
    let mut raw = s.raw();
    raw.write_all(b"SET a 1\r\nGET a\r\nSHUTDOWN\r\n").unwrap();
    let want = b"+OK\r\n$1\r\n1\r\n";
    assert_eq!(
        read_exactly(&mut raw, want.len() + 10),
        want.to_vec(),
        "replies, then EOF"
    );
    assert!(s.wait_exit(Duration::from_secs(10)));
    assert!(s.child.wait().unwrap().success());
}

#[test]
fn sigterm_stops_cleanly() {
    let mut s = Server::start(&[]);
    let mut c = s.conn();
    let _: () = c.set("a", 1).unwrap();
    s.signal("TERM");
    assert!(s.wait_exit(Duration::from_secs(10)));
    assert!(s.child.wait().unwrap().success());
}

#[test]
fn invalid_settings_stop_startup_with_a_clear_message() {
    for (args, needle) in [
        (vec!["--port", "abc"], "'port'"),
        (vec!["--log-format", "xml"], "text, json"),
        (vec!["--maxclients", "0"], "'maxclients'"),
        (vec!["--bogus", "1"], "unknown setting 'bogus'"),
        (
            vec!["--tombstone-ttl", "600"],
            "tombstone-ttl (600 s) must exceed hint-ttl (1800 s) plus two anti-entropy rounds",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hypercache"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hypercache"))
        .env("HYPERCACHE_TIMEOUT", "-5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'timeout'"));
}

#[test]
fn settings_from_environment_and_file() {
    let port = common::free_port();
    let file = std::env::temp_dir().join(format!("hc-test-{}.toml", std::process::id()));
    std::fs::write(&file, "maxclients = 77\nslowlog-max-len = 5\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hypercache"))
        .args(["--config", file.to_str().unwrap(), "--bind", "127.0.0.1"])
        .args(["--http-port", "0"])
        .env("HYPERCACHE_PORT", port.to_string())
        .env("HYPERCACHE_TIMEOUT", "30")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stopped when the test ends, however it ends.
    let server = Server::new(
        "hypercache",
        child,
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    );
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        if let Ok(c) = client.get_connection() {
            break c;
        }
        assert!(Instant::now() < deadline, "did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .arg("timeout")
        .arg("slowlog-max-len")
        .query(&mut conn)
        .unwrap();
    drop(server);
    std::fs::remove_file(&file).ok();
    assert_eq!(
        got,
        vec!["maxclients", "77", "timeout", "30", "slowlog-max-len", "5"]
    );
}

#[test]
fn concurrent_increments_from_many_clients_sum_exactly() {
    let s = Server::start(&[]);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let mut c = s.conn();
                for _ in 0..500 {
                    let _: i64 = c.incr("shared", 1).unwrap();
                }
            });
        }
    });
    assert_eq!(s.conn().get::<_, i64>("shared").unwrap(), 4000);
}

#[test]
fn config_set_changes_limits_at_runtime() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg("1mb")
        .query(&mut c)
        .unwrap();
    let mut raw = s.raw();
    raw.write_all(b"*2\r\n$4\r\nECHO\r\n$1048577\r\n").unwrap();
    let want = b"-ERR Protocol error: invalid bulk length\r\n";
    assert_eq!(read_exactly(&mut raw, want.len()), want.to_vec());
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("0")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("argument must be between 1 and 4294967295 inclusive"),
        "{err}"
    );
    // Settings that depend on each other are checked together.
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("hint-ttl")
        .arg("3600")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "CONFIG SET failed - tombstone-ttl (3600 s) must exceed hint-ttl (3600 s) plus two"
        ),
        "{err}"
    );
    let ttl: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("hint-ttl")
        .query(&mut c)
        .unwrap();
    assert_eq!(ttl, vec!["hint-ttl", "1800"], "unchanged");
}

#[test]
fn slowlog_records_slow_commands() {
    let s = Server::start(&["--slowlog-log-slower-than", "0"]);
    let mut c = s.conn();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = c.set("k", "v".repeat(200)).unwrap();
    let entries: Vec<Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1)
        .query(&mut c)
        .unwrap();
    let Value::Array(e) = &entries[0] else {
        panic!("{entries:?}")
    };
    let Value::Array(args) = &e[3] else {
        panic!("{e:?}")
    };
    assert_eq!(args[0], Value::BulkString(b"SET".to_vec()));
    let Value::BulkString(v) = &args[2] else {
        panic!()
    };
    assert!(
        String::from_utf8_lossy(v).ends_with("... (72 more bytes)"),
        "{}",
        String::from_utf8_lossy(v)
    );
}

fn redis_tool(name: &str) -> String {
    which(name).unwrap_or_else(|| panic!("{name} not found: install redis-tools (.ci/run does)"))
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

#[test]
fn redis_cli_interactive_and_pipe_mode() {
    let s = Server::start(&[]);
    let port = s.addr.port().to_string();
    let cli = redis_tool("redis-cli");
    // Interactive mode reads commands from a terminal-less stdin the same way.
    let mut child = Command::new(&cli)
        .args(["-h", "127.0.0.1", "-p", &port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SET name hypercache\nGET name\nINCR n\nTTL name\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "OK\nhypercache\n1\n-1\n"
    );
    // --pipe mode (mass insertion) with 10,000 commands.
    let mut proto = Vec::new();
    for i in 0..10_000 {
        let k = format!("pk{i}");
        proto.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$2\r\nvv\r\n", k.len()).as_bytes(),
        );
    }
    let mut child = Command::new(&cli)
        .args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&proto).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("errors: 0, replies: 10000"),
        "{text}"
    );
    let mut c = s.conn();
    // name, n, and the 10,000 piped keys.
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 10_002);
}

#[test]
fn redis_benchmark_runs_against_it() {
    let s = Server::start(&[]);
    let out = Command::new(redis_tool("redis-benchmark"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.addr.port().to_string(),
            "-t",
            "set,get,incr,mset",
            "-n",
            "2000",
            "-c",
            "10",
            "-q",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for t in ["SET", "GET", "INCR", "MSET"] {
        assert!(
            text.contains(&format!("{t}:")) || text.contains(t),
            "{t} missing in {text}"
        );
    }
    assert!(!text.to_lowercase().contains("error"), "{text}");
}

/// INFO's sections as Redis 7 selects them (the checks of Redis's own `unit/info-command`):
/// default leaves `commandstats` and `latencystats` out, `all` and `everything` add them,
/// names are case-insensitive, several may be given, and none is printed twice.
#[test]
fn info_sections_as_redis_7_selects_them() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let _: () = redis::cmd("PING").query(&mut c).unwrap();
    let info = |c: &mut redis::Connection, args: &[&str]| -> String {
        redis::cmd("INFO").arg(args).query(c).unwrap()
    };
    for args in [&[][..], &["default"]] {
        let i = info(&mut c, args);
        assert!(
            i.contains("redis_version") && i.contains("used_cpu_user") && i.contains("used_memory")
        );
        assert!(!i.contains("rejected_calls"), "{args:?}");
    }
    for arg in ["all", "everything"] {
        let i = info(&mut c, &[arg]);
        assert!(
            i.contains("rejected_calls") && i.contains("latency_percentiles_usec_"),
            "{arg}"
        );
    }
    let i = info(&mut c, &["commandSTATS"]);
    assert!(i.contains("rejected_calls") && !i.contains("used_memory"));
    let i = info(&mut c, &["cpu", "all"]);
    assert!(i.contains("master_repl_offset") && i.contains("rejected_calls"));
    assert_eq!(i.matches("used_cpu_user_children").count(), 1);
    let i = info(&mut c, &["cpu", "default"]);
    assert!(i.contains("used_memory") && !i.contains("rejected_calls"));
    assert_eq!(i.matches("used_cpu_user_children").count(), 1);
}

/// A client's own line in CLIENT INFO and CLIENT LIST names the command it is running, as in
/// Redis (it used to show the previous one, or NULL).
#[test]
fn client_info_names_the_running_command() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(info.contains(" cmd=client|info "), "{info}");
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(list.contains(" cmd=client|list "), "{list}");
}

/// CLIENT LIST's buffer fields: a client's own line counts its command's arguments (`argv-mem`)
/// and its read buffer's free space, and a client that stops reading its replies shows them
/// waiting (`obl`) in a reply buffer that grew to hold them (`rbs`, `rbp`).
#[test]
fn client_list_shows_replies_a_client_does_not_read() {
    fn field(line: &str, name: &str) -> usize {
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .parse()
            .unwrap()
    }
    let s = Server::start(&[]);
    let mut c = s.conn();
    let own: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert_eq!(field(&own, "argv-mem"), "clientinfo".len(), "{own}");
    assert!(field(&own, "qbuf-free") > 0, "{own}");
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'v'; 1 << 20])
        .query(&mut c)
        .unwrap();
    // 64 replies of 1 MB, never read: the kernel's socket buffers fill and the rest waits.
    let mut slow = s.raw();
    let gets = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(64);
    slow.write_all(&gets).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        let line = list
            .lines()
            .find(|l| l.contains(" cmd=get "))
            .map(str::to_string);
        if let Some(line) = line.filter(|l| field(l, "obl") > 0) {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no waiting replies: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (obl, rbs, rbp) = (
        field(&line, "obl"),
        field(&line, "rbs"),
        field(&line, "rbp"),
    );
    assert!(obl >= 1 << 20, "{line}");
    assert!(rbs >= obl && rbp >= obl, "{line}");
    assert!(field(&line, "tot-mem") >= rbs, "{line}");
    drop(slow);
}

/// MONITOR against a real Redis: the same commands give the same lines (time and client address
/// aside): admin commands and refused commands left out, AUTH and HELLO secrets redacted,
/// arguments quoted alike. Without the password, MONITOR itself is refused.
#[test]
fn monitor_shows_what_redis_shows() {
    fn lines_for(server: &common::Server) -> Vec<String> {
        let mut mon = server.raw();
        mon.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
        assert_eq!(common::read_exactly(&mut mon, 5), b"+OK\r\n");
        let mut c = server.raw();
        let cmds: &[&[&[u8]]] = &[
            &[b"SET", b"a", b"x\"y z"],
            &[b"AUTH", b"secret"],
            &[b"HELLO", b"2", b"AUTH", b"default", b"secret"],
            &[b"CONFIG", b"GET", b"maxmemory"],
            &[b"GET"],
            &[b"INCR", b"a"],
            &[b"SET", b"k", b"a\nb\x01\\"],
            &[b"client", b"id"],
            &[b"PING"],
        ];
        for args in cmds {
            let mut req = format!("*{}\r\n", args.len()).into_bytes();
            for a in *args {
                req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                req.extend_from_slice(a);
                req.extend_from_slice(b"\r\n");
            }
            c.write_all(&req).unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).unwrap();
        }
        // SET, AUTH, HELLO, INCR, SET, client id, PING (the last one).
        let want = 7;
        let mut got = String::new();
        while got.matches("\r\n").count() < want {
            let mut buf = [0u8; 4096];
            let n = mon.read(&mut buf).unwrap();
            assert!(n > 0, "monitor closed: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        got.lines()
            .map(|l| {
                // "+<secs>.<micros> [0 <addr>] <args>": keep the database and the arguments.
                let (head, rest) = l.split_once("] ").expect("a monitor line");
                assert!(head.starts_with('+'), "{l}");
                let db = head.split('[').nth(1).unwrap().split(' ').next().unwrap();
                format!("[{db}] {rest}")
            })
            .collect()
    }
    let redis = common::Server::redis();
    let hc = common::Server::start(&[]);
    let expected = lines_for(&redis);
    assert!(
        expected.iter().any(|l| l.contains("(redacted)")),
        "{expected:?}"
    );
    assert_eq!(lines_for(&hc), expected);

    // Behind a password: MONITOR needs it, as every other command does.
    let locked = common::Server::start(&["--requirepass", "pw"]);
    let mut s = locked.raw();
    s.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
    let reply = common::read_exactly(&mut s, 8);
    assert!(
        reply.starts_with(b"-NOAUTH"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// `reported-redis-version` is what INFO and HELLO say (clients gate features on it): 7.0.15 by
/// default, another version when set, and nothing that is not a version.
#[test]
fn the_reported_version_is_a_setting() {
    let s = Server::start(&["--reported-redis-version", "7.4.0"]);
    let mut c = s.conn();
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    assert!(info.contains("\r\nredis_version:7.4.0\r\n"), "{info}");
    let mut raw = s.raw();
    raw.write_all(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n").unwrap();
    let hello = String::from_utf8_lossy(&read_exactly(&mut raw, 64)).into_owned();
    assert!(
        hello.contains("$7\r\nversion\r\n$5\r\n7.4.0\r\n"),
        "{hello}"
    );
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("reported-redis-version")
        .arg("7.4")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains("argument must be a version"),
        "{err}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("reported-redis-version")
        .arg("7.0.15")
        .query(&mut c)
        .unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    assert!(info.contains("\r\nredis_version:7.0.15\r\n"), "{info}");
    let plain = Server::start(&[]);
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut plain.conn())
        .unwrap();
    assert!(info.contains("\r\nredis_version:7.0.15\r\n"), "{info}");
}

/// `min-replicas-to-write` as a Redis primary without replicas applies it: every write is
/// refused with `-NOREPLICAS` (a transaction with a write aborts at EXEC, a script that declares
/// it may write is refused, a compat script's write fails inside it), reads go on, and setting
/// it back to 0 (or `min-replicas-max-lag` to 0) lets writes through again.
#[test]
fn min_replicas_to_write_refuses_writes_as_a_primary_without_replicas() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let _: () = c.set("x", "v").unwrap();
    let set = |c: &mut redis::Connection, k: &str, v: &str| -> Result<(), String> {
        c.set::<_, _, ()>(k, v).map_err(|e| e.to_string())
    };
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(1)
        .query(&mut c)
        .unwrap();
    let e = set(&mut c, "x", "1").unwrap_err();
    assert!(e.contains("NOREPLICAS"), "{e}");
    assert_eq!(c.get::<_, String>("x").unwrap(), "v");
    let script = |c: &mut redis::Connection, body: &str| -> Result<Value, String> {
        redis::cmd("EVAL")
            .arg(body)
            .arg(1)
            .arg("x")
            .query(c)
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        script(&mut c, "return redis.call('get','x')").unwrap(),
        Value::BulkString(b"v".to_vec())
    );
    assert_eq!(
        script(
            &mut c,
            "#!lua flags=no-writes\nreturn redis.call('get','x')"
        )
        .unwrap(),
        Value::BulkString(b"v".to_vec())
    );
    for body in [
        "#!lua\nreturn redis.call('get','x')",
        "return redis.call('set','x',1)",
    ] {
        let e = script(&mut c, body).unwrap_err();
        assert!(e.contains("NOREPLICAS"), "{body}: {e}");
    }
    let mut raw = s.raw();
    raw.write_all(b"MULTI\r\nSET x 2\r\nEXEC\r\n").unwrap();
    let want = "+OK\r\n-NOREPLICAS Not enough good replicas to write.\r\n-EXECABORT Transaction discarded because of previous errors.\r\n";
    let mut got = vec![0; want.len()];
    raw.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), want);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-slaves-max-lag")
        .arg(0)
        .query(&mut c)
        .unwrap();
    set(&mut c, "x", "3").unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-max-lag")
        .arg(10)
        .arg("min-replicas-to-write")
        .arg(0)
        .query(&mut c)
        .unwrap();
    set(&mut c, "x", "4").unwrap();
    assert_eq!(c.get::<_, String>("x").unwrap(), "4");
}

/// `maxmemory-clients`: when the connections together hold more than the limit, the largest
/// is closed before what it sent runs (INFO's `evicted_clients` counts it), the others stay;
/// a client with `CLIENT NO-EVICT on` is never chosen, so the next largest goes instead.
#[test]
fn maxmemory_clients_closes_the_largest_client() {
    let server = Server::start(&["--maxmemory-clients", "2mb"]);
    let limit: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-clients")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(limit, ["maxmemory-clients", "2097152"]);
    // A transaction queuing 3 MB of values.
    let big_transaction = |n: usize| -> Vec<u8> {
        let mut req = b"*1\r\n$5\r\nMULTI\r\n".to_vec();
        let value = vec![b'v'; 100_000];
        for i in 0..n {
            let key = format!("big:{i}");
            req.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$100000\r\n", key.len()).as_bytes(),
            );
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
        }
        req
    };
    let mut small = server.conn();
    let _: String = redis::cmd("PING").query(&mut small).unwrap();
    let evicted = |c: &mut redis::Connection| -> i64 {
        let info: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("evicted_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    assert_eq!(evicted(&mut small), 0);

    let mut big = server.raw();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close the connection before it has read everything: a failed write is
    // part of what is tested.
    let _ = big.write_all(&big_transaction(30));
    let mut got = Vec::new();
    let closed = loop {
        let mut buf = [0u8; 4096];
        match big.read(&mut buf) {
            Ok(0) => break true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            // Reset: closed with input unread.
            Err(_) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    assert!(closed, "the largest client stayed connected");
    let queued = got.windows(8).filter(|w| w == b"+QUEUED\r").count();
    assert!(
        queued < 30,
        "all 30 commands were queued before the eviction"
    );
    let _: String = redis::cmd("PING").query(&mut small).unwrap();
    assert_eq!(evicted(&mut small), 1);
    let list: String = redis::cmd("CLIENT").arg("INFO").query(&mut small).unwrap();
    let tot: usize = list
        .split(' ')
        .find_map(|f| f.strip_prefix("tot-mem="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(tot > 0 && tot < 2 << 20, "{list}");
    let memory: String = redis::cmd("INFO").arg("memory").query(&mut small).unwrap();
    let clients: usize = memory
        .lines()
        .find_map(|l| l.strip_prefix("mem_clients_normal:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(clients >= tot && clients < 2 << 20, "{clients} {tot}");
    let n: i64 = small.exists("big:0").unwrap();
    assert_eq!(n, 0, "nothing of the evicted transaction ran");

    // With CLIENT NO-EVICT on, the big client stays and the small one goes instead.
    let mut exempt = server.raw();
    exempt
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    exempt
        .write_all(b"*3\r\n$6\r\nCLIENT\r\n$8\r\nNO-EVICT\r\n$2\r\non\r\n")
        .unwrap();
    assert_eq!(read_exactly(&mut exempt, 5), b"+OK\r\n");
    let mut req = big_transaction(30);
    req.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
    exempt.write_all(&req).unwrap();
    let mut want = b"+OK\r\n".to_vec();
    want.extend(b"+QUEUED\r\n".repeat(30));
    want.extend_from_slice(b"*30\r\n");
    want.extend(b"+OK\r\n".repeat(30));
    assert_eq!(read_exactly(&mut exempt, want.len()), want);
    let mut small = small;
    let gone = redis::cmd("PING").query::<String>(&mut small).is_err();
    assert!(gone, "the small client was not evicted");
    let mut fresh = server.conn();
    assert_eq!(evicted(&mut fresh), 2);
    let n: i64 = fresh.exists("big:29").unwrap();
    assert_eq!(n, 1);
}

/// `CONFIG SET port`: the node listens on the new port and closes the old one, open
/// connections stay; a port that cannot be had fails the whole command (`Unable to listen on
/// this port`), and every setting given with it keeps its value.
#[test]
fn config_set_port_moves_the_listener_or_changes_nothing() {
    let mut server = Server::start(&[]);
    let mut open = server.conn();
    let get = |c: &mut redis::Connection, name: &str| -> String {
        let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap();
        v[1].clone()
    };
    let old = server.addr;
    let new_port = common::free_port();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("port")
        .arg(new_port)
        .query(&mut open)
        .unwrap();
    assert_eq!(get(&mut open, "port"), new_port.to_string());
    let info: String = redis::cmd("INFO").arg("server").query(&mut open).unwrap();
    assert!(info.contains(&format!("tcp_port:{new_port}\r\n")), "{info}");
    server.addr = std::net::SocketAddr::from(([127, 0, 0, 1], new_port));
    let pong: String = redis::cmd("PING").query(&mut server.conn()).unwrap();
    assert_eq!(pong, "PONG");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(old).is_ok() {
        assert!(Instant::now() < deadline, "the old port still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A port in use: nothing of the command changes, and the node still answers.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let before = get(&mut open, "maxmemory");
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("10000001")
        .arg("port")
        .arg(taken_port)
        .query::<()>(&mut open)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("(possibly related to argument 'port') - Unable to listen on this port"),
        "{e}"
    );
    assert_eq!(get(&mut open, "maxmemory"), before);
    assert_eq!(get(&mut open, "port"), new_port.to_string());
    let pong: String = redis::cmd("PING").query(&mut server.conn()).unwrap();
    assert_eq!(pong, "PONG");
    drop(taken);
}
