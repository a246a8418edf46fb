//! The start-up copy: the [`Transfer`] machine, driven by the same driver as a keyed command.

use super::keyed::{Driver, Prepared};
use super::*;

/// A node's first task after it starts: the start-up [`Transfer`] (see its docs: which sources,
/// when a source counts, how long it waits for links), driven until done; then the node counts
/// as synced. Stops at shutdown.
pub async fn bootstrap(shared: Arc<Shared>, cl: Arc<Cluster>) {
    let started = Instant::now();
    let mut shutdown = shared.shutdown.subscribe();
    let timing = Timing {
        request_ms: shared.config.read().request_timeout_ms,
    };
    let view = cl.view();
    let mut o = Out::default();
    let t = {
        let env = NodeEnv {
            shared: &shared,
            cl: &cl,
            view: &view,
            ctx: Default::default(),
            timing,
        };
        let mut t = Transfer::new(&env, 0..SLOTS as Slot, node::TRANSFER_PAGE_BYTES);
        t.start(&env, &mut o);
        t
    };
    let mut d = Driver::new(t, Prepared::new(&cl, false), view, timing, false);
    let _ = d.apply(&shared, &cl, o);
    tokio::select! {
        _ = d.until_done(&shared, &cl) => {}
        _ = shutdown.changed() => return,
    }
    let report = d.m.report().unwrap_or_default();
    cl.set_synced();
    if report.failed_slots > 0 {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, failed_slots = report.failed_slots, "start-up copy could not copy every slot from every replica; serving what it has");
    }
    tracing::info!(component = "cluster", node_id = %cl.node_id, copied = report.copied, sources = report.sources,
        not_live = report.not_live, ms = started.elapsed().as_millis() as u64,
        "start-up copy done: merged what this node replicates from every live replica");
}
