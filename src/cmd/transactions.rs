//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
//!
//! Queuing is the session's ([`Session::run`] queues every command but these while a
//! transaction is open); running is the connection's ([`Session::run_transaction`], which holds
//! the node's exclusive gate on a single node). A watched key is compared by version: any write
//! gives a key a new version.

use bytes::Bytes;
use hypercache_resp::{errors, Frame};

use std::sync::Arc;

use hypercache_cluster::msg::Level;
use hypercache_cluster::{Op, Outcome};

use super::err;
use crate::cluster::{exec, Cluster};
use crate::session::{ClusterWatch, Session};

/// # Format
/// `MULTI`
pub(super) fn multi(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    if s.multi.is_some() {
        return err(errors::MULTI_NESTED);
    }
    s.begin_transaction();
    Some(Frame::ok())
}

/// # Format
/// `EXEC`
///
/// Replies later: the connection runs the transaction before its next command.
pub(super) fn exec(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let Some(m) = s.take_transaction() else {
        return err(errors::EXEC_WITHOUT_MULTI);
    };
    if m.aborted {
        s.watched.clear();
        s.cluster_watched.clear();
        return err(errors::EXECABORT);
    }
    s.exec_ready = Some((m, a.to_vec()));
    None
}

/// # Format
/// `DISCARD`
pub(super) fn discard(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    match s.discard_transaction() {
        Some(_) => Some(Frame::ok()),
        None => err(errors::DISCARD_WITHOUT_MULTI),
    }
}

/// # Format
/// `WATCH key [key ...]`
pub(super) fn watch(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.multi.is_some() {
        return err(errors::WATCH_IN_MULTI);
    }
    if let Some(cl) = s.shared.cluster.clone() {
        return watch_in_cluster(s, &cl, &a[1..]);
    }
    for key in &a[1..] {
        s.watch(key);
    }
    Some(Frame::ok())
}

/// `WATCH` in a cluster: each key's newest version, read at QUORUM at least, is what `EXEC`
/// compares (in the same round as its write: see [`Session::cas`]). Answered once every read
/// has; a read that fails fails `WATCH` with its error, and `EXEC` then aborts (a null reply).
fn watch_in_cluster(s: &mut Session, cl: &Arc<Cluster>, keys: &[Bytes]) -> Option<Frame> {
    let mut lv = s.levels();
    if lv.read == Level::One {
        lv.read = Level::Quorum;
    }
    let ctx = s.ctx();
    let mut reads = Vec::new();
    for key in keys {
        if s.cluster_watched.iter().any(|(k, _)| k == key) {
            continue;
        }
        let cell = ClusterWatch::default();
        s.cluster_watched.push((key.clone(), cell.clone()));
        reads.push((
            cell,
            exec::start(&s.shared, cl, key, &Op::Version, lv, &ctx),
        ));
    }
    s.defer(
        async move {
            let mut failed = None;
            for (cell, part) in reads {
                let r = match part {
                    exec::Part::Ready(r) => r,
                    exec::Part::Later(f) => f.await,
                };
                let _ = cell.set(match r {
                    Ok(Outcome::Version(v)) => Some(v),
                    Ok(_) => None,
                    Err(e) => {
                        failed.get_or_insert(e);
                        None
                    }
                });
            }
            failed.map_or_else(Frame::ok, |e| Frame::error(e.text()))
        },
        None,
    );
    None
}

/// # Format
/// `UNWATCH`
pub(super) fn unwatch(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    s.watched.clear();
    s.cluster_watched.clear();
    Some(Frame::ok())
}
