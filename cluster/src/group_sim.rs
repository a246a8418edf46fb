//! Transactions on several keys of one slot ([`crate::group`]) in the deterministic simulator:
//! the same [`SimNode`]s as the other scenarios, clients sending [`Group`]s through any node.

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::group::Group;
use crate::msg::{group_bytes, guard_bytes, Level, State};
use crate::node::NoReplicas;
use crate::op::{Op, Outcome};
use crate::sim::{NodeId, Sim};
use crate::simnode::SimNode;
use crate::version::Version;

const STEPS: usize = 2_000_000;
const QUORUM: Level = Level::Quorum;
const ALL: Level = Level::All;
const X: &[u8] = b"{acct}x";
const Y: &[u8] = b"{acct}y";

fn sim(nodes: usize, replicas: usize, seed: u64) -> Sim<SimNode> {
    Sim::new(SimNode::cluster(nodes, replicas), seed)
}

/// A transaction on `keys` running `ops` (key index, operation), guarded by `expect`.
fn group(keys: &[&[u8]], ops: &[(u16, Op<'_>)], expect: Vec<(u16, Option<Version>)>) -> Group {
    let ops: Vec<(u16, Vec<u8>)> = ops.iter().map(|(k, op)| (*k, guard_bytes(op))).collect();
    Group::new(
        keys.iter().map(|k| Bytes::copy_from_slice(k)).collect(),
        Bytes::from(group_bytes(&ops)),
        expect,
    )
    .expect("a valid transaction")
}

/// INCR x; INCR y, as one transaction.
fn incr_both() -> Group {
    group(&[X, Y], &[(0, Op::IncrBy(1)), (1, Op::IncrBy(1))], vec![])
}

/// The same as a program the coordinator's driver runs (as a script is).
fn incr_both_external() -> Group {
    let g = incr_both();
    Group::external(g.keys().to_vec(), g.program().clone()).unwrap()
}

fn run_group(s: &mut Sim<SimNode>, node: NodeId, client: u64, g: Group) -> crate::node::KeyResult {
    s.input(node, |n, now, out| {
        n.client_group(client, g, QUORUM, now, out)
    });
    s.run_until_quiet(STEPS);
    s.nodes[node]
        .result(client)
        .cloned()
        .unwrap_or_else(|| panic!("seed {}: client {client} got no answer", s.seed()))
}

fn read_all(s: &mut Sim<SimNode>, node: NodeId, client: u64, key: &[u8]) -> Option<i64> {
    read(s, node, client, key, ALL)
}

fn read(s: &mut Sim<SimNode>, node: NodeId, client: u64, key: &[u8], level: Level) -> Option<i64> {
    s.input(node, |n, now, out| {
        n.client(client, key, Op::Get, level, level, now, out)
    });
    s.run_until_quiet(STEPS);
    match s.nodes[node].result(client) {
        Some(Ok(Outcome::Value(v))) => Some(std::str::from_utf8(v).unwrap().parse().unwrap()),
        Some(Ok(Outcome::Nil)) => None,
        other => panic!("seed {}: read of {key:?} got {other:?}", s.seed()),
    }
}

fn quiet(s: &Sim<SimNode>) {
    for (i, n) in s.nodes.iter().enumerate() {
        assert_eq!(
            n.in_flight(),
            0,
            "seed {}: node {i} has work left",
            s.seed()
        );
    }
}

/// Through a node that is not a replica, a transaction on two keys is forwarded to the slot's
/// coordinator, runs its commands in order over both keys (the INCRBY sees the SET before it),
/// and every replica ends up with both keys written by the one round (one version).
#[test]
fn a_transaction_on_two_keys_of_a_slot_runs_in_order_through_any_node() {
    let seed = 1;
    let mut s = sim(5, 3, seed);
    let reps = s.nodes[0].replicas_of(X);
    assert_eq!(reps, s.nodes[0].replicas_of(Y), "one slot");
    let outsider = (0..5).find(|n| !reps.contains(n)).unwrap();
    let g = group(
        &[X, Y],
        &[
            (0, Op::set(b"10")),
            (1, Op::set(b"20")),
            (0, Op::IncrBy(5)),
            (1, Op::Get),
        ],
        vec![],
    );
    let r = run_group(&mut s, outsider, 1, g);
    let Ok(Outcome::Batch(outs, _)) = r else {
        panic!("seed {seed}: {r:?}");
    };
    assert_eq!(
        outs,
        vec![
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Int(15),
            Outcome::Value(Bytes::from_static(b"20"))
        ]
    );
    assert_eq!(s.nodes[outsider].counts.forwards, 1, "seed {seed}");
    for &n in &reps {
        let (State::Live { version: vx, .. }, State::Live { version: vy, .. }) =
            (s.nodes[n].store.fetch(X), s.nodes[n].store.fetch(Y))
        else {
            panic!("seed {seed}: replica {n} holds both keys");
        };
        assert_eq!(vx, vy, "seed {seed}: one round wrote both");
        assert_eq!(s.nodes[n].held(X).as_deref(), Some(&b"15"[..]));
        assert_eq!(s.nodes[n].held(Y).as_deref(), Some(&b"20"[..]));
    }
    quiet(&s);
}

/// Transactions of INCR x; INCR y sent at once through every node, with message delays so that
/// their rounds overlap, as commands and as programs the coordinator's driver runs (scripts):
/// each one's two replies are equal (no other write came between its commands), the replies are
/// all different (no two ran on the same state), and both counters end at the number of
/// transactions.
#[test]
fn concurrent_transactions_on_two_keys_never_interleave() {
    for seed in [2, 3, 4, 5] {
        let mut s = sim(3, 3, seed);
        s.set_delay(1, 4);
        const N: u64 = 60;
        for c in 0..N {
            let node = (c % 3) as NodeId;
            // Half of them (every seed but the first) run as programs of the driver (scripts).
            let g = if seed > 2 && c % 2 == 0 {
                incr_both_external()
            } else {
                incr_both()
            };
            s.input(node, |n, now, out| n.client_group(c, g, QUORUM, now, out));
        }
        s.run_until_quiet(STEPS);
        let mut seen = std::collections::BTreeSet::new();
        for c in 0..N {
            let r = s.nodes[(c % 3) as usize].result(c).cloned();
            match r {
                Some(Ok(Outcome::Batch(outs, _))) => {
                    let [Outcome::Int(a), Outcome::Int(b)] = outs[..] else {
                        panic!("seed {seed}: client {c} got {outs:?}");
                    };
                    assert_eq!(a, b, "seed {seed}: client {c}: a write came between");
                    assert!(seen.insert(a), "seed {seed}: {a} twice");
                }
                other => panic!("seed {seed}: client {c} got {other:?}"),
            }
        }
        assert_eq!(read_all(&mut s, 0, 10_000, X), Some(N as i64));
        assert_eq!(read_all(&mut s, 1, 10_001, Y), Some(N as i64));
        // Every round ran at the slot's coordinator: the others forwarded theirs.
        let coordinator = s.nodes[0].replicas_of(X)[0];
        let external = if seed > 2 { N / 2 } else { 0 };
        for (i, n) in s.nodes.iter().enumerate() {
            let (groups, programs) = if i == coordinator {
                (N, external)
            } else {
                (0, 0)
            };
            assert_eq!(
                (n.counts.groups, n.counts.programs),
                (groups, programs),
                "seed {seed}: node {i}"
            );
        }
        quiet(&s);
    }
}

/// The WATCH pattern on two keys: read both versions at QUORUM (WATCH), then both values, then
/// write both only if neither changed (`expect`), and start over when one did. Six clients on
/// three nodes, rounds overlapping, and a plain INCR of x now and then through a seventh: no
/// update is lost, and the clients see some of their attempts refused.
#[test]
fn watched_transactions_on_two_keys_lose_no_update() {
    type Seen = [Option<Version>; 2];
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Watch,
        Get(Seen),
        Write(Seen, [i64; 2]),
    }
    let seed = 5;
    let mut s = sim(3, 3, seed);
    s.set_delay(1, 4);
    const CLIENTS: usize = 6;
    const EACH: usize = 6;
    let mut step = [Step::Watch; CLIENTS];
    let mut done = [0usize; CLIENTS];
    let mut refused = 0;
    let mut incrs = 0;
    let mut next_id = 10_000u64;
    let num = |o: &Outcome| match o {
        Outcome::Value(v) => std::str::from_utf8(v).unwrap().parse().unwrap(),
        _ => 0,
    };
    for round in 0..2_000 {
        if done.iter().all(|d| *d == EACH) {
            break;
        }
        let mut issued = Vec::new();
        for c in 0..CLIENTS {
            if done[c] == EACH {
                continue;
            }
            let node = (c % 3) as NodeId;
            next_id += 2;
            let id = next_id;
            match step[c] {
                Step::Watch => {
                    for (i, key) in [X, Y].into_iter().enumerate() {
                        s.input(node, |n, now, out| {
                            n.client(id + i as u64, key, Op::Version, QUORUM, QUORUM, now, out)
                        });
                    }
                }
                Step::Get(_) => {
                    let g = group(&[X, Y], &[(0, Op::Get), (1, Op::Get)], vec![]);
                    s.input(node, |n, now, out| n.client_group(id, g, QUORUM, now, out));
                }
                Step::Write([vx, vy], [x, y]) => {
                    let (nx, ny) = ((x + 1).to_string(), (y + 1).to_string());
                    let ops = [(0, Op::set(nx.as_bytes())), (1, Op::set(ny.as_bytes()))];
                    let g = group(&[X, Y], &ops, vec![(0, vx), (1, vy)]);
                    s.input(node, |n, now, out| n.client_group(id, g, QUORUM, now, out));
                }
            }
            issued.push((c, node, id));
        }
        if round % 5 == 1 {
            next_id += 2;
            let id = next_id;
            s.input(2, |n, now, out| {
                n.client(id, X, Op::IncrBy(1), QUORUM, QUORUM, now, out)
            });
            issued.push((usize::MAX, 2, id));
        }
        s.run_until_quiet(STEPS);
        for (c, node, id) in issued {
            let r = s.nodes[node].result(id).cloned();
            if c == usize::MAX {
                assert!(matches!(r, Some(Ok(Outcome::Int(_)))), "seed {seed}: {r:?}");
                incrs += 1;
                continue;
            }
            step[c] = match (step[c], r) {
                (Step::Watch, Some(Ok(Outcome::Version(vx)))) => {
                    let Some(Ok(Outcome::Version(vy))) = s.nodes[node].result(id + 1).cloned()
                    else {
                        panic!("seed {seed}: client {c}: no version of y");
                    };
                    Step::Get([vx, vy])
                }
                (Step::Get(seen), Some(Ok(Outcome::Batch(outs, _)))) => {
                    Step::Write(seen, [num(&outs[0]), num(&outs[1])])
                }
                (Step::Write(..), Some(Ok(Outcome::Batch(..)))) => {
                    done[c] += 1;
                    Step::Watch
                }
                (Step::Write(..), Some(Ok(Outcome::Changed))) => {
                    refused += 1;
                    Step::Watch
                }
                (_, other) => panic!("seed {seed}: client {c} got {other:?}"),
            };
        }
    }
    assert_eq!(done, [EACH; CLIENTS], "seed {seed}: every client finished");
    let total = (CLIENTS * EACH) as i64;
    assert_eq!(read_all(&mut s, 0, 1, X), Some(total + incrs));
    assert_eq!(read_all(&mut s, 1, 2, Y), Some(total));
    assert!(refused > 0, "seed {seed}: the clients never raced");
    quiet(&s);
}

/// With one replica of three cut off, transactions still run at QUORUM; its link failing is
/// recorded as hints, so it holds both keys once it is back. A transaction whose coordinator's
/// link fails while it is forwarded runs at the next replica.
#[test]
fn transactions_survive_a_replica_and_a_coordinator_going_down() {
    let seed = 6;
    let mut s = sim(3, 3, seed);
    let reps = s.nodes[0].replicas_of(X);
    let (primary, second, third) = (reps[0], reps[1], reps[2]);
    s.isolate(third);
    let r = run_group(&mut s, second, 1, incr_both());
    assert!(matches!(r, Ok(Outcome::Batch(..))), "seed {seed}: {r:?}");
    s.recover();
    // The primary dies while the next transaction is on its way to it.
    s.input(third, |n, now, out| {
        n.client_group(2, incr_both(), QUORUM, now, out)
    });
    s.isolate(primary);
    for p in [second, third] {
        s.input(p, |node, now, out| {
            node.link_down(primary as crate::ring::MemberIdx, now, out)
        });
    }
    s.run_until_quiet(STEPS);
    let r = s.nodes[third].result(2).cloned();
    let Some(Ok(Outcome::Batch(outs, _))) = r else {
        panic!("seed {seed}: {r:?}");
    };
    assert_eq!(outs, vec![Outcome::Int(2), Outcome::Int(2)], "seed {seed}");
    assert_eq!(s.nodes[third].counts.forward_retries, 1, "seed {seed}");
    assert_eq!(read(&mut s, second, 3, X, QUORUM), Some(2));
    assert_eq!(read(&mut s, second, 4, Y, QUORUM), Some(2));
}

/// Randomized: transactions of INCR x; INCR y and plain INCRs of x through random nodes of four
/// (three replicas), with a tenth of the messages dropped. Every acknowledged increment is in
/// the final counters, and nothing is counted that was not sent (a transaction that failed may
/// or may not have taken effect, as a failed write may).
#[test]
fn randomized_transactions_with_drops_lose_no_acknowledged_increment() {
    for seed in 10..16u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut s = sim(4, 3, seed);
        s.set_delay(1, 3);
        for a in 0..4 {
            for b in (0..4).filter(|&b| b != a) {
                s.drop(a, b, 0.1);
            }
        }
        let (mut acked, mut failed, mut incr_acked, mut incr_failed) = (0i64, 0i64, 0i64, 0i64);
        let mut issued = Vec::new();
        for c in 0..80u64 {
            let node = rng.random_range(0..4) as NodeId;
            if rng.random_bool(0.2) {
                s.input(node, |n, now, out| {
                    n.client(c, X, Op::IncrBy(1), QUORUM, QUORUM, now, out)
                });
                issued.push((c, node, false));
            } else {
                let g = if c % 3 == 0 {
                    incr_both_external()
                } else {
                    incr_both()
                };
                s.input(node, |n, now, out| n.client_group(c, g, QUORUM, now, out));
                issued.push((c, node, true));
            }
            if c % 10 == 9 {
                s.run_until_quiet(STEPS);
            }
        }
        s.run_until_quiet(STEPS);
        for (c, node, is_group) in issued {
            let r = s.nodes[node].result(c).cloned();
            match (is_group, r) {
                (true, Some(Ok(Outcome::Batch(outs, _)))) => {
                    assert!(
                        matches!(outs[..], [Outcome::Int(_), Outcome::Int(_)]),
                        "seed {seed}: {outs:?}"
                    );
                    acked += 1;
                }
                (false, Some(Ok(Outcome::Int(_)))) => incr_acked += 1,
                (true, Some(Err(NoReplicas { write: true }))) => failed += 1,
                (false, Some(Err(NoReplicas { write: true }))) => incr_failed += 1,
                (_, other) => panic!("seed {seed}: client {c} got {other:?}"),
            }
        }
        s.recover();
        let y = read_all(&mut s, 0, 100_000, Y).unwrap_or(0);
        let x = read_all(&mut s, 0, 100_001, X).unwrap_or(0);
        assert!(
            (acked..=acked + failed).contains(&y),
            "seed {seed}: y {y}, {acked} acknowledged, {failed} failed"
        );
        let xs = acked + incr_acked;
        assert!(
            (xs..=xs + failed + incr_failed).contains(&x),
            "seed {seed}: x {x}, {xs} acknowledged"
        );
        assert!(acked > 0, "seed {seed}: nothing acknowledged");
    }
}

/// Blind transactions (SET x n; SET y n: no read round, written by whichever replica the client
/// reached) racing transactions of INCR x; INCR y through every node, with delays and a tenth
/// of the messages dropped: every transaction keeps x equal to y, so each INCR pair sees them
/// equal, and every replica ends with x equal to y.
#[test]
fn blind_transactions_and_increments_keep_two_keys_equal() {
    for seed in [20, 21, 22] {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut s = sim(4, 3, seed);
        s.set_delay(1, 4);
        for a in 0..4 {
            for b in (0..4).filter(|&b| b != a) {
                s.drop(a, b, 0.1);
            }
        }
        let mut issued = Vec::new();
        for c in 0..80u64 {
            let node = rng.random_range(0..4) as NodeId;
            let g = if c % 2 == 0 {
                let n = (1000 * c).to_string();
                let g = group(
                    &[X, Y],
                    &[(0, Op::set(n.as_bytes())), (1, Op::set(n.as_bytes()))],
                    vec![],
                );
                assert!(g.is_blind());
                g
            } else {
                incr_both()
            };
            s.input(node, |n, now, out| n.client_group(c, g, QUORUM, now, out));
            issued.push((c, node));
            if c % 8 == 7 {
                s.run_until_quiet(STEPS);
            }
        }
        s.run_until_quiet(STEPS);
        let mut acked = 0;
        for (c, node) in issued {
            match s.nodes[node].result(c).cloned() {
                Some(Ok(Outcome::Batch(outs, _))) if c % 2 == 0 => {
                    assert_eq!(outs, vec![Outcome::Ok, Outcome::Ok], "seed {seed}");
                    acked += 1;
                }
                Some(Ok(Outcome::Batch(outs, _))) => {
                    let [Outcome::Int(a), Outcome::Int(b)] = outs[..] else {
                        panic!("seed {seed}: client {c} got {outs:?}");
                    };
                    assert_eq!(a, b, "seed {seed}: client {c}: x and y differed");
                    acked += 1;
                }
                Some(Err(NoReplicas { write: true })) => {}
                other => panic!("seed {seed}: client {c} got {other:?}"),
            }
        }
        assert!(acked > 40, "seed {seed}: only {acked} acknowledged");
        s.recover();
        for n in 0..4 {
            let x = read_all(&mut s, n, 100_000 + n as u64 * 2, X);
            let y = read_all(&mut s, n, 100_001 + n as u64 * 2, Y);
            assert_eq!(x, y, "seed {seed}: through node {n}");
        }
    }
}

/// Scripts that take a while to run (30 ms each) sent at once through every node: each holds
/// its keys' gates while it runs, the others wait their turn, and none interleaves.
#[test]
fn slow_programs_hold_their_keys_until_they_are_written() {
    let seed = 30;
    let mut s = sim(3, 3, seed);
    for n in &mut s.nodes {
        n.compute_delay_ms = 30;
    }
    s.set_delay(1, 4);
    const N: u64 = 30;
    for c in 0..N {
        let node = (c % 3) as NodeId;
        s.input(node, |n, now, out| {
            n.client_group(c, incr_both_external(), QUORUM, now, out)
        });
    }
    s.run_until_quiet(STEPS);
    let mut seen = std::collections::BTreeSet::new();
    for c in 0..N {
        match s.nodes[(c % 3) as usize].result(c).cloned() {
            Some(Ok(Outcome::Batch(outs, _))) => {
                let [Outcome::Int(a), Outcome::Int(b)] = outs[..] else {
                    panic!("seed {seed}: client {c} got {outs:?}");
                };
                assert_eq!(a, b, "seed {seed}: client {c}");
                assert!(seen.insert(a), "seed {seed}: {a} twice");
            }
            other => panic!("seed {seed}: client {c} got {other:?}"),
        }
    }
    assert_eq!(read_all(&mut s, 0, 10_000, X), Some(N as i64));
    quiet(&s);
}

/// A program that runs past its coordinator's deadline fails the transaction (`NOREPLICAS`):
/// nothing is written, even when its result comes in late, and its keys' gates are free for
/// the next transaction.
#[test]
fn a_program_past_its_deadline_writes_nothing_and_frees_its_keys() {
    let seed = 31;
    let mut s = sim(3, 3, seed);
    let coordinator = s.nodes[0].replicas_of(X)[0];
    s.nodes[coordinator].compute_delay_ms = 60_000;
    let r = run_group(&mut s, coordinator, 1, incr_both_external());
    assert_eq!(r, Err(NoReplicas { write: true }), "seed {seed}");
    for n in 0..3 {
        assert_eq!(s.nodes[n].held(X), None, "seed {seed}: node {n}");
        assert_eq!(s.nodes[n].held(Y), None, "seed {seed}: node {n}");
    }
    let r = run_group(&mut s, coordinator, 2, incr_both());
    assert!(matches!(r, Ok(Outcome::Batch(..))), "seed {seed}: {r:?}");
    assert_eq!(read_all(&mut s, 1, 3, X), Some(1));
    assert_eq!(read_all(&mut s, 2, 4, Y), Some(1));
    quiet(&s);
}

/// The write level: a blind transaction keeps it, as a plain SET does (at ONE, the replica the
/// client reached is enough), while one with a read round runs at QUORUM at least.
#[test]
fn a_blind_transaction_keeps_its_level_and_a_reading_one_needs_a_quorum() {
    let seed = 40;
    let mut s = sim(3, 3, seed);
    let reps = s.nodes[0].replicas_of(X);
    let (reached, others) = (reps[0], [reps[1], reps[2]]);
    for n in others {
        s.isolate(n);
    }
    let blind = group(&[X, Y], &[(0, Op::set(b"1")), (1, Op::set(b"1"))], vec![]);
    s.input(reached, |n, now, out| {
        n.client_group(1, blind, Level::One, now, out)
    });
    s.run_until_quiet(STEPS);
    let r = s.nodes[reached].result(1).cloned();
    assert!(
        matches!(r, Some(Ok(Outcome::Batch(..)))),
        "seed {seed}: {r:?}"
    );
    s.input(reached, |n, now, out| {
        n.client_group(2, incr_both(), Level::One, now, out)
    });
    s.run_until_quiet(STEPS);
    let r = s.nodes[reached].result(2).cloned();
    assert_eq!(r, Some(Err(NoReplicas { write: true })), "seed {seed}");
}

/// Closed-loop writers racing on one slot, as `tests/cluster.rs`'s MSET test: two clients per
/// node, each sending its next blind transaction (SET x v; SET y v) as soon as the last one is
/// answered. Every node coordinates the writes it receives, so replicas keep refusing each
/// other's versions and coordinators keep stamping above them: in a healthy cluster no write
/// may fail for that (it did, once in a few thousand, when restamps were counted rather than
/// bounded by the deadline), and every replica ends with x equal to y.
#[test]
fn closed_loop_blind_transactions_through_every_node_all_succeed() {
    const WRITES: u64 = 60;
    for seed in 40..46 {
        let mut s = sim(3, 3, seed);
        s.set_delay(1, 3);
        let send = |s: &mut Sim<SimNode>, node: NodeId, id: u64| {
            let v = id.to_string();
            let g = group(
                &[X, Y],
                &[(0, Op::set(v.as_bytes())), (1, Op::set(v.as_bytes()))],
                vec![],
            );
            s.input(node, |n, now, out| n.client_group(id, g, QUORUM, now, out));
        };
        crate::simnode::closed_loop(&mut s, 6, WRITES, STEPS, send, |c, i, r| match r {
            Ok(Outcome::Batch(outs, _)) => {
                assert_eq!(outs, &vec![Outcome::Ok, Outcome::Ok], "seed {seed}")
            }
            other => panic!("seed {seed}: client {c}'s write {i} got {other:?}"),
        });
        s.run_until_quiet(STEPS);
        // The race this is about took place: writes were stamped again, many times.
        let restamps: u64 = s.nodes.iter().map(|n| n.counts.restamps).sum();
        assert!(restamps > WRITES, "seed {seed}: only {restamps} restamps");
        for n in 0..3 {
            let x = s.nodes[n].held(X);
            let y = s.nodes[n].held(Y);
            assert!(x.is_some(), "seed {seed}: node {n} has no x");
            assert_eq!(x, y, "seed {seed}: node {n}");
        }
    }
}
