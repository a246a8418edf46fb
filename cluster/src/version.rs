//! Versions: a hybrid logical clock (48-bit unix milliseconds, 16-bit logical counter) and the
//! origin node as tie-break. Last write wins: a replica keeps whichever version is greater.

use std::sync::atomic::{AtomicU64, Ordering};

/// The version of an entry. Ordered by `hlc`, then by `origin`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Version {
    /// `physical_ms << 16 | logical`.
    pub hlc: u64,
    /// The writing node's origin ([`origin_of`] its id): the tie-break between two writes with
    /// the same clock value. Members' origins are unique: a peer whose origin equals this node's
    /// is refused at the handshake.
    pub origin: u32,
}

/// The origin number of node `id`: 32 bits of a fixed hash (xxh3, stable across releases and
/// processes), never 0 (version 0's origin marks FLUSHALL horizons). Two ids that collide are
/// refused as peers of each other (the chance for 64 members is about 5 in 10 million; with the
/// 16 bits of protocol version 1 it was about 3 in 100).
pub fn origin_of(id: &str) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
    let o = (h ^ (h >> 32)) as u32;
    o.max(1)
}

impl Version {
    /// Whether this version is at most `max_ahead_ms` ahead of the wall clock `now_ms`: a peer's
    /// version from further in the future (a broken clock, or a hostile peer) would drag every
    /// clock that observes it forward.
    pub fn is_plausible(&self, now_ms: u64, max_ahead_ms: u64) -> bool {
        self.millis() <= now_ms.saturating_add(max_ahead_ms)
    }

    /// The physical part, unix milliseconds.
    pub fn millis(&self) -> u64 {
        self.hlc >> 16
    }
}

/// A node's hybrid logical clock. Lock-free: `tick` and `observe` are single atomic updates.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// A clock that has seen nothing yet.
    pub fn new() -> Hlc {
        Hlc::default()
    }

    /// A new timestamp, greater than every one this clock issued or observed, and at least
    /// `now_ms` in its physical part.
    pub fn tick(&self, now_ms: u64) -> u64 {
        let phys = now_ms << 16;
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            // Saturating: a version at the top of the range (only a broken or hostile peer sends
            // one; the edge refuses versions far ahead of its clock) cannot wrap the clock to 0.
            let next = if phys > cur {
                phys
            } else {
                cur.saturating_add(1)
            };
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Advances the clock past a timestamp received from another node.
    pub fn observe(&self, hlc: u64) {
        self.last.fetch_max(hlc, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_causal() {
        let c = Hlc::new();
        let a = c.tick(1000);
        let b = c.tick(1000);
        assert!(b > a);
        let d = c.tick(999); // the wall clock went backwards
        assert!(d > b);
        c.observe((5000 << 16) + 7);
        assert!(c.tick(1000) > (5000 << 16) + 7);
        assert_eq!(
            Version {
                hlc: c.tick(6000),
                origin: 0
            }
            .millis(),
            6000
        );
    }

    #[test]
    fn a_clock_at_the_top_does_not_wrap_and_far_future_versions_are_implausible() {
        let c = Hlc::new();
        c.observe(u64::MAX);
        assert_eq!(c.tick(1000), u64::MAX);
        let v = |ms: u64| Version {
            hlc: ms << 16,
            origin: 0,
        };
        assert!(v(1_000).is_plausible(1_000, 0));
        assert!(v(61_000).is_plausible(1_000, 60_000));
        assert!(!v(61_001).is_plausible(1_000, 60_000));
    }

    #[test]
    fn ids_that_shared_an_origin_in_protocol_1_no_longer_do() {
        // Protocol 1 took 16 bits of the same hash: find two ids that collided there.
        let old = |id: &str| xxhash_rust::xxh3::xxh3_64(id.as_bytes()) as u16;
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..100_000)
            .map(|i| format!("127.0.0.1:{}", 10_000 + i))
            .find_map(|id| seen.insert(old(&id), id.clone()).map(|other| (other, id)))
            .expect("16 bits collide within a few hundred ids");
        assert_eq!(old(&a), old(&b));
        assert_ne!(origin_of(&a), origin_of(&b), "{a} and {b}");
        assert_ne!(origin_of("x"), 0);
    }

    #[test]
    fn origin_breaks_ties() {
        let a = Version { hlc: 10, origin: 1 };
        let b = Version { hlc: 10, origin: 2 };
        assert!(b > a);
    }
}
