//! The driver of the cluster-wide settings ([`hypercache_cluster::settings`], the machine both
//! drivers run): the ACL users, as the text `ACL LIST` prints, and the function libraries, as
//! `FUNCTION DUMP`'s payload.
//!
//! - A change made through this node ([`change_users`], [`change_functions`]) gets a new
//!   version from the node's clock and is pushed to every member (`PutSettings`, none
//!   required to answer).
//! - A peer's push ([`offer`], from the serving side) or a copy pulled after a heartbeat showed
//!   a newer version ([`pull`]) replaces this node's users or libraries if it is newer than
//!   what it holds. Connections of users that no longer exist are closed, as `ACL DELUSER`
//!   closes them; libraries are restored with `FUNCTION RESTORE ... FLUSH`.
//! - The users are changed and applied with the settings lock held, so changes apply in
//!   version order and a local change cannot be overwritten half way. The libraries live in the
//!   Lua VM, which a long script holds: they are changed and applied under a lock of their own
//!   ([`super::Cluster::functions`]), never the settings lock, so that a heartbeat never waits
//!   for a script. Applying always installs the newest document held, so concurrent applies
//!   end on the newest.

use std::sync::Arc;

use bytes::Bytes;
use hypercache_cluster::msg::{Request, Response};
use hypercache_cluster::settings::{Doc, FUNCTIONS, HEARD_WAIT_MS, USERS};
use hypercache_cluster::version::Version;
use hypercache_cluster::wire;
use hypercache_resp::Frame;

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
/// cluster, publishes the users as a new version to every member. In a cluster, refused
/// (`Err`, the reply, nothing run) while the machine says this node may not change them yet
/// ([`hypercache_cluster::settings::Settings::may_change`]): a connection waits for that
/// first ([`wait_heard`]); a change run by `EXEC` cannot.
pub fn change_users<R>(
    shared: &Arc<Shared>,
    change: impl FnOnce(&Acl) -> (R, bool),
) -> Result<R, Frame> {
    let Some(cl) = shared.cluster.clone() else {
        let (r, changed) = change(&shared.acl);
        if changed {
            shared.pubsub.enforce_acl(&shared.acl);
        }
        return Ok(r);
    };
    let alone = is_alone(&cl);
    let mut held = cl.settings.lock();
    if !held.may_change(alone) {
        return Err(Frame::error(NOT_HEARD));
    }
    let (r, changed) = change(&shared.acl);
    if !changed {
        return Ok(r);
    }
    shared.pubsub.enforce_acl(&shared.acl);
    let body = document(&shared.acl);
    let version = shared.store.new_version(now_ms());
    held.offer(USERS, version, body.clone());
    drop(held);
    tracing::info!(component = "acl", node_id = %cl.node_id, version = ?version, "users changed here; publishing them to every member");
    publish(shared, &cl, USERS, version, body);
    Ok(r)
}

/// Pushes `doc` at `version` to every member, in the background.
fn publish(shared: &Arc<Shared>, cl: &Arc<Cluster>, doc: Doc, version: Version, body: Bytes) {
    cl.metrics
        .dist
        .settings_published
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (sh, c) = (shared.clone(), cl.clone());
    shared.tasks.spawn(async move {
        super::exec::put_settings(&sh, &c, doc, version, body).await;
    });
}

/// A `FUNCTION` subcommand that changes the libraries (`LOAD`, `DELETE`, `FLUSH`, `RESTORE`)
/// through this node of a cluster: runs it, and if it succeeded publishes the node's libraries
/// as a new version to every member. Its reply is the command's. Blocks (the Lua VM): call it
/// on a blocking thread.
pub fn change_functions(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    args: Vec<Bytes>,
    runtime: &tokio::runtime::Handle,
) -> Frame {
    // A node that has not yet heard the cluster's libraries (just started) would publish its
    // own few as the cluster's and undo the others'. The connection waited for that already
    // ([`crate::session::Session::must_hear_settings`]); a change queued in MULTI did not.
    if !heard(cl) {
        return Frame::error(NOT_HEARD);
    }
    let _functions = cl.functions.lock();
    // A peer's newer libraries that arrived and wait to be installed go first: the change is
    // made on top of them.
    install_newest(shared, cl, runtime);
    let reply = function_command(shared, runtime, args);
    if matches!(reply, Frame::Error(_)) {
        return reply;
    }
    let Some(body) = dump(shared, cl, runtime) else {
        return reply;
    };
    let version = shared.store.new_version(now_ms());
    if !cl.settings.lock().offer(FUNCTIONS, version, body.clone()) {
        // A peer's change newer than this one arrived meanwhile: it wins (as two concurrent
        // changes of the users do), and is applied once this lock is free.
        tracing::info!(component = "functions", node_id = %cl.node_id, "a newer change of the libraries from a peer supersedes this one");
        return reply;
    }
    *cl.functions_applied.lock() = version;
    tracing::info!(component = "functions", node_id = %cl.node_id, version = ?version, "libraries changed here; publishing them to every member");
    publish(shared, cl, FUNCTIONS, version, body);
    reply
}

/// The refusal of a change before the node heard the cluster's settings.
pub const NOT_HEARD: &str =
    "TRYAGAIN This node has not yet heard the cluster's users and libraries: try again";

/// The refusal of a change of the cluster-wide settings made before this node heard them
/// ([`heard`]), for a command that must check before it applies anything else (`CONFIG SET`
/// of `requirepass` with other settings). `None` on a single node or once heard.
pub fn unheard(shared: &Shared) -> Option<Frame> {
    let cl = shared.cluster.as_ref()?;
    (!heard(cl)).then(|| Frame::error(NOT_HEARD))
}

/// A cluster of one: no other member, no seed. The input the machine's `may_change` takes.
fn is_alone(cl: &Cluster) -> bool {
    !super::exec::has_other_members(cl) && cl.seeds.is_empty()
}

/// Whether a change of the settings may be made through this node, by the machine
/// ([`hypercache_cluster::settings::Settings::may_change`]): it heard a member since it
/// started, or it is a cluster of one.
fn heard(cl: &Cluster) -> bool {
    let alone = is_alone(cl);
    cl.settings.lock().may_change(alone)
}

/// Waits (at most the machine's [`HEARD_WAIT_MS`]) until this node knows the cluster's
/// settings; whether it does. A change of the users or the libraries through a node that just started waits here,
/// so that it is made on top of the cluster's instead of replacing them with the node's own.
pub async fn wait_heard(shared: &Shared) -> bool {
    let Some(cl) = shared.cluster.as_ref() else {
        return true;
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(HEARD_WAIT_MS);
    while !heard(cl) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

/// Runs `FUNCTION ...` on this node's VM.
fn function_command(
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    args: Vec<Bytes>,
) -> Frame {
    let job = crate::script::Job::Function(args);
    crate::script::Scripts::run_job(shared, job, (None, None), runtime, false).0
}

/// This node's libraries as `FUNCTION DUMP` gives them.
fn dump(shared: &Arc<Shared>, cl: &Cluster, runtime: &tokio::runtime::Handle) -> Option<Bytes> {
    let args = vec![Bytes::from_static(b"FUNCTION"), Bytes::from_static(b"DUMP")];
    match function_command(shared, runtime, args) {
        Frame::Bulk(b) => Some(b),
        other => {
            tracing::error!(component = "functions", node_id = %cl.node_id, reply = ?other, "FUNCTION DUMP failed; the libraries are not published");
            None
        }
    }
}

/// Installs the newest libraries this node holds as the cluster's, unless they are installed
/// already. Blocks (the Lua VM): on a blocking thread.
fn install_functions(shared: &Arc<Shared>, cl: &Arc<Cluster>, runtime: &tokio::runtime::Handle) {
    let _functions = cl.functions.lock();
    install_newest(shared, cl, runtime);
}

/// [`install_functions`] with [`Cluster::functions`] held by the caller.
fn install_newest(shared: &Arc<Shared>, cl: &Arc<Cluster>, runtime: &tokio::runtime::Handle) {
    let (version, body) = {
        let held = cl.settings.lock();
        (held.version(FUNCTIONS), held.body(FUNCTIONS))
    };
    if version <= *cl.functions_applied.lock() {
        return;
    }
    let args = vec![
        Bytes::from_static(b"FUNCTION"),
        Bytes::from_static(b"RESTORE"),
        body,
        Bytes::from_static(b"FLUSH"),
    ];
    match function_command(shared, runtime, args) {
        Frame::Error(e) => {
            // A member of the same version dumps what this one restores: this is a bug, not
            // an operator's mistake. The version is marked applied so it is not retried.
            tracing::error!(component = "functions", node_id = %cl.node_id, version = ?version, error = %String::from_utf8_lossy(&e), "cannot install the cluster's libraries; keeping this node's");
        }
        _ => {
            tracing::info!(component = "functions", node_id = %cl.node_id, version = ?version, "libraries changed by a peer; installed")
        }
    }
    *cl.functions_applied.lock() = version;
}

/// A peer's document `doc` at `version`: applied if newer than what this node holds.
pub fn offer(shared: &Arc<Shared>, cl: &Arc<Cluster>, doc: Doc, version: Version, body: Bytes) {
    let mut held = cl.settings.lock();
    if !held.offer(doc, version, body.clone()) {
        return;
    }
    cl.metrics
        .dist
        .settings_applied
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match doc {
        USERS => apply_users(shared, cl, version, &body),
        FUNCTIONS => {
            drop(held);
            let (sh, c) = (shared.clone(), cl.clone());
            let runtime = tokio::runtime::Handle::current();
            shared.tasks.spawn(async move {
                let _ =
                    tokio::task::spawn_blocking(move || install_functions(&sh, &c, &runtime)).await;
            });
        }
        // A document of a newer build: kept and passed on, nothing to apply here.
        _ => {}
    }
}

fn apply_users(shared: &Shared, cl: &Cluster, version: Version, body: &Bytes) {
    let text = String::from_utf8_lossy(body);
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

/// `peer`'s heartbeat reported the versions `theirs`: pulls its documents if one is newer.
pub async fn pull(shared: &Arc<Shared>, cl: &Arc<Cluster>, peer: &Peer, theirs: &[(Doc, Version)]) {
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
    if let Ok(Response::Settings(docs)) = wire::from_body::<Response>(&body) {
        for (doc, version, body) in docs {
            offer(shared, cl, doc, version, body);
        }
        cl.settings.lock().pulled();
        cl.settings_heard
            .store(true, std::sync::atomic::Ordering::Release);
    }
}
