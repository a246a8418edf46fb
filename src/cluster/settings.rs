//! The driver of the cluster-wide settings ([`hypercache_cluster::settings`], the machine both
//! drivers run): today the ACL users, as the text `ACL LIST` prints.
//!
//! - A change made through this node ([`change_users`]) gets a new version from the node's
//!   clock and is pushed to every member (`PutSettings`, none required to answer).
//! - A peer's push ([`offer`], from the serving side) or a copy pulled after a heartbeat showed
//!   a newer version ([`pull`]) replaces this node's users if it is newer than what it holds;
//!   connections of users that no longer exist are closed, as `ACL DELUSER` closes them.
//! - The settings lock is held while a change is made or applied, so changes apply in version
//!   order and a local change cannot be overwritten half way.

use std::sync::Arc;

use bytes::Bytes;
use hypercache_cluster::msg::{Request, Response};
use hypercache_cluster::version::Version;
use hypercache_cluster::wire;

use super::link::Peer;
use super::Cluster;
use crate::acl::Acl;
use crate::state::{now_ms, Shared};

/// The users as the cluster-wide document: `ACL LIST`'s lines.
fn document(acl: &Acl) -> Bytes {
    let mut out = Vec::new();
    for line in acl.list() {
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out.into()
}

/// Runs `change` on this node's users; when it reports a change (`true`) and the node is in a
/// cluster, publishes the users as a new version to every member.
pub fn change_users<R>(shared: &Arc<Shared>, change: impl FnOnce(&Acl) -> (R, bool)) -> R {
    let Some(cl) = shared.cluster.clone() else {
        let (r, changed) = change(&shared.acl);
        if changed {
            shared.pubsub.enforce_acl(&shared.acl);
        }
        return r;
    };
    let mut held = cl.settings.lock();
    let (r, changed) = change(&shared.acl);
    if !changed {
        return r;
    }
    shared.pubsub.enforce_acl(&shared.acl);
    let body = document(&shared.acl);
    let version = shared.store.new_version(now_ms());
    held.offer(version, body.clone());
    drop(held);
    tracing::info!(component = "acl", node_id = %cl.node_id, version = ?version, "users changed here; publishing them to every member");
    let (sh, c) = (shared.clone(), cl.clone());
    shared.tasks.spawn(async move {
        super::exec::put_settings(&sh, &c, version, body).await;
    });
    r
}

/// A peer's users at `version`: applied if newer than what this node holds.
pub fn offer(shared: &Shared, cl: &Cluster, version: Version, body: Bytes) {
    let mut held = cl.settings.lock();
    if !held.offer(version, body.clone()) {
        return;
    }
    let text = String::from_utf8_lossy(&body);
    match crate::acl::parse_file(&text, "cluster users") {
        Ok(users) => {
            let n = users.len();
            shared.acl.replace(users);
            close_orphans(shared);
            shared.pubsub.enforce_acl(&shared.acl);
            tracing::info!(component = "acl", node_id = %cl.node_id, version = ?version, users = n, "users changed by a peer; applied");
        }
        // A member of the same version writes what this one parses: this is a bug, not an
        // operator's mistake. The version is kept, so the same document is not pulled again.
        Err(e) => {
            tracing::error!(component = "acl", node_id = %cl.node_id, version = ?version, error = %e, "cannot apply the cluster's users; keeping this node's")
        }
    }
    drop(held);
}

/// Closes the connections authenticated as users that no longer exist.
fn close_orphans(shared: &Shared) {
    let clients: Vec<_> = shared.clients.lock().values().cloned().collect();
    for h in clients {
        let user = h.meta.lock().user.clone();
        if !user.is_empty() && shared.acl.get(&user).is_none() {
            h.kill();
        }
    }
}

/// `peer`'s heartbeat reported settings at `theirs`: pulls them if they are newer.
pub async fn pull(shared: &Shared, cl: &Cluster, peer: &Peer, theirs: Version) {
    if !cl.settings.lock().should_pull(theirs) {
        return;
    }
    let ask = wire::to_body(&Request::Settings);
    let Ok(body) = peer
        .call_link(&ask, std::time::Duration::from_secs(2))
        .await
    else {
        return;
    };
    if let Ok(Response::Settings { version, body }) = wire::from_body::<Response>(&body) {
        offer(shared, cl, version, body);
    }
}
