//! Command handlers, one function per command, grouped by family (a file per family rather than
//! per command: most handlers are a few lines that translate arguments into a store operation).
//!
//! A handler receives the whole argument list (arity already checked, authentication done) and
//! returns the reply, or `None` when the command sends no reply at all.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use hypercache_cluster::{OpError, Outcome};
use hypercache_resp::table::{self, CommandSpec};
use hypercache_resp::{errors, num, Frame};

use crate::cluster::{exec, Cluster};
use crate::session::Session;
use crate::state::{Shared, Stats};
use hypercache_cluster::notify;
use hypercache_cluster::slot::key_slot;
use hypercache_cluster::Op;
use std::sync::Arc;

pub(crate) mod acl;
mod bitmap;
mod connection;
pub(crate) mod hc;
mod keys;
mod pubsub;
mod repl;
mod scripting;
mod server;
mod strings;
mod transactions;

/// A command implementation.
pub(crate) type Handler = fn(&mut Session, &[Bytes]) -> Option<Frame>;

fn handlers() -> &'static [(&'static str, Handler)] {
    &[
        ("get", strings::get),
        ("set", strings::set),
        ("setnx", strings::setnx),
        ("setex", strings::setex),
        ("psetex", strings::psetex),
        ("getset", strings::getset),
        ("getdel", strings::getdel),
        ("getex", strings::getex),
        ("mget", strings::mget),
        ("mset", strings::mset),
        ("msetnx", strings::msetnx),
        ("incr", strings::incr),
        ("decr", strings::decr),
        ("incrby", strings::incrby),
        ("decrby", strings::decrby),
        ("incrbyfloat", strings::incrbyfloat),
        ("append", strings::append),
        ("strlen", strings::strlen),
        ("getrange", strings::getrange),
        ("substr", strings::getrange),
        ("setrange", strings::setrange),
        ("lcs", strings::lcs),
        ("setbit", bitmap::setbit),
        ("getbit", bitmap::getbit),
        ("bitcount", bitmap::bitcount),
        ("bitpos", bitmap::bitpos),
        ("bitop", bitmap::bitop),
        ("bitfield", bitmap::bitfield),
        ("bitfield_ro", bitmap::bitfield_ro),
        ("del", keys::del),
        ("unlink", keys::del),
        ("exists", keys::exists),
        ("touch", keys::touch),
        ("type", keys::type_),
        ("expire", keys::expire),
        ("pexpire", keys::pexpire),
        ("expireat", keys::expireat),
        ("pexpireat", keys::pexpireat),
        ("ttl", keys::ttl),
        ("pttl", keys::pttl),
        ("expiretime", keys::expiretime),
        ("pexpiretime", keys::pexpiretime),
        ("persist", keys::persist),
        ("keys", keys::keys),
        ("scan", keys::scan),
        ("randomkey", keys::randomkey),
        ("rename", keys::rename),
        ("renamenx", keys::renamenx),
        ("copy", keys::copy),
        ("move", keys::move_),
        ("swapdb", keys::swapdb),
        ("dump", repl::dump),
        ("restore", repl::restore),
        ("migrate", repl::migrate),
        ("sync", repl::sync),
        ("psync", repl::psync),
        ("replconf", repl::replconf),
        ("wait", repl::wait),
        ("replicaof", repl::replicaof),
        ("slaveof", repl::replicaof),
        ("role", repl::role),
        ("dbsize", keys::dbsize),
        ("flushdb", keys::flush),
        ("flushall", keys::flush),
        ("object", keys::object),
        ("ping", connection::ping),
        ("echo", connection::echo),
        ("hello", connection::hello),
        ("auth", connection::auth),
        ("select", connection::select),
        ("quit", connection::quit),
        ("reset", connection::reset),
        ("client", connection::client),
        ("acl", acl::acl),
        ("subscribe", pubsub::subscribe),
        ("psubscribe", pubsub::psubscribe),
        ("unsubscribe", pubsub::unsubscribe),
        ("punsubscribe", pubsub::punsubscribe),
        ("publish", pubsub::publish),
        ("pubsub", pubsub::pubsub),
        ("command", server::command),
        ("config", server::config),
        ("info", server::info),
        ("time", server::time),
        ("shutdown", server::shutdown),
        ("save", server::save),
        ("bgsave", server::bgsave),
        ("lastsave", server::lastsave),
        ("latency", server::latency),
        ("slowlog", server::slowlog),
        ("debug", server::debug),
        ("monitor", server::monitor),
        ("memory", server::memory),
        ("eval", scripting::eval),
        ("evalsha", scripting::evalsha),
        ("eval_ro", scripting::eval_ro),
        ("evalsha_ro", scripting::evalsha_ro),
        ("script", scripting::script),
        ("fcall", scripting::fcall),
        ("fcall_ro", scripting::fcall_ro),
        ("function", scripting::function),
        ("cluster", server::cluster),
        ("multi", transactions::multi),
        ("exec", transactions::exec),
        ("discard", transactions::discard),
        ("watch", transactions::watch),
        ("unwatch", transactions::unwatch),
        ("hc.node", hc::node),
        ("hc.members", hc::members),
        ("hc.keyslot", hc::keyslot),
        ("hc.consistency", hc::consistency),
        ("hc.metrics", hc::metrics),
        ("hc.hints", hc::hints),
        ("hc.sync", hc::sync),
        ("hc.drain", hc::drain),
        ("hc.forget", hc::forget),
    ]
}

type Index = HashMap<&'static str, (&'static CommandSpec, Handler), ahash::RandomState>;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let map: Index = handlers()
            .iter()
            .map(|(name, h)| {
                let spec = table::lookup(name.as_bytes())
                    .unwrap_or_else(|| panic!("{name} missing from the table"));
                (*name, (spec, *h))
            })
            .collect();
        assert_eq!(
            map.len(),
            table::COMMANDS.len(),
            "every table entry has a handler"
        );
        map
    })
}

/// Finds a command (any case) and its handler.
pub(crate) fn lookup(name: &[u8]) -> Option<(&'static CommandSpec, Handler)> {
    table::with_lowercase(name, |lower| index().get(lower).copied())
}

/// An error reply from static text.
pub(crate) fn err(msg: &'static str) -> Option<Frame> {
    Some(Frame::error(msg))
}

/// An error reply from owned text.
pub(crate) fn err_owned(msg: impl Into<Vec<u8>>) -> Option<Frame> {
    Some(Frame::Error(Bytes::from(msg.into())))
}

/// Parses an integer argument with Redis's rules.
pub(crate) fn int_arg(b: &[u8]) -> Result<i64, Option<Frame>> {
    num::parse_i64(b).ok_or_else(|| err(errors::NOT_INTEGER))
}

/// The reply for an operation's outcome.
pub(crate) fn reply(o: Outcome) -> Frame {
    match o {
        Outcome::Ok => Frame::ok(),
        Outcome::Nil => Frame::Null,
        Outcome::Int(i) => Frame::Integer(i),
        Outcome::Value(v) => Frame::Bulk(v),
        Outcome::Status(s) => Frame::simple(s),
        Outcome::Text(s) => Frame::Bulk(Bytes::from_static(s.as_bytes())),
        Outcome::Err(e) => op_error(e),
        Outcome::Fields(f) => Frame::Array(
            f.into_iter()
                .map(|v| v.map_or(Frame::Null, Frame::Integer))
                .collect(),
        ),
        // WATCH's outcomes: `guarded` and `WATCH` itself turn them into their replies.
        Outcome::Changed => Frame::NullArray,
        Outcome::Version(_) => Frame::ok(),
        // A transaction's batch: the session replies per command (`Session::run_batch`).
        Outcome::Batch(outs, _) => Frame::Array(outs.into_iter().map(reply).collect()),
    }
}

/// Counts a GET's keyspace hit or miss (INFO `keyspace_hits`/`keyspace_misses`), in a cluster as
/// on a single node.
fn count_lookup(shared: &Shared, op: &Op<'_>, r: &exec::Res) {
    if !matches!(op, Op::Get) {
        return;
    }
    let st = &shared.metrics.server;
    match r {
        Ok(Outcome::Nil) => Stats::add(&st.keyspace_misses, 1),
        Ok(_) => Stats::add(&st.keyspace_hits, 1),
        Err(_) => {}
    }
}

/// A finished keyed operation's reply: `finish` of its outcome, or the `NOREPLICAS` error.
fn finished(r: exec::Res, finish: fn(Outcome) -> Frame) -> Frame {
    match r {
        Ok(o) => finish(o),
        Err(e) => Frame::error(e.text()),
    }
}

/// Runs `op` on `key` and replies with `finish` of its outcome: on the local store for a single
/// node; in a cluster wherever the coordinator's plan says, the reply possibly deferred.
pub(crate) fn keyed(
    s: &mut Session,
    key: &Bytes,
    op: Op<'_>,
    finish: fn(Outcome) -> Frame,
) -> Option<Frame> {
    let ctx = s.ctx();
    let Some(cl) = s.shared.cluster.clone() else {
        let (noting, repl) = (crate::notify::noting(&s.shared), s.shared.repl.is_active());
        if !noting && !repl {
            return Some(finish(s.shared.store.apply(key, &op, &ctx)));
        }
        let (o, change) = s.shared.store.apply_noting(key, &op, &ctx);
        if repl {
            // What Redis's replication stream gets for it (crate::repl).
            s.repl_rewrite = change.and_then(|c| {
                crate::repl::rewrite(hypercache_cluster::db::split(key).1, &op, c, &o)
            });
        }
        if noting {
            let events = notify::events(&op, change);
            s.events_after_reply = events.after_reply;
            crate::notify::after_write(&s.shared, key, events, s.tracking_id);
        }
        return Some(finish(o));
    };
    if let Some(o) = s.overlay.as_mut().and_then(|ov| ov.apply(key, &op, &ctx)) {
        // A script at its slot's coordinator, on one of its keys: over the state its round
        // read.
        return Some(finish(o));
    }
    if let Some(batch) = s.batching.as_mut() {
        // A transaction's command on its one key: it runs with the others, as one operation.
        batch.push(BatchedOp {
            key: key.clone(),
            bytes: hypercache_cluster::msg::guard_bytes(&op),
            finish,
            get: matches!(op, Op::Get),
        });
        return None;
    }
    if s.cas.as_ref().is_some_and(|(k, _)| k == key) {
        return guarded(s, &cl, key, op, finish);
    }
    match exec::start(&s.shared, &cl, key, &op, s.levels(), &ctx) {
        exec::Part::Ready(r) => {
            count_lookup(&s.shared, &op, &r);
            Some(finished(r, finish))
        }
        exec::Part::Later(f) => {
            let counted = matches!(op, Op::Get).then(|| s.shared.clone());
            s.defer_waiting(
                async move {
                    let r = f.await;
                    if let Some(sh) = counted {
                        count_lookup(&sh, &Op::Get, &r);
                    }
                    finished(r, finish)
                },
                Some(key_slot(key)),
            );
            None
        }
    }
}

/// The commands that run as one operation of their one key (through `keyed`): in a cluster, a
/// watched transaction's command must be one of them (its check and write are one round).
pub(crate) fn guardable(name: &str) -> bool {
    matches!(
        name,
        "get"
            | "set"
            | "setnx"
            | "setex"
            | "psetex"
            | "getset"
            | "getdel"
            | "getex"
            | "incr"
            | "decr"
            | "incrby"
            | "decrby"
            | "incrbyfloat"
            | "append"
            | "strlen"
            | "getrange"
            | "substr"
            | "setrange"
            | "setbit"
            | "getbit"
            | "bitcount"
            | "bitpos"
            | "bitfield"
            | "bitfield_ro"
            | "del"
            | "unlink"
            | "exists"
            | "touch"
            | "type"
            | "expire"
            | "pexpire"
            | "expireat"
            | "pexpireat"
            | "ttl"
            | "pttl"
            | "expiretime"
            | "pexpiretime"
            | "persist"
    )
}

/// A watched transaction's command in a cluster ([`Session::cas`]): the operation runs only if
/// the key still has the version `WATCH` saw, checked and applied in one read-modify-write round
/// at QUORUM at least (`Op::IfVersion`). Its reply is the whole `EXEC` reply: a null array if the
/// key changed, else the command's reply in an array.
fn guarded(
    s: &mut Session,
    cl: &Arc<Cluster>,
    key: &Bytes,
    op: Op<'_>,
    finish: fn(Outcome) -> Frame,
) -> Option<Frame> {
    let (_, expect) = s.cas.take()?;
    let then = hypercache_cluster::msg::guard_bytes(&op);
    let guard = Op::IfVersion {
        expect,
        then: &then,
    };
    let mut lv = s.levels();
    if lv.write == hypercache_cluster::msg::Level::One {
        lv.write = hypercache_cluster::msg::Level::Quorum;
    }
    let exec_reply = move |r: exec::Res| match r {
        Ok(Outcome::Changed) => Frame::NullArray,
        r => Frame::Array(vec![finished(r, finish)]),
    };
    match exec::start(&s.shared, cl, key, &guard, lv, &s.ctx()) {
        exec::Part::Ready(r) => Some(exec_reply(r)),
        exec::Part::Later(f) => {
            s.defer_waiting(async move { exec_reply(f.await) }, Some(key_slot(key)));
            None
        }
    }
}

/// How a keyed command's reply is made from its operation's outcome.
pub(crate) type Finish = fn(Outcome) -> Frame;

/// A transaction's command collected for [`batch`].
pub(crate) struct BatchedOp {
    /// Its key (stored form).
    key: Bytes,
    /// Its operation's wire form.
    bytes: Vec<u8>,
    /// How its reply is made.
    finish: Finish,
    /// It is a GET (a keyspace hit or miss).
    get: bool,
}

/// A transaction's commands collected for [`batch`], in order.
pub(crate) type Batched = Vec<BatchedOp>;

/// A transaction's commands on one key in a cluster, run as one [`Op::Batch`] (guarded by the
/// version `WATCH` saw when `expect` is set): one read-modify-write round at QUORUM at least, so
/// that no other write to the key comes between them. `slots` is each command's place in the
/// `EXEC` reply: its reply already known (refused before it ran), or the index of its operation
/// in `ops`, whose `finish` makes its reply from its outcome. Returns the `EXEC` reply, or
/// `None` when it comes later (deferred in the session's output).
pub(crate) fn batch(
    s: &mut Session,
    key: &Bytes,
    expect: Option<Option<hypercache_cluster::version::Version>>,
    ops: Batched,
    slots: Vec<Result<usize, Frame>>,
) -> Option<Frame> {
    let cl = s.shared.cluster.clone()?;
    let bytes: Vec<Vec<u8>> = ops.iter().map(|o| o.bytes.clone()).collect();
    let exec_reply = exec_reply(s.shared.clone(), ops, slots);
    let batch = hypercache_cluster::msg::batch_bytes(&bytes);
    let guard = expect.map(|_| hypercache_cluster::msg::guard_bytes(&Op::Batch(&batch)));
    let op = match (expect, &guard) {
        (Some(expect), Some(then)) => Op::IfVersion { expect, then },
        _ => Op::Batch(&batch),
    };
    let mut lv = s.levels();
    if lv.write == hypercache_cluster::msg::Level::One {
        lv.write = hypercache_cluster::msg::Level::Quorum;
    }
    match exec::start(&s.shared, &cl, key, &op, lv, &s.ctx()) {
        exec::Part::Ready(r) => Some(exec_reply(r)),
        exec::Part::Later(f) => {
            s.defer_waiting(async move { exec_reply(f.await) }, Some(key_slot(key)));
            None
        }
    }
}

/// A transaction's commands on several keys of one slot in a cluster (`keys`, stored form),
/// run as one round at the slot's coordinator ([`hypercache_cluster::group`]), guarded by the
/// versions `WATCH` saw of some of them (`expect`: index in `keys`, version). `slots` as for
/// [`batch`]. Returns the `EXEC` reply, or `None` when it comes later.
pub(crate) fn group(
    s: &mut Session,
    keys: Vec<Bytes>,
    expect: Vec<(u16, Option<hypercache_cluster::version::Version>)>,
    ops: Batched,
    slots: Vec<Result<usize, Frame>>,
) -> Option<Frame> {
    let cl = s.shared.cluster.clone()?;
    let mut parts = Vec::with_capacity(ops.len());
    for o in &ops {
        let Some(i) = keys.iter().position(|k| *k == o.key) else {
            // Not expected (the plan listed every command's key): refused, nothing runs.
            return err("ERR transaction key not planned");
        };
        parts.push((i as u16, o.bytes.clone()));
    }
    let slot = key_slot(&keys[0]);
    let bytes = Bytes::from(hypercache_cluster::msg::group_bytes(&parts));
    let Some(g) = hypercache_cluster::group::Group::new(keys, bytes, expect) else {
        return err("ERR transaction too large for one round");
    };
    let exec_reply = exec_reply(s.shared.clone(), ops, slots);
    match exec::start_group(&s.shared, &cl, g, s.levels()) {
        exec::Part::Ready(r) => Some(exec_reply(r)),
        exec::Part::Later(f) => {
            s.defer_waiting(async move { exec_reply(f.await) }, Some(slot));
            None
        }
    }
}

/// How `EXEC`'s reply is made from the outcome of its batch or group of `ops`: each command's
/// reply by its `finish`, in the places `slots` gives (see [`batch`]); a null array if a
/// watched key changed; each command's error if the round failed.
fn exec_reply(
    shared: Arc<Shared>,
    ops: Batched,
    slots: Vec<Result<usize, Frame>>,
) -> impl FnOnce(exec::Res) -> Frame + Send + 'static {
    let (finish, gets): (Vec<Finish>, Vec<bool>) = ops.iter().map(|o| (o.finish, o.get)).unzip();
    move |r: exec::Res| {
        let mut outs = match r {
            Ok(Outcome::Changed) => return Frame::NullArray,
            Ok(Outcome::Batch(outs, _)) if outs.len() == finish.len() => {
                // The GETs among them count as keyspace hits or misses, as on their own.
                for (o, _) in outs.iter().zip(&gets).filter(|(_, get)| **get) {
                    count_lookup(&shared, &Op::Get, &Ok(o.clone()));
                }
                outs.into_iter().map(Ok).collect::<Vec<_>>()
            }
            Ok(other) => vec![Ok(other); finish.len()],
            Err(e) => vec![Err(e); finish.len()],
        }
        .into_iter()
        .zip(finish)
        .map(|(r, f)| Some(finished(r, f)))
        .collect::<Vec<_>>();
        Frame::Array(
            slots
                .into_iter()
                .map(|slot| match slot {
                    Ok(i) => outs[i].take().unwrap_or(Frame::Null),
                    Err(f) => f,
                })
                .collect(),
        )
    }
}

/// In a cluster, runs one operation per key and replies with `combine` of the outcomes in
/// order, or the first `NOREPLICAS` error. Writes to several keys of one slot (`MSET`, `DEL`,
/// `UNLINK` on `{tag}` keys) are one round of that slot, atomic as in Redis Cluster
/// ([`hypercache_cluster::group`]); otherwise one operation per key, across slots, in parallel,
/// not atomically.
pub(crate) fn keyed_many(
    s: &mut Session,
    cl: &Arc<Cluster>,
    items: &[(&Bytes, Op<'_>)],
    combine: fn(Vec<Outcome>) -> Frame,
) -> Option<Frame> {
    if items.len() > 1 && s.overlay.is_none() && items.iter().all(|(_, op)| !op.is_read_only()) {
        let slot = key_slot(items[0].0);
        if items.iter().all(|(k, _)| key_slot(k) == slot) {
            if let Some(f) = keyed_group(s, cl, items, combine) {
                return f;
            }
        }
    }
    let ctx = s.ctx();
    let lv = s.levels();
    let mut parts = Vec::with_capacity(items.len());
    let mut later = false;
    for (key, op) in items {
        // A script at its slot's coordinator: its own keys over the states its round read.
        if let Some(o) = s.overlay.as_mut().and_then(|ov| ov.apply(key, op, &ctx)) {
            parts.push(Ok(Ok(o)));
            continue;
        }
        match exec::start(&s.shared, cl, key, op, lv, &ctx) {
            exec::Part::Ready(r) => parts.push(Ok(r)),
            exec::Part::Later(f) => {
                later = true;
                parts.push(Err(tokio::spawn(f)));
            }
        }
    }
    if !later {
        let done: Result<Vec<Outcome>, _> = parts
            .into_iter()
            .map(|p| p.unwrap_or(Ok(Outcome::Nil)))
            .collect();
        return Some(match done {
            Ok(v) => combine(v),
            Err(e) => Frame::error(e.text()),
        });
    }
    s.defer(
        async move {
            let mut outs = Vec::with_capacity(parts.len());
            for p in parts {
                let r = match p {
                    Ok(r) => r,
                    Err(task) => match task.await {
                        Ok(r) => r,
                        Err(_) => return Frame::error("ERR internal error"),
                    },
                };
                match r {
                    Ok(o) => outs.push(o),
                    Err(e) => return Frame::error(e.text()),
                }
            }
            combine(outs)
        },
        None,
    );
    None
}

/// [`keyed_many`]'s writes to several keys of one slot as one round of it. `None` if they
/// cannot be one (too many keys): the caller runs them one by one.
fn keyed_group(
    s: &mut Session,
    cl: &Arc<Cluster>,
    items: &[(&Bytes, Op<'_>)],
    combine: fn(Vec<Outcome>) -> Frame,
) -> Option<Option<Frame>> {
    let mut keys: Vec<Bytes> = Vec::new();
    let mut parts = Vec::with_capacity(items.len());
    for (key, op) in items {
        let i = match keys.iter().position(|k| k == *key) {
            Some(i) => i,
            None => {
                keys.push((*key).clone());
                keys.len() - 1
            }
        };
        parts.push((
            u16::try_from(i).ok()?,
            hypercache_cluster::msg::guard_bytes(op),
        ));
    }
    let slot = key_slot(&keys[0]);
    let ops = Bytes::from(hypercache_cluster::msg::group_bytes(&parts));
    let g = hypercache_cluster::group::Group::new(keys, ops, Vec::new())?;
    let reply = move |r: exec::Res| match r {
        Ok(Outcome::Batch(outs, _)) => combine(outs),
        Ok(_) => Frame::error("ERR unexpected result of a multi-key round"),
        Err(e) => Frame::error(e.text()),
    };
    Some(match exec::start_group(&s.shared, cl, g, s.levels()) {
        exec::Part::Ready(r) => Some(reply(r)),
        exec::Part::Later(f) => {
            s.defer_waiting(async move { reply(f.await) }, Some(slot));
            None
        }
    })
}

/// The reply for an operation's error.
pub(crate) fn op_error(e: OpError) -> Frame {
    let text: &'static str = match e {
        OpError::NotInteger => errors::NOT_INTEGER,
        OpError::Overflow => errors::OVERFLOW,
        OpError::NotFloat => errors::NOT_FLOAT,
        OpError::NanOrInfinity => errors::NAN_OR_INF,
        OpError::TooLong => errors::STRING_TOO_LONG,
        OpError::Syntax => errors::SYNTAX,
    };
    Frame::error(text)
}

/// Text replies Redis sends as verbatim strings in RESP3 (INFO, CLIENT INFO, CLIENT LIST).
pub(crate) fn verbatim(text: String) -> Frame {
    Frame::Verbatim {
        format: *b"txt",
        text: Bytes::from(text),
    }
}

/// A HELP reply: one status line per entry.
pub(crate) fn help(cmd: &str, lines: &[&str]) -> Option<Frame> {
    help_with(cmd, lines, "    Print this help.")
}

/// A HELP reply whose last line is `last` (SCRIPT HELP says "Prints this help.").
pub(crate) fn help_with(cmd: &str, lines: &[&str], last: &'static str) -> Option<Frame> {
    let mut out = vec![Frame::Simple(Bytes::from(format!(
        "{} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        cmd
    )))];
    out.extend(
        lines
            .iter()
            .map(|l| Frame::Simple(Bytes::copy_from_slice(l.as_bytes()))),
    );
    out.push(Frame::simple("HELP"));
    out.push(Frame::simple(last));
    Some(Frame::Array(out))
}
