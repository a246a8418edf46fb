//! Repair: hinted handoff and Merkle anti-entropy, as one long-lived machine per node
//! ([`Repair`]) that the production driver and the simulator both run.
//!
//! - **Hints** ([`Hints`]): a write that a replica did not store (its link was down, it failed or
//!   did not answer in time) is kept by the write's coordinator as the key's versioned state,
//!   never as the command, in a bounded queue per target. The queue is replayed, in batches and
//!   under a rate limit, when the target is seen live again and every replay interval. Replaying
//!   is idempotent: a replica keeps the newest version (last write wins).
//! - **Anti-entropy** ([`Round`]): two nodes compare a Merkle tree over the slots they both
//!   replicate ([`Tree`]), descend to the slots that differ, compare those slots' bucket digests
//!   ([`crate::store::BUCKETS`] per slot), list the keys and versions of the buckets that differ,
//!   and pull and push the newer entries, tombstones included. A slot that this node holds
//!   nothing of is copied whole, in pages. A clean round is one request and one reply of a few
//!   bytes, whatever the number of keys.
//! - **Scheduling** ([`Backoff`]): a round against each peer every interval; each clean round
//!   doubles the wait up to a maximum factor, any difference or error snaps it back to 1x.
//! - **Catch-up** ([`CatchUp`]): a node that starts runs a round against every peer it shares
//!   slots with; a slot counts as up to date here ([`crate::node::Env::synced`]) once a round
//!   with each of its other live replicas has completed.
//! - **Memory**: repair never takes a node over its memory budget ([`crate::node::Env::room`]):
//!   a new key that does not fit is skipped, and a stale value whose newer version does not fit
//!   is dropped rather than kept (it would be served stale).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use crate::msg::{Request, Response, State};
use crate::node::{plausible, Answer, Call, Env, Out, Send};
use crate::ring::MemberIdx;
use crate::slot::{Slot, SLOTS};
use crate::store::{Offered, BUCKETS};
use crate::version::Version;

/// Children per node of the Merkle tree over the slots.
pub const TREE_FANOUT: usize = 16;

/// Levels of the tree: 16384 slot digests, then 1024, 64, 4 and 1 (the root).
pub const TREE_LEVELS: u8 = 5;

/// How long a request of a round may go unanswered before the round fails, ms.
pub const ROUND_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// How soon a catch-up round asks again a peer that does not see this node live yet, ms.
pub const CATCH_UP_RETRY_MS: u64 = 50;
/// How many times a round asks a request again after no answer before it fails.
pub const ROUND_RETRIES: u8 = 3;

/// How long a starting node waits for a peer's link to come up before it stops counting on
/// that peer for its catch-up, ms.
pub const CATCH_UP_LINK_GRACE_MS: u64 = 3_000;

/// When a starting node counts every slot as caught up, whatever is still missing, ms after its
/// start (reported; anti-entropy goes on).
pub const CATCH_UP_DEADLINE_MS: u64 = 30_000;

/// Bytes per page of key lists and slot copies.
pub const PAGE_BYTES: u64 = 4 << 20;

/// Slots per [`Request::Buckets`].
const BUCKET_SLOTS_PER_REQUEST: usize = 512;

/// Keys per [`Request::Pull`] and per [`Request::Merge`] of a round, at most (pages are also
/// bounded by bytes).
const KEYS_PER_REQUEST: usize = 1024;

/// Buckets or slots named in one [`Request::List`] or [`Request::Dump`] of a round, at most.
const ITEMS_PER_REQUEST: usize = 4096;

/// Slots named in one [`Request::Dump`] of a catch-up or transfer round, at most: each is checked
/// to be still empty here just before it is asked for (see [`Round::late`]).
const RECHECKED_PER_DUMP: usize = 512;

/// How far apart in the ring two sources of the same slots start their copies: a third of
/// it, so that a newcomer's three sources (replication 3) each copy a different third first.
const DUMP_STRIDE: usize = 5461;

/// Where a hint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HintSource {
    /// A write's replication to a replica that did not store it.
    Replication = 0,
    /// A slot migration batch that failed (rebalancing).
    Migration = 1,
}

impl HintSource {
    /// Both sources, in index order.
    pub const ALL: [HintSource; 2] = [HintSource::Replication, HintSource::Migration];

    /// The metric suffix.
    pub fn name(self) -> &'static str {
        match self {
            HintSource::Replication => "replication",
            HintSource::Migration => "migration",
        }
    }
}

/// Hint limits and pace (the `hint-*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintLimits {
    /// Hints per target, at most.
    pub per_node: usize,
    /// Hints in all, at most.
    pub total: usize,
    /// Bytes of hints in all, at most.
    pub bytes: u64,
    /// A hint is dropped once its version is this old, ms.
    pub ttl_ms: u64,
    /// How often every queue is replayed, ms (also: as soon as its target is seen live again).
    pub replay_interval_ms: u64,
    /// Hints per replay batch.
    pub batch: usize,
    /// Bytes per replay batch (a batch stops at whichever limit comes first).
    pub batch_bytes: u64,
    /// Hints replayed per second, per target, at most (0: no limit).
    pub rate: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            per_node: 100_000,
            total: 1_000_000,
            bytes: 256 << 20,
            ttl_ms: 3 * 3600 * 1000,
            replay_interval_ms: 10_000,
            batch: 1024,
            batch_bytes: hint_batch_bytes(0),
            rate: 200_000,
        }
    }
}

/// Counters of [`Hints`], by [`HintSource`] index.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HintCounters {
    /// Hints queued.
    pub queued: [u64; 2],
    /// Hints replayed and acknowledged by their target.
    pub replayed: [u64; 2],
    /// Hints dropped because their TTL passed.
    pub expired: [u64; 2],
    /// Hints not queued: their target's queue was full.
    pub dropped: [u64; 2],
    /// Hints not queued: all queues together were full (count or bytes).
    pub global_dropped: [u64; 2],
}

/// One target's queue, as `HC.HINTS` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueInfo {
    /// The target.
    pub target: MemberIdx,
    /// Hints queued (in flight included).
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest, ms.
    pub oldest_ms: u64,
}

#[derive(Debug, Clone)]
struct Hint {
    state: State,
    source: HintSource,
    added: u64,
    size: u64,
}

#[derive(Debug, Default)]
struct Queue {
    /// Key -> its newest hint.
    map: hashbrown::HashMap<Bytes, Hint>,
    /// Keys in the order their hints were added, with the version added (an entry whose key now
    /// has another version, or none, is skipped).
    order: VecDeque<(Bytes, Version)>,
    bytes: u64,
    /// A batch is out: its hints, until acknowledged.
    in_flight: Option<Vec<(Bytes, Hint)>>,
    /// Not replayed before this time (rate limit), ms.
    next_at: u64,
}

impl Queue {
    fn count(&self) -> usize {
        self.map.len() + self.in_flight.as_ref().map_or(0, Vec::len)
    }
}

/// The hints a node holds for its peers (see the module docs). Bounded per target and in all,
/// in count and bytes; a hint that does not fit is dropped and counted (anti-entropy repairs
/// what hints miss).
#[derive(Debug, Default)]
pub struct Hints {
    limits: HintLimits,
    queues: BTreeMap<MemberIdx, Queue>,
    total: usize,
    bytes: u64,
    bytes_by_source: [u64; 2],
    counters: HintCounters,
}

fn hint_size(key: &[u8], state: &State) -> u64 {
    (key.len() + state.value_len() + 64) as u64
}

impl Hints {
    /// Empty, with these limits.
    pub fn new(limits: HintLimits) -> Hints {
        Hints {
            limits,
            ..Hints::default()
        }
    }

    /// Changes the limits (runtime settings); hints already queued stay.
    pub fn set_limits(&mut self, limits: HintLimits) {
        self.limits = limits;
    }

    /// The limits.
    pub fn limits(&self) -> HintLimits {
        self.limits
    }

    /// Counters so far.
    pub fn counters(&self) -> HintCounters {
        self.counters
    }

    /// Hints held (in flight included).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Bytes of hints held, in all and by source.
    pub fn bytes(&self) -> (u64, [u64; 2]) {
        (self.bytes, self.bytes_by_source)
    }

    /// Each target's queue.
    pub fn queues(&self, now: u64) -> Vec<QueueInfo> {
        self.queues
            .iter()
            .filter(|(_, q)| q.count() > 0)
            .map(|(&target, q)| {
                let oldest = q
                    .map
                    .values()
                    .chain(q.in_flight.iter().flatten().map(|(_, h)| h))
                    .map(|h| h.added)
                    .min()
                    .unwrap_or(now);
                QueueInfo {
                    target,
                    count: q.count(),
                    bytes: q.bytes,
                    oldest_ms: now.saturating_sub(oldest),
                }
            })
            .collect()
    }

    fn expired(&self, state: &State, now: u64) -> bool {
        state
            .version()
            .is_none_or(|v| v.millis().saturating_add(self.limits.ttl_ms) < now)
    }

    /// Queues `state` of `key` for `target` (a newer hint of the key replaces an older one).
    pub fn add(
        &mut self,
        target: MemberIdx,
        key: Bytes,
        state: State,
        source: HintSource,
        now: u64,
    ) {
        let Some(version) = state.version() else {
            return;
        };
        let si = source as usize;
        if self.expired(&state, now) {
            self.counters.expired[si] += 1;
            return;
        }
        let size = hint_size(&key, &state);
        let q = self.queues.entry(target).or_default();
        if let Some(h) = q.map.get_mut(&key) {
            if h.state.version() >= Some(version) {
                return;
            }
            if self.bytes - h.size + size > self.limits.bytes {
                // The newer state does not fit under `hint-max-bytes`: the older hint goes too
                // (it would only bring the target a stale value; anti-entropy brings the new).
                let old = q.map.remove(&key).expect("held");
                self.forget(target, &old);
                self.counters.global_dropped[si] += 1;
                return;
            }
            // Replaces the older hint of the key.
            let old = std::mem::replace(
                h,
                Hint {
                    state,
                    source,
                    added: now,
                    size,
                },
            );
            q.bytes = q.bytes + size - old.size;
            self.bytes = self.bytes + size - old.size;
            self.bytes_by_source[old.source as usize] -= old.size;
            self.bytes_by_source[si] += size;
            q.order.push_back((key, version));
            self.counters.queued[si] += 1;
            return;
        }
        if q.count() >= self.limits.per_node {
            self.counters.dropped[si] += 1;
            return;
        }
        if self.total >= self.limits.total || self.bytes + size > self.limits.bytes {
            self.counters.global_dropped[si] += 1;
            return;
        }
        q.map.insert(
            key.clone(),
            Hint {
                state,
                source,
                added: now,
                size,
            },
        );
        q.order.push_back((key, version));
        q.bytes += size;
        self.total += 1;
        self.bytes += size;
        self.bytes_by_source[si] += size;
        self.counters.queued[si] += 1;
    }

    /// Removes hint `h` of `key` from the books of `target`'s queue (already taken out of it).
    fn forget(&mut self, target: MemberIdx, h: &Hint) {
        if let Some(q) = self.queues.get_mut(&target) {
            q.bytes -= h.size;
        }
        self.total -= 1;
        self.bytes -= h.size;
        self.bytes_by_source[h.source as usize] -= h.size;
    }

    /// Drops the hints whose TTL passed, oldest first; returns how many.
    pub fn expire(&mut self, now: u64) -> u64 {
        let mut n = 0;
        let targets: Vec<MemberIdx> = self.queues.keys().copied().collect();
        for t in targets {
            loop {
                let q = self.queues.get_mut(&t).expect("listed");
                let Some((k, v)) = q.order.front().cloned() else {
                    break;
                };
                let current = q.map.get(&k).and_then(|h| h.state.version());
                if current != Some(v) {
                    q.order.pop_front(); // superseded or replayed
                    continue;
                }
                if v.millis().saturating_add(self.limits.ttl_ms) >= now {
                    break;
                }
                q.order.pop_front();
                let h = q.map.remove(&k).expect("current");
                self.counters.expired[h.source as usize] += 1;
                self.forget(t, &h);
                n += 1;
            }
        }
        self.queues.retain(|_, q| q.count() > 0 || q.next_at > 0);
        n
    }

    /// The targets whose queue is due for replay at `now`: not empty, no batch out, past its
    /// rate limit, and live.
    pub fn due(&self, now: u64, live: impl Fn(MemberIdx) -> bool) -> Vec<MemberIdx> {
        self.queues
            .iter()
            .filter(|(t, q)| {
                !q.map.is_empty() && q.in_flight.is_none() && q.next_at <= now && live(**t)
            })
            .map(|(t, _)| *t)
            .collect()
    }

    /// The earliest time after `now` a queue that is waiting on its rate limit becomes due (a
    /// queue already due waits for its target: the replay interval or its return).
    pub fn next_due(&self, now: u64) -> Option<u64> {
        self.queues
            .values()
            .filter(|q| !q.map.is_empty() && q.in_flight.is_none() && q.next_at > now)
            .map(|q| q.next_at)
            .min()
    }

    /// Takes the next batch of `target`'s queue, oldest first (expired hints are dropped); it is
    /// in flight until [`Hints::replayed`]. `None` if there is nothing to send.
    pub fn take(&mut self, target: MemberIdx, now: u64) -> Option<Vec<(Bytes, State)>> {
        let ttl = self.limits.ttl_ms;
        let max = self.limits.batch.max(1);
        let q = self.queues.get_mut(&target)?;
        if q.in_flight.is_some() {
            return None;
        }
        let max_bytes = self.limits.batch_bytes.max(1);
        let mut batch: Vec<(Bytes, Hint)> = Vec::new();
        let mut bytes = 0u64;
        let mut expired = Vec::new();
        while batch.len() < max && bytes < max_bytes {
            let Some((k, v)) = q.order.pop_front() else {
                break;
            };
            if q.map.get(&k).and_then(|h| h.state.version()) != Some(v) {
                continue;
            }
            let h = q.map.remove(&k).expect("current");
            if v.millis().saturating_add(ttl) < now {
                expired.push(h);
            } else {
                bytes += h.size;
                batch.push((k, h));
            }
        }
        if !batch.is_empty() {
            let out = batch
                .iter()
                .map(|(k, h)| (k.clone(), h.state.clone()))
                .collect();
            if self.limits.rate > 0 {
                q.next_at = now + (batch.len() as u64 * 1000).div_ceil(self.limits.rate);
            }
            q.in_flight = Some(batch);
            for h in expired {
                self.counters.expired[h.source as usize] += 1;
                self.forget(target, &h);
            }
            return Some(out);
        }
        for h in expired {
            self.counters.expired[h.source as usize] += 1;
            self.forget(target, &h);
        }
        None
    }

    /// The batch out to `target` was acknowledged (`ok`) or failed: acknowledged hints are
    /// done; failed ones go back to the queue unless a newer hint of their key arrived meanwhile.
    pub fn replayed(&mut self, target: MemberIdx, ok: bool) {
        let Some(batch) = self
            .queues
            .get_mut(&target)
            .and_then(|q| q.in_flight.take())
        else {
            return;
        };
        for (k, h) in batch {
            if ok {
                self.counters.replayed[h.source as usize] += 1;
                self.forget(target, &h);
                continue;
            }
            let q = self.queues.get_mut(&target).expect("has a batch");
            if q.map.contains_key(&k) {
                self.forget(target, &h);
                continue;
            }
            q.order
                .push_front((k.clone(), h.state.version().expect("versioned")));
            q.map.insert(k, h);
        }
    }

    /// `target` was seen live again: its queue is due at once.
    pub fn wake(&mut self, target: MemberIdx) {
        if let Some(q) = self.queues.get_mut(&target) {
            q.next_at = 0;
        }
    }
}

/// The Merkle tree over the slots two nodes both replicate: level 0 holds the slot digests (0
/// for a slot they do not share), each level above the hash of [`TREE_FANOUT`] children (0 when
/// all of them are 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<u64>>,
}

/// Whether `a` and `b` both replicate `slot`.
pub fn shares(env: &impl Env, slot: Slot, a: MemberIdx, b: MemberIdx) -> bool {
    let p = env.prefs(slot);
    p.contains(&a) && p.contains(&b)
}

/// The slots this node and `peer` both replicate, ascending.
pub fn shared_slots(env: &impl Env, peer: MemberIdx) -> Vec<Slot> {
    let me = env.me();
    (0..SLOTS as Slot)
        .filter(|&s| shares(env, s, me, peer))
        .collect()
}

impl Tree {
    /// The tree of this node's slots that `peer` also replicates.
    pub fn build(env: &impl Env, peer: MemberIdx) -> Tree {
        Tree::of(env, &shared_slots(env, peer))
    }

    /// The tree of this node's `shared` slots (the others count as 0).
    pub fn of(env: &impl Env, shared: &[Slot]) -> Tree {
        let mut leaves = vec![0u64; SLOTS];
        for &s in shared {
            leaves[usize::from(s)] = env.store().slot_summary(s).0;
        }
        Tree::from_leaves(leaves)
    }

    /// The tree over these slot digests.
    pub fn from_leaves(leaves: Vec<u64>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().expect("one level").len() > 1 {
            let below = levels.last().expect("one level");
            let up = below
                .chunks(TREE_FANOUT)
                .map(|c| {
                    if c.iter().all(|&h| h == 0) {
                        0
                    } else {
                        let bytes: Vec<u8> = c.iter().flat_map(|h| h.to_le_bytes()).collect();
                        xxh3_64(&bytes)
                    }
                })
                .collect();
            levels.push(up);
        }
        Tree { levels }
    }

    /// The hashes of `nodes` at `level` (0 for an index out of range).
    pub fn hashes(&self, level: u8, nodes: &[u32]) -> Vec<u64> {
        let l = self.levels.get(usize::from(level));
        nodes
            .iter()
            .map(|&i| l.and_then(|l| l.get(i as usize)).copied().unwrap_or(0))
            .collect()
    }

    /// Index of the root level.
    pub fn top(&self) -> u8 {
        (self.levels.len() - 1) as u8
    }

    /// Children (at `level - 1`) of `nodes` at `level`.
    pub fn children(&self, level: u8, nodes: &[u32]) -> Vec<u32> {
        let below = self.levels[usize::from(level) - 1].len() as u32;
        nodes
            .iter()
            .flat_map(|&n| n * TREE_FANOUT as u32..(n + 1) * TREE_FANOUT as u32)
            .filter(|&c| c < below)
            .collect()
    }
}

/// Answers a peer's anti-entropy request ([`Request::Tree`], `Buckets`, `List`, `Pull`,
/// `Merge`); `None` for any other request. `from`: the peer (`None`: one this node cannot place).
pub fn serve_repair(
    env: &impl Env,
    from: Option<MemberIdx>,
    req: &Request<'_>,
) -> Option<Response> {
    let now = env.ctx().now;
    let store = env.store();
    Some(match req {
        // A round is answered only for a peer this node sees live: from then on the writes it
        // coordinates reach that peer (or become hints for it), so nothing falls between the
        // round and the peer's return.
        Request::Tree { .. }
        | Request::Buckets { .. }
        | Request::Digests { .. }
        | Request::List { .. }
        | Request::Pull { .. }
            if !from.is_some_and(|m| env.live(m)) =>
        {
            Response::NotLive
        }
        Request::Tree { level, nodes } => {
            let tree = Tree::build(env, from.expect("checked live"));
            Response::Hashes(tree.hashes(*level, nodes))
        }
        Request::Digests { slots } => {
            Response::Digests(slots.iter().map(|&s| store.slot_summary(s).0).collect())
        }
        Request::Buckets { slots } => {
            let mut counts = Vec::with_capacity(slots.len());
            let mut digests = Vec::with_capacity(slots.len() * BUCKETS);
            for &s in slots {
                let (n, d) = store.slot_buckets(s, now);
                counts.push(n);
                digests.extend_from_slice(&d);
            }
            Response::Buckets { counts, digests }
        }
        Request::List { items, budget } => {
            let mut entries = Vec::new();
            let mut bytes = 0u64;
            let mut n = 0u32;
            for &(slot, bucket) in items {
                let page = store.bucket_entries(slot, 1 << (bucket as u32 % BUCKETS as u32), now);
                bytes += page.iter().map(|(k, _)| k.len() as u64 + 16).sum::<u64>();
                entries.extend(page);
                n += 1;
                if bytes >= *budget {
                    break;
                }
            }
            Response::Listed { entries, items: n }
        }
        Request::Pull { keys, budget } => {
            let mut entries = Vec::new();
            let mut bytes = 0u64;
            let mut n = 0u32;
            for k in keys {
                let s = store.fetch(k);
                n += 1;
                if s != State::Missing {
                    bytes += (k.len() + s.value_len() + 24) as u64;
                    entries.push((k.clone(), s));
                }
                if bytes >= *budget {
                    break;
                }
            }
            Response::Entries { entries, keys: n }
        }
        Request::Merge { entries } => {
            let (mut stored, mut skipped) = (0u32, 0u32);
            for (k, s) in entries {
                if merge_one(env, k, s) {
                    stored += 1;
                } else {
                    skipped += 1;
                }
            }
            Response::Merged { stored, skipped }
        }
        _ => return None,
    })
}

/// Bytes per anti-entropy page under a memory budget of `max` (0: none): smaller under a small
/// budget, since a page in flight takes memory too and must fit in the reserve [`fits`] keeps.
pub fn page_bytes(max: u64) -> u64 {
    match max {
        0 => PAGE_BYTES,
        m => (m / 32).clamp(64 << 10, PAGE_BYTES),
    }
}

/// Bytes per hint replay batch under a memory budget of `max` (0: none), likewise.
pub fn hint_batch_bytes(max: u64) -> u64 {
    match max {
        0 => 256 << 10,
        m => (m / 64).clamp(16 << 10, 256 << 10),
    }
}

/// Whether `bytes` more fit under a memory budget of `max` with `used` taken, for a repair
/// (`max` 0: no budget). Repair keeps an eighth of the budget free for the messages it is made
/// of (the driver sizes its pages and hint batches to fit in it), so that repair traffic never
/// takes the node over its budget.
pub fn fits(max: u64, used: u64, bytes: u64) -> bool {
    max == 0 || used + bytes + max / 8 <= max
}

/// Stores a repaired `state` of `key` if it is newer and the node has room for it (see the
/// module docs); returns whether it was stored.
pub fn merge_one(env: &impl Env, key: &[u8], state: &State) -> bool {
    let ctx = env.ctx();
    if !plausible(state.version(), ctx.now) {
        return false;
    }
    let store = env.store();
    if let State::Live { value, .. } = state {
        let need = (key.len() + value.len() + 64) as u64;
        if !env.room(need) {
            // No room: keep nothing stale in its place.
            if let Some(v) = state.version() {
                store.drop_older(key, v);
            }
            return false;
        }
    }
    store.offer(key, state, &ctx) == Offered::Stored
}

/// What one anti-entropy round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The peer.
    pub peer: MemberIdx,
    /// Slots both replicate.
    pub slots_compared: u64,
    /// Slots whose digests differed.
    pub slots_differing: u64,
    /// Slots this round was to copy whole that another round filled first: compared instead.
    pub slots_late: u64,
    /// Entries pulled and stored here.
    pub keys_pulled: u64,
    /// Entries in the pages this round received (copies and pulls), stored or not.
    pub entries_received: u64,
    /// Entries pushed and stored by the peer.
    pub keys_pushed: u64,
    /// Bytes of requests and replies (message bodies).
    pub bytes: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests asked again because the peer did not see this node live yet (catch-up).
    pub not_live: u64,
    /// Requests held back by the round's pace (`rebalance-max-bytes-per-sec`).
    pub throttled: u64,
    /// Requests asked again after no answer in time.
    pub retries: u64,
    /// A transfer round (slots this node receives after a ring change).
    pub transfer: bool,
    /// Why the round failed (`None`: it completed).
    pub error: Option<String>,
    /// When the round started, ms.
    pub started: u64,
    /// End, ms.
    pub ended: u64,
}

impl SyncReport {
    /// Whether the round completed and found nothing to repair.
    pub fn clean(&self) -> bool {
        self.error.is_none() && self.slots_differing == 0
    }
}

#[derive(Debug)]
enum Step {
    /// Comparing tree nodes at a level.
    Tree { level: u8, nodes: Vec<u32> },
    /// Comparing the digests of the slots another round filled first ([`Round::late`]), from
    /// the `at`th: those that differ go on to [`Step::Buckets`].
    Digests { at: usize, n: usize },
    /// Comparing differing slots' buckets, from the `at`th.
    Buckets { at: usize, n: usize },
    /// Listing differing buckets, from the `at`th.
    List { at: usize },
    /// Copying whole slots (this node held none of them), from the `at`th.
    Dump { at: usize },
    /// Pulling keys, from the `at`th.
    Pull { at: usize, n: usize },
    /// Pushing keys, from the `at`th.
    Push { at: usize, n: usize },
}

/// One anti-entropy round against one peer (see the module docs): one request at a time.
#[derive(Debug)]
pub struct Round {
    peer: MemberIdx,
    mine: Tree,
    step: Step,
    diff: Vec<Slot>,
    items: Vec<(u16, u8)>,
    dumps: Vec<Slot>,
    /// Slots this catch-up or transfer round was to copy whole but that another round (from
    /// another replica of them) filled first: compared after the copies instead, by slot digest
    /// and then, for those that differ, bucket by bucket (a newcomer pulls each slot from every
    /// old replica, and copying it whole from each would receive every key once per replica).
    late: Vec<Slot>,
    /// Whether the slots to copy whole are checked again just before each is asked for (a
    /// catch-up or transfer round's first copy pass).
    recheck: bool,
    pulls: Vec<Bytes>,
    pushes: Vec<Bytes>,
    report: SyncReport,
    /// The tag of the request out (answers to older ones are ignored).
    tag: u64,
    /// When the request out times out, or when to ask again.
    due: u64,
    /// The request is out (else: waiting to ask again at `due`).
    asked: bool,
    /// A catch-up round: [`Response::NotLive`] means "ask again shortly", not failure.
    catch_up: bool,
    retry_until: u64,
    page_bytes: u64,
    done: bool,
    /// Slots both replicate.
    shared: Vec<Slot>,
    /// Bytes per second this round may ask for (0: no limit), and its current one-second
    /// window: (start, bytes).
    pace: u64,
    window: (u64, u64),
    /// Times the request out was asked again after no answer.
    retries: u8,
}

impl Round {
    /// A round against `peer` over the `shared` slots (both replicate them), its first request
    /// in `out` (tags from `tag`).
    pub fn start(
        env: &impl Env,
        peer: MemberIdx,
        shared: Vec<Slot>,
        catch_up: bool,
        page_bytes: u64,
        tag: u64,
        out: &mut Out,
    ) -> Round {
        let mut r = Round::begin(env, peer, shared, catch_up, page_bytes, tag);
        r.mine = Tree::of(env, &r.shared);
        r.step = Step::Tree {
            level: r.mine.top(),
            nodes: vec![0],
        };
        r.first(env, out);
        r
    }

    /// A transfer: a round against `peer` over `slots` that this node receives (the peer may no
    /// longer replicate them, so no tree is compared: it starts with the slots' buckets).
    pub fn transfer(
        env: &impl Env,
        peer: MemberIdx,
        slots: Vec<Slot>,
        page_bytes: u64,
        tag: u64,
        out: &mut Out,
    ) -> Round {
        let mut r = Round::begin(env, peer, slots, true, page_bytes, tag);
        // Slots this node holds nothing of (a newcomer's) are copied whole at once; only the
        // others are compared bucket by bucket (which walks every entry on both sides).
        let store = env.store();
        let (empty, held): (Vec<Slot>, Vec<Slot>) = r
            .shared
            .iter()
            .partition(|&&s| store.slot_summary(s) == (0, 0));
        r.report.slots_differing = r.shared.len() as u64;
        r.report.transfer = true;
        r.step = if held.is_empty() {
            Step::Dump { at: 0 }
        } else {
            Step::Buckets { at: 0, n: 0 }
        };
        r.diff = held;
        r.dumps = empty;
        r.rotate_dumps();
        r.first(env, out);
        r
    }

    /// Starts a catch-up or transfer round's copies at its own place in the ring
    /// ([`DUMP_STRIDE`] times the peer's index), so that the rounds pulling the same slots from
    /// different replicas each copy different slots first and find the others' already filled.
    fn rotate_dumps(&mut self) {
        if !self.recheck || self.dumps.is_empty() {
            return;
        }
        let start = (usize::from(self.peer) * DUMP_STRIDE % SLOTS) as Slot;
        let at = self.dumps.partition_point(|&s| s < start);
        if self.dumps.is_sorted() {
            self.dumps.rotate_left(at);
        }
    }

    fn begin(
        env: &impl Env,
        peer: MemberIdx,
        shared: Vec<Slot>,
        catch_up: bool,
        page_bytes: u64,
        tag: u64,
    ) -> Round {
        let now = env.ctx().now;
        Round {
            peer,
            step: Step::Buckets { at: 0, n: 0 },
            mine: Tree::from_leaves(Vec::new()),
            diff: Vec::new(),
            items: Vec::new(),
            dumps: Vec::new(),
            late: Vec::new(),
            recheck: catch_up,
            pulls: Vec::new(),
            pushes: Vec::new(),
            report: SyncReport {
                peer,
                slots_compared: shared.len() as u64,
                started: now,
                ..SyncReport::default()
            },
            tag,
            due: now,
            asked: false,
            catch_up,
            retry_until: now + CATCH_UP_DEADLINE_MS,
            page_bytes,
            done: false,
            shared,
            pace: 0,
            window: (now, 0),
            retries: 0,
        }
    }

    fn first(&mut self, env: &impl Env, out: &mut Out) {
        if self.shared.is_empty() {
            self.finish(env.ctx().now, None);
        } else {
            self.ask(env, out);
        }
    }

    /// Limits the bytes this round asks for to `bytes_per_sec` (0: no limit).
    pub fn set_pace(&mut self, bytes_per_sec: u64) {
        self.pace = bytes_per_sec;
    }

    /// The peer.
    pub fn peer(&self) -> MemberIdx {
        self.peer
    }

    /// Slots both replicate.
    pub fn shared(&self) -> &[Slot] {
        &self.shared
    }

    /// The tag of the request out.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// When to call [`Round::on_timer`] next.
    pub fn due(&self) -> Option<u64> {
        (!self.done).then_some(self.due)
    }

    /// The report, once done.
    pub fn report(&self) -> Option<&SyncReport> {
        self.done.then_some(&self.report)
    }

    fn finish(&mut self, now: u64, error: Option<String>) {
        self.done = true;
        self.report.error = error;
        self.report.ended = now;
    }

    /// Sends the request of the current step (or, over its pace, waits for the next window).
    fn ask(&mut self, env: &impl Env, out: &mut Out) {
        let now = env.ctx().now;
        if self.pace > 0 {
            if now >= self.window.0 + 1000 {
                self.window = (now, 0);
            }
            if self.window.1 >= self.pace {
                self.report.throttled += 1;
                self.asked = false;
                self.due = self.window.0 + 1000;
                return;
            }
        }
        let store = env.store();
        let call = match &mut self.step {
            Step::Tree { level, nodes } => Call::Encoded(wire_req(&Request::Tree {
                level: *level,
                nodes: nodes.clone(),
            })),
            Step::Digests { at, n } => {
                *n = (self.late.len() - *at).min(ITEMS_PER_REQUEST);
                Call::Encoded(wire_req(&Request::Digests {
                    slots: self.late[*at..*at + *n].to_vec(),
                }))
            }
            Step::Buckets { at, n } => {
                *n = (self.diff.len() - *at).min(BUCKET_SLOTS_PER_REQUEST);
                Call::Encoded(wire_req(&Request::Buckets {
                    slots: self.diff[*at..*at + *n].to_vec(),
                }))
            }
            Step::List { at } => {
                let end = (*at + ITEMS_PER_REQUEST).min(self.items.len());
                Call::Encoded(wire_req(&Request::List {
                    items: self.items[*at..end].to_vec(),
                    budget: self.page_bytes,
                }))
            }
            Step::Dump { at } => {
                let mut end = (*at + ITEMS_PER_REQUEST).min(self.dumps.len());
                if self.recheck {
                    // A slot another round filled since this one planned its copy is compared
                    // afterwards instead of copied again.
                    end = (*at + RECHECKED_PER_DUMP).min(self.dumps.len());
                    let window: Vec<Slot> = self.dumps[*at..end].to_vec();
                    let (still, filled): (Vec<Slot>, Vec<Slot>) = window
                        .into_iter()
                        .partition(|&s| store.slot_summary(s) == (0, 0));
                    if !filled.is_empty() {
                        end = *at + still.len();
                        self.dumps
                            .splice(*at..*at + still.len() + filled.len(), still);
                        self.report.slots_late += filled.len() as u64;
                        self.late.extend(filled);
                    }
                    if end == *at {
                        // Every slot of the window was filled: on with the next ones.
                        return self.go_on(env, out);
                    }
                }
                Call::Dump {
                    slots: self.dumps[*at..end].to_vec(),
                    budget: self.page_bytes,
                }
            }
            Step::Pull { at, n } => {
                *n = (self.pulls.len() - *at).min(KEYS_PER_REQUEST);
                Call::Encoded(wire_req(&Request::Pull {
                    keys: self.pulls[*at..*at + *n].to_vec(),
                    budget: self.page_bytes,
                }))
            }
            Step::Push { at, n } => {
                // Whole keys until the page's bytes or key count.
                let mut entries = Vec::new();
                let mut bytes = 0u64;
                *n = 0;
                for k in self.pushes[*at..].iter().take(KEYS_PER_REQUEST) {
                    *n += 1;
                    let st = store.fetch(k);
                    if st != State::Missing {
                        bytes += (k.len() + st.value_len() + 24) as u64;
                        entries.push((k.clone(), st));
                    }
                    if bytes >= self.page_bytes {
                        break;
                    }
                }
                Call::Encoded(wire_req(&Request::Merge { entries }))
            }
        };
        self.tag += 1;
        self.asked = true;
        self.due = now + ROUND_REQUEST_TIMEOUT_MS;
        self.report.requests += 1;
        self.report.bytes += call.to_body().len() as u64;
        out.sends.push(Send {
            call,
            to: vec![(self.peer, Some(self.tag))],
        });
    }

    /// Moves to the next step with work, or finishes.
    fn next(&mut self, env: &impl Env, out: &mut Out) {
        let now = env.ctx().now;
        loop {
            let next = match &self.step {
                Step::Tree { .. } => Step::Buckets { at: 0, n: 0 },
                Step::Buckets { .. } => Step::List { at: 0 },
                Step::List { .. } => {
                    self.rotate_dumps();
                    Step::Dump { at: 0 }
                }
                Step::Dump { .. } if self.recheck && !self.late.is_empty() => {
                    // The slots another round filled first: compare them now, by digest, then
                    // bucket by bucket those that differ (once: what this finds empty again is
                    // copied without another check).
                    self.recheck = false;
                    self.dumps.clear();
                    self.items.clear();
                    self.diff.clear();
                    Step::Digests { at: 0, n: 0 }
                }
                Step::Digests { .. } => Step::Buckets { at: 0, n: 0 },
                Step::Dump { .. } => Step::Pull { at: 0, n: 0 },
                Step::Pull { .. } => Step::Push { at: 0, n: 0 },
                Step::Push { .. } => return self.finish(now, None),
            };
            let has_work = match &next {
                Step::Digests { .. } => !self.late.is_empty(),
                Step::Buckets { .. } => !self.diff.is_empty(),
                Step::List { .. } => !self.items.is_empty(),
                Step::Dump { .. } => !self.dumps.is_empty(),
                Step::Pull { .. } => !self.pulls.is_empty(),
                Step::Push { .. } => !self.pushes.is_empty(),
                Step::Tree { .. } => true,
            };
            self.step = next;
            if has_work {
                return self.ask(env, out);
            }
        }
    }

    /// The answer to the request tagged `tag`.
    pub fn on_answer(&mut self, env: &impl Env, tag: u64, answer: Answer, out: &mut Out) {
        if self.done || tag != self.tag || !self.asked {
            return;
        }
        self.asked = false;
        self.retries = 0;
        let now = env.ctx().now;
        let resp = match answer {
            Answer::Reply(r) => r,
            Answer::LinkDown => return self.failed(env, "link down"),
        };
        let got = postcard::experimental::serialized_size(&resp).unwrap_or(0) as u64;
        self.report.bytes += got;
        self.window.1 += got;
        let store = env.store();
        let me = env.me();
        match (&mut self.step, resp) {
            (_, Response::NotLive) if self.catch_up && now < self.retry_until => {
                // The peer does not see this node yet: ask again shortly.
                self.report.not_live += 1;
                self.due = now + CATCH_UP_RETRY_MS;
            }
            (Step::Tree { level, nodes }, Response::Hashes(theirs))
                if theirs.len() == nodes.len() =>
            {
                let ours = self.mine.hashes(*level, nodes);
                let differing: Vec<u32> = nodes
                    .iter()
                    .zip(ours.iter().zip(&theirs))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(n, _)| *n)
                    .collect();
                if differing.is_empty() {
                    return self.next(env, out);
                }
                if *level == 0 {
                    self.diff = differing
                        .into_iter()
                        .map(|s| s as Slot)
                        .filter(|&s| shares(env, s, me, self.peer))
                        .collect();
                    self.report.slots_differing = self.diff.len() as u64;
                    return self.next(env, out);
                }
                let children = self.mine.children(*level, &differing);
                self.step = Step::Tree {
                    level: *level - 1,
                    nodes: children,
                };
                self.ask(env, out);
            }
            (Step::Digests { at, n }, Response::Digests(theirs)) if theirs.len() == *n => {
                for (&slot, theirs) in self.late[*at..*at + *n].iter().zip(theirs) {
                    if store.slot_summary(slot).0 != theirs {
                        self.diff.push(slot);
                    }
                }
                *at += *n;
                self.go_on(env, out);
            }
            (Step::Buckets { at, n }, Response::Buckets { counts, digests })
                if counts.len() == *n && digests.len() == *n * BUCKETS =>
            {
                for (i, &slot) in self.diff[*at..*at + *n].iter().enumerate() {
                    let (mine, ours) = store.slot_buckets(slot, now);
                    if mine == 0 && counts[i] > 0 {
                        self.dumps.push(slot);
                        continue;
                    }
                    for (b, d) in ours.iter().enumerate() {
                        if *d != digests[i * BUCKETS + b] {
                            self.items.push((slot, b as u8));
                        }
                    }
                }
                *at += *n;
                self.go_on(env, out);
            }
            (Step::List { at }, Response::Listed { entries, items: n })
                if n > 0 && *at + n as usize <= self.items.len() =>
            {
                let covered = &self.items[*at..*at + n as usize];
                let mut mine: hashbrown::HashMap<Bytes, Version> = hashbrown::HashMap::new();
                let mut i = 0;
                while i < covered.len() {
                    let slot = covered[i].0;
                    let mut mask = 0u32;
                    while i < covered.len() && covered[i].0 == slot {
                        mask |= 1 << covered[i].1;
                        i += 1;
                    }
                    mine.extend(store.bucket_entries(slot, mask, now));
                }
                for (k, theirs) in entries {
                    match mine.remove(&k) {
                        Some(v) if v > theirs => self.pushes.push(k),
                        Some(v) if v == theirs => {}
                        _ if plausible(Some(theirs), now) => self.pulls.push(k),
                        _ => {}
                    }
                }
                self.pushes.extend(mine.into_keys());
                *at += n as usize;
                self.go_on(env, out);
            }
            (Step::Dump { at }, Response::Dump { entries, slots: n })
                if n > 0 && *at + n as usize <= self.dumps.len() =>
            {
                *at += n as usize;
                let mut malformed = false;
                self.report.entries_received += u64::from(entries.len());
                for e in entries.entries() {
                    match e {
                        Ok((k, s)) => {
                            if merge_one(env, &k, &s) {
                                self.report.keys_pulled += 1;
                            }
                        }
                        Err(_) => malformed = true,
                    }
                }
                if malformed {
                    // What decoded is kept (each entry is newer or ignored); the rest is
                    // asked again by the next round.
                    return self.failed(env, "malformed page");
                }
                self.go_on(env, out);
            }
            (Step::Pull { at, n }, Response::Entries { entries, keys })
                if keys > 0 && keys as usize <= *n =>
            {
                // The page covered the first `keys` keys asked; the rest are asked again.
                *at += keys as usize;
                self.pull_in(env, entries);
                self.go_on(env, out);
            }
            (Step::Push { at, n }, Response::Merged { stored, .. }) => {
                self.report.keys_pushed += u64::from(stored);
                *at += *n;
                self.go_on(env, out);
            }
            (_, Response::NotLive) => self.failed(env, "the peer does not see this node live"),
            (_, Response::Error(e)) => self.failed(env, &e),
            (_, other) => self.failed(env, &format!("unexpected reply {}", other.tag())),
        }
    }

    /// The current step's list is covered up to where its cursor stands: ask for the next page,
    /// or move to the next step.
    fn go_on(&mut self, env: &impl Env, out: &mut Out) {
        let (at, len) = match &self.step {
            Step::Tree { .. } => (0, 0),
            Step::Digests { at, .. } => (*at, self.late.len()),
            Step::Buckets { at, .. } => (*at, self.diff.len()),
            Step::List { at } => (*at, self.items.len()),
            Step::Dump { at } => (*at, self.dumps.len()),
            Step::Pull { at, .. } => (*at, self.pulls.len()),
            Step::Push { at, .. } => (*at, self.pushes.len()),
        };
        if at < len {
            self.ask(env, out);
        } else {
            self.next(env, out);
        }
    }

    /// Stores what a peer sent that is newer here (and fits).
    fn pull_in(&mut self, env: &impl Env, entries: Vec<(Bytes, State)>) {
        self.report.entries_received += entries.len() as u64;
        for (k, s) in entries {
            if merge_one(env, &k, &s) {
                self.report.keys_pulled += 1;
            }
        }
    }

    fn failed(&mut self, env: &impl Env, why: &str) {
        self.finish(env.ctx().now, Some(why.to_string()));
    }

    /// Time passed: the request out timed out, or it is time to ask again. A request that got
    /// no answer is asked again (every step's request is a read, or a merge that LWW makes
    /// idempotent) up to [`ROUND_RETRIES`] times before the round fails: a long transfer is not
    /// started over for one lost reply.
    pub fn on_timer(&mut self, env: &impl Env, out: &mut Out) {
        let now = env.ctx().now;
        if self.done || now < self.due {
            return;
        }
        if self.asked {
            if self.retries >= ROUND_RETRIES {
                return self.failed(env, "no answer in time");
            }
            self.retries += 1;
            self.report.retries += 1;
        }
        self.ask(env, out);
    }
}

fn wire_req(r: &Request<'_>) -> Vec<u8> {
    crate::wire::to_body(r)
}

/// Anti-entropy pace (the `anti-entropy-*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    /// Between rounds against a peer, ms (0: no automatic rounds).
    pub interval_ms: u64,
    /// The wait after clean rounds grows up to this many intervals.
    pub max_backoff: u32,
    /// Bytes per page of key lists and slot copies (`rebalance-batch-size`).
    pub page_bytes: u64,
    /// Catch-up and transfer rounds at once (`rebalance-max-concurrent`).
    pub max_concurrent: usize,
    /// Bytes per second all catch-up and transfer rounds together may ask for
    /// (`rebalance-max-bytes-per-sec`; 0: no limit).
    pub max_bytes_per_sec: u64,
    /// How long a slot this node no longer replicates is kept, ms (`rebalance-grace`).
    pub grace_ms: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            interval_ms: 30_000,
            max_backoff: 8,
            page_bytes: PAGE_BYTES,
            max_concurrent: 4,
            max_bytes_per_sec: 0,
            grace_ms: 60_000,
        }
    }
}

/// Adaptive backoff of the automatic rounds against one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The current factor (1, 2, 4, ... up to the maximum).
    pub factor: u32,
    /// When the next round is due, ms.
    pub next_at: u64,
}

impl Backoff {
    /// A round ended at `now`: clean rounds double the factor up to `max`, anything else snaps
    /// it back to 1. Returns whether the factor changed.
    pub fn after(&mut self, clean: bool, now: u64, s: &SyncSettings) -> bool {
        let before = self.factor;
        self.factor = if clean {
            (self.factor.max(1) * 2).min(s.max_backoff.max(1))
        } else {
            1
        };
        self.next_at = now + s.interval_ms * u64::from(self.factor);
        before != self.factor
    }
}

/// A starting node's per-slot catch-up (see the module docs).
#[derive(Debug)]
pub struct CatchUp {
    /// Slot -> the other replicas a round has yet to complete with (`None`: not this node's
    /// slot, or caught up).
    pending: Vec<Option<Vec<MemberIdx>>>,
    left: usize,
    grace: u64,
    deadline: u64,
    /// Slots given up on at the deadline.
    pub timed_out: usize,
}

impl CatchUp {
    /// The catch-up of every slot this node replicates; each slot is marked catching up in
    /// `env` until done.
    pub fn new(env: &impl Env) -> CatchUp {
        let me = env.me();
        let plan: Vec<(Slot, Vec<MemberIdx>)> = (0..SLOTS as Slot)
            .filter(|&s| env.prefs(s).contains(&me))
            .map(|s| (s, env.prefs(s).to_vec()))
            .collect();
        CatchUp::of(env, plan)
    }

    /// The catch-up of the slots of `plan`, each from its listed replicas (this node, if listed,
    /// is left out): each slot with another replica is marked catching up in `env` until done.
    pub fn of(env: &impl Env, plan: Vec<(Slot, Vec<MemberIdx>)>) -> CatchUp {
        let now = env.ctx().now;
        let mut c = CatchUp {
            pending: vec![None; SLOTS],
            left: 0,
            grace: now + CATCH_UP_LINK_GRACE_MS,
            deadline: now + CATCH_UP_DEADLINE_MS,
            timed_out: 0,
        };
        c.add(env, plan);
        c
    }

    /// More slots to catch up (a ring change while catching up): a slot already pending also
    /// waits for the new sources.
    pub fn add(&mut self, env: &impl Env, plan: Vec<(Slot, Vec<MemberIdx>)>) {
        let me = env.me();
        let now = env.ctx().now;
        for (s, from) in plan {
            let others: Vec<MemberIdx> = from.into_iter().filter(|&m| m != me).collect();
            if others.is_empty() {
                continue;
            }
            match self.pending[usize::from(s)].as_mut() {
                Some(p) => {
                    for m in others {
                        if !p.contains(&m) {
                            p.push(m);
                        }
                    }
                }
                None => {
                    self.pending[usize::from(s)] = Some(others);
                    self.left += 1;
                    env.set_synced(s, false);
                }
            }
        }
        self.grace = self.grace.max(now + CATCH_UP_LINK_GRACE_MS);
        self.deadline = self.deadline.max(now + CATCH_UP_DEADLINE_MS);
    }

    /// Slots this node no longer replicates stop waiting (they count as done).
    pub fn drop_unowned(&mut self, env: &impl Env) {
        let me = env.me();
        for s in 0..self.pending.len() {
            if self.pending[s].is_some() && !env.prefs(s as Slot).contains(&me) {
                if let Some(p) = self.pending[s].as_mut() {
                    p.clear();
                }
                self.settle(env, s);
            }
        }
    }

    /// A catch-up round made progress at `now`: the deadline is counted from the last progress,
    /// so a large transfer that keeps moving is never given up on.
    pub fn progress(&mut self, now: u64) {
        self.deadline = self.deadline.max(now + CATCH_UP_DEADLINE_MS);
    }

    /// The slots still waiting for `peer`.
    pub fn slots_for(&self, peer: MemberIdx) -> Vec<Slot> {
        (0..self.pending.len())
            .filter(|&s| self.pending[s].as_ref().is_some_and(|p| p.contains(&peer)))
            .map(|s| s as Slot)
            .collect()
    }

    /// Slots still catching up.
    pub fn left(&self) -> usize {
        self.left
    }

    /// The peers a catch-up round must still run against.
    pub fn peers(&self) -> Vec<MemberIdx> {
        let mut v: Vec<MemberIdx> = Vec::new();
        for &m in self.pending.iter().flatten().flatten() {
            if !v.contains(&m) {
                v.push(m);
            }
        }
        v
    }

    fn settle(&mut self, env: &impl Env, slot: usize) {
        self.settle_if(env, slot, env.ring_agreed());
    }

    fn settle_if(&mut self, env: &impl Env, slot: usize, agreed: bool) {
        if agreed && self.pending[slot].as_ref().is_some_and(Vec::is_empty) {
            self.pending[slot] = None;
            self.left -= 1;
            env.set_synced(slot as Slot, true);
        }
    }

    /// A round with `peer` completed: its slots no longer wait for it.
    pub fn completed(&mut self, env: &impl Env, peer: MemberIdx) {
        let agreed = env.ring_agreed();
        for s in 0..self.pending.len() {
            if let Some(p) = self.pending[s].as_mut() {
                p.retain(|&m| m != peer);
                self.settle_if(env, s, agreed);
            }
        }
    }

    /// Time passed: after the link grace, replicas that are not live are not waited for; after
    /// the deadline, nothing is. Slots with nothing left to wait for settle once the ring is
    /// agreed ([`Env::ring_agreed`]).
    pub fn tick(&mut self, env: &impl Env) {
        let now = env.ctx().now;
        let in_grace = now < self.grace;
        let over = now >= self.deadline;
        let agreed = over || env.ring_agreed();
        for s in 0..self.pending.len() {
            if let Some(p) = self.pending[s].as_mut() {
                if over {
                    self.timed_out += 1;
                    p.clear();
                } else if !in_grace {
                    p.retain(|&m| env.live(m));
                }
                self.settle_if(env, s, agreed);
            }
        }
    }

    /// When [`CatchUp::tick`] has something to do next.
    pub fn next_tick(&self, now: u64) -> Option<u64> {
        (self.left > 0).then(|| (now + 100).min(self.deadline))
    }
}

/// Anti-entropy counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncCounters {
    /// Rounds completed.
    pub syncs: u64,
    /// Rounds failed.
    pub failures: u64,
    /// Entries pulled.
    pub keys_pulled: u64,
    /// Entries pushed.
    pub keys_pushed: u64,
    /// Duration of the last round that found differences, ns.
    pub last_diff_ns: u64,
    /// Clean automatic rounds.
    pub clean_ticks: u64,
    /// Duration of the last automatic round, ns.
    pub last_ns: u64,
    /// Bytes of all rounds.
    pub bytes: u64,
    /// Catch-up requests asked again because the peer did not see this node live yet.
    pub not_live: u64,
    /// The largest backoff factor of any peer.
    pub backoff_factor: u64,
    /// Entries received by transfer rounds and stored (`dist.rebalance.keys`).
    pub rebalance_keys: u64,
    /// Entries in the pages transfer rounds received, stored or not
    /// (`dist.rebalance.entries_received`).
    pub rebalance_entries: u64,
    /// Requests of transfer rounds (`dist.rebalance.batches`).
    pub rebalance_batches: u64,
    /// Requests held back by the pace (`dist.rebalance.throttle`).
    pub rebalance_throttle: u64,
    /// Duration of the last rebalance, from the ring change to its last slot received, ns
    /// (`dist.rebalance.last_ns`).
    pub rebalance_last_ns: u64,
    /// Slots received (`dist.migration.slots_received`).
    pub slots_received: u64,
    /// Slots dropped after the grace (`dist.migration.slots_released`).
    pub slots_released: u64,
    /// Entries dropped with them (`dist.migration.keys_released`).
    pub keys_released: u64,
    /// Transfer rounds failed (and started again) (`dist.migration.failures`).
    pub transfer_failures: u64,
    /// Slots a catch-up or transfer round compared instead of copying whole, because a round
    /// from another replica had filled them first (`dist.migration.slots_late`).
    pub slots_late: u64,
}

/// An event for the driver's log (the machine decides; the driver writes the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairEvent {
    /// A round failed.
    RoundFailed {
        /// The peer.
        peer: MemberIdx,
        /// Why.
        why: String,
        /// It was a rebalance transfer (started again by the catch-up), not anti-entropy.
        transfer: bool,
    },
    /// A peer's backoff factor changed.
    Backoff {
        /// The peer.
        peer: MemberIdx,
        /// The new factor.
        factor: u32,
    },
    /// The catch-up finished.
    CaughtUp {
        /// Slots given up on at the deadline.
        timed_out: usize,
    },
    /// A ring change's plan: slots to receive and to release.
    Rebalance {
        /// Slots this node receives.
        receive: usize,
        /// Slots it no longer replicates (dropped after the grace).
        release: usize,
    },
    /// Slots kept past a ring change were dropped.
    Released {
        /// Slots.
        slots: usize,
        /// Entries.
        keys: u64,
    },
}

/// The node's repair machine: hint replay, the anti-entropy schedule and rounds, and the
/// catch-up of a starting node (see the module docs). Long-lived; its timer is
/// [`Out::wake_at`] after every input.
#[derive(Debug)]
pub struct Repair {
    /// The hints held for peers.
    pub hints: Hints,
    settings: SyncSettings,
    rounds: BTreeMap<MemberIdx, Round>,
    backoff: BTreeMap<MemberIdx, Backoff>,
    /// `HC.SYNC` callers waiting for a round against a peer: (peer, token).
    waiting: Vec<(MemberIdx, u64)>,
    /// Rounds asked for by `HC.SYNC` that could not start yet (one is running).
    asked: Vec<MemberIdx>,
    /// Finished rounds for `HC.SYNC` callers: (token, report).
    reports: Vec<(u64, SyncReport)>,
    catch_up: Option<CatchUp>,
    events: Vec<RepairEvent>,
    /// Replay batches out: tag -> target.
    replays: BTreeMap<u64, MemberIdx>,
    next_tag: u64,
    counters: SyncCounters,
    next_expire: u64,
    /// The peers sharing slots with this node, and when they were listed.
    partners: Option<(u64, Vec<MemberIdx>)>,
    /// The slots shared with each peer (cleared with `partners`).
    shared: BTreeMap<MemberIdx, Vec<Slot>>,
    /// Slots this node stopped replicating, and when their grace ends.
    releasing: BTreeMap<Slot, u64>,
    /// When the rebalance under way started (its catch-up is running).
    rebalance_started: Option<u64>,
}

/// How often [`Repair`] lists again the peers it shares slots with, ms.
const PARTNERS_REFRESH_MS: u64 = 10_000;

/// Tags of rounds: `peer << 40 | n`; replay tags have bit 63.
const REPLAY_TAG: u64 = 1 << 63;

impl Repair {
    /// A repair machine with these settings (start a starting node's catch-up with
    /// [`Repair::start_catch_up`]).
    pub fn new(hints: HintLimits, settings: SyncSettings) -> Repair {
        Repair {
            hints: Hints::new(hints),
            settings,
            rounds: BTreeMap::new(),
            backoff: BTreeMap::new(),
            waiting: Vec::new(),
            asked: Vec::new(),
            reports: Vec::new(),
            catch_up: None,
            events: Vec::new(),
            replays: BTreeMap::new(),
            next_tag: 0,
            counters: SyncCounters::default(),
            next_expire: 0,
            partners: None,
            shared: BTreeMap::new(),
            releasing: BTreeMap::new(),
            rebalance_started: None,
        }
    }

    /// This node starts: every slot it shares with other replicas catches up (see
    /// [`CatchUp`]). Call [`Repair::on_timer`] next.
    pub fn start_catch_up(&mut self, env: &impl Env) {
        self.catch_up = Some(CatchUp::new(env)).filter(|c| c.left() > 0);
    }

    /// The ring changed (`env` shows the new one): this node receives the slots of `plan` from
    /// their old replicas (each is marked catching up until a round has completed with each of
    /// them that is live) and keeps the slots it no longer replicates for the grace. Call
    /// [`Repair::on_timer`] next.
    ///
    /// A draining node (`draining`) releases nothing: the others copy its slots from it, and it
    /// serves them until it stops.
    pub fn rebalance(&mut self, env: &impl Env, mut plan: crate::rebalance::Plan, draining: bool) {
        let now = env.ctx().now;
        if draining {
            plan.release.clear();
        }
        self.partners = None;
        self.shared.clear();
        // Backoffs and rounds of members that left stay until they finish; the automatic
        // rounds list partners anew.
        self.events.push(RepairEvent::Rebalance {
            receive: plan.receive.len(),
            release: plan.release.len(),
        });
        let me = env.me();
        let wanted: Vec<Slot> = plan.to_receive(me).collect();
        let receive: Vec<(Slot, Vec<MemberIdx>)> = plan
            .receive
            .into_iter()
            .filter(|(s, _)| wanted.binary_search(s).is_ok())
            .collect();
        if plan.first {
            // A first ring: every slot not received from someone is up to date now.
            let mut receiving = vec![false; SLOTS];
            for (s, _) in &receive {
                receiving[usize::from(*s)] = true;
            }
            for (s, r) in receiving.iter().enumerate() {
                if !r {
                    env.set_synced(s as Slot, true);
                }
            }
        }
        self.counters.slots_received += receive.len() as u64;
        if let Some(c) = self.catch_up.as_mut() {
            c.drop_unowned(env);
            c.add(env, receive);
        } else if !receive.is_empty() {
            self.catch_up = Some(CatchUp::of(env, receive));
        }
        if self.catch_up.is_some() && self.rebalance_started.is_none() {
            self.rebalance_started = Some(now);
        }
        for s in plan.release {
            self.releasing
                .entry(s)
                .or_insert(now + self.settings.grace_ms);
        }
    }

    /// Changes the settings (runtime).
    pub fn set_settings(&mut self, settings: SyncSettings, hints: HintLimits) {
        self.settings = settings;
        self.hints.set_limits(hints);
    }

    /// The anti-entropy settings.
    pub fn settings(&self) -> SyncSettings {
        self.settings
    }

    /// Counters.
    pub fn counters(&self) -> SyncCounters {
        let mut c = self.counters;
        c.backoff_factor = self
            .backoff
            .values()
            .map(|b| u64::from(b.factor))
            .max()
            .unwrap_or(1);
        c
    }

    /// Each peer's backoff.
    pub fn backoffs(&self) -> &BTreeMap<MemberIdx, Backoff> {
        &self.backoff
    }

    /// Slots still catching up (0 once caught up).
    pub fn catching_up(&self) -> usize {
        self.catch_up.as_ref().map_or(0, CatchUp::left)
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<RepairEvent> {
        std::mem::take(&mut self.events)
    }

    /// Reports of rounds `HC.SYNC` asked for, since the last call: (token, report).
    pub fn take_reports(&mut self) -> Vec<(u64, SyncReport)> {
        std::mem::take(&mut self.reports)
    }

    /// Whether it has work in progress that needs its timer: a catch-up, a round, a replay batch
    /// out or a queue waiting on its rate limit.
    pub fn busy(&self) -> bool {
        self.catch_up.is_some()
            || !self.rounds.is_empty()
            || !self.replays.is_empty()
            || self.hints.next_due(0).is_some()
    }

    /// The rounds running: each one's peer, and whether it is a slot transfer (rebalance or
    /// catch-up) rather than anti-entropy (drivers trace a span per round).
    pub fn rounds_running(&self) -> Vec<(MemberIdx, bool)> {
        self.rounds
            .iter()
            .map(|(m, r)| (*m, r.report.transfer))
            .collect()
    }

    /// Whether `tag` is a hint replay's (else a round's).
    pub fn is_replay_tag(tag: u64) -> bool {
        tag & REPLAY_TAG != 0
    }

    /// The peers a catch-up still waits for, and the rounds running (for diagnostics).
    pub fn catch_up_state(&self) -> (Vec<MemberIdx>, Vec<MemberIdx>) {
        (
            self.catch_up
                .as_ref()
                .map(|c| c.peers())
                .unwrap_or_default(),
            self.rounds.keys().copied().collect(),
        )
    }

    /// Whether a round against `peer` is running.
    pub fn syncing(&self, peer: MemberIdx) -> bool {
        self.rounds.contains_key(&peer)
    }

    /// The peers this node shares slots with.
    fn partners(env: &impl Env) -> Vec<MemberIdx> {
        let me = env.me();
        let mut v: Vec<MemberIdx> = Vec::new();
        for s in 0..SLOTS as Slot {
            let p = env.prefs(s);
            if p.contains(&me) {
                for &m in p {
                    if m != me && !v.contains(&m) {
                        v.push(m);
                    }
                }
            }
        }
        v.sort_unstable();
        v
    }

    /// The slots shared with `peer` (listed again with the partners).
    fn shared_with(&mut self, env: &impl Env, peer: MemberIdx) -> Vec<Slot> {
        self.partners_now(env);
        self.shared
            .entry(peer)
            .or_insert_with(|| shared_slots(env, peer))
            .clone()
    }

    /// [`Repair::partners`], recomputed at most every [`PARTNERS_REFRESH_MS`] (a walk of every
    /// slot's preference list).
    fn partners_now(&mut self, env: &impl Env) -> Vec<MemberIdx> {
        let now = env.ctx().now;
        if self
            .partners
            .as_ref()
            .is_none_or(|(at, _)| now >= at + PARTNERS_REFRESH_MS)
        {
            self.partners = Some((now, Repair::partners(env)));
            self.shared.clear();
        }
        self.partners
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    /// `HC.SYNC`: runs a round against `peer` now (after the one running, if any); its report
    /// comes back under `token`.
    pub fn sync_now(&mut self, env: &impl Env, peer: MemberIdx, token: u64, out: &mut Out) {
        self.waiting.push((peer, token));
        if !self.rounds.contains_key(&peer) {
            self.start_round(env, peer, false, out);
        } else if !self.asked.contains(&peer) {
            self.asked.push(peer);
        }
        self.arm(env, out);
    }

    /// The peers `HC.SYNC` without an argument runs rounds against.
    pub fn sync_all_peers(env: &impl Env) -> Vec<MemberIdx> {
        Repair::partners(env)
    }

    /// Hints of a write's outcome (the targets that did not store it).
    pub fn add_hints(&mut self, hints: Vec<(MemberIdx, Bytes, State)>, now: u64) {
        for (m, k, s) in hints {
            self.hints.add(m, k, s, HintSource::Replication, now);
        }
    }

    /// `peer` was seen live again: its hints are due at once.
    pub fn peer_up(&mut self, env: &impl Env, peer: MemberIdx, out: &mut Out) {
        self.hints.wake(peer);
        self.on_timer(env, out);
    }

    fn start_round(&mut self, env: &impl Env, peer: MemberIdx, catch_up: bool, out: &mut Out) {
        self.next_tag += 1;
        let tag = (u64::from(peer) << 40) | ((self.next_tag & 0xffff) << 24);
        let shared = self.shared_with(env, peer);
        let page = self.settings.page_bytes;
        // A catch-up round covers the slots waiting for this peer: when they are all slots both
        // replicate now, a round over the shared slots does (a restart); otherwise (slots
        // received after a ring change, which the peer may no longer replicate) a transfer.
        let wanted = match (&self.catch_up, catch_up) {
            (Some(c), true) => c.slots_for(peer),
            _ => Vec::new(),
        };
        let mut r = if !wanted.is_empty() && !wanted.iter().all(|s| shared.binary_search(s).is_ok())
        {
            Round::transfer(env, peer, wanted, page, tag, out)
        } else {
            Round::start(env, peer, shared, catch_up, page, tag, out)
        };
        if catch_up && self.settings.max_bytes_per_sec > 0 {
            let share =
                self.settings.max_bytes_per_sec / self.settings.max_concurrent.max(1) as u64;
            r.set_pace(share.max(1));
        }
        self.rounds.insert(peer, r);
        self.reap(env, out);
    }

    /// Feeds an answer (tags are this machine's: replay batches and rounds).
    pub fn on_answer(&mut self, env: &impl Env, tag: u64, answer: Answer, out: &mut Out) {
        if tag & REPLAY_TAG != 0 {
            if let Some(target) = self.replays.remove(&tag) {
                let ok = matches!(answer, Answer::Reply(Response::Merged { .. }));
                self.hints.replayed(target, ok);
                if ok {
                    self.replay(env, target, out);
                }
            }
        } else {
            let peer = (tag >> 40) as MemberIdx;
            if let Some(r) = self.rounds.get_mut(&peer) {
                let progress = matches!(answer, Answer::Reply(_));
                r.on_answer(env, tag, answer, out);
                if progress {
                    if let Some(c) = self.catch_up.as_mut() {
                        c.progress(env.ctx().now);
                    }
                }
            }
            self.reap(env, out);
        }
        self.arm(env, out);
    }

    /// Sends the next batch of `target`'s hints, if any and due.
    fn replay(&mut self, env: &impl Env, target: MemberIdx, out: &mut Out) {
        let now = env.ctx().now;
        if !env.live(target) || self.hints.due(now, |m| m == target).is_empty() {
            return;
        }
        let Some(mut batch) = self.hints.take(target, now) else {
            return;
        };
        // A hint written before a flush this node ran is not replayed: the target may have
        // missed the flush (down or restarted since) and would take the key back.
        batch.retain(|(k, s)| !env.store().is_flushed(k, s));
        if batch.is_empty() {
            self.hints.replayed(target, true);
            return;
        }
        self.next_tag += 1;
        let tag = REPLAY_TAG | self.next_tag;
        self.replays.insert(tag, target);
        out.sends.push(Send {
            call: Call::Encoded(wire_req(&Request::Merge { entries: batch })),
            to: vec![(target, Some(tag))],
        });
    }

    /// Books finished rounds and starts what follows them.
    fn reap(&mut self, env: &impl Env, out: &mut Out) {
        let now = env.ctx().now;
        let done: Vec<MemberIdx> = self
            .rounds
            .iter()
            .filter(|(_, r)| r.report().is_some())
            .map(|(p, _)| *p)
            .collect();
        for peer in done {
            let r = self.rounds.remove(&peer).expect("listed");
            let rep = r.report().expect("done").clone();
            let ns = rep.ended.saturating_sub(rep.started) * 1_000_000;
            self.counters.bytes += rep.bytes;
            self.counters.not_live += rep.not_live;
            self.counters.rebalance_throttle += rep.throttled;
            self.counters.slots_late += rep.slots_late;
            if rep.transfer {
                self.counters.rebalance_batches += rep.requests;
                self.counters.rebalance_keys += rep.keys_pulled;
                self.counters.rebalance_entries += rep.entries_received;
                if rep.error.is_some() {
                    self.counters.transfer_failures += 1;
                }
            }
            if let Some(why) = &rep.error {
                self.counters.failures += 1;
                self.events.push(RepairEvent::RoundFailed {
                    peer,
                    why: why.clone(),
                    transfer: rep.transfer,
                });
            } else {
                self.counters.syncs += 1;
                self.counters.keys_pulled += rep.keys_pulled;
                self.counters.keys_pushed += rep.keys_pushed;
                if rep.slots_differing > 0 {
                    self.counters.last_diff_ns = ns;
                }
                if let Some(c) = self.catch_up.as_mut() {
                    c.completed(env, peer);
                }
            }
            // Every round counts for the backoff, whoever asked for it.
            if rep.clean() {
                self.counters.clean_ticks += 1;
            }
            self.counters.last_ns = ns;
            let b = self.backoff.entry(peer).or_insert(Backoff {
                factor: 1,
                next_at: now,
            });
            if b.after(rep.clean(), now, &self.settings) {
                self.events.push(RepairEvent::Backoff {
                    peer,
                    factor: b.factor,
                });
            }
            let mut keep = Vec::new();
            for (p, t) in self.waiting.drain(..) {
                if p == peer && !self.asked.contains(&p) {
                    self.reports.push((t, rep.clone()));
                } else {
                    keep.push((p, t));
                }
            }
            self.waiting = keep;
            if let Some(i) = self.asked.iter().position(|&p| p == peer) {
                self.asked.remove(i);
                self.start_round(env, peer, false, out);
            }
        }
        if let Some(c) = self.catch_up.as_ref() {
            if c.left() == 0 {
                let timed_out = c.timed_out;
                self.catch_up = None;
                if let Some(t) = self.rebalance_started.take() {
                    self.counters.rebalance_last_ns = now.saturating_sub(t) * 1_000_000;
                }
                self.events.push(RepairEvent::CaughtUp { timed_out });
            }
        }
    }

    /// The machine's timer fired (or it is poked: a peer came back, settings changed).
    pub fn on_timer(&mut self, env: &impl Env, out: &mut Out) {
        let now = env.ctx().now;
        if now >= self.next_expire {
            self.hints.expire(now);
            self.next_expire = now + 1000;
        }
        // Hint replay.
        for t in self.hints.due(now, |m| env.live(m)) {
            self.replay(env, t, out);
        }
        // Rounds' timeouts and retries.
        let peers: Vec<MemberIdx> = self.rounds.keys().copied().collect();
        for p in peers {
            if let Some(r) = self.rounds.get_mut(&p) {
                r.on_timer(env, out);
            }
        }
        // Slots kept past a ring change: dropped when their grace ends, unless this node
        // replicates them again.
        let due: Vec<Slot> = self
            .releasing
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&s, _)| s)
            .collect();
        if !due.is_empty() {
            let (mut slots, mut keys) = (0, 0);
            for s in due {
                self.releasing.remove(&s);
                if !env.prefs(s).contains(&env.me()) {
                    let (n, _, freed) = env.store().drop_slot(s);
                    drop(freed);
                    slots += 1;
                    keys += n;
                }
            }
            self.counters.slots_released += slots as u64;
            self.counters.keys_released += keys;
            if slots > 0 {
                self.events.push(RepairEvent::Released { slots, keys });
            }
        }
        // Catch-up: a round against every peer it still waits for, so many at once.
        if let Some(c) = self.catch_up.as_mut() {
            c.tick(env);
            let peers = c.peers();
            for p in peers {
                if self.rounds.len() >= self.settings.max_concurrent.max(1) {
                    break;
                }
                if !self.rounds.contains_key(&p) && env.live(p) {
                    self.start_round(env, p, true, out);
                }
            }
        } else if self.settings.interval_ms > 0 {
            // Automatic rounds, each peer on its own backoff.
            for p in self.partners_now(env) {
                let b = *self.backoff.entry(p).or_insert(Backoff {
                    factor: 1,
                    next_at: now + self.settings.interval_ms,
                });
                if b.next_at <= now && !self.rounds.contains_key(&p) && env.live(p) {
                    self.start_round(env, p, false, out);
                }
            }
        }
        self.reap(env, out);
        self.arm(env, out);
    }

    /// Sets the timer to the next thing due.
    fn arm(&self, env: &impl Env, out: &mut Out) {
        let now = env.ctx().now;
        let mut at = self.next_expire;
        if !self.hints.is_empty() {
            at = at.min(now + self.hints.limits().replay_interval_ms.max(1));
            if let Some(d) = self.hints.next_due(now) {
                at = at.min(d);
            }
        }
        for r in self.rounds.values() {
            if let Some(d) = r.due() {
                at = at.min(d);
            }
        }
        if let Some(&t) = self.releasing.values().min() {
            at = at.min(t);
        }
        if let Some(c) = &self.catch_up {
            if let Some(t) = c.next_tick(now) {
                at = at.min(t);
            }
        } else if self.settings.interval_ms > 0 {
            // A round due but not started (its peer is down, or a round is running) is looked
            // at again a little later, not at once.
            let retry = now + self.settings.interval_ms.min(1000);
            for (p, b) in &self.backoff {
                if !self.rounds.contains_key(p) {
                    at = at.min(if b.next_at > now { b.next_at } else { retry });
                }
            }
            if self.backoff.is_empty() {
                at = at.min(now + self.settings.interval_ms);
            }
        }
        out.wake_at = Some(at.max(now + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(v: &str, hlc_ms: u64) -> State {
        State::Live {
            value: Bytes::copy_from_slice(v.as_bytes()),
            expire_at: 0,
            version: Version {
                hlc: hlc_ms << 16,
                origin: 1,
            },
            enc: 0,
        }
    }

    fn limits() -> HintLimits {
        HintLimits {
            per_node: 3,
            total: 5,
            bytes: 1 << 20,
            ttl_ms: 10_000,
            replay_interval_ms: 1000,
            batch: 2,
            batch_bytes: 1 << 20,
            rate: 0,
        }
    }

    /// Queues hints of `k0..kn` for `target`, all written at 100 ms.
    fn fill(h: &mut Hints, target: MemberIdx, n: usize, source: HintSource) {
        for i in 0..n {
            h.add(target, format!("k{i}").into(), live("v", 100), source, 100);
        }
    }

    #[test]
    fn hints_are_capped_per_target_and_in_all() {
        let mut h = Hints::new(limits());
        fill(&mut h, 1, 4, HintSource::Replication);
        assert_eq!(h.len(), 3);
        assert_eq!(h.counters().dropped, [1, 0]);
        fill(&mut h, 2, 3, HintSource::Migration);
        assert_eq!(h.len(), 5);
        assert_eq!(h.counters().global_dropped, [0, 1]);
        // A newer hint of a queued key replaces it without counting against the caps.
        h.add(1, "k0".into(), live("w", 200), HintSource::Replication, 200);
        assert_eq!(h.len(), 5);
        let q = h.queues(300);
        assert_eq!(q.iter().map(|q| q.count).collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(q[0].oldest_ms, 200);
    }

    /// `hint-max-bytes` holds when a hint is replaced by a bigger one: a newer state that does
    /// not fit is dropped with the older one (which would only deliver a stale value).
    #[test]
    fn a_replacing_hint_stays_under_the_byte_cap() {
        let small = hint_size(b"k0", &live("v", 100));
        let mut h = Hints::new(HintLimits {
            bytes: 3 * small + 100,
            ..limits()
        });
        fill(&mut h, 1, 3, HintSource::Replication);
        assert_eq!(h.bytes().0, 3 * small);
        h.add(
            1,
            "k0".into(),
            live(&"w".repeat(200), 200),
            HintSource::Replication,
            200,
        );
        assert_eq!(h.bytes().0, 2 * small, "dropped: over the cap");
        assert_eq!(h.len(), 2, "k0's older hint went with it");
        assert_eq!(h.counters().global_dropped, [1, 0]);
        // One that fits replaces as before.
        h.add(
            1,
            "k1".into(),
            live("ww", 200),
            HintSource::Replication,
            200,
        );
        assert_eq!(h.len(), 2);
        assert!(h.bytes().0 <= 3 * small + 100);
    }

    #[test]
    fn a_batch_is_acknowledged_or_put_back() {
        let mut h = Hints::new(HintLimits {
            per_node: 10,
            ..limits()
        });
        fill(&mut h, 1, 3, HintSource::Replication);
        assert_eq!(h.due(100, |_| true), vec![1]);
        assert_eq!(h.due(100, |_| false), Vec::<MemberIdx>::new());
        let b = h.take(1, 100).unwrap();
        assert_eq!(b.len(), 2);
        assert!(h.take(1, 100).is_none(), "one batch out at a time");
        // A newer hint for a key in flight arrives; the batch then fails.
        h.add(
            1,
            "k0".into(),
            live("new", 150),
            HintSource::Replication,
            150,
        );
        h.replayed(1, false);
        assert_eq!(h.len(), 3, "k0 (newer), k1 back, k2");
        let b = h.take(1, 200).unwrap();
        let keys: Vec<_> = b.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![Bytes::from("k1"), Bytes::from("k2")]);
        h.replayed(1, true);
        assert_eq!(h.counters().replayed, [2, 0]);
        let b = h.take(1, 200).unwrap();
        assert_eq!(b, vec![(Bytes::from("k0"), live("new", 150))]);
        h.replayed(1, true);
        assert!(h.is_empty());
        assert_eq!(h.bytes(), (0, [0, 0]));
    }

    #[test]
    fn hints_expire_by_their_versions_time() {
        let mut h = Hints::new(limits());
        h.add(1, "a".into(), live("v", 100), HintSource::Replication, 100);
        h.add(
            1,
            "b".into(),
            live("v", 5_000),
            HintSource::Replication,
            5_000,
        );
        assert_eq!(h.expire(10_100), 0);
        assert_eq!(h.expire(10_101), 1);
        assert_eq!(h.take(1, 15_001), None, "b expired as it was taken");
        assert_eq!(h.counters().expired, [2, 0]);
        assert!(h.is_empty());
    }

    #[test]
    fn rate_limit_spaces_batches() {
        let mut h = Hints::new(HintLimits {
            rate: 1000,
            ..limits()
        });
        fill(&mut h, 1, 3, HintSource::Replication);
        h.take(1, 100).unwrap();
        h.replayed(1, true);
        assert!(h.due(101, |_| true).is_empty(), "2 hints at 1000/s: 2 ms");
        assert_eq!(h.due(102, |_| true), vec![1]);
        h.wake(1);
    }

    #[test]
    fn the_tree_finds_the_differing_slots() {
        let mut a = vec![0u64; SLOTS];
        a[5] = 7;
        a[9000] = 3;
        let mut b = a.clone();
        let t = Tree::from_leaves(a.clone());
        assert_eq!(t.top(), TREE_LEVELS - 1);
        assert_eq!(t, Tree::from_leaves(b.clone()));
        b[9000] = 4;
        let u = Tree::from_leaves(b);
        assert_ne!(t.hashes(4, &[0]), u.hashes(4, &[0]));
        // Descend: only the path to slot 9000 differs.
        let mut nodes = vec![0u32];
        for level in (1..TREE_LEVELS).rev() {
            let d: Vec<u32> = nodes
                .iter()
                .copied()
                .filter(|&n| t.hashes(level, &[n]) != u.hashes(level, &[n]))
                .collect();
            assert_eq!(d.len(), 1);
            nodes = t.children(level, &d);
        }
        let d: Vec<u32> = nodes
            .into_iter()
            .filter(|&n| t.hashes(0, &[n]) != u.hashes(0, &[n]))
            .collect();
        assert_eq!(d, vec![9000]);
        // An all-empty tree's root is 0.
        assert_eq!(Tree::from_leaves(vec![0; SLOTS]).hashes(4, &[0]), vec![0]);
    }

    #[test]
    fn backoff_ramps_and_snaps_back() {
        let s = SyncSettings {
            interval_ms: 1000,
            max_backoff: 8,
            page_bytes: 1 << 20,
            ..SyncSettings::default()
        };
        let mut b = Backoff {
            factor: 1,
            next_at: 0,
        };
        let mut seen = vec![];
        for _ in 0..5 {
            b.after(true, 0, &s);
            seen.push(b.factor);
        }
        assert_eq!(seen, vec![2, 4, 8, 8, 8]);
        assert_eq!(b.next_at, 8000);
        assert!(b.after(false, 100, &s));
        assert_eq!((b.factor, b.next_at), (1, 1100));
    }
}
