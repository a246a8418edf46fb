//! The coordinator's async driver: runs a keyed operation where [`coord::plan`] says, counts
//! replica acknowledgements with [`coord::Tally`], answers reads from the newest state with
//! [`coord::ReadTally`] and repairs stale replicas; serves peers' requests; and runs the
//! cluster-wide commands (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL).
//!
//! Work that needs no network (a read at ONE on a replica, a blind write's local apply) happens
//! synchronously on the client's task; the rest is a future the connection awaits in reply order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercache_cluster::coord::{self, Plan, ReadTally, Tally};
use hypercache_cluster::msg::{Level, Request, Response, State};
use hypercache_cluster::ring::MemberIdx;
use hypercache_cluster::slot::{key_slot, Slot, SLOTS};
use hypercache_cluster::version::Version;
use hypercache_cluster::wire::{self, Kind};
use hypercache_cluster::{Ctx, Op, Outcome};
use tokio::sync::mpsc;

use super::link::{CallError, Outbound};
use super::metrics::inc;
use super::{Cluster, Levels, View};
use crate::state::{now_ms, Shared};

/// A request could not reach its consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReplicas {
    /// A write (else a read).
    pub write: bool,
}

impl NoReplicas {
    /// The error reply: Redis's own `NOREPLICAS` code and text for writes, its counterpart for
    /// reads.
    pub fn text(self) -> &'static str {
        if self.write {
            "NOREPLICAS Not enough good replicas to write."
        } else {
            "NOREPLICAS Not enough good replicas to read."
        }
    }
}

/// An operation's result.
pub type Res = Result<Outcome, NoReplicas>;

/// A boxed future of a result.
pub type Later<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A keyed operation's result: available now, or once the network has answered.
pub enum Part {
    /// Done.
    Ready(Res),
    /// In progress.
    Later(Later<Res>),
}

/// The context a node runs operations in right now (its own clock and settings).
pub fn node_ctx(shared: &Shared) -> Ctx {
    let c = shared.config.read();
    let now = now_ms();
    Ctx {
        now,
        lru: (now / 1000) as u32,
        max_len: c.proto_max_bulk_len,
        mode: c.access_mode(),
        rand: (now as u32).wrapping_mul(0x9E37_79B9),
    }
}

fn exec_body(key: &[u8], op: &Op<'_>, lv: Levels, want_state: bool) -> Bytes {
    Bytes::from(wire::to_body(&Request::Exec {
        key,
        op: *op,
        read: lv.read,
        write: lv.write,
        want_state,
    }))
}

/// The operation of an [`exec_body`] (which this node encoded itself, so it decodes).
fn exec_op(body: &[u8]) -> Option<Op<'_>> {
    match wire::from_body::<Request<'_>>(body) {
        Ok(Request::Exec { op, .. }) => Some(op),
        _ => None,
    }
}

/// Starts `op` on `key` for a client of this node.
pub fn start(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    key: &Bytes,
    op: &Op<'_>,
    lv: Levels,
    ctx: &Ctx,
) -> Part {
    let view = cl.view();
    let prefs = view.prefs(key_slot(key));
    let mut p = coord::plan(op, prefs, view.me, lv.read, |m| view.live(cl, m));
    if p == Plan::LocalRead && !cl.is_synced() {
        // Still copying its data after a start: read from a replica that has it, if one is live.
        if let Some(m) = prefs
            .iter()
            .copied()
            .find(|&m| m != view.me && view.live(cl, m))
        {
            p = Plan::Forward(m);
        }
    }
    match p {
        Plan::LocalRead => {
            inc(&cl.metrics.local_reads);
            Part::Ready(Ok(shared.store.apply(key, op, ctx)))
        }
        Plan::Coordinate if op.is_blind() || (lv.write == Level::One && cl.is_synced()) => {
            let started = Instant::now();
            inc(&cl.metrics.write_attempts);
            let (out, changed) = shared.store.apply_versioned(key, op, ctx);
            let Some(state) = changed else {
                return Part::Ready(Ok(out));
            };
            let fanout = replicate(cl.clone(), view, key.clone(), state, lv, started);
            if lv.write == Level::One {
                // Decided by the local copy; `replicate` sends the value on and records the
                // latency.
                tokio::spawn(fanout);
                return Part::Ready(Ok(out));
            }
            Part::Later(Box::pin(async move { fanout.await.map(|()| out) }))
        }
        Plan::Coordinate => {
            let fut = coordinate(
                shared.clone(),
                cl.clone(),
                key.clone(),
                exec_body(key, op, lv, false),
                lv,
                *ctx,
            );
            Part::Later(Box::pin(async move { fut.await.map(|(o, _)| o) }))
        }
        Plan::FanOutRead => Part::Later(Box::pin(read_fanout(
            shared.clone(),
            cl.clone(),
            key.clone(),
            exec_body(key, op, lv, false),
            lv,
            *ctx,
        ))),
        Plan::Forward(m) => Part::Later(Box::pin(forward(
            shared.clone(),
            cl.clone(),
            key.clone(),
            exec_body(key, op, lv, prefs.contains(&view.me)),
            m,
            lv,
            *ctx,
        ))),
        Plan::Unavailable => {
            let write = !op.is_read_only();
            count_failure(cl, write);
            Part::Ready(Err(NoReplicas { write }))
        }
    }
}

/// Runs `op` wherever it belongs and waits for the result (for commands made of several steps).
pub async fn run(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    key: &Bytes,
    op: Op<'_>,
    lv: Levels,
    ctx: Ctx,
) -> Res {
    match start(shared, cl, key, &op, lv, &ctx) {
        Part::Ready(r) => r,
        Part::Later(f) => f.await,
    }
}

fn count_failure(cl: &Cluster, write: bool) {
    inc(if write {
        &cl.metrics.write_quorum_failures
    } else {
        &cl.metrics.read_quorum_failures
    });
}

/// Sends `body` to each member in `to` in parallel and feeds the outcomes to `on` (member, the
/// decoded response or `None` for a failure: link down, closed, malformed, or no answer by the
/// deadline) until it returns true (decided) or every target is accounted for. Returns whether
/// `on` decided.
async fn fan_out(
    cl: &Cluster,
    view: &View,
    to: &[MemberIdx],
    body: &[u8],
    deadline: Duration,
    mut on: impl FnMut(MemberIdx, Option<Response>) -> bool,
) -> bool {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sent = Vec::with_capacity(to.len());
    let mut decided = false;
    // Send to every target even once decided: the value must reach every live replica.
    for (tag, &m) in to.iter().enumerate() {
        let r = match cl.peer(view, m) {
            Some(peer) => peer.send_tagged(body, &tx, tag),
            None => Err(CallError::Down),
        };
        match r {
            Ok(id) => sent.push((tag, id)),
            Err(_) => {
                inc(&cl.metrics.transport_errors);
                if !decided && on(m, None) {
                    decided = true;
                }
            }
        }
    }
    drop(tx);
    let started = Instant::now();
    let sleep = tokio::time::sleep(deadline);
    tokio::pin!(sleep);
    // Who answered: a bit per target up to 64 (a write's replicas; no allocation), a vector
    // beyond (a broadcast to a large cluster).
    let (mut small, mut big) = (0u64, vec![false; if to.len() > 64 { to.len() } else { 0 }]);
    let mut mark = |tag: usize| {
        if tag < 64 {
            small |= 1 << tag;
        } else {
            big[tag] = true;
        }
    };
    let mut left = sent.len();
    while !decided && left > 0 {
        tokio::select! {
            // Replies first: one that arrived with the deadline still counts.
            biased;
            got = rx.recv() => match got {
                Some((tag, reply)) => {
                    mark(tag);
                    left -= 1;
                    let m = to[tag];
                    let r = match reply.map(|b| wire::from_body::<Response>(&b)) {
                        Some(Ok(r)) => {
                            cl.metrics.peer_latency.record(started.elapsed());
                            Some(r)
                        }
                        _ => {
                            inc(&cl.metrics.transport_errors);
                            None
                        }
                    };
                    decided = on(m, r);
                }
                None => break,
            },
            _ = &mut sleep => {
                inc(&cl.metrics.transport_timeouts);
                break;
            }
        }
    }
    // Targets that have not answered: stop waiting for them; undecided, they count as failures.
    for &(tag, id) in &sent {
        let answered = if tag < 64 {
            small & (1 << tag) != 0
        } else {
            big[tag]
        };
        if !answered {
            if let Some(peer) = cl.peer(view, to[tag]) {
                peer.forget(id);
            }
            if !decided {
                inc(&cl.metrics.transport_errors);
                decided = on(to[tag], None);
            }
        }
    }
    decided
}

/// Sends a coordinator's new `state` of `key` to the other replicas and waits for the write level.
async fn replicate(
    cl: Arc<Cluster>,
    view: Arc<View>,
    key: Bytes,
    state: State,
    lv: Levels,
    started: Instant,
) -> Result<(), NoReplicas> {
    let prefs = view.prefs(key_slot(&key));
    let others: Vec<MemberIdx> = prefs.iter().copied().filter(|m| *m != view.me).collect();
    let local = prefs.contains(&view.me);
    let mut tally = Tally::for_level(lv.write, prefs.len(), local);
    if local {
        inc(&cl.metrics.write_acks);
    }
    let size = key.len() + state.value_len() + 32;
    let body = wire::to_body_sized(&Request::Put { key: &key, state }, size);
    cl.metrics
        .replica_fanout
        .fetch_add(others.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let metrics = &cl.metrics;
    if tally.verdict().is_none() {
        fan_out(&cl, &view, &others, &body, lv.timeout, |_, r| {
            if matches!(r, Some(Response::Applied(_))) {
                inc(&metrics.write_acks);
                tally.ok();
            } else {
                tally.failed();
            }
            tally.verdict().is_some()
        })
        .await;
    } else if !others.is_empty() {
        // Already decided (ONE): still send the value to the others, without waiting.
        for &m in &others {
            if let Some(peer) = cl.peer(&view, m) {
                if peer.send_oneway(&body).is_err() {
                    inc(&cl.metrics.transport_errors);
                }
            }
        }
    }
    cl.metrics.write_latency.record(started.elapsed());
    if tally.verdict() == Some(true) {
        Ok(())
    } else {
        count_failure(&cl, true);
        Err(NoReplicas { write: true })
    }
}

/// Coordinates a read-modify-write here: first brings the local copy up to date from enough
/// replicas that, with the write level, they overlap every acknowledged write (so a coordinator
/// that missed writes, for example after a restart, cannot lose them), then applies and
/// replicates.
async fn coordinate(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    key: Bytes,
    body: Bytes,
    lv: Levels,
    ctx: Ctx,
) -> Result<(Outcome, Option<State>), NoReplicas> {
    let started = Instant::now();
    inc(&cl.metrics.write_attempts);
    let view = cl.view();
    let Some(op) = exec_op(&body) else {
        return Err(NoReplicas { write: true });
    };
    let prefs = view.prefs(key_slot(&key)).to_vec();
    // A node still copying its data after a start reads first even at ONE, and does not trust
    // its own copy.
    let synced = cl.is_synced();
    if !op.is_blind() && (lv.write != Level::One || !synced) {
        let tally = ask_replicas(&shared, &cl, &view, &key, &prefs, lv.write, lv.timeout).await;
        if tally.tally.verdict() != Some(true) {
            count_failure(&cl, true);
            return Err(NoReplicas { write: true });
        }
        if shared.store.merge(&key, tally.newest(), &ctx) {
            inc(&cl.metrics.read_repairs);
        }
    }
    let (out, changed) = shared.store.apply_versioned(&key, &op, &ctx);
    match changed {
        None => Ok((out, None)),
        Some(state) => {
            let copy = state.clone();
            replicate(cl, view, key, state, lv, started)
                .await
                .map(|()| (out, Some(copy)))
        }
    }
}

/// Reads `key`'s state from its replicas `prefs` until `level` of them answered (or cannot):
/// this node's copy counts when it is a replica and bootstrapped, the others are asked in
/// parallel. Answers with an implausible version count as none.
async fn ask_replicas(
    shared: &Shared,
    cl: &Cluster,
    view: &View,
    key: &[u8],
    prefs: &[MemberIdx],
    level: Level,
    timeout: Duration,
) -> ReadTally<MemberIdx> {
    let mut tally: ReadTally<MemberIdx> = ReadTally::new(level, prefs.len());
    if prefs.contains(&view.me) && cl.is_synced() {
        tally.answer(view.me, shared.store.fetch(key));
    }
    if tally.tally.verdict().is_none() {
        let others: Vec<MemberIdx> = prefs.iter().copied().filter(|m| *m != view.me).collect();
        let fetch = wire::to_body(&Request::Fetch { key });
        fan_out(cl, view, &others, &fetch, timeout, |m, r| {
            match r {
                Some(Response::State(s)) if sane(&s) => tally.answer(m, s),
                _ => tally.failed(),
            }
            tally.tally.verdict().is_some()
        })
        .await;
    }
    tally
}

/// A QUORUM/ALL read coordinated here: asks the replicas, answers from the newest state, repairs
/// the stale ones.
async fn read_fanout(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    key: Bytes,
    body: Bytes,
    lv: Levels,
    ctx: Ctx,
) -> Res {
    let started = Instant::now();
    inc(&cl.metrics.read_fanouts);
    let view = cl.view();
    let Some(op) = exec_op(&body) else {
        return Err(NoReplicas { write: false });
    };
    let prefs = view.prefs(key_slot(&key)).to_vec();
    let local = prefs.contains(&view.me);
    let tally = ask_replicas(&shared, &cl, &view, &key, &prefs, lv.read, lv.timeout).await;
    cl.metrics.read_latency.record(started.elapsed());
    if tally.tally.verdict() != Some(true) {
        count_failure(&cl, false);
        return Err(NoReplicas { write: false });
    }
    let newest = tally.newest().clone();
    let stale = tally.stale();
    if !stale.is_empty() && newest.version().is_some() {
        let put = wire::to_body(&Request::Put {
            key: &key,
            state: newest.clone(),
        });
        for m in stale {
            cl.metrics
                .read_repairs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match cl.peer(&view, m) {
                None => {
                    shared.store.merge(&key, &newest, &ctx);
                }
                Some(peer) => {
                    if peer.send_oneway(&put).is_err() {
                        inc(&cl.metrics.transport_errors);
                    }
                }
            }
        }
    }
    let out = coord::outcome_of(&op, &key, &newest, &ctx);
    if local && op.touches() {
        // Record the access on the local copy too (LRU/LFU), as a local read would.
        shared.store.apply(&key, &Op::Touch, &ctx);
    }
    Ok(out)
}

/// Sends the operation to member `m` to coordinate. If its link is down or drops before the reply,
/// the next live replica takes over (once): the first may have failed before or after applying,
/// so such an operation is at least once, not exactly once.
async fn forward(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    key: Bytes,
    body: Bytes,
    m: MemberIdx,
    lv: Levels,
    ctx: Ctx,
) -> Res {
    let view = cl.view();
    let Some(op) = exec_op(&body) else {
        return Err(NoReplicas { write: true });
    };
    let write = !op.is_read_only();
    let mut target = m;
    for attempt in 0..2 {
        let Some(peer) = cl.peer(&view, target) else {
            break;
        };
        inc(&cl.metrics.forwards);
        let started = Instant::now();
        // The coordinator has its own deadline for the replicas; allow it that and a margin.
        let r = peer.call(&body, lv.timeout + lv.timeout / 2).await;
        cl.metrics.forward_latency.record(started.elapsed());
        let h = if write {
            &cl.metrics.write_latency
        } else {
            &cl.metrics.read_latency
        };
        match r {
            Ok(reply) => {
                h.record(started.elapsed());
                return match wire::from_body::<Response>(&reply) {
                    Ok(Response::Outcome(o)) => Ok(o.into()),
                    Ok(Response::Written { outcome, state }) => {
                        // This node is a replica: hold the new state before the client hears
                        // back, so its next read here sees its write.
                        if sane(&state) {
                            shared.store.merge(&key, &state, &ctx);
                        }
                        Ok(outcome.into())
                    }
                    Ok(Response::NoReplicas { write }) => Err(NoReplicas { write }),
                    _ => {
                        inc(&cl.metrics.transport_errors);
                        Err(NoReplicas { write })
                    }
                };
            }
            Err(CallError::Timeout) => {
                inc(&cl.metrics.transport_errors);
                inc(&cl.metrics.transport_timeouts);
                break;
            }
            Err(e) => {
                inc(&cl.metrics.transport_errors);
                if attempt > 0 {
                    break;
                }
                tracing::debug!(component = "cluster", node_id = %cl.node_id, error = %e, "forward failed; trying the next replica");
                inc(&cl.metrics.forward_retries);
                let prefs = view.prefs(key_slot(&key));
                let failed = target;
                match coord::plan(&op, prefs, view.me, lv.read, |x| {
                    x != failed && view.live(&cl, x)
                }) {
                    Plan::Forward(next) => target = next,
                    Plan::LocalRead => return Ok(shared.store.apply(&key, &op, &ctx)),
                    Plan::Coordinate => {
                        return coordinate(shared, cl.clone(), key, body, lv, ctx)
                            .await
                            .map(|(o, _)| o)
                    }
                    Plan::FanOutRead => {
                        return read_fanout(shared, cl.clone(), key, body, lv, ctx).await
                    }
                    Plan::Unavailable => break,
                }
            }
        }
    }
    count_failure(&cl, write);
    Err(NoReplicas { write })
}

/// How far ahead of this node's clock a peer's version may be (5 minutes): beyond that it is a
/// broken clock or a hostile peer, and observing it would drag every clock forward.
pub const MAX_AHEAD_MS: u64 = 5 * 60 * 1000;

/// Whether a state a peer answered with has a plausible version (else it counts as no answer).
fn sane(s: &State) -> bool {
    s.version()
        .is_none_or(|v| v.is_plausible(now_ms(), MAX_AHEAD_MS))
}

/// Whether the versions a request carries are plausible at `now`.
fn plausible(req: &Request<'_>, now: u64) -> bool {
    match req {
        Request::Put { state, .. } => state
            .version()
            .is_none_or(|v| v.is_plausible(now, MAX_AHEAD_MS)),
        Request::Flush { horizon } => horizon.is_plausible(now, MAX_AHEAD_MS),
        _ => true,
    }
}

/// Serves one request from a peer's inbound link, replying on `q`.
pub fn serve_request(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    id: u64,
    body: Bytes,
    q: &Arc<Outbound>,
) {
    let req = match wire::from_body::<Request<'_>>(&body) {
        Ok(r) => r,
        Err(e) => {
            inc(&cl.metrics.transport_errors);
            let reply = Response::Error(format!("malformed request: {e}"));
            q.push_msg(Kind::Reply, id, &reply);
            return;
        }
    };
    let ctx = node_ctx(shared);
    let reply = match req {
        Request::Ping => Response::Pong,
        Request::Put { .. } | Request::Flush { .. } if !plausible(&req, ctx.now) => {
            inc(&cl.metrics.transport_errors);
            tracing::warn!(component = "cluster", node_id = %cl.node_id, "refused a version more than {MAX_AHEAD_MS} ms ahead of this node's clock");
            Response::Error("version too far in the future".into())
        }
        Request::Put { key, state } => Response::Applied(shared.store.merge(key, &state, &ctx)),
        Request::Fetch { .. } if !cl.is_synced() => Response::Syncing,
        Request::Fetch { key } => Response::State(shared.store.fetch(key)),
        Request::Dump { .. } if !cl.is_synced() => Response::Syncing,
        Request::Dump { slots } => Response::Dump(shared.store.dump(&slots)),
        Request::Keys { slots, pattern } => Response::Keys {
            keys: shared.store.keys_in(&slots, pattern, &ctx),
            examined: shared.store.count_in(&slots, ctx.now),
        },
        Request::Count { slots } => Response::Count(shared.store.count_in(&slots, ctx.now)),
        Request::RandomKey => Response::Key(shared.store.random_key(&mut *shared.rng.lock(), &ctx)),
        Request::Flush { horizon } => {
            // Off the link's reader: a flush walks every key.
            let (sh, q) = (shared.clone(), q.clone());
            tokio::task::spawn_blocking(move || {
                sh.store.flush_at(horizon);
                q.push_msg(Kind::Reply, id, &Response::Done);
            });
            return;
        }
        Request::Exec {
            key,
            op,
            read,
            write,
            want_state,
        } => {
            inc(&cl.metrics.forwarded_in);
            let lv = Levels {
                read,
                write,
                timeout: Duration::from_millis(shared.config.read().request_timeout_ms),
            };
            let key = Bytes::copy_from_slice(key);
            // The sender chose this node as coordinator: run here whatever this node's own view
            // says (re-forwarding could loop while views differ).
            if op.is_read_only() && cl.is_synced() {
                Response::Outcome(shared.store.apply(&key, &op, &ctx).into())
            } else {
                // A write to coordinate, or a read while this node is still copying its data
                // (answered from the other replicas instead).
                let read = op.is_read_only();
                let (sh, c, q, body) = (shared.clone(), cl.clone(), q.clone(), body.clone());
                tokio::spawn(async move {
                    let done = if read {
                        read_fanout(sh, c, key, body, lv, ctx)
                            .await
                            .map(|o| (o, None))
                    } else {
                        coordinate(sh, c, key, body, lv, ctx).await
                    };
                    let reply = match done {
                        Ok((o, Some(state))) if want_state => Response::Written {
                            outcome: o.into(),
                            state,
                        },
                        Ok((o, _)) => Response::Outcome(o.into()),
                        Err(NoReplicas { write }) => Response::NoReplicas { write },
                    };
                    q.push_msg(Kind::Reply, id, &reply);
                });
                return;
            }
        }
    };
    q.push_msg(Kind::Reply, id, &reply);
}

/// Which member answers for each slot in `slots` in a cluster-wide command: the first live
/// replica. Returns (member, its slots) groups; slots with no live replica are left out and
/// reported in the second value.
fn owners(
    cl: &Cluster,
    view: &View,
    slots: impl Iterator<Item = Slot>,
) -> (Vec<(MemberIdx, Vec<u16>)>, bool) {
    let mut groups: Vec<(MemberIdx, Vec<u16>)> = Vec::new();
    let mut missing = false;
    for slot in slots {
        match view.prefs(slot).iter().copied().find(|&m| view.live(cl, m)) {
            Some(m) => match groups.iter_mut().find(|(g, _)| *g == m) {
                Some((_, v)) => v.push(slot),
                None => groups.push((m, vec![slot])),
            },
            None => missing = true,
        }
    }
    (groups, missing)
}

/// Asks each group's member (this node locally) and collects the responses, in group order.
async fn ask_groups(
    shared: &Shared,
    cl: &Cluster,
    view: &View,
    groups: &[(MemberIdx, Vec<u16>)],
    make: impl Fn(&[u16]) -> Vec<u8>,
    local: impl Fn(&Shared, &[u16]) -> Response,
    timeout: Duration,
) -> Option<Vec<Response>> {
    let mut out: Vec<Option<Response>> = vec![None; groups.len()];
    let mut remote = Vec::new();
    for (i, (m, slots)) in groups.iter().enumerate() {
        if *m == view.me {
            out[i] = Some(local(shared, slots));
        } else {
            remote.push(i);
        }
    }
    // One request per member; members differ per group, so send each its own body.
    let mut ok = true;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sent = Vec::new();
    for &i in &remote {
        match cl.peer(view, groups[i].0) {
            Some(peer) => match peer.send_tagged(&make(&groups[i].1), &tx, i) {
                Ok(id) => sent.push((i, id)),
                Err(_) => ok = false,
            },
            None => ok = false,
        }
    }
    drop(tx);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut left = sent.len();
    while ok && left > 0 {
        tokio::select! {
            biased;
            got = rx.recv() => match got {
                Some((i, body)) => {
                    left -= 1;
                    out[i] = body.and_then(|b| wire::from_body::<Response>(&b).ok());
                    ok = out[i].is_some();
                }
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    for (i, id) in sent {
        if out[i].is_none() {
            if let Some(peer) = cl.peer(view, groups[i].0) {
                peer.forget(id);
            }
        }
    }
    if !ok || out.iter().any(Option::is_none) {
        inc(&cl.metrics.transport_errors);
        return None;
    }
    Some(out.into_iter().flatten().collect())
}

/// Cluster-wide KEYS (each slot listed by its first live replica).
pub async fn keys(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    pattern: Bytes,
    timeout: Duration,
) -> Result<Vec<Bytes>, NoReplicas> {
    let (keys, _) = keys_in_slots(&shared, &cl, 0..SLOTS as Slot, Some(&pattern), timeout).await?;
    Ok(keys)
}

async fn keys_in_slots(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    slots: impl Iterator<Item = Slot>,
    pattern: Option<&Bytes>,
    timeout: Duration,
) -> Result<(Vec<Bytes>, u64), NoReplicas> {
    inc(&cl.metrics.broadcasts);
    let view = cl.view();
    let (groups, missing) = owners(cl, &view, slots);
    if missing {
        count_failure(cl, false);
        return Err(NoReplicas { write: false });
    }
    let pat = pattern.map(|p| &p[..]);
    let resp = ask_groups(
        shared,
        cl,
        &view,
        &groups,
        |slots| {
            wire::to_body(&Request::Keys {
                slots: slots.to_vec(),
                pattern: pat,
            })
        },
        |sh, slots| Response::Keys {
            keys: sh.store.keys_in(slots, pat, &node_ctx(sh)),
            examined: sh.store.count_in(slots, now_ms()),
        },
        timeout,
    )
    .await
    .ok_or(NoReplicas { write: false })?;
    let mut all: Vec<(Slot, Bytes)> = Vec::new();
    let mut seen = 0;
    for r in resp {
        if let Response::Keys { keys, examined } = r {
            all.extend(keys.into_iter().map(|k| (key_slot(&k), k)));
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
pub async fn scan(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
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

/// Cluster-wide DBSIZE: each slot counted by its first live replica.
pub async fn dbsize(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    timeout: Duration,
) -> Result<i64, NoReplicas> {
    inc(&cl.metrics.broadcasts);
    let view = cl.view();
    let (groups, missing) = owners(&cl, &view, 0..SLOTS as Slot);
    if missing {
        count_failure(&cl, false);
        return Err(NoReplicas { write: false });
    }
    let resp = ask_groups(
        &shared,
        &cl,
        &view,
        &groups,
        |slots| {
            wire::to_body(&Request::Count {
                slots: slots.to_vec(),
            })
        },
        |sh, slots| Response::Count(sh.store.count_in(slots, now_ms())),
        timeout,
    )
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
pub async fn randomkey(shared: Arc<Shared>, cl: Arc<Cluster>, timeout: Duration) -> Option<Bytes> {
    inc(&cl.metrics.broadcasts);
    let ctx = node_ctx(&shared);
    let live: Vec<usize> = (0..cl.peers.len())
        .filter(|&i| cl.peers[i].is_up())
        .collect();
    let start = rand::Rng::random_range(&mut *shared.rng.lock(), 0..=live.len());
    let body = wire::to_body(&Request::RandomKey);
    for k in 0..=live.len() {
        let pick = (start + k) % (live.len() + 1);
        let found = if pick == live.len() {
            shared.store.random_key(&mut *shared.rng.lock(), &ctx)
        } else {
            match cl.peers[live[pick]].call(&body, timeout).await {
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

/// Cluster-wide FLUSHALL: flushes here and on every live member at a new version (the horizon),
/// below which no write is accepted any more, so that a replica that missed the flush cannot bring
/// keys back through repair. Members that are down keep their keys until they are repaired or
/// flushed again (logged). A member that was live but did not confirm makes the command fail.
pub async fn flushall(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    timeout: Duration,
) -> Result<(), NoReplicas> {
    inc(&cl.metrics.broadcasts);
    let horizon = Version {
        hlc: shared.store.clock().tick(now_ms()),
        origin: 0,
    };
    let sh = shared.clone();
    let local = tokio::task::spawn_blocking(move || sh.store.flush_at(horizon));
    let body = wire::to_body(&Request::Flush { horizon });
    let view = cl.view();
    let members: Vec<MemberIdx> = (0..view.peer_of.len() as MemberIdx)
        .filter(|m| *m != view.me)
        .collect();
    let live: Vec<bool> = members.iter().map(|&m| view.live(&cl, m)).collect();
    let (mut down, mut failed) = (0, 0);
    fan_out(&cl, &view, &members, &body, timeout, |m, r| {
        if !matches!(r, Some(Response::Done)) {
            let i = members.iter().position(|x| *x == m).unwrap_or(0);
            if live[i] {
                failed += 1;
            } else {
                down += 1;
            }
        }
        false
    })
    .await;
    let _ = local.await;
    if down > 0 {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, down, "FLUSHALL did not reach members that are down; they keep their keys until repaired");
    }
    if failed > 0 {
        count_failure(&cl, true);
        return Err(NoReplicas { write: true });
    }
    Ok(())
}

/// A node's first task after it starts: copy every slot it replicates from another live replica
/// (values and tombstones), so that a node that comes back empty after a crash neither answers
/// reads from its empty copy nor lets a read quorum form without the writes it missed. Until it
/// is done ([`Cluster::is_synced`]), its own copy does not count in reads, its reads at ONE go to
/// another replica, and its read-modify-writes read first from the others.
///
/// Waits (at most 3 s) for the links to come up, then asks, for each slot, the live other
/// replicas in preference order, 256 slots per request, until one that is itself synced answers.
/// A slot whose live replicas are all still starting (a cold start of the whole cluster) or all
/// fail is taken as it is, with a warning for failures.
pub async fn bootstrap(shared: Arc<Shared>, cl: Arc<Cluster>) {
    let started = Instant::now();
    let links = Instant::now() + Duration::from_secs(3);
    while Instant::now() < links && cl.peers.iter().any(|p| !p.is_up() && !p.is_self_alias()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let timeout = {
        let t = Duration::from_millis(shared.config.read().request_timeout_ms);
        t.max(Duration::from_secs(5))
    };
    let view = cl.view();
    // Per slot this node replicates: the live other replicas still to try, in preference order.
    let mut todo: Vec<(Slot, Vec<MemberIdx>)> = (0..SLOTS as Slot)
        .filter(|&slot| view.prefs(slot).contains(&view.me))
        .map(|slot| {
            let others = view
                .prefs(slot)
                .iter()
                .copied()
                .filter(|&m| m != view.me && view.live(&cl, m))
                .collect();
            (slot, others)
        })
        .collect();
    let (mut copied, mut failed) = (0usize, 0usize);
    // Each round asks every slot's next candidate; at most one round per replica.
    while todo.iter().any(|(_, c)| !c.is_empty()) {
        let mut groups: Vec<(MemberIdx, Vec<u16>)> = Vec::new();
        for (slot, cands) in &todo {
            if let Some(&m) = cands.first() {
                match groups.iter_mut().find(|(g, _)| *g == m) {
                    Some((_, v)) => v.push(*slot),
                    None => groups.push((m, vec![*slot])),
                }
            }
        }
        let mut done: Vec<u16> = Vec::new();
        let mut errors: Vec<u16> = Vec::new();
        for (src, slots) in &groups {
            let Some(peer) = cl.peer(&view, *src) else {
                errors.extend(slots);
                continue;
            };
            for chunk in slots.chunks(256) {
                let body = wire::to_body(&Request::Dump {
                    slots: chunk.to_vec(),
                });
                let ctx = node_ctx(&shared);
                match peer
                    .call(&body, timeout)
                    .await
                    .map(|b| wire::from_body::<Response>(&b))
                {
                    Ok(Ok(Response::Dump(entries))) => {
                        for (k, state) in entries {
                            if sane(&state) && shared.store.merge(&k, &state, &ctx) {
                                copied += 1;
                            }
                        }
                        done.extend(chunk);
                    }
                    // Still starting itself: try the next replica.
                    Ok(Ok(Response::Syncing)) => {}
                    _ => {
                        inc(&cl.metrics.transport_errors);
                        errors.extend(chunk);
                    }
                }
            }
        }
        for (slot, cands) in &mut todo {
            if done.contains(slot) {
                cands.clear();
            } else if !cands.is_empty() {
                cands.remove(0);
                if cands.is_empty() && errors.contains(slot) {
                    failed += 1;
                }
            }
        }
        todo.retain(|(_, c)| !c.is_empty());
    }
    cl.set_synced();
    if failed > 0 {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, failed_slots = failed, "bootstrap could not copy every slot; serving what it has");
    }
    tracing::info!(component = "cluster", node_id = %cl.node_id, copied, ms = started.elapsed().as_millis() as u64,
        "bootstrap done: copied what this node replicates from the other replicas");
}
