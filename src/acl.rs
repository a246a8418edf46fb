//! ACL users, as Redis 7.0 has them: who may connect (`AUTH user pass`, `HELLO ... AUTH`), and
//! what each user may run (commands and categories), touch (key patterns, with `%R~`/`%W~`
//! read and write permissions) and publish to (channel patterns).
//!
//! - [`User`] is one user's rules; [`User::apply`] takes one `ACL SETUSER` rule, with Redis's
//!   error texts. [`User::describe`] writes the rules back in `ACL LIST`'s form, with Redis's
//!   algorithm for command rules (the categories that best cover the user's commands, then the
//!   single commands left over). Redis emits those single commands in its command dictionary's
//!   hash order, which changes from one start to the next; here they come in alphabetical
//!   order.
//! - [`Acl`] holds the users (by name, in `ACL LIST` order), the ACL log, and a generation that
//!   changes with every change to any user, so that a connection re-reads its user only then.
//! - The `default` user mirrors `requirepass` (`nopass` when it is empty), as in Redis.
//!
//! Departures: selectors (`(...)` rules, Redis 7's second sets of permissions) are refused with
//! a syntax error; rules naming a command HyperCache does not have are refused as unknown
//! commands, as Redis refuses a command it does not have. In a cluster the users are one
//! cluster-wide setting (`crate::cluster::settings`), where Redis Cluster keeps them per node.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use hypercache_resp::table::{self, CommandSpec};
use parking_lot::{Mutex, RwLock};

/// Redis's command categories, in its order (`ACL CAT`, and the order categories are tried when
/// rules are described).
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Read permission on a key pattern (`%R~`).
const READ: u8 = 1;
/// Write permission on a key pattern (`%W~`).
const WRITE: u8 = 2;

/// Every command and subcommand, indexed by its ACL id (its position here).
struct Commands {
    all: Vec<&'static CommandSpec>,
    /// For each id, the ids of its subcommands (empty for most).
    subs: Vec<Vec<usize>>,
    /// The parent's id of a subcommand.
    parent: Vec<Option<usize>>,
}

fn commands() -> &'static Commands {
    static C: OnceLock<Commands> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Commands {
            all: Vec::new(),
            subs: Vec::new(),
            parent: Vec::new(),
        };
        for spec in table::COMMANDS {
            let id = c.all.len();
            c.all.push(spec);
            c.subs.push(Vec::new());
            c.parent.push(None);
            for sub in spec.subcommands {
                let sid = c.all.len();
                c.all.push(sub);
                c.subs.push(Vec::new());
                c.parent.push(Some(id));
                c.subs[id].push(sid);
            }
        }
        c
    })
}

/// The ACL id of a command's spec (a subcommand's own, if it is one).
fn id_of(spec: &CommandSpec) -> usize {
    commands()
        .all
        .iter()
        .position(|s| std::ptr::eq(*s, spec))
        .expect("every spec is in the table")
}

/// The id of `name` (`get`, `client|id`), any case.
fn lookup(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    commands().all.iter().position(|s| s.fullname == lower)
}

fn in_category(spec: &CommandSpec, category: &str) -> bool {
    spec.acl
        .iter()
        .any(|c| c.strip_prefix('@') == Some(category))
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: Bytes,
    /// `on`: it may authenticate.
    pub enabled: bool,
    /// `nopass`: any password works.
    pub nopass: bool,
    /// `sanitize-payload` / `skip-sanitize-payload`, as given (`None`: neither).
    sanitize: Option<bool>,
    /// SHA-256 hashes of its passwords (lower-case hex), in the order added.
    pub passwords: Vec<String>,
    /// Allowed command ids.
    allowed: Vec<bool>,
    /// `+@all` was the last word on commands: commands added later are allowed too (Redis's
    /// reserved "future commands" bit).
    future: bool,
    /// Every command is allowed (cleared by any `-`).
    allcommands: bool,
    /// First arguments allowed for a command that is otherwise not (`+select|0`).
    firstargs: BTreeMap<usize, Vec<String>>,
    allkeys: bool,
    keys: Vec<(Bytes, u8)>,
    allchannels: bool,
    channels: Vec<Bytes>,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The command (or subcommand).
    Command,
    /// The key at this argument position.
    Key(usize),
    /// The channel at this argument position.
    Channel(usize),
}

impl User {
    /// A new user as `ACL SETUSER name` makes it: off, no password, no commands, no keys, no
    /// channels.
    pub fn new(name: &[u8]) -> User {
        User {
            name: Bytes::copy_from_slice(name),
            enabled: false,
            nopass: false,
            sanitize: None,
            passwords: Vec::new(),
            allowed: vec![false; commands().all.len()],
            future: false,
            allcommands: false,
            firstargs: BTreeMap::new(),
            allkeys: false,
            keys: Vec::new(),
            allchannels: false,
            channels: Vec::new(),
        }
    }

    /// The `default` user: on, every command, key and channel, and `requirepass` as its
    /// password (`nopass` when empty).
    pub fn default_user(requirepass: &str) -> User {
        let mut u = User::new(b"default");
        for rule in ["+@all", "~*", "&*", "on"] {
            u.apply(rule.as_bytes()).expect("a valid rule");
        }
        u.set_password(requirepass);
        u
    }

    /// `requirepass` for the default user: `resetpass` then `>pass`, or `nopass` when empty.
    pub fn set_password(&mut self, pass: &str) {
        self.passwords.clear();
        self.nopass = false;
        if pass.is_empty() {
            self.nopass = true;
        } else {
            self.passwords.push(hash(pass.as_bytes()));
        }
    }

    /// Whether nothing is restricted (the checks can be skipped).
    pub fn unrestricted(&self) -> bool {
        self.allcommands && self.allkeys && self.allchannels
    }

    /// Whether `pass` is one of its passwords (or it has `nopass`); a disabled user never is.
    pub fn check_password(&self, pass: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let h = hash(pass);
        // Compared in time independent of where they differ, as Redis does.
        self.passwords.iter().fold(false, |found, p| {
            found
                | (p.len() == h.len()
                    && p.bytes().zip(h.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0)
        })
    }

    /// Applies one `ACL SETUSER` rule; the error is Redis's text for it.
    pub fn apply(&mut self, op: &[u8]) -> Result<(), &'static str> {
        if op.is_empty() {
            return Ok(());
        }
        let lower = op.to_ascii_lowercase();
        match lower.as_slice() {
            b"on" => self.enabled = true,
            b"off" => self.enabled = false,
            b"skip-sanitize-payload" => self.sanitize = Some(false),
            b"sanitize-payload" => self.sanitize = Some(true),
            b"nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            b"resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            b"reset" => {
                for r in [
                    "resetpass",
                    "resetkeys",
                    "resetchannels",
                    "off",
                    "sanitize-payload",
                ] {
                    self.apply(r.as_bytes())?;
                }
                self.apply(b"-@all")?;
            }
            b"allkeys" | b"~*" => {
                self.allkeys = true;
                self.keys.clear();
            }
            b"resetkeys" => {
                self.allkeys = false;
                self.keys.clear();
            }
            b"allchannels" | b"&*" => {
                self.allchannels = true;
                self.channels.clear();
            }
            b"resetchannels" => {
                self.allchannels = false;
                self.channels.clear();
            }
            b"allcommands" | b"+@all" => {
                self.allowed.iter_mut().for_each(|b| *b = true);
                self.future = true;
                self.allcommands = true;
                self.firstargs.clear();
            }
            b"nocommands" | b"-@all" => {
                self.allowed.iter_mut().for_each(|b| *b = false);
                self.future = false;
                self.allcommands = false;
                self.firstargs.clear();
            }
            b"clearselectors" => {}
            _ => return self.apply_other(op),
        }
        Ok(())
    }

    fn apply_other(&mut self, op: &[u8]) -> Result<(), &'static str> {
        const SYNTAX: &str = "Syntax error";
        const UNKNOWN: &str = "Unknown command or category name in ACL";
        const BAD_HASH: &str = "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";
        match op[0] {
            b'>' | b'#' => {
                let h = if op[0] == b'>' {
                    hash(&op[1..])
                } else {
                    valid_hash(&op[1..]).ok_or(BAD_HASH)?
                };
                if !self.passwords.contains(&h) {
                    self.passwords.push(h);
                }
                self.nopass = false;
            }
            b'<' | b'!' => {
                let h = if op[0] == b'<' {
                    hash(&op[1..])
                } else {
                    valid_hash(&op[1..]).ok_or(BAD_HASH)?
                };
                let at =
                    self.passwords.iter().position(|p| *p == h).ok_or(
                        "The password you are trying to remove from the user does not exist",
                    )?;
                self.passwords.remove(at);
            }
            b'~' | b'%' => {
                if self.allkeys {
                    return Err("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns");
                }
                let (mut flags, mut offset) = (0u8, 1usize);
                if op[0] == b'%' {
                    loop {
                        match op.get(offset).map(u8::to_ascii_uppercase) {
                            Some(b'R') if flags & READ == 0 => flags |= READ,
                            Some(b'W') if flags & WRITE == 0 => flags |= WRITE,
                            Some(b'~') => {
                                offset += 1;
                                break;
                            }
                            _ => return Err(SYNTAX),
                        }
                        offset += 1;
                    }
                    if flags == 0 {
                        return Err(SYNTAX);
                    }
                } else {
                    flags = READ | WRITE;
                }
                let pat = &op[offset..];
                if has_spaces(pat) {
                    return Err(SYNTAX);
                }
                match self.keys.iter_mut().find(|(p, _)| p == pat) {
                    Some((_, f)) => *f |= flags,
                    None => self.keys.push((Bytes::copy_from_slice(pat), flags)),
                }
                self.allkeys = false;
            }
            b'&' => {
                if self.allchannels {
                    return Err("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels");
                }
                let pat = &op[1..];
                if has_spaces(pat) {
                    return Err(SYNTAX);
                }
                if !self.channels.iter().any(|c| c == pat) {
                    self.channels.push(Bytes::copy_from_slice(pat));
                }
                self.allchannels = false;
            }
            b'+' | b'-' if op.get(1) == Some(&b'@') => {
                let cat = String::from_utf8_lossy(&op[2..]).to_ascii_lowercase();
                if !CATEGORIES.contains(&cat.as_str()) {
                    return Err(UNKNOWN);
                }
                self.set_category(&cat, op[0] == b'+');
            }
            b'+' => {
                let name = String::from_utf8_lossy(&op[1..]).into_owned();
                match name.rsplit_once('|') {
                    None => {
                        let id = lookup(&name).ok_or(UNKNOWN)?;
                        self.change(id, true);
                    }
                    Some((cmd, sub)) => {
                        let id = lookup(cmd).ok_or(UNKNOWN)?;
                        if commands().parent[id].is_some() {
                            return Err("Allowing first-arg of a subcommand is not supported");
                        }
                        if sub.is_empty() {
                            return Err(SYNTAX);
                        }
                        if commands().subs[id].is_empty() {
                            let args = self.firstargs.entry(id).or_default();
                            if !args.iter().any(|a| a.eq_ignore_ascii_case(sub)) {
                                args.push(sub.to_string());
                            }
                        } else {
                            let sid = lookup(&name).ok_or(UNKNOWN)?;
                            self.change(sid, true);
                        }
                    }
                }
            }
            b'-' => {
                let name = String::from_utf8_lossy(&op[1..]).into_owned();
                let id = lookup(&name).ok_or(UNKNOWN)?;
                self.change(id, false);
            }
            b'(' => return Err(SYNTAX),
            _ => return Err(SYNTAX),
        }
        Ok(())
    }

    /// Allows or denies command `id` (and a container's subcommands).
    fn change(&mut self, id: usize, allow: bool) {
        self.set_bit(id, allow);
        self.firstargs.remove(&id);
        for &sub in &commands().subs[id] {
            self.set_bit(sub, allow);
        }
    }

    fn set_bit(&mut self, id: usize, allow: bool) {
        self.allowed[id] = allow;
        if !allow {
            self.allcommands = false;
        }
    }

    fn set_category(&mut self, cat: &str, allow: bool) {
        let c = commands();
        for id in 0..c.all.len() {
            if in_category(c.all[id], cat) {
                // As Redis: a container in the category takes its subcommands along.
                self.change(id, allow);
            }
        }
    }

    /// Whether the user may run `spec` with `args` (the command name first): the command, then
    /// each key against the patterns with the permission the command needs on it.
    pub fn check(&self, spec: &CommandSpec, args: &[Bytes]) -> Result<(), Denied> {
        if !self.allcommands && !spec.has_flag("no_auth") {
            let id = id_of(spec);
            if !self.allowed[id] {
                let idx = if commands().parent[id].is_some() {
                    2
                } else {
                    1
                };
                let ok =
                    self.firstargs
                        .get(&id)
                        .zip(args.get(idx))
                        .is_some_and(|(allowed, arg)| {
                            allowed
                                .iter()
                                .any(|a| a.as_bytes().eq_ignore_ascii_case(arg))
                        });
                if !ok {
                    return Err(Denied::Command);
                }
            }
        }
        if !self.allkeys {
            for (pos, need) in key_access(spec, args) {
                let key = &args[pos];
                let ok = self.keys.iter().any(|(pat, flags)| {
                    flags & need == need && hypercache_cluster::glob::matches(pat, key)
                });
                if !ok {
                    return Err(Denied::Key(pos));
                }
            }
        }
        if !self.allchannels {
            let pattern = spec.fullname == "psubscribe";
            let positions = match spec.fullname {
                "publish" => 1..2,
                "subscribe" | "psubscribe" => 1..args.len(),
                _ => 0..0,
            };
            for pos in positions {
                if !self.may_use_channel(&args[pos], pattern) {
                    return Err(Denied::Channel(pos));
                }
            }
        }
        Ok(())
    }

    /// Whether the user may publish or subscribe to `channel` (a pattern subscription, when
    /// `pattern`, must equal one of the user's channel patterns, as Redis requires).
    pub fn may_use_channel(&self, channel: &[u8], pattern: bool) -> bool {
        self.allchannels
            || self.channels.iter().any(|p| {
                if pattern {
                    p.as_ref() == channel
                } else {
                    hypercache_cluster::glob::matches(p, channel)
                }
            })
    }

    /// The rules in `ACL LIST`'s form (after `user <name> `).
    pub fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(if self.enabled { b"on " } else { b"off " });
        if self.nopass {
            out.extend_from_slice(b"nopass ");
        }
        match self.sanitize {
            Some(false) => out.extend_from_slice(b"skip-sanitize-payload "),
            Some(true) => out.extend_from_slice(b"sanitize-payload "),
            None => {}
        }
        for p in &self.passwords {
            out.push(b'#');
            out.extend_from_slice(p.as_bytes());
            out.push(b' ');
        }
        for k in self.key_rules() {
            out.extend_from_slice(&k);
            out.push(b' ');
        }
        if self.allchannels {
            out.extend_from_slice(b"&* ");
        } else {
            out.extend_from_slice(b"resetchannels ");
            for c in &self.channels {
                out.push(b'&');
                out.extend_from_slice(c);
                out.push(b' ');
            }
        }
        out.extend_from_slice(self.command_rules().as_bytes());
        out
    }

    /// `ACL GETUSER`'s flags.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        match self.sanitize {
            Some(false) => f.push("skip-sanitize-payload"),
            Some(true) => f.push("sanitize-payload"),
            None => {}
        }
        f
    }

    /// Each key pattern as a rule (`~p`, `%R~p`, `%W~p`).
    pub fn key_rules(&self) -> Vec<Vec<u8>> {
        if self.allkeys {
            return vec![b"~*".to_vec()];
        }
        self.keys
            .iter()
            .map(|(p, f)| {
                let mut r = match *f {
                    READ => b"%R~".to_vec(),
                    WRITE => b"%W~".to_vec(),
                    _ => b"~".to_vec(),
                };
                r.extend_from_slice(p);
                r
            })
            .collect()
    }

    /// Each channel pattern as a rule (`&p`).
    pub fn channel_rules(&self) -> Vec<Vec<u8>> {
        if self.allchannels {
            return vec![b"&*".to_vec()];
        }
        self.channels
            .iter()
            .map(|c| [b"&".as_slice(), c].concat())
            .collect()
    }

    /// The command rules that rebuild exactly this user's commands, by Redis's method: `+@all`
    /// or `-@all`, then the categories that cover the most of what is left with the fewest
    /// exceptions, then single commands.
    pub fn command_rules(&self) -> String {
        let c = commands();
        let additive = !self.future;
        let mut rules = String::from(if additive { "-@all " } else { "+@all " });
        let mut fake = User::new(b"");
        fake.apply(if additive { b"-@all" } else { b"+@all" })
            .expect("valid");
        let mut temp = self.allowed.clone();
        let mut applied = [false; 21];
        loop {
            let mut best = None;
            let (mut mindiff, mut maxsame) = (usize::MAX, 0usize);
            for (j, cat) in CATEGORIES.iter().enumerate() {
                if applied[j] {
                    continue;
                }
                let (mut on, mut off) = (0usize, 0usize);
                for (id, spec) in c.all.iter().enumerate() {
                    if in_category(spec, cat) {
                        if temp[id] {
                            on += 1;
                        } else {
                            off += 1;
                        }
                    }
                }
                let (diff, same) = if additive { (off, on) } else { (on, off) };
                if same > diff && (diff < mindiff || (diff == mindiff && same > maxsame)) {
                    best = Some(j);
                    mindiff = diff;
                    maxsame = same;
                }
            }
            let Some(j) = best else { break };
            let cat = CATEGORIES[j];
            fake.set_category(cat, additive);
            // The temporary copy gets the inverse, so the category counts no more.
            for (id, spec) in c.all.iter().enumerate() {
                if in_category(spec, cat) {
                    temp[id] = !additive;
                    for &sub in &c.subs[id] {
                        temp[sub] = !additive;
                    }
                }
            }
            rules.push_str(if additive { "+@" } else { "-@" });
            rules.push_str(cat);
            rules.push(' ');
            applied[j] = true;
        }
        // The single commands left, alphabetically, each container followed by its
        // subcommands (Redis: its dictionary's order, which changes from one start to the next).
        for &id in single_order() {
            if self.allowed[id] != fake.allowed[id] {
                rules.push(if self.allowed[id] { '+' } else { '-' });
                rules.push_str(c.all[id].fullname);
                rules.push(' ');
                let allow = self.allowed[id];
                fake.change(id, allow);
            }
            if !self.allowed[id] {
                for arg in self.firstargs.get(&id).into_iter().flatten() {
                    rules.push('+');
                    rules.push_str(c.all[id].fullname);
                    rules.push('|');
                    rules.push_str(arg);
                    rules.push(' ');
                }
            }
        }
        rules.pop();
        rules
    }
}

/// Command ids in the order single-command rules are written: top-level commands by name, each
/// followed by its subcommands by name.
fn single_order() -> &'static [usize] {
    static O: OnceLock<Vec<usize>> = OnceLock::new();
    O.get_or_init(|| {
        let c = commands();
        let mut top: Vec<usize> = (0..c.all.len())
            .filter(|&i| c.parent[i].is_none())
            .collect();
        top.sort_by_key(|&i| c.all[i].name);
        let mut out = Vec::new();
        for t in top {
            out.push(t);
            let mut subs = c.subs[t].clone();
            subs.sort_by_key(|&i| c.all[i].name);
            out.extend(subs);
        }
        out
    })
}

/// The key arguments of a command and the permissions each needs (read: the command reads the
/// value; write: it creates, changes or deletes it), from Redis 7.0's key specs.
pub fn key_access(spec: &CommandSpec, args: &[Bytes]) -> Vec<(usize, u8)> {
    let name = spec.fullname;
    let positions = spec.key_positions(args);
    positions
        .into_iter()
        .enumerate()
        .map(|(i, pos)| {
            let need = match name {
                "get" | "mget" | "getrange" | "substr" | "ttl" | "pttl" | "expiretime"
                | "pexpiretime" | "eval_ro" | "evalsha_ro" | "fcall_ro" | "dump" | "lcs"
                | "getbit" | "bitcount" | "bitpos" | "bitfield_ro" => READ,
                "getset" | "getdel" | "getex" | "incr" | "decr" | "incrby" | "decrby"
                | "incrbyfloat" | "eval" | "evalsha" | "fcall" | "setbit" | "bitfield" => {
                    READ | WRITE
                }
                "bitop" if i > 0 => READ,
                "set" => {
                    if args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"get")) {
                        READ | WRITE
                    } else {
                        WRITE
                    }
                }
                "rename" | "renamenx" if i == 0 => READ | WRITE,
                "copy" if i == 0 => READ,
                "strlen" | "exists" | "touch" | "type" | "watch" => 0,
                _ if spec.has_flag("write") => WRITE,
                _ => 0,
            };
            (pos, need)
        })
        .collect()
}

/// A password's SHA-256, in lower-case hex (how Redis stores and shows it).
pub fn hash(pass: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, pass);
    hex(d.as_ref())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `#<hash>`: exactly 64 lower-case hex characters.
fn valid_hash(h: &[u8]) -> Option<String> {
    (h.len() == 64 && h.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| String::from_utf8_lossy(h).into_owned())
}

fn has_spaces(s: &[u8]) -> bool {
    s.iter().any(|c| c.is_ascii_whitespace() || *c == 0)
}

/// Whether a user name is acceptable (no spaces or NUL, as Redis).
pub fn valid_name(name: &[u8]) -> bool {
    !has_spaces(name)
}

/// Applies `rules` to a copy of `base` (or a new user called `name`); all of them or none.
/// The error is `ACL SETUSER`'s text.
pub fn set_user(base: Option<&User>, name: &[u8], rules: &[Bytes]) -> Result<User, String> {
    let mut u = base.cloned().unwrap_or_else(|| User::new(name));
    // Selectors may span arguments ("(~a" "+get)"); they are refused, but the error names the
    // selector as Redis would.
    let mut i = 0;
    while i < rules.len() {
        let r = &rules[i];
        if r.first() == Some(&b'(') && r.last() != Some(&b')') {
            let mut j = i;
            while j < rules.len() && rules[j].last() != Some(&b')') {
                j += 1;
            }
            if j == rules.len() {
                return Err(format!(
                    "Unmatched parenthesis in acl selector starting at '{}'.",
                    String::from_utf8_lossy(r)
                ));
            }
            let merged: Vec<u8> = rules[i..=j].join(&b' ');
            return Err(format!(
                "Error in ACL SETUSER modifier '{}': Syntax error",
                String::from_utf8_lossy(&merged)
            ));
        }
        u.apply(r).map_err(|e| {
            format!(
                "Error in ACL SETUSER modifier '{}': {e}",
                String::from_utf8_lossy(r)
            )
        })?;
        i += 1;
    }
    Ok(u)
}

/// Why an ACL log entry was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A command was refused.
    Command,
    /// A key was refused.
    Key,
    /// A channel was refused.
    Channel,
    /// A failed AUTH (or HELLO ... AUTH).
    Auth,
}

/// Where the refusal happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A command sent by the client.
    Toplevel,
    /// A command inside MULTI/EXEC.
    Multi,
    /// A command called by a script.
    Lua,
}

/// One `ACL LOG` entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Times it happened (similar entries within 60 s are grouped).
    pub count: u64,
    /// Why.
    pub reason: Reason,
    /// Where.
    pub context: Context,
    /// The command, key, channel or (for AUTH) the command name.
    pub object: Bytes,
    /// The user.
    pub username: Bytes,
    /// When, last.
    pub at: Instant,
    /// The client's `CLIENT LIST` line.
    pub client_info: String,
}

/// Entries within this time of each other are grouped (Redis's
/// `ACL_LOG_GROUPING_MAX_TIME_DELTA`).
const LOG_GROUPING_MS: u128 = 60_000;

/// The node's users and ACL log.
pub struct Acl {
    users: RwLock<BTreeMap<Bytes, Arc<User>>>,
    /// Changes with every change to any user.
    generation: AtomicU64,
    log: Mutex<VecDeque<LogEntry>>,
}

impl Acl {
    /// Only the default user, with `requirepass`.
    pub fn new(requirepass: &str) -> Acl {
        let mut users = BTreeMap::new();
        users.insert(
            Bytes::from_static(b"default"),
            Arc::new(User::default_user(requirepass)),
        );
        Acl {
            users: RwLock::new(users),
            generation: AtomicU64::new(1),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// The current generation: a connection holding a user of an older one re-reads it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The user called `name`.
    pub fn get(&self, name: &[u8]) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    /// The default user.
    pub fn default_user(&self) -> Arc<User> {
        self.get(b"default")
            .expect("the default user always exists")
    }

    /// Every user, in name order.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }

    /// Stores `user` (new or changed).
    pub fn put(&self, user: User) {
        self.users.write().insert(user.name.clone(), Arc::new(user));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes the users named (never `default`); returns how many existed.
    pub fn delete(&self, names: &[Bytes]) -> usize {
        let mut users = self.users.write();
        let n = names
            .iter()
            .filter(|n| n.as_ref() != b"default" && users.remove(n.as_ref()).is_some())
            .count();
        drop(users);
        self.generation.fetch_add(1, Ordering::AcqRel);
        n
    }

    /// Replaces every user (ACL LOAD); a file without `default` gets a fresh one (every
    /// command, no password), as in Redis.
    pub fn replace(&self, users: Vec<User>) {
        let mut map = self.users.write();
        map.clear();
        for u in users {
            map.insert(u.name.clone(), Arc::new(u));
        }
        if !map.contains_key(b"default".as_slice()) {
            map.insert(
                Bytes::from_static(b"default"),
                Arc::new(User::default_user("")),
            );
        }
        drop(map);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// `requirepass` changed: the default user's passwords follow it.
    pub fn set_default_password(&self, pass: &str) {
        let mut u = (*self.default_user()).clone();
        u.set_password(pass);
        self.put(u);
    }

    /// Adds an entry to the log (grouping it with a similar recent one), keeping at most
    /// `max_len`.
    pub fn log(&self, mut entry: LogEntry, max_len: usize) {
        let mut log = self.log.lock();
        let similar = log.iter().take(10).position(|e| {
            e.reason == entry.reason
                && e.context == entry.context
                && e.object == entry.object
                && e.username == entry.username
                && entry.at.duration_since(e.at).as_millis() < LOG_GROUPING_MS
        });
        if let Some(i) = similar {
            let old = log.remove(i).expect("found");
            entry.count = old.count + 1;
        }
        log.push_front(entry);
        log.truncate(max_len);
    }

    /// The newest `count` log entries.
    pub fn log_entries(&self, count: usize) -> Vec<LogEntry> {
        self.log.lock().iter().take(count).cloned().collect()
    }

    /// Empties the log.
    pub fn log_reset(&self) {
        self.log.lock().clear();
    }

    /// Loads `path` (`ACL LOAD`, and `aclfile` at start): every user, or none and the reasons.
    pub fn load_file(&self, path: &str) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            // strerror's text, as Redis prints it (without Rust's "(os error N)").
            let why = e.to_string();
            let why = why.split(" (os error").next().unwrap_or(&why).to_string();
            format!("Error loading ACLs, opening file '{path}': {why}")
        })?;
        let users = parse_file(&text, path)?;
        self.replace(users);
        Ok(())
    }

    /// Writes every user to `path` (`ACL SAVE`), through a temporary file renamed over it.
    pub fn save_file(&self, path: &str) -> std::io::Result<()> {
        let mut text = Vec::new();
        for line in self.list() {
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
        let tmp = format!("{path}.tmp-{}", std::process::id());
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, path)
    }

    /// Every user in `ACL LIST`'s form, one line each (`ACL SAVE`, `ACL LIST`).
    pub fn list(&self) -> Vec<Vec<u8>> {
        self.users()
            .iter()
            .map(|u| {
                let mut line = b"user ".to_vec();
                line.extend_from_slice(&u.name);
                line.push(b' ');
                line.extend_from_slice(&u.describe());
                line
            })
            .collect()
    }
}

/// Parses an ACL file (`user <name> <rules...>` per line, blank lines skipped). The error
/// lists every problem in Redis's `ACL LOAD` words.
pub fn parse_file(text: &str, path: &str) -> Result<Vec<User>, String> {
    let mut users: Vec<User> = Vec::new();
    let mut errors = String::new();
    for (n, line) in text.split('\n').enumerate() {
        let n = n + 1;
        let line = line.trim_matches([' ', '\t', '\r', '\n']);
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        if words.len() < 2 || words[0] != "user" {
            errors +=
                &format!("{path}:{n} should start with user keyword followed by the username. ");
            continue;
        }
        let name = words[1].as_bytes();
        if users.iter().any(|u| u.name.as_ref() == name) {
            errors += &format!("WARNING: Duplicate user '{}' found on line {n}. ", words[1]);
            continue;
        }
        let mut u = User::new(name);
        let mut syntax_error = false;
        let mut ok = true;
        for rule in &words[2..] {
            let rule = rule.trim_matches(['\t', '\r', '\n']);
            if let Err(e) = u.apply(rule.as_bytes()) {
                ok = false;
                if e.starts_with("Unknown command") {
                    errors += &format!("{path}:{n}: Error in applying operation '{rule}': {e}. ");
                } else if !syntax_error {
                    errors += &format!("{path}:{n}: {e}. ");
                    syntax_error = true;
                }
            }
        }
        if ok {
            users.push(u);
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        errors += "WARNING: ACL errors detected, no change to the previously active ACL rules was performed";
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(rules: &[&str]) -> User {
        let rules: Vec<Bytes> = rules
            .iter()
            .map(|r| Bytes::copy_from_slice(r.as_bytes()))
            .collect();
        set_user(None, b"u", &rules).unwrap()
    }

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn check(u: &User, a: &[&str]) -> Result<(), Denied> {
        let a = args(a);
        let spec = table::lookup(&a[0]).unwrap();
        let spec = if spec.subcommands.is_empty() {
            spec
        } else {
            spec.subcommand(&a[1]).unwrap()
        };
        u.check(spec, &a)
    }

    #[test]
    fn descriptions_are_redis_s_for_the_common_forms() {
        // Each checked against redis-server 7.0.15 (ACL LIST).
        assert_eq!(
            String::from_utf8(User::default_user("").describe()).unwrap(),
            "on nopass ~* &* +@all"
        );
        assert_eq!(
            String::from_utf8(User::new(b"alice").describe()).unwrap(),
            "off resetchannels -@all"
        );
        let u = user(&[
            "on", ">pw", "~cache:*", "%R~ro:*", "&chan", "+@read", "+set",
        ]);
        assert_eq!(
            String::from_utf8(u.describe()).unwrap(),
            "on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~cache:* %R~ro:* resetchannels &chan -@all +@read +set"
        );
        let u = user(&["on", "nopass", "+@all", "-flushall", "~*"]);
        assert_eq!(
            String::from_utf8(u.describe()).unwrap(),
            "on nopass ~* resetchannels +@all -flushall"
        );
        let u = user(&["+select|0", "+client|id"]);
        assert_eq!(u.command_rules(), "-@all +client|id +select|0");
    }

    #[test]
    fn checks_follow_commands_keys_and_read_write_permissions() {
        let u = user(&[
            "on",
            "nopass",
            "+@all",
            "-flushall",
            "%R~ro:*",
            "%W~wo:*",
            "~rw:*",
        ]);
        assert_eq!(check(&u, &["flushall"]), Err(Denied::Command));
        assert_eq!(check(&u, &["get", "ro:1"]), Ok(()));
        assert_eq!(check(&u, &["set", "ro:1", "v"]), Err(Denied::Key(1)));
        assert_eq!(check(&u, &["set", "wo:1", "v"]), Ok(()));
        assert_eq!(
            check(&u, &["set", "wo:1", "v", "GET"]),
            Err(Denied::Key(1)),
            "SET ... GET reads"
        );
        assert_eq!(check(&u, &["incr", "rw:1"]), Ok(()));
        assert_eq!(check(&u, &["incr", "wo:1"]), Err(Denied::Key(1)));
        assert_eq!(
            check(&u, &["mget", "ro:1", "rw:2", "x"]),
            Err(Denied::Key(3))
        );
        // EXISTS needs neither permission: any pattern that matches will do.
        assert_eq!(check(&u, &["exists", "wo:1"]), Ok(()));
        assert_eq!(check(&u, &["exists", "x"]), Err(Denied::Key(1)));
        assert_eq!(
            check(&u, &["eval", "return 1", "1", "ro:1"]),
            Err(Denied::Key(3))
        );
        assert_eq!(check(&u, &["eval", "return 1", "1", "rw:1"]), Ok(()));
        // First arguments and subcommands.
        let u = user(&["+select|0", "+client|id", "~*"]);
        assert_eq!(check(&u, &["select", "0"]), Ok(()));
        assert_eq!(check(&u, &["select", "1"]), Err(Denied::Command));
        assert_eq!(check(&u, &["client", "id"]), Ok(()));
        assert_eq!(check(&u, &["client", "kill", "x"]), Err(Denied::Command));
        // AUTH and HELLO are for everyone.
        assert_eq!(check(&u, &["auth", "p"]), Ok(()));
    }

    #[test]
    fn setuser_errors_are_redis_s_and_apply_nothing() {
        let e = |r: &[&str]| set_user(None, b"u", &args(r)).unwrap_err();
        assert_eq!(
            e(&["on", "+nosuchcommand"]),
            "Error in ACL SETUSER modifier '+nosuchcommand': Unknown command or category name in ACL"
        );
        assert_eq!(
            e(&["~*", "~foo"]),
            "Error in ACL SETUSER modifier '~foo': Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"
        );
        assert_eq!(
            e(&["#abc"]),
            "Error in ACL SETUSER modifier '#abc': The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters"
        );
        assert_eq!(
            e(&["<nope"]),
            "Error in ACL SETUSER modifier '<nope': The password you are trying to remove from the user does not exist"
        );
        assert_eq!(
            e(&["+client|id|x"]),
            "Error in ACL SETUSER modifier '+client|id|x': Allowing first-arg of a subcommand is not supported"
        );
        assert_eq!(
            e(&["%X~a"]),
            "Error in ACL SETUSER modifier '%X~a': Syntax error"
        );
        assert_eq!(
            e(&["(~a", "+get"]),
            "Unmatched parenthesis in acl selector starting at '(~a'."
        );
    }

    #[test]
    fn passwords_hash_with_sha256_and_a_disabled_user_never_authenticates() {
        let mut u = user(&["on", ">secret"]);
        assert!(u.check_password(b"secret"));
        assert!(!u.check_password(b"Secret"));
        u.apply(b"off").unwrap();
        assert!(!u.check_password(b"secret"));
        assert_eq!(
            hash(b"pw"),
            "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4"
        );
    }

    #[test]
    fn acl_files_load_all_or_nothing() {
        let users = parse_file(
            "user default on nopass ~* &* +@all\n\nuser a on >p ~k:* +get\n",
            "f",
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        let e = parse_file("user a on +nope\nbad line\n", "/etc/users.acl").unwrap_err();
        assert_eq!(
            e,
            "/etc/users.acl:1: Error in applying operation '+nope': Unknown command or category name in ACL. /etc/users.acl:2 should start with user keyword followed by the username. WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        );
    }
}
