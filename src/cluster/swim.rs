//! The membership task: the IO edge of [`Membership`] (the same machine the simulator runs).
//!
//! - **Datagrams**: SWIM messages travel as UDP datagrams on the cluster port (the TCP port's
//!   number), each behind a 12-byte header: `"HS"`, version 1, a zero byte, and the xxh3 of the
//!   cluster name (a datagram of another cluster is dropped and counted). With `cluster-secret`
//!   each datagram ends with a 32-byte keyed BLAKE3 tag over the rest, and one whose tag does
//!   not check out is dropped and counted. Datagrams are at most `MAX_DATAGRAM` bytes and are
//!   never acted on unless they decode.
//! - **Timers**: foca's timers in a heap, the machine's tick every 200 ms.
//! - **Members**: every member the machine reports gets a [`Peer`] and a TCP link task; its
//!   liveness follows SWIM (alive or not) and the link; a member that left or was forgotten has
//!   its link stopped.
//! - **Rings**: the machine's ring changes go, latest first, to the ring task, which builds the
//!   ring off the async workers (`spawn_blocking`) and applies it ([`super::apply_ring`]).
//! - **Join**: a node with seeds answers for nothing until its first ring with others; if no
//!   seed answers within the machine's join timeout, it starts alone and the others find it
//!   later.
//! - **Leaving**: on shutdown the node announces its departure before the task ends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hypercache_cluster::member::{Ident, MemberEvent, MemberSettings, MemberState, SwimTimer};
use hypercache_cluster::ring::Ring;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::link;
use super::Cluster;
use crate::state::{now_ms, Shared};

const HEADER: usize = 12;
const MAGIC: [u8; 4] = [b'H', b'S', 1, 0];

/// An input to the membership task from elsewhere in the node.
pub enum MemberCmd {
    /// `HC.DRAIN`.
    Drain,
    /// `HC.FORGET`: forget member `id`; the reply says whether it was known.
    Forget(String, oneshot::Sender<bool>),
    /// The TCP link to member `id` failed: suspect it now.
    LinkDown(String),
}

/// The membership settings from the configuration.
pub fn settings(c: &crate::config::Config) -> MemberSettings {
    MemberSettings {
        probe_interval_ms: c.probe_interval_ms,
        probe_timeout_ms: c.probe_timeout_ms,
        indirect_probes: c.indirect_probes as usize,
        suspect_timeout_ms: c.suspect_timeout_ms,
        remove_after_ms: c.remove_after_ms,
        announce_ms: 1000,
    }
}

fn name_hash(name: &str) -> [u8; 8] {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()).to_le_bytes()
}

/// The membership task: runs until shutdown, then leaves the cluster.
pub async fn run(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    socket: UdpSocket,
    mut rx: mpsc::UnboundedReceiver<MemberCmd>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let (ring_tx, ring_rx) = mpsc::unbounded_channel();
    shared
        .tasks
        .spawn(ring_task(shared.clone(), cl.clone(), ring_rx));
    let hash = name_hash(&cl.name);
    let mut timers: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut pending: std::collections::HashMap<u64, SwimTimer<Ident>> = Default::default();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut alone_asked = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_timer = timers.peek().map(|Reverse((at, _))| *at);
        let sleep = tokio::time::sleep(Duration::from_millis(
            next_timer.map_or(3_600_000, |at| at.saturating_sub(now_ms())),
        ));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, _from)) = r {
                    // With cluster-secret, a datagram is acted on only if its tag checks out.
                    let d = match &cl.secret {
                        None => Some(&buf[..n]),
                        Some(secret) => secret.open_datagram(&buf[..n]),
                    };
                    match d {
                        Some(d) if d.len() > HEADER && d[..4] == MAGIC && d[4..12] == hash => {
                            cl.membership.lock().on_datagram(now_ms(), &d[HEADER..]);
                        }
                        _ => cl.membership.lock().count_bad_datagram(),
                    }
                }
            }
            _ = sleep, if next_timer.is_some() => {
                let now = now_ms();
                while let Some(Reverse((at, id))) = timers.peek().copied() {
                    if at > now {
                        break;
                    }
                    timers.pop();
                    if let Some(t) = pending.remove(&id) {
                        cl.membership.lock().on_timer(now, t);
                    }
                }
            }
            _ = tick.tick() => {
                let now = now_ms();
                // CONFIG SET of suspect-timeout or remove-after takes effect here (the probe
                // interval and timeout are fixed at start: they are not runtime settings).
                let want = settings(&shared.config.read());
                {
                    let mut m = cl.membership.lock();
                    let have = m.settings();
                    if (have.suspect_timeout_ms, have.remove_after_ms)
                        != (want.suspect_timeout_ms, want.remove_after_ms)
                    {
                        m.set_settings(want);
                        tracing::info!(component = "membership", node_id = %cl.node_id,
                            suspect_timeout_ms = want.suspect_timeout_ms, remove_after_ms = want.remove_after_ms,
                            "membership settings changed");
                    }
                }
                cl.membership.lock().tick(now);
                if !cl.view().joined && !alone_asked {
                    let alone = cl.membership.lock().join_timed_out(now);
                    if alone {
                        alone_asked = true;
                        tracing::warn!(component = "membership", node_id = %cl.node_id, seeds = ?cl.seeds,
                            "no seed answered: starting alone (members that come up later join this node)");
                        let _ = ring_tx.send((cl.membership.lock().epoch(), vec![cl.node_id.clone()], true));
                    }
                }
            }
            cmd = rx.recv() => {
                let now = now_ms();
                match cmd {
                    None => return,
                    Some(MemberCmd::Drain) => cl.membership.lock().drain(now),
                    Some(MemberCmd::Forget(id, reply)) => {
                        let known = cl.membership.lock().forget(now, &id);
                        if let Some(p) = cl.peer_by_id(&id) {
                            p.stop();
                        }
                        let _ = reply.send(known);
                    }
                    Some(MemberCmd::LinkDown(id)) => cl.membership.lock().link_failed(now, &id),
                }
            }
            _ = shutdown.changed() => {
                cl.membership.lock().leave(now_ms());
                flush(&shared, &cl, &socket, &hash, &mut timers, &mut pending, &mut seq, &ring_tx).await;
                tracing::info!(component = "membership", node_id = %cl.node_id, "left the cluster");
                return;
            }
        }
        flush(
            &shared,
            &cl,
            &socket,
            &hash,
            &mut timers,
            &mut pending,
            &mut seq,
            &ring_tx,
        )
        .await;
    }
}

/// Carries out the machine's output: datagrams, timers, member links and liveness, events.
#[allow(clippy::too_many_arguments)]
async fn flush(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    socket: &UdpSocket,
    hash: &[u8; 8],
    timers: &mut BinaryHeap<Reverse<(u64, u64)>>,
    pending: &mut std::collections::HashMap<u64, SwimTimer<Ident>>,
    seq: &mut u64,
    ring_tx: &mpsc::UnboundedSender<(u64, Vec<String>, bool)>,
) {
    let (sends, new_timers, events, members) = {
        let mut m = cl.membership.lock();
        let members: Vec<(Ident, MemberState)> = m
            .members()
            .values()
            .map(|r| (r.ident.clone(), r.state))
            .collect();
        (m.take_sends(), m.take_timers(), m.take_events(), members)
    };
    let now = now_ms();
    for (after, t) in new_timers {
        *seq += 1;
        timers.push(Reverse((now + after, *seq)));
        pending.insert(*seq, t);
    }
    // Every member has a peer (and a link task); liveness follows SWIM.
    for (ident, state) in &members {
        let (p, new) = cl.ensure_peer(&ident.id, &ident.addr);
        if new {
            shared
                .tasks
                .spawn(link::run_outbound(shared.clone(), cl.clone(), p.clone()));
        }
        *p.client_addr.lock() = ident.client.clone();
        p.set_alive(*state == MemberState::Alive);
        if *state == MemberState::Left {
            p.stop();
        }
    }
    for e in events {
        log_event(cl, &e);
        if let MemberEvent::Ring { epoch, members } = e {
            let _ = ring_tx.send((epoch, members, false));
        }
    }
    for (to, data) in sends {
        let mut d = Vec::with_capacity(HEADER + data.len() + 32);
        d.extend_from_slice(&MAGIC);
        d.extend_from_slice(hash);
        d.extend_from_slice(&data);
        if let Some(secret) = &cl.secret {
            let tag = secret.datagram_tag(&d);
            d.extend_from_slice(&tag);
        }
        let addr: Option<SocketAddr> = match to.parse() {
            Ok(a) => Some(a),
            Err(_) => tokio::net::lookup_host(to.as_str())
                .await
                .ok()
                .and_then(|mut a| a.next()),
        };
        if let Some(a) = addr {
            let _ = socket.send_to(&d, a).await;
        }
    }
}

fn log_event(cl: &Cluster, e: &MemberEvent) {
    let me = &cl.node_id;
    match e {
        MemberEvent::Joined(id) => {
            tracing::info!(component = "membership", node_id = %me, peer = %id, "member joined")
        }
        MemberEvent::Suspect(id) => {
            tracing::warn!(component = "membership", node_id = %me, peer = %id, "member suspect")
        }
        MemberEvent::Refuted(id) => {
            tracing::info!(component = "membership", node_id = %me, peer = %id, "member refuted the suspicion")
        }
        MemberEvent::Down(id) => {
            tracing::warn!(component = "membership", node_id = %me, peer = %id, "member down")
        }
        MemberEvent::Alive(id) => {
            tracing::info!(component = "membership", node_id = %me, peer = %id, "member alive again")
        }
        MemberEvent::Left(id) => {
            tracing::info!(component = "membership", node_id = %me, peer = %id, "member left")
        }
        MemberEvent::Draining(id) => {
            tracing::info!(component = "membership", node_id = %me, peer = %id, "member draining")
        }
        MemberEvent::Removed { id, why } => {
            tracing::warn!(component = "membership", node_id = %me, peer = %id, reason = why, "member removed from the ring")
        }
        MemberEvent::Ring { epoch, members } => {
            tracing::info!(component = "membership", node_id = %me, epoch, members = members.len(), "ring set changed")
        }
        MemberEvent::Renewed(gen) => {
            tracing::warn!(component = "membership", node_id = %me, generation = gen, "others declared this node down; rejoined under a new generation")
        }
    }
}

/// Applies ring changes in order, the latest one only when several are waiting; each ring is
/// built on a blocking thread (20-200 ms), never on an async worker.
async fn ring_task(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<(u64, Vec<String>, bool)>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let mut next = tokio::select! {
            n = rx.recv() => match n {
                Some(n) => n,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        while let Ok(n) = rx.try_recv() {
            next = n;
        }
        let (epoch, members, alone) = next;
        let replicas = cl.replication;
        let me = cl.node_id.clone();
        let first = !cl.view().joined;
        let built = tokio::task::spawn_blocking(move || {
            let ring = Ring::new(&members, replicas);
            let without = first.then(|| {
                let others: Vec<&String> = members.iter().filter(|m| **m != me).collect();
                Ring::new(&others, replicas)
            });
            (ring, without)
        })
        .await;
        let Ok((ring, without)) = built else { return };
        if alone && cl.view().joined {
            continue;
        }
        super::apply_ring(&shared, &cl, ring, without, epoch, alone);
    }
}
