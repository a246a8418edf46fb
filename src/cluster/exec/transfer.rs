//! The start-up copy: the [`Transfer`] machine driven until done.

use super::*;

/// A node's first task after it starts: the start-up [`Transfer`] (see its docs), driven until
/// done; then the node counts as synced. Waits (at most 3 s) for its links to come up first,
/// since a source it cannot reach is skipped.
pub async fn bootstrap(shared: Arc<Shared>, cl: Arc<Cluster>) {
    let started = Instant::now();
    let mut shutdown = shared.shutdown.subscribe();
    let links = Instant::now() + Duration::from_secs(3);
    while Instant::now() < links && cl.peers.iter().any(|p| !p.is_up() && !p.is_self_alias()) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shutdown.changed() => return,
        }
    }
    let lv = Levels {
        read: Default::default(),
        write: Default::default(),
        timeout: Duration::from_millis(shared.config.read().request_timeout_ms),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Option<Bytes>)>();
    let mut o = Out::default();
    let view = cl.view();
    let mut t = {
        let env = NodeEnv {
            shared: &shared,
            cl: &cl,
            view: &view,
            ctx: Default::default(),
            timing: timing(&lv),
        };
        let mut t = Transfer::new(&env, 0..SLOTS as Slot, node::TRANSFER_PAGE_BYTES);
        t.start(&env, &mut o);
        t
    };
    let mut wake_at = None;
    loop {
        // Carry out the output; failed sends are answered at once.
        let mut failed = Vec::new();
        if let Some(w) = o.wake_at.take() {
            wake_at = Some(w);
        }
        let view = cl.view();
        for send in o.sends.drain(..) {
            let body = send.call.to_body();
            for (to, tag) in send.to {
                let Some(tag) = tag else { continue };
                let ok = cl
                    .peer(&view, to)
                    .is_some_and(|p| p.send_tagged(&body, &tx, tag as usize).is_ok());
                if !ok {
                    failed.push(tag);
                }
            }
        }
        let env = NodeEnv {
            shared: &shared,
            cl: &cl,
            view: &view,
            ctx: Default::default(),
            timing: timing(&lv),
        };
        if !failed.is_empty() {
            for tag in failed {
                t.on_answer(&env, tag, Answer::LinkDown, &mut o);
            }
            continue;
        }
        if t.report().is_some() {
            break;
        }
        let wait = wake_at.map_or(Duration::from_secs(1), |w: u64| {
            Duration::from_millis(w.saturating_sub(now_ms()))
        });
        tokio::select! {
            got = rx.recv() => {
                let env = NodeEnv { ctx: Default::default(), ..env };
                if let Some((tag, body)) = got {
                    let answer = match body.map(|b| wire::from_body::<Response>(&b)) {
                        Some(Ok(r)) => Answer::Reply(r),
                        Some(Err(_)) => Answer::Reply(Response::Error("malformed reply".into())),
                        None => Answer::LinkDown,
                    };
                    t.on_answer(&env, tag as u64, answer, &mut o);
                }
            }
            _ = tokio::time::sleep(wait) => t.on_deadline(&env, &mut o),
            _ = shutdown.changed() => return,
        }
    }
    let report = t.report().unwrap_or_default();
    cl.set_synced();
    if report.failed_slots > 0 {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, failed_slots = report.failed_slots, "start-up copy could not copy every slot from every replica; serving what it has");
    }
    tracing::info!(component = "cluster", node_id = %cl.node_id, copied = report.copied, sources = report.sources,
        ms = started.elapsed().as_millis() as u64,
        "start-up copy done: merged what this node replicates from every live replica");
}
