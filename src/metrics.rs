//! The node's one metrics registry ([`Registry`]): the server's counters (INFO `stats`), the
//! cluster's `dist.*` counters and latency histograms (INFO `cluster`, `HC.METRICS`), the peak of
//! `used_memory`, and a flat [`Registry::snapshot`] of all of them with the store's own figures,
//! which `HC.METRICS` reports and an exporter (Prometheus, OpenTelemetry) reads. Machines only
//! return counts ([`hypercache_cluster::node::Counts`]); the driver adds them here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A latency histogram: log-scale buckets of microseconds, four per power of two (so a percentile
/// is exact to within 19%), lock-free.
pub struct Histogram {
    buckets: [AtomicU64; 160],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

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
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in microseconds (0 if empty).
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i);
            }
        }
        Self::upper(counts.len() - 1)
    }
}

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
    /// Cluster-wide commands (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL) run from here.
    pub broadcasts: AtomicU64,
    /// Blind writes stamped again above a version a replica refused them with.
    pub restamps: AtomicU64,
    /// Prepare rounds of read-modify-writes retried after a refusal.
    pub prepare_retries: AtomicU64,
    /// Latency of reads this node answered (client-facing, including forwards).
    pub read_latency: Histogram,
    /// Latency of writes this node answered.
    pub write_latency: Histogram,
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
        a(&self.forwards, c.forwards);
        a(&self.forward_retries, c.forward_retries);
        a(&self.write_attempts, c.write_attempts);
        a(&self.write_acks, c.write_acks);
        a(&self.replica_fanout, c.replica_fanout);
        a(&self.read_repairs, c.read_repairs);
        a(&self.restamps, c.restamps);
        a(&self.prepare_retries, c.prepare_retries);
        a(&self.transport_errors, c.transport_errors);
    }
}

/// Counters reported by INFO `stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections refused at `maxclients`.
    pub rejected_connections: AtomicU64,
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
}

impl Registry {
    /// Records a `used_memory` sample; returns it.
    pub fn sample_memory(&self, used: u64) -> u64 {
        self.peak_memory.fetch_max(used, Ordering::Relaxed);
        used
    }

    /// Every metric as flat `(name, value)` pairs in a stable order: `server.*`, `store.*`,
    /// `memory.*`, and in a cluster `dist.*`.
    pub fn snapshot(
        &self,
        store: &hypercache_cluster::Store,
        used_memory: u64,
        cluster: bool,
    ) -> Vec<(String, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.server;
        let st = store.stats();
        let mut v: Vec<(String, u64)> = [
            ("server.connections_received", g(&s.connections_received)),
            ("server.rejected_connections", g(&s.rejected_connections)),
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
            ("store.tombstones", store.tombstones()),
            ("store.promises", store.promises()),
            ("memory.used", used_memory),
            ("memory.peak", g(&self.peak_memory).max(used_memory)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        if cluster {
            v.extend(self.dist.pairs());
        }
        v
    }
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl DistMetrics {
    /// Flat `(name, value)` pairs, `dist.` names, in a stable order.
    pub fn pairs(&self) -> Vec<(String, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut v: Vec<(String, u64)> = [
            ("dist.write.attempts", g(&self.write_attempts)),
            ("dist.write.acks", g(&self.write_acks)),
            ("dist.write.quorum_failures", g(&self.write_quorum_failures)),
            ("dist.read.quorum_failures", g(&self.read_quorum_failures)),
            ("dist.read.fanouts", g(&self.read_fanouts)),
            ("dist.read.local", g(&self.local_reads)),
            ("dist.read.repairs", g(&self.read_repairs)),
            ("dist.forward.sent", g(&self.forwards)),
            ("dist.forward.retries", g(&self.forward_retries)),
            ("dist.forward.received", g(&self.forwarded_in)),
            ("dist.replica.fanout", g(&self.replica_fanout)),
            ("dist.transport.errors", g(&self.transport_errors)),
            ("dist.repair.skipped_full", g(&self.repair_skipped_full)),
            ("dist.transport.timeouts", g(&self.transport_timeouts)),
            ("dist.link.established", g(&self.links_established)),
            ("dist.link.handshake_failures", g(&self.handshake_failures)),
            ("dist.broadcasts", g(&self.broadcasts)),
            ("dist.write.restamps", g(&self.restamps)),
            ("dist.write.prepare_retries", g(&self.prepare_retries)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        for (name, h) in [
            ("read", &self.read_latency),
            ("write", &self.write_latency),
            ("forward", &self.forward_latency),
            ("peer", &self.peer_latency),
        ] {
            v.push((format!("dist.latency.{name}.count"), h.count()));
            for (q, label) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                v.push((format!("dist.latency.{name}.{label}_us"), h.quantile(q)));
            }
        }
        v
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
}
