//! One client connection: the only code that owns a client socket. Reads bytes, parses every
//! complete request in the buffer, runs them in order, and writes all their replies with one
//! write (pipelining), then reads again.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hypercache_resp::{request, Frame, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::exclusive::{Exclusive, SharedGuard};
use crate::session::Session;
use crate::state::{ClientHandle, Shared, Stats};

/// Smallest free space kept in the read buffer before a read.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers larger than this are released after use rather than kept for the next request.
const KEEP_BUFFER: usize = 1024 * 1024;

/// How long a TLS client may take over its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Redis's refusal of a client from another host while protected mode is on (`-DENIED`).
const DENIED: &[u8] = b"-DENIED Redis is running in protected mode because protected \
mode is enabled and no password is set for the default user. \
In this mode connections are only accepted from the loopback interface. \
If you want to connect from external computers to Redis you \
may adopt one of the following solutions: \
1) Just disable protected mode sending the command \
'CONFIG SET protected-mode no' from the loopback interface \
by connecting to Redis from the same host the server is \
running, however MAKE SURE Redis is not publicly accessible \
from internet if you do so. Use CONFIG REWRITE to make this \
change permanent. \
2) Alternatively you can just disable the protected mode by \
editing the Redis configuration file, and setting the protected \
mode option to 'no', and then restarting the server. \
3) If you started the server manually just for testing, restart \
it with the '--protected-mode no' option. \
4) Setup a an authentication password for the default user. \
NOTE: You only need to do one of the above things in order for \
the server to start accepting connections from the outside.\r\n";

thread_local! {
    /// Batches this worker thread has run since it last went idle (`worker_parked`).
    static BATCHES_SINCE_IDLE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Called by the runtime just before a worker thread parks (it has no task left to run).
pub fn worker_parked() {
    BATCHES_SINCE_IDLE.with(|n| n.set(0));
}

/// Whether a connection that has its replies ready should let the worker's other ready tasks
/// run first, and write after them (`yield_now`: the runtime resumes it after its next poll
/// of the sockets, without parking).
///
/// Every write to a client's socket wakes the client's process, and waking a process that
/// sleeps on another core is the most expensive part of a write (an inter-processor
/// interrupt; in a virtual machine, an exit to the hypervisor). Written one after the other
/// as each connection finishes, as a client such as redis-benchmark is served, every write
/// found the client asleep again: 21% of the node's CPU went to those wake-ups on a
/// pipelined EVALSHA benchmark, 2% of redis-server's, which writes every client's replies at
/// the end of its event loop's turn. Deferring the write gives the same grouping.
///
/// It costs a poll of the sockets (one `epoll_wait` with no timeout) per turn, so a worker
/// that woke for one connection writes at once: only the second and later batches since the
/// worker was last idle wait, which happens when more than one client is active.
fn busy_worker() -> bool {
    BATCHES_SINCE_IDLE.with(|n| {
        let v = n.get();
        n.set(v.saturating_add(1));
        v > 0
    })
}

/// Whatever happens, a connection stops counting against `maxclients` when this drops.
struct Counted<'a>(&'a Shared);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0
            .connected
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves a plain-text client (see [`serve_stream`]).
pub async fn serve(shared: Arc<Shared>, socket: TcpStream, shutdown: watch::Receiver<bool>) {
    let _counted = Counted(&shared);
    let _ = socket.set_nodelay(true);
    let (Ok(addr), Ok(laddr)) = (socket.peer_addr(), socket.local_addr()) else {
        return;
    };
    let fd = i64::from(socket.as_raw_fd());
    serve_stream(&shared, socket, addr, laddr, fd, shutdown).await;
}

/// Serves a client of the TLS port: its handshake (with the configuration in force when it
/// arrived), then the same as a plain-text client.
pub async fn serve_tls(shared: Arc<Shared>, socket: TcpStream, shutdown: watch::Receiver<bool>) {
    let _counted = Counted(&shared);
    let _ = socket.set_nodelay(true);
    let (Ok(addr), Ok(laddr)) = (socket.peer_addr(), socket.local_addr()) else {
        return;
    };
    let fd = i64::from(socket.as_raw_fd());
    let Some(acceptor) = shared.tls.acceptor() else {
        return;
    };
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Redis logs these at warning too ("Error accepting a client connection").
            tracing::warn!(node_id = %shared.node_id, component = "server", client = %addr, error = %e, "TLS handshake with a client failed");
            return;
        }
        Err(_) => {
            tracing::warn!(node_id = %shared.node_id, component = "server", client = %addr, "TLS handshake with a client timed out");
            return;
        }
    };
    serve_stream(&shared, stream, addr, laddr, fd, shutdown).await;
}

/// Whether a client at `ip` is local for protected mode: 127.0.0.1 or ::1 exactly, as Redis
/// decides (not the rest of 127.0.0.0/8).
fn is_local(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST)
        }
    }
}

/// Registers the client, serves it until it leaves, is killed, idles out or the node stops, then
/// unregisters it. A client from another host while protected mode is on gets `-DENIED` and is
/// closed instead.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    mut socket: S,
    addr: std::net::SocketAddr,
    laddr: std::net::SocketAddr,
    fd: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let protected = shared.config.read().protected_mode && shared.acl.default_user().nopass;
    if protected && !is_local(addr.ip()) {
        Stats::add(&shared.metrics.server.rejected_connections, 1);
        let _ = socket.write_all(DENIED).await;
        close(&mut socket).await;
        return;
    }
    let id = shared
        .next_client_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = Arc::new(ClientHandle::new(id, addr, laddr, fd));
    shared.clients.lock().insert(id, handle.clone());
    let mut session = Session::new(shared.clone(), handle.clone());
    let reason = run(&mut session, &mut socket, &mut shutdown).await;
    shared.account_client(&handle, 0);
    session.unsubscribe_all();
    session.stop_tracking();
    *handle.mailbox.lock() = None;
    close(&mut socket).await;
    if session.monitor.is_some() {
        shared.stop_monitor(id);
    }
    if session.replica.is_some() {
        shared.repl.detach(id);
    }
    tracing::debug!(
        node_id = %shared.node_id,
        component = "server",
        client_id = id,
        reason,
        "client closed"
    );
    shared.clients.lock().remove(&id);
}

/// Flushes what is buffered and ends the stream (a TLS close_notify), within a bound: a client
/// that reads nothing cannot hold it open.
async fn close<S: AsyncWrite + Unpin>(socket: &mut S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
}

/// Records what the connection holds now ([`Shared::account_client`]): after a read, after a
/// batch ran (its replies not yet written) and once they are written.
fn account(s: &Session, rbuf: &BytesMut) {
    let now = crate::state::CLIENT_BASE_MEMORY + rbuf.capacity() + s.held_memory();
    s.shared.account_client(&s.handle, now);
    // A reply buffer given back (over KEEP_BUFFER) has no capacity: its peak starts again.
    let out = (s.out.capacity(), s.out.len());
    s.handle
        .record_buffers(rbuf.capacity() - rbuf.len(), out.0, out.1, out.0 == 0);
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    socket: &mut S,
    shutdown: &mut watch::Receiver<bool>,
) -> &'static str {
    // The write buffer grows to the size of a typical batch of replies and is kept; the read
    // buffer gets its first 16 KB with the first read.
    let mut rbuf = BytesMut::new();
    let mut req = request::Request::default();
    let mut need = 0usize;
    // On a single node a batch runs with the node's gate held shared, so that a transaction
    // (holding it exclusive) sees no command of another client in between (`exclusive`).
    let shared = s.shared.clone();
    let gate = shared.cluster.is_none().then_some(&shared.exclusive);
    loop {
        if *shutdown.borrow() {
            return "shutdown";
        }
        // Grow towards what a partly received request needs, a bounded step at a time.
        let want = need
            .saturating_sub(rbuf.len())
            .clamp(READ_CHUNK, KEEP_BUFFER);
        if rbuf.capacity() - rbuf.len() < want {
            rbuf.reserve(want);
        }
        // As in Redis, a MONITOR client or a replica is never closed for being idle.
        let idle = (s.timeout > 0 && s.monitor.is_none() && s.replica.is_none())
            .then(|| Duration::from_secs(s.timeout));
        let read = tokio::select! {
            // A kill or shutdown that is already pending wins over input that arrived with it.
            biased;
            _ = shutdown.changed() => return "shutdown",
            _ = s.handle.kill_notify.notified() => return "killed",
            r = socket.read_buf(&mut rbuf) => r,
            line = monitor_line(&mut s.monitor) => {
                // MONITOR output: every line waiting goes out in one write.
                let Some(line) = line else { return "monitor fell too far behind" };
                let rx = s.monitor.as_mut().expect("monitoring");
                s.out.extend_from_slice(&line);
                while let Ok(more) = rx.try_recv() {
                    s.out.extend_from_slice(&more);
                }
                if let Err(why) = write_unless_killed(socket, &s.out, &s.handle).await {
                    return why;
                }
                Stats::add(&s.shared.metrics.server.net_output_bytes, s.out.len() as u64);
                s.out.clear();
                continue;
            }
            ready = replica_ready(&s.replica) => {
                // The replication stream: everything queued goes out in one write.
                if !ready {
                    return "replica dropped by the node";
                }
                if let Some(r) = &s.replica {
                    r.take_into(&mut s.out);
                }
                if let Err(why) = write_unless_killed(socket, &s.out, &s.handle).await {
                    return why;
                }
                Stats::add(&s.shared.metrics.server.net_output_bytes, s.out.len() as u64);
                s.out.clear();
                continue;
            }
            got = next_message(&mut s.subs) => {
                // Pub/Sub messages: every one waiting (up to a bound, to stay fair to this
                // client's own commands) goes out in one write.
                let Some(first) = got else { continue };
                queue_messages(s, Some(first));
                if let Err(why) = write_unless_killed(socket, &s.out, &s.handle).await {
                    return why;
                }
                Stats::add(&s.shared.metrics.server.net_output_bytes, s.out.len() as u64);
                s.out.clear();
                continue;
            }
            _ = sleep_opt(idle) => return "idle timeout",
        };
        // CLIENT KILL from another connection takes effect before this client's next command,
        // even if the kill landed while this read was completing.
        if s.handle.killed.load(std::sync::atomic::Ordering::Relaxed) {
            return "killed";
        }
        match read {
            Ok(0) => return "eof",
            Ok(n) => Stats::add(&s.shared.metrics.server.net_input_bytes, n as u64),
            Err(_) => return "read error",
        }
        account(s, &rbuf);
        if s.handle.killed.load(std::sync::atomic::Ordering::Relaxed) {
            // Evicted for what it just sent (`maxmemory-clients`): none of it runs.
            return "killed";
        }
        s.refresh_config();
        // Messages published before this batch runs go out before its replies, as Redis writes
        // a PUBLISH straight into its subscribers' buffers: a client that unsubscribes never
        // gets a message after the reply that took it out of Pub/Sub mode.
        if s.subs.is_some() {
            queue_messages(s, None);
        }
        s.begin_batch();
        let mut close = false;
        let mut held = None;
        loop {
            let before = rbuf.len();
            match request::parse_into(
                &mut rbuf,
                &s.limits,
                s.parser_authenticated(),
                Some(&mut need),
                &mut req,
            ) {
                Ok(true) => {
                    need = 0;
                    if req.args.is_empty() {
                        continue;
                    }
                    s.request_len = before;
                    if s.must_hear_settings(&req.args) {
                        s.resolve().await;
                        if !crate::cluster::settings::wait_heard(&s.shared).await {
                            s.refuse_unheard();
                            continue;
                        }
                    }
                    // A script after scripts joins their batch; anything else waits for them.
                    if s.must_wait(&req.args)
                        && !(s.is_script_call(&req.args) && s.only_scripts_pending())
                    {
                        s.resolve().await;
                    }
                    if let (Some(g), None) = (gate, &held) {
                        if s.runs_exclusive(&req.args) {
                            // It will wait for the gate exclusive: holding it shared first
                            // would only make every release wake it twice.
                            s.mark_if_busy();
                        } else {
                            held = enter(g, s).await;
                        }
                    }
                    s.run(&mut req.args);
                    if s.exec_ready.is_some() {
                        held = None;
                        s.run_transaction().await;
                    }
                    if s.script_ready.is_some() {
                        held = None;
                        s.queue_script();
                    }
                    if s.sync_ready.is_some() {
                        // The snapshot is taken with the gate held exclusive.
                        held = None;
                        s.start_replica().await;
                    }
                    if s.save_ready.is_some() {
                        held = None;
                        s.run_save().await;
                    }
                    if s.close_after {
                        close = true;
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    Stats::add(&s.shared.metrics.server.protocol_errors, 1);
                    // Per client, as Redis (its `verbose` level): INFO's protocol_errors counts them.
                    tracing::debug!(node_id = %s.shared.node_id, component = "server", client_id = s.handle.id, error = %e, "protocol error, closing client");
                    if let Some(text) = e.reply_text() {
                        Frame::Error(text.into()).encode(Protocol::Resp2, &mut s.out);
                    }
                    close = true;
                    break;
                }
            }
        }
        drop(held);
        s.resolve().await;
        s.end_batch();
        account(s, &rbuf);
        if !s.out.is_empty() {
            if busy_worker() {
                // Others' replies go out in the same turn: see `busy_worker`.
                tokio::task::yield_now().await;
            }
            if let Err(why) = write_unless_killed(socket, &s.out, &s.handle).await {
                return why;
            }
            Stats::add(
                &s.shared.metrics.server.net_output_bytes,
                s.out.len() as u64,
            );
            s.out.clear();
            if s.out.capacity() > KEEP_BUFFER {
                s.out = BytesMut::new();
            }
        }
        if close {
            return "closed by command or protocol error";
        }
        if rbuf.is_empty() && rbuf.capacity() > KEEP_BUFFER {
            rbuf = BytesMut::new();
        }
        account(s, &rbuf);
        if s.handle.killed.load(std::sync::atomic::Ordering::Relaxed) {
            return "killed";
        }
    }
}

/// Writes `out`, unless the client is killed first: a client that stops reading must not hold
/// its connection open against CLIENT KILL or its output buffer limit.
async fn write_unless_killed<S: AsyncWrite + Unpin>(
    socket: &mut S,
    out: &[u8],
    handle: &ClientHandle,
) -> Result<(), &'static str> {
    // The write first: when it completes at once (the usual case) the kill's waiter is never
    // registered (that would take Notify's lock twice per batch).
    tokio::select! {
        biased;
        r = write_out(socket, out) => r.map_err(|_| "write error"),
        _ = handle.kill_notify.notified() => Err("killed"),
    }
}

/// Writes `out` and flushes it (a no-op on TCP; TLS may hold the last record otherwise).
async fn write_out<S: AsyncWrite + Unpin>(socket: &mut S, out: &[u8]) -> std::io::Result<()> {
    socket.write_all(out).await?;
    socket.flush().await
}

/// Holds `gate` shared for a batch. While a script holds it past `busy-reply-threshold`, returns
/// `None` with the session marked busy instead: its command answers `-BUSY` unless it may run
/// during a busy script (SCRIPT KILL, SHUTDOWN NOSAVE, ...), which then runs without the gate.
async fn enter<'a>(gate: &'a Exclusive, s: &mut Session) -> Option<SharedGuard<'a>> {
    if let Some(g) = gate.try_shared() {
        return Some(g);
    }
    loop {
        let threshold = s.shared.config.read().busy_reply_threshold;
        let wait = match s.shared.scripts.running.busy_in(threshold) {
            Some(d) if d.is_zero() => {
                s.busy = true;
                return None;
            }
            Some(d) => d.min(Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        tokio::select! {
            g = gate.shared() => return Some(g),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The next `MONITOR` line (never, for a client not monitoring; `None` once the node dropped it).
async fn monitor_line(
    rx: &mut Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
) -> Option<bytes::Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Replication stream bytes to write (never, for a client that is not a replica; false once the
/// node dropped it).
async fn replica_ready(replica: &Option<crate::repl::ReplicaConn>) -> bool {
    match replica {
        Some(r) => r.ready().await,
        None => std::future::pending().await,
    }
}

/// The next Pub/Sub message for this connection (never, for one without subscriptions).
/// Encodes the Pub/Sub messages waiting for this connection into its output, `first` (already
/// received) and then every one queued, up to 1024 (to stay fair to its own commands).
fn queue_messages(s: &mut Session, first: Option<crate::pubsub::Message>) {
    let mut bytes = 0;
    let mut n = 0;
    let mut next = first.or_else(|| s.subs.as_mut().and_then(|x| x.rx.try_recv().ok()));
    while let Some(m) = next {
        bytes += m.size();
        let subscribed = s.subscribed();
        encode_message(s.proto, subscribed, m, &mut s.out);
        n += 1;
        next = if n < 1024 {
            s.subs.as_mut().and_then(|x| x.rx.try_recv().ok())
        } else {
            None
        };
    }
    if let Some(x) = &s.subs {
        x.mailbox.written(bytes);
    }
}

async fn next_message(
    subs: &mut Option<Box<crate::pubsub::Subscriptions>>,
) -> Option<crate::pubsub::Message> {
    match subs {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A message as Redis writes it: `message`/`pmessage`, a push in RESP3, an array in RESP2. A
/// tracking invalidation is a push `invalidate [keys]` (null: all keys) in RESP3; in RESP2 only a
/// connection in Pub/Sub mode that others redirect to gets it, as a message on
/// `__redis__:invalidate`; `tracking-redir-broken` goes to RESP3 connections only.
pub fn encode_message(
    proto: Protocol,
    subscribed: bool,
    m: crate::pubsub::Message,
    out: &mut BytesMut,
) {
    use crate::pubsub::Invalidation;
    if let Some((what, redirected)) = m.invalidation {
        let keys = |what: Invalidation| match what {
            Invalidation::Keys(k) => Frame::Array(k.into_iter().map(Frame::Bulk).collect()),
            _ => Frame::Null,
        };
        let f = match (&what, proto) {
            (Invalidation::RedirBroken(id), Protocol::Resp3) => Frame::Push(vec![
                Frame::bulk(b"tracking-redir-broken"),
                Frame::Integer(*id as i64),
            ]),
            (Invalidation::RedirBroken(_), _) => return,
            (_, Protocol::Resp3) => Frame::Push(vec![Frame::bulk(b"invalidate"), keys(what)]),
            _ if redirected && subscribed => Frame::Array(vec![
                Frame::bulk(b"message"),
                Frame::bulk(b"__redis__:invalidate"),
                keys(what),
            ]),
            _ => return,
        };
        f.encode(proto, out);
        return;
    }
    let mut items = Vec::with_capacity(4);
    match m.pattern {
        Some(p) => {
            items.push(Frame::bulk(b"pmessage"));
            items.push(Frame::Bulk(p));
        }
        None => items.push(Frame::bulk(b"message")),
    }
    items.push(Frame::Bulk(m.channel));
    items.push(Frame::Bulk(m.payload));
    let f = if proto == Protocol::Resp3 {
        Frame::Push(items)
    } else {
        Frame::Array(items)
    };
    f.encode(proto, out);
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Refuses a connection over `maxclients` with Redis's error, then closes it.
pub async fn refuse(mut socket: TcpStream) {
    let _ = socket
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = socket.shutdown().await;
}
