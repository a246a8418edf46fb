//! # hypercache-cluster
//!
//! The data and the distributed logic of HyperCache, as pure code: no sockets, no tasks, no clock
//! reads, no global RNG. Time comes in as an argument, randomness as an injected RNG.
//!
//! ## Layout
//! - [`slot`]: CRC16 key slots with hash tags (Redis Cluster's function).
//! - [`ring`]: slot -> preference list of N members (balanced, stable, minimal movement).
//! - [`version`]: hybrid-logical-clock versions with origin tie-break (last write wins).
//! - [`bits`]: the bitmap commands' arithmetic (SETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD).
//! - [`entry`]: one stored value and its bookkeeping.
//! - [`op`]: the semantics of every key command as a pure function of the current entry.
//! - [`store`]: per-slot maps with counts and digests, multi-key operations, SCAN, expiry cycle.
//! - [`evict`]: `maxmemory` policies and the sampled eviction pool.
//! - [`lcs`]: LCS, the longest common subsequence of two strings, as Redis computes it.
//! - [`glob`]: Redis's glob matcher (KEYS, SCAN MATCH).
//! - [`thin`]: a byte buffer behind an 8-byte pointer (entries' storage).
//! - [`float`]: INCRBYFLOAT's long-double arithmetic.
//! - [`coord`]: the coordinator's decisions: where an operation runs, quorum tallies, newest
//!   state and stale replicas.
//! - [`member`]: SWIM membership (foca), the member registry and the ring set with its epoch.
//! - [`msg`]: inter-node requests and replies, replicated key states, consistency levels.
//! - [`notify`]: keyspace notifications: the events a write raises, Redis's class flags.
//! - [`node`]: the node machines (keyed requests, the start-up transfer, serving peers), run by
//!   both the production driver and the simulator.
//! - [`rebalance`]: the planner: slot transfers between old and new preference lists.
//! - [`settings`]: the cluster-wide settings document (ACL users), last write wins.
//! - [`repair`]: hinted handoff, Merkle anti-entropy and the catch-up of a starting node, as one
//!   machine both drivers run.
//! - [`wire`]: the inter-node protocol's framing, handshake and message bodies.
//! - `sim` (feature `sim`, and tests): a deterministic network simulator.
//! - `simnode` (feature `sim`, and tests): a simulated node hosting the [`node`] machines, and
//!   the scenario and randomized tests.
//!
//! ## Promises
//! - An expired key is never visible, whether or not it has been reclaimed yet.
//! - Per-slot digests always equal the XOR of `hash(key, version)` over the slot's entries.

pub mod bits;
pub mod coord;
pub mod db;
pub mod entry;
pub mod evict;
pub mod float;
pub mod glob;
pub mod group;
#[cfg(test)]
mod group_sim;
pub mod lcs;
pub mod member;
#[cfg(test)]
mod member_sim;
pub mod msg;
pub mod node;
pub mod notify;
pub mod op;
pub mod rebalance;
#[cfg(test)]
mod rebalance_sim;
pub mod repair;
#[cfg(test)]
mod repair_sim;
pub mod ring;
pub mod settings;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(any(test, feature = "sim"))]
pub mod simnode;
pub mod slot;
pub mod store;
pub mod thin;
pub mod version;
pub mod wire;

pub use op::{Ctx, Op, OpError, Outcome};
pub use store::{Store, StoreConfig};
