//! # hypercache-resp
//!
//! The Redis side of HyperCache's wire: bytes in, typed requests out; replies in, bytes out.
//! Pure code: no sockets, no clocks, no tasks. The server edge (`src/`) owns the sockets.
//!
//! ## Layout
//! - [`request`]: the server-side request parser. Two phases (a cheap [`request::check`] that allocates
//!   nothing, then [`request::parse`]), multibulk and inline commands, every limit Redis has, and
//!   Redis's exact `Protocol error` texts.
//! - [`frame`]: a general RESP2/RESP3 [`Frame`] with a limit-checked decoder and an encoder; replies are
//!   frames, and tests and the differential runner decode what servers send.
//! - [`args`]: splitting a line the way `redis-cli` and Redis's inline protocol do (`sdssplitargs`).
//! - [`errors`]: every Redis-facing error text, in one place.
//! - [`table`]: the command table (name, arity, flags, key positions, docs) behind arity checks and
//!   `COMMAND`.
//! - [`num`]: Redis's number parsing and formatting rules (`string2ll`, `%.17g`).
//!
//! ## Promises
//! - Nothing in this crate panics on any input; malformed input is an error value.
//! - Parsing is bounded by [`Limits`]: no input makes it allocate more than the limits allow.

pub mod args;
pub mod errors;
pub mod frame;
pub mod num;
pub mod request;
pub mod table;

pub use frame::{Frame, Protocol};
pub use request::{Limits, ProtocolError, Request};
