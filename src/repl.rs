//! Redis replication from a single node: a Redis replica (`REPLICAOF` on a redis-server,
//! `redis-cli --replica`, a migration tool speaking `PSYNC`) attaches with `SYNC` or `PSYNC`,
//! loads an RDB snapshot of the node ([`crate::rdb`]) and then follows the stream of the node's
//! writes in Redis's own form: the way off HyperCache, or into a Redis-based tool, without
//! downtime.
//!
//! What goes into the stream is what Redis 7.0 propagates: each write command that changed
//! something, as the client sent it or rewritten as Redis rewrites it (`SET ... EX` becomes
//! `SET ... PXAT`, `EXPIRE` becomes `PEXPIREAT`, `INCRBYFLOAT` a `SET ... KEEPTTL`, ...;
//! [`rewrite`]); a transaction's or a script's effects wrapped in `MULTI`/`EXEC` when there is
//! more than one; `SELECT` when the database changes; `DEL` for a key that expired or was
//! evicted; `PUBLISH`, `FLUSHALL`, `SWAPDB` and `FUNCTION LOAD|DELETE|FLUSH|RESTORE` always.
//!
//! Order. The stream must give each key's writes in the order the node applied them. While a
//! replica is attached ([`Repl::is_active`]) every command a client sends holds a turn
//! ([`Repl::turn`]) from before it runs until its effects are in the stream, and transactions and scripts run
//! with the node's gate held exclusive ([`crate::exclusive`]), so the node runs one command at
//! a time, as Redis does; with no replica attached nothing of this costs more than one atomic
//! load per command. The snapshot is taken with the gate held exclusive and the feed locked:
//! no write lands between it and the stream's start. Taking it pauses the node for as long as
//! copying its keys takes (Redis forks instead).
//!
//! Only a single node offers this: in a cluster a node holds only its slots' replicas, and its
//! stream would not be the cluster's. `SYNC`/`PSYNC` are refused there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hypercache_cluster::db;
use hypercache_cluster::notify::Change;
use hypercache_cluster::op::ExpiryChange;
use hypercache_cluster::{Op, Outcome};
use parking_lot::{Mutex, MutexGuard};

use crate::state::{now_ms, Shared};

/// One propagated command: the (logical) database it ran in, and its arguments.
pub type Effect = (u8, Vec<Bytes>);

/// The node's replication source.
pub struct Repl {
    /// At least one replica is attached: commands take the feed's lock and record effects.
    active: AtomicBool,
    /// Held by a client's command from before it runs until its effects are in the stream
    /// (and by the background evictor): one command at a time while replicas are attached.
    order: Mutex<()>,
    /// The stream, locked briefly (after `order` when both are taken).
    feed: Mutex<Feed>,
    /// The replication ID (`master_replid`): 40 hex digits, new at every start.
    replid: String,
    /// Signalled on every acknowledgement (`WAIT`).
    pub acked: tokio::sync::Notify,
    /// Replicas attached with a snapshot (INFO's `sync_full`).
    sync_full: AtomicU64,
    /// `PSYNC`s continued from the backlog (`sync_partial_ok`).
    sync_partial_ok: AtomicU64,
    /// `PSYNC`s that asked to continue and got a snapshot instead (`sync_partial_err`).
    sync_partial_err: AtomicU64,
}

impl std::fmt::Debug for Repl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repl").finish_non_exhaustive()
    }
}

impl Default for Repl {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ u64::from(std::process::id()).rotate_left(32);
        let a = xxhash_rust::xxh3::xxh3_64_with_seed(b"replid-a", seed);
        let b = xxhash_rust::xxh3::xxh3_64_with_seed(b"replid-b", seed);
        let c = xxhash_rust::xxh3::xxh3_64_with_seed(b"replid-c", seed);
        Repl {
            active: AtomicBool::new(false),
            order: Mutex::new(()),
            feed: Mutex::new(Feed {
                db: None,
                offset: 0,
                replicas: Vec::new(),
                backlog: VecDeque::new(),
                backlog_valid: false,
                limits: (1024 * 1024, 256 * 1024 * 1024),
                scratch: Vec::new(),
                last_ping: Instant::now(),
                left: None,
            }),
            replid: format!("{a:016x}{b:016x}{:08x}", c as u32),
            acked: tokio::sync::Notify::new(),
            sync_full: AtomicU64::new(0),
            sync_partial_ok: AtomicU64::new(0),
            sync_partial_err: AtomicU64::new(0),
        }
    }
}

/// What a replica asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAsk {
    /// `SYNC`: a snapshot, then the stream.
    Sync,
    /// `PSYNC replid offset`: the stream from `offset` if this node still has it, else as
    /// `SYNC` (with `+FULLRESYNC` first).
    Psync {
        /// The replication ID the replica followed (`?`: none).
        replid: Bytes,
        /// The next byte it wants (`-1`: none).
        offset: i64,
    },
}

/// An attached replica, as the node sees it.
#[derive(Debug)]
pub struct ReplicaState {
    /// Its client id.
    pub client: u64,
    /// Its address.
    pub ip: String,
    /// The port it serves on (`REPLCONF listening-port`).
    pub port: u16,
    /// Attached with `PSYNC` (it acknowledges, and is dropped after `repl-timeout` of silence).
    pub psync: bool,
    /// The stream offset it acknowledged last.
    pub ack: AtomicU64,
    /// When (unix ms) it acknowledged last (its attach time until then).
    pub ack_ms: AtomicU64,
    /// Stream bytes not yet taken by its connection (appended by the feed, taken whole).
    queue: Mutex<Vec<u8>>,
    /// Wakes its connection when bytes arrive or the node drops it.
    wake: tokio::sync::Notify,
    /// The node dropped it (output limit, timeout): its connection closes.
    dropped: AtomicBool,
    /// Since when (unix ms) its queue has been over the soft limit (0: it is not).
    over_soft_since: AtomicU64,
}

impl ReplicaState {
    fn drop_link(&self) {
        self.dropped.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The connection's side of an attached replica: the stream to write.
#[derive(Debug)]
pub struct ReplicaConn {
    /// Its state.
    pub state: Arc<ReplicaState>,
}

impl ReplicaConn {
    /// Waits until stream bytes are queued (true) or the node dropped the replica (false).
    pub async fn ready(&self) -> bool {
        loop {
            if self.state.dropped.load(Ordering::Acquire) {
                return false;
            }
            if !self.state.queue.lock().is_empty() {
                return true;
            }
            // A permit stored by a notify_one that came before this wait ends it at once.
            self.state.wake.notified().await;
        }
    }

    /// Moves every queued byte to `out`; returns how many.
    pub fn take_into(&self, out: &mut bytes::BytesMut) -> usize {
        let mut q = self.state.queue.lock();
        out.extend_from_slice(&q);
        let n = q.len();
        q.clear();
        if q.capacity() > 1024 * 1024 {
            q.shrink_to(64 * 1024);
        }
        n
    }
}

struct Link {
    state: Arc<ReplicaState>,
}

/// The stream (held under [`Repl::lock`]).
pub struct Feed {
    /// The database the stream last selected (`None`: select before the next command).
    db: Option<u8>,
    /// Bytes written to the stream so far (`master_repl_offset`).
    offset: u64,
    replicas: Vec<Link>,
    /// The stream's last bytes, up to `repl-backlog-size`, ending at `offset`.
    backlog: VecDeque<u8>,
    /// The backlog holds every byte since its first (false before the first replica and after
    /// the last one left: writes then went unrecorded).
    backlog_valid: bool,
    /// `repl-backlog-size` and the replica output hard limit ([`Feed::refresh_limits`]).
    limits: (usize, u64),
    /// The encoding buffer, kept between blocks.
    scratch: Vec<u8>,
    last_ping: Instant,
    /// When the last replica left, and whether it may come back to continue (`None`: one is
    /// attached, or recording is off).
    left: Option<(Instant, bool)>,
}

impl Repl {
    /// Whether a replica is attached (commands then record what they propagate).
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The stream, locked.
    pub fn lock(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock()
    }

    /// The turn of a command (see `order`).
    pub fn turn(&self) -> MutexGuard<'_, ()> {
        self.order.lock()
    }

    /// The replication ID.
    pub fn replid(&self) -> &str {
        &self.replid
    }

    /// Attaches a replica with a snapshot. Call with the node's gate held exclusive (no
    /// command runs). Returns the offset the stream starts after, the RDB file and the
    /// connection's side.
    pub fn attach_full(
        &self,
        shared: &Shared,
        client: u64,
        ip: String,
        port: u16,
        psync: bool,
    ) -> (u64, Vec<u8>, ReplicaConn) {
        let mut feed = self.feed.lock();
        feed.refresh_limits(shared);
        // Deletions already recorded go to the replicas attached before this one.
        feed.drain_lost(shared);
        shared.store.set_repl_journal(true);
        let rdb = snapshot(shared, &self.replid, feed.offset);
        if !feed.backlog_valid {
            feed.backlog.clear();
            feed.backlog_valid = true;
        }
        // Every replica gets a SELECT before the next command, as Redis does at an attach.
        feed.db = None;
        let conn = feed.link(client, ip, port, psync);
        feed.left = None;
        self.active.store(true, Ordering::Release);
        self.sync_full.fetch_add(1, Ordering::Relaxed);
        (feed.offset, rdb, conn)
    }

    /// Attaches a replica that continues from `offset` of this node's stream `replid`, if the
    /// backlog still holds everything from there: returns what to send it first and its
    /// connection's side.
    pub fn attach_continue(
        &self,
        replid: &[u8],
        offset: i64,
        client: u64,
        ip: String,
        port: u16,
    ) -> Option<(Vec<u8>, ReplicaConn)> {
        if replid == b"?" || offset < 0 {
            // Asked for a snapshot.
            return None;
        }
        let mut feed = self.feed.lock();
        let first = feed.offset + 1 - feed.backlog.len() as u64;
        let known = replid == self.replid.as_bytes();
        let offset = offset as u64;
        if !known || !feed.backlog_valid || offset < first || offset > feed.offset + 1 {
            self.sync_partial_err.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.sync_partial_ok.fetch_add(1, Ordering::Relaxed);
        let mut out = format!("+CONTINUE {}\r\n", self.replid).into_bytes();
        out.extend(feed.backlog.iter().skip((offset - first) as usize));
        let conn = feed.link(client, ip, port, true);
        feed.left = None;
        self.active.store(true, Ordering::Release);
        Some((out, conn))
    }

    /// INFO's `sync_full`, `sync_partial_ok` and `sync_partial_err`.
    pub fn sync_stats(&self) -> (u64, u64, u64) {
        (
            self.sync_full.load(Ordering::Relaxed),
            self.sync_partial_ok.load(Ordering::Relaxed),
            self.sync_partial_err.load(Ordering::Relaxed),
        )
    }

    /// Replicas that acknowledged within `max_lag` seconds (`min-replicas-to-write`).
    pub fn good_replicas(&self, max_lag: u64) -> u64 {
        if !self.is_active() {
            return 0;
        }
        let now = now_ms();
        let feed = self.feed.lock();
        feed.replicas
            .iter()
            .filter(|l| {
                now.saturating_sub(l.state.ack_ms.load(Ordering::Relaxed)) <= max_lag * 1000
            })
            .count() as u64
    }

    /// `ROLE` of a primary: the stream's offset, and each replica's address and acknowledged
    /// offset.
    pub fn role(&self) -> (u64, Vec<(String, u16, u64)>) {
        let feed = self.feed.lock();
        let replicas = feed
            .replicas
            .iter()
            .map(|l| {
                let s = &l.state;
                (s.ip.clone(), s.port, s.ack.load(Ordering::Relaxed))
            })
            .collect();
        (feed.offset, replicas)
    }

    /// Replicas that acknowledged at least `offset` (`WAIT`).
    pub fn acked_at_least(&self, offset: u64) -> u64 {
        let feed = self.feed.lock();
        feed.replicas
            .iter()
            .filter(|l| l.state.ack.load(Ordering::Relaxed) >= offset)
            .count() as u64
    }

    /// Drops the replica of client `client` (its connection closed).
    pub fn detach(&self, client: u64) {
        let mut feed = self.feed.lock();
        let psync = feed
            .replicas
            .iter()
            .any(|l| l.state.client == client && l.state.psync);
        feed.replicas.retain(|l| l.state.client != client);
        feed.after_drop(psync);
    }

    /// The periodic work (from the server's cycle): deletions of keys expired in the
    /// background, `PING` every `repl-ping-replica-period`, and dropping replicas silent for
    /// `repl-timeout` or over their output buffer's soft limit for too long.
    pub fn tick(&self, shared: &Shared) {
        if !self.is_active() {
            return;
        }
        let (period, timeout, limits, ttl) = {
            let c = shared.config.read();
            (
                c.repl_ping_replica_period,
                c.repl_timeout,
                c.replica_output_buffer_limit,
                c.repl_backlog_ttl,
            )
        };
        let mut feed = self.feed.lock();
        feed.refresh_limits(shared);
        feed.drain_lost(shared);
        if let Some((left, keep)) = feed.left {
            if !keep || (ttl > 0 && left.elapsed().as_secs() >= ttl) {
                // No replica came back: the node stops recording its writes.
                feed.left = None;
                feed.backlog_valid = false;
                feed.backlog.clear();
                self.active.store(false, Ordering::Release);
                shared.store.set_repl_journal(false);
                tracing::info!(
                    node_id = %shared.node_id,
                    component = "repl",
                    "no replica to continue the stream: the backlog is freed and writes are no longer recorded"
                );
            }
            return;
        }
        if feed.last_ping.elapsed().as_secs() >= period {
            feed.last_ping = Instant::now();
            let mut out = Vec::new();
            encode(&mut out, &[Bytes::from_static(b"PING")]);
            feed.send(shared, &out);
        }
        let now = now_ms();
        let before = feed.replicas.len();
        feed.replicas.retain(|l| {
            let s = &l.state;
            if s.psync && now.saturating_sub(s.ack_ms.load(Ordering::Relaxed)) > timeout * 1000 {
                tracing::warn!(
                    node_id = %shared.node_id,
                    component = "repl",
                    client_id = s.client,
                    "replica timed out: dropped"
                );
                s.drop_link();
                return false;
            }
            let queued = s.queue.lock().len() as u64;
            if limits.soft > 0 && queued > limits.soft {
                let since = s.over_soft_since.load(Ordering::Relaxed);
                if since == 0 {
                    s.over_soft_since.store(now, Ordering::Relaxed);
                } else if now - since > limits.soft_secs * 1000 {
                    tracing::warn!(
                        node_id = %shared.node_id,
                        component = "repl",
                        client_id = s.client,
                        queued,
                        "replica over its output buffer's soft limit: dropped"
                    );
                    s.drop_link();
                    return false;
                }
            } else {
                s.over_soft_since.store(0, Ordering::Relaxed);
            }
            true
        });
        if feed.replicas.len() != before {
            // Dropped for a timeout or a slow read: it may come back and continue.
            feed.after_drop(true);
        }
    }

    /// Asks every replica for its offset now (`WAIT`).
    pub fn ask_acks(&self, shared: &Shared) {
        let mut feed = self.feed.lock();
        let mut out = Vec::new();
        let getack = ["REPLCONF", "GETACK", "*"].map(|a| Bytes::from_static(a.as_bytes()));
        encode(&mut out, &getack);
        feed.send(shared, &out);
    }

    /// INFO's replication section for a primary: `(name, value)` lines.
    pub fn info(&self, backlog_size: u64) -> Vec<(String, String)> {
        let feed = self.feed.lock();
        let now = now_ms();
        let mut out = vec![
            ("role".to_string(), "master".to_string()),
            (
                "connected_slaves".to_string(),
                feed.replicas.len().to_string(),
            ),
        ];
        for (i, l) in feed.replicas.iter().enumerate() {
            let s = &l.state;
            let lag = now.saturating_sub(s.ack_ms.load(Ordering::Relaxed)) / 1000;
            out.push((
                format!("slave{i}"),
                format!(
                    "ip={},port={},state=online,offset={},lag={}",
                    s.ip,
                    s.port,
                    s.ack.load(Ordering::Relaxed),
                    lag
                ),
            ));
        }
        let valid = feed.backlog_valid;
        let first = if valid {
            feed.offset + 1 - feed.backlog.len() as u64
        } else {
            0
        };
        out.extend([
            ("master_failover_state".into(), "no-failover".into()),
            ("master_replid".into(), self.replid.clone()),
            ("master_replid2".into(), "0".repeat(40)),
            ("master_repl_offset".into(), feed.offset.to_string()),
            ("second_repl_offset".into(), "-1".into()),
            ("repl_backlog_active".into(), u8::from(valid).to_string()),
            ("repl_backlog_size".into(), backlog_size.to_string()),
            ("repl_backlog_first_byte_offset".into(), first.to_string()),
            (
                "repl_backlog_histlen".into(),
                if valid { feed.backlog.len() } else { 0 }.to_string(),
            ),
        ]);
        out
    }
}

impl Feed {
    /// Bytes written to the stream so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn link(&mut self, client: u64, ip: String, port: u16, psync: bool) -> ReplicaConn {
        let state = Arc::new(ReplicaState {
            client,
            ip,
            port,
            psync,
            ack: AtomicU64::new(0),
            ack_ms: AtomicU64::new(now_ms()),
            queue: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            dropped: AtomicBool::new(false),
            over_soft_since: AtomicU64::new(0),
        });
        self.replicas.push(Link {
            state: state.clone(),
        });
        ReplicaConn { state }
    }

    /// After replicas were dropped: with none left, the backlog is kept (and fed) for
    /// `repl-backlog-ttl` ([`Repl::tick`]) for a replica that comes back.
    /// A replica that attached with `SYNC` (`redis-cli --rdb`, say) cannot continue: after
    /// it (`psync_dropped` false), recording stops at the next tick.
    fn after_drop(&mut self, psync_dropped: bool) {
        if self.replicas.is_empty() && self.left.is_none() {
            self.left = Some((Instant::now(), psync_dropped));
        }
    }

    /// Puts `DEL` for every key expired or evicted since the last call into the stream.
    pub fn drain_lost(&mut self, shared: &Shared) {
        for stored in shared.store.take_repl_journal() {
            let (physical, key) = db::split(&stored);
            let logical = shared.dbs.logical(physical);
            let del = vec![Bytes::from_static(b"DEL"), Bytes::copy_from_slice(key)];
            self.write_block(shared, &[(logical, del)]);
        }
    }

    /// Puts one call's effects into the stream: `MULTI`/`EXEC` around them when there are more
    /// than one, `SELECT` wherever the database changes.
    pub fn write_block(&mut self, shared: &Shared, effects: &[Effect]) {
        let Some(first) = effects.first() else {
            return;
        };
        // The encoding buffer is kept between blocks.
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.select(first.0, &mut out);
        let wrap = effects.len() > 1;
        if wrap {
            encode(&mut out, &[Bytes::from_static(b"MULTI")]);
        }
        for (db, argv) in effects {
            self.select(*db, &mut out);
            encode(&mut out, argv);
        }
        if wrap {
            encode(&mut out, &[Bytes::from_static(b"EXEC")]);
        }
        self.send(shared, &out);
        self.scratch = out;
    }

    fn select(&mut self, db: u8, out: &mut Vec<u8>) {
        if self.db != Some(db) {
            let n = Bytes::from(db.to_string());
            encode(out, &[Bytes::from_static(b"SELECT"), n]);
            self.db = Some(db);
        }
    }

    /// Appends `bytes` to the stream: the backlog and every replica's queue (a replica over
    /// its hard output limit is dropped).
    fn send(&mut self, shared: &Shared, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.offset += bytes.len() as u64;
        if self.backlog_valid {
            self.backlog.extend(bytes);
            let excess = self.backlog.len().saturating_sub(self.limits.0);
            self.backlog.drain(..excess);
        }
        let hard = self.limits.1;
        let before = self.replicas.len();
        self.replicas.retain(|l| {
            let queued = {
                let mut q = l.state.queue.lock();
                q.extend_from_slice(bytes);
                q.len() as u64
            };
            if hard > 0 && queued > hard {
                tracing::warn!(
                    node_id = %shared.node_id,
                    component = "repl",
                    client_id = l.state.client,
                    queued,
                    "replica over its output buffer's hard limit: dropped"
                );
                l.state.drop_link();
                return false;
            }
            l.state.wake.notify_one();
            true
        });
        if self.replicas.len() != before {
            self.after_drop(true);
        }
    }

    /// Reads the settings the stream uses on every write (`repl-backlog-size`, the replica
    /// output hard limit): at attach and at every tick, not per command.
    fn refresh_limits(&mut self, shared: &Shared) {
        let c = shared.config.read();
        self.limits = (
            c.repl_backlog_size as usize,
            c.replica_output_buffer_limit.hard,
        );
    }
}

/// Appends a command as a RESP array of bulk strings (the stream's commands, and the requests
/// the node sends as a client: to its primary, to MIGRATE's target).
pub(crate) fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, argv: &[A]) {
    use std::io::Write;
    let _ = write!(out, "*{}\r\n", argv.len());
    for a in argv {
        let a = a.as_ref();
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The RDB file of everything the node holds now: its function libraries, then each
/// database's keys under its logical number.
pub(crate) fn snapshot(shared: &Shared, replid: &str, offset: u64) -> Vec<u8> {
    let now = now_ms();
    let mut dbs: Vec<(Vec<u8>, u64, u64)> = vec![(Vec::new(), 0, 0); db::MAX_DATABASES];
    shared.store.for_each_live(now, |stored, value, expire_at| {
        let (physical, key) = db::split(stored);
        let d = &mut dbs[usize::from(physical)];
        let k = crate::rdb::SnapshotKey {
            key,
            value,
            expire_at,
        };
        crate::rdb::RdbWriter::record(&mut d.0, &k);
        d.1 += 1;
        d.2 += u64::from(expire_at != 0);
    });
    let version = shared.config.read().reported_redis_version.clone();
    let aux = [
        ("redis-ver", version),
        ("redis-bits", "64".to_string()),
        ("ctime", (now / 1000).to_string()),
        ("used-mem", crate::memory::used().to_string()),
        ("repl-stream-db", "0".to_string()),
        ("repl-id", replid.to_string()),
        ("repl-offset", offset.to_string()),
        ("aof-base", "0".to_string()),
    ];
    let mut w = crate::rdb::RdbWriter::new(&aux);
    for code in shared.scripts.library_codes() {
        w.library(&code);
    }
    // (MAX_DATABASES is 256: the loop runs over usize, each number fits a u8.)
    for logical in (0..db::MAX_DATABASES).map(|n| n as u8) {
        let d = &dbs[usize::from(shared.dbs.physical(logical))];
        if d.1 > 0 {
            w.select(logical, d.1, d.2);
            w.records(&d.0);
        }
    }
    w.finish()
}

/// How Redis 7.0 propagates a single-key operation that changed its key (`None`: as the client
/// sent it). `key` is the key as the client named it; `out` the operation's outcome.
pub fn rewrite(key: &[u8], op: &Op<'_>, change: Change, out: &Outcome) -> Option<Vec<Bytes>> {
    let b = |s: &'static [u8]| Bytes::from_static(s);
    let k = Bytes::copy_from_slice(key);
    let del = || Some(vec![b(b"DEL"), k.clone()]);
    let at = |t: &dyn ToString| Bytes::from(t.to_string());
    match *op {
        // SET EX/PX/EXAT, SETEX, PSETEX: an absolute deadline, every other option dropped.
        Op::Set {
            value,
            expiry: ExpiryChange::At(t),
            ..
        } => Some(vec![
            b(b"SET"),
            k,
            Bytes::copy_from_slice(value),
            b(b"PXAT"),
            at(&t),
        ]),
        // GETSET, SET ... GET: without GET.
        Op::Set {
            value,
            expiry,
            get: true,
            ..
        } => {
            let mut argv = vec![b(b"SET"), k, Bytes::copy_from_slice(value)];
            if expiry == ExpiryChange::Keep {
                argv.push(b(b"KEEPTTL"));
            }
            Some(argv)
        }
        Op::GetDel => del(),
        Op::GetEx(_) | Op::Expire { .. } if change == Change::Deleted => del(),
        Op::GetEx(ExpiryChange::At(t)) => Some(vec![b(b"PEXPIREAT"), k, at(&t)]),
        Op::Expire { at: t, .. } => Some(vec![b(b"PEXPIREAT"), k, at(&t)]),
        Op::GetEx(ExpiryChange::Clear) => Some(vec![b(b"PERSIST"), k]),
        Op::IncrByFloat(_) => match out {
            Outcome::Value(v) => Some(vec![b(b"SET"), k, v.clone(), b(b"KEEPTTL")]),
            _ => None,
        },
        _ => None,
    }
}
