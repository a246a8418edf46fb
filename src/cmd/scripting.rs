//! Scripting: `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `SCRIPT`.
//!
//! The handlers check the arguments and hand the script to the connection
//! ([`Session::script_ready`]), which queues it and runs it ([`Session::flush_scripts`]): on a
//! single node with no other command in between. The engine is [`crate::script`].

use bytes::Bytes;
use hypercache_cluster::slot::redis_slot;
use hypercache_resp::{errors, num, Frame};

use super::{err, err_owned};
use crate::script::{sha1_hex, Call, Job};
use crate::session::Session;

/// # Format
/// `EVAL script numkeys [key ...] [arg ...]`
pub(super) fn eval(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, false, false)
}

/// # Format
/// `EVALSHA sha1 numkeys [key ...] [arg ...]`
pub(super) fn evalsha(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, true, false)
}

/// # Format
/// `EVAL_RO script numkeys [key ...] [arg ...]`
pub(super) fn eval_ro(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, false, true)
}

/// # Format
/// `EVALSHA_RO sha1 numkeys [key ...] [arg ...]`
pub(super) fn evalsha_ro(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, true, true)
}

fn eval_generic(s: &mut Session, a: &[Bytes], by_sha: bool, read_only: bool) -> Option<Frame> {
    let nkeys = match keys_and_args(s, a, errors::NOT_INTEGER) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let keys = &a[3..3 + nkeys];
    let (sha, body) = if by_sha {
        // A SHA1 is 40 hex digits, in either case: anything else is not a script's.
        if a[1].len() != 40 || !a[1].iter().all(u8::is_ascii_hexdigit) {
            return err(errors::NOSCRIPT);
        }
        let sha: String = a[1]
            .iter()
            .map(|c| c.to_ascii_lowercase() as char)
            .collect();
        if !s.shared.scripts.exists(&sha) {
            return err(errors::NOSCRIPT);
        }
        (sha, None)
    } else {
        (sha1_hex(&a[1]), Some(a[1].clone()))
    };
    if s.shared.cluster.is_some() && !keys.is_empty() {
        let text = body.clone().or_else(|| s.shared.scripts.body(&sha));
        if let Some(text) = text.filter(|t| crate::script::atomic_in_cluster(t)) {
            let args = a[3 + nkeys..].to_vec();
            return at_coordinator(s, a, text, keys.to_vec(), args, read_only, None);
        }
    }
    s.script_ready = Some(Job::Run(Call {
        argv: a.into(),
        nkeys,
        sha,
        body,
        read_only,
        user: s.user.clone(),
        tracking: (s.tracking_id, s.tracking.clone()),
        db: s.db,
    }));
    None
}

/// In a cluster, runs a script whose declared keys share a slot atomically at the slot's
/// coordinator: one round of its keys, the script run there over their states
/// ([`crate::cluster::script`]). Its reply comes later.
fn at_coordinator(
    s: &mut Session,
    a: &[Bytes],
    body: Bytes,
    keys: Vec<Bytes>,
    args: Vec<Bytes>,
    read_only: bool,
    function: Option<Call>,
) -> Option<Frame> {
    use crate::cluster::script::{reply_of, Program};
    let cl = s.shared.cluster.clone()?;
    let db = s.physical_db();
    let mut stored: Vec<Bytes> = Vec::with_capacity(keys.len());
    for k in &keys {
        let k = hypercache_cluster::db::encode(db, k);
        if !stored.contains(&k) {
            stored.push(k);
        }
    }
    if s.tracking.as_ref().is_some_and(|t| t.remembers()) {
        // The script's reads are remembered for the caller by the keys it declared, as in
        // Redis (here whether or not it reads them).
        let max = s.shared.config.read().tracking_table_max_keys as usize;
        let refs: Vec<&[u8]> = stored.iter().map(|k| &k[..]).collect();
        s.shared
            .tracking
            .remember(&s.shared, s.tracking_id, &refs, max);
    }
    let program = Program {
        body,
        keys,
        args,
        // The caller's database as it selected it (the script starts in it); the keys above
        // are stored in its physical one.
        db: s.db,
        user: s.user.name.clone(),
        read_only,
        resp3: s.proto == hypercache_resp::Protocol::Resp3,
        argv: a.to_vec(),
        function: function.as_ref().map(|c| c.sha.clone()),
    };
    let is_script = program.function.is_none();
    let slot = hypercache_cluster::slot::key_slot(&stored[0]);
    let Some(g) = hypercache_cluster::group::Group::external(stored, program.encode()) else {
        return err(errors::CROSSSLOT);
    };
    let (shared, sha, text) = (
        s.shared.clone(),
        sha1_hex(&program.body),
        program.body.clone(),
    );
    let reply = move |r: crate::cluster::exec::Res| match r {
        Ok(o) => {
            let f = reply_of(o);
            // Cached here as an EVAL caches it, unless it did not compile.
            if is_script
                && !matches!(&f, Frame::Error(e) if e.starts_with(b"ERR Error compiling script"))
            {
                shared.scripts.remember(sha, text);
            }
            f
        }
        Err(e) => Frame::error(e.text()),
    };
    let part = crate::cluster::exec::start_group(&s.shared, &cl, g, s.levels());
    let Some(call) = function else {
        return match part {
            crate::cluster::exec::Part::Ready(r) => Some(reply(r)),
            crate::cluster::exec::Part::Later(f) => {
                s.defer_waiting(async move { reply(f.await) }, Some(slot));
                None
            }
        };
    };
    // A function the coordinator does not have runs here instead (not atomically).
    let (shared, levels) = (s.shared.clone(), s.consistency);
    s.defer_waiting(
        async move {
            let f = reply(match part {
                crate::cluster::exec::Part::Ready(r) => r,
                crate::cluster::exec::Part::Later(f) => f.await,
            });
            if !matches!(&f, Frame::Error(e) if e[..] == *b"ERR Function not found") {
                return f;
            }
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                crate::script::Scripts::run_job(&shared, Job::Fcall(call), levels, &rt, false).0
            })
            .await
            .unwrap_or_else(|_| Frame::error("ERR function failed"))
        },
        Some(slot),
    );
    None
}

/// A script's or function's `numkeys` (a[2]), its keys and its arguments, with Redis's errors
/// (`not_a_number` when numkeys is not an integer); in a cluster the keys must share a slot.
/// How many keys a script call (`a`: EVAL, EVALSHA, FCALL and their `_RO` forms) declares:
/// `a[3..3 + n]` are its keys, the rest its arguments.
fn keys_and_args(
    s: &Session,
    a: &[Bytes],
    not_a_number: &'static str,
) -> Result<usize, Option<Frame>> {
    let Some(numkeys) = num::parse_i64(&a[2]) else {
        return Err(err(not_a_number));
    };
    if numkeys > (a.len() - 3) as i64 {
        return Err(err(errors::NUMKEYS_TOO_MANY));
    }
    if numkeys < 0 {
        return Err(err(errors::NUMKEYS_NEGATIVE));
    }
    let n = numkeys as usize;
    let keys = &a[3..3 + n];
    if s.shared.cluster.is_some()
        && keys
            .windows(2)
            .any(|w| redis_slot(&w[0]) != redis_slot(&w[1]))
    {
        return Err(err(errors::CROSSSLOT));
    }
    Ok(n)
}

/// # Format
/// `SCRIPT LOAD|EXISTS|FLUSH|KILL|DEBUG|HELP ...`
pub(super) fn script(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"load" => {
            s.script_ready = Some(Job::Load(a[2].clone()));
            None
        }
        b"exists" => Some(Frame::Array(
            a[2..]
                .iter()
                .map(|sha| {
                    let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                    Frame::Integer(i64::from(s.shared.scripts.exists(&sha)))
                })
                .collect(),
        )),
        b"flush" => {
            match a.get(2) {
                None => {}
                Some(m)
                    if a.len() == 3
                        && (m.eq_ignore_ascii_case(b"sync") || m.eq_ignore_ascii_case(b"async")) => {}
                Some(_) => return err("ERR SCRIPT FLUSH only support SYNC|ASYNC option"),
            }
            s.script_ready = Some(Job::FlushScripts);
            None
        }
        b"kill" => match s.shared.scripts.running.kill(false) {
            Ok(()) => Some(Frame::ok()),
            Err(e) => err(e),
        },
        b"debug" => err_owned(
            "ERR SCRIPT DEBUG is not supported: HyperCache has no Lua debugger".to_string(),
        ),
        _ => super::help_with(
            "SCRIPT",
            &[
                "DEBUG (YES|SYNC|NO)",
                "    Set the debug mode for subsequent scripts executed.",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache. Very dangerous on replicas.",
                "    When called without the optional mode argument, the behavior is determined by the",
                "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
                "    * ASYNC: Asynchronously flush the scripts cache.",
                "    * SYNC: Synchronously flush the scripts cache.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
            ],
            "    Prints this help.",
        ),
    }
}

/// # Format
/// `FCALL function numkeys [key ...] [arg ...]`
pub(super) fn fcall(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    fcall_generic(s, a, false)
}

/// # Format
/// `FCALL_RO function numkeys [key ...] [arg ...]`
pub(super) fn fcall_ro(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    fcall_generic(s, a, true)
}

fn fcall_generic(s: &mut Session, a: &[Bytes], read_only: bool) -> Option<Frame> {
    let nkeys = match keys_and_args(s, a, "ERR Bad number of keys provided") {
        Ok(n) => n,
        Err(e) => return e,
    };
    let call = Call {
        argv: a.into(),
        nkeys,
        sha: String::from_utf8_lossy(&a[1]).into_owned(),
        body: None,
        read_only,
        user: s.user.clone(),
        tracking: (s.tracking_id, s.tracking.clone()),
        db: s.db,
    };
    if s.shared.cluster.is_some() && nkeys > 0 {
        // With keys, in a cluster: atomically at their slot's coordinator if the library is
        // loaded there too (functions live on the node that loaded them); else here, call by
        // call, as without keys.
        let (keys, args) = (call.keys().to_vec(), call.args().to_vec());
        return at_coordinator(s, a, Bytes::new(), keys, args, read_only, Some(call));
    }
    s.script_ready = Some(Job::Fcall(call));
    None
}

/// # Format
/// `FUNCTION LOAD|LIST|DELETE|FLUSH|DUMP|RESTORE|STATS|KILL|HELP ...`
pub(super) fn function(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    match sub.as_slice() {
        // In a cluster the libraries are cluster-wide: a change through any node is published
        // to every member ([`crate::cluster::settings::change_functions`]).
        b"load" | b"delete" | b"flush" | b"restore" if s.shared.cluster.is_some() => {
            let (sh, args) = (s.shared.clone(), a.to_vec());
            let cl = s.shared.cluster.clone()?;
            let runtime = tokio::runtime::Handle::current();
            s.defer(
                async move {
                    tokio::task::spawn_blocking(move || {
                        crate::cluster::settings::change_functions(&sh, &cl, args, &runtime)
                    })
                    .await
                    .unwrap_or_else(|_| Frame::error("ERR internal error"))
                },
                None,
            );
            None
        }
        b"load" | b"list" | b"delete" | b"flush" | b"dump" | b"restore" => {
            s.script_ready = Some(Job::Function(a.to_vec()));
            None
        }
        b"kill" => match s.shared.scripts.running.kill(true) {
            Ok(()) => Some(Frame::ok()),
            Err(e) => err(e),
        },
        b"stats" => {
            let bulk = |t: &str| Frame::Bulk(Bytes::copy_from_slice(t.as_bytes()));
            let running = match s.shared.scripts.running.current() {
                Some((name, argv, ms)) => Frame::Map(vec![
                    (bulk("name"), bulk(&name)),
                    (
                        bulk("command"),
                        Frame::Array(argv.iter().cloned().map(Frame::Bulk).collect()),
                    ),
                    (bulk("duration_ms"), Frame::Integer(ms as i64)),
                ]),
                None => Frame::Null,
            };
            let (libraries, functions) = s.shared.scripts.function_counts();
            Some(Frame::Map(vec![
                (bulk("running_script"), running),
                (
                    bulk("engines"),
                    Frame::Map(vec![(
                        bulk("LUA"),
                        Frame::Map(vec![
                            (bulk("libraries_count"), Frame::Integer(libraries as i64)),
                            (bulk("functions_count"), Frame::Integer(functions as i64)),
                        ]),
                    )]),
                ),
            ]))
        }
        _ => super::help_with(
            "FUNCTION",
            &[
                "LOAD [REPLACE] <FUNCTION CODE>",
                "    Create a new library with the given library name and code.",
                "DELETE <LIBRARY NAME>",
                "    Delete the given library.",
                "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
                "    Return general information on all the libraries:",
                "    * Library name",
                "    * The engine used to run the Library",
                "    * Library description",
                "    * Functions list",
                "    * Library code (if WITHCODE is given)",
                "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
                "STATS",
                "    Return information about the current function running:",
                "    * Function name",
                "    * Command used to run the function",
                "    * Duration in MS that the function is running",
                "    If no function is running, return nil",
                "    In addition, returns a list of available engines.",
                "KILL",
                "    Kill the current running function.",
                "FLUSH [ASYNC|SYNC]",
                "    Delete all the libraries.",
                "    When called without the optional mode argument, the behavior is determined by the",
                "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
                "    * ASYNC: Asynchronously flush the libraries.",
                "    * SYNC: Synchronously flush the libraries.",
                "DUMP",
                "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
                "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
                "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
                "    control how to handle existing libraries (default APPEND):",
                "    * FLUSH: delete all existing libraries.",
                "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
                "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
                "      libraries with the new libraries (notice that even on this option there is a chance of failure",
                "      in case of functions name collision with another library).",
            ],
            "    Prints this help.",
        ),
    }
}
