//! Node configuration: one plain struct, every field documented with its unit, range and default.
//!
//! Each setting has one name (Redis's where Redis has it) used everywhere: as a flag `--name`, as a
//! TOML key in `--config FILE` (`name` or `name_with_underscores`), as an environment variable
//! `HYPERCACHE_NAME_IN_CAPITALS`, and in `CONFIG GET/SET` for those that can change at runtime.
//! Precedence, lowest first: built-in defaults, the file, the environment, flags.

use std::fmt;

use hypercache_cluster::evict::Policy;
use hypercache_cluster::msg::Level;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `tls-auth-clients`: whether TLS clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAuthClients {
    /// No certificate is asked for.
    No,
    /// A certificate is asked for and checked if one is presented.
    Optional,
    /// A certificate from the CA is required.
    Yes,
}

impl TlsAuthClients {
    /// The setting's word.
    pub fn name(self) -> &'static str {
        match self {
            TlsAuthClients::No => "no",
            TlsAuthClients::Optional => "optional",
            TlsAuthClients::Yes => "yes",
        }
    }
}

/// `yes` or `no`, as Redis prints a boolean setting.
fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Settings `CONFIG GET` shows only when named, not for a pattern (Redis's hidden ones).
pub const HIDDEN: [&str; 1] = ["key-load-delay"];

/// The node's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on for clients. Default `127.0.0.1`.
    pub bind: String,
    /// Plain-text client port, 0..=65535 (0: no plain-text listener, as in Redis; `tls-port`
    /// must then be set). Default 6379.
    pub port: u16,
    /// Password of the default user; empty means none. Runtime-settable.
    pub requirepass: String,
    /// `aclfile`: where `ACL LOAD` reads users and `ACL SAVE` writes them; loaded at start.
    /// Empty (the default): none.
    pub aclfile: String,
    /// `acllog-max-len`: entries the ACL log keeps. Default 128. Runtime-settable.
    pub acllog_max_len: u64,
    /// `client-output-buffer-limit`'s pubsub class: how far a subscriber may fall behind
    /// before it is disconnected. Default `pubsub 32mb 8mb 60`. Runtime-settable.
    pub client_output_buffer_limit: crate::pubsub::Limits,
    /// `notify-keyspace-events`: the keyspace notification classes, as Redis's letters
    /// (`KEA`, `Ex`, ...) turned into bits ([`hypercache_cluster::notify`]). Default empty:
    /// off. Runtime-settable; per node (set it on every node of a cluster).
    pub notify_keyspace_events: u32,
    /// `tracking-table-max-keys`: keys the client-side caching table may remember before
    /// dropping some (and invalidating them for their clients). Default 1,000,000; 0: no limit.
    /// Runtime-settable.
    pub tracking_table_max_keys: u64,
    /// `reported-redis-version`: the Redis version INFO (`redis_version`) and HELLO (`version`)
    /// report, which client libraries gate features on. Default `7.0.15`, the version whose
    /// behaviour HyperCache reproduces ([`crate::REDIS_VERSION`]). Runtime-settable.
    pub reported_redis_version: String,
    /// `protected-mode`: with no password, only clients from 127.0.0.1 and ::1 are served; the
    /// others get Redis's `-DENIED` text and are closed. Default yes. Runtime-settable.
    pub protected_mode: bool,
    /// TLS client port, 0..=65535 (0: none). Default 0.
    pub tls_port: u16,
    /// The node's certificate chain (PEM), for the TLS client port and, with `tls-cluster`,
    /// its links. Runtime-settable: a new value is loaded at once (as is SIGHUP).
    pub tls_cert_file: String,
    /// The private key of `tls-cert-file` (PEM: PKCS#8, PKCS#1 or SEC1). Runtime-settable.
    pub tls_key_file: String,
    /// CA certificates (PEM) that client and peer certificates must chain to. Runtime-settable.
    pub tls_ca_cert_file: String,
    /// A directory of CA certificates (PEM files), read like `tls-ca-cert-file`.
    /// Runtime-settable.
    pub tls_ca_cert_dir: String,
    /// Certificate a node presents when it dials a peer with `tls-cluster` (empty:
    /// `tls-cert-file`). Runtime-settable.
    pub tls_client_cert_file: String,
    /// The private key of `tls-client-cert-file`. Runtime-settable.
    pub tls_client_key_file: String,
    /// `tls-auth-clients`: `yes` (clients must present a certificate from the CA), `optional`
    /// (checked if presented) or `no`. Default yes, as in Redis. Runtime-settable.
    pub tls_auth_clients: TlsAuthClients,
    /// Accepted TLS versions, space-separated: `TLSv1.2`, `TLSv1.3`. Empty (the default): both.
    /// Runtime-settable.
    pub tls_protocols: String,
    /// TLS 1.3 cipher suites, colon-separated OpenSSL names (`TLS_AES_256_GCM_SHA384:...`).
    /// Empty (the default): all that rustls offers. Runtime-settable.
    pub tls_ciphersuites: String,
    /// TLS 1.2 ciphers, colon-separated OpenSSL names (`ECDHE-RSA-AES256-GCM-SHA384:...`;
    /// `DEFAULT` for all). Empty (the default): all. Runtime-settable.
    pub tls_ciphers: String,
    /// Choose the cipher by the node's order rather than the client's. Default no.
    /// Runtime-settable.
    pub tls_prefer_server_ciphers: bool,
    /// Resume TLS sessions (session ids and tickets). Default yes. Runtime-settable.
    pub tls_session_caching: bool,
    /// TLS sessions kept for resumption. Default 20480. Runtime-settable.
    pub tls_session_cache_size: u64,
    /// Links between nodes over mutual TLS (both sides present certificates from the CA).
    /// Default no.
    pub tls_cluster: bool,
    /// Most simultaneous client connections, 1..=4294967295. Default 10000. Runtime-settable.
    pub maxclients: u64,
    /// Databases `SELECT` can choose from, 1..=256 (Redis allows more; a database number is one
    /// byte of a stored key, see `hypercache_cluster::db`). Default 16, as Redis. Startup only,
    /// and in a cluster every node must have the same.
    pub databases: u64,
    /// Close a client idle for this many seconds; 0 never. 0..=2147483647. Runtime-settable.
    pub timeout: u64,
    /// `error`, `warn`, `info`, `debug` or `trace`. Default `info`.
    pub log_level: String,
    /// `text` or `json`. Default `text`.
    pub log_format: LogFormat,
    /// Largest bulk argument, bytes (Redis units accepted: `512mb`). >= 1 MB. Default 512 MB.
    pub proto_max_bulk_len: u64,
    /// Most arguments in one request, 1..=2147483647. Default 2147483647 (Redis 7's limit).
    pub proto_max_multibulk_len: u64,
    /// Longest inline request or header line, bytes, 1 KB..=1 GB. Default 64 KB (Redis's fixed value).
    pub proto_max_inline_len: u64,
    /// Most bytes buffered for one client's pending request, >= 1 MB. Default 1 GB.
    pub client_query_buffer_limit: u64,
    /// Log commands slower than this many microseconds; -1 disables, 0 logs all. Default 10000.
    pub slowlog_log_slower_than: i64,
    /// Entries kept in the slow log. Default 128.
    pub slowlog_max_len: u64,
    /// `busy-reply-threshold` (alias `lua-time-limit`), ms: past it, a running script makes other
    /// clients' commands answer `-BUSY`, and `SCRIPT KILL` may stop it (0: never busy).
    pub busy_reply_threshold: u64,
    /// `min-replicas-to-write` (alias `min-slaves-to-write`): with it above 0 (and
    /// `min-replicas-max-lag` above 0), writes are refused with `-NOREPLICAS` while fewer Redis
    /// replicas ([`crate::repl`]) have acknowledged the stream within `min-replicas-max-lag`
    /// seconds, as in Redis. Default 0 (off).
    pub min_replicas_to_write: u64,
    /// `repl-ping-replica-period` (alias `repl-ping-slave-period`), seconds between the PINGs
    /// a single node writes to its Redis replicas' stream. Default 10.
    pub repl_ping_replica_period: u64,
    /// `repl-timeout`, seconds: a replica attached with `PSYNC` that acknowledged nothing for
    /// this long is dropped. Default 60.
    pub repl_timeout: u64,
    /// `repl-backlog-size`: the bytes of the replication stream kept for a replica that
    /// reconnects to continue from (`PSYNC` with its offset) rather than load a new snapshot.
    /// At least 16 KB, as in Redis. Default 1 MB.
    pub repl_backlog_size: u64,
    /// `repl-backlog-ttl`, seconds: how long after the last replica left the node keeps the
    /// backlog (and keeps recording its writes, one command at a time) for a replica that
    /// comes back to continue from; 0: for ever. Default 3600, as in Redis.
    pub repl_backlog_ttl: u64,
    /// `replica-read-only` (alias `slave-read-only`): while this node replicates a Redis
    /// primary (`REPLICAOF`), clients' writes get `-READONLY`. Default yes.
    pub replica_read_only: bool,
    /// `replica-serve-stale-data` (alias `slave-serve-stale-data`): while the link to the
    /// primary is down, serve what the node holds (yes) or answer `-MASTERDOWN` (no).
    /// Default yes.
    pub replica_serve_stale_data: bool,
    /// `masterauth`: the password this node gives the primary it replicates (`AUTH`).
    pub masterauth: String,
    /// `masteruser`: the user `masterauth` is for (empty: `AUTH` with the password alone).
    pub masteruser: String,
    /// `save`: snapshot points, `(seconds, changes)` ([`crate::persist`]). Empty by default
    /// (a cache writes nothing unless asked); a single node only.
    pub save_points: Vec<(u64, u64)>,
    /// `dir`: where the snapshot file is written. Default `.`.
    pub dir: String,
    /// `dbfilename`: the snapshot file's name. Default `dump.rdb`.
    pub dbfilename: String,
    /// `key-load-delay` (hidden, as in Redis: for tests), microseconds to wait after each key
    /// while a snapshot loads (a primary's, or the file at start); 0 or less: none.
    pub key_load_delay: i64,
    /// `client-output-buffer-limit`'s `replica` class: a replica whose unsent stream grows past
    /// it is dropped. Default `256mb 64mb 60`.
    pub replica_output_buffer_limit: crate::pubsub::Limits,
    /// `min-replicas-max-lag` (alias `min-slaves-max-lag`), seconds: 0 turns the check above
    /// off, as in Redis. Default 10.
    pub min_replicas_max_lag: u64,
    /// `script-memory-limit`: most bytes one script may allocate in the Lua VM (HyperCache; Redis
    /// has no such bound). 0: no limit.
    pub script_memory_limit: u64,
    /// Worker threads serving clients; 0 means one per CPU core but one (at least one). 0..=1024.
    /// Default 0.
    pub threads: u64,
    /// Background task frequency (active expiry cycles per second), 1..=500. Default 10.
    pub hz: u64,
    /// Memory budget in bytes (Redis units accepted); 0 means no limit. Runtime-settable.
    pub maxmemory: u64,
    /// `maxmemory-clients`: the memory all client connections together may hold before the
    /// largest are closed (bytes; negative: that percentage of `maxmemory`, Redis's own
    /// encoding); 0 means no limit. Runtime-settable.
    pub maxmemory_clients: i64,
    /// What happens when the budget is reached: one of Redis's eight policies. Default
    /// `noeviction`. Runtime-settable.
    pub maxmemory_policy: Policy,
    /// Keys sampled per eviction, 1..=64. Default 5. Runtime-settable.
    pub maxmemory_samples: u64,
    /// LFU: hits needed to saturate the counter grow with this factor, 0..=2147483647. Default 10.
    pub lfu_log_factor: u64,
    /// LFU: minutes per counter decrement, 0..=2147483647 (0: no decay). Default 1.
    pub lfu_decay_time: u64,
    /// The config file this node started from, if any (reported by INFO).
    pub config_file: Option<String>,
    /// This node's stable name in the cluster. Default: its advertised cluster address.
    pub node_id: String,
    /// Port of the inter-node protocol; 0 means client port + 10000. Default 0.
    pub cluster_port: u16,
    /// Port of the HTTP listener (`/health`, `/ready`, `/metrics`, `/cluster/members`), on
    /// `bind`; 0 turns it off. Default (`None`): the client port + 3000 (9379 for 6379).
    pub http_port: Option<u16>,
    /// OTLP/HTTP endpoint to export traces and metrics to (`http://host:4318`; `/v1/traces`
    /// and `/v1/metrics` are added). Empty (the default): no export, no spans.
    pub otlp_endpoint: String,
    /// Share of traces sampled, 0..=1 (a parent's decision is followed). Default 1.
    pub otlp_sampling_ratio: f64,
    /// How often metrics are exported over OTLP, ms. Default 10000.
    pub otlp_metrics_interval_ms: u64,
    /// Host (or host:port) peers use to reach this node's cluster port. Default: `bind`.
    pub advertise: String,
    /// Cluster addresses (`host:cport`, comma-separated) of the members; may include this node.
    /// Empty (the default) runs a single node with no cluster port.
    pub seeds: String,
    /// Copies of each slot, 1..=64, capped at the member count. Default 3.
    pub replication: u64,
    /// Default read consistency: `one`, `quorum` or `all`. Default `quorum`: with QUORUM
    /// writes, a read through any node sees the last acknowledged write (R + W > N).
    /// Runtime-settable.
    pub read_consistency: Level,
    /// Default write consistency: `one`, `quorum` or `all`. Default `quorum`. Runtime-settable.
    pub write_consistency: Level,
    /// How long a coordinator waits for replicas before failing a request, ms, 1..=600000.
    /// Default 1000. Runtime-settable.
    pub request_timeout_ms: u64,
    /// Shared secret of the cluster's nodes: links and membership datagrams prove it (it never
    /// crosses the wire). Empty (the default): peers are checked by `cluster-name` only.
    pub cluster_secret: String,
    /// Nodes with different cluster names refuse each other. Default `hypercache`.
    pub cluster_name: String,
    /// Seconds a delete's tombstone is kept after its version's time, 1..=2592000. Default 3600.
    /// Must exceed `hint-ttl` plus two anti-entropy rounds ([`Config::check`]). Runtime-settable.
    pub tombstone_ttl: u64,
    /// Hints kept per target node, at most. Default 100000. Runtime-settable.
    pub hint_max_per_node: u64,
    /// Hints kept in all, at most. Default 1000000. Runtime-settable.
    pub hint_max_total: u64,
    /// Bytes of hints kept in all, at most. Default 256mb. Runtime-settable.
    pub hint_max_bytes: u64,
    /// Seconds a hint is kept after its version's time. Default 1800. Runtime-settable.
    pub hint_ttl: u64,
    /// How often every hint queue is replayed, ms (also at once when its target comes back).
    /// Default 10000. Runtime-settable.
    pub hint_replay_interval_ms: u64,
    /// Hints per replay batch. Default 1024. Runtime-settable.
    pub hint_replay_batch: u64,
    /// Hints replayed per second to one target, at most (0: no limit). Default 200000.
    /// Runtime-settable.
    pub hint_replay_rate: u64,
    /// Between anti-entropy rounds against each peer, ms (0: no automatic rounds). Default
    /// 30000. Runtime-settable.
    pub anti_entropy_interval_ms: u64,
    /// Clean rounds double the wait up to this many intervals. Default 8. Runtime-settable.
    pub anti_entropy_max_backoff: u64,
    /// Membership: time between two probes of this node, ms, 10..=60000. Default 1000.
    pub probe_interval_ms: u64,
    /// Membership: how long a direct probe waits for its ack before others are asked to probe,
    /// ms, 1..=60000 (below `probe-interval`). Default 500.
    pub probe_timeout_ms: u64,
    /// Membership: members asked to probe indirectly, 1..=16. Default 3.
    pub indirect_probes: u64,
    /// Membership: how long a suspect member may refute before it is down, ms, 1..=3600000.
    /// Default 4000. Runtime-settable.
    pub suspect_timeout_ms: u64,
    /// Membership: how long a down member keeps its slots before the others take them over, ms
    /// (0: until `HC.FORGET`). Default 600000 (10 minutes). Runtime-settable.
    pub remove_after_ms: u64,
    /// Rebalancing: bytes per page of a slot transfer (Redis units accepted), 4kb..=64mb.
    /// Default 1mb (smaller under a small `maxmemory`). Runtime-settable.
    pub rebalance_batch_size: u64,
    /// Rebalancing: transfer rounds (one per source peer) at once, 1..=64. Default 4.
    /// Runtime-settable.
    pub rebalance_max_concurrent: u64,
    /// Rebalancing: bytes per second all transfers together may receive (Redis units
    /// accepted; 0: no limit). Default 24 MB (as Cassandra's default stream throughput): a
    /// join of 1,000,000 keys of 100 bytes takes about 5 s and leaves clients 0.85x of their
    /// throughput on the 2-core machine of docs/benchmarks.md; unpaced it takes under 2 s and
    /// leaves them 0.64-0.73x. Runtime-settable.
    pub rebalance_max_bytes_per_sec: u64,
    /// Rebalancing: how long a node keeps a slot it no longer replicates before dropping it,
    /// ms. Default 60000. Runtime-settable.
    pub rebalance_grace_ms: u64,
    /// Shifts this node's wall clock by this many ms, -3600000..=3600000. Default 0. For clock
    /// skew drills and tests only: versions, expiry and TTLs follow the shifted clock.
    /// Runtime-settable.
    pub clock_offset_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1".into(),
            port: 6379,
            requirepass: String::new(),
            aclfile: String::new(),
            acllog_max_len: 128,
            client_output_buffer_limit: Default::default(),
            notify_keyspace_events: 0,
            tracking_table_max_keys: 1_000_000,
            reported_redis_version: crate::REDIS_VERSION.to_string(),
            protected_mode: true,
            tls_port: 0,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_cert_file: String::new(),
            tls_ca_cert_dir: String::new(),
            tls_client_cert_file: String::new(),
            tls_client_key_file: String::new(),
            tls_auth_clients: TlsAuthClients::Yes,
            tls_protocols: String::new(),
            tls_ciphersuites: String::new(),
            tls_ciphers: String::new(),
            tls_prefer_server_ciphers: false,
            tls_session_caching: true,
            tls_session_cache_size: 20 * 1024,
            tls_cluster: false,
            maxclients: 10000,
            databases: 16,
            timeout: 0,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            proto_max_bulk_len: 512 * 1024 * 1024,
            proto_max_multibulk_len: i32::MAX as u64,
            proto_max_inline_len: 64 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
            busy_reply_threshold: 5000,
            script_memory_limit: 256 * 1024 * 1024,
            min_replicas_to_write: 0,
            repl_ping_replica_period: 10,
            repl_timeout: 60,
            repl_backlog_size: 1024 * 1024,
            repl_backlog_ttl: 3600,
            replica_read_only: true,
            replica_serve_stale_data: true,
            masterauth: String::new(),
            masteruser: String::new(),
            save_points: Vec::new(),
            dir: ".".into(),
            dbfilename: "dump.rdb".into(),
            key_load_delay: 0,
            replica_output_buffer_limit: crate::pubsub::Limits {
                hard: 256 * 1024 * 1024,
                soft: 64 * 1024 * 1024,
                soft_secs: 60,
            },
            min_replicas_max_lag: 10,
            hz: 10,
            threads: 0,
            maxmemory: 0,
            maxmemory_clients: 0,
            maxmemory_policy: Policy::NoEviction,
            maxmemory_samples: 5,
            lfu_log_factor: 10,
            lfu_decay_time: 1,
            config_file: None,
            node_id: String::new(),
            cluster_port: 0,
            http_port: None,
            otlp_endpoint: String::new(),
            otlp_sampling_ratio: 1.0,
            otlp_metrics_interval_ms: 10_000,
            advertise: String::new(),
            seeds: String::new(),
            replication: 3,
            read_consistency: Level::Quorum,
            write_consistency: Level::Quorum,
            request_timeout_ms: 1000,
            cluster_name: "hypercache".into(),
            cluster_secret: String::new(),
            tombstone_ttl: 3600,
            hint_max_per_node: 100_000,
            hint_max_total: 1_000_000,
            hint_max_bytes: 256 << 20,
            hint_ttl: 1800,
            hint_replay_interval_ms: 10_000,
            hint_replay_batch: 1024,
            hint_replay_rate: 200_000,
            anti_entropy_interval_ms: 30_000,
            anti_entropy_max_backoff: 8,
            probe_interval_ms: 1000,
            probe_timeout_ms: 500,
            indirect_probes: 3,
            suspect_timeout_ms: 4000,
            remove_after_ms: 600_000,
            rebalance_batch_size: 1 << 20,
            rebalance_max_concurrent: 4,
            rebalance_max_bytes_per_sec: 24 << 20,
            rebalance_grace_ms: 60_000,
            clock_offset_ms: 0,
        }
    }
}

/// A setting that could not be applied. The text names the setting and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// No setting has this name.
    Unknown(String),
    /// The value does not parse or is out of range: (setting, value, what is accepted).
    Invalid(&'static str, String, String),
    /// The setting cannot change while the node runs.
    NotRuntime(&'static str),
    /// Anything else (unreadable file, bad TOML, missing flag value).
    Other(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unknown(n) => {
                write!(f, "unknown setting '{n}' (see docs/configuration.md)")
            }
            ConfigError::Invalid(n, v, why) => write!(f, "invalid value '{v}' for '{n}': {why}"),
            ConfigError::NotRuntime(n) => write!(f, "'{n}' cannot be changed at runtime"),
            ConfigError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How a setting's value is read and checked.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An integer in `min..=max`.
    Int(i64, i64),
    /// A byte size with Redis units (`1k`=1000, `1kb`=1024, `mb`, `gb`), in `min..=max`.
    Memory(u64, u64),
    /// A byte size, or a percentage (`10%`, at most 100) of `maxmemory`.
    MemoryOrPercent,
    /// Free text.
    Str,
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// `yes` or `no`.
    Bool,
    /// `client-output-buffer-limit`'s `<class> <hard> <soft> <seconds>` groups.
    BufferLimit,
    /// `notify-keyspace-events`' class letters.
    Events,
    /// A version: three dot-separated numbers (`7.0.15`).
    Version,
    /// A decimal number from 0 to 1.
    Ratio,
    /// `save`'s pairs of seconds and changes.
    SavePoints,
}

/// One setting: its name, kind, whether CONFIG SET may change it, and how to read and write it.
pub struct Param {
    /// Name, Redis-style with dashes.
    pub name: &'static str,
    /// Value kind and range.
    pub kind: Kind,
    /// Whether `CONFIG SET` may change it.
    pub runtime: bool,
    /// Current value as `CONFIG GET` prints it.
    pub get: fn(&Config) -> String,
    /// Stores an already validated value.
    set: fn(&mut Config, Value),
}

/// A validated value.
#[derive(Debug, Clone)]
enum Value {
    Int(i64),
    Str(String),
}

impl Value {
    fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Str(_) => 0,
        }
    }
    fn yes(&self) -> bool {
        matches!(self, Value::Int(1))
    }
    fn text(self) -> String {
        match self {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
        }
    }
}

macro_rules! p {
    ($name:literal, $kind:expr, $rt:expr, |$c:ident| $get:expr, |$c2:ident, $v:ident| $set:expr) => {
        Param {
            name: $name,
            kind: $kind,
            runtime: $rt,
            get: |$c| $get,
            set: |$c2, $v| $set,
        }
    };
}

/// Every setting.
pub static PARAMS: &[Param] = &[
    p!("bind", Kind::Str, false, |c| c.bind.clone(), |c, v| c
        .bind =
        v.text()),
    p!(
        "port",
        Kind::Int(0, 65535),
        true,
        |c| c.port.to_string(),
        |c, v| c.port = v.int() as u16
    ),
    p!(
        "aclfile",
        Kind::Str,
        false,
        |c| c.aclfile.clone(),
        |c, v| c.aclfile = v.text()
    ),
    p!(
        "acllog-max-len",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.acllog_max_len.to_string(),
        |c, v| c.acllog_max_len = v.int() as u64
    ),
    p!(
        "client-output-buffer-limit",
        Kind::BufferLimit,
        true,
        |c| crate::pubsub::render_limits(
            &c.client_output_buffer_limit,
            &c.replica_output_buffer_limit
        ),
        |c, v| {
            let current = c.client_output_buffer_limit;
            let text = v.text();
            c.client_output_buffer_limit =
                crate::pubsub::parse_limits(&text, current).unwrap_or(current);
            let current = c.replica_output_buffer_limit;
            c.replica_output_buffer_limit =
                crate::pubsub::parse_replica_limits(&text, current).unwrap_or(current)
        }
    ),
    p!(
        "reported-redis-version",
        Kind::Version,
        true,
        |c| c.reported_redis_version.clone(),
        |c, v| c.reported_redis_version = v.text()
    ),
    p!(
        "tracking-table-max-keys",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.tracking_table_max_keys.to_string(),
        |c, v| c.tracking_table_max_keys = v.int() as u64
    ),
    p!(
        "notify-keyspace-events",
        Kind::Events,
        true,
        |c| hypercache_cluster::notify::render_flags(c.notify_keyspace_events),
        |c, v| c.notify_keyspace_events =
            hypercache_cluster::notify::parse_flags(v.text().as_bytes()).unwrap_or(0)
    ),
    p!(
        "protected-mode",
        Kind::Bool,
        true,
        |c| yes_no(c.protected_mode),
        |c, v| c.protected_mode = v.yes()
    ),
    p!(
        "tls-port",
        Kind::Int(0, 65535),
        false,
        |c| c.tls_port.to_string(),
        |c, v| c.tls_port = v.int() as u16
    ),
    p!(
        "tls-cert-file",
        Kind::Str,
        true,
        |c| c.tls_cert_file.clone(),
        |c, v| c.tls_cert_file = v.text()
    ),
    p!(
        "tls-key-file",
        Kind::Str,
        true,
        |c| c.tls_key_file.clone(),
        |c, v| c.tls_key_file = v.text()
    ),
    p!(
        "tls-ca-cert-file",
        Kind::Str,
        true,
        |c| c.tls_ca_cert_file.clone(),
        |c, v| c.tls_ca_cert_file = v.text()
    ),
    p!(
        "tls-ca-cert-dir",
        Kind::Str,
        true,
        |c| c.tls_ca_cert_dir.clone(),
        |c, v| c.tls_ca_cert_dir = v.text()
    ),
    p!(
        "tls-client-cert-file",
        Kind::Str,
        true,
        |c| c.tls_client_cert_file.clone(),
        |c, v| c.tls_client_cert_file = v.text()
    ),
    p!(
        "tls-client-key-file",
        Kind::Str,
        true,
        |c| c.tls_client_key_file.clone(),
        |c, v| c.tls_client_key_file = v.text()
    ),
    p!(
        "tls-auth-clients",
        Kind::Enum(&["no", "optional", "yes"]),
        true,
        |c| c.tls_auth_clients.name().into(),
        |c, v| c.tls_auth_clients = match v.text().as_str() {
            "no" => TlsAuthClients::No,
            "optional" => TlsAuthClients::Optional,
            _ => TlsAuthClients::Yes,
        }
    ),
    p!(
        "tls-protocols",
        Kind::Str,
        true,
        |c| c.tls_protocols.clone(),
        |c, v| c.tls_protocols = v.text()
    ),
    p!(
        "tls-ciphersuites",
        Kind::Str,
        true,
        |c| c.tls_ciphersuites.clone(),
        |c, v| c.tls_ciphersuites = v.text()
    ),
    p!(
        "tls-ciphers",
        Kind::Str,
        true,
        |c| c.tls_ciphers.clone(),
        |c, v| c.tls_ciphers = v.text()
    ),
    p!(
        "tls-prefer-server-ciphers",
        Kind::Bool,
        true,
        |c| yes_no(c.tls_prefer_server_ciphers),
        |c, v| c.tls_prefer_server_ciphers = v.yes()
    ),
    p!(
        "tls-session-caching",
        Kind::Bool,
        true,
        |c| yes_no(c.tls_session_caching),
        |c, v| c.tls_session_caching = v.yes()
    ),
    p!(
        "tls-session-cache-size",
        Kind::Int(0, i32::MAX as i64),
        true,
        |c| c.tls_session_cache_size.to_string(),
        |c, v| c.tls_session_cache_size = v.int() as u64
    ),
    p!(
        "tls-cluster",
        Kind::Bool,
        false,
        |c| yes_no(c.tls_cluster),
        |c, v| c.tls_cluster = v.yes()
    ),
    p!(
        "requirepass",
        Kind::Str,
        true,
        |c| c.requirepass.clone(),
        |c, v| c.requirepass = v.text()
    ),
    p!(
        "maxclients",
        Kind::Int(1, 4294967295),
        true,
        |c| c.maxclients.to_string(),
        |c, v| c.maxclients = v.int() as u64
    ),
    p!(
        "timeout",
        Kind::Int(0, 2147483647),
        true,
        |c| c.timeout.to_string(),
        |c, v| c.timeout = v.int() as u64
    ),
    p!(
        "log-level",
        Kind::Enum(&["error", "warn", "info", "debug", "trace"]),
        false,
        |c| c.log_level.clone(),
        |c, v| c.log_level = v.text()
    ),
    p!(
        "log-format",
        Kind::Enum(&["text", "json"]),
        false,
        |c| if c.log_format == LogFormat::Json {
            "json".into()
        } else {
            "text".into()
        },
        |c, v| c.log_format = if v.text() == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    ),
    p!(
        "proto-max-bulk-len",
        Kind::Memory(1024 * 1024, i64::MAX as u64),
        true,
        |c| c.proto_max_bulk_len.to_string(),
        |c, v| c.proto_max_bulk_len = v.int() as u64
    ),
    p!(
        "proto-max-multibulk-len",
        Kind::Int(1, 2147483647),
        true,
        |c| c.proto_max_multibulk_len.to_string(),
        |c, v| c.proto_max_multibulk_len = v.int() as u64
    ),
    p!(
        "proto-max-inline-len",
        Kind::Memory(1024, 1024 * 1024 * 1024),
        true,
        |c| c.proto_max_inline_len.to_string(),
        |c, v| c.proto_max_inline_len = v.int() as u64
    ),
    p!(
        "client-query-buffer-limit",
        Kind::Memory(1024 * 1024, i64::MAX as u64),
        true,
        |c| c.client_query_buffer_limit.to_string(),
        |c, v| c.client_query_buffer_limit = v.int() as u64
    ),
    p!(
        "busy-reply-threshold",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.busy_reply_threshold.to_string(),
        |c, v| c.busy_reply_threshold = v.int() as u64
    ),
    p!(
        "min-replicas-to-write",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.min_replicas_to_write.to_string(),
        |c, v| c.min_replicas_to_write = v.int() as u64
    ),
    p!(
        "min-slaves-to-write",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.min_replicas_to_write.to_string(),
        |c, v| c.min_replicas_to_write = v.int() as u64
    ),
    p!(
        "repl-ping-replica-period",
        Kind::Int(1, 2147483647),
        true,
        |c| c.repl_ping_replica_period.to_string(),
        |c, v| c.repl_ping_replica_period = v.int() as u64
    ),
    p!(
        "repl-ping-slave-period",
        Kind::Int(1, 2147483647),
        true,
        |c| c.repl_ping_replica_period.to_string(),
        |c, v| c.repl_ping_replica_period = v.int() as u64
    ),
    p!(
        "repl-timeout",
        Kind::Int(1, 2147483647),
        true,
        |c| c.repl_timeout.to_string(),
        |c, v| c.repl_timeout = v.int() as u64
    ),
    p!(
        "repl-backlog-size",
        Kind::Memory(1, i64::MAX as u64),
        true,
        |c| c.repl_backlog_size.to_string(),
        |c, v| c.repl_backlog_size = (v.int() as u64).max(16 * 1024)
    ),
    p!(
        "replica-read-only",
        Kind::Bool,
        true,
        |c| yes_no(c.replica_read_only),
        |c, v| c.replica_read_only = v.yes()
    ),
    p!(
        "slave-read-only",
        Kind::Bool,
        true,
        |c| yes_no(c.replica_read_only),
        |c, v| c.replica_read_only = v.yes()
    ),
    p!(
        "replica-serve-stale-data",
        Kind::Bool,
        true,
        |c| yes_no(c.replica_serve_stale_data),
        |c, v| c.replica_serve_stale_data = v.yes()
    ),
    p!(
        "slave-serve-stale-data",
        Kind::Bool,
        true,
        |c| yes_no(c.replica_serve_stale_data),
        |c, v| c.replica_serve_stale_data = v.yes()
    ),
    p!(
        "masterauth",
        Kind::Str,
        true,
        |c| c.masterauth.clone(),
        |c, v| c.masterauth = v.text()
    ),
    p!(
        "masteruser",
        Kind::Str,
        true,
        |c| c.masteruser.clone(),
        |c, v| c.masteruser = v.text()
    ),
    p!(
        "repl-backlog-ttl",
        Kind::Int(0, 2147483647),
        true,
        |c| c.repl_backlog_ttl.to_string(),
        |c, v| c.repl_backlog_ttl = v.int() as u64
    ),
    p!(
        "min-replicas-max-lag",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.min_replicas_max_lag.to_string(),
        |c, v| c.min_replicas_max_lag = v.int() as u64
    ),
    p!(
        "min-slaves-max-lag",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.min_replicas_max_lag.to_string(),
        |c, v| c.min_replicas_max_lag = v.int() as u64
    ),
    p!(
        "lua-time-limit",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.busy_reply_threshold.to_string(),
        |c, v| c.busy_reply_threshold = v.int() as u64
    ),
    p!(
        "script-memory-limit",
        Kind::Memory(0, i64::MAX as u64),
        true,
        |c| c.script_memory_limit.to_string(),
        |c, v| c.script_memory_limit = v.int() as u64
    ),
    p!(
        "slowlog-log-slower-than",
        Kind::Int(-1, i64::MAX),
        true,
        |c| c.slowlog_log_slower_than.to_string(),
        |c, v| c.slowlog_log_slower_than = v.int()
    ),
    p!(
        "slowlog-max-len",
        Kind::Int(0, i64::MAX),
        true,
        |c| c.slowlog_max_len.to_string(),
        |c, v| c.slowlog_max_len = v.int() as u64
    ),
    p!(
        "threads",
        Kind::Int(0, 1024),
        false,
        |c| c.threads.to_string(),
        |c, v| c.threads = v.int() as u64
    ),
    p!(
        "hz",
        Kind::Int(1, 500),
        true,
        |c| c.hz.to_string(),
        |c, v| c.hz = v.int() as u64
    ),
    p!(
        "maxmemory",
        Kind::Memory(0, i64::MAX as u64),
        true,
        |c| c.maxmemory.to_string(),
        |c, v| c.maxmemory = v.int() as u64
    ),
    p!(
        "maxmemory-clients",
        Kind::MemoryOrPercent,
        true,
        |c| if c.maxmemory_clients < 0 {
            format!("{}%", -c.maxmemory_clients)
        } else {
            c.maxmemory_clients.to_string()
        },
        |c, v| c.maxmemory_clients = v.int()
    ),
    p!(
        "maxmemory-policy",
        // Redis's order, which its CONFIG SET error message lists.
        Kind::Enum(&[
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "noeviction"
        ]),
        true,
        |c| c.maxmemory_policy.name().to_string(),
        |c, v| c.maxmemory_policy = Policy::parse(&v.text()).unwrap_or_default()
    ),
    p!(
        "maxmemory-samples",
        Kind::Int(1, 64),
        true,
        |c| c.maxmemory_samples.to_string(),
        |c, v| c.maxmemory_samples = v.int() as u64
    ),
    p!(
        "lfu-log-factor",
        Kind::Int(0, i32::MAX as i64),
        true,
        |c| c.lfu_log_factor.to_string(),
        |c, v| c.lfu_log_factor = v.int() as u64
    ),
    p!(
        "lfu-decay-time",
        Kind::Int(0, i32::MAX as i64),
        true,
        |c| c.lfu_decay_time.to_string(),
        |c, v| c.lfu_decay_time = v.int() as u64
    ),
    p!(
        "node-id",
        Kind::Str,
        false,
        |c| c.node_id.clone(),
        |c, v| c.node_id = v.text()
    ),
    p!(
        "cluster-port",
        Kind::Int(0, 65535),
        false,
        |c| c.cluster_port.to_string(),
        |c, v| c.cluster_port = v.int() as u16
    ),
    p!(
        "http-port",
        Kind::Int(0, 65535),
        false,
        |c| c.http_port().to_string(),
        |c, v| c.http_port = Some(v.int() as u16)
    ),
    p!(
        "otlp-endpoint",
        Kind::Str,
        false,
        |c| c.otlp_endpoint.clone(),
        |c, v| c.otlp_endpoint = v.text()
    ),
    p!(
        "otlp-sampling-ratio",
        Kind::Ratio,
        false,
        |c| c.otlp_sampling_ratio.to_string(),
        |c, v| c.otlp_sampling_ratio = v.text().parse().unwrap_or(1.0)
    ),
    p!(
        "otlp-metrics-interval",
        Kind::Int(100, 86_400_000),
        false,
        |c| c.otlp_metrics_interval_ms.to_string(),
        |c, v| c.otlp_metrics_interval_ms = v.int() as u64
    ),
    p!(
        "advertise",
        Kind::Str,
        false,
        |c| c.advertise.clone(),
        |c, v| c.advertise = v.text()
    ),
    p!("seeds", Kind::Str, false, |c| c.seeds.clone(), |c, v| c
        .seeds =
        v.text()),
    p!(
        "replication",
        Kind::Int(1, 64),
        false,
        |c| c.replication.to_string(),
        |c, v| c.replication = v.int() as u64
    ),
    p!(
        "read-consistency",
        Kind::Enum(&["one", "quorum", "all"]),
        true,
        |c| c.read_consistency.name().into(),
        |c, v| c.read_consistency = Level::parse(v.text().as_bytes()).unwrap_or_default()
    ),
    p!(
        "write-consistency",
        Kind::Enum(&["one", "quorum", "all"]),
        true,
        |c| c.write_consistency.name().into(),
        |c, v| c.write_consistency = Level::parse(v.text().as_bytes()).unwrap_or_default()
    ),
    p!(
        "request-timeout-ms",
        Kind::Int(1, 600_000),
        true,
        |c| c.request_timeout_ms.to_string(),
        |c, v| c.request_timeout_ms = v.int() as u64
    ),
    p!(
        "cluster-name",
        Kind::Str,
        false,
        |c| c.cluster_name.clone(),
        |c, v| c.cluster_name = v.text()
    ),
    p!(
        "cluster-secret",
        Kind::Str,
        false,
        |c| c.cluster_secret.clone(),
        |c, v| c.cluster_secret = v.text()
    ),
    p!(
        "clock-offset-ms",
        Kind::Int(-3_600_000, 3_600_000),
        true,
        |c| c.clock_offset_ms.to_string(),
        |c, v| {
            c.clock_offset_ms = v.int();
            crate::state::set_clock_offset(c.clock_offset_ms);
        }
    ),
    p!(
        "tombstone-ttl",
        Kind::Int(1, 2_592_000),
        true,
        |c| c.tombstone_ttl.to_string(),
        |c, v| c.tombstone_ttl = v.int() as u64
    ),
    p!(
        "hint-max-per-node",
        Kind::Int(0, 1_000_000_000),
        true,
        |c| c.hint_max_per_node.to_string(),
        |c, v| c.hint_max_per_node = v.int() as u64
    ),
    p!(
        "hint-max-total",
        Kind::Int(0, 1_000_000_000),
        true,
        |c| c.hint_max_total.to_string(),
        |c, v| c.hint_max_total = v.int() as u64
    ),
    p!(
        "hint-max-bytes",
        Kind::Memory(0, i64::MAX as u64),
        true,
        |c| c.hint_max_bytes.to_string(),
        |c, v| c.hint_max_bytes = v.int() as u64
    ),
    p!(
        "hint-ttl",
        Kind::Int(1, 2_592_000),
        true,
        |c| c.hint_ttl.to_string(),
        |c, v| c.hint_ttl = v.int() as u64
    ),
    p!(
        "hint-replay-interval",
        Kind::Int(1, 3_600_000),
        true,
        |c| c.hint_replay_interval_ms.to_string(),
        |c, v| c.hint_replay_interval_ms = v.int() as u64
    ),
    p!(
        "hint-replay-batch",
        Kind::Int(1, 100_000),
        true,
        |c| c.hint_replay_batch.to_string(),
        |c, v| c.hint_replay_batch = v.int() as u64
    ),
    p!(
        "hint-replay-rate",
        Kind::Int(0, 100_000_000),
        true,
        |c| c.hint_replay_rate.to_string(),
        |c, v| c.hint_replay_rate = v.int() as u64
    ),
    p!(
        "anti-entropy-interval",
        Kind::Int(0, 86_400_000),
        true,
        |c| c.anti_entropy_interval_ms.to_string(),
        |c, v| c.anti_entropy_interval_ms = v.int() as u64
    ),
    p!(
        "anti-entropy-max-backoff",
        Kind::Int(1, 1024),
        true,
        |c| c.anti_entropy_max_backoff.to_string(),
        |c, v| c.anti_entropy_max_backoff = v.int() as u64
    ),
    p!(
        "probe-interval",
        Kind::Int(10, 60_000),
        false,
        |c| c.probe_interval_ms.to_string(),
        |c, v| c.probe_interval_ms = v.int() as u64
    ),
    p!(
        "probe-timeout",
        Kind::Int(1, 60_000),
        false,
        |c| c.probe_timeout_ms.to_string(),
        |c, v| c.probe_timeout_ms = v.int() as u64
    ),
    p!(
        "indirect-probes",
        Kind::Int(1, 16),
        false,
        |c| c.indirect_probes.to_string(),
        |c, v| c.indirect_probes = v.int() as u64
    ),
    p!(
        "suspect-timeout",
        Kind::Int(1, 3_600_000),
        true,
        |c| c.suspect_timeout_ms.to_string(),
        |c, v| c.suspect_timeout_ms = v.int() as u64
    ),
    p!(
        "remove-after",
        Kind::Int(0, 31_536_000_000),
        true,
        |c| c.remove_after_ms.to_string(),
        |c, v| c.remove_after_ms = v.int() as u64
    ),
    p!(
        "rebalance-batch-size",
        Kind::Memory(4096, 64 << 20),
        true,
        |c| c.rebalance_batch_size.to_string(),
        |c, v| c.rebalance_batch_size = v.int() as u64
    ),
    p!(
        "rebalance-max-concurrent",
        Kind::Int(1, 64),
        true,
        |c| c.rebalance_max_concurrent.to_string(),
        |c, v| c.rebalance_max_concurrent = v.int() as u64
    ),
    p!(
        "rebalance-max-bytes-per-sec",
        Kind::Memory(0, i64::MAX as u64),
        true,
        |c| c.rebalance_max_bytes_per_sec.to_string(),
        |c, v| c.rebalance_max_bytes_per_sec = v.int() as u64
    ),
    p!(
        "rebalance-grace",
        Kind::Int(0, 86_400_000),
        true,
        |c| c.rebalance_grace_ms.to_string(),
        |c, v| c.rebalance_grace_ms = v.int() as u64
    ),
    p!(
        "databases",
        Kind::Int(1, hypercache_cluster::db::MAX_DATABASES as i64),
        false,
        |c| c.databases.to_string(),
        |c, v| c.databases = v.int() as u64
    ),
    // Read-only facts some clients ask for: no persistence, and never a Redis replica (a
    // primary answers `replicaof` empty; Redis makes it immutable in CONFIG SET too).
    p!(
        "save",
        Kind::SavePoints,
        true,
        |c| crate::persist::render_points(&c.save_points),
        |c, v| c.save_points = crate::persist::parse_points(&v.text()).unwrap_or_default()
    ),
    p!(
        "dir",
        Kind::Str,
        true,
        |c| std::fs::canonicalize(&c.dir)
            .map_or_else(|_| c.dir.clone(), |p| p.display().to_string()),
        |c, v| c.dir = v.text()
    ),
    p!(
        "key-load-delay",
        Kind::Int(i32::MIN as i64, i32::MAX as i64),
        true,
        |c| c.key_load_delay.to_string(),
        |c, v| c.key_load_delay = v.int()
    ),
    p!(
        "dbfilename",
        Kind::Str,
        true,
        |c| c.dbfilename.clone(),
        |c, v| c.dbfilename = v.text()
    ),
    p!(
        "replicaof",
        Kind::Str,
        false,
        |_c| String::new(),
        |_c, _v| ()
    ),
    p!("slaveof", Kind::Str, false, |_c| String::new(), |_c, _v| ()),
    // Never daemonized: it runs in the foreground (a service manager's job).
    p!(
        "daemonize",
        Kind::Enum(&["no"]),
        false,
        |_c| "no".into(),
        |_c, _v| ()
    ),
    p!(
        "appendonly",
        Kind::Enum(&["no"]),
        false,
        |_c| "no".into(),
        |_c, _v| ()
    ),
];

/// Finds a setting by name, case-insensitively, accepting `_` for `-`.
pub fn param(name: &str) -> Option<&'static Param> {
    let norm = name.to_ascii_lowercase().replace('_', "-");
    PARAMS.iter().find(|p| p.name == norm)
}

/// Parses Redis's memory units: `100`, `1k` (1000), `1kb` (1024), `m`, `mb`, `g`, `gb`.
pub fn parse_memory(s: &str) -> Option<u64> {
    let l = s.to_ascii_lowercase();
    let (num, mul) = [
        ("gb", 1u64 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1000),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| l.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((&l, 1));
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// Why a value was rejected, in CONFIG SET's words (Redis 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

impl Param {
    fn check(&self, raw: &str) -> Result<Value, Rejected> {
        match self.kind {
            Kind::Int(min, max) => {
                let v: i64 = raw
                    .parse()
                    .ok()
                    .filter(|_| !raw.starts_with('+') && !raw.starts_with(' '))
                    .ok_or_else(|| {
                        Rejected("argument couldn't be parsed into an integer".into())
                    })?;
                if v < min || v > max {
                    return Err(Rejected(format!(
                        "argument must be between {min} and {max} inclusive"
                    )));
                }
                Ok(Value::Int(v))
            }
            Kind::Memory(min, max) => {
                let v = parse_memory(raw)
                    .ok_or_else(|| Rejected("argument must be a memory value".into()))?;
                if v < min || v > max {
                    return Err(Rejected(format!(
                        "argument must be between {min} and {max} inclusive"
                    )));
                }
                Ok(Value::Int(v as i64))
            }
            Kind::MemoryOrPercent => match raw.strip_suffix('%') {
                Some(p) => {
                    let v: i64 = p
                        .parse()
                        .ok()
                        .filter(|v| *v >= 0 && !p.starts_with('+'))
                        .ok_or_else(|| {
                            Rejected("argument must be a memory or percent value".into())
                        })?;
                    if v > 100 {
                        return Err(Rejected(
                            "percentage argument must be less or equal to 100".into(),
                        ));
                    }
                    Ok(Value::Int(-v))
                }
                None => parse_memory(raw)
                    .filter(|v| *v <= i64::MAX as u64)
                    .map(|v| Value::Int(v as i64))
                    .ok_or_else(|| Rejected("argument must be a memory or percent value".into())),
            },
            Kind::Str => Ok(Value::Str(raw.to_string())),
            Kind::SavePoints => crate::persist::parse_points(raw)
                .map(|_| Value::Str(raw.to_string()))
                .map_err(Rejected),
            Kind::Ratio => match raw.parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(Value::Str(raw.to_string())),
                _ => Err(Rejected("argument must be a number from 0 to 1".into())),
            },
            Kind::BufferLimit => crate::pubsub::parse_limits(raw, Default::default())
                .map(|_| Value::Str(raw.to_string()))
                .map_err(Rejected),
            Kind::Version => {
                let parts: Vec<&str> = raw.split('.').collect();
                let numbers = parts.iter().all(|p| {
                    !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())
                });
                if parts.len() == 3 && numbers {
                    Ok(Value::Str(raw.to_string()))
                } else {
                    Err(Rejected(
                        "argument must be a version: three numbers, as 7.0.15".into(),
                    ))
                }
            }
            Kind::Events => match hypercache_cluster::notify::parse_flags(raw.as_bytes()) {
                Some(_) => Ok(Value::Str(raw.to_string())),
                None => Err(Rejected(
                    "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".into(),
                )),
            },
            Kind::Bool => match raw.to_ascii_lowercase().as_str() {
                "yes" => Ok(Value::Int(1)),
                "no" => Ok(Value::Int(0)),
                _ => Err(Rejected("argument must be 'yes' or 'no'".into())),
            },
            Kind::Enum(words) => {
                let l = raw.to_ascii_lowercase();
                if words.contains(&l.as_str()) {
                    Ok(Value::Str(l))
                } else {
                    Err(Rejected(
                        "argument(s) must be one of the following: ".to_string()
                            + &words.join(", "),
                    ))
                }
            }
        }
    }

    /// Validates and stores `raw`.
    pub fn apply(&self, c: &mut Config, raw: &str) -> Result<(), Rejected> {
        let v = self.check(raw)?;
        (self.set)(c, v);
        Ok(())
    }

    fn accepted(&self) -> String {
        match self.kind {
            Kind::Int(min, max) => format!("an integer from {min} to {max}"),
            Kind::Memory(min, _) => {
                format!("a byte size such as 512mb or 1gb, at least {min} bytes")
            }
            Kind::MemoryOrPercent => {
                "a byte size such as 512mb, or a percentage of maxmemory such as 10%".into()
            }
            Kind::Str => "text".into(),
            Kind::Ratio => "a number from 0 to 1".into(),
            Kind::SavePoints => "pairs of seconds and changes (\"3600 1 300 100\")".into(),
            Kind::Enum(w) => format!("one of: {}", w.join(", ")),
            Kind::Bool => "yes or no".into(),
            Kind::BufferLimit => "<class> <hard> <soft> <seconds> groups".into(),
            Kind::Events => "keyspace event classes (Ag$lshzxeKEtmdn)".into(),
            Kind::Version => "a version (7.0.15)".into(),
        }
    }
}

impl Config {
    /// `maxmemory-clients` in bytes (0: no limit; a percentage of an unlimited `maxmemory`
    /// is no limit either).
    pub fn clients_limit(&self) -> u64 {
        if self.maxmemory_clients < 0 {
            self.maxmemory / 100 * self.maxmemory_clients.unsigned_abs()
        } else {
            self.maxmemory_clients as u64
        }
    }

    /// Whether writes are refused for want of Redis replicas (`min-replicas-to-write`): this
    /// node never has any.
    pub fn writes_want_replicas(&self) -> bool {
        self.min_replicas_to_write > 0 && self.min_replicas_max_lag > 0
    }

    /// The HTTP port: `http-port`, or the client port ([`Config::client_port`]) + 3000 (minus 3000 where that would not
    /// fit); 0 when it is off.
    pub fn http_port(&self) -> u16 {
        self.http_port.unwrap_or_else(|| {
            let port = self.client_port();
            port.checked_add(3000).unwrap_or(port.wrapping_sub(3000))
        })
    }

    /// The port clients use: `port`, or `tls-port` when the plain-text port is off.
    pub fn client_port(&self) -> u16 {
        if self.port != 0 {
            self.port
        } else {
            self.tls_port
        }
    }

    /// The cluster port: `cluster-port`, or the client port + 10000.
    pub fn cluster_port(&self) -> u16 {
        if self.cluster_port != 0 {
            self.cluster_port
        } else {
            self.client_port().wrapping_add(10000)
        }
    }

    /// The address peers reach this node's cluster port at (`advertise`, else `bind`, with the
    /// cluster port unless `advertise` names one).
    pub fn cluster_address(&self) -> String {
        let host = if self.advertise.is_empty() {
            &self.bind
        } else {
            &self.advertise
        };
        if host.contains(':') && !host.starts_with('[') && host.matches(':').count() == 1 {
            host.clone()
        } else {
            format!("{host}:{}", self.cluster_port())
        }
    }

    /// The client address this node advertises (`advertise` host, else `bind`, client port).
    pub fn client_address(&self) -> String {
        let host = if self.advertise.is_empty() {
            self.bind.as_str()
        } else {
            self.advertise.split(':').next().unwrap_or(&self.bind)
        };
        format!("{host}:{}", self.client_port())
    }

    /// This node's id: `node-id`, else derived from the advertised cluster address.
    pub fn node_id(&self) -> String {
        if self.node_id.is_empty() {
            self.cluster_address()
        } else {
            self.node_id.clone()
        }
    }

    /// The seed addresses, trimmed, empty entries dropped.
    pub fn seed_list(&self) -> Vec<String> {
        self.seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// What entries' access fields record under the current policy.
    pub fn access_mode(&self) -> hypercache_cluster::op::AccessMode {
        self.maxmemory_policy
            .access_mode(self.lfu_log_factor as u32, self.lfu_decay_time as u32)
    }

    /// Sets `name` from startup input (file, environment or flag).
    pub fn set(&mut self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let p = param(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        if matches!(p.name, "appendonly" | "replicaof" | "slaveof" | "daemonize") {
            return Err(ConfigError::Unknown(name.to_string()));
        }
        p.apply(self, raw)
            .map_err(|_| ConfigError::Invalid(p.name, raw.to_string(), p.accepted()))
    }

    /// Builds the configuration from the command line (without the program name) and the
    /// environment, reading `--config FILE` first if given.
    pub fn load(args: &[String], env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut flags = Vec::new();
        let mut file = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(ConfigError::Other(format!(
                    "unexpected argument '{a}': settings are given as --name value"
                )));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| ConfigError::Other(format!("--{name} needs a value")))?;
                    (name.to_string(), v.clone())
                }
            };
            if name == "config" {
                file = Some(value);
            } else {
                flags.push((name, value));
            }
        }
        let mut c = Config::default();
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Other(format!("cannot read config file '{path}': {e}"))
            })?;
            let table: toml::Table = text.parse().map_err(|e| {
                ConfigError::Other(format!("config file '{path}' is not valid TOML: {e}"))
            })?;
            for (k, v) in table {
                let raw = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => if b { "yes" } else { "no" }.to_string(),
                    other => {
                        return Err(ConfigError::Other(format!(
                            "config file '{path}': '{k}' has an unsupported value {other}"
                        )))
                    }
                };
                c.set(&k, &raw)?;
            }
            c.config_file = Some(path.clone());
        }
        for (k, v) in env {
            if let Some(name) = k.strip_prefix("HYPERCACHE_") {
                if name == "CONFIG" {
                    continue;
                }
                c.set(name, v)?;
            }
        }
        for (k, v) in flags {
            c.set(&k, &v)?;
        }
        c.check().map_err(ConfigError::Other)?;
        Ok(c)
    }

    /// Checks the settings that depend on each other: a tombstone must outlive every hint and
    /// two anti-entropy rounds (at the longest backoff), or a late hint or a replica that missed
    /// the delete could bring the deleted key back after its tombstone is gone.
    pub fn check(&self) -> Result<(), String> {
        if self.port == 0 && self.tls_port == 0 {
            return Err("port and tls-port are both 0: the node would have no client port".into());
        }
        // A value travels between nodes in one frame (a forward, a replica's copy, a hint): one
        // past the frame limit would close every link it is sent on, again at each replay.
        let cluster_max =
            u64::from(hypercache_cluster::wire::WireLimits::default().max_body) - (1 << 20);
        if !self.seed_list().is_empty() && self.proto_max_bulk_len > cluster_max {
            return Err(format!(
                "proto-max-bulk-len ({} bytes) must be at most {} bytes (1023mb) in a cluster: a \
                 value travels between nodes in one frame of at most 1 GiB",
                self.proto_max_bulk_len, cluster_max
            ));
        }
        if !self.save_points.is_empty() && !self.seed_list().is_empty() {
            return Err(
                "save points are not available in a cluster: its replicas are its durability (docs/persistence.md)"
                    .into(),
            );
        }
        if self.dbfilename.contains('/') {
            return Err("dbfilename can't be a path, just a filename".into());
        }
        if !std::path::Path::new(&self.dir).is_dir() {
            return Err(format!("dir '{}': No such directory", self.dir));
        }
        if !self.otlp_endpoint.is_empty() && !self.otlp_endpoint.starts_with("http://") {
            return Err(format!(
                "otlp-endpoint must be an http:// URL of an OTLP/HTTP receiver (such as http://127.0.0.1:4318), got {}",
                self.otlp_endpoint
            ));
        }
        if !self.otlp_endpoint.is_empty() && !cfg!(feature = "telemetry") {
            return Err(
                "otlp-endpoint is set but this build has no telemetry (cargo feature `telemetry`)"
                    .into(),
            );
        }
        if self.probe_timeout_ms >= self.probe_interval_ms {
            return Err(format!(
                "probe-timeout ({} ms) must be below probe-interval ({} ms)",
                self.probe_timeout_ms, self.probe_interval_ms
            ));
        }
        let rounds = 2 * self.anti_entropy_interval_ms * self.anti_entropy_max_backoff;
        let need_ms = self.hint_ttl * 1000 + rounds;
        if self.tombstone_ttl * 1000 <= need_ms {
            return Err(format!(
                "tombstone-ttl ({} s) must exceed hint-ttl ({} s) plus two anti-entropy rounds \
                 at the longest backoff (2 x anti-entropy-interval {} ms x anti-entropy-max-backoff \
                 {} = {} s): raise tombstone-ttl above {} s, or lower the others",
                self.tombstone_ttl,
                self.hint_ttl,
                self.anti_entropy_interval_ms,
                self.anti_entropy_max_backoff,
                rounds / 1000,
                need_ms.div_ceil(1000)
            ));
        }
        Ok(())
    }

    /// The request parser's limits for these settings.
    pub fn limits(&self) -> hypercache_resp::Limits {
        hypercache_resp::Limits {
            max_bulk_len: self.proto_max_bulk_len,
            max_multibulk_len: self.proto_max_multibulk_len,
            max_inline_len: self.proto_max_inline_len as usize,
            max_query_buffer: self.client_query_buffer_limit.min(usize::MAX as u64) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn save_points_parse_as_redis_writes_them_and_a_cluster_refuses_them() {
        let c = Config::load(&s(&["--save", "3600 1 300 100"]), &[]).unwrap();
        assert_eq!(c.save_points, vec![(3600, 1), (300, 100)]);
        assert_eq!(
            crate::persist::render_points(&c.save_points),
            "3600 1 300 100"
        );
        assert!(Config::load(&s(&["--save", "3600"]), &[]).is_err());
        assert!(Config::load(&s(&["--save", "x 1"]), &[]).is_err());
        assert_eq!(
            Config::load(&s(&["--save", ""]), &[]).unwrap().save_points,
            vec![]
        );
        let cluster = Config::load(
            &s(&[
                "--save",
                "60 1",
                "--seeds",
                "127.0.0.1:17000,127.0.0.1:17001",
            ]),
            &[],
        );
        assert!(cluster.is_err(), "{cluster:?}");
        assert!(Config::load(&s(&["--dbfilename", "a/b.rdb"]), &[]).is_err());
    }

    #[test]
    fn flags_env_and_precedence() {
        let env = vec![
            ("HYPERCACHE_PORT".to_string(), "7000".to_string()),
            ("HYPERCACHE_TIMEOUT".into(), "5".into()),
        ];
        let c = Config::load(&s(&["--port", "7001", "--maxclients=20"]), &env).unwrap();
        assert_eq!(c.port, 7001);
        assert_eq!(c.timeout, 5);
        assert_eq!(c.maxclients, 20);
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let e = Config::load(&s(&["--port", "abc"]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'port'") && e.contains("0 to 65535"), "{e}");
        let e = Config::load(&s(&["--log-format", "xml"]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("text, json"), "{e}");
        let e = Config::load(&s(&["--nope", "1"]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown setting 'nope'"), "{e}");
    }

    #[test]
    fn cluster_addresses_and_defaults() {
        let c = Config::load(&s(&["--port", "7001", "--bind", "127.0.0.2"]), &[]).unwrap();
        assert_eq!(c.cluster_address(), "127.0.0.2:17001");
        assert_eq!(c.node_id(), "127.0.0.2:17001");
        assert_eq!(
            (c.read_consistency, c.write_consistency),
            (Level::Quorum, Level::Quorum),
            "read-after-write through any node by default"
        );
        let c = Config::load(
            &s(&[
                "--cluster-port=9000",
                "--advertise=127.0.0.9",
                "--seeds",
                " a:1, ,b:2",
                "--write-consistency=ALL",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(c.cluster_address(), "127.0.0.9:9000");
        assert_eq!(c.seed_list(), ["a:1", "b:2"]);
        assert_eq!(c.write_consistency, Level::All);
        let e = Config::load(&s(&["--read-consistency", "two"]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("one, quorum, all"), "{e}");
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("512mb"), Some(512 << 20));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("2GB"), Some(2 << 30));
        assert_eq!(parse_memory("12"), Some(12));
        assert_eq!(parse_memory("x"), None);
        assert_eq!(parse_memory("-1"), None);
    }

    #[test]
    fn toml_file() {
        let dir = std::env::temp_dir().join(format!("hc-config-test-{}", std::process::id()));
        std::fs::write(
            &dir,
            "port = 7100\nrequirepass = \"s3cret\"\nproto_max_bulk_len = \"2mb\"\n",
        )
        .unwrap();
        let c = Config::load(&s(&["--config", dir.to_str().unwrap()]), &[]).unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(
            (c.port, c.requirepass.as_str(), c.proto_max_bulk_len),
            (7100, "s3cret", 2 << 20)
        );
    }

    /// In a cluster a value must fit in one inter-node frame (1 GiB); a single node takes any.
    #[test]
    fn a_clusters_bulk_limit_fits_in_a_frame() {
        let seeds = ["--seeds", "127.0.0.1:17001"];
        let big = |v: &str| s(&[seeds[0], seeds[1], "--proto-max-bulk-len", v]);
        assert!(Config::load(&big("1023mb"), &[]).is_ok());
        let e = Config::load(&big("1024mb"), &[]).unwrap_err().to_string();
        assert!(
            e.contains("must be at most 1072693248 bytes (1023mb) in a cluster"),
            "{e}"
        );
        assert!(Config::load(&s(&["--proto-max-bulk-len", "4gb"]), &[]).is_ok());
    }

    #[test]
    fn tombstones_must_outlive_hints_and_two_anti_entropy_rounds() {
        // Defaults: 3600 s > 1800 s + 2 x 30 s x 8.
        assert!(Config::load(&[], &[]).is_ok());
        let e = Config::load(&s(&["--tombstone-ttl", "2000"]), &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(
                "tombstone-ttl (2000 s) must exceed hint-ttl (1800 s) plus two anti-entropy rounds"
            ),
            "{text}"
        );
        assert!(text.contains("raise tombstone-ttl above 2280 s"), "{text}");
        // Exactly at the bound is not enough; one second more is.
        assert!(Config::load(&s(&["--tombstone-ttl", "2280"]), &[]).is_err());
        assert!(Config::load(&s(&["--tombstone-ttl", "2281"]), &[]).is_ok());
        // Lowering the others works too; automatic rounds off count as no rounds.
        let c = Config::load(
            &s(&[
                "--tombstone-ttl",
                "100",
                "--hint-ttl",
                "60",
                "--anti-entropy-interval",
                "0",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(c.tombstone_ttl, 100);
    }
}
