//! Links between nodes over TCP, carrying [`hypercache_cluster::wire`] frames.
//!
//! Each node dials every peer once (the *outbound* link, which carries this node's requests and
//! their replies) and accepts the peers' links on its cluster port (the *inbound* links, which
//! carry their requests). So each pair of nodes shares two connections, each used in one
//! direction of request.
//!
//! - **Handshake:** the dialer sends `Hello{cluster, node_id, protocol}` and the acceptor answers
//!   with its own; either side closes the link if the cluster name or protocol differ, or if the
//!   peer's id gives the same version origin as its own ([`LinkError::OriginCollision`]).
//! - **Multiplexing:** requests carry ids; replies are matched by id, in any order.
//! - **Coalescing:** senders append frames to the link's buffer; one writer task writes
//!   everything queued with one `write` call.
//! - **Failure:** a malformed or oversized frame closes the link with a logged error. A closed
//!   outbound link fails its in-flight requests at once and is redialed with backoff (50 ms
//!   doubling to 1 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hypercache_cluster::wire::{self, Hello, Kind, WireLimits};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use hypercache_cluster::version::origin_of;

use super::Cluster;
use crate::metrics::inc;
use crate::state::Shared;

/// How long a dial or a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes waiting to be written to one peer before new requests to it fail (a value up to
/// `proto-max-bulk-len` still goes out: the check is before queueing).
const MAX_QUEUED: usize = 64 << 20;
/// How often an outbound link pings its peer.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a ping may go unanswered before the link is closed and the peer counted down.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest redial delay.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// A link's read side: a TCP read half, or one half of a TLS stream (`tls-cluster`).
type ReadSide = Box<dyn AsyncRead + Send + Unpin>;
/// A link's write side.
type WriteSide = Box<dyn AsyncWrite + Send + Unpin>;

/// A link's connection once its TLS handshake (with `tls-cluster`) is done.
enum PeerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl PeerStream {
    /// The two sides, each used by one task.
    fn split(self) -> (ReadSide, WriteSide) {
        match self {
            PeerStream::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            PeerStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// Bytes over the links with one peer (`dist.transport.bytes_in`/`bytes_out`), counted once per
/// read or write call, not per frame.
#[derive(Debug, Default)]
pub struct Traffic {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Traffic {
    /// Bytes written (`out`) or read.
    pub fn get(&self, out: bool) -> u64 {
        if out { &self.bytes_out } else { &self.bytes_in }.load(Ordering::Relaxed)
    }
}

/// A link's send side: frames queue here and one writer task writes them out together. Every
/// message goes out with this node's current ring epoch in its envelope.
#[derive(Default)]
pub struct Outbound {
    buf: Mutex<BytesMut>,
    ready: Notify,
    closed: AtomicBool,
    epoch: Arc<AtomicU64>,
    traffic: Arc<Traffic>,
}

impl Outbound {
    /// A send side stamping messages with the epoch `epoch` holds at the time, counting what
    /// it writes in `traffic`.
    pub fn new(epoch: Arc<AtomicU64>, traffic: Arc<Traffic>) -> Outbound {
        Outbound {
            epoch,
            traffic,
            ..Outbound::default()
        }
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.buf.lock().len()
    }

    /// Queues one frame.
    pub fn push(&self, kind: Kind, id: u64, body: &[u8]) {
        self.push_traced(kind, id, body, None)
    }

    /// Queues one frame whose envelope carries `trace` (the receiver's spans join that trace).
    pub fn push_traced(
        &self,
        kind: Kind,
        id: u64,
        body: &[u8],
        trace: Option<&wire::TraceContext>,
    ) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        wire::encode_stamped_traced(kind, id, epoch, trace, body, &mut self.buf.lock());
        self.ready.notify_one();
    }

    /// Queues one frame carrying `msg` (serialized straight into the buffer when small).
    pub fn push_msg<T: serde::Serialize>(&self, kind: Kind, id: u64, msg: &T) {
        let env = wire::Envelope {
            epoch: self.epoch.load(Ordering::Relaxed),
            trace: None,
        };
        wire::encode_msg_in(kind, id, &env, msg, &mut self.buf.lock());
        self.ready.notify_one();
    }

    /// Stops the writer.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Writes queued frames until the link fails or is closed; returns why it ended.
    async fn write_loop(&self, w: WriteSide) -> LinkEnd {
        match self.write_all(w).await {
            Ok(()) => LinkEnd::Closed,
            Err(e) => LinkEnd::Write(e),
        }
    }

    async fn write_all(&self, mut w: WriteSide) -> std::io::Result<()> {
        loop {
            // Let every task that is ready run first: under load they queue more frames, and all of
            // them go out in the one write below (woken at once, this would write one frame per
            // syscall and per TCP segment).
            tokio::task::yield_now().await;
            let chunk = {
                let mut b = self.buf.lock();
                (!b.is_empty()).then(|| b.split())
            };
            match chunk {
                Some(c) => {
                    w.write_all(&c).await?;
                    // A no-op on TCP; TLS may otherwise keep the last record back.
                    w.flush().await?;
                    self.traffic
                        .bytes_out
                        .fetch_add(c.len() as u64, Ordering::Relaxed);
                }
                None if self.closed.load(Ordering::Relaxed) => return Ok(()),
                None => self.ready.notified().await,
            }
        }
    }
}

/// Why a request to a peer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The link is not connected.
    #[error("link down")]
    Down,
    /// The link closed before the reply came.
    #[error("link closed")]
    Disconnected,
    /// No reply within the deadline.
    #[error("timed out")]
    Timeout,
    /// The reply did not decode.
    #[error("malformed reply")]
    Malformed,
    /// Too many bytes are already waiting to be written to this peer.
    #[error("send queue full")]
    Overloaded,
}

/// Why a link could not be established, or was refused. Each variant leaves no link behind.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The TCP connect did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TCP connect failed (nothing listens there, or the network refused).
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// Writing the handshake failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// Reading the handshake failed.
    #[error("read error: {0}")]
    Read(std::io::Error),
    /// The peer closed the connection before its handshake: it refused this node (a refusal
    /// says nothing; the refusing node logs why) or it stopped.
    #[error("closed during handshake (refused? the peer's log says why)")]
    ClosedInHandshake,
    /// No handshake within [`HANDSHAKE_TIMEOUT`].
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The handshake frame did not decode.
    #[error("malformed handshake: {0}")]
    MalformedHandshake(wire::WireError),
    /// The first frame was not a handshake.
    #[error("expected a handshake, got {0:?}")]
    NotHello(Kind),
    /// The TLS handshake failed (`tls-cluster`): a plain-text peer, or a certificate that does
    /// not chain to the CA.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The peer asks for a proof of `cluster-secret` and this node has none.
    #[error("the peer requires cluster-secret, and this node has none")]
    SecretRequired,
    /// This node has `cluster-secret` and the peer did not prove it (it has none).
    #[error("the peer did not prove cluster-secret (it has none, or is not a member)")]
    NoProof,
    /// The peer's proof of `cluster-secret` is wrong: another secret.
    #[error("the peer's proof of cluster-secret is wrong (another secret)")]
    BadProof,
    /// The peer belongs to another cluster.
    #[error("peer belongs to cluster '{peer}', this node to '{ours}'")]
    OtherCluster {
        /// The peer's cluster name.
        peer: String,
        /// This node's.
        ours: String,
    },
    /// The peer speaks another protocol version (a version-1 node, for example).
    #[error(
        "peer speaks protocol {peer}, this node {ours}: upgrade every node of a cluster together"
    )]
    Protocol {
        /// The peer's version.
        peer: u8,
        /// This node's.
        ours: u8,
    },
    /// The peer's node id gives the same version origin as this node's: their writes could tie
    /// and never converge.
    #[error("peer id '{peer}' has the same version origin ({origin:#010x}) as this node's id '{ours}': give one of them another --node-id")]
    OriginCollision {
        /// The peer's id.
        peer: String,
        /// This node's id.
        ours: String,
        /// The shared origin.
        origin: u32,
    },
}

impl LinkError {
    /// Whether the peer was reached and refused (counted in `dist.link.handshake_failures`),
    /// rather than unreachable.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            LinkError::MalformedHandshake(_)
                | LinkError::NotHello(_)
                | LinkError::OtherCluster { .. }
                | LinkError::Protocol { .. }
                | LinkError::OriginCollision { .. }
                | LinkError::SecretRequired
                | LinkError::Tls(_)
                | LinkError::NoProof
                | LinkError::BadProof
                | LinkError::HandshakeTimeout
                | LinkError::ClosedInHandshake
        )
    }
}

/// Why an established link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkEnd {
    /// This side closed it.
    #[error("closed")]
    Closed,
    /// The peer closed it.
    #[error("closed by peer")]
    ClosedByPeer,
    /// Reading failed.
    #[error("read error: {0}")]
    Read(std::io::Error),
    /// Writing failed.
    #[error("write error: {0}")]
    Write(std::io::Error),
    /// A frame did not decode (the link is closed on bad input).
    #[error("malformed frame: {0}")]
    Malformed(wire::WireError),
    /// A frame of a kind this link does not carry.
    #[error("unexpected {0:?} frame")]
    Unexpected(Kind),
    /// The heartbeat went unanswered.
    #[error("no heartbeat reply within {0:?}")]
    Heartbeat(Duration),
    /// The heartbeat could not be sent.
    #[error("heartbeat failed: {0}")]
    HeartbeatFailed(CallError),
    /// The node is stopping.
    #[error("node stopping")]
    Stopping,
}

impl LinkEnd {
    /// Whether the peer sent something it must not (logged as an error, counted as a transport
    /// error).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, LinkEnd::Malformed(_) | LinkEnd::Unexpected(_))
    }
}

/// Where a node machine's answers arrive: (tag, reply body or `None` for a failed link), and gate
/// wake-ups. A short queue behind one lock and a [`Notify`]: one small allocation per request,
/// where a channel would allocate a block of 32 slots (over glibc's cached sizes).
///
/// Once its machine has replied, the driver parks it here ([`Inbox::park`]): the answers still
/// to come are then handed to it where they arrive (on the link's reader), with no task waiting.
#[derive(Default)]
pub struct Inbox {
    q: Mutex<std::collections::VecDeque<(usize, Option<Bytes>)>>,
    ready: Notify,
    late: Mutex<Option<LateSink>>,
}

/// A parked machine: takes an answer, returns true once it needs no more.
pub type LateSink = Box<dyn FnMut(usize, Option<Bytes>) -> bool + Send>;

impl Inbox {
    /// Delivers one item (to the parked machine, if one is parked).
    pub fn push(&self, tag: usize, body: Option<Bytes>) {
        let mut late = self.late.lock();
        if let Some(sink) = late.as_mut() {
            if sink(tag, body) {
                *late = None;
            }
            return;
        }
        self.q.lock().push_back((tag, body));
        drop(late);
        self.ready.notify_one();
    }

    /// Parks a machine that has replied: `sink` gets the items already queued, then every later
    /// one as it arrives, until it returns true.
    pub fn park(&self, mut sink: LateSink) {
        let mut late = self.late.lock();
        loop {
            let next = self.q.lock().pop_front();
            match next {
                Some((tag, body)) => {
                    if sink(tag, body) {
                        return;
                    }
                }
                None => break,
            }
        }
        *late = Some(sink);
    }

    /// The next item, waiting for one.
    pub async fn recv(&self) -> (usize, Option<Bytes>) {
        loop {
            if let Some(x) = self.q.lock().pop_front() {
                return x;
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.ready.notified().await;
        }
    }
}

/// Who waits for a reply.
enum Waiter {
    /// A node machine's call: the reply (or `None` when the link fails first) goes to its inbox
    /// with this tag.
    Inbox(Arc<Inbox>, usize),
    /// A single call.
    One(oneshot::Sender<Bytes>),
}

/// Another member, as seen through this node's outbound link to it.
pub struct Peer {
    /// Its node id.
    pub id: String,
    /// Its cluster address (dialed).
    pub addr: String,
    /// Its roster number.
    pub idx: hypercache_cluster::ring::MemberIdx,
    up: AtomicBool,
    /// SWIM sees it alive.
    alive: AtomicBool,
    /// It left or was forgotten: its link task ends and it is not dialed again.
    stopped: AtomicBool,
    queue: Mutex<Option<Arc<Outbound>>>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    /// The client address it announced (empty before).
    pub client_addr: Mutex<String>,
    /// Redial now (the peer just linked to this node: it is back).
    redial: Notify,
    /// Slots the peer reported still catching up in its last heartbeat (-1: not heard yet).
    pub catching_up: std::sync::atomic::AtomicI64,
    /// The largest ring epoch seen on its messages.
    pub epoch: AtomicU64,
    /// The digest of its ring as of its last heartbeat (0: not heard yet).
    pub ring: AtomicU64,
}

impl Peer {
    /// Member `id` at cluster address `addr`, roster number `idx`.
    pub fn new(id: String, addr: String, idx: hypercache_cluster::ring::MemberIdx) -> Peer {
        Peer {
            id,
            addr,
            idx,
            up: AtomicBool::new(false),
            alive: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            queue: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            client_addr: Mutex::new(String::new()),
            redial: Notify::new(),
            catching_up: std::sync::atomic::AtomicI64::new(-1),
            epoch: AtomicU64::new(0),
            ring: AtomicU64::new(0),
        }
    }

    /// Whether the link is connected.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether SWIM sees it alive and its link is up.
    pub fn is_live(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && self.is_up()
    }

    /// Whether SWIM sees it alive.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// SWIM's verdict.
    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Relaxed);
    }

    /// It left or was forgotten: the link closes and is not dialed again.
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            self.alive.store(false, Ordering::Relaxed);
            self.redial.notify_one();
        }
    }

    /// Whether [`Peer::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The send queue for a machine's message: only to a live peer (SWIM alive, link up). A
    /// peer SWIM suspects gets nothing (its writes become hints), as in the simulator.
    fn queue(&self) -> Result<Arc<Outbound>, CallError> {
        if !self.is_alive() {
            return Err(CallError::Down);
        }
        self.link_queue()
    }

    /// The send queue of the link, whatever SWIM says (the link's own heartbeat).
    fn link_queue(&self) -> Result<Arc<Outbound>, CallError> {
        match &*self.queue.lock() {
            // A peer that reads slower than it is sent to (until the heartbeat notices a stall)
            // gets no more than MAX_QUEUED bytes waiting: further requests fail at once.
            Some(q) if self.is_up() && q.queued() > MAX_QUEUED => Err(CallError::Overloaded),
            Some(q) if self.is_up() => Ok(q.clone()),
            _ => Err(CallError::Down),
        }
    }

    /// Registers a waiter for a new request id, unless the link is down. The check happens under
    /// the `pending` lock, which `set_down` takes after clearing `up`: a waiter is either refused
    /// here or failed by `set_down`, never left behind.
    fn register(&self, w: Waiter) -> Result<u64, CallError> {
        let mut pending = self.pending.lock();
        if !self.is_up() {
            return Err(CallError::Down);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        pending.insert(id, w);
        Ok(id)
    }

    /// Sends a request whose reply goes to `inbox` tagged with `tag` (`None` if the link fails
    /// first). Returns the request id, for [`Peer::forget`].
    pub fn send_to_inbox(
        &self,
        body: &[u8],
        inbox: &Arc<Inbox>,
        tag: usize,
        trace: Option<&wire::TraceContext>,
    ) -> Result<u64, CallError> {
        let q = self.queue()?;
        let id = self.register(Waiter::Inbox(inbox.clone(), tag))?;
        q.push_traced(Kind::Request, id, body, trace);
        Ok(id)
    }

    /// Sends a request whose reply nobody waits for (read repair, replication at ONE).
    pub fn send_oneway(
        &self,
        body: &[u8],
        trace: Option<&wire::TraceContext>,
    ) -> Result<(), CallError> {
        let q = self.queue()?;
        q.push_traced(
            Kind::Request,
            self.next_id.fetch_add(1, Ordering::Relaxed),
            body,
            trace,
        );
        Ok(())
    }

    /// Stops waiting for request `id`.
    pub fn forget(&self, id: u64) {
        self.pending.lock().remove(&id);
    }

    /// Sends a request and waits for its reply body, up to `timeout`.
    pub async fn call(&self, body: &[u8], timeout: Duration) -> Result<Bytes, CallError> {
        let q = self.queue()?;
        self.call_on(q, body, timeout).await
    }

    /// [`Peer::call`] on the link whatever SWIM says (the heartbeat).
    pub(crate) async fn call_link(
        &self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let q = self.link_queue()?;
        self.call_on(q, body, timeout).await
    }

    async fn call_on(
        &self,
        q: Arc<Outbound>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let (tx, rx) = oneshot::channel();
        let id = self.register(Waiter::One(tx))?;
        q.push(Kind::Request, id, body);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(_)) => Err(CallError::Disconnected),
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(CallError::Timeout)
            }
        }
    }

    fn set_down(&self) {
        self.up.store(false, Ordering::Relaxed);
        if let Some(q) = self.queue.lock().take() {
            q.close();
        }
        // Every in-flight request fails at once: a single call sees its sender dropped, a fan-out
        // gets an explicit failure for this target (its channel stays open for the others).
        // Taken out first: a waiter's inbox may run a parked machine, which forgets its calls.
        let waiters: Vec<Waiter> = self.pending.lock().drain().map(|(_, w)| w).collect();
        for w in waiters {
            match w {
                Waiter::Inbox(inbox, tag) => inbox.push(tag, None),
                Waiter::One(_) => {}
            }
        }
    }
}

/// Reads frames from `r` into `buf`, handing each to `f`; returns why the link ended.
async fn read_frames(
    mut r: ReadSide,
    limits: WireLimits,
    traffic: Arc<Traffic>,
    mut f: impl FnMut(wire::Frame) -> Result<(), LinkEnd>,
) -> LinkEnd {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match wire::decode(&mut buf, &limits) {
                Ok(Some(frame)) => {
                    if let Err(e) = f(frame) {
                        return e;
                    }
                }
                Ok(None) => break,
                Err(e) => return LinkEnd::Malformed(e),
            }
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(16 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => return LinkEnd::ClosedByPeer,
            Ok(n) => {
                traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => return LinkEnd::Read(e),
        }
    }
}

/// Reads exactly one frame (the handshake).
async fn read_one<S: AsyncRead + Unpin>(
    s: &mut S,
    limits: &WireLimits,
) -> Result<wire::Frame, LinkError> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        match wire::decode(&mut buf, limits) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(wire::WireError::UnsupportedVersion(v)) => {
                return Err(LinkError::Protocol {
                    peer: v,
                    ours: wire::VERSION,
                })
            }
            Err(e) => return Err(LinkError::MalformedHandshake(e)),
        }
        match s.read_buf(&mut buf).await {
            Ok(0) => return Err(LinkError::ClosedInHandshake),
            Ok(_) => {}
            Err(e) => return Err(LinkError::Read(e)),
        }
    }
}

fn hello(cl: &Cluster, nonce: [u8; 16]) -> Vec<u8> {
    wire::to_body(&Hello {
        cluster: cl.name.clone(),
        node_id: cl.node_id.clone(),
        protocol: wire::VERSION,
        client_addr: cl.client_addr.clone(),
        nonce,
    })
}

/// A fresh random nonce (the OS's generator).
fn nonce() -> [u8; 16] {
    use rand::TryRngCore;
    let mut n = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut n)
        .expect("the OS random generator works");
    n
}

/// Writes `out` and flushes it.
async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, out: &[u8]) -> std::io::Result<()> {
    s.write_all(out).await?;
    s.flush().await
}

/// Sends one handshake frame.
async fn send_frame<T: serde::Serialize, S: AsyncWrite + Unpin>(
    s: &mut S,
    kind: Kind,
    msg: &T,
) -> Result<(), LinkError> {
    let mut out = BytesMut::new();
    wire::encode(kind, 0, &wire::to_body(msg), &mut out);
    s.write_all(&out).await.map_err(LinkError::Write)?;
    s.flush().await.map_err(LinkError::Write)
}

/// Reads one handshake frame (small, never decompressed), within [`HANDSHAKE_TIMEOUT`].
async fn read_handshake<S: AsyncRead + Unpin>(s: &mut S) -> Result<wire::Frame, LinkError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read_one(s, &WireLimits::handshake()))
        .await
        .map_err(|_| LinkError::HandshakeTimeout)?
}

/// Checks a peer's hello; the error says why the link is refused.
fn check_hello(cl: &Cluster, f: &wire::Frame) -> Result<Hello, LinkError> {
    if f.kind != Kind::Hello {
        return Err(LinkError::NotHello(f.kind));
    }
    let h: Hello = wire::from_body(&f.body).map_err(LinkError::MalformedHandshake)?;
    if h.cluster != cl.name {
        return Err(LinkError::OtherCluster {
            peer: h.cluster,
            ours: cl.name.clone(),
        });
    }
    if h.protocol != wire::VERSION {
        return Err(LinkError::Protocol {
            peer: h.protocol,
            ours: wire::VERSION,
        });
    }
    let origin = origin_of(&h.node_id);
    if h.node_id != cl.node_id && origin == origin_of(&cl.node_id) {
        return Err(LinkError::OriginCollision {
            peer: h.node_id,
            ours: cl.node_id.clone(),
            origin,
        });
    }
    Ok(h)
}

async fn dial(
    cl: &Cluster,
    tls: Option<tokio_rustls::TlsConnector>,
    addr: &str,
) -> Result<(PeerStream, Hello), LinkError> {
    let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| LinkError::ConnectTimeout)?
        .map_err(LinkError::Connect)?;
    let _ = s.set_nodelay(true);
    match tls {
        None => {
            let mut s = s;
            let h = dial_handshake(cl, &mut s).await?;
            Ok((PeerStream::Plain(s), h))
        }
        Some(connector) => {
            let name = crate::tls::server_name(addr);
            let mut s = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, s))
                .await
                .map_err(|_| LinkError::HandshakeTimeout)?
                .map_err(LinkError::Tls)?;
            let h = dial_handshake(cl, &mut s).await?;
            Ok((PeerStream::Tls(Box::new(s.into())), h))
        }
    }
}

/// The dialer's side of a handshake (inside TLS, with `tls-cluster`): its hello, and with
/// `cluster-secret` the acceptor's proof checked before its own goes out. Returns the peer's
/// hello.
async fn dial_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    cl: &Cluster,
    s: &mut S,
) -> Result<Hello, LinkError> {
    let mine = nonce();
    let mut out = BytesMut::new();
    wire::encode(Kind::Hello, 0, &hello(cl, mine), &mut out);
    s.write_all(&out).await.map_err(LinkError::Write)?;
    s.flush().await.map_err(LinkError::Write)?;
    let mut f = read_handshake(s).await?;
    match (&cl.secret, f.kind) {
        (None, Kind::Auth) => return Err(LinkError::SecretRequired),
        (Some(_), Kind::Hello) => return Err(LinkError::NoProof),
        (Some(secret), Kind::Auth) => {
            // The acceptor proves the secret first; then this node does.
            let c: wire::Challenge =
                wire::from_body(&f.body).map_err(LinkError::MalformedHandshake)?;
            let role = wire::Role::Acceptor;
            if !secret.verify(role, &mine, &c.nonce, &cl.node_id, &c.proof) {
                return Err(LinkError::BadProof);
            }
            let proof = secret.proof(wire::Role::Dialer, &mine, &c.nonce, &cl.node_id);
            send_frame(s, Kind::Auth, &wire::Proof { proof }).await?;
            f = read_handshake(s).await?;
        }
        _ => {}
    }
    check_hello(cl, &f)
}

/// Keeps the outbound link to `peer` connected until the node stops or the peer is stopped
/// (it left or was forgotten).
pub async fn run_outbound(shared: Arc<Shared>, cl: Arc<Cluster>, peer: Arc<Peer>) {
    let limits = WireLimits::default();
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = BACKOFF.0;
    let mut last_error = String::new();
    loop {
        if *shutdown.borrow() || peer.is_stopped() {
            return;
        }
        match dial(&cl, shared.tls.cluster_connector(), &peer.addr).await {
            Ok((stream, h)) if h.node_id != peer.id => {
                let text = format!("{} answers as {}", peer.addr, h.node_id);
                if text != last_error {
                    tracing::warn!(component = "cluster", node_id = %cl.node_id, peer = %peer.id, addr = %peer.addr,
                        answered = %h.node_id, "another node answers at this member's address; retrying with backoff");
                    last_error = text;
                }
                drop(stream);
            }
            Ok((stream, h)) => {
                *peer.client_addr.lock() = h.client_addr.clone();
                let (r, w) = stream.split();
                let traffic = cl.traffic(&peer.id);
                let q = Arc::new(Outbound::new(cl.epoch_cell(), traffic.clone()));
                *peer.queue.lock() = Some(q.clone());
                peer.up.store(true, Ordering::Relaxed);
                inc(&cl.metrics.dist.links_established);
                backoff = BACKOFF.0;
                last_error.clear();
                tracing::info!(component = "cluster", node_id = %cl.node_id, peer = %h.node_id, addr = %peer.addr, "peer link up");
                // Its hints are due now.
                cl.repair_cmd(super::exec::RepairCmd::PeerUp(peer.idx));
                let p = peer.clone();
                let c = cl.clone();
                let reader = read_frames(r, limits, traffic, move |f| {
                    if f.kind != Kind::Reply {
                        return Err(LinkEnd::Unexpected(f.kind));
                    }
                    if let Some(e) = wire::peek_epoch(&f.body) {
                        if e > p.epoch.load(Ordering::Relaxed) {
                            p.epoch.store(e, Ordering::Relaxed);
                            c.saw_epoch(&p.id, e);
                        }
                    }
                    // Released before delivering: a parked machine may forget its calls.
                    let waiter = p.pending.lock().remove(&f.id);
                    match waiter {
                        Some(Waiter::One(tx)) => {
                            let _ = tx.send(f.body);
                        }
                        Some(Waiter::Inbox(inbox, tag)) => inbox.push(tag, Some(f.body)),
                        None => {}
                    }
                    Ok(())
                });
                let why = tokio::select! {
                    why = reader => why,
                    why = q.write_loop(w) => why,
                    why = heartbeat(&shared, &cl, &peer) => why,
                    _ = shutdown.changed() => LinkEnd::Stopping,
                    _ = peer.redial.notified(), if peer.is_stopped() => LinkEnd::Stopping,
                };
                peer.set_down();
                tracing::warn!(component = "cluster", node_id = %cl.node_id, peer = %h.node_id, addr = %peer.addr, reason = %why, "peer link down");
                if !matches!(why, LinkEnd::Stopping) {
                    // A reset or a silent peer: membership suspects it now.
                    cl.member_cmd(super::swim::MemberCmd::LinkDown(peer.id.clone()));
                }
            }
            Err(e) => {
                if e.is_refusal() {
                    inc(&cl.metrics.dist.handshake_failures);
                    if matches!(e, LinkError::NoProof | LinkError::BadProof) {
                        inc(&cl.metrics.dist.auth_failures);
                    }
                }
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(component = "cluster", node_id = %cl.node_id, addr = %peer.addr, error = %e, "cannot link to peer; retrying with backoff");
                    last_error = text;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            // The peer linked to this node: it is back, dial it now (a restarted node's
            // catch-up waits for its peers to see it live).
            _ = peer.redial.notified() => backoff = BACKOFF.0,
            _ = shutdown.changed() => return,
        }
        if peer.is_stopped() {
            tracing::info!(component = "cluster", node_id = %cl.node_id, peer = %peer.id, "member gone: link stopped");
            return;
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Pings the peer every [`HEARTBEAT`] and returns (ending the link) when a ping goes unanswered
/// for [`HEARTBEAT_TIMEOUT`]: a peer that is connected but not running (paused, overloaded,
/// behind a black hole) is then taken out of coordination like a crashed one, and the requests
/// queued for it are failed instead of piling up. A peer that reports newer cluster-wide
/// settings (the ACL users) is asked for them.
async fn heartbeat(shared: &Arc<Shared>, cl: &Arc<Cluster>, peer: &Arc<Peer>) -> LinkEnd {
    let ping = wire::to_body(&hypercache_cluster::msg::Request::Status);
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        match peer.call_link(&ping, HEARTBEAT_TIMEOUT).await {
            Ok(body) => {
                if let Ok(hypercache_cluster::msg::Response::Status {
                    catching_up,
                    ring,
                    settings,
                    horizons,
                }) = wire::from_body(&body)
                {
                    let missed = shared
                        .store
                        .claim_missed_flushes(&horizons, crate::state::now_ms());
                    if !missed.is_empty() {
                        super::exec::run_missed_flushes(shared, cl, &peer.id, missed).await;
                    }
                    peer.catching_up
                        .store(i64::from(catching_up), Ordering::Relaxed);
                    peer.ring.store(ring, Ordering::Relaxed);
                    let pull = cl.settings.lock().heard_status(&settings);
                    if pull {
                        let (sh, c, p) = (shared.clone(), cl.clone(), peer.clone());
                        shared.tasks.spawn(async move {
                            super::settings::pull(&sh, &c, &p, &settings).await;
                        });
                    } else {
                        cl.settings_heard.store(true, Ordering::Release);
                    }
                }
            }
            Err(CallError::Timeout) => return LinkEnd::Heartbeat(HEARTBEAT_TIMEOUT),
            Err(e) => return LinkEnd::HeartbeatFailed(e),
        }
    }
}

/// Accepts peers' links on the cluster port until the node stops.
pub async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, cl: Arc<Cluster>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((s, from)) => {
                    shared.tasks.spawn(serve_inbound(shared.clone(), cl.clone(), s, from));
                }
                Err(e) => {
                    tracing::warn!(component = "cluster", node_id = %cl.node_id, error = %e, "cluster accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// The acceptor's side of a handshake: the peer's hello, and with `cluster-secret` the
/// challenge and the peer's proof (checked before its hello is even looked at, so that an
/// outsider learns nothing, not whether it guessed the cluster name). Returns the peer's hello.
async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    cl: &Cluster,
    s: &mut S,
) -> Result<Hello, LinkError> {
    let f = read_handshake(s).await?;
    let Some(secret) = &cl.secret else {
        return check_hello(cl, &f);
    };
    if f.kind != Kind::Hello {
        return Err(LinkError::NotHello(f.kind));
    }
    // Only the dialer's nonce and claimed id are read before the proof.
    let claimed: Hello = wire::from_body(&f.body).map_err(LinkError::MalformedHandshake)?;
    let mine = nonce();
    let proof = secret.proof(
        wire::Role::Acceptor,
        &claimed.nonce,
        &mine,
        &claimed.node_id,
    );
    send_frame(s, Kind::Auth, &wire::Challenge { nonce: mine, proof }).await?;
    let p = read_handshake(s).await?;
    if p.kind != Kind::Auth {
        return Err(LinkError::NoProof);
    }
    let p: wire::Proof = wire::from_body(&p.body).map_err(|_| LinkError::NoProof)?;
    let role = wire::Role::Dialer;
    if !secret.verify(role, &claimed.nonce, &mine, &claimed.node_id, &p.proof) {
        return Err(LinkError::BadProof);
    }
    check_hello(cl, &f)
}

async fn serve_inbound(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    s: TcpStream,
    from: std::net::SocketAddr,
) {
    let _ = s.set_nodelay(true);
    let limits = WireLimits::default();
    // With tls-cluster the TLS handshake comes first: a peer without a certificate from the CA
    // (or speaking plain text) is refused before a byte of the protocol is read.
    let accepted = match shared.tls.cluster_acceptor() {
        None => {
            let mut s = s;
            accept_handshake(&cl, &mut s)
                .await
                .map(|h| (PeerStream::Plain(s), h))
        }
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s)).await {
            Err(_) => Err(LinkError::HandshakeTimeout),
            Ok(Err(e)) => Err(LinkError::Tls(e)),
            Ok(Ok(mut s)) => accept_handshake(&cl, &mut s)
                .await
                .map(|h| (PeerStream::Tls(Box::new(s.into())), h)),
        },
    };
    // Until the peer's hello (and with cluster-secret, its proof) checks out, frames are small
    // and never decompressed, none is acted on, and nothing about this node is sent: a refusal
    // is the link closing, with no cluster name or node id.
    let (mut s, h) = match accepted {
        Ok(x) => x,
        Err(e) => {
            inc(&cl.metrics.dist.handshake_failures);
            if matches!(e, LinkError::NoProof | LinkError::BadProof) {
                inc(&cl.metrics.dist.auth_failures);
            }
            tracing::warn!(component = "cluster", node_id = %cl.node_id, from = %from, error = %e, "refused a peer link");
            return;
        }
    };
    let mut out = BytesMut::new();
    wire::encode(Kind::Hello, 0, &hello(&cl, nonce()), &mut out);
    let sent = match &mut s {
        PeerStream::Plain(t) => write_flush(t, &out).await,
        PeerStream::Tls(t) => write_flush(t, &out).await,
    };
    if sent.is_err() {
        return;
    }
    if let Some(p) = cl.peer_by_id(&h.node_id).filter(|p| !p.is_up()) {
        p.redial.notify_one();
    }
    let (r, w) = s.split();
    let traffic = cl.traffic(&h.node_id);
    let q = Arc::new(Outbound::new(cl.epoch_cell(), traffic.clone()));
    let mut shutdown = shared.shutdown.subscribe();
    let (sh, c, q2) = (shared.clone(), cl.clone(), q.clone());
    let from: Arc<str> = h.node_id.clone().into();
    let reader = read_frames(r, limits, traffic, move |f| {
        if f.kind != Kind::Request {
            return Err(LinkEnd::Unexpected(f.kind));
        }
        super::exec::serve_request(&sh, &c, &from, f.id, f.body, &q2);
        Ok(())
    });
    let why = tokio::select! {
        why = reader => why,
        why = q.write_loop(w) => why,
        _ = shutdown.changed() => LinkEnd::Stopping,
    };
    q.close();
    tracing::debug!(component = "cluster", node_id = %cl.node_id, peer = %h.node_id, reason = %why, "inbound peer link closed");
    if why.is_bad_input() {
        inc(&cl.metrics.dist.transport_errors);
        tracing::error!(component = "cluster", node_id = %cl.node_id, peer = %h.node_id, reason = %why, "closed a peer link on bad input");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_inbox_hands_items_to_its_reader_then_to_a_parked_machine() {
        let inbox = Arc::new(Inbox::default());
        inbox.push(1, Some(Bytes::from_static(b"a")));
        assert_eq!(inbox.recv().await, (1, Some(Bytes::from_static(b"a"))));
        // Items queued before the machine parks reach it first, in order; later ones reach it
        // where they are pushed; once it has what it needs, nothing more goes to it.
        inbox.push(2, None);
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        inbox.park(Box::new(move |tag, body| {
            g.lock().push((tag, body.is_some()));
            tag == 4
        }));
        assert_eq!(*got.lock(), [(2, false)]);
        inbox.push(3, Some(Bytes::new()));
        inbox.push(4, None);
        inbox.push(5, None);
        assert_eq!(*got.lock(), [(2, false), (3, true), (4, false)]);
        assert_eq!(
            inbox.recv().await,
            (5, None),
            "after the machine is done, items queue"
        );
    }
}
