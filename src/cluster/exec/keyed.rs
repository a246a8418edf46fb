//! A keyed command: its machine driven until its reply, then parked on its inbox, or driven
//! to the end by a task of its own when it may wait at the gate.

use hypercache_cluster::msg::Level;

use crate::metrics::OpClass;
use crate::telemetry::Span;
use hypercache_cluster::group::{Group, GroupRequest};
use tokio::sync::oneshot;

use super::*;

/// A machine being driven (a keyed command's, or a cluster-wide command's): which calls it has out,
/// and where its answers arrive.
pub(super) struct Driver<M> {
    pub(super) m: M,
    token: u64,
    inbox: Answers,
    registered: bool,
    /// The member set and ring the request started with (liveness is read live through it).
    view: Arc<View>,
    /// Its deadline fired (calls may still be pending in the links).
    gave_up: bool,
    /// Calls awaiting their answer (forgotten if the machine gives up on them), with when they
    /// were sent (`dist.latency.peer`, and `dist.latency.forward` for a forward).
    sent: Vec<Sent>,
    wake_at: Option<u64>,
    timing: Timing,
    started: Instant,
    write: bool,
    /// Where its client-facing latency is booked (`None`: a machine serving a peer's forward).
    latency: Option<(crate::metrics::OpClass, Level)>,
    /// Its spans, when its trace is sampled.
    trace: Option<Box<Traced>>,
    /// The node, for a program the machine asks to run ([`Out::compute`]: a script).
    shared: Option<Arc<Shared>>,
}

/// A call the driver sent and awaits the answer of.
struct Sent {
    to: MemberIdx,
    /// The link's request id (to forget it).
    id: u64,
    /// The machine's tag for it.
    tag: u64,
    at: Instant,
    /// It forwards the command to its coordinator.
    forward: bool,
}

/// A traced machine's spans: its own (a client operation's root, or the span serving a peer's
/// forward), and one per call awaiting its answer.
pub(super) struct Traced {
    pub(super) span: Option<Span>,
    /// The operation's class (`None`: serving a peer), which names the calls' spans.
    pub(super) class: Option<OpClass>,
    calls: Vec<(u64, Span)>,
}

impl Traced {
    pub(super) fn new(span: Span, class: Option<OpClass>) -> Box<Traced> {
        Box::new(Traced {
            span: Some(span),
            class,
            calls: Vec::new(),
        })
    }

    /// Ends the span of call `tag` (answered, or failed).
    fn answered(&mut self, tag: u64, failed: Option<&str>) {
        if let Some(i) = self.calls.iter().position(|c| c.0 == tag) {
            let (_, span) = self.calls.swap_remove(i);
            if let Some(why) = failed {
                span.error(why);
            }
            span.end();
        }
    }
}

impl<M: Machine + Send + 'static> Driver<M> {
    /// Carries out `o`: sends (a target whose link is down fails at once, fed back right away),
    /// wakes, the timer, and the reply (returned).
    pub(super) fn apply(&mut self, shared: &Shared, cl: &Cluster, mut o: Out) -> Option<Finished> {
        let mut reply = None;
        loop {
            for t in o.wake.drain(..) {
                cl.wake(t);
            }
            if !o.hints.is_empty() {
                let now = now_ms();
                cl.repair
                    .lock()
                    .add_hints(std::mem::take(&mut o.hints), now);
            }
            if let Some(w) = o.wake_at.take() {
                self.wake_at = Some(w);
            }
            for (key, events) in o.events.drain(..) {
                // An acknowledged write that changed its key, coordinated here.
                shared.store.add_changes(1);
                // The writing client may be on another node: NOLOOP cannot exclude it here.
                crate::notify::after_write(shared, &key, events, 0);
            }
            if let Some(f) = o.reply.take() {
                reply = Some(f);
            }
            if let Some(c) = o.compute.take() {
                // A script's round: it runs on a blocking thread (the VM may be busy), and its
                // result comes back on the machine's channel.
                if let Some(sh) = self.shared.clone() {
                    let inbox = self.inbox.clone();
                    let rt = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || {
                        let done = crate::cluster::script::compute(&sh, &c, &rt);
                        let body = postcard::to_allocvec(&done).unwrap_or_default();
                        inbox.push(COMPUTED, Some(Bytes::from(body)));
                    });
                }
            }
            if o.sends.is_empty() {
                return reply;
            }
            let view = self.view.clone();
            let mut failed = Vec::new();
            for send in o.sends.drain(..) {
                let body = send.call.to_body();
                // A forward to the coordinator: a keyed command, or a transaction (encoded).
                let forward = match &send.call {
                    Call::Exec { .. } => true,
                    Call::Encoded(_) => {
                        hypercache_cluster::msg::request_name(&body) == "exec_group"
                    }
                    _ => false,
                };
                for (to, tag) in send.to {
                    let peer = cl.peer(&view, to);
                    let span = self.trace.as_ref().and_then(|t| {
                        let parent = t.span.as_ref()?;
                        let name = hypercache_cluster::msg::request_name(&body);
                        let span = shared
                            .telemetry
                            .as_ref()?
                            .child(parent, crate::telemetry::call_span_name(name, t.class))?;
                        span.text("peer.id", view.id_of(cl, to));
                        Some(span)
                    });
                    let wire = span.as_ref().map(|s| s.wire());
                    let r = match (peer, tag) {
                        (None, _) => Err(CallError::Down),
                        (Some(p), Some(t)) => p
                            .send_to_inbox(&body, &self.inbox, t as usize, wire.as_ref())
                            .map(|id| {
                                self.sent.push(Sent {
                                    to,
                                    id,
                                    tag: t,
                                    at: Instant::now(),
                                    forward,
                                });
                            }),
                        (Some(p), None) => p.send_oneway(&body, wire.as_ref()),
                    };
                    if let Some(span) = span {
                        match (&r, tag, self.trace.as_mut()) {
                            (Ok(_), Some(t), Some(tr)) => tr.calls.push((t, span)),
                            (Ok(_), _, _) => span.end(),
                            (Err(e), _, _) => {
                                span.error(&e.to_string());
                                span.end();
                            }
                        }
                    }
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
        let view = self.view.clone();
        let env = self.env(shared, cl, &view);
        match got {
            (WAKE, _) => self.m.on_wake(&env, o),
            (COMPUTED, body) => {
                if let Some(c) = body.and_then(|b| postcard::from_bytes(&b).ok()) {
                    self.m.on_computed(&env, c, o);
                }
            }
            (tag, body) => {
                if let Some(t) = self.trace.as_mut() {
                    t.answered(tag as u64, body.is_none().then_some("link down"));
                }
                let sent = self
                    .sent
                    .iter()
                    .position(|c| c.tag == tag as u64)
                    .map(|i| self.sent.swap_remove(i));
                let answer = match body.map(|b| wire::from_body::<Response>(&b)) {
                    Some(Ok(r)) => {
                        // The call's round trip (it used to be the time since the command began).
                        if let Some(c) = sent {
                            let rtt = c.at.elapsed();
                            cl.metrics.dist.peer_latency.record(rtt);
                            if c.forward {
                                cl.metrics.dist.forward_latency.record(rtt);
                            }
                        }
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
                let view = self.view.clone();
                let env = self.env(shared, cl, &view);
                self.m.on_deadline(&env, &mut o);
                self.gave_up = true;
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
    pub(super) async fn run(
        mut self,
        shared: Arc<Shared>,
        cl: Arc<Cluster>,
        mut to: Option<oneshot::Sender<Finished>>,
    ) {
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

    /// Drives a machine that never replies (a cluster-wide command's round) until it is done.
    pub(super) async fn until_done(&mut self, shared: &Shared, cl: &Cluster) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        while !self.m.is_done() {
            let o = self.step(shared, cl, &mut sleep, &mut armed).await;
            let _ = self.apply(shared, cl, o);
        }
        self.close(cl);
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

    fn deliver(&mut self, cl: &Cluster, f: Finished, to: &mut Option<oneshot::Sender<Finished>>) {
        self.record(cl, &f);
        if let Some(tx) = to.take() {
            // The waiting client (or forwarding peer's task) may be gone: nothing to do then.
            let _ = tx.send(f);
        }
    }

    /// Stops waiting for unanswered calls and books the machine's counters.
    fn close(&mut self, cl: &Cluster) {
        if self.registered {
            cl.unregister(self.token);
        }
        // Calls still pending only when the machine gave up on them at its deadline (a machine
        // done otherwise had every answer: nothing to forget).
        if self.gave_up && !self.sent.is_empty() {
            let view = self.view.clone();
            for c in &self.sent {
                if let Some(p) = cl.peer(&view, c.to) {
                    p.forget(c.id);
                }
            }
            self.sent.clear();
        }
        cl.metrics.dist.add(&self.m.counts());
        if let Some(mut t) = self.trace.take() {
            for (_, span) in t.calls.drain(..) {
                span.error("no answer");
                span.end();
            }
            if let Some(span) = t.span.take() {
                span.end();
            }
        }
    }

    /// Books the client-facing latency and failure of a reply, and ends its span.
    fn record(&mut self, cl: &Cluster, f: &Finished) {
        if let Some(span) = self.trace.as_mut().and_then(|t| t.span.take()) {
            if self.write {
                span.int("dist.acks", self.m.counts().write_acks as i64);
            }
            finish_span(span, self.latency.map(|l| l.0), &f.result);
        }
        if let Some((class, level)) = self.latency {
            cl.metrics
                .dist
                .latency(class, level)
                .record(self.started.elapsed());
        }
        // By the error's own kind: a forwarded write is driven here with `write` false (its
        // forwarder books it), and was counted as a failed read.
        if let Err(e) = &f.result {
            count_failure(cl, e.write);
        }
    }
}

impl<M> Driver<M> {
    /// A driver for machine `m`, whose calls go through `p`'s inbox.
    pub(super) fn new(m: M, p: Prepared, view: Arc<View>, timing: Timing, write: bool) -> Self {
        Driver {
            m,
            token: p.token,
            inbox: p.inbox,
            registered: p.registered,
            view,
            gave_up: false,
            sent: Vec::new(),
            wake_at: None,
            timing,
            started: Instant::now(),
            write,
            latency: None,
            trace: None,
            shared: None,
        }
    }
}

/// A machine about to be driven: its answer channel exists (and is registered for gate
/// wake-ups when it may wait at the gate) before the machine starts.
pub(super) struct Prepared {
    pub(super) token: u64,
    inbox: Answers,
    pub(super) registered: bool,
}

impl Prepared {
    pub(super) fn new(cl: &Cluster, may_queue: bool) -> Prepared {
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
struct Driven<M: Machine + Send + 'static> {
    d: Option<Driver<M>>,
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
}

impl<M: Machine + Send + 'static> Drop for Driven<M> {
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
pub(super) fn drive<M: Machine + Send + 'static>(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    m: M,
    p: Prepared,
    o: Out,
    lv: &Levels,
    write: bool,
    started: Instant,
    view: Arc<View>,
    latency: Option<(crate::metrics::OpClass, Level)>,
    trace: Option<Box<Traced>>,
) -> Result<Finished, Later<Finished>> {
    let mut d = Driver::new(m, p, view, timing(lv), write);
    d.shared = Some(shared.clone());
    d.started = started;
    d.latency = latency;
    d.trace = trace;
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
            .spawn(d.run(shared.clone(), cl.clone(), Some(tx)));
        return Err(Box::pin(async move {
            rx.await.unwrap_or(Finished {
                // The driver stopped without a reply (the node is stopping).
                result: Err(NoReplicas { write }),
                state: None,
                group: Vec::new(),
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
    let class = crate::metrics::OpClass::of(op);
    let level = if op.is_read_only() { lv.read } else { lv.write };
    let book = |cl: &Cluster| {
        cl.metrics
            .dist
            .latency(class, level)
            .record(started.elapsed())
    };
    let mut span = shared
        .telemetry
        .as_ref()
        .and_then(|t| t.root(class.span_name()));
    if let Some(s) = &span {
        // The key's length, never its bytes.
        s.int("cache.key.length", key.len() as i64);
        s.text("dist.consistency", level.name());
        s.int("dist.owners.count", view.prefs(key_slot(key)).len() as i64);
    }
    if let Some(o) = node::local_read(&env, key, op, lv.read) {
        inc(&cl.metrics.dist.local_reads);
        book(cl);
        let r = Ok(o);
        if let Some(s) = span.take() {
            finish_span(s, Some(class), &r);
        }
        return Part::Ready(r);
    }
    // Only a request that may wait at the gate needs its channel (registered) before it starts.
    let early =
        node::may_queue(op, lv.write, cl.synced(key_slot(key))).then(|| Prepared::new(cl, true));
    let token = early.as_ref().map_or(0, |p| p.token);
    let mut m = KeyRequest::new(key.clone(), token, lv.read, lv.write, Origin::Client);
    let mut o = Out::default();
    m.start(&env, op, &mut o);
    if m.is_done() && o.sends.is_empty() && o.wake.is_empty() && early.is_none() {
        // The synchronous fast path: a local read, or a write that needed no message.
        cl.metrics.dist.add(&m.counts);
        if let Some(f) = o.reply {
            book(cl);
            if f.result.is_err() {
                count_failure(cl, !op.is_read_only());
            }
            if let Some(s) = span.take() {
                finish_span(s, Some(class), &f.result);
            }
            return Part::Ready(f.result);
        }
    }
    let p = early.unwrap_or_else(|| Prepared::new(cl, false));
    let write = !op.is_read_only();
    let latency = Some((class, level));
    let trace = span.map(|s| Traced::new(s, Some(class)));
    match drive(
        shared,
        cl,
        m,
        p,
        o,
        &lv,
        write,
        started,
        view.clone(),
        latency,
        trace,
    ) {
        Ok(f) => Part::Ready(f.result),
        Err(later) => Part::Later(Box::pin(async move { later.await.result })),
    }
}

/// Starts transaction `group` (keys of one slot) for a client of this node: one round at the
/// slot's coordinator ([`hypercache_cluster::group`]).
pub fn start_group(shared: &Arc<Shared>, cl: &Arc<Cluster>, group: Group, lv: Levels) -> Part {
    let started = Instant::now();
    let view = cl.view();
    let env = NodeEnv {
        shared,
        cl,
        view: &view,
        ctx: Default::default(),
        timing: timing(&lv),
    };
    // It may wait at the gates of its keys: its channel is registered before it starts.
    let p = Prepared::new(cl, true);
    let mut m = GroupRequest::new(group, p.token, lv.write, Origin::Client);
    let mut o = Out::default();
    m.start(&env, &mut o);
    // Booked with the writes: it is one read-modify-write round.
    let class = OpClass::Set;
    let level = match lv.write {
        Level::One => Level::Quorum,
        l => l,
    };
    match drive(
        shared,
        cl,
        m,
        p,
        o,
        &lv,
        true,
        started,
        view.clone(),
        Some((class, level)),
        None,
    ) {
        Ok(f) => Part::Ready(f.result),
        Err(later) => Part::Later(Box::pin(async move { later.await.result })),
    }
}

/// Ends an operation's span with what it answered: `cache.hit` for a read, the error if any.
fn finish_span(span: Span, class: Option<OpClass>, result: &Res) {
    match result {
        Ok(o) => {
            if class == Some(OpClass::Get) {
                span.flag("cache.hit", !matches!(o, hypercache_cluster::Outcome::Nil));
            }
            if let hypercache_cluster::Outcome::Err(e) = o {
                span.error(&format!("{e:?}"));
            }
        }
        Err(e) => span.error(&format!("{e:?}")),
    }
    span.end();
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
