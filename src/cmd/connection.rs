//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT.

use bytes::Bytes;
use hypercache_resp::{errors, num, Frame, Protocol};

use super::{err, err_owned, help, verbatim};
use crate::session::{ReplyMode, Session};

/// # Format
/// `PING [message]`
pub(super) fn ping(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if a.len() > 2 {
        return err_owned(errors::wrong_arity("ping"));
    }
    // In RESP2 Pub/Sub mode, as Redis: a "pong" message with the argument (or "").
    if s.proto == Protocol::Resp2 && s.subscribed() {
        return Some(Frame::Array(vec![
            Frame::bulk(b"pong"),
            Frame::Bulk(a.get(1).cloned().unwrap_or_default()),
        ]));
    }
    Some(match a.get(1) {
        Some(m) => Frame::Bulk(m.clone()),
        None => Frame::simple("PONG"),
    })
}

/// # Format
/// `ECHO message`
pub(super) fn echo(_s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    Some(Frame::Bulk(a[1].clone()))
}

/// Authenticates as `user` with `pass` (the connection then runs as that user), or logs the
/// failure in the ACL log (the object is the command's name as sent) and returns false.
fn authenticate(s: &mut Session, command: &Bytes, user: &[u8], pass: &[u8]) -> bool {
    match s.shared.acl.get(user).filter(|u| u.check_password(pass)) {
        Some(u) => {
            s.set_user(u);
            s.authed = true;
            true
        }
        None => {
            s.handle.meta.lock().last_cmd = if command.eq_ignore_ascii_case(b"hello") {
                "hello"
            } else {
                "auth"
            };
            let context = if s.in_transaction() {
                crate::acl::Context::Multi
            } else {
                crate::acl::Context::Toplevel
            };
            s.acl_log(
                crate::acl::Reason::Auth,
                context,
                command.clone(),
                Bytes::copy_from_slice(user),
            );
            false
        }
    }
}

/// The ACL user a client runs as.
fn user_of(h: &crate::state::ClientHandle) -> Bytes {
    let u = h.meta.lock().user.clone();
    if u.is_empty() {
        Bytes::from_static(b"default")
    } else {
        u
    }
}

/// # Format
/// `AUTH [username] password`
pub(super) fn auth(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if a.len() > 3 {
        return err(errors::SYNTAX);
    }
    if a.len() == 2 && s.shared.acl.default_user().nopass {
        return err(errors::AUTH_NOT_CONFIGURED);
    }
    let (user, pass) = if a.len() == 3 {
        (&a[1][..], &a[2][..])
    } else {
        (&b"default"[..], &a[1][..])
    };
    if authenticate(s, &a[0], user, pass) {
        Some(Frame::ok())
    } else {
        err(errors::WRONGPASS)
    }
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

/// # Format
/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`
pub(super) fn hello(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let mut proto = None;
    if a.len() >= 2 {
        match num::parse_i64(&a[1]) {
            None => return err("ERR Protocol version is not an integer or out of range"),
            Some(v) if !(2..=3).contains(&v) => return err(errors::NOPROTO),
            Some(v) => proto = Some(v),
        }
    }
    // Redis applies AUTH and SETNAME as it reads them, so an error in a later option leaves the
    // earlier ones in effect.
    let mut i = 2;
    while i < a.len() {
        let more = a.len() - i - 1;
        if a[i].eq_ignore_ascii_case(b"auth") && more >= 2 {
            if !authenticate(s, &a[0], &a[i + 1], &a[i + 2]) {
                return err(errors::WRONGPASS);
            }
            i += 3;
        } else if a[i].eq_ignore_ascii_case(b"setname") && more >= 1 {
            if !valid_name(&a[i + 1]) {
                return err(errors::CLIENT_NAME_CHARS);
            }
            s.handle.meta.lock().name = String::from_utf8_lossy(&a[i + 1]).into_owned();
            i += 2;
        } else {
            let mut e = b"ERR Syntax error in HELLO option '".to_vec();
            e.extend_from_slice(&errors::sanitize(&a[i]));
            e.push(b'\'');
            return err_owned(e);
        }
    }
    if !s.authed {
        return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(v) = proto {
        s.proto = if v == 3 {
            // A RESP3 connection can receive pushes from others (tracking invalidations
            // redirected to it): it gets its mailbox now.
            super::pubsub::subs(s);
            Protocol::Resp3
        } else {
            Protocol::Resp2
        };
        s.handle.meta.lock().resp = v as u8;
    }
    let proto_num = if s.proto == Protocol::Resp3 { 3 } else { 2 };
    let kv = |k: &'static str, v: Frame| (Frame::Bulk(Bytes::from_static(k.as_bytes())), v);
    Some(Frame::Map(vec![
        kv("server", Frame::bulk(b"redis")),
        kv(
            "version",
            Frame::Bulk(s.shared.config.read().reported_redis_version.clone().into()),
        ),
        kv("proto", Frame::Integer(proto_num)),
        kv("id", Frame::Integer(s.handle.id as i64)),
        kv("mode", Frame::bulk(b"standalone")),
        kv("role", Frame::bulk(b"master")),
        kv("modules", Frame::Array(vec![])),
    ]))
}

/// # Format
/// `SELECT index`
pub(super) fn select(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match super::keys::db_index(s, &a[1]) {
        Ok(db) => {
            s.select(db);
            Some(Frame::ok())
        }
        Err(e) => e,
    }
}

/// # Format
/// `QUIT`
pub(super) fn quit(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    s.close_after = true;
    Some(Frame::ok())
}

/// # Format
/// `RESET`
pub(super) fn reset(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    if s.monitor.take().is_some() {
        s.shared.stop_monitor(s.handle.id);
    }
    s.discard_transaction();
    s.unsubscribe_all();
    s.stop_tracking();
    s.proto = Protocol::Resp2;
    s.reply_mode = ReplyMode::On;
    s.reset_user();
    s.select(0);
    {
        let mut m = s.handle.meta.lock();
        m.name.clear();
        m.resp = 2;
        m.no_evict = false;
    }
    Some(Frame::simple("RESET"))
}

/// # Format
/// `CLIENT ID|SETNAME|GETNAME|INFO|LIST|KILL|SETINFO|NO-EVICT|REPLY|HELP ...`
pub(super) fn client(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"id" => Some(Frame::Integer(s.handle.id as i64)),
        b"setname" => {
            if !valid_name(&a[2]) {
                return err(errors::CLIENT_NAME_CHARS);
            }
            s.handle.meta.lock().name = String::from_utf8_lossy(&a[2]).into_owned();
            Some(Frame::ok())
        }
        b"getname" => {
            let name = s.handle.meta.lock().name.clone();
            Some(if name.is_empty() {
                Frame::Null
            } else {
                Frame::Bulk(name.into())
            })
        }
        b"info" => {
            // As Redis, a client's own line names the command it is running.
            {
                let mut m = s.handle.meta.lock();
                m.last_cmd = "client|info";
                m.qbuf = s.request_len;
                m.argv_mem = a.iter().map(|x| x.len()).sum();
            }
            let line = s.handle.info_line();
            {
                let mut m = s.handle.meta.lock();
                m.qbuf = 0;
                m.argv_mem = 0;
            }
            Some(verbatim(line + "\n"))
        }
        b"list" => {
            {
                let mut m = s.handle.meta.lock();
                m.last_cmd = "client|list";
                m.qbuf = s.request_len;
                m.argv_mem = a.iter().map(|x| x.len()).sum();
            }
            let list = client_list(s, a);
            {
                let mut m = s.handle.meta.lock();
                m.qbuf = 0;
                m.argv_mem = 0;
            }
            list
        }
        b"kill" => client_kill(s, a),
        b"setinfo" => {
            // Redis 7.2's order: the attribute name first, then the value's characters.
            let attr = a[2].to_ascii_lowercase();
            if attr != b"lib-name" && attr != b"lib-ver" {
                let mut e = b"ERR Unrecognized option '".to_vec();
                e.extend_from_slice(&a[2]);
                e.push(b'\'');
                return err_owned(errors::sanitize(&e));
            }
            if !valid_name(&a[3]) {
                let mut e = b"ERR ".to_vec();
                e.extend_from_slice(&a[2]);
                e.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
                return err_owned(errors::sanitize(&e));
            }
            let value = String::from_utf8_lossy(&a[3]).into_owned();
            let mut m = s.handle.meta.lock();
            if attr == b"lib-name" {
                m.lib_name = value;
            } else {
                m.lib_ver = value;
            }
            Some(Frame::ok())
        }
        b"tracking" => client_tracking(s, a),
        b"caching" => {
            let Some(t) = s.tracking.as_mut() else {
                return err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
            };
            if a[2].eq_ignore_ascii_case(b"yes") {
                if !t.optin {
                    return err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.");
                }
            } else if a[2].eq_ignore_ascii_case(b"no") {
                if !t.optout {
                    return err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.");
                }
            } else {
                return err(errors::SYNTAX);
            }
            t.caching = true;
            Some(Frame::ok())
        }
        b"getredir" => Some(Frame::Integer(
            s.tracking.as_ref().map_or(-1, |t| t.redirect as i64),
        )),
        b"trackinginfo" => {
            let mut flags = Vec::new();
            let t = s.tracking.as_ref();
            flags.push(Frame::bulk(if t.is_some() { b"on" } else { b"off" }));
            if let Some(t) = t {
                let mut push = |f: &[u8]| flags.push(Frame::bulk(f));
                if t.bcast {
                    push(b"bcast");
                }
                if t.optin {
                    push(b"optin");
                    if t.caching {
                        push(b"caching-yes");
                    }
                }
                if t.optout {
                    push(b"optout");
                    if t.caching {
                        push(b"caching-no");
                    }
                }
                if t.noloop {
                    push(b"noloop");
                }
                if s.handle.meta.lock().tracking_broken {
                    push(b"broken_redirect");
                }
            }
            Some(Frame::Map(vec![
                (Frame::bulk(b"flags"), Frame::Set(flags)),
                (
                    Frame::bulk(b"redirect"),
                    Frame::Integer(t.map_or(-1, |t| t.redirect as i64)),
                ),
                (
                    Frame::bulk(b"prefixes"),
                    Frame::Array(
                        t.map_or(&[][..], |t| &t.prefixes[..])
                            .iter()
                            .cloned()
                            .map(Frame::Bulk)
                            .collect(),
                    ),
                ),
            ]))
        }
        b"no-evict" => {
            let on = if a[2].eq_ignore_ascii_case(b"on") {
                true
            } else if a[2].eq_ignore_ascii_case(b"off") {
                false
            } else {
                return err(errors::SYNTAX);
            };
            s.handle.meta.lock().no_evict = on;
            Some(Frame::ok())
        }
        b"reply" => {
            let m = a[2].to_ascii_lowercase();
            match m.as_slice() {
                b"on" => {
                    s.reply_mode = ReplyMode::On;
                    Some(Frame::ok())
                }
                b"off" => {
                    s.reply_mode = ReplyMode::Off;
                    None
                }
                b"skip" => {
                    // SKIP itself gets no reply, and neither does the next command.
                    if s.reply_mode == ReplyMode::On {
                        s.reply_mode = ReplyMode::Skip;
                    }
                    None
                }
                _ => err(errors::SYNTAX),
            }
        }
        _ => help(
            "CLIENT",
            &[
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "KILL <ip:port>",
                "    Kill connection made from <ip:port>.",
                "KILL <option> <value> [<option> <value> [...]]",
                "    Kill connections. Options are:",
                "    * ADDR (<ip:port>|<unixsocket>:0)",
                "      Kill connections made from the specified address",
                "    * LADDR (<ip:port>|<unixsocket>:0)",
                "      Kill connections made to specified local address",
                "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
                "      Kill connections by type.",
                "    * USER <username>",
                "      Kill connections authenticated by <username>.",
                "    * SKIPME (YES|NO)",
                "      Skip killing current connection (default: yes).",
                "    * ID <client-id>",
                "      Kill connections by client id.",
                "    * MAXAGE <maxage>",
                "      Kill connections older than the specified age.",
                "LIST [options ...]",
                "    Return information about client connections. Options:",
                "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
                "      Return clients of specified type.",
                "NO-EVICT (ON|OFF)",
                "    Protect current client connection from eviction.",
                "REPLY (ON|OFF|SKIP)",
                "    Control the replies sent to the current connection.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "    Set client meta attr. Options are:",
                "    * LIB-NAME: the client lib name.",
                "    * LIB-VER: the client lib version.",
            ],
        ),
    }
}

fn client_list(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < a.len() {
        if a[i].eq_ignore_ascii_case(b"type") && i + 1 < a.len() {
            let t = a[i + 1].to_ascii_lowercase();
            match t.as_slice() {
                b"normal" => {}
                b"master" | b"replica" | b"slave" | b"pubsub" => ids = Some(Vec::new()),
                _ => {
                    let mut e = b"ERR Unknown client type '".to_vec();
                    e.extend_from_slice(&a[i + 1]);
                    e.push(b'\'');
                    return err_owned(errors::sanitize(&e));
                }
            }
            i += 2;
        } else if a[i].eq_ignore_ascii_case(b"id") && i + 1 < a.len() {
            let mut list = Vec::new();
            for raw in &a[i + 1..] {
                match num::parse_i64(raw) {
                    Some(id) if id > 0 => list.push(id as u64),
                    _ => return err("ERR Invalid client ID"),
                }
            }
            ids = Some(list);
            i = a.len();
        } else {
            return err(errors::SYNTAX);
        }
    }
    let clients = s.shared.clients.lock();
    let mut handles: Vec<_> = clients.values().cloned().collect();
    drop(clients);
    handles.sort_by_key(|h| h.id);
    let mut out = String::new();
    for h in handles {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&h.id)) {
            continue;
        }
        out.push_str(&h.info_line());
        out.push('\n');
    }
    Some(verbatim(out))
}

fn client_kill(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let clients: Vec<_> = s.shared.clients.lock().values().cloned().collect();
    if a.len() == 3 {
        // Old form: CLIENT KILL addr:port.
        let target = String::from_utf8_lossy(&a[2]).into_owned();
        return match clients.iter().find(|h| h.addr.to_string() == target) {
            Some(h) => {
                if h.id == s.handle.id {
                    s.close_after = true;
                } else {
                    h.kill();
                }
                Some(Frame::ok())
            }
            None => err(errors::NO_SUCH_CLIENT),
        };
    }
    if !a.len().is_multiple_of(2) {
        return err(errors::SYNTAX);
    }
    let (mut id, mut addr, mut laddr, mut skipme, mut maxage, mut none) =
        (None, None, None, true, None, false);
    let mut user: Option<Bytes> = None;
    for pair in a[2..].chunks(2) {
        let (k, v) = (pair[0].to_ascii_lowercase(), &pair[1]);
        let text = String::from_utf8_lossy(v).into_owned();
        match k.as_slice() {
            b"id" => match num::parse_i64(v) {
                Some(n) if n > 0 => id = Some(n as u64),
                _ => return err("ERR client-id should be greater than 0"),
            },
            b"addr" => addr = Some(text),
            b"laddr" => laddr = Some(text),
            b"type" => match text.to_ascii_lowercase().as_str() {
                "normal" => {}
                "master" | "replica" | "slave" | "pubsub" => none = true,
                _ => return err_owned(format!("ERR Unknown client type '{text}'")),
            },
            b"user" => {
                if s.shared.acl.get(v).is_none() {
                    return err_owned(format!("ERR No such user '{text}'"));
                }
                user = Some(v.clone());
            }
            b"skipme" => match text.to_ascii_lowercase().as_str() {
                "yes" => skipme = true,
                "no" => skipme = false,
                _ => return err(errors::SYNTAX),
            },
            b"maxage" => match num::parse_i64(v) {
                Some(n) if n >= 0 => maxage = Some(n as u64),
                _ => return err(errors::NOT_INTEGER),
            },
            _ => return err(errors::SYNTAX),
        }
    }
    let mut killed = 0;
    for h in clients {
        let me = h.id == s.handle.id;
        if none
            || (skipme && me)
            || id.is_some_and(|i| i != h.id)
            || addr.as_ref().is_some_and(|x| *x != h.addr.to_string())
            || laddr.as_ref().is_some_and(|x| *x != h.laddr.to_string())
            || maxage.is_some_and(|m| h.created.elapsed().as_secs() < m)
            || user.as_ref().is_some_and(|u| *u != user_of(&h))
        {
            continue;
        }
        if me {
            s.close_after = true;
        } else {
            h.kill();
        }
        killed += 1;
    }
    Some(Frame::Integer(killed))
}

/// # Format
/// `CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP]`
///
/// Redis's checks, in its order.
fn client_tracking(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    use crate::tracking::TrackState;
    let mut want = TrackState::default();
    let mut prefixes: Vec<Bytes> = Vec::new();
    let mut j = 3;
    while j < a.len() {
        let opt = &a[j][..];
        let more = j + 1 < a.len();
        let is = |n: &str| opt.eq_ignore_ascii_case(n.as_bytes());
        if is("redirect") && more {
            j += 1;
            if want.redirect != 0 {
                return err("ERR A client can only redirect to a single other client");
            }
            let id = match super::int_arg(&a[j]) {
                Ok(id) => id,
                Err(e) => return e,
            };
            if id <= 0 || !s.shared.clients.lock().contains_key(&(id as u64)) {
                return err("ERR The client ID you want redirect to does not exist");
            }
            want.redirect = id as u64;
        } else if is("bcast") {
            want.bcast = true;
        } else if is("optin") {
            want.optin = true;
        } else if is("optout") {
            want.optout = true;
        } else if is("noloop") {
            want.noloop = true;
        } else if is("prefix") && more {
            j += 1;
            prefixes.push(a[j].clone());
        } else {
            return err(errors::SYNTAX);
        }
        j += 1;
    }
    if a[2].eq_ignore_ascii_case(b"off") {
        s.stop_tracking();
        return Some(Frame::ok());
    }
    if !a[2].eq_ignore_ascii_case(b"on") {
        return err(errors::SYNTAX);
    }
    if !want.bcast && !prefixes.is_empty() {
        return err("ERR PREFIX option requires BCAST mode to be enabled");
    }
    let current = s.tracking.clone();
    if let Some(cur) = &current {
        if cur.bcast != want.bcast {
            return err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    if want.bcast && (want.optin || want.optout) {
        return err("ERR OPTIN and OPTOUT are not compatible with BCAST");
    }
    if want.optin && want.optout {
        return err("ERR You can't specify both OPTIN mode and OPTOUT mode");
    }
    if let Some(cur) = &current {
        if (want.optin && cur.optout) || (want.optout && cur.optin) {
            return err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    let existing = current.as_ref().map_or(&[][..], |c| &c.prefixes[..]);
    if want.bcast {
        if let Some(e) = crate::tracking::prefix_collision(existing, &prefixes) {
            return err_owned(e);
        }
        // Without PREFIX, BCAST covers every key (the empty prefix).
        if prefixes.is_empty() && existing.is_empty() {
            prefixes.push(Bytes::new());
        }
    }
    // Prefixes add up across calls; the other settings are replaced.
    let mut all: Vec<Bytes> = existing.to_vec();
    for p in prefixes {
        if !all.contains(&p) {
            all.push(p);
        }
    }
    all.sort();
    want.prefixes = all;
    // A tracking connection needs a mailbox for its invalidations.
    super::pubsub::subs(s);
    s.shared.tracking.enable(s.handle.id, &want);
    {
        let mut m = s.handle.meta.lock();
        m.tracking = Some((want.bcast, want.redirect as i64));
        m.tracking_broken = false;
    }
    tracing::debug!(node_id = %s.shared.node_id, component = "tracking", client_id = s.handle.id,
        bcast = want.bcast, redirect = want.redirect, prefixes = want.prefixes.len(), "client tracking on");
    s.tracking = Some(want);
    crate::notify::refresh(&s.shared);
    crate::tracking::announce(&s.shared, true);
    Some(Frame::ok())
}
