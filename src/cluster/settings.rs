//! The driver of the cluster-wide settings ([`hypercache_cluster::settings`], the machine both
//! drivers run): the ACL users (an entry per user: its line of `ACL LIST`) and the function
//! libraries (an entry per library: its code).
//!
//! - A change made through this node ([`change_users`], [`change_functions`]) gives the
//!   machine the node's entries after it; the machine versions the ones that changed (set or
//!   removed) from the node's clock, and they are pushed to every member (`PutSettings`, none
//!   required to answer).
//! - A peer's push ([`offer`], from the serving side) or the entries pulled after a heartbeat
//!   showed a different digest ([`pull`]) are kept where newer, and the document is applied:
//!   this node's users become the live entries (connections of users that no longer exist are
//!   closed, as `ACL DELUSER` closes them); its libraries are restored from them with
//!   `FUNCTION RESTORE ... FLUSH`.
//! - The users are changed and applied with the settings lock held, so a local change cannot
//!   be overwritten half way. The libraries live in the Lua VM, which a long script holds: they
//!   are changed and applied under a lock of their own ([`super::Cluster::functions`]), never
//!   the settings lock, so that a heartbeat never waits for a script. Applying always installs
//!   the entries held last, so concurrent applies end on the same libraries.

use std::sync::Arc;

use bytes::Bytes;
use hypercache_cluster::msg::{Request, Response};
use hypercache_cluster::settings::{Doc, Entry, FUNCTIONS, HEARD_WAIT_MS, USERS};
use hypercache_cluster::wire;
use hypercache_resp::Frame;

use super::link::Peer;
use super::Cluster;
use crate::acl::Acl;
use crate::state::{now_ms, Shared};

/// The users as the cluster-wide document's entries: each user's line of `ACL LIST`, named by
/// the user.
fn user_entries(acl: &Acl) -> Vec<(Bytes, Bytes)> {
    acl.list()
        .into_iter()
        .filter_map(|line| {
            let name = line.split(|&c| c == b' ').nth(1)?.to_vec();
            Some((Bytes::from(name), Bytes::from(line)))
        })
        .collect()
}

/// Runs `change` on this node's users; when it reports a change (`true`) and the node is in a
/// cluster, publishes the users it changed (set, or removed) with a new version to every
/// member. In a cluster, refused (`Err`, the reply, nothing run) while the machine says this
/// node may not change them yet ([`hypercache_cluster::settings::Settings::may_change`]): a
/// connection waits for that first ([`wait_heard`]); a change run by `EXEC` cannot.
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
    // Under the settings lock, peers' users are applied as they arrive: the node's users
    // before the change are the cluster's plus its own configuration if nothing was set yet.
    let before = user_entries(&shared.acl);
    let (r, changed) = change(&shared.acl);
    if !changed {
        return Ok(r);
    }
    shared.pubsub.enforce_acl(&shared.acl);
    let version = shared.store.new_version(now_ms());
    let after = user_entries(&shared.acl);
    let entries = held.change(USERS, &before, &after, version);
    drop(held);
    if !entries.is_empty() {
        tracing::info!(component = "acl", node_id = %cl.node_id, version = ?version, users = entries.len(), "users changed here; publishing them to every member");
        publish(shared, &cl, USERS, entries);
    }
    Ok(r)
}

/// Pushes `entries` of `doc` to every member, in the background.
fn publish(shared: &Arc<Shared>, cl: &Arc<Cluster>, doc: Doc, entries: Vec<Entry>) {
    cl.metrics
        .dist
        .settings_published
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (sh, c) = (shared.clone(), cl.clone());
    shared.tasks.spawn(async move {
        super::exec::put_settings(&sh, &c, doc, entries).await;
    });
}

/// A `FUNCTION` subcommand that changes the libraries (`LOAD`, `DELETE`, `FLUSH`, `RESTORE`)
/// through this node of a cluster: runs it, and if it succeeded publishes the libraries it
/// changed (loaded, replaced or deleted) with a new version to every member. Its reply is the
/// command's. Blocks (the Lua VM): call it on a blocking thread.
pub fn change_functions(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    args: Vec<Bytes>,
    runtime: &tokio::runtime::Handle,
) -> Frame {
    // A node that has not yet heard the cluster's libraries (just started) would publish its
    // own few as the cluster's and remove the others. The connection waited for that already
    // ([`crate::session::Session::must_hear_settings`]); a change queued in MULTI did not.
    if !heard(cl) {
        return Frame::error(NOT_HEARD);
    }
    let _functions = cl.functions.lock();
    // A peer's newer libraries that arrived and wait to be installed go first: the change is
    // made on top of them.
    install_newest(shared, cl, runtime);
    // What the command changes, from the libraries installed before and after it: a peer's
    // library that arrives meanwhile is held but not yet installed, and must not read as one
    // this command deleted.
    let Some(before) = libraries(shared, cl, runtime) else {
        return Frame::error("ERR cannot read this node's libraries");
    };
    let reply = function_command(shared, runtime, args);
    if matches!(reply, Frame::Error(_)) {
        return reply;
    }
    let Some(after) = libraries(shared, cl, runtime) else {
        return reply;
    };
    let version = shared.store.new_version(now_ms());
    let (entries, same) = {
        let mut held = cl.settings.lock();
        let entries = held.change(FUNCTIONS, &before, &after, version);
        // What is installed is the cluster's copy, unless a peer's library arrived meanwhile
        // (or a newer change of one of these): then it is installed below.
        let same = held.live(FUNCTIONS) == after;
        if same {
            *cl.functions_applied.lock() = held.digest(FUNCTIONS);
        }
        (entries, same)
    };
    if !same {
        install_newest(shared, cl, runtime);
    }
    if !entries.is_empty() {
        tracing::info!(component = "functions", node_id = %cl.node_id, version = ?version, libraries = entries.len(), "libraries changed here; publishing them to every member");
        publish(shared, cl, FUNCTIONS, entries);
    }
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

/// This node's libraries, by name, with their code (from `FUNCTION DUMP`).
fn libraries(
    shared: &Arc<Shared>,
    cl: &Cluster,
    runtime: &tokio::runtime::Handle,
) -> Option<Vec<(Bytes, Bytes)>> {
    let args = vec![Bytes::from_static(b"FUNCTION"), Bytes::from_static(b"DUMP")];
    let reply = function_command(shared, runtime, args);
    let found = match &reply {
        Frame::Bulk(b) => crate::script::functions::libraries_in(b),
        _ => None,
    };
    if found.is_none() {
        tracing::error!(component = "functions", node_id = %cl.node_id, reply = ?reply, "cannot read this node's libraries; the change is not published");
    }
    let mut libs: Vec<(Bytes, Bytes)> = found?
        .into_iter()
        .map(|(name, code)| (Bytes::from(name), code))
        .collect();
    libs.sort();
    Some(libs)
}

/// Installs the cluster's libraries (the live entries this node holds), unless they are
/// installed already. Blocks (the Lua VM): on a blocking thread.
fn install_functions(shared: &Arc<Shared>, cl: &Arc<Cluster>, runtime: &tokio::runtime::Handle) {
    let _functions = cl.functions.lock();
    install_newest(shared, cl, runtime);
}

/// [`install_functions`] with [`Cluster::functions`] held by the caller: replaces this node's
/// libraries with the cluster's in one `FUNCTION RESTORE ... FLUSH`.
fn install_newest(shared: &Arc<Shared>, cl: &Arc<Cluster>, runtime: &tokio::runtime::Handle) {
    let (digest, live) = {
        let held = cl.settings.lock();
        (held.digest(FUNCTIONS), held.live(FUNCTIONS))
    };
    if digest == *cl.functions_applied.lock() {
        return;
    }
    let payload = crate::script::functions::dump_payload(live.iter().map(|(_, code)| code));
    let args = vec![
        Bytes::from_static(b"FUNCTION"),
        Bytes::from_static(b"RESTORE"),
        Bytes::from(payload),
        Bytes::from_static(b"FLUSH"),
    ];
    match function_command(shared, runtime, args) {
        Frame::Error(e) => {
            // Libraries loaded at the same time through two nodes that register the same
            // function name: the second in name order fails here, on every member alike.
            // Marked applied so it is not retried until the libraries change again.
            tracing::error!(component = "functions", node_id = %cl.node_id, libraries = live.len(), error = %String::from_utf8_lossy(&e), "cannot install all of the cluster's libraries");
        }
        _ => {
            tracing::info!(component = "functions", node_id = %cl.node_id, libraries = live.len(), "libraries changed by a peer; installed")
        }
    }
    *cl.functions_applied.lock() = digest;
}

/// A peer's change to entries of document `doc`: the document is applied if one was newer
/// than what this node holds.
pub fn offer(shared: &Arc<Shared>, cl: &Arc<Cluster>, doc: Doc, entries: Vec<Entry>) {
    let mut held = cl.settings.lock();
    if !held.offer_all(doc, entries) {
        return;
    }
    cl.metrics
        .dist
        .settings_applied
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match doc {
        USERS => apply_users(shared, cl, &held.live(USERS)),
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

/// Makes this node's users the cluster's: the live entries, as the lines `ACL LIST` prints.
fn apply_users(shared: &Shared, cl: &Cluster, live: &[(Bytes, Bytes)]) {
    let mut text = Vec::new();
    for (_, line) in live {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    let text = String::from_utf8_lossy(&text);
    match crate::acl::parse_file(&text, "cluster users") {
        Ok(users) => {
            let n = users.len();
            shared.acl.replace(users);
            close_orphans(shared);
            shared.pubsub.enforce_acl(&shared.acl);
            tracing::info!(component = "acl", node_id = %cl.node_id, users = n, "users changed by a peer; applied");
        }
        // A member writes what this one parses: this is a bug, not an operator's mistake.
        Err(e) => {
            tracing::error!(component = "acl", node_id = %cl.node_id, error = %e, "cannot apply the cluster's users; keeping this node's")
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

/// `peer`'s heartbeat reported the digests `theirs`: pulls its entries if a document differs.
pub async fn pull(shared: &Arc<Shared>, cl: &Arc<Cluster>, peer: &Peer, theirs: &[(Doc, u64)]) {
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
        for (doc, entries) in docs {
            offer(shared, cl, doc, entries);
        }
        cl.settings.lock().pulled();
        cl.settings_heard
            .store(true, std::sync::atomic::Ordering::Release);
    }
}
