//! A deterministic network simulator for sans-IO state machines (ARCHITECTURE §8, STYLE #9).
//!
//! N [`Machine`]s, a virtual clock in milliseconds, one ordered event queue (message deliveries
//! and timers), a seeded RNG for delays and drops, and faults: [`Sim::drop`] (lose a share of
//! messages on a link), [`Sim::cut`] (partition two nodes), [`Sim::isolate`], per-link delay, and
//! [`Sim::recover`]. Links are FIFO (as TCP is). The same seed gives the same run, event for event, so a failing scenario
//! reproduces from the seed it prints. The cluster's coordinator, hinted handoff and membership
//! plug in as `Machine`s; nothing here knows about them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A node's index in the simulation.
pub type NodeId = usize;

/// Effects a machine asks for while handling an input; the simulator (or, in production, the
/// IO driver) carries them out after the call.
#[derive(Debug)]
pub struct Outbox<M, T> {
    /// Messages to send: (destination, message).
    pub sends: Vec<(NodeId, M)>,
    /// Timers to set: (delay in ms, timer value handed back when it fires).
    pub timers: Vec<(u64, T)>,
}

impl<M, T> Default for Outbox<M, T> {
    fn default() -> Self {
        Outbox {
            sends: Vec::new(),
            timers: Vec::new(),
        }
    }
}

impl<M, T> Outbox<M, T> {
    /// Queues a message to `to`.
    pub fn send(&mut self, to: NodeId, msg: M) {
        self.sends.push((to, msg));
    }

    /// Asks for `timer` back after `after_ms`.
    pub fn schedule(&mut self, after_ms: u64, timer: T) {
        self.timers.push((after_ms, timer));
    }
}

/// A sans-IO state machine: inputs in, effects out through the [`Outbox`].
pub trait Machine {
    /// Messages between machines.
    type Msg: Clone + std::fmt::Debug;
    /// Timer values.
    type Timer: Clone + std::fmt::Debug;

    /// A message from `from` arrives at virtual time `now`.
    fn handle_message(
        &mut self,
        from: NodeId,
        msg: Self::Msg,
        now: u64,
        out: &mut Outbox<Self::Msg, Self::Timer>,
    );

    /// A timer this machine scheduled fires at `now`.
    fn handle_timer(
        &mut self,
        timer: Self::Timer,
        now: u64,
        out: &mut Outbox<Self::Msg, Self::Timer>,
    );
}

#[derive(Debug, Clone)]
enum Event<M, T> {
    Deliver { from: NodeId, to: NodeId, msg: M },
    Timer { node: NodeId, timer: T },
}

/// Counters of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost to drops, cuts or isolation.
    pub dropped: u64,
    /// Timers fired.
    pub timers: u64,
}

/// The simulation.
pub struct Sim<N: Machine> {
    /// The machines, indexed by [`NodeId`].
    pub nodes: Vec<N>,
    now: u64,
    seed: u64,
    rng: SmallRng,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event<N::Msg, N::Timer>>,
    delay: (u64, u64),
    drops: HashMap<(NodeId, NodeId), f64>,
    cuts: HashSet<(NodeId, NodeId)>,
    /// Latest delivery time per link: links are FIFO, as TCP is (a message never overtakes an
    /// earlier one on the same link).
    last: HashMap<(NodeId, NodeId), u64>,
    /// Counters.
    pub stats: SimStats,
}

impl<N: Machine> Sim<N> {
    /// A simulation of `nodes` at time 0, message delays of 1 ms, no faults.
    pub fn new(nodes: Vec<N>, seed: u64) -> Sim<N> {
        Sim {
            nodes,
            now: 0,
            seed,
            rng: SmallRng::seed_from_u64(seed),
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            delay: (1, 1),
            drops: HashMap::new(),
            cuts: HashSet::new(),
            last: HashMap::new(),
            stats: SimStats::default(),
        }
    }

    /// The seed (print it when a scenario fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Message delays are drawn uniformly from `min..=max` ms.
    pub fn set_delay(&mut self, min: u64, max: u64) {
        self.delay = (min, max.max(min));
    }

    /// Loses a share `p` of the messages from `from` to `to`.
    pub fn drop(&mut self, from: NodeId, to: NodeId, p: f64) {
        self.drops.insert((from, to), p);
    }

    /// Partitions `a` and `b` from each other (both directions).
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cuts.insert((a, b));
        self.cuts.insert((b, a));
    }

    /// Cuts `n` from every other node.
    pub fn isolate(&mut self, n: NodeId) {
        for other in 0..self.nodes.len() {
            if other != n {
                self.cut(n, other);
            }
        }
    }

    /// Heals the cuts and drops of node `n` only.
    pub fn heal(&mut self, n: NodeId) {
        self.cuts.retain(|(a, b)| *a != n && *b != n);
        self.drops.retain(|(a, b), _| *a != n && *b != n);
    }

    /// Drop shares currently set, by link.
    pub fn drops(&self) -> &HashMap<(NodeId, NodeId), f64> {
        &self.drops
    }

    /// Heals every fault (delays stay as set).
    pub fn recover(&mut self) {
        self.drops.clear();
        self.cuts.clear();
    }

    fn push(&mut self, at: u64, ev: Event<N::Msg, N::Timer>) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn apply(&mut self, from: NodeId, out: Outbox<N::Msg, N::Timer>) {
        for (to, msg) in out.sends {
            let lost = self.cuts.contains(&(from, to))
                || self
                    .drops
                    .get(&(from, to))
                    .is_some_and(|p| self.rng.random_bool(p.clamp(0.0, 1.0)));
            if lost || to >= self.nodes.len() {
                self.stats.dropped += 1;
                continue;
            }
            let d = self.rng.random_range(self.delay.0..=self.delay.1);
            let at = (self.now + d).max(self.last.get(&(from, to)).copied().unwrap_or(0));
            self.last.insert((from, to), at);
            self.push(at, Event::Deliver { from, to, msg });
        }
        for (after, timer) in out.timers {
            self.push(self.now + after, Event::Timer { node: from, timer });
        }
    }

    /// Runs `f` against node `n` now, as an input from outside (a client request), and carries
    /// out its effects.
    pub fn input<R>(
        &mut self,
        n: NodeId,
        f: impl FnOnce(&mut N, u64, &mut Outbox<N::Msg, N::Timer>) -> R,
    ) -> R {
        let mut out = Outbox::default();
        let r = f(&mut self.nodes[n], self.now, &mut out);
        self.apply(n, out);
        r
    }

    /// Processes the next event; false if none is left.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.queue.pop() else {
            return false;
        };
        let ev = self.events.remove(&seq).expect("queued event");
        self.now = self.now.max(at);
        let mut out = Outbox::default();
        let node = match ev {
            Event::Deliver { from, to, msg } => {
                self.stats.delivered += 1;
                self.nodes[to].handle_message(from, msg, self.now, &mut out);
                to
            }
            Event::Timer { node, timer } => {
                self.stats.timers += 1;
                self.nodes[node].handle_timer(timer, self.now, &mut out);
                node
            }
        };
        self.apply(node, out);
        true
    }

    /// Runs until no event is left or `max_steps` were processed; returns the steps taken.
    pub fn run_until_quiet(&mut self, max_steps: usize) -> usize {
        let mut n = 0;
        while n < max_steps && self.step() {
            n += 1;
        }
        n
    }

    /// Runs every event due up to virtual time `t` (bounded by `max_steps`), then sets the clock
    /// to `t`.
    pub fn run_until(&mut self, t: u64, max_steps: usize) {
        let mut n = 0;
        while n < max_steps {
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at <= t => {
                    self.step();
                    n += 1;
                }
                _ => break,
            }
        }
        self.now = self.now.max(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flooding machine: remembers values and forwards each new one to every peer; a timer
    /// re-broadcasts everything it knows (anti-entropy in miniature).
    #[derive(Debug, Default)]
    struct Flood {
        peers: usize,
        me: NodeId,
        known: Vec<u32>,
        log: Vec<(u64, NodeId, u32)>,
    }

    impl Machine for Flood {
        type Msg = u32;
        type Timer = ();

        fn handle_message(&mut self, from: NodeId, v: u32, now: u64, out: &mut Outbox<u32, ()>) {
            self.log.push((now, from, v));
            if !self.known.contains(&v) {
                self.known.push(v);
                for p in (0..self.peers).filter(|p| *p != self.me) {
                    out.send(p, v);
                }
            }
        }

        fn handle_timer(&mut self, _: (), _now: u64, out: &mut Outbox<u32, ()>) {
            for p in (0..self.peers).filter(|p| *p != self.me) {
                for v in &self.known {
                    out.send(p, *v);
                }
            }
        }
    }

    fn sim(n: usize, seed: u64) -> Sim<Flood> {
        Sim::new(
            (0..n)
                .map(|me| Flood {
                    peers: n,
                    me,
                    ..Default::default()
                })
                .collect(),
            seed,
        )
    }

    fn originate(s: &mut Sim<Flood>, node: NodeId, v: u32) {
        s.input(node, |m, _, out| {
            m.known.push(v);
            for p in (0..m.peers).filter(|p| *p != m.me) {
                out.send(p, v);
            }
        });
    }

    #[test]
    fn delivers_to_everyone_without_faults() {
        let mut s = sim(5, 1);
        originate(&mut s, 0, 7);
        s.run_until_quiet(10_000);
        assert!(s.nodes.iter().all(|n| n.known == [7]));
        assert_eq!(s.stats.dropped, 0);
    }

    #[test]
    fn isolation_and_recovery() {
        let mut s = sim(4, 2);
        s.isolate(3);
        originate(&mut s, 0, 1);
        s.run_until_quiet(10_000);
        assert!(
            s.nodes[3].known.is_empty(),
            "an isolated node hears nothing"
        );
        assert!(s.stats.dropped > 0);
        s.recover();
        s.input(0, |_, _, out| out.schedule(10, ()));
        s.run_until_quiet(10_000);
        assert_eq!(s.nodes[3].known, [1], "anti-entropy after recovery");
    }

    #[test]
    fn same_seed_same_run_and_drops_follow_the_rate() {
        let run = |seed| {
            let mut s = sim(6, seed);
            s.set_delay(1, 20);
            for a in 0..6 {
                for b in 0..6 {
                    s.drop(a, b, 0.5);
                }
            }
            for v in 0..20 {
                originate(&mut s, v % 6, v as u32);
            }
            s.run_until_quiet(100_000);
            let logs: Vec<_> = s.nodes.iter().map(|n| n.log.clone()).collect();
            (logs, s.stats)
        };
        let (a, sa) = run(42);
        let (b, sb) = run(42);
        assert_eq!(a, b, "seed 42 reproduces event for event");
        assert_eq!(sa, sb);
        let share = sa.dropped as f64 / (sa.dropped + sa.delivered) as f64;
        assert!(
            (0.4..0.6).contains(&share),
            "drop share {share:.2} at p = 0.5"
        );
        let (c, _) = run(43);
        assert_ne!(a, c, "another seed, another run");
    }

    #[test]
    fn time_advances_with_delays_and_timers() {
        let mut s = sim(2, 3);
        s.set_delay(5, 5);
        originate(&mut s, 0, 9);
        s.input(1, |_, _, out| out.schedule(100, ()));
        s.run_until(50, 1000);
        assert_eq!(s.now(), 50);
        assert_eq!(s.nodes[1].log, [(5, 0, 9)]);
        s.run_until_quiet(1000);
        assert!(s.now() >= 100);
        assert_eq!(s.stats.timers, 1);
    }
}
