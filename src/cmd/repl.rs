//! `DUMP`/`RESTORE` (values in Redis's RDB encoding, [`crate::rdb`]) and the commands of
//! Redis replication from a single node ([`crate::repl`]): `SYNC`, `PSYNC`, `REPLCONF`, `WAIT`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercache_cluster::op::{ExpiryChange, SetCond};
use hypercache_cluster::{db, Op, Outcome};
use hypercache_resp::{errors, num, Frame};

use super::{err, err_owned, int_arg, keyed, reply};
use crate::repl::SyncAsk;
use crate::session::Session;

const BUSYKEY: &str = "BUSYKEY Target key name already exists.";

/// # Format
/// `DUMP key`
pub(super) fn dump(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    keyed(s, &a[1], Op::Get, |o| match o {
        Outcome::Value(v) => Frame::Bulk(crate::rdb::dump(&v).into()),
        o => reply(o),
    })
}

/// # Format
/// `RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]`
///
/// `IDLETIME` and `FREQ` are checked as Redis checks them and otherwise ignored: the key starts
/// with a fresh access time. The key's keyspace events are those of a `SET` (`set`, `expire`),
/// not Redis's `restore`.
pub(super) fn restore(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq) = (None, None);
    let mut j = 4;
    while j < a.len() {
        let more = j + 1 < a.len();
        let opt = a[j].to_ascii_lowercase();
        match opt.as_slice() {
            b"replace" => replace = true,
            b"absttl" => absttl = true,
            b"idletime" if more && freq.is_none() => {
                let v = match int_arg(&a[j + 1]) {
                    Ok(v) => v,
                    Err(e) => return e,
                };
                if v < 0 {
                    return err("ERR Invalid IDLETIME value, must be >= 0");
                }
                idle = Some(v);
                j += 1;
            }
            b"freq" if more && idle.is_none() => {
                let v = match int_arg(&a[j + 1]) {
                    Ok(v) => v,
                    Err(e) => return e,
                };
                if !(0..=255).contains(&v) {
                    return err("ERR Invalid FREQ value, must be >= 0 and <= 255");
                }
                freq = Some(v);
                j += 1;
            }
            _ => return err(errors::SYNTAX),
        }
        j += 1;
    }
    let parsed = num::parse_i64(&a[2])
        .ok_or(errors::NOT_INTEGER)
        .and_then(|t| if t < 0 { Err(INVALID_TTL) } else { Ok(t) })
        .and_then(|t| {
            crate::rdb::undump(&a[3])
                .map(|v| (t, v))
                .map_err(|e| e.text())
        });
    let (ttl, value) = match parsed {
        Ok(p) => p,
        // As Redis, an existing key is reported before a bad TTL or payload.
        Err(e) if replace => return err(e),
        Err(e) if s.shared.cluster.is_none() => {
            return err(if exists_locally(s, &a[1]) { BUSYKEY } else { e });
        }
        Err(e) => return keyed(s, &a[1], Op::Exists, busy_or(e)),
    };
    let now = s.ctx().now as i64;
    let at = match (ttl, absttl) {
        (0, _) => None,
        (t, true) => Some(t),
        (t, false) => Some(t.saturating_add(now)),
    };
    let logical_key = Bytes::copy_from_slice(db::split(&a[1]).1);
    if at.is_some_and(|t| t <= now) {
        // Already expired: nothing is created; REPLACE still removes what was there.
        let r = if replace {
            let r = keyed(s, &a[1], Op::Del, |_| Frame::ok());
            if s.shared.repl.is_active() {
                s.repl_rewrite = Some(vec![Bytes::from_static(b"DEL"), logical_key]);
            }
            r
        } else {
            keyed(s, &a[1], Op::Exists, |o| match o {
                Outcome::Int(n) if n > 0 => Frame::error(BUSYKEY),
                Outcome::Err(e) => super::op_error(e),
                _ => Frame::ok(),
            })
        };
        return r;
    }
    let _ = (idle, freq);
    let op = Op::Set {
        value: &value,
        cond: if replace {
            SetCond::Always
        } else {
            SetCond::IfMissing
        },
        expiry: at.map_or(ExpiryChange::Clear, |t| ExpiryChange::At(t as u64)),
        // Without REPLACE, the old value (if any) says the key was there.
        get: !replace,
    };
    let r = if replace {
        keyed(s, &a[1], op, reply)
    } else {
        keyed(s, &a[1], op, |o| match o {
            Outcome::Nil => Frame::ok(),
            Outcome::Value(_) => Frame::error(BUSYKEY),
            o => reply(o),
        })
    };
    if s.shared.repl.is_active() {
        // Redis propagates RESTORE itself, a relative TTL made absolute.
        s.repl_rewrite = match (at, absttl) {
            (Some(t), false) => {
                let mut argv: Vec<Bytes> = a.to_vec();
                argv[1] = logical_key;
                argv[2] = Bytes::from(t.to_string());
                argv.push(Bytes::from_static(b"ABSTTL"));
                Some(argv)
            }
            _ => None,
        };
    }
    r
}

const INVALID_TTL: &str = "ERR Invalid TTL value, must be >= 0";

/// `RESTORE`'s reply in a cluster when its arguments are wrong: `BUSYKEY` if the key exists
/// (the key's read decides), else the error.
fn busy_or(e: &'static str) -> fn(Outcome) -> Frame {
    fn pick(o: &Outcome) -> bool {
        matches!(o, Outcome::Int(n) if *n > 0)
    }
    match e {
        errors::NOT_INTEGER => |o| {
            Frame::error(if pick(&o) {
                BUSYKEY
            } else {
                errors::NOT_INTEGER
            })
        },
        INVALID_TTL => |o| Frame::error(if pick(&o) { BUSYKEY } else { INVALID_TTL }),
        crate::rdb::NOT_A_STRING => |o| {
            Frame::error(if pick(&o) {
                BUSYKEY
            } else {
                crate::rdb::NOT_A_STRING
            })
        },
        "ERR Bad data format" => |o| {
            Frame::error(if pick(&o) {
                BUSYKEY
            } else {
                "ERR Bad data format"
            })
        },
        _ => |o| {
            Frame::error(if pick(&o) {
                BUSYKEY
            } else {
                "ERR DUMP payload version or checksum are wrong"
            })
        },
    }
}

/// # Format
/// `MIGRATE host port key|"" destination-db timeout [COPY] [REPLACE] [AUTH password]
/// [AUTH2 username password] [KEYS key [key ...]]`
///
/// As Redis does it: the keys go to the target as `RESTORE` commands (their TTLs relative),
/// then those the target took are deleted here unless `COPY`. The node waits for the target
/// (at most `timeout` ms per step), as Redis's MIGRATE blocks; here only this connection's
/// worker waits, and the runtime moves its other connections elsewhere meanwhile. No
/// connection is kept between calls (Redis keeps one for 10 s): each call connects. A single
/// node only: a cluster refuses it.
pub(super) fn migrate(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let (mut copy, mut replace) = (false, false);
    let mut auth: Option<(Option<Bytes>, Bytes)> = None;
    let mut keys: Vec<Bytes> = vec![a[3].clone()];
    let mut j = 6;
    while j < a.len() {
        let more = a.len() - 1 - j;
        let opt = a[j].to_ascii_lowercase();
        match opt.as_slice() {
            b"copy" => copy = true,
            b"replace" => replace = true,
            b"auth" if more >= 1 => {
                auth = Some((None, a[j + 1].clone()));
                j += 1;
            }
            b"auth2" if more >= 2 => {
                auth = Some((Some(a[j + 1].clone()), a[j + 2].clone()));
                j += 2;
            }
            b"keys" => {
                if !a[3].is_empty() {
                    return err("ERR When using MIGRATE KEYS option, the key argument must be set to the empty string");
                }
                keys = a[j + 1..].to_vec();
                break;
            }
            _ => return err(errors::SYNTAX),
        }
        j += 1;
    }
    let timeout = match int_arg(&a[5]) {
        Ok(t) if t <= 0 => 1000,
        Ok(t) => t as u64,
        Err(e) => return e,
    };
    let target_db = match int_arg(&a[4]) {
        Ok(d) => d,
        Err(e) => return e,
    };
    if s.shared.cluster.is_some() {
        return err("ERR MIGRATE is not available in a HyperCache cluster");
    }
    let ctx = s.ctx();
    let db = s.physical_db();
    // The keys that exist, with their values and remaining TTLs (ms, 0: none).
    let mut found = Vec::new();
    for k in keys {
        let stored = db::encode(db, &k);
        let value = s
            .shared
            .store
            .read_with(&stored, &ctx, |v| v.map(Bytes::copy_from_slice));
        let Some(value) = value else { continue };
        let ttl = match s
            .shared
            .store
            .apply(&stored, &Op::ExpireTime { ms: true }, &ctx)
        {
            Outcome::Int(at) if at >= 0 => (at - ctx.now as i64).max(1),
            _ => 0,
        };
        found.push((k, stored, value, ttl));
    }
    if found.is_empty() {
        return Some(Frame::simple("NOKEY"));
    }
    let host = String::from_utf8_lossy(&a[1]).into_owned();
    let port = String::from_utf8_lossy(&a[2]).into_owned();
    let mut req = Vec::new();
    fn put(req: &mut Vec<u8>, args: &[&[u8]]) {
        crate::repl::encode(req, args);
    }
    if let Some((user, pass)) = &auth {
        match user {
            Some(u) => put(&mut req, &[b"AUTH", u, pass]),
            None => put(&mut req, &[b"AUTH", pass]),
        }
    }
    put(&mut req, &[b"SELECT", target_db.to_string().as_bytes()]);
    for (k, _, v, ttl) in &found {
        let payload = crate::rdb::dump(v);
        let ttl = ttl.to_string();
        let mut args: Vec<&[u8]> = vec![b"RESTORE", k, ttl.as_bytes(), &payload];
        if replace {
            args.push(b"REPLACE");
        }
        put(&mut req, &args);
    }
    let replies = (found.len() + 1 + usize::from(auth.is_some())) as u32;
    let exchange = || migrate_exchange(&host, &port, &req, replies, timeout);
    let lines = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(exchange)
        }
        _ => exchange(),
    };
    let (lines, io_error) = match lines {
        Ok(l) => (l, None),
        Err((l, e)) => (l, Some(e)),
    };
    // Replies: AUTH's (if sent), SELECT's, then one per key.
    let skip = 1 + usize::from(auth.is_some());
    let mut first_error = lines[..skip.min(lines.len())]
        .iter()
        .find(|l| l.starts_with('-'))
        .cloned();
    let mut deleted = vec![Bytes::from_static(b"DEL")];
    for (i, (k, stored, ..)) in found.iter().enumerate() {
        let Some(line) = lines.get(skip + i) else {
            break;
        };
        if line.starts_with('-') || first_error.is_some() {
            first_error.get_or_insert_with(|| line.clone());
            continue;
        }
        if !copy {
            keyed(s, stored, Op::Del, |_| Frame::Null);
            deleted.push(k.clone());
        }
    }
    if s.shared.repl.is_active() {
        // Propagated as the DEL of what moved (nothing for COPY), as Redis does.
        s.repl_rewrite = (deleted.len() > 1).then_some(deleted);
    }
    if let Some(e) = first_error {
        return err_owned(format!(
            "ERR Target instance replied with error: {}",
            &e[1..]
        ));
    }
    if let Some(e) = io_error {
        return Some(Frame::Error(Bytes::from(e)));
    }
    Some(Frame::ok())
}

/// Sends `req` to `host:port` and reads `replies` one-line replies, each step within
/// `timeout` ms. On failure returns the lines read so far and the IOERR reply.
fn migrate_exchange(
    host: &str,
    port: &str,
    req: &[u8],
    replies: u32,
    timeout: u64,
) -> Result<Vec<String>, (Vec<String>, String)> {
    use std::io::{BufRead, Write};
    let t = Duration::from_millis(timeout);
    let connect_err = || {
        (
            Vec::new(),
            "IOERR error or timeout connecting to the client".to_string(),
        )
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&format!("{host}:{port}"))
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(connect_err)?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, t).map_err(|_| connect_err())?;
    let _ = sock.set_read_timeout(Some(t));
    let _ = sock.set_write_timeout(Some(t));
    let _ = sock.set_nodelay(true);
    if sock.write_all(req).is_err() {
        return Err((
            Vec::new(),
            "IOERR error or timeout writing to target instance".into(),
        ));
    }
    let mut r = std::io::BufReader::new(sock);
    let mut lines = Vec::new();
    for _ in 0..replies {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => lines.push(line.trim_end().to_string()),
            _ => {
                return Err((
                    lines,
                    "IOERR error or timeout reading to target instance".into(),
                ))
            }
        }
    }
    Ok(lines)
}

/// Whether `key` (stored form) holds a live value on this node.
fn exists_locally(s: &Session, key: &[u8]) -> bool {
    let ctx = s.ctx();
    s.shared.store.read_with(key, &ctx, |v| v.is_some())
}

/// # Format
/// `SYNC`
pub(super) fn sync(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    ask_sync(s, SyncAsk::Sync)
}

/// # Format
/// `PSYNC replicationid offset`
pub(super) fn psync(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    // As Redis: an offset that is not a number asks for a full copy.
    let offset = num::parse_i64(&a[2]).unwrap_or(-1);
    ask_sync(
        s,
        SyncAsk::Psync {
            replid: a[1].clone(),
            offset,
        },
    )
}

fn ask_sync(s: &mut Session, ask: SyncAsk) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return err(
            "ERR SYNC and PSYNC are not available in a HyperCache cluster: a node holds only the replicas of its slots (see docs/replication.md)",
        );
    }
    if s.replica.is_some() {
        // Already a replica: ignored, as Redis does.
        return None;
    }
    s.sync_ready = Some(ask);
    None
}

/// # Format
/// `REPLCONF option value [option value ...]`
pub(super) fn replconf(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if a.len().is_multiple_of(2) {
        return err(errors::SYNTAX);
    }
    for pair in a[1..].chunks(2) {
        let (opt, val) = (pair[0].to_ascii_lowercase(), &pair[1]);
        match opt.as_slice() {
            b"listening-port" => match num::parse_i64(val) {
                Some(p) => s.replconf_port = p.clamp(0, i64::from(u16::MAX)) as u16,
                None => return err(errors::NOT_INTEGER),
            },
            b"ip-address" | b"capa" | b"rdb-only" => {}
            b"ack" => {
                // From an attached replica: how far it got. No reply, as in Redis.
                if let (Some(r), Some(off)) = (&s.replica, num::parse_i64(val)) {
                    let off = u64::try_from(off).unwrap_or(0);
                    r.state
                        .ack
                        .fetch_max(off, std::sync::atomic::Ordering::Relaxed);
                    r.state
                        .ack_ms
                        .store(crate::state::now_ms(), std::sync::atomic::Ordering::Relaxed);
                    s.shared.repl.acked.notify_waiters();
                }
                return None;
            }
            // Asked of a replica; this node is never one.
            b"getack" => return None,
            _ => {
                return err_owned(format!(
                    "ERR Unrecognized REPLCONF option: {}",
                    String::from_utf8_lossy(&pair[0])
                ))
            }
        }
    }
    Some(Frame::ok())
}

/// # Format
/// `REPLICAOF host port` | `REPLICAOF NO ONE` (and `SLAVEOF`): replicate a Redis primary
/// ([`crate::replica`]), or stop and take writes again.
pub(super) fn replicaof(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return err("ERR REPLICAOF not allowed in cluster mode.");
    }
    if a[1].eq_ignore_ascii_case(b"no") && a[2].eq_ignore_ascii_case(b"one") {
        if s.shared.upstream.is_replica() {
            s.shared.upstream.stop(&s.shared);
        }
        return Some(Frame::ok());
    }
    let port = match int_arg(&a[2]) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let Ok(port) = u16::try_from(port) else {
        return err("ERR Invalid master port");
    };
    let host = String::from_utf8_lossy(&a[1]).into_owned();
    let shared = s.shared.clone();
    if !shared.upstream.follow(&shared, host, port) {
        return Some(Frame::simple("OK Already connected to specified master"));
    }
    Some(Frame::ok())
}

/// # Format
/// `ROLE`: `master`, its offset and its replicas; or `slave`, its primary, the link's state and
/// the offset applied.
pub(super) fn role(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let bulk = |t: String| Frame::Bulk(Bytes::from(t));
    if let Some((host, port, state, offset)) = s.shared.upstream.role() {
        return Some(Frame::Array(vec![
            bulk("slave".into()),
            bulk(host),
            Frame::Integer(i64::from(port)),
            bulk(state.into()),
            Frame::Integer(offset as i64),
        ]));
    }
    let (offset, replicas) = s.shared.repl.role();
    let replicas = replicas
        .into_iter()
        .map(|(ip, port, ack)| {
            Frame::Array(vec![
                bulk(ip),
                bulk(port.to_string()),
                bulk(ack.to_string()),
            ])
        })
        .collect();
    Some(Frame::Array(vec![
        bulk("master".into()),
        Frame::Integer(offset as i64),
        Frame::Array(replicas),
    ]))
}

/// # Format
/// `WAIT numreplicas timeout`: how many Redis replicas acknowledged this client's writes,
/// waiting up to `timeout` ms (0: for ever) for `numreplicas` of them.
pub(super) fn wait(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return err(
            "ERR WAIT is not available in a HyperCache cluster: a write is acknowledged by its replicas (HC.CONSISTENCY) before its reply",
        );
    }
    if s.shared.upstream.is_replica() {
        return err("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
    }
    let want = match int_arg(&a[1]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let timeout = match num::parse_i64(&a[2]) {
        None => return err("ERR timeout is not an integer or out of range"),
        Some(t) if t < 0 => return err("ERR timeout is negative"),
        Some(t) => t as u64,
    };
    let target = s.repl_woff;
    let acked = s.shared.repl.acked_at_least(target) as i64;
    if acked >= want || s.in_transaction() || s.in_exec {
        return Some(Frame::Integer(acked));
    }
    let shared = s.shared.clone();
    shared.repl.ask_acks(&shared);
    s.defer_waiting(
        async move {
            let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout));
            loop {
                let notified = shared.repl.acked.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let n = shared.repl.acked_at_least(target) as i64;
                if n >= want {
                    return Frame::Integer(n);
                }
                match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if tokio::time::timeout(left, notified).await.is_err() {
                            return Frame::Integer(shared.repl.acked_at_least(target) as i64);
                        }
                    }
                    None => notified.await,
                }
            }
        },
        None,
    );
    None
}
