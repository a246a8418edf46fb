//! The node's one metrics registry ([`Registry`]): the server's counters (INFO `stats`), the
//! cluster's `dist.*` counters and latency histograms (INFO `cluster`, `HC.METRICS`), the peak of
//! `used_memory`, and [`collect`]: every metric of the node at one instant, named and typed by
//! the [`CATALOGUE`], which `HC.METRICS`, the Prometheus endpoint and the OpenTelemetry exporter
//! all read (docs/metrics.md lists the same catalogue; a test keeps them equal). Machines only
//! return counts ([`hypercache_cluster::node::Counts`]); the driver adds them here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hypercache_cluster::msg::Level;

/// A latency histogram: log-scale buckets of microseconds, four per power of two (so a percentile
/// is exact to within 19%), lock-free, with the sum of what it recorded (so that an exporter
/// gives a real histogram: buckets, count and sum).
pub struct Histogram {
    buckets: [AtomicU64; 160],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The exported bucket bounds: powers of two of microseconds, 16 µs to 2^23 µs (8.4 s). Each
/// is a boundary of the recording buckets, so exported counts are exact.
pub const EXPORT_BOUNDS_LOG2: std::ops::RangeInclusive<u32> = 4..=23;

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < 4 {
            return us as usize;
        }
        let msb = 63 - us.leading_zeros() as usize;
        let sub = ((us >> (msb - 2)) & 3) as usize;
        (msb * 4 + sub - 4).min(159)
    }

    /// Upper bound of a bucket, microseconds.
    fn upper(b: usize) -> u64 {
        if b < 4 {
            return b as u64;
        }
        let (msb, sub) = ((b + 4) / 4, (b + 4) % 4);
        ((4 + sub as u64 + 1) << (msb - 2)) - 1
    }

    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Forgets every sample.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.sum_us.store(0, Ordering::Relaxed);
    }

    fn counts(&self) -> [u64; 160] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in microseconds (0 if empty).
    pub fn quantile(&self, q: f64) -> u64 {
        quantile_of(&self.counts(), q)
    }

    /// What an exporter needs: the count, the sum (µs), and the cumulative count below each
    /// power of two of [`EXPORT_BOUNDS_LOG2`] (`(2^k µs, samples under 2^k µs)`).
    pub fn export(&self) -> HistogramData {
        let counts = self.counts();
        let mut cumulative = Vec::with_capacity(EXPORT_BOUNDS_LOG2.count());
        let mut seen = 0;
        let mut b = 0;
        for k in EXPORT_BOUNDS_LOG2 {
            let bound = 1u64 << k;
            while b < counts.len() && Self::upper(b) < bound {
                seen += counts[b];
                b += 1;
            }
            cumulative.push((bound, seen));
        }
        HistogramData {
            count: counts.iter().sum(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            cumulative,
            raw: counts,
        }
    }
}

fn quantile_of(counts: &[u64; 160], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Histogram::upper(i);
        }
    }
    Histogram::upper(counts.len() - 1)
}

/// A histogram's figures at one instant ([`Histogram::export`]).
#[derive(Debug, Clone)]
pub struct HistogramData {
    /// Samples.
    pub count: u64,
    /// Their sum, microseconds.
    pub sum_us: u64,
    /// `(bound µs, samples below it)`, ascending.
    pub cumulative: Vec<(u64, u64)>,
    raw: [u64; 160],
}

impl HistogramData {
    /// The `q` quantile in microseconds (0 if empty).
    pub fn quantile(&self, q: f64) -> u64 {
        quantile_of(&self.raw, q)
    }

    /// Adds `other`'s samples (for aggregates over labels).
    pub fn merge(&mut self, other: &HistogramData) {
        self.count += other.count;
        self.sum_us += other.sum_us;
        for (a, b) in self.cumulative.iter_mut().zip(&other.cumulative) {
            a.1 += b.1;
        }
        for (a, b) in self.raw.iter_mut().zip(other.raw.iter()) {
            *a += b;
        }
    }

    /// Samples per power of two of microseconds, cumulative, up to the largest sample: Redis's
    /// `LATENCY HISTOGRAM` buckets (`(2^k µs, samples under it)`, from 1 µs; Redis's own bounds
    /// are 1.024 × 2^k µs, HDR histogram buckets).
    pub fn powers_of_two(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut seen = 0;
        let mut b = 0;
        let total = self.count;
        let mut k = 0;
        while seen < total && k < 64 {
            let bound = 1u64 << k;
            while b < self.raw.len() && Histogram::upper(b) < bound {
                seen += self.raw[b];
                b += 1;
            }
            out.push((bound, seen));
            k += 1;
        }
        out
    }
}

/// The kinds of client operation whose latency is kept per consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// Reads (GET and every read-only command).
    Get,
    /// Writes other than deletes.
    Set,
    /// Deletes (DEL, UNLINK, GETDEL).
    Del,
}

impl OpClass {
    /// All, in export order.
    pub const ALL: [OpClass; 3] = [OpClass::Get, OpClass::Set, OpClass::Del];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Get => "get",
            OpClass::Set => "set",
            OpClass::Del => "del",
        }
    }

    /// The name of its root span.
    pub fn span_name(self) -> &'static str {
        match self {
            OpClass::Get => "dist.get",
            OpClass::Set => "dist.set",
            OpClass::Del => "dist.remove",
        }
    }

    /// The class of `op`.
    pub fn of(op: &hypercache_cluster::Op<'_>) -> OpClass {
        use hypercache_cluster::Op;
        match op {
            Op::Del | Op::GetDel => OpClass::Del,
            o if o.is_read_only() => OpClass::Get,
            _ => OpClass::Set,
        }
    }
}

/// The consistency levels, in export order.
pub const LEVELS: [Level; 3] = [Level::One, Level::Quorum, Level::All];

/// Everything the cluster layer counts.
#[derive(Default)]
pub struct DistMetrics {
    /// Writes this node coordinated.
    pub write_attempts: AtomicU64,
    /// Replica acknowledgements received for those writes (the coordinator's own copy included).
    pub write_acks: AtomicU64,
    /// Writes answered `-NOREPLICAS`.
    pub write_quorum_failures: AtomicU64,
    /// Reads answered `-NOREPLICAS`.
    pub read_quorum_failures: AtomicU64,
    /// Reads this node coordinated at QUORUM or ALL.
    pub read_fanouts: AtomicU64,
    /// Reads that asked more replicas than they first did (one failed, or was slow).
    pub read_hedges: AtomicU64,
    /// Reads served from the local copy at ONE.
    pub local_reads: AtomicU64,
    /// Operations forwarded to another node's coordinator.
    pub forwards: AtomicU64,
    /// Forwards retried on the next replica after the first failed.
    pub forward_retries: AtomicU64,
    /// Operations coordinated here for another node.
    pub forwarded_in: AtomicU64,
    /// Replication messages (values sent to replicas).
    pub replica_fanout: AtomicU64,
    /// Stale replicas repaired by reads (and by read-before-write).
    pub read_repairs: AtomicU64,
    /// Requests to peers that failed: link down, disconnected, timed out or malformed.
    pub transport_errors: AtomicU64,
    /// Repaired values (hints, anti-entropy, read repair) not stored: no room under maxmemory.
    pub repair_skipped_full: AtomicU64,
    /// Requests to peers that timed out.
    pub transport_timeouts: AtomicU64,
    /// Links (re)established.
    pub links_established: AtomicU64,
    /// Handshakes refused (other cluster, protocol or id).
    pub handshake_failures: AtomicU64,
    /// Of those, peers that did not prove `cluster-secret`.
    pub auth_failures: AtomicU64,
    /// Cluster-wide commands (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL) run from here.
    pub broadcasts: AtomicU64,
    /// FLUSHALLs and FLUSHDBs this node missed and ran when a peer's heartbeat showed them.
    pub missed_flushes: AtomicU64,
    /// Blind writes stamped again above a version a replica refused them with.
    pub restamps: AtomicU64,
    /// Prepare rounds of read-modify-writes retried after a refusal.
    pub prepare_retries: AtomicU64,
    /// Rounds on several keys of one slot coordinated here (transactions and scripts).
    pub groups: AtomicU64,
    /// Of those, scripts run here over their keys' states.
    pub programs: AtomicU64,
    /// Changes of cluster-wide settings (users, function libraries) made here and published.
    pub settings_published: AtomicU64,
    /// Changes of cluster-wide settings from peers applied here.
    pub settings_applied: AtomicU64,
    /// Client-facing latency of the operations this node answered (forwards included), by
    /// [`OpClass`] and consistency level (the read level for gets, the write level otherwise).
    pub latency: [[Histogram; 3]; 3],
    /// Latency of forwarded operations (round trip to the coordinator).
    pub forward_latency: Histogram,
    /// Latency of requests to peers (round trip).
    pub peer_latency: Histogram,
}

impl DistMetrics {
    /// Adds a finished machine's counters.
    pub fn add(&self, c: &hypercache_cluster::node::Counts) {
        let a = |x: &AtomicU64, n: u64| {
            if n > 0 {
                x.fetch_add(n, Ordering::Relaxed);
            }
        };
        a(&self.local_reads, c.local_reads);
        a(&self.read_fanouts, c.read_fanouts);
        a(&self.read_hedges, c.read_hedges);
        a(&self.forwards, c.forwards);
        a(&self.forward_retries, c.forward_retries);
        a(&self.write_attempts, c.write_attempts);
        a(&self.write_acks, c.write_acks);
        a(&self.replica_fanout, c.replica_fanout);
        a(&self.read_repairs, c.read_repairs);
        a(&self.restamps, c.restamps);
        a(&self.prepare_retries, c.prepare_retries);
        a(&self.groups, c.groups);
        a(&self.programs, c.programs);
        a(&self.transport_errors, c.transport_errors);
        a(&self.transport_timeouts, c.timeouts);
    }

    /// The latency histogram of `class` at `level`.
    pub fn latency(&self, class: OpClass, level: Level) -> &Histogram {
        let l = LEVELS.iter().position(|x| *x == level).unwrap_or(0);
        &self.latency[class as usize][l]
    }
}

/// Counters reported by INFO `stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections refused at `maxclients`.
    pub rejected_connections: AtomicU64,
    /// Connections closed for `maxmemory-clients`.
    pub evicted_clients: AtomicU64,
    /// Commands executed.
    pub commands_processed: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Reads that found their key (single node and cluster alike).
    pub keyspace_hits: AtomicU64,
    /// Reads that did not.
    pub keyspace_misses: AtomicU64,
    /// Protocol errors (connections closed for malformed input).
    pub protocol_errors: AtomicU64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Every metric of the node, in one place.
#[derive(Default)]
pub struct Registry {
    /// Server counters (INFO `stats`).
    pub server: Stats,
    /// Cluster counters and latencies (`dist.*`).
    pub dist: DistMetrics,
    /// Highest `used_memory` seen, sampled once per background tick and by INFO/MEMORY (not on
    /// the write path: a shared atomic update per write would cost more than the figure is
    /// worth).
    pub peak_memory: AtomicU64,
    /// Per-command counts and latencies (INFO `commandstats` and `latencystats`).
    pub commands: CommandStats,
}

/// One command's counts (`cmdstat_<name>`) and execution-time histogram.
#[derive(Default)]
pub struct CommandStat {
    /// Calls executed (refusals before execution not included, as in Redis).
    pub calls: AtomicU64,
    /// Calls that ran and answered an error.
    pub failed: AtomicU64,
    /// Calls refused before running (arity, authentication, OOM, ...).
    pub rejected: AtomicU64,
    /// Execution time.
    pub latency: Histogram,
}

/// [`CommandStat`]s of every command and subcommand of the command table, found by the
/// address of its spec (no hashing of names per command).
pub struct CommandStats {
    /// Error replies by error code (INFO `errorstats`).
    errors: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Error replies in all (INFO `total_error_replies`).
    pub total_errors: AtomicU64,
    by_spec: ahash::AHashMap<usize, usize>,
    names: Vec<&'static str>,
    stats: Vec<CommandStat>,
}

impl Default for CommandStats {
    fn default() -> Self {
        let mut by_spec = ahash::AHashMap::new();
        let mut names = Vec::new();
        fn walk(
            specs: &'static [hypercache_resp::table::CommandSpec],
            by_spec: &mut ahash::AHashMap<usize, usize>,
            names: &mut Vec<&'static str>,
        ) {
            for c in specs {
                by_spec.insert(c as *const _ as usize, names.len());
                names.push(c.fullname);
                walk(c.subcommands, by_spec, names);
            }
        }
        walk(hypercache_resp::table::COMMANDS, &mut by_spec, &mut names);
        let stats = names.iter().map(|_| CommandStat::default()).collect();
        CommandStats {
            errors: Default::default(),
            total_errors: AtomicU64::new(0),
            by_spec,
            names,
            stats,
        }
    }
}

impl CommandStats {
    /// The stats of `spec`.
    pub fn of(&self, spec: &'static hypercache_resp::table::CommandSpec) -> Option<&CommandStat> {
        self.by_spec
            .get(&(spec as *const _ as usize))
            .map(|&i| &self.stats[i])
    }

    /// Every command's full name (`get`, `client|id`) and stats, in table order.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &CommandStat)> {
        self.names.iter().copied().zip(self.stats.iter())
    }

    /// Counts an error reply sent to a client, by its code (the text up to the first space, as
    /// Redis reads it; `ERR` when there is none).
    pub fn count_error(&self, text: &[u8]) {
        let head = &text[..text.len().min(32)];
        let code = match head.iter().position(|&c| c == b' ') {
            Some(n) if n > 0 => String::from_utf8_lossy(&head[..n]).into_owned(),
            _ => "ERR".to_string(),
        };
        self.total_errors.fetch_add(1, Ordering::Relaxed);
        *self.errors.lock().entry(code).or_default() += 1;
    }

    /// Error replies by code, in code order (`errorstat_<code>:count=<n>`).
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.errors
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Forgets every count (`CONFIG RESETSTAT`).
    pub fn reset(&self) {
        self.errors.lock().clear();
        self.total_errors.store(0, Ordering::Relaxed);
        for s in &self.stats {
            s.calls.store(0, Ordering::Relaxed);
            s.failed.store(0, Ordering::Relaxed);
            s.rejected.store(0, Ordering::Relaxed);
            s.latency.reset();
        }
    }
}

impl Registry {
    /// Records a `used_memory` sample; returns it.
    pub fn sample_memory(&self, used: u64) -> u64 {
        self.peak_memory.fetch_max(used, Ordering::Relaxed);
        used
    }
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Whether a metric only goes up (a counter) or is a level (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (from the node's start).
    Counter,
    /// A level at the time of reading.
    Gauge,
    /// A latency histogram (seconds in exports, microseconds in `HC.METRICS`).
    Histogram,
}

/// One metric's description: its stable dotted name (`HC.METRICS`; Prometheus turns it into
/// `hypercache_<name with _>`, `_total` added to counters), type, unit, label and meaning.
#[derive(Debug)]
pub struct Desc {
    /// Dotted name.
    pub name: &'static str,
    /// Type.
    pub kind: MetricType,
    /// Unit (`""` for a plain count).
    pub unit: &'static str,
    /// The label its samples carry, if any.
    pub label: Option<&'static str>,
    /// Whether it exists only in a cluster.
    pub cluster: bool,
    /// Meaning.
    pub help: &'static str,
}

const fn m(name: &'static str, kind: MetricType, unit: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        kind,
        unit,
        label: None,
        cluster: true,
        help,
    }
}

const fn node(d: Desc) -> Desc {
    Desc {
        cluster: false,
        ..d
    }
}

const fn labelled(label: &'static str, d: Desc) -> Desc {
    Desc {
        label: Some(label),
        ..d
    }
}

use MetricType::{Counter as C, Gauge as G, Histogram as H};

/// Every metric the node exports, in export order. docs/metrics.md lists the same (a test keeps
/// it so); renaming one breaks dashboards, so names are stable.
pub static CATALOGUE: &[Desc] = &[
    node(m("server.connections_received", C, "", "Client connections accepted.")),
    node(m("server.rejected_connections", C, "", "Client connections refused at `maxclients`.")),
    node(m("server.evicted_clients", C, "", "Client connections closed because all clients together held more than `maxmemory-clients` (the largest first).")),
    node(m("server.connected_clients", G, "", "Client connections open.")),
    node(m("server.commands_processed", C, "", "Commands executed.")),
    node(m("server.net_input_bytes", C, "bytes", "Bytes read from clients.")),
    node(m("server.net_output_bytes", C, "bytes", "Bytes written to clients.")),
    node(m("server.keyspace_hits", C, "", "Reads that found their key.")),
    node(m("server.keyspace_misses", C, "", "Reads that did not find their key.")),
    node(m("server.protocol_errors", C, "", "Client connections closed for malformed input.")),
    node(m("store.keys", G, "", "Keys held by this node (expired ones not yet reclaimed included).")),
    node(m("store.volatile", G, "", "Keys with an expiry.")),
    node(m("store.expired", C, "", "Keys removed because they expired.")),
    node(m("store.evicted", C, "", "Keys evicted under `maxmemory`.")),
    node(m("store.bytes", G, "bytes", "Memory the keys take (entries and their table).")),
    node(m("store.tombstones", G, "", "Tombstones (versioned deletes) held.")),
    node(m("store.tombstones_purged", C, "", "Tombstones purged past `tombstone-ttl` (or below a FLUSHALL).")),
    node(m("store.promises", G, "", "Promises of read-modify-write rounds held.")),
    node(m("memory.used", G, "bytes", "`used_memory`: bytes allocated by the process.")),
    node(m("memory.peak", G, "bytes", "`used_memory_peak`.")),
    node(m("pubsub.channels", G, "", "Channels with a subscriber on this node.")),
    node(m("pubsub.patterns", G, "", "Patterns with a subscriber on this node.")),
    node(m("pubsub.disconnected", C, "", "Subscribers closed for `client-output-buffer-limit pubsub`.")),
    node(m("notify.events", C, "", "Keyspace notifications published by this node (one per event and channel kind).")),
    node(m("repl.replicas", G, "", "Redis replicas attached to this node (`SYNC`/`PSYNC`).")),
    node(m("repl.offset", C, "bytes", "Bytes written to the replication stream (`master_repl_offset`).")),
    node(m("repl.sync_full", C, "", "Replicas attached with a snapshot.")),
    node(m("repl.sync_partial_ok", C, "", "Replicas that continued from the backlog.")),
    node(m("replica.link_up", G, "", "1 while the link to the Redis primary this node replicates is up (`REPLICAOF`).")),
    node(m("replica.stream_errors", C, "", "Commands of the primary's stream this node refused (since the last `REPLICAOF`).")),
    node(m("persist.saves", C, "", "Snapshots written to disk (`SAVE`, `BGSAVE`, save points).")),
    node(m("persist.changes_since_save", G, "", "Changes since the last snapshot written (`rdb_changes_since_last_save`).")),
    node(m("persist.last_save_ok", G, "", "1 if the last snapshot attempt succeeded (`rdb_last_bgsave_status`).")),
    node(m("tracking.clients", G, "", "Connections with `CLIENT TRACKING` on.")),
    node(m("tracking.keys", G, "", "Keys the client-side caching table remembers.")),
    node(m("tracking.items", G, "", "Client entries of that table (clients summed over keys).")),
    node(m("tracking.prefixes", G, "", "BCAST prefixes registered.")),
    node(m("tracking.invalidations", C, "", "Invalidation messages queued for clients (a BCAST message with many keys counts once).")),
    node(m("telemetry.export_failures", C, "", "OTLP exports (traces or metrics) that failed: no answer, or not 2xx. Their data is dropped.")),
    labelled("command", node(m("latency.command", H, "seconds", "Time to execute a command on this node (a cluster command's wait for its peers excluded), by command: INFO `commandstats`, `latencystats`, `LATENCY HISTOGRAM`."))),
    m("dist.write.attempts", C, "", "Writes this node coordinated."),
    m("dist.write.acks", C, "", "Replica acknowledgements of those writes (the coordinator's own copy included)."),
    m("dist.write.quorum_failures", C, "", "Writes answered `-NOREPLICAS`."),
    m("dist.write.restamps", C, "", "Blind writes stamped again above a version a replica refused them with."),
    m("dist.write.prepare_retries", C, "", "Read-modify-write prepare rounds retried after a refusal."),
    m("dist.group.rounds", C, "", "Rounds on several keys of one slot coordinated here: transactions whose keys share a slot, and scripts with declared keys (each also counts in `dist.write.attempts`)."),
    m("dist.group.scripts", C, "", "Of those rounds, scripts run here over their keys' states."),
    m("dist.settings.published", C, "", "Changes of the cluster-wide settings (ACL users, function libraries) made through this node and pushed to every member."),
    m("dist.settings.applied", C, "", "Changes of the cluster-wide settings made through other nodes and applied here (pushed or pulled)."),
    m("dist.read.quorum_failures", C, "", "Reads answered `-NOREPLICAS`."),
    m("dist.read.fanouts", C, "", "Reads coordinated here at QUORUM or ALL."),
    m(
        "dist.read.hedges",
        C,
        "",
        "Reads that asked more replicas than their level needed at first: one they asked failed, or had not answered after request-timeout-ms / 20.",
    ),
    m("dist.read.local", C, "", "Reads answered from the local copy at ONE."),
    m("dist.read.repairs", C, "", "Stale replicas repaired by reads (and read-before-write)."),
    m("dist.version.conflicts", C, "", "Replicated states refused because this node held a newer version (concurrent writes resolved by last-write-wins)."),
    m("dist.forward.sent", C, "", "Operations forwarded to another node's coordinator."),
    m("dist.forward.retries", C, "", "Forwards retried on the next replica."),
    m("dist.forward.received", C, "", "Operations coordinated here for another node."),
    m("dist.replica.fanout", C, "", "Values sent to replicas."),
    m("dist.transport.errors", C, "", "Requests to peers that failed (link down, disconnected, timed out, malformed)."),
    m("dist.transport.timeouts", C, "", "Calls to peers with no answer by their command's deadline (each also counts in `dist.transport.errors`)."),
    labelled("peer", m("dist.transport.bytes_in", C, "bytes", "Bytes read from each peer's links (both directions' links).")),
    labelled("peer", m("dist.transport.bytes_out", C, "bytes", "Bytes written to each peer's links.")),
    m("dist.link.established", C, "", "Links to peers (re)established."),
    m("dist.link.handshake_failures", C, "", "Peer handshakes refused (other cluster, protocol or id, or no proof of `cluster-secret`)."),
    m("dist.link.auth_failures", C, "", "Peer links refused because the peer did not prove `cluster-secret` (none, or another one)."),
    m("dist.broadcasts", C, "", "Cluster-wide commands (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL) run from here."),
    m("dist.flush.missed", C, "", "FLUSHALLs and FLUSHDBs this node missed (down, cut off, restarted) and ran when a peer's heartbeat showed them."),
    m("dist.repair.skipped_full", C, "", "Repaired values not stored: no room under `maxmemory`."),
    labelled("source", m("dist.hinted.queued", C, "", "Hints queued, by source (`replication`, `migration`).")),
    labelled("source", m("dist.hinted.replayed", C, "", "Hints replayed and acknowledged.")),
    labelled("source", m("dist.hinted.expired", C, "", "Hints dropped past `hint-ttl`.")),
    labelled("source", m("dist.hinted.dropped", C, "", "Hints not queued: their target's queue was full.")),
    labelled("source", m("dist.hinted.global_dropped", C, "", "Hints not queued: all queues together were full.")),
    labelled("source", m("dist.hinted.bytes", G, "bytes", "Bytes of the hints held.")),
    m("dist.hinted.held", G, "", "Hints held."),
    m("dist.merkle.syncs", C, "", "Anti-entropy rounds completed."),
    m("dist.merkle.failures", C, "", "Anti-entropy rounds failed."),
    m("dist.merkle.keys_pulled", C, "", "Entries pulled by anti-entropy."),
    m("dist.merkle.keys_pushed", C, "", "Entries pushed by anti-entropy."),
    m("dist.merkle.bytes", C, "bytes", "Bytes exchanged by anti-entropy rounds."),
    m("dist.merkle.last_diff_ns", G, "nanoseconds", "Duration of the last round that found differences."),
    m("dist.auto_sync.backoff_factor", G, "", "Largest backoff factor of the automatic anti-entropy over peers (1: no backoff)."),
    m("dist.auto_sync.clean_ticks", C, "", "Automatic anti-entropy rounds that found nothing to repair."),
    m("dist.auto_sync.last_ns", G, "nanoseconds", "Duration of the last automatic round."),
    m("dist.catch_up.slots", G, "", "Slots this node is still catching up on (receiving)."),
    m("dist.catch_up.not_live", C, "", "Catch-up requests asked again because the peer did not see this node live yet."),
    m("dist.rebalance.keys", C, "", "Entries received by transfer rounds and stored (newer than what was held)."),
    m("dist.rebalance.entries_received", C, "", "Entries in the pages transfer rounds received, stored or not: above `dist.rebalance.keys` when a key came from several replicas."),
    m("dist.rebalance.batches", C, "", "Requests of transfer rounds."),
    m("dist.rebalance.throttle", C, "", "Transfer requests held back by `rebalance-max-bytes-per-sec`."),
    m("dist.rebalance.last_ns", G, "nanoseconds", "Duration of the last rebalance, from the ring change to its last slot received."),
    m("dist.migration.slots_received", C, "", "Slots this node was given to receive by ring changes, counted when the transfer is planned (one that fails is retried by its round, not counted again)."),
    m("dist.migration.slots_released", C, "", "Slots dropped after `rebalance-grace`."),
    m("dist.migration.keys_released", C, "", "Entries dropped with them."),
    m("dist.migration.failures", C, "", "Transfer rounds failed (and started again)."),
    m("dist.migration.slots_late", C, "", "Slots a catch-up or transfer round compared instead of copying whole: another replica's round had filled them first."),
    m("dist.members.alive", G, "", "Members seen alive (this node included)."),
    m("dist.members.suspect", G, "", "Members suspected."),
    m("dist.members.dead", G, "", "Members down."),
    m("dist.members.live", G, "", "Members this node can coordinate with (linked and alive, itself included)."),
    m("dist.members.epoch", G, "", "This node's ring epoch."),
    m("dist.heartbeat.success", C, "", "Direct probes answered."),
    m("dist.heartbeat.failure", C, "", "Probe cycles that ended with the member suspected."),
    m("dist.heartbeat.indirect_probe.success", C, "", "Indirect probes that reached their target."),
    m("dist.heartbeat.indirect_probe.failure", C, "", "Indirect probe rounds that did not."),
    m("dist.heartbeat.indirect_probe.refuted", C, "", "Suspicions refuted."),
    m("dist.heartbeat.bad_datagrams", C, "", "Membership datagrams dropped as malformed or of another cluster."),
    m("dist.nodes.removed", C, "", "Members removed from the ring (left, forgotten, or down for `remove-after`)."),
    labelled("op", m("dist.latency", H, "seconds", "What clients of this node waited for their operations (those it forwarded included; an operation forwarded to it is booked where its client is), by `op` (`get`, `set`, `del`) and `level` (`one`, `quorum`, `all`; the read level for gets, the write level otherwise).")),
    m("dist.latency.forward", H, "seconds", "Round trip of operations forwarded to a coordinator."),
    m("dist.latency.peer", H, "seconds", "Round trip of the calls commands make to peers (not repair's)."),
];

/// Every metric of the node at one instant, in [`CATALOGUE`] order: what `HC.METRICS`, the
/// Prometheus endpoint and the OpenTelemetry exporter report.
pub fn collect(shared: &crate::state::Shared) -> Collected {
    let mut c = Collected::default();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let r = &shared.metrics;
    let s = &r.server;
    let st = shared.store.stats();
    let used = crate::memory::sample(shared);
    // One look at the stream each (its lock), not one per field.
    let (repl_offset, replicas) = shared.repl.role();
    let repl_replicas = replicas.len() as u64;
    let (sync_full, sync_partial_ok, _) = shared.repl.sync_stats();
    for (name, v) in [
        ("server.connections_received", g(&s.connections_received)),
        ("server.rejected_connections", g(&s.rejected_connections)),
        ("server.evicted_clients", g(&s.evicted_clients)),
        (
            "server.connected_clients",
            shared.clients.lock().len() as u64,
        ),
        ("server.commands_processed", g(&s.commands_processed)),
        ("server.net_input_bytes", g(&s.net_input_bytes)),
        ("server.net_output_bytes", g(&s.net_output_bytes)),
        ("server.keyspace_hits", g(&s.keyspace_hits)),
        ("server.keyspace_misses", g(&s.keyspace_misses)),
        ("server.protocol_errors", g(&s.protocol_errors)),
        ("store.keys", st.keys),
        ("store.volatile", st.volatile),
        ("store.expired", st.expired),
        ("store.evicted", st.evicted),
        ("store.bytes", st.bytes),
        ("store.tombstones", shared.store.tombstones()),
        ("store.tombstones_purged", st.tombstones_purged),
        ("store.promises", shared.store.promises()),
        ("memory.used", used),
        ("memory.peak", g(&r.peak_memory).max(used)),
        ("pubsub.channels", shared.pubsub.counts().0 as u64),
        ("pubsub.patterns", shared.pubsub.counts().1 as u64),
        ("pubsub.disconnected", g(&shared.pubsub.disconnected)),
        ("notify.events", g(&crate::notify::EVENTS)),
        ("repl.replicas", repl_replicas),
        ("repl.offset", repl_offset),
        ("repl.sync_full", sync_full),
        ("repl.sync_partial_ok", sync_partial_ok),
        ("replica.link_up", u64::from(shared.upstream.link_up())),
        ("replica.stream_errors", shared.upstream.stream_errors()),
        ("persist.saves", shared.persist.saves()),
        (
            "persist.changes_since_save",
            shared.persist.changes_since_save(shared),
        ),
        ("persist.last_save_ok", u64::from(shared.persist.last_ok())),
        ("tracking.clients", shared.tracking.info().clients as u64),
        ("tracking.keys", shared.tracking.info().keys as u64),
        ("tracking.items", shared.tracking.info().items as u64),
        ("tracking.prefixes", shared.tracking.info().prefixes as u64),
        ("tracking.invalidations", shared.tracking.invalidations()),
        (
            "telemetry.export_failures",
            g(&crate::telemetry::EXPORT_FAILURES),
        ),
    ] {
        c.push(name, v);
    }
    for (name, stat) in r.commands.all() {
        if g(&stat.calls) > 0 {
            c.histograms.push(HistSample {
                name: "latency.command",
                labels: vec![("command", name)],
                data: stat.latency.export(),
            });
        }
    }
    let Some(cl) = shared.cluster.as_ref() else {
        return c;
    };
    let d = &r.dist;
    for (name, v) in [
        ("dist.write.attempts", g(&d.write_attempts)),
        ("dist.write.acks", g(&d.write_acks)),
        ("dist.write.quorum_failures", g(&d.write_quorum_failures)),
        ("dist.write.restamps", g(&d.restamps)),
        ("dist.write.prepare_retries", g(&d.prepare_retries)),
        ("dist.group.rounds", g(&d.groups)),
        ("dist.group.scripts", g(&d.programs)),
        ("dist.settings.published", g(&d.settings_published)),
        ("dist.settings.applied", g(&d.settings_applied)),
        ("dist.read.quorum_failures", g(&d.read_quorum_failures)),
        ("dist.read.fanouts", g(&d.read_fanouts)),
        ("dist.read.hedges", g(&d.read_hedges)),
        ("dist.read.local", g(&d.local_reads)),
        ("dist.read.repairs", g(&d.read_repairs)),
        ("dist.version.conflicts", st.conflicts),
        ("dist.forward.sent", g(&d.forwards)),
        ("dist.forward.retries", g(&d.forward_retries)),
        ("dist.forward.received", g(&d.forwarded_in)),
        ("dist.replica.fanout", g(&d.replica_fanout)),
        ("dist.transport.errors", g(&d.transport_errors)),
        ("dist.transport.timeouts", g(&d.transport_timeouts)),
    ] {
        c.push(name, v);
    }
    cl.collect_traffic(&mut c);
    for (name, v) in [
        ("dist.link.established", g(&d.links_established)),
        ("dist.link.handshake_failures", g(&d.handshake_failures)),
        ("dist.link.auth_failures", g(&d.auth_failures)),
        ("dist.broadcasts", g(&d.broadcasts)),
        ("dist.flush.missed", g(&d.missed_flushes)),
        ("dist.repair.skipped_full", g(&d.repair_skipped_full)),
    ] {
        c.push(name, v);
    }
    cl.collect_repair(&mut c);
    cl.collect_members(&mut c);
    for class in OpClass::ALL {
        for level in LEVELS {
            c.histograms.push(HistSample {
                name: "dist.latency",
                labels: vec![("op", class.name()), ("level", level.name())],
                data: d.latency(class, level).export(),
            });
        }
    }
    for (name, h) in [
        ("dist.latency.forward", &d.forward_latency),
        ("dist.latency.peer", &d.peer_latency),
    ] {
        c.histograms.push(HistSample {
            name,
            labels: Vec::new(),
            data: h.export(),
        });
    }
    c
}

/// The description of metric `name`.
pub fn describe(name: &str) -> Option<&'static Desc> {
    CATALOGUE.iter().find(|d| d.name == name)
}

/// One value of a counter or gauge.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its [`CATALOGUE`] name.
    pub name: &'static str,
    /// Its label's value, for a labelled metric.
    pub label: Option<String>,
    /// The value.
    pub value: u64,
}

/// One histogram's figures.
#[derive(Debug, Clone)]
pub struct HistSample {
    /// Its [`CATALOGUE`] name.
    pub name: &'static str,
    /// Labels (`op`, `level`).
    pub labels: Vec<(&'static str, &'static str)>,
    /// The figures.
    pub data: HistogramData,
}

/// Every metric of a node at one instant ([`collect`]).
#[derive(Debug, Default)]
pub struct Collected {
    /// Counters and gauges, in [`CATALOGUE`] order.
    pub samples: Vec<Sample>,
    /// Histograms.
    pub histograms: Vec<HistSample>,
}

impl Collected {
    /// Adds a sample of `name` (which must be in the catalogue).
    pub fn push(&mut self, name: &'static str, value: u64) {
        debug_assert!(describe(name).is_some(), "{name} is not in the catalogue");
        self.samples.push(Sample {
            name,
            label: None,
            value,
        });
    }

    /// Adds a labelled sample of `name`.
    pub fn push_labelled(&mut self, name: &'static str, label: String, value: u64) {
        debug_assert!(describe(name).is_some_and(|d| d.label.is_some()));
        self.samples.push(Sample {
            name,
            label: Some(label),
            value,
        });
    }

    /// The value of unlabelled `name` (tests, INFO).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.label.is_none())
            .map(|s| s.value)
    }

    /// Flat `(name, value)` pairs, as `HC.METRICS` shows them: a labelled counter or gauge as its
    /// total under its name and each value as `name.<label value>`; a histogram as
    /// `<name>[.<labels>].{count,p50_us,p95_us,p99_us}`, with `dist.latency.{get,set,del}` and
    /// `dist.latency.{read,write}` totals over the levels.
    pub fn flat(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        let mut i = 0;
        while i < self.samples.len() {
            let s = &self.samples[i];
            if s.label.is_none() {
                out.push((s.name.to_string(), s.value));
                i += 1;
                continue;
            }
            let group: Vec<&Sample> = self.samples[i..]
                .iter()
                .take_while(|x| x.name == s.name)
                .collect();
            out.push((s.name.to_string(), group.iter().map(|x| x.value).sum()));
            for x in &group {
                out.push((
                    format!("{}.{}", x.name, x.label.as_deref().unwrap_or("")),
                    x.value,
                ));
            }
            i += group.len();
        }
        let mut totals: Vec<(String, HistogramData)> = Vec::new();
        let mut add_total =
            |name: String, d: &HistogramData| match totals.iter_mut().find(|(n, _)| *n == name) {
                Some((_, t)) => t.merge(d),
                None => totals.push((name, d.clone())),
            };
        for h in &self.histograms {
            if h.name == "latency.command" {
                continue;
            }
            let mut name = h.name.to_string();
            for (_, v) in &h.labels {
                name.push('.');
                name.push_str(v);
            }
            if h.name == "dist.latency" {
                let op = h.labels.first().map_or("", |l| l.1);
                add_total(format!("dist.latency.{op}"), &h.data);
                let rw = if op == "get" { "read" } else { "write" };
                add_total(format!("dist.latency.{rw}"), &h.data);
            }
            flat_hist(&mut out, &name, &h.data);
        }
        for (name, d) in &totals {
            flat_hist(&mut out, name, d);
        }
        out
    }
}

fn flat_hist(out: &mut Vec<(String, u64)>, name: &str, d: &HistogramData) {
    out.push((format!("{name}.count"), d.count));
    for (q, label) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        out.push((format!("{name}.{label}_us"), d.quantile(q)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for us in [0u64, 1, 3, 4, 5, 7, 8, 100, 1000, 12_345, 1 << 30] {
            let b = Histogram::bucket(us);
            assert!(Histogram::upper(b) >= us, "{us} in bucket {b}");
            assert!(b == 0 || Histogram::upper(b - 1) < us, "{us} in bucket {b}");
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5);
        assert!((500..=600).contains(&p50), "{p50}");
        assert!(h.quantile(0.99) >= 990);
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn exported_buckets_are_exact_at_powers_of_two() {
        let h = Histogram::default();
        for us in [10u64, 15, 16, 17, 31, 32, 1000, 5_000_000] {
            h.record(Duration::from_micros(us));
        }
        let d = h.export();
        assert_eq!(d.count, 8);
        assert_eq!(d.sum_us, 10 + 15 + 16 + 17 + 31 + 32 + 1000 + 5_000_000);
        let below = |bound: u64| d.cumulative.iter().find(|c| c.0 == bound).unwrap().1;
        assert_eq!(below(16), 2, "10 and 15 are under 16 µs");
        assert_eq!(below(32), 5);
        assert_eq!(below(64), 6);
        assert_eq!(below(1024), 7);
        assert_eq!(below(1 << 23), 8);
        let p = d.powers_of_two();
        assert_eq!(p.iter().find(|c| c.0 == 16).unwrap().1, 2);
        assert_eq!(p.iter().find(|c| c.0 == 1).unwrap().1, 0);
        assert_eq!(p.last().unwrap().1, 8);
    }

    #[test]
    fn every_metric_is_documented_in_docs_metrics_md() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
            .expect("docs/metrics.md");
        for d in CATALOGUE {
            assert!(
                doc.contains(&format!("`{}`", d.name)),
                "{} is not in docs/metrics.md",
                d.name
            );
        }
        let names: std::collections::HashSet<_> = CATALOGUE.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), CATALOGUE.len(), "a name appears twice");
    }
}
