//! Scripts in a cluster: a script whose declared keys share a slot runs atomically at the slot's
//! coordinator, as one round of [`hypercache_cluster::group`].
//!
//! The node a client sends `EVAL`/`EVALSHA` to hands the script to the slot's coordinator as a
//! [`Program`] (its body, keys, arguments, database, user and protocol). The coordinator's
//! round takes the keys' gates, prepares them (a promise of every key on a quorum of replicas)
//! and asks its driver to run the program ([`compute`]): the script runs in the coordinator's
//! VM over an [`Overlay`] of the keys' newest states, each `redis.call` applied to the overlay
//! at once; the round then replicates the keys the script changed, with the prepare's ballot,
//! all or none on each replica. No other write to the keys lands while the script runs, and its
//! effects (not the script) are what replicas store.
//!
//! What a script may do there: on its declared keys, the single-key string and keyspace
//! commands (the ones a transaction runs as one operation of their key), `MGET`, `MSET`, `DEL`,
//! `UNLINK`, `EXISTS`, `TOUCH`, and `RENAME`, `RENAMENX` and `COPY` between two of them;
//! another command on one of them (`MSETNX`, `BITOP`, `LCS`, `MOVE`, a `RENAME` to an
//! undeclared key, ...) is refused with an error that says so. A key of the slot it did not declare (or of another
//! database) is reached as outside a script: through its coordinator, not atomically (Redis
//! Cluster also lets a script use undeclared keys of its slot). Commands without keys run as
//! usual (`DBSIZE`, `KEYS`, `SCAN` do not see the script's own writes to its declared keys,
//! which are replicated when it returns), except `FLUSHALL`, `FLUSHDB` and `SWAPDB`.

use bytes::Bytes;
use hypercache_cluster::group::{Compute, Computed};
use hypercache_cluster::msg::State;
use hypercache_cluster::notify::{self, Events};
use hypercache_cluster::version::Version;
use hypercache_cluster::{coord, Ctx, Op, Outcome};
use hypercache_resp::{Frame, Protocol};
use serde::{Deserialize, Serialize};

use crate::state::Shared;

/// A script for the slot's coordinator to run ([`hypercache_cluster::group::Group::external`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Program {
    /// The script's body.
    pub body: Bytes,
    /// `KEYS`, as the client gave them.
    pub keys: Vec<Bytes>,
    /// `ARGV`.
    pub args: Vec<Bytes>,
    /// The caller's database (as it selected it: the script starts in it).
    pub db: u8,
    /// The caller's ACL user.
    pub user: Bytes,
    /// `EVAL_RO`/`EVALSHA_RO`.
    pub read_only: bool,
    /// The caller speaks RESP3: the reply is encoded for it.
    pub resp3: bool,
    /// The command as the client sent it (for the running script's name and MONITOR).
    pub argv: Vec<Bytes>,
    /// `FCALL`/`FCALL_RO` of this function (loaded on the coordinator too) instead of `body`.
    pub function: Option<String>,
}

impl Program {
    /// Its wire form.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// From its wire form.
    pub fn decode(b: &[u8]) -> Option<Program> {
        postcard::from_bytes(b).ok()
    }
}

/// The error a script gets for a command it may not run at its slot's coordinator.
pub const NOT_HERE: &str = "ERR This command is not available to a script in a cluster, which runs atomically on its declared keys at their slot's coordinator (see docs/cluster.md)";

/// Whether a script at its slot's coordinator may run command `spec` with `args`, `overlay`
/// holding its declared keys: on those keys, the commands that run over their states
/// (single-key operations, and the multi-key ones made of them); a command on other keys of the
/// slot runs as it would outside a script (not atomically); no flush.
pub fn allowed(
    spec: &hypercache_resp::table::CommandSpec,
    args: &[Bytes],
    overlay: &Overlay,
) -> bool {
    let name = spec.name;
    let positions = spec.key_positions(args);
    if positions.is_empty() {
        return !matches!(name, "flushall" | "flushdb" | "swapdb");
    }
    if !positions.iter().any(|&i| overlay.has(&args[i])) {
        return true;
    }
    crate::cmd::guardable(name)
        || matches!(
            name,
            "mget"
                | "mset"
                | "del"
                | "unlink"
                | "exists"
                | "touch"
                | "rename"
                | "renamenx"
                | "copy"
        )
}

/// A script's view of its keys at the coordinator: each key's newest state as the round read
/// it, changed by the script's commands as they run.
#[derive(Debug)]
pub struct Overlay {
    keys: Vec<Bytes>,
    states: Vec<State>,
    changed: Vec<bool>,
    ballot: Version,
    events: Vec<(u16, Events)>,
}

impl Overlay {
    /// The round's keys (stored form) and their newest states.
    pub fn new(c: &Compute) -> Overlay {
        Overlay {
            keys: c.keys.clone(),
            states: c.states.clone(),
            changed: vec![false; c.keys.len()],
            ballot: c.ballot,
            events: Vec::new(),
        }
    }

    /// Whether `key` (stored form) is one of the script's.
    pub fn has(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Runs `op` on `key` (stored form) over the overlay: its outcome, or `None` if the key
    /// is not one of the script's.
    pub fn apply(&mut self, key: &[u8], op: &Op<'_>, ctx: &Ctx) -> Option<Outcome> {
        let i = self.keys.iter().position(|k| k == key)?;
        let (o, after) = coord::state_after(op, key, &self.states[i], ctx, self.ballot);
        let change = coord::change_of(&self.states[i], after.as_ref(), ctx.now);
        let ev = notify::write_events(op, change, &o);
        if !ev.is_empty() {
            self.events.push((i as u16, ev));
        }
        if let Some(s) = after {
            self.states[i] = s;
            self.changed[i] = true;
        }
        Some(o)
    }

    /// What the script did, with its reply.
    fn computed(self, reply: Frame, proto: Protocol) -> Computed {
        let mut bytes = bytes::BytesMut::new();
        reply.encode(proto, &mut bytes);
        Computed {
            outcome: Outcome::Value(bytes.freeze()).into(),
            writes: self
                .states
                .into_iter()
                .zip(self.changed)
                .enumerate()
                .filter(|(_, (_, changed))| *changed)
                .map(|(i, (s, _))| (i as u16, s))
                .collect(),
            events: self.events,
        }
    }
}

/// Runs a round's program (a script) over its keys' states: what the coordinator's driver does
/// when the round asks ([`hypercache_cluster::node::Out::compute`]). On a blocking thread.
pub fn compute(
    shared: &std::sync::Arc<Shared>,
    c: &Compute,
    runtime: &tokio::runtime::Handle,
) -> Computed {
    let overlay = Overlay::new(c);
    let Some(p) = Program::decode(&c.program) else {
        return overlay.computed(
            Frame::error("ERR malformed script program"),
            Protocol::Resp2,
        );
    };
    let proto = if p.resp3 {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    };
    let Some(user) = shared.acl.get(&p.user) else {
        return overlay.computed(Frame::error("ERR no such user"), proto);
    };
    let function = p.function.is_some();
    // The command as the caller's node received it, with the keys and arguments it sent.
    let nkeys = p.keys.len();
    let mut argv = p.argv;
    argv.truncate(3);
    argv.resize(3, Bytes::new());
    argv.extend(p.keys);
    argv.extend(p.args);
    let call = crate::script::Call {
        argv: argv.into(),
        nkeys,
        sha: p
            .function
            .unwrap_or_else(|| crate::script::sha1_hex(&p.body)),
        body: (!function).then_some(p.body),
        read_only: p.read_only,
        user,
        tracking: (0, None),
        db: p.db,
    };
    let (reply, overlay) =
        crate::script::Scripts::run_in_overlay(shared, call, function, overlay, runtime);
    overlay.computed(reply, proto)
}

/// A script's reply as the coordinator encoded it, for the caller (`None` if it does not
/// decode).
pub fn reply_of(o: Outcome) -> Frame {
    let Outcome::Value(bytes) = o else {
        return Frame::error("ERR unexpected script result");
    };
    let limits = hypercache_resp::frame::DecodeLimits {
        max_bulk_len: usize::MAX,
        max_elements: usize::MAX,
        max_depth: 1024,
    };
    match hypercache_resp::frame::decode(&bytes, &limits) {
        Ok(Some((f, _))) => f,
        _ => Frame::error("ERR malformed script reply"),
    }
}
