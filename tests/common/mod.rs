//! Helpers shared by the process tests: start the real binary on a free loopback port, wait until
//! it answers, and always stop it (by pid) when the test ends, even on panic, and even when the
//! test binary itself is stopped by SIGTERM, SIGINT or SIGHUP (`timeout`, Ctrl-C): see
//! [`Server::new`].
#![allow(dead_code)]

pub(crate) mod pki;
pub(crate) mod resp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pids of the servers this test process started and has not stopped yet.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test binary stopped by a signal runs no destructor, and its servers would outlive it (and
/// disturb whatever runs next on the machine, a benchmark say). A thread of its own waits for
/// SIGTERM, SIGINT and SIGHUP, kills every server still running (SIGKILL, by pid) and exits.
fn watch_signals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use tokio::signal::unix::{signal, SignalKind};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the signal watcher");
            rt.block_on(async {
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
                let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
                let _ = tx.send(());
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = hup.recv() => {}
                }
            });
            for pid in running().drain(..) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::process::exit(130);
        });
        // The handlers are in place before the first server starts.
        let _ = rx.recv();
    });
}

/// A free TCP port on 127.0.0.1 (bound and released; the race with other processes is accepted).
/// Never the same port twice in one test process: a cluster test restarts a killed node on its
/// old ports, which must not have been handed to another test's node meanwhile.
pub(crate) fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh free port after 100 tries");
}

/// How long a server may take to answer PING after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server process, killed (by pid) and reaped on drop, so it dies even when a test
/// panics.
pub(crate) struct Server {
    /// What it is, for messages.
    pub(crate) name: &'static str,
    /// The child process.
    pub(crate) child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

/// Starts `command(port)` on a free port and waits until it answers PING. A port taken between
/// `free_port` and the server's bind makes the server exit; that is retried on another port.
pub(crate) fn start(name: &'static str, command: impl Fn(u16) -> Command) -> Server {
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let mut cmd = command(port);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "redis-server" => panic!(
                "redis-server is not on PATH: this test needs a real Redis 7.0 (`.ci/run` installs it)"
            ),
            Err(e) => panic!("cannot start {name} ({cmd:?}): {e}"),
        };
        let mut server = Server::new(name, child, SocketAddr::from(([127, 0, 0, 1], port)));
        match server.wait_ready() {
            Ok(()) => return server,
            Err(e) => last_error = e,
        }
    }
    panic!("{name} did not become ready: {last_error}");
}

/// An empty directory for the server on `port` to run in (under the system's temporary
/// directory; emptied if it exists).
pub(crate) fn scratch_dir(port: u16) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hypercache-test-redis-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Whether the server at `addr` answers PING (`-NOAUTH` counts: it is up, it wants a password).
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    conn.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && conn.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
}

impl Server {
    /// Wraps a server process just spawned: stopped when dropped, or when a signal stops the
    /// test binary ([`watch_signals`]).
    pub(crate) fn new(name: &'static str, child: Child, addr: SocketAddr) -> Server {
        watch_signals();
        running().push(child.id());
        Server { name, child, addr }
    }

    /// Starts `hypercache` with `--bind 127.0.0.1 --port <free>` plus `extra` arguments and waits
    /// until it answers PING.
    pub(crate) fn start(extra: &[&str]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        start("hypercache", move |port| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_hypercache"));
            cmd.args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-level",
                "warn",
                // No HTTP listener unless a test asks for one (`--http-port N` in `extra`).
                "--http-port",
                "0",
            ])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            cmd
        })
    }

    /// A real `redis-server` 7 on a free port, no persistence, in a directory of its own (a
    /// `dump.rdb` left elsewhere is not loaded).
    pub(crate) fn redis() -> Server {
        start("redis-server", |port| {
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(scratch_dir(port))
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            cmd
        })
    }

    /// Sends PING until it is answered, for at most [`READY_TIMEOUT`].
    pub(crate) fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before answering PING",
                    self.name
                ));
            }
            if ping(self.addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no reply to PING from {} at {} within {READY_TIMEOUT:?}",
                    self.name, self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `redis` crate client for this server.
    pub(crate) fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://{}/", self.addr)).unwrap()
    }

    /// A synchronous connection.
    pub(crate) fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }

    /// A raw socket with a read timeout.
    pub(crate) fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Waits (bounded) for the process to exit and returns whether it did.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends a signal to the process.
    pub(crate) fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        running().retain(|&p| p != pid);
    }
}

/// Reads from `s` until `want` bytes arrived or the peer closed or timed out; returns what came.
pub(crate) fn read_exactly(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while out.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Whether the server closed `s` (EOF within the read timeout).
pub(crate) fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(s.read(&mut buf), Ok(0))
}

/// A cluster of `hypercache` processes on loopback, each with its own client and cluster port,
/// all seeded with every member. Nodes can be killed (SIGKILL) and restarted on the same ports.
pub(crate) struct TestCluster {
    /// (client port, cluster port) per node.
    pub(crate) ports: Vec<(u16, u16)>,
    /// The running processes (`None`: killed).
    pub(crate) nodes: Vec<Option<Server>>,
    seeds: String,
    pub(crate) extra: Vec<String>,
    /// Each node's HTTP port (`/health`, `/ready`, `/metrics`).
    pub(crate) http_ports: Vec<u16>,
    /// Where each node's log goes, at info (`HC_TEST_LOG_DIR`, or a test's own directory);
    /// `None`: warnings only, discarded.
    pub(crate) log_dir: Option<std::path::PathBuf>,
    /// More arguments for one node (after `extra`), from its next (re)start on.
    pub(crate) node_args: Vec<Vec<String>>,
}

impl TestCluster {
    /// Starts `n` nodes with `extra` arguments and waits until each sees all the others.
    pub(crate) fn start(n: usize, extra: &[&str]) -> TestCluster {
        Self::start_logged(
            n,
            extra,
            std::env::var_os("HC_TEST_LOG_DIR").map(Into::into),
        )
    }

    /// [`TestCluster::start`], each node logging at info to `log_dir/node-<port>.log`.
    pub(crate) fn start_logged(
        n: usize,
        extra: &[&str],
        log_dir: Option<std::path::PathBuf>,
    ) -> TestCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let seeds = ports
            .iter()
            .map(|(_, c)| format!("127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = TestCluster {
            log_dir,
            http_ports: (0..n).map(|_| free_port()).collect(),
            ports,
            nodes: (0..n).map(|_| None).collect(),
            seeds,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            node_args: vec![Vec::new(); n],
        };
        for i in 0..n {
            c.restart(i);
        }
        for i in 0..n {
            c.wait_live(i, n);
        }
        for i in 0..n {
            c.wait_synced(i);
        }
        c
    }

    /// (Re)starts node `i` on its ports.
    pub(crate) fn restart(&mut self, i: usize) {
        let (port, cport) = self.ports[i];
        // HC_TEST_LOG_DIR=dir keeps each node's log (at info) in dir/node-<port>.log.
        let (level, stderr) = match &self.log_dir {
            Some(dir) => {
                let path = std::path::Path::new(&dir).join(format!("node-{port}.log"));
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("log file");
                ("info", Stdio::from(f))
            }
            None => ("warn", Stdio::null()),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_hypercache"))
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-port", &cport.to_string(), "--seeds", &self.seeds])
            .args(["--log-level", level])
            .args(["--http-port", &self.http_ports[i].to_string()])
            .args(&self.extra)
            .args(&self.node_args[i])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start hypercache");
        let mut server = Server::new(
            "hypercache",
            child,
            SocketAddr::from(([127, 0, 0, 1], port)),
        );
        if let Err(e) = server.wait_ready() {
            panic!("cluster node {i}: {e}");
        }
        self.nodes[i] = Some(server);
    }

    /// Starts one more node whose only seed is node `seed`; returns its index.
    pub(crate) fn add(&mut self, seed: usize) -> usize {
        let i = self.ports.len();
        self.ports.push((free_port(), free_port()));
        self.http_ports.push(free_port());
        self.nodes.push(None);
        self.node_args.push(vec![
            "--seeds".into(),
            format!("127.0.0.1:{}", self.ports[seed].1),
        ]);
        self.restart(i);
        i
    }

    /// Stops node `i` with SIGTERM (it leaves the cluster) and reaps it.
    pub(crate) fn stop(&mut self, i: usize) {
        if let Some(mut s) = self.nodes[i].take() {
            s.signal("TERM");
            assert!(
                s.wait_exit(Duration::from_secs(10)),
                "node {i} did not stop"
            );
        }
    }

    /// One `INFO cluster` field of node `i`.
    pub(crate) fn info_field(&self, i: usize, field: &str) -> String {
        self.info_in(i, "cluster", field)
    }

    /// One field of node `i`'s INFO `section` (empty if it has none).
    pub(crate) fn info_in(&self, i: usize, section: &str, field: &str) -> String {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn(i))
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Kills node `i` with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.nodes[i].take() {
            s.signal("KILL");
            assert!(s.wait_exit(Duration::from_secs(5)), "node {i} did not die");
        }
    }

    /// Client address of node `i`.
    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i].0))
    }

    /// A connection to node `i`.
    pub(crate) fn conn(&self, i: usize) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.addr(i)))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A connection to node `i` whose reads and writes run at `read` and `write` consistency.
    pub(crate) fn conn_at(&self, i: usize, read: &str, write: &str) -> redis::Connection {
        let mut c = self.conn(i);
        let _: () = redis::cmd("HC.CONSISTENCY")
            .arg("READ")
            .arg(read)
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("HC.CONSISTENCY")
            .arg("WRITE")
            .arg(write)
            .query(&mut c)
            .unwrap();
        c
    }

    /// One `HC.METRICS` value of node `i`.
    pub(crate) fn metric(&self, i: usize, name: &str) -> i64 {
        let flat: Vec<redis::Value> = redis::cmd("HC.METRICS").query(&mut self.conn(i)).unwrap();
        flat.chunks(2)
            .find_map(|p| match (&p[0], &p[1]) {
                (redis::Value::BulkString(k), redis::Value::Int(v)) if k == name.as_bytes() => {
                    Some(*v)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// How many members node `i` sees live (itself included), from INFO.
    pub(crate) fn live_seen(&self, i: usize) -> usize {
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query(&mut self.conn(i))
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("hc_members_live:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (bounded, 10 s) until node `i` has joined (it has a ring with the others). Before
    /// that a restarted node answers every keyed command `-NOREPLICAS`.
    pub(crate) fn wait_joined(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.info_field(i, "hc_joined") != "1" {
            assert!(Instant::now() < deadline, "node {i} did not join");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded, 10 s) until node `i` has copied its slots from the others after starting.
    pub(crate) fn wait_synced(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("cluster")
                .query(&mut self.conn(i))
                .unwrap();
            if info.contains("hc_synced:1") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not finish its bootstrap"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded, 10 s) until node `i` sees `n` live members.
    pub(crate) fn wait_live(&self, i: usize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.live_seen(i);
            if seen == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} sees {seen} live members, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sets `a` to `total` and `b` to 0, then runs `moves` (which moves units from `a` to `b`, each
/// move being one transaction or script) while `readers` other connections read both keys in
/// one MGET, over and over, asserting that they always sum to `total`: no read may land between
/// a move's two writes. Returns after `moves`, once every reader did at least one read.
#[allow(dead_code)]
pub(crate) fn reads_never_see_half_a_move(
    s: &Server,
    readers: usize,
    total: i64,
    moves: impl FnOnce(&mut redis::Connection),
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut c = s.conn();
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(total)
        .arg("b")
        .arg(0)
        .query(&mut c)
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let mut r = s.conn();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (a, b): (i64, i64) =
                        redis::cmd("MGET").arg("a").arg("b").query(&mut r).unwrap();
                    assert_eq!(a + b, total, "a read landed in the middle of a move");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    moves(&mut c);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        assert!(t.join().unwrap() > 0, "a reader never read");
    }
}
