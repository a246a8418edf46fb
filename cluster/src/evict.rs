//! Eviction policies: Redis's eight `maxmemory-policy` values and the sampled approximation Redis
//! uses (sample `maxmemory-samples` keys, keep the best candidates in a small pool, evict the best).

use crate::op::AccessMode;

/// A `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refuse writes that need memory (`-OOM ...`); reads keep working.
    #[default]
    NoEviction,
    /// Evict the least recently used key.
    AllKeysLru,
    /// Evict the least frequently used key.
    AllKeysLfu,
    /// Evict a random key.
    AllKeysRandom,
    /// Evict the least recently used key among keys with an expiry.
    VolatileLru,
    /// Evict the least frequently used key among keys with an expiry.
    VolatileLfu,
    /// Evict a random key among keys with an expiry.
    VolatileRandom,
    /// Evict the key with an expiry that expires soonest.
    VolatileTtl,
}

/// Every policy with its Redis name.
pub const POLICIES: &[(&str, Policy)] = &[
    ("noeviction", Policy::NoEviction),
    ("allkeys-lru", Policy::AllKeysLru),
    ("allkeys-lfu", Policy::AllKeysLfu),
    ("allkeys-random", Policy::AllKeysRandom),
    ("volatile-lru", Policy::VolatileLru),
    ("volatile-lfu", Policy::VolatileLfu),
    ("volatile-random", Policy::VolatileRandom),
    ("volatile-ttl", Policy::VolatileTtl),
];

impl Policy {
    /// The policy named `name` (Redis's spelling, any case).
    pub fn parse(name: &str) -> Option<Policy> {
        POLICIES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
    }

    /// Redis's name.
    pub fn name(self) -> &'static str {
        POLICIES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("noeviction", |(n, _)| n)
    }

    /// Whether only keys with an expiry may be evicted.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    /// Whether the policy ranks keys by access frequency (entries then keep LFU counters).
    pub fn is_lfu(self) -> bool {
        matches!(self, Policy::AllKeysLfu | Policy::VolatileLfu)
    }

    /// Whether the policy picks victims at random.
    pub fn is_random(self) -> bool {
        matches!(self, Policy::AllKeysRandom | Policy::VolatileRandom)
    }

    /// What entries' access fields record under this policy.
    pub fn access_mode(self, log_factor: u32, decay_minutes: u32) -> AccessMode {
        if self.is_lfu() {
            AccessMode::Lfu {
                log_factor,
                decay_minutes,
            }
        } else {
            AccessMode::Lru
        }
    }
}

/// Candidates kept between evictions (Redis's `EVPOOL_SIZE`).
pub(crate) const POOL_SIZE: usize = 16;

/// A key that may be evicted, with its score (higher: evict sooner).
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) score: u64,
    pub(crate) slot: u16,
    pub(crate) hash: u64,
    pub(crate) key: Box<[u8]>,
}

/// Adds `c` to `pool` (kept sorted by ascending score, at most [`POOL_SIZE`] long), unless the
/// pool is full of better candidates or already holds the key.
pub(crate) fn offer(pool: &mut Vec<Candidate>, c: Candidate) {
    if pool.iter().any(|p| p.hash == c.hash && p.key == c.key) {
        return;
    }
    if pool.len() == POOL_SIZE {
        if pool[0].score >= c.score {
            return;
        }
        pool.remove(0);
    }
    let at = pool.partition_point(|p| p.score <= c.score);
    pool.insert(at, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, p) in POLICIES {
            assert_eq!(Policy::parse(name), Some(*p));
            assert_eq!(p.name(), *name);
        }
        assert_eq!(Policy::parse("ALLKEYS-LRU"), Some(Policy::AllKeysLru));
        assert_eq!(Policy::parse("lru"), None);
    }

    #[test]
    fn pool_keeps_the_best() {
        let mut pool = Vec::new();
        for i in 0..40u64 {
            let score = (i * 7919) % 101;
            offer(
                &mut pool,
                Candidate {
                    score,
                    slot: 0,
                    hash: i,
                    key: i.to_le_bytes().into(),
                },
            );
        }
        assert_eq!(pool.len(), POOL_SIZE);
        assert!(pool.windows(2).all(|w| w[0].score <= w[1].score));
        let mut all: Vec<u64> = (0..40u64).map(|i| (i * 7919) % 101).collect();
        all.sort_unstable();
        assert_eq!(pool.last().unwrap().score, *all.last().unwrap());
    }
}
