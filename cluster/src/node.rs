//! The node machines: every distributed decision a node makes about one request, as sans-IO state
//! machines that the production driver (`src/cluster/`) and the simulator ([`crate::simnode`])
//! both run. Neither driver decides anything: they move messages, answers and timers.
//!
//! ## Machines
//! - [`KeyRequest`]: one keyed command, from the node the client sent it to until its reply, in
//!   phases: *forward* (to the coordinator), *read* (QUORUM/ALL fan-out with read repair),
//!   *prepare* and *accept* (a write: the read round of a read-modify-write, then the
//!   replication of the new state). A request that needs no message (a read at ONE on a replica,
//!   a write at ONE) finishes inside [`KeyRequest::start`]: the synchronous fast path.
//! - [`Gather`]: a cluster-wide command's round (KEYS, SCAN, DBSIZE, FLUSHALL).
//! - [`crate::repair::Repair`]: hint replay, anti-entropy rounds and the catch-up of a node that
//!   starts (its own module).
//! - [`serve`]: what a node answers to a peer's request (a [`KeyRequest`] for a forwarded
//!   command).
//!
//! ## Inputs and outputs
//! A machine reads the node through [`Env`] (its store, its view of the ring and of who is
//! live, `now`). It is fed [`Answer`]s to the calls it made (matched by the call's tag) and its
//! deadline when the timer the driver set for it fires. Everything it wants done comes out in an
//! [`Out`]: messages to send ([`Send`]), the time its timer should fire, and the client's reply.
//!
//! ## One deadline rule
//! With `T` = `request-timeout-ms` ([`Timing`]): a coordinator answers within `2T` of starting,
//! whatever its phases (the read round of a read-modify-write and the replication share that
//! budget); a forwarder waits `3T` for its coordinator, so it never gives up on a coordinator
//! that is still within its own budget (message delays on loopback are far below `T/2`). A
//! forward whose coordinator does not answer by then gets `NOREPLICAS`: the write may have been
//! applied, as with Cassandra's write timeout. A forward whose link fails (the coordinator
//! crashed or was declared down) is planned once more, on the next live replica: it may then
//! be applied twice (at least once).
//!
//! ## Writes
//! - A blind write (plain `SET`) is applied where it arrives when that node is a replica, then
//!   sent to the other replicas. A replica that holds a newer version refuses it and says which
//!   ([`Response::Refused`]); the coordinator then stamps the same value above that version and
//!   sends it again, as often as its deadline allows ([`MAX_RESTAMPS`] says why not a count).
//!   A refusal never counts as an
//!   acknowledgement, so a write that causally follows an acknowledged one always wins.
//! - A read-modify-write at QUORUM/ALL (INCR, APPEND, SET NX, DEL, ...) runs a round of
//!   single-decree Paxos per write (as CASPaxos does): a *prepare* round with a fresh ballot
//!   reads the key from a quorum of replicas, each promising to accept nothing older; the
//!   operation runs on the newest state found; the new state, stamped with the ballot, is then
//!   offered to every replica and acknowledged by the write level. Two coordinators that run
//!   one at once (their views differ) cannot both succeed, so acknowledged increments are never
//!   lost. A refused prepare retries with a higher ballot (at most [`MAX_PREPARES`] rounds); a
//!   refused accept fails the write (it may have been applied).
//! - A read-modify-write at ONE is applied to the coordinator's copy and replicated without a
//!   read round (no guarantee beyond that copy, as the level says).

use bytes::Bytes;

use crate::coord::{self, Plan, ReadTally, Tally};
use crate::msg::{Level, Request, Response, State};
use crate::notify::{self, Events};
use crate::op::{Ctx, Op, OpBuf, Outcome};
use crate::ring::MemberIdx;
use crate::slot::{key_slot, Slot};
use crate::store::{Offered, Store};
use crate::version::Version;
use crate::wire;

/// How far ahead of this node's clock a peer's version may be (5 minutes): beyond that it is a
/// broken clock or a hostile peer, and observing it would drag every clock forward.
pub const MAX_AHEAD_MS: u64 = 5 * 60 * 1000;

/// Most times a coordinator's *own* copy refuses a write it stamps again at once (no round trip:
/// one stamp above the refused version is enough, unless a promise is newer still).
///
/// Stamping again above a version another replica refused with is bounded by the request's
/// deadline, not by a count. With every replica coordinating the writes it receives, a
/// restamped write races the others' fresh writes, and each round is close to a coin flip
/// while they keep coming: six clients SETting one key through three nodes failed 40 of 1,200
/// writes with `NOREPLICAS` at 3 restamps and 1 at 8, and 16 still failed an MSET in a few
/// thousand (`group_sim::closed_loop_blind_transactions_through_every_node_all_succeed` fails
/// at its 5th write with a count). Within the deadline a write gets hundreds of rounds.
pub const MAX_RESTAMPS: u8 = 16;

/// Most prepare rounds of one read-modify-write (each refused one retries with a higher ballot).
pub const MAX_PREPARES: u8 = 3;

/// How often a node checks that a peer is alive, ms (production: a ping on the link; simulator:
/// the same ping as a message).
pub const HEARTBEAT_MS: u64 = 500;

/// How long a peer may stay silent before it is taken out of coordination, ms (its link is
/// closed and every call in flight to it fails with [`Answer::LinkDown`]).
pub const SILENCE_MS: u64 = 2000;

/// Request deadlines, from `request-timeout-ms` (see the module docs for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `T`: a request to one peer, ms.
    pub request_ms: u64,
}

impl Timing {
    /// A coordinator answers within this of starting, ms (`2T`).
    pub fn coordinator_ms(self) -> u64 {
        2 * self.request_ms
    }

    /// A forwarder waits this long for its coordinator, ms (`3T`).
    pub fn forward_ms(self) -> u64 {
        3 * self.request_ms
    }

    /// How long a read waits for the replicas it asked before it asks the others too, ms
    /// (`T / 20`, at least 1: 50 ms at the default request timeout). A read asks only as many
    /// replicas as its level still needs; a slow or silent one costs this much, not a failure.
    pub fn hedge_ms(self) -> u64 {
        (self.request_ms / 20).max(1)
    }

    /// How long a replica keeps a prepare's promise, ms: longer than its coordinator can still
    /// count an acceptance (`3T`).
    pub fn promise_ms(self) -> u64 {
        3 * self.request_ms
    }
}

/// The node as a machine sees it.
pub trait Env {
    /// This node's member index.
    fn me(&self) -> MemberIdx;
    /// The preference list of `slot`.
    fn prefs(&self, slot: Slot) -> &[MemberIdx];
    /// Whether member `m` is this node or a peer it can reach.
    fn live(&self, m: MemberIdx) -> bool;
    /// Whether this node's copy of `slot` is up to date: a node that starts catches up slot by
    /// slot ([`crate::repair::CatchUp`]); before, its copy of the slot counts in no read.
    fn synced(&self, slot: Slot) -> bool;
    /// Marks `slot` up to date (or catching up).
    fn set_synced(&self, slot: Slot, synced: bool);
    /// Whether peer `m` said in its last heartbeat that it still has slots catching up, or has
    /// not said yet (a node that just started or joined): reads ask it after the replicas that
    /// are up to date, since it answers a slot it has not received yet with `Syncing`.
    fn catching(&self, m: MemberIdx) -> bool;
    /// Whether `bytes` more fit in this node's memory budget (`maxmemory`; always without one).
    /// Repair never stores what does not fit.
    fn room(&self, bytes: u64) -> bool;
    /// How many of this node's slots are still catching up.
    fn catching_up(&self) -> usize;
    /// The digest of the ring this node works with ([`crate::ring::Ring::digest`]).
    fn ring_digest(&self) -> u64;
    /// Whether every live member of this node's ring has reported working with the same ring,
    /// for at least a request deadline (a coordinator's round started on the previous ring is
    /// over by then). Until then a slot received after a ring change stays
    /// catching up (it counts in no read or prepare round): a coordinator still on the previous
    /// ring could otherwise form a quorum that misses every replica the new ring's quorum has.
    fn ring_agreed(&self) -> bool;
    /// This node's data.
    fn store(&self) -> &Store;
    /// The context operations run in now (its `now` is unix ms, or virtual ms).
    fn ctx(&self) -> Ctx;
    /// Deadlines.
    fn timing(&self) -> Timing;
    /// The per-key queue of read-modify-write rounds.
    fn gate(&self) -> &Gate;
    /// This node's copy of the cluster-wide settings ([`crate::settings`]).
    fn settings(&self) -> crate::settings::Settings;
}

/// What a driver needs of a machine: inputs in, effects out (the same for [`KeyRequest`] and
/// [`Gather`]).
pub trait Machine {
    /// The answer to the call tagged `tag`.
    fn on_answer(&mut self, env: &impl Env, tag: u64, answer: Answer, out: &mut Out);
    /// The time the machine asked for ([`Out::wake_at`]) has come.
    fn on_deadline(&mut self, env: &impl Env, out: &mut Out);
    /// Its turn at the [`Gate`] ([`Out::wake`] named it).
    fn on_wake(&mut self, _env: &impl Env, _out: &mut Out) {}
    /// What the driver computed for it ([`Out::compute`]).
    fn on_computed(&mut self, _env: &impl Env, _c: crate::group::Computed, _out: &mut Out) {}
    /// Nothing more will happen.
    fn is_done(&self) -> bool;
    /// Counters so far.
    fn counts(&self) -> Counts {
        Counts::default()
    }
}

impl Machine for KeyRequest {
    fn on_answer(&mut self, env: &impl Env, tag: u64, answer: Answer, out: &mut Out) {
        KeyRequest::on_answer(self, env, tag, answer, out)
    }
    fn on_deadline(&mut self, env: &impl Env, out: &mut Out) {
        KeyRequest::on_deadline(self, env, out)
    }
    fn on_wake(&mut self, env: &impl Env, out: &mut Out) {
        KeyRequest::on_wake(self, env, out)
    }
    fn is_done(&self) -> bool {
        KeyRequest::is_done(self)
    }
    fn counts(&self) -> Counts {
        self.counts
    }
}

/// Serializes the read-modify-writes a node coordinates on one key: one prepare round per key at
/// a time, the next one starting right after its predecessor sent its accept. Links are FIFO, so
/// every replica sees the accept before the next prepare, and the next round builds on it; two
/// rounds of the same node never invalidate each other's promises. Tokens are the drivers'
/// request ids; [`Out::wake`] names the request to resume.
#[derive(Debug, Default)]
pub struct Gate {
    queues: parking_lot::Mutex<std::collections::HashMap<Bytes, std::collections::VecDeque<u64>>>,
}

impl Gate {
    /// Queues `token` on `key`; true if it holds the gate now.
    pub fn enter(&self, key: &Bytes, token: u64) -> bool {
        let mut q = self.queues.lock();
        let e = q.entry(key.clone()).or_default();
        e.push_back(token);
        e.len() == 1
    }

    /// Takes `token` off `key`'s queue; returns the token that now holds the gate, if it passed.
    pub fn leave(&self, key: &Bytes, token: u64) -> Option<u64> {
        let mut q = self.queues.lock();
        let e = q.get_mut(key)?;
        let head = e.front() == Some(&token);
        e.retain(|t| *t != token);
        let next = if head { e.front().copied() } else { None };
        if e.is_empty() {
            q.remove(key);
        }
        next
    }

    /// Keys with a queue (0 when no read-modify-write is in flight).
    pub fn len(&self) -> usize {
        self.queues.lock().len()
    }

    /// Whether no key has a queue.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a command with `op` at write level `write` may have to wait at the [`Gate`] (a
/// read-modify-write with a prepare round): its driver must be ready to wake it before it
/// starts. Over-approximates; never misses one that can wait.
pub fn may_queue(op: &Op<'_>, write: Level, synced: bool) -> bool {
    !op.is_read_only() && !op.is_blind() && (write != Level::One || !synced)
}

/// The synchronous fast path of a client's command, tried by both drivers before they build a
/// [`KeyRequest`]: a read at ONE that this node serves from its own copy (it is a replica and
/// synced). It is exactly [`coord::plan`]'s `LocalRead` on a synced node, which
/// [`KeyRequest::start`] would take too.
pub fn local_read(env: &impl Env, key: &[u8], op: &Op<'_>, read: Level) -> Option<Outcome> {
    let read = if op.describes_a_copy() {
        Level::One
    } else {
        read
    };
    if read != Level::One || !op.is_read_only() || !env.synced(key_slot(key)) {
        return None;
    }
    if !env.prefs(key_slot(key)).contains(&env.me()) {
        return None;
    }
    Some(env.store().apply(key, op, &env.ctx()))
}

/// Where a message published through this node goes (`Request::Publish`): every other member of
/// the `members` it knows that it sees live. One that is not misses the message, as a Redis
/// subscriber that is disconnected does: nothing is queued for it.
pub fn publish_targets(env: &impl Env, members: usize) -> Vec<MemberIdx> {
    (0..members as MemberIdx)
        .filter(|&m| m != env.me() && env.live(m))
        .collect()
}

/// Whether this node raises the keyspace event and the tracking invalidation of `key`'s expiry:
/// every replica expires its own copy, and only the first of the key's preference list speaks
/// for the cluster (the others invalidate only their own clients). Both drivers decide this
/// here: production for its store's journal, the simulator for its expiry cycles.
pub fn raises_expiry(env: &impl Env, key: &[u8]) -> bool {
    env.prefs(key_slot(key)).first() == Some(&env.me())
}

/// Whether a version received from a peer is plausible at `now`.
pub fn plausible(v: Option<Version>, now: u64) -> bool {
    v.is_none_or(|v| v.is_plausible(now, MAX_AHEAD_MS))
}

/// A request a machine sends, owning its bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// See [`Request::Exec`].
    Exec {
        /// The key.
        key: Bytes,
        /// The operation.
        op: OpBuf,
        /// Read level.
        read: Level,
        /// Write level.
        write: Level,
        /// Answer with the new state (the sender is a replica).
        want_state: bool,
    },
    /// See [`Request::Put`].
    Put {
        /// The key.
        key: Bytes,
        /// Its state.
        state: State,
    },
    /// See [`Request::Fetch`].
    Fetch {
        /// The key.
        key: Bytes,
    },
    /// See [`Request::Prepare`].
    Prepare {
        /// The key.
        key: Bytes,
        /// The ballot.
        ballot: Version,
    },
    /// See [`Request::Dump`].
    Dump {
        /// Slots to copy.
        slots: Vec<u16>,
        /// Bytes per page.
        budget: u64,
    },
    /// A request already encoded (a write's replication: the machine keeps the state and sends
    /// its encoding, so the value is neither cloned nor encoded twice).
    Encoded(Vec<u8>),
    /// See [`Request::Keys`].
    Keys {
        /// Slots to list.
        slots: Vec<u16>,
        /// Glob pattern.
        pattern: Option<Bytes>,
        /// The database.
        db: u8,
    },
    /// See [`Request::Count`].
    Count {
        /// Slots to count.
        slots: Vec<u16>,
        /// The database.
        db: u8,
    },
    /// See [`Request::Flush`].
    Flush {
        /// The flush's version.
        horizon: Version,
        /// FLUSHDB's database (`None`: FLUSHALL).
        db: Option<u8>,
    },
    /// See [`Request::PutSettings`].
    PutSettings {
        /// Which document.
        doc: u8,
        /// The entries changed.
        entries: Vec<crate::settings::Entry>,
    },
}

impl Call {
    /// The wire request (borrowing; `None` for an already encoded one).
    pub fn request(&self) -> Option<Request<'_>> {
        Some(match self {
            Call::Exec {
                key,
                op,
                read,
                write,
                want_state,
            } => Request::Exec {
                key,
                op: (&op.op()).into(),
                read: *read,
                write: *write,
                want_state: *want_state,
            },
            Call::Put { key, state } => Request::Put {
                key,
                state: state.clone(),
            },
            Call::Fetch { key } => Request::Fetch { key },
            Call::Prepare { key, ballot } => Request::Prepare {
                key,
                ballot: *ballot,
            },
            Call::Dump { slots, budget } => Request::Dump {
                slots: slots.clone(),
                budget: *budget,
            },
            Call::Encoded(_) => return None,
            Call::Keys { slots, pattern, db } => Request::Keys {
                slots: slots.clone(),
                pattern: pattern.as_deref(),
                db: *db,
            },
            Call::Count { slots, db } => Request::Count {
                slots: slots.clone(),
                db: *db,
            },
            Call::PutSettings { doc, entries } => Request::PutSettings {
                doc: *doc,
                entries: entries.clone(),
            },
            Call::Flush { horizon, db } => Request::Flush {
                horizon: *horizon,
                db: *db,
            },
        })
    }

    /// The encoded body of a request frame.
    pub fn to_body(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(match self {
            Call::Encoded(b) => return std::borrow::Cow::Borrowed(b),
            // Encoded from borrowed parts: the same bytes as `Request::Put`, without cloning
            // the state (a clone of a value's `Bytes` allocates).
            Call::Put { key, state } => {
                wire::to_body_sized(&PutRef(2, key, state), key.len() + state.value_len() + 32)
            }
            other => wire::to_body(&other.request().expect("not encoded")),
        })
    }

    /// A `Put` of `state` for `key`, encoded now from borrowed parts.
    pub fn put_encoded(key: &[u8], state: &State) -> Call {
        Call::Encoded(wire::to_body_sized(
            &PutRef(2, key, state),
            key.len() + state.value_len() + 32,
        ))
    }
}

/// `Request::Put` (tag 2) from borrowed parts.
#[derive(serde::Serialize)]
struct PutRef<'a>(u32, &'a [u8], &'a State);

/// A message to send to some members. `tag` (per target) comes back with the answer; a target
/// without a tag expects none (a read repair).
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    /// The request.
    pub call: Call,
    /// Targets, each with the tag its answer carries.
    pub to: Vec<(MemberIdx, Option<u64>)>,
}

/// What came back for a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The peer answered.
    Reply(Response),
    /// The link to the peer is down or failed before the answer (the request may or may not
    /// have been served).
    LinkDown,
}

/// How one target of a write ended (for hinted handoff: a target that did not store the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetResult {
    /// Stored (or already held).
    Stored,
    /// Refused: it holds this newer version.
    Refused(Version),
    /// No answer by the deadline.
    TimedOut,
    /// Its link was down or failed.
    LinkDown,
    /// It answered with an error.
    Failed,
}

/// A command could not reach its consistency level. A write may still have been applied on
/// some replicas (nothing is rolled back).
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

/// A command's result.
pub type KeyResult = Result<Outcome, NoReplicas>;

/// The reply a [`KeyRequest`] finished with.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The command's result.
    pub result: KeyResult,
    /// The key's new state when the command wrote it (a forwarding replica applies it before
    /// answering its client: read-your-writes).
    pub state: Option<State>,
    /// A transaction's keys and their new states, likewise ([`crate::group`]; empty for a
    /// keyed command).
    pub group: Vec<(Bytes, State)>,
}

/// What a machine asks its driver to do after an input.
#[derive(Debug, Default)]
pub struct Out {
    /// Messages to send.
    pub sends: Vec<Send>,
    /// When to call the machine's deadline handler (absolute, in [`Env::ctx`] time); replaces
    /// any earlier one.
    pub wake_at: Option<u64>,
    /// The client's reply, once.
    pub reply: Option<Finished>,
    /// Requests (by token) to resume with [`KeyRequest::on_wake`]: their turn at the [`Gate`].
    pub wake: Vec<u64>,
    /// Hints: a write's state for each replica that did not store it (link down, failed, no
    /// answer by the deadline), for the node's [`crate::repair::Hints`].
    pub hints: Vec<(MemberIdx, Bytes, State)>,
    /// The keyspace events of a write this machine coordinated, once it is acknowledged (the
    /// driver publishes those its `notify-keyspace-events` selects), by key in the order the
    /// commands raised them (a transaction's several keys: [`crate::group`]).
    pub events: Vec<(Bytes, Events)>,
    /// A transaction whose commands the driver runs ([`crate::group`], a script): run them over
    /// these states and hand the result to [`Machine::on_computed`].
    pub compute: Option<crate::group::Compute>,
}

/// Counters a machine reports (the driver adds them to the node's metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Reads answered from the local copy.
    pub local_reads: u64,
    /// QUORUM/ALL read rounds.
    pub read_fanouts: u64,
    /// Reads that asked more replicas than they first did: one they asked failed, or did not
    /// answer within [`Timing::hedge_ms`].
    pub read_hedges: u64,
    /// Forwards to a coordinator.
    pub forwards: u64,
    /// Forwards planned again after their link failed.
    pub forward_retries: u64,
    /// Writes coordinated here.
    pub write_attempts: u64,
    /// Replica acknowledgements of writes (the local copy included).
    pub write_acks: u64,
    /// Replicas sent a write.
    pub replica_fanout: u64,
    /// Stale replicas repaired.
    pub read_repairs: u64,
    /// Blind writes stamped again after a refusal.
    pub restamps: u64,
    /// Prepare rounds retried after a refusal.
    pub prepare_retries: u64,
    /// Calls that failed (link down, error, no answer by the deadline).
    pub transport_errors: u64,
    /// Of those, calls with no answer by the deadline.
    pub timeouts: u64,
    /// Rounds on several keys of one slot coordinated here (a transaction's, or a script's).
    pub groups: u64,
    /// Of those, scripts (programs the driver ran over the keys' states).
    pub programs: u64,
}

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client of this node: plan it (and forward if another node coordinates).
    Client,
    /// A peer forwarded it: coordinate it here whatever this node's own plan says (re-forwarding
    /// could loop while views differ). `want_state`: answer a write with its new state.
    Forwarded {
        /// Answer a write with the key's new state.
        want_state: bool,
    },
}

#[derive(Debug)]
enum Phase {
    /// Not started, or finished.
    Idle,
    /// Waiting for the [`Gate`] (another round on the key is in its prepare phase).
    Queued,
    Forward {
        to: MemberIdx,
        retried: bool,
    },
    Read {
        tally: ReadTally<MemberIdx>,
        local: bool,
        /// Replicas not asked yet: asked when one that was fails, or at `hedge_at`.
        spare: Vec<MemberIdx>,
        /// When to ask the spares if the read is still undecided (0: never).
        hedge_at: u64,
    },
    Prepare {
        ballot: Version,
        tally: Tally,
        newest: State,
        tries: u8,
        /// Answers so far.
        answers: u8,
        /// Whether the answers disagree (the newest state may not be on a quorum yet).
        mixed: bool,
    },
    Accept {
        tally: Tally,
        outcome: Outcome,
        /// The written state's version.
        version: Option<Version>,
        /// The written state (stamped again after a refusal; a forwarding replica gets it).
        kept: State,
        blind: bool,
        /// The write's keyspace events, reported when it is acknowledged.
        events: Events,
    },
}

/// One keyed command (see the module docs).
#[derive(Debug)]
pub struct KeyRequest {
    key: Bytes,
    token: u64,
    gated: bool,
    op: Option<OpBuf>,
    read: Level,
    write: Level,
    origin: Origin,
    phase: Phase,
    /// Round number: answers tagged with an older round are stale.
    round: u64,
    /// Targets of the current round still to answer, by member.
    waiting: Waiting,
    deadline: u64,
    replied: bool,
    /// The replicas of the write phase that did not store it, and how (the last round's).
    targets: Vec<(MemberIdx, TargetResult)>,
    /// Counters so far.
    pub counts: Counts,
}

/// A small set of members (the targets a round still waits for): inline up to 8, no allocation
/// for any replication factor up to that.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    inline: [MemberIdx; 8],
    len: u8,
    more: Vec<MemberIdx>,
}

impl Waiting {
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.more.clear();
    }

    pub(crate) fn push(&mut self, m: MemberIdx) {
        if usize::from(self.len) < self.inline.len() {
            self.inline[usize::from(self.len)] = m;
            self.len += 1;
        } else {
            self.more.push(m);
        }
    }

    pub(crate) fn remove(&mut self, m: MemberIdx) -> bool {
        let n = usize::from(self.len);
        if let Some(i) = self.inline[..n].iter().position(|&x| x == m) {
            self.inline[i] = self.inline[n - 1];
            self.len -= 1;
            return true;
        }
        match self.more.iter().position(|&x| x == m) {
            Some(i) => {
                self.more.swap_remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && self.more.is_empty()
    }

    /// Waits (in round `round`) for every replica in `prefs` but `me`, and nothing else;
    /// returns them with their tags.
    pub(crate) fn ask(
        &mut self,
        round: u64,
        prefs: &[MemberIdx],
        me: MemberIdx,
    ) -> Vec<(MemberIdx, Option<u64>)> {
        self.clear();
        let mut to = Vec::with_capacity(prefs.len());
        for &m in prefs.iter().filter(|&&m| m != me) {
            self.push(m);
            to.push((m, Some(tag(round, m))));
        }
        to
    }

    pub(crate) fn take(&mut self) -> Vec<MemberIdx> {
        let mut v = self.inline[..usize::from(self.len)].to_vec();
        v.append(&mut self.more);
        self.len = 0;
        v
    }
}

pub(crate) fn tag(round: u64, m: MemberIdx) -> u64 {
    (round << 16) | u64::from(m)
}

pub(crate) fn untag(t: u64) -> (u64, MemberIdx) {
    (t >> 16, (t & 0xffff) as MemberIdx)
}

impl KeyRequest {
    /// A command on `key` at levels `read`/`write`; `token` is its driver's id for it (unique
    /// on the node while it runs).
    pub fn new(key: Bytes, token: u64, read: Level, write: Level, origin: Origin) -> KeyRequest {
        KeyRequest {
            key,
            token,
            gated: false,
            op: None,
            read,
            write,
            origin,
            phase: Phase::Idle,
            round: 0,
            waiting: Waiting::default(),
            deadline: 0,
            replied: false,
            targets: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// The key.
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// Whether the client has its reply.
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// Whether nothing more will happen: replied, and no answer is awaited any more.
    pub fn is_done(&self) -> bool {
        self.replied && (self.waiting.is_empty() || matches!(self.phase, Phase::Idle))
    }

    /// The replicas that did not store the write, and how (for hinted handoff), once done.
    pub fn targets(&self) -> &[(MemberIdx, TargetResult)] {
        &self.targets
    }

    fn finish(&mut self, out: &mut Out, result: KeyResult, state: Option<State>) {
        if !self.replied {
            self.replied = true;
            out.reply = Some(Finished {
                result,
                state,
                group: Vec::new(),
            });
        }
    }

    fn fail(&mut self, out: &mut Out, write: bool) {
        self.phase = Phase::Idle;
        self.finish(out, Err(NoReplicas { write }), None);
    }

    /// Leaves the [`Gate`] (if in it), waking the next round on the key.
    fn release(&mut self, env: &impl Env, out: &mut Out) {
        if self.gated {
            self.gated = false;
            if let Some(next) = env.gate().leave(&self.key, self.token) {
                out.wake.push(next);
            }
        }
    }

    /// The [`Gate`] let this request through ([`Out::wake`] named it).
    pub fn on_wake(&mut self, env: &impl Env, out: &mut Out) {
        if matches!(self.phase, Phase::Queued) {
            self.start_prepare(env, 0, out);
            self.arm(out);
        }
    }

    fn op_buf(&self) -> &OpBuf {
        self.op
            .as_ref()
            .expect("the operation is kept once a phase needs it")
    }

    /// Starts the command with operation `op` (borrowed: it is copied only if a phase needs it
    /// after this call).
    pub fn start(&mut self, env: &impl Env, op: &Op<'_>, out: &mut Out) {
        if op.describes_a_copy() {
            self.read = Level::One;
        }
        let now = env.ctx().now;
        self.deadline = now + env.timing().coordinator_ms();
        match self.origin {
            Origin::Forwarded { .. } => {
                if op.is_read_only() {
                    if self.read == Level::One && env.synced(key_slot(&self.key)) {
                        self.local_read(env, op, out);
                    } else {
                        self.start_read(env, op, out);
                    }
                } else {
                    self.start_write(env, op, out);
                }
            }
            Origin::Client => self.route(env, op, None, out),
        }
        self.arm(out);
    }

    fn arm(&self, out: &mut Out) {
        if !self.is_done() {
            out.wake_at = Some(match self.phase {
                Phase::Read { hedge_at, .. } if hedge_at != 0 => hedge_at.min(self.deadline),
                _ => self.deadline,
            });
        }
    }

    /// Plans the command from this node, leaving out member `failed` (a coordinator whose link
    /// just failed).
    fn route(&mut self, env: &impl Env, op: &Op<'_>, failed: Option<MemberIdx>, out: &mut Out) {
        let prefs = env.prefs(key_slot(&self.key));
        let live = |m: MemberIdx| Some(m) != failed && env.live(m);
        let mut p = coord::plan(op, prefs, env.me(), self.read, live);
        if p == Plan::LocalRead && !env.synced(key_slot(&self.key)) {
            // Still copying its data after a start or a ring change: read from a replica that
            // has it, and never answer from a memory that may not hold it yet.
            p = match prefs.iter().copied().find(|&m| m != env.me() && live(m)) {
                Some(m) => Plan::Forward(m),
                None => Plan::Unavailable,
            };
        }
        match p {
            Plan::LocalRead => self.local_read(env, op, out),
            Plan::FanOutRead => self.start_read(env, op, out),
            Plan::Coordinate => self.start_write(env, op, out),
            Plan::Forward(m) => {
                self.counts.forwards += 1;
                if self.op.is_none() {
                    self.op = Some(OpBuf::new(op));
                }
                let want_state = prefs.contains(&env.me());
                self.round += 1;
                self.waiting.clear();
                self.waiting.push(m);
                self.phase = Phase::Forward {
                    to: m,
                    retried: failed.is_some(),
                };
                // A forward waits longer than its coordinator may take.
                self.deadline = env.ctx().now + env.timing().forward_ms();
                out.sends.push(Send {
                    call: Call::Exec {
                        key: self.key.clone(),
                        op: self.op_buf().clone(),
                        read: self.read,
                        write: self.write,
                        want_state,
                    },
                    to: vec![(m, Some(tag(self.round, m)))],
                });
            }
            Plan::Unavailable => self.fail(out, !op.is_read_only()),
        }
    }

    fn local_read(&mut self, env: &impl Env, op: &Op<'_>, out: &mut Out) {
        self.counts.local_reads += 1;
        let o = env.store().apply(&self.key, op, &env.ctx());
        self.phase = Phase::Idle;
        self.finish(out, Ok(o), None);
    }

    fn start_read(&mut self, env: &impl Env, op: &Op<'_>, out: &mut Out) {
        self.counts.read_fanouts += 1;
        if self.op.is_none() {
            self.op = Some(OpBuf::new(op));
        }
        let prefs = env.prefs(key_slot(&self.key));
        let me = env.me();
        let mut tally = ReadTally::new(self.read, prefs.len());
        let local = prefs.contains(&me);
        if local && env.synced(key_slot(&self.key)) {
            tally.answer(me, env.store().fetch(&self.key));
        }
        self.round += 1;
        // Ask only as many of the others as the level still needs (QUORUM of 3 with the local
        // copy: one), live ones first, starting after this node in the list so that each
        // replica asks a different peer; the rest are spares, asked if one of those fails or
        // is slow.
        let at = prefs.iter().position(|&m| m == me).map_or(0, |i| i + 1);
        let mut others: Vec<MemberIdx> = prefs[at..]
            .iter()
            .chain(&prefs[..at])
            .copied()
            .filter(|&m| m != me)
            .collect();
        // Replicas still catching up after a start or a join come after the others: they would
        // answer `Syncing` for the slots they are receiving, and the read would ask again.
        others.sort_by_key(|&m| (!env.live(m), env.catching(m)));
        let need = tally.tally.missing().min(others.len());
        let spare = others.split_off(need);
        let hedge_at = if spare.is_empty() {
            0
        } else {
            env.ctx().now + env.timing().hedge_ms()
        };
        self.phase = Phase::Read {
            tally,
            local,
            spare,
            hedge_at,
        };
        if self.settle_read(env, out) {
            return;
        }
        self.waiting.clear();
        self.ask_for_state(&others, out);
    }

    /// Asks `replicas` for the key's state in this round (a read's).
    fn ask_for_state(&mut self, replicas: &[MemberIdx], out: &mut Out) {
        let mut to = Vec::with_capacity(replicas.len());
        for &m in replicas {
            self.waiting.push(m);
            to.push((m, Some(tag(self.round, m))));
        }
        if !to.is_empty() {
            out.sends.push(Send {
                call: Call::Fetch {
                    key: self.key.clone(),
                },
                to,
            });
        }
    }

    /// A read still undecided asks its spares: `all` of them (the hedge delay passed), or the
    /// next one (a replica it asked failed).
    fn ask_spares(&mut self, all: bool, out: &mut Out) {
        let Phase::Read {
            tally,
            spare,
            hedge_at,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if spare.is_empty() || tally.tally.verdict().is_some() {
            return;
        }
        let asked: Vec<MemberIdx> = if all {
            std::mem::take(spare)
        } else {
            vec![spare.remove(0)]
        };
        if spare.is_empty() {
            *hedge_at = 0;
        }
        self.counts.read_hedges += 1;
        self.ask_for_state(&asked, out);
    }

    /// Finishes a read whose tally has a verdict; returns whether it did.
    fn settle_read(&mut self, env: &impl Env, out: &mut Out) -> bool {
        let Phase::Read { tally, local, .. } = &self.phase else {
            return false;
        };
        match tally.tally.verdict() {
            None => false,
            Some(false) => {
                self.fail(out, false);
                true
            }
            Some(true) => {
                let ctx = env.ctx();
                let newest = tally.newest().clone();
                let stale = tally.stale();
                let local = *local;
                let op = self.op.as_ref().expect("kept for the read").op();
                let outcome = coord::outcome_of(&op, &self.key, &newest, &ctx);
                let touches = op.touches();
                if newest.version().is_some() && !stale.is_empty() {
                    self.counts.read_repairs += stale.len() as u64;
                    let mut to = Vec::new();
                    for m in stale {
                        if m == env.me() {
                            // A repair of its own copy as of any other: only if it has room
                            // under `maxmemory` (else its stale copy goes).
                            crate::repair::merge_one(env, &self.key, &newest);
                        } else {
                            to.push((m, None));
                        }
                    }
                    if !to.is_empty() {
                        // A repair, not a write: the replica stores it only if it has room.
                        out.sends.push(Send {
                            call: Call::Encoded(wire::to_body(&Request::Merge {
                                entries: vec![(self.key.clone(), newest)],
                            })),
                            to,
                        });
                    }
                }
                if local && touches {
                    // Record the access on the local copy too (LRU/LFU), as a local read would.
                    env.store().apply(&self.key, &Op::Touch, &ctx);
                }
                self.phase = Phase::Idle;
                self.finish(out, Ok(outcome), None);
                true
            }
        }
    }

    fn start_write(&mut self, env: &impl Env, op: &Op<'_>, out: &mut Out) {
        self.counts.write_attempts += 1;
        if op.is_blind() || (self.write == Level::One && env.synced(key_slot(&self.key))) {
            let ctx = env.ctx();
            let (outcome, changed, change) =
                env.store().apply_versioned_noting(&self.key, op, &ctx);
            let events = notify::write_events(op, change, &outcome);
            match changed {
                Some(state) => {
                    self.start_accept(env, outcome, state, op.is_blind(), true, events, out)
                }
                None => {
                    // As in a read-modify-write round: a batch that left the key as it found
                    // it still raises its commands' events.
                    if !events.is_empty() {
                        out.events.push((self.key.clone(), events));
                    }
                    self.phase = Phase::Idle;
                    self.finish(out, Ok(outcome), None);
                }
            }
        } else {
            if self.op.is_none() {
                self.op = Some(OpBuf::new(op));
            }
            self.gated = true;
            if env.gate().enter(&self.key, self.token) {
                self.start_prepare(env, 0, out);
            } else {
                self.phase = Phase::Queued;
            }
        }
    }

    /// A prepare round with a fresh ballot (the `tries`-th of this write).
    fn start_prepare(&mut self, env: &impl Env, tries: u8, out: &mut Out) {
        let ctx = env.ctx();
        let store = env.store();
        let ballot = store.new_version(ctx.now);
        let prefs = env.prefs(key_slot(&self.key));
        let me = env.me();
        let mut tally = Tally::for_level(self.write, prefs.len(), false);
        let mut newest = State::Missing;
        let mut answers = 0;
        if prefs.contains(&me) && env.synced(key_slot(&self.key)) {
            match store.prepare(&self.key, ballot, ctx.now, env.timing().promise_ms()) {
                Ok(s) => {
                    tally.ok();
                    newest = s;
                    answers = 1;
                }
                // Cannot happen with a ballot from this store's own clock; treated as a refusal.
                Err(_) => tally.failed(),
            }
        } else if prefs.contains(&me) {
            tally.failed();
        }
        self.round += 1;
        self.phase = Phase::Prepare {
            ballot,
            tally,
            newest,
            tries,
            answers,
            mixed: false,
        };
        if self.settle_prepare(env, out) {
            return;
        }
        let prefs = env.prefs(key_slot(&self.key));
        let to = self.ask_others(prefs, me);
        out.sends.push(Send {
            call: Call::Prepare {
                key: self.key.clone(),
                ballot,
            },
            to,
        });
    }

    /// Moves on from a prepare round with a verdict; returns whether it did.
    fn settle_prepare(&mut self, env: &impl Env, out: &mut Out) -> bool {
        let Phase::Prepare {
            ballot,
            tally,
            newest,
            tries,
            mixed,
            ..
        } = &self.phase
        else {
            return false;
        };
        match tally.verdict() {
            None => false,
            Some(false) => {
                self.release(env, out);
                self.fail(out, true);
                true
            }
            Some(true) => {
                let (ballot, tries) = (*ballot, *tries);
                let ctx = env.ctx();
                let op = self.op_buf().op();
                let (outcome, next) = coord::state_after(&op, &self.key, newest, &ctx, ballot);
                let events = notify::write_events(
                    &op,
                    coord::change_of(newest, next.as_ref(), ctx.now),
                    &outcome,
                );
                // An operation that changes nothing still writes back what it read when the
                // replicas disagreed: its reply is based on that state (DEL answering 0 because
                // of a tombstone on one replica), so the state must be on a quorum before the
                // reply, or a later read could still see the older one.
                let next = next.or_else(|| {
                    if *mixed {
                        restamped(newest, ballot)
                    } else {
                        None
                    }
                });
                let Some(state) = next else {
                    // Nothing to write (SET NX on an existing key, INCR on a non-number, ...,
                    // or a transaction's batch that created the key and deleted it again: its
                    // commands still raise their events, as in Redis).
                    self.release(env, out);
                    self.phase = Phase::Idle;
                    if !events.is_empty() {
                        out.events.push((self.key.clone(), events));
                    }
                    self.finish(out, Ok(outcome), None);
                    return true;
                };
                let me = env.me();
                let local = env.prefs(key_slot(&self.key)).contains(&me);
                if local {
                    match env.store().offer(&self.key, &state, &ctx) {
                        Offered::Stored | Offered::Duplicate => {}
                        Offered::Refused(_) if tries + 1 < MAX_PREPARES => {
                            // Something newer arrived here since the round: read again.
                            self.counts.prepare_retries += 1;
                            self.start_prepare(env, tries + 1, out);
                            return true;
                        }
                        Offered::Refused(_) => {
                            self.release(env, out);
                            self.fail(out, true);
                            return true;
                        }
                    }
                }
                self.start_accept(env, outcome, state, false, local, events, out);
                // The accept is on its way (before anything the next round sends): its turn.
                self.release(env, out);
                true
            }
        }
    }

    /// Starts waiting for every replica in `prefs` but `me`, in this round; returns them with
    /// their tags.
    fn ask_others(&mut self, prefs: &[MemberIdx], me: MemberIdx) -> Vec<(MemberIdx, Option<u64>)> {
        self.waiting.ask(self.round, prefs, me)
    }

    /// Sends the new `state` (already held here if `local`) to the other replicas.
    #[allow(clippy::too_many_arguments)]
    fn start_accept(
        &mut self,
        env: &impl Env,
        outcome: Outcome,
        state: State,
        blind: bool,
        local: bool,
        events: Events,
        out: &mut Out,
    ) {
        let prefs = env.prefs(key_slot(&self.key));
        let me = env.me();
        // A copy on a slot still catching up is kept but not counted: reads do not count that
        // replica either, so a write acknowledged by it could be missed by a read quorum.
        let held = local && prefs.contains(&me);
        let local = held && env.synced(key_slot(&self.key));
        let mut tally = Tally::for_level(self.write, prefs.len(), local);
        if prefs.contains(&me) && !local {
            // This replica's ack will not come: the tally must not wait for it.
            tally.failed();
        }
        if local {
            self.counts.write_acks += 1;
        }
        self.round += 1;
        let to = self.ask_others(prefs, me);
        self.counts.replica_fanout += to.len() as u64;
        self.targets.clear();
        let version = state.version();
        out.sends.push(Send {
            call: Call::put_encoded(&self.key, &state),
            to,
        });
        self.phase = Phase::Accept {
            tally,
            outcome,
            version,
            kept: state,
            blind,
            events,
        };
        self.settle_accept(out);
    }

    /// Answers the client once the write's tally has a verdict (the machine keeps collecting the
    /// other targets' outcomes after that).
    fn settle_accept(&mut self, out: &mut Out) {
        let Phase::Accept {
            tally,
            outcome,
            kept,
            events,
            ..
        } = &self.phase
        else {
            return;
        };
        match tally.verdict() {
            Some(true) if !self.replied => {
                let o = outcome.clone();
                let s = matches!(self.origin, Origin::Forwarded { want_state: true })
                    .then(|| kept.clone());
                if !events.is_empty() {
                    out.events.push((self.key.clone(), events.clone()));
                }
                self.finish(out, Ok(o), s);
            }
            Some(false) if !self.replied => self.finish(out, Err(NoReplicas { write: true }), None),
            _ => {}
        }
    }

    /// Feeds the answer to the call tagged `t`.
    pub fn on_answer(&mut self, env: &impl Env, t: u64, answer: Answer, out: &mut Out) {
        let (round, from) = untag(t);
        if round != self.round {
            return; // an earlier round's late answer
        }
        if !self.waiting.remove(from) {
            return;
        }
        // Read only where a version must be checked (a plain acknowledgement needs no clock).
        let now = || env.ctx().now;
        let reply = match answer {
            Answer::Reply(r) => Some(r),
            Answer::LinkDown => None,
        };
        if !matches!(
            reply,
            Some(
                Response::State(_)
                    | Response::Stored
                    | Response::Refused(_)
                    | Response::Outcome(_)
                    | Response::Written { .. }
                    | Response::NoReplicas { .. }
            )
        ) {
            self.counts.transport_errors += 1;
        }
        match &mut self.phase {
            Phase::Idle | Phase::Queued => {}
            Phase::Forward { to, retried } => {
                let (to, retried) = (*to, *retried);
                let write = !self.op_buf().op().is_read_only();
                self.phase = Phase::Idle;
                match reply {
                    Some(Response::Outcome(o)) => self.finish(out, Ok(o.into()), None),
                    Some(Response::Written { outcome, state }) => {
                        // This node is a replica: hold the new state before the client hears
                        // back, so its next read here sees its write.
                        if plausible(state.version(), now()) {
                            env.store().merge(&self.key, &state, &env.ctx());
                        }
                        self.finish(out, Ok(outcome.into()), None);
                    }
                    Some(Response::NoReplicas { write }) => self.fail(out, write),
                    None if !retried => {
                        // The coordinator's link failed: the next live replica takes over.
                        self.counts.forward_retries += 1;
                        let op = self.op.take().expect("kept for the forward");
                        self.route(env, &op.op(), Some(to), out);
                        if self.op.is_none() {
                            self.op = Some(op);
                        }
                    }
                    _ => self.fail(out, write),
                }
            }
            Phase::Read { tally, .. } => {
                match reply {
                    Some(Response::State(s)) if plausible(s.version(), now()) => {
                        tally.answer(from, s)
                    }
                    _ => {
                        tally.failed();
                        self.ask_spares(false, out);
                    }
                }
                self.settle_read(env, out);
            }
            Phase::Prepare {
                tally,
                newest,
                tries,
                answers,
                mixed,
                ..
            } => match reply {
                Some(Response::State(s)) if plausible(s.version(), now()) => {
                    tally.ok();
                    if *answers > 0 && s.version() != newest.version() {
                        *mixed = true;
                    }
                    *answers = answers.saturating_add(1);
                    if s.newer_than(newest) {
                        *newest = s;
                    }
                    self.settle_prepare(env, out);
                }
                Some(Response::Refused(v)) if plausible(Some(v), now()) => {
                    // A newer write or ballot exists: read again with a higher ballot.
                    env.store().clock().observe(v.hlc);
                    if *tries + 1 < MAX_PREPARES {
                        let tries = *tries + 1;
                        self.counts.prepare_retries += 1;
                        self.start_prepare(env, tries, out);
                    } else {
                        self.release(env, out);
                        self.fail(out, true);
                    }
                }
                _ => {
                    tally.failed();
                    self.settle_prepare(env, out);
                }
            },
            Phase::Accept {
                tally,
                version,
                kept,
                blind,
                ..
            } => {
                match reply {
                    Some(Response::Stored) => {
                        tally.ok();
                        self.counts.write_acks += 1;
                    }
                    // Only before the write is acknowledged: once it is, a newer version may be
                    // a write that causally follows this one (its client saw the OK), and
                    // stamping this one above it would undo it.
                    Some(Response::Refused(v))
                        if *blind
                            && !self.replied
                            && now() < self.deadline
                            && plausible(Some(v), now())
                            && Some(v) > *version =>
                    {
                        // A replica holds something newer: stamp the same value above it and
                        // send it again, so that this write (which may causally follow that
                        // one) wins. Nothing of this round counts any more.
                        let store = env.store();
                        let mut st = kept.clone();
                        self.counts.restamps += 1;
                        store.clock().observe(v.hlc);
                        let version = store.new_version(now());
                        match &mut st {
                            State::Live { version: sv, .. } => *sv = version,
                            State::Dead(dv) => *dv = version,
                            State::Missing => {}
                        }
                        let Phase::Accept {
                            outcome, events, ..
                        } = std::mem::replace(&mut self.phase, Phase::Idle)
                        else {
                            unreachable!("in the accept phase")
                        };
                        let stored = matches!(
                            store.offer(&self.key, &st, &env.ctx()),
                            Offered::Stored | Offered::Duplicate
                        );
                        self.start_accept(env, outcome, st, true, stored, events, out);
                        self.arm(out);
                        return;
                    }
                    Some(Response::Refused(v)) => {
                        tally.failed();
                        self.targets.push((from, TargetResult::Refused(v)));
                    }
                    // Stored, but on a slot still catching up: it does not count.
                    Some(Response::Syncing) => {
                        tally.failed();
                        self.targets.push((from, TargetResult::Failed));
                    }
                    None => {
                        tally.failed();
                        self.targets.push((from, TargetResult::LinkDown));
                        out.hints.push((from, self.key.clone(), kept.clone()));
                    }
                    _ => {
                        tally.failed();
                        self.targets.push((from, TargetResult::Failed));
                        out.hints.push((from, self.key.clone(), kept.clone()));
                    }
                }
                self.settle_accept(out);
                if self.waiting.is_empty() {
                    self.phase = Phase::Idle;
                }
            }
        }
        self.arm(out);
    }

    /// The deadline passed (`now`): whatever has not answered has failed.
    pub fn on_deadline(&mut self, env: &impl Env, out: &mut Out) {
        let now = env.ctx().now;
        if now < self.deadline {
            if matches!(self.phase, Phase::Read { hedge_at, .. } if hedge_at != 0 && now >= hedge_at)
            {
                self.ask_spares(true, out);
            }
            self.arm(out);
            return;
        }
        let unanswered = self.waiting.take();
        self.counts.transport_errors += unanswered.len() as u64;
        self.counts.timeouts += unanswered.len() as u64;
        self.release(env, out);
        match &self.phase {
            Phase::Idle => {}
            Phase::Queued => self.fail(out, true),
            Phase::Forward { .. } => {
                let write = !self.op_buf().op().is_read_only();
                self.fail(out, write);
            }
            Phase::Read { .. } => self.fail(out, false),
            Phase::Prepare { .. } => self.fail(out, true),
            Phase::Accept { kept, .. } => {
                for m in unanswered {
                    self.targets.push((m, TargetResult::TimedOut));
                    out.hints.push((m, self.key.clone(), kept.clone()));
                }
                if !self.replied {
                    self.finish(out, Err(NoReplicas { write: true }), None);
                }
            }
        }
        self.phase = Phase::Idle;
    }
}

/// What a node does with a peer's request.
#[derive(Debug)]
pub enum Served {
    /// Answer this.
    Reply(Response),
    /// A forwarded command: run this machine (already started with the output in `Out`) and
    /// answer with what it finishes with.
    Exec(Box<KeyRequest>, Out),
    /// A forwarded transaction on several keys of one slot: run this machine (already started,
    /// its output in `Out`) and answer with what it finishes with.
    ExecGroup(Box<crate::group::GroupRequest>, Out),
    /// FLUSHALL (or, with a database, FLUSHDB) at this horizon: the driver runs it (it walks
    /// every key) and answers [`Response::Done`].
    Flush(Version, Option<u8>),
    /// RANDOMKEY of this database: the driver picks one with its RNG and answers
    /// [`Response::Key`].
    RandomKey(u8),
    /// `HC.FORGET` of this member id: the driver's membership forgets it, and it answers
    /// [`Response::Done`].
    Forget(String),
    /// A peer's change to entries of a cluster-wide settings document: the driver offers them
    /// to its copy ([`crate::settings::Settings::offer_all`]), applies the document if one was
    /// newer, and answers [`Response::Done`].
    Settings(u8, Vec<crate::settings::Entry>),
    /// A message published through another member: the driver delivers it to this node's
    /// subscribers (no answer).
    Publish(Bytes, Bytes),
    /// A key changed at its coordinator: this node's tracking clients must forget it (not
    /// answered).
    Invalidate(Bytes),
    /// The sender has tracking clients: send it the keys that change here for a while
    /// ([`crate::notify::PeerTracking::announced`]; not answered).
    TrackingAnnounced,
}

/// Serves request `req` from member `from` (`None`: a peer this node cannot place in its ring);
/// `token` is the driver's id for the machine of a forwarded command.
pub fn serve(env: &impl Env, from: Option<MemberIdx>, token: u64, req: Request<'_>) -> Served {
    let ctx = env.ctx();
    let store = env.store();
    let refuse = || Served::Reply(Response::Error("version too far in the future".into()));
    Served::Reply(match req {
        Request::Ping => Response::Pong,
        Request::Forget { id } => return Served::Forget(id.into_owned()),
        Request::Status => Response::Status {
            catching_up: env.catching_up() as u32,
            ring: env.ring_digest(),
            settings: env.settings().digests(),
            horizons: store.horizons(),
        },
        Request::Settings => Response::Settings(env.settings().entries()),
        Request::PutSettings { ref entries, .. }
            if !entries.iter().all(|(_, v, _)| plausible(Some(*v), ctx.now)) =>
        {
            return refuse()
        }
        Request::PutSettings { doc, entries } => return Served::Settings(doc, entries),
        Request::Publish { channel, .. } if channel[..] == *crate::notify::ANNOUNCE_CHANNEL => {
            return Served::TrackingAnnounced
        }
        Request::Publish { channel, message }
            if channel[..] == *crate::notify::INVALIDATE_CHANNEL =>
        {
            return Served::Invalidate(message)
        }
        Request::Publish { channel, message } => return Served::Publish(channel, message),
        // Not a replica of the slot by this node's ring: not stored, not counted (see Fetch).
        Request::Put { key, .. } if !env.prefs(key_slot(key)).contains(&env.me()) => {
            Response::Syncing
        }
        Request::Put { state, .. } if !plausible(state.version(), ctx.now) => return refuse(),
        // A replica catching up on the slot keeps the write but does not count for it: reads do
        // not count it either, so a write acknowledged through it could be missed by a read
        // quorum (a ring change may move two replicas of a slot at once).
        Request::Put { key, state } => match store.offer(key, &state, &ctx) {
            Offered::Stored | Offered::Duplicate if !env.synced(key_slot(key)) => Response::Syncing,
            Offered::Stored | Offered::Duplicate => Response::Stored,
            Offered::Refused(v) => Response::Refused(v),
        },
        // Only a replica of the slot by this node's own ring answers for it: a node whose ring
        // differs from the coordinator's (a ring change not seen yet, or seen first) must not
        // count, or two coordinators on two rings could form disjoint quorums.
        Request::Fetch { key } | Request::Prepare { key, .. }
            if !env.synced(key_slot(key)) || !env.prefs(key_slot(key)).contains(&env.me()) =>
        {
            Response::Syncing
        }
        Request::Fetch { key } => Response::State(store.fetch(key)),
        Request::Prepare { ballot, .. } if !plausible(Some(ballot), ctx.now) => return refuse(),
        Request::Prepare { key, ballot } => {
            match store.prepare(key, ballot, ctx.now, env.timing().promise_ms()) {
                Ok(s) => Response::State(s),
                Err(v) => Response::Refused(v),
            }
        }
        Request::Dump { .. } if !from.is_some_and(|m| env.live(m)) => Response::NotLive,
        Request::Dump { slots, budget } => {
            // Room for the budget and the slot that crosses it, without growing the page.
            let room = budget.saturating_add(budget / 8).min(64 << 20) as usize;
            let mut page = crate::msg::Packer::with_capacity(room);
            let mut n = 0u32;
            for &slot in &slots {
                store.dump_into(slot, &mut page);
                n += 1;
                if page.bytes() as u64 >= budget {
                    break;
                }
            }
            Response::Dump {
                entries: page.finish(),
                slots: n,
            }
        }
        Request::Keys { slots, pattern, db } => Response::Keys {
            keys: store.keys_in(&slots, db, pattern, &ctx),
            // The work done, as on a single node: every key of the slots, of any database.
            examined: store.count_in(&slots, None, ctx.now),
        },
        Request::Count { slots, db } => Response::Count(store.count_in(&slots, Some(db), ctx.now)),
        Request::RandomKey { db } => return Served::RandomKey(db),
        Request::Flush { horizon, .. } if !horizon.is_plausible(ctx.now, MAX_AHEAD_MS) => {
            return refuse()
        }
        Request::Flush { horizon, db } => return Served::Flush(horizon, db),
        r @ (Request::Merge { .. }
        | Request::Tree { .. }
        | Request::Buckets { .. }
        | Request::Digests { .. }
        | Request::List { .. }
        | Request::Pull { .. }) => {
            crate::repair::serve_repair(env, from, &r).expect("a repair request")
        }
        Request::PrepareGroup { keys, .. } | Request::ExecGroup { keys, .. }
            if !one_slot(&keys) =>
        {
            Response::Error("keys of several slots".into())
        }
        Request::PrepareGroup { keys, .. }
            if !env.synced(key_slot(keys[0]))
                || !env.prefs(key_slot(keys[0])).contains(&env.me()) =>
        {
            Response::Syncing
        }
        Request::PrepareGroup { ballot, .. } if !plausible(Some(ballot), ctx.now) => {
            return refuse()
        }
        Request::PrepareGroup { keys, ballot } => {
            match store.prepare_group(&keys, ballot, ctx.now, env.timing().promise_ms()) {
                Ok(s) => Response::States(s),
                Err(v) => Response::Refused(v),
            }
        }
        Request::PutGroup { entries } => {
            let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| &k[..]).collect();
            if !one_slot(&keys) {
                Response::Error("keys of several slots".into())
            } else if !env.prefs(key_slot(keys[0])).contains(&env.me()) {
                Response::Syncing
            } else if !entries.iter().all(|(_, s)| plausible(s.version(), ctx.now)) {
                return refuse();
            } else {
                let synced = env.synced(key_slot(keys[0]));
                match store.offer_group(&entries, &ctx) {
                    Offered::Stored | Offered::Duplicate if !synced => Response::Syncing,
                    Offered::Stored | Offered::Duplicate => Response::Stored,
                    Offered::Refused(v) => Response::Refused(v),
                }
            }
        }
        Request::ExecGroup {
            keys,
            ops,
            expect,
            write,
            want_state,
            external,
        } => {
            let keys = keys.into_iter().map(Bytes::copy_from_slice).collect();
            let ops = Bytes::copy_from_slice(ops);
            let g = if external {
                crate::group::Group::external(keys, ops)
            } else {
                crate::group::Group::new(keys, ops, expect)
            };
            let Some(g) = g else {
                return Served::Reply(Response::Error("malformed operation".into()));
            };
            let mut m =
                crate::group::GroupRequest::new(g, token, write, Origin::Forwarded { want_state });
            let mut out = Out::default();
            m.start(env, &mut out);
            return Served::ExecGroup(Box::new(m), out);
        }
        Request::Exec {
            key,
            op,
            read,
            write,
            want_state,
        } => {
            let Some(op) = op.op() else {
                return Served::Reply(Response::Error("malformed operation".into()));
            };
            let mut m = KeyRequest::new(
                Bytes::copy_from_slice(key),
                token,
                read,
                write,
                Origin::Forwarded { want_state },
            );
            let mut out = Out::default();
            m.start(env, &op, &mut out);
            return Served::Exec(Box::new(m), out);
        }
    })
}

/// Whether `keys` are some keys, all of one slot.
fn one_slot(keys: &[&[u8]]) -> bool {
    keys.first()
        .is_some_and(|k| keys.iter().all(|x| key_slot(x) == key_slot(k)))
}

/// `state` stamped with `version` (`None` for `Missing`: nothing to write back).
pub(crate) fn restamped(state: &State, version: Version) -> Option<State> {
    match state {
        State::Missing => None,
        State::Dead(_) => Some(State::Dead(version)),
        State::Live {
            value,
            expire_at,
            enc,
            ..
        } => Some(State::Live {
            value: value.clone(),
            expire_at: *expire_at,
            version,
            enc: *enc,
        }),
    }
}

/// A cluster-wide command's round: one request to each of several members (the owners of a
/// range of slots for KEYS, SCAN and DBSIZE; every other member for FLUSHALL). A target this node
/// is itself is answered at once by [`serve`]. The round ends when every target has answered,
/// failed (link down, an error reply) or the deadline passed; [`Gather::result`] then has the
/// answers in target order, or how many *required* targets failed (the command fails) and how
/// many optional ones did (FLUSHALL's members that were down: logged, not an error).
#[derive(Debug)]
pub struct Gather {
    answers: Vec<Option<Response>>,
    required: Vec<bool>,
    waiting: usize,
    deadline: u64,
    done: bool,
}

/// How a [`Gather`] round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Gathered {
    /// Every required target answered: the answers in target order (`None` for an optional
    /// target that did not).
    Answers(Vec<Option<Response>>),
    /// Some required targets did not answer.
    Failed {
        /// Required targets that failed.
        required: usize,
        /// Optional targets that failed.
        optional: usize,
    },
}

impl Gather {
    /// Starts a round: `calls` are (target, request, whether its failure fails the command).
    pub fn new(env: &impl Env, calls: Vec<(MemberIdx, Call, bool)>, out: &mut Out) -> Gather {
        let mut g = Gather {
            answers: vec![None; calls.len()],
            required: calls.iter().map(|(_, _, r)| *r).collect(),
            waiting: 0,
            deadline: env.ctx().now + env.timing().request_ms,
            done: false,
        };
        for (i, (m, call, _)) in calls.into_iter().enumerate() {
            if m == env.me() {
                if let Some(Served::Reply(r)) =
                    call.request().map(|req| serve(env, Some(m), 0, req))
                {
                    g.answers[i] = Some(r);
                }
                continue;
            }
            g.waiting += 1;
            out.sends.push(Send {
                call,
                to: vec![(m, Some(i as u64))],
            });
        }
        g.check(out);
        g
    }

    fn check(&mut self, out: &mut Out) {
        if self.waiting == 0 {
            self.done = true;
        } else {
            out.wake_at = Some(self.deadline);
        }
    }

    /// How the round ended, once it has.
    pub fn result(&self) -> Option<Gathered> {
        if !self.done {
            return None;
        }
        let failed = |req: bool| {
            self.answers
                .iter()
                .zip(&self.required)
                .filter(|(a, r)| a.is_none() && **r == req)
                .count()
        };
        Some(match failed(true) {
            0 => Gathered::Answers(self.answers.clone()),
            n => Gathered::Failed {
                required: n,
                optional: failed(false),
            },
        })
    }
}

impl Machine for Gather {
    fn on_answer(&mut self, _env: &impl Env, tag: u64, answer: Answer, out: &mut Out) {
        let i = tag as usize;
        if self.done || i >= self.answers.len() || self.answers[i].is_some() {
            return;
        }
        self.waiting = self.waiting.saturating_sub(1);
        if let Answer::Reply(r) = answer {
            if !matches!(r, Response::Error(_)) {
                self.answers[i] = Some(r);
            }
        }
        self.check(out);
    }

    fn on_deadline(&mut self, env: &impl Env, out: &mut Out) {
        if env.ctx().now >= self.deadline {
            self.waiting = 0;
        }
        self.check(out);
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// Which member answers for each of `slots` in a cluster-wide command (KEYS, SCAN, DBSIZE): the
/// first live replica of the slot (this node only if its copy of the slot has caught up, when
/// another is live), grouped by member. A slot with no live replica makes the command fail
/// (`NOREPLICAS ... read`) rather than answer partially.
pub fn slot_owners(
    env: &impl Env,
    slots: impl Iterator<Item = Slot>,
) -> Result<Vec<(MemberIdx, Vec<u16>)>, NoReplicas> {
    let mut groups: Vec<(MemberIdx, Vec<u16>)> = Vec::new();
    for slot in slots {
        let me = env.me();
        let prefs = env.prefs(slot);
        let up_to_date = |m: MemberIdx| env.live(m) && (m != me || env.synced(slot));
        let Some(m) = prefs
            .iter()
            .copied()
            .find(|&m| up_to_date(m))
            .or_else(|| prefs.iter().copied().find(|&m| env.live(m)))
        else {
            return Err(NoReplicas { write: false });
        };
        match groups.iter_mut().find(|(g, _)| *g == m) {
            Some((_, v)) => v.push(slot),
            None => groups.push((m, vec![slot])),
        }
    }
    Ok(groups)
}

/// The answer to a forwarded command once its machine finished.
pub fn exec_response(f: Finished) -> Response {
    match f {
        Finished {
            result: Ok(o),
            group,
            ..
        } if !group.is_empty() => Response::WrittenGroup {
            outcome: o.into(),
            entries: group,
        },
        Finished {
            result: Ok(o),
            state: Some(state),
            ..
        } => Response::Written {
            outcome: o.into(),
            state,
        },
        Finished { result: Ok(o), .. } => Response::Outcome(o.into()),
        Finished {
            result: Err(NoReplicas { write }),
            ..
        } => Response::NoReplicas { write },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_encoded_as_its_wire_request() {
        let state = State::Live {
            value: Bytes::from_static(b"value"),
            expire_at: 12,
            version: Version {
                hlc: 99 << 16,
                origin: 7,
            },
            enc: 1,
        };
        let call = Call::Put {
            key: Bytes::from_static(b"key"),
            state: state.clone(),
        };
        let want = wire::to_body(&Request::Put { key: b"key", state });
        assert_eq!(call.to_body(), want);
    }
}
