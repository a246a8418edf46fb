//! The rebalance planner: which slots move where when the ring set changes (pure).
//!
//! [`transfers`] compares the old and new preference lists of every slot and lists, for each
//! member that becomes a replica of a slot, the slot and the old replicas that hold its data.
//! Transfers are **pulled** by the new replica: it copies the slot from its old replicas with
//! the anti-entropy round's paged steps ([`crate::repair::Repair::rebalance`]) and answers for
//! the slot only once a round has completed with each of them that is live, exactly as a
//! restarted node catches up. The old replicas keep their copy for `rebalance-grace`, then drop
//! it if they still do not replicate the slot.
//!
//! Why pull: the node that must not answer from empty memory is the new replica, so it is the
//! one that knows when it is done; a failed page is simply asked again (a push design turns a
//! failed batch into a migration hint instead).

use crate::ring::{MemberIdx, Placement};
use crate::slot::{Slot, SLOTS};

/// One slot that member `to` must receive, from the old replicas `from` (rank order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The slot.
    pub slot: Slot,
    /// The new replica.
    pub to: MemberIdx,
    /// The slot's old replicas (none when the slot had no replica: a first ring).
    pub from: Vec<MemberIdx>,
}

/// Every transfer between the old and the new preference lists, slot order.
pub fn transfers<'a>(
    old: impl Fn(Slot) -> &'a [MemberIdx],
    new: impl Fn(Slot) -> &'a [MemberIdx],
) -> Vec<Transfer> {
    let mut v = Vec::new();
    for s in 0..SLOTS as Slot {
        let (o, n) = (old(s), new(s));
        for &to in n {
            if !o.contains(&to) {
                v.push(Transfer {
                    slot: s,
                    to,
                    from: o.to_vec(),
                });
            }
        }
    }
    v
}

/// This node's part of a ring change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Slots `me` receives, each with the old replicas to pull it from.
    pub receive: Vec<(Slot, Vec<MemberIdx>)>,
    /// Slots `me` no longer replicates (dropped after the grace).
    pub release: Vec<Slot>,
    /// The node's first ring since it started: every slot it does not receive is up to date
    /// at once (it answers for none before).
    pub first: bool,
}

impl Plan {
    /// The slots `me` really has to receive: those with a source other than itself (a slot
    /// whose only old replica is `me`, or that had none, is up to date as it is).
    pub fn to_receive(&self, me: MemberIdx) -> impl Iterator<Item = Slot> + '_ {
        self.receive
            .iter()
            .filter(move |(_, from)| from.iter().any(|&m| m != me))
            .map(|(s, _)| *s)
    }
}

/// What a node does when its ring becomes `new`, from `old` (`None`: it has had no ring since it
/// started, and answers for nothing). The plan; `None` while the new ring has no other member
/// (a node that has not joined stays without a ring) unless `alone` (no seed answered within
/// the join timeout: it starts a cluster of its own, every slot its own). `without` is the ring
/// of the same members without `me`, needed for a first ring only (see [`first_plan`]). Both
/// drivers call this.
pub fn ring_change(
    me: MemberIdx,
    old: Option<&Placement>,
    new: &Placement,
    without: Option<&Placement>,
    alone: bool,
) -> Option<Plan> {
    match old {
        Some(old) => Some(plan(me, |s| old.preference(s), |s| new.preference(s))),
        None if alone => Some(Plan {
            first: true,
            ..Plan::default()
        }),
        None if new.ring().members().len() > 1 => {
            let none = Placement::empty();
            let without = without.unwrap_or(&none);
            Some(first_plan(
                me,
                |s| without.preference(s),
                |s| new.preference(s),
            ))
        }
        None => None,
    }
}

/// `me`'s part of the change from `old` to `new`.
pub fn plan<'a>(
    me: MemberIdx,
    old: impl Fn(Slot) -> &'a [MemberIdx],
    new: impl Fn(Slot) -> &'a [MemberIdx],
) -> Plan {
    let mut p = Plan::default();
    for s in 0..SLOTS as Slot {
        let (o, n) = (old(s), new(s));
        match (o.contains(&me), n.contains(&me)) {
            (false, true) => p.receive.push((s, o.to_vec())),
            (true, false) => p.release.push(s),
            _ => {}
        }
    }
    p
}

/// `me`'s part of its first ring after it starts (empty): every slot it replicates in `new` is
/// received, from its other replicas in `new` (a restarted member: they kept its slots while it
/// was away) and from the replicas the slot would have without `me` (`without`: a newcomer's
/// slots are still there).
pub fn first_plan<'a>(
    me: MemberIdx,
    without: impl Fn(Slot) -> &'a [MemberIdx],
    new: impl Fn(Slot) -> &'a [MemberIdx],
) -> Plan {
    let mut p = Plan {
        first: true,
        ..Plan::default()
    };
    for s in 0..SLOTS as Slot {
        let n = new(s);
        if !n.contains(&me) {
            continue;
        }
        let mut from: Vec<MemberIdx> = n.iter().copied().filter(|&m| m != me).collect();
        for &m in without(s) {
            if m != me && !from.contains(&m) {
                from.push(m);
            }
        }
        p.receive.push((s, from));
    }
    p
}

/// The ring-agreement rule behind [`crate::node::Env::ring_agreed`], for both drivers. `others`:
/// for each other member of this node's ring, whether it may still be coordinating (not known
/// down or gone) and whether its last heartbeat reported this node's ring. Agreement holds once
/// every member that may coordinate reports the same ring, continuously for `hold_ms` (a
/// request deadline: rounds started on the previous ring are over by then); `since` keeps when
/// it started holding.
pub fn ring_agreed(
    others: impl IntoIterator<Item = (bool, bool)>,
    since: &mut Option<u64>,
    now: u64,
    hold_ms: u64,
) -> bool {
    if !others
        .into_iter()
        .all(|(may_coordinate, same)| !may_coordinate || same)
    {
        *since = None;
        return false;
    }
    let start = *since.get_or_insert(now);
    now >= start + hold_ms
}

/// What a draining node knows of one other member of its ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFacts {
    /// Live (alive, link up).
    pub live: bool,
    /// Its last heartbeat reported the same ring as this node's.
    pub same_ring: bool,
    /// Slots it still receives, as of its last heartbeat (-1: not heard yet).
    pub catching_up: i64,
}

/// Whether a draining node may stop without losing anything (`HC.DRAIN STATUS`): it is out of
/// its own ring, and every other member of that ring is live, works with the same ring, and has
/// received everything; and no hint is left to deliver from here.
pub fn safe_to_stop(in_ring: bool, members: &[MemberFacts], hints_held: usize) -> bool {
    !in_ring
        && !members.is_empty()
        && hints_held == 0
        && members
            .iter()
            .all(|m| m.live && m.same_ring && m.catching_up == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Placement, Ring, Roster};

    fn placement(ids: &[&str], roster: &mut Roster) -> Placement {
        Placement::new(Ring::new(ids, 3), 1, roster)
    }

    #[test]
    fn a_joiner_receives_its_share_from_the_old_replicas_and_each_old_replica_releases_a_slot() {
        let mut roster = Roster::new("a");
        let old = placement(&["a", "b", "c"], &mut roster);
        let new = placement(&["a", "b", "c", "d"], &mut roster);
        let d = roster.get("d").unwrap();
        let all = transfers(|s| old.preference(s), |s| new.preference(s));
        // Only the newcomer receives; each slot it gets comes from all three old replicas.
        assert!(all.iter().all(|t| t.to == d && t.from.len() == 3));
        // It gets 3/4 of a full copy of the slots (its balanced share of 3 replicas in 4).
        let share = all.len() as f64 / SLOTS as f64;
        assert!((share - 0.75).abs() < 0.01, "{share}");
        // Each of its slots is released by exactly one old replica.
        let mut released = 0;
        for m in ["a", "b", "c"] {
            let me = roster.get(m).unwrap();
            let p = plan(me, |s| old.preference(s), |s| new.preference(s));
            assert!(p.receive.is_empty());
            released += p.release.len();
        }
        assert_eq!(released, all.len());
        let p = plan(d, |s| old.preference(s), |s| new.preference(s));
        assert_eq!(p.receive.len(), all.len());
        assert!(p.release.is_empty());
    }

    #[test]
    fn a_leaver_s_slots_go_to_the_others_from_the_replicas_that_stay_and_the_leaver() {
        let mut roster = Roster::new("a");
        let old = placement(&["a", "b", "c", "d"], &mut roster);
        let new = placement(&["a", "b", "c"], &mut roster);
        let d = roster.get("d").unwrap();
        let all = transfers(|s| old.preference(s), |s| new.preference(s));
        // The slots d held (3/4 of them) each get one new replica, and d is among the sources.
        assert_eq!(all.len(), old.load_of(d));
        assert!(all.iter().all(|t| t.to != d && t.from.contains(&d)));
    }

    #[test]
    fn a_first_ring_has_no_sources_and_an_unchanged_ring_moves_nothing() {
        let mut roster = Roster::new("a");
        let empty = placement(&[], &mut roster);
        let one = placement(&["a"], &mut roster);
        let p = plan(0, |s| empty.preference(s), |s| one.preference(s));
        assert_eq!(p.receive.len(), SLOTS);
        assert!(p.receive.iter().all(|(_, from)| from.is_empty()));
        assert!(transfers(|s| one.preference(s), |s| one.preference(s)).is_empty());
    }

    #[test]
    fn a_drain_is_safe_to_stop_only_when_every_member_has_everything() {
        let done = MemberFacts {
            live: true,
            same_ring: true,
            catching_up: 0,
        };
        assert!(safe_to_stop(false, &[done, done], 0));
        assert!(!safe_to_stop(true, &[done, done], 0), "still in its ring");
        assert!(!safe_to_stop(false, &[done, done], 1), "a hint to deliver");
        assert!(!safe_to_stop(false, &[], 0), "no member to hand over to");
        for bad in [
            MemberFacts {
                live: false,
                ..done
            },
            MemberFacts {
                same_ring: false,
                ..done
            },
            MemberFacts {
                catching_up: 3,
                ..done
            },
            MemberFacts {
                catching_up: -1,
                ..done
            },
        ] {
            assert!(!safe_to_stop(false, &[done, bad], 0), "{bad:?}");
        }
    }

    #[test]
    fn the_ring_is_agreed_once_every_possible_coordinator_reports_it_for_the_hold() {
        let mut since = None;
        // A member down (cannot coordinate) is not waited for.
        assert!(!ring_agreed(
            [(true, true), (false, false)],
            &mut since,
            100,
            50
        ));
        assert!(!ring_agreed(
            [(true, true), (false, false)],
            &mut since,
            149,
            50
        ));
        assert!(ring_agreed(
            [(true, true), (false, false)],
            &mut since,
            150,
            50
        ));
        // One that may coordinate and reports another ring starts the hold over.
        assert!(!ring_agreed([(true, false)], &mut since, 200, 50));
        assert_eq!(since, None);
        assert!(!ring_agreed([(true, true)], &mut since, 210, 50));
        assert!(ring_agreed([(true, true)], &mut since, 260, 50));
    }

    #[test]
    fn roster_numbers_are_stable_across_rings() {
        let mut roster = Roster::new("me");
        let a = placement(&["me", "x", "y"], &mut roster);
        let (x, y) = (roster.get("x").unwrap(), roster.get("y").unwrap());
        // "a" sorts before every other id: in a ring of its own numbering everyone would shift.
        let b = placement(&["a", "me", "x", "y"], &mut roster);
        assert_eq!((roster.get("x"), roster.get("y")), (Some(x), Some(y)));
        assert_eq!(roster.get("me"), Some(0));
        for s in 0..SLOTS as Slot {
            for (&m, id) in a.preference(s).iter().zip(a.ring().preference(s)) {
                assert_eq!(
                    roster.id(m),
                    Some(a.ring().members()[usize::from(*id)].as_str())
                );
            }
        }
        assert_eq!(
            b.load_of(x) + b.load_of(y) + b.load_of(0) + b.load_of(3),
            SLOTS * 3
        );
    }
}
