//! The cluster's IO edge: members and their links, the slot ring as this node sees it, and the
//! async driver of the coordinator's pure decisions (`hypercache_cluster::coord`).
//!
//! - [`swim`]: the membership task: SWIM datagrams on the cluster port (UDP), the
//!   [`Membership`] machine's timers, a link per member, and the ring changes it reports.
//! - [`link`]: TCP links between nodes: handshake, multiplexed requests, coalesced writes,
//!   reconnect with backoff.
//! - [`exec`]: running a keyed operation at the requested consistency (local, forwarded or
//!   fanned out), serving peers' requests, repair, and the cluster-wide commands.
//!
//! Members are numbered by this node's [`Roster`] (this node is 0) and keep their number while
//! the node runs. A member is live while SWIM sees it alive and its link is up; a member that
//! is not live is skipped when choosing coordinators and its writes become hints. Only the
//! ring set ([`Membership::ring`]) decides slot ownership: a new ring is built off the async
//! workers and its transfers planned ([`hypercache_cluster::rebalance`]).

pub mod exec;
pub mod link;
pub mod script;
pub mod settings;
pub mod swim;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hypercache_cluster::member::Membership;
use hypercache_cluster::msg::Level;
use hypercache_cluster::ring::{MemberIdx, Placement, Ring, Roster};
use hypercache_cluster::slot::{Slot, SLOTS};
use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use link::Peer;

/// The slot placement and the members as this node currently sees them (replaced as a whole on
/// every ring change or new member).
pub struct View {
    /// Preference lists, in roster numbering.
    pub placement: Placement,
    /// This node's number (always 0).
    pub me: MemberIdx,
    /// The peer behind each roster number (`None` for this node).
    pub peers: Vec<Option<Arc<Peer>>>,
    /// Whether this node has had a ring (with others, or alone after the join timeout): before,
    /// it answers for no slot.
    pub joined: bool,
    /// The ring's digest (heartbeat replies carry it; see `HC.DRAIN STATUS`).
    pub ring_digest: u64,
}

impl View {
    /// Whether member `m` is this node or a peer SWIM sees alive whose link is up.
    pub fn live(&self, _cl: &Cluster, m: MemberIdx) -> bool {
        if m == self.me {
            return true;
        }
        match self.peers.get(usize::from(m)) {
            Some(Some(p)) => p.is_live(),
            _ => false,
        }
    }

    /// The preference list of `slot`.
    pub fn prefs(&self, slot: Slot) -> &[MemberIdx] {
        self.placement.preference(slot)
    }

    /// The ring (member ids, replicas).
    pub fn ring(&self) -> &Ring {
        self.placement.ring()
    }

    /// The ring set's epoch.
    pub fn epoch(&self) -> u64 {
        self.placement.epoch
    }

    /// Member `m`'s node id.
    pub fn id_of(&self, cl: &Cluster, m: MemberIdx) -> String {
        if m == self.me {
            return cl.node_id.clone();
        }
        match self.peers.get(usize::from(m)) {
            Some(Some(p)) => p.id.clone(),
            _ => String::new(),
        }
    }
}

/// This node's part of the cluster.
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    /// `cluster-name`.
    pub name: String,
    /// The keys of `cluster-secret` (`None`: no secret; peers are checked by name only).
    pub secret: Option<hypercache_cluster::wire::Secret>,
    /// Address peers reach us at.
    pub cluster_addr: String,
    /// Address clients reach us at.
    pub client_addr: String,
    /// The seeds (cluster addresses), this node's own left out.
    pub seeds: Vec<String>,
    /// Requested copies per slot (the ring caps it at the member count).
    pub replication: usize,
    roster: Mutex<Roster>,
    peers: RwLock<Vec<Option<Arc<Peer>>>>,
    view: RwLock<Arc<View>>,
    /// The membership machine (driven by [`swim::run`]).
    pub membership: Mutex<Membership>,
    /// Whether `HC.DRAIN` was called.
    pub draining: AtomicBool,
    /// The epoch of the first ring without this node after `HC.DRAIN` (0: none yet).
    pub drain_epoch: AtomicU64,
    /// The current view's epoch, for the links to stamp on every message.
    epoch: Arc<AtomicU64>,
    /// Since when every live member has reported this node's ring (ms; 0: not now).
    pub agreed_since: AtomicU64,
    /// Counters and latencies.
    pub metrics: Arc<crate::metrics::Registry>,
    /// Slots still catching up (after the start or a ring change).
    pub catching: hypercache_cluster::slot::SlotSet,
    /// The repair machine: hints, anti-entropy, catch-up and transfers (driven by
    /// [`exec::repair_task`]).
    pub repair: parking_lot::Mutex<hypercache_cluster::repair::Repair>,
    repair_tx: tokio::sync::mpsc::UnboundedSender<exec::RepairCmd>,
    repair_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<exec::RepairCmd>>>,
    member_tx: tokio::sync::mpsc::UnboundedSender<swim::MemberCmd>,
    member_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<swim::MemberCmd>>>,
    /// The per-key queue of read-modify-write rounds coordinated here.
    pub gate: hypercache_cluster::node::Gate,
    /// Next machine token.
    next_token: std::sync::atomic::AtomicU64,
    /// Machines in flight that a gate wake-up may be for: token -> their answer channel.
    wakers: parking_lot::Mutex<std::collections::HashMap<u64, exec::Answers>>,
    /// Bytes over the links with each member, by node id.
    traffic: parking_lot::Mutex<std::collections::HashMap<String, Arc<link::Traffic>>>,
    /// This node's copy of the cluster-wide settings (the ACL users and the function
    /// libraries, [`settings`]). Held while a change of the users is applied, so that changes
    /// apply in version order.
    pub settings: parking_lot::Mutex<hypercache_cluster::settings::Settings>,
    /// Held while the function libraries change or a peer's are installed ([`settings`]): one
    /// at a time, and never under the settings lock (the Lua VM may be busy with a script).
    pub functions: parking_lot::Mutex<()>,
    /// The digest of the cluster's libraries installed in this node's VM (the machine's
    /// [`hypercache_cluster::settings::Settings::digest`] when they were installed; 0: none).
    pub functions_applied: parking_lot::Mutex<u64>,
    /// Set once the settings machine says this node heard a member
    /// ([`hypercache_cluster::settings::Settings::may_change`]): a copy of its answer for the
    /// client path, one atomic load per request ([`crate::session::Session::must_hear_settings`]).
    pub settings_heard: AtomicBool,
}

impl Cluster {
    /// The cluster part of a node configured with `config`, or `None` for a single node (no
    /// seeds). A node whose only seed is itself is the first member of a cluster that others
    /// join.
    pub fn from_config(
        config: &Config,
        metrics: Arc<crate::metrics::Registry>,
    ) -> Option<Arc<Cluster>> {
        let all = config.seed_list();
        if all.is_empty() {
            return None;
        }
        let me = config.cluster_address();
        let mut seeds: Vec<String> = Vec::new();
        for s in all {
            if s != me && !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        let (hints, sync) = exec::repair_settings(config);
        let (repair_tx, repair_rx) = tokio::sync::mpsc::unbounded_channel();
        let (member_tx, member_rx) = tokio::sync::mpsc::unbounded_channel();
        let node_id = config.node_id();
        let now = crate::state::now_ms();
        let ident = hypercache_cluster::member::Ident {
            id: node_id.clone(),
            addr: me.clone(),
            client: config.client_address(),
            // A restart wins over the identity it had before.
            gen: now,
            flags: 0,
        };
        let membership = Membership::new(
            ident,
            &seeds,
            swim::settings(config),
            xxhash_rust::xxh3::xxh3_64(config.node_id().as_bytes()) ^ now,
            now,
        );
        let mut roster = Roster::new(&node_id);
        // With seeds to join, nothing is answered before the first ring with them: no ring.
        let joined = seeds.is_empty();
        let first: Vec<&str> = if joined {
            vec![node_id.as_str()]
        } else {
            Vec::new()
        };
        let placement = Placement::new(Ring::new(&first, 1), 0, &mut roster);
        let catching = hypercache_cluster::slot::SlotSet::default();
        if !joined {
            for s in 0..SLOTS as Slot {
                catching.set(s, true);
            }
        }
        let cl = Cluster {
            node_id,
            name: config.cluster_name.clone(),
            secret: (!config.cluster_secret.is_empty())
                .then(|| hypercache_cluster::wire::Secret::new(&config.cluster_secret)),
            cluster_addr: me,
            client_addr: config.client_address(),
            seeds,
            replication: config.replication as usize,
            roster: Mutex::new(roster),
            peers: RwLock::new(vec![None]),
            view: RwLock::new(Arc::new(View {
                ring_digest: placement.ring().digest(),
                placement,
                me: 0,
                peers: vec![None],
                joined,
            })),
            membership: Mutex::new(membership),
            draining: AtomicBool::new(false),
            drain_epoch: AtomicU64::new(0),
            epoch: Arc::new(AtomicU64::new(0)),
            agreed_since: AtomicU64::new(0),
            metrics,
            catching,
            repair: parking_lot::Mutex::new(hypercache_cluster::repair::Repair::new(hints, sync)),
            repair_tx,
            repair_rx: parking_lot::Mutex::new(Some(repair_rx)),
            member_tx,
            member_rx: parking_lot::Mutex::new(Some(member_rx)),
            gate: Default::default(),
            next_token: std::sync::atomic::AtomicU64::new(1),
            wakers: Default::default(),
            traffic: Default::default(),
            settings: Default::default(),
            functions: Default::default(),
            functions_applied: Default::default(),
            settings_heard: AtomicBool::new(false),
        };
        Some(Arc::new(cl))
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    /// The epoch the links stamp on messages.
    pub fn epoch_cell(&self) -> Arc<AtomicU64> {
        self.epoch.clone()
    }

    /// The peer behind member `m` (`None` for this node, or a number no peer has).
    pub fn peer(&self, view: &View, m: MemberIdx) -> Option<Arc<Peer>> {
        view.peers.get(usize::from(m)).cloned().flatten()
    }

    /// The roster number of member `id`, if this node knows it.
    pub fn member_idx(&self, id: &str) -> Option<MemberIdx> {
        self.roster.lock().get(id)
    }

    /// The peer with node id `id`, if any.
    pub fn peer_by_id(&self, id: &str) -> Option<Arc<Peer>> {
        let m = self.member_idx(id)?;
        self.peers.read().get(usize::from(m)).cloned().flatten()
    }

    /// Every peer this node has had, by roster number.
    pub fn all_peers(&self) -> Vec<Arc<Peer>> {
        self.peers.read().iter().flatten().cloned().collect()
    }

    /// The peer for member `id` at `addr`, made (and numbered) if new; `true` with a new one,
    /// whose link task the caller starts.
    pub fn ensure_peer(&self, id: &str, addr: &str) -> (Arc<Peer>, bool) {
        let m = self.roster.lock().number(id);
        let mut peers = self.peers.write();
        if peers.len() <= usize::from(m) {
            peers.resize(usize::from(m) + 1, None);
        }
        if let Some(p) = &peers[usize::from(m)] {
            return (p.clone(), false);
        }
        let p = Arc::new(Peer::new(id.to_string(), addr.to_string(), m));
        peers[usize::from(m)] = Some(p.clone());
        let snapshot = peers.clone();
        drop(peers);
        // The view gets the new peer (its slots come with the next ring).
        let mut v = self.view.write();
        let old = v.clone();
        *v = Arc::new(View {
            placement: old.placement.clone(),
            me: old.me,
            peers: snapshot,
            joined: old.joined,
            ring_digest: old.ring_digest,
        });
        (p, true)
    }

    /// Publishes `placement` (a new ring): returns the view it replaced.
    fn publish(&self, placement: Placement, joined: bool) -> Arc<View> {
        let peers = self.peers.read().clone();
        self.epoch.store(placement.epoch, Ordering::Relaxed);
        self.agreed_since.store(0, Ordering::Relaxed);
        let mut v = self.view.write();
        let old = v.clone();
        let ring_digest = placement.ring().digest();
        *v = Arc::new(View {
            placement,
            me: 0,
            peers,
            joined,
            ring_digest,
        });
        old
    }

    /// Numbers the members of `ring` (roster) and makes the placement of epoch `epoch`.
    pub fn placement(&self, ring: Ring, epoch: u64) -> Placement {
        Placement::new(ring, epoch, &mut self.roster.lock())
    }

    /// Whether every slot of this node is caught up.
    pub fn is_synced(&self) -> bool {
        self.catching.is_empty()
    }

    /// Whether this node's copy of `slot` has caught up since its start.
    pub fn synced(&self, slot: hypercache_cluster::slot::Slot) -> bool {
        !self.catching.contains(slot)
    }

    /// The repair machine's metrics: `dist.hinted.*` (by source), `dist.merkle.*`,
    /// `dist.auto_sync.*`, `dist.catch_up.*`, `dist.rebalance.*`, `dist.migration.*`.
    pub fn collect_repair(&self, out: &mut crate::metrics::Collected) {
        use hypercache_cluster::repair::HintSource;
        let r = self.repair.lock();
        let h = r.hints.counters();
        let (bytes, by_source) = r.hints.bytes();
        let c = r.counters();
        for (name, per) in [
            ("dist.hinted.queued", h.queued),
            ("dist.hinted.replayed", h.replayed),
            ("dist.hinted.expired", h.expired),
            ("dist.hinted.dropped", h.dropped),
            ("dist.hinted.global_dropped", h.global_dropped),
            ("dist.hinted.bytes", by_source),
        ] {
            for src in HintSource::ALL {
                out.push_labelled(name, src.name().to_string(), per[src as usize]);
            }
        }
        debug_assert_eq!(bytes, by_source[0] + by_source[1]);
        out.push("dist.hinted.held", r.hints.len() as u64);
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
            ("dist.rebalance.keys", c.rebalance_keys),
            ("dist.rebalance.entries_received", c.rebalance_entries),
            ("dist.rebalance.batches", c.rebalance_batches),
            ("dist.rebalance.throttle", c.rebalance_throttle),
            ("dist.rebalance.last_ns", c.rebalance_last_ns),
            ("dist.migration.slots_received", c.slots_received),
            ("dist.migration.slots_released", c.slots_released),
            ("dist.migration.keys_released", c.keys_released),
            ("dist.migration.failures", c.transfer_failures),
            ("dist.migration.slots_late", c.slots_late),
        ] {
            out.push(name, x);
        }
    }

    /// The membership metrics: `dist.members.*`, `dist.heartbeat.*`, `dist.nodes.removed`.
    pub fn collect_members(&self, out: &mut crate::metrics::Collected) {
        let live = self.live_members() as u64;
        let m = self.membership.lock();
        let (alive, suspect, dead) = m.census();
        let c = m.counters();
        for (name, x) in [
            ("dist.members.alive", alive),
            ("dist.members.suspect", suspect),
            ("dist.members.dead", dead),
            ("dist.members.live", live),
            ("dist.members.epoch", m.epoch()),
            ("dist.heartbeat.success", c.probe_success),
            ("dist.heartbeat.failure", c.probe_failure),
            ("dist.heartbeat.indirect_probe.success", c.indirect_success),
            ("dist.heartbeat.indirect_probe.failure", c.indirect_failure),
            ("dist.heartbeat.indirect_probe.refuted", c.refuted),
            ("dist.heartbeat.bad_datagrams", c.bad_datagrams),
            ("dist.nodes.removed", c.removed),
        ] {
            out.push(name, x);
        }
    }

    /// The byte counters of the links with member `id` (both directions' links share them).
    pub fn traffic(&self, id: &str) -> Arc<link::Traffic> {
        self.traffic
            .lock()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// `dist.transport.bytes_in` and `bytes_out` per peer, in node id order.
    pub fn collect_traffic(&self, out: &mut crate::metrics::Collected) {
        let t = self.traffic.lock();
        let mut ids: Vec<&String> = t.keys().collect();
        ids.sort();
        for (name, out_dir) in [
            ("dist.transport.bytes_in", false),
            ("dist.transport.bytes_out", true),
        ] {
            for id in &ids {
                out.push_labelled(name, id.to_string(), t[*id].get(out_dir));
            }
        }
    }

    /// Hands the repair task an input.
    pub fn repair_cmd(&self, cmd: exec::RepairCmd) {
        let _ = self.repair_tx.send(cmd);
    }

    /// Hands the membership task an input.
    pub fn member_cmd(&self, cmd: swim::MemberCmd) {
        let _ = self.member_tx.send(cmd);
    }

    /// A peer's message carried ring epoch `epoch`: a newer one means this node missed a ring
    /// change, so it asks that peer for the membership ([`Membership::saw_epoch`]; its
    /// datagram goes out with the membership task's next flush).
    pub fn saw_epoch(&self, from_id: &str, epoch: u64) {
        if epoch <= self.view().epoch() {
            return;
        }
        if let Some(p) = self.peer_by_id(from_id) {
            self.membership
                .lock()
                .saw_epoch(crate::state::now_ms(), epoch, &p.addr);
        }
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
        1 + self.all_peers().iter().filter(|p| p.is_live()).count()
    }

    /// Whether this node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
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

/// Starts the cluster port listener (TCP), the membership socket (UDP, same port), and the
/// membership, ring and repair tasks.
pub async fn start(
    shared: Arc<crate::state::Shared>,
    cl: Arc<Cluster>,
) -> std::io::Result<tokio::net::TcpListener> {
    let bind = {
        let c = shared.config.read();
        format!("{}:{}", c.bind, c.cluster_port())
    };
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let socket = tokio::net::UdpSocket::bind(&bind).await?;
    if let Some(rx) = cl.member_rx.lock().take() {
        shared
            .tasks
            .spawn(swim::run(shared.clone(), cl.clone(), socket, rx));
    }
    if let Some(rx) = cl.repair_rx.lock().take() {
        shared
            .tasks
            .spawn(exec::repair_task(shared.clone(), cl.clone(), rx));
    }
    shared.store.set_tombstones(true);
    shared
        .store
        .set_tombstone_ttl(shared.config.read().tombstone_ttl * 1000);
    tracing::info!(component = "cluster", node_id = %cl.node_id, cluster = %cl.name, addr = %cl.cluster_addr,
        seeds = cl.seeds.len(), replication = cl.replication, authenticated = cl.secret.is_some(), tls = shared.config.read().tls_cluster,
        "cluster port listening (TCP links, UDP membership)");
    let local = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(true);
    let tls = shared.config.read().tls_cluster;
    if cl.secret.is_none() && !tls && !local {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, addr = %cl.cluster_addr,
            "THE CLUSTER PORT IS OPEN BEYOND LOOPBACK WITHOUT cluster-secret OR tls-cluster: anyone who can reach it and knows the cluster name can read, write and erase every key. Set cluster-secret (and tls-cluster) on every node.");
    }
    if cl.secret.is_none() && tls && !local {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, addr = %cl.cluster_addr,
            "tls-cluster without cluster-secret: links are authenticated by certificate, but membership datagrams (UDP) are not, so anyone who reaches the port can announce itself as a member. Set cluster-secret on every node.");
    }
    Ok(listener)
}

/// The view after a ring change: `ring` at `epoch` replaces the current placement, and this
/// node's part of the move goes to the repair machine ([`Repair::rebalance`]). `without` is the
/// ring of the same members without this node, for a first ring (see
/// [`hypercache_cluster::rebalance::first_plan`]).
///
/// [`Repair::rebalance`]: hypercache_cluster::repair::Repair::rebalance
pub fn apply_ring(
    shared: &crate::state::Shared,
    cl: &Cluster,
    ring: Ring,
    without: Option<Ring>,
    epoch: u64,
    alone: bool,
) {
    let old = cl.view();
    let new = cl.placement(ring, epoch);
    let me = old.me;
    let without = without.map(|w| cl.placement(w, 0));
    let prev = old.joined.then_some(&old.placement);
    let Some(plan) =
        hypercache_cluster::rebalance::ring_change(me, prev, &new, without.as_ref(), alone)
    else {
        // Still alone: no ring until others answer (or the join timeout).
        return;
    };
    let in_ring = new.ring().members().contains(&cl.node_id);
    let draining = cl.is_draining();
    if draining && !in_ring && cl.drain_epoch.load(Ordering::Relaxed) == 0 {
        cl.drain_epoch.store(epoch.max(1), Ordering::Relaxed);
    }
    let (receive, release) = (plan.receive.len(), plan.release.len());
    // Slots received are marked before the new ring is published: a heartbeat answered in
    // between never reports the new ring with nothing to catch up.
    for s in plan.to_receive(me) {
        cl.catching.set(s, true);
    }
    cl.publish(new, true);
    let view = cl.view();
    {
        let e = exec::node_env(shared, cl, &view);
        cl.repair.lock().rebalance(&e, plan, draining);
    }
    cl.repair_cmd(exec::RepairCmd::Poke);
    tracing::info!(component = "rebalance", node_id = %cl.node_id, epoch, members = view.ring().members().len(),
        receive, release, "ring changed");
}
