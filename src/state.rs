//! State shared by every connection of a node: the store, the live configuration, the client
//! registry, counters and the slow log.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hypercache_cluster::{Store, StoreConfig};
use parking_lot::{Mutex, RwLock};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::{watch, Notify};

use crate::config::Config;

/// Current unix time in milliseconds.
pub fn now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms.saturating_add_signed(CLOCK_OFFSET.load(std::sync::atomic::Ordering::Relaxed))
}

/// `clock-offset-ms`: a shift of this node's wall clock (clock skew drills and tests).
static CLOCK_OFFSET: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Sets `clock-offset-ms`.
pub fn set_clock_offset(ms: i64) {
    CLOCK_OFFSET.store(ms, std::sync::atomic::Ordering::Relaxed);
}

pub use crate::metrics::Stats;

/// What CLIENT LIST shows about a connection and what may change while it lives.
#[derive(Debug, Default, Clone)]
pub struct ClientMeta {
    /// CLIENT SETNAME.
    pub name: String,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: String,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: String,
    /// Full name of the last command (`client|list`).
    pub last_cmd: &'static str,
    /// Protocol version, 2 or 3.
    pub resp: u8,
    /// Last time a command ran.
    pub last_active: Option<Instant>,
    /// CLIENT NO-EVICT.
    pub no_evict: bool,
    /// Commands queued in `MULTI`, or `None` outside a transaction.
    pub multi: Option<usize>,
    /// What the queued commands hold (`CLIENT LIST`'s `multi-mem`).
    pub multi_mem: usize,
    /// Channels and patterns it is subscribed to.
    pub subs: (usize, usize),
    /// The ACL user it runs as (empty: `default`).
    pub user: bytes::Bytes,
    /// Bytes in the query buffer, the running command's included (set only while the client
    /// lists itself: an idle client has none, as in Redis).
    pub qbuf: usize,
    /// What the running command's arguments hold (`argv-mem`; set, as `qbuf`, while the client
    /// lists itself).
    pub argv_mem: usize,
    /// `CLIENT TRACKING`: on, BCAST, and the redirect target (-1: tracking off).
    pub tracking: Option<(bool, i64)>,
    /// The tracking redirect target has gone.
    pub tracking_broken: bool,
    /// The database it selected.
    pub db: u8,
}

/// A registered connection.
#[derive(Debug)]
pub struct ClientHandle {
    /// CLIENT ID.
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// Local address.
    pub laddr: SocketAddr,
    /// File descriptor (for CLIENT LIST).
    pub fd: i64,
    /// When it connected.
    pub created: Instant,
    /// Mutable facts.
    pub meta: Mutex<ClientMeta>,
    /// Set by CLIENT KILL; the connection closes when it sees it.
    pub killed: AtomicBool,
    /// Wakes the connection task when killed.
    pub kill_notify: Notify,
    /// The connection's mailbox, once it has one (Pub/Sub, tracking): where other connections'
    /// messages for it are queued.
    pub mailbox: Mutex<Option<Arc<crate::pubsub::Mailbox>>>,
    /// The memory the connection holds (its buffers and queued transaction), as of its last
    /// read or reply: `CLIENT LIST`'s `tot-mem`, and what `maxmemory-clients` counts.
    pub mem: AtomicUsize,
    /// Its buffers as of its last read or reply, for `CLIENT LIST`.
    pub bufs: BufferFacts,
}

/// A connection's buffers as `CLIENT LIST` reports them, recorded by the connection after each
/// read, batch and write ([`ClientHandle::record_buffers`]).
#[derive(Debug, Default)]
pub struct BufferFacts {
    /// Free space in the read buffer (`qbuf-free`).
    pub qbuf_free: AtomicUsize,
    /// The reply buffer's size (`rbs`).
    pub rbs: AtomicUsize,
    /// The most the reply buffer held since it was last released (`rbp`; Redis's is the peak of
    /// the last 5 seconds).
    pub rbp: AtomicUsize,
    /// Replies waiting to be written (`obl`).
    pub obl: AtomicUsize,
}

/// What a connection holds besides its buffers and queued transaction (its task, session and
/// entry): counted in [`ClientHandle::mem`] so that `maxmemory-clients` sees idle clients too.
pub const CLIENT_BASE_MEMORY: usize = 4096;

impl Shared {
    /// Records that client `h` now holds `now` bytes ([`ClientHandle::mem`]); when that is more
    /// than before and all clients together hold more than `maxmemory-clients`, closes the
    /// largest clients (not those with `CLIENT NO-EVICT on`) until they fit, as Redis's client
    /// eviction does. `now` 0 at disconnection.
    pub fn account_client(&self, h: &ClientHandle, now: usize) {
        let before = h.mem.swap(now, Ordering::Relaxed);
        if now == before {
            return;
        }
        if now < before {
            self.clients_memory
                .fetch_sub(before - now, Ordering::Relaxed);
            return;
        }
        let total = self
            .clients_memory
            .fetch_add(now - before, Ordering::Relaxed)
            + now
            - before;
        let limit = self.config.read().clients_limit() as usize;
        if limit > 0 && total > limit {
            self.evict_clients(limit);
        }
    }

    /// Closes the largest clients until the others hold at most `limit` bytes.
    fn evict_clients(&self, limit: usize) {
        let Some(_one) = self.evicting_clients.try_lock() else {
            return;
        };
        // Clients killed already are on their way out: what they hold no longer counts.
        let mut clients: Vec<(usize, Arc<ClientHandle>)> = self
            .clients
            .lock()
            .values()
            .filter(|h| !h.killed.load(Ordering::Relaxed))
            .map(|h| (h.mem.load(Ordering::Relaxed), h.clone()))
            .collect();
        let mut total: usize = clients.iter().map(|c| c.0).sum();
        clients.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (mem, h) in clients {
            if total <= limit {
                break;
            }
            if h.meta.lock().no_evict {
                continue;
            }
            h.kill();
            total = total.saturating_sub(mem);
            self.metrics
                .server
                .evicted_clients
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(node_id = %self.node_id, component = "server", client_id = h.id, addr = %h.addr, bytes = mem, limit, "client evicted: clients hold more than maxmemory-clients");
        }
    }
}

impl ClientHandle {
    /// Marks the client for closing and wakes its task.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.kill_notify.notify_one();
    }

    /// A client's entry: `addr`/`laddr` its socket's ends, `fd` its descriptor (-1: none).
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr, fd: i64) -> ClientHandle {
        ClientHandle {
            id,
            addr,
            laddr,
            fd,
            created: Instant::now(),
            meta: Mutex::new(ClientMeta {
                resp: 2,
                ..Default::default()
            }),
            killed: Default::default(),
            kill_notify: Default::default(),
            mailbox: Default::default(),
            mem: Default::default(),
            bufs: Default::default(),
        }
    }

    /// Records the connection's buffers: the read buffer's free space, the reply buffer's size
    /// and what it holds now; `released` when the reply buffer was just given back (its peak
    /// starts again).
    pub fn record_buffers(
        &self,
        read_free: usize,
        out_size: usize,
        out_len: usize,
        released: bool,
    ) {
        let b = &self.bufs;
        b.qbuf_free.store(read_free, Ordering::Relaxed);
        b.rbs.store(out_size, Ordering::Relaxed);
        b.obl.store(out_len, Ordering::Relaxed);
        // Only the connection writes these: a load and a store, no read-modify-write.
        if released || out_len > b.rbp.load(Ordering::Relaxed) {
            b.rbp.store(out_len, Ordering::Relaxed);
        }
    }

    /// The CLIENT LIST / CLIENT INFO line (without the trailing newline).
    pub fn info_line(&self) -> String {
        // Pub/Sub and tracking messages queued for it and not written yet (Redis's reply list:
        // what grows when a subscriber does not keep up). Read before `meta` is locked.
        let omem = self
            .mailbox
            .lock()
            .as_ref()
            .map_or(0, |mb| mb.queued.load(Ordering::Relaxed));
        let m = self.meta.lock();
        let now = Instant::now();
        let idle = m
            .last_active
            .map_or(now - self.created, |t| now - t)
            .as_secs();
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi={} \
             qbuf={} qbuf-free={} argv-mem={} multi-mem={} rbs={} rbp={} obl={} oll=0 omem={} tot-mem={} events=r \
             cmd={} user={} redir={} resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            m.name,
            (now - self.created).as_secs(),
            idle,
            {
                let mut f = String::new();
                if m.subs != (0, 0) {
                    f.push('P');
                }
                if m.multi.is_some() {
                    f.push('x');
                }
                if let Some((bcast, _)) = m.tracking {
                    f.push('t');
                    if m.tracking_broken {
                        f.push('R');
                    }
                    if bcast {
                        f.push('B');
                    }
                }
                if f.is_empty() {
                    f.push('N');
                }
                f
            },
            m.db,
            m.subs.0,
            m.subs.1,
            m.multi.map_or(-1, |n| n as i64),
            m.qbuf,
            self.bufs.qbuf_free.load(Ordering::Relaxed),
            m.argv_mem,
            m.multi_mem,
            self.bufs.rbs.load(Ordering::Relaxed),
            self.bufs.rbp.load(Ordering::Relaxed),
            self.bufs.obl.load(Ordering::Relaxed),
            omem,
            self.mem.load(Ordering::Relaxed),
            if m.last_cmd.is_empty() { "NULL" } else { m.last_cmd },
            if m.user.is_empty() {
                std::borrow::Cow::Borrowed("default")
            } else {
                String::from_utf8_lossy(&m.user)
            },
            m.tracking.map_or(-1, |t| t.1),
            m.resp.max(2),
            m.lib_name,
            m.lib_ver,
        )
    }
}

/// One slow-log entry.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    /// Increasing id.
    pub id: u64,
    /// Unix seconds when the command ran.
    pub at: u64,
    /// Duration in microseconds.
    pub micros: u64,
    /// Arguments, trimmed as Redis trims them.
    pub args: Vec<Bytes>,
    /// Client address.
    pub addr: String,
    /// Client name.
    pub name: String,
}

/// The slow log.
#[derive(Debug, Default)]
pub struct SlowLog {
    /// Newest first.
    pub entries: VecDeque<SlowEntry>,
    /// Next id.
    pub next_id: u64,
}

/// Everything a node's connections share.
pub struct Shared {
    /// The data.
    pub store: Store,
    /// Live configuration (CONFIG SET writes it).
    pub config: RwLock<Config>,
    /// Bumped on every CONFIG SET so connections refresh their cached limits.
    pub config_gen: AtomicU64,
    /// Client-side caching ([`crate::tracking`]).
    pub tracking: crate::tracking::Tracking,
    /// Whether clients track keys here or on another node (read on every write).
    pub tracking_on: AtomicBool,
    /// `notify-keyspace-events` as class bits (0: off), read on every write ([`crate::notify`]).
    pub notify_flags: std::sync::atomic::AtomicU32,
    /// Which physical database each logical one is (`SWAPDB`, [`crate::dbs`]).
    pub dbs: crate::dbs::DbMap,
    /// Redis replication from this node (`SYNC`/`PSYNC`; a single node only).
    pub repl: crate::repl::Repl,
    /// Snapshots to disk (`SAVE`, `BGSAVE`, `save`; a single node only).
    pub persist: crate::persist::Persist,
    /// The Redis primary this node replicates (`REPLICAOF`; a single node only).
    pub upstream: crate::replica::Upstream,
    /// Connected clients by id.
    pub clients: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    /// The memory all connected clients hold together ([`ClientHandle::mem`]).
    pub clients_memory: AtomicUsize,
    /// Held while clients are chosen for eviction (`maxmemory-clients`): one pass at a time.
    pub evicting_clients: Mutex<()>,
    /// Connections accepted and not yet closed: counted at accept, so a burst of connections
    /// cannot overshoot `maxclients` before their tasks register.
    pub connected: std::sync::atomic::AtomicUsize,
    /// Next client id.
    pub next_client_id: AtomicU64,
    /// Every metric of the node (the cluster shares it).
    pub metrics: Arc<crate::metrics::Registry>,
    /// Slow log.
    pub slowlog: Mutex<SlowLog>,
    /// Process start.
    pub started: Instant,
    /// Randomness for RANDOMKEY (seeded from the OS once at startup; tests of the store inject
    /// their own seed).
    pub rng: Mutex<SmallRng>,
    /// Set to true to stop the node.
    pub shutdown: watch::Sender<bool>,
    /// The port actually bound.
    pub port: AtomicU64,
    /// A new plain-text listener from `CONFIG SET port`, for the accept loop to take in place
    /// of its own ([`Shared::rebound`] wakes it).
    pub rebind: Mutex<Option<tokio::net::TcpListener>>,
    /// Wakes the accept loop when [`Shared::rebind`] holds a listener.
    pub rebound: Notify,
    /// The cluster this node belongs to (`None`: a single node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Every background task (peer links, repair, replication that continues after a
    /// reply, expiry): shutdown closes it and waits for them, within a bound.
    pub tasks: tokio_util::task::TaskTracker,
    /// This node's id, for logs.
    pub node_id: String,
    /// The OpenTelemetry exporters (`None`: no `otlp-endpoint`, nothing traced).
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// Clients in `MONITOR` mode: each gets every command as a line.
    pub monitors: Mutex<Vec<Monitor>>,
    /// How many (read on every command: nothing else is done while it is 0).
    pub monitor_count: std::sync::atomic::AtomicUsize,
    /// Held shared by every batch of commands and exclusive by `EXEC` and scripts (single node).
    pub exclusive: crate::exclusive::Exclusive,
    /// The Lua engine and the script cache.
    pub scripts: crate::script::Scripts,
    /// The TLS configurations in force (client port, cluster links).
    pub tls: crate::tls::Tls,
    /// ACL users and the ACL log.
    pub acl: crate::acl::Acl,
    /// Pub/Sub subscriptions.
    pub pubsub: crate::pubsub::PubSub,
}

/// A client in `MONITOR` mode.
pub struct Monitor {
    /// Its client id.
    pub client: u64,
    /// Where its lines go: bounded, and a monitor that falls [`MONITOR_BACKLOG`] lines behind
    /// is disconnected (Redis closes it at its output buffer limit).
    pub tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
}

/// Lines a `MONITOR` client may fall behind before it is disconnected.
pub const MONITOR_BACKLOG: usize = 100_000;

impl Shared {
    /// Sends `line` to every monitor, dropping those that cannot keep up.
    pub fn feed_monitors(&self, line: bytes::Bytes) {
        let mut m = self.monitors.lock();
        m.retain(|mon| mon.tx.try_send(line.clone()).is_ok());
        self.monitor_count.store(m.len(), Ordering::Relaxed);
    }

    /// Takes client `id` out of monitor mode.
    pub fn stop_monitor(&self, id: u64) {
        let mut m = self.monitors.lock();
        m.retain(|mon| mon.client != id);
        self.monitor_count.store(m.len(), Ordering::Relaxed);
    }
}

impl Shared {
    /// Builds the shared state for `config`.
    pub fn new(config: Config) -> Arc<Shared> {
        let seed = SmallRng::from_os_rng().next_u64();
        let (shutdown, _) = watch::channel(false);
        let metrics = Arc::new(crate::metrics::Registry::default());
        let cluster = crate::cluster::Cluster::from_config(&config, metrics.clone());
        // The tie-break of versions this node creates: a stable number from its id.
        let node_id = config.node_id();
        let origin = hypercache_cluster::version::origin_of(&node_id);
        // Config::check has vetted the endpoint: a failure here is the exporter's own.
        let telemetry = crate::telemetry::Telemetry::start(&config).unwrap_or_else(|e| {
            tracing::error!(component = "telemetry", node_id = %node_id, error = %e, "cannot start the OTLP exporter; running without it");
            None
        });
        let acl = crate::acl::Acl::new(&config.requirepass);
        let config_node_id = config.node_id();
        let shared = Arc::new(Shared {
            store: Store::new(StoreConfig {
                hash_seed: seed,
                origin,
            }),
            config: RwLock::new(config),
            config_gen: AtomicU64::new(0),
            notify_flags: Default::default(),
            dbs: Default::default(),
            repl: Default::default(),
            persist: Default::default(),
            upstream: Default::default(),
            tracking: Default::default(),
            tracking_on: Default::default(),
            clients: Mutex::new(HashMap::new()),
            rebind: Default::default(),
            rebound: Default::default(),
            clients_memory: Default::default(),
            evicting_clients: Default::default(),
            connected: Default::default(),
            next_client_id: AtomicU64::new(1),
            metrics,
            slowlog: Mutex::new(SlowLog::default()),
            started: Instant::now(),
            rng: Mutex::new(SmallRng::seed_from_u64(seed.rotate_left(7))),
            shutdown,
            port: AtomicU64::new(0),
            cluster,
            tasks: tokio_util::task::TaskTracker::new(),
            node_id,
            telemetry,
            monitors: Mutex::new(Vec::new()),
            monitor_count: Default::default(),
            exclusive: Default::default(),
            scripts: Default::default(),
            tls: Default::default(),
            acl,
            pubsub: crate::pubsub::PubSub::new(config_node_id),
        });
        if let Some(t) = &shared.telemetry {
            t.export_metrics(Arc::downgrade(&shared));
        }
        crate::notify::refresh(&shared);
        shared
    }

    /// Asks every task of the node to stop.
    pub fn trigger_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}
