//! The node's lifecycle: accept loop with a connection limit, background tasks, and shutdown that
//! lets every connection write its in-flight replies before closing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::conn;
use crate::state::{now_ms, Shared, Stats};

/// Most time the active expiry may spend per cycle, as Redis's 25% of a 100 ms tick.
const EXPIRE_CYCLE_BUDGET: Duration = Duration::from_millis(25);
/// Entries examined per expiry step before checking the time budget again.
const EXPIRE_STEP_ENTRIES: usize = 2_000;

/// Serves clients from `plain` and `tls` (the `port` and `tls-port` listeners; either may be
/// off) until `shared.shutdown` fires, then waits (up to `grace`) for open connections to
/// finish their in-flight replies.
pub async fn run(
    mut plain: Option<TcpListener>,
    tls: Option<TcpListener>,
    shared: Arc<Shared>,
    grace: Duration,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut conns = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            accepted = accept(&plain, false) => accepted_one(&shared, &mut conns, &mut backoff, accepted).await,
            accepted = accept(&tls, true) => accepted_one(&shared, &mut conns, &mut backoff, accepted).await,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            // CONFIG SET port bound a new listener: it replaces this one (whose port is then
            // free), as in Redis; open connections stay.
            _ = shared.rebound.notified() => {
                if let Some(l) = shared.rebind.lock().take() {
                    plain = Some(l);
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    drop((plain, tls));
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = conns.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!(node_id = %shared.node_id, component = "server", open = conns.len(), "connections still open after the grace period; closing them");
                conns.abort_all();
                break;
            }
        }
    }
}

/// The next connection on `listener` (never, when it is off), and whether it is a TLS one.
async fn accept(listener: &Option<TcpListener>, tls: bool) -> (std::io::Result<TcpStream>, bool) {
    match listener {
        Some(l) => (l.accept().await.map(|(s, _)| s), tls),
        None => std::future::pending().await,
    }
}

/// Starts serving an accepted connection, or refuses it over `maxclients`.
async fn accepted_one(
    shared: &Arc<Shared>,
    conns: &mut JoinSet<()>,
    backoff: &mut Duration,
    (accepted, tls): (std::io::Result<TcpStream>, bool),
) {
    match accepted {
        Ok(socket) => {
            *backoff = Duration::from_millis(5);
            Stats::add(&shared.metrics.server.connections_received, 1);
            let max = shared.config.read().maxclients as usize;
            if shared.connected.load(Ordering::Relaxed) >= max {
                Stats::add(&shared.metrics.server.rejected_connections, 1);
                // A TLS client could not read the error before a handshake: it is
                // closed, as Redis closes it.
                if !tls {
                    conns.spawn(conn::refuse(socket));
                }
                return;
            }
            shared.connected.fetch_add(1, Ordering::Relaxed);
            let stop = shared.shutdown.subscribe();
            if tls {
                conns.spawn(conn::serve_tls(shared.clone(), socket, stop));
            } else {
                conns.spawn(conn::serve(shared.clone(), socket, stop));
            }
        }
        Err(e) => {
            // Out of file descriptors and similar: wait and retry rather than spin.
            tracing::warn!(node_id = %shared.node_id, component = "server", error = %e, "accept failed; backing off");
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Reclaims expired keys in the background, `hz` times a second, with bounded work per cycle;
/// a cycle that keeps finding expired keys continues until its time budget is spent.
pub async fn expiry_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut last_purge = Instant::now();
    loop {
        let hz = shared.config.read().hz.max(1);
        if last_purge.elapsed() >= Duration::from_secs(1) {
            // Tombstones whose version is older than tombstone-ttl can go: no message older than
            // that is expected. The TTL is set here too, since CONFIG SET may change it.
            last_purge = Instant::now();
            let ttl_ms = shared.config.read().tombstone_ttl * 1000;
            shared.store.set_tombstone_ttl(ttl_ms);
            shared.store.purge_tombstones(now_ms());
            // Promises of read-modify-write rounds that wrote nothing outlive their round only
            // until they expire (3 request timeouts).
            shared.store.purge_promises(now_ms());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1000 / hz)) => {}
            _ = shutdown.changed() => return,
        }
        crate::memory::sample(&shared);
        crate::memory::background_round(&shared);
        let started = Instant::now();
        loop {
            let r = shared.store.expire_cycle(now_ms(), EXPIRE_STEP_ENTRIES);
            // Stop when this step found few expired keys (under 10%), or the budget is spent.
            if r.examined == 0
                || r.expired * 10 < r.examined
                || started.elapsed() > EXPIRE_CYCLE_BUDGET
            {
                break;
            }
        }
        // Keyspace notifications and tracking invalidations of the keys expired (and evicted)
        // above; in a cluster, this node's tracking clients announced to the others.
        crate::tracking::tick(&shared);
        crate::notify::refresh(&shared);
        crate::notify::publish_lost(&shared);
        shared.tracking.flush_bcast(&shared);
        // Redis replicas: deletions of the keys expired above, PINGs, timeouts.
        shared.repl.tick(&shared);
        // A save point reached: a snapshot to disk (crate::persist).
        if shared.persist.due(&shared) {
            crate::persist::background(&shared).await;
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives, or the node is stopped by other means.
pub async fn signals(shared: Arc<Shared>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut shutdown = shared.shutdown.subscribe();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::warn!(node_id = %shared.node_id, component = "server", "SIGINT received, stopping"),
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
            tracing::warn!(node_id = %shared.node_id, component = "server", "SIGTERM received, stopping")
        }
        _ = shutdown.changed() => return,
    }
    shared.trigger_shutdown();
}

/// Loads the TLS certificates again on every SIGHUP, until the node stops: a rotated
/// certificate is in force for the connections that come after, and open ones keep theirs.
pub async fn reload_tls_on_hangup(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = shutdown.changed() => return,
        }
        let c = shared.config.read().clone();
        match shared.tls.configure(&c) {
            Ok(()) => {
                tracing::info!(node_id = %shared.node_id, component = "server", "SIGHUP: TLS certificates reloaded")
            }
            Err(e) => {
                tracing::warn!(node_id = %shared.node_id, component = "server", error = %e, "SIGHUP: cannot reload the TLS certificates; the previous ones stay in force")
            }
        }
    }
}
