//! The coordinator's decisions, as pure functions and small state machines that both the server
//! (`src/cluster`) and the simulator drive: where a keyed operation runs ([`plan`]), when enough
//! replicas have answered ([`Tally`]), which answer is newest and which replicas are stale
//! ([`ReadTally`]), and what a read answers from a replica's state ([`outcome_of`]).
//!
//! ## Rules (ARCHITECTURE §4)
//! - Reads at ONE run locally when this node is a replica, else on the first live replica.
//! - Reads at QUORUM/ALL are coordinated where they arrive: ask the replicas in parallel, answer
//!   from the newest state, repair the stale ones.
//! - Read-modify-write operations run on the first live replica, so that they serialize there.
//!   Blind writes (a plain SET) run where they arrive when that node is a replica. DEL is not
//!   blind: its reply (how many keys it removed) depends on what the coordinator holds.
//! - The coordinator applies the operation to its own copy, then sends the resulting state to the
//!   other replicas and answers once the write level has acknowledged (its own copy counts).

use crate::entry::{EncodingHint, Entry};
use crate::msg::{Level, State};
use crate::notify::Change;
use crate::op::{apply, Ctx, Effect, Op, Outcome};
use crate::ring::MemberIdx;
use crate::version::Version;

/// Where a keyed operation runs, seen from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A read at ONE on a replica: read the local copy.
    LocalRead,
    /// A read at QUORUM/ALL: ask the replicas from here.
    FanOutRead,
    /// A write this node coordinates: apply here, replicate to the other replicas.
    Coordinate,
    /// Send the operation to this member, which coordinates it.
    Forward(MemberIdx),
    /// No replica of the slot is reachable.
    Unavailable,
}

/// Decides where `op` on a slot with preference list `prefs` runs, from node `me`, given which
/// members it believes live.
pub fn plan(
    op: &Op<'_>,
    prefs: &[MemberIdx],
    me: MemberIdx,
    read: Level,
    live: impl Fn(MemberIdx) -> bool,
) -> Plan {
    if prefs.is_empty() {
        // No ring yet (a node that has not joined): nobody answers for the key.
        return Plan::Unavailable;
    }
    let replica = prefs.contains(&me);
    let first_live = prefs.iter().copied().find(|&m| m == me || live(m));
    if op.is_read_only() {
        if read != Level::One {
            return Plan::FanOutRead;
        }
        if replica {
            return Plan::LocalRead;
        }
    } else if replica && op.is_blind() {
        return Plan::Coordinate;
    }
    match first_live {
        Some(m) if m == me => {
            if op.is_read_only() {
                Plan::LocalRead
            } else {
                Plan::Coordinate
            }
        }
        Some(m) => Plan::Forward(m),
        None => Plan::Unavailable,
    }
}

/// Counts answers against a consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    need: usize,
    ok: usize,
    outstanding: usize,
}

impl Tally {
    /// `need` successes are required; `ok` are already in (the coordinator's own copy) and
    /// `outstanding` more may still come.
    pub fn new(need: usize, ok: usize, outstanding: usize) -> Tally {
        Tally {
            need,
            ok,
            outstanding,
        }
    }

    /// For `level` over `replicas` copies, the local one already counted if `local`.
    pub fn for_level(level: Level, replicas: usize, local: bool) -> Tally {
        let ok = usize::from(local).min(replicas);
        Tally::new(level.required(replicas), ok, replicas - ok)
    }

    /// One more success.
    pub fn ok(&mut self) {
        self.ok += 1;
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// One failure (error, timeout, replica down).
    pub fn failed(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// `Some(true)` once enough succeeded, `Some(false)` once that can no longer happen, `None`
    /// while undecided.
    pub fn verdict(&self) -> Option<bool> {
        if self.ok >= self.need {
            Some(true)
        } else if self.ok + self.outstanding < self.need {
            Some(false)
        } else {
            None
        }
    }

    /// Successes so far.
    pub fn successes(&self) -> usize {
        self.ok
    }

    /// Successes still needed.
    pub fn missing(&self) -> usize {
        self.need.saturating_sub(self.ok)
    }
}

/// A QUORUM/ALL read in progress: the answers so far and the newest state among them.
#[derive(Debug, Clone)]
pub struct ReadTally<N> {
    /// Answers counted against the level.
    pub tally: Tally,
    newest: State,
    seen: Vec<(N, Option<crate::version::Version>)>,
}

impl<N: Copy + PartialEq> ReadTally<N> {
    /// A read at `level` over `replicas` copies.
    pub fn new(level: Level, replicas: usize) -> ReadTally<N> {
        ReadTally {
            tally: Tally::for_level(level, replicas, false),
            newest: State::Missing,
            seen: Vec::new(),
        }
    }

    /// Replica `from` answered with `state`.
    pub fn answer(&mut self, from: N, state: State) {
        self.tally.ok();
        self.seen.push((from, state.version()));
        if state.newer_than(&self.newest) {
            self.newest = state;
        }
    }

    /// Replica `from` did not answer.
    pub fn failed(&mut self) {
        self.tally.failed();
    }

    /// The newest state seen.
    pub fn newest(&self) -> &State {
        &self.newest
    }

    /// Replicas that answered with an older state than the newest (to repair).
    pub fn stale(&self) -> Vec<N> {
        let newest = self.newest.version();
        self.seen
            .iter()
            .filter(|(_, v)| *v < newest)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// What a read-only `op` answers when the key's newest state is `state` (expiry applied at
/// `ctx.now`): the same pure semantics as on the local store.
pub fn outcome_of(op: &Op<'_>, key: &[u8], state: &State, ctx: &Ctx) -> Outcome {
    // A read-only operation changes nothing, so no state is built.
    state_after(op, key, state, ctx, Version::default()).0
}

/// Runs `op` against the key's newest known `state` (expiry applied at `ctx.now`) without a
/// store: returns the outcome and, if the operation changes the key, its new state stamped with
/// `version`. A read-modify-write coordinated at QUORUM/ALL computes its result this way from
/// what its read round found, so that the value it proposes depends only on that round.
pub fn state_after(
    op: &Op<'_>,
    key: &[u8],
    state: &State,
    ctx: &Ctx,
    version: Version,
) -> (Outcome, Option<State>) {
    let of = |e: &Entry| State::Live {
        value: bytes::Bytes::copy_from_slice(e.value()),
        expire_at: e.expire_at(),
        version,
        enc: e.enc().bits(),
    };
    match state {
        State::Live {
            value,
            expire_at,
            enc,
            version: held,
        } if *expire_at == 0 || *expire_at > ctx.now => {
            let mut e = Entry::new(
                key,
                value,
                *expire_at,
                ctx.initial_access(),
                EncodingHint::from_bits(*enc),
            );
            // The version it holds, for the operations that look at it (WATCH's).
            e.set_version(*held);
            let (effect, out) = apply(op, key, Some(&mut e), ctx);
            let next = match effect {
                Effect::None => None,
                Effect::Modified => Some(of(&e)),
                Effect::Created(n) => Some(of(&n)),
                Effect::Deleted => Some(State::Dead(version)),
            };
            (out, next)
        }
        _ => {
            let (effect, out) = apply(op, key, None, ctx);
            let next = match effect {
                Effect::None | Effect::Modified => None,
                Effect::Created(n) => Some(of(&n)),
                // Deleting a missing key changes nothing.
                Effect::Deleted => None,
            };
            (out, next)
        }
    }
}

/// What a write that turned `before` into `after` (`None`: left it) did to the key, for
/// keyspace notifications.
pub fn change_of(before: &State, after: Option<&State>, now: u64) -> Option<Change> {
    let was_live =
        matches!(before, State::Live { expire_at, .. } if *expire_at == 0 || *expire_at > now);
    match after? {
        State::Live { .. } if was_live => Some(Change::Modified),
        State::Live { .. } => Some(Change::Created),
        State::Dead(_) if was_live => Some(Change::Deleted),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ExpiryChange, SetCond};
    use crate::version::Version;
    use bytes::Bytes;

    const PREFS: [MemberIdx; 3] = [2, 0, 1];

    fn set(cond: SetCond) -> Op<'static> {
        Op::Set {
            value: b"v",
            cond,
            expiry: ExpiryChange::Clear,
            get: false,
        }
    }

    #[test]
    fn plans() {
        let all = |_| true;
        // Without a ring, nothing is served, not even from this node's memory.
        assert_eq!(plan(&Op::Get, &[], 0, Level::One, all), Plan::Unavailable);
        assert_eq!(
            plan(&Op::Get, &[], 0, Level::Quorum, all),
            Plan::Unavailable
        );
        assert_eq!(
            plan(&set(SetCond::Always), &[], 0, Level::One, all),
            Plan::Unavailable
        );
        // Reads at ONE stay local on a replica; elsewhere they go to the first live replica.
        assert_eq!(plan(&Op::Get, &PREFS, 0, Level::One, all), Plan::LocalRead);
        assert_eq!(plan(&Op::Get, &PREFS, 5, Level::One, all), Plan::Forward(2));
        assert_eq!(
            plan(&Op::Get, &PREFS, 5, Level::Quorum, all),
            Plan::FanOutRead
        );
        // Blind writes are coordinated by any replica; read-modify-write by the first live one.
        assert_eq!(
            plan(&set(SetCond::Always), &PREFS, 1, Level::One, all),
            Plan::Coordinate
        );
        assert_eq!(
            plan(&set(SetCond::IfMissing), &PREFS, 1, Level::One, all),
            Plan::Forward(2)
        );
        assert_eq!(
            plan(&Op::IncrBy(1), &PREFS, 2, Level::One, all),
            Plan::Coordinate
        );
        // The primary is down: the next live replica coordinates.
        let not2 = |m| m != 2;
        assert_eq!(
            plan(&Op::IncrBy(1), &PREFS, 1, Level::One, not2),
            Plan::Forward(0)
        );
        assert_eq!(
            plan(&Op::IncrBy(1), &PREFS, 0, Level::One, not2),
            Plan::Coordinate
        );
        assert_eq!(
            plan(&Op::IncrBy(1), &PREFS, 7, Level::One, |_| false),
            Plan::Unavailable
        );
    }

    #[test]
    fn tallies() {
        let mut t = Tally::for_level(Level::Quorum, 3, true);
        assert_eq!(t.verdict(), None);
        t.failed();
        assert_eq!(t.verdict(), None);
        t.ok();
        assert_eq!(t.verdict(), Some(true));
        let mut t = Tally::for_level(Level::All, 3, true);
        t.ok();
        t.failed();
        assert_eq!(t.verdict(), Some(false));
        assert_eq!(Tally::for_level(Level::One, 3, true).verdict(), Some(true));
    }

    #[test]
    fn reads_pick_the_newest_and_name_the_stale() {
        let v = |hlc| Version { hlc, origin: 0 };
        let live = |x: &'static str, hlc| State::Live {
            value: Bytes::from_static(x.as_bytes()),
            expire_at: 0,
            version: v(hlc),
            enc: 0,
        };
        let mut r: ReadTally<u16> = ReadTally::new(Level::All, 3);
        r.answer(0, live("old", 1));
        r.answer(1, live("new", 2));
        assert_eq!(r.tally.verdict(), None);
        r.answer(2, State::Missing);
        assert_eq!(r.tally.verdict(), Some(true));
        assert_eq!(r.newest(), &live("new", 2));
        assert_eq!(r.stale(), vec![0, 2]);
        let ctx = Ctx::at(10);
        assert_eq!(
            outcome_of(&Op::Get, b"k", r.newest(), &ctx),
            Outcome::Value("new".into())
        );
        assert_eq!(
            outcome_of(&Op::Strlen, b"k", r.newest(), &ctx),
            Outcome::Int(3)
        );
        assert_eq!(
            outcome_of(&Op::Get, b"k", &State::Dead(v(3)), &ctx),
            Outcome::Nil
        );
        let expired = State::Live {
            value: Bytes::from_static(b"x"),
            expire_at: 5,
            version: v(1),
            enc: 0,
        };
        assert_eq!(
            outcome_of(&Op::Exists, b"k", &expired, &ctx),
            Outcome::Int(0)
        );
    }
}
