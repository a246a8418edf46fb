//! Client-side caching: `CLIENT TRACKING` (Redis's `tracking.c`).
//!
//! - **Default mode**: a tracking client's reads remember, per key, the clients that may cache it
//!   (the table). When the key changes (a write, an expiry, an eviction), every client
//!   remembered for it gets one invalidation and the key leaves the table: it is remembered
//!   again only when read again.
//! - **BCAST mode**: no table; a client registers prefixes, and every change to a key under one
//!   of them is sent to it, batched per command (Redis batches per event-loop turn).
//! - **OPTIN/OPTOUT**: only reads after `CLIENT CACHING yes` (or all but those after
//!   `CLIENT CACHING no`) are remembered. **NOLOOP**: no invalidation of a client's own writes.
//! - **Delivery**: an invalidation goes to the client's connection (a RESP3 push
//!   `invalidate [keys]`), or to the connection it redirects to: a RESP3 push there too, or, to a
//!   RESP2 connection in Pub/Sub mode, a message on `__redis__:invalidate`. A FLUSHALL/FLUSHDB
//!   sends every tracking client a null (all keys). Messages travel through the receiving
//!   connection's mailbox ([`crate::pubsub::Mailbox`]), so they follow its output limits, and a
//!   client's own write invalidates it after that command's reply.
//! - **In a cluster** every node keeps the table of its own clients; the coordinator of a write
//!   sends the changed key to every node (`Publish` on an internal channel, [`hypercache_cluster::notify::INVALIDATE_CHANNEL`]) while
//!   any node has tracking clients, and each node invalidates its own ([`crate::notify`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::pubsub::{Invalidation, Message};
use crate::state::{now_ms, Shared};

/// A client's tracking settings (`CLIENT TRACKING ON ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackState {
    /// `BCAST`.
    pub bcast: bool,
    /// `OPTIN`.
    pub optin: bool,
    /// `OPTOUT`.
    pub optout: bool,
    /// `NOLOOP`.
    pub noloop: bool,
    /// `CLIENT CACHING yes|no` was given for the next command.
    pub caching: bool,
    /// `REDIRECT id` (0: none).
    pub redirect: u64,
    /// `PREFIX`es, in byte order (BCAST).
    pub prefixes: Vec<Bytes>,
}

impl TrackState {
    /// Whether a read now should be remembered (OPTIN needs `CACHING yes`, OPTOUT is off after
    /// `CACHING no`).
    pub fn remembers(&self) -> bool {
        let chosen = if self.optin {
            self.caching
        } else if self.optout {
            !self.caching
        } else {
            true
        };
        !self.bcast && chosen
    }
}

#[derive(Default)]
struct Prefix {
    clients: Vec<u64>,
    /// Keys changed since the last broadcast, and who changed each last (0: no client).
    keys: Vec<(Bytes, u64)>,
}

#[derive(Default)]
struct Inner {
    /// Key -> clients that may cache it.
    table: HashMap<Bytes, Vec<u64>, ahash::RandomState>,
    /// Entries of the table (clients summed over keys).
    items: usize,
    /// Tracking clients' settings, by client id.
    clients: HashMap<u64, TrackState, ahash::RandomState>,
    prefixes: BTreeMap<Bytes, Prefix>,
}

/// The node's tracking state.
#[derive(Default)]
pub struct Tracking {
    /// Tracking clients on this node.
    on: AtomicUsize,
    /// Other nodes' tracking clients, and this node's announcements of its own.
    peers: Mutex<hypercache_cluster::notify::PeerTracking>,
    /// `peers` says changed keys go to the other nodes (cached for the write path).
    peers_on: std::sync::atomic::AtomicBool,
    /// Invalidation messages queued (metric `tracking.invalidations`).
    sent: std::sync::atomic::AtomicU64,
    inner: Mutex<Inner>,
}

/// INFO's tracking figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackingInfo {
    /// Clients with tracking on.
    pub clients: usize,
    /// Keys in the table.
    pub keys: usize,
    /// Client entries in the table.
    pub items: usize,
    /// BCAST prefixes.
    pub prefixes: usize,
}

impl Tracking {
    /// Whether any client of this node tracks keys.
    pub fn active(&self) -> bool {
        self.on.load(Ordering::Relaxed) > 0
    }

    /// Whether clients track keys here or on another node of the cluster.
    pub fn cluster_active(&self) -> bool {
        self.active() || self.peers_active()
    }

    /// Whether keys that change here must be sent to the other nodes: one of them announced
    /// tracking clients recently ([`hypercache_cluster::notify::PeerTracking`]).
    pub fn peers_active(&self) -> bool {
        self.peers_on.load(Ordering::Relaxed)
    }

    /// Another node announced tracking clients.
    pub fn peer_announced(&self) {
        self.peers.lock().announced(now_ms());
        self.refresh_peers();
    }

    /// Re-reads whether another node's announcement still holds.
    pub fn refresh_peers(&self) {
        let on = self.peers.lock().sends_changes(now_ms());
        self.peers_on.store(on, Ordering::Relaxed);
    }

    /// Whether this node announces its tracking clients now (`fresh`: one just turned tracking
    /// on).
    fn announce_due(&self, fresh: bool) -> bool {
        self.peers
            .lock()
            .announce_due(now_ms(), self.active(), fresh)
    }

    /// Invalidation messages queued so far.
    pub fn invalidations(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// INFO's figures.
    pub fn info(&self) -> TrackingInfo {
        let g = self.inner.lock();
        TrackingInfo {
            clients: g.clients.len(),
            keys: g.table.len(),
            items: g.items,
            prefixes: g.prefixes.len(),
        }
    }

    /// Turns tracking on (or changes its settings) for client `id`.
    pub fn enable(&self, id: u64, state: &TrackState) {
        let mut g = self.inner.lock();
        if g.clients.insert(id, state.clone()).is_none() {
            self.on.fetch_add(1, Ordering::Relaxed);
        }
        for p in &state.prefixes {
            let e = g.prefixes.entry(p.clone()).or_default();
            if !e.clients.contains(&id) {
                e.clients.push(id);
            }
        }
    }

    /// Turns tracking off for client `id` (its entries in the table go lazily, as in Redis).
    pub fn disable(&self, id: u64) {
        let mut g = self.inner.lock();
        let Some(st) = g.clients.remove(&id) else {
            return;
        };
        self.on.fetch_sub(1, Ordering::Relaxed);
        for p in &st.prefixes {
            if let Some(e) = g.prefixes.get_mut(p) {
                e.clients.retain(|c| *c != id);
                if e.clients.is_empty() {
                    g.prefixes.remove(p);
                }
            }
        }
    }

    /// Updates the `CACHING` flag of client `id` (what the invalidation side does not need,
    /// but `CLIENT TRACKINGINFO` of the registry's copy stays right).
    pub fn set_state(&self, id: u64, state: &TrackState) {
        if let Some(st) = self.inner.lock().clients.get_mut(&id) {
            *st = state.clone();
        }
    }

    /// Client `id` read `keys`: remember it may cache them. Past `max_keys` keys in the table
    /// (0: no limit), keys are dropped from it, their clients invalidated, as Redis does.
    pub fn remember(&self, shared: &Shared, id: u64, keys: &[&[u8]], max_keys: usize) {
        let mut g = self.inner.lock();
        for k in keys {
            let ids = g.table.entry(Bytes::copy_from_slice(k)).or_default();
            if !ids.contains(&id) {
                ids.push(id);
                g.items += 1;
            }
        }
        self.limit_locked(shared, &mut g, max_keys);
    }

    /// Keeps the table at most `max_keys` keys (0: no limit; `tracking-table-max-keys`, also
    /// applied once a second after a change of the setting): keys past it are dropped and
    /// invalidated for their clients, as Redis does.
    pub fn limit(&self, shared: &Shared, max_keys: usize) {
        if self.active() {
            let mut g = self.inner.lock();
            self.limit_locked(shared, &mut g, max_keys);
        }
    }

    fn limit_locked(&self, shared: &Shared, g: &mut Inner, max_keys: usize) {
        while max_keys > 0 && g.table.len() > max_keys {
            let Some(k) = g.table.keys().next().cloned() else {
                break;
            };
            let ids = g.table.remove(&k).unwrap_or_default();
            g.items -= ids.len();
            self.send_keys(shared, g, &ids, &k, 0);
        }
    }

    /// `key` changed (by client `writer`; 0: not a client): invalidate every client that may
    /// cache it, and queue it for the BCAST prefixes it falls under.
    pub fn invalidate(&self, shared: &Shared, key: &[u8], writer: u64) {
        if !self.active() {
            return;
        }
        // As in Redis, tracking knows keys by name, whatever their database.
        let key = hypercache_cluster::db::user_key(key);
        let mut g = self.inner.lock();
        for (p, e) in g.prefixes.iter_mut() {
            if key.starts_with(p) {
                match e.keys.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = writer,
                    None => e.keys.push((Bytes::copy_from_slice(key), writer)),
                }
            }
        }
        let Some(ids) = g.table.remove(key) else {
            return;
        };
        g.items -= ids.len();
        self.send_keys(shared, &g, &ids, key, writer);
    }

    fn send_keys(&self, shared: &Shared, g: &Inner, ids: &[u64], key: &[u8], writer: u64) {
        for &id in ids {
            let Some(st) = g.clients.get(&id) else {
                continue;
            };
            if st.bcast || (st.noloop && id == writer) {
                continue;
            }
            self.send(
                shared,
                id,
                st,
                Invalidation::Keys(vec![Bytes::copy_from_slice(key)]),
            );
        }
    }

    /// Sends the keys changed under each BCAST prefix since the last call.
    pub fn flush_bcast(&self, shared: &Shared) {
        if !self.active() {
            return;
        }
        let mut g = self.inner.lock();
        if g.prefixes.values().all(|p| p.keys.is_empty()) {
            return;
        }
        let mut sends = Vec::new();
        for e in g.prefixes.values_mut() {
            if e.keys.is_empty() {
                continue;
            }
            let keys = std::mem::take(&mut e.keys);
            for &id in &e.clients {
                sends.push((id, keys.clone()));
            }
        }
        for (id, keys) in sends {
            let Some(st) = g.clients.get(&id) else {
                continue;
            };
            let list: Vec<Bytes> = keys
                .iter()
                .filter(|(_, w)| !(st.noloop && *w == id))
                .map(|(k, _)| k.clone())
                .collect();
            if !list.is_empty() {
                self.send(shared, id, st, Invalidation::Keys(list));
            }
        }
    }

    /// FLUSHALL/FLUSHDB: every tracking client gets a null (all keys are invalid), and the
    /// table is emptied.
    pub fn flush_all(&self, shared: &Shared) {
        let mut g = self.inner.lock();
        g.table.clear();
        g.items = 0;
        let ids: Vec<u64> = g.clients.keys().copied().collect();
        for id in ids {
            let st = g.clients[&id].clone();
            self.send(shared, id, &st, Invalidation::All);
        }
    }

    /// Delivers `what` to client `id` (tracking with `st`), or to its redirect target.
    fn send(&self, shared: &Shared, id: u64, st: &TrackState, what: Invalidation) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let limits = shared.config.read().client_output_buffer_limit;
        let mailbox_of = |cid: u64| {
            shared
                .clients
                .lock()
                .get(&cid)
                .and_then(|h| h.mailbox.lock().clone())
        };
        if st.redirect != 0 {
            let alive = shared.clients.lock().contains_key(&st.redirect);
            if !alive {
                tracing::debug!(node_id = %shared.node_id, component = "tracking", client_id = id, redirect = st.redirect,
                    "the client's tracking redirect target has gone");
                // The redirect target is gone: tell the client itself (RESP3 only).
                if let Some(mb) = mailbox_of(id) {
                    mb.offer(
                        Message::invalidation(Invalidation::RedirBroken(st.redirect), false),
                        &limits,
                        now_ms(),
                    );
                }
                if let Some(h) = shared.clients.lock().get(&id) {
                    h.meta.lock().tracking_broken = true;
                }
                return;
            }
            if let Some(mb) = mailbox_of(st.redirect) {
                mb.offer(Message::invalidation(what, true), &limits, now_ms());
            }
            return;
        }
        if let Some(mb) = mailbox_of(id) {
            mb.offer(Message::invalidation(what, false), &limits, now_ms());
        }
    }
}

/// Whether `prefixes` overlap each other or `existing` (Redis's check): the error to answer.
pub fn prefix_collision(existing: &[Bytes], prefixes: &[Bytes]) -> Option<String> {
    let overlap = |a: &[u8], b: &[u8]| {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    };
    for (i, p) in prefixes.iter().enumerate() {
        if let Some(e) = existing.iter().find(|e| overlap(e, p)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(e)
            ));
        }
        if let Some(q) = prefixes[i + 1..].iter().find(|q| overlap(p, q)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(q)
            ));
        }
    }
    None
}

/// Once a second or so (the server's background tick): in a cluster, a node with tracking
/// clients tells the others, which then send it every key that changes (for 3 seconds after
/// each announcement).
pub fn tick(shared: &Shared) {
    let max = shared.config.read().tracking_table_max_keys as usize;
    shared.tracking.limit(shared, max);
    shared.tracking.refresh_peers();
    announce(shared, false);
}

/// Tells the other nodes of a cluster that this one has tracking clients, when
/// [`hypercache_cluster::notify::PeerTracking::announce_due`] says so (`fresh`: a client just
/// turned tracking on).
pub fn announce(shared: &Shared, fresh: bool) {
    if let Some(cl) = &shared.cluster {
        if shared.tracking.announce_due(fresh) {
            let channel = Bytes::from_static(hypercache_cluster::notify::ANNOUNCE_CHANNEL);
            crate::cluster::exec::publish_to_peers(shared, cl, &channel, &Bytes::new());
        }
    }
}
