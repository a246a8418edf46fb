//! Keyspace notifications (`notify-keyspace-events`): the driver's half. The events of a write
//! come from whoever applied it (the store's [`hypercache_cluster::Store::apply_noting`] on a
//! single node, the coordinating machine's [`hypercache_cluster::node::Out::events`] in a
//! cluster); expired and evicted keys come from the store's journal. This module publishes them
//! on the `__keyspace@0__:<key>` and `__keyevent@0__:<event>` channels, to this node's
//! subscribers and, in a cluster, to every other node's (like `PUBLISH`).
//!
//! In a cluster the node that coordinated a write publishes its events, so a write raises them
//! once whichever node the client used; an expiry is published by the key's primary replica
//! only (every replica expires its own copy); an eviction by the node whose copy was evicted.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hypercache_cluster::notify::{self, Events, EVICTED, EXPIRED, GENERIC, STRING};
use hypercache_cluster::store::Lost;

use crate::state::{now_ms, Shared};

/// Keyspace notifications published by this node (metric `notify.events`).
pub static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Applies the configured classes (after a start or a `CONFIG SET`) and whether clients track
/// keys (after `CLIENT TRACKING`, and every second in a cluster).
pub fn refresh(shared: &Shared) {
    let mut flags = shared.config.read().notify_keyspace_events;
    if !wants_channels(flags) {
        flags = 0;
    }
    shared.notify_flags.store(flags, Ordering::Relaxed);
    shared.tracking.refresh_peers();
    let tracking = shared.tracking.cluster_active();
    shared.tracking_on.store(tracking, Ordering::Relaxed);
    shared
        .store
        .set_journal(flags & (EXPIRED | EVICTED) != 0 || tracking);
}

/// The configured classes (0: notifications off, the default).
pub fn flags(shared: &Shared) -> u32 {
    shared.notify_flags.load(Ordering::Relaxed)
}

/// Whether writes must say what they changed: keyspace notifications are on, or clients (of
/// this node, or of another node of the cluster) track keys.
pub fn noting(shared: &Shared) -> bool {
    flags(shared) != 0 || shared.tracking_on.load(Ordering::Relaxed)
}

/// Whether `flags` names a channel kind (`K` or `E`): without one nothing is published.
fn wants_channels(flags: u32) -> bool {
    flags & (notify::KEYSPACE | notify::KEYEVENT) != 0
}

/// Publishes one event of `key` if its class is on.
pub fn emit(shared: &Shared, class: u32, name: &str, key: &[u8]) {
    let flags = flags(shared);
    if flags & class == 0 || !wants_channels(flags) {
        return;
    }
    let limits = shared.config.read().client_output_buffer_limit;
    let (db, key) = crate::dbs::client_key(&shared.dbs, key);
    for (channel, message) in notify::messages(flags, class, name, db, key) {
        EVENTS.fetch_add(1, Ordering::Relaxed);
        let (channel, message) = (Bytes::from(channel), Bytes::from(message));
        shared.pubsub.publish(&channel, &message, &limits, now_ms());
        if let Some(cl) = &shared.cluster {
            crate::cluster::exec::publish_to_peers(shared, cl, &channel, &message);
        }
    }
}

/// Publishes the keys lost to expiry or eviction since the last call, then `events` of `key`
/// (a write's, by client `writer`; 0: none here), in that order, as Redis raises them (a write
/// to an expired key: `expired`, then `new` and the write's event), and invalidates the key for
/// the clients that may cache it (here, and in a cluster on every node).
pub fn after_write(shared: &Shared, key: &[u8], events: Events, writer: u64) {
    publish_lost(shared);
    for (class, name) in events.iter() {
        emit(shared, class, name, key);
    }
    if !events.is_empty() {
        changed(shared, key, writer);
    }
}

/// `key` changed: invalidate it for the tracking clients of this node, and in a cluster send it
/// to the other nodes for theirs.
pub fn changed(shared: &Shared, key: &[u8], writer: u64) {
    shared.tracking.invalidate(shared, key, writer);
    if let Some(cl) = &shared.cluster {
        if shared.tracking.peers_active() {
            let channel = Bytes::from_static(notify::INVALIDATE_CHANNEL);
            crate::cluster::exec::publish_to_peers(
                shared,
                cl,
                &channel,
                &Bytes::copy_from_slice(key),
            );
        }
    }
}

/// Publishes the keys the store expired or evicted since the last call (and invalidates them
/// for tracking clients).
pub fn publish_lost(shared: &Shared) {
    for (why, key) in shared.store.take_journal() {
        match why {
            Lost::Expired if primary_here(shared, &key) => {
                emit(shared, EXPIRED, "expired", &key);
                changed(shared, &key, 0);
            }
            // Another replica's copy: its primary raises the event and the invalidation; this
            // node's own clients are invalidated now.
            Lost::Expired => shared.tracking.invalidate(shared, &key, 0),
            Lost::Evicted => {
                emit(shared, EVICTED, "evicted", &key);
                changed(shared, &key, 0);
            }
        }
    }
}

/// Whether this node raises `key`'s expiry (always, on a single node; in a cluster,
/// [`hypercache_cluster::node::raises_expiry`]).
fn primary_here(shared: &Shared, key: &[u8]) -> bool {
    match &shared.cluster {
        None => true,
        Some(cl) => crate::cluster::exec::raises_expiry(shared, cl, key),
    }
}

/// The events of the multi-key commands a single node runs as one store call (MSET, RENAME,
/// COPY, BITOP): `set` of each key, `rename_from`/`rename_to`, `copy_to`.
pub fn generic(shared: &Shared, name: &'static str, key: &[u8], writer: u64) {
    publish_lost(shared);
    let class = if name == "set" { STRING } else { GENERIC };
    emit(shared, class, name, key);
    changed(shared, key, writer);
}
