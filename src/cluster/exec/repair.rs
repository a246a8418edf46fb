//! The node's [`Repair`] machine (hint replay, anti-entropy, the catch-up of a starting node),
//! driven by one task for as long as the node runs. The machine lives in [`Cluster::repair`]
//! (keyed commands add their hints to it); this task feeds it answers, its timer, peers coming
//! back and `HC.SYNC` requests, sends what it asks for, and logs its events.

use std::collections::HashMap;

use hypercache_cluster::repair::{RepairEvent, SyncReport};
use tokio::sync::{mpsc, oneshot};

use super::*;

/// An input to the repair task from elsewhere in the node.
pub enum RepairCmd {
    /// The outbound link to member `m` came up.
    PeerUp(MemberIdx),
    /// The machine was given work (a ring change): run its timer now.
    Poke,
    /// `HC.SYNC`: a round against member `peer` now; the report goes to `reply`.
    Sync {
        /// The member.
        peer: MemberIdx,
        /// Where the report goes.
        reply: oneshot::Sender<SyncReport>,
    },
}

/// The settings the machine runs with, read from the node's configuration.
pub fn settings(
    c: &crate::config::Config,
) -> (
    hypercache_cluster::repair::HintLimits,
    hypercache_cluster::repair::SyncSettings,
) {
    (
        hypercache_cluster::repair::HintLimits {
            per_node: c.hint_max_per_node as usize,
            total: c.hint_max_total as usize,
            bytes: c.hint_max_bytes,
            ttl_ms: c.hint_ttl * 1000,
            replay_interval_ms: c.hint_replay_interval_ms,
            batch: c.hint_replay_batch as usize,
            batch_bytes: hypercache_cluster::repair::hint_batch_bytes(c.maxmemory),
            rate: c.hint_replay_rate,
        },
        hypercache_cluster::repair::SyncSettings {
            interval_ms: c.anti_entropy_interval_ms,
            max_backoff: c.anti_entropy_max_backoff as u32,
            page_bytes: hypercache_cluster::repair::page_bytes(c.maxmemory)
                .min(c.rebalance_batch_size),
            max_concurrent: c.rebalance_max_concurrent as usize,
            max_bytes_per_sec: c.rebalance_max_bytes_per_sec,
            grace_ms: c.rebalance_grace_ms,
        },
    )
}

fn env<'a>(shared: &'a Shared, cl: &'a Cluster, view: &'a View) -> NodeEnv<'a> {
    super::node_env(shared, cl, view)
}

/// Sends what the machine asked for; calls that fail at once (link down) are fed back as
/// [`Answer::LinkDown`] right away.
fn carry_out(
    shared: &Shared,
    cl: &Cluster,
    view: &View,
    inbox: &Answers,
    sent: &mut HashMap<usize, (MemberIdx, u64, u64)>,
    spans: &mut Spans,
    mut o: Out,
) -> Option<u64> {
    let mut wake = None;
    loop {
        if let Some(w) = o.wake_at.take() {
            wake = Some(w);
        }
        if o.sends.is_empty() {
            return wake;
        }
        let mut failed = Vec::new();
        for send in o.sends.drain(..) {
            let body = send.call.to_body();
            for (to, tag) in send.to {
                let Some(tag) = tag else { continue };
                let span = shared
                    .telemetry
                    .as_ref()
                    .and_then(|t| spans.request(t, cl, view, to, tag, &body));
                let wire = span.as_ref().map(|s| s.wire());
                let r = match cl.peer(view, to) {
                    None => Err(CallError::Down),
                    Some(p) => p.send_to_inbox(&body, inbox, tag as usize, wire.as_ref()),
                };
                match r {
                    Ok(id) => {
                        sent.insert(tag as usize, (to, id, now_ms()));
                        if let Some(s) = span {
                            spans.calls.insert(tag as usize, s);
                        }
                    }
                    Err(e) => {
                        if let Some(s) = span {
                            s.error(&e.to_string());
                            s.end();
                        }
                        inc(&cl.metrics.dist.transport_errors);
                        failed.push(tag);
                    }
                }
            }
        }
        let e = env(shared, cl, view);
        let mut g = cl.repair.lock();
        for t in failed {
            g.on_answer(&e, t, Answer::LinkDown, &mut o);
        }
    }
}

/// The repair task's spans: one per hint replay batch (a root), one per round (a root:
/// `dist.merkle.round` or `dist.rebalance.transfer`) with a child per request.
#[derive(Default)]
struct Spans {
    calls: HashMap<usize, crate::telemetry::Span>,
    rounds: HashMap<MemberIdx, crate::telemetry::Span>,
}

impl Spans {
    /// The span of a request to `to` with `tag`, if its trace is sampled.
    fn request(
        &mut self,
        t: &crate::telemetry::Telemetry,
        cl: &Cluster,
        view: &View,
        to: MemberIdx,
        tag: u64,
        body: &[u8],
    ) -> Option<crate::telemetry::Span> {
        let peer = view.id_of(cl, to);
        if hypercache_cluster::repair::Repair::is_replay_tag(tag) {
            let span = t.root("dist.hint.replay")?;
            span.text("peer.id", peer);
            return Some(span);
        }
        let transfer = cl
            .repair
            .lock()
            .rounds_running()
            .iter()
            .find(|r| r.0 == to)
            .is_some_and(|r| r.1);
        let round = match self.rounds.entry(to) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let name = if transfer {
                    "dist.rebalance.transfer"
                } else {
                    "dist.merkle.round"
                };
                let round = t.root(name)?;
                round.text("peer.id", peer.clone());
                e.insert(round)
            }
        };
        let name = if transfer {
            "dist.rebalance.batch"
        } else {
            crate::telemetry::repair_span_name(hypercache_cluster::msg::request_name(body))
        };
        let span = t.child(round, name)?;
        span.text("peer.id", peer);
        Some(span)
    }

    /// Ends the spans of rounds that are over.
    fn rounds_over(&mut self, cl: &Cluster) {
        if self.rounds.is_empty() {
            return;
        }
        let running = cl.repair.lock().rounds_running();
        let over: Vec<MemberIdx> = self
            .rounds
            .keys()
            .filter(|m| !running.iter().any(|r| r.0 == **m))
            .copied()
            .collect();
        for m in over {
            if let Some(s) = self.rounds.remove(&m) {
                s.end();
            }
        }
    }
}

/// Logs the machine's events and hands `HC.SYNC` callers their reports.
fn after(cl: &Cluster, view: &View, waiters: &mut HashMap<u64, oneshot::Sender<SyncReport>>) {
    let (events, reports) = {
        let mut g = cl.repair.lock();
        (g.take_events(), g.take_reports())
    };
    let id_of = |m: MemberIdx| view.id_of(cl, m);
    for e in events {
        match e {
            RepairEvent::RoundFailed {
                peer,
                why,
                transfer: true,
            } => {
                tracing::warn!(component = "rebalance", node_id = %cl.node_id, peer = %id_of(peer), reason = %why, "rebalance transfer batch failed; it is asked again")
            }
            RepairEvent::RoundFailed { peer, why, .. } => {
                tracing::warn!(component = "anti-entropy", node_id = %cl.node_id, peer = %id_of(peer), reason = %why, "anti-entropy round failed")
            }
            RepairEvent::Backoff { peer, factor } => {
                tracing::info!(component = "anti-entropy", node_id = %cl.node_id, peer = %id_of(peer), factor, "anti-entropy backoff changed")
            }
            RepairEvent::CaughtUp { timed_out } => {
                if timed_out > 0 {
                    tracing::warn!(component = "rebalance", node_id = %cl.node_id, slots = timed_out, "catch-up ran out of time for some slots; serving them as they are (anti-entropy goes on)");
                } else {
                    tracing::info!(component = "rebalance", node_id = %cl.node_id, "caught up: every slot received from its replicas");
                }
            }
            RepairEvent::Rebalance { receive, release } => {
                tracing::info!(component = "rebalance", node_id = %cl.node_id, receive, release, "rebalance planned")
            }
            RepairEvent::Released { slots, keys } => {
                tracing::info!(component = "rebalance", node_id = %cl.node_id, slots, keys, "dropped slots this node no longer replicates (grace over)")
            }
        }
    }
    for (token, report) in reports {
        if let Some(tx) = waiters.remove(&token) {
            let _ = tx.send(report);
        }
    }
}

/// The repair task: runs until shutdown.
pub async fn run(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<RepairCmd>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let inbox: Answers = Default::default();
    let mut sent: HashMap<usize, (MemberIdx, u64, u64)> = HashMap::new();
    let mut spans = Spans::default();
    let mut waiters: HashMap<u64, oneshot::Sender<SyncReport>> = HashMap::new();
    let mut next_token = 0u64;
    let mut wake_at = now_ms();
    let mut dropped_before = 0u64;
    loop {
        let sleep = tokio::time::sleep(Duration::from_millis(wake_at.saturating_sub(now_ms())));
        let view = cl.view();
        let mut o = Out::default();
        tokio::select! {
            got = inbox.recv() => {
                let (tag, body) = got;
                sent.remove(&tag);
                if let Some(s) = spans.calls.remove(&tag) {
                    if body.is_none() {
                        s.error("link down");
                    }
                    s.end();
                }
                let answer = match body.map(|b| wire::from_body::<Response>(&b)) {
                    Some(Ok(r)) => Answer::Reply(r),
                    Some(Err(_)) => Answer::Reply(Response::Error("malformed reply".into())),
                    None => Answer::LinkDown,
                };
                let e = env(&shared, &cl, &view);
                cl.repair.lock().on_answer(&e, tag as u64, answer, &mut o);
            }
            cmd = rx.recv() => {
                let e = env(&shared, &cl, &view);
                match cmd {
                    None => return,
                    Some(RepairCmd::PeerUp(m)) => {
                        cl.repair.lock().peer_up(&e, m, &mut o);
                    }
                    Some(RepairCmd::Poke) => {
                        cl.repair.lock().on_timer(&e, &mut o);
                    }
                    Some(RepairCmd::Sync { peer, reply }) => {
                        next_token += 1;
                        waiters.insert(next_token, reply);
                        cl.repair.lock().sync_now(&e, peer, next_token, &mut o);
                    }
                }
            }
            _ = sleep => {
                let e = env(&shared, &cl, &view);
                let (hints, sync) = settings(&shared.config.read());
                let mut g = cl.repair.lock();
                g.set_settings(sync, hints);
                g.on_timer(&e, &mut o);
                // Calls the machine gave up on (their round timed out) are forgotten.
                let stale = now_ms().saturating_sub(2 * hypercache_cluster::repair::ROUND_REQUEST_TIMEOUT_MS);
                sent.retain(|tag, (m, id, at)| {
                    if *at < stale {
                        if let Some(p) = cl.peer(&view, *m) {
                            p.forget(*id);
                        }
                        if let Some(s) = spans.calls.remove(tag) {
                            s.error("no answer");
                            s.end();
                        }
                        false
                    } else {
                        true
                    }
                });
            }
            _ = shutdown.changed() => return,
        }
        if let Some(w) = carry_out(&shared, &cl, &view, &inbox, &mut sent, &mut spans, o) {
            wake_at = w;
        }
        spans.rounds_over(&cl);
        after(&cl, &view, &mut waiters);
        let dropped = {
            let c = cl.repair.lock().hints.counters();
            c.dropped.iter().chain(&c.global_dropped).sum::<u64>()
        };
        if dropped > dropped_before {
            tracing::warn!(component = "hints", node_id = %cl.node_id, dropped = dropped - dropped_before,
                "hints dropped: a queue is full (anti-entropy will repair those keys)");
            dropped_before = dropped;
        }
    }
}
