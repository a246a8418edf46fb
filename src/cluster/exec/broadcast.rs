//! The cluster-wide commands: KEYS, SCAN, DBSIZE, RANDOMKEY and FLUSHALL, and the push of a
//! change to the cluster-wide settings.

use super::keyed::{Driver, Prepared};
use super::*;
use hypercache_cluster::slot::redis_slot;

/// Runs one [`Gather`] round over `calls` (target, request, required) with the keyed driver,
/// until every target answered, failed or the deadline passed.
async fn gather(
    shared: &Shared,
    cl: &Cluster,
    view: Arc<View>,
    calls: Vec<(MemberIdx, Call, bool)>,
    timeout: Duration,
) -> Gathered {
    let timing = Timing {
        request_ms: timeout.as_millis() as u64,
    };
    let mut o = Out::default();
    let g = {
        let env = NodeEnv {
            shared,
            cl,
            view: &view,
            ctx: Default::default(),
            timing,
        };
        Gather::new(&env, calls, &mut o)
    };
    let mut d = Driver::new(g, Prepared::new(cl, false), view, timing, false);
    let _ = d.apply(shared, cl, o);
    d.until_done(shared, cl).await;
    d.m.result().unwrap_or(Gathered::Failed {
        required: 1,
        optional: 0,
    })
}

/// The answers of a round that must have them all (KEYS, SCAN, DBSIZE).
async fn ask_groups(
    shared: &Shared,
    cl: &Cluster,
    view: Arc<View>,
    calls: Vec<(MemberIdx, Call, bool)>,
    timeout: Duration,
) -> Option<Vec<Response>> {
    match gather(shared, cl, view, calls, timeout).await {
        Gathered::Answers(a) => Some(a.into_iter().flatten().collect()),
        Gathered::Failed { .. } => {
            inc(&cl.metrics.dist.transport_errors);
            None
        }
    }
}

/// The slot owners from this node's view, counting a failure when a slot has none.
fn owners(
    shared: &Shared,
    cl: &Cluster,
    view: &View,
    slots: impl Iterator<Item = Slot>,
) -> Result<Vec<(MemberIdx, Vec<u16>)>, NoReplicas> {
    let env = NodeEnv {
        shared,
        cl,
        view,
        ctx: Default::default(),
        timing: Timing { request_ms: 0 },
    };
    node::slot_owners(&env, slots).inspect_err(|_| count_failure(cl, false))
}

/// Cluster-wide KEYS of database `db` (each slot listed by its first live replica).
pub async fn keys(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    db: u8,
    pattern: Bytes,
    timeout: Duration,
) -> Result<Vec<Bytes>, NoReplicas> {
    let all = 0..SLOTS as Slot;
    let (keys, _) = keys_in_slots(&shared, &cl, all, db, Some(&pattern), timeout).await?;
    Ok(keys)
}

/// The keys of database `db` in `slots` (as clients name them), and how many keys of any
/// database the slots hold.
async fn keys_in_slots(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    slots: impl Iterator<Item = Slot>,
    db: u8,
    pattern: Option<&Bytes>,
    timeout: Duration,
) -> Result<(Vec<Bytes>, u64), NoReplicas> {
    inc(&cl.metrics.dist.broadcasts);
    let view = cl.view();
    let groups = owners(shared, cl, &view, slots)?;
    let calls = groups
        .into_iter()
        .map(|(m, slots)| {
            let pattern = pattern.cloned();
            (m, Call::Keys { slots, pattern, db }, true)
        })
        .collect();
    let resp = ask_groups(shared, cl, view, calls, timeout)
        .await
        .ok_or(NoReplicas { write: false })?;
    let mut all: Vec<(Slot, Bytes)> = Vec::new();
    let mut seen = 0;
    for r in resp {
        if let Response::Keys { keys, examined } = r {
            // Keys as clients name them: their slot is Redis's.
            all.extend(keys.into_iter().map(|k| (redis_slot(&k), k)));
            seen += examined;
        }
    }
    // Slot order, as a single node lists them.
    all.sort_by_key(|(s, _)| *s);
    Ok((all.into_iter().map(|(_, k)| k).collect(), seen))
}

/// Cluster-wide SCAN step: the cursor is a slot number, as on a single node, so it means the same
/// on every node. Visits windows of slots, starting with one and growing fourfold while they hold
/// few keys, until about `count` keys were examined (COUNT measures work, as in Redis: with MATCH,
/// fewer keys may come back) or the end is reached. Whole slots, so a key present for the whole
/// iteration is returned exactly once.
#[allow(clippy::too_many_arguments)]
pub async fn scan(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    db: u8,
    cursor: u64,
    pattern: Option<Bytes>,
    count: usize,
    timeout: Duration,
) -> Result<(u64, Vec<Bytes>), NoReplicas> {
    let mut from = cursor.min(SLOTS as u64) as usize;
    let mut width = 1;
    let mut out = Vec::new();
    let mut examined = 0u64;
    while from < SLOTS && examined < count as u64 {
        let to = (from + width).min(SLOTS);
        let (mut keys, seen) = keys_in_slots(
            &shared,
            &cl,
            from as Slot..to as Slot,
            db,
            pattern.as_ref(),
            timeout,
        )
        .await?;
        out.append(&mut keys);
        examined += seen;
        from = to;
        width = (width * 4).min(SLOTS);
    }
    let next = if from >= SLOTS { 0 } else { from as u64 };
    Ok((next, out))
}

/// Cluster-wide DBSIZE of database `db`: each slot counted by its first live replica.
pub async fn dbsize(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    db: u8,
    timeout: Duration,
) -> Result<i64, NoReplicas> {
    inc(&cl.metrics.dist.broadcasts);
    let view = cl.view();
    let groups = owners(&shared, &cl, &view, 0..SLOTS as Slot)?;
    let calls = groups
        .into_iter()
        .map(|(m, slots)| (m, Call::Count { slots, db }, true))
        .collect();
    let resp = ask_groups(&shared, &cl, view, calls, timeout)
        .await
        .ok_or(NoReplicas { write: false })?;
    Ok(resp
        .iter()
        .map(|r| match r {
            Response::Count(n) => *n as i64,
            _ => 0,
        })
        .sum())
}

/// Cluster-wide RANDOMKEY: a random key of a random live member (every member holds copies of
/// its slots' keys, so any member's key is a key of the cluster).
pub async fn randomkey(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    db: u8,
    timeout: Duration,
) -> Option<Bytes> {
    inc(&cl.metrics.dist.broadcasts);
    let ctx = node_ctx(&shared);
    let peers = cl.all_peers();
    let live: Vec<usize> = (0..peers.len()).filter(|&i| peers[i].is_live()).collect();
    let start = rand::Rng::random_range(&mut *shared.rng.lock(), 0..=live.len());
    let body = wire::to_body(&Request::RandomKey { db });
    for k in 0..=live.len() {
        let pick = (start + k) % (live.len() + 1);
        let found = if pick == live.len() {
            shared.store.random_key(db, &mut *shared.rng.lock(), &ctx)
        } else {
            match peers[live[pick]].call(&body, timeout).await {
                Ok(b) => match wire::from_body::<Response>(&b) {
                    Ok(Response::Key(k)) => k,
                    _ => None,
                },
                Err(_) => None,
            }
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Runs the flushes a peer's heartbeat showed this node missed
/// ([`hypercache_cluster::store::Store::claim_missed_flushes`]): the node was down, partitioned or
/// restarted when the FLUSHALL or FLUSHDB was sent. Off the link's task, as a received flush
/// (it walks every key); the heartbeat waits for it, so the next one does not start it again.
pub async fn run_missed_flushes(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    peer: &str,
    missed: Vec<(Version, Option<u8>)>,
) {
    for (horizon, db) in &missed {
        inc(&cl.metrics.dist.missed_flushes);
        tracing::info!(component = "cluster", node_id = %cl.node_id, peer, horizon = horizon.hlc, db = ?db, "running a flush this node missed, reported by a peer's heartbeat");
    }
    let _ = flush_here(shared, missed).await;
}

/// Runs flushes (FLUSHALL's horizon, or a database's FLUSHDB) on this node's store and forgets
/// every key its tracking clients read, on a blocking thread (a flush walks every key).
pub(super) fn flush_here(
    shared: &Arc<Shared>,
    flushes: Vec<(Version, Option<u8>)>,
) -> tokio::task::JoinHandle<()> {
    let sh = shared.clone();
    tokio::task::spawn_blocking(move || {
        for (horizon, db) in flushes {
            sh.store.flush_at(horizon, db);
        }
        sh.tracking.flush_all(&sh);
    })
}

/// Cluster-wide FLUSHALL (or FLUSHDB of database `only`): flushes here and on every live member
/// at a new version (the horizon), below which no write (of that database) is accepted any more,
/// so that a replica that missed the flush cannot bring keys back through repair. A member that
/// is down runs the flush when it next hears a member that ran it (the horizons ride on the
/// heartbeat: [`run_missed_flushes`]). A member that was live but did not confirm makes the
/// command fail.
pub async fn flushall(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    only: Option<u8>,
    timeout: Duration,
) -> Result<(), NoReplicas> {
    inc(&cl.metrics.dist.broadcasts);
    let horizon = Version {
        hlc: shared.store.clock().tick(now_ms()),
        origin: 0,
    };
    let local = flush_here(&shared, vec![(horizon, only)]);
    let view = cl.view();
    // Every other member: a live one must confirm (else the command fails); one that is down
    // keeps its keys until it is repaired or flushed again.
    let calls = other_members(&view)
        .map(|m| {
            let call = Call::Flush { horizon, db: only };
            (m, call, view.live(&cl, m))
        })
        .collect();
    let (failed, down) = match gather(&shared, &cl, view, calls, timeout).await {
        Gathered::Answers(a) => (0, a.iter().filter(|r| r.is_none()).count()),
        Gathered::Failed { required, optional } => (required, optional),
    };
    let _ = local.await;
    if down > 0 {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, down, "FLUSHALL did not reach members that are down; each runs it at its next heartbeat with a member that did");
    }
    if failed > 0 {
        count_failure(&cl, true);
        return Err(NoReplicas { write: true });
    }
    Ok(())
}

/// Every member but this node that has not left (live or not).
fn other_members(view: &View) -> impl Iterator<Item = MemberIdx> + '_ {
    (0..view.peers.len() as MemberIdx).filter(|&m| {
        m != view.me
            && view.peers[usize::from(m)]
                .as_ref()
                .is_some_and(|p| !p.is_stopped())
    })
}

/// Whether this node's view holds any other member (live or not).
pub fn has_other_members(cl: &Cluster) -> bool {
    other_members(&cl.view()).next().is_some()
}

/// Pushes a change of entries of cluster-wide settings document `doc` to every member. None is
/// required to answer: a member that misses it pulls the settings after its next heartbeat
/// with one that has them.
pub async fn put_settings(
    shared: &Shared,
    cl: &Cluster,
    doc: u8,
    entries: Vec<hypercache_cluster::settings::Entry>,
) {
    let view = cl.view();
    let calls = other_members(&view)
        .map(|m| {
            let entries = entries.clone();
            (m, Call::PutSettings { doc, entries }, false)
        })
        .collect();
    let timeout = Duration::from_millis(shared.config.read().request_timeout_ms);
    if let Gathered::Answers(a) = gather(shared, cl, view, calls, timeout).await {
        let missed = a.iter().filter(|r| r.is_none()).count();
        if missed > 0 {
            tracing::debug!(component = "settings", node_id = %cl.node_id, doc, missed, "members that missed the change will pull it after a heartbeat");
        }
    }
}

/// `PUBLISH` through this node: the message goes to every other member whose link is up, which
/// delivers it to its own subscribers. Fire and forget (no answer is sent or awaited): a member
/// whose link is down misses it, as a Redis subscriber that is disconnected does. One link per
/// pair of nodes, written and read in order, keeps a publisher's order.
pub fn publish_to_peers(shared: &Shared, cl: &Cluster, channel: &Bytes, message: &Bytes) {
    let view = cl.view();
    let body = hypercache_cluster::wire::to_body(&Request::Publish {
        channel: channel.clone(),
        message: message.clone(),
    });
    let env = NodeEnv {
        shared,
        cl,
        view: &view,
        ctx: Default::default(),
        timing: Timing { request_ms: 0 },
    };
    for m in node::publish_targets(&env, view.peers.len()) {
        if let Some(p) = &view.peers[usize::from(m)] {
            let _ = p.send_oneway(&body, None);
        }
    }
}

/// Whether this node raises the keyspace event and invalidation of `key`'s expiry (the node
/// machine's rule, [`node::raises_expiry`]).
pub fn raises_expiry(shared: &Shared, cl: &Cluster, key: &[u8]) -> bool {
    let view = cl.view();
    let env = NodeEnv {
        shared,
        cl,
        view: &view,
        ctx: Default::default(),
        timing: Timing { request_ms: 0 },
    };
    node::raises_expiry(&env, key)
}
