//! This node as a replica of a Redis primary (`REPLICAOF host port`): the way onto HyperCache
//! from a running Redis without downtime. The node connects as a Redis replica does (`PING`,
//! `AUTH` with `masterauth`, `REPLCONF`, `PSYNC`), loads the primary's RDB snapshot
//! ([`crate::rdb::parse`]: its strings and function libraries; keys of other types are passed
//! over and counted) and applies the primary's command stream, acknowledging its offset every
//! second. Meanwhile clients read (writes get `-READONLY` while `replica-read-only` is on);
//! `REPLICAOF NO ONE` keeps the data and takes writes again.
//!
//! The primary's commands run through a session of their own, as a client's would (with the
//! node's gate, so transactions stay isolated), except that they are never refused for being
//! writes. A command the node cannot run (a list command, say) is counted and logged, not
//! fatal: INFO replication shows `master_sync_skipped_keys` and `master_stream_errors`.
//!
//! Only a single node can replicate a primary: a cluster refuses `REPLICAOF`, as Redis Cluster
//! does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::session::Session;
use crate::state::{now_ms, Shared};

/// The node's link to the primary it replicates, if any.
#[derive(Default)]
pub struct Upstream {
    /// This node replicates a primary.
    replica: AtomicBool,
    /// The link is up: the snapshot is loaded and the stream flows.
    link_up: AtomicBool,
    link: Mutex<Option<Link>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

struct Link {
    host: String,
    port: u16,
    task: tokio::task::JoinHandle<()>,
    info: Arc<LinkInfo>,
}

/// What INFO shows of the link.
#[derive(Debug, Default)]
struct LinkInfo {
    /// A snapshot is being received or loaded.
    syncing: AtomicBool,
    /// The primary's stream offset applied so far.
    offset: AtomicU64,
    /// When (unix ms) the primary was last heard.
    last_io_ms: AtomicU64,
    /// Keys of the snapshot of types HyperCache does not store.
    skipped: AtomicU64,
    /// Commands of the stream this node refused.
    errors: AtomicU64,
    /// When the link went down (unix ms; 0: up, or never up).
    down_since_ms: AtomicU64,
}

impl Upstream {
    /// Whether this node replicates a primary.
    #[inline]
    pub fn is_replica(&self) -> bool {
        self.replica.load(Ordering::Acquire)
    }

    /// Whether the link to the primary is up.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Acquire)
    }

    /// Starts replicating `host:port` (dropping the link to another primary). Returns false if
    /// this node already replicates that primary.
    pub fn follow(&self, shared: &Arc<Shared>, host: String, port: u16) -> bool {
        let mut link = self.link.lock();
        if link
            .as_ref()
            .is_some_and(|l| l.host == host && l.port == port)
        {
            return false;
        }
        if let Some(old) = link.take() {
            old.task.abort();
        }
        let info = Arc::new(LinkInfo {
            down_since_ms: AtomicU64::new(now_ms()),
            ..Default::default()
        });
        self.link_up.store(false, Ordering::Release);
        self.replica.store(true, Ordering::Release);
        shared.store.set_replica_mode(true);
        let task = tokio::spawn(run(shared.clone(), host.clone(), port, info.clone()));
        tracing::info!(node_id = %shared.node_id, component = "replica", host, port, "replicating a primary");
        *link = Some(Link {
            host,
            port,
            task,
            info,
        });
        true
    }

    /// `REPLICAOF NO ONE`: drops the link; the data stays and writes are taken again.
    pub fn stop(&self, shared: &Shared) {
        if let Some(old) = self.link.lock().take() {
            old.task.abort();
            tracing::info!(node_id = %shared.node_id, component = "replica", host = old.host, port = old.port, "no longer a replica");
        }
        self.link_up.store(false, Ordering::Release);
        self.replica.store(false, Ordering::Release);
        // Keys past their time are expired here again (by the cycle, or when found).
        shared.store.set_replica_mode(false);
    }

    /// `host port` of the primary this node follows (`REPLICAOF`), as `CONFIG GET replicaof`
    /// answers it; empty for a primary.
    pub fn primary(&self) -> String {
        self.link
            .lock()
            .as_ref()
            .map_or_else(String::new, |l| format!("{} {}", l.host, l.port))
    }

    /// The replication fields of INFO for a replica (`None`: this node is a primary).
    pub fn info(&self) -> Option<Vec<(String, String)>> {
        let link = self.link.lock();
        let l = link.as_ref()?;
        let i = &l.info;
        let up = self.link_up();
        let now = now_ms();
        let last_io = i.last_io_ms.load(Ordering::Relaxed);
        let offset = i.offset.load(Ordering::Relaxed);
        let mut out: Vec<(String, String)> = vec![
            ("role".into(), "slave".into()),
            ("master_host".into(), l.host.clone()),
            ("master_port".into(), l.port.to_string()),
            (
                "master_link_status".into(),
                if up { "up" } else { "down" }.into(),
            ),
            (
                "master_last_io_seconds_ago".into(),
                if last_io == 0 {
                    "-1".into()
                } else {
                    (now.saturating_sub(last_io) / 1000).to_string()
                },
            ),
            (
                "master_sync_in_progress".into(),
                u8::from(i.syncing.load(Ordering::Relaxed)).to_string(),
            ),
            ("slave_read_repl_offset".into(), offset.to_string()),
            ("slave_repl_offset".into(), offset.to_string()),
        ];
        if !up {
            let since = i.down_since_ms.load(Ordering::Relaxed);
            out.push((
                "master_link_down_since_seconds".into(),
                (now.saturating_sub(since) / 1000).to_string(),
            ));
        }
        out.extend([
            ("slave_priority".into(), "100".into()),
            ("slave_read_only".into(), "1".into()),
            ("replica_announced".into(), "1".into()),
            (
                "master_sync_skipped_keys".into(),
                i.skipped.load(Ordering::Relaxed).to_string(),
            ),
            (
                "master_stream_errors".into(),
                i.errors.load(Ordering::Relaxed).to_string(),
            ),
        ]);
        Some(out)
    }

    /// Commands of the primary's stream refused here since the last `REPLICAOF`.
    pub fn stream_errors(&self) -> u64 {
        self.link
            .lock()
            .as_ref()
            .map_or(0, |l| l.info.errors.load(Ordering::Relaxed))
    }

    /// `ROLE` of a replica: primary's host and port, link state, offset.
    pub fn role(&self) -> Option<(String, u16, &'static str, u64)> {
        let link = self.link.lock();
        let l = link.as_ref()?;
        let state = if self.link_up() {
            "connected"
        } else if l.info.syncing.load(Ordering::Relaxed) {
            "sync"
        } else {
            "connect"
        };
        Some((
            l.host.clone(),
            l.port,
            state,
            l.info.offset.load(Ordering::Relaxed),
        ))
    }
}

/// Keeps the link up: connects, syncs and follows the stream; after a failure, again a second
/// later (from the backlog when the primary still has it).
async fn run(shared: Arc<Shared>, host: String, port: u16, info: Arc<LinkInfo>) {
    // The primary's replication id and the offset applied, to continue from after a drop.
    let mut cached: Option<(String, u64)> = None;
    loop {
        let e = follow_once(&shared, &host, port, &info, &mut cached).await;
        if shared.upstream.link_up.swap(false, Ordering::AcqRel) {
            info.down_since_ms.store(now_ms(), Ordering::Relaxed);
        }
        info.syncing.store(false, Ordering::Relaxed);
        tracing::warn!(node_id = %shared.node_id, component = "replica", host, port, error = %e, "link to the primary down; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A connection to the primary: requests out, replies and the stream in.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

impl Wire {
    async fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut out = Vec::new();
        crate::repl::encode(&mut out, args);
        self.stream.write_all(&out).await
    }

    /// Reads more bytes into the buffer (an error at EOF or after the timeout).
    async fn fill(&mut self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err("timed out waiting for the primary".into()),
            Ok(Err(e)) => Err(format!("read error: {e}")),
            Ok(Ok(0)) => Err("the primary closed the connection".into()),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// One line (without CRLF). Newlines before it are the primary's keepalives (it sends them
    /// while it prepares a snapshot).
    async fn line(&mut self) -> Result<String, String> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i + 2);
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            self.fill().await?;
        }
    }

    /// A request's one-line reply.
    async fn call(&mut self, args: &[&[u8]]) -> Result<String, String> {
        self.send(args).await.map_err(|e| e.to_string())?;
        self.line().await
    }

    /// The snapshot after `+FULLRESYNC`: `$<len>` and that many bytes, or `$EOF:<mark>`, the
    /// bytes and the mark (a diskless sync); newlines before it are the primary's keepalives.
    async fn snapshot(&mut self) -> Result<Vec<u8>, String> {
        let head = loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            if self.buf.first().is_some_and(|&b| b != b'\n') {
                let l = self.line().await?;
                if !l.is_empty() {
                    break l;
                }
                continue;
            }
            self.fill().await?;
        };
        let spec = head
            .strip_prefix('$')
            .ok_or_else(|| format!("unexpected reply to PSYNC: {head}"))?;
        if let Some(mark) = spec.strip_prefix("EOF:") {
            let mark = mark.as_bytes().to_vec();
            loop {
                if self.buf.len() >= mark.len() && self.buf.ends_with(&mark) {
                    let n = self.buf.len() - mark.len();
                    let rdb = self.buf.split_to(n).to_vec();
                    self.buf.clear();
                    return Ok(rdb);
                }
                self.fill().await?;
            }
        }
        let len: usize = spec
            .parse()
            .map_err(|_| format!("bad snapshot length: {head}"))?;
        while self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            self.fill().await?;
        }
        Ok(self.buf.split_to(len).to_vec())
    }

    /// The next complete command of the stream in the buffer, and its size in bytes.
    fn next_command(&mut self) -> Result<Option<(Vec<Bytes>, usize)>, String> {
        let b = &self.buf[..];
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        if b.first() != Some(&b'*') {
            return Err(format!(
                "unexpected data in the stream: {:?}",
                String::from_utf8_lossy(&b[..eol])
            ));
        }
        let n: usize = std::str::from_utf8(&b[1..eol])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad array header in the stream")?;
        let mut at = eol + 2;
        let mut spans = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(rel) = b[at..].windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            if b[at] != b'$' {
                return Err("bad bulk header in the stream".into());
            }
            let len: usize = std::str::from_utf8(&b[at + 1..at + rel])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("bad bulk length in the stream")?;
            let start = at + rel + 2;
            if b.len() < start + len + 2 {
                return Ok(None);
            }
            spans.push((start, len));
            at = start + len + 2;
        }
        let frame = self.buf.split_to(at).freeze();
        let args = spans
            .into_iter()
            .map(|(s, l)| frame.slice(s..s + l))
            .collect();
        Ok(Some((args, at)))
    }
}

/// One connection's life: handshake, snapshot (or continuation), stream. Returns why it ended.
async fn follow_once(
    shared: &Arc<Shared>,
    host: &str,
    port: u16,
    info: &LinkInfo,
    cached: &mut Option<(String, u64)>,
) -> String {
    match follow_inner(shared, host, port, info, cached).await {
        Ok(()) => "stopped".into(),
        Err(e) => e,
    }
}

async fn follow_inner(
    shared: &Arc<Shared>,
    host: &str,
    port: u16,
    info: &LinkInfo,
    cached: &mut Option<(String, u64)>,
) -> Result<(), String> {
    let (timeout, auth, user, own_port) = {
        let c = shared.config.read();
        (
            Duration::from_secs(c.repl_timeout.max(1)),
            c.masterauth.clone(),
            c.masteruser.clone(),
            c.client_port(),
        )
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut w = Wire {
        stream,
        buf: BytesMut::with_capacity(64 * 1024),
        timeout,
    };
    let pong = w.call(&[b"PING"]).await?;
    if pong.starts_with('-') && !pong.starts_with("-NOAUTH") && !pong.starts_with("-NOPERM") {
        return Err(format!("the primary answered PING with {pong}"));
    }
    if !auth.is_empty() {
        let r = if user.is_empty() {
            w.call(&[b"AUTH", auth.as_bytes()]).await?
        } else {
            w.call(&[b"AUTH", user.as_bytes(), auth.as_bytes()]).await?
        };
        if r != "+OK" {
            return Err(format!("the primary refused AUTH: {r}"));
        }
    }
    // Older primaries may not know these: their errors are not fatal, as in Redis.
    let _ = w
        .call(&[
            b"REPLCONF",
            b"listening-port",
            own_port.to_string().as_bytes(),
        ])
        .await?;
    let _ = w
        .call(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])
        .await?;
    let (replid, next) = match cached.as_ref() {
        Some((id, off)) => (id.clone(), (off + 1).to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    let reply = w
        .call(&[b"PSYNC", replid.as_bytes(), next.as_bytes()])
        .await?;
    let mut session = master_session(shared, host, port);
    let mut offset;
    if let Some(rest) = reply.strip_prefix("+FULLRESYNC ") {
        let mut parts = rest.split(' ');
        let id = parts.next().unwrap_or_default().to_string();
        offset = parts.next().and_then(|o| o.parse().ok()).unwrap_or(0u64);
        info.syncing.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let rdb = w.snapshot().await?;
        info.last_io_ms.store(now_ms(), Ordering::Relaxed);
        let bytes = rdb.len();
        let (keys, skipped) = load(shared, &mut session, &rdb).await?;
        info.skipped.store(skipped, Ordering::Relaxed);
        info.syncing.store(false, Ordering::Relaxed);
        *cached = Some((id, offset));
        tracing::info!(node_id = %shared.node_id, component = "replica", keys, skipped, rdb_bytes = bytes, ms = started.elapsed().as_millis() as u64, "snapshot of the primary loaded");
    } else if let Some(rest) = reply.strip_prefix("+CONTINUE") {
        let (id, off) = cached.clone().ok_or("CONTINUE without a cached primary")?;
        let id = match rest.trim() {
            "" => id,
            new => new.to_string(),
        };
        offset = off;
        *cached = Some((id, offset));
        tracing::info!(node_id = %shared.node_id, component = "replica", offset, "continuing the primary's stream");
    } else {
        return Err(format!("the primary answered PSYNC with {reply}"));
    }
    info.offset.store(offset, Ordering::Relaxed);
    shared.upstream.link_up.store(true, Ordering::Release);
    info.down_since_ms.store(0, Ordering::Relaxed);
    let mut ack = tokio::time::interval(Duration::from_secs(1));
    loop {
        while let Some((mut args, size)) = w.next_command()? {
            let is =
                |i: usize, name: &[u8]| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(name));
            if is(0, b"REPLCONF") && is(1, b"GETACK") {
                offset += size as u64;
                w.send(&[b"REPLCONF", b"ACK", offset.to_string().as_bytes()])
                    .await
                    .map_err(|e| e.to_string())?;
            } else if is(0, b"PING") {
                offset += size as u64;
            } else {
                apply(shared, &mut session, &mut args, info).await;
                offset += size as u64;
            }
            info.offset.store(offset, Ordering::Relaxed);
            if let Some(c) = cached.as_mut() {
                c.1 = offset;
            }
        }
        tokio::select! {
            r = w.fill() => {
                r?;
                info.last_io_ms.store(now_ms(), Ordering::Relaxed);
            }
            _ = ack.tick() => {
                w.send(&[b"REPLCONF", b"ACK", offset.to_string().as_bytes()])
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

/// The session the primary's commands run through: authenticated, unrestricted, never refused
/// for being a write on a replica.
fn master_session(shared: &Arc<Shared>, host: &str, port: u16) -> Session {
    let addr = format!("{host}:{port}")
        .parse()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let handle = Arc::new(crate::state::ClientHandle::new(id, addr, addr, -1));
    let mut s = Session::new(shared.clone(), handle);
    s.authed = true;
    s.set_user(Arc::new(crate::acl::User::default_user("")));
    s.from_master = true;
    s
}

/// Runs one command of the primary's (replies discarded; a refusal counted and logged).
async fn apply(shared: &Shared, s: &mut Session, args: &mut Vec<Bytes>, info: &LinkInfo) {
    let name = String::from_utf8_lossy(&args[0]).into_owned();
    s.refresh_config();
    s.begin_batch();
    s.out.clear();
    if s.must_wait(args) {
        s.resolve().await;
    }
    let gate = if s.runs_exclusive(args) {
        None
    } else {
        Some(shared.exclusive.shared().await)
    };
    s.run(args);
    drop(gate);
    if s.exec_ready.is_some() {
        s.run_transaction().await;
    }
    if s.script_ready.is_some() {
        s.queue_script();
    }
    s.resolve().await;
    s.end_batch();
    if s.out.first() == Some(&b'-') {
        let n = info.errors.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_power_of_two() {
            let end = s.out.len().min(200);
            let reply = String::from_utf8_lossy(&s.out[..end])
                .trim_end()
                .to_string();
            tracing::warn!(node_id = %shared.node_id, component = "replica", command = name, reply, errors = n + 1, "a command of the primary's stream was refused here");
        }
    }
    s.out.clear();
}

/// Replaces the node's data and function libraries with the snapshot's: returns the keys
/// loaded and those passed over (other types).
async fn load(shared: &Arc<Shared>, s: &mut Session, rdb: &[u8]) -> Result<(u64, u64), String> {
    let mut items = Vec::new();
    crate::rdb::parse(rdb, |i| items.push(i))?;
    let info = LinkInfo::default();
    apply(shared, s, &mut vec![Bytes::from_static(b"FLUSHALL")], &info).await;
    apply(
        shared,
        s,
        &mut vec![
            Bytes::from_static(b"FUNCTION"),
            Bytes::from_static(b"FLUSH"),
        ],
        &info,
    )
    .await;
    let databases = shared.config.read().databases;
    let (mut keys, mut skipped) = (0u64, 0u64);
    let mut db = None;
    let mut pacer = crate::persist::Pacer::new(shared);
    for (n, item) in items.into_iter().enumerate() {
        match item {
            crate::rdb::Item::Library(code) => {
                let mut args = vec![
                    Bytes::from_static(b"FUNCTION"),
                    Bytes::from_static(b"LOAD"),
                    Bytes::from_static(b"REPLACE"),
                    code,
                ];
                apply(shared, s, &mut args, &info).await;
            }
            crate::rdb::Item::Key {
                db: d,
                key,
                value,
                expire_at,
            } => {
                if u64::from(d) >= databases {
                    skipped += 1;
                    continue;
                }
                if db != Some(d) {
                    let mut select =
                        vec![Bytes::from_static(b"SELECT"), Bytes::from(d.to_string())];
                    apply(shared, s, &mut select, &info).await;
                    db = Some(d);
                }
                let mut args = vec![Bytes::from_static(b"SET"), key, value];
                if let Some(at) = expire_at {
                    args.push(Bytes::from_static(b"PXAT"));
                    args.push(Bytes::from(at.max(1).to_string()));
                }
                apply(shared, s, &mut args, &info).await;
                keys += 1;
            }
            crate::rdb::Item::Skipped { .. } => skipped += 1,
        }
        if n % 1024 == 1023 {
            // A large snapshot: other clients get their turn.
            tokio::task::yield_now().await;
        }
        pacer.key().await;
    }
    let mut select = vec![Bytes::from_static(b"SELECT"), Bytes::from_static(b"0")];
    apply(shared, s, &mut select, &info).await;
    if info.errors.load(Ordering::Relaxed) > 0 {
        return Err(format!(
            "{} keys of the snapshot could not be loaded",
            info.errors.load(Ordering::Relaxed)
        ));
    }
    Ok((keys, skipped))
}
