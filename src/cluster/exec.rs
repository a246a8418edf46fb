//! The production driver of the node machines (`hypercache_cluster::node`): it runs a keyed
//! command's [`KeyRequest`] (synchronously when it needs no message), sends what the machine asks
//! for over the peer links, feeds it the answers, link failures and its deadline, and hands the
//! client its reply; it answers peers' requests with [`node::serve`]; and it runs the start-up
//! [`Transfer`]. Every decision (where a command runs, what counts as an acknowledgement, when to
//! give up, what to repair) is the machine's: the simulator runs the same ones.
//!
//! It also runs the cluster-wide commands (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercache_cluster::msg::{Request, Response};
use hypercache_cluster::node::{
    self, Answer, Env, Finished, Gate, KeyRequest, Origin, Out, Served, Timing, Transfer,
};
use hypercache_cluster::ring::MemberIdx;
use hypercache_cluster::slot::{key_slot, Slot, SLOTS};
use hypercache_cluster::store::Store;
use hypercache_cluster::version::Version;
use hypercache_cluster::wire::{self, Kind};
use hypercache_cluster::{Ctx, Op, Outcome};
use tokio::sync::mpsc;

use super::link::{CallError, Outbound};
use super::{Cluster, Levels, View};
use crate::metrics::inc;
use crate::state::{now_ms, Shared};

pub use hypercache_cluster::node::NoReplicas;

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

/// The node as its machines see it: a snapshot of the view, the context and the deadlines at
/// one input.
struct NodeEnv<'a> {
    shared: &'a Shared,
    cl: &'a Cluster,
    view: &'a View,
    /// The context, read from the clock and settings the first time a machine asks for it.
    ctx: std::cell::Cell<Option<Ctx>>,
    timing: Timing,
}

impl NodeEnv<'_> {
    fn now(&self) -> u64 {
        self.ctx().now
    }
}

impl Env for NodeEnv<'_> {
    fn me(&self) -> MemberIdx {
        self.view.me
    }
    fn prefs(&self, slot: Slot) -> &[MemberIdx] {
        self.view.prefs(slot)
    }
    fn live(&self, m: MemberIdx) -> bool {
        self.view.live(self.cl, m)
    }
    fn synced(&self) -> bool {
        self.cl.is_synced()
    }
    fn store(&self) -> &Store {
        &self.shared.store
    }
    fn ctx(&self) -> Ctx {
        match self.ctx.get() {
            Some(c) => c,
            None => {
                let c = node_ctx(self.shared);
                self.ctx.set(Some(c));
                c
            }
        }
    }
    fn timing(&self) -> Timing {
        self.timing
    }
    fn gate(&self) -> &Gate {
        &self.cl.gate
    }
}

fn timing(lv: &Levels) -> Timing {
    Timing {
        request_ms: lv.timeout.as_millis() as u64,
    }
}

/// Where a machine's answers arrive: (tag, reply body or `None` for a failed link). A gate
/// wake-up comes as [`WAKE`].
pub type Answers = Arc<super::link::Inbox>;

/// The tag of a gate wake-up on a machine's answer channel.
const WAKE: usize = usize::MAX;

/// A machine being driven: which calls it has out, and where its answers arrive.
struct Driver {
    m: KeyRequest,
    token: u64,
    inbox: Answers,
    registered: bool,
    sent: Vec<(MemberIdx, u64)>,
    wake_at: Option<u64>,
    timing: Timing,
    started: Instant,
    write: bool,
}

impl Driver {
    /// Carries out `o`: sends (a target whose link is down fails at once, fed back right away),
    /// wakes, the timer, and the reply (returned).
    fn apply(&mut self, shared: &Shared, cl: &Cluster, mut o: Out) -> Option<Finished> {
        let mut reply = None;
        loop {
            for t in o.wake.drain(..) {
                cl.wake(t);
            }
            if let Some(w) = o.wake_at.take() {
                self.wake_at = Some(w);
            }
            if let Some(f) = o.reply.take() {
                reply = Some(f);
            }
            let view = cl.view();
            let mut failed = Vec::new();
            for send in o.sends.drain(..) {
                let body = send.call.to_body();
                for (to, tag) in send.to {
                    let peer = cl.peer(&view, to);
                    let r = match (peer, tag) {
                        (None, _) => Err(CallError::Down),
                        (Some(p), Some(t)) => {
                            p.send_to_inbox(&body, &self.inbox, t as usize).map(|id| {
                                self.sent.push((to, id));
                            })
                        }
                        (Some(p), None) => p.send_oneway(&body),
                    };
                    if r.is_err() {
                        inc(&cl.metrics.dist.transport_errors);
                        if let Some(t) = tag {
                            failed.push(t);
                        }
                    }
                }
            }
            if failed.is_empty() {
                return reply;
            }
            let env = self.env(shared, cl, &view);
            for t in failed {
                self.m.on_answer(&env, t, Answer::LinkDown, &mut o);
            }
        }
    }

    fn env<'a>(&self, shared: &'a Shared, cl: &'a Cluster, view: &'a View) -> NodeEnv<'a> {
        NodeEnv {
            shared,
            cl,
            view,
            ctx: Default::default(),
            timing: self.timing,
        }
    }

    /// Feeds the machine what arrived on its channel.
    fn on_got(&mut self, shared: &Shared, cl: &Cluster, got: (usize, Option<Bytes>), o: &mut Out) {
        let view = cl.view();
        let env = self.env(shared, cl, &view);
        match got {
            (WAKE, _) => self.m.on_wake(&env, o),
            (tag, body) => {
                let answer = match body.map(|b| wire::from_body::<Response>(&b)) {
                    Some(Ok(r)) => {
                        cl.metrics.dist.peer_latency.record(self.started.elapsed());
                        Answer::Reply(r)
                    }
                    Some(Err(_)) => Answer::Reply(Response::Error("malformed reply".into())),
                    None => Answer::LinkDown,
                };
                self.m.on_answer(&env, tag as u64, answer, o);
            }
        }
    }

    /// Waits for the next input (an answer, a wake-up, or the machine's timer) and feeds it to
    /// the machine. `sleep` is the machine's one timer, moved when its wake-up time changes
    /// (`armed` is the time it is set for).
    async fn step(
        &mut self,
        shared: &Shared,
        cl: &Cluster,
        sleep: &mut std::pin::Pin<&mut tokio::time::Sleep>,
        armed: &mut Option<u64>,
    ) -> Out {
        if self.wake_at != *armed {
            *armed = self.wake_at;
            if let Some(w) = *armed {
                let ms = w.saturating_sub(now_ms());
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_millis(ms));
            }
        }
        let mut o = Out::default();
        tokio::select! {
            biased;
            got = self.inbox.recv() => self.on_got(shared, cl, got, &mut o),
            _ = sleep.as_mut() => {
                let view = cl.view();
                let env = self.env(shared, cl, &view);
                if self.wake_at.is_some_and(|w| w <= env.now()) {
                    inc(&cl.metrics.dist.transport_timeouts);
                }
                self.m.on_deadline(&env, &mut o);
                // The timer has fired: set it again for whatever the machine asks next.
                *armed = None;
            }
        }
        o
    }

    /// Drives the machine until its reply.
    async fn until_reply(&mut self, shared: &Shared, cl: &Cluster) -> Finished {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        loop {
            let o = self.step(shared, cl, &mut sleep, &mut armed).await;
            if let Some(f) = self.apply(shared, cl, o) {
                return f;
            }
        }
    }

    /// Drives the machine until it is done (a machine that may wait at the gate needs its
    /// timers to the end), handing its reply to `to` as soon as there is one.
    async fn run(mut self, shared: Arc<Shared>, cl: Arc<Cluster>, mut to: Option<ReplyTo>) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        while !self.m.is_done() {
            let o = self.step(&shared, &cl, &mut sleep, &mut armed).await;
            if let Some(f) = self.apply(&shared, &cl, o) {
                self.deliver(&cl, f, &mut to);
            }
        }
        self.close(&cl);
    }

    /// Closes a machine that is done; parks one that still waits for answers on its inbox,
    /// where they are fed to it as they arrive (its reply, if it has not replied, goes nowhere:
    /// its client is gone).
    fn finish_or_park(mut self, shared: Arc<Shared>, cl: Arc<Cluster>) {
        if self.m.is_done() {
            self.close(&cl);
            return;
        }
        let inbox = self.inbox.clone();
        inbox.park(Box::new(move |tag, body| {
            let mut o = Out::default();
            self.on_got(&shared, &cl, (tag, body), &mut o);
            let _ = self.apply(&shared, &cl, o);
            if self.m.is_done() {
                self.close(&cl);
                true
            } else {
                false
            }
        }));
    }

    fn deliver(&self, cl: &Cluster, f: Finished, to: &mut Option<ReplyTo>) {
        self.record(cl, &f);
        match to.take() {
            Some(ReplyTo::Client(tx)) => {
                let _ = tx.send(f);
            }
            None => {}
        }
    }

    /// Stops waiting for unanswered calls and books the machine's counters.
    fn close(&mut self, cl: &Cluster) {
        if self.registered {
            cl.unregister(self.token);
        }
        if !self.sent.is_empty() {
            let view = cl.view();
            for &(m, id) in &self.sent {
                if let Some(p) = cl.peer(&view, m) {
                    p.forget(id);
                }
            }
            self.sent.clear();
        }
        cl.metrics.dist.add(&self.m.counts);
    }

    /// Books the client-facing latency and failure of a reply.
    fn record(&self, cl: &Cluster, f: &Finished) {
        let h = if self.write {
            &cl.metrics.dist.write_latency
        } else {
            &cl.metrics.dist.read_latency
        };
        h.record(self.started.elapsed());
        if f.result.is_err() {
            count_failure(cl, self.write);
        }
    }
}

/// Where a machine's reply goes.
enum ReplyTo {
    /// The client's command (or a peer's forwarded one), waiting on this channel.
    Client(tokio::sync::oneshot::Sender<Finished>),
}

/// A machine about to be driven: its answer channel exists (and is registered for gate
/// wake-ups when it may wait at the gate) before the machine starts.
struct Prepared {
    token: u64,
    inbox: Answers,
    registered: bool,
}

impl Prepared {
    fn new(cl: &Cluster, may_queue: bool) -> Prepared {
        let token = if may_queue { cl.token() } else { 0 };
        let inbox = Answers::default();
        if may_queue {
            cl.register(token, inbox.clone());
        }
        Prepared {
            token,
            inbox,
            registered: may_queue,
        }
    }
}

/// A driver owned by a client's future: when the future ends (its reply delivered, or the
/// client gone), the machine is closed or parked on its inbox ([`Driver::finish_or_park`]).
struct Driven {
    d: Option<Driver>,
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
}

impl Drop for Driven {
    fn drop(&mut self) {
        if let Some(d) = self.d.take() {
            d.finish_or_park(self.shared.clone(), self.cl.clone());
        }
    }
}

/// Runs machine `m` (started, with first output `o`). Returns its reply at once when it has
/// one. Otherwise: a machine that may wait at the gate (it needs its timers to the end) gets a
/// task of its own that hands its reply to `to`; any other is driven by the future returned
/// here until its reply, then parked on its inbox for the answers still to come.
#[allow(clippy::too_many_arguments)]
fn drive(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    m: KeyRequest,
    p: Prepared,
    o: Out,
    lv: &Levels,
    write: bool,
    started: Instant,
) -> Result<Finished, Later<Finished>> {
    let mut d = Driver {
        m,
        token: p.token,
        inbox: p.inbox,
        registered: p.registered,
        sent: Vec::new(),
        wake_at: None,
        timing: timing(lv),
        started,
        write,
    };
    let first = d.apply(shared, cl, o);
    if let Some(f) = first {
        d.record(cl, &f);
        d.finish_or_park(shared.clone(), cl.clone());
        return Ok(f);
    }
    if d.registered {
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared
            .tasks
            .spawn(d.run(shared.clone(), cl.clone(), Some(ReplyTo::Client(tx))));
        return Err(Box::pin(async move {
            rx.await.unwrap_or(Finished {
                // The driver stopped without a reply (the node is stopping).
                result: Err(NoReplicas { write }),
                state: None,
            })
        }));
    }
    let mut dv = Driven {
        d: Some(d),
        shared: shared.clone(),
        cl: cl.clone(),
    };
    Err(Box::pin(async move {
        let d = dv.d.as_mut().expect("driven until dropped");
        let f = d.until_reply(&dv.shared, &dv.cl).await;
        d.record(&dv.cl, &f);
        f
    }))
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
    let started = Instant::now();
    let view = cl.view();
    let env = NodeEnv {
        shared,
        cl,
        view: &view,
        ctx: std::cell::Cell::new(Some(*ctx)),
        timing: timing(&lv),
    };
    if let Some(o) = node::local_read(&env, key, op, lv.read) {
        inc(&cl.metrics.dist.local_reads);
        return Part::Ready(Ok(o));
    }
    // Only a request that may wait at the gate needs its channel (registered) before it starts.
    let early = node::may_queue(op, lv.write, cl.is_synced()).then(|| Prepared::new(cl, true));
    let token = early.as_ref().map_or(0, |p| p.token);
    let mut m = KeyRequest::new(key.clone(), token, lv.read, lv.write, Origin::Client);
    let mut o = Out::default();
    m.start(&env, op, &mut o);
    if m.is_done() && o.sends.is_empty() && o.wake.is_empty() && early.is_none() {
        // The synchronous fast path: a local read, or a write that needed no message.
        cl.metrics.dist.add(&m.counts);
        if let Some(f) = o.reply {
            if f.result.is_err() {
                count_failure(cl, !op.is_read_only());
            }
            return Part::Ready(f.result);
        }
    }
    let p = early.unwrap_or_else(|| Prepared::new(cl, false));
    let write = !op.is_read_only();
    match drive(shared, cl, m, p, o, &lv, write, started) {
        Ok(f) => Part::Ready(f.result),
        Err(later) => Part::Later(Box::pin(async move { later.await.result })),
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
        &cl.metrics.dist.write_quorum_failures
    } else {
        &cl.metrics.dist.read_quorum_failures
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
                inc(&cl.metrics.dist.transport_errors);
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
                            cl.metrics.dist.peer_latency.record(started.elapsed());
                            Some(r)
                        }
                        _ => {
                            inc(&cl.metrics.dist.transport_errors);
                            None
                        }
                    };
                    decided = on(m, r);
                }
                None => break,
            },
            _ = &mut sleep => {
                inc(&cl.metrics.dist.transport_timeouts);
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
                inc(&cl.metrics.dist.transport_errors);
                decided = on(to[tag], None);
            }
        }
    }
    decided
}

/// Serves one request from a peer's inbound link (peer `from_id`), replying on `q`.
pub fn serve_request(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    from_id: &str,
    id: u64,
    body: Bytes,
    q: &Arc<Outbound>,
) {
    let req = match wire::from_body::<Request<'_>>(&body) {
        Ok(r) => r,
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
        Request::Exec { op, write, .. } => op
            .op()
            .is_some_and(|op| node::may_queue(&op, *write, cl.is_synced())),
        _ => false,
    };
    let from = match req {
        // Only a transfer needs to know who asks (to check that it sees the sender live).
        Request::Dump { .. } => view
            .ring
            .members()
            .iter()
            .position(|m| m == from_id)
            .map(|i| i as MemberIdx),
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
    let is_exec = matches!(req, Request::Exec { .. });
    let p = is_exec.then(|| Prepared::new(cl, may_queue));
    match node::serve(&env, from, p.as_ref().map_or(0, |p| p.token), req) {
        Served::Reply(r) => {
            if let Some(p) = p.filter(|p| p.registered) {
                cl.unregister(p.token);
            }
            if matches!(r, Response::Error(_)) {
                inc(&cl.metrics.dist.transport_errors);
                tracing::warn!(component = "cluster", node_id = %cl.node_id, peer = %from_id, "refused a peer request with an implausible version");
            }
            q.push_msg(Kind::Reply, id, &r);
        }
        Served::Exec(m, o) => {
            inc(&cl.metrics.dist.forwarded_in);
            let started = Instant::now();
            let p = p.unwrap_or_else(|| Prepared::new(cl, false));
            match drive(shared, cl, *m, p, o, &lv, false, started) {
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
        Served::Flush(horizon) => {
            // Off the link's reader: a flush walks every key.
            let (sh, q) = (shared.clone(), q.clone());
            tokio::task::spawn_blocking(move || {
                sh.store.flush_at(horizon);
                q.push_msg(Kind::Reply, id, &Response::Done);
            });
        }
        Served::RandomKey => {
            let k = shared
                .store
                .random_key(&mut *shared.rng.lock(), &node_ctx(shared));
            q.push_msg(Kind::Reply, id, &Response::Key(k));
        }
    }
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
        inc(&cl.metrics.dist.transport_errors);
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
    inc(&cl.metrics.dist.broadcasts);
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
    inc(&cl.metrics.dist.broadcasts);
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
    inc(&cl.metrics.dist.broadcasts);
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
    inc(&cl.metrics.dist.broadcasts);
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
