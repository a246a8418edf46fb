//! `HC.*` administration commands: this node, the members, slot ownership, per-connection
//! consistency and the cluster's metrics.

use bytes::Bytes;
use hypercache_cluster::msg::Level;
use hypercache_cluster::slot::redis_slot;
use hypercache_resp::{errors, Frame};

use super::err_owned;
use crate::session::Session;

fn bulk(s: impl Into<String>) -> Frame {
    Frame::Bulk(Bytes::from(s.into()))
}

fn pairs(items: Vec<(&str, Frame)>) -> Frame {
    Frame::Map(items.into_iter().map(|(k, v)| (bulk(k), v)).collect())
}

/// # Format
/// `HC.NODE`: this node's id, addresses, cluster name, version and role, the ring epoch,
/// whether it has joined, and whether it is draining.
pub(super) fn node(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let c = s.shared.config.read();
    let (id, caddr, name, members, replicas, catching, epoch, joined, draining) =
        match &s.shared.cluster {
            Some(cl) => {
                let v = cl.view();
                (
                    cl.node_id.clone(),
                    cl.cluster_addr.clone(),
                    cl.name.clone(),
                    v.ring().members().len() as i64,
                    v.ring().replicas() as i64,
                    cl.catching.len() as i64,
                    v.epoch() as i64,
                    v.joined,
                    cl.is_draining(),
                )
            }
            None => (
                c.node_id(),
                String::new(),
                c.cluster_name.clone(),
                1,
                1,
                0,
                0,
                true,
                false,
            ),
        };
    let port = s.shared.port.load(std::sync::atomic::Ordering::Relaxed);
    Some(pairs(vec![
        ("id", bulk(id)),
        ("client_addr", bulk(format!("{}:{}", c.bind, port))),
        ("cluster_addr", bulk(caddr)),
        ("cluster_name", bulk(name)),
        ("version", bulk(env!("CARGO_PKG_VERSION"))),
        ("redis_version", bulk(crate::REDIS_VERSION)),
        ("members", Frame::Integer(members)),
        ("replication", Frame::Integer(replicas)),
        ("epoch", Frame::Integer(epoch)),
        ("joined", Frame::Integer(i64::from(joined))),
        ("draining", Frame::Integer(i64::from(draining))),
        ("synced", Frame::Integer(i64::from(catching == 0))),
        ("catching_up_slots", Frame::Integer(catching)),
        ("read_consistency", bulk(c.read_consistency.name())),
        ("write_consistency", bulk(c.write_consistency.name())),
    ]))
}

/// # Format
/// `HC.MEMBERS`: one entry per member this node knows, itself first: id, client and cluster
/// addresses, state (`alive`, `suspect`, `down`, `left`), SWIM incarnation, ms since it was
/// last heard from, whether it is in the ring and draining, the slots it holds (at any rank and
/// as primary), and the slots it is still receiving or catching up on (a peer's as of its last
/// heartbeat; -1 before one).
pub(super) fn members(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    Some(member_table(&s.shared))
}

/// The `HC.MEMBERS` table (also `GET /cluster/members`): an array of one map per member.
pub(crate) fn member_table(shared: &crate::state::Shared) -> Frame {
    let Some(cl) = shared.cluster.clone() else {
        let c = shared.config.read();
        let port = shared.port.load(std::sync::atomic::Ordering::Relaxed);
        return Frame::Array(vec![pairs(vec![
            ("id", bulk(c.node_id())),
            ("client_addr", bulk(format!("{}:{}", c.bind, port))),
            ("cluster_addr", bulk("")),
            ("state", bulk("alive")),
            ("self", Frame::Integer(1)),
            ("incarnation", Frame::Integer(0)),
            ("last_heard_ms", Frame::Integer(0)),
            ("in_ring", Frame::Integer(1)),
            ("draining", Frame::Integer(0)),
            ("slots", Frame::Integer(16384)),
            ("primary_slots", Frame::Integer(16384)),
            ("catching_up_slots", Frame::Integer(0)),
        ])]);
    };
    let v = cl.view();
    let mut slots = vec![0i64; v.peers.len()];
    let mut primaries = vec![0i64; v.peers.len()];
    for slot in 0..hypercache_cluster::slot::SLOTS {
        for (rank, &m) in v.prefs(slot as u16).iter().enumerate() {
            if let Some(x) = slots.get_mut(usize::from(m)) {
                *x += 1;
            }
            if rank == 0 {
                if let Some(x) = primaries.get_mut(usize::from(m)) {
                    *x += 1;
                }
            }
        }
    }
    let now = crate::state::now_ms();
    let in_ring = |id: &str| v.ring().members().iter().any(|m| m == id);
    let mut out = vec![pairs(vec![
        ("id", bulk(cl.node_id.clone())),
        ("client_addr", bulk(cl.client_addr.clone())),
        ("cluster_addr", bulk(cl.cluster_addr.clone())),
        ("state", bulk("alive")),
        ("self", Frame::Integer(1)),
        (
            "incarnation",
            Frame::Integer(i64::from(cl.membership.lock().me().gen as u16)),
        ),
        ("last_heard_ms", Frame::Integer(0)),
        ("in_ring", Frame::Integer(i64::from(in_ring(&cl.node_id)))),
        ("draining", Frame::Integer(i64::from(cl.is_draining()))),
        ("slots", Frame::Integer(slots[0])),
        ("primary_slots", Frame::Integer(primaries[0])),
        (
            "catching_up_slots",
            Frame::Integer(cl.catching.len() as i64),
        ),
    ])];
    let known: Vec<hypercache_cluster::member::MemberInfo> =
        cl.membership.lock().members().values().cloned().collect();
    for r in known {
        let m = cl.member_idx(&r.ident.id).map_or(usize::MAX, usize::from);
        let p = cl.peer_by_id(&r.ident.id);
        out.push(pairs(vec![
            ("id", bulk(r.ident.id.clone())),
            ("client_addr", bulk(r.ident.client.clone())),
            ("cluster_addr", bulk(r.ident.addr.clone())),
            ("state", bulk(r.state.name())),
            ("self", Frame::Integer(0)),
            ("incarnation", Frame::Integer(i64::from(r.incarnation))),
            (
                "last_heard_ms",
                Frame::Integer(if r.last_heard == 0 {
                    -1
                } else {
                    now.saturating_sub(r.last_heard) as i64
                }),
            ),
            ("in_ring", Frame::Integer(i64::from(in_ring(&r.ident.id)))),
            ("draining", Frame::Integer(i64::from(r.ident.draining()))),
            ("slots", Frame::Integer(slots.get(m).copied().unwrap_or(0))),
            (
                "primary_slots",
                Frame::Integer(primaries.get(m).copied().unwrap_or(0)),
            ),
            (
                "catching_up_slots",
                Frame::Integer(p.map_or(-1, |p| {
                    p.catching_up.load(std::sync::atomic::Ordering::Relaxed)
                })),
            ),
        ]));
    }
    Frame::Array(out)
}

/// # Format
/// `HC.KEYSLOT key`: the key's slot and its preference list (member ids, coordinator first,
/// with each one's state).
pub(super) fn keyslot(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let slot = redis_slot(&a[1]);
    let replicas = match &s.shared.cluster {
        None => vec![Frame::Array(vec![
            bulk(s.shared.config.read().node_id()),
            bulk("up"),
        ])],
        Some(cl) => {
            let v = cl.view();
            v.prefs(slot)
                .iter()
                .map(|&m| {
                    let id = v.id_of(cl, m);
                    let state = if v.live(cl, m) { "up" } else { "down" };
                    Frame::Array(vec![bulk(id), bulk(state)])
                })
                .collect()
        }
    };
    Some(Frame::Array(vec![
        Frame::Integer(i64::from(slot)),
        Frame::Array(replicas),
    ]))
}

/// # Format
/// `HC.CONSISTENCY [READ|WRITE] [ONE|QUORUM|ALL]`: this connection's levels. No argument shows
/// both; `READ`/`WRITE` alone shows one; with a level, sets it (`+OK`). `HC.CONSISTENCY level`
/// sets both.
pub(super) fn consistency(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let lv = s.levels();
    let which = |w: &[u8]| {
        if w.eq_ignore_ascii_case(b"read") {
            Some(true)
        } else if w.eq_ignore_ascii_case(b"write") {
            Some(false)
        } else {
            None
        }
    };
    let bad_level = || {
        err_owned(format!(
            "ERR invalid consistency level '{}', expected ONE, QUORUM or ALL",
            String::from_utf8_lossy(&a[a.len() - 1])
        ))
    };
    match a.len() {
        1 => Some(pairs(vec![
            ("read", bulk(lv.read.name())),
            ("write", bulk(lv.write.name())),
        ])),
        2 => match (which(&a[1]), Level::parse(&a[1])) {
            (Some(true), _) => Some(bulk(lv.read.name())),
            (Some(false), _) => Some(bulk(lv.write.name())),
            (None, Some(l)) => {
                s.consistency = (Some(l), Some(l));
                Some(Frame::ok())
            }
            (None, None) => bad_level(),
        },
        3 => {
            let Some(read) = which(&a[1]) else {
                return Some(Frame::error(errors::SYNTAX));
            };
            let Some(l) = Level::parse(&a[2]) else {
                return bad_level();
            };
            if read {
                s.consistency.0 = Some(l);
            } else {
                s.consistency.1 = Some(l);
            }
            Some(Frame::ok())
        }
        _ => Some(Frame::error(errors::SYNTAX)),
    }
}

/// # Format
/// `HC.METRICS`: every metric of the node's registry as flat name/value pairs (`server.*`,
/// `store.*`, `memory.*`, and in a cluster `dist.*`; see docs/metrics.md).
pub(super) fn metrics(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let collected = crate::metrics::collect(&s.shared);
    let mut out = Vec::new();
    for (k, v) in collected.flat() {
        out.push(bulk(k));
        out.push(Frame::Integer(v as i64));
    }
    if s.shared.cluster.is_some() {
        // Kept under its old name too (store.tombstones is the same figure).
        out.push(bulk("dist.tombstones"));
        out.push(Frame::Integer(s.shared.store.tombstones() as i64));
    }
    Some(Frame::Array(out))
}

/// # Format
/// `HC.HINTS`: one entry per target node with hints queued here: its id, the number of hints,
/// their bytes, and the age of the oldest in ms. Empty on a single node.
pub(super) fn hints(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let Some(cl) = s.shared.cluster.clone() else {
        return Some(Frame::Array(Vec::new()));
    };
    let v = cl.view();
    let now = crate::state::now_ms();
    let queues = cl.repair.lock().hints.queues(now);
    Some(Frame::Array(
        queues
            .into_iter()
            .map(|q| {
                let id = v.id_of(&cl, q.target);
                pairs(vec![
                    ("node", bulk(id)),
                    ("count", Frame::Integer(q.count as i64)),
                    ("bytes", Frame::Integer(q.bytes as i64)),
                    ("oldest_ms", Frame::Integer(q.oldest_ms as i64)),
                ])
            })
            .collect(),
    ))
}

/// # Format
/// `HC.SYNC [node-id]`: runs an anti-entropy round now against `node-id`, or against every node
/// this one shares slots with, and replies with one entry per round: the peer, slots compared,
/// slots differing, keys pulled, keys pushed, bytes, requests, milliseconds, and `ok` or the
/// error. On a single node: an empty array.
pub(super) fn sync(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let Some(cl) = s.shared.cluster.clone() else {
        return Some(Frame::Array(Vec::new()));
    };
    if a.len() > 2 {
        return Some(Frame::error(errors::SYNTAX));
    }
    let v = cl.view();
    let peers: Vec<u16> = match a.get(1) {
        Some(id) => {
            let id = String::from_utf8_lossy(id);
            if id == cl.node_id {
                return err_owned("ERR HC.SYNC needs another node's id, not this node's");
            }
            match cl.member_idx(&id) {
                Some(m) => vec![m],
                None => return err_owned(format!("ERR Unknown node {id}")),
            }
        }
        None => {
            let me = v.me;
            let mut p: Vec<u16> = (0..hypercache_cluster::slot::SLOTS as u16)
                .filter(|&slot| v.prefs(slot).contains(&me))
                .flat_map(|slot| v.prefs(slot).to_vec())
                .filter(|&m| m != me)
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        }
    };
    let mut rxs = Vec::new();
    for peer in peers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        cl.repair_cmd(crate::cluster::exec::RepairCmd::Sync { peer, reply: tx });
        rxs.push((peer, rx));
    }
    let members: Vec<String> = (0..v.peers.len() as u16).map(|m| v.id_of(&cl, m)).collect();
    s.defer(
        async move {
            let mut out = Vec::new();
            for (peer, rx) in rxs {
                let id = members.get(usize::from(peer)).cloned().unwrap_or_default();
                let Ok(r) = rx.await else {
                    out.push(pairs(vec![("node", bulk(id)), ("status", bulk("stopped"))]));
                    continue;
                };
                out.push(pairs(vec![
                    ("node", bulk(id)),
                    ("slots_compared", Frame::Integer(r.slots_compared as i64)),
                    ("slots_differing", Frame::Integer(r.slots_differing as i64)),
                    ("keys_pulled", Frame::Integer(r.keys_pulled as i64)),
                    ("keys_pushed", Frame::Integer(r.keys_pushed as i64)),
                    ("bytes", Frame::Integer(r.bytes as i64)),
                    ("requests", Frame::Integer(r.requests as i64)),
                    (
                        "ms",
                        Frame::Integer(r.ended.saturating_sub(r.started) as i64),
                    ),
                    ("status", bulk(r.error.unwrap_or_else(|| "ok".into()))),
                ]));
            }
            Frame::Array(out)
        },
        None,
    );
    None
}

/// # Format
/// `HC.DRAIN`: this node starts draining: it refuses writes (`-DRAINING`), leaves the ring so
/// that its peers stop choosing it and take its slots (copying them from it and the other
/// replicas), and keeps serving reads. `+OK`.
///
/// `HC.DRAIN STATUS`: `draining` (0/1), `in_ring` (whether this node still holds slots in its
/// ring), `members` (the ring's other members), `members_agreeing` (those whose last heartbeat
/// reported the same ring), `members_down`, `slots_catching_up` (what the members still have to
/// copy, as of their last heartbeats), `hints_held` (hints this node still has to deliver), and
/// `safe_to_stop`: 1 once every member of the new ring is live, agrees on it and has copied
/// everything, and no hint is left. Stopping then loses nothing.
pub(super) fn drain(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let Some(cl) = s.shared.cluster.clone() else {
        return err_owned("ERR HC.DRAIN needs a cluster (this node has no seeds)");
    };
    match a.len() {
        1 => {
            if !cl.draining.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(component = "membership", node_id = %cl.node_id, "draining: writes refused, slots handed to the other members");
                cl.member_cmd(crate::cluster::swim::MemberCmd::Drain);
            }
            Some(Frame::ok())
        }
        2 if a[1].eq_ignore_ascii_case(b"status") => {
            let st = drain_status(&cl);
            Some(pairs(vec![
                ("draining", Frame::Integer(i64::from(st.draining))),
                ("in_ring", Frame::Integer(i64::from(st.in_ring))),
                ("members", Frame::Integer(st.members)),
                ("members_agreeing", Frame::Integer(st.agreeing)),
                ("members_down", Frame::Integer(st.down)),
                ("slots_catching_up", Frame::Integer(st.catching)),
                ("hints_held", Frame::Integer(st.hints)),
                ("safe_to_stop", Frame::Integer(i64::from(st.safe))),
            ]))
        }
        _ => Some(Frame::error(errors::SYNTAX)),
    }
}

/// What `HC.DRAIN STATUS` reports.
pub(super) struct DrainStatus {
    /// `HC.DRAIN` was called.
    pub draining: bool,
    /// This node is still in its own ring.
    pub in_ring: bool,
    /// The ring's other members.
    pub members: i64,
    /// Members whose last heartbeat reported this node's ring.
    pub agreeing: i64,
    /// Members not live.
    pub down: i64,
    /// Slots the members still have to copy.
    pub catching: i64,
    /// Hints held here.
    pub hints: i64,
    /// Whether stopping now loses nothing.
    pub safe: bool,
}

/// The drain's progress (see [`drain`]); the verdict is the cluster crate's
/// ([`hypercache_cluster::rebalance::safe_to_stop`]).
pub(super) fn drain_status(cl: &crate::cluster::Cluster) -> DrainStatus {
    use hypercache_cluster::rebalance::{safe_to_stop, MemberFacts};
    use std::sync::atomic::Ordering::Relaxed;
    let v = cl.view();
    let in_ring = v.ring().members().contains(&cl.node_id);
    let facts: Vec<MemberFacts> = v
        .ring()
        .members()
        .iter()
        .filter(|id| **id != cl.node_id)
        .map(|id| match cl.peer_by_id(id) {
            Some(p) => MemberFacts {
                live: p.is_live(),
                same_ring: p.ring.load(Relaxed) == v.ring_digest,
                catching_up: p.catching_up.load(Relaxed),
            },
            None => MemberFacts {
                live: false,
                same_ring: false,
                catching_up: -1,
            },
        })
        .collect();
    let hints = cl.repair.lock().hints.len();
    let draining = cl.is_draining();
    DrainStatus {
        draining,
        in_ring,
        members: facts.len() as i64,
        agreeing: facts.iter().filter(|f| f.live && f.same_ring).count() as i64,
        down: facts.iter().filter(|f| !f.live).count() as i64,
        catching: facts
            .iter()
            .filter(|f| f.live)
            .map(|f| f.catching_up.max(0) + i64::from(f.catching_up < 0))
            .sum(),
        hints: hints as i64,
        safe: draining && v.joined && safe_to_stop(in_ring, &facts, hints),
    }
}

/// # Format
/// `HC.FORGET node-id`: removes the member from the cluster at once, here and on every live
/// member (its slots go to the others; a member that is down misses nothing it needs). For a
/// member gone for good: one that comes back with a new generation (a restart) joins again.
/// `+OK`, or an error for an unknown id or this node's own.
pub(super) fn forget(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let Some(cl) = s.shared.cluster.clone() else {
        return err_owned("ERR HC.FORGET needs a cluster (this node has no seeds)");
    };
    let id = String::from_utf8_lossy(&a[1]).into_owned();
    if id == cl.node_id {
        return err_owned("ERR I tried hard but I can't forget myself...");
    }
    if cl.membership.lock().member(&id).is_none() {
        return err_owned(format!("ERR Unknown node {id}"));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    cl.member_cmd(crate::cluster::swim::MemberCmd::Forget(id.clone(), tx));
    let timeout = std::time::Duration::from_millis(s.shared.config.read().request_timeout_ms);
    s.defer(
        async move {
            let _ = rx.await;
            let body =
                hypercache_cluster::wire::to_body(&hypercache_cluster::msg::Request::Forget {
                    id: std::borrow::Cow::Borrowed(&id),
                });
            for p in cl.all_peers() {
                if p.is_live() && p.id != id {
                    let _ = p.call(&body, timeout).await;
                }
            }
            Frame::ok()
        },
        None,
    );
    None
}
