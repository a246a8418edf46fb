//! A transaction on several keys of one slot, run as one read-modify-write round at the slot's
//! coordinator: [`GroupRequest`].
//!
//! A transaction (`MULTI`/`EXEC`) whose keys share a slot must run as one unit: no other write
//! to its keys lands between its commands, and all of its writes take effect or none. A keyed
//! command's round ([`crate::node::KeyRequest`]) covers one key; this one covers several with the
//! same two phases, because the keys of one slot live on the same replicas under one lock:
//!
//! - **Forward.** A client's transaction goes to the slot's coordinator (its first live replica),
//!   as a keyed write does, so that the rounds on a key queue at one node's [`Gate`] instead of
//!   refusing each other's promises.
//! - **Gate.** The coordinator takes the gate of every key, in the keys' byte order (so two
//!   transactions cannot each hold a key the other waits for; a keyed command holds one gate).
//! - **Prepare.** One ballot for all keys: each replica promises it for every key at once, or
//!   refuses it if it holds or has promised anything at least as new for any of them
//!   ([`crate::store::Store::prepare_group`]), and answers every key's state.
//! - **Compute.** Watched keys are compared with the versions `WATCH` saw (any difference: the
//!   transaction answers `Changed`, nothing is written). The commands then run in order over the
//!   newest state of each key, as [`crate::coord::state_after`] runs one command; each key it
//!   changed gets its new state stamped with the ballot.
//! - **Accept.** The new states go to every replica in one message, stored all or none
//!   ([`crate::store::Store::offer_group`]: a replica refuses the whole message if it holds or
//!   has promised a newer version of any key). The write level counts replicas that stored them
//!   all.
//!
//! Why nothing interleaves: a write to one of the keys that reaches a replica after its promise
//! with an older version is refused there (a blind write is then stamped above the ballot, so it
//! comes after the transaction in version order); one with a newer version makes the
//! transaction's accept fail on that replica, so the transaction cannot be acknowledged by a
//! quorum that missed it. Two rounds on a key cannot both reach a quorum (as for one key: a
//! replica that promised the higher ballot refuses the lower one's accept).
//!
//! What it is not: a transaction whose accept failed (`NOREPLICAS`) may have been stored by some
//! replicas and spread from there (as a failed keyed write may), so it may later take effect, in
//! whole per replica but key by key as repair copies it. Readers are not isolated: a read of two
//! of its keys at ONE may see one before and one after it until the write has reached every
//! replica. Keys of different slots are never in one round.

use bytes::Bytes;

use crate::coord::{self, Tally};
use crate::msg::{self, Level, Request, Response, State};
use crate::node::{
    plausible, restamped, tag, untag, Answer, Call, Counts, Env, Finished, Machine, NoReplicas,
    Origin, Out, Send, TargetResult, Waiting, MAX_PREPARES, MAX_RESTAMPS,
};
use crate::notify::{self, Events};
use crate::op::Outcome;
use crate::ring::MemberIdx;
use crate::slot::{key_slot, Slot};
use crate::store::Offered;
use crate::version::Version;
use crate::wire;

/// A transaction's keys and commands ([`Request::ExecGroup`]), checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    keys: Vec<Bytes>,
    /// The commands ([`msg::group_bytes`]), or the driver's program when `external`.
    ops: Bytes,
    expect: Vec<(u16, Option<Version>)>,
    slot: Slot,
    /// The driver runs the program ([`Out::compute`]): a script.
    external: bool,
    /// Every key's first command is a blind write (a plain `SET`), and nothing is watched: the
    /// replies and new states do not depend on what the keys held, so no read round is needed
    /// ([`GroupRequest`]'s blind path).
    blind: bool,
}

impl Group {
    /// A transaction on `keys` (distinct, all of one slot) running `ops` ([`msg::group_bytes`]),
    /// guarded by the versions `WATCH` saw of some keys (`expect`: index in `keys`, version).
    /// `None` if the keys are empty, repeated, of several slots or too many, or an operation
    /// does not decode or names a key out of range.
    pub fn new(keys: Vec<Bytes>, ops: Bytes, expect: Vec<(u16, Option<Version>)>) -> Option<Group> {
        let parsed = msg::grouped(&ops, keys.len())?;
        let mut first_blind = vec![None; keys.len()];
        for (i, op) in &parsed {
            if first_blind[*i].is_none() {
                first_blind[*i] = Some(op.is_blind());
            }
        }
        let blind = expect.is_empty() && first_blind.iter().all(|b| *b == Some(true));
        let mut g = Group::checked(keys, ops, expect, false)?;
        g.blind = blind;
        Some(g)
    }

    /// A transaction on `keys` whose commands the driver decides as it runs `program` over the
    /// keys' states ([`Out::compute`], [`GroupRequest::on_computed`]): a script. `None` as for
    /// [`Group::new`].
    pub fn external(keys: Vec<Bytes>, program: Bytes) -> Option<Group> {
        Group::checked(keys, program, Vec::new(), true)
    }

    fn checked(
        keys: Vec<Bytes>,
        ops: Bytes,
        expect: Vec<(u16, Option<Version>)>,
        external: bool,
    ) -> Option<Group> {
        let slot = key_slot(keys.first()?);
        if keys.len() > usize::from(u16::MAX) || keys.iter().any(|k| key_slot(k) != slot) {
            return None;
        }
        let mut sorted: Vec<&Bytes> = keys.iter().collect();
        sorted.sort();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        if expect.iter().any(|(i, _)| usize::from(*i) >= keys.len()) {
            return None;
        }
        Some(Group {
            keys,
            ops,
            expect,
            slot,
            external,
            blind: false,
        })
    }

    /// Whether the driver runs its program.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Whether it needs no read round (every key's first command a blind write).
    pub fn is_blind(&self) -> bool {
        self.blind
    }

    /// Its commands, or the driver's program.
    pub fn program(&self) -> &Bytes {
        &self.ops
    }

    /// The versions `WATCH` saw of some keys (index in [`Group::keys`]).
    pub fn expect(&self) -> &[(u16, Option<Version>)] {
        &self.expect
    }

    /// The keys.
    pub fn keys(&self) -> &[Bytes] {
        &self.keys
    }

    /// Their slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    fn key_refs(&self) -> Vec<&[u8]> {
        self.keys.iter().map(|k| &k[..]).collect()
    }
}

/// A program for the driver to run ([`Out::compute`]): its keys' newest states, read by the
/// prepare round. The writes it computes are stamped with the round's ballot.
#[derive(Debug, Clone, PartialEq)]
pub struct Compute {
    /// The program ([`Group::external`]).
    pub program: Bytes,
    /// The keys.
    pub keys: Vec<Bytes>,
    /// Each key's newest state.
    pub states: Vec<State>,
    /// The round's ballot.
    pub ballot: Version,
}

/// What the driver computed ([`Machine::on_computed`]): the reply, each key it changed (index
/// in the keys) with its new state, and the commands' keyspace events in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Computed {
    /// The transaction's reply.
    pub outcome: crate::msg::WireOutcome,
    /// Keys changed and their new states (versions are replaced by the ballot).
    pub writes: Vec<(u16, State)>,
    /// Keyspace events, in order.
    pub events: Vec<(u16, Events)>,
}

/// The commands' result over the keys' states: the reply, each key's new state if changed, and
/// the keyspace events.
struct Run {
    outcome: Outcome,
    next: Vec<Option<State>>,
    events: Vec<(Bytes, Events)>,
}

/// Runs a group's commands in order over the keys' newest states, each as
/// [`coord::state_after`] runs one, stamping new states with `ballot`.
fn run_ops(group: &Group, newest: &[State], ctx: &crate::op::Ctx, ballot: Version) -> Run {
    let ops = msg::grouped(&group.ops, group.keys.len()).expect("checked when the group was made");
    let mut cur = newest.to_vec();
    let mut next = vec![None; cur.len()];
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut events = Vec::new();
    for (i, op) in &ops {
        let key = &group.keys[*i];
        let (o, after) = coord::state_after(op, key, &cur[*i], ctx, ballot);
        let ev = notify::write_events(op, coord::change_of(&cur[*i], after.as_ref(), ctx.now), &o);
        if !ev.is_empty() {
            events.push((key.clone(), ev));
        }
        if let Some(s) = after {
            cur[*i] = s.clone();
            next[*i] = Some(s);
        }
        outcomes.push(o);
    }
    Run {
        outcome: Outcome::Batch(outcomes, Vec::new()),
        next,
        events,
    }
}

/// Runs a program written as a group's commands ([`msg::group_bytes`]) over the states of
/// `c`: what a driver whose programs are plain commands computes (the simulator's). `None` if
/// the program does not decode.
pub fn compute_ops(c: &Compute, ctx: &crate::op::Ctx) -> Option<Computed> {
    let g = Group::new(c.keys.clone(), c.program.clone(), Vec::new())?;
    let run = run_ops(&g, &c.states, ctx, c.ballot);
    let index = |k: &Bytes| g.keys.iter().position(|x| x == k).unwrap_or(0) as u16;
    Some(Computed {
        outcome: run.outcome.into(),
        writes: run
            .next
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u16, s?)))
            .collect(),
        events: run
            .events
            .iter()
            .map(|(k, e)| (index(k), e.clone()))
            .collect(),
    })
}

/// Every entry's state stamped with `v`.
fn restamp_all(entries: &mut [(Bytes, State)], v: Version) {
    for (_, s) in entries.iter_mut() {
        match s {
            State::Live { version, .. } => *version = v,
            State::Dead(d) => *d = v,
            State::Missing => {}
        }
    }
}

/// `state` with version `v` (`None` for `Missing`).
fn stamped(state: State, v: Version) -> Option<State> {
    match state {
        State::Missing => None,
        State::Dead(_) => Some(State::Dead(v)),
        State::Live {
            value,
            expire_at,
            enc,
            ..
        } => Some(State::Live {
            value,
            expire_at,
            version: v,
            enc,
        }),
    }
}

#[derive(Debug)]
enum Phase {
    /// Not started, or finished.
    Idle,
    /// Waiting for the [`Gate`](crate::node::Gate) of the next key in order.
    Queued,
    Forward {
        to: MemberIdx,
        retried: bool,
    },
    Prepare {
        ballot: Version,
        tally: Tally,
        /// The newest state of each key so far.
        newest: Vec<State>,
        tries: u8,
        answers: u8,
        /// Whether the answers disagree on some key.
        mixed: bool,
    },
    /// Waiting for the driver to run the program ([`Out::compute`]).
    Compute {
        ballot: Version,
        newest: Vec<State>,
        tries: u8,
        mixed: bool,
    },
    Accept {
        tally: Tally,
        outcome: Outcome,
        /// The keys written and their new states.
        kept: Vec<(Bytes, State)>,
        /// The commands' keyspace events, reported when the write is acknowledged.
        events: Vec<(Bytes, Events)>,
        /// A blind transaction's write (no read round): stamped again above a version a
        /// replica refused it with, as a blind write is, until its deadline.
        blind: bool,
    },
}

/// One transaction on several keys of one slot (see the module docs).
#[derive(Debug)]
pub struct GroupRequest {
    group: Group,
    /// Indexes of the keys in byte order: the order their gates are taken in.
    order: Vec<usize>,
    /// Gates held (the first `gated` of `order`).
    gated: usize,
    token: u64,
    write: Level,
    origin: Origin,
    phase: Phase,
    round: u64,
    waiting: Waiting,
    deadline: u64,
    replied: bool,
    /// The replicas of the write phase that did not store it, and how.
    targets: Vec<(MemberIdx, TargetResult)>,
    /// Counters so far.
    pub counts: Counts,
}

impl GroupRequest {
    /// Transaction `group` at write level `write` (QUORUM at least when it has a read round;
    /// a blind one keeps the level, as a plain SET does); `token` is its driver's id for it
    /// (gate wake-ups name it).
    pub fn new(group: Group, token: u64, write: Level, origin: Origin) -> GroupRequest {
        let mut order: Vec<usize> = (0..group.keys.len()).collect();
        order.sort_by(|a, b| group.keys[*a].cmp(&group.keys[*b]));
        let write = if write == Level::One && !group.blind {
            Level::Quorum
        } else {
            write
        };
        GroupRequest {
            group,
            order,
            gated: 0,
            token,
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

    /// The transaction.
    pub fn group(&self) -> &Group {
        &self.group
    }

    /// Whether the client has its reply.
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// Whether nothing more will happen.
    pub fn is_done(&self) -> bool {
        self.replied && (self.waiting.is_empty() || matches!(self.phase, Phase::Idle))
    }

    /// The replicas that did not store the write, and how, once done.
    pub fn targets(&self) -> &[(MemberIdx, TargetResult)] {
        &self.targets
    }

    fn finish(
        &mut self,
        out: &mut Out,
        result: Result<Outcome, NoReplicas>,
        group: Vec<(Bytes, State)>,
    ) {
        if !self.replied {
            self.replied = true;
            out.reply = Some(Finished {
                result,
                state: None,
                group,
            });
        }
    }

    fn fail(&mut self, out: &mut Out) {
        self.phase = Phase::Idle;
        self.finish(out, Err(NoReplicas { write: true }), Vec::new());
    }

    /// Starts the transaction.
    pub fn start(&mut self, env: &impl Env, out: &mut Out) {
        self.deadline = env.ctx().now + env.timing().coordinator_ms();
        match self.origin {
            Origin::Forwarded { .. } => self.start_write(env, out),
            Origin::Client => self.route(env, None, out),
        }
        self.arm(out);
    }

    fn arm(&self, out: &mut Out) {
        if !self.is_done() {
            out.wake_at = Some(self.deadline);
        }
    }

    /// Runs the transaction here if this node coordinates the slot, else forwards it to the
    /// first live replica (leaving out `failed`, whose link just failed).
    fn route(&mut self, env: &impl Env, failed: Option<MemberIdx>, out: &mut Out) {
        let prefs = env.prefs(self.group.slot);
        let me = env.me();
        let first = prefs
            .iter()
            .copied()
            .find(|&m| Some(m) != failed && (m == me || env.live(m)));
        match first {
            None => self.fail(out),
            // A blind transaction needs no gate: any replica writes it, as a plain SET.
            Some(_) if self.group.blind && prefs.contains(&me) => self.start_write(env, out),
            Some(m) if m == me => self.start_write(env, out),
            Some(m) => {
                self.counts.forwards += 1;
                let want_state = prefs.contains(&me);
                self.round += 1;
                self.waiting.clear();
                self.waiting.push(m);
                self.phase = Phase::Forward {
                    to: m,
                    retried: failed.is_some(),
                };
                self.deadline = env.ctx().now + env.timing().forward_ms();
                let body = wire::to_body(&Request::ExecGroup {
                    keys: self.group.key_refs(),
                    ops: &self.group.ops,
                    expect: self.group.expect.clone(),
                    write: self.write,
                    want_state,
                    external: self.group.external,
                });
                out.sends.push(Send {
                    call: Call::Encoded(body),
                    to: vec![(m, Some(tag(self.round, m)))],
                });
            }
        }
    }

    fn start_write(&mut self, env: &impl Env, out: &mut Out) {
        self.counts.write_attempts += 1;
        self.counts.groups += 1;
        self.counts.programs += u64::from(self.group.external);
        if self.group.blind && env.prefs(self.group.slot).contains(&env.me()) {
            self.start_blind(env, out);
        } else if self.enter_gates(env) {
            self.start_prepare(env, 0, out);
        }
    }

    /// A blind transaction at a replica: its commands run over what this node holds (only
    /// their keyspace events depend on it), stamped with a fresh version, and the results go
    /// to every replica in one message, stored all or none (a replica that holds or has
    /// promised something newer refuses it, and it is stamped above that and sent again).
    fn start_blind(&mut self, env: &impl Env, out: &mut Out) {
        let ctx = env.ctx();
        let store = env.store();
        let mut version = store.new_version(ctx.now);
        let held: Vec<State> = self.group.keys.iter().map(|k| store.fetch(k)).collect();
        let run = run_ops(&self.group, &held, &ctx, version);
        let Run {
            outcome,
            next,
            events,
        } = run;
        let mut entries: Vec<(Bytes, State)> = next
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| Some((self.group.keys[i].clone(), s?)))
            .collect();
        let mut restamps = 0;
        loop {
            match store.offer_group(&entries, &ctx) {
                Offered::Stored | Offered::Duplicate => break,
                Offered::Refused(v) if restamps < MAX_RESTAMPS => {
                    // Something newer is held or promised here: stamp above it.
                    restamps += 1;
                    self.counts.restamps += 1;
                    store.clock().observe(v.hlc);
                    version = store.new_version(ctx.now);
                    restamp_all(&mut entries, version);
                }
                Offered::Refused(_) => {
                    self.fail(out);
                    return;
                }
            }
        }
        self.start_accept(env, outcome, entries, true, events, out);
        if let Phase::Accept { blind, .. } = &mut self.phase {
            *blind = true;
        }
    }

    /// Takes the gates of the keys not held yet, in order; false if it must wait for one
    /// ([`GroupRequest::on_wake`] goes on).
    fn enter_gates(&mut self, env: &impl Env) -> bool {
        while self.gated < self.order.len() {
            let key = &self.group.keys[self.order[self.gated]];
            if !env.gate().enter(key, self.token) {
                self.phase = Phase::Queued;
                return false;
            }
            self.gated += 1;
        }
        true
    }

    /// Leaves every gate held or queued for, waking the next round on each key.
    fn release(&mut self, env: &impl Env, out: &mut Out) {
        let queued = matches!(self.phase, Phase::Queued) && self.gated < self.order.len();
        let upto = self.gated + usize::from(queued);
        for &i in &self.order[..upto] {
            if let Some(next) = env.gate().leave(&self.group.keys[i], self.token) {
                out.wake.push(next);
            }
        }
        self.gated = 0;
    }

    /// Its turn at the gate it waited for.
    pub fn on_wake(&mut self, env: &impl Env, out: &mut Out) {
        if matches!(self.phase, Phase::Queued) {
            self.gated += 1;
            if self.enter_gates(env) {
                self.start_prepare(env, 0, out);
            }
            self.arm(out);
        }
    }

    fn start_prepare(&mut self, env: &impl Env, tries: u8, out: &mut Out) {
        let ctx = env.ctx();
        let store = env.store();
        let ballot = store.new_version(ctx.now);
        let slot = self.group.slot;
        let prefs = env.prefs(slot);
        let me = env.me();
        let mut tally = Tally::for_level(self.write, prefs.len(), false);
        let mut newest = vec![State::Missing; self.group.keys.len()];
        let mut answers = 0;
        if prefs.contains(&me) && env.synced(slot) {
            match store.prepare_group(
                &self.group.key_refs(),
                ballot,
                ctx.now,
                env.timing().promise_ms(),
            ) {
                Ok(s) => {
                    tally.ok();
                    newest = s;
                    answers = 1;
                }
                // Cannot happen with a ballot from this store's own clock.
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
        let to = self.ask_others(env.prefs(slot), me);
        let body = wire::to_body(&Request::PrepareGroup {
            keys: self.group.key_refs(),
            ballot,
        });
        out.sends.push(Send {
            call: Call::Encoded(body),
            to,
        });
    }

    fn ask_others(&mut self, prefs: &[MemberIdx], me: MemberIdx) -> Vec<(MemberIdx, Option<u64>)> {
        self.waiting.ask(self.round, prefs, me)
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
                self.fail(out);
                true
            }
            Some(true) => {
                let (ballot, tries, mixed) = (*ballot, *tries, *mixed);
                let newest = newest.clone();
                let ctx = env.ctx();
                let live = |s: &State| match s {
                    State::Live {
                        version, expire_at, ..
                    } if *expire_at == 0 || *expire_at > ctx.now => Some(*version),
                    _ => None,
                };
                if self
                    .group
                    .expect
                    .iter()
                    .any(|&(i, v)| live(&newest[usize::from(i)]) != v)
                {
                    // A watched key changed since WATCH: nothing runs.
                    self.release(env, out);
                    self.phase = Phase::Idle;
                    self.finish(out, Ok(Outcome::Changed), Vec::new());
                    return true;
                }
                if self.group.external {
                    self.phase = Phase::Compute {
                        ballot,
                        newest: newest.clone(),
                        tries,
                        mixed,
                    };
                    out.compute = Some(Compute {
                        program: self.group.ops.clone(),
                        keys: self.group.keys.clone(),
                        states: newest,
                        ballot,
                    });
                    return true;
                }
                let run = run_ops(&self.group, &newest, &ctx, ballot);
                self.write(env, ballot, tries, mixed, &newest, run, out);
                true
            }
        }
    }

    /// The driver ran the program over the states of the prepare round: its writes go to the
    /// replicas as the commands' would (a result that names a key out of range fails it).
    pub fn on_computed(&mut self, env: &impl Env, c: Computed, out: &mut Out) {
        let Phase::Compute {
            ballot,
            newest,
            tries,
            mixed,
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        let n = self.group.keys.len();
        let mut next = vec![None; n];
        for (i, state) in c.writes {
            match next.get_mut(usize::from(i)) {
                Some(slot) => *slot = stamped(state, ballot),
                None => {
                    self.release(env, out);
                    self.fail(out);
                    return;
                }
            }
        }
        let events = c
            .events
            .into_iter()
            .filter_map(|(i, e)| Some((self.group.keys.get(usize::from(i))?.clone(), e)))
            .collect();
        let run = Run {
            outcome: c.outcome.into(),
            next,
            events,
        };
        self.write(env, ballot, tries, mixed, &newest, run, out);
        self.arm(out);
    }

    /// Writes what the commands computed from `newest` (read by the round of `ballot`): to this
    /// node's copy first (read again if something newer arrived here), then to the others; or
    /// replies at once when nothing changed.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        env: &impl Env,
        ballot: Version,
        tries: u8,
        mixed: bool,
        newest: &[State],
        run: Run,
        out: &mut Out,
    ) {
        let ctx = env.ctx();
        let Run {
            outcome,
            next,
            events,
        } = run;
        // As for one key: what the replies are based on must be on a quorum before them, so a
        // key the replicas disagreed on is written back even if unchanged.
        let mut entries = Vec::new();
        for (i, state) in next.into_iter().enumerate() {
            let state = match state {
                Some(s) => Some(s),
                None if mixed => restamped(&newest[i], ballot),
                None => None,
            };
            if let Some(s) = state {
                entries.push((self.group.keys[i].clone(), s));
            }
        }
        if entries.is_empty() {
            self.release(env, out);
            self.phase = Phase::Idle;
            out.events.extend(events);
            self.finish(out, Ok(outcome), Vec::new());
            return;
        }
        let local = env.prefs(self.group.slot).contains(&env.me());
        if local {
            match env.store().offer_group(&entries, &ctx) {
                Offered::Stored | Offered::Duplicate => {}
                Offered::Refused(_) if tries + 1 < MAX_PREPARES => {
                    self.counts.prepare_retries += 1;
                    self.start_prepare(env, tries + 1, out);
                    return;
                }
                Offered::Refused(_) => {
                    self.release(env, out);
                    self.fail(out);
                    return;
                }
            }
        }
        self.start_accept(env, outcome, entries, local, events, out);
        // The accept is on its way before anything the next round sends: its turn.
        self.release(env, out);
    }

    fn start_accept(
        &mut self,
        env: &impl Env,
        outcome: Outcome,
        entries: Vec<(Bytes, State)>,
        local: bool,
        events: Vec<(Bytes, Events)>,
        out: &mut Out,
    ) {
        let slot = self.group.slot;
        let prefs = env.prefs(slot);
        let me = env.me();
        // A copy on a slot still catching up is kept but not counted (as for one key).
        let local = local && env.synced(slot);
        let mut tally = Tally::for_level(self.write, prefs.len(), local);
        if prefs.contains(&me) && !local {
            tally.failed();
        }
        if local {
            self.counts.write_acks += 1;
        }
        self.round += 1;
        let to = self.ask_others(prefs, me);
        self.counts.replica_fanout += to.len() as u64;
        self.targets.clear();
        let body = wire::to_body(&Request::PutGroup {
            entries: entries.clone(),
        });
        out.sends.push(Send {
            call: Call::Encoded(body),
            to,
        });
        self.phase = Phase::Accept {
            tally,
            outcome,
            kept: entries,
            events,
            blind: false,
        };
        self.settle_accept(out);
    }

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
                let states = if matches!(self.origin, Origin::Forwarded { want_state: true }) {
                    kept.clone()
                } else {
                    Vec::new()
                };
                out.events.extend(events.iter().cloned());
                self.finish(out, Ok(o), states);
            }
            Some(false) if !self.replied => {
                self.finish(out, Err(NoReplicas { write: true }), Vec::new())
            }
            _ => {}
        }
    }

    /// Feeds the answer to the call tagged `t`.
    pub fn on_answer(&mut self, env: &impl Env, t: u64, answer: Answer, out: &mut Out) {
        let (round, from) = untag(t);
        if round != self.round || !self.waiting.remove(from) {
            return;
        }
        let now = || env.ctx().now;
        let reply = match answer {
            Answer::Reply(r) => Some(r),
            Answer::LinkDown => None,
        };
        if !matches!(
            reply,
            Some(
                Response::States(_)
                    | Response::Stored
                    | Response::Refused(_)
                    | Response::Outcome(_)
                    | Response::WrittenGroup { .. }
                    | Response::NoReplicas { .. }
            )
        ) {
            self.counts.transport_errors += 1;
        }
        let n = self.group.keys.len();
        match &mut self.phase {
            Phase::Idle | Phase::Queued | Phase::Compute { .. } => {}
            Phase::Forward { to, retried } => {
                let (to, retried) = (*to, *retried);
                self.phase = Phase::Idle;
                match reply {
                    Some(Response::Outcome(o)) => self.finish(out, Ok(o.into()), Vec::new()),
                    Some(Response::WrittenGroup { outcome, entries }) => {
                        // This node is a replica: it holds the new states before its client
                        // hears back, so the client's next read here sees its writes.
                        let ctx = env.ctx();
                        if entries.iter().all(|(_, s)| plausible(s.version(), ctx.now)) {
                            env.store().offer_group(&entries, &ctx);
                        }
                        self.finish(out, Ok(outcome.into()), Vec::new());
                    }
                    Some(Response::NoReplicas { .. }) => self.fail(out),
                    None if !retried => {
                        // The coordinator's link failed: the next live replica takes over.
                        self.counts.forward_retries += 1;
                        self.route(env, Some(to), out);
                    }
                    _ => self.fail(out),
                }
            }
            Phase::Prepare {
                tally,
                newest,
                tries,
                answers,
                mixed,
                ..
            } => match reply {
                Some(Response::States(states))
                    if states.len() == n
                        && states.iter().all(|s| plausible(s.version(), now())) =>
                {
                    tally.ok();
                    for (held, s) in newest.iter_mut().zip(states) {
                        if *answers > 0 && s.version() != held.version() {
                            *mixed = true;
                        }
                        if s.newer_than(held) {
                            *held = s;
                        }
                    }
                    *answers = answers.saturating_add(1);
                    self.settle_prepare(env, out);
                }
                Some(Response::Refused(v)) if plausible(Some(v), now()) => {
                    env.store().clock().observe(v.hlc);
                    if *tries + 1 < MAX_PREPARES {
                        let tries = *tries + 1;
                        self.counts.prepare_retries += 1;
                        self.start_prepare(env, tries, out);
                    } else {
                        self.release(env, out);
                        self.fail(out);
                    }
                }
                _ => {
                    tally.failed();
                    self.settle_prepare(env, out);
                }
            },
            Phase::Accept {
                tally, kept, blind, ..
            } => {
                let held = kept.first().and_then(|(_, s)| s.version());
                match reply {
                    Some(Response::Stored) => {
                        tally.ok();
                        self.counts.write_acks += 1;
                    }
                    // Only before the reply, as for a blind write: once acknowledged, a newer
                    // version may be a write that follows this one.
                    Some(Response::Refused(v))
                        if *blind
                            && !self.replied
                            && now() < self.deadline
                            && plausible(Some(v), now())
                            && Some(v) > held =>
                    {
                        let store = env.store();
                        self.counts.restamps += 1;
                        store.clock().observe(v.hlc);
                        let version = store.new_version(now());
                        let Phase::Accept {
                            outcome,
                            mut kept,
                            events,
                            ..
                        } = std::mem::replace(&mut self.phase, Phase::Idle)
                        else {
                            unreachable!("in the accept phase")
                        };
                        restamp_all(&mut kept, version);
                        let stored = matches!(
                            store.offer_group(&kept, &env.ctx()),
                            Offered::Stored | Offered::Duplicate
                        );
                        self.start_accept(env, outcome, kept, stored, events, out);
                        if let Phase::Accept { blind, .. } = &mut self.phase {
                            *blind = true;
                        }
                        self.arm(out);
                        return;
                    }
                    Some(Response::Refused(v)) => {
                        tally.failed();
                        self.targets.push((from, TargetResult::Refused(v)));
                    }
                    Some(Response::Syncing) => {
                        tally.failed();
                        self.targets.push((from, TargetResult::Failed));
                    }
                    other => {
                        tally.failed();
                        let how = if other.is_none() {
                            TargetResult::LinkDown
                        } else {
                            TargetResult::Failed
                        };
                        self.targets.push((from, how));
                        for (k, s) in kept.iter() {
                            out.hints.push((from, k.clone(), s.clone()));
                        }
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

    /// The deadline passed: whatever has not answered has failed.
    pub fn on_deadline(&mut self, env: &impl Env, out: &mut Out) {
        if env.ctx().now < self.deadline {
            self.arm(out);
            return;
        }
        let unanswered = self.waiting.take();
        self.counts.transport_errors += unanswered.len() as u64;
        self.counts.timeouts += unanswered.len() as u64;
        self.release(env, out);
        if let Phase::Accept { kept, .. } = &self.phase {
            for m in unanswered {
                self.targets.push((m, TargetResult::TimedOut));
                for (k, s) in kept {
                    out.hints.push((m, k.clone(), s.clone()));
                }
            }
        }
        if !self.replied {
            self.finish(out, Err(NoReplicas { write: true }), Vec::new());
        }
        self.phase = Phase::Idle;
    }
}

impl Machine for GroupRequest {
    fn on_answer(&mut self, env: &impl Env, tag: u64, answer: Answer, out: &mut Out) {
        GroupRequest::on_answer(self, env, tag, answer, out)
    }
    fn on_deadline(&mut self, env: &impl Env, out: &mut Out) {
        GroupRequest::on_deadline(self, env, out)
    }
    fn on_wake(&mut self, env: &impl Env, out: &mut Out) {
        GroupRequest::on_wake(self, env, out)
    }
    fn on_computed(&mut self, env: &impl Env, c: Computed, out: &mut Out) {
        GroupRequest::on_computed(self, env, c, out)
    }
    fn is_done(&self) -> bool {
        GroupRequest::is_done(self)
    }
    fn counts(&self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::guard_bytes;
    use crate::op::Op;

    fn ops(list: &[(u16, Op<'_>)]) -> Bytes {
        let parts: Vec<(u16, Vec<u8>)> = list.iter().map(|(k, op)| (*k, guard_bytes(op))).collect();
        Bytes::from(msg::group_bytes(&parts))
    }

    fn keys(list: &[&'static [u8]]) -> Vec<Bytes> {
        list.iter().map(|k| Bytes::from_static(k)).collect()
    }

    /// A round covers distinct keys of one slot, with commands on them only; anything else is
    /// refused before it starts.
    #[test]
    fn a_group_is_distinct_keys_of_one_slot() {
        let two = keys(&[b"{t}a", b"{t}b"]);
        let incr = ops(&[(0, Op::IncrBy(1)), (1, Op::IncrBy(1))]);
        let g = Group::new(two.clone(), incr.clone(), vec![(1, None)]).unwrap();
        assert_eq!(g.slot(), key_slot(b"{t}a"));
        assert!(!g.is_blind(), "INCR reads its key");
        assert!(
            Group::new(Vec::new(), incr.clone(), vec![]).is_none(),
            "no keys"
        );
        assert!(
            Group::new(keys(&[b"{t}a", b"{t}a"]), incr.clone(), vec![]).is_none(),
            "a key twice"
        );
        assert!(
            Group::new(keys(&[b"{t}a", b"{u}b"]), incr.clone(), vec![]).is_none(),
            "two slots"
        );
        assert!(
            Group::new(two.clone(), incr.clone(), vec![(2, None)]).is_none(),
            "a watch out of range"
        );
        let far = ops(&[(2, Op::IncrBy(1))]);
        assert!(
            Group::new(two.clone(), far, vec![]).is_none(),
            "a command out of range"
        );
        assert!(Group::new(two.clone(), Bytes::from_static(b"junk"), vec![]).is_none());
        let nested = ops(&[(0, Op::Version)]);
        assert!(
            Group::new(two.clone(), nested, vec![]).is_none(),
            "a version read"
        );
        // Blind: every key's first command a plain SET, nothing watched.
        let set = ops(&[(0, Op::set(b"1")), (1, Op::set(b"2")), (0, Op::IncrBy(1))]);
        assert!(Group::new(two.clone(), set.clone(), vec![])
            .unwrap()
            .is_blind());
        assert!(!Group::new(two.clone(), set, vec![(0, None)])
            .unwrap()
            .is_blind());
        let half = ops(&[(0, Op::set(b"1")), (1, Op::IncrBy(1))]);
        assert!(!Group::new(two.clone(), half, vec![]).unwrap().is_blind());
        // A program is the driver's: its bytes are not read here.
        let p = Group::external(two, Bytes::from_static(b"script")).unwrap();
        assert!(p.is_external() && !p.is_blind());
    }

    /// The commands run in order over the keys' states, each seeing the ones before it, and
    /// the new states carry the round's ballot.
    #[test]
    fn the_commands_run_in_order_over_the_keys() {
        let g = Group::new(
            keys(&[b"{t}a", b"{t}b"]),
            ops(&[
                (0, Op::set(b"5")),
                (1, Op::IncrBy(2)),
                (0, Op::IncrBy(1)),
                (1, Op::Get),
            ]),
            vec![],
        )
        .unwrap();
        let ballot = Version {
            hlc: 9 << 16,
            origin: 1,
        };
        let held = State::Live {
            value: Bytes::from_static(b"10"),
            expire_at: 0,
            version: Version {
                hlc: 1 << 16,
                origin: 2,
            },
            enc: 0,
        };
        let run = run_ops(
            &g,
            &[State::Missing, held],
            &crate::op::Ctx::at(1_000),
            ballot,
        );
        let Outcome::Batch(outs, _) = run.outcome else {
            panic!("a batch outcome");
        };
        assert_eq!(
            outs,
            vec![
                Outcome::Ok,
                Outcome::Int(12),
                Outcome::Int(6),
                Outcome::Value(Bytes::from_static(b"12"))
            ]
        );
        for (s, want) in run.next.iter().zip([&b"6"[..], b"12"]) {
            let Some(State::Live { value, version, .. }) = s else {
                panic!("both keys written");
            };
            assert_eq!((&value[..], *version), (want, ballot));
        }
        // Each command's keyspace events, in order (a GET raises none).
        let events: Vec<(&[u8], Vec<&str>)> = run
            .events
            .iter()
            .map(|(k, e)| (&k[..], e.iter().map(|(_, name)| name).collect()))
            .collect();
        assert_eq!(
            events,
            vec![
                (&b"{t}a"[..], vec!["new", "set"]),
                (&b"{t}b"[..], vec!["incrby"]),
                (&b"{t}a"[..], vec!["incrby"]),
            ]
        );
    }
}
