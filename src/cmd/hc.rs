//! `HC.*` administration commands: this node, the members, slot ownership, per-connection
//! consistency and the cluster's metrics.

use bytes::Bytes;
use hypercache_cluster::msg::Level;
use hypercache_cluster::slot::key_slot;
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
/// `HC.NODE`: this node's id, addresses, cluster name, version and role.
pub(super) fn node(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let c = s.shared.config.read();
    let (id, caddr, name, members, replicas, catching) = match &s.shared.cluster {
        Some(cl) => {
            let v = cl.view();
            (
                cl.node_id.clone(),
                cl.cluster_addr.clone(),
                cl.name.clone(),
                v.ring.members().len() as i64,
                v.ring.replicas() as i64,
                cl.catching.len() as i64,
            )
        }
        None => (c.node_id(), String::new(), c.cluster_name.clone(), 1, 1, 0),
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
        ("synced", Frame::Integer(i64::from(catching == 0))),
        ("catching_up_slots", Frame::Integer(catching)),
        ("read_consistency", bulk(c.read_consistency.name())),
        ("write_consistency", bulk(c.write_consistency.name())),
    ]))
}

/// # Format
/// `HC.MEMBERS`: one entry per member: id, client address, cluster address, state, slots held.
pub(super) fn members(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let Some(cl) = s.shared.cluster.clone() else {
        let c = s.shared.config.read();
        let port = s.shared.port.load(std::sync::atomic::Ordering::Relaxed);
        return Some(Frame::Array(vec![pairs(vec![
            ("id", bulk(c.node_id())),
            ("client_addr", bulk(format!("{}:{}", c.bind, port))),
            ("cluster_addr", bulk("")),
            ("state", bulk("up")),
            ("self", Frame::Integer(1)),
            ("slots", Frame::Integer(16384)),
            ("primary_slots", Frame::Integer(16384)),
            ("catching_up_slots", Frame::Integer(0)),
        ])]));
    };
    let v = cl.view();
    let load = v.ring.load();
    let mut primaries = vec![0i64; v.ring.members().len()];
    for slot in 0..hypercache_cluster::slot::SLOTS {
        if let Some(&m) = v.prefs(slot as u16).first() {
            primaries[usize::from(m)] += 1;
        }
    }
    let mut out = Vec::new();
    for (i, id) in v.ring.members().iter().enumerate() {
        let (caddr, client, state, me) = match cl.peer(&v, i as u16) {
            None => (cl.cluster_addr.clone(), cl.client_addr.clone(), "up", 1),
            Some(p) => (
                p.addr.clone(),
                p.client_addr.lock().clone(),
                if p.is_up() { "up" } else { "down" },
                0,
            ),
        };
        out.push(pairs(vec![
            ("id", bulk(id.clone())),
            ("client_addr", bulk(client)),
            ("cluster_addr", bulk(caddr)),
            ("state", bulk(state)),
            ("self", Frame::Integer(me)),
            ("slots", Frame::Integer(load[i] as i64)),
            ("primary_slots", Frame::Integer(primaries[i])),
            // A peer's, as of its last heartbeat (-1: not heard from yet).
            (
                "catching_up_slots",
                Frame::Integer(match cl.peer(&v, i as u16) {
                    None => cl.catching.len() as i64,
                    Some(p) => p.catching_up.load(std::sync::atomic::Ordering::Relaxed),
                }),
            ),
        ]));
    }
    Some(Frame::Array(out))
}

/// # Format
/// `HC.KEYSLOT key`: the key's slot and its preference list (member ids, coordinator first,
/// with each one's state).
pub(super) fn keyslot(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let slot = key_slot(&a[1]);
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
                    let id = v.ring.members()[usize::from(m)].clone();
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
/// `store.*`, `memory.*`, and in a cluster `dist.*`).
pub(super) fn metrics(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let used = crate::memory::sample(&s.shared);
    let cluster = s.shared.cluster.as_ref();
    let mut out = Vec::new();
    for (k, v) in s
        .shared
        .metrics
        .snapshot(&s.shared.store, used, cluster.is_some())
    {
        out.push(bulk(k));
        out.push(Frame::Integer(v as i64));
    }
    if let Some(cl) = cluster {
        for (k, v) in cl.repair_pairs() {
            out.push(bulk(k));
            out.push(Frame::Integer(v as i64));
        }
        out.push(bulk("dist.members.live"));
        out.push(Frame::Integer(cl.live_members() as i64));
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
                let id = v
                    .ring
                    .members()
                    .get(usize::from(q.target))
                    .cloned()
                    .unwrap_or_default();
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
            match v.ring.members().iter().position(|m| *m == id) {
                Some(m) if m as u16 != v.me => vec![m as u16],
                Some(_) => {
                    return err_owned("ERR HC.SYNC needs another node's id, not this node's")
                }
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
    let members = v.ring.members().to_vec();
    s.defer(
        async move {
            let mut out = Vec::new();
            for (peer, rx) in rxs {
                let id = members[usize::from(peer)].clone();
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
