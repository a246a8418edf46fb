//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
//!
//! Queuing is the session's ([`Session::run`] queues every command but these while a
//! transaction is open); running is the connection's ([`Session::run_transaction`], which holds
//! the node's exclusive gate on a single node). A watched key is compared by version: any write
//! gives a key a new version.

use bytes::Bytes;
use hypercache_resp::{errors, Frame};

use super::err;
use crate::session::Session;

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
    if s.shared.cluster.is_some() {
        return err(errors::WATCH_IN_CLUSTER);
    }
    for key in &a[1..] {
        s.watch(key);
    }
    Some(Frame::ok())
}

/// # Format
/// `UNWATCH`
pub(super) fn unwatch(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    s.watched.clear();
    Some(Frame::ok())
}
