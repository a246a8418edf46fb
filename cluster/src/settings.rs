//! Cluster-wide settings: documents every member holds a copy of, kept the same on every member
//! by last-write-wins on each of their entries. Today two: the ACL users ([`USERS`], one entry
//! per user: its line of `ACL LIST`) and the function libraries ([`FUNCTIONS`], one entry per
//! library: its code).
//!
//! - **A change** made through any node ([`Settings::change`]) compares the node's entries with
//!   the copy it holds: each entry that differs, and a removal (a tombstone) for each one it no
//!   longer has, gets a new version from that node's clock and is pushed to every member
//!   ([`crate::msg::Request::PutSettings`]).
//! - **Order:** versions are HLC values with the origin as tie-break, as for keys: of two
//!   concurrent changes of one entry, every member keeps the same one. Entries are independent:
//!   two libraries loaded at the same time through two nodes (or two users set) are both kept.
//!   (A whole document per version lost one of them: the later copy, made without the other,
//!   replaced it everywhere.) Tombstones stay: a removed user or library cannot come back from a
//!   member that missed its removal.
//! - **Repair:** every heartbeat's answer ([`crate::msg::Response::Status`]) carries the
//!   sender's digest of each document (its entries' names and versions). A node that sees a
//!   different one pulls the sender's entries ([`crate::msg::Request::Settings`]) and keeps the
//!   newer of each, so a member that missed a push (down, partitioned, or joining) has it within
//!   a heartbeat of its next link to a member that has it; the sender pulls in turn what only
//!   the node had.
//! - **Changes wait for the cluster's copy:** a node that just started holds only its own
//!   few users and no libraries; a change through it would publish them as new entries and
//!   remove the cluster's others. It may change a document only once it has heard a member
//!   ([`Settings::may_change`]): a heartbeat answer that reported the same digests, or a pull
//!   that followed one. A node with no other member does not wait.
//!
//! Both drivers (production and simulator) hold a [`Settings`] and run these decisions; neither
//! re-implements them. A document this build does not know is kept and passed on like the
//! others (the driver applies only those it knows).

use std::collections::BTreeMap;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use crate::version::Version;

/// How long a client's change through a node that has not heard a member yet may wait for it
/// (the node's first heartbeat answer comes within a second of its links) before it is refused
/// and the client retries ([`Settings::may_change`]).
pub const HEARD_WAIT_MS: u64 = 3_000;

/// Which document (its number on the wire).
pub type Doc = u8;

/// The ACL users: one entry per user, named by the user, its line of `ACL LIST`.
pub const USERS: Doc = 0;

/// The function libraries: one entry per library, named by the library, its code.
pub const FUNCTIONS: Doc = 1;

/// An entry as it travels: its name, its version, and its body (`None`: removed).
pub type Entry = (Bytes, Version, Option<Bytes>);

/// One member's copy of the cluster-wide documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    docs: BTreeMap<Doc, BTreeMap<Bytes, (Version, Option<Bytes>)>>,
    /// A member's heartbeat answer showed the same digests as this copy, or what it showed
    /// different was pulled: this copy is the cluster's ([`Settings::may_change`]).
    heard: bool,
}

impl Settings {
    /// Nothing set cluster-wide yet.
    pub fn new() -> Settings {
        Settings::default()
    }

    /// Whether `doc` was ever changed cluster-wide (then its entries, not a node's own
    /// configuration, are what every member applies).
    pub fn is_set(&self, doc: Doc) -> bool {
        self.docs.get(&doc).is_some_and(|d| !d.is_empty())
    }

    /// The entries of `doc` that exist (not removed), in name order: what a node applies.
    pub fn live(&self, doc: Doc) -> Vec<(Bytes, Bytes)> {
        self.docs
            .get(&doc)
            .map(|d| {
                d.iter()
                    .filter_map(|(name, (_, body))| Some((name.clone(), body.clone()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps entry `name` of `doc` at `version` (`body` `None`: removed) if it is newer than
    /// the one held; returns whether it was (the driver then applies the document).
    pub fn offer(&mut self, doc: Doc, name: Bytes, version: Version, body: Option<Bytes>) -> bool {
        let entries = self.docs.entry(doc).or_default();
        if entries.get(&name).is_some_and(|(v, _)| version <= *v) {
            return false;
        }
        entries.insert(name, (version, body));
        true
    }

    /// [`Settings::offer`] of each of `entries` (a peer's push, or a document of a pull);
    /// whether one of them was newer (the driver then applies the document).
    pub fn offer_all(&mut self, doc: Doc, entries: Vec<Entry>) -> bool {
        let mut newer = false;
        for (name, version, body) in entries {
            newer |= self.offer(doc, name, version, body);
        }
        newer
    }

    /// A change through this node: `before` and `after` are every entry of `doc` as the node
    /// had it before and after the change (name, body). Each entry the change set, and a
    /// removal of each one it removed, is kept at `version`; returns them, for the driver to
    /// push to every member (empty: nothing changed). Only what the change itself did: an
    /// entry that arrived from a peer meanwhile, held but not yet applied, is neither undone
    /// nor published again. The first change of a document publishes all of `after`: the
    /// node's own configuration becomes the cluster's starting point.
    pub fn change(
        &mut self,
        doc: Doc,
        before: &[(Bytes, Bytes)],
        after: &[(Bytes, Bytes)],
        version: Version,
    ) -> Vec<Entry> {
        let first = !self.is_set(doc);
        let held = self.docs.entry(doc).or_default();
        let body_in = |list: &[(Bytes, Bytes)], name: &Bytes| {
            list.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone())
        };
        let mut out = Vec::new();
        for (name, body) in after {
            if first || body_in(before, name).as_ref() != Some(body) {
                out.push((name.clone(), version, Some(body.clone())));
            }
        }
        for (name, _) in before {
            if !first && body_in(after, name).is_none() {
                out.push((name.clone(), version, None));
            }
        }
        for (name, v, body) in &out {
            let newer = held.get(name).is_none_or(|(held, _)| v > held);
            if newer {
                held.insert(name.clone(), (*v, body.clone()));
            }
        }
        out
    }

    /// The digest of `doc`: its entries' names, versions and whether they exist, hashed and
    /// combined (zero: no entry). Two members with the same entries have the same digest.
    pub fn digest(&self, doc: Doc) -> u64 {
        let Some(d) = self.docs.get(&doc) else {
            return 0;
        };
        d.iter().fold(0, |acc, (name, (v, body))| {
            let mut b = Vec::with_capacity(name.len() + 13);
            b.extend_from_slice(&v.hlc.to_le_bytes());
            b.extend_from_slice(&v.origin.to_le_bytes());
            b.push(u8::from(body.is_some()));
            b.extend_from_slice(name);
            acc ^ xxh3_64(&b)
        })
    }

    /// The digest of every document held, for a heartbeat's answer.
    pub fn digests(&self) -> Vec<(Doc, u64)> {
        self.docs
            .keys()
            .map(|&d| (d, self.digest(d)))
            .filter(|&(_, h)| h != 0)
            .collect()
    }

    /// Every entry held, removals included, by document (what a pull gets).
    pub fn entries(&self) -> Vec<(Doc, Vec<Entry>)> {
        self.docs
            .iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(&doc, d)| {
                let entries = d
                    .iter()
                    .map(|(name, (v, body))| (name.clone(), *v, body.clone()))
                    .collect();
                (doc, entries)
            })
            .collect()
    }

    /// A peer's heartbeat reported the digests `theirs`: whether to pull its entries (one of
    /// its documents differs from this node's copy; what only this node has, the peer pulls).
    pub fn should_pull(&self, theirs: &[(Doc, u64)]) -> bool {
        theirs.iter().any(|&(d, h)| h != self.digest(d))
    }

    /// A peer's heartbeat answer reported `theirs`: whether to pull its entries. When nothing
    /// differs, this copy is the cluster's from now on.
    pub fn heard_status(&mut self, theirs: &[(Doc, u64)]) -> bool {
        let pull = self.should_pull(theirs);
        if !pull {
            self.heard = true;
        }
        pull
    }

    /// A pull's answer was offered ([`Settings::offer`] for each entry): this copy is the
    /// cluster's from now on.
    pub fn pulled(&mut self) {
        self.heard = true;
    }

    /// Whether a change through this node may be made and published: once it heard a member
    /// ([`Settings::heard_status`], [`Settings::pulled`]), or at once when it has no other
    /// member (`alone`). A change refused here is refused to the client (it retries).
    pub fn may_change(&self, alone: bool) -> bool {
        self.heard || alone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64, origin: u32) -> Version {
        Version { hlc, origin }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn live(s: &Settings, doc: Doc) -> Vec<(String, String)> {
        s.live(doc)
            .into_iter()
            .map(|(n, b)| {
                let text = |x: &Bytes| String::from_utf8_lossy(x).into_owned();
                (text(&n), text(&b))
            })
            .collect()
    }

    #[test]
    fn the_newest_version_of_an_entry_wins_in_any_order_of_arrival() {
        let changes = [
            (v(10 << 16, 2), Some("a")),
            (v(12 << 16, 1), Some("b")),
            (v(12 << 16, 3), Some("c")),
            (v(11 << 16, 9), None),
        ];
        // Every permutation of arrivals ends with the same entry: the newest (ties broken by
        // origin).
        let mut orders = vec![vec![0, 1, 2, 3]];
        for _ in 0..23 {
            let mut next = orders.last().unwrap().clone();
            // Next permutation (lexicographic).
            let i = (0..3).rev().find(|&i| next[i] < next[i + 1]).unwrap();
            let j = (i + 1..4).rev().find(|&j| next[j] > next[i]).unwrap();
            next.swap(i, j);
            next[i + 1..].reverse();
            orders.push(next);
        }
        let mut digests = Vec::new();
        for order in orders {
            let mut s = Settings::new();
            for &i in &order {
                let (version, body) = changes[i];
                s.offer(USERS, b("alice"), version, body.map(b));
            }
            assert_eq!(
                live(&s, USERS),
                vec![("alice".into(), "c".into())],
                "{order:?}"
            );
            digests.push(s.digest(USERS));
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn concurrent_changes_of_different_entries_are_both_kept() {
        // Two nodes that both hold {default}; one adds alice, the other bob, before either
        // heard of the other's change.
        let base = vec![(b("default"), b("user default on"))];
        let mut a = Settings::new();
        let mut c = Settings::new();
        a.change(USERS, &[], &base, v(1 << 16, 1));
        c.offer_all(USERS, a.entries().remove(0).1);
        let with = |extra: (&str, &str)| {
            let mut l = base.clone();
            l.push((b(extra.0), b(extra.1)));
            l
        };
        let from_a = a.change(
            USERS,
            &base,
            &with(("alice", "user alice on")),
            v(5 << 16, 1),
        );
        let from_c = c.change(USERS, &base, &with(("bob", "user bob on")), v(6 << 16, 2));
        assert_eq!(from_a.len(), 1, "only alice is new: {from_a:?}");
        assert_eq!(from_c.len(), 1, "only bob is new: {from_c:?}");
        assert!(a.should_pull(&c.digests()) && c.should_pull(&a.digests()));
        a.offer_all(USERS, from_c);
        c.offer_all(USERS, from_a);
        let want: Vec<(String, String)> = vec![
            ("alice".into(), "user alice on".into()),
            ("bob".into(), "user bob on".into()),
            ("default".into(), "user default on".into()),
        ];
        assert_eq!(live(&a, USERS), want);
        assert_eq!(live(&c, USERS), want);
        assert_eq!(a.digest(USERS), c.digest(USERS));
        assert!(!a.should_pull(&c.digests()));
    }

    #[test]
    fn a_change_publishes_what_it_did_not_what_arrived_meanwhile() {
        let mut s = Settings::new();
        s.change(FUNCTIONS, &[], &[(b("lib1"), b("1"))], v(1 << 16, 1));
        // A peer's library arrives (held, not yet installed); a local load of lib3 then sees
        // only lib1 installed before and lib1 and lib3 after.
        assert!(s.offer(FUNCTIONS, b("lib2"), v(2 << 16, 2), Some(b("2"))));
        let out = s.change(
            FUNCTIONS,
            &[(b("lib1"), b("1"))],
            &[(b("lib1"), b("1")), (b("lib3"), b("3"))],
            v(3 << 16, 1),
        );
        assert_eq!(out, vec![(b("lib3"), v(3 << 16, 1), Some(b("3")))]);
        assert_eq!(
            live(&s, FUNCTIONS),
            vec![
                ("lib1".into(), "1".into()),
                ("lib2".into(), "2".into()),
                ("lib3".into(), "3".into())
            ]
        );
    }

    #[test]
    fn a_removal_is_kept_and_wins_over_an_older_copy() {
        let mut s = Settings::new();
        let lib1 = [(b("lib1"), b("code 1"))];
        s.change(FUNCTIONS, &[], &lib1, v(1 << 16, 1));
        let out = s.change(FUNCTIONS, &lib1, &[], v(2 << 16, 1));
        assert_eq!(out, vec![(b("lib1"), v(2 << 16, 1), None)]);
        assert!(live(&s, FUNCTIONS).is_empty());
        assert!(s.is_set(FUNCTIONS), "a removal is a change");
        // A member that missed the removal offers its older copy: it stays removed.
        assert!(!s.offer(FUNCTIONS, b("lib1"), v(1 << 16, 1), Some(b("code 1"))));
        assert!(live(&s, FUNCTIONS).is_empty());
        // Nothing changed, nothing published.
        assert!(s.change(FUNCTIONS, &[], &[], v(3 << 16, 1)).is_empty());
        let lib2 = [(b("lib2"), b("code 2"))];
        s.change(FUNCTIONS, &[], &lib2, v(4 << 16, 1));
        assert!(s.change(FUNCTIONS, &lib2, &lib2, v(5 << 16, 1)).is_empty());
    }

    #[test]
    fn a_node_pulls_only_when_a_digest_differs() {
        let mut s = Settings::new();
        assert!(!s.is_set(USERS));
        assert!(!s.should_pull(&[]), "nothing set anywhere");
        assert!(s.digests().is_empty());
        let mut t = Settings::new();
        t.offer(USERS, b("alice"), v(5, 1), Some(b("x")));
        assert!(s.should_pull(&t.digests()));
        assert!(s.offer(USERS, b("alice"), v(5, 1), Some(b("x"))));
        assert!(
            !s.offer(USERS, b("alice"), v(5, 1), Some(b("x"))),
            "a duplicate"
        );
        assert!(
            !s.offer(USERS, b("alice"), v(4, 7), Some(b("old"))),
            "older"
        );
        assert!(!s.should_pull(&t.digests()));
        t.offer(USERS, b("alice"), v(5, 2), Some(b("y")));
        assert!(s.should_pull(&t.digests()));
        assert!(!t.should_pull(&s.digests()) || t.digest(USERS) != s.digest(USERS));
        assert!(s.is_set(USERS));
    }

    #[test]
    fn a_node_changes_nothing_before_it_heard_a_member() {
        let mut other = Settings::new();
        other.offer(USERS, b("alice"), v(5, 1), Some(b("x")));
        let mut s = Settings::new();
        assert!(!s.may_change(false), "just started");
        assert!(s.may_change(true), "a cluster of one");
        assert!(s.heard_status(&other.digests()), "different: pull first");
        assert!(!s.may_change(false), "not before the pull");
        s.offer(USERS, b("alice"), v(5, 1), Some(b("x")));
        s.pulled();
        assert!(s.may_change(false));
        let mut t = Settings::new();
        assert!(!t.heard_status(&[]), "a member with nothing set");
        assert!(t.may_change(false));
    }

    #[test]
    fn documents_are_independent() {
        let mut s = Settings::new();
        s.change(USERS, &[], &[(b("default"), b("users"))], v(9, 1));
        s.change(FUNCTIONS, &[], &[(b("lib"), b("libs"))], v(3, 2));
        assert_eq!(live(&s, USERS), vec![("default".into(), "users".into())]);
        assert_eq!(live(&s, FUNCTIONS), vec![("lib".into(), "libs".into())]);
        // A document this build does not know is kept and passed on.
        assert!(s.offer(7, b("x"), v(1, 1), Some(b("?"))));
        assert_eq!(s.entries().len(), 3);
        assert_eq!(s.digests().len(), 3);
    }
}
