//! The store: 16384 slots, each a map behind its own lock, with per-slot counts and an
//! order-independent digest of `(key, version)` kept up to date in O(1) per change.
//!
//! Every method takes time as an argument ([`Ctx`]); nothing here reads a clock. Expired keys are
//! invisible at once (checked on every access) and reclaimed either then or by
//! [`Store::expire_cycle`], which a driver calls periodically with a work budget.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use rand::Rng;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::db;
use crate::entry::{table_bytes, EncodingHint, Entry};
use crate::evict::{offer, Candidate, Policy, POOL_SIZE};
use crate::glob;
use crate::msg::State;
use crate::notify::Change;
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
    volatile: u32,
    /// Whether the slot may hold stored keys that name their database ([`crate::db`]): set by
    /// the first, cleared when the slot empties. While it is false, every key of the slot is a
    /// database-0 key as the client wrote it. (A flag, not a count: the cell stays one line.)
    marked: bool,
    /// This slot's number.
    slot: Slot,
    /// Tombstones of deleted keys (cluster mode only; allocated on the slot's first delete).
    tombs: Option<Box<Tombs>>,
}

/// A slot's tombstones: key -> the delete's version. They are purged by their version's time
/// ([`Store::purge_tombstones`]), a rule every replica applies alike, so replicas that hold the
/// same versions hold the same tombstones and their digests agree.
type Tombs = hashbrown::HashMap<Box<[u8]>, Version, ahash::RandomState>;

/// Promises made to read-before-write rounds ([`Store::prepare`]): key -> (ballot, expires at,
/// unix ms). Sharded by slot; a promise outlives the round that asked for it by at most its TTL.
type Promises = hashbrown::HashMap<Box<[u8]>, (Version, u64), ahash::RandomState>;

/// Buckets a slot's keys fall into for anti-entropy key lists ([`bucket_of`]): a large slot that
/// differs is listed bucket by bucket, only where the bucket digests differ.
pub const BUCKETS: usize = 16;

/// Seed of [`bucket_of`]'s hash (fixed: every node must bucket a key alike).
const BUCKET_SEED: u64 = 0x6275_636b_6574_7321;

/// The anti-entropy bucket of `key` (0..[`BUCKETS`]), the same on every node and release.
pub fn bucket_of(key: &[u8]) -> usize {
    (xxh3_64_with_seed(key, BUCKET_SEED) >> 60) as usize
}

/// Shards of the promise table (slot % this).
const PROMISE_SHARDS: usize = 64;

/// The slot every one of `keys` hashes to (`None` if there are none, or they span slots).
fn one_slot(keys: &[&[u8]]) -> Option<Slot> {
    let slot = key_slot(keys.first()?);
    keys.iter().all(|k| key_slot(k) == slot).then_some(slot)
}

/// What [`Store::offer`] did with a replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Stored: it was newer than anything held or promised.
    Stored,
    /// This exact version is already held (a duplicate delivery): as good as stored.
    Duplicate,
    /// Refused: this node holds, or has promised, this newer version (or the FLUSHALL horizon is
    /// newer). The sender's write did not take effect here.
    Refused(Version),
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
    pub origin: u32,
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
    /// Keys evicted for memory.
    pub evicted: u64,
    /// Memory the keys take (entries and their table buckets), bytes.
    pub bytes: u64,
    /// Tombstones purged past their time.
    pub tombstones_purged: u64,
    /// Replicated states refused for a newer version held (`dist.version.conflicts`).
    pub conflicts: u64,
    /// Keys changed by commands applied here (Redis's `dirty`, INFO's
    /// `rdb_changes_since_last_save`: nothing is ever saved).
    pub changes: u64,
}

/// The key-value store of one node.
#[derive(Debug)]
pub struct Store {
    slots: Box<[SlotCell]>,
    /// Whether keys expired or evicted are recorded in `journal` (keyspace notifications).
    journal_on: AtomicBool,
    /// Keys expired or evicted since the driver last took them ([`Store::take_journal`]).
    journal: Mutex<Vec<(Lost, Bytes)>>,
    /// Whether keys expired or evicted are recorded in `repl_journal` (a Redis replica is
    /// attached: their deletions go to its stream).
    repl_journal_on: AtomicBool,
    /// Keys expired or evicted since the replication stream last took them
    /// ([`Store::take_repl_journal`]).
    repl_journal: Mutex<Vec<Bytes>>,
    /// `repl_journal` holds something (checked without its lock on every command).
    repl_journal_pending: AtomicBool,
    /// Bit per slot: the slot holds at least one key.
    occupied: Box<[AtomicU64]>,
    /// See [`Store::set_replica_mode`].
    replica_mode: AtomicBool,
    /// Bit per slot: the slot holds at least one key with an expiry.
    volatile_slots: Box<[AtomicU64]>,
    /// Sum of the entries' footprints (`Entry::footprint`).
    bytes: AtomicU64,
    /// Keys evicted for memory.
    evicted: AtomicU64,
    /// Eviction candidates kept between evictions.
    pool: Mutex<Vec<Candidate>>,
    hasher: ahash::RandomState,
    clock: Hlc,
    origin: u32,
    keys: AtomicU64,
    volatile: AtomicU64,
    expired: AtomicU64,
    /// See [`StoreStats::changes`].
    changes: AtomicU64,
    expire_cursor: AtomicUsize,
    /// Whether deletes leave tombstones (on in a cluster with more than one replica per slot).
    tombstones: AtomicBool,
    /// Tombstones held.
    tomb_count: AtomicU64,
    /// Tombstones purged past their time (the FLUSHALL horizon's included).
    tombs_purged: AtomicU64,
    /// Replicated states refused because this node held a newer version of the key (concurrent
    /// writes resolved by last-write-wins, or a stale copy offered by repair).
    conflicts: AtomicU64,
    /// FLUSHALL horizon (an HLC value): nothing older exists or is accepted.
    horizon: AtomicU64,
    /// FLUSHDB horizons, by database: nothing of that database older exists or is accepted.
    db_horizons: Box<[AtomicU64]>,
    /// Keys and keys with an expiry of each database, counted for stored keys that name their
    /// database ([`crate::db`]); database 0's ordinary keys are the rest of [`Store::len`].
    db_keys: Box<[(AtomicU64, AtomicU64)]>,
    /// Estimated average time to live (ms) of each database's keys with an expiry, kept as Redis
    /// keeps `avg_ttl`: a running average over the keys each expire cycle looks at, the newest
    /// sample weighing 2% ([`Store::avg_ttl`]).
    avg_ttl: Box<[AtomicU64]>,
    /// How long a tombstone lives after its version's time, ms (0: for ever).
    tomb_ttl: AtomicU64,
    /// Promises of read-before-write rounds, by slot shard ([`Store::prepare`]).
    promises: Box<[Mutex<Promises>]>,
    /// Promise entries held (0 lets replicated writes skip the promise table).
    promised: AtomicU64,
}

fn entry_hash(key: &[u8], v: &Version) -> u64 {
    xxh3_64_with_seed(key, v.hlc ^ (u64::from(v.origin) << 32))
}

/// Why a key left the store without a command (see [`Store::take_journal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Its expiry passed.
    Expired,
    /// It was evicted for `maxmemory`.
    Evicted,
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
        let bitmap = || {
            (0..SLOTS / 64)
                .map(|_| AtomicU64::new(0))
                .collect::<Box<[_]>>()
        };
        Store {
            slots: (0..SLOTS)
                .map(|i| {
                    SlotCell(Mutex::new(SlotData {
                        slot: i as Slot,
                        ..SlotData::default()
                    }))
                })
                .collect(),
            occupied: bitmap(),
            replica_mode: AtomicBool::new(false),
            volatile_slots: bitmap(),
            bytes: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            journal_on: AtomicBool::new(false),
            journal: Mutex::new(Vec::new()),
            repl_journal_on: AtomicBool::new(false),
            repl_journal: Mutex::new(Vec::new()),
            repl_journal_pending: AtomicBool::new(false),
            pool: Mutex::new(Vec::with_capacity(POOL_SIZE)),
            hasher: ahash::RandomState::with_seeds(seed, !seed, seed.rotate_left(17), 0x9e37_79b9),
            clock: Hlc::new(),
            origin: config.origin,
            keys: AtomicU64::new(0),
            volatile: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            expire_cursor: AtomicUsize::new(0),
            tombstones: AtomicBool::new(false),
            tomb_count: AtomicU64::new(0),
            tombs_purged: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            horizon: AtomicU64::new(0),
            db_horizons: (0..db::MAX_DATABASES).map(|_| AtomicU64::new(0)).collect(),
            db_keys: (0..db::MAX_DATABASES)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            avg_ttl: (0..db::MAX_DATABASES).map(|_| AtomicU64::new(0)).collect(),
            tomb_ttl: AtomicU64::new(0),
            promises: (0..PROMISE_SHARDS)
                .map(|i| {
                    Mutex::new(Promises::with_hasher(ahash::RandomState::with_seeds(
                        seed ^ i as u64,
                        !seed,
                        seed.rotate_left(29),
                        0x85eb_ca6b,
                    )))
                })
                .collect(),
            promised: AtomicU64::new(0),
        }
    }

    /// Makes deletes leave tombstones (or not). A cluster needs them so that an older write
    /// arriving late cannot bring a deleted key back; a single node does not.
    pub fn set_tombstones(&self, on: bool) {
        self.tombstones.store(on, Ordering::Relaxed);
    }

    /// Sets how long a tombstone lives after its version's time, ms (0: for ever). The same on
    /// every node: it decides which tombstones exist, hence the digests.
    pub fn set_tombstone_ttl(&self, ms: u64) {
        self.tomb_ttl.store(ms, Ordering::Relaxed);
    }

    /// Whether a tombstone at `v` is past its time at `now` (purged, and not kept if received).
    pub fn tomb_expired(&self, v: Version, now: u64) -> bool {
        let ttl = self.tomb_ttl.load(Ordering::Relaxed);
        ttl != 0 && v.millis().saturating_add(ttl) < now
    }

    /// Tombstones currently held.
    pub fn tombstones(&self) -> u64 {
        self.tomb_count.load(Ordering::Relaxed)
    }

    /// The node's hybrid logical clock.
    pub fn clock(&self) -> &Hlc {
        &self.clock
    }

    /// A new version from this node's clock (greater than every version it issued or observed).
    pub fn new_version(&self, now: u64) -> Version {
        self.next_version(now)
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

    /// Removes `key` if it has expired (unless this store is a replica's, [`Store::set_replica_mode`]).
    /// Returns whether a live entry remains (an expired one counts as live for `keep_expired`).
    fn reap(&self, s: &mut SlotData, key: &[u8], hash: u64, ctx: &Ctx) -> bool {
        match s.map.find(hash, |e| e.key() == key) {
            None => false,
            Some(_) if ctx.keep_expired => true,
            Some(e) if e.is_expired(ctx.now) => {
                if !self.is_replica() {
                    self.remove_expired(s, key, hash, ctx.now);
                }
                false
            }
            Some(_) => true,
        }
    }

    /// While this node replicates a Redis primary: keys are never expired here (no expiry
    /// cycle, no removal when a client finds one past its time: clients just do not see it),
    /// as on a Redis replica; the primary expires them and sends their `DEL`.
    pub fn set_replica_mode(&self, on: bool) {
        self.replica_mode.store(on, Ordering::Release);
    }

    fn is_replica(&self) -> bool {
        self.replica_mode.load(Ordering::Relaxed)
    }

    /// Removes an expired entry. With tombstones on (a cluster), it leaves one at the entry's
    /// version: a replica that missed the write that set the expiry may still hold an older,
    /// unexpiring value, and without the tombstone a repair would bring that value back.
    fn remove_expired(&self, s: &mut SlotData, key: &[u8], hash: u64, now: u64) {
        if let Some(e) = self.remove(s, key, hash) {
            self.expired.fetch_add(1, Ordering::Relaxed);
            self.note(Lost::Expired, key);
            if self.tombstones.load(Ordering::Relaxed) {
                self.tomb(s, key, e.version(), now);
            }
        }
    }

    /// Counts `n` keys changed by commands (see [`StoreStats::changes`]): the store counts what
    /// it applies itself; a cluster's driver counts the writes its coordinator acknowledged.
    pub fn add_changes(&self, n: u64) {
        self.changes.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a key lost to expiry or eviction, while the journal is on.
    fn note(&self, why: Lost, key: &[u8]) {
        if self.journal_on.load(Ordering::Relaxed) {
            self.journal.lock().push((why, Bytes::copy_from_slice(key)));
        }
        if self.repl_journal_on.load(Ordering::Relaxed) {
            self.repl_journal.lock().push(Bytes::copy_from_slice(key));
            self.repl_journal_pending.store(true, Ordering::Release);
        }
    }

    /// Starts (or stops, dropping what it holds) recording the keys this store expires or
    /// evicts for the replication stream ([`Store::take_repl_journal`]).
    pub fn set_repl_journal(&self, on: bool) {
        self.repl_journal_on.store(on, Ordering::Relaxed);
        if !on {
            self.repl_journal.lock().clear();
            self.repl_journal_pending.store(false, Ordering::Release);
        }
    }

    /// The keys (stored form) expired or evicted since the last call, in order.
    pub fn take_repl_journal(&self) -> Vec<Bytes> {
        if !self.repl_journal_pending() {
            return Vec::new();
        }
        let mut j = self.repl_journal.lock();
        self.repl_journal_pending.store(false, Ordering::Release);
        std::mem::take(&mut *j)
    }

    /// Whether keys expired or evicted wait in the replication journal.
    #[inline]
    pub fn repl_journal_pending(&self) -> bool {
        self.repl_journal_pending.load(Ordering::Acquire)
    }

    /// Keys changed by commands so far ([`StoreStats::changes`]), without the other counters.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Calls `f` with every live key (stored form), its value and its expiry (unix ms, 0: none)
    /// at `now`, a slot at a time under its lock: a consistent copy only while no command runs.
    pub fn for_each_live(&self, now: u64, mut f: impl FnMut(&[u8], &[u8], u64)) {
        let mut next = self.next_occupied(0);
        while let Some(slot) = next {
            let s = self.lock(slot);
            for e in s.map.iter() {
                if !e.is_expired(now) {
                    f(e.key(), e.value(), e.expire_at());
                }
            }
            drop(s);
            next = self.next_occupied(usize::from(slot) + 1);
        }
    }

    /// Starts (or stops, dropping what it holds) recording the keys this store expires or
    /// evicts, for keyspace notifications of those classes.
    pub fn set_journal(&self, on: bool) {
        self.journal_on.store(on, Ordering::Relaxed);
        if !on {
            self.journal.lock().clear();
        }
    }

    /// The keys expired or evicted since the last call, in order (empty while the journal is
    /// off).
    pub fn take_journal(&self) -> Vec<(Lost, Bytes)> {
        if !self.journal_on.load(Ordering::Relaxed) {
            return Vec::new();
        }
        std::mem::take(&mut *self.journal.lock())
    }

    fn forget(&self, s: &mut SlotData, e: &Entry) {
        s.digest ^= entry_hash(e.key(), &e.version());
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.bytes
            .fetch_sub(e.footprint() as u64, Ordering::Relaxed);
        if e.expire_at() != 0 {
            s.volatile -= 1;
            self.volatile.fetch_sub(1, Ordering::Relaxed);
        }
        if e.key().first() == Some(&db::MARK) {
            self.count_db(e.key(), -1, -i64::from(e.expire_at() != 0));
        }
        if s.map.is_empty() {
            s.marked = false;
        }
        self.sync_bits(s);
    }

    /// Keeps [`Store::db_keys`] for a stored key that names its database.
    fn count_db(&self, key: &[u8], keys: i64, volatile: i64) {
        let (k, v) = &self.db_keys[usize::from(db::of(key))];
        if keys != 0 {
            k.fetch_add(keys as u64, Ordering::Relaxed);
        }
        if volatile != 0 {
            v.fetch_add(volatile as u64, Ordering::Relaxed);
        }
    }

    /// Accounts a slot table's growth or shrinkage in `bytes`.
    fn table_resized(&self, before: usize, after: usize) {
        if before != after {
            let delta = table_bytes(after) as i64 - table_bytes(before) as i64;
            self.bytes.fetch_add(delta as u64, Ordering::Relaxed);
        }
    }

    /// Keeps the occupancy bitmaps in step with a slot whose counts just changed (under its lock).
    fn sync_bits(&self, s: &SlotData) {
        let (word, bit) = (usize::from(s.slot) / 64, 1u64 << (s.slot % 64));
        for (map, on) in [
            (&self.occupied, !s.map.is_empty()),
            (&self.volatile_slots, s.volatile > 0),
        ] {
            let cur = map[word].load(Ordering::Relaxed) & bit != 0;
            if cur != on {
                if on {
                    map[word].fetch_or(bit, Ordering::Relaxed);
                } else {
                    map[word].fetch_and(!bit, Ordering::Relaxed);
                }
            }
        }
    }

    /// The first slot at or after `from` (wrapping) whose bit is set in `map`.
    fn next_set(map: &[AtomicU64], from: usize) -> Option<Slot> {
        let words = map.len();
        let (w0, b0) = (from / 64, from % 64);
        for i in 0..=words {
            let w = (w0 + i) % words;
            let mut bits = map[w].load(Ordering::Relaxed);
            if i == 0 {
                bits &= !0u64 << b0;
            }
            if bits != 0 {
                return Some((w * 64 + bits.trailing_zeros() as usize) as Slot);
            }
        }
        None
    }

    /// The first occupied slot at or after `from`, without wrapping.
    fn next_occupied(&self, from: usize) -> Option<Slot> {
        if from >= SLOTS {
            return None;
        }
        Self::next_set(&self.occupied, from).filter(|s| usize::from(*s) >= from)
    }

    fn remove(&self, s: &mut SlotData, key: &[u8], hash: u64) -> Option<Entry> {
        let (e, _) = s.map.find_entry(hash, |e| e.key() == key).ok()?.remove();
        self.forget(s, &e);
        // Give memory back when a table is mostly empty (hashbrown never shrinks on its own).
        if s.map.capacity() > 64 && s.map.len() * 8 < s.map.capacity() {
            let before = s.map.capacity();
            s.map.shrink_to(s.map.len() * 2, |e| self.hash(e.key()));
            self.table_resized(before, s.map.capacity());
        }
        Some(e)
    }

    fn insert(&self, s: &mut SlotData, key: &[u8], hash: u64, e: Entry, now: u64) {
        self.insert_versioned(s, key, hash, e, self.next_version(now));
    }

    fn insert_versioned(
        &self,
        s: &mut SlotData,
        key: &[u8],
        hash: u64,
        e: Entry,
        version: Version,
    ) {
        if let Some(old) = self.remove_quiet(s, key, hash) {
            // Callers remove first; keep the books right if one does not.
            self.forget(s, &old);
        }
        self.insert_absent(s, key, hash, e, version);
    }

    /// Inserts an entry for a key the slot does not hold (the caller just looked).
    fn insert_absent(
        &self,
        s: &mut SlotData,
        key: &[u8],
        hash: u64,
        mut e: Entry,
        version: Version,
    ) {
        if s.tombs.is_some() {
            self.untomb(s, key);
        }
        e.set_version(version);
        s.digest ^= entry_hash(key, &e.version());
        if e.expire_at() != 0 {
            s.volatile += 1;
            self.volatile.fetch_add(1, Ordering::Relaxed);
        }
        if key.first() == Some(&db::MARK) {
            s.marked = true;
            self.count_db(key, 1, i64::from(e.expire_at() != 0));
        }
        self.keys.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(e.footprint() as u64, Ordering::Relaxed);
        let before = s.map.capacity();
        s.map.insert_unique(hash, e, |e| self.hash(e.key()));
        self.table_resized(before, s.map.capacity());
        self.sync_bits(s);
    }

    /// Drops `key`'s tombstone, if any (a newer write replaces it).
    fn untomb(&self, s: &mut SlotData, key: &[u8]) {
        if let Some(t) = s.tombs.as_mut() {
            if let Some(v) = t.remove(key) {
                s.digest ^= entry_hash(key, &v);
                self.tomb_count.fetch_sub(1, Ordering::Relaxed);
                if t.is_empty() {
                    s.tombs = None;
                }
            }
        }
    }

    /// Records a tombstone for `key` at `version` (replacing an older one), unless it is already
    /// past its time at `now` (then an older tombstone of the key goes too).
    fn tomb(&self, s: &mut SlotData, key: &[u8], version: Version, now: u64) {
        if self.tomb_expired(version, now) {
            self.untomb(s, key);
            return;
        }
        let t = s
            .tombs
            .get_or_insert_with(|| Box::new(Tombs::with_hasher(self.hasher.clone())));
        match t.insert(key.into(), version) {
            Some(old) => s.digest ^= entry_hash(key, &old),
            None => {
                self.tomb_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        s.digest ^= entry_hash(key, &version);
    }

    /// Keeps the books after an entry changed in place: `was` and `now` are its (version, has an
    /// expiry, footprint) before and after.
    fn changed_in_place(
        &self,
        s: &mut SlotData,
        key: &[u8],
        was: (Version, bool, usize),
        now: (Version, bool, usize),
    ) {
        s.digest ^= entry_hash(key, &was.0) ^ entry_hash(key, &now.0);
        if now.2 != was.2 {
            self.bytes
                .fetch_add(now.2.wrapping_sub(was.2) as u64, Ordering::Relaxed);
        }
        if now.1 != was.1 {
            if now.1 {
                s.volatile += 1;
                self.volatile.fetch_add(1, Ordering::Relaxed);
            } else {
                s.volatile -= 1;
                self.volatile.fetch_sub(1, Ordering::Relaxed);
            }
            if key.first() == Some(&db::MARK) {
                self.count_db(key, 0, if now.1 { 1 } else { -1 });
            }
            self.sync_bits(s);
        }
    }

    fn remove_quiet(&self, s: &mut SlotData, key: &[u8], hash: u64) -> Option<Entry> {
        s.map
            .find_entry(hash, |e| e.key() == key)
            .ok()
            .map(|o| o.remove().0)
    }

    /// Applies one operation to one key: one hash lookup for reads and in-place changes.
    pub fn apply(&self, key: &[u8], op: &Op<'_>, ctx: &Ctx) -> Outcome {
        self.apply_inner(key, op, ctx, false).0
    }

    /// Applies one operation and also says what it did to the key (`None`: nothing), for
    /// keyspace notifications.
    pub fn apply_noting(&self, key: &[u8], op: &Op<'_>, ctx: &Ctx) -> (Outcome, Option<Change>) {
        let (o, _, change) = self.apply_inner(key, op, ctx, false);
        (o, change)
    }

    /// Applies one operation as the key's coordinator: also returns the key's new state when the
    /// operation changed it (the value to replicate), or `None` if nothing changed.
    pub fn apply_versioned(&self, key: &[u8], op: &Op<'_>, ctx: &Ctx) -> (Outcome, Option<State>) {
        let (o, st, _) = self.apply_inner(key, op, ctx, true);
        (o, st)
    }

    /// [`Store::apply_versioned`], and what the operation did to the key.
    pub fn apply_versioned_noting(
        &self,
        key: &[u8],
        op: &Op<'_>,
        ctx: &Ctx,
    ) -> (Outcome, Option<State>, Option<Change>) {
        self.apply_inner(key, op, ctx, true)
    }

    fn apply_inner(
        &self,
        key: &[u8],
        op: &Op<'_>,
        ctx: &Ctx,
        capture: bool,
    ) -> (Outcome, Option<State>, Option<Change>) {
        let hash = self.hash(key);
        let mut guard = self.lock(key_slot(key));
        let s = &mut *guard;
        let mut expired = false;
        let mut changed = None;
        let (effect, out) = match s.map.find_mut(hash, |e| e.key() == key) {
            Some(e) if !ctx.keep_expired && e.is_expired(ctx.now) => {
                expired = true;
                apply(op, key, None, ctx)
            }
            Some(e) => {
                let (old_version, had_ttl, old_size) =
                    (e.version(), e.expire_at() != 0, e.footprint());
                let (effect, out) = apply(op, key, Some(&mut *e), ctx);
                if let Effect::Modified = effect {
                    let version = self.next_version(ctx.now);
                    e.set_version(version);
                    if capture {
                        changed = Some(live_state(e));
                    }
                    let now = (version, e.expire_at() != 0, e.footprint());
                    self.changed_in_place(s, key, (old_version, had_ttl, old_size), now);
                }
                (effect, out)
            }
            None => apply(op, key, None, ctx),
        };
        // A replica's expired key stays for its primary's DEL unless this write replaces it.
        if expired && (!self.is_replica() || !matches!(effect, Effect::None)) {
            self.remove_expired(s, key, hash, ctx.now);
        }
        let change = match &effect {
            Effect::None => None,
            Effect::Modified => Some(Change::Modified),
            Effect::Created(_) => Some(Change::Created),
            Effect::Deleted => Some(Change::Deleted),
        };
        if change.is_some() && !capture {
            self.add_changes(1);
        }
        match effect {
            Effect::None | Effect::Modified => {}
            Effect::Created(e) => {
                let version = self.next_version(ctx.now);
                if capture {
                    let mut st = live_state(&e);
                    if let State::Live { version: v, .. } = &mut st {
                        *v = version;
                    }
                    changed = Some(st);
                }
                // Missing (or its expired entry was just removed): no second lookup needed.
                self.insert_absent(s, key, hash, e, version);
            }
            Effect::Deleted => {
                self.remove(s, key, hash);
                if capture || self.tombstones.load(Ordering::Relaxed) {
                    let version = self.next_version(ctx.now);
                    if self.tombstones.load(Ordering::Relaxed) {
                        self.tomb(s, key, version, ctx.now);
                    }
                    changed = Some(State::Dead(version));
                }
            }
        }
        (out, changed, change)
    }

    /// What `WATCH` remembers of `key` on this node: the version of its entry and whether that
    /// entry had expired at `now`, or `None` when it holds no entry. Any write gives the key a
    /// new version, so comparing two marks tells whether it changed in between (a key created
    /// and deleted again in between is the one change two marks cannot see).
    pub fn watch_mark(&self, key: &[u8], now: u64) -> Option<(Version, bool)> {
        let hash = self.hash(key);
        let s = self.lock(key_slot(key));
        s.map
            .find(hash, |e| e.key() == key)
            .map(|e| (e.version(), e.is_expired(now)))
    }

    /// What this node holds for `key`, without touching its access time: the live value, its
    /// tombstone (or the FLUSHALL horizon), or `Missing`. An expired value is reported as held
    /// (with its version), so that an older write cannot win over it.
    pub fn fetch(&self, key: &[u8]) -> State {
        let hash = self.hash(key);
        let s = self.lock(key_slot(key));
        self.fetch_in(&s, key, hash)
    }

    fn fetch_in(&self, s: &SlotData, key: &[u8], hash: u64) -> State {
        if let Some(e) = s.map.find(hash, |e| e.key() == key) {
            return live_state(e);
        }
        if let Some(v) = s.tombs.as_ref().and_then(|t| t.get(key)) {
            return State::Dead(*v);
        }
        self.horizon_state(key)
    }

    /// The live promise for `key` at `now`, if any (the caller holds the key's slot lock).
    fn promise_of(&self, slot: Slot, key: &[u8], now: u64) -> Option<Version> {
        if self.promised.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let p = self.promises[usize::from(slot) % PROMISE_SHARDS].lock();
        p.get(key).filter(|(_, exp)| *exp > now).map(|(v, _)| *v)
    }

    /// Drops `key`'s promise if `version` supersedes it (the caller holds the slot lock).
    fn settle_promise(&self, slot: Slot, key: &[u8], version: Version) {
        if self.promised.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut p = self.promises[usize::from(slot) % PROMISE_SHARDS].lock();
        if p.get(key).is_some_and(|(b, _)| *b <= version) {
            p.remove(key);
            self.promised.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The first phase of a read-modify-write coordinated at QUORUM/ALL (a single-decree Paxos
    /// round per write, as in CASPaxos): promises not to accept any replicated state older than
    /// `ballot` for `key` until `now + ttl_ms`, and returns what this node holds. Refused with the
    /// newer version when this node already holds or has promised one at least as new: the
    /// coordinator then retries with a higher ballot.
    ///
    /// Together with the rule in [`Store::offer`] this makes two coordinators that run a
    /// read-modify-write on the same key at once (their views of who is live differ) unable to
    /// both reach a quorum: a replica that promised the higher ballot refuses the lower one's
    /// value, and a replica that stored the lower one's value shows it to the higher one's round.
    pub fn prepare(
        &self,
        key: &[u8],
        ballot: Version,
        now: u64,
        ttl_ms: u64,
    ) -> Result<State, Version> {
        self.clock.observe(ballot.hlc);
        let hash = self.hash(key);
        let slot = key_slot(key);
        let s = self.lock(slot);
        let state = self.fetch_in(&s, key, hash);
        let mut p = self.promises[usize::from(slot) % PROMISE_SHARDS].lock();
        let promised = p.get(key).filter(|(_, exp)| *exp > now).map(|(v, _)| *v);
        let held = state.version().max(promised);
        if let Some(h) = held.filter(|h| *h >= ballot) {
            return Err(h);
        }
        if p.insert(key.into(), (ballot, now.saturating_add(ttl_ms)))
            .is_none()
        {
            self.promised.fetch_add(1, Ordering::Relaxed);
        }
        Ok(state)
    }

    /// Promise entries held (expired ones included until [`Store::purge_promises`]).
    pub fn promises(&self) -> u64 {
        self.promised.load(Ordering::Relaxed)
    }

    /// Drops promises that expired before `now`; returns how many were dropped.
    pub fn purge_promises(&self, now: u64) -> u64 {
        if self.promised.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut dropped = 0;
        for shard in self.promises.iter() {
            let mut p = shard.lock();
            let before = p.len();
            p.retain(|_, (_, exp)| *exp > now);
            dropped += (before - p.len()) as u64;
        }
        self.promised.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// The flush horizons this node holds, as the heartbeat reports them: `(None, h)` for the
    /// FLUSHALL horizon, `(Some(n), h)` for database n's FLUSHDB horizon; only those set.
    pub fn horizons(&self) -> Vec<(Option<u8>, u64)> {
        let dbs = self.db_horizons.iter().enumerate();
        std::iter::once((None, &self.horizon))
            .chain(dbs.map(|(d, h)| (u8::try_from(d).ok(), h)))
            .filter_map(|(db, h)| {
                let h = h.load(Ordering::Relaxed);
                (h != 0).then_some((db, h))
            })
            .collect()
    }

    /// The flushes a peer ran that this node missed (down, partitioned or restarted when they
    /// were sent), from the horizons the peer reports (`theirs`, as [`Store::horizons`]): each
    /// horizon above this node's own, as [`Store::flush_at`]'s arguments, for the caller to
    /// run. Each is claimed at once (this node's horizon is raised to it: nothing older is
    /// accepted from now on), so two peers' heartbeats that report one flush run it once. A
    /// horizon further ahead of `now` than [`crate::node::MAX_AHEAD_MS`] (a broken clock or a
    /// hostile peer) and a database this build does not have are left out. Without this, a
    /// member that missed a FLUSHALL served the flushed keys again, and once the others
    /// restarted (their horizons are not kept) it copied them back to them.
    pub fn claim_missed_flushes(
        &self,
        theirs: &[(Option<u8>, u64)],
        now: u64,
    ) -> Vec<(Version, Option<u8>)> {
        theirs
            .iter()
            .filter_map(|&(only, hlc)| {
                let mine = match only {
                    None => &self.horizon,
                    Some(d) => self.db_horizons.get(usize::from(d))?,
                };
                let v = Version { hlc, origin: 0 };
                (v.is_plausible(now, crate::node::MAX_AHEAD_MS)
                    && mine.fetch_max(hlc, Ordering::Relaxed) < hlc)
                    .then_some((v, only))
            })
            .collect()
    }

    /// Whether `state` of `key` is older than a flush this node ran: it is not accepted here,
    /// and is not passed on (a hint written before a FLUSHALL).
    pub fn is_flushed(&self, key: &[u8], state: &State) -> bool {
        state
            .version()
            .is_some_and(|v| v.hlc < self.horizon_of(key))
    }

    /// The FLUSHALL or FLUSHDB horizon that applies to `key` (0: none).
    fn horizon_of(&self, key: &[u8]) -> u64 {
        let all = self.horizon.load(Ordering::Relaxed);
        all.max(self.db_horizons[usize::from(db::of(key))].load(Ordering::Relaxed))
    }

    fn horizon_state(&self, key: &[u8]) -> State {
        match self.horizon_of(key) {
            0 => State::Missing,
            hlc => State::Dead(Version { hlc, origin: 0 }),
        }
    }

    /// Stores `state` for `key` if it is newer than what this node holds (last write wins,
    /// tombstones and the FLUSHALL horizon included). Advances the clock past its version either
    /// way. Returns whether anything changed.
    pub fn merge(&self, key: &[u8], state: &State, ctx: &Ctx) -> bool {
        self.offer(key, state, ctx) == Offered::Stored
    }

    /// Offers a replicated `state` for `key`: stored if its version is newer than what this node
    /// holds and not older than a live promise ([`Store::prepare`]); otherwise the answer names
    /// the newer version held. Advances the clock past the version either way.
    pub fn offer(&self, key: &[u8], state: &State, ctx: &Ctx) -> Offered {
        let Some(version) = state.version() else {
            return Offered::Duplicate;
        };
        let dead;
        let state = match state {
            // An expired value is its tombstone (it would be reclaimed at once).
            State::Live { expire_at, .. } if *expire_at != 0 && *expire_at <= ctx.now => {
                dead = State::Dead(version);
                &dead
            }
            _ => state,
        };
        self.clock.observe(version.hlc);
        let horizon = self.horizon_of(key);
        if version.hlc < horizon {
            return Offered::Refused(Version {
                hlc: horizon,
                origin: 0,
            });
        }
        let slot = key_slot(key);
        let mut guard = self.lock(slot);
        self.offer_in(&mut guard, slot, key, state, version, ctx)
    }

    /// [`Store::offer`] of a state that is not past the horizon (its version is `version`),
    /// with its slot `slot` locked (`s`).
    fn offer_in(
        &self,
        s: &mut SlotData,
        slot: Slot,
        key: &[u8],
        state: &State,
        version: Version,
        ctx: &Ctx,
    ) -> Offered {
        let hash = self.hash(key);
        if let Some(p) = self.promise_of(slot, key, ctx.now).filter(|p| *p > version) {
            // Held against a read-modify-write round in progress: its value wins.
            return match s.map.find(hash, |e| e.key() == key) {
                Some(e) if e.version() == version => Offered::Duplicate,
                _ => Offered::Refused(p),
            };
        }
        // One lookup: a newer value over an existing one is written in place (the common case
        // for a replica: the key is overwritten), with the books kept as `apply` keeps them.
        if let Some(e) = s.map.find_mut(hash, |e| e.key() == key) {
            let held = e.version();
            if held == version {
                return Offered::Duplicate;
            }
            if held > version {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                return Offered::Refused(held);
            }
            let State::Live {
                value,
                expire_at,
                enc,
                ..
            } = state
            else {
                // A tombstone replaces the value.
                self.remove(s, key, hash);
                self.tomb(s, key, version, ctx.now);
                self.settle_promise(slot, key, version);
                return Offered::Stored;
            };
            let (old_version, had_ttl, old_size) = (held, e.expire_at() != 0, e.footprint());
            e.set_value(value, *expire_at, EncodingHint::from_bits(*enc));
            e.set_version(version);
            let now = (version, e.expire_at() != 0, e.footprint());
            self.changed_in_place(s, key, (old_version, had_ttl, old_size), now);
            self.settle_promise(slot, key, version);
            return Offered::Stored;
        }
        if let Some(h) = s.tombs.as_ref().and_then(|t| t.get(key)) {
            if *h == version {
                return Offered::Duplicate;
            }
            if *h > version {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                return Offered::Refused(*h);
            }
        }
        match state {
            State::Missing => return Offered::Duplicate,
            State::Dead(v) => self.tomb(s, key, *v, ctx.now),
            State::Live {
                value,
                expire_at,
                enc,
                ..
            } => {
                let e = Entry::new(
                    key,
                    value,
                    *expire_at,
                    ctx.initial_access(),
                    EncodingHint::from_bits(*enc),
                );
                self.insert_absent(s, key, hash, e, version);
            }
        }
        self.settle_promise(slot, key, version);
        Offered::Stored
    }

    /// The first phase of a transaction's round on several keys of one slot
    /// ([`crate::group`]): [`Store::prepare`] of every key with one `ballot`, all or none, under
    /// the slot's lock. Returns each key's state in order, or the newest version held or
    /// promised for any of them when that is at least `ballot` (nothing is promised then).
    pub fn prepare_group(
        &self,
        keys: &[&[u8]],
        ballot: Version,
        now: u64,
        ttl_ms: u64,
    ) -> Result<Vec<State>, Version> {
        self.clock.observe(ballot.hlc);
        let Some(slot) = one_slot(keys) else {
            return Err(ballot);
        };
        let s = self.lock(slot);
        let mut p = self.promises[usize::from(slot) % PROMISE_SHARDS].lock();
        let mut states = Vec::with_capacity(keys.len());
        let mut newer: Option<Version> = None;
        for key in keys {
            let state = self.fetch_in(&s, key, self.hash(key));
            let promised = p.get(*key).filter(|(_, exp)| *exp > now).map(|(v, _)| *v);
            if let Some(h) = state.version().max(promised).filter(|h| *h >= ballot) {
                newer = newer.max(Some(h));
            }
            states.push(state);
        }
        if let Some(h) = newer {
            return Err(h);
        }
        let until = now.saturating_add(ttl_ms);
        for key in keys {
            if p.insert((*key).into(), (ballot, until)).is_none() {
                self.promised.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(states)
    }

    /// The second phase of a transaction's round on several keys of one slot: offers every
    /// entry ([`Store::offer`]), all or none, under the slot's lock. Refused (nothing stored)
    /// with the newest version that stands against one of them: held, promised or the horizon;
    /// `Duplicate` when every one is already held.
    pub fn offer_group(&self, entries: &[(Bytes, State)], ctx: &Ctx) -> Offered {
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| &k[..]).collect();
        let Some(slot) = one_slot(&keys) else {
            return Offered::Refused(Version::default());
        };
        let mut against: Option<Version> = None;
        for (key, state) in entries {
            let Some(version) = state.version() else {
                continue;
            };
            self.clock.observe(version.hlc);
            let horizon = self.horizon_of(key);
            if version.hlc < horizon {
                against = against.max(Some(Version {
                    hlc: horizon,
                    origin: 0,
                }));
            }
        }
        let mut guard = self.lock(slot);
        let s = &mut *guard;
        let mut fresh = 0;
        for (key, state) in entries {
            let Some(version) = state.version() else {
                continue;
            };
            let hash = self.hash(key);
            let held = match s.map.find(hash, |e| e.key() == &key[..]) {
                Some(e) => Some(e.version()),
                None => s.tombs.as_ref().and_then(|t| t.get(&key[..])).copied(),
            };
            if held == Some(version) {
                continue;
            }
            fresh += 1;
            let promised = self.promise_of(slot, key, ctx.now).filter(|p| *p > version);
            let newer = held.filter(|h| *h > version).max(promised);
            if newer.is_some() {
                against = against.max(newer);
            }
        }
        if let Some(v) = against {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            return Offered::Refused(v);
        }
        if fresh == 0 {
            return Offered::Duplicate;
        }
        for (key, state) in entries {
            let Some(version) = state.version() else {
                continue;
            };
            let dead;
            let state = match state {
                // An expired value is its tombstone, as in `offer`.
                State::Live { expire_at, .. } if *expire_at != 0 && *expire_at <= ctx.now => {
                    dead = State::Dead(version);
                    &dead
                }
                _ => state,
            };
            self.offer_in(s, slot, key, state, version, ctx);
        }
        Offered::Stored
    }

    /// Drops the tombstones past their time at `now` ([`Store::tomb_expired`]: their version's
    /// time plus the tombstone TTL); returns how many. Tombstones need only outlive the messages
    /// and repairs that could still carry an older version of their key.
    pub fn purge_tombstones(&self, now: u64) -> u64 {
        if self.tomb_count.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut purged = 0;
        for cell in self.slots.iter() {
            let mut guard = cell.0.lock();
            purged += self.purge_slot_tombs(&mut guard, now);
        }
        self.tomb_count.fetch_sub(purged, Ordering::Relaxed);
        self.tombs_purged.fetch_add(purged, Ordering::Relaxed);
        purged
    }

    /// Reads `key` (as GET does: expiry checked, access recorded) and hands the live value, or
    /// `None`, to `f` while the slot is locked, so the caller can encode it without a copy.
    pub fn read_with<R>(&self, key: &[u8], ctx: &Ctx, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let hash = self.hash(key);
        let mut guard = self.lock(key_slot(key));
        let s = &mut *guard;
        match s.map.find_mut(hash, |e| e.key() == key) {
            Some(e) if ctx.keep_expired || !e.is_expired(ctx.now) => {
                e.set_access(ctx.touched(e.access()));
                f(Some(e.value()))
            }
            Some(_) => {
                if !self.is_replica() {
                    self.remove_expired(s, key, hash, ctx.now);
                }
                f(None)
            }
            None => f(None),
        }
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
                if self.reap(s, k, self.hash(k), ctx) {
                    return false;
                }
            }
        }
        self.add_changes(pairs.len() as u64);
        for (k, v) in pairs {
            let s = Self::guard_for(&mut guards, k);
            let hash = self.hash(k);
            self.remove(s, k, hash);
            self.insert(
                s,
                k,
                hash,
                Entry::new(k, v, 0, ctx.initial_access(), EncodingHint::Auto),
                ctx.now,
            );
        }
        true
    }

    /// `BITOP`: `f` of the sources' values (`None` for a missing key) is stored at `dst` as a raw
    /// string without expiry, or `dst` is deleted when the result is empty, atomically with
    /// respect to other commands on this node. Returns the result's length, and whether `dst`
    /// existed before.
    pub fn bitop(
        &self,
        dst: &[u8],
        srcs: &[&[u8]],
        f: impl FnOnce(&[Option<&[u8]>]) -> Vec<u8>,
        ctx: &Ctx,
    ) -> (usize, bool) {
        let mut keys = srcs.to_vec();
        keys.push(dst);
        let mut guards = self.lock_many(&keys);
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(srcs.len());
        for k in srcs {
            let s = Self::guard_for(&mut guards, k);
            let hash = self.hash(k);
            values.push(self.reap(s, k, hash, ctx).then(|| {
                let e = s.map.find_mut(hash, |e| e.key() == *k).expect("live");
                e.set_access(ctx.touched(e.access()));
                e.value().to_vec()
            }));
        }
        let views: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        let result = f(&views);
        let d = Self::guard_for(&mut guards, dst);
        let hash = self.hash(dst);
        let existed = self.reap(d, dst, hash, ctx);
        if existed || !result.is_empty() {
            self.add_changes(1);
        }
        self.remove(d, dst, hash);
        if !result.is_empty() {
            let e = Entry::new(dst, &result, 0, ctx.initial_access(), EncodingHint::Raw);
            self.insert(d, dst, hash, e, ctx.now);
        }
        (result.len(), existed)
    }

    /// `RENAME` (`nx == false`) or `RENAMENX`. `Err(())` if `src` does not exist; `Ok(false)` if
    /// `nx` and `dst` exists.
    #[allow(clippy::result_unit_err)]
    pub fn rename(&self, src: &[u8], dst: &[u8], nx: bool, ctx: &Ctx) -> Result<bool, ()> {
        let (hs, hd) = (self.hash(src), self.hash(dst));
        let mut guards = self.lock_many(&[src, dst]);
        let s = Self::guard_for(&mut guards, src);
        if !self.reap(s, src, hs, ctx) {
            return Err(());
        }
        if src == dst {
            return Ok(!nx);
        }
        let d = Self::guard_for(&mut guards, dst);
        if nx && self.reap(d, dst, hd, ctx) {
            return Ok(false);
        }
        let s = Self::guard_for(&mut guards, src);
        let e = self.remove(s, src, hs).expect("checked above");
        let moved = Entry::new(dst, e.value(), e.expire_at(), e.access(), e.enc());
        let d = Self::guard_for(&mut guards, dst);
        self.remove(d, dst, hd);
        self.insert(d, dst, hd, moved, ctx.now);
        self.add_changes(1);
        Ok(true)
    }

    /// `COPY src dst [REPLACE]`: whether the copy happened (`src` exists, and `dst` does not or
    /// `replace`). The caller rejects `src == dst`.
    pub fn copy(&self, src: &[u8], dst: &[u8], replace: bool, ctx: &Ctx) -> bool {
        let (hs, hd) = (self.hash(src), self.hash(dst));
        let mut guards = self.lock_many(&[src, dst]);
        let s = Self::guard_for(&mut guards, src);
        if !self.reap(s, src, hs, ctx) {
            return false;
        }
        let e = s.map.find(hs, |e| e.key() == src).expect("live");
        let copy = Entry::new(dst, e.value(), e.expire_at(), ctx.initial_access(), e.enc());
        let d = Self::guard_for(&mut guards, dst);
        if self.reap(d, dst, hd, ctx) && !replace {
            return false;
        }
        self.remove(d, dst, hd);
        self.insert(d, dst, hd, copy, ctx.now);
        self.add_changes(1);
        true
    }

    /// Live keys of database `db` matching `pattern` (all if `None`), in slot order, as the
    /// client names them (without their database).
    pub fn keys(&self, db: u8, pattern: Option<&[u8]>, ctx: &Ctx) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut next = self.next_occupied(0);
        while let Some(slot) = next {
            self.collect_slot(slot, db, pattern, ctx, &mut out);
            next = self.next_occupied(usize::from(slot) + 1);
        }
        out
    }

    /// Adds the live keys of database `db` in `slot` that match `pattern` to `out` (without
    /// their database); returns how many entries the slot holds (the work done, for SCAN).
    fn collect_slot(
        &self,
        slot: Slot,
        db: u8,
        pattern: Option<&[u8]>,
        ctx: &Ctx,
        out: &mut Vec<Bytes>,
    ) -> usize {
        // Redis treats a lone `*` as "everything" without running the matcher (which would not
        // match the empty key).
        let pattern = pattern.filter(|p| *p != b"*");
        let s = self.lock(slot);
        if !s.marked && db != 0 {
            return s.map.len();
        }
        for e in s.map.iter() {
            let (in_db, key) = db::split(e.key());
            if in_db == db
                && !e.is_expired(ctx.now)
                && pattern.is_none_or(|p| glob::matches(p, key))
            {
                out.push(Bytes::copy_from_slice(key));
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
        db: u8,
        pattern: Option<&[u8]>,
        count: usize,
        ctx: &Ctx,
    ) -> (u64, Vec<Bytes>) {
        let mut out = Vec::new();
        let mut slot = cursor.min(SLOTS as u64) as usize;
        let mut seen = 0;
        while seen < count {
            // Empty slots are skipped through the occupancy bitmap, without locking them.
            let Some(next) = self.next_occupied(slot) else {
                slot = SLOTS;
                break;
            };
            seen += self.collect_slot(next, db, pattern, ctx, &mut out);
            slot = usize::from(next) + 1;
        }
        let next = if slot >= SLOTS { 0 } else { slot as u64 };
        (next, out)
    }

    /// A random live key of database `db` (without its database), or `None` if there is none.
    pub fn random_key<R: Rng>(&self, db: u8, rng: &mut R, ctx: &Ctx) -> Option<Bytes> {
        if self.len_db(db) == 0 {
            return None;
        }
        let eligible = |e: &Entry| db::of(e.key()) == db && !e.is_expired(ctx.now);
        let copy = |e: &Entry| Bytes::copy_from_slice(db::user_key(e.key()));
        // Bounded: expired-but-unreclaimed keys (and other databases' keys) are skipped, a few
        // slots at most.
        for _ in 0..64 {
            let slot = self.random_slot(false, rng)?;
            let s = self.lock(slot);
            let live: Vec<&Entry> = s.map.iter().filter(|e| eligible(e)).collect();
            if !live.is_empty() {
                return Some(copy(live[rng.random_range(0..live.len())]));
            }
        }
        // A database with few keys among many: one walk finds them.
        let mut all = Vec::new();
        let mut next = self.next_occupied(0);
        while let Some(slot) = next {
            let s = self.lock(slot);
            all.extend(s.map.iter().filter(|e| eligible(e)).map(copy));
            next = self.next_occupied(usize::from(slot) + 1);
        }
        (!all.is_empty()).then(|| all.swap_remove(rng.random_range(0..all.len())))
    }

    /// FLUSHALL in a cluster: removes every key and tombstone older than `horizon` and raises the
    /// horizon, below which no version is accepted any more (so a replica that missed the flush
    /// cannot bring keys back through repair). Anything newer than the flush stays.
    ///
    /// With `only` a database, this is its FLUSHDB: the horizon is that database's, and the
    /// other databases' keys stay.
    pub fn flush_at(&self, horizon: Version, only: Option<u8>) {
        self.clock.observe(horizon.hlc);
        match only {
            None => self.horizon.fetch_max(horizon.hlc, Ordering::Relaxed),
            Some(d) => self.db_horizons[usize::from(d)].fetch_max(horizon.hlc, Ordering::Relaxed),
        };
        let below =
            |k: &[u8], v: &Version| v.hlc < horizon.hlc && only.is_none_or(|d| db::of(k) == d);
        for cell in self.slots.iter() {
            let mut guard = cell.0.lock();
            let s = &mut *guard;
            if s.map.is_empty() && s.tombs.is_none() {
                continue;
            }
            // Writes newer than the flush (from a node whose clock is ahead) survive it.
            let dead: Vec<(u64, Box<[u8]>)> = s
                .map
                .iter()
                .filter(|e| below(e.key(), &e.version()))
                .map(|e| (self.hash(e.key()), e.key().into()))
                .collect();
            for (hash, k) in dead {
                self.remove(s, &k, hash);
            }
            if let Some(t) = s.tombs.as_mut() {
                let mut digest = s.digest;
                let mut purged = 0;
                t.retain(|k, v| {
                    let keep = !below(k, v);
                    if !keep {
                        digest ^= entry_hash(k, v);
                        purged += 1;
                    }
                    keep
                });
                s.digest = digest;
                self.tomb_count.fetch_sub(purged, Ordering::Relaxed);
                self.tombs_purged.fetch_add(purged, Ordering::Relaxed);
                if t.is_empty() {
                    s.tombs = None;
                }
            }
        }
        self.pool.lock().clear();
    }

    /// Removes every key (FLUSHALL on a single node), or every key of database `only`
    /// (FLUSHDB); returns the slot tables emptied whole, for the caller to free where it likes
    /// (`ASYNC`).
    pub fn flush(&self, only: Option<u8>) -> Vec<impl Send + 'static> {
        let mut dropped = Vec::new();
        let mut next = self.next_occupied(0);
        while let Some(slot) = next {
            let mut guard = self.lock(slot);
            let s = &mut *guard;
            // A slot of database-0 keys as written goes whole or not at all.
            let whole = match only {
                None => true,
                Some(db) => !s.marked && db == 0,
            };
            if whole {
                let (old, _) = self.take_values(s);
                s.digest = s
                    .tombs
                    .as_ref()
                    .map_or(0, |t| t.iter().fold(0, |d, (k, v)| d ^ entry_hash(k, v)));
                dropped.push(old);
            } else if s.marked {
                let db = only.unwrap_or_default();
                let gone: Vec<(u64, Box<[u8]>)> = s
                    .map
                    .iter()
                    .filter(|e| db::of(e.key()) == db)
                    .map(|e| (self.hash(e.key()), e.key().into()))
                    .collect();
                for (hash, k) in gone {
                    self.remove(s, &k, hash);
                }
            }
            self.sync_bits(s);
            drop(guard);
            next = self.next_occupied(usize::from(slot) + 1);
        }
        self.pool.lock().clear();
        dropped
    }

    /// Takes every value out of slot `s` (tombstones stay), with the store's counts: returns
    /// them (to be freed by the caller, off the lock) and their bytes. The digest is the
    /// caller's to set.
    fn take_values(&self, s: &mut SlotData) -> (HashTable<Entry>, u64) {
        let old = std::mem::take(&mut s.map);
        let bytes: u64 = old.iter().map(|e| e.footprint() as u64).sum::<u64>()
            + table_bytes(old.capacity()) as u64;
        self.keys.fetch_sub(old.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.volatile
            .fetch_sub(u64::from(s.volatile), Ordering::Relaxed);
        s.volatile = 0;
        if s.marked {
            for e in old.iter().filter(|e| e.key().first() == Some(&db::MARK)) {
                self.count_db(e.key(), -1, -i64::from(e.expire_at() != 0));
            }
            s.marked = false;
        }
        (old, bytes)
    }

    /// Drops everything held for `slot`, tombstones included: a slot this node no longer
    /// replicates, once the rebalance grace is over. Returns the entries dropped (values and
    /// tombstones) and their bytes; what is dropped is returned to be freed by the caller.
    pub fn drop_slot(&self, slot: Slot) -> (u64, u64, impl Send + 'static) {
        if usize::from(slot) >= SLOTS {
            return (0, 0, None);
        }
        let mut s = self.lock(slot);
        let (old, bytes) = self.take_values(&mut s);
        let tombs = s.tombs.take().map_or(0, |t| t.len() as u64);
        self.tomb_count.fetch_sub(tombs, Ordering::Relaxed);
        s.digest = 0;
        self.sync_bits(&s);
        drop(s);
        (old.len() as u64 + tombs, bytes, Some(old))
    }

    /// Reclaims expired keys: visits slots that hold keys with an expiry, starting where the
    /// previous cycle stopped, until `budget` entries have been examined or every slot was seen.
    pub fn expire_cycle(&self, now: u64, budget: usize) -> ExpireCycle {
        let mut r = ExpireCycle::default();
        if self.is_replica() {
            // A replica's keys expire when its primary says so (`set_replica_mode`).
            return r;
        }
        let mut from = self.expire_cursor.load(Ordering::Relaxed) % SLOTS;
        // Remaining times to live seen, by database: (database, sum ms, keys).
        let mut ttls: Vec<(u8, u64, u64)> = Vec::new();
        while r.slots < SLOTS && r.examined < budget {
            let Some(slot) = Self::next_set(&self.volatile_slots, from) else {
                break;
            };
            // Count the slots passed over (empty ones too) so that one cycle visits each at most
            // once: a search that wrapped around to a slot already seen ends the cycle.
            let passed = {
                let slot = usize::from(slot);
                if slot >= from {
                    slot - from + 1
                } else {
                    SLOTS - from + slot + 1
                }
            };
            if r.slots + passed > SLOTS {
                break;
            }
            r.slots += passed;
            let mut s = self.lock(slot);
            r.examined += s.map.len();
            let marked = s.marked;
            let mut dead: Vec<(u64, Box<[u8]>)> = Vec::new();
            for e in s.map.iter() {
                let at = e.expire_at();
                if at == 0 {
                    continue;
                }
                if now > at {
                    dead.push((self.hash(e.key()), e.key().into()));
                    continue;
                }
                let d = if marked { db::of(e.key()) } else { 0 };
                match ttls.iter_mut().find(|t| t.0 == d) {
                    Some(t) => {
                        t.1 = t.1.saturating_add(at - now);
                        t.2 += 1;
                    }
                    None => ttls.push((d, at - now, 1)),
                }
            }
            for (hash, k) in dead {
                self.remove_expired(&mut s, &k, hash, now);
                r.expired += 1;
            }
            drop(s);
            from = (usize::from(slot) + 1) % SLOTS;
        }
        self.expire_cursor.store(from, Ordering::Relaxed);
        for (d, sum, n) in ttls {
            let sample = sum / n;
            let cell = &self.avg_ttl[usize::from(d)];
            let avg = match cell.load(Ordering::Relaxed) {
                0 => sample,
                avg => avg,
            };
            cell.store((avg / 50) * 49 + sample / 50, Ordering::Relaxed);
        }
        r
    }

    /// Database `db`'s estimated average time to live of keys with an expiry, ms, as INFO's
    /// `avg_ttl`: 0 until an expire cycle has seen one of them, and 0 while the database holds
    /// none (read then, the estimate starts over from the next sample, as Redis's does when its
    /// cycle finds the database without such keys).
    pub fn avg_ttl(&self, db: u8) -> u64 {
        let cell = &self.avg_ttl[usize::from(db)];
        if self.db_stats(db).1 == 0 {
            cell.store(0, Ordering::Relaxed);
            return 0;
        }
        cell.load(Ordering::Relaxed)
    }

    /// A random slot that holds keys (with an expiry, if `volatile`), or `None` if there is none.
    fn random_slot<R: Rng>(&self, volatile: bool, rng: &mut R) -> Option<Slot> {
        let map = if volatile {
            &self.volatile_slots
        } else {
            &self.occupied
        };
        Self::next_set(map, rng.random_range(0..SLOTS))
    }

    /// Evicts one key according to `policy` (sampling `samples` keys per pool refill, as Redis
    /// does). Returns the footprint freed, or `None` if no key is eligible (or the policy is
    /// `noeviction`). The work is bounded: at most 16 pool refills.
    pub fn evict_one<R: Rng>(
        &self,
        policy: Policy,
        samples: usize,
        ctx: &Ctx,
        rng: &mut R,
    ) -> Option<usize> {
        if policy == Policy::NoEviction {
            return None;
        }
        let volatile = policy.volatile_only();
        let eligible = |e: &Entry| !volatile || e.expire_at() != 0;
        if policy.is_random() {
            for _ in 0..16 {
                let slot = self.random_slot(volatile, rng)?;
                let mut s = self.lock(slot);
                let Some(e) = Self::random_entry(&s, volatile, rng) else {
                    continue;
                };
                let key: Box<[u8]> = e.key().into();
                let e = self.remove(&mut s, &key, self.hash(&key))?;
                self.evicted.fetch_add(1, Ordering::Relaxed);
                self.note(Lost::Evicted, &key);
                return Some(e.footprint());
            }
            return None;
        }
        for _ in 0..16 {
            self.refill_pool(policy, samples, ctx, rng);
            loop {
                let Some(c) = self.pool.lock().pop() else {
                    break;
                };
                let mut s = self.lock(c.slot);
                let live = s
                    .map
                    .find(c.hash, |e| *e.key() == *c.key)
                    .is_some_and(eligible);
                if live {
                    let e = self.remove(&mut s, &c.key, c.hash)?;
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    self.note(Lost::Evicted, &c.key);
                    return Some(e.footprint());
                }
            }
        }
        None
    }

    /// A random entry of a slot (with an expiry, if `volatile`).
    fn random_entry<'s, R: Rng>(s: &'s SlotData, volatile: bool, rng: &mut R) -> Option<&'s Entry> {
        let count = if volatile {
            s.volatile as usize
        } else {
            s.map.len()
        };
        if count == 0 {
            return None;
        }
        let pick = rng.random_range(0..count);
        if volatile {
            s.map.iter().filter(|e| e.expire_at() != 0).nth(pick)
        } else {
            // Without a filter, skipping to the pick reads only bucket pointers, not entries.
            s.map.iter().nth(pick)
        }
    }

    /// Adds `samples` candidates to the pool: consecutive eligible keys of a random slot, from a
    /// random position in its table (continuing in further random slots when one holds fewer).
    /// This is Redis's `dictGetSomeKeys` locality: one slot lock and one table walk serve several
    /// samples, where one random slot per sample cost a slot, table and bucket miss each (writes
    /// under eviction ran at 0.76-0.83x Redis's rate). Ranking every key of a slot was tried too:
    /// a cache miss per key scored made writes under eviction 40% slower at 60 keys per slot.
    fn refill_pool<R: Rng>(&self, policy: Policy, samples: usize, ctx: &Ctx, rng: &mut R) {
        let volatile = policy.volatile_only();
        let want = samples.max(1);
        let mut found: Vec<Candidate> = Vec::with_capacity(want);
        for _ in 0..want {
            if found.len() >= want {
                break;
            }
            let Some(slot) = self.random_slot(volatile, rng) else {
                break;
            };
            let s = self.lock(slot);
            let count = if volatile {
                s.volatile as usize
            } else {
                s.map.len()
            };
            if count == 0 {
                continue;
            }
            let start = rng.random_range(0..count);
            let take = (want - found.len()).min(count);
            let eligible = |e: &&Entry| !volatile || e.expire_at() != 0;
            let picked = s
                .map
                .iter()
                .filter(eligible)
                .skip(start)
                .chain(s.map.iter().filter(eligible))
                .take(take);
            for e in picked {
                let score = match policy {
                    Policy::VolatileTtl => u64::MAX - e.expire_at(),
                    p if p.is_lfu() => 255 - u64::from(ctx.lfu_counter(e.access())),
                    _ => u64::from(ctx.idle_seconds(e.access())),
                };
                found.push(Candidate {
                    score,
                    slot,
                    hash: self.hash(e.key()),
                    key: e.key().into(),
                });
            }
        }
        let mut pool = self.pool.lock();
        for c in found {
            offer(&mut pool, c);
        }
    }

    /// Bytes `key` takes (its entry and table share), or `None` if it does not exist
    /// (`MEMORY USAGE`).
    pub fn memory_usage(&self, key: &[u8], ctx: &Ctx) -> Option<usize> {
        let hash = self.hash(key);
        let s = self.lock(key_slot(key));
        let per_key_table = table_bytes(s.map.capacity()) / s.map.len().max(1);
        s.map
            .find(hash, |e| e.key() == key)
            .filter(|e| !e.is_expired(ctx.now))
            .map(|e| e.footprint() + per_key_table)
    }

    /// Current counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            tombstones_purged: self.tombs_purged.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            keys: self.keys.load(Ordering::Relaxed),
            volatile: self.volatile.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
        }
    }

    /// Number of keys held, in every database.
    pub fn len(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    /// Keys of database `db`, and how many of them have an expiry (`DBSIZE`, INFO's keyspace).
    pub fn db_stats(&self, db: u8) -> (u64, u64) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        if db != 0 {
            let (k, v) = &self.db_keys[usize::from(db)];
            return (load(k), load(v));
        }
        let (mut keys, mut volatile) = (load(&self.keys), load(&self.volatile));
        for (k, v) in &self.db_keys[1..] {
            keys = keys.saturating_sub(load(k));
            volatile = volatile.saturating_sub(load(v));
        }
        (keys, volatile)
    }

    /// Keys of database `db`.
    pub fn len_db(&self, db: u8) -> u64 {
        self.db_stats(db).0
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes a slot's contents depend only on the versions it holds and `now`, as on every other
    /// replica: expired values become tombstones, tombstones past their time go. (Both happen
    /// lazily otherwise, at moments that differ between replicas.) Anti-entropy calls it on a
    /// slot before it compares the slot's buckets.
    fn tidy(&self, s: &mut SlotData, now: u64) {
        if s.volatile > 0 {
            let expired: Vec<(Box<[u8]>, u64)> = s
                .map
                .iter()
                .filter(|e| e.is_expired(now))
                .map(|e| (e.key().into(), self.hash(e.key())))
                .collect();
            for (k, h) in expired {
                self.remove_expired(s, &k, h, now);
            }
        }
        let purged = self.purge_slot_tombs(s, now);
        self.tomb_count.fetch_sub(purged, Ordering::Relaxed);
        self.tombs_purged.fetch_add(purged, Ordering::Relaxed);
    }

    /// Drops a slot's tombstones past their time at `now` (the digest follows); returns how
    /// many (the caller books them in `tomb_count`).
    fn purge_slot_tombs(&self, s: &mut SlotData, now: u64) -> u64 {
        let Some(t) = s.tombs.as_mut() else { return 0 };
        let mut digest = s.digest;
        let mut purged = 0;
        t.retain(|k, v| {
            let keep = !self.tomb_expired(*v, now);
            if !keep {
                digest ^= entry_hash(k, v);
                purged += 1;
            }
            keep
        });
        s.digest = digest;
        if t.is_empty() {
            s.tombs = None;
        }
        purged
    }

    /// Anti-entropy: tidies `slot` ([`Store::tidy`]) and returns how many entries it holds,
    /// tombstones included, and the digest of each of its [`BUCKETS`] buckets ([`bucket_of`]).
    pub fn slot_buckets(&self, slot: Slot, now: u64) -> (u32, [u64; BUCKETS]) {
        let mut digests = [0u64; BUCKETS];
        if usize::from(slot) >= SLOTS {
            return (0, digests);
        }
        let mut guard = self.lock(slot);
        let s = &mut *guard;
        self.tidy(s, now);
        for e in s.map.iter() {
            digests[bucket_of(e.key())] ^= entry_hash(e.key(), &e.version());
        }
        let mut n = s.map.len();
        if let Some(t) = &s.tombs {
            n += t.len();
            for (k, v) in t.iter() {
                digests[bucket_of(k)] ^= entry_hash(k, v);
            }
        }
        (n as u32, digests)
    }

    /// Anti-entropy: the key and version of every entry (tombstones included) of `slot` in the
    /// buckets of mask `buckets` (bit `b`: bucket `b`).
    pub fn bucket_entries(&self, slot: Slot, buckets: u32, now: u64) -> Vec<(Bytes, Version)> {
        if usize::from(slot) >= SLOTS {
            return Vec::new();
        }
        let mut guard = self.lock(slot);
        let s = &mut *guard;
        self.tidy(s, now);
        let wanted = |k: &[u8]| buckets & (1 << bucket_of(k)) != 0;
        let mut out: Vec<(Bytes, Version)> = s
            .map
            .iter()
            .filter(|e| wanted(e.key()))
            .map(|e| (Bytes::copy_from_slice(e.key()), e.version()))
            .collect();
        if let Some(t) = &s.tombs {
            out.extend(
                t.iter()
                    .filter(|(k, _)| wanted(k))
                    .map(|(k, v)| (Bytes::copy_from_slice(k), *v)),
            );
        }
        out
    }

    /// Drops `key`'s value, if it is older than `version`, without a tombstone: a repair that
    /// brings a newer version this node has no room for ([`crate::repair`]) must not leave the
    /// stale one readable. Returns whether a value went.
    pub fn drop_older(&self, key: &[u8], version: Version) -> bool {
        let hash = self.hash(key);
        let mut guard = self.lock(key_slot(key));
        let s = &mut *guard;
        let older = s
            .map
            .find(hash, |e| e.key() == key)
            .is_some_and(|e| e.version() < version);
        if older {
            self.remove(s, key, hash);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        older
    }

    /// The digest and key count of one slot (for anti-entropy and tests).
    pub fn slot_summary(&self, slot: Slot) -> (u64, usize) {
        let s = self.lock(slot);
        (s.digest, s.map.len())
    }

    /// Recomputes `bytes` from every slot (tests check it equals the maintained figure).
    #[cfg(test)]
    fn bytes_recomputed(&self) -> u64 {
        self.slots
            .iter()
            .map(|c| {
                let s = c.0.lock();
                s.map.iter().map(|e| e.footprint() as u64).sum::<u64>()
                    + table_bytes(s.map.capacity()) as u64
            })
            .sum()
    }

    /// Recomputes a slot's digest from its entries (tests check it equals the maintained one).
    pub fn slot_digest_recomputed(&self, slot: Slot) -> u64 {
        let s = self.lock(slot);
        let tombs = s
            .tombs
            .as_ref()
            .map_or(0, |t| t.iter().fold(0, |d, (k, v)| d ^ entry_hash(k, v)));
        s.map
            .iter()
            .fold(tombs, |d, e| d ^ entry_hash(e.key(), &e.version()))
    }

    /// Adds every key's state in `slot` to `page`, tombstones included (a transfer, or a
    /// returning replica's catch-up, copies a slot whole), written from the entries as they are
    /// held: nothing is allocated per key.
    pub fn dump_into(&self, slot: Slot, page: &mut crate::msg::Packer) {
        if usize::from(slot) >= SLOTS {
            return;
        }
        let s = self.lock(slot);
        for e in s.map.iter() {
            page.live(
                e.key(),
                e.value(),
                e.expire_at(),
                e.version(),
                e.enc().bits(),
            );
        }
        if let Some(t) = &s.tombs {
            for (k, v) in t.iter() {
                page.dead(k, *v);
            }
        }
    }

    /// Keys of the given slots matching `pattern` (cluster-wide KEYS and SCAN ask each node for
    /// the slots it answers for).
    pub fn keys_in(&self, slots: &[Slot], db: u8, pattern: Option<&[u8]>, ctx: &Ctx) -> Vec<Bytes> {
        let mut out = Vec::new();
        for &slot in slots {
            if usize::from(slot) < SLOTS {
                self.collect_slot(slot, db, pattern, ctx, &mut out);
            }
        }
        out
    }

    /// Live keys held in the given slots at `now`. Unlike a single node's DBSIZE, expired keys not
    /// yet reclaimed are left out: replicas reclaim them at different moments, and a cluster-wide
    /// count must not depend on which replica answered. Only slots with expiring keys are walked.
    ///
    /// Only database `db`'s keys, or every database's (`None`).
    pub fn count_in(&self, slots: &[Slot], db: Option<u8>, now: u64) -> u64 {
        slots
            .iter()
            .filter(|s| usize::from(**s) < SLOTS)
            .map(|&slot| {
                let s = self.lock(slot);
                match db {
                    Some(db) if s.marked => {
                        let n = s.map.iter();
                        return n
                            .filter(|e| db::of(e.key()) == db && !e.is_expired(now))
                            .count() as u64;
                    }
                    Some(db) if db != 0 => return 0,
                    _ => {}
                }
                let expired = if s.volatile > 0 {
                    s.map.iter().filter(|e| e.is_expired(now)).count()
                } else {
                    0
                };
                (s.map.len() - expired) as u64
            })
            .sum()
    }
}

/// The replicated state of a live entry.
fn live_state(e: &Entry) -> State {
    State::Live {
        value: Bytes::copy_from_slice(e.value()),
        expire_at: e.expire_at(),
        version: e.version(),
        enc: e.enc().bits(),
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
    fn avg_ttl_is_estimated_per_database_by_the_expire_cycle() {
        let st = store();
        let ctx = Ctx::at(1000);
        st.apply(b"a", &set(b"1", ExpiryChange::At(11_000)), &ctx);
        st.apply(b"b", &set(b"2", ExpiryChange::At(21_000)), &ctx);
        st.apply(b"c", &set(b"3", ExpiryChange::Clear), &ctx);
        let k3 = db::encode(3, b"a");
        st.apply(&k3, &set(b"1", ExpiryChange::At(40_000)), &ctx);
        // Nothing sampled yet: 0, as Redis reports before its first cycle.
        assert_eq!((st.avg_ttl(0), st.avg_ttl(3)), (0, 0));
        st.expire_cycle(1000, usize::MAX);
        // The first sample is taken as it is.
        assert_eq!(st.avg_ttl(0), 15_000);
        assert_eq!(st.avg_ttl(3), 39_000);
        assert_eq!(st.avg_ttl(5), 0, "a database without keys");
        // Later samples move the estimate by 2% of the difference.
        st.expire_cycle(6000, usize::MAX);
        assert_eq!(st.avg_ttl(0), 15_000 / 50 * 49 + 10_000 / 50);
        assert_eq!(st.avg_ttl(3), 39_000 / 50 * 49 + 34_000 / 50);
        // Once the last key with an expiry goes, the database reports 0, and a new key's
        // estimate starts from its own first sample.
        st.apply(&k3, &Op::Del, &Ctx::at(6000));
        assert_eq!(st.avg_ttl(3), 0);
        st.apply(&k3, &set(b"1", ExpiryChange::At(8_000)), &Ctx::at(6000));
        st.expire_cycle(6000, usize::MAX);
        assert_eq!(st.avg_ttl(3), 2_000);
    }

    #[test]
    fn expired_keys_vanish_and_are_reclaimed() {
        let st = store();
        let ctx = Ctx::at(1000);
        st.apply(b"a", &set(b"1", ExpiryChange::At(1500)), &ctx);
        st.apply(b"b", &set(b"2", ExpiryChange::Clear), &ctx);
        let st2 = st.stats();
        assert_eq!((st2.keys, st2.volatile, st2.expired), (2, 1, 0));
        let later = Ctx::at(1501);
        assert_eq!(st.apply(b"a", &Op::Get, &later), Outcome::Nil);
        assert_eq!(st.stats().expired, 1);
        st.apply(b"c", &set(b"3", ExpiryChange::At(1600)), &later);
        let r = st.expire_cycle(1601, 1_000_000);
        assert_eq!(r.expired, 1);
        let st2 = st.stats();
        assert_eq!((st2.keys, st2.volatile, st2.expired), (1, 0, 2));
        assert_eq!(
            st2.bytes,
            st.bytes_recomputed(),
            "byte accounting follows every change"
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
        assert_eq!(st.stats().bytes, st.bytes_recomputed());
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
            let (next, keys) = st.scan(cursor, 0, None, 10, &ctx);
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

    fn fill(st: &Store, prefix: &str, n: usize, ttl: Option<u64>, ctx: &Ctx) {
        for i in 0..n {
            let expiry = ttl.map_or(ExpiryChange::Clear, ExpiryChange::At);
            st.apply(
                format!("{prefix}{i}").as_bytes(),
                &set(b"value", expiry),
                ctx,
            );
        }
    }

    fn count(st: &Store, prefix: &str, n: usize, ctx: &Ctx) -> usize {
        (0..n)
            .filter(|i| {
                st.apply(format!("{prefix}{i}").as_bytes(), &Op::Exists, ctx) == Outcome::Int(1)
            })
            .count()
    }

    #[test]
    fn volatile_policies_never_touch_persistent_keys() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for policy in [
            Policy::VolatileLru,
            Policy::VolatileLfu,
            Policy::VolatileRandom,
            Policy::VolatileTtl,
        ] {
            let st = store();
            let ctx = Ctx::at(1_000_000);
            fill(&st, "keep", 500, None, &ctx);
            fill(&st, "vol", 500, Some(9_000_000), &ctx);
            for _ in 0..500 {
                assert!(
                    st.evict_one(policy, 5, &ctx, &mut rng).is_some(),
                    "{policy:?}"
                );
            }
            assert_eq!(
                st.evict_one(policy, 5, &ctx, &mut rng),
                None,
                "{policy:?}: nothing left to evict"
            );
            assert_eq!(count(&st, "keep", 500, &ctx), 500, "{policy:?}");
            assert_eq!(count(&st, "vol", 500, &ctx), 0, "{policy:?}");
            assert_eq!(st.stats().evicted, 500);
        }
    }

    #[test]
    fn lru_evicts_the_idle_keys_first() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(4);
        let st = store();
        fill(&st, "old", 1000, None, &Ctx::at(1_000_000));
        let later = Ctx::at(1_000_000 + 60_000);
        fill(&st, "new", 1000, None, &later);
        for _ in 0..1000 {
            st.evict_one(Policy::AllKeysLru, 5, &later, &mut rng)
                .unwrap();
        }
        let (old, new) = (
            count(&st, "old", 1000, &later),
            count(&st, "new", 1000, &later),
        );
        // Sampled LRU (5 samples, a pool of 16) approximates LRU, as Redis's does: once most old
        // keys are gone, samples often hold none, so some new keys go too. At least 3 of 4
        // victims must be old (seeded, so the figures are stable).
        assert!(old < 250 && new > 750, "old kept {old}, new kept {new}");
    }

    #[test]
    fn ttl_policy_evicts_the_soonest_to_expire() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let st = store();
        let ctx = Ctx::at(1_000_000);
        fill(&st, "soon", 500, Some(2_000_000), &ctx);
        fill(&st, "late", 500, Some(9_000_000), &ctx);
        for _ in 0..500 {
            st.evict_one(Policy::VolatileTtl, 5, &ctx, &mut rng)
                .unwrap();
        }
        let (soon, late) = (count(&st, "soon", 500, &ctx), count(&st, "late", 500, &ctx));
        assert!(
            soon < 125 && late > 375,
            "soon kept {soon}, late kept {late}"
        );
    }

    #[test]
    fn lfu_keeps_the_frequently_read_keys() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(6);
        let st = store();
        let mode = crate::op::AccessMode::Lfu {
            log_factor: 10,
            decay_minutes: 1,
        };
        let mut ctx = Ctx {
            mode,
            ..Ctx::at(1_000_000)
        };
        fill(&st, "hot", 500, None, &ctx);
        fill(&st, "cold", 500, None, &ctx);
        for round in 0..30u32 {
            for i in 0..500u32 {
                ctx.rand = (round * 500 + i).wrapping_mul(2_654_435_761);
                st.apply(format!("hot{i}").as_bytes(), &Op::Get, &ctx);
            }
        }
        for _ in 0..500 {
            st.evict_one(Policy::AllKeysLfu, 5, &ctx, &mut rng).unwrap();
        }
        let (hot, cold) = (count(&st, "hot", 500, &ctx), count(&st, "cold", 500, &ctx));
        assert!(hot > 375 && cold < 125, "hot kept {hot}, cold kept {cold}");
    }

    #[test]
    fn noeviction_evicts_nothing() {
        let st = store();
        let ctx = Ctx::at(1_000_000);
        fill(&st, "k", 10, None, &ctx);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        assert_eq!(st.evict_one(Policy::NoEviction, 5, &ctx, &mut rng), None);
        assert_eq!(st.len(), 10);
    }

    #[test]
    fn random_key_is_seeded_and_live() {
        let st = store();
        let ctx = Ctx::at(1000);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        assert_eq!(st.random_key(0, &mut rng, &ctx), None);
        st.apply(b"only", &set(b"v", ExpiryChange::Clear), &ctx);
        assert_eq!(
            st.random_key(0, &mut rng, &ctx).as_deref(),
            Some(&b"only"[..])
        );
    }

    fn live(v: &[u8], hlc: u64, origin: u32) -> State {
        State::Live {
            value: Bytes::copy_from_slice(v),
            expire_at: 0,
            version: Version { hlc, origin },
            enc: 0,
        }
    }

    #[test]
    fn merge_keeps_the_newest_version_tombstones_included() {
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(1000);
        assert!(st.merge(b"k", &live(b"a", 10 << 16, 1), &ctx));
        // Older and equal versions are ignored; a same-time write wins by origin.
        assert!(!st.merge(b"k", &live(b"old", 9 << 16, 1), &ctx));
        assert!(!st.merge(b"k", &live(b"a", 10 << 16, 1), &ctx));
        assert!(st.merge(b"k", &live(b"b", 10 << 16, 2), &ctx));
        assert_eq!(st.apply(b"k", &Op::Get, &ctx), Outcome::Value("b".into()));
        // In-place overwrites keep the books: a longer value, then one with an expiry.
        assert!(st.merge(b"k", &live(&[b'x'; 300], 10 << 16, 3), &ctx));
        let expiring = State::Live {
            value: "e".into(),
            expire_at: 9_999_999,
            version: Version {
                hlc: 10 << 16,
                origin: 4,
            },
            enc: 0,
        };
        assert!(st.merge(b"k", &expiring, &ctx));
        assert_eq!(st.stats().bytes, st.bytes_recomputed());
        assert_eq!(st.stats().volatile, 1);
        assert_eq!(
            st.apply(b"k", &Op::Ttl { ms: false }, &ctx),
            Outcome::Int(9999)
        );
        // A tombstone wins over older values and keeps them out.
        let dead = State::Dead(Version {
            hlc: 11 << 16,
            origin: 1,
        });
        assert!(st.merge(b"k", &dead, &ctx));
        assert_eq!(st.fetch(b"k"), dead);
        assert!(!st.merge(b"k", &live(b"late", 10 << 16, 3), &ctx));
        assert_eq!(st.apply(b"k", &Op::Get, &ctx), Outcome::Nil);
        assert_eq!(st.len(), 0);
        assert_eq!(st.tombstones(), 1);
        assert_eq!(
            st.slot_summary(key_slot(b"k")).0,
            st.slot_digest_recomputed(key_slot(b"k"))
        );
        // A newer write replaces the tombstone.
        assert!(st.merge(b"k", &live(b"new", 12 << 16, 1), &ctx));
        assert_eq!(st.tombstones(), 0);
        // The clock moved past everything it saw: local writes are newer still.
        let (_, changed) = st.apply_versioned(b"k", &set(b"mine", ExpiryChange::Clear), &ctx);
        assert!(changed.unwrap().version().unwrap().hlc > 12 << 16);
    }

    #[test]
    fn versioned_apply_reports_what_to_replicate() {
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(5000);
        let (o, ch) = st.apply_versioned(b"n", &Op::IncrBy(2), &ctx);
        assert_eq!(o, Outcome::Int(2));
        let Some(State::Live { value, version, .. }) = ch else {
            panic!("{ch:?}")
        };
        assert_eq!(&value[..], b"2");
        assert_eq!(st.fetch(b"n").version(), Some(version));
        // Reads and failed conditions change nothing and replicate nothing.
        assert_eq!(st.apply_versioned(b"n", &Op::Get, &ctx).1, None);
        let nx = Op::Set {
            value: b"x",
            cond: SetCond::IfMissing,
            expiry: ExpiryChange::Clear,
            get: false,
        };
        assert_eq!(st.apply_versioned(b"n", &nx, &ctx).1, None);
        // In-place change.
        let (_, ch) = st.apply_versioned(b"n", &Op::Append(b"0"), &ctx);
        assert!(matches!(ch, Some(State::Live { ref value, .. }) if &value[..] == b"20"));
        // Delete leaves a tombstone with a newer version.
        let (o, ch) = st.apply_versioned(b"n", &Op::Del, &ctx);
        assert_eq!(o, Outcome::Int(1));
        let Some(State::Dead(v)) = ch else { panic!() };
        assert!(v > version);
        assert_eq!(st.fetch(b"n"), State::Dead(v));
        // A replica receiving the pair in any order ends the same.
        let other = store();
        other.merge(b"n", &State::Dead(v), &ctx);
        other.merge(
            b"n",
            &State::Live {
                value: "2".into(),
                expire_at: 0,
                version,
                enc: 0,
            },
            &ctx,
        );
        assert_eq!(other.fetch(b"n"), State::Dead(v));
        assert_eq!(
            st.purge_tombstones(u64::MAX),
            0,
            "kept for ever without a TTL"
        );
        st.set_tombstone_ttl(1);
        assert_eq!(st.purge_tombstones(u64::MAX), 1);
        assert_eq!(st.fetch(b"n"), State::Missing);
    }

    #[test]
    fn single_node_deletes_leave_no_tombstone() {
        let st = store();
        let ctx = Ctx::at(5000);
        st.apply(b"k", &set(b"v", ExpiryChange::Clear), &ctx);
        st.apply(b"k", &Op::Del, &ctx);
        assert_eq!(st.tombstones(), 0);
        assert_eq!(st.fetch(b"k"), State::Missing);
    }

    #[test]
    fn flush_horizon_rejects_older_writes() {
        let st = store();
        let ctx = Ctx::at(5000);
        st.merge(b"a", &live(b"1", 100 << 16, 1), &ctx);
        let h = Version {
            hlc: 200 << 16,
            origin: 1,
        };
        st.flush_at(h, None);
        assert_eq!(st.len(), 0);
        assert!(!st.merge(b"a", &live(b"1", 100 << 16, 1), &ctx));
        assert_eq!(
            st.fetch(b"a"),
            State::Dead(Version {
                hlc: h.hlc,
                origin: 0
            })
        );
        assert!(st.merge(b"a", &live(b"2", 300 << 16, 1), &ctx));
    }

    #[test]
    fn an_expired_value_leaves_a_tombstone_in_a_cluster() {
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(1000);
        let v2 = State::Live {
            value: "v2".into(),
            expire_at: 1500,
            version: Version {
                hlc: 20 << 16,
                origin: 1,
            },
            enc: 0,
        };
        assert!(st.merge(b"k", &v2, &ctx));
        assert_eq!(st.apply(b"k", &Op::Get, &Ctx::at(2000)), Outcome::Nil);
        assert_eq!(
            st.fetch(b"k"),
            State::Dead(Version {
                hlc: 20 << 16,
                origin: 1
            })
        );
        // A replica that missed v2 still holds an older value without expiry: it must not win.
        assert!(!st.merge(b"k", &live(b"v1", 10 << 16, 1), &Ctx::at(2000)));
        assert_eq!(st.stats().expired, 1);
    }

    #[test]
    fn dropping_a_slot_takes_its_values_and_tombstones_and_nothing_else() {
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(1_000);
        // Two keys of one slot (a hash tag), one of another.
        for k in [&b"{a}1"[..], b"{a}2", b"b"] {
            st.apply(k, &Op::set(b"v"), &ctx);
        }
        st.apply(b"{a}2", &Op::Del, &ctx);
        let slot = key_slot(b"{a}1");
        let (n, bytes, freed) = st.drop_slot(slot);
        drop(freed);
        assert_eq!(n, 2, "one value and one tombstone");
        assert!(bytes > 0);
        assert_eq!(st.slot_summary(slot), (0, 0));
        assert_eq!(st.len(), 1);
        assert_eq!(st.tombstones(), 0);
        assert_eq!(st.stats().bytes, st.bytes_recomputed());
        assert!(matches!(st.fetch(b"b"), State::Live { .. }));
        assert_eq!(st.fetch(b"{a}1"), State::Missing);
    }

    #[test]
    fn tombstones_are_purged_by_their_versions_time_alike_on_every_replica() {
        // Two replicas with a 60 s tombstone TTL: one removes the expired value at once, the
        // other much later; both purge the tombstone at the same instant (version time + TTL).
        let a = store();
        let b = store();
        for st in [&a, &b] {
            st.set_tombstones(true);
            st.set_tombstone_ttl(60_000);
        }
        let v = Version {
            hlc: 1000 << 16,
            origin: 1,
        };
        let old = State::Live {
            value: "v".into(),
            expire_at: 10_000,
            version: v,
            enc: 0,
        };
        a.merge(b"k", &old, &Ctx::at(5_000));
        b.merge(b"k", &old, &Ctx::at(5_000));
        assert_eq!(a.apply(b"k", &Op::Get, &Ctx::at(20_000)), Outcome::Nil);
        assert_eq!(a.tombstones(), 1);
        assert_eq!(a.purge_tombstones(61_000), 0);
        assert_eq!(a.purge_tombstones(61_001), 1);
        // The other replica removes it only after the cutoff: it leaves no tombstone at all.
        assert_eq!(b.apply(b"k", &Op::Get, &Ctx::at(70_000)), Outcome::Nil);
        assert_eq!(b.tombstones(), 0);
        let slot = key_slot(b"k");
        assert_eq!(a.slot_summary(slot), b.slot_summary(slot));
        // A tombstone past its time that arrives late is not kept (its older value goes).
        b.merge(b"k", &live(b"x", 500 << 16, 1), &Ctx::at(70_000));
        assert_eq!(b.fetch(b"k").version().map(|v| v.hlc), Some(500 << 16));
        assert!(b.merge(b"k", &State::Dead(v), &Ctx::at(70_000)));
        assert_eq!(b.fetch(b"k"), State::Missing);
        assert_eq!(b.tombstones(), 0);
        // An expired value offered by a peer is its tombstone.
        b.merge(b"k2", &old, &Ctx::at(30_000));
        assert_eq!(b.fetch(b"k2"), State::Dead(v));
        assert_eq!(b.stats().keys, 0);
    }

    #[test]
    fn databases_are_counted_listed_and_flushed_apart() {
        use crate::db::encode;
        let st = store();
        let ctx = Ctx::at(1000);
        for (db, k) in [
            (0u8, &b"a"[..]),
            (0, b"\xffz"),
            (1, b"a"),
            (1, b"b"),
            (7, b"a"),
        ] {
            let expiry = if db == 1 {
                ExpiryChange::At(9_000)
            } else {
                ExpiryChange::Clear
            };
            st.apply(&encode(db, k), &set(b"v", expiry), &ctx);
        }
        assert_eq!(st.len(), 5);
        assert_eq!(
            [
                st.db_stats(0),
                st.db_stats(1),
                st.db_stats(7),
                st.db_stats(2)
            ],
            [(2, 0), (2, 2), (1, 0), (0, 0)]
        );
        let mut k1 = st.keys(1, None, &ctx);
        k1.sort();
        assert_eq!(k1, [&b"a"[..], b"b"]);
        let mut k0 = st.keys(0, None, &ctx);
        k0.sort();
        assert_eq!(k0, [&b"a"[..], b"\xffz"]);
        assert_eq!(st.keys(7, Some(b"a"), &ctx), [&b"a"[..]]);
        assert!(st.keys(2, None, &ctx).is_empty());
        let slot = key_slot(b"a");
        assert_eq!(
            key_slot(&encode(7, b"a")),
            slot,
            "a key's slot is its name's"
        );
        assert_eq!(st.count_in(&[slot], Some(1), 1000), 1);
        assert_eq!(st.count_in(&[slot], None, 1000), 3);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        assert_eq!(st.random_key(7, &mut rng, &ctx).as_deref(), Some(&b"a"[..]));
        assert_eq!(st.random_key(3, &mut rng, &ctx), None);
        // FLUSHDB 1 leaves the others, and the books balance.
        drop(st.flush(Some(1)));
        assert_eq!(
            [st.db_stats(0), st.db_stats(1), st.db_stats(7)],
            [(2, 0), (0, 0), (1, 0)]
        );
        assert_eq!(st.stats().volatile, 0);
        drop(st.flush(Some(0)));
        assert_eq!(st.len(), 1);
        assert_eq!(st.keys(7, None, &ctx), [&b"a"[..]]);
        drop(st.flush(None));
        assert_eq!((st.len(), st.db_stats(7)), (0, (0, 0)));
    }

    #[test]
    fn a_flushdb_horizon_refuses_only_its_databases_older_writes() {
        use crate::db::encode;
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(5000);
        let h = Version {
            hlc: 200 << 16,
            origin: 0,
        };
        st.merge(&encode(2, b"k"), &live(b"1", 100 << 16, 1), &ctx);
        st.merge(&encode(0, b"k"), &live(b"1", 100 << 16, 1), &ctx);
        st.flush_at(h, Some(2));
        assert_eq!(st.fetch(&encode(2, b"k")), State::Dead(h));
        assert_eq!(st.apply(b"k", &Op::Get, &ctx), Outcome::Value("1".into()));
        // A replica that missed the flush offers its old copy: refused in database 2 only.
        assert_eq!(
            st.offer(&encode(2, b"j"), &live(b"old", 150 << 16, 1), &ctx),
            Offered::Refused(h)
        );
        assert!(st.merge(&encode(3, b"j"), &live(b"old", 150 << 16, 1), &ctx));
        assert!(st.merge(&encode(2, b"j"), &live(b"new", 250 << 16, 1), &ctx));
    }

    /// The horizons a heartbeat reports, and which of a peer's this node missed: only higher
    /// ones, of databases this build has, not too far ahead of `now`; a state older than a
    /// horizon is flushed (a hint of it is not replayed).
    #[test]
    fn missed_flushes_are_the_higher_plausible_horizons_claimed_once() {
        use crate::db::encode;
        let st = store();
        assert_eq!(st.horizons(), vec![]);
        let v = |ms: u64| Version {
            hlc: ms << 16,
            origin: 0,
        };
        st.flush_at(v(200), None);
        st.flush_at(v(300), Some(2));
        assert_eq!(st.horizons(), vec![(None, 200 << 16), (Some(2), 300 << 16)]);
        let now = 1_000;
        let far = now + crate::node::MAX_AHEAD_MS + 1;
        let theirs = [
            (None, 100 << 16),
            (Some(2), 400 << 16),
            (Some(3), 150 << 16),
            (Some(0), far << 16),
            (Some(255), 500 << 16),
        ];
        assert_eq!(
            st.claim_missed_flushes(&theirs, now),
            vec![(v(400), Some(2)), (v(150), Some(3)), (v(500), Some(255))]
        );
        // Claimed: another peer's report of the same flushes asks for nothing more.
        assert_eq!(st.claim_missed_flushes(&theirs, now), vec![]);
        assert!(st.is_flushed(b"k", &live(b"1", 150 << 16, 1)));
        assert!(!st.is_flushed(b"k", &live(b"1", 250 << 16, 1)));
        assert!(st.is_flushed(&encode(2, b"k"), &live(b"1", 250 << 16, 1)));
        assert!(!st.is_flushed(&encode(3, b"k"), &live(b"1", 250 << 16, 1)));
        assert!(!st.is_flushed(b"k", &State::Missing));
    }

    #[test]
    fn a_flush_keeps_what_is_newer_than_its_horizon() {
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(5000);
        st.merge(b"old", &live(b"1", 100 << 16, 1), &ctx);
        st.merge(b"new", &live(b"2", 300 << 16, 1), &ctx);
        st.merge(
            b"gone",
            &State::Dead(Version {
                hlc: 300 << 16,
                origin: 1,
            }),
            &ctx,
        );
        st.flush_at(
            Version {
                hlc: 200 << 16,
                origin: 0,
            },
            None,
        );
        assert_eq!(
            st.fetch(b"old"),
            State::Dead(Version {
                hlc: 200 << 16,
                origin: 0
            })
        );
        assert_eq!(st.apply(b"new", &Op::Get, &ctx), Outcome::Value("2".into()));
        assert_eq!(
            st.fetch(b"gone"),
            State::Dead(Version {
                hlc: 300 << 16,
                origin: 1
            })
        );
        assert_eq!(st.len(), 1);
        for k in [&b"old"[..], b"new", b"gone"] {
            assert_eq!(
                st.slot_summary(key_slot(k)).0,
                st.slot_digest_recomputed(key_slot(k))
            );
        }
    }

    #[test]
    fn promises_refuse_older_writes_until_settled_or_expired() {
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(1_000);
        let v = |hlc: u64| Version { hlc, origin: 1 };
        assert!(st.merge(b"k", &live(b"a", 10, 1), &ctx));
        // A promise at 20: nothing older is stored, the value held is returned.
        assert_eq!(st.prepare(b"k", v(20), 1_000, 500), Ok(live(b"a", 10, 1)));
        assert_eq!(st.promises(), 1);
        assert_eq!(
            st.offer(b"k", &live(b"b", 15, 1), &ctx),
            Offered::Refused(v(20))
        );
        // A lower or equal ballot is refused with the promise.
        assert_eq!(st.prepare(b"k", v(19), 1_000, 500), Err(v(20)));
        // The accept at the ballot is stored and settles the promise.
        assert_eq!(st.offer(b"k", &live(b"c", 20, 1), &ctx), Offered::Stored);
        assert_eq!(st.promises(), 0);
        // A promise that no accept follows expires and is purged.
        assert!(st.prepare(b"k", v(30), 1_000, 500).is_ok());
        assert_eq!(
            st.offer(b"k", &live(b"d", 25, 1), &Ctx::at(1_200)),
            Offered::Refused(v(30))
        );
        assert_eq!(
            st.offer(b"k", &live(b"d", 25, 1), &Ctx::at(1_600)),
            Offered::Stored
        );
        assert_eq!(st.purge_promises(1_600), 1, "the expired promise is purged");
        assert!(st.prepare(b"x", v(40), 1_000, 500).is_ok());
        assert_eq!(st.purge_promises(1_499), 0);
        assert_eq!(st.purge_promises(1_500), 1);
        assert_eq!(st.promises(), 0);
    }

    /// A transaction's two phases on several keys of a slot are all or none: one key held or
    /// promised at least as new refuses the whole prepare (nothing promised) or the whole
    /// offer (nothing stored); keys of two slots are refused.
    #[test]
    fn group_prepares_and_offers_are_all_or_none() {
        let st = store();
        st.set_tombstones(true);
        let ctx = Ctx::at(1_000);
        let v = |hlc: u64| Version { hlc, origin: 1 };
        let (x, y) = (&b"{t}x"[..], &b"{t}y"[..]);
        assert!(st.merge(x, &live(b"a", 30, 1), &ctx));
        // y is missing; x holds 30: a ballot of 20 is refused for both, nothing is promised.
        assert_eq!(st.prepare_group(&[x, y], v(20), 1_000, 500), Err(v(30)));
        assert_eq!(st.promises(), 0);
        assert_eq!(
            st.prepare_group(&[x, y], v(40), 1_000, 500),
            Ok(vec![live(b"a", 30, 1), State::Missing])
        );
        assert_eq!(st.promises(), 2);
        // An offer at 35 is older than the promise on both keys: refused whole.
        let at = |hlc| {
            vec![
                (Bytes::copy_from_slice(x), live(b"b", hlc, 1)),
                (Bytes::copy_from_slice(y), live(b"c", hlc, 1)),
            ]
        };
        assert_eq!(st.offer_group(&at(35), &ctx), Offered::Refused(v(40)));
        assert_eq!(st.fetch(y), State::Missing, "nothing stored");
        // Someone writes y at 50 meanwhile: the accept at 40 is refused whole, x stays.
        assert!(st.merge(y, &live(b"z", 50, 1), &ctx));
        assert_eq!(st.offer_group(&at(40), &ctx), Offered::Refused(v(50)));
        assert_eq!(st.fetch(x), live(b"a", 30, 1));
        // A newer round stores both, settles both promises, and a repeat is a duplicate.
        assert!(st.prepare_group(&[x, y], v(60), 1_000, 500).is_ok());
        assert_eq!(st.offer_group(&at(60), &ctx), Offered::Stored);
        assert_eq!(st.fetch(x), live(b"b", 60, 1));
        assert_eq!(st.fetch(y), live(b"c", 60, 1));
        assert_eq!(st.offer_group(&at(60), &ctx), Offered::Duplicate);
        assert_eq!(st.purge_promises(10_000), 0, "settled by the accept");
        // Keys of two slots are never one round.
        assert!(st.prepare_group(&[x, b"other"], v(70), 1_000, 500).is_err());
    }
}
