//! A simulated cluster node: a [`Machine`] for the deterministic simulator ([`crate::sim`]) that
//! serves keyed commands the way a HyperCache node does in a cluster.
//!
//! It composes the same pure pieces as the server's async driver (`src/cluster`), and nothing
//! else: the ring's preference lists ([`Ring`]), the coordinator's decisions ([`coord::plan`],
//! [`Tally`], [`ReadTally`], [`coord::outcome_of`]), the store's versioned apply, fetch and
//! last-write-wins merge ([`Store`]), and the inter-node messages ([`crate::msg`]) encoded with
//! the real body codec ([`to_body`] / [`from_body`]). What the driver adds on top (sockets,
//! tasks, wall-clock timers) is replaced by the simulator's messages and virtual-time timers, so
//! a scenario here exercises the driver's logic, seeded and reproducible.
//!
//! ## How a command runs
//! A client command enters at any node ([`SimNode::client`]); [`coord::plan`] decides where it
//! runs, from this node's view of which peers are live:
//! - `LocalRead`: answered from the local store at once.
//! - `FanOutRead` (QUORUM/ALL reads): the replicas are asked for their state ([`Request::Fetch`]),
//!   the local copy counting as one answer; once the level is met the newest state answers and
//!   every replica that answered with an older one is repaired ([`Request::Put`]).
//! - `Coordinate`: this node coordinates the write. A read-modify-write at QUORUM/ALL first fetches
//!   the key from `level - 1` other live replicas and merges the newest (so a coordinator that
//!   missed acknowledged writes cannot lose them, e.g. an INCR); then the operation is applied to
//!   the local store and the resulting state is sent to every other replica of the key, the
//!   client being answered once the write level has acknowledged (the local copy counts).
//! - `Forward(m)`: the command goes to member `m` ([`Request::Exec`]), which coordinates whatever
//!   it receives and replies with the outcome. If `m` does not answer in time it is marked down
//!   and the command is planned once more (the next live replica takes over).
//! - `Unavailable`: no replica is reachable; the client gets [`NoReplicas`].
//!
//! ## Failure detection
//! Every request to a peer carries a timeout ([`SimTimer::Timeout`]). A request that times out
//! marks its peer down in this node's view; any message from a peer marks it live again. There
//! is no probing: a peer marked down is contacted again only by requests that go to every replica
//! (replication, QUORUM/ALL reads) or when it sends something itself.
//!
//! ## Node ids
//! [`NodeId`] `i` is member `i` of the ring: members are named [`member_id`]`(i)`, which sort in
//! index order, so a [`MemberIdx`] is the simulator's node index.

use std::collections::BTreeMap;

use crate::coord::{self, Plan, ReadTally, Tally};
use crate::msg::{Level, Request, Response, State};
use crate::op::{Ctx, Op, Outcome};
use crate::ring::{MemberIdx, Ring};
use crate::sim::{Machine, NodeId, Outbox};
use crate::slot::key_slot;
use crate::store::{Store, StoreConfig};
use crate::wire::{from_body, to_body};

/// Default timeout of a request to a peer, virtual ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;

/// A forwarded command may cost its coordinator a read-before-write round and a replication
/// round, each bounded by one request timeout; the forwarding node waits this many timeouts
/// before it gives up on the coordinator (so it never gives up on one that is merely waiting for
/// a down replica of its own).
pub const FORWARD_TIMEOUTS: u64 = 3;

/// A message between simulated nodes: a request or the reply to one, with a postcard-encoded
/// [`Request`] or [`Response`] body (the body of a real `wire` frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimMsg {
    /// A request; the reply carries the same id.
    Request {
        /// Request id, unique per sender.
        id: u64,
        /// An encoded [`Request`].
        body: Vec<u8>,
    },
    /// The reply to the sender's request `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// An encoded [`Response`].
        body: Vec<u8>,
    },
}

/// A simulated node's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimTimer {
    /// Request `id` to a peer is due: if it is still unanswered, the peer is marked down and the
    /// request counts as failed.
    Timeout {
        /// The request's id.
        id: u64,
    },
}

/// The coordinator could not reach the consistency level ([`Response::NoReplicas`] on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReplicas {
    /// A write (else a read).
    pub write: bool,
}

/// What a client command finished with.
pub type ClientResult = Result<Outcome, NoReplicas>;

/// The effects a [`SimNode`] asks the simulator for.
pub type SimOutbox = Outbox<SimMsg, SimTimer>;

/// The id of member `i` in a simulated cluster: zero-padded so that the ring's sorted member
/// order is index order.
pub fn member_id(i: usize) -> String {
    format!("n{i:04}")
}

/// Who waits for a command's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// A client of this node, by client id.
    Client(u64),
    /// A peer that forwarded the command ([`Request::Exec`] `id`).
    Peer { node: NodeId, id: u64 },
}

/// A request to a peer awaiting its reply or its timeout.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// The peer.
    to: MemberIdx,
    /// The task its answer feeds, if any (read repairs feed none).
    task: Option<u64>,
}

/// A command in progress on this node. Commands are kept encoded (a [`Request::Exec`] body,
/// decoded again with [`Command::decode`]) because [`Op`] borrows its bytes.
#[derive(Debug)]
enum Task {
    /// Sent to the coordinator; `retried` once it has been planned a second time.
    Forward {
        waiter: Waiter,
        exec: Vec<u8>,
        retried: bool,
    },
    /// A QUORUM/ALL read collecting the replicas' states.
    Read {
        waiter: Waiter,
        exec: Vec<u8>,
        tally: ReadTally<MemberIdx>,
    },
    /// A read-modify-write fetching the key from other replicas before applying it.
    Prefetch {
        waiter: Waiter,
        exec: Vec<u8>,
        tally: Tally,
        newest: State,
    },
    /// A write applied here, waiting for the replicas' acknowledgements.
    Write {
        waiter: Waiter,
        outcome: Outcome,
        tally: Tally,
    },
}

/// A keyed command and its consistency levels, borrowing an encoded [`Request::Exec`].
#[derive(Debug, Clone, Copy)]
struct Command<'a> {
    key: &'a [u8],
    op: Op<'a>,
    read: Level,
    write: Level,
}

impl<'a> Command<'a> {
    /// The command as a [`Request::Exec`] body.
    fn encode(&self) -> Vec<u8> {
        to_body(&Request::Exec {
            key: self.key,
            op: self.op,
            read: self.read,
            write: self.write,
            want_state: false,
        })
    }

    /// Decodes a body made by [`Command::encode`].
    fn decode(body: &'a [u8]) -> Command<'a> {
        match from_body(body) {
            Ok(Request::Exec {
                key,
                op,
                read,
                write,
                ..
            }) => Command {
                key,
                op,
                read,
                write,
            },
            other => panic!("a command body encoded by this node decodes: {other:?}"),
        }
    }

    /// The failure of this command when its level cannot be met.
    fn no_replicas(&self) -> NoReplicas {
        NoReplicas {
            write: !self.op.is_read_only(),
        }
    }
}

/// One node of a simulated cluster (see the module documentation).
#[derive(Debug)]
pub struct SimNode {
    /// This node's member index (and simulator node id).
    pub me: MemberIdx,
    /// Its data (tombstones on).
    pub store: Store,
    /// The cluster's preference lists.
    pub ring: Ring,
    /// This node's view of which members are live, by member index (itself always).
    pub live: Vec<bool>,
    /// Timeout of a request to a peer, virtual ms (a forward waits [`FORWARD_TIMEOUTS`] times
    /// this).
    pub timeout: u64,
    /// Read level of [`SimNode::client_default`].
    pub read: Level,
    /// Write level of [`SimNode::client_default`].
    pub write: Level,
    /// Finished client commands: client id -> result.
    pub results: BTreeMap<u64, ClientResult>,
    /// Stale replicas repaired by reads coordinated here (the local copy included).
    pub repairs: u64,
    next_id: u64,
    calls: BTreeMap<u64, Call>,
    tasks: BTreeMap<u64, Task>,
}

impl SimNode {
    /// Member `me` of a cluster whose ring is `ring`, with an empty store (version origin
    /// `me + 1`, tombstones on), every peer believed live, [`DEFAULT_TIMEOUT_MS`] and QUORUM reads
    /// and writes by default.
    pub fn new(me: MemberIdx, ring: Ring) -> SimNode {
        let members = ring.members().len();
        assert!(
            usize::from(me) < members,
            "member {me} of a {members}-member ring"
        );
        let store = Store::new(StoreConfig {
            hash_seed: 0x5eed_0000 ^ u64::from(me),
            origin: me + 1,
        });
        store.set_tombstones(true);
        SimNode {
            me,
            store,
            ring,
            live: vec![true; members],
            timeout: DEFAULT_TIMEOUT_MS,
            read: Level::Quorum,
            write: Level::Quorum,
            results: BTreeMap::new(),
            repairs: 0,
            next_id: 0,
            calls: BTreeMap::new(),
            tasks: BTreeMap::new(),
        }
    }

    /// The nodes of a cluster of `nodes` members ([`member_id`]s) with `replicas` copies of each
    /// slot, in member (= node id) order.
    pub fn cluster(nodes: usize, replicas: usize) -> Vec<SimNode> {
        let ids: Vec<String> = (0..nodes).map(member_id).collect();
        let ring = Ring::new(&ids, replicas);
        assert_eq!(ring.members(), &ids[..], "member order is node order");
        (0..nodes)
            .map(|i| SimNode::new(i as MemberIdx, ring.clone()))
            .collect()
    }

    /// The replicas of `key`, primary first.
    pub fn replicas_of(&self, key: &[u8]) -> Vec<NodeId> {
        self.prefs(key).into_iter().map(usize::from).collect()
    }

    /// The result of client command `client_id`, once finished.
    pub fn result(&self, client_id: u64) -> Option<&ClientResult> {
        self.results.get(&client_id)
    }

    /// Commands and peer requests still in progress (0 once the cluster is quiet).
    pub fn in_flight(&self) -> usize {
        self.tasks.len() + self.calls.len()
    }

    /// A client sends `op` on `key` to this node at consistency levels `read` and `write`; the
    /// result lands in [`SimNode::results`] under `client_id` (at once, or when the replicas have
    /// answered). Call it through [`crate::sim::Sim::input`].
    #[allow(clippy::too_many_arguments)]
    pub fn client(
        &mut self,
        client_id: u64,
        key: &[u8],
        op: Op<'_>,
        read: Level,
        write: Level,
        now: u64,
        out: &mut SimOutbox,
    ) {
        let cmd = Command {
            key,
            op,
            read,
            write,
        };
        self.route(Waiter::Client(client_id), &cmd, false, now, out);
    }

    /// [`SimNode::client`] at this node's default levels ([`SimNode::read`], [`SimNode::write`]).
    pub fn client_default(
        &mut self,
        client_id: u64,
        key: &[u8],
        op: Op<'_>,
        now: u64,
        out: &mut SimOutbox,
    ) {
        let (read, write) = (self.read, self.write);
        self.client(client_id, key, op, read, write, now, out);
    }

    fn prefs(&self, key: &[u8]) -> Vec<MemberIdx> {
        self.ring.preference(key_slot(key)).to_vec()
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends request `body` to `to`, feeding its answer (or its timeout after `timeout` ms) to
    /// `task`.
    fn call(
        &mut self,
        to: MemberIdx,
        body: Vec<u8>,
        task: Option<u64>,
        timeout: u64,
        out: &mut SimOutbox,
    ) {
        let id = self.next_id();
        self.calls.insert(id, Call { to, task });
        out.send(usize::from(to), SimMsg::Request { id, body });
        out.schedule(timeout, SimTimer::Timeout { id });
    }

    /// Hands a command's result to whoever waits for it.
    fn finish(&mut self, waiter: Waiter, result: ClientResult, out: &mut SimOutbox) {
        match waiter {
            Waiter::Client(c) => {
                self.results.insert(c, result);
            }
            Waiter::Peer { node, id } => {
                let resp = match result {
                    Ok(o) => Response::Outcome(o.into()),
                    Err(NoReplicas { write }) => Response::NoReplicas { write },
                };
                reply(out, node, id, &resp);
            }
        }
    }

    /// Plans a command arriving from a client (or re-plans a forward that timed out).
    fn route(
        &mut self,
        waiter: Waiter,
        cmd: &Command<'_>,
        retried: bool,
        now: u64,
        out: &mut SimOutbox,
    ) {
        let prefs = self.prefs(cmd.key);
        let live = &self.live;
        match coord::plan(&cmd.op, &prefs, self.me, cmd.read, |m| {
            live.get(usize::from(m)).copied().unwrap_or(false)
        }) {
            Plan::LocalRead => self.local(waiter, cmd, now, out),
            Plan::FanOutRead => self.fan_out_read(waiter, cmd, &prefs, now, out),
            Plan::Coordinate => self.coordinate_write(waiter, cmd, &prefs, now, out),
            Plan::Forward(m) => {
                let exec = cmd.encode();
                let task = self.next_id();
                self.tasks.insert(
                    task,
                    Task::Forward {
                        waiter,
                        exec: exec.clone(),
                        retried,
                    },
                );
                let timeout = self.timeout * FORWARD_TIMEOUTS;
                self.call(m, exec, Some(task), timeout, out);
            }
            Plan::Unavailable => self.finish(waiter, Err(cmd.no_replicas()), out),
        }
    }

    /// Runs a command a peer forwarded: this node coordinates it, whatever its own plan would be
    /// (so that a command is forwarded at most once per attempt and never loops).
    fn execute(&mut self, waiter: Waiter, cmd: &Command<'_>, now: u64, out: &mut SimOutbox) {
        let prefs = self.prefs(cmd.key);
        if !cmd.op.is_read_only() {
            self.coordinate_write(waiter, cmd, &prefs, now, out);
        } else if cmd.read == Level::One {
            self.local(waiter, cmd, now, out);
        } else {
            self.fan_out_read(waiter, cmd, &prefs, now, out);
        }
    }

    /// Answers a read from the local copy.
    fn local(&mut self, waiter: Waiter, cmd: &Command<'_>, now: u64, out: &mut SimOutbox) {
        let outcome = self.store.apply(cmd.key, &cmd.op, &Ctx::at(now));
        self.finish(waiter, Ok(outcome), out);
    }

    /// Starts a QUORUM/ALL read: the local copy answers at once, the other replicas are asked.
    fn fan_out_read(
        &mut self,
        waiter: Waiter,
        cmd: &Command<'_>,
        prefs: &[MemberIdx],
        now: u64,
        out: &mut SimOutbox,
    ) {
        let mut tally = ReadTally::new(cmd.read, prefs.len());
        if prefs.contains(&self.me) {
            tally.answer(self.me, self.store.fetch(cmd.key));
        }
        let exec = cmd.encode();
        if tally.tally.verdict().is_none() {
            let task = self.next_id();
            let fetch = to_body(&Request::Fetch { key: cmd.key });
            let me = self.me;
            for &m in prefs.iter().filter(|&&m| m != me) {
                self.call(m, fetch.clone(), Some(task), self.timeout, out);
            }
            self.tasks.insert(
                task,
                Task::Read {
                    waiter,
                    exec,
                    tally,
                },
            );
        } else {
            self.settle_read(None, waiter, exec, tally, now, out);
        }
    }

    /// Finishes a read whose tally has a verdict (answer and repair the stale replicas), or keeps
    /// it as task `task`.
    fn settle_read(
        &mut self,
        task: Option<u64>,
        waiter: Waiter,
        exec: Vec<u8>,
        tally: ReadTally<MemberIdx>,
        now: u64,
        out: &mut SimOutbox,
    ) {
        match tally.tally.verdict() {
            None => {
                let task = task.expect("an undecided read is a task");
                self.tasks.insert(
                    task,
                    Task::Read {
                        waiter,
                        exec,
                        tally,
                    },
                );
            }
            Some(false) => self.finish(waiter, Err(NoReplicas { write: false }), out),
            Some(true) => {
                let cmd = Command::decode(&exec);
                let ctx = Ctx::at(now);
                let newest = tally.newest();
                let outcome = coord::outcome_of(&cmd.op, cmd.key, newest, &ctx);
                for m in tally.stale() {
                    self.repairs += 1;
                    if m == self.me {
                        self.store.merge(cmd.key, newest, &ctx);
                    } else {
                        let put = to_body(&Request::Put {
                            key: cmd.key,
                            state: newest.clone(),
                        });
                        self.call(m, put, None, self.timeout, out);
                    }
                }
                self.finish(waiter, Ok(outcome), out);
            }
        }
    }

    /// Coordinates a write: read-before-write if it needs one, else apply and replicate now.
    fn coordinate_write(
        &mut self,
        waiter: Waiter,
        cmd: &Command<'_>,
        prefs: &[MemberIdx],
        now: u64,
        out: &mut SimOutbox,
    ) {
        let need = if cmd.op.is_blind() || cmd.write == Level::One {
            0
        } else {
            cmd.write.required(prefs.len()).saturating_sub(1)
        };
        if need == 0 {
            return self.apply_and_replicate(waiter, cmd, prefs, now, out);
        }
        let live: Vec<MemberIdx> = prefs
            .iter()
            .copied()
            .filter(|&m| m != self.me && self.live[usize::from(m)])
            .collect();
        let tally = Tally::new(need, 0, live.len());
        if tally.verdict() == Some(false) {
            return self.finish(waiter, Err(NoReplicas { write: true }), out);
        }
        let task = self.next_id();
        let fetch = to_body(&Request::Fetch { key: cmd.key });
        for m in live {
            self.call(m, fetch.clone(), Some(task), self.timeout, out);
        }
        self.tasks.insert(
            task,
            Task::Prefetch {
                waiter,
                exec: cmd.encode(),
                tally,
                newest: State::Missing,
            },
        );
    }

    /// Applies a write to the local store and sends the resulting state to every other replica
    /// (live or not: a down one just times out).
    fn apply_and_replicate(
        &mut self,
        waiter: Waiter,
        cmd: &Command<'_>,
        prefs: &[MemberIdx],
        now: u64,
        out: &mut SimOutbox,
    ) {
        let (outcome, changed) = self.store.apply_versioned(cmd.key, &cmd.op, &Ctx::at(now));
        let state = match changed {
            Some(state) if !matches!(outcome, Outcome::Err(_)) => state,
            _ => return self.finish(waiter, Ok(outcome), out),
        };
        let tally = Tally::for_level(cmd.write, prefs.len(), prefs.contains(&self.me));
        let task = self.next_id();
        let put = to_body(&Request::Put {
            key: cmd.key,
            state,
        });
        let me = self.me;
        for &m in prefs.iter().filter(|&&m| m != me) {
            self.call(m, put.clone(), Some(task), self.timeout, out);
        }
        self.settle_write(task, waiter, outcome, tally, out);
    }

    /// Answers a write once its tally has a verdict, else keeps it as task `task`.
    fn settle_write(
        &mut self,
        task: u64,
        waiter: Waiter,
        outcome: Outcome,
        tally: Tally,
        out: &mut SimOutbox,
    ) {
        match tally.verdict() {
            None => {
                self.tasks.insert(
                    task,
                    Task::Write {
                        waiter,
                        outcome,
                        tally,
                    },
                );
            }
            Some(true) => self.finish(waiter, Ok(outcome), out),
            Some(false) => self.finish(waiter, Err(NoReplicas { write: true }), out),
        }
    }

    /// Feeds the answer of peer `from` to task `task` (`None`: it timed out or failed).
    fn advance(
        &mut self,
        task: u64,
        from: MemberIdx,
        resp: Option<Response>,
        now: u64,
        out: &mut SimOutbox,
    ) {
        let Some(t) = self.tasks.remove(&task) else {
            return; // already decided; a late answer
        };
        match t {
            Task::Forward {
                waiter,
                exec,
                retried,
            } => match resp {
                Some(Response::Outcome(o)) => self.finish(waiter, Ok(o.into()), out),
                Some(Response::NoReplicas { write }) => {
                    self.finish(waiter, Err(NoReplicas { write }), out)
                }
                None if !retried => {
                    // The coordinator is now marked down: the next live replica takes over.
                    let cmd = Command::decode(&exec);
                    self.route(waiter, &cmd, true, now, out);
                }
                _ => {
                    let cmd = Command::decode(&exec);
                    self.finish(waiter, Err(cmd.no_replicas()), out);
                }
            },
            Task::Read {
                waiter,
                exec,
                mut tally,
            } => {
                match resp {
                    Some(Response::State(s)) => tally.answer(from, s),
                    _ => tally.failed(),
                }
                self.settle_read(Some(task), waiter, exec, tally, now, out);
            }
            Task::Prefetch {
                waiter,
                exec,
                mut tally,
                mut newest,
            } => {
                match resp {
                    Some(Response::State(s)) => {
                        tally.ok();
                        if s.newer_than(&newest) {
                            newest = s;
                        }
                    }
                    _ => tally.failed(),
                }
                match tally.verdict() {
                    None => {
                        self.tasks.insert(
                            task,
                            Task::Prefetch {
                                waiter,
                                exec,
                                tally,
                                newest,
                            },
                        );
                    }
                    Some(false) => self.finish(waiter, Err(NoReplicas { write: true }), out),
                    Some(true) => {
                        let cmd = Command::decode(&exec);
                        self.store.merge(cmd.key, &newest, &Ctx::at(now));
                        let prefs = self.prefs(cmd.key);
                        self.apply_and_replicate(waiter, &cmd, &prefs, now, out);
                    }
                }
            }
            Task::Write {
                waiter,
                outcome,
                mut tally,
            } => {
                match resp {
                    // Applied(false): the replica already had this state or a newer one.
                    Some(Response::Applied(_)) => tally.ok(),
                    _ => tally.failed(),
                }
                self.settle_write(task, waiter, outcome, tally, out);
            }
        }
    }

    /// Serves a request from peer `from`.
    fn serve(&mut self, from: NodeId, id: u64, body: &[u8], now: u64, out: &mut SimOutbox) {
        let ctx = Ctx::at(now);
        let resp = match from_body::<Request<'_>>(body) {
            Ok(Request::Put { key, state }) => {
                Response::Applied(self.store.merge(key, &state, &ctx))
            }
            Ok(Request::Fetch { key }) => Response::State(self.store.fetch(key)),
            Ok(Request::Exec {
                key,
                op,
                read,
                write,
                ..
            }) => {
                let cmd = Command {
                    key,
                    op,
                    read,
                    write,
                };
                return self.execute(Waiter::Peer { node: from, id }, &cmd, now, out);
            }
            Ok(Request::Ping) => Response::Pong,
            Ok(other) => Response::Error(format!("not served by a simulated node: {other:?}")),
            Err(e) => Response::Error(e.to_string()),
        };
        reply(out, from, id, &resp);
    }
}

/// Sends `resp` to `to` as the reply to its request `id`.
fn reply(out: &mut SimOutbox, to: NodeId, id: u64, resp: &Response) {
    out.send(
        to,
        SimMsg::Reply {
            id,
            body: to_body(resp),
        },
    );
}

impl Machine for SimNode {
    type Msg = SimMsg;
    type Timer = SimTimer;

    fn handle_message(&mut self, from: NodeId, msg: SimMsg, now: u64, out: &mut SimOutbox) {
        if let Some(l) = self.live.get_mut(from) {
            *l = true;
        }
        match msg {
            SimMsg::Request { id, body } => self.serve(from, id, &body, now, out),
            SimMsg::Reply { id, body } => {
                // A reply to a request this node did not make (or from the wrong peer) is ignored.
                if self
                    .calls
                    .get(&id)
                    .is_none_or(|c| usize::from(c.to) != from)
                {
                    return;
                }
                let call = self.calls.remove(&id).expect("checked above");
                let resp: Option<Response> = from_body(&body).ok();
                if let Some(task) = call.task {
                    self.advance(task, call.to, resp, now, out);
                }
            }
        }
    }

    fn handle_timer(&mut self, timer: SimTimer, now: u64, out: &mut SimOutbox) {
        let SimTimer::Timeout { id } = timer;
        let Some(call) = self.calls.remove(&id) else {
            return; // answered in time
        };
        self.live[usize::from(call.to)] = false;
        if let Some(task) = call.task {
            self.advance(task, call.to, None, now, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;

    use super::*;
    use crate::sim::Sim;
    use crate::version::Version;

    /// Bound on every run.
    const STEPS: usize = 100_000;
    const ONE: Level = Level::One;
    const QUORUM: Level = Level::Quorum;
    const ALL: Level = Level::All;

    fn sim(nodes: usize, replicas: usize, seed: u64) -> Sim<SimNode> {
        Sim::new(SimNode::cluster(nodes, replicas), seed)
    }

    fn set(value: &[u8]) -> Op<'_> {
        Op::set(value)
    }

    /// Runs `op` through `node` as client `client` at levels `(read, write)` and runs the
    /// simulation until it is quiet.
    fn run(
        s: &mut Sim<SimNode>,
        node: NodeId,
        client: u64,
        key: &[u8],
        op: Op<'_>,
        (read, write): (Level, Level),
    ) -> ClientResult {
        s.input(node, |n, now, out| {
            n.client(client, key, op, read, write, now, out)
        });
        s.run_until_quiet(STEPS);
        s.nodes[node]
            .result(client)
            .cloned()
            .unwrap_or_else(|| panic!("seed {}: client {client} got no answer", s.seed()))
    }

    fn value(v: &[u8]) -> ClientResult {
        Ok(Outcome::Value(Bytes::copy_from_slice(v)))
    }

    /// The value node `n` holds for `key` (None if no live value).
    fn held(s: &Sim<SimNode>, n: NodeId, key: &[u8]) -> Option<Bytes> {
        match s.nodes[n].store.fetch(key) {
            State::Live { value, .. } => Some(value),
            _ => None,
        }
    }

    fn quiet(s: &Sim<SimNode>) {
        for (i, n) in s.nodes.iter().enumerate() {
            assert_eq!(
                n.in_flight(),
                0,
                "seed {}: node {i} has work left after the run",
                s.seed()
            );
        }
    }

    /// A node of `s` that is not a replica of `key`.
    fn non_replica(s: &Sim<SimNode>, key: &[u8]) -> NodeId {
        let reps = s.nodes[0].replicas_of(key);
        (0..s.nodes.len())
            .find(|n| !reps.contains(n))
            .expect("more nodes than replicas")
    }

    #[test]
    fn quorum_survives_one_replica_down_but_not_two() {
        let seed = 11;
        let mut s = sim(3, 3, seed);
        let key = b"user:1";
        let reps = s.nodes[0].replicas_of(key);
        let (a, b, down) = (reps[0], reps[1], reps[2]);
        s.isolate(down);
        let r = run(&mut s, b, 1, key, set(b"v1"), (QUORUM, QUORUM));
        assert_eq!(
            r,
            Ok(Outcome::Ok),
            "seed {seed}: QUORUM write, one replica down"
        );
        let r = run(&mut s, a, 2, key, Op::Get, (QUORUM, QUORUM));
        assert_eq!(
            r,
            value(b"v1"),
            "seed {seed}: QUORUM read through another node"
        );
        assert_eq!(
            held(&s, down, key),
            None,
            "seed {seed}: isolated replica missed it"
        );
        assert!(
            !s.nodes[b].live[down],
            "seed {seed}: the timed-out replica is marked down"
        );

        // Two of three replicas unreachable.
        s.isolate(b);
        let r = run(&mut s, a, 3, b"other", set(b"x"), (QUORUM, QUORUM));
        assert_eq!(
            r,
            Err(NoReplicas { write: true }),
            "seed {seed}: QUORUM write fails"
        );
        let r = run(&mut s, a, 4, key, Op::Get, (QUORUM, QUORUM));
        assert_eq!(
            r,
            Err(NoReplicas { write: false }),
            "seed {seed}: QUORUM read fails"
        );
        let r = run(&mut s, a, 5, key, Op::Get, (ONE, QUORUM));
        assert_eq!(
            r,
            value(b"v1"),
            "seed {seed}: ONE read on a live replica serves"
        );
        quiet(&s);
    }

    #[test]
    fn quorum_read_repairs_a_stale_replica() {
        let seed = 22;
        let mut s = sim(3, 3, seed);
        let key = b"page:home";
        let reps = s.nodes[0].replicas_of(key);
        let (p, stale) = (reps[0], reps[2]);
        let r = run(&mut s, p, 1, key, set(b"v1"), (ONE, ALL));
        assert_eq!(r, Ok(Outcome::Ok), "seed {seed}");
        s.isolate(stale);
        let r = run(&mut s, p, 2, key, set(b"v2"), (ONE, ONE));
        assert_eq!(
            r,
            Ok(Outcome::Ok),
            "seed {seed}: ONE write with a replica cut off"
        );
        assert_eq!(
            held(&s, stale, key).as_deref(),
            Some(&b"v1"[..]),
            "seed {seed}"
        );
        assert!(
            !s.nodes[p].live[stale],
            "seed {seed}: the coordinator saw a timeout"
        );
        s.recover();

        // Through the stale replica: its own (old) copy is one of the quorum's answers.
        let r = run(&mut s, stale, 3, key, Op::Get, (QUORUM, QUORUM));
        assert_eq!(
            r,
            value(b"v2"),
            "seed {seed}: QUORUM read returns the newest"
        );
        assert!(
            s.nodes[stale].repairs >= 1,
            "seed {seed}: a repair was counted"
        );
        assert_eq!(
            held(&s, stale, key).as_deref(),
            Some(&b"v2"[..]),
            "seed {seed}"
        );
        assert!(
            s.nodes[p].live[stale],
            "seed {seed}: hearing from it marks it live"
        );

        // Through a fresh replica at ALL: the stale one is repaired by a Put.
        let key2 = b"page:about";
        let reps2 = s.nodes[0].replicas_of(key2);
        let (p2, q2, stale2) = (reps2[0], reps2[1], reps2[2]);
        s.isolate(stale2);
        let r = run(&mut s, p2, 4, key2, set(b"w"), (ONE, ONE));
        assert_eq!(r, Ok(Outcome::Ok), "seed {seed}");
        s.recover();
        assert_eq!(held(&s, stale2, key2), None, "seed {seed}");
        let before = s.nodes[q2].repairs;
        let r = run(&mut s, q2, 5, key2, Op::Get, (ALL, ONE));
        assert_eq!(r, value(b"w"), "seed {seed}: ALL read");
        assert_eq!(s.nodes[q2].repairs, before + 1, "seed {seed}");
        assert_eq!(
            held(&s, stale2, key2).as_deref(),
            Some(&b"w"[..]),
            "seed {seed}"
        );
        quiet(&s);
    }

    #[test]
    fn same_version_ties_break_by_origin_in_any_order() {
        let seed = 33;
        let mut s = sim(3, 3, seed);
        let key = b"tie";
        let state = |v: &'static [u8], origin| State::Live {
            value: Bytes::from_static(v),
            expire_at: 0,
            version: Version {
                hlc: 7 << 16,
                origin,
            },
            enc: 0,
        };
        let (low, high) = (state(b"low", 1), state(b"high", 2));
        let put = |st: &State| {
            to_body(&Request::Put {
                key,
                state: st.clone(),
            })
        };
        s.input(0, |_, _, out| {
            for (id, (to, st)) in [(1, &low), (1, &high), (2, &high), (2, &low)]
                .into_iter()
                .enumerate()
            {
                out.send(
                    to,
                    SimMsg::Request {
                        id: 1000 + id as u64,
                        body: put(st),
                    },
                );
            }
        });
        s.run_until_quiet(STEPS);
        for n in [1, 2] {
            assert_eq!(s.nodes[n].store.fetch(key), high, "seed {seed}: node {n}");
        }
        // A QUORUM read agrees, and finds nothing to repair.
        let r = run(&mut s, 1, 1, key, Op::Get, (ALL, ONE));
        assert_eq!(r, value(b"high"), "seed {seed}");
        assert_eq!(
            held(&s, 0, key).as_deref(),
            Some(&b"high"[..]),
            "seed {seed}"
        );
        quiet(&s);
    }

    #[test]
    fn non_replica_forwards_to_the_primary() {
        let seed = 44;
        let mut s = sim(5, 3, seed);
        let key = b"counter:fwd";
        let reps = s.nodes[0].replicas_of(key);
        let f = non_replica(&s, key);
        let r = run(&mut s, f, 1, key, Op::IncrBy(1), (QUORUM, QUORUM));
        assert_eq!(r, Ok(Outcome::Int(1)), "seed {seed}");
        assert_eq!(
            s.nodes[f].store.fetch(key),
            State::Missing,
            "seed {seed}: not stored at {f}"
        );
        let State::Live { version, .. } = s.nodes[reps[0]].store.fetch(key) else {
            panic!("seed {seed}: the primary holds the key");
        };
        assert_eq!(
            version.origin,
            reps[0] as u16 + 1,
            "seed {seed}: written by the primary"
        );
        for &r in &reps {
            assert_eq!(
                held(&s, r, key).as_deref(),
                Some(&b"1"[..]),
                "seed {seed}: replica {r}"
            );
        }
        // A ONE read from the non-replica is forwarded too.
        let r = run(&mut s, f, 2, key, Op::Get, (ONE, ONE));
        assert_eq!(r, value(b"1"), "seed {seed}");
        quiet(&s);
    }

    #[test]
    fn next_replica_coordinates_when_the_primary_is_down() {
        let seed = 55;
        let mut s = sim(5, 3, seed);
        let key = b"counter:failover";
        let reps = s.nodes[0].replicas_of(key);
        let (primary, second) = (reps[0], reps[1]);
        let c = non_replica(&s, key);
        // The second replica misses the first write (the primary and the third acknowledge it).
        s.isolate(second);
        let r = run(&mut s, c, 1, key, Op::IncrBy(5), (QUORUM, QUORUM));
        assert_eq!(r, Ok(Outcome::Int(5)), "seed {seed}");
        assert_eq!(held(&s, second, key), None, "seed {seed}");
        s.recover();

        // Now the primary goes away: the forward times out and the second replica coordinates,
        // reading the key from the third before applying the INCR.
        s.isolate(primary);
        let start = s.now();
        let r = run(&mut s, c, 2, key, Op::IncrBy(1), (QUORUM, QUORUM));
        assert_eq!(
            r,
            Ok(Outcome::Int(6)),
            "seed {seed}: the next replica took over"
        );
        assert!(
            !s.nodes[c].live[primary],
            "seed {seed}: the primary is marked down"
        );
        assert!(
            s.now() >= start + DEFAULT_TIMEOUT_MS * FORWARD_TIMEOUTS,
            "seed {seed}"
        );
        assert_eq!(
            held(&s, second, key).as_deref(),
            Some(&b"6"[..]),
            "seed {seed}"
        );
        assert_eq!(
            held(&s, primary, key).as_deref(),
            Some(&b"5"[..]),
            "seed {seed}"
        );

        // The next command goes straight to the second replica: answered well before a timeout.
        s.input(c, |n, now, out| {
            n.client(3, key, Op::IncrBy(1), QUORUM, QUORUM, now, out)
        });
        let t = s.now();
        s.run_until(t + 20, STEPS);
        assert_eq!(
            s.nodes[c].result(3),
            Some(&Ok(Outcome::Int(7))),
            "seed {seed}"
        );
        s.run_until_quiet(STEPS);

        // Once healed, a QUORUM read sees the newest value and repairs the old primary.
        s.recover();
        let r = run(&mut s, primary, 4, key, Op::Get, (QUORUM, QUORUM));
        assert_eq!(r, value(b"7"), "seed {seed}");
        assert_eq!(
            held(&s, primary, key).as_deref(),
            Some(&b"7"[..]),
            "seed {seed}"
        );
        quiet(&s);
    }

    /// 300 INCRs issued at once through the three nodes in turn (at the default QUORUM levels),
    /// with random delays.
    fn concurrent_incrs(seed: u64) -> Sim<SimNode> {
        let mut s = sim(3, 3, seed);
        s.set_delay(1, 5);
        for c in 0..300u64 {
            let node = (c % 3) as NodeId;
            s.input(node, |n, now, out| {
                n.client_default(c, b"hits", Op::IncrBy(1), now, out)
            });
        }
        s.run_until_quiet(STEPS);
        s
    }

    #[test]
    fn concurrent_incrs_serialize_on_the_coordinator() {
        let seed = 66;
        let mut s = concurrent_incrs(seed);
        let mut got = BTreeSet::new();
        for (i, n) in s.nodes.iter().enumerate() {
            assert_eq!(
                n.results.len(),
                100,
                "seed {seed}: node {i} answered all its clients"
            );
            for (c, r) in &n.results {
                match r {
                    Ok(Outcome::Int(v)) => assert!(got.insert(*v), "seed {seed}: {v} twice"),
                    other => panic!("seed {seed}: client {c} got {other:?}"),
                }
            }
        }
        assert_eq!(
            got,
            (1..=300).collect(),
            "seed {seed}: each INCR saw its own value"
        );
        let r = run(&mut s, 1, 1000, b"hits", Op::Get, (QUORUM, QUORUM));
        assert_eq!(r, value(b"300"), "seed {seed}");
        quiet(&s);
    }

    #[test]
    fn same_seed_same_run() {
        let scenario = |seed| {
            let mut s = sim(5, 3, seed);
            s.set_delay(1, 10);
            for a in 0..5 {
                for b in 0..5 {
                    s.drop(a, b, 0.05);
                }
            }
            let keys: [&[u8]; 4] = [b"a", b"b", b"{t}c", b"{t}d"];
            let levels = [ONE, QUORUM, ALL];
            for i in 0..200u64 {
                let (key, node) = (keys[(i / 4) as usize % 4], (i * 7 % 5) as NodeId);
                let (read, write) = (levels[i as usize % 3], levels[(i / 3) as usize % 3]);
                let op = match i % 4 {
                    0 => Op::IncrBy(1),
                    1 => Op::Get,
                    2 => Op::Append(b"x"),
                    _ => Op::Strlen,
                };
                s.input(node, |n, now, out| {
                    n.client(i, key, op, read, write, now, out)
                });
                let t = s.now() + 3;
                s.run_until(t, STEPS);
            }
            s.run_until_quiet(STEPS);
            quiet(&s);
            let results: Vec<_> = s.nodes.iter().map(|n| n.results.clone()).collect();
            let answered: usize = results.iter().map(BTreeMap::len).sum();
            assert_eq!(answered, 200, "seed {seed}: every client got an answer");
            (results, s.stats)
        };
        let (a, sa) = scenario(77);
        let (b, sb) = scenario(77);
        assert_eq!(a, b, "seed 77: same results");
        assert_eq!(sa, sb, "seed 77: same stats");
        assert!(sa.dropped > 0, "seed 77: the run had faults");
        assert_ne!((a, sa), scenario(78), "seeds 77 and 78: different runs");

        let (x, y) = (concurrent_incrs(5), concurrent_incrs(5));
        assert_eq!(x.stats, y.stats, "seed 5");
        let res = |s: &Sim<SimNode>| {
            s.nodes
                .iter()
                .map(|n| n.results.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(res(&x), res(&y), "seed 5");
    }
}
