//! One client connection: the only code that owns a client socket. Reads bytes, parses every
//! complete request in the buffer, runs them in order, and writes all their replies with one
//! write (pipelining), then reads again.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hypercache_resp::{request, Frame, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::exclusive::{Exclusive, SharedGuard};
use crate::session::Session;
use crate::state::{ClientHandle, Shared, Stats};

/// Smallest free space kept in the read buffer before a read.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers larger than this are released after use rather than kept for the next request.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Registers the client, serves it until it leaves, is killed, idles out or the node stops, then
/// unregisters it.
pub async fn serve(
    shared: Arc<Shared>,
    mut socket: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    // Whatever happens below, the connection stops counting against maxclients when this ends.
    struct Counted<'a>(&'a Shared);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0
                .connected
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _counted = Counted(&shared);
    let (Ok(addr), Ok(laddr)) = (socket.peer_addr(), socket.local_addr()) else {
        return;
    };
    let id = shared
        .next_client_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = Arc::new(ClientHandle::new(
        id,
        addr,
        laddr,
        i64::from(socket.as_raw_fd()),
    ));
    shared.clients.lock().insert(id, handle.clone());
    let mut session = Session::new(shared.clone(), handle.clone());
    let reason = run(&mut session, &mut socket, &mut shutdown).await;
    if session.monitor.is_some() {
        shared.stop_monitor(id);
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

async fn run(
    s: &mut Session,
    socket: &mut TcpStream,
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
        // As in Redis, a MONITOR client is never closed for being idle.
        let idle = (s.timeout > 0 && s.monitor.is_none()).then(|| Duration::from_secs(s.timeout));
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
                if socket.write_all(&s.out).await.is_err() {
                    return "write error";
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
        s.refresh_config();
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
                    s.run(&req.args);
                    if s.exec_ready.is_some() {
                        held = None;
                        s.run_transaction().await;
                    }
                    if s.script_ready.is_some() {
                        held = None;
                        s.queue_script();
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
        if !s.out.is_empty() {
            if socket.write_all(&s.out).await.is_err() {
                return "write error";
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
        if s.handle.killed.load(std::sync::atomic::Ordering::Relaxed) {
            return "killed";
        }
    }
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
