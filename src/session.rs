//! Per-connection state and command dispatch: lookup, arity, authentication, slow log, replies.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hypercache_cluster::evict::Policy;
use hypercache_cluster::msg::Level;
use hypercache_cluster::op::AccessMode;
use hypercache_cluster::slot::{redis_slot, Slot};
use hypercache_cluster::version::Version;
use hypercache_cluster::Ctx;
use hypercache_resp::table::CommandSpec;
use hypercache_resp::{errors, Frame, Limits, Protocol};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::cmd::{self, Handler};
use crate::state::{now_ms, ClientHandle, Shared, SlowEntry, Stats};

/// A key under `WATCH`: its stored form, the database it was watched in, and what it was then
/// (its version and whether it had expired; `None`: absent).
pub type Watched = (Bytes, u8, Option<(Version, bool)>);

/// What a cluster `WATCH` read found, once it answered: `Some(version)` (`None`: absent), or
/// `None` if it failed.
pub type ClusterWatch = Arc<std::sync::OnceLock<Option<Option<Version>>>>;

/// How a transaction runs as one round in a cluster ([`Session::run_batch`]).
enum Round {
    /// On one key, with the version `WATCH` saw if it is watched.
    Key(Bytes, Option<Option<Version>>),
    /// On several keys of one slot, with the versions `WATCH` saw of the watched ones (index
    /// in the keys).
    Group(Vec<Bytes>, Vec<(u16, Option<Version>)>),
}

/// CLIENT REPLY mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Replies are sent.
    On,
    /// No replies until CLIENT REPLY ON.
    Off,
    /// The next command's reply is dropped.
    Skip,
}

/// One client's connection state.
pub struct Session {
    /// Node state.
    pub shared: Arc<Shared>,
    /// This client's registry entry.
    pub handle: Arc<ClientHandle>,
    /// RESP2 or RESP3.
    pub proto: Protocol,
    /// Whether AUTH succeeded (or no password is required).
    pub authed: bool,
    /// The ACL user this connection runs as.
    pub user: Arc<crate::acl::User>,
    /// The ACL generation `user` was read at (re-read when the users change).
    acl_gen: u64,
    /// CLIENT REPLY state.
    pub reply_mode: ReplyMode,
    /// Close the connection once the current replies are written (QUIT, killed itself).
    pub close_after: bool,
    /// Pub/Sub: this connection's subscriptions (made at its first SUBSCRIBE or PSUBSCRIBE).
    pub subs: Option<Box<crate::pubsub::Subscriptions>>,
    /// In `MONITOR` mode: the lines to write to this client.
    pub monitor: Option<tokio::sync::mpsc::Receiver<Bytes>>,
    /// Replies waiting to be written: everything a batch answers goes out in one write. The write
    /// buffer grows to the size of a typical batch of replies and is kept.
    pub out: BytesMut,
    /// Parser limits, refreshed when the configuration changes.
    pub limits: Limits,
    /// `proto-max-bulk-len`, the largest value a write may build.
    pub max_len: u64,
    /// Idle timeout in seconds (0: none).
    pub timeout: u64,
    /// Configuration generation the cached fields come from.
    config_gen: u64,
    /// Slow-log threshold in microseconds (-1: off).
    slowlog_threshold: i64,
    /// `maxmemory` (0: no limit).
    maxmemory: u64,
    /// Writes are refused for want of Redis replicas (`min-replicas-to-write`, checked at
    /// every batch while it is set: [`Session::refresh_config`]).
    pub(crate) no_replicas: bool,
    /// `min-replicas-to-write` is set.
    min_replicas: bool,
    /// `maxmemory-policy`.
    policy: Policy,
    /// `maxmemory-samples`.
    samples: usize,
    /// Randomness for eviction sampling, seeded per connection (no shared lock on the write path).
    rng: SmallRng,
    /// LRU or LFU bookkeeping, from the policy.
    access_mode: AccessMode,
    /// State of the per-connection random sequence (xorshift) behind LFU increments.
    rand_state: std::cell::Cell<u64>,
    /// Wall-clock unix ms at `batch_start`.
    batch_wall_ms: u64,
    /// Monotonic time the current read batch started.
    batch_start: Instant,
    /// Monotonic time the previous command of the batch finished (or the batch started).
    clock: Instant,
    /// Commands were queued (`MULTI`) since `clock` was read: the next command reads it again.
    clock_stale: bool,
    /// The command [`Session::dispatch`] found last.
    last_lookup: Option<(&'static CommandSpec, cmd::Handler)>,
    /// Full name of the last command run, published to CLIENT LIST at the end of the batch.
    last_cmd: Option<&'static str>,
    /// Commands run since the last [`Session::flush_stats`] (kept local: one shared atomic add
    /// per batch instead of one per command).
    commands: u64,
    /// `HC.CONSISTENCY` overrides for this connection (read, write).
    pub consistency: (Option<Level>, Option<Level>),
    /// The node's default levels and request deadline, cached like the other settings.
    default_levels: crate::cluster::Levels,
    /// Replies still being computed by the cluster, in order: where each goes in [`Session::out`],
    /// the task computing it, the slot it touches (`None`: it must complete before any later
    /// command runs), and whether the reply is to be dropped (`CLIENT REPLY OFF/SKIP`).
    pub pending: Vec<Deferred>,
    /// The other output buffer, which `resolve` splices into (kept to avoid an allocation per
    /// batch).
    spare: BytesMut,
    /// The transaction being queued, from `MULTI` to `EXEC` or `DISCARD`.
    pub multi: Option<Multi>,
    /// Keys under `WATCH`, each with what it was when watched.
    pub watched: Vec<Watched>,
    /// In a cluster, keys under `WATCH`: the stored key, and the version a read at QUORUM found
    /// (filled when the read answers; `Some(None)`: absent; `None` inside: the read failed).
    pub cluster_watched: Vec<(Bytes, ClusterWatch)>,
    /// While `EXEC` runs a watched transaction's command in a cluster: the key and the version
    /// it must still have ([`crate::cmd`]'s `keyed` turns the command into `Op::IfVersion`).
    pub cas: Option<(Bytes, Option<Version>)>,
    /// While `EXEC` collects a transaction's commands on one key in a cluster: each command's
    /// operation (wire form) and how its reply is made ([`crate::cmd::batch`]).
    pub(crate) batching: Option<cmd::Batched>,
    /// A script running at its slot's coordinator in a cluster: its keyed commands run over
    /// these states of its keys ([`crate::cluster::script`]).
    pub(crate) overlay: Option<Box<crate::cluster::script::Overlay>>,
    /// Commands were queued in this batch: CLIENT LIST's `multi=` count is out of date.
    queued_changed: bool,
    /// A transaction `EXEC` accepted, with `EXEC`'s own arguments: the connection runs it
    /// ([`Session::run_transaction`]) before the next command.
    pub exec_ready: Option<(Multi, Vec<Bytes>)>,
    /// Running a transaction's commands (or a script's): `maxmemory` was checked once, before.
    pub(crate) in_exec: bool,
    /// A script or `SCRIPT LOAD` a command asked for: the connection runs it
    /// ([`Session::queue_script`], [`Session::flush_scripts`]).
    pub script_ready: Option<crate::script::Job>,
    /// The command (EVAL, FCALL, ...) whose script [`Session::script_ready`] holds: its
    /// `failed_calls` are counted when the script's reply is known.
    pub script_spec: Option<&'static CommandSpec>,
    /// This is the session scripts run their commands through (Redis's "lua client"): its time
    /// stands still during a script, and MONITOR shows it as `lua`.
    pub script: bool,
    /// The database `SELECT` chose (logical: `SWAPDB` may store it elsewhere, [`crate::dbs`]).
    pub db: u8,
    /// Bytes of the request running now plus those still unparsed after it (CLIENT LIST's
    /// `qbuf` for the client's own line, as Redis counts its query buffer).
    pub request_len: usize,
    /// A script has run past `busy-reply-threshold`: the next command gets `-BUSY` unless it may
    /// run while a script is busy (`allow_busy`).
    pub busy: bool,
    /// `CLIENT TRACKING` settings (`None`: off).
    pub tracking: Option<crate::tracking::TrackState>,
    /// The client id reads and writes are tracked for: this connection's, or for a script's
    /// session, its caller's.
    pub tracking_id: u64,
    /// In a script's session: the keys the script declared (what its reads remember).
    pub script_keys: Vec<Bytes>,
    /// The last command's keyspace events come after its reply ([`notify::Events::after_reply`]).
    ///
    /// [`notify::Events::after_reply`]: hypercache_cluster::notify::Events::after_reply
    pub events_after_reply: bool,
    /// Scripts waiting to run, in order (their replies are deferred).
    scripts: Vec<QueuedScript>,
    /// Inside EXEC on a single node: the node's gate is already held exclusive.
    holding_exclusive: bool,
    /// While Redis replicas are attached ([`crate::repl`]): what the current call (a command,
    /// a transaction, a script) propagates, in order.
    pub(crate) propagate: Vec<crate::repl::Effect>,
    /// The command running propagates as this instead of as sent ([`crate::repl::rewrite`]).
    pub(crate) repl_rewrite: Option<Vec<Bytes>>,
    /// The command running propagates even though it changed no key (PUBLISH, FLUSHALL, ...).
    pub(crate) repl_force: bool,
    /// The stream offset just after this client's last propagated write (`WAIT`).
    pub(crate) repl_woff: u64,
    /// `REPLCONF listening-port`.
    pub(crate) replconf_port: u16,
    /// `SYNC`/`PSYNC` accepted: the connection attaches as a replica once the batch gets there.
    pub sync_ready: Option<crate::repl::SyncAsk>,
    /// `SAVE`, `BGSAVE` or a saving `SHUTDOWN` accepted: the snapshot is taken once the batch
    /// gets there ([`Session::run_save`]).
    pub save_ready: Option<crate::persist::SaveAsk>,
    /// Attached as a Redis replica: the stream to write to it.
    pub replica: Option<crate::repl::ReplicaConn>,
    /// The session of the Redis primary this node replicates ([`crate::replica`]): its writes
    /// are not refused on a read-only replica.
    pub(crate) from_master: bool,
}

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct Multi {
    /// The queued commands.
    pub queue: Vec<Vec<Bytes>>,
    /// A command was refused while queuing: `EXEC` answers `EXECABORT` and runs nothing.
    pub aborted: bool,
    /// Bytes of arguments queued, bounded by `client-query-buffer-limit`.
    pub bytes: usize,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// Its handler ran.
    Ran,
    /// Refused before running (unknown, arity, authentication, memory...).
    Rejected,
    /// Queued in a transaction.
    Queued,
}

/// A reply the cluster is still computing.
pub struct Deferred {
    /// Offset in the output buffer where the reply belongs.
    at: usize,
    /// The reply's computation.
    task: DeferredTask,
    /// Slot touched, or `None` for "everything".
    slot: Option<Slot>,
    /// Whether the reply is dropped.
    silent: bool,
    /// A script's reply: already counted in the error stats, and it may be batched with the
    /// scripts after it.
    script: bool,
}

/// A script queued to run with the ones after it in the same batch (one exclusive hold for them
/// all, and in a cluster one trip to a blocking thread).
struct QueuedScript {
    job: crate::script::Job,
    /// Its reply's place in [`Session::pending`] (which only [`Session::resolve`] drains,
    /// after running the queued scripts).
    at: usize,
    spec: Option<&'static CommandSpec>,
}

/// How a deferred reply is computed.
enum DeferredTask {
    /// A task of its own.
    Spawned(tokio::task::JoinHandle<Frame>),
    /// A future that only waits for work already running elsewhere (a cluster request's driver
    /// task): no task of its own.
    Waiting(std::pin::Pin<Box<dyn std::future::Future<Output = Frame> + Send>>),
    /// Computed already: a queued script's reply, set when the scripts of the batch ran.
    Ready(Frame),
}

impl Session {
    /// A new session for a registered client.
    pub fn new(shared: Arc<Shared>, handle: Arc<ClientHandle>) -> Session {
        let user = shared.acl.default_user();
        let mut s = Session {
            shared,
            handle,
            proto: Protocol::Resp2,
            authed: false,
            user,
            acl_gen: 0,
            reply_mode: ReplyMode::On,
            close_after: false,
            monitor: None,
            subs: None,
            out: BytesMut::new(),
            limits: Limits::default(),
            max_len: 0,
            timeout: 0,
            config_gen: u64::MAX,
            slowlog_threshold: -1,
            commands: 0,
            maxmemory: 0,
            no_replicas: false,
            min_replicas: false,
            policy: Policy::NoEviction,
            samples: 5,
            rng: SmallRng::seed_from_u64(0),
            access_mode: AccessMode::Lru,
            rand_state: std::cell::Cell::new(1),
            batch_wall_ms: now_ms(),
            batch_start: Instant::now(),
            clock: Instant::now(),
            clock_stale: false,
            last_lookup: None,
            last_cmd: None,
            consistency: (None, None),
            default_levels: crate::cluster::Levels {
                read: Level::One,
                write: Level::Quorum,
                timeout: std::time::Duration::from_secs(1),
            },
            pending: Vec::new(),
            spare: BytesMut::new(),
            multi: None,
            watched: Vec::new(),
            cluster_watched: Vec::new(),
            cas: None,
            batching: None,
            overlay: None,
            queued_changed: false,
            exec_ready: None,
            in_exec: false,
            script_ready: None,
            script_spec: None,
            request_len: 0,
            scripts: Vec::new(),
            holding_exclusive: false,
            script: false,
            db: 0,
            busy: false,
            events_after_reply: false,
            tracking: None,
            tracking_id: 0,
            script_keys: Vec::new(),
            propagate: Vec::new(),
            repl_rewrite: None,
            repl_force: false,
            repl_woff: 0,
            replconf_port: 0,
            sync_ready: None,
            save_ready: None,
            replica: None,
            from_master: false,
        };
        s.rand_state
            .set(s.handle.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        s.tracking_id = s.handle.id;
        s.refresh_config();
        s.reset_user();
        s
    }

    /// Reloads cached settings if CONFIG SET changed any.
    pub fn refresh_config(&mut self) {
        let gen = self.shared.config_gen.load(Ordering::Acquire);
        if gen == self.config_gen {
            if self.min_replicas {
                // Replicas may have attached, caught up, fallen behind or left since the last
                // batch.
                self.no_replicas = self.wants_replicas(&self.shared.config.read());
            }
            return;
        }
        let c = self.shared.config.read();
        self.limits = c.limits();
        self.max_len = c.proto_max_bulk_len;
        self.timeout = c.timeout;
        self.slowlog_threshold = c.slowlog_log_slower_than;
        self.maxmemory = c.maxmemory;
        self.min_replicas = c.writes_want_replicas();
        self.no_replicas = self.wants_replicas(&c);
        self.policy = c.maxmemory_policy;
        self.samples = c.maxmemory_samples as usize;
        self.access_mode = c.access_mode();
        self.default_levels = crate::cluster::Levels {
            read: c.read_consistency,
            write: c.write_consistency,
            timeout: std::time::Duration::from_millis(c.request_timeout_ms),
        };
        self.config_gen = gen;
    }

    /// Propagates the command running even if it changed no key (PUBLISH, FLUSHALL of nothing).
    pub(crate) fn force_propagation(&mut self) {
        if self.shared.repl.is_active() {
            self.repl_force = true;
        }
    }

    /// Why a client's command is refused while this node replicates a Redis primary: a write
    /// (`replica-read-only`), or a command that needs fresh data while the link is down
    /// (`replica-serve-stale-data no`). EXEC answers for the commands it would run.
    fn replica_refusal(&self, spec: &CommandSpec) -> Option<&'static str> {
        let (read_only, serve_stale) = {
            let c = self.shared.config.read();
            (c.replica_read_only, c.replica_serve_stale_data)
        };
        let exec = spec.name == "exec";
        let queued = |check: &dyn Fn(&CommandSpec) -> bool| {
            self.multi.as_ref().is_some_and(|m| queued_any(m, check))
        };
        if read_only
            && (spec.has_flag("write") || (exec && queued(&|s: &CommandSpec| s.has_flag("write"))))
        {
            return Some(errors::READONLY);
        }
        if !serve_stale
            && !self.shared.upstream.link_up()
            && (!spec.has_flag("stale")
                || (exec && queued(&|s: &CommandSpec| !s.has_flag("stale"))))
        {
            return Some(errors::MASTERDOWN);
        }
        None
    }

    /// Whether writes are refused for want of replicas: `min-replicas-to-write` set and fewer
    /// Redis replicas than it acknowledged within `min-replicas-max-lag` seconds.
    fn wants_replicas(&self, c: &crate::config::Config) -> bool {
        c.writes_want_replicas()
            && self.shared.repl.good_replicas(c.min_replicas_max_lag) < c.min_replicas_to_write
    }

    /// Starts a batch of commands (those parsed from one read): takes the wall-clock time once.
    /// Commands in the batch see that time advanced by the monotonic clock, which `run` reads
    /// once per command anyway for the slow log: one clock read per command in all.
    pub fn begin_batch(&mut self) {
        self.batch_wall_ms = now_ms();
        self.batch_start = Instant::now();
        self.clock = self.batch_start;
    }

    /// The wall-clock unix ms at which the current batch began ([`Session::begin_batch`]).
    pub fn batch_wall_ms(&self) -> u64 {
        self.batch_wall_ms
    }

    /// Ends a batch: publishes the client's last command and activity time, and adds the local
    /// counters to the node's (one shared atomic add per batch instead of one per command).
    pub fn end_batch(&mut self) {
        let queued = std::mem::take(&mut self.queued_changed).then(|| {
            let len = self.multi.as_ref().map(|m| m.queue.len());
            (len, self.multi_memory())
        });
        if self.last_cmd.is_some() || queued.is_some() {
            let mut m = self.handle.meta.lock();
            if let Some(cmd) = self.last_cmd.take() {
                m.last_cmd = cmd;
                m.last_active = Some(self.clock);
            }
            if let Some((len, mem)) = queued {
                m.multi = len;
                m.multi_mem = mem;
            }
        }
        if self.commands > 0 {
            Stats::add(
                &self.shared.metrics.server.commands_processed,
                self.commands,
            );
            self.commands = 0;
        }
        // BCAST invalidations of the keys changed by this batch, one message per prefix.
        self.shared.tracking.flush_bcast(&self.shared);
    }

    /// The consistency levels and deadline this connection's requests run at.
    pub fn levels(&self) -> crate::cluster::Levels {
        let d = self.default_levels;
        crate::cluster::Levels {
            read: self.consistency.0.unwrap_or(d.read),
            write: self.consistency.1.unwrap_or(d.write),
            timeout: d.timeout,
        }
    }

    /// Registers a reply that `fut` computes: it runs at once (spawned) and its reply takes its
    /// place among the batch's replies. `slot` is the slot it touches (`None`: every later command
    /// waits for it).
    pub fn defer(
        &mut self,
        fut: impl std::future::Future<Output = Frame> + Send + 'static,
        slot: Option<Slot>,
    ) {
        self.push_deferred(DeferredTask::Spawned(tokio::spawn(fut)), slot);
    }

    /// Like [`Session::defer`] for a future that only waits for work already running elsewhere
    /// (a cluster request's driver task): it is polled when the batch's replies are collected,
    /// and no task is spawned for it.
    pub fn defer_waiting(
        &mut self,
        fut: impl std::future::Future<Output = Frame> + Send + 'static,
        slot: Option<Slot>,
    ) {
        self.push_deferred(DeferredTask::Waiting(Box::pin(fut)), slot);
    }

    fn push_deferred(&mut self, task: DeferredTask, slot: Option<Slot>) {
        self.push_deferred_as(task, slot, false);
    }

    fn push_deferred_as(&mut self, task: DeferredTask, slot: Option<Slot>, script: bool) {
        let silent = match self.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                true
            }
        };
        self.pending.push(Deferred {
            at: self.out.len(),
            task,
            slot,
            silent,
            script,
        });
    }

    /// Whether the command `args` must wait for the replies still being computed: it touches a
    /// slot one of them touches, it is not a single-key command, or one of them must complete
    /// before anything else runs. Keeps a client's own writes visible to its next commands.
    pub fn must_wait(&self, args: &[Bytes]) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let Some((spec, _)) = cmd::lookup(&args[0]) else {
            return false;
        };
        if spec.first_key != 1 || spec.last_key != 1 || args.len() < 2 {
            return true;
        }
        let slot = redis_slot(&args[1]);
        self.pending
            .iter()
            .any(|d| d.slot.is_none_or(|s| s == slot))
    }

    /// Waits for every pending reply and splices each into [`Session::out`] at its place.
    pub async fn resolve(&mut self) {
        self.flush_scripts().await;
        if self.pending.is_empty() {
            return;
        }
        // Both buffers are kept between batches: no allocation per batch once warm.
        let mut pending = std::mem::take(&mut self.pending);
        let old = std::mem::take(&mut self.out);
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        out.reserve(old.len() + 64 * pending.len());
        let mut from = 0;
        for d in pending.drain(..) {
            out.extend_from_slice(&old[from..d.at]);
            from = d.at;
            let frame = match d.task {
                DeferredTask::Spawned(h) => h
                    .await
                    .unwrap_or_else(|_| Frame::error("ERR internal error")),
                DeferredTask::Waiting(f) => f.await,
                DeferredTask::Ready(f) => f,
            };
            if let (Frame::Error(e), false) = (&frame, d.script) {
                self.shared.metrics.commands.count_error(e);
            }
            if !d.silent {
                frame.encode(self.proto, &mut out);
            }
        }
        out.extend_from_slice(&old[from..]);
        self.out = out;
        // Keep the other buffer unless it grew unusually large (conn.rs keeps `out` likewise).
        self.spare = if old.capacity() > 1024 * 1024 {
            BytesMut::new()
        } else {
            old
        };
        self.pending = pending;
        // The next command's time (its `now`, and its slow-log duration) starts after the wait.
        self.clock = Instant::now();
    }

    /// Whether the connection has a subscription (Pub/Sub mode).
    pub fn subscribed(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.count() > 0)
    }

    /// Leaves every channel and pattern (RESET, and when the connection ends).
    pub fn unsubscribe_all(&mut self) {
        // The mailbox stays: tracking invalidations may still come through it.
        if let Some(subs) = self.subs.as_mut() {
            for c in std::mem::take(&mut subs.channels) {
                self.shared.pubsub.unsubscribe(false, &c, self.handle.id);
            }
            for p in std::mem::take(&mut subs.patterns) {
                self.shared.pubsub.unsubscribe(true, &p, self.handle.id);
            }
            self.handle.meta.lock().subs = (0, 0);
        }
    }

    /// Turns client-side caching off for this connection (`CLIENT TRACKING off`, `RESET`, and
    /// when the connection ends).
    pub fn stop_tracking(&mut self) {
        if self.tracking.take().is_some() {
            self.shared.tracking.disable(self.handle.id);
            crate::notify::refresh(&self.shared);
            let mut m = self.handle.meta.lock();
            m.tracking = None;
            m.tracking_broken = false;
        }
    }

    /// Whether a transaction is being queued or run.
    pub fn in_transaction(&self) -> bool {
        self.multi.is_some() || self.in_exec
    }

    /// Back to the `default` user, authenticated if it needs no password (a new connection,
    /// `RESET`).
    pub fn reset_user(&mut self) {
        let u = self.shared.acl.default_user();
        self.authed = u.nopass && u.enabled;
        self.set_user(u);
    }

    /// Runs as `user` from now on (AUTH, a script's caller).
    pub fn set_user(&mut self, user: Arc<crate::acl::User>) {
        let generation = self.shared.acl.generation();
        if Arc::ptr_eq(&self.user, &user) && self.acl_gen == generation {
            // The same user, the users unchanged (a script's session, run after run).
            return;
        }
        self.acl_gen = generation;
        let mut m = self.handle.meta.lock();
        if m.user != user.name {
            m.user = user.name.clone();
        }
        drop(m);
        self.user = user;
    }

    /// Checks the command against this connection's ACL user (re-read if the users changed);
    /// the error is Redis's refusal, and the refusal goes to the ACL log.
    fn acl_refusal(&mut self, spec: &'static CommandSpec, args: &[Bytes]) -> Option<Frame> {
        let acl = &self.shared.acl;
        let generation = acl.generation();
        if generation != self.acl_gen {
            self.acl_gen = generation;
            if let Some(u) = acl.get(&self.user.name) {
                self.user = u;
            }
        }
        if self.user.unrestricted() {
            return None;
        }
        use crate::acl::{Context, Denied, Reason};
        let denied = self.user.check(spec, args).err()?;
        let (reason, object) = match denied {
            Denied::Command => (
                Reason::Command,
                Bytes::from_static(spec.fullname.as_bytes()),
            ),
            Denied::Key(i) => (Reason::Key, args[i].clone()),
            Denied::Channel(i) => (Reason::Channel, args[i].clone()),
        };
        let context = if self.script {
            Context::Lua
        } else if self.in_transaction() {
            Context::Multi
        } else {
            Context::Toplevel
        };
        self.handle.meta.lock().last_cmd = spec.fullname;
        self.acl_log(reason, context, object, self.user.name.clone());
        let text = match (denied, self.script) {
            (Denied::Command, false) => format!(
                "NOPERM this user has no permissions to run the '{}' command",
                spec.fullname
            ),
            (Denied::Key(_), false) => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            }
            (Denied::Channel(_), false) => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .into()
            }
            (Denied::Command, true) => {
                "ERR The user executing the script can't run this command or subcommand".into()
            }
            (Denied::Key(_), true) => "ERR The user executing the script can't access at least one of the keys mentioned in the command".into(),
            (Denied::Channel(_), true) => "ERR The user executing the script can't publish to the channel mentioned in the command".into(),
        };
        Some(Frame::Error(text.into()))
    }

    /// Adds an entry to the ACL log for this client.
    pub fn acl_log(
        &self,
        reason: crate::acl::Reason,
        context: crate::acl::Context,
        object: Bytes,
        username: Bytes,
    ) {
        let max = self.shared.config.read().acllog_max_len as usize;
        self.shared.acl.log(
            crate::acl::LogEntry {
                count: 1,
                reason,
                context,
                object,
                username,
                at: Instant::now(),
                client_info: self.handle.info_line(),
            },
            max,
        );
    }

    /// Whether the parser may relax its pre-authentication limits.
    pub fn parser_authenticated(&self) -> bool {
        self.authed
    }

    /// The operation context at the current time.
    pub fn ctx(&self) -> Ctx {
        // A script sees one instant, as in Redis (a key does not expire half way through it).
        let now = if self.script {
            self.batch_wall_ms
        } else {
            self.batch_wall_ms + (self.clock - self.batch_start).as_millis() as u64
        };
        let rand = if matches!(self.access_mode, AccessMode::Lfu { .. }) {
            // xorshift64: only LFU's probabilistic increment uses it.
            let mut x = self.rand_state.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rand_state.set(x);
            (x >> 32) as u32
        } else {
            0
        };
        Ctx {
            now,
            lru: (now / 1000) as u32,
            max_len: self.max_len,
            mode: self.access_mode,
            rand,
            keep_expired: self.from_master,
        }
    }

    /// Runs one request and appends its reply (if any) to [`Session::out`]. A command queued
    /// in `MULTI` takes `args` (left empty): it is kept as it came, not copied.
    pub fn run(&mut self, args: &mut Vec<Bytes>) {
        if self.clock_stale {
            // Commands were queued since the clock was last read: this one's time starts now.
            self.clock = Instant::now();
            self.clock_stale = false;
        }
        // While Redis replicas are attached, a client's command holds the stream from before it
        // runs until its effects are in it (crate::repl: the node runs one command at a time).
        let repl = self.shared.repl.is_active();
        let top = (repl && !self.in_exec && !self.script).then(|| self.shared.clone());
        let turn = top.as_ref().map(|sh| {
            let turn = sh.repl.turn();
            // Keys expired in the background so far go first (and under the databases'
            // numbers before this command, which may be SWAPDB).
            if sh.store.repl_journal_pending() {
                sh.repl.lock().drain_lost(sh);
            }
            turn
        });
        let (dirty, db) = (repl.then(|| self.shared.store.changes()), self.db);
        let (mut frame, spec, disposition) = self.dispatch(args);
        if let Some(dirty) = dirty {
            let rewrite = self.repl_rewrite.take();
            let force = std::mem::take(&mut self.repl_force);
            if disposition == Disposition::Ran && (force || self.shared.store.changes() != dirty) {
                let argv = rewrite.unwrap_or_else(|| args.clone());
                self.propagate.push((db, argv));
            }
        } else {
            // Set while the last replica went away.
            self.repl_rewrite = None;
            self.repl_force = false;
        }
        if let Some(turn) = turn {
            if !self.propagate.is_empty() || self.shared.store.repl_journal_pending() {
                let mut feed = self.shared.repl.lock();
                feed.drain_lost(&self.shared);
                if !self.propagate.is_empty() {
                    feed.write_block(&self.shared, &self.propagate);
                    self.propagate.clear();
                    self.repl_woff = feed.offset();
                }
            }
            drop(turn);
        }
        if disposition == Disposition::Queued {
            // Queued: it runs (and is timed, counted, logged and monitored) at EXEC. No clock
            // read for it (a transaction of ten commands would read it ten times for nothing).
            self.commands += 1;
            self.clock_stale = true;
            if let Some(spec) = spec {
                self.last_cmd = Some(spec.fullname);
            }
            if let Some(frame) = frame {
                self.emit(frame);
            }
            return;
        }
        let finished = Instant::now();
        let elapsed = finished - self.clock;
        self.clock = finished;
        self.commands += 1;
        let rejected = disposition == Disposition::Rejected;
        if rejected && self.multi.is_some() {
            if spec.is_some_and(|s| s.name == "exec") {
                // As Redis: a refused EXEC ends the transaction and says why.
                let why = match &frame {
                    Some(Frame::Error(e)) => String::from_utf8_lossy(e).into_owned(),
                    _ => String::new(),
                };
                let why = why.strip_prefix("ERR ").unwrap_or(&why);
                self.discard_transaction();
                frame = Some(Frame::Error(errors::exec_abort(why).into()));
            } else if let Some(m) = self.multi.as_mut() {
                m.aborted = true;
            }
        }
        if let Some(spec) = spec {
            self.last_cmd = Some(spec.fullname);
            if self.script_ready.is_some() {
                self.script_spec = Some(spec);
            }
            // As Redis: commands that ran (failed ones too), but no administrative command.
            if !rejected
                && self.shared.monitor_count.load(Ordering::Relaxed) > 0
                && !spec.has_flag("admin")
                && self.exec_ready.is_none()
            {
                self.shared.feed_monitors(self.monitor_line(args));
            }
            if let Some(stat) = self.shared.metrics.commands.of(spec) {
                if rejected {
                    stat.rejected.fetch_add(1, Ordering::Relaxed);
                } else {
                    stat.calls.fetch_add(1, Ordering::Relaxed);
                    stat.latency.record(elapsed);
                    if matches!(frame, Some(Frame::Error(_))) {
                        stat.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let micros = elapsed.as_micros() as u64;
            if self.slowlog_threshold >= 0 && micros >= self.slowlog_threshold as u64 {
                self.slowlog(args, spec, micros);
            }
        }
        let Some(frame) = frame else { return };
        if let Frame::Error(e) = &frame {
            self.shared.metrics.commands.count_error(e);
        }
        self.emit(frame);
    }

    /// The memory the session's own buffers hold: its output buffers and the commands queued in
    /// a transaction (the connection adds its read buffer: [`crate::state::Shared::account_client`]).
    pub fn held_memory(&self) -> usize {
        self.out.capacity() + self.spare.capacity() + self.multi_memory()
    }

    /// What the commands queued in `MULTI` hold: their arguments and a slot each.
    fn multi_memory(&self) -> usize {
        self.multi
            .as_ref()
            .map_or(0, |m| m.bytes + 32 * m.queue.len())
    }

    /// In a cluster, whether `args` changes the cluster-wide settings (the ACL users, the
    /// function libraries) while this node has not yet heard them from any member since it
    /// started: the command must wait for that ([`crate::cluster::settings::wait_heard`]), or a
    /// node that just restarted would publish its own few users or libraries over the
    /// cluster's. One atomic load once heard; queued in MULTI, the command is not run yet.
    pub fn must_hear_settings(&self, args: &[Bytes]) -> bool {
        let Some(cl) = self.shared.cluster.as_ref() else {
            return false;
        };
        if cl.settings_heard.load(Ordering::Acquire) || self.multi.is_some() || args.len() < 2 {
            return false;
        }
        let (cmd, sub) = (&args[0], &args[1]);
        let is = |a: &Bytes, b: &[u8]| a.eq_ignore_ascii_case(b);
        (is(cmd, b"acl")
            && [&b"setuser"[..], b"deluser", b"load"]
                .iter()
                .any(|x| is(sub, x)))
            || (is(cmd, b"function")
                && [&b"load"[..], b"delete", b"flush", b"restore"]
                    .iter()
                    .any(|x| is(sub, x)))
            || (is(cmd, b"config")
                && is(sub, b"set")
                && args[2..].iter().any(|a| is(a, b"requirepass")))
    }

    /// Answers a command that [`Session::must_hear_settings`] held until the node heard the
    /// cluster's settings, when no member answered in time: nothing was changed.
    pub fn refuse_unheard(&mut self) {
        let e = Frame::error(crate::cluster::settings::NOT_HEARD);
        if let Frame::Error(text) = &e {
            self.shared.metrics.commands.count_error(text);
        }
        self.emit(e);
    }

    /// Appends a command's reply to [`Session::out`] as `CLIENT REPLY` allows (`SKIP` drops
    /// this one).
    fn emit(&mut self, frame: Frame) {
        match self.reply_mode {
            ReplyMode::On => frame.encode(self.proto, &mut self.out),
            ReplyMode::Off => {}
            ReplyMode::Skip => self.reply_mode = ReplyMode::On,
        }
    }

    /// Where this session's database is stored ([`crate::dbs::DbMap`]).
    #[inline]
    pub fn physical_db(&self) -> u8 {
        self.shared.dbs.physical(self.db)
    }

    /// `SELECT`: from now on commands run in database `db`.
    pub fn select(&mut self, db: u8) {
        self.db = db;
        self.handle.meta.lock().db = db;
    }

    /// Starts a transaction (`MULTI`).
    pub fn begin_transaction(&mut self) {
        self.multi = Some(Multi::default());
        let mut m = self.handle.meta.lock();
        m.multi = Some(0);
        m.multi_mem = 0;
    }

    /// Ends the transaction being queued, if any, and forgets the watched keys (`DISCARD`, and
    /// `EXEC` whatever its outcome).
    pub fn discard_transaction(&mut self) -> Option<Multi> {
        self.watched.clear();
        self.cluster_watched.clear();
        self.take_transaction()
    }

    /// Ends the transaction being queued, if any, keeping the watched keys (for `EXEC` to check).
    pub fn take_transaction(&mut self) -> Option<Multi> {
        let m = self.multi.take();
        if m.is_some() {
            let mut meta = self.handle.meta.lock();
            meta.multi = None;
            meta.multi_mem = 0;
        }
        m
    }

    fn queue_command(&mut self, args: &mut Vec<Bytes>) -> Result<(), &'static str> {
        // `client-query-buffer-limit`, as this session last read it (every batch, and at once
        // after its own CONFIG SET).
        let limit = self.limits.max_query_buffer;
        let m = self.multi.as_mut().expect("in MULTI");
        let bytes = args.iter().map(|a| a.len() + 16).sum::<usize>();
        if m.bytes + bytes > limit {
            return Err(errors::MULTI_TOO_LARGE);
        }
        if !m.aborted {
            // As Redis: an aborted transaction keeps nothing (EXEC will run none of it).
            m.bytes += bytes;
            m.queue.push(std::mem::take(args));
        }
        // CLIENT LIST's `multi=` count is updated once per batch (`end_batch`), as other
        // clients see a Redis client: between the batches it runs.
        self.queued_changed = true;
        Ok(())
    }

    /// Remembers `key` as it is now, for `EXEC` to compare (`WATCH`).
    pub fn watch(&mut self, key: &Bytes) {
        if self.watched.iter().any(|(k, _, _)| k == key) {
            return;
        }
        let now = self.ctx().now;
        let mark = self.shared.store.watch_mark(key, now);
        self.watched.push((key.clone(), self.db, mark));
    }

    /// Whether a watched key changed since `WATCH`: written (a new version), deleted, or expired
    /// since. A key that had already expired when watched counts as absent, as in Redis.
    fn watched_changed(&self) -> bool {
        let now = self.ctx().now;
        self.watched.iter().any(|(key, db, then)| {
            // SWAPDB of its database since: its name now means another key (Redis makes a
            // watched key dirty then if it exists on either side; this is the same or more).
            if hypercache_cluster::db::of(key) != self.shared.dbs.physical(*db) {
                return true;
            }
            let current = self.shared.store.watch_mark(key, now);
            match (then, current) {
                // Absent then: any entry now is a change, unless it is absent still.
                (None, None) => false,
                (None, Some(_)) => true,
                // Expired then: deleting it (or reaping it) changes nothing logically.
                (Some((_, true)), None) => false,
                (Some((v, true)), Some((w, _))) => *v != w,
                // Live then: gone, expired since, or written.
                (Some((_, false)), None) => true,
                (Some((v, false)), Some((w, expired))) => *v != w || expired,
            }
        })
    }

    /// Runs the transaction `EXEC` accepted ([`Session::exec_ready`]): on a single node with the
    /// node's gate held exclusive, so that no other client's command runs in between. Writes the
    /// reply: the replies of the commands as one array, a null array when a watched key changed,
    /// or `EXECABORT` with the reason (memory full, node draining) when nothing could run.
    pub async fn run_transaction(&mut self) {
        let Some((mut m, exec_args)) = self.exec_ready.take() else {
            return;
        };
        self.resolve().await;
        let shared = self.shared.clone();
        let _exclusive = match shared.cluster {
            None => Some(shared.exclusive.exclusive().await),
            Some(_) => None,
        };
        // Time goes on from here: the wait does not count as any command's.
        self.clock = Instant::now();
        // CLIENT REPLY OFF (or SKIP, which EXEC's reply consumes) silences the whole reply.
        let silent = self.reply_mode != ReplyMode::On;
        let after = match self.reply_mode {
            ReplyMode::Skip => ReplyMode::On,
            mode => mode,
        };
        self.reply_mode = ReplyMode::On;
        let reply = |s: &mut Session, f: Frame| {
            if !silent {
                f.encode(s.proto, &mut s.out);
            }
        };
        let changed = self.watched_changed();
        self.watched.clear();
        let cluster_watched = std::mem::take(&mut self.cluster_watched);
        let batch = self.batch_plan(&m, &cluster_watched);
        if changed {
            reply(self, Frame::NullArray);
        } else if let Some(e) = self.exec_refusal(&m) {
            let text = errors::exec_abort(e);
            self.shared.metrics.commands.count_error(text.as_bytes());
            reply(self, Frame::Error(text.into()));
        } else if let Some((keys, seen)) = batch {
            // What WATCH saw of each watched key (`None`: its read failed, so what the key was
            // is not known and EXEC aborts).
            let expect: Option<Vec<(u16, Option<Version>)>> = seen
                .into_iter()
                .map(|(i, v)| v.map(|v| (i as u16, v)))
                .collect();
            match (expect, &keys[..]) {
                (None, _) => reply(self, Frame::NullArray),
                (Some(expect), [key]) => {
                    let round = Round::Key(key.clone(), expect.first().map(|(_, v)| *v));
                    self.run_batch(&mut m, round, silent).await
                }
                (Some(expect), _) => {
                    self.run_batch(&mut m, Round::Group(keys, expect), silent)
                        .await
                }
            }
        } else if m.queue.is_empty() && !cluster_watched.is_empty() {
            // Nothing to run: EXEC only says whether a watched key changed.
            let (sh, lv, ctx) = (self.shared.clone(), self.levels(), self.ctx());
            let unchanged = Self::watched_unchanged(sh, lv, ctx, &cluster_watched).await;
            let f = if unchanged {
                Frame::Array(Vec::new())
            } else {
                Frame::NullArray
            };
            reply(self, f);
        } else if !cluster_watched.is_empty() {
            match self.guarded_command(&m, &cluster_watched) {
                Err(text) => {
                    self.shared.metrics.commands.count_error(text.as_bytes());
                    reply(self, Frame::error(text));
                }
                // A WATCH read failed: what the key was is not known.
                Ok(None) => reply(self, Frame::NullArray),
                Ok(Some(cas)) => {
                    if silent {
                        self.reply_mode = ReplyMode::Off;
                    }
                    self.in_exec = true;
                    let mark = self.out.len();
                    self.cas = Some(cas);
                    self.run(&mut m.queue[0]);
                    if self.cas.take().is_some() && !silent {
                        // Refused before it ran (a syntax error, say): EXEC's array carries
                        // the error, as Redis's does.
                        let tail = self.out.split_off(mark);
                        Frame::encode_array_header(1, &mut self.out);
                        self.out.unsplit(tail);
                    }
                    self.in_exec = false;
                }
            }
        } else {
            if silent {
                self.reply_mode = ReplyMode::Off;
            } else {
                Frame::encode_array_header(m.queue.len(), &mut self.out);
            }
            self.in_exec = true;
            self.holding_exclusive = _exclusive.is_some();
            for args in m.queue.iter_mut() {
                if self.must_wait(args) {
                    self.resolve().await;
                }
                self.run(args);
                self.queue_script();
            }
            // The transaction's scripts run while the gate is still held.
            self.flush_scripts().await;
            self.in_exec = false;
            self.holding_exclusive = false;
        }
        if silent {
            self.reply_mode = after;
        }
        self.write_effects();
        if self.shared.monitor_count.load(Ordering::Relaxed) > 0 {
            self.shared.feed_monitors(self.monitor_line(&exec_args));
        }
        // The replies are in order; the cluster's still being computed are waited for with the
        // rest of the batch.
        self.resolve().await;
    }

    /// In a cluster, whether `m` runs as one round ([`crate::cmd::batch`] for one key,
    /// [`crate::cmd::group`] for several): each command one that runs as one operation of its
    /// one key (`guardable`), the keys (watched ones included) all of one slot, and two commands
    /// or more unless more than one key is involved. Returns the keys (stored form: the
    /// commands' in order, then the other watched ones) and, for each watched key, its index
    /// and what `WATCH` saw (`None`: the WATCH read failed).
    #[allow(clippy::type_complexity)]
    fn batch_plan(
        &self,
        m: &Multi,
        watched: &[(Bytes, ClusterWatch)],
    ) -> Option<(Vec<Bytes>, Vec<(usize, Option<Option<Version>>)>)> {
        self.shared.cluster.as_ref()?;
        if m.queue.is_empty() {
            return None;
        }
        let mut keys: Vec<Bytes> = Vec::new();
        for args in &m.queue {
            let (spec, _) = cmd::lookup(&args[0])?;
            let positions = spec.key_positions(args);
            if !cmd::guardable(spec.name) || positions.len() != 1 {
                return None;
            }
            let stored = hypercache_cluster::db::encode(self.physical_db(), &args[positions[0]]);
            if !keys.contains(&stored) {
                keys.push(stored);
            }
        }
        let mut seen = Vec::with_capacity(watched.len());
        for (w, cell) in watched {
            let i = match keys.iter().position(|k| k == w) {
                Some(i) => i,
                None => {
                    keys.push(w.clone());
                    keys.len() - 1
                }
            };
            seen.push((i, cell.get().copied().flatten()));
        }
        let slot = hypercache_cluster::slot::key_slot(keys.first()?);
        let key_slot = hypercache_cluster::slot::key_slot;
        if keys.iter().any(|k| key_slot(k) != slot) || (keys.len() == 1 && m.queue.len() < 2) {
            return None;
        }
        Some((keys, seen))
    }

    /// Runs `m` as one round ([`Session::batch_plan`]): each command's handler runs and hands
    /// its operation over instead of running it (`keyed`), then the round runs them all and
    /// its reply is `EXEC`'s.
    async fn run_batch(&mut self, m: &mut Multi, round: Round, silent: bool) {
        self.in_exec = true;
        self.batching = Some(Vec::new());
        let mut slots = Vec::with_capacity(m.queue.len());
        for args in m.queue.iter_mut() {
            let (mark, before) = (self.out.len(), self.pending.len());
            let collected = self.batching.as_ref().map_or(0, Vec::len);
            self.run(args);
            if self.pending.len() > before {
                // Not expected of a guardable command; its reply is waited for in its place.
                self.resolve().await;
            }
            let now = self.batching.as_ref().map_or(0, Vec::len);
            if now > collected {
                slots.push(Ok(now - 1));
            } else {
                // Refused before it ran (wrong arguments, say): its reply is already written.
                let written = self.out.split_off(mark);
                let limits = hypercache_resp::frame::DecodeLimits {
                    max_bulk_len: usize::MAX,
                    max_elements: usize::MAX,
                    max_depth: 1024,
                };
                let frame = match hypercache_resp::frame::decode(&written, &limits) {
                    Ok(Some((f, _))) => f,
                    _ => Frame::Null,
                };
                slots.push(Err(frame));
            }
        }
        let ops = self.batching.take().unwrap_or_default();
        if silent {
            self.reply_mode = ReplyMode::Off;
        }
        let reply = if ops.is_empty() {
            Some(Frame::Array(
                slots
                    .into_iter()
                    .map(|s| s.err().unwrap_or(Frame::Null))
                    .collect(),
            ))
        } else {
            match round {
                Round::Key(key, expect) => cmd::batch(self, &key, expect, ops, slots),
                Round::Group(keys, expect) => cmd::group(self, keys, expect, ops, slots),
            }
        };
        if let (Some(f), false) = (reply, silent) {
            f.encode(self.proto, &mut self.out);
        }
        self.in_exec = false;
    }

    /// In a cluster, whether every watched key still has the version `WATCH` saw (read again
    /// at QUORUM at least, at levels `lv`; a read that fails, then or now, counts as changed).
    async fn watched_unchanged(
        shared: Arc<Shared>,
        mut lv: crate::cluster::Levels,
        ctx: hypercache_cluster::Ctx,
        watched: &[(Bytes, ClusterWatch)],
    ) -> bool {
        let Some(cl) = shared.cluster.clone() else {
            return false;
        };
        if lv.read == Level::One {
            lv.read = Level::Quorum;
        }
        for (key, cell) in watched {
            let Some(seen) = cell.get().copied().flatten() else {
                return false;
            };
            let op = hypercache_cluster::Op::Version;
            let now = crate::cluster::exec::run(&shared, &cl, key, op, lv, ctx).await;
            if !matches!(now, Ok(hypercache_cluster::Outcome::Version(v)) if v == seen) {
                return false;
            }
        }
        true
    }

    /// A watched transaction in a cluster: its one command, if it is one command on the one
    /// watched key that runs as one operation of that key; with the version `WATCH` saw
    /// (`Ok(None)`: the `WATCH` read failed).
    fn guarded_command(
        &self,
        m: &Multi,
        watched: &[(Bytes, ClusterWatch)],
    ) -> Result<Option<(Bytes, Option<Version>)>, &'static str> {
        let refused = Err(errors::WATCH_SHAPE_IN_CLUSTER);
        let ([(key, seen)], [args]) = (watched, &m.queue[..]) else {
            return refused;
        };
        let Some((spec, _)) = cmd::lookup(&args[0]) else {
            return refused;
        };
        let positions = spec.key_positions(args);
        if !cmd::guardable(spec.name)
            || positions.len() != 1
            || hypercache_cluster::db::encode(self.physical_db(), &args[positions[0]]) != *key
        {
            return refused;
        }
        Ok(seen.get().copied().flatten().map(|v| (key.clone(), v)))
    }

    /// Whether `args` is a command that runs with the node's gate held exclusive (a script, a
    /// function, or EXEC of a transaction being queued).
    pub fn runs_exclusive(&self, args: &[Bytes]) -> bool {
        let name = &args[0];
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        is(b"eval")
            || is(b"evalsha")
            || is(b"eval_ro")
            || is(b"evalsha_ro")
            || is(b"fcall")
            || is(b"fcall_ro")
            || (is(b"exec") && self.multi.is_some())
    }

    /// Marks the session busy (its next command answers `-BUSY` unless allowed) if a script has
    /// run past `busy-reply-threshold`.
    pub fn mark_if_busy(&mut self) {
        let threshold = self.shared.config.read().busy_reply_threshold;
        if self
            .shared
            .scripts
            .running
            .busy_in(threshold)
            .is_some_and(|d| d.is_zero())
        {
            self.busy = true;
        }
    }

    /// Starts a script run on the script session: one instant for the whole script, and
    /// `maxmemory` left to the script's own rule.
    pub fn begin_script(&mut self) {
        self.begin_batch();
        self.in_exec = true;
        self.reply_mode = ReplyMode::On;
    }

    /// Queues the script job a command asked for ([`Session::script_ready`]); its reply takes
    /// its place among the batch's replies once it has run ([`Session::flush_scripts`]).
    pub fn queue_script(&mut self) {
        let Some(job) = self.script_ready.take() else {
            return;
        };
        self.scripts.push(QueuedScript {
            job,
            at: self.pending.len(),
            spec: self.script_spec.take(),
        });
        let placeholder = Frame::error("ERR script failed");
        self.push_deferred_as(DeferredTask::Ready(placeholder), None, true);
    }

    /// Whether every reply still pending is a queued script's (a script command after them
    /// joins their batch instead of waiting for them).
    pub fn only_scripts_pending(&self) -> bool {
        self.pending.iter().all(|d| d.script)
    }

    /// Whether `args` is a script or function call (EVAL*, EVALSHA*, FCALL*).
    pub fn is_script_call(&self, args: &[Bytes]) -> bool {
        self.runs_exclusive(args) && !args[0].eq_ignore_ascii_case(b"exec")
    }

    /// Runs the queued scripts, in order (Lua is synchronous): on a single node on this worker,
    /// with the node's gate held exclusive, so that no other command runs
    /// during them. Each reply goes to its place in the output.
    pub async fn flush_scripts(&mut self) {
        if self.scripts.is_empty() {
            return;
        }
        // Taken to run, given back empty: its room is kept for the next batch.
        let mut queued = std::mem::take(&mut self.scripts);
        let shared = self.shared.clone();
        // Only what runs a script excludes other commands; loading or listing does not.
        let runs = queued.iter().any(|q| {
            matches!(
                q.job,
                crate::script::Job::Run(_) | crate::script::Job::Fcall(_)
            )
        });
        let _exclusive = match (&shared.cluster, self.holding_exclusive, runs) {
            (None, false, true) => Some(shared.exclusive.exclusive().await),
            _ => None,
        };
        let levels = self.consistency;
        let sh = shared.clone();
        let runtime = tokio::runtime::Handle::current();
        // On a single node a script's commands are local and synchronous, and the scripts run
        // here, on the runtime worker: a trip to a blocking thread and back cost more than the
        // script (docs/benchmarks.md). One that runs long moves off the worker itself
        // ([`crate::script::Scripts::run_job`]). In a cluster a script's commands wait for
        // replicas, and `FUNCTION` subcommands run library code: those go to a blocking thread.
        let on_worker = shared.cluster.is_none()
            && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && !queued
                .iter()
                .any(|q| matches!(q.job, crate::script::Job::Function(_)));
        if on_worker {
            for q in queued.drain(..) {
                let function = function_write(&q.job, sh.repl.is_active());
                let (reply, counted) =
                    crate::script::Scripts::run_job(&sh, q.job, levels, &runtime, true);
                self.script_effects(sh.scripts.take_effects(), function, &reply);
                self.script_replied(q.at, q.spec, reply, counted);
            }
            self.scripts = queued;
            self.clock = Instant::now();
            return;
        }
        let (jobs, rest): (Vec<_>, Vec<_>) =
            queued.into_iter().map(|q| (q.job, (q.at, q.spec))).unzip();
        let replies = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|job| {
                    let function = function_write(&job, sh.repl.is_active());
                    let (reply, counted) =
                        crate::script::Scripts::run_job(&sh, job, levels, &runtime, false);
                    (reply, counted, sh.scripts.take_effects(), function)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        self.clock = Instant::now();
        let mut replies = replies.into_iter();
        for (at, spec) in rest {
            let (reply, counted, effects, function) = replies
                .next()
                .unwrap_or_else(|| (Frame::error("ERR script failed"), false, Vec::new(), None));
            self.script_effects(effects, function, &reply);
            self.script_replied(at, spec, reply, counted);
        }
    }

    /// Puts what a transaction or a script propagates into the replication stream, as one block
    /// (unless a transaction being run collects it).
    fn write_effects(&mut self) {
        if self.propagate.is_empty() {
            return;
        }
        let mut feed = self.shared.repl.lock();
        feed.drain_lost(&self.shared);
        feed.write_block(&self.shared, &self.propagate);
        self.propagate.clear();
        self.repl_woff = feed.offset();
    }

    /// Takes the snapshot a `SAVE`, `BGSAVE` or saving `SHUTDOWN` asked for, with the node's gate
    /// held exclusive, and writes it (SAVE and SHUTDOWN: here, then reply or stop; BGSAVE, whose
    /// reply is out already: on a blocking thread).
    pub async fn run_save(&mut self) {
        use crate::persist::SaveAsk;
        let Some(ask) = self.save_ready.take() else {
            return;
        };
        self.resolve().await;
        let shared = self.shared.clone();
        if ask == SaveAsk::Background {
            crate::persist::background(&shared).await;
            return;
        }
        let (image, changes) = {
            let _exclusive = shared.exclusive.exclusive().await;
            crate::persist::snapshot(&shared)
        };
        let write = || crate::persist::write(&shared, &image, changes, false);
        let written = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(write),
            _ => write(),
        };
        let reply = match (ask, written) {
            (SaveAsk::Save, Ok(())) => Frame::ok(),
            (SaveAsk::Save, Err(_)) => Frame::error("ERR"),
            (SaveAsk::Shutdown { force }, r) if r.is_ok() || force => {
                drop(r);
                tracing::warn!(node_id = %shared.node_id, component = "server", "SHUTDOWN requested by a client, stopping");
                shared.trigger_shutdown();
                self.close_after = true;
                return;
            }
            (SaveAsk::Shutdown { .. }, _) => {
                Frame::error("ERR Errors trying to SHUTDOWN. Check logs.")
            }
            (SaveAsk::Background, _) => unreachable!("handled above"),
        };
        self.emit(reply);
    }

    /// Attaches this connection as a Redis replica ([`Session::sync_ready`]): from the backlog
    /// when `PSYNC` may continue, else with a snapshot taken while no command runs. Writes what
    /// the replica reads first (`+FULLRESYNC`/`+CONTINUE`, the RDB file).
    pub async fn start_replica(&mut self) {
        let Some(ask) = self.sync_ready.take() else {
            return;
        };
        self.resolve().await;
        let shared = self.shared.clone();
        let (id, ip, port) = (
            self.handle.id,
            self.handle.addr.ip().to_string(),
            self.replconf_port,
        );
        if let crate::repl::SyncAsk::Psync { replid, offset } = &ask {
            if let Some((first, conn)) =
                shared
                    .repl
                    .attach_continue(replid, *offset, id, ip.clone(), port)
            {
                self.out.extend_from_slice(&first);
                self.replica = Some(conn);
                tracing::info!(node_id = %shared.node_id, component = "repl", client_id = id, offset, "replica continues from the backlog");
                return;
            }
        }
        let psync = ask != crate::repl::SyncAsk::Sync;
        let _exclusive = shared.exclusive.exclusive().await;
        let started = Instant::now();
        let (offset, rdb, conn) = shared.repl.attach_full(&shared, id, ip, port, psync);
        drop(_exclusive);
        if psync {
            let line = format!("+FULLRESYNC {} {offset}\r\n", shared.repl.replid());
            self.out.extend_from_slice(line.as_bytes());
        }
        self.out
            .extend_from_slice(format!("${}\r\n", rdb.len()).as_bytes());
        self.out.extend_from_slice(&rdb);
        self.replica = Some(conn);
        tracing::info!(
            node_id = %shared.node_id,
            component = "repl",
            client_id = id,
            rdb_bytes = rdb.len(),
            paused_ms = started.elapsed().as_millis() as u64,
            "replica attached with a snapshot"
        );
    }

    /// Propagates what a script job did: its commands' effects, or the `FUNCTION` command
    /// that changed the libraries (`function`) if it succeeded. Inside a transaction they join
    /// its block.
    fn script_effects(
        &mut self,
        mut effects: Vec<crate::repl::Effect>,
        function: Option<Vec<Bytes>>,
        reply: &Frame,
    ) {
        if let Some(args) = function.filter(|_| !matches!(reply, Frame::Error(_))) {
            effects.push((self.db, args));
        }
        if effects.is_empty() {
            return;
        }
        self.propagate.append(&mut effects);
        if !self.in_exec {
            self.write_effects();
        }
    }

    /// Puts a queued script's reply in its place in [`Session::pending`], counted as Redis
    /// counts a script's failure.
    fn script_replied(
        &mut self,
        at: usize,
        spec: Option<&'static CommandSpec>,
        reply: Frame,
        counted: bool,
    ) {
        if let Frame::Error(e) = &reply {
            // An error the script passed on from redis.call was counted when the command
            // answered it; either way the script's command failed (Redis's accounting).
            if !counted {
                self.shared.metrics.commands.count_error(e.as_ref());
            }
            if let Some(stat) = spec.and_then(|s| self.shared.metrics.commands.of(s)) {
                stat.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(d) = self.pending.get_mut(at) {
            d.task = DeferredTask::Ready(reply);
        }
    }

    /// Why `EXEC` must run nothing, as Redis checks before running a transaction: memory full
    /// with a command that needs memory, or (HyperCache) a draining node with a write queued.
    fn exec_refusal(&mut self, m: &Multi) -> Option<&'static str> {
        let flagged = |flag: &str| queued_any(m, |spec| spec.has_flag(flag));
        if self.maxmemory > 0 && flagged("denyoom") {
            let ctx = self.ctx();
            let (max, policy, samples) = (self.maxmemory, self.policy, self.samples);
            if !crate::memory::make_room(&self.shared, max, policy, samples, &ctx, &mut self.rng) {
                return Some(errors::OOM);
            }
        }
        if self
            .shared
            .cluster
            .as_ref()
            .is_some_and(|c| c.is_draining())
            && flagged("write")
        {
            return Some(errors::DRAINING);
        }
        if self.no_replicas && flagged("write") {
            return Some(errors::NOREPLICAS);
        }
        None
    }

    /// A `MONITOR` line for `args`: time, database, client address, and the arguments quoted as
    /// Redis quotes them, with secrets (AUTH and HELLO ... AUTH credentials) redacted.
    fn monitor_line(&self, args: &[Bytes]) -> Bytes {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = if self.script {
            format!(
                "+{}.{:06} [{} lua]",
                now.as_secs(),
                now.subsec_micros(),
                self.db
            )
        } else {
            format!(
                "+{}.{:06} [{} {}]",
                now.as_secs(),
                now.subsec_micros(),
                self.db,
                self.handle.addr
            )
        }
        .into_bytes();
        let redact_from = if args[0].eq_ignore_ascii_case(b"auth") {
            1
        } else if args[0].eq_ignore_ascii_case(b"hello") {
            args.iter()
                .position(|a| a.eq_ignore_ascii_case(b"auth"))
                .map_or(usize::MAX, |i| i + 1)
        } else {
            usize::MAX
        };
        let migrate = args[0].eq_ignore_ascii_case(b"migrate");
        for (i, a) in args.iter().enumerate() {
            line.extend_from_slice(b" \"");
            if i >= redact_from || (migrate && migrate_secret(args, i)) {
                line.extend_from_slice(b"(redacted)");
            } else {
                for &c in a.iter() {
                    match c {
                        b'\\' => line.extend_from_slice(b"\\\\"),
                        b'"' => line.extend_from_slice(b"\\\""),
                        b'\n' => line.extend_from_slice(b"\\n"),
                        b'\r' => line.extend_from_slice(b"\\r"),
                        b'\t' => line.extend_from_slice(b"\\t"),
                        7 => line.extend_from_slice(b"\\a"),
                        8 => line.extend_from_slice(b"\\b"),
                        0x20..=0x7e => line.push(c),
                        _ => line.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
                    }
                }
            }
            line.push(b'"');
        }
        line.extend_from_slice(b"\r\n");
        line.into()
    }

    fn slowlog(&self, args: &[Bytes], spec: &CommandSpec, micros: u64) {
        let max = self.shared.config.read().slowlog_max_len as usize;
        // Secrets never reach the slow log: AUTH and HELLO credentials, CONFIG SET requirepass's
        // value, and every rule of ACL SETUSER (as Redis redacts them).
        let redact = matches!(
            spec.fullname,
            "auth" | "hello" | "config|set" | "acl|setuser"
        );
        let mut trimmed: Vec<Bytes> = Vec::new();
        let argc = args.len().min(32);
        for (j, a) in args.iter().take(argc).enumerate() {
            if argc == 32 && j == 31 && args.len() > 32 {
                trimmed.push(format!("... ({} more arguments)", args.len() - 31).into());
            } else if (redact
                && match spec.fullname {
                    "config|set" => is_sensitive_config(args, j),
                    "acl|setuser" => j >= 2,
                    _ => j > 0,
                })
                || (spec.name == "migrate" && migrate_secret(args, j))
            {
                trimmed.push(Bytes::from_static(b"(redacted)"));
            } else if a.len() > 128 {
                let mut s = a[..128].to_vec();
                s.extend_from_slice(format!("... ({} more bytes)", a.len() - 128).as_bytes());
                trimmed.push(s.into());
            } else {
                trimmed.push(a.clone());
            }
        }
        let name = self.handle.meta.lock().name.clone();
        let mut log = self.shared.slowlog.lock();
        let id = log.next_id;
        log.next_id += 1;
        log.entries.push_front(SlowEntry {
            id,
            at: now_ms() / 1000,
            micros,
            args: trimmed,
            addr: self.handle.addr.to_string(),
            name,
        });
        log.entries.truncate(max);
    }

    /// Finds and runs the handler. Returns the reply (None for no reply at all, as for
    /// `CLIENT REPLY OFF`), the command spec when the command exists, and whether it was
    /// refused before running (INFO `commandstats` counts those as `rejected_calls`).
    fn dispatch(
        &mut self,
        args: &mut Vec<Bytes>,
    ) -> (Option<Frame>, Option<&'static CommandSpec>, Disposition) {
        use Disposition::{Queued, Ran, Rejected};
        // The command looked up last, checked first: a pipeline or a transaction mostly repeats
        // one command, and comparing its name costs a fraction of the table's hash lookup.
        let found = match self.last_lookup {
            Some(hit) if args[0].eq_ignore_ascii_case(hit.0.name.as_bytes()) => Some(hit),
            _ => cmd::lookup(&args[0]),
        };
        self.last_lookup = found.or(self.last_lookup);
        let Some((spec, handler)) = found else {
            return (
                Some(Frame::Error(errors::unknown_command(args).into())),
                None,
                Rejected,
            );
        };
        let mut effective = spec;
        if !spec.subcommands.is_empty() && args.len() >= 2 {
            match spec.subcommand(&args[1]) {
                Some(sub) => effective = sub,
                None => {
                    let e = errors::unknown_subcommand(&args[1], spec.name);
                    return (Some(Frame::Error(e.into())), Some(spec), Rejected);
                }
            }
        }
        if !effective.arity_ok(args.len()) {
            return (
                Some(Frame::Error(errors::wrong_arity(effective.fullname).into())),
                Some(effective),
                Rejected,
            );
        }
        if !self.authed && !effective.has_flag("no_auth") {
            return (
                Some(Frame::error(errors::NOAUTH)),
                Some(effective),
                Rejected,
            );
        }
        if let Some(refusal) = self.acl_refusal(effective, args) {
            return (Some(refusal), Some(effective), Rejected);
        }
        // A RESP2 connection with subscriptions takes only the Pub/Sub commands, PING, QUIT and
        // RESET (RESP3 has no such limit), as in Redis.
        if self.proto == Protocol::Resp2
            && self.subscribed()
            && !matches!(
                spec.name,
                "ping"
                    | "subscribe"
                    | "psubscribe"
                    | "unsubscribe"
                    | "punsubscribe"
                    | "quit"
                    | "reset"
            )
        {
            let e = format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                effective.fullname
            );
            return (Some(Frame::Error(e.into())), Some(effective), Rejected);
        }
        if self.busy {
            self.busy = false;
            if !effective.has_flag("allow_busy") && !is_shutdown_nosave(args) {
                let busy = self.shared.scripts.running.busy_error();
                return (Some(Frame::error(busy)), Some(effective), Rejected);
            }
        }
        if effective.has_flag("write")
            && self
                .shared
                .cluster
                .as_ref()
                .is_some_and(|c| c.is_draining())
        {
            return (
                Some(Frame::error(errors::DRAINING)),
                Some(effective),
                Rejected,
            );
        }
        if self.no_replicas && effective.has_flag("write") {
            return (
                Some(Frame::error(errors::NOREPLICAS)),
                Some(effective),
                Rejected,
            );
        }
        // Checked for EXEC as a whole, not for the commands it runs (as Redis: a transaction that
        // turns the node into a replica still runs its later writes); a script's writes are.
        if self.shared.upstream.is_replica() && !self.from_master && (!self.in_exec || self.script)
        {
            if let Some(refusal) = self.replica_refusal(effective) {
                return (Some(Frame::error(refusal)), Some(effective), Rejected);
            }
        }
        if self.multi.is_some() && effective.has_flag("no_multi") {
            return (
                Some(Frame::error(errors::NOT_IN_MULTI)),
                Some(effective),
                Rejected,
            );
        }
        let queue = self.multi.is_some() && !controls_transaction(spec.name);
        // As Redis: inside MULTI every command but the transaction's own is refused when memory is
        // full (queuing takes memory); inside EXEC memory was checked once for all.
        // As Redis, every command (outside EXEC) first evicts what is over the limit; only those
        // that need memory are refused when nothing can be.
        if self.maxmemory > 0 && !self.in_exec {
            let ctx = self.ctx();
            let (max, policy, samples) = (self.maxmemory, self.policy, self.samples);
            let room =
                crate::memory::make_room(&self.shared, max, policy, samples, &ctx, &mut self.rng);
            if !room && (queue || effective.has_flag("denyoom")) {
                return (Some(Frame::error(errors::OOM)), Some(effective), Rejected);
            }
        }
        if queue {
            return match self.queue_command(args) {
                Ok(()) => (Some(Frame::simple("QUEUED")), Some(effective), Queued),
                Err(e) => (Some(Frame::error(e)), Some(effective), Rejected),
            };
        }
        let noting = crate::notify::flags(&self.shared) != 0;
        if noting || self.shared.tracking_on.load(Ordering::Relaxed) {
            // Keys evicted or expired before this command raise their events and invalidations
            // now, before its reply, as in Redis.
            crate::notify::publish_lost(&self.shared);
        }
        if (noting || self.tracking.is_some()) && !self.in_exec && !self.script {
            // What came for this connection (a previous command's events raised after its
            // reply, invalidations so far) goes out before this command's reply.
            self.deliver_own_messages();
        }
        if let Some(t) = &self.tracking {
            // A read remembers its keys before it runs: a write that lands after this can only
            // invalidate after the value was read.
            if t.remembers()
                && effective.has_flag("readonly")
                && !matches!(spec.name, "eval_ro" | "evalsha_ro" | "fcall_ro")
            {
                // In a script, as in Redis, a read remembers the keys the script declared (the
                // caller's command's keys), not the ones the read names.
                let keys: Vec<&[u8]> = if self.script {
                    self.script_keys.iter().map(|k| &k[..]).collect()
                } else {
                    effective
                        .key_positions(args)
                        .into_iter()
                        .map(|i| &args[i][..])
                        .collect()
                };
                if !keys.is_empty() {
                    let max = self.shared.config.read().tracking_table_max_keys as usize;
                    self.shared
                        .tracking
                        .remember(&self.shared, self.tracking_id, &keys, max);
                }
            }
        }
        // The keys in their stored form: the database is part of a key's identity.
        let stored;
        let args = match crate::dbs::stored_args(self.physical_db(), effective, args) {
            Some(v) => {
                stored = v;
                &stored[..]
            }
            None => args,
        };
        let reply = (handler as Handler)(self, args);
        if self.multi.is_none() && !self.in_exec && spec.name != "client" {
            // CLIENT CACHING applies to the next command (or the transaction it starts).
            if let Some(t) = self.tracking.as_mut() {
                t.caching = false;
            }
        }
        if noting || self.shared.tracking_on.load(Ordering::Relaxed) {
            crate::notify::publish_lost(&self.shared);
        }
        if noting {
            // Keys this command expired or evicted raise their events now, and a subscriber
            // gets the events of its own command before its reply, as from Redis, except for
            // the commands Redis answers first (they reach it after the reply).
            crate::notify::publish_lost(&self.shared);
            if !std::mem::take(&mut self.events_after_reply) {
                self.deliver_own_messages();
            }
        }
        (reply, Some(effective), Ran)
    }

    /// Writes the messages already delivered to this connection's subscriptions ahead of the
    /// reply being built (a client that publishes, or raises keyspace events, while subscribed
    /// gets them before the command's reply, as Redis writes them to its output at once).
    pub fn deliver_own_messages(&mut self) {
        let proto = self.proto;
        let subscribed = self.subscribed();
        let Some(x) = self.subs.as_mut() else {
            return;
        };
        let mut bytes = 0;
        let mut own = bytes::BytesMut::new();
        while let Ok(m) = x.rx.try_recv() {
            bytes += m.size();
            crate::conn::encode_message(proto, subscribed, m, &mut own);
        }
        x.mailbox.written(bytes);
        self.out.extend_from_slice(&own);
    }
}

/// `SHUTDOWN NOSAVE`, which Redis lets through while a script is busy.
/// Whether a command queued in `m` (its subcommand's spec where it has one) passes `check`.
fn queued_any(m: &Multi, check: impl Fn(&CommandSpec) -> bool) -> bool {
    m.queue.iter().any(|a| {
        cmd::lookup(&a[0]).is_some_and(|(spec, _)| {
            let sub = (!spec.subcommands.is_empty() && a.len() > 1)
                .then(|| spec.subcommand(&a[1]))
                .flatten();
            check(sub.unwrap_or(spec))
        })
    })
}

/// A `FUNCTION` job that changes the libraries, while replicas are attached: its command, to
/// propagate if it succeeds (Redis propagates LOAD, DELETE, FLUSH and RESTORE as sent).
fn function_write(job: &crate::script::Job, active: bool) -> Option<Vec<Bytes>> {
    match job {
        crate::script::Job::Function(a) => {
            let sub = a.get(1)?.to_ascii_lowercase();
            let writes = matches!(&sub[..], b"load" | b"delete" | b"flush" | b"restore");
            (writes && active).then(|| a.clone())
        }
        _ => None,
    }
}

fn is_shutdown_nosave(args: &[Bytes]) -> bool {
    args[0].eq_ignore_ascii_case(b"shutdown")
        && args
            .iter()
            .skip(1)
            .any(|a| a.eq_ignore_ascii_case(b"nosave"))
}

/// The commands that run at once inside `MULTI` rather than being queued.
fn controls_transaction(name: &str) -> bool {
    matches!(
        name,
        "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
    )
}

/// Whether argument `j` of a MIGRATE is a credential (the password after `AUTH`, the user and
/// password after `AUTH2`), redacted from MONITOR and the slow log as Redis redacts it.
fn migrate_secret(args: &[Bytes], j: usize) -> bool {
    let mut i = 6;
    while i < args.len() && i <= j {
        let opt = &args[i];
        if opt.eq_ignore_ascii_case(b"keys") {
            return false;
        }
        let n = if opt.eq_ignore_ascii_case(b"auth") {
            1
        } else if opt.eq_ignore_ascii_case(b"auth2") {
            2
        } else {
            0
        };
        if j > i && j <= i + n {
            return true;
        }
        i += n + 1;
    }
    false
}

fn is_sensitive_config(args: &[Bytes], j: usize) -> bool {
    // CONFIG SET requirepass <secret>: redact the value after the name.
    j >= 3
        && (args[j - 1].eq_ignore_ascii_case(b"requirepass")
            || args[j - 1].eq_ignore_ascii_case(b"masterauth"))
}
