//! The production driver of the node machines (`hypercache_cluster::node`): it runs a keyed
//! command's [`KeyRequest`] (synchronously when it needs no message), sends what the machine asks
//! for over the peer links, feeds it the answers, link failures and its deadline, and hands the
//! client its reply; it answers peers' requests with [`node::serve`]; and it runs the node's
//! [`hypercache_cluster::repair::Repair`] machine. Every decision (where a command runs, what counts as an acknowledgement, when to
//! give up, what to repair) is the machine's: the simulator runs the same ones.
//!
//! It also runs the cluster-wide commands (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL).
//!
//! - `keyed`: a keyed command's machine, driven until its reply, then parked (or, when it may
//!   wait at the gate, driven to the end by a task of its own).
//! - `serve`: peers' requests.
//! - `repair`: hint replay, anti-entropy and the catch-up of a starting node.
//! - `broadcast`: the cluster-wide commands.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercache_cluster::msg::{Request, Response};
use hypercache_cluster::node::{
    self, Answer, Call, Env, Finished, Gate, Gather, Gathered, KeyRequest, Machine, Origin, Out,
    Served, Timing,
};
use hypercache_cluster::ring::MemberIdx;
use hypercache_cluster::slot::{key_slot, Slot, SLOTS};
use hypercache_cluster::store::Store;
use hypercache_cluster::version::Version;
use hypercache_cluster::wire::{self, Kind};
use hypercache_cluster::{Ctx, Op, Outcome};

use super::link::{CallError, Outbound};
use super::{Cluster, Levels, View};
use crate::metrics::inc;
use crate::state::{now_ms, Shared};

pub use hypercache_cluster::node::NoReplicas;

/// An operation's result.
pub type Res = Result<Outcome, NoReplicas>;

/// A boxed future of a result.
pub type Later<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A keyed operation's result: available now, or once the network has answered.
pub enum Part {
    /// Done.
    Ready(Res),
    /// In progress.
    Later(Later<Res>),
}

/// The context a node runs operations in right now (its own clock and settings).
pub fn node_ctx(shared: &Shared) -> Ctx {
    let c = shared.config.read();
    let now = now_ms();
    Ctx {
        now,
        lru: (now / 1000) as u32,
        max_len: c.proto_max_bulk_len,
        mode: c.access_mode(),
        rand: (now as u32).wrapping_mul(0x9E37_79B9),
        keep_expired: false,
    }
}

/// The node as its machines see it: a snapshot of the view, the context and the deadlines at
/// one input.
pub struct NodeEnv<'a> {
    shared: &'a Shared,
    cl: &'a Cluster,
    view: &'a View,
    /// The context, read from the clock and settings the first time a machine asks for it.
    ctx: std::cell::Cell<Option<Ctx>>,
    timing: Timing,
}

impl NodeEnv<'_> {
    fn now(&self) -> u64 {
        self.ctx().now
    }
}

impl Env for NodeEnv<'_> {
    fn me(&self) -> MemberIdx {
        self.view.me
    }
    fn prefs(&self, slot: Slot) -> &[MemberIdx] {
        self.view.prefs(slot)
    }
    fn live(&self, m: MemberIdx) -> bool {
        self.view.live(self.cl, m)
    }
    fn synced(&self, slot: Slot) -> bool {
        self.cl.synced(slot)
    }
    fn set_synced(&self, slot: Slot, synced: bool) {
        self.cl.catching.set(slot, !synced);
    }
    fn catching(&self, m: MemberIdx) -> bool {
        m != self.view.me
            && self
                .cl
                .peer(self.view, m)
                .is_some_and(|p| p.catching_up.load(std::sync::atomic::Ordering::Relaxed) != 0)
    }
    fn catching_up(&self) -> usize {
        self.cl.catching.len()
    }
    fn ring_digest(&self) -> u64 {
        self.view.ring_digest
    }
    fn ring_agreed(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let v = self.view;
        let others: Vec<(bool, bool)> = {
            let m = self.cl.membership.lock();
            v.ring()
                .members()
                .iter()
                .filter(|id| **id != self.cl.node_id)
                .map(|id| {
                    let same = self
                        .cl
                        .peer_by_id(id)
                        .is_some_and(|p| p.is_up() && p.ring.load(Relaxed) == v.ring_digest);
                    (m.may_coordinate(id), same)
                })
                .collect()
        };
        let mut since = match self.cl.agreed_since.load(Relaxed) {
            0 => None,
            s => Some(s),
        };
        let agreed = hypercache_cluster::rebalance::ring_agreed(
            others,
            &mut since,
            self.now(),
            self.timing.request_ms,
        );
        self.cl.agreed_since.store(since.unwrap_or(0), Relaxed);
        agreed
    }
    fn room(&self, bytes: u64) -> bool {
        let max = self.shared.config.read().maxmemory;
        let room = hypercache_cluster::repair::fits(max, crate::memory::used(), bytes);
        if !room {
            inc(&self.cl.metrics.dist.repair_skipped_full);
        }
        room
    }
    fn store(&self) -> &Store {
        &self.shared.store
    }
    fn ctx(&self) -> Ctx {
        match self.ctx.get() {
            Some(c) => c,
            None => {
                let c = node_ctx(self.shared);
                self.ctx.set(Some(c));
                c
            }
        }
    }
    fn timing(&self) -> Timing {
        self.timing
    }
    fn gate(&self) -> &Gate {
        &self.cl.gate
    }
    fn settings(&self) -> hypercache_cluster::settings::Settings {
        self.cl.settings.lock().clone()
    }
}

/// The node as its machines see it through `view`, with the configured deadline.
pub fn node_env<'a>(shared: &'a Shared, cl: &'a Cluster, view: &'a View) -> NodeEnv<'a> {
    NodeEnv {
        shared,
        cl,
        view,
        ctx: Default::default(),
        timing: Timing {
            request_ms: shared.config.read().request_timeout_ms,
        },
    }
}

fn timing(lv: &Levels) -> Timing {
    Timing {
        request_ms: lv.timeout.as_millis() as u64,
    }
}

/// Where a machine's answers arrive: (tag, reply body or `None` for a failed link). A gate
/// wake-up comes as [`WAKE`].
pub type Answers = Arc<super::link::Inbox>;

/// The tag of a gate wake-up on a machine's answer channel.
const WAKE: usize = usize::MAX;

/// The tag of a program's result ([`hypercache_cluster::group::Computed`], encoded) on a
/// machine's answer channel.
const COMPUTED: usize = usize::MAX - 1;

fn count_failure(cl: &Cluster, write: bool) {
    inc(if write {
        &cl.metrics.dist.write_quorum_failures
    } else {
        &cl.metrics.dist.read_quorum_failures
    });
}

mod broadcast;
mod keyed;
mod repair;
mod serve;

pub use broadcast::{
    dbsize, flushall, has_other_members, keys, publish_to_peers, put_settings, raises_expiry,
    randomkey, run_missed_flushes, scan,
};
pub use keyed::{run, start, start_group};
pub use repair::{run as repair_task, settings as repair_settings, RepairCmd};
pub use serve::serve_request;
