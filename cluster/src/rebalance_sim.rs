//! Membership changes with data, in the deterministic simulator: the same [`SimNode`]s as the
//! other scenarios, with SWIM membership ([`SimNode::cluster_with_membership`]), so that joins,
//! drains and removals move slots through [`crate::repair::Repair::rebalance`] while clients
//! keep reading.

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::member::{MemberEvent, MemberSettings};
use crate::msg::Level;
use crate::op::{Op, Outcome};
use crate::sim::{NodeId, Sim};
use crate::simnode::{member_id, SimNode};
use crate::slot::SLOTS;

const STEPS: usize = 20_000_000;
const KEYS: usize = 300;

fn settings() -> MemberSettings {
    MemberSettings {
        remove_after_ms: 20_000,
        ..MemberSettings::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

struct Run {
    sim: Sim<SimNode>,
    next_client: u64,
    rng: SmallRng,
}

impl Run {
    /// `nodes` simulated members, the first `founders` started; returns once they have formed
    /// their ring and caught up.
    fn new(nodes: usize, founders: usize, seed: u64) -> Run {
        let mut all = SimNode::cluster_with_membership(nodes, founders, 3);
        for n in &mut all {
            n.sync.grace_ms = 5_000;
            n.sync.interval_ms = 0;
        }
        let mut sim = Sim::new(all, seed);
        sim.set_delay(1, 3);
        for i in 0..founders {
            sim.input(i, |n, now, out| n.start_member(settings(), now, out));
        }
        let mut r = Run {
            sim,
            next_client: 1,
            rng: SmallRng::seed_from_u64(seed),
        };
        let founders: Vec<NodeId> = (0..founders).collect();
        r.settle(&founders, 20_000);
        r
    }

    fn advance(&mut self, ms: u64) {
        let t = self.sim.now() + ms;
        self.sim.run_until(t, STEPS);
    }

    /// Runs until every node of `nodes` has the ring of exactly `nodes` and nothing left to
    /// catch up (bounded by `limit` ms).
    fn settle(&mut self, nodes: &[NodeId], limit: u64) {
        let ids: Vec<String> = nodes.iter().map(|&i| member_id(i)).collect();
        let end = self.sim.now() + limit;
        while self.sim.now() < end {
            let done = nodes.iter().all(|&i| {
                let n = &self.sim.nodes[i];
                n.joined && n.is_synced() && n.placement.ring().members() == &ids[..]
            });
            if done {
                return;
            }
            self.advance(100);
        }
        for &i in nodes {
            let n = &self.sim.nodes[i];
            eprintln!(
                "node {i}: joined {} catching {} ring {:?}",
                n.joined,
                n.catching.len(),
                n.placement.ring().members()
            );
        }
        panic!("seed {}: not settled after {limit} ms", self.sim.seed());
    }

    /// Runs `op` on `k` through `node`, waiting for its result (virtual time runs on).
    fn op(
        &mut self,
        node: NodeId,
        k: &[u8],
        op: Op<'_>,
        level: Level,
    ) -> crate::simnode::ClientResult {
        let c = self.next_client;
        self.next_client += 1;
        self.sim.input(node, |n, now, out| {
            n.client(c, k, op, level, level, now, out)
        });
        for _ in 0..200 {
            if let Some(r) = self.sim.nodes[node].result(c) {
                return r.clone();
            }
            self.advance(10);
        }
        panic!("seed {}: client {c} got no answer", self.sim.seed());
    }

    fn load(&mut self, nodes: &[NodeId]) {
        for i in 0..KEYS {
            let n = nodes[i % nodes.len()];
            let r = self.op(n, &key(i), Op::set(&value(i)), Level::Quorum);
            assert_eq!(r, Ok(Outcome::Ok), "seed {}: SET {i}", self.sim.seed());
        }
    }

    /// Reads random keys at QUORUM through random nodes of `nodes` for `ms`; returns the
    /// number of reads and the number that did not return the written value.
    fn read_while(&mut self, nodes: &[NodeId], ms: u64) -> (usize, Vec<String>) {
        self.read_at(nodes, ms, Level::Quorum)
    }

    fn read_at(&mut self, nodes: &[NodeId], ms: u64, level: Level) -> (usize, Vec<String>) {
        let end = self.sim.now() + ms;
        let (mut reads, mut bad, mut unavailable) = (0, Vec::new(), 0);
        while self.sim.now() < end {
            let i = self.rng.random_range(0..KEYS);
            let n = nodes[self.rng.random_range(0..nodes.len())];
            let r = self.op(n, &key(i), Op::Get, level);
            reads += 1;
            if r.as_ref()
                .is_err_and(|e| matches!(e, crate::node::NoReplicas { .. }))
                && !self.sim.nodes[n].joined
            {
                // A node that has not joined yet refuses; that is not a wrong answer.
                unavailable += 1;
            } else if r != Ok(Outcome::Value(Bytes::from(value(i)))) {
                bad.push(format!("t={} key {i} via node {n}: {r:?}", self.sim.now()));
            }
            self.advance(20);
        }
        (reads - unavailable, bad)
    }

    /// How many of `nodes` hold key `i`'s value.
    fn copies(&self, nodes: &[NodeId], i: usize) -> usize {
        nodes
            .iter()
            .filter(|&&n| self.sim.nodes[n].held(&key(i)).as_deref() == Some(&value(i)[..]))
            .count()
    }

    /// Every key is held by exactly 3 of `nodes`, its replicas, and reads at ALL through each.
    fn check_replicas(&mut self, nodes: &[NodeId]) {
        for i in 0..KEYS {
            let reps = self.sim.nodes[nodes[0]].replicas_of(&key(i));
            for &n in &reps {
                assert!(
                    self.sim.nodes[n].held(&key(i)).as_deref() == Some(&value(i)[..]),
                    "seed {}: key {i} missing on its replica {n}",
                    self.sim.seed()
                );
            }
            assert_eq!(
                self.copies(nodes, i),
                3,
                "seed {}: key {i}",
                self.sim.seed()
            );
            let via = nodes[i % nodes.len()];
            let r = self.op(via, &key(i), Op::Get, Level::All);
            assert_eq!(
                r,
                Ok(Outcome::Value(Bytes::from(value(i)))),
                "seed {}: key {i}",
                self.sim.seed()
            );
        }
    }
}

#[test]
fn a_joining_node_receives_its_share_while_every_read_at_quorum_succeeds() {
    for seed in [1, 2, 3] {
        let mut r = Run::new(4, 3, seed);
        r.load(&[0, 1, 2]);
        // The transfer is paced (as `rebalance-max-bytes-per-sec` does) so that it lasts a few
        // seconds: the reads below run while it is under way.
        r.sim.nodes[3].sync.max_bytes_per_sec = 4_000;
        r.sim
            .input(3, |n, now, out| n.start_member(settings(), now, out));
        // Reads at ONE through the newcomer: a slot it has not received yet is read from
        // another replica, never answered from its empty memory.
        let (reads, bad) = r.read_at(&[3], 2_000, Level::One);
        assert!(reads > 50);
        assert!(
            bad.is_empty(),
            "seed {seed}: {} of {reads} reads failed: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
        assert!(
            r.sim.nodes[3].joined && !r.sim.nodes[3].is_synced(),
            "seed {seed}: the transfer is under way"
        );
        let (reads, bad) = r.read_while(&[0, 1, 2, 3], 2_000);
        assert!(reads > 50);
        assert!(
            bad.is_empty(),
            "seed {seed}: {} of {reads} reads failed: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
        r.settle(&[0, 1, 2, 3], 30_000);
        // The newcomer holds its share (3/4 of the keys, as it replicates 3/4 of the slots).
        let share = (0..KEYS).filter(|&i| r.copies(&[3], i) == 1).count();
        let owned = r.sim.nodes[3].placement.load_of(3) as f64 / SLOTS as f64;
        assert!((owned - 0.75).abs() < 0.01, "{owned}");
        assert!(share > KEYS / 2, "seed {seed}: node 3 holds {share} keys");
        // After the grace, the old replicas dropped what moved: every key on exactly 3 nodes.
        r.advance(6_000);
        r.check_replicas(&[0, 1, 2, 3]);
        let c = r.sim.nodes[3].repair.as_ref().expect("repair").counters();
        assert!(
            c.rebalance_keys >= share as u64 && c.rebalance_batches > 0,
            "{c:?}"
        );
        assert!(
            c.rebalance_throttle > 0 && c.rebalance_last_ns > 2_000_000_000,
            "{c:?}"
        );
        let released: u64 = (0..3)
            .map(|i| {
                r.sim.nodes[i]
                    .repair
                    .as_ref()
                    .expect("repair")
                    .counters()
                    .keys_released
            })
            .sum();
        assert!(released >= share as u64, "seed {seed}: released {released}");
    }
}

/// A newcomer pulls each of its slots from every old replica (three here), but copies each
/// whole only once: its rounds start their copies a third of the ring apart, and a slot that
/// another round filled first is compared bucket by bucket instead of copied again. It receives
/// about one copy of its share, not three.
#[test]
fn a_joining_node_copies_each_slot_once_though_it_pulls_from_every_replica() {
    for seed in [4, 5] {
        let mut r = Run::new(4, 3, seed);
        r.load(&[0, 1, 2]);
        r.sim
            .input(3, |n, now, out| n.start_member(settings(), now, out));
        r.settle(&[0, 1, 2, 3], 30_000);
        let share = (0..KEYS).filter(|&i| r.copies(&[3], i) == 1).count() as u64;
        let c = r.sim.nodes[3].repair.as_ref().expect("repair").counters();
        assert!(c.slots_late > 0, "seed {seed}: {c:?}");
        assert_eq!(c.rebalance_keys, share, "seed {seed}: {c:?}");
        // Entries received, stored or not: well under two copies of the share (three copies
        // when every round copied every slot).
        assert!(
            c.rebalance_entries < share * 3 / 2,
            "seed {seed}: {} entries received for a share of {share}: {c:?}",
            c.rebalance_entries
        );
    }
}

#[test]
fn a_drained_node_hands_every_slot_to_the_others_and_leaves_with_nothing_lost() {
    for seed in [4, 5] {
        let mut r = Run::new(4, 4, seed);
        r.load(&[0, 1, 2, 3]);
        r.sim.input(3, |n, now, out| n.drain(now, out));
        let (reads, bad) = r.read_while(&[0, 1, 2], 6_000);
        assert!(reads > 100);
        assert!(
            bad.is_empty(),
            "seed {seed}: {:?}",
            &bad[..bad.len().min(5)]
        );
        r.settle(&[0, 1, 2], 30_000);
        r.sim.input(3, |n, now, out| n.leave(now, out));
        r.advance(6_000);
        for i in 0..3 {
            assert!(
                r.sim.nodes[i]
                    .member_events
                    .iter()
                    .any(|(_, e)| *e == MemberEvent::Left(member_id(3))),
                "seed {seed}: node {i} did not see node 3 leave"
            );
        }
        r.check_replicas(&[0, 1, 2]);
    }
}

#[test]
fn a_killed_node_s_slots_are_replicated_again_after_remove_after() {
    for seed in [6, 7] {
        let mut r = Run::new(4, 4, seed);
        r.load(&[0, 1, 2, 3]);
        // Node 1 crashes: nothing reaches it, and its peers' links to it fail.
        r.sim.nodes[1].off = true;
        r.sim.isolate(1);
        for p in [0, 2, 3] {
            r.sim.input(p, |n, now, out| n.link_down(1, now, out));
        }
        let (reads, bad) = r.read_while(&[0, 2, 3], 10_000);
        assert!(reads > 100);
        assert!(
            bad.is_empty(),
            "seed {seed}: {:?}",
            &bad[..bad.len().min(5)]
        );
        // Down, but it keeps its slots until remove-after...
        assert!(r.sim.nodes[0]
            .placement
            .ring()
            .members()
            .contains(&member_id(1)));
        // ...then the others take them over.
        r.settle(&[0, 2, 3], 40_000);
        r.advance(6_000);
        r.check_replicas(&[0, 2, 3]);
    }
}
