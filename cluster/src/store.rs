//! The store: 16384 slots, each a map behind its own lock, with per-slot counts and an
//! order-independent digest of `(key, version)` kept up to date in O(1) per change.
//!
//! Every method takes time as an argument ([`Ctx`]); nothing here reads a clock. Expired keys are
//! invisible at once (checked on every access) and reclaimed either then or by
//! [`Store::expire_cycle`], which a driver calls periodically with a work budget.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use rand::Rng;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::entry::{EncodingHint, Entry};
use crate::glob;
use crate::op::{apply, Ctx, Effect, Op, Outcome};
use crate::slot::{key_slot, Slot, SLOTS};
use crate::version::{Hlc, Version};

/// One slot's keys. The table holds entries directly (each entry knows its key), hashed by the
/// store's hasher: the key is hashed once per operation.
#[derive(Debug, Default)]
struct SlotData {
    /// Keys of the slot.
    map: HashTable<Entry>,
    /// XOR of `hash(key, version)` over the slot's entries.
    digest: u64,
    /// Entries with an expiry.
    volatile: usize,
}

/// A slot's lock and data on a cache line of their own (the lock, the table header and the
/// counters fit in 64 bytes), so touching one slot costs one line and neighbours never share.
#[derive(Debug, Default)]
#[repr(align(64))]
struct SlotCell(Mutex<SlotData>);

/// Store settings, passed in by the node.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Seed for the maps' hasher (HashDoS protection); any value, ideally random per process.
    pub hash_seed: u64,
    /// This node's origin number, the tie-break in versions it creates.
    pub origin: u16,
}

/// Counters the store keeps; read with [`Store::stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys currently held (including expired ones not yet reclaimed, as Redis's DBSIZE does).
    pub keys: u64,
    /// Keys with an expiry.
    pub volatile: u64,
    /// Keys removed because they expired (lazily or by the expiry cycle).
    pub expired: u64,
}

/// The key-value store of one node.
#[derive(Debug)]
pub struct Store {
    slots: Box<[SlotCell]>,
    hasher: ahash::RandomState,
    clock: Hlc,
    origin: u16,
    keys: AtomicU64,
    volatile: AtomicU64,
    expired: AtomicU64,
    expire_cursor: AtomicUsize,
}

fn entry_hash(key: &[u8], v: &Version) -> u64 {
    xxh3_64_with_seed(key, v.hlc ^ (u64::from(v.origin) << 32))
}

/// Result of [`Store::expire_cycle`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpireCycle {
    /// Entries looked at.
    pub examined: usize,
    /// Entries removed.
    pub expired: usize,
    /// Slots visited.
    pub slots: usize,
}

impl Store {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Store {
        let seed = config.hash_seed;
        Store {
            slots: (0..SLOTS).map(|_| SlotCell::default()).collect(),
            hasher: ahash::RandomState::with_seeds(seed, !seed, seed.rotate_left(17), 0x9e37_79b9),
            clock: Hlc::new(),
            origin: config.origin,
            keys: AtomicU64::new(0),
            volatile: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            expire_cursor: AtomicUsize::new(0),
        }
    }

    /// The node's hybrid logical clock.
    pub fn clock(&self) -> &Hlc {
        &self.clock
    }

    fn next_version(&self, now: u64) -> Version {
        Version {
            hlc: self.clock.tick(now),
            origin: self.origin,
        }
    }

    fn lock(&self, slot: Slot) -> MutexGuard<'_, SlotData> {
        self.slots[usize::from(slot)].0.lock()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Removes `key` if it has expired at `now`. Returns whether a live entry remains.
    fn reap(&self, s: &mut SlotData, key: &[u8], hash: u64, now: u64) -> bool {
        match s.map.find(hash, |e| e.key() == key) {
            None => false,
            Some(e) if e.is_expired(now) => {
                self.remove(s, key, hash);
                self.expired.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(_) => true,
        }
    }

    fn forget(&self, s: &mut SlotData, e: &Entry) {
        s.digest ^= entry_hash(e.key(), &e.version());
        self.keys.fetch_sub(1, Ordering::Relaxed);
        if e.expire_at() != 0 {
            s.volatile -= 1;
            self.volatile.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, s: &mut SlotData, key: &[u8], hash: u64) -> Option<Entry> {
        let (e, _) = s.map.find_entry(hash, |e| e.key() == key).ok()?.remove();
        self.forget(s, &e);
        // Give memory back when a table is mostly empty (hashbrown never shrinks on its own).
        if s.map.capacity() > 64 && s.map.len() * 8 < s.map.capacity() {
            s.map.shrink_to(s.map.len() * 2, |e| self.hash(e.key()));
        }
        Some(e)
    }

    fn insert(&self, s: &mut SlotData, key: &[u8], hash: u64, mut e: Entry, now: u64) {
        if let Some(old) = self.remove_quiet(s, key, hash) {
            // Callers remove first; keep the books right if one does not.
            self.forget(s, &old);
        }
        e.set_version(self.next_version(now));
        s.digest ^= entry_hash(key, &e.version());
        if e.expire_at() != 0 {
            s.volatile += 1;
            self.volatile.fetch_add(1, Ordering::Relaxed);
        }
        self.keys.fetch_add(1, Ordering::Relaxed);
        s.map.insert_unique(hash, e, |e| self.hash(e.key()));
    }

    fn remove_quiet(&self, s: &mut SlotData, key: &[u8], hash: u64) -> Option<Entry> {
        s.map.find_entry(hash, |e| e.key() == key).ok().map(|o| o.remove().0)
    }

    /// Applies one operation to one key: one hash lookup for reads and in-place changes.
    pub fn apply(&self, key: &[u8], op: &Op<'_>, ctx: &Ctx) -> Outcome {
        let hash = self.hash(key);
        let mut guard = self.lock(key_slot(key));
        let s = &mut *guard;
        let mut expired = false;
        let (effect, out) = match s.map.find_mut(hash, |e| e.key() == key) {
            Some(e) if e.is_expired(ctx.now) => {
                expired = true;
                apply(op, key, None, ctx)
            }
            Some(e) => {
                let (old_version, had_ttl) = (e.version(), e.expire_at() != 0);
                let (effect, out) = apply(op, key, Some(&mut *e), ctx);
                if let Effect::Modified = effect {
                    let version = self.next_version(ctx.now);
                    e.set_version(version);
                    s.digest ^= entry_hash(key, &old_version) ^ entry_hash(key, &version);
                    let has_ttl = e.expire_at() != 0;
                    if has_ttl != had_ttl {
                        if has_ttl {
                            s.volatile += 1;
                            self.volatile.fetch_add(1, Ordering::Relaxed);
                        } else {
                            s.volatile -= 1;
                            self.volatile.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
                (effect, out)
            }
            None => apply(op, key, None, ctx),
        };
        if expired {
            self.remove(s, key, hash);
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        match effect {
            Effect::None | Effect::Modified => {}
            Effect::Created(e) => self.insert(s, key, hash, e, ctx.now),
            Effect::Deleted => {
                self.remove(s, key, hash);
            }
        }
        out
    }

    /// Locks the distinct slots of `keys` in ascending order (no deadlock between multi-key
    /// commands) and returns the guards with the slot each belongs to.
    fn lock_many(&self, keys: &[&[u8]]) -> Vec<(Slot, MutexGuard<'_, SlotData>)> {
        let mut slots: Vec<Slot> = keys.iter().map(|k| key_slot(k)).collect();
        slots.sort_unstable();
        slots.dedup();
        slots.into_iter().map(|s| (s, self.lock(s))).collect()
    }

    fn guard_for<'g, 'a>(
        guards: &'g mut [(Slot, MutexGuard<'a, SlotData>)],
        key: &[u8],
    ) -> &'g mut SlotData {
        let slot = key_slot(key);
        let i = guards
            .binary_search_by_key(&slot, |(s, _)| *s)
            .expect("slot locked");
        &mut guards[i].1
    }

    /// `MSET` (`nx == false`) or `MSETNX`: all pairs written atomically with respect to other
    /// commands on this node. Returns false (and writes nothing) if `nx` and any key exists.
    pub fn mset(&self, pairs: &[(&[u8], &[u8])], nx: bool, ctx: &Ctx) -> bool {
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| *k).collect();
        let mut guards = self.lock_many(&keys);
        if nx {
            for k in &keys {
                let s = Self::guard_for(&mut guards, k);
                if self.reap(s, k, self.hash(k), ctx.now) {
                    return false;
                }
            }
        }
        for (k, v) in pairs {
            let s = Self::guard_for(&mut guards, k);
            let hash = self.hash(k);
            self.remove(s, k, hash);
            self.insert(s, k, hash, Entry::new(k, v, 0, ctx.lru, EncodingHint::Auto), ctx.now);
        }
        true
    }

    /// `RENAME` (`nx == false`) or `RENAMENX`. `Err(())` if `src` does not exist; `Ok(false)` if
    /// `nx` and `dst` exists.
    #[allow(clippy::result_unit_err)]
    pub fn rename(&self, src: &[u8], dst: &[u8], nx: bool, ctx: &Ctx) -> Result<bool, ()> {
        let (hs, hd) = (self.hash(src), self.hash(dst));
        let mut guards = self.lock_many(&[src, dst]);
        let s = Self::guard_for(&mut guards, src);
        if !self.reap(s, src, hs, ctx.now) {
            return Err(());
        }
        if src == dst {
            return Ok(!nx);
        }
        let d = Self::guard_for(&mut guards, dst);
        if nx && self.reap(d, dst, hd, ctx.now) {
            return Ok(false);
        }
        let s = Self::guard_for(&mut guards, src);
        let e = self.remove(s, src, hs).expect("checked above");
        let moved = Entry::new(dst, e.value(), e.expire_at(), e.access(), e.enc());
        let d = Self::guard_for(&mut guards, dst);
        self.remove(d, dst, hd);
        self.insert(d, dst, hd, moved, ctx.now);
        Ok(true)
    }

    /// `COPY src dst [REPLACE]`: whether the copy happened (`src` exists, and `dst` does not or
    /// `replace`). The caller rejects `src == dst`.
    pub fn copy(&self, src: &[u8], dst: &[u8], replace: bool, ctx: &Ctx) -> bool {
        let (hs, hd) = (self.hash(src), self.hash(dst));
        let mut guards = self.lock_many(&[src, dst]);
        let s = Self::guard_for(&mut guards, src);
        if !self.reap(s, src, hs, ctx.now) {
            return false;
        }
        let e = s.map.find(hs, |e| e.key() == src).expect("live");
        let copy = Entry::new(dst, e.value(), e.expire_at(), ctx.lru, e.enc());
        let d = Self::guard_for(&mut guards, dst);
        if self.reap(d, dst, hd, ctx.now) && !replace {
            return false;
        }
        self.remove(d, dst, hd);
        self.insert(d, dst, hd, copy, ctx.now);
        true
    }

    /// Live keys matching `pattern` (all if `None`), in slot order.
    pub fn keys(&self, pattern: Option<&[u8]>, ctx: &Ctx) -> Vec<Bytes> {
        let mut out = Vec::new();
        for slot in 0..SLOTS {
            self.collect_slot(slot as Slot, pattern, ctx, &mut out);
        }
        out
    }

    fn collect_slot(&self, slot: Slot, pattern: Option<&[u8]>, ctx: &Ctx, out: &mut Vec<Bytes>) -> usize {
        // Redis treats a lone `*` as "everything" without running the matcher (which would not
        // match the empty key).
        let pattern = pattern.filter(|p| *p != b"*");
        let s = self.lock(slot);
        for e in s.map.iter() {
            if !e.is_expired(ctx.now) && pattern.is_none_or(|p| glob::matches(p, e.key())) {
                out.push(Bytes::copy_from_slice(e.key()));
            }
        }
        s.map.len()
    }

    /// One `SCAN` step. The cursor is the next slot to visit (0 starts, and 0 is returned when the
    /// iteration is over); each step returns whole slots until it has looked at about `count`
    /// keys, so a key present for the whole iteration is returned exactly once, and the cursor
    /// means the same on every node of a cluster.
    pub fn scan(
        &self,
        cursor: u64,
        pattern: Option<&[u8]>,
        count: usize,
        ctx: &Ctx,
    ) -> (u64, Vec<Bytes>) {
        let mut out = Vec::new();
        let mut slot = cursor.min(SLOTS as u64) as usize;
        let mut seen = 0;
        while slot < SLOTS && seen < count {
            seen += self.collect_slot(slot as Slot, pattern, ctx, &mut out);
            slot += 1;
        }
        let next = if slot >= SLOTS { 0 } else { slot as u64 };
        (next, out)
    }

    /// A random live key, or `None` if there is none.
    pub fn random_key<R: Rng>(&self, rng: &mut R, ctx: &Ctx) -> Option<Bytes> {
        if self.keys.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let start = rng.random_range(0..SLOTS);
        for i in 0..SLOTS {
            let slot = ((start + i) % SLOTS) as Slot;
            let s = self.lock(slot);
            let live: Vec<&Entry> = s.map.iter().filter(|e| !e.is_expired(ctx.now)).collect();
            if !live.is_empty() {
                return Some(Bytes::copy_from_slice(live[rng.random_range(0..live.len())].key()));
            }
        }
        None
    }

    /// Removes every key; returns the removed maps so the caller may free them elsewhere
    /// (`FLUSHALL ASYNC`).
    pub fn flush(&self) -> Vec<impl Send + 'static> {
        let mut dropped = Vec::new();
        for slot in self.slots.iter() {
            let mut s = slot.0.lock();
            if s.map.is_empty() {
                continue;
            }
            let n = s.map.len() as u64;
            let old = std::mem::take(&mut s.map);
            self.keys.fetch_sub(n, Ordering::Relaxed);
            self.volatile.fetch_sub(s.volatile as u64, Ordering::Relaxed);
            s.volatile = 0;
            s.digest = 0;
            dropped.push(old);
        }
        dropped
    }

    /// Reclaims expired keys: visits slots that hold keys with an expiry, starting where the
    /// previous cycle stopped, until `budget` entries have been examined or every slot was seen.
    pub fn expire_cycle(&self, now: u64, budget: usize) -> ExpireCycle {
        let mut r = ExpireCycle::default();
        if self.volatile.load(Ordering::Relaxed) == 0 {
            return r;
        }
        let mut slot = self.expire_cursor.load(Ordering::Relaxed) % SLOTS;
        while r.slots < SLOTS && r.examined < budget {
            let mut s = self.lock(slot as Slot);
            if s.volatile > 0 {
                r.examined += s.map.len();
                let dead: Vec<(u64, Box<[u8]>)> = s
                    .map
                    .iter()
                    .filter(|e| e.is_expired(now))
                    .map(|e| (self.hash(e.key()), e.key().into()))
                    .collect();
                for (hash, k) in dead {
                    self.remove(&mut s, &k, hash);
                    r.expired += 1;
                }
            }
            drop(s);
            r.slots += 1;
            slot = (slot + 1) % SLOTS;
        }
        self.expire_cursor.store(slot, Ordering::Relaxed);
        self.expired.fetch_add(r.expired as u64, Ordering::Relaxed);
        r
    }

    /// Current counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.keys.load(Ordering::Relaxed),
            volatile: self.volatile.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }

    /// Number of keys held (`DBSIZE`).
    pub fn len(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest and key count of one slot (for anti-entropy and tests).
    pub fn slot_summary(&self, slot: Slot) -> (u64, usize) {
        let s = self.lock(slot);
        (s.digest, s.map.len())
    }

    /// Recomputes a slot's digest from its entries (tests check it equals the maintained one).
    pub fn slot_digest_recomputed(&self, slot: Slot) -> u64 {
        let s = self.lock(slot);
        s.map.iter().fold(0, |d, e| d ^ entry_hash(e.key(), &e.version()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ExpiryChange, SetCond};
    use rand::SeedableRng;

    fn store() -> Store {
        Store::new(StoreConfig {
            hash_seed: 7,
            origin: 1,
        })
    }

    fn set<'a>(v: &'a [u8], expiry: ExpiryChange) -> Op<'a> {
        Op::Set {
            value: v,
            cond: SetCond::Always,
            expiry,
            get: false,
        }
    }

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<SlotCell>(), 64);
    }

    #[test]
    fn expired_keys_vanish_and_are_reclaimed() {
        let st = store();
        let ctx = Ctx::at(1000);
        st.apply(b"a", &set(b"1", ExpiryChange::At(1500)), &ctx);
        st.apply(b"b", &set(b"2", ExpiryChange::Clear), &ctx);
        assert_eq!(
            st.stats(),
            StoreStats {
                keys: 2,
                volatile: 1,
                expired: 0
            }
        );
        let later = Ctx::at(1501);
        assert_eq!(st.apply(b"a", &Op::Get, &later), Outcome::Nil);
        assert_eq!(st.stats().expired, 1);
        st.apply(b"c", &set(b"3", ExpiryChange::At(1600)), &later);
        let r = st.expire_cycle(1601, 1_000_000);
        assert_eq!(r.expired, 1);
        assert_eq!(
            st.stats(),
            StoreStats {
                keys: 1,
                volatile: 0,
                expired: 2
            }
        );
    }

    #[test]
    fn digests_track_every_change() {
        let st = store();
        let ctx = Ctx::at(1000);
        for i in 0..200u32 {
            let k = format!("{{t}}k{i}");
            st.apply(k.as_bytes(), &set(b"v", ExpiryChange::Clear), &ctx);
            if i % 3 == 0 {
                st.apply(k.as_bytes(), &Op::Append(b"x"), &ctx);
            }
            if i % 5 == 0 {
                st.apply(k.as_bytes(), &Op::Del, &ctx);
            }
        }
        st.rename(b"{t}k1", b"{t}moved", false, &ctx).unwrap();
        let slot = key_slot(b"{t}");
        assert_eq!(st.slot_summary(slot).0, st.slot_digest_recomputed(slot));
        assert_ne!(st.slot_summary(slot).0, 0);
    }

    #[test]
    fn scan_visits_every_key_once_while_keys_are_added() {
        let st = store();
        let ctx = Ctx::at(1000);
        for i in 0..1000 {
            st.apply(
                format!("k{i}").as_bytes(),
                &set(b"v", ExpiryChange::Clear),
                &ctx,
            );
        }
        let mut seen = std::collections::HashMap::new();
        let (mut cursor, mut steps) = (0, 0);
        loop {
            let (next, keys) = st.scan(cursor, None, 10, &ctx);
            for k in keys {
                *seen.entry(k).or_insert(0) += 1;
            }
            st.apply(
                format!("new{steps}").as_bytes(),
                &set(b"v", ExpiryChange::Clear),
                &ctx,
            );
            steps += 1;
            cursor = next;
            if cursor == 0 || steps > 20_000 {
                break;
            }
        }
        for i in 0..1000 {
            assert_eq!(seen.get(format!("k{i}").as_bytes()), Some(&1), "k{i}");
        }
    }

    #[test]
    fn msetnx_is_all_or_nothing_and_rename_keeps_ttl() {
        let st = store();
        let ctx = Ctx::at(1000);
        assert!(st.mset(&[(b"a", b"1"), (b"b", b"2")], true, &ctx));
        assert!(!st.mset(&[(b"c", b"3"), (b"b", b"2")], true, &ctx));
        assert_eq!(st.apply(b"c", &Op::Exists, &ctx), Outcome::Int(0));
        st.apply(
            b"a",
            &Op::Expire {
                at: 5000,
                cond: Default::default(),
            },
            &ctx,
        );
        assert_eq!(st.rename(b"a", b"z", false, &ctx), Ok(true));
        assert_eq!(
            st.apply(b"z", &Op::Ttl { ms: true }, &ctx),
            Outcome::Int(4000)
        );
        assert_eq!(st.rename(b"nope", b"z", false, &ctx), Err(()));
    }

    #[test]
    fn random_key_is_seeded_and_live() {
        let st = store();
        let ctx = Ctx::at(1000);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        assert_eq!(st.random_key(&mut rng, &ctx), None);
        st.apply(b"only", &set(b"v", ExpiryChange::Clear), &ctx);
        assert_eq!(st.random_key(&mut rng, &ctx).as_deref(), Some(&b"only"[..]));
    }
}
