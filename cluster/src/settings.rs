//! Cluster-wide settings: a document every member holds a copy of (today: the ACL users, in
//! `ACL LIST`'s text form), kept the same on every member by last-write-wins on its version.
//!
//! - **A change** made through any node gets a new version from that node's clock and is pushed
//!   to every member ([`crate::msg::Request::PutSettings`]).
//! - **Repair:** every heartbeat's answer ([`crate::msg::Response::Status`]) carries the
//!   sender's version. A node that sees a newer one than its own pulls the document
//!   ([`crate::msg::Request::Settings`]), so a member that missed a push (down, partitioned, or
//!   joining) has it within a heartbeat of its next link to a member that has it.
//! - **Order:** versions are HLC values with the origin as tie-break, as for keys: of two
//!   concurrent changes, every member keeps the same one.
//!
//! Both drivers (production and simulator) hold a [`Settings`] and run these decisions; neither
//! re-implements them.

use bytes::Bytes;

use crate::version::Version;

/// One member's copy of the cluster-wide document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    version: Version,
    body: Bytes,
}

impl Settings {
    /// Nothing set cluster-wide yet (version zero: any change is newer).
    pub fn new() -> Settings {
        Settings::default()
    }

    /// The version held (zero: none).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The document held (empty: none).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether anything was ever set cluster-wide.
    pub fn is_set(&self) -> bool {
        self.version != Version::default()
    }

    /// Stores `body` at `version` if it is newer than what is held; returns whether it was (the
    /// driver then applies it). Used for a local change (its version from this node's clock)
    /// and for a peer's push or pulled copy.
    pub fn offer(&mut self, version: Version, body: Bytes) -> bool {
        if version <= self.version {
            return false;
        }
        self.version = version;
        self.body = body;
        true
    }

    /// A peer's heartbeat reported `theirs`: whether to pull its document.
    pub fn should_pull(&self, theirs: Version) -> bool {
        theirs > self.version
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
                s.offer(version, Bytes::from_static(body.as_bytes()));
            }
            assert_eq!(s.version(), v(12 << 16, 3), "{order:?}");
            assert_eq!(s.body(), &Bytes::from_static(b"c"));
        }
    }

    #[test]
    fn a_node_pulls_only_what_is_newer() {
        let mut s = Settings::new();
        assert!(!s.is_set());
        assert!(!s.should_pull(Version::default()), "nothing set anywhere");
        assert!(s.should_pull(v(1, 1)));
        assert!(s.offer(v(5, 1), Bytes::from_static(b"x")));
        assert!(!s.offer(v(5, 1), Bytes::from_static(b"x")), "a duplicate");
        assert!(!s.offer(v(4, 7), Bytes::from_static(b"old")), "older");
        assert!(!s.should_pull(v(5, 1)));
        assert!(s.should_pull(v(5, 2)));
        assert!(s.is_set());
    }
}
