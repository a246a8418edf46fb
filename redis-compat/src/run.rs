//! Running one case against one server: blocking `std::net`, every read bounded by a deadline.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hypercache_resp::frame::{decode, DecodeLimits};

use crate::corpus::{encode_command, Action, Case, Check, Step};
use crate::escape;

/// How long the runner waits. A server that does not answer produces a [`Failure::Timeout`] instead
/// of a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to the server. Default 3 s.
    pub connect: Duration,
    /// Each reply, from the moment the runner starts waiting for it. Default 3 s.
    pub reply: Duration,
    /// `!closed`: how long to wait for end of stream. Default 1 s.
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            reply: Duration::from_secs(3),
            close: Duration::from_secs(1),
        }
    }
}

/// One reply as it is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The reply's exact bytes; for [`Check::Sorted`], after sorting every aggregate's elements
    /// (map entries as key-value pairs) by their encoding, recursively.
    Bytes(Vec<u8>),
    /// [`Check::Type`]: only the reply's type byte.
    Type(u8),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Bytes(b) => f.write_str(&escape(b)),
            Reply::Type(t) => write!(f, "<type {}>", escape(&[*t])),
        }
    }
}

/// Why a step could not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The case could not start: connecting or the `FLUSHALL` before it failed.
    Setup(String),
    /// No complete reply within [`Timeouts::reply`]; holds the bytes of the partial reply, if any.
    Timeout(Vec<u8>),
    /// The server closed (or reset) the connection; holds the bytes of the partial reply, if any.
    ConnectionClosed(Vec<u8>),
    /// The server sent bytes that are not RESP; holds everything unread.
    Malformed(Vec<u8>),
    /// Any other socket error.
    Io(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partial = |f: &mut fmt::Formatter<'_>, b: &[u8]| {
            if b.is_empty() {
                Ok(())
            } else {
                write!(f, " after partial reply {}", escape(b))
            }
        };
        match self {
            Failure::Setup(m) => write!(f, "case could not start: {m}"),
            Failure::Timeout(b) => {
                f.write_str("TIMEOUT waiting for a reply")?;
                partial(f, b)
            }
            Failure::ConnectionClosed(b) => {
                f.write_str("connection closed by the server")?;
                partial(f, b)
            }
            Failure::Malformed(b) => write!(f, "malformed reply {}", escape(b)),
            Failure::Io(m) => write!(f, "socket error: {m}"),
        }
    }
}

/// What one server did for one step. Two servers agree on a step when these are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A command or `!raw` step's replies, in order.
    Replies(Vec<Reply>),
    /// A `!sleep` step.
    Slept,
    /// `!closed`: the server closed the connection with nothing left unread.
    Closed,
    /// `!closed`: the connection was still open after [`Timeouts::close`], or the server sent
    /// bytes nobody asked for (held here).
    NotClosed {
        /// Bytes received while waiting for end of stream.
        unread: Vec<u8>,
    },
    /// The step failed; `replies` holds the replies of a `!raw` step read before the failure.
    /// The case stops here.
    Failed {
        /// Replies read before the failure.
        replies: Vec<Reply>,
        /// What went wrong.
        failure: Failure,
    },
    /// Not run, because an earlier step of the case failed.
    NotRun,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replies = |f: &mut fmt::Formatter<'_>, r: &[Reply]| {
            for (i, reply) in r.iter().enumerate() {
                if i > 0 {
                    f.write_str(" | ")?;
                }
                write!(f, "{reply}")?;
            }
            Ok(())
        };
        match self {
            Observed::Replies(r) if r.is_empty() => f.write_str("(no reply expected)"),
            Observed::Replies(r) => replies(f, r),
            Observed::Slept => f.write_str("(slept)"),
            Observed::Closed => f.write_str("(connection closed)"),
            Observed::NotClosed { unread } if unread.is_empty() => {
                f.write_str("(connection still open)")
            }
            Observed::NotClosed { unread } => {
                write!(
                    f,
                    "(connection not closed; unexpected bytes {})",
                    escape(unread)
                )
            }
            Observed::Failed {
                replies: r,
                failure,
            } if r.is_empty() => write!(f, "!!! {failure}"),
            Observed::Failed {
                replies: r,
                failure,
            } => {
                replies(f, r)?;
                write!(f, " | !!! {failure}")
            }
            Observed::NotRun => f.write_str("(not run: an earlier step failed)"),
        }
    }
}

/// Runs `case` against the server at `addr` with the default [`Timeouts`]: `FLUSHALL` on one
/// connection, then the steps on a fresh one. Returns one [`Observed`] per step, in order. Never
/// panics on I/O: a server that misbehaves shows up in the result.
pub fn run_case(addr: SocketAddr, case: &Case) -> Vec<Observed> {
    run_case_with(addr, case, &Timeouts::default())
}

/// [`run_case`] with explicit timeouts.
pub fn run_case_with(addr: SocketAddr, case: &Case, timeouts: &Timeouts) -> Vec<Observed> {
    let mut out = Vec::with_capacity(case.steps.len());
    let mut conn = match setup(addr, timeouts) {
        Ok(conn) => conn,
        Err(message) => {
            out.push(Observed::Failed {
                replies: Vec::new(),
                failure: Failure::Setup(message),
            });
            out.resize(case.steps.len(), Observed::NotRun);
            return out;
        }
    };
    let steps = &case.steps;
    let mut i = 0;
    while i < steps.len() {
        let batch_end = if case.pipeline {
            steps[i..]
                .iter()
                .position(|s| matches!(s.action, Action::Sleep(_) | Action::Closed))
                .map_or(steps.len(), |n| i + n)
        } else {
            i
        };
        if batch_end > i {
            let batch = &steps[i..batch_end];
            let payload: Vec<u8> = batch.iter().flat_map(|s| s.payload()).collect();
            let sent = conn.send(&payload);
            for step in batch {
                let observed = match &sent {
                    Ok(()) => read_step_replies(&mut conn, step, timeouts),
                    Err(failure) => Observed::Failed {
                        replies: Vec::new(),
                        failure: failure.clone(),
                    },
                };
                let failed = matches!(observed, Observed::Failed { .. });
                out.push(observed);
                if failed {
                    break;
                }
            }
            i = out.len();
        } else {
            out.push(run_step(&mut conn, &steps[i], timeouts));
            i += 1;
        }
        if matches!(out.last(), Some(Observed::Failed { .. })) {
            break;
        }
    }
    out.resize(steps.len(), Observed::NotRun);
    out
}

fn setup(addr: SocketAddr, timeouts: &Timeouts) -> Result<Conn, String> {
    let mut flush = Conn::connect(addr, timeouts).map_err(|e| format!("connect to {addr}: {e}"))?;
    flush
        .send(&encode_command(&[b"FLUSHALL".to_vec()]))
        .and_then(|()| flush.read_reply(timeouts.reply))
        .map_err(|f| format!("FLUSHALL: {f}"))
        .and_then(|reply| match &reply[..] {
            b"+OK\r\n" => Ok(()),
            other => Err(format!("FLUSHALL answered {}", escape(other))),
        })?;
    drop(flush);
    Conn::connect(addr, timeouts).map_err(|e| format!("connect to {addr}: {e}"))
}

fn run_step(conn: &mut Conn, step: &Step, timeouts: &Timeouts) -> Observed {
    match &step.action {
        Action::Sleep(d) => {
            std::thread::sleep(*d);
            Observed::Slept
        }
        Action::Closed => conn.wait_closed(timeouts.close),
        Action::Command { .. } | Action::Raw { .. } => match conn.send(&step.payload()) {
            Ok(()) => read_step_replies(conn, step, timeouts),
            Err(failure) => Observed::Failed {
                replies: Vec::new(),
                failure,
            },
        },
    }
}

/// Reads the replies a command or `!raw` step expects (its bytes already sent).
fn read_step_replies(conn: &mut Conn, step: &Step, timeouts: &Timeouts) -> Observed {
    let (count, check) = match &step.action {
        Action::Command { check, .. } => (1, check.clone()),
        Action::Raw { replies, .. } => (*replies, Check::Exact),
        Action::Sleep(_) | Action::Closed => return Observed::Replies(Vec::new()),
    };
    let mut replies = Vec::with_capacity(count);
    for _ in 0..count {
        match conn.read_reply(timeouts.reply) {
            Ok(raw) => replies.push(match check {
                Check::Exact => Reply::Bytes(raw),
                Check::Sorted => Reply::Bytes(sort_aggregates(&raw)),
                Check::Type => Reply::Type(raw[0]),
                Check::Estimate(ref field) => Reply::Bytes(mask_estimates(&raw, field)),
            }),
            Err(failure) => return Observed::Failed { replies, failure },
        }
    }
    Observed::Replies(replies)
}

/// Replaces the digits after each `field=` in a bulk or verbatim string reply with `#` (and
/// rewrites the length). Other replies are returned unchanged.
pub fn mask_estimates(reply: &[u8], field: &[u8]) -> Vec<u8> {
    let Some(&tag @ (b'$' | b'=')) = reply.first() else {
        return reply.to_vec();
    };
    let Some(header_len) = reply.windows(2).position(|w| w == b"\r\n").map(|p| p + 2) else {
        return reply.to_vec();
    };
    let Some(body) = reply[header_len..].strip_suffix(b"\r\n") else {
        return reply.to_vec();
    };
    let mut key = field.to_vec();
    key.push(b'=');
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(&key) {
            out.extend_from_slice(&key);
            i += key.len();
            let digits = body[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                out.push(b'#');
                i += digits;
            }
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    let mut masked = format!("{}{}\r\n", tag as char, out.len()).into_bytes();
    masked.extend_from_slice(&out);
    masked.extend_from_slice(b"\r\n");
    masked
}

/// Sorts the elements of every aggregate in `reply` (one complete RESP value) by their encoding,
/// recursively; map entries are sorted as key-value pairs. Anything that does not parse is
/// returned unchanged.
pub fn sort_aggregates(reply: &[u8]) -> Vec<u8> {
    try_sort(reply).unwrap_or_else(|| reply.to_vec())
}

fn try_sort(reply: &[u8]) -> Option<Vec<u8>> {
    let tag = *reply.first()?;
    let per_item = match tag {
        b'*' | b'~' | b'>' => 1,
        b'%' => 2,
        _ => return Some(reply.to_vec()),
    };
    let header_len = reply.windows(2).position(|w| w == b"\r\n")? + 2;
    let n: i64 = std::str::from_utf8(&reply[1..header_len - 2])
        .ok()?
        .parse()
        .ok()?;
    let mut pos = header_len;
    let mut items = Vec::new();
    for _ in 0..n.max(0) {
        let mut item = Vec::new();
        for _ in 0..per_item {
            let (_, used) = decode(&reply[pos..], &DecodeLimits::default()).ok()??;
            item.extend(try_sort(&reply[pos..pos + used])?);
            pos += used;
        }
        items.push(item);
    }
    items.sort();
    let mut out = reply[..header_len].to_vec();
    items.iter().for_each(|i| out.extend_from_slice(i));
    Some(out)
}

/// One connection with its read buffer.
struct Conn {
    stream: TcpStream,
    /// Bytes received and not yet consumed as a reply.
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr, timeouts: &Timeouts) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeouts.connect)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeouts.reply))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(bytes)
            .map_err(|e| io_failure(&e, Vec::new()))
    }

    /// Reads one complete reply and returns its exact bytes.
    fn read_reply(&mut self, timeout: Duration) -> Result<Vec<u8>, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            match decode(&self.buf, &DecodeLimits::default()) {
                Ok(Some((_, used))) => return Ok(self.buf.drain(..used).collect()),
                Ok(None) => {}
                Err(_) => return Err(Failure::Malformed(std::mem::take(&mut self.buf))),
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => return Err(Failure::ConnectionClosed(std::mem::take(&mut self.buf))),
                Err(e) => return Err(io_failure(&e, std::mem::take(&mut self.buf))),
            }
        }
    }

    /// Waits up to `timeout` for end of stream.
    fn wait_closed(&mut self, timeout: Duration) -> Observed {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => return Observed::Closed,
                Err(e) if is_reset(&e) && self.buf.is_empty() => return Observed::Closed,
                Ok(false) | Err(_) => {
                    return Observed::NotClosed {
                        unread: std::mem::take(&mut self.buf),
                    }
                }
            }
        }
    }

    /// One read into the buffer before `deadline`: `Ok(true)` if bytes arrived, `Ok(false)` at end
    /// of stream, `Err(TimedOut)` past the deadline.
    fn fill(&mut self, deadline: Instant) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => {
                    return Err(io::ErrorKind::TimedOut.into())
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn io_failure(e: &io::Error, partial: Vec<u8>) -> Failure {
    if is_reset(e) {
        Failure::ConnectionClosed(partial)
    } else if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        Failure::Timeout(partial)
    } else {
        Failure::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_is_recursive_and_keeps_scalars() {
        assert_eq!(sort_aggregates(b"+OK\r\n"), b"+OK\r\n");
        assert_eq!(sort_aggregates(b"*-1\r\n"), b"*-1\r\n");
        assert_eq!(
            sort_aggregates(b"*3\r\n$1\r\nb\r\n*2\r\n:2\r\n:1\r\n$1\r\na\r\n"),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n*2\r\n:1\r\n:2\r\n"
        );
        // Maps sort by entry, keeping each key with its value.
        assert_eq!(
            sort_aggregates(b"%2\r\n+z\r\n:1\r\n+a\r\n:2\r\n"),
            b"%2\r\n+a\r\n:2\r\n+z\r\n:1\r\n"
        );
        // A SCAN reply: cursor then keys.
        assert_eq!(
            sort_aggregates(b"*2\r\n$1\r\n0\r\n*2\r\n$2\r\nk2\r\n$2\r\nk1\r\n"),
            b"*2\r\n$1\r\n0\r\n*2\r\n$2\r\nk1\r\n$2\r\nk2\r\n"
        );
        // Not RESP: unchanged.
        assert_eq!(sort_aggregates(b"*2\r\n?x\r\n"), b"*2\r\n?x\r\n");
    }

    #[test]
    fn estimates_are_masked_and_the_rest_compared() {
        let redis =
            b"$61\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=99950\r\nx_avg_ttl=7\r\n\r\n";
        let ours = b"$58\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\nx_avg_ttl=12\r\n\r\n";
        let masked = mask_estimates(redis, b"avg_ttl");
        assert_eq!(
            masked,
            b"$57\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=#\r\nx_avg_ttl=#\r\n\r\n"
        );
        assert_eq!(masked, mask_estimates(ours, b"avg_ttl"));
        // Everything else still counts.
        let other = b"$58\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\nx_avg_ttl=12\r\n\r\n";
        assert_ne!(masked, mask_estimates(other, b"avg_ttl"));
        // Not a bulk string: unchanged.
        assert_eq!(mask_estimates(b":5\r\n", b"avg_ttl"), b":5\r\n");
        assert_eq!(mask_estimates(b"$5\r\nab", b"avg_ttl"), b"$5\r\nab");
    }
}
