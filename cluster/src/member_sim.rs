//! Membership scenarios in the deterministic simulator, with fixed seeds: the [`Membership`]
//! machine of every node, datagrams through [`Sim`] (drops, cuts, delays), timers in virtual
//! time. The same machine runs in production (`src/cluster/swim.rs`).

use std::collections::HashMap;

use bytes::Bytes;
use foca::Timer;

use crate::member::{Ident, MemberEvent, MemberSettings, MemberState, Membership};
use crate::sim::{Machine, NodeId, Outbox, Sim};

#[derive(Debug, Clone)]
enum T {
    Swim(Timer<Ident>),
    Tick(u64),
}

struct Node {
    m: Membership,
    addrs: HashMap<String, NodeId>,
    dead: bool,
    /// Generation of the node (a restarted node ignores its predecessor's timers).
    life: u64,
    events: Vec<(u64, MemberEvent)>,
}

fn addr(i: usize) -> String {
    format!("10.0.0.{i}:7000")
}

fn ident(i: usize, gen: u64) -> Ident {
    Ident {
        id: format!("node-{i}"),
        addr: addr(i),
        client: String::new(),
        gen,
        flags: 0,
    }
}

impl Node {
    fn flush(&mut self, now: u64, out: &mut Outbox<Bytes, T>) {
        for (to, data) in self.m.take_sends() {
            if let Some(&n) = self.addrs.get(&to) {
                out.send(n, data);
            }
        }
        for (after, t) in self.m.take_timers() {
            out.schedule(after, T::Swim(t));
        }
        for e in self.m.take_events() {
            self.events.push((now, e));
        }
    }
}

impl Machine for Node {
    type Msg = Bytes;
    type Timer = T;

    fn handle_message(&mut self, _from: NodeId, msg: Bytes, now: u64, out: &mut Outbox<Bytes, T>) {
        if self.dead {
            return;
        }
        self.m.on_datagram(now, &msg);
        self.flush(now, out);
    }

    fn handle_timer(&mut self, t: T, now: u64, out: &mut Outbox<Bytes, T>) {
        if self.dead {
            return;
        }
        match t {
            T::Swim(t) => self.m.on_timer(now, t),
            T::Tick(life) => {
                if life != self.life {
                    return;
                }
                let next = self.m.tick(now);
                out.schedule(next.saturating_sub(now).max(1), T::Tick(life));
            }
        }
        self.flush(now, out);
    }
}

fn settings() -> MemberSettings {
    MemberSettings {
        probe_interval_ms: 1000,
        probe_timeout_ms: 500,
        indirect_probes: 3,
        suspect_timeout_ms: 4000,
        remove_after_ms: 60_000,
        announce_ms: 1000,
    }
}

fn node(i: usize, n: usize, gen: u64, seeds: &[usize], s: MemberSettings, now: u64) -> Node {
    let seeds: Vec<String> = seeds.iter().map(|&j| addr(j)).collect();
    Node {
        m: Membership::new(
            ident(i, gen),
            &seeds,
            s,
            0xfeed ^ (i as u64) ^ (gen << 8),
            now,
        ),
        addrs: (0..n).map(|j| (addr(j), j)).collect(),
        dead: false,
        life: gen,
        events: Vec::new(),
    }
}

/// `n` nodes that all name node 0 as their seed (node 0 names node 1), started.
fn cluster(n: usize, s: MemberSettings, seed: u64) -> Sim<Node> {
    let nodes = (0..n)
        .map(|i| node(i, n, 1, if i == 0 { &[1] } else { &[0] }, s, 0))
        .collect();
    let mut sim = Sim::new(nodes, seed);
    sim.set_delay(1, 5);
    for i in 0..n {
        start(&mut sim, i);
    }
    sim
}

fn start(sim: &mut Sim<Node>, i: usize) {
    sim.input(i, |node, now, out| {
        node.flush(now, out);
        out.schedule(1, T::Tick(node.life));
    });
}

fn state(sim: &Sim<Node>, at: usize, of: usize) -> Option<MemberState> {
    sim.nodes[at]
        .m
        .member(&format!("node-{of}"))
        .map(|r| r.state)
}

fn converged(sim: &Sim<Node>, members: &[usize]) -> bool {
    let ring: Vec<String> = members.iter().map(|i| format!("node-{i}")).collect();
    members.iter().all(|&a| {
        sim.nodes[a].m.ring() == ring
            && members
                .iter()
                .all(|&b| a == b || state(sim, a, b) == Some(MemberState::Alive))
    })
}

const STEPS: usize = 5_000_000;

/// Runs until `until` holds (checked every 100 ms) or `limit` ms pass; returns the time it held.
fn run_until(sim: &mut Sim<Node>, limit: u64, until: impl Fn(&Sim<Node>) -> bool) -> Option<u64> {
    let end = sim.now() + limit;
    while sim.now() < end {
        if until(sim) {
            return Some(sim.now());
        }
        let t = sim.now() + 100;
        sim.run_until(t, STEPS);
    }
    until(sim).then(|| sim.now())
}

#[test]
fn every_member_finds_the_others_through_one_seed() {
    for seed in 0..5 {
        let mut sim = cluster(6, settings(), seed);
        let all: Vec<usize> = (0..6).collect();
        let t = run_until(&mut sim, 10_000, |s| converged(s, &all));
        assert!(t.is_some(), "seed {seed}: not converged after 10 s");
        // Everyone agrees on the epoch's ring, and nobody was ever suspected.
        for n in &sim.nodes {
            assert!(
                !n.events
                    .iter()
                    .any(|(_, e)| matches!(e, MemberEvent::Suspect(_))),
                "seed {seed}: {:?}",
                n.events
            );
        }
    }
}

#[test]
fn members_start_in_any_order_and_a_late_seed_is_found() {
    // Node 0 (everyone's seed) starts 5 s after the others.
    let s = settings();
    let mut sim = cluster(4, s, 7);
    sim.nodes[0].dead = true;
    sim.run_until(4_900, STEPS);
    // Their only seed is silent: after the join timeout they would start alone.
    assert!((1..4).all(|i| !sim.nodes[i].m.join_timed_out(sim.now())));
    sim.run_until(5_000, STEPS);
    assert!((1..4).all(|i| sim.nodes[i].m.join_timed_out(sim.now())));
    sim.nodes[0] = node(0, 4, 2, &[1], s, sim.now());
    start(&mut sim, 0);
    let all: Vec<usize> = (0..4).collect();
    assert!(run_until(&mut sim, 10_000, |s| converged(s, &all)).is_some());
    assert!((0..4).all(|i| !sim.nodes[i].m.join_timed_out(sim.now())));
}

/// The first time node `at` saw `of` in `state` at or after `from`.
fn first(sim: &Sim<Node>, at: usize, from: u64, want: fn(&MemberEvent) -> bool) -> Option<u64> {
    sim.nodes[at]
        .events
        .iter()
        .find(|(t, e)| *t >= from && want(e))
        .map(|(t, _)| *t)
}

#[test]
fn a_killed_node_is_suspected_after_one_failed_probe_cycle_then_down_after_the_suspect_timeout() {
    let s = settings();
    let n = 5;
    let mut worst_suspect = 0;
    for seed in 0..20 {
        let mut sim = cluster(n, s, seed);
        let all: Vec<usize> = (0..n).collect();
        run_until(&mut sim, 10_000, |s| converged(s, &all)).expect("converged");
        sim.run_until(sim.now() + 3_000, STEPS);
        let killed = 3;
        let at = sim.now();
        sim.nodes[killed].dead = true;
        if seed % 2 == 0 {
            // The crash resets the TCP links to it: its peers' drivers report it at once.
            for i in (0..n).filter(|&i| i != killed) {
                sim.input(i, |node, now, out| {
                    node.m.link_failed(now, "node-3");
                    node.flush(now, out);
                });
            }
        }
        sim.run_until(at + 30_000, STEPS);
        // With the links reset (even seeds), suspected at once. Otherwise (a machine that
        // vanished without a reset) the first suspicion comes from a probe of it that failed:
        // one probe interval after that probe, which starts within `members - 1` intervals
        // (probes go round-robin over a shuffled member list).
        let suspected: Vec<u64> = (0..n)
            .filter(|&i| i != killed)
            .filter_map(|i| {
                first(
                    &sim,
                    i,
                    at,
                    |e| matches!(e, MemberEvent::Suspect(id) if id == "node-3"),
                )
            })
            .collect();
        let first_suspect = *suspected.iter().min().expect("suspected") - at;
        worst_suspect = worst_suspect.max(first_suspect);
        let bound = (n as u64 - 1) * s.probe_interval_ms + s.probe_interval_ms + s.probe_timeout_ms;
        assert!(
            first_suspect <= bound,
            "seed {seed}: suspected after {first_suspect} ms"
        );
        // Down exactly one suspect timeout after the first suspicion (that node's own timer),
        // and every live node agrees within a few gossip rounds.
        let first_down = (0..n)
            .filter(|&i| i != killed)
            .filter_map(|i| {
                first(
                    &sim,
                    i,
                    at,
                    |e| matches!(e, MemberEvent::Down(id) if id == "node-3"),
                )
            })
            .min()
            .expect("down")
            - at;
        assert!(
            first_down >= first_suspect + s.suspect_timeout_ms
                && first_down <= first_suspect + s.suspect_timeout_ms + 100,
            "seed {seed}: suspected at {first_suspect}, down at {first_down}"
        );
        for i in (0..n).filter(|&i| i != killed) {
            assert_eq!(
                state(&sim, i, killed),
                Some(MemberState::Down),
                "seed {seed} node {i}"
            );
            // Not removed: a down node keeps its slots until remove-after.
            assert!(sim.nodes[i].m.ring().contains(&"node-3".to_string()));
        }
    }
    assert!(worst_suspect > 0);
}

#[test]
fn a_lossy_link_is_not_declared_down_thanks_to_indirect_probes() {
    let s = settings();
    let n = 5;
    for seed in 0..5 {
        let mut sim = cluster(n, s, 100 + seed);
        let all: Vec<usize> = (0..n).collect();
        run_until(&mut sim, 10_000, |s| converged(s, &all)).expect("converged");
        let from = sim.now();
        // Node 4 sits behind a lossy link: 30% of what it sends and of what it is sent is lost,
        // for ten virtual minutes.
        for other in 0..4 {
            sim.drop(4, other, 0.3);
            sim.drop(other, 4, 0.3);
        }
        sim.run_until(from + 600_000, STEPS * 20);
        // Direct probes of node 4 failed (about half of them) and indirect ones saved them.
        let rescued: u64 = (0..4)
            .map(|i| sim.nodes[i].m.counters().indirect_success)
            .sum();
        assert!(rescued > 100, "seed {seed}: {rescued} indirect acks");
        for i in 0..n {
            let downs: Vec<&(u64, MemberEvent)> = sim.nodes[i]
                .events
                .iter()
                .filter(|(t, e)| *t >= from && matches!(e, MemberEvent::Down(_)))
                .collect();
            assert!(downs.is_empty(), "seed {seed} node {i}: {downs:?}");
        }
        // Suspicions were refuted by incarnation, never by a new identity.
        let refuted: u64 = (0..4).map(|i| sim.nodes[i].m.counters().refuted).sum();
        assert!(
            refuted > 0,
            "seed {seed}: the loss caused no suspicion at all"
        );
        assert_eq!(
            sim.nodes[4].m.me().gen,
            1,
            "seed {seed}: node 4 had to rejoin"
        );
        sim.recover();
        assert!(run_until(&mut sim, 10_000, |s| converged(s, &all)).is_some());
    }
}

#[test]
fn a_partitioned_minority_and_majority_both_recover_when_the_partition_heals() {
    let s = settings();
    let n = 5;
    for seed in 0..5 {
        let mut sim = cluster(n, s, 200 + seed);
        let all: Vec<usize> = (0..n).collect();
        run_until(&mut sim, 10_000, |s| converged(s, &all)).expect("converged");
        for a in [0, 1] {
            for b in [2, 3, 4] {
                sim.cut(a, b);
            }
        }
        sim.run_until(sim.now() + 20_000, STEPS);
        // Each side sees the other down, itself alive.
        assert_eq!(state(&sim, 0, 3), Some(MemberState::Down), "seed {seed}");
        assert_eq!(state(&sim, 3, 0), Some(MemberState::Down), "seed {seed}");
        assert_eq!(state(&sim, 0, 1), Some(MemberState::Alive), "seed {seed}");
        assert_eq!(state(&sim, 3, 4), Some(MemberState::Alive), "seed {seed}");
        sim.recover();
        let healed = sim.now();
        let t = run_until(&mut sim, 30_000, |s| converged(s, &all));
        assert!(
            t.is_some(),
            "seed {seed}: not recovered 30 s after the heal"
        );
        let _ = healed;
    }
}

#[test]
fn a_flapping_node_moves_no_slot_before_remove_after() {
    let s = settings();
    let n = 4;
    let mut sim = cluster(n, s, 300);
    let all: Vec<usize> = (0..n).collect();
    run_until(&mut sim, 10_000, |s| converged(s, &all)).expect("converged");
    let from = sim.now();
    let epochs: Vec<u64> = sim.nodes.iter().map(|n| n.m.epoch()).collect();
    // Node 2 is cut off for 8 s (long enough to be declared down), back for 8 s, five times.
    let mut downs = 0;
    for _ in 0..5 {
        sim.isolate(2);
        sim.run_until(sim.now() + 8_000, STEPS);
        downs += usize::from(state(&sim, 0, 2) == Some(MemberState::Down));
        sim.heal(2);
        sim.run_until(sim.now() + 8_000, STEPS);
    }
    assert!(downs >= 3, "the flaps were long enough to be seen: {downs}");
    for (i, node) in sim.nodes.iter().enumerate() {
        assert_eq!(
            node.m.epoch(),
            epochs[i],
            "node {i}: the ring changed: {:?}",
            node.events
        );
        assert!(
            !node.events.iter().any(|(t, e)| *t >= from
                && matches!(e, MemberEvent::Ring { .. } | MemberEvent::Removed { .. })),
            "node {i}: {:?}",
            node.events
        );
    }
    assert!(converged(&sim, &all) || run_until(&mut sim, 10_000, |s| converged(s, &all)).is_some());
}

#[test]
fn remove_after_forget_leave_and_drain_change_the_ring() {
    let s = MemberSettings {
        remove_after_ms: 20_000,
        ..settings()
    };
    let n = 5;
    let mut sim = cluster(n, s, 400);
    let all: Vec<usize> = (0..n).collect();
    run_until(&mut sim, 10_000, |s| converged(s, &all)).expect("converged");
    let ids = |v: &[usize]| v.iter().map(|i| format!("node-{i}")).collect::<Vec<_>>();

    // A killed node leaves every ring remove-after after it was declared down.
    sim.nodes[4].dead = true;
    let killed = sim.now();
    let t = run_until(&mut sim, 60_000, |s| {
        (0..4).all(|i| s.nodes[i].m.ring() == ids(&[0, 1, 2, 3]))
    })
    .expect("removed");
    assert!(
        t - killed >= 20_000 && t - killed <= 20_000 + 15_000,
        "removed after {} ms",
        t - killed
    );

    // Draining: node 3 leaves the ring at once, everywhere (itself included), but stays alive.
    sim.input(3, |node, now, out| {
        node.m.drain(now);
        node.flush(now, out);
    });
    run_until(&mut sim, 5_000, |s| {
        (0..4).all(|i| s.nodes[i].m.ring() == ids(&[0, 1, 2]))
    })
    .expect("drained");
    assert_eq!(state(&sim, 0, 3), Some(MemberState::Alive));
    assert!(sim.nodes[0].m.member("node-3").unwrap().ident.draining());

    // Leaving: node 3 leaves; the others see it left within a gossip round, not after a
    // suspect timeout.
    sim.input(3, |node, now, out| {
        node.m.leave(now);
        node.flush(now, out);
    });
    let left = sim.now();
    let t = run_until(&mut sim, 5_000, |s| {
        (0..3).all(|i| state(s, i, 3) == Some(MemberState::Left))
    })
    .expect("left");
    assert!(
        t - left < s.suspect_timeout_ms,
        "left seen after {} ms",
        t - left
    );

    // Forgetting: node 2 dies and is forgotten through node 0 at once, without waiting for
    // remove-after (production sends HC.FORGET to every node).
    sim.nodes[2].dead = true;
    sim.run_until(sim.now() + 1_000, STEPS);
    let epoch = sim.nodes[0].m.epoch();
    sim.input(0, |node, now, out| {
        assert!(node.m.forget(now, "node-2"));
        node.flush(now, out);
    });
    assert_eq!(sim.nodes[0].m.ring(), ids(&[0, 1]));
    assert!(sim.nodes[0].m.epoch() > epoch);
    // It stays forgotten (its old identity is ignored) while the others still wait.
    sim.run_until(sim.now() + 10_000, STEPS);
    assert_eq!(sim.nodes[0].m.ring(), ids(&[0, 1]));
    assert!(sim.nodes[1].m.ring().contains(&"node-2".to_string()));
}

#[test]
fn a_newer_epoch_is_adopted_and_asked_about_at_most_once_a_second() {
    let s = settings();
    let mut sim = cluster(3, s, 500);
    let all: Vec<usize> = (0..3).collect();
    run_until(&mut sim, 10_000, |s| converged(s, &all)).expect("converged");
    let now = sim.now();
    let m = &mut sim.nodes[0].m;
    let e = m.epoch();
    m.take_sends();
    assert!(!m.saw_epoch(now, e, &addr(1)), "not newer: nothing to ask");
    assert!(m.take_sends().is_empty());
    assert!(m.saw_epoch(now, e + 5, &addr(1)), "newer: ask that peer");
    assert_eq!(m.epoch(), e + 5, "adopted");
    let sent = m.take_sends();
    assert!(sent.iter().any(|(to, _)| *to == addr(1)), "{sent:?}");
    assert!(
        !m.saw_epoch(now + 10, e + 9, &addr(2)),
        "asked less than a second ago"
    );
    assert_eq!(m.epoch(), e + 9);
    assert!(m.saw_epoch(now + 1_000, e + 10, &addr(2)));
    // The next ring change moves past every epoch seen.
    sim.nodes[2].dead = true;
    run_until(&mut sim, 90_000, |s| s.nodes[0].m.ring().len() == 2).expect("node 2 removed");
    assert!(sim.nodes[0].m.epoch() > e + 10);
}
