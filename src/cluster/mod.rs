//! The cluster's IO edge: members and their links, the slot ring as this node sees it, and the
//! async driver of the coordinator's pure decisions (`hypercache_cluster::coord`).
//!
//! - [`link`]: TCP links between nodes: handshake, multiplexed requests, coalesced writes,
//!   reconnect with backoff.
//! - [`exec`]: running a keyed operation at the requested consistency (local, forwarded or
//!   fanned out), serving peers' requests, and the cluster-wide commands.
//!
//! Membership is static in this version: the members are the `--seeds` (plus this node). A member
//! is live while its link is connected; a member whose link is down is skipped when choosing
//! coordinators and fails its share of a fan-out (hinted handoff and SWIM failure detection come
//! with the membership work).

pub mod exec;
pub mod link;

use std::sync::Arc;
use std::time::Duration;

use hypercache_cluster::msg::Level;
use hypercache_cluster::ring::{MemberIdx, Ring};
use hypercache_cluster::slot::Slot;
use parking_lot::RwLock;

use crate::config::Config;
use link::Peer;

/// The member set and slot ring as this node currently sees it (replaced as a whole when a peer's
/// handshake reveals an id other than the one assumed from its address).
#[derive(Debug)]
pub struct View {
    /// Preference lists.
    pub ring: Ring,
    /// This node's index in the ring.
    pub me: MemberIdx,
    /// For each ring member, its index in [`Cluster::peers`] (`None` for this node, which is
    /// `me`; a member no peer answers to any more is `None` too, and never live).
    pub peer_of: Vec<Option<usize>>,
}

impl View {
    /// Whether member `m` is this node or a peer whose link is up.
    pub fn live(&self, cl: &Cluster, m: MemberIdx) -> bool {
        if m == self.me {
            return true;
        }
        match self.peer_of.get(usize::from(m)) {
            Some(Some(p)) => cl.peers[*p].is_up(),
            _ => false,
        }
    }

    /// The preference list of `slot`.
    pub fn prefs(&self, slot: Slot) -> &[MemberIdx] {
        self.ring.preference(slot)
    }
}

/// This node's part of the cluster.
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    /// `cluster-name`.
    pub name: String,
    /// Address peers reach us at.
    pub cluster_addr: String,
    /// Address clients reach us at.
    pub client_addr: String,
    /// The other members (one per seed that is not this node), in seed order.
    pub peers: Vec<Arc<Peer>>,
    /// Requested copies per slot (the ring caps it at the member count).
    pub replication: usize,
    view: RwLock<Arc<View>>,
    /// Serializes [`Cluster::rebuild`]: reading the peers' ids and publishing the ring built from
    /// them must not interleave with another rebuild, or an older member set could win.
    rebuild_lock: parking_lot::Mutex<()>,
    /// Counters and latencies.
    pub metrics: Arc<crate::metrics::Registry>,
    /// Slots still catching up after the start ([`hypercache_cluster::repair::CatchUp`]).
    pub catching: hypercache_cluster::slot::SlotSet,
    /// The repair machine: hints, anti-entropy, catch-up (driven by [`exec::repair_task`]).
    pub repair: parking_lot::Mutex<hypercache_cluster::repair::Repair>,
    repair_tx: tokio::sync::mpsc::UnboundedSender<exec::RepairCmd>,
    repair_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<exec::RepairCmd>>>,
    /// The per-key queue of read-modify-write rounds coordinated here.
    pub gate: hypercache_cluster::node::Gate,
    /// Next machine token.
    next_token: std::sync::atomic::AtomicU64,
    /// Machines in flight that a gate wake-up may be for: token -> their answer channel.
    wakers: parking_lot::Mutex<std::collections::HashMap<u64, exec::Answers>>,
}

impl Cluster {
    /// The cluster part of a node configured with `config`, or `None` for a single node (no
    /// seeds other than itself).
    pub fn from_config(
        config: &Config,
        metrics: Arc<crate::metrics::Registry>,
    ) -> Option<Arc<Cluster>> {
        let me = config.cluster_address();
        let seeds: Vec<String> = config
            .seed_list()
            .into_iter()
            .filter(|s| *s != me)
            .collect();
        if seeds.is_empty() {
            return None;
        }
        let mut unique = Vec::new();
        for s in seeds {
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        let peers: Vec<Arc<Peer>> = unique.into_iter().map(|a| Arc::new(Peer::new(a))).collect();
        let (hints, sync) = exec::repair_settings(config);
        let (repair_tx, repair_rx) = tokio::sync::mpsc::unbounded_channel();
        let cl = Cluster {
            node_id: config.node_id(),
            name: config.cluster_name.clone(),
            cluster_addr: me,
            client_addr: config.client_address(),
            peers,
            replication: config.replication as usize,
            view: RwLock::new(Arc::new(View {
                ring: Ring::new::<&str>(&[], 1),
                me: 0,
                peer_of: Vec::new(),
            })),
            metrics,
            rebuild_lock: parking_lot::Mutex::new(()),
            catching: Default::default(),
            repair: parking_lot::Mutex::new(hypercache_cluster::repair::Repair::new(hints, sync)),
            repair_tx,
            repair_rx: parking_lot::Mutex::new(Some(repair_rx)),
            gate: Default::default(),
            next_token: std::sync::atomic::AtomicU64::new(1),
            wakers: Default::default(),
        };
        cl.rebuild();
        Some(Arc::new(cl))
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    /// Recomputes the ring from this node and the peers' ids (peers known to be this node under
    /// another address are left out).
    pub fn rebuild(&self) {
        let _serial = self.rebuild_lock.lock();
        let mut ids: Vec<String> = vec![self.node_id.clone()];
        for p in &self.peers {
            if !p.is_self_alias() {
                ids.push(p.id());
            }
        }
        let ring = Ring::new(&ids, self.replication);
        let peer_of = ring
            .members()
            .iter()
            .map(|id| {
                if *id == self.node_id {
                    None
                } else {
                    self.peers
                        .iter()
                        .position(|p| !p.is_self_alias() && p.id() == *id)
                }
            })
            .collect();
        let me = ring
            .members()
            .iter()
            .position(|id| *id == self.node_id)
            .unwrap_or(0) as MemberIdx;
        *self.view.write() = Arc::new(View { ring, me, peer_of });
    }

    /// The peer behind ring member `m` (`None` for this node, or a member no peer answers to).
    pub fn peer(&self, view: &View, m: MemberIdx) -> Option<&Arc<Peer>> {
        if m == view.me {
            return None;
        }
        view.peer_of
            .get(usize::from(m))
            .copied()
            .flatten()
            .map(|i| &self.peers[i])
    }

    /// Whether every slot of this node has caught up since its start.
    pub fn is_synced(&self) -> bool {
        self.catching.is_empty()
    }

    /// Whether this node's copy of `slot` has caught up since its start.
    pub fn synced(&self, slot: hypercache_cluster::slot::Slot) -> bool {
        !self.catching.contains(slot)
    }

    /// The repair machine's metrics: `dist.hinted.*` (each also per source), `dist.merkle.*`,
    /// `dist.auto_sync.*`, `dist.catch_up.slots`.
    pub fn repair_pairs(&self) -> Vec<(String, u64)> {
        use hypercache_cluster::repair::HintSource;
        let r = self.repair.lock();
        let h = r.hints.counters();
        let (bytes, by_source) = r.hints.bytes();
        let c = r.counters();
        let mut v: Vec<(String, u64)> = Vec::new();
        let sum = |a: [u64; 2]| a[0] + a[1];
        for (name, per) in [
            ("queued", h.queued),
            ("replayed", h.replayed),
            ("expired", h.expired),
            ("dropped", h.dropped),
            ("global_dropped", h.global_dropped),
            ("bytes", by_source),
        ] {
            v.push((format!("dist.hinted.{name}"), sum(per)));
            for src in HintSource::ALL {
                v.push((
                    format!("dist.hinted.{name}.{}", src.name()),
                    per[src as usize],
                ));
            }
        }
        debug_assert_eq!(bytes, sum(by_source));
        v.push(("dist.hinted.held".into(), r.hints.len() as u64));
        for (name, x) in [
            ("dist.merkle.syncs", c.syncs),
            ("dist.merkle.failures", c.failures),
            ("dist.merkle.keys_pulled", c.keys_pulled),
            ("dist.merkle.keys_pushed", c.keys_pushed),
            ("dist.merkle.bytes", c.bytes),
            ("dist.merkle.last_diff_ns", c.last_diff_ns),
            ("dist.auto_sync.backoff_factor", c.backoff_factor),
            ("dist.auto_sync.clean_ticks", c.clean_ticks),
            ("dist.auto_sync.last_ns", c.last_ns),
            ("dist.catch_up.slots", self.catching.len() as u64),
            ("dist.catch_up.not_live", c.not_live),
        ] {
            v.push((name.into(), x));
        }
        v
    }

    /// Hands the repair task an input.
    pub fn repair_cmd(&self, cmd: exec::RepairCmd) {
        let _ = self.repair_tx.send(cmd);
    }

    /// A new machine token (unique while the node runs).
    pub fn token(&self) -> u64 {
        self.next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Lets machine `token` be woken through `tx` (see [`Cluster::wake`]).
    pub fn register(&self, token: u64, tx: exec::Answers) {
        self.wakers.lock().insert(token, tx);
    }

    /// Forgets machine `token`.
    pub fn unregister(&self, token: u64) {
        self.wakers.lock().remove(&token);
    }

    /// Wakes machine `token` (its turn at the gate).
    pub fn wake(&self, token: u64) {
        if let Some(inbox) = self.wakers.lock().get(&token) {
            inbox.push(usize::MAX, None);
        }
    }

    /// Members currently live, this node included.
    pub fn live_members(&self) -> usize {
        1 + self.peers.iter().filter(|p| p.is_up()).count()
    }
}

/// Per-request settings a coordinator works with.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    /// Read consistency.
    pub read: Level,
    /// Write consistency.
    pub write: Level,
    /// Request deadline.
    pub timeout: Duration,
}

/// Starts the cluster port listener and one link task per peer.
pub async fn start(
    shared: Arc<crate::state::Shared>,
    cl: Arc<Cluster>,
) -> std::io::Result<tokio::net::TcpListener> {
    let bind = {
        let c = shared.config.read();
        format!("{}:{}", c.bind, c.cluster_port())
    };
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    for i in 0..cl.peers.len() {
        shared
            .tasks
            .spawn(link::run_outbound(shared.clone(), cl.clone(), i));
    }
    exec::start_catch_up(&shared, &cl);
    if let Some(rx) = cl.repair_rx.lock().take() {
        shared
            .tasks
            .spawn(exec::repair_task(shared.clone(), cl.clone(), rx));
    }
    shared
        .store
        .set_tombstones(cl.view().ring.replicas() > 1 || !cl.peers.is_empty());
    shared
        .store
        .set_tombstone_ttl(shared.config.read().tombstone_ttl * 1000);
    tracing::info!(component = "cluster", node_id = %cl.node_id, cluster = %cl.name, addr = %cl.cluster_addr,
        peers = cl.peers.len(), replication = cl.replication, "cluster port listening");
    Ok(listener)
}
