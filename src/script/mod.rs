//! Lua scripting: `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO` and `SCRIPT`, and Redis 7's
//! functions (`FUNCTION`, `FCALL`: [`functions`]), as Redis 7.0 runs them.
//!
//! - **One VM** (Lua 5.1 through `mlua`, vendored), created on first use. Scripts are compiled
//!   once and kept by SHA1 (`SCRIPT FLUSH` forgets them); the bodies are kept for
//!   `SCRIPT EXISTS`. Function libraries live in the same VM.
//! - **Where a script runs:** with the VM locked, the scripts of one pipeline together
//!   ([`Session::flush_scripts`]). On a single node the caller holds the node's gate exclusive
//!   first ([`crate::exclusive`]), so a script is atomic as in Redis, and it runs on the runtime
//!   worker that serves the connection: its commands are local and complete at once, and a trip
//!   to a blocking thread cost more than the script. One that runs past [`ESCALATE_AFTER_MS`]
//!   hands that worker's other tasks to a new thread and goes on where it is, so the node keeps
//!   answering (`-BUSY`, `SCRIPT KILL`) as Redis does from inside its script hook. (The check is
//!   in the hook, every 100,000 instructions: a single C call that runs long, such as a huge
//!   `string.rep`, holds the worker until it returns.) In a cluster scripts run on a blocking
//!   thread. One with declared keys (which must share one slot: `CROSSSLOT` otherwise) runs at
//!   the slot's coordinator, atomically, over the keys' states that its round read
//!   ([`crate::cluster::script`], [`Scripts::run_in_overlay`]); any other (no keys, or flagged
//!   `allow-cross-slot-keys`, or a function) sends each `redis.call` through its key's
//!   coordinator like a client command (the thread waits for the network): *not* atomic. Every
//!   key a script touches must share its slot.
//! - **`redis.call`** runs the command through a session of the script's own (the "lua client"
//!   of Redis): same handlers, same replies, counted in INFO commandstats and shown by MONITOR.
//!   The reply is converted as Redis converts it. That call, KEYS/ARGV and the script's reply
//!   go through Lua's C API ([`raw`], with its invariants), the rest through mlua.
//! - **Sandbox:** Redis 7.0's globals allow list (no `os`, `io`, `print`, `loadfile`, `dofile`,
//!   `debug`, `getfenv`, `setfenv`, `newproxy`), globals that cannot be created (`Attempt to
//!   modify a readonly table`) or read when missing (`Script attempted to access nonexistent
//!   global variable`), read-only library tables, no binary chunks (`loadstring` of bytecode
//!   is refused: Lua 5.1's loader trusts it).
//! - **Limits:** `busy-reply-threshold` (after which other clients get `-BUSY` and `SCRIPT KILL`
//!   works) and `script-memory-limit` (per script, HyperCache's own).

pub(crate) mod convert;
pub(crate) mod functions;
pub(crate) mod libs;
mod raw;

use ahash::AHashMap as HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hypercache_cluster::slot::{redis_slot, Slot};
use hypercache_resp::num::format_g;
use hypercache_resp::{errors, Frame, Protocol};
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use parking_lot::Mutex;

use crate::session::Session;
use crate::state::{now_ms, ClientHandle, Shared};

/// The node's scripts: the VM, the cache of bodies, and what runs now.
#[derive(Default)]
pub struct Scripts {
    engine: Mutex<Option<Engine>>,
    /// Bodies by SHA1 (lower-case hex).
    bodies: Mutex<HashMap<String, Bytes>>,
    /// Libraries loaded (FUNCTION STATS answers without the VM, even while a function runs).
    libraries: std::sync::atomic::AtomicUsize,
    /// Functions loaded.
    functions: std::sync::atomic::AtomicUsize,
    /// The script running now.
    pub running: Running,
    /// What the last script run propagates to Redis replicas ([`crate::repl`]), taken by the
    /// connection that ran it.
    effects: Mutex<Vec<crate::repl::Effect>>,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts").finish_non_exhaustive()
    }
}

/// The script running now, for `-BUSY` and `SCRIPT KILL`.
#[derive(Debug, Default)]
pub struct Running {
    /// When it started (unix ms), 0 when none runs.
    started_ms: AtomicU64,
    /// `SCRIPT KILL` asked it to stop.
    kill: AtomicBool,
    /// It ran a write command (then it cannot be killed).
    wrote: AtomicBool,
    /// It is a function (FCALL), not an EVAL script: FUNCTION KILL, not SCRIPT KILL, stops it.
    function: AtomicBool,
    /// What runs: its name (a function's, or the script's SHA1) and its command, for
    /// `FUNCTION STATS`.
    current: Mutex<Option<NameAndCommand>>,
    /// It still holds a runtime worker ([`Scripts::run_job`]).
    on_worker: AtomicBool,
    /// The hook of a killed script switched to every line: the next run sets the usual one.
    rehook: AtomicBool,
}

impl Running {
    /// Whether a script has run for at least `threshold_ms` (`-BUSY` for other clients), or how
    /// long until it has: `None` when no script runs (or the threshold is 0: never busy).
    pub fn busy_in(&self, threshold_ms: u64) -> Option<std::time::Duration> {
        let started = self.started_ms.load(Ordering::Acquire);
        if started == 0 || threshold_ms == 0 {
            return None;
        }
        let ran = now_ms().saturating_sub(started);
        Some(std::time::Duration::from_millis(
            threshold_ms.saturating_sub(ran),
        ))
    }

    /// `SCRIPT KILL` (`function == false`) or `FUNCTION KILL`.
    pub fn kill(&self, function: bool) -> Result<(), &'static str> {
        if self.started_ms.load(Ordering::Acquire) == 0 {
            return Err("NOTBUSY No scripts in execution right now.");
        }
        if self.wrote.load(Ordering::Acquire) {
            return Err(errors::UNKILLABLE);
        }
        match (function, self.function.load(Ordering::Acquire)) {
            (false, true) => return Err(errors::BUSY_FUNCTION),
            (true, false) => return Err(errors::BUSY_SCRIPT),
            _ => {}
        }
        self.kill.store(true, Ordering::Release);
        Ok(())
    }

    /// The `-BUSY` error for what runs now.
    pub fn busy_error(&self) -> &'static str {
        if self.function.load(Ordering::Acquire) {
            errors::BUSY_FUNCTION
        } else {
            errors::BUSY_SCRIPT
        }
    }

    /// `FUNCTION STATS`' `running_script`: name, command and milliseconds so far.
    pub fn current(&self) -> Option<(Arc<str>, Arc<[Bytes]>, u64)> {
        let started = self.started_ms.load(Ordering::Acquire);
        if started == 0 {
            return None;
        }
        let (name, argv) = self.current.lock().clone()?;
        Some((name, argv, now_ms().saturating_sub(started)))
    }
}

/// A running script's name (a function's, or the script's SHA1) and its command, shared with
/// the run (no copy per run).
pub type NameAndCommand = (Arc<str>, Arc<[Bytes]>);

/// A client's consistency overrides (read, write), which its scripts' commands run at.
pub type Levels = (
    Option<hypercache_cluster::msg::Level>,
    Option<hypercache_cluster::msg::Level>,
);

/// A script to run, from EVAL/EVALSHA (and their `_RO` forms), or a function (FCALL).
#[derive(Debug, Clone)]
pub struct Call {
    /// The command as the client sent it: `EVAL script numkeys key... arg...` (and the same
    /// shape for EVALSHA and FCALL). FUNCTION STATS shows it; KEYS and ARGV are its slices.
    pub argv: Arc<[Bytes]>,
    /// How many of its arguments after the first three are keys.
    pub nkeys: usize,
    /// SHA1 of the body.
    pub sha: String,
    /// The body (EVAL); `None` for EVALSHA.
    pub body: Option<Bytes>,
    /// `EVAL_RO`/`EVALSHA_RO`: write commands are refused.
    pub read_only: bool,
    /// The caller's ACL user: the script's commands are checked against it.
    pub user: Arc<crate::acl::User>,
    /// The caller's client id and `CLIENT TRACKING` settings: the script's reads are
    /// remembered for it, and its writes are its own (NOLOOP).
    pub tracking: (u64, Option<crate::tracking::TrackState>),
    /// The caller's database: the script starts in it (a `SELECT` inside changes only the
    /// script's).
    pub db: u8,
}

impl Call {
    /// `KEYS`.
    pub fn keys(&self) -> &[Bytes] {
        self.argv.get(3..3 + self.nkeys).unwrap_or_default()
    }

    /// `ARGV`.
    pub fn args(&self) -> &[Bytes] {
        self.argv.get(3 + self.nkeys..).unwrap_or_default()
    }
}

/// What a connection asks the script engine to do ([`Scripts::run_job`]).
#[derive(Debug, Clone)]
pub enum Job {
    /// Run a script.
    Run(Call),
    /// `SCRIPT LOAD`: compile and cache.
    Load(Bytes),
    /// `SCRIPT FLUSH`.
    FlushScripts,
    /// `FCALL`/`FCALL_RO` of the function named `sha`.
    Fcall(Call),
    /// A `FUNCTION` subcommand (its whole argument list).
    Function(Vec<Bytes>),
}

/// Lower-case hex SHA1 of `body`.
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// Script flags from a `#!lua flags=...` first line (Redis 7).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags {
    no_writes: bool,
    allow_oom: bool,
    allow_stale: bool,
    no_cluster: bool,
    allow_cross_slot: bool,
    /// No shebang: Redis's compatibility mode (no flags checked before the run).
    compat: bool,
}

/// In a cluster, whether a script with this body runs atomically at its keys' slot's
/// coordinator ([`crate::cluster::script`]): unless its flags say `allow-cross-slot-keys` or
/// `no-cluster` (or its shebang is malformed: the engine reports that).
pub(crate) fn atomic_in_cluster(body: &[u8]) -> bool {
    shebang(body).is_ok_and(|(f, _)| !f.allow_cross_slot && !f.no_cluster)
}

/// Parses the shebang; returns the flags and how many bytes of `body` it takes (the line feed
/// is kept, so that line numbers stay right).
fn shebang(body: &[u8]) -> Result<(Flags, usize), String> {
    let mut flags = Flags {
        compat: true,
        ..Flags::default()
    };
    if !body.starts_with(b"#!") {
        return Ok((flags, 0));
    }
    let Some(end) = body.iter().position(|&c| c == b'\n') else {
        return Err("ERR Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..end]).into_owned();
    let mut parts = line.split_ascii_whitespace();
    let engine = parts.next().unwrap_or("");
    if engine != "#!lua" {
        return Err(format!("ERR Unexpected engine in script shebang: {engine}"));
    }
    flags.compat = false;
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {part}"));
        };
        for f in list.split(',').filter(|f| !f.is_empty()) {
            match f {
                "no-writes" => flags.no_writes = true,
                "allow-oom" => flags.allow_oom = true,
                "allow-stale" => flags.allow_stale = true,
                "no-cluster" => flags.no_cluster = true,
                "allow-cross-slot-keys" => flags.allow_cross_slot = true,
                other => return Err(format!("ERR Unexpected flag in script shebang: {other}")),
            }
        }
    }
    Ok((flags, end))
}

/// A compiled script.
struct Compiled {
    /// Shared, not cloned, for a run: cloning an mlua value takes its lock and a reference.
    function: Arc<Function>,
    flags: Flags,
    /// Its SHA1, for what FUNCTION STATS shows while it runs.
    name: Arc<str>,
}

/// The VM and what lives in it.
struct Engine {
    lua: Lua,
    /// What a script's run needs from the prelude: its error handler, its globals and its
    /// environment (a script runs from Rust: `raw::invoke`).
    direct: raw::ScriptRefs,
    /// Runs a library's code at FUNCTION LOAD.
    load_runner: Function,
    /// Makes a library's environment: returns it and the function that opens it to the
    /// globals once the library is loaded.
    library_env: Function,
    /// What a library's code sees while it loads: `redis.register_function`, `redis.log`, ...
    load_api: Table,
    scripts: HashMap<String, Compiled>,
    /// Function libraries by name.
    libraries: std::collections::BTreeMap<String, functions::Library>,
    /// Functions by name.
    functions: HashMap<String, functions::FunctionDef>,
    /// The script's own session (Redis's "lua client"), kept between runs.
    session: Option<Session>,
    /// Scripts and functions run (for the collector's period).
    runs: std::cell::Cell<u64>,
    /// Whether the script hook (SCRIPT KILL, leaving the worker) is set: it stays set between
    /// runs (setting it costs as much as a short script's conversions), and is set again after
    /// `FUNCTION LOAD` set its own or a killed script's hook switched to every line.
    hooked: std::cell::Cell<bool>,
    /// In a cluster, the keys of the script about to run (or that just ran) at its slot's
    /// coordinator ([`Scripts::run_in_overlay`]): its session runs its commands over them.
    overlay: Option<crate::cluster::script::Overlay>,
    /// The arguments of a script's commands, kept between runs ([`RunCtx::args`]).
    args: raw::Args,
}

/// Runs between explicit steps of the VM's collector.
const GC_PERIOD: u64 = 50;

/// What a running script's `redis.call` needs, reached through [`raw::with_run`] for the run.
struct RunCtx {
    session: Session,
    /// `redis.setresp(3)`.
    resp3: bool,
    read_only: bool,
    /// The script ran a write command.
    wrote: bool,
    /// Memory was full when it started: commands that need memory fail until it writes.
    oom: bool,
    /// In a cluster: the slot every key must hash to (`None`: not known yet).
    slot: Option<Slot>,
    cluster: bool,
    allow_cross_slot: bool,
    runtime: tokio::runtime::Handle,
    /// It runs on a runtime worker ([`Scripts::run_job`]): waiting for a command must first
    /// hand the worker's other tasks to another thread.
    on_worker: bool,
    shared: Arc<Shared>,
    /// The reply of the command `redis.call` ran, kept here until it is on Lua's stack
    /// ([`raw`]'s invariant 1).
    reply: Frame,
    /// A command of the script is running ([`raw`]'s invariant 4).
    busy: bool,
    /// Where `redis.call` copies its arguments.
    args: raw::Args,
}

/// What the prelude returns (in its `return`'s order).
type Prelude = (Function, Function, Function, Table, Table, Table, Table);

/// The prelude run once in a new VM: Redis's API in Lua around the Rust functions, the error
/// handler, and the sandbox. Returns the runners of functions and of libraries' code, and what
/// a script's run uses from Rust (`raw::invoke`): the error handler, the scripts' globals and
/// environment, and the slot naming the running environment.
const PRELUDE: &str = r#"
local hc_call, hc_pcall, hc_errtext, load_api = ...
local lua_pcall, lua_error, lua_type, lua_tostring, rawget = pcall, error, type, tostring, rawget
local lua_select, lua_unpack, lua_setmetatable = select, unpack, setmetatable

-- redis.call raises a command's error; redis.pcall returns it as {err=...}.
redis.call = hc_call
redis.pcall = hc_pcall

-- Redis 7's pcall turns an error table back into its text.
local function pack(...) return { n = lua_select('#', ...), ... } end
pcall = function(f, ...)
  local r = pack(lua_pcall(f, ...))
  if not r[1] and lua_type(r[2]) == 'userdata' then
    local text, coded = hc_errtext(r[2])
    r[2] = text
  end
  if not r[1] and lua_type(r[2]) == 'table' then
    local e = rawget(r[2], 'err')
    if lua_type(e) == 'string' then r[2] = e end
  end
  return lua_unpack(r, 1, r.n)
end

-- Redis's error handler: where the script failed, as {err=, source=, line=}.
local dbg = debug
debug = nil
print, dofile, loadfile, module, require = nil, nil, nil, nil, nil
local function handler(err)
  local level = 2
  local i = dbg.getinfo(level, 'nSl')
  while i and (i.what == 'C' or i.source == '@hc_prelude') do
    level = level + 1
    i = dbg.getinfo(level, 'nSl')
  end
  if lua_type(err) == 'userdata' then
    -- An error raised by a Rust function: one that Redis raises as a table comes with its
    -- code; any other gets the position, as luaL_error gives it.
    local text, coded = hc_errtext(err)
    if coded then
      err = { err = text }
    elseif i and i.currentline then
      err = i.source:sub(2) .. ':' .. i.currentline .. ': ' .. text
    else
      err = text
    end
  end
  if lua_type(err) ~= 'table' then
    err = { err = 'ERR ' .. lua_tostring(err) }
  end
  if i then
    err['source'] = i.source
    err['line'] = i.currentline
  end
  return err
end
__redis__err__handler = handler

-- The sandbox. Redis makes the globals and the libraries read-only inside its Lua; here every
-- run gets an environment of its own (a proxy of the globals: missing names raise, nothing can
-- be assigned) and the libraries are read-only proxies. Nothing a script does outlives it.
local G = _G
local protected = lua_setmetatable({}, { __mode = 'k' })
local function readonly_error() lua_error('Attempt to modify a readonly table', 2) end
local sealed = lua_setmetatable({}, { __newindex = readonly_error, __metatable = false })
protected[sealed] = true
local function readonly(t)
  local p = lua_setmetatable({}, { __index = t, __newindex = readonly_error, __metatable = sealed })
  protected[p] = true
  return p
end
for _, name in ipairs({ 'redis', 'string', 'math', 'table', 'bit', 'cjson', 'cmsgpack', 'coroutine' }) do
  rawset(G, name, readonly(G[name]))
end
getmetatable('').__metatable = sealed

-- The running script's or library's environment, in a slot that a script's run sets from Rust
-- (`raw::invoke`) without a Lua call.
local current = {}
-- A script's globals are read through a table (a plain index, no function call per name):
-- a copy of the globals made at the end of this prelude (nothing sets one after it), whose
-- own metatable answers `_G` with the running environment and raises on a missing name.
local globals = {}
local env_meta = {
  __index = globals,
  __newindex = readonly_error,
  __metatable = sealed,
}
local globals_meta = {
  __index = function(_, k)
    if k == '_G' then return current[1] end
    lua_error("Script attempted to access nonexistent global variable '" .. lua_tostring(k) .. "'", 2)
  end,
  __newindex = readonly_error,
  __metatable = sealed,
}
lua_setmetatable(globals, globals_meta)

local lua_rawset, lua_getfenv, lua_setfenv = rawset, getfenv, setfenv
-- Raised from C in Redis: no position.
local function refused() lua_error('Attempt to modify a readonly table', 0) end
-- The running script's environment is protected too, without a weak-table entry per run.
setmetatable = function(t, m)
  if t == current[1] or protected[t] then refused() end
  return lua_setmetatable(t, m)
end
rawset = function(t, k, v)
  if t == current[1] or protected[t] then refused() end
  return lua_rawset(t, k, v)
end

-- No binary chunks (Lua 5.1 trusts bytecode); what a script loads runs in its environment.
local lua_loadstring = loadstring
loadstring = function(s, name)
  if lua_type(s) == 'string' and s:byte(1) == 27 then
    return nil, 'binary chunks are not allowed'
  end
  local f, e = lua_loadstring(s, name)
  if f and current[1] then lua_setfenv(f, current[1]) end
  return f, e
end
load = function(f, name)
  local parts = {}
  while true do
    local piece = f()
    if piece == nil or piece == '' then break end
    parts[#parts + 1] = piece
  end
  return loadstring(table.concat(parts), name)
end

-- Runs a compiled script with KEYS and ARGV in the scripts' environment. One table serves
-- every run (a new one per run was a fifth of a short script's garbage). It stays empty: a
-- script can neither assign to it nor rawset it, and reads its names through
-- `script_globals` (the globals, copied below, and this run's KEYS and ARGV), so that
-- assigning KEYS raises as assigning any global does in Redis. One table behind the
-- environment, not two: every global a script reads is one miss and one hit.
local script_globals = lua_setmetatable({}, globals_meta)
-- KEYS and ARGV: two tables for good, refilled by every run (`raw::refill`).
local script_keys, script_argv = {}, {}
local script_env = lua_setmetatable({}, {
  __index = script_globals,
  __newindex = readonly_error,
  __metatable = sealed,
})
-- A script runs from Rust (`raw::invoke`, as Redis's C calls it): KEYS and ARGV refilled,
-- `current[1]` and the function's environment set to `script_env`, called under `handler`.
-- A function's callback too, with `current[1]` its library's environment and new KEYS and
-- ARGV tables as its arguments.

-- The load API's `redis` raises on a missing field, as Redis's does.
lua_setmetatable(load_api.redis, {
  __index = function(_, k)
    lua_error("Script attempted to access nonexistent global variable '" .. lua_tostring(k) .. "'", 2)
  end,
  __newindex = readonly_error,
  __metatable = sealed,
})

-- A library's environment: while its code loads, only the load API (redis.register_function,
-- redis.log, ...); then the globals, read-only, as a script's.
local function library_env(load_api)
  local meta = { __newindex = readonly_error, __metatable = sealed }
  meta.__index = function(_, k)
    local v = rawget(load_api, k)
    if v == nil then
      lua_error("Script attempted to access nonexistent global variable '" .. lua_tostring(k) .. "'", 2)
    end
    return v
  end
  local env = lua_setmetatable({}, meta)
  protected[env] = true
  return env, function() meta.__index = env_meta.__index end
end

-- Runs a library's code at FUNCTION LOAD; an error comes back as Redis's text.
local function load_handler(err)
  if lua_type(err) == 'userdata' then
    local text, coded = hc_errtext(err)
    if coded then return text end
    err = text
  end
  if lua_type(err) == 'table' then return lua_tostring(rawget(err, 'err')) end
  return 'ERR ' .. lua_tostring(err)
end
local function load_library(f, env)
  current[1] = env
  lua_setfenv(f, env)
  return xpcall(f, load_handler)
end

-- Redis 7.0 gives scripts no getfenv, setfenv or newproxy.
local hidden = { _G = true, getfenv = true, setfenv = true, newproxy = true }
for k, v in pairs(G) do
  if not hidden[k] then
    lua_rawset(globals, k, v)
    lua_rawset(script_globals, k, v)
  end
end
lua_rawset(script_globals, 'KEYS', script_keys)
lua_rawset(script_globals, 'ARGV', script_argv)

return load_library, library_env, handler, script_env, current, script_keys, script_argv
"#;

impl Engine {
    fn new(shared: &Arc<Shared>) -> mlua::Result<Engine> {
        let lua = unsafe_lua()?;
        let g = lua.globals();
        libs::register(&lua, &g)?;
        let redis = redis_table(&lua, shared)?;
        g.raw_set("redis", redis.clone())?;
        let load_api = functions::load_api(&lua, &redis)?;
        random(&lua, &g)?;
        // redis.call and redis.pcall are C functions (Lua's C API, [`raw`]): a `return
        // redis.call(...)` keeps the script's frame for the error's line, and the error raised
        // is Redis's table.
        let (call, pcall) = raw::functions(&lua)?;
        let errtext = lua.create_function(|_, v: Value| {
            Ok(match v {
                Value::Error(e) => {
                    let text = error_message(&e);
                    match text.strip_prefix(CODED) {
                        Some(t) => (t.to_string(), true),
                        None => (text, false),
                    }
                }
                other => (format!("{other:?}"), false),
            })
        })?;
        let (load_runner, library_env, handler, env, current, keys, argv): Prelude = lua
            .load(PRELUDE)
            .set_name("@hc_prelude")
            .set_mode(mlua::chunk::ChunkMode::Text)
            .call((call, pcall, errtext, load_api.clone()))?;
        let direct = raw::ScriptRefs::new(&lua, handler, env, current, keys, argv)?;
        Ok(Engine {
            lua,
            direct,
            load_runner,
            library_env,
            load_api,
            scripts: HashMap::new(),
            libraries: Default::default(),
            functions: HashMap::new(),
            session: None,
            runs: Default::default(),
            hooked: Default::default(),
            overlay: None,
            args: raw::Args::default(),
        })
    }

    /// Compiles `body` (unless cached) and returns its SHA1.
    fn compile(&mut self, scripts: &Scripts, body: &Bytes) -> Result<String, String> {
        let sha = sha1_hex(body);
        if self.scripts.contains_key(&sha) {
            return Ok(sha);
        }
        let (flags, skip) = shebang(body)?;
        let function = self
            .lua
            .load(&body[skip..])
            .set_name("@user_script")
            .set_mode(mlua::chunk::ChunkMode::Text)
            .into_function()
            .map_err(|e| {
                format!(
                    "ERR Error compiling script (new function): {}",
                    error_message(&e)
                )
            })?;
        self.scripts.insert(
            sha.clone(),
            Compiled {
                function: Arc::new(function),
                flags,
                name: Arc::from(sha.as_str()),
            },
        );
        scripts.bodies.lock().insert(sha.clone(), body.clone());
        Ok(sha)
    }
}

/// A Lua state with the libraries Redis loads (base, table, string, math) and `debug`.
///
/// The one `unsafe` here: mlua counts the `debug` library as unsafe (it can reach any
/// function's upvalues and break mlua's invariants). Invariant: the prelude, which runs before
/// any script, keeps `debug` as a local of its error handler (which only calls `getinfo`) and
/// removes it from the globals, as Redis does; no script can reach it.
fn unsafe_lua() -> mlua::Result<Lua> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG;
    #[allow(unsafe_code)]
    // SAFETY: see the invariant above.
    let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::new()) };
    Ok(lua)
}

/// A Lua number (mlua hands integral ones over as integers).
pub(crate) fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

/// A number as Lua's `luaL_checknumber` takes it: a number, or a string that reads as one.
pub(crate) fn coerce_number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => {
            let b = s.as_bytes();
            let t = std::str::from_utf8(&b).ok()?.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok().map(|n| n as f64),
                None => t.parse::<f64>().ok(),
            }
        }
        v => as_number(v),
    }
}

/// The text of a Lua-side error as Redis would print it.
fn error_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => error_message(cause),
        mlua::Error::ExternalError(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// The `redis` table: the Rust side of its functions (`call`/`pcall` are added by the prelude).
fn redis_table(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let r = lua.create_table()?;
    r.raw_set(
        "sha1hex",
        lua.create_function(|lua, a: MultiValue| {
            if a.len() != 1 {
                return raise_table(lua, "wrong number of arguments");
            }
            let s = match &a[0] {
                Value::String(s) => s.as_bytes().to_vec(),
                v => as_number(v).map_or(Vec::new(), |n| format_g(n, 14).into_bytes()),
            };
            Ok(Value::String(lua.create_string(sha1_hex(&s))?))
        })?,
    )?;
    r.raw_set(
        "error_reply",
        lua.create_function(|lua, a: MultiValue| match (a.len(), a.front()) {
            (1, Some(Value::String(s))) => {
                let mut text = s.as_bytes().to_vec();
                if text.first() != Some(&b'-') {
                    text.insert(0, b'-');
                }
                error_table(lua, &text)
            }
            _ => error_table(lua, b"wrong number or type of arguments"),
        })?,
    )?;
    r.raw_set(
        "status_reply",
        lua.create_function(|lua, a: MultiValue| match (a.len(), a.front()) {
            (1, Some(Value::String(s))) => {
                let t = lua.create_table()?;
                t.raw_set("ok", s.clone())?;
                Ok(Value::Table(t))
            }
            _ => error_table(lua, b"wrong number or type of arguments"),
        })?,
    )?;
    let node = shared.node_id.clone();
    r.raw_set(
        "log",
        lua.create_function(move |lua, a: MultiValue| {
            if a.len() < 2 {
                return raise_table(lua, "redis.log() requires two arguments or more.");
            }
            let Some(level) = as_number(&a[0]).map(|n| n as i64) else {
                return raise_table(lua, "First argument must be a number (log level).");
            };
            if !(0..=3).contains(&level) {
                return raise_table(lua, "Invalid debug level.");
            }
            let text: Vec<String> = a
                .iter()
                .skip(1)
                .filter_map(|v| match v {
                    Value::String(s) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
                    v => as_number(v).map(|n| format_g(n, 14)),
                })
                .collect();
            let text = text.join(" ");
            match level {
                0 => tracing::debug!(node_id = %node, component = "script", "{text}"),
                1 | 2 => tracing::info!(node_id = %node, component = "script", "{text}"),
                _ => tracing::warn!(node_id = %node, component = "script", "{text}"),
            }
            Ok(Value::Nil)
        })?,
    )?;
    for (name, v) in [
        ("LOG_DEBUG", 0.0),
        ("LOG_VERBOSE", 1.0),
        ("LOG_NOTICE", 2.0),
        ("LOG_WARNING", 3.0),
        ("REPL_NONE", 0.0),
        ("REPL_AOF", 1.0),
        ("REPL_SLAVE", 2.0),
        ("REPL_REPLICA", 2.0),
        ("REPL_ALL", 3.0),
    ] {
        r.raw_set(name, v)?;
    }
    r.raw_set("REDIS_VERSION", crate::REDIS_VERSION)?;
    let num = crate::REDIS_VERSION
        .split('.')
        .filter_map(|p| p.parse::<u32>().ok())
        .fold(0u32, |acc, p| acc * 256 + p);
    r.raw_set("REDIS_VERSION_NUM", f64::from(num))?;
    r.raw_set(
        "setresp",
        lua.create_function(|lua, a: MultiValue| {
            if a.len() != 1 {
                return raise_table(lua, "redis.setresp() requires one argument.");
            }
            let v = as_number(&a[0]).map_or(0, |n| n as i64);
            if v != 2 && v != 3 {
                return raise_table(lua, "RESP version must be 2 or 3.");
            }
            raw::with_run(|ctx| {
                ctx.resp3 = v == 3;
                ctx.session.proto = if v == 3 {
                    Protocol::Resp3
                } else {
                    Protocol::Resp2
                };
            });
            Ok(Value::Nil)
        })?,
    )?;
    r.raw_set(
        "set_repl",
        lua.create_function(|lua, a: MultiValue| {
            if a.len() != 1 {
                return raise_table(lua, "redis.set_repl() requires two arguments.");
            }
            match as_number(&a[0]) {
                Some(n) if (0.0..=3.0).contains(&n) => Ok(Value::Nil),
                _ => raise_table(
                    lua,
                    "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                ),
            }
        })?,
    )?;
    r.raw_set(
        "replicate_commands",
        lua.create_function(|_, _: MultiValue| Ok(true))?,
    )?;
    r.raw_set(
        "breakpoint",
        lua.create_function(|_, _: MultiValue| Ok(false))?,
    )?;
    r.raw_set("debug", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    r.raw_set(
        "acl_check_cmd",
        lua.create_function(|lua, a: MultiValue| {
            let name = match a.front() {
                Some(Value::String(s)) => s.as_bytes().to_vec(),
                _ => {
                    return raise_table(
                        lua,
                        "Please specify at least one argument for this redis lib call",
                    )
                }
            };
            let Some(args) = command_args(&a) else {
                return raise_table(
                    lua,
                    "Lua redis lib command arguments must be strings or integers",
                );
            };
            let Some((spec, _)) = crate::cmd::lookup(&name) else {
                return raise_table(lua, "Invalid command passed to redis.acl_check_cmd()");
            };
            let spec = match args.get(1) {
                Some(sub) if !spec.subcommands.is_empty() => match spec.subcommand(sub) {
                    Some(s) => s,
                    None => {
                        return raise_table(lua, "Invalid command passed to redis.acl_check_cmd()")
                    }
                },
                _ => spec,
            };
            // Whether the script's caller may run it, by its ACL user (the keys included).
            let allowed =
                raw::with_run(|ctx| ctx.session.user.check(spec, &args).is_ok()).unwrap_or(true);
            Ok(Value::Boolean(allowed))
        })?,
    )?;
    Ok(r)
}

/// Redis's `math.random` and `math.randomseed` (its `rand.c`: the same sequence on every
/// platform, from the same start).
fn random(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let math: Table = g.raw_get("math")?;
    let state = Arc::new(AtomicU64::new(0x1234_ABCD_330E));
    let s = state.clone();
    math.raw_set(
        "random",
        lua.create_function(move |_, a: MultiValue| {
            let x = (s
                .load(Ordering::Relaxed)
                .wrapping_mul(0x5_DEEC_E66D)
                .wrapping_add(0xB))
                & 0xFFFF_FFFF_FFFF;
            s.store(x, Ordering::Relaxed);
            let r = ((x >> 17) % 0x7FFF_FFFF) as f64 / f64::from(0x7FFF_FFFF_u32);
            let int = |i: usize| match a.get(i).and_then(coerce_number) {
                Some(n) => Ok(n as i64),
                None => Err(mlua::Error::runtime(format!(
                    "bad argument #{} to 'random' (number expected, got {})",
                    i + 1,
                    a.get(i).map_or("no value", |v| v.type_name())
                ))),
            };
            Ok(match a.len() {
                0 => r,
                1 => {
                    let u = int(0)?;
                    if u < 1 {
                        return Err(mlua::Error::runtime(
                            "bad argument #1 to 'random' (interval is empty)",
                        ));
                    }
                    (r * u as f64).floor() + 1.0
                }
                2 => {
                    let (l, u) = (int(0)?, int(1)?);
                    if l > u {
                        return Err(mlua::Error::runtime(
                            "bad argument #2 to 'random' (interval is empty)",
                        ));
                    }
                    (r * (u - l + 1) as f64).floor() + l as f64
                }
                _ => return Err(mlua::Error::runtime("wrong number of arguments")),
            })
        })?,
    )?;
    math.raw_set(
        "randomseed",
        lua.create_function(move |_, seed: Value| {
            let seed = coerce_number(&seed).ok_or_else(|| {
                mlua::Error::runtime("bad argument #1 to 'randomseed' (number expected)")
            })?;
            let seed = (seed as i64) as u32 as u64;
            state.store((seed << 16) | 0x330E, Ordering::Relaxed);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// An error table `{err="CODE msg"}` from `text` as Redis builds it (`luaPushErrorBuff`):
/// `-CODE msg` keeps its code; text without a leading `-` gets `ERR`.
fn error_table(lua: &Lua, text: &[u8]) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set("err", error_text_of(text))?;
    Ok(Value::Table(t))
}

/// The text of an error table (`luaPushErrorBuff`): `-CODE msg` keeps its code; text without
/// a leading `-` gets `ERR`.
fn error_text_of(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    match text.strip_prefix('-') {
        Some(rest) => match rest.split_once(' ') {
            Some((code, msg)) => format!("{code} {}", msg.trim_end_matches(['\r', '\n'])),
            None => format!("ERR {}", rest.trim_end_matches(['\r', '\n'])),
        },
        None => format!("ERR {}", text.trim_end_matches(['\r', '\n'])),
    }
}

/// Marks a Rust error whose text is a whole Redis error, code included (what Redis raises as
/// an error table): the error handler makes it `{err=text}`.
const CODED: &str = "\u{1}";

/// Raises `ERR text` as Redis raises an error table from its C functions (no position).
fn raise_table(_lua: &Lua, text: &str) -> mlua::Result<Value> {
    Err(mlua::Error::runtime(format!("{CODED}ERR {text}")))
}

/// Redis's OOM error as a script's refused command gets it.
const OOM_REFUSAL: &str = "-OOM command not allowed when used memory > 'maxmemory'.";

/// A command's arguments from Lua values, as redis.call takes them: strings, and numbers
/// written as `%.17g` (integers plainly); `None` for any other type.
fn command_args(a: &MultiValue) -> Option<Vec<Bytes>> {
    a.iter()
        .map(|v| match v {
            Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
            Value::Number(n) => Some(Bytes::from(format_g(*n, 17))),
            Value::Integer(n) => Some(Bytes::from(n.to_string())),
            _ => None,
        })
        .collect()
}

impl Scripts {
    /// The effects of the script that ran last, for the replication stream.
    pub fn take_effects(&self) -> Vec<crate::repl::Effect> {
        std::mem::take(&mut *self.effects.lock())
    }

    /// The code of every function library loaded (for a replica's snapshot).
    pub fn library_codes(&self) -> Vec<Bytes> {
        self.engine
            .lock()
            .as_ref()
            .map(|e| e.libraries.values().map(|l| l.code.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether a script with this SHA1 is cached (`SCRIPT EXISTS`, EVALSHA's check).
    pub fn exists(&self, sha: &str) -> bool {
        self.bodies.lock().contains_key(sha)
    }

    /// The body of cached script `sha`.
    pub fn body(&self, sha: &str) -> Option<Bytes> {
        self.bodies.lock().get(sha).cloned()
    }

    /// Caches `body` (its SHA1 `sha`) without compiling it here: a script that ran at its
    /// slot's coordinator in a cluster ([`crate::cluster::script`]), which `EVALSHA` and
    /// `SCRIPT EXISTS` through this node must then know, as after an `EVAL` in Redis. It is
    /// compiled here when a run needs it.
    pub fn remember(&self, sha: String, body: Bytes) {
        self.bodies.lock().insert(sha, body);
    }

    /// Cached scripts and the bytes of their bodies (INFO).
    pub fn cached(&self) -> (usize, usize) {
        let b = self.bodies.lock();
        (b.len(), b.values().map(|v| v.len() + 40).sum())
    }

    /// Memory the VM's live objects use (INFO `used_memory_lua`), after a full collection; 0
    /// before the first script, or while a script runs (the VM is busy).
    pub fn vm_memory(&self) -> usize {
        match self.engine.try_lock() {
            Some(e) => e.as_ref().map_or(0, |e| {
                let _ = e.lua.gc_collect();
                e.lua.used_memory()
            }),
            None => 0,
        }
    }

    /// Libraries and functions loaded (`FUNCTION STATS`, INFO).
    pub fn function_counts(&self) -> (usize, usize) {
        (
            self.libraries.load(Ordering::Relaxed),
            self.functions.load(Ordering::Relaxed),
        )
    }

    /// Runs `job` for a client with `caller_levels` (its `HC.CONSISTENCY`). Returns the reply,
    /// and whether it is an error a command answered inside the script and INFO errorstats
    /// already counted.
    ///
    /// `on_worker`: called on a runtime worker of a multi-threaded runtime (a single node's
    /// scripts, whose commands complete at once). A script that runs past
    /// [`ESCALATE_AFTER_MS`] then hands the worker's other tasks to a new thread and goes on
    /// where it is, so that the node answers other clients (`-BUSY`, `SCRIPT KILL`) as Redis
    /// does while a script runs. Otherwise call it on a blocking thread.
    pub fn run_job(
        shared: &Arc<Shared>,
        job: Job,
        caller_levels: Levels,
        runtime: &tokio::runtime::Handle,
        on_worker: bool,
    ) -> (Frame, bool) {
        let plain = |f: Frame| (f, false);
        let scripts = &shared.scripts;
        let mut guard = scripts.engine.lock();
        if guard.is_none() {
            match Engine::new(shared) {
                Ok(e) => *guard = Some(e),
                Err(e) => {
                    return plain(Frame::Error(
                        format!("ERR could not start the Lua VM: {}", error_message(&e)).into(),
                    ))
                }
            }
        }
        let engine = guard.as_mut().expect("engine");
        match job {
            Job::Load(body) => plain(match engine.compile(scripts, &body) {
                Ok(sha) => Frame::Bulk(sha.into()),
                Err(e) => Frame::Error(e.into()),
            }),
            Job::Run(mut call) => {
                // EVALSHA of a compiled script (the usual case) looks it up once; a body
                // cached without compiling ([`Scripts::remember`]) is compiled now.
                let known = match &call.body {
                    None => engine
                        .scripts
                        .get(&call.sha)
                        .map(|c| (c.name.clone(), c.flags, c.function.clone())),
                    Some(_) => None,
                };
                let (sha, flags, f) = match known {
                    Some(known) => known,
                    None => {
                        let body = call.body.clone().or_else(|| scripts.body(&call.sha));
                        let Some(body) = body else {
                            return plain(Frame::error(errors::NOSCRIPT));
                        };
                        let sha = match engine.compile(scripts, &body) {
                            Ok(sha) => sha,
                            Err(e) => return plain(Frame::Error(e.into())),
                        };
                        let Some(compiled) = engine.scripts.get(&sha) else {
                            return plain(Frame::error(errors::NOSCRIPT));
                        };
                        (
                            compiled.name.clone(),
                            compiled.flags,
                            compiled.function.clone(),
                        )
                    }
                };
                engine.run(
                    shared,
                    sha,
                    flags,
                    f,
                    false,
                    &mut call,
                    caller_levels,
                    runtime.clone(),
                    on_worker,
                )
            }
            Job::FlushScripts => {
                engine.scripts.clear();
                scripts.bodies.lock().clear();
                let _ = engine.lua.gc_collect();
                plain(Frame::ok())
            }
            Job::Fcall(mut call) => {
                let Some(def) = engine.functions.get(&call.sha.to_ascii_lowercase()) else {
                    return plain(Frame::error("ERR Function not found"));
                };
                let (flags, f) = (def.flags, def.callback.clone());
                let name = Arc::from(call.sha.as_str());
                engine.run(
                    shared,
                    name,
                    flags,
                    f,
                    true,
                    &mut call,
                    caller_levels,
                    runtime.clone(),
                    on_worker,
                )
            }
            Job::Function(args) => plain(engine.function_command(scripts, &args)),
        }
    }
}

impl Scripts {
    /// Runs script `call` (or, with `function`, the function it names) at its slot's
    /// coordinator in a cluster, its commands over `overlay` ([`crate::cluster::script`]);
    /// returns its reply and the overlay as the script left it. On a blocking thread.
    pub fn run_in_overlay(
        shared: &Arc<Shared>,
        mut call: Call,
        function: bool,
        overlay: crate::cluster::script::Overlay,
        runtime: &tokio::runtime::Handle,
    ) -> (Frame, crate::cluster::script::Overlay) {
        let scripts = &shared.scripts;
        let mut guard = scripts.engine.lock();
        if guard.is_none() {
            match Engine::new(shared) {
                Ok(e) => *guard = Some(e),
                Err(e) => {
                    let text = format!("ERR could not start the Lua VM: {}", error_message(&e));
                    return (Frame::Error(text.into()), overlay);
                }
            }
        }
        let engine = guard.as_mut().expect("engine");
        let (name, flags, f) = if function {
            // FCALL: `call.sha` names the function, loaded on this node too.
            let Some(def) = engine.functions.get(&call.sha.to_ascii_lowercase()) else {
                return (Frame::error("ERR Function not found"), overlay);
            };
            let (flags, f) = (def.flags, def.callback.clone());
            (Arc::from(call.sha.as_str()), flags, f)
        } else {
            let body = call.body.clone().unwrap_or_default();
            let sha = match engine.compile(scripts, &body) {
                Ok(sha) => sha,
                Err(e) => return (Frame::Error(e.into()), overlay),
            };
            let Some(compiled) = engine.scripts.get(&sha) else {
                return (Frame::error(errors::NOSCRIPT), overlay);
            };
            let (flags, f) = (compiled.flags, compiled.function.clone());
            (compiled.name.clone(), flags, f)
        };
        engine.overlay = Some(overlay);
        let (reply, _) = engine.run(
            shared,
            name,
            flags,
            f,
            function,
            &mut call,
            (None, None),
            runtime.clone(),
            false,
        );
        let overlay = engine
            .overlay
            .take()
            .expect("the run gives the overlay back");
        (reply, overlay)
    }
}

/// How long a script runs on a runtime worker before it hands the worker's other tasks to
/// another thread ([`Scripts::run_job`]), ms: far above a cache script's run (microseconds), far
/// below `busy-reply-threshold`.
pub const ESCALATE_AFTER_MS: u64 = 10;

/// Hands the runtime worker this thread runs, with its queued tasks, to another thread, and
/// returns once that thread has run a task: from then on this thread may block without
/// stopping the node. Returns false if no other thread took the worker within 100 ms (the caller
/// tries again later).
fn leave_worker() -> bool {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    // A task spawned here waits in this worker's queue: whoever runs it holds the worker.
    tokio::spawn(async move { flag.store(true, Ordering::Release) });
    tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
        while !ran.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    });
    ran.load(Ordering::Acquire)
}

impl Engine {
    /// Runs a script (`is_function == false`: `name` is its SHA1) or a function's callback.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        shared: &Arc<Shared>,
        name: Arc<str>,
        flags: Flags,
        function: Arc<Function>,
        is_function: bool,
        call: &mut Call,
        caller_levels: Levels,
        runtime: tokio::runtime::Handle,
        on_worker: bool,
    ) -> (Frame, bool) {
        let plain = |f: Frame| (f, false);
        let cluster = shared.cluster.is_some();
        if cluster && flags.no_cluster {
            return plain(Frame::error(
                "ERR Can not run script on cluster, 'no-cluster' flag is set.",
            ));
        }
        let read_only = call.read_only || flags.no_writes;
        if call.read_only && !flags.compat && !flags.no_writes {
            return plain(Frame::error(
                "ERR Can not execute a script with write flag using *_ro command.",
            ));
        }
        // One read of the settings a run needs.
        let (maxmemory, memory_limit) = {
            let c = shared.config.read();
            (c.maxmemory, c.script_memory_limit as usize)
        };
        let oom = maxmemory > 0 && crate::memory::used() > maxmemory;
        if oom && !flags.compat && !flags.allow_oom && !flags.no_writes {
            return plain(Frame::error(
                "OOM allow-oom flag is not set on the script, can not run it when used memory > 'maxmemory'",
            ));
        }
        if !flags.compat && !flags.no_writes && shared.config.read().writes_want_replicas() {
            // A script that declares it may write is a write command (Redis's
            // `scriptFlagsToCmdFlags`): refused like one.
            return plain(Frame::error(errors::NOREPLICAS));
        }
        let mut session = self
            .session
            .take()
            .unwrap_or_else(|| script_session(shared.clone()));
        session.proto = Protocol::Resp2;
        session.consistency = caller_levels;
        session.set_user(call.user.clone());
        session.tracking_id = call.tracking.0;
        session.tracking = call.tracking.1.clone();
        session.select(call.db);
        session.script_keys = if session.tracking.is_some() {
            call.keys().to_vec()
        } else {
            Vec::new()
        };
        session.refresh_config();
        session.begin_script();
        session.overlay = self.overlay.take().map(Box::new);
        let slot = if cluster && !flags.allow_cross_slot {
            call.keys().first().map(|k| redis_slot(k))
        } else {
            None
        };
        let mut ctx = RunCtx {
            session,
            resp3: false,
            read_only,
            wrote: false,
            oom: oom && !flags.allow_oom,
            slot,
            cluster,
            allow_cross_slot: flags.allow_cross_slot,
            runtime,
            on_worker,
            shared: shared.clone(),
            reply: Frame::Null,
            busy: false,
            args: std::mem::take(&mut self.args),
        };
        let running = &shared.scripts.running;
        running.on_worker.store(on_worker, Ordering::Release);
        running.kill.store(false, Ordering::Release);
        running.wrote.store(false, Ordering::Release);
        running.function.store(is_function, Ordering::Release);
        *running.current.lock() = Some((name.clone(), call.argv.clone()));
        // The time its session's batch began (one clock read fewer per run).
        let started = ctx.session.batch_wall_ms().max(1);
        running.started_ms.store(started, Ordering::Release);
        let reply = {
            let _entered = raw::enter(&mut ctx);
            self.call_function(shared, &name, &function, is_function, call, memory_limit)
        };
        running.started_ms.store(0, Ordering::Release);
        *running.current.lock() = None;
        self.args = ctx.args;
        let mut session = ctx.session;
        self.overlay = session.overlay.take().map(|o| *o);
        if !session.propagate.is_empty() {
            shared.scripts.effects.lock().append(&mut session.propagate);
        }
        session.end_batch();
        self.session = Some(session);
        reply
    }

    fn call_function(
        &self,
        shared: &Arc<Shared>,
        sha: &str,
        f: &Function,
        is_function: bool,
        call: &Call,
        limit: usize,
    ) -> (Frame, bool) {
        let plain = |f: Frame| (f, false);
        let lua = &self.lua;
        // SCRIPT KILL is checked every 100,000 instructions, as Redis's hook does. Once killed,
        // the script is stopped at every line, so that a `pcall` cannot catch the error and go on.
        fn on_hook(
            sh: Arc<Shared>,
        ) -> impl Fn(&Lua, &mlua::debug::Debug) -> mlua::Result<VmState> + Send + 'static {
            move |lua, _| {
                if sh.scripts.running.started_ms.load(Ordering::Acquire) == 0 {
                    return Ok(VmState::Continue);
                }
                let running = &sh.scripts.running;
                if running.on_worker.load(Ordering::Acquire) {
                    let started = running.started_ms.load(Ordering::Acquire);
                    if now_ms().saturating_sub(started) >= ESCALATE_AFTER_MS && leave_worker() {
                        running.on_worker.store(false, Ordering::Release);
                    }
                }
                if running.kill.load(Ordering::Acquire) {
                    running.rehook.store(true, Ordering::Release);
                    let again = on_hook(sh.clone());
                    let _ = lua.set_hook(HookTriggers::EVERY_LINE, again);
                    return Err(mlua::Error::runtime(
                        "Script killed by user with SCRIPT KILL...",
                    ));
                }
                Ok(VmState::Continue)
            }
        }
        if !self.hooked.get() || shared.scripts.running.rehook.swap(false, Ordering::AcqRel) {
            let _ = lua.set_hook(
                HookTriggers::new().every_nth_instruction(100_000),
                on_hook(shared.clone()),
            );
            self.hooked.set(true);
        }
        let base = lua.used_memory();
        let _ = lua.set_memory_limit(if limit == 0 { 0 } else { base + limit });
        let mut done: raw::Outcome = None;
        let lift = || {
            let _ = lua.set_memory_limit(0);
        };
        // SAFETY: the closure owns nothing with a destructor (`raw`'s invariant 1), and the
        // value exec_raw pushes is the one `invoke` expects: the script's function or the
        // function's callback.
        #[allow(unsafe_code)]
        let result = unsafe {
            lua.exec_raw::<MultiValue>(f, |l| {
                let (keys, args) = (call.keys(), call.args());
                raw::invoke(l, &self.direct, is_function, keys, args, &lift, &mut done)
            })
        };
        lift();
        // Every run leaves its environment and KEYS/ARGV behind; Lua's incremental collector
        // reclaims them as it allocates, and a step every GC_PERIOD runs keeps it ahead (Redis
        // steps its collector every 50 runs). INFO collects fully before it reads the size.
        let runs = self.runs.get() + 1;
        self.runs.set(runs);
        if runs.is_multiple_of(GC_PERIOD) {
            let _ = lua.gc_step();
        }
        if let Some(reply) = done {
            return reply;
        }
        match result {
            Ok(values) => {
                // The script failed: the runner returned false and the error.
                match values.get(1).cloned().unwrap_or(Value::Nil) {
                    Value::Table(t) => {
                        let counted = matches!(
                            t.raw_get("ignore_error_stats_update"),
                            Ok(Value::Boolean(true))
                        );
                        (script_error(&t, sha), counted)
                    }
                    Value::String(s) => plain(Frame::Error(
                        format!(
                            "ERR Error running script {sha}, {}",
                            String::from_utf8_lossy(&s.as_bytes())
                        )
                        .into(),
                    )),
                    other => plain(Frame::Error(
                        format!("ERR Error running script {sha}, {}", other.type_name()).into(),
                    )),
                }
            }
            Err(e) => plain(Frame::Error(
                format!("ERR Error running script {sha}, {}", error_message(&e)).into(),
            )),
        }
    }
}

/// A failed script's reply: its error text, then where it failed (`script: <sha>, on
/// @user_script:<line>.`), as Redis writes it.
fn script_error(t: &Table, sha: &str) -> Frame {
    let msg = convert::error_text(t)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| "ERR unknown error".into());
    let source: Option<String> = t.raw_get("source").ok();
    let line: Option<Value> = t.raw_get("line").ok();
    let line = match line {
        Some(Value::Number(n)) => Some(format_g(n, 14)),
        Some(Value::Integer(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
        _ => None,
    };
    let mut text = msg;
    if let (Some(src), Some(line)) = (source, line) {
        text.push_str(&format!(" script: {sha}, on {src}:{line}."));
    }
    let clean: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Frame::Error(clean.into())
}

/// The session scripts run their commands through (Redis's "lua client"): never registered as
/// a client, always authenticated.
fn script_session(shared: Arc<Shared>) -> Session {
    let unspecified: std::net::SocketAddr = ([0, 0, 0, 0], 0).into();
    let handle = Arc::new(ClientHandle::new(0, unspecified, unspecified, -1));
    let mut s = Session::new(shared, handle);
    s.authed = true;
    // The caller's user is set for each run.
    s.script = true;
    s.out = BytesMut::new();
    s
}
