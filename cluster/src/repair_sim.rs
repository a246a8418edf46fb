//! Repair scenarios in the deterministic simulator (fixed seeds): hints alone, anti-entropy
//! alone, deletes and expiries across a partition in every order of heal, replay and sync,
//! concurrent writes on both sides of a partition, the cost of a clean round, and the backoff.

use bytes::Bytes;

use crate::msg::{Level, State};
use crate::op::{Op, Outcome};
use crate::repair::{HintLimits, RepairEvent, SyncSettings};
use crate::ring::MemberIdx;
use crate::sim::{NodeId, Sim};
use crate::simnode::SimNode;
use crate::slot::{Slot, SLOTS};

const STEPS: usize = 50_000_000;
const ONE: Level = Level::One;
const QUORUM: Level = Level::Quorum;

/// A 3-node cluster, 3 replicas, heartbeats on (a partitioned node is declared down after 2 s
/// of silence and live again when heard from), repair timers on, with `hints` and `sync`.
fn cluster(seed: u64, hints: HintLimits, sync: SyncSettings) -> Sim<SimNode> {
    let mut nodes = SimNode::cluster(3, 3);
    for n in &mut nodes {
        n.heartbeat = true;
        n.hint_limits = hints;
        n.sync = sync;
    }
    let mut s = Sim::new(nodes, seed);
    s.set_delay(1, 3);
    for i in 0..3 {
        s.input(i, |n, now, out| {
            n.start_heartbeat(out);
            n.start_repair(now, out);
        });
    }
    s
}

fn no_sync() -> SyncSettings {
    SyncSettings {
        interval_ms: 0,
        ..SyncSettings::default()
    }
}

fn sync_every(ms: u64) -> SyncSettings {
    SyncSettings {
        interval_ms: ms,
        max_backoff: 8,
        ..SyncSettings::default()
    }
}

fn hints_capped(n: usize) -> HintLimits {
    HintLimits {
        per_node: n,
        replay_interval_ms: 1000,
        ..HintLimits::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i}").into_bytes()
}

/// Sends `n` SETs (`key(i)` = `value`) through `via`, `per_ms` a millisecond of virtual time,
/// then runs 5 s more; every one must be acknowledged.
fn write_all(s: &mut Sim<SimNode>, via: NodeId, n: usize, value: &[u8], first_client: u64) {
    let per_ms = 10;
    let mut t = s.now();
    for i in 0..n {
        let k = key(i);
        let c = first_client + i as u64;
        s.input(via, |node, now, out| {
            node.client(c, &k, Op::set(value), QUORUM, QUORUM, now, out)
        });
        if i % per_ms == per_ms - 1 {
            t += 1;
            s.run_until(t, STEPS);
        }
    }
    s.run_until(s.now() + 5_000, STEPS);
    for i in 0..n {
        let c = first_client + i as u64;
        assert_eq!(
            s.nodes[via].result(c),
            Some(&Ok(Outcome::Ok)),
            "seed {}: write {i}",
            s.seed()
        );
    }
}

/// How many of `key(0..n)` node `node` holds with `value`.
fn holding(s: &Sim<SimNode>, node: NodeId, n: usize, value: &[u8]) -> usize {
    (0..n)
        .filter(|&i| s.nodes[node].held(&key(i)).as_deref() == Some(value))
        .count()
}

/// Every slot's digest is the same on every node (the nodes replicate every slot).
fn digests_agree(s: &Sim<SimNode>) -> bool {
    (0..SLOTS as Slot).all(|slot| {
        let d = s.nodes[0].store.slot_summary(slot);
        s.nodes.iter().all(|n| n.store.slot_summary(slot) == d)
    })
}

fn counters(s: &Sim<SimNode>, n: NodeId) -> crate::repair::SyncCounters {
    s.nodes[n].repair.as_ref().expect("repair ran").counters()
}

/// A replica partitioned during 10,000 writes holds all of them once the partition heals,
/// through hints alone (no anti-entropy runs).
#[test]
fn a_partitioned_replica_gets_10000_writes_back_through_hints_alone() {
    let seed = 21;
    let mut s = cluster(seed, hints_capped(100_000), no_sync());
    s.isolate(2);
    write_all(&mut s, 0, 10_000, b"v", 1);
    assert_eq!(holding(&s, 2, 10_000, b"v"), 0, "seed {seed}: partitioned");
    assert_eq!(s.nodes[0].hints_held(), 10_000, "seed {seed}");
    s.heal(2);
    s.run_until(s.now() + 5_000, STEPS);
    assert_eq!(holding(&s, 2, 10_000, b"v"), 10_000, "seed {seed}");
    let h = s.nodes[0].repair.as_ref().unwrap().hints.counters();
    assert_eq!(h.replayed[0], 10_000, "seed {seed}: {h:?}");
    assert_eq!(s.nodes[0].hints_held(), 0);
    for n in 0..3 {
        assert_eq!(counters(&s, n).syncs, 0, "seed {seed}: hints alone");
    }
    assert!(digests_agree(&s), "seed {seed}");
}

/// With hints capped at 100 per target, the rest of the partitioned writes reach the replica
/// through anti-entropy.
#[test]
fn with_hints_capped_at_100_anti_entropy_converges() {
    let seed = 22;
    let mut s = cluster(seed, hints_capped(100), sync_every(2_000));
    s.isolate(2);
    write_all(&mut s, 0, 2_000, b"v", 1);
    let h = s.nodes[0].repair.as_ref().unwrap().hints.counters();
    assert!(h.dropped[0] >= 1_900, "seed {seed}: {h:?}");
    s.heal(2);
    s.run_until(s.now() + 10_000, STEPS);
    assert_eq!(holding(&s, 2, 2_000, b"v"), 2_000, "seed {seed}");
    let pulled_or_pushed: u64 = (0..3)
        .map(|n| counters(&s, n).keys_pulled + counters(&s, n).keys_pushed)
        .sum();
    assert!(
        pulled_or_pushed >= 1_900,
        "seed {seed}: anti-entropy moved {pulled_or_pushed}"
    );
    assert!(digests_agree(&s), "seed {seed}");
}

/// How the partitioned replica is brought back in [`deletes_and_expiries_stay_gone`].
#[derive(Debug, Clone, Copy)]
enum Heal {
    /// Hints only.
    Hints,
    /// Anti-entropy only, the returning replica asking.
    SyncFromReturning,
    /// Anti-entropy only, a healthy replica asking.
    SyncToReturning,
    /// A round before the hints are replayed, then the hints.
    SyncThenHints,
}

/// Deletes and expiries made while a replica is partitioned do not come back when it returns,
/// whatever brings it up to date and in whatever order.
#[test]
fn deletes_and_expiries_made_during_a_partition_stay_gone() {
    for (i, heal) in [
        Heal::Hints,
        Heal::SyncFromReturning,
        Heal::SyncToReturning,
        Heal::SyncThenHints,
    ]
    .into_iter()
    .enumerate()
    {
        deletes_and_expiries_stay_gone(30 + i as u64, heal);
    }
}

fn deletes_and_expiries_stay_gone(seed: u64, heal: Heal) {
    let hints = match heal {
        Heal::Hints | Heal::SyncThenHints => hints_capped(100_000),
        _ => hints_capped(0),
    };
    let mut s = cluster(seed, hints, no_sync());
    let n = 300;
    write_all(&mut s, 0, n, b"old", 1);
    s.isolate(2);
    // During the partition: a third deleted, a third given a short expiry (which passes).
    let mut c = 10_000;
    for i in 0..n {
        let k = key(i);
        if i % 3 == 2 {
            continue;
        }
        c += 1;
        let id = c;
        s.input(0, |node, now, out| {
            let op = if i % 3 == 0 {
                Op::Del
            } else {
                // Expires half a second later, while the partition lasts.
                Op::Expire {
                    at: now as i64 + 500,
                    cond: Default::default(),
                }
            };
            node.client(id, &k, op, QUORUM, QUORUM, now, out)
        });
        s.run_until(s.now() + 1, STEPS);
    }
    s.run_until(s.now() + 5_000, STEPS);
    for id in 10_001..=c {
        assert_eq!(
            s.nodes[0].result(id),
            Some(&Ok(Outcome::Int(1))),
            "seed {seed} {heal:?}: client {id}"
        );
    }
    // The returning replica still holds every old value.
    assert_eq!(holding(&s, 2, n, b"old"), n, "seed {seed} {heal:?}");
    match heal {
        Heal::Hints => {
            s.heal(2);
            s.run_until(s.now() + 5_000, STEPS);
        }
        Heal::SyncFromReturning | Heal::SyncToReturning => {
            s.heal(2);
            // Both sides see each other again first (heartbeats), then one round each way.
            s.run_until(s.now() + 2_000, STEPS);
            let (from, to) = match heal {
                Heal::SyncFromReturning => (2, [0, 1]),
                _ => (0, [2, 2]),
            };
            for (t, peer) in to.into_iter().enumerate() {
                s.input(from, |node, now, out| {
                    node.sync_now(peer as MemberIdx, t as u64, now, out)
                });
                s.run_until(s.now() + 2_000, STEPS);
            }
            if matches!(heal, Heal::SyncToReturning) {
                s.input(1, |node, now, out| node.sync_now(2, 9, now, out));
                s.run_until(s.now() + 2_000, STEPS);
            }
        }
        Heal::SyncThenHints => {
            // The returning node asks for a round the moment it hears its peers, before they
            // replay their hints (they replay when they see it live).
            s.heal(2);
            s.input(2, |node, now, out| node.sync_now(0, 1, now, out));
            s.run_until(s.now() + 5_000, STEPS);
        }
    }
    for node in 0..3 {
        for i in 0..n {
            // What a GET at ONE on that node sees (an expired value is not visible).
            let held =
                match s.nodes[node]
                    .store
                    .apply(&key(i), &Op::Get, &crate::op::Ctx::at(s.now()))
                {
                    Outcome::Value(v) => Some(v),
                    _ => None,
                };
            let want = (i % 3 == 2).then(|| Bytes::from_static(b"old"));
            assert_eq!(held, want, "seed {seed} {heal:?}: node {node} key {i}");
        }
    }
    assert!(
        digests_agree(&s),
        "seed {seed} {heal:?}: replicas converged"
    );
    // QUORUM reads through the returning node agree.
    for i in 0..n {
        let k = key(i);
        let id = 50_000 + i as u64;
        s.input(2, |node, now, out| {
            node.client(id, &k, Op::Get, QUORUM, QUORUM, now, out)
        });
    }
    s.run_until(s.now() + 3_000, STEPS);
    for i in 0..n {
        let want = if i % 3 == 2 {
            Outcome::Value(Bytes::from_static(b"old"))
        } else {
            Outcome::Nil
        };
        assert_eq!(
            s.nodes[2].result(50_000 + i as u64),
            Some(&Ok(want)),
            "seed {seed} {heal:?}: key {i}"
        );
    }
}

/// Writes to the same keys on both sides of a partition (at ONE: each side has a replica) end
/// with the same value on every replica once healed.
#[test]
fn concurrent_writes_on_both_sides_of_a_partition_converge() {
    let seed = 40;
    let mut s = cluster(seed, hints_capped(100_000), sync_every(3_000));
    s.isolate(2);
    let n = 200;
    let mut t = s.now();
    for i in 0..n {
        let k = key(i);
        let (a, b) = (1 + 2 * i as u64, 2 + 2 * i as u64);
        s.input(0, |node, now, out| {
            node.client(a, &k, Op::set(b"left"), ONE, ONE, now, out)
        });
        s.input(2, |node, now, out| {
            node.client(b, &k, Op::set(b"right"), ONE, ONE, now, out)
        });
        t += 1;
        s.run_until(t, STEPS);
    }
    s.run_until(s.now() + 3_000, STEPS);
    s.heal(2);
    s.run_until(s.now() + 15_000, STEPS);
    for i in 0..n {
        let states: Vec<State> = (0..3).map(|m| s.nodes[m].store.fetch(&key(i))).collect();
        assert!(
            states.iter().all(|x| *x == states[0]),
            "seed {seed}: key {i}: {states:?}"
        );
        assert!(matches!(states[0], State::Live { .. }), "seed {seed}");
    }
    assert!(digests_agree(&s), "seed {seed}");
}

/// A clean round (replicas agree) costs the same few bytes with 100 keys or 10,000.
#[test]
fn a_clean_round_costs_bytes_independent_of_the_number_of_keys() {
    let mut bytes = Vec::new();
    for n in [100, 10_000] {
        let mut s = cluster(50, hints_capped(1000), no_sync());
        write_all(&mut s, 0, n, b"v", 1);
        s.input(0, |node, now, out| node.sync_now(1, 1, now, out));
        s.run_until(s.now() + 2_000, STEPS);
        let r = s.nodes[0].sync_reports.get(&1).expect("round done").clone();
        assert!(r.error.is_none() && r.clean(), "{r:?}");
        assert_eq!(r.slots_compared, SLOTS as u64);
        assert_eq!(r.requests, 1, "one request: the roots agree");
        bytes.push(r.bytes);
    }
    assert_eq!(bytes[0], bytes[1], "{bytes:?}");
    assert!(bytes[0] < 64, "{bytes:?}");
}

/// Clean rounds double the wait up to the maximum; a difference snaps it back to 1x.
#[test]
fn backoff_ramps_up_and_snaps_back() {
    let seed = 60;
    let mut s = cluster(seed, hints_capped(1000), sync_every(1_000));
    write_all(&mut s, 0, 100, b"v", 1);
    s.run_until(s.now() + 40_000, STEPS);
    let factors = |s: &Sim<SimNode>| -> Vec<u32> {
        s.nodes[0]
            .events
            .iter()
            .filter_map(|e| match e {
                RepairEvent::Backoff { peer: 1, factor } => Some(*factor),
                _ => None,
            })
            .collect()
    };
    assert_eq!(factors(&s), vec![2, 4, 8], "seed {seed}");
    assert_eq!(counters(&s, 0).backoff_factor, 8);
    // A difference: node 1 alone gets a write (as if it missed a delete's replication).
    let stray = State::Live {
        value: Bytes::from_static(b"stray"),
        expire_at: 0,
        version: s.nodes[1].store.new_version(s.now()),
        enc: 0,
    };
    let ctx = crate::op::Ctx::at(s.now());
    assert!(s.nodes[1].store.merge(b"stray", &stray, &ctx));
    s.run_until(s.now() + 20_000, STEPS);
    assert_eq!(
        factors(&s)[3],
        1,
        "seed {seed}: snapped back: {:?}",
        factors(&s)
    );
    assert_eq!(s.nodes[0].held(b"stray").as_deref(), Some(&b"stray"[..]));
    assert!(counters(&s, 0).clean_ticks >= 3);
}

/// The budget of node 2 in the tests below, and the value of each of their 3,000 keys: 600 KB
/// in all, three times the budget.
const BUDGET: u64 = 200_000;
const VALUE: [u8; 200] = [b'x'; 200];

/// A cluster where node 2, with a memory budget of [`BUDGET`], was cut off while 3,000 keys of
/// [`VALUE`] were written through node 0, and is back.
fn full_replica_back(seed: u64, hints: HintLimits, sync: SyncSettings) -> Sim<SimNode> {
    let mut s = cluster(seed, hints, sync);
    s.nodes[2].budget = Some(BUDGET);
    s.isolate(2);
    write_all(&mut s, 0, 3_000, &VALUE, 1);
    s.heal(2);
    s
}

/// Node 2 of [`full_replica_back`] holds some of the keys again but not all, and its store
/// never went past its budget less the reserve (`peak`, the most it held).
fn took_back_only_what_fits(s: &Sim<SimNode>, seed: u64, peak: u64) {
    let held = holding(s, 2, 3_000, &VALUE);
    assert!(held > 100, "seed {seed}: it took back what fits ({held})");
    assert!(held < 3_000, "seed {seed}: not everything fits");
    assert!(
        peak <= BUDGET - BUDGET / 8,
        "seed {seed}: {peak} bytes, budget {BUDGET} less its reserve"
    );
}

/// A replica with a memory budget that missed writes worth more than its budget takes back what
/// fits through hints and anti-entropy, and never more.
#[test]
fn repair_fills_a_full_replica_only_up_to_its_budget() {
    let seed = 70;
    let mut s = full_replica_back(seed, hints_capped(100_000), sync_every(1_000));
    let value = VALUE.to_vec();
    let mut peak = 0;
    for _ in 0..100 {
        s.run_until(s.now() + 100, STEPS);
        peak = peak.max(s.nodes[2].store.stats().bytes);
    }
    took_back_only_what_fits(&s, seed, peak);
    // The others are whole.
    assert_eq!(holding(&s, 0, 3_000, &value), 3_000);
    assert_eq!(holding(&s, 1, 3_000, &value), 3_000);
}

/// QUORUM reads through a replica with a memory budget, after it missed writes worth more than
/// it: each read repairs its own copy only while there is room (it used to store every one,
/// past its budget), and every read answers the newest value all the same.
#[test]
fn read_repair_fills_the_coordinators_copy_only_up_to_its_budget() {
    let seed = 71;
    let mut s = full_replica_back(seed, hints_capped(0), sync_every(0));
    let value = VALUE.to_vec();
    s.run_until(s.now() + 3_000, STEPS);
    assert_eq!(
        holding(&s, 2, 3_000, &value),
        0,
        "seed {seed}: no hints, no sync"
    );
    let mut peak = 0;
    for i in 0..3_000 {
        let k = key(i);
        let id = 100_000 + i as u64;
        s.input(2, |node, now, out| {
            node.client(id, &k, Op::Get, QUORUM, QUORUM, now, out)
        });
        if i % 10 == 9 {
            s.run_until(s.now() + 1, STEPS);
            peak = peak.max(s.nodes[2].store.stats().bytes);
        }
    }
    s.run_until(s.now() + 3_000, STEPS);
    peak = peak.max(s.nodes[2].store.stats().bytes);
    for i in 0..3_000 {
        assert_eq!(
            s.nodes[2].result(100_000 + i as u64),
            Some(&Ok(Outcome::Value(value.clone().into()))),
            "seed {seed}: key {i}"
        );
    }
    took_back_only_what_fits(&s, seed, peak);
}

/// With a page of a few hundred bytes, a round still converges: every list, copy, pull and push
/// is paged, both ways.
#[test]
fn a_round_with_tiny_pages_converges_both_ways() {
    let seed = 80;
    let tiny = SyncSettings {
        interval_ms: 0,
        max_backoff: 1,
        page_bytes: 700,
        ..SyncSettings::default()
    };
    let mut s = cluster(seed, hints_capped(0), tiny);
    let value = vec![b'y'; 300];
    write_all(&mut s, 0, 300, &value, 1);
    s.isolate(2);
    // The others get newer values of some keys; node 2 alone gets other keys.
    let newer = vec![b'z'; 300];
    let mut t = s.now();
    for i in 0..100 {
        let k = key(i);
        let c = 10_000 + i as u64;
        s.input(0, |node, now, out| {
            node.client(c, &k, Op::set(&newer), QUORUM, QUORUM, now, out)
        });
        let k2 = format!("only2:{i}").into_bytes();
        let c2 = 20_000 + i as u64;
        s.input(2, |node, now, out| {
            node.client(c2, &k2, Op::set(&newer), ONE, ONE, now, out)
        });
        t += 2;
        s.run_until(t, STEPS);
    }
    s.run_until(s.now() + 3_000, STEPS);
    s.heal(2);
    s.run_until(s.now() + 3_000, STEPS);
    s.input(2, |node, now, out| node.sync_now(0, 1, now, out));
    s.input(2, |node, now, out| node.sync_now(1, 2, now, out));
    s.run_until(s.now() + 10_000, STEPS);
    for t in [1, 2] {
        let r = s.nodes[2].sync_reports.get(&t).expect("round done");
        assert!(r.error.is_none(), "seed {seed}: {r:?}");
        assert!(r.requests > 20, "seed {seed}: paged: {r:?}");
    }
    assert_eq!(holding(&s, 2, 100, &newer), 100, "seed {seed}: pulled");
    for n in 0..2 {
        let got = (0..100)
            .filter(|i| {
                s.nodes[n].held(format!("only2:{i}").as_bytes()).as_deref() == Some(&newer[..])
            })
            .count();
        assert_eq!(got, 100, "seed {seed}: pushed to node {n}");
    }
    assert!(digests_agree(&s), "seed {seed}");
}
