//! Functions (Redis 7): libraries loaded with `FUNCTION LOAD`, whose code registers functions
//! with `redis.register_function`, called with `FCALL`/`FCALL_RO`.
//!
//! A library's code runs once, at load, in an environment that only has the load API
//! (`redis.register_function`, `redis.log`, the version); its functions then run in that same
//! environment opened to the (read-only) globals, as in Redis. `FUNCTION DUMP` writes
//! HyperCache's own payload (the libraries' code, checksummed), which `FUNCTION RESTORE` reads;
//! Redis's payload (RDB-encoded) is not read.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercache_resp::Frame;
use mlua::{Function, HookTriggers, Lua, MultiValue, Table, Value, VmState};

use super::{error_message, Engine, Flags, Scripts, CODED};

/// A loaded library.
pub(crate) struct Library {
    /// Its code, shebang included (`FUNCTION LIST WITHCODE`, `FUNCTION DUMP`).
    pub(crate) code: Bytes,
    /// Its functions' names, in registration order.
    functions: Vec<String>,
}

/// A registered function (the engine keys them by lower-case name: names are
/// case-insensitive, as in Redis).
pub(crate) struct FunctionDef {
    library: String,
    pub(crate) callback: std::sync::Arc<Function>,
    pub(crate) flags: Flags,
    description: Option<String>,
}

/// What `redis.register_function` collects while a library loads (Lua app data).
struct LoadCtx {
    registered: Vec<(String, Function, Flags, Option<String>)>,
}

/// How long a library's code may run at load (Redis: 500 ms).
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// The table a library's code sees while it loads: `redis` with `register_function`, `log`,
/// the log levels and the version.
pub(super) fn load_api(lua: &Lua, redis: &Table) -> mlua::Result<Table> {
    let r = lua.create_table()?;
    for name in [
        "log",
        "LOG_DEBUG",
        "LOG_VERBOSE",
        "LOG_NOTICE",
        "LOG_WARNING",
        "REDIS_VERSION",
        "REDIS_VERSION_NUM",
    ] {
        r.raw_set(name, redis.raw_get::<Value>(name)?)?;
    }
    r.raw_set("register_function", lua.create_function(register_function)?)?;
    let api = lua.create_table()?;
    api.raw_set("redis", r)?;
    Ok(api)
}

fn raise(text: &str) -> mlua::Error {
    mlua::Error::runtime(format!("{CODED}ERR {text}"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn string_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
        v => super::as_number(v).map(|n| hypercache_resp::num::format_g(n, 14)),
    }
}

fn parse_flags(t: &Table) -> mlua::Result<Flags> {
    let mut flags = Flags::default();
    for pair in t.clone().pairs::<Value, Value>() {
        let (_, v) = pair?;
        let name = match v {
            Value::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
            _ => return Err(raise("unknown flag given")),
        };
        match name.as_str() {
            "no-writes" => flags.no_writes = true,
            "allow-oom" => flags.allow_oom = true,
            "allow-stale" => flags.allow_stale = true,
            "no-cluster" => flags.no_cluster = true,
            "allow-cross-slot-keys" => flags.allow_cross_slot = true,
            _ => return Err(raise("unknown flag given")),
        }
    }
    Ok(flags)
}

/// `redis.register_function(name, callback)` or `redis.register_function{function_name=...,
/// callback=..., flags={...}, description=...}`.
fn register_function(lua: &Lua, a: MultiValue) -> mlua::Result<()> {
    if lua.app_data_ref::<LoadCtx>().is_none() {
        return Err(raise(
            "redis.register_function can only be called on FUNCTION LOAD command",
        ));
    }
    if a.is_empty() || a.len() > 2 {
        return Err(raise(
            "wrong number of arguments to redis.register_function",
        ));
    }
    let (name, callback, flags, description) = if a.len() == 2 {
        let Some(name) = string_of(&a[0]) else {
            return Err(raise(
                "first argument to redis.register_function must be a string",
            ));
        };
        let Value::Function(f) = &a[1] else {
            return Err(raise(
                "second argument to redis.register_function must be a function",
            ));
        };
        (name, f.clone(), Flags::default(), None)
    } else {
        let Value::Table(t) = &a[0] else {
            return Err(raise("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments)."));
        };
        let (mut name, mut callback, mut flags, mut description) =
            (None, None, Flags::default(), None);
        for pair in t.clone().pairs::<Value, Value>() {
            let (k, v) = pair?;
            let Some(key) = string_of(&k) else {
                return Err(raise(
                    "named argument key given to redis.register_function is not a string",
                ));
            };
            match key.to_ascii_lowercase().as_str() {
                "function_name" => match string_of(&v) {
                    Some(n) => name = Some(n),
                    None => return Err(raise("function_name argument given to redis.register_function must be a string")),
                },
                "description" => match string_of(&v) {
                    Some(d) => description = Some(d),
                    None => return Err(raise("description argument given to redis.register_function must be a string")),
                },
                "callback" => match v {
                    Value::Function(f) => callback = Some(f),
                    _ => return Err(raise("callback argument given to redis.register_function must be a function")),
                },
                "flags" => match v {
                    Value::Table(f) => flags = parse_flags(&f)?,
                    _ => return Err(raise("flags argument to redis.register_function must be a table representing function flags")),
                },
                _ => return Err(raise("unknown argument given to redis.register_function")),
            }
        }
        let Some(name) = name else {
            return Err(raise(
                "redis.register_function must get a function name argument",
            ));
        };
        let Some(callback) = callback else {
            return Err(raise(
                "redis.register_function must get a callback argument",
            ));
        };
        (name, callback, flags, description)
    };
    if !valid_name(&name) {
        // Redis 7.0 says "Library" for a bad function name too.
        return Err(raise("Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"));
    }
    let mut ctx = lua.app_data_mut::<LoadCtx>().expect("loading");
    if ctx.registered.iter().any(|(n, ..)| *n == name) {
        return Err(raise("Function already exists in the library"));
    }
    ctx.registered.push((name, callback, flags, description));
    Ok(())
}

/// The flags a function declared, in Redis's order, as `FUNCTION LIST` shows them.
fn flag_names(f: &Flags) -> Vec<&'static str> {
    let mut out = Vec::new();
    if f.no_writes {
        out.push("no-writes");
    }
    if f.allow_oom {
        out.push("allow-oom");
    }
    if f.allow_stale {
        out.push("allow-stale");
    }
    if f.no_cluster {
        out.push("no-cluster");
    }
    if f.allow_cross_slot {
        out.push("allow-cross-slot-keys");
    }
    out
}

/// Magic of HyperCache's `FUNCTION DUMP` payload, then a version byte.
const DUMP_MAGIC: &[u8] = b"HCFN";
const DUMP_VERSION: u8 = 1;

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

impl Engine {
    /// A `FUNCTION` subcommand that needs the VM: LOAD, LIST, DELETE, FLUSH, DUMP, RESTORE.
    pub(super) fn function_command(&mut self, scripts: &Scripts, a: &[Bytes]) -> Frame {
        let sub = a[1].to_ascii_lowercase();
        let reply = match sub.as_slice() {
            b"load" => {
                let mut replace = false;
                let mut i = 2;
                while i + 1 < a.len() {
                    if a[i].eq_ignore_ascii_case(b"replace") {
                        replace = true;
                    } else {
                        return Frame::Error(
                            format!(
                                "ERR Unknown option given: {}",
                                String::from_utf8_lossy(&a[i])
                            )
                            .into(),
                        );
                    }
                    i += 1;
                }
                if i >= a.len() {
                    return Frame::error("ERR Function code is missing");
                }
                match self.load_library(&a[i], replace) {
                    Ok(name) => bulk(&name),
                    Err(e) => Frame::Error(e.into()),
                }
            }
            b"list" => self.list(a),
            b"delete" => {
                let name = String::from_utf8_lossy(&a[2]).into_owned();
                if self.remove_library(&name) {
                    Frame::ok()
                } else {
                    Frame::error("ERR Library not found")
                }
            }
            b"flush" => {
                if a.len() > 3 {
                    return syntax_error(&a[1]);
                }
                match a.get(2) {
                    None => {}
                    Some(m)
                        if a.len() == 3
                            && (m.eq_ignore_ascii_case(b"sync")
                                || m.eq_ignore_ascii_case(b"async")) => {}
                    Some(_) => {
                        return Frame::error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
                    }
                }
                self.libraries.clear();
                self.functions.clear();
                let _ = self.lua.gc_collect();
                Frame::ok()
            }
            b"dump" => Frame::Bulk(self.dump().into()),
            b"restore" => self.restore(a),
            _ => Frame::error("ERR unknown FUNCTION subcommand"),
        };
        scripts
            .libraries
            .store(self.libraries.len(), Ordering::Relaxed);
        scripts
            .functions
            .store(self.functions.len(), Ordering::Relaxed);
        reply
    }

    fn remove_library(&mut self, name: &str) -> bool {
        let Some(lib) = self.libraries.remove(name) else {
            return false;
        };
        for f in &lib.functions {
            self.functions.remove(&f.to_ascii_lowercase());
        }
        true
    }

    /// `FUNCTION LOAD [REPLACE] code`: the library's name, or Redis's error text.
    fn load_library(&mut self, code: &Bytes, replace: bool) -> Result<String, String> {
        if !code.starts_with(b"#!") {
            return Err("ERR Missing library metadata".into());
        }
        let Some(end) = code.iter().position(|&c| c == b'\n') else {
            return Err("ERR Invalid library metadata".into());
        };
        let Ok(parts) = hypercache_resp::args::split_args(&code[..end]) else {
            return Err("ERR Invalid library metadata".into());
        };
        let parts: Vec<String> = parts
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let Some(first) = parts.first() else {
            return Err("ERR Invalid library metadata".into());
        };
        let engine = first.trim_start_matches("#!").to_string();
        let mut name: Option<String> = None;
        for part in &parts[1..] {
            match part.strip_prefix("name=") {
                Some(n) if name.is_none() => name = Some(n.to_string()),
                Some(_) => {
                    return Err(
                        "ERR Invalid metadata value, name argument was given multiple times".into(),
                    )
                }
                None => return Err(format!("ERR Invalid metadata value given: {part}")),
            }
        }
        let Some(name) = name else {
            return Err("ERR Library name was not given".into());
        };
        if !valid_name(&name) {
            return Err("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long".into());
        }
        if !engine.eq_ignore_ascii_case("lua") {
            return Err(format!("ERR Engine '{engine}' not found"));
        }
        if self.libraries.contains_key(&name) && !replace {
            return Err(format!("ERR Library '{name}' already exists"));
        }
        let f = self
            .lua
            .load(&code[end..])
            .set_name("@user_function")
            .set_mode(mlua::chunk::ChunkMode::Text)
            .into_function()
            .map_err(|e| format!("ERR Error compiling function: {}", error_message(&e)))?;
        let (env, open): (Table, Function) = self
            .library_env
            .call(self.load_api.clone())
            .map_err(|e| format!("ERR {}", error_message(&e)))?;
        self.lua.set_app_data(LoadCtx {
            registered: Vec::new(),
        });
        let started = Instant::now();
        let _ = self.lua.set_hook(
            HookTriggers::new().every_nth_instruction(100_000),
            move |_, _| {
                if started.elapsed() > LOAD_TIMEOUT {
                    return Err(mlua::Error::runtime(format!(
                        "{CODED}ERR FUNCTION LOAD timeout"
                    )));
                }
                Ok(VmState::Continue)
            },
        );
        let result = self.load_runner.call::<MultiValue>((f, env));
        self.lua.remove_hook();
        // The next script sets its own hook again.
        self.hooked.set(false);
        let ctx = self.lua.remove_app_data::<LoadCtx>().expect("load context");
        let failed = match result {
            Ok(v) if matches!(v.front(), Some(Value::Boolean(true))) => None,
            Ok(v) => Some(
                v.get(1)
                    .and_then(string_of)
                    .unwrap_or_else(|| "ERR unknown error".into()),
            ),
            Err(e) => Some(format!("ERR {}", error_message(&e))),
        };
        if let Some(e) = failed {
            return Err(format!("ERR Error registering functions: {e}"));
        }
        if ctx.registered.is_empty() {
            return Err("ERR No functions registered".into());
        }
        for (fname, ..) in &ctx.registered {
            if let Some(other) = self.functions.get(&fname.to_ascii_lowercase()) {
                if other.library != name {
                    return Err(format!("ERR Function {fname} already exists"));
                }
            }
        }
        self.remove_library(&name);
        let mut names = Vec::with_capacity(ctx.registered.len());
        for (fname, callback, flags, description) in ctx.registered {
            names.push(fname.clone());
            self.functions.insert(
                fname.to_ascii_lowercase(),
                FunctionDef {
                    library: name.clone(),
                    callback: std::sync::Arc::new(callback),
                    flags,
                    description,
                },
            );
        }
        open.call::<()>(())
            .map_err(|e| format!("ERR {}", error_message(&e)))?;
        self.libraries.insert(
            name.clone(),
            Library {
                code: code.clone(),
                functions: names,
            },
        );
        Ok(name)
    }

    /// `FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]`.
    fn list(&self, a: &[Bytes]) -> Frame {
        let (mut pattern, mut with_code) = (None, false);
        let mut i = 2;
        while i < a.len() {
            if !with_code && a[i].eq_ignore_ascii_case(b"withcode") {
                with_code = true;
            } else if pattern.is_none() && a[i].eq_ignore_ascii_case(b"libraryname") {
                i += 1;
                match a.get(i) {
                    Some(p) => pattern = Some(p.clone()),
                    None => return Frame::error("ERR library name argument was not given"),
                }
            } else {
                return Frame::Error(
                    format!("ERR Unknown argument {}", String::from_utf8_lossy(&a[i])).into(),
                );
            }
            i += 1;
        }
        let mut out = Vec::new();
        for (name, lib) in &self.libraries {
            if let Some(p) = &pattern {
                if !hypercache_cluster::glob::matches(p, name.as_bytes()) {
                    continue;
                }
            }
            let functions = lib
                .functions
                .iter()
                .filter_map(|f| self.functions.get(&f.to_ascii_lowercase()).map(|d| (f, d)))
                .map(|(f, d)| {
                    Frame::Map(vec![
                        (bulk("name"), bulk(f)),
                        (
                            bulk("description"),
                            d.description.as_deref().map_or(Frame::Null, bulk),
                        ),
                        (
                            bulk("flags"),
                            Frame::Set(
                                flag_names(&d.flags)
                                    .into_iter()
                                    .map(Frame::simple)
                                    .collect(),
                            ),
                        ),
                    ])
                })
                .collect();
            let mut entry = vec![
                (bulk("library_name"), bulk(name)),
                (bulk("engine"), bulk("LUA")),
                (bulk("functions"), Frame::Array(functions)),
            ];
            if with_code {
                entry.push((bulk("library_code"), Frame::Bulk(lib.code.clone())));
            }
            out.push(Frame::Map(entry));
        }
        Frame::Array(out)
    }

    /// `FUNCTION DUMP`: magic, version, then each library's code (length-prefixed), then an
    /// XXH3 checksum of all that.
    fn dump(&self) -> Vec<u8> {
        dump_payload(self.libraries.values().map(|l| &l.code))
    }

    /// `FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE]`.
    fn restore(&mut self, a: &[Bytes]) -> Frame {
        if a.len() > 4 {
            return syntax_error(&a[1]);
        }
        #[derive(PartialEq)]
        enum Policy {
            Flush,
            Append,
            Replace,
        }
        let policy = match a.get(3) {
            None => Policy::Append,
            Some(p) if a.len() == 4 && p.eq_ignore_ascii_case(b"flush") => Policy::Flush,
            Some(p) if a.len() == 4 && p.eq_ignore_ascii_case(b"append") => Policy::Append,
            Some(p) if a.len() == 4 && p.eq_ignore_ascii_case(b"replace") => Policy::Replace,
            Some(_) => return Frame::error(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            ),
        };
        let Some(codes) = parse_dump(&a[2]) else {
            return Frame::error("ERR DUMP payload version or checksum are wrong");
        };
        if policy == Policy::Append {
            for code in &codes {
                if let Some(name) = library_name(code) {
                    if self.libraries.contains_key(&name) {
                        return Frame::Error(format!("ERR Library {name} already exists").into());
                    }
                }
            }
        }
        if policy == Policy::Flush {
            self.libraries.clear();
            self.functions.clear();
        }
        for code in codes {
            if let Err(e) = self.load_library(&code, policy == Policy::Replace) {
                return Frame::Error(e.into());
            }
        }
        Frame::ok()
    }
}

/// Redis's reply to a subcommand given the wrong arguments (the name as the client wrote it).
fn syntax_error(sub: &[u8]) -> Frame {
    Frame::Error(
        format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
            String::from_utf8_lossy(sub)
        )
        .into(),
    )
}

/// A `FUNCTION DUMP` payload of these libraries' code: magic, version, each code
/// (length-prefixed), then an XXH3 checksum of all that.
pub(crate) fn dump_payload<'a>(codes: impl Iterator<Item = &'a Bytes>) -> Vec<u8> {
    let mut out = DUMP_MAGIC.to_vec();
    out.push(DUMP_VERSION);
    for code in codes {
        out.extend_from_slice(&(code.len() as u32).to_be_bytes());
        out.extend_from_slice(code);
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// The libraries in a `FUNCTION DUMP` payload of ours, by name, with their code (`None`: not
/// such a payload).
pub(crate) fn libraries_in(payload: &[u8]) -> Option<Vec<(String, Bytes)>> {
    parse_dump(payload)?
        .into_iter()
        .map(|code| Some((library_name(&code)?, code)))
        .collect()
}

/// The libraries' code in a `FUNCTION DUMP` payload, or `None` if it is not one of ours.
fn parse_dump(p: &[u8]) -> Option<Vec<Bytes>> {
    let body_len = p.len().checked_sub(8)?;
    let (body, sum) = p.split_at(body_len);
    if !body.starts_with(DUMP_MAGIC)
        || body.get(DUMP_MAGIC.len()) != Some(&DUMP_VERSION)
        || xxhash_rust::xxh3::xxh3_64(body).to_be_bytes() != sum
    {
        return None;
    }
    let mut at = DUMP_MAGIC.len() + 1;
    let mut out = Vec::new();
    while at < body.len() {
        let len = u32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        out.push(Bytes::copy_from_slice(body.get(at..at + len)?));
        at += len;
    }
    Some(out)
}

/// The `name=` of a library's shebang.
fn library_name(code: &[u8]) -> Option<String> {
    let end = code.iter().position(|&c| c == b'\n')?;
    String::from_utf8_lossy(&code[..end])
        .split_ascii_whitespace()
        .find_map(|p| p.strip_prefix("name=").map(str::to_string))
}
