//! # hypercache
//!
//! The server binary's IO edge: the tokio runtime, the client listener and connections, the
//! configuration, logging, and the glue between `hypercache-resp` (bytes and commands) and
//! `hypercache-cluster` (the store and its semantics).
//!
//! ## Layout
//! - [`acl`]: ACL users: passwords, and the commands, keys and channels each may use.
//! - [`config`]: settings from defaults, file, environment and flags.
//! - [`notify`]: keyspace notifications: publishing the events of writes, expiries, evictions.
//! - [`server`]: accept loop, connection limit, background expiry, signals, shutdown.
//! - [`conn`]: one client socket: read, parse, run, write once per read.
//! - [`session`]: per-connection state and command dispatch (arity, auth, slow log), and
//!   transactions (`MULTI` ... `EXEC`, `WATCH`).
//! - [`exclusive`]: the gate that lets `EXEC` and scripts run with no other command in between.
//! - [`tracking`]: client-side caching (`CLIENT TRACKING`): who may cache which key, and the
//!   invalidations.
//! - [`script`]: Lua scripting (`EVAL`, `EVALSHA`, `SCRIPT`).
//! - `cmd`: the command handlers, grouped by family.
//! - [`state`]: what all connections share (store, live config, clients, counters).
//! - [`cluster`]: peers, links, the slot ring as this node sees it, and the coordinator.
//! - [`alloc`]: the counting allocator behind `used_memory`.
//! - [`memory`]: staying inside `maxmemory` (eviction) and memory figures.
//! - [`pubsub`]: channels, patterns and the delivery of published messages.
//! - [`tls`]: TLS on the client port and between nodes (rustls).

pub mod acl;
pub mod alloc;
pub mod cluster;
pub(crate) mod cmd;
pub mod config;
pub mod conn;
pub mod dbs;
pub mod exclusive;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod pubsub;
pub mod rdb;
pub mod repl;
pub mod replica;
pub mod script;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tracking;

/// The Redis version whose behaviour HyperCache reproduces; reported as `redis_version` by INFO and
/// `version` by HELLO, because clients gate features on it.
pub const REDIS_VERSION: &str = "7.0.15";

/// The process allocator: counts bytes so INFO can report `used_memory` exactly.
#[global_allocator]
pub static ALLOC: alloc::Counting = alloc::Counting::new();
