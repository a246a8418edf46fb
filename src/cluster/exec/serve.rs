//! What a node answers to its peers: [`node::serve`] run on the link's reader.

use super::keyed::{drive, Prepared};
use super::*;

/// Serves one request from a peer's inbound link (peer `from_id`), replying on `q`.
pub fn serve_request(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    from_id: &str,
    id: u64,
    body: Bytes,
    q: &Arc<Outbound>,
) {
    let mut span = None;
    let req = match wire::from_body_in::<Request<'_>>(&body) {
        Ok((env, r)) => {
            cl.saw_epoch(from_id, env.epoch);
            // The sender's trace continues here when it is sampled.
            if let (Some(t), Some(tel)) = (env.trace, shared.telemetry.as_ref()) {
                let name = hypercache_cluster::msg::request_name(&body);
                span = tel.remote(&t, crate::telemetry::serve_span_name(name));
                if let Some(s) = &span {
                    s.text("peer.id", from_id.to_string());
                }
            }
            r
        }
        Err(e) => {
            inc(&cl.metrics.dist.transport_errors);
            let reply = Response::Error(format!("malformed request: {e}"));
            q.push_msg(Kind::Reply, id, &reply);
            return;
        }
    };
    let view = cl.view();
    // A forwarded read-modify-write may wait at the gate: its channel is registered before it
    // starts.
    let may_queue = match &req {
        Request::Exec { key, op, write, .. } => op
            .op()
            .is_some_and(|op| node::may_queue(&op, *write, cl.synced(key_slot(key)))),
        // A transaction waits at its keys' gates.
        Request::ExecGroup { .. } => true,
        _ => false,
    };
    let from = match req {
        // Only anti-entropy needs to know who asks (which slots both replicate; whether it
        // sees the sender live).
        Request::Dump { .. }
        | Request::Tree { .. }
        | Request::Buckets { .. }
        | Request::Digests { .. }
        | Request::List { .. }
        | Request::Pull { .. } => cl.member_idx(from_id),
        _ => None,
    };
    let lv = Levels {
        read: Default::default(),
        write: Default::default(),
        timeout: Duration::from_millis(shared.config.read().request_timeout_ms),
    };
    let env = NodeEnv {
        shared,
        cl,
        view: &view,
        ctx: Default::default(),
        timing: timing(&lv),
    };
    let is_exec = matches!(req, Request::Exec { .. } | Request::ExecGroup { .. });
    let p = is_exec.then(|| Prepared::new(cl, may_queue));
    match node::serve(&env, from, p.as_ref().map_or(0, |p| p.token), req) {
        Served::Reply(r) => {
            if let Some(p) = p.filter(|p| p.registered) {
                cl.unregister(p.token);
            }
            if let Response::Error(why) = &r {
                inc(&cl.metrics.dist.transport_errors);
                tracing::warn!(component = "cluster", node_id = %cl.node_id, peer = %from_id, reason = %why, "refused a peer request");
            }
            q.push_msg(Kind::Reply, id, &r);
        }
        Served::Exec(m, o) => {
            let p = p.unwrap_or_else(|| Prepared::new(cl, false));
            let trace = span.take().map(|s| super::keyed::Traced::new(s, None));
            run_forwarded(shared, cl, *m, p, o, &lv, view.clone(), trace, id, q);
        }
        Served::ExecGroup(m, o) => {
            let p = p.unwrap_or_else(|| Prepared::new(cl, false));
            let trace = span.take().map(|s| super::keyed::Traced::new(s, None));
            run_forwarded(shared, cl, *m, p, o, &lv, view.clone(), trace, id, q);
        }
        Served::Flush(horizon, db) => {
            // Off the link's reader: a flush walks every key.
            let flush = super::broadcast::flush_here(shared, vec![(horizon, db)]);
            let q = q.clone();
            shared.tasks.spawn(async move {
                let _ = flush.await;
                q.push_msg(Kind::Reply, id, &Response::Done);
            });
        }
        Served::Forget(member) => {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            cl.member_cmd(super::super::swim::MemberCmd::Forget(member, tx));
            q.push_msg(Kind::Reply, id, &Response::Done);
        }
        Served::Invalidate(message) => {
            // A key changed at its coordinator: this node's tracking clients forget it.
            shared.tracking.invalidate(shared, &message, 0);
        }
        Served::TrackingAnnounced => {
            // That node has tracking clients: send it the keys that change here.
            shared.tracking.peer_announced();
            crate::notify::refresh(shared);
        }
        Served::Publish(channel, message) => {
            // Delivered in the order the link carries them: a publisher's order is kept.
            let limits = shared.config.read().client_output_buffer_limit;
            shared
                .pubsub
                .publish(&channel, &message, &limits, crate::state::now_ms());
        }
        Served::Settings(doc, entries) => {
            super::super::settings::offer(shared, cl, doc, entries);
            q.push_msg(Kind::Reply, id, &Response::Done);
        }
        Served::RandomKey(db) => {
            let k = shared
                .store
                .random_key(db, &mut *shared.rng.lock(), &node_ctx(shared));
            q.push_msg(Kind::Reply, id, &Response::Key(k));
        }
    }
    if let Some(s) = span {
        s.end();
    }
}

/// Runs a forwarded command's machine `m` (started, first output `o`) and answers request `id`
/// on `q` with what it finishes with. The forwarded operation's own calls are children of this
/// node's span (`trace`).
#[allow(clippy::too_many_arguments)]
fn run_forwarded<M: Machine + Send + 'static>(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    m: M,
    p: Prepared,
    o: Out,
    lv: &Levels,
    view: Arc<View>,
    trace: Option<Box<super::keyed::Traced>>,
    id: u64,
    q: &Arc<Outbound>,
) {
    inc(&cl.metrics.dist.forwarded_in);
    let started = Instant::now();
    match drive(shared, cl, m, p, o, lv, false, started, view, None, trace) {
        Ok(f) => q.push_msg(Kind::Reply, id, &node::exec_response(f)),
        Err(later) => {
            let q = q.clone();
            shared.tasks.spawn(async move {
                let f = later.await;
                q.push_msg(Kind::Reply, id, &node::exec_response(f));
            });
        }
    }
}
