//! Cluster-wide settings: documents every member holds a copy of, each kept the same on every
//! member by last-write-wins on its own version. Today two: the ACL users ([`USERS`], in `ACL
//! LIST`'s text form) and the function libraries ([`FUNCTIONS`], `FUNCTION DUMP`'s payload).
//!
//! - **A change** made through any node gets a new version from that node's clock and is pushed
//!   to every member ([`crate::msg::Request::PutSettings`]).
//! - **Repair:** every heartbeat's answer ([`crate::msg::Response::Status`]) carries the
//!   sender's version of each document. A node that sees a newer one than its own pulls the
//!   documents ([`crate::msg::Request::Settings`]), so a member that missed a push (down,
//!   partitioned, or joining) has it within a heartbeat of its next link to a member that has it.
//! - **Changes wait for the cluster's copy:** a node that just started holds only its own
//!   few users and no libraries; a change through it published as the newest version would
//!   replace the cluster's. It may change a document only once it has heard a member
//!   ([`Settings::may_change`]): a heartbeat answer that reported nothing newer, or a pull
//!   that followed one. A node with no other member does not wait.
//! - **Order:** versions are HLC values with the origin as tie-break, as for keys: of two
//!   concurrent changes of one document, every member keeps the same one. Documents are
//!   independent: a change of the users never undoes a change of the functions made at the
//!   same time elsewhere.
//!
//! Both drivers (production and simulator) hold a [`Settings`] and run these decisions; neither
//! re-implements them. A document this build does not know is kept and passed on like the
//! others (the driver applies only those it knows).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::version::Version;

/// How long a client's change through a node that has not heard a member yet may wait for it
/// (the node's first heartbeat answer comes within a second of its links) before it is refused
/// and the client retries ([`Settings::may_change`]).
pub const HEARD_WAIT_MS: u64 = 3_000;

/// Which document (its number on the wire).
pub type Doc = u8;

/// The ACL users, as the lines `ACL LIST` prints.
pub const USERS: Doc = 0;

/// The function libraries, as `FUNCTION DUMP`'s payload (empty: none).
pub const FUNCTIONS: Doc = 1;

/// One member's copy of the cluster-wide documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    docs: BTreeMap<Doc, (Version, Bytes)>,
    /// A member's heartbeat answer showed nothing newer than this copy, or what it showed
    /// newer was pulled: this copy is the cluster's ([`Settings::may_change`]).
    heard: bool,
}

impl Settings {
    /// Nothing set cluster-wide yet (every version zero: any change is newer).
    pub fn new() -> Settings {
        Settings::default()
    }

    /// The version held of `doc` (zero: none).
    pub fn version(&self, doc: Doc) -> Version {
        self.docs.get(&doc).map(|d| d.0).unwrap_or_default()
    }

    /// The document held (empty: none).
    pub fn body(&self, doc: Doc) -> Bytes {
        self.docs.get(&doc).map(|d| d.1.clone()).unwrap_or_default()
    }

    /// Whether `doc` was ever set cluster-wide.
    pub fn is_set(&self, doc: Doc) -> bool {
        self.version(doc) != Version::default()
    }

    /// Stores `body` as `doc` at `version` if it is newer than what is held; returns whether it
    /// was (the driver then applies it). Used for a local change (its version from this node's
    /// clock) and for a peer's push or pulled copy.
    pub fn offer(&mut self, doc: Doc, version: Version, body: Bytes) -> bool {
        if version <= self.version(doc) {
            return false;
        }
        self.docs.insert(doc, (version, body));
        true
    }

    /// The version of every document held, for a heartbeat's answer.
    pub fn versions(&self) -> Vec<(Doc, Version)> {
        self.docs.iter().map(|(&d, &(v, _))| (d, v)).collect()
    }

    /// Every document held, with its version (what a pull gets).
    pub fn documents(&self) -> Vec<(Doc, Version, Bytes)> {
        self.docs
            .iter()
            .map(|(&d, (v, b))| (d, *v, b.clone()))
            .collect()
    }

    /// A peer's heartbeat reported `theirs`: whether to pull its documents (one of them is
    /// newer than this node's copy).
    pub fn should_pull(&self, theirs: &[(Doc, Version)]) -> bool {
        theirs.iter().any(|&(d, v)| v > self.version(d))
    }

    /// A peer's heartbeat answer reported `theirs`: whether to pull its documents. When
    /// nothing is newer, this copy is the cluster's from now on.
    pub fn heard_status(&mut self, theirs: &[(Doc, Version)]) -> bool {
        let pull = self.should_pull(theirs);
        if !pull {
            self.heard = true;
        }
        pull
    }

    /// A pull's answer was offered ([`Settings::offer`] for each document): this copy is the
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

    #[test]
    fn the_newest_version_wins_in_any_order_of_arrival() {
        let changes = [
            (v(10 << 16, 2), "a"),
            (v(12 << 16, 1), "b"),
            (v(12 << 16, 3), "c"),
            (v(11 << 16, 9), "d"),
        ];
        // Every permutation of arrivals ends with the same document: the newest (ties broken by
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
        for order in orders {
            let mut s = Settings::new();
            for &i in &order {
                let (version, body) = changes[i];
                s.offer(USERS, version, Bytes::from_static(body.as_bytes()));
            }
            assert_eq!(s.version(USERS), v(12 << 16, 3), "{order:?}");
            assert_eq!(s.body(USERS), Bytes::from_static(b"c"));
        }
    }

    #[test]
    fn a_node_pulls_only_what_is_newer() {
        let mut s = Settings::new();
        assert!(!s.is_set(USERS));
        assert!(!s.should_pull(&[]), "nothing set anywhere");
        assert!(!s.should_pull(&[(USERS, Version::default())]));
        assert!(s.should_pull(&[(USERS, v(1, 1))]));
        assert!(s.offer(USERS, v(5, 1), Bytes::from_static(b"x")));
        assert!(
            !s.offer(USERS, v(5, 1), Bytes::from_static(b"x")),
            "a duplicate"
        );
        assert!(
            !s.offer(USERS, v(4, 7), Bytes::from_static(b"old")),
            "older"
        );
        assert!(!s.should_pull(&[(USERS, v(5, 1))]));
        assert!(s.should_pull(&[(USERS, v(5, 2))]));
        assert!(s.is_set(USERS));
        assert_eq!(s.versions(), vec![(USERS, v(5, 1))]);
    }

    #[test]
    fn a_node_changes_nothing_before_it_heard_a_member() {
        let mut s = Settings::new();
        assert!(!s.may_change(false), "just started");
        assert!(s.may_change(true), "a cluster of one");
        assert!(s.heard_status(&[(USERS, v(5, 1))]), "newer: pull first");
        assert!(!s.may_change(false), "not before the pull");
        s.offer(USERS, v(5, 1), Bytes::from_static(b"x"));
        s.pulled();
        assert!(s.may_change(false));
        let mut t = Settings::new();
        assert!(!t.heard_status(&[]), "a member with nothing set");
        assert!(t.may_change(false));
    }

    #[test]
    fn documents_are_independent() {
        let mut s = Settings::new();
        assert!(s.offer(USERS, v(9, 1), Bytes::from_static(b"users")));
        // An older version of another document is still news: versions are per document.
        assert!(s.should_pull(&[(USERS, v(9, 1)), (FUNCTIONS, v(3, 2))]));
        assert!(s.offer(FUNCTIONS, v(3, 2), Bytes::from_static(b"libs")));
        assert!(!s.should_pull(&[(USERS, v(9, 1)), (FUNCTIONS, v(3, 2))]));
        assert_eq!(s.body(USERS), Bytes::from_static(b"users"));
        assert_eq!(s.body(FUNCTIONS), Bytes::from_static(b"libs"));
        // A document this build does not know is kept and passed on.
        assert!(s.offer(7, v(1, 1), Bytes::from_static(b"?")));
        assert_eq!(s.documents().len(), 3);
    }
}
