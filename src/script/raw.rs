//! Lua's C API where a script spends its time: `redis.call` and `redis.pcall`, KEYS and ARGV,
//! and the script's reply (Redis's `luaRedisGenericCommand`, `luaCreateArray`,
//! `redisProtocolToLuaType` and `luaReplyToRedisReply`, in `script_lua.c`).
//!
//! Through mlua's values, every call of `redis.call` took mlua's lock a dozen times, made a
//! reference per argument and went through mlua's callback wrapper; the script's reply and
//! KEYS/ARGV likewise. Here the stack is read and written directly, as Redis does (about a
//! third of a short script's CPU: docs/benchmarks.md). Everything else about scripts stays on
//! mlua's safe API.
//!
//! This is one of the workspace's audited `unsafe` places (Cargo.toml). Its invariants:
//!
//! 1. **No destructor is skipped.** A Lua error is a `longjmp` in the vendored Lua 5.1: it
//!    skips every frame between the raise and the `pcall` that catches it. A Lua function that
//!    can raise (anything that allocates: pushing a string, making a table, growing the stack;
//!    and `lua_error`) is only called where the frames it could skip own nothing with a
//!    destructor. `redis.call` runs its command in a function that returns before anything is
//!    pushed ([`execute`]); the reply waits in the run's context ([`RunCtx::reply`]), not on a
//!    frame, and is pushed from there by reference.
//! 2. **Reading allocates nothing.** `lua_type`, `lua_tolstring` of a string (never of a
//!    number: that converts in place), `lua_tonumber`, `lua_toboolean`, `lua_rawget`,
//!    `lua_rawgeti` and `lua_next` only read. The script's reply is read into Rust values with
//!    the script's memory limit lifted, so the one call there that may allocate
//!    (`lua_checkstack` growing the stack) fails only when the process is out of memory, where
//!    Rust's own allocations abort it anyway.
//! 3. **No panic crosses Lua's frames.** A command runs under `catch_unwind`.
//! 4. **One run per thread, one command at a time.** The run's context is reached through a
//!    thread-local pointer that [`enter`] sets for the run (a script runs on one thread from
//!    start to end); while a command runs, the context is marked busy and nothing else may
//!    reach it (a script's command cannot run a script: `noscript`).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_int;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use hypercache_cluster::slot::redis_slot;
use hypercache_resp::frame::{decode, DecodeLimits};
use hypercache_resp::num::format_g;
use hypercache_resp::Frame;
use mlua::ffi::{self, lua_State};

use super::{convert, RunCtx, OOM_REFUSAL};

thread_local! {
    /// The context of the script running on this thread (null between runs).
    static RUN: Cell<*mut RunCtx> = const { Cell::new(std::ptr::null_mut()) };
}

/// The run's context is reachable from Lua while this lives ([`enter`]).
pub(super) struct Entered<'a> {
    prev: *mut RunCtx,
    _run: PhantomData<&'a mut RunCtx>,
}

/// Makes `ctx` the running script's context until the returned guard drops.
pub(super) fn enter(ctx: &mut RunCtx) -> Entered<'_> {
    let prev = RUN.with(|r| r.replace(ctx));
    Entered {
        prev,
        _run: PhantomData,
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        RUN.with(|r| r.set(self.prev));
    }
}

/// Runs `f` with the running script's context: `None` outside a run, or while one of its
/// commands runs (invariant 4).
pub(super) fn with_run<R>(f: impl FnOnce(&mut RunCtx) -> R) -> Option<R> {
    let p = RUN.with(Cell::get);
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` comes from the `&mut RunCtx` that `enter` borrowed for as long as it is
    // set, on this thread; no other reference to it is alive unless a command runs, which
    // `busy` tells.
    let ctx = unsafe { &mut *p };
    if ctx.busy {
        return None;
    }
    Some(f(ctx))
}

/// `redis.call`: a command's error is raised (Redis's error table).
pub(super) unsafe extern "C-unwind" fn call(l: *mut lua_State) -> c_int {
    command(l, true)
}

/// `redis.pcall`: a command's error is returned (Redis's error table).
pub(super) unsafe extern "C-unwind" fn pcall(l: *mut lua_State) -> c_int {
    command(l, false)
}

/// Redis raises this even from `redis.pcall`.
const NO_RUN: &[u8] = b"ERR redis.call/pcall can only be called inside a script invocation";

unsafe fn command(l: *mut lua_State, raise: bool) -> c_int {
    let p = RUN.with(Cell::get);
    // SAFETY (all of this function): `p` as in `with_run`. Nothing on this frame owns a
    // value with a destructor, so the Lua calls below may raise (invariant 1).
    if p.is_null() || (*p).busy {
        push_error(l, NO_RUN, false);
        ffi::lua_error(l);
    }
    (*p).busy = true;
    // The result is dropped within the statement: nothing with a destructor stays on the frame.
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(l, &mut *p))).is_err();
    (*p).busy = false;
    if panicked {
        let node = &(&*p).shared.node_id;
        tracing::error!(component = "script", node_id = %node, "a script's command panicked");
        (*p).reply = Frame::error("ERR the command failed inside the server");
    }
    let failed = matches!((*p).reply, Frame::Error(_));
    let resp3 = (*p).resp3;
    match &(*p).reply {
        // Marked as counted: the command's error is in INFO errorstats already.
        Frame::Error(text) => push_error(l, text, true),
        reply => push_reply(l, reply, resp3),
    }
    (*p).reply = Frame::Null;
    if failed && raise {
        ffi::lua_error(l);
    }
    1
}

/// Runs the command whose arguments are on the stack and leaves its reply (or the refusal) in
/// `ctx.reply`. Touches the stack only to read it: nothing here raises.
fn execute(l: *mut lua_State, ctx: &mut RunCtx) {
    let mut args = std::mem::take(&mut ctx.args);
    ctx.reply = match args.read(l) {
        Ok(()) => run_command(ctx, &mut args.list),
        Err(text) => refusal(ctx, text),
    };
    args.done();
    ctx.args = args;
}

/// The arguments of a script's command, and the buffer they are copied into: kept between
/// commands and runs, so that a command's arguments cost no allocation of their own (three
/// per command of a short script otherwise).
#[derive(Default)]
pub(super) struct Args {
    list: Vec<Bytes>,
    /// Short arguments are slices of this buffer; it is reused once the command dropped them
    /// (a command that keeps an argument keeps the buffer, and the next one gets a new one).
    arena: BytesMut,
}

/// Arguments longer than this get an allocation of their own rather than a slice of the arena,
/// which a long-lived one would keep from being reused.
const ARENA_ARG_MAX: usize = 1024;
/// The arena is released after a command that grew it past this.
const ARENA_KEEP: usize = 64 * 1024;

impl Args {
    /// Reads the command's arguments, as Redis takes them: strings, and numbers as `%.17g`.
    fn read(&mut self, l: *mut lua_State) -> Result<(), &'static [u8]> {
        // SAFETY: reads of the stack of the running C function (invariant 2).
        unsafe {
            let n = ffi::lua_gettop(l);
            if n == 0 {
                return Err(b"Please specify at least one argument for this redis lib call");
            }
            let mut short = 0;
            for i in 1..=n {
                match ffi::lua_type(l, i) {
                    ffi::LUA_TSTRING => {
                        let len = string_at(l, i).len();
                        if len <= ARENA_ARG_MAX {
                            short += len;
                        }
                    }
                    ffi::LUA_TNUMBER => short += 24,
                    _ => {
                        return Err(b"Lua redis lib command arguments must be strings or integers")
                    }
                }
            }
            self.arena.reserve(short);
            for i in 1..=n {
                let arg = if ffi::lua_type(l, i) == ffi::LUA_TSTRING {
                    let s = string_at(l, i);
                    if s.len() > ARENA_ARG_MAX {
                        self.list.push(Bytes::copy_from_slice(s));
                        continue;
                    }
                    self.arena.extend_from_slice(s);
                    self.arena.split()
                } else {
                    self.arena
                        .extend_from_slice(format_g(ffi::lua_tonumber(l, i), 17).as_bytes());
                    self.arena.split()
                };
                self.list.push(arg.freeze());
            }
            Ok(())
        }
    }

    /// Drops the command's arguments, keeping the room they took.
    fn done(&mut self) {
        self.list.clear();
        if self.arena.capacity() > ARENA_KEEP {
            self.arena = BytesMut::new();
        }
    }
}

/// The bytes of the string at `i` (its type checked by the caller), valid while it stays on
/// the stack.
unsafe fn string_at<'a>(l: *mut lua_State, i: c_int) -> &'a [u8] {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, i, &mut len);
    if p.is_null() {
        return &[];
    }
    std::slice::from_raw_parts(p.cast::<u8>(), len)
}

/// An error refused before any command ran, as Redis words it (`ERR ` unless the text has
/// its own code), counted in INFO errorstats.
fn refusal(ctx: &RunCtx, text: &[u8]) -> Frame {
    let full = super::error_text_of(text);
    ctx.shared.metrics.commands.count_error(full.as_bytes());
    Frame::Error(full.into())
}

/// Runs one command of the script through its session; its reply, or why it was refused.
fn run_command(ctx: &mut RunCtx, args: &mut Vec<Bytes>) -> Frame {
    let Some((spec, _)) = crate::cmd::lookup(&args[0]) else {
        return refusal(ctx, b"Unknown Redis command called from script");
    };
    let spec = if !spec.subcommands.is_empty() && args.len() >= 2 {
        match spec.subcommand(&args[1]) {
            Some(sub) => sub,
            None => return refusal(ctx, b"Unknown Redis command called from script"),
        }
    } else {
        spec
    };
    // A refusal before the command runs counts in its rejected_calls too, as Redis's
    // scriptCall counts it.
    let rejected = |ctx: &RunCtx, text: &[u8]| {
        if let Some(stat) = ctx.shared.metrics.commands.of(spec) {
            stat.rejected.fetch_add(1, Ordering::Relaxed);
        }
        refusal(ctx, text)
    };
    if !spec.arity_ok(args.len()) {
        return rejected(
            ctx,
            b"Wrong number of args calling Redis command from script",
        );
    }
    if spec.has_flag("noscript") {
        return rejected(ctx, b"This Redis command is not allowed from script");
    }
    let write = spec.has_flag("write");
    if write && ctx.read_only {
        return rejected(
            ctx,
            b"Write commands are not allowed from read-only scripts.",
        );
    }
    if ctx.oom && !ctx.wrote && spec.has_flag("denyoom") {
        return rejected(ctx, OOM_REFUSAL.as_bytes());
    }
    if ctx.cluster && !ctx.allow_cross_slot && spec.first_key > 0 {
        let mut cross = false;
        for i in spec.key_positions(args) {
            let slot = redis_slot(&args[i]);
            match ctx.slot {
                None => ctx.slot = Some(slot),
                Some(s) if s != slot => cross = true,
                Some(_) => {}
            }
        }
        if cross {
            return refusal(
                ctx,
                b"Script attempted to access keys that do not hash to the same slot",
            );
        }
    }
    if let Some(o) = &ctx.session.overlay {
        if !crate::cluster::script::allowed(spec, args, o) {
            let text = format!("-{}", crate::cluster::script::NOT_HERE);
            return rejected(ctx, text.as_bytes());
        }
    }
    if write {
        ctx.wrote = true;
        ctx.shared
            .scripts
            .running
            .wrote
            .store(true, Ordering::Release);
    }
    ctx.session.run(args);
    if !ctx.session.pending.is_empty() {
        let s = &mut ctx.session;
        let rt = &ctx.runtime;
        if ctx.on_worker {
            tokio::task::block_in_place(|| rt.block_on(s.resolve()));
        } else {
            rt.block_on(s.resolve());
        }
    }
    let limits = DecodeLimits {
        max_bulk_len: usize::MAX,
        max_elements: usize::MAX,
        max_depth: 1024,
    };
    let frame = match decode(&ctx.session.out, &limits) {
        Ok(Some((f, _))) => f,
        _ => Frame::Null,
    };
    ctx.session.out.clear();
    frame
}

/// Pushes `{err = text}` (with Redis's `ignore_error_stats_update` when `counted`). May raise
/// (it allocates).
unsafe fn push_error(l: *mut lua_State, text: &[u8], counted: bool) {
    room(l, 3);
    ffi::lua_createtable(l, 0, 2);
    push_bytes(l, b"err");
    push_bytes(l, text);
    ffi::lua_rawset(l, -3);
    if counted {
        push_bytes(l, b"ignore_error_stats_update");
        ffi::lua_pushboolean(l, 1);
        ffi::lua_rawset(l, -3);
    }
}

/// Makes room for `n` more values on the stack, or raises Lua's "stack overflow".
unsafe fn room(l: *mut lua_State, n: c_int) {
    ffi::luaL_checkstack(l, n, c"reply nested too deep".as_ptr());
}

unsafe fn push_bytes(l: *mut lua_State, b: &[u8]) {
    ffi::lua_pushlstring(l, b.as_ptr().cast(), b.len());
}

/// Pushes `{name = <what push leaves on the stack>}`.
unsafe fn push_single(l: *mut lua_State, name: &[u8], push: impl FnOnce()) {
    ffi::lua_createtable(l, 0, 1);
    push_bytes(l, name);
    push();
    ffi::lua_rawset(l, -3);
}

/// Pushes a command's reply as the script sees it (`redisProtocolToLuaType`), with the
/// script's protocol (`redis.setresp`). May raise (it allocates): the caller's frames own
/// nothing with a destructor.
unsafe fn push_reply(l: *mut lua_State, f: &Frame, resp3: bool) {
    room(l, 4);
    match f {
        Frame::Integer(i) => ffi::lua_pushnumber(l, *i as f64),
        Frame::Bulk(b) => push_bytes(l, b),
        Frame::Null | Frame::NullArray => {
            if resp3 {
                ffi::lua_pushnil(l)
            } else {
                ffi::lua_pushboolean(l, 0)
            }
        }
        Frame::Simple(s) => push_single(l, b"ok", || push_bytes(l, s)),
        Frame::Error(e) => push_single(l, b"err", || push_bytes(l, e)),
        Frame::Array(items) | Frame::Push(items) => {
            ffi::lua_createtable(l, items.len().min(c_int::MAX as usize) as c_int, 0);
            for (i, item) in items.iter().enumerate() {
                push_reply(l, item, resp3);
                ffi::lua_rawseti(l, -2, i as i64 + 1);
            }
        }
        Frame::Map(pairs) => push_single(l, b"map", || {
            ffi::lua_createtable(l, 0, pairs.len().min(c_int::MAX as usize) as c_int);
            for (k, v) in pairs {
                push_reply(l, k, resp3);
                push_reply(l, v, resp3);
                set_pair(l);
            }
        }),
        Frame::Set(items) => push_single(l, b"set", || {
            ffi::lua_createtable(l, 0, items.len().min(c_int::MAX as usize) as c_int);
            for k in items {
                push_reply(l, k, resp3);
                ffi::lua_pushboolean(l, 1);
                set_pair(l);
            }
        }),
        Frame::Double(d) => {
            let v = std::str::from_utf8(d)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            push_single(l, b"double", || ffi::lua_pushnumber(l, v))
        }
        Frame::Boolean(b) => ffi::lua_pushboolean(l, c_int::from(*b)),
        Frame::BigNumber(n) => push_single(l, b"big_number", || push_bytes(l, n)),
        Frame::Verbatim { format, text } => push_single(l, b"verbatim_string", || {
            ffi::lua_createtable(l, 0, 2);
            push_bytes(l, b"format");
            push_bytes(l, format);
            ffi::lua_rawset(l, -3);
            push_bytes(l, b"string");
            push_bytes(l, text);
            ffi::lua_rawset(l, -3);
        }),
    }
}

/// Sets key (at -2) to value (at -1) in the table below them; a nil key (a null in a map,
/// which Lua cannot index by) is dropped.
unsafe fn set_pair(l: *mut lua_State) {
    if ffi::lua_type(l, -2) == ffi::LUA_TNIL {
        ffi::lua_settop(l, -3);
    } else {
        ffi::lua_rawset(l, -3);
    }
}

/// What [`invoke`] leaves: the script's reply when it returned, or `None` when it failed (its
/// error, as the runner returned it, left on the stack for mlua).
pub(super) type Outcome = Option<(Frame, bool)>;

/// `redis.call` and `redis.pcall` as Lua functions.
pub(super) fn functions(lua: &mlua::Lua) -> mlua::Result<(mlua::Function, mlua::Function)> {
    // SAFETY: both keep invariants 1 to 4 above.
    unsafe { Ok((lua.create_c_function(call)?, lua.create_c_function(pcall)?)) }
}

/// Called by `Lua::exec_raw` with a script's compiled function, or a function's callback
/// (`function`), at 1: makes KEYS and ARGV, runs it under the prelude's error handler
/// (`refs`), lifts the memory limit (`lift`), and converts the reply if it returned. Its reply's `ignore_error_stats_update` mark
/// comes with it (a `return redis.pcall(...)` of an error counted already).
///
/// # Safety
/// `l` is the state `exec_raw` runs this in, with those values on its stack (and nothing
/// under them). The caller's closure owns nothing with a destructor (invariant 1): KEYS and
/// ARGV may fail to allocate under the memory limit.
pub(super) unsafe fn invoke(
    l: *mut lua_State,
    refs: &ScriptRefs,
    function: bool,
    keys: &[Bytes],
    argv: &[Bytes],
    lift: &dyn Fn(),
    out: &mut Outcome,
) {
    // As Redis's C runs a script or a function: the stack holds the compiled function (or the
    // callback); `current[1]` (what `_G` answers) is the scripts' environment (or the
    // callback's library's); a script gets that environment and its KEYS and ARGV refilled,
    // a callback new KEYS and ARGV tables as its arguments; it is called under the error
    // handler. No Lua frame around it, no `xpcall`, no closure per call.
    room(l, 6);
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, refs.handler);
    ffi::lua_insert(l, 1);
    if function {
        ffi::lua_getfenv(l, 2);
    } else {
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, refs.env);
    }
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, refs.current);
    ffi::lua_pushvalue(l, 3);
    ffi::lua_rawseti(l, 4, 1);
    ffi::lua_settop(l, 3);
    let nargs = if function {
        ffi::lua_settop(l, 2);
        push_array(l, keys);
        push_array(l, argv);
        2
    } else {
        ffi::lua_setfenv(l, 2);
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, refs.keys);
        refill(l, 3, keys);
        ffi::lua_settop(l, 2);
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, refs.argv);
        refill(l, 3, argv);
        ffi::lua_settop(l, 2);
        0
    };
    let status = ffi::lua_pcall(l, nargs, ffi::LUA_MULTRET, 1);
    lift();
    // True and the script's values, or false and the error (what the Lua runner returned).
    ffi::lua_pushboolean(l, c_int::from(status == 0));
    ffi::lua_replace(l, 1);
    let top = ffi::lua_gettop(l);
    if top == 0 || ffi::lua_toboolean(l, 1) == 0 {
        return;
    }
    let resp3 = with_run(|c| c.resp3).unwrap_or(false);
    let (frame, counted) = if top >= 2 {
        let frame = to_frame(l, 2, resp3, 0);
        // Only an error reply can carry the mark (one lookup fewer for every other reply).
        let counted = matches!(frame, Frame::Error(_)) && is_marked(l, 2);
        (frame, counted)
    } else {
        (Frame::Null, false)
    };
    *out = Some((frame, counted));
    ffi::lua_settop(l, 0);
}

/// The prelude's values a script's run uses, by their places in Lua's registry (held there by
/// the keys kept here).
///
/// KEYS and ARGV are two tables that the scripts' globals hold for good and every run refills
/// ([`refill`]): two fewer objects per run for the collector (it was 8% of a short script's
/// CPU). Nothing of one run reaches the next through them: a script's sandbox keeps nothing
/// between runs (no global can be set, the libraries are read-only), so a run can only see its
/// own KEYS and ARGV, and a refill removes whatever the last run added to them (fields,
/// elements, a metatable). FCALL's callbacks get new tables every call: a library can keep
/// values between calls in its upvalues.
pub(super) struct ScriptRefs {
    handler: i64,
    env: i64,
    current: i64,
    keys: i64,
    argv: i64,
    _keys: [mlua::RegistryKey; 5],
}

impl ScriptRefs {
    pub(super) fn new(
        lua: &mlua::Lua,
        handler: mlua::Function,
        env: mlua::Table,
        current: mlua::Table,
        keys: mlua::Table,
        argv: mlua::Table,
    ) -> mlua::Result<ScriptRefs> {
        let refs = [
            lua.create_registry_value(handler)?,
            lua.create_registry_value(env)?,
            lua.create_registry_value(current)?,
            lua.create_registry_value(keys)?,
            lua.create_registry_value(argv)?,
        ];
        Ok(ScriptRefs {
            handler: i64::from(refs[0].id()),
            env: i64::from(refs[1].id()),
            current: i64::from(refs[2].id()),
            keys: i64::from(refs[3].id()),
            argv: i64::from(refs[4].id()),
            _keys: refs,
        })
    }
}

/// Makes the table at `t` (an absolute index) hold exactly `items` at 1..n: no metatable, no
/// other field. Needs room for 3 more values on the stack. May raise (a string or a new slot
/// allocates).
unsafe fn refill(l: *mut lua_State, t: c_int, items: &[Bytes]) {
    ffi::lua_pushnil(l);
    ffi::lua_setmetatable(l, t);
    for (i, v) in items.iter().enumerate() {
        push_bytes(l, v);
        ffi::lua_rawseti(l, t, i as i64 + 1);
    }
    // Anything else the last run left: cleared while traversed, as Lua allows.
    let n = items.len() as f64;
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, t) != 0 {
        ffi::lua_settop(l, -2);
        let index = ffi::lua_type(l, -1) == ffi::LUA_TNUMBER && {
            let k = ffi::lua_tonumber(l, -1);
            k >= 1.0 && k <= n && k.fract() == 0.0
        };
        if !index {
            ffi::lua_pushvalue(l, -1);
            ffi::lua_pushnil(l);
            ffi::lua_rawset(l, t);
        }
    }
}

/// A new array of `items` (a function's KEYS and ARGV). May raise.
unsafe fn push_array(l: *mut lua_State, items: &[Bytes]) {
    ffi::lua_createtable(l, items.len().min(c_int::MAX as usize) as c_int, 0);
    for (i, v) in items.iter().enumerate() {
        push_bytes(l, v);
        ffi::lua_rawseti(l, -2, i as i64 + 1);
    }
}

/// Whether the table at `idx` carries `ignore_error_stats_update = true`.
unsafe fn is_marked(l: *mut lua_State, idx: c_int) -> bool {
    if ffi::lua_type(l, idx) != ffi::LUA_TTABLE {
        return false;
    }
    let t = field(l, idx, b"ignore_error_stats_update");
    let marked = t == ffi::LUA_TBOOLEAN && ffi::lua_toboolean(l, -1) != 0;
    ffi::lua_settop(l, -2);
    marked
}

/// Pushes `t[name]` (raw) for the table at `idx` and returns its type. The name is one Redis's
/// conversions use: interned by the prelude's code, so pushing it allocates nothing.
unsafe fn field(l: *mut lua_State, idx: c_int, name: &[u8]) -> c_int {
    let idx = if idx < 0 {
        ffi::lua_gettop(l) + idx + 1
    } else {
        idx
    };
    push_bytes(l, name);
    ffi::lua_rawget(l, idx)
}

/// The value at `idx` (an absolute index) as a reply (`luaReplyToRedisReply`). `resp3` is the
/// script's protocol: a boolean is a RESP3 boolean only when the script chose RESP3.
unsafe fn to_frame(l: *mut lua_State, idx: c_int, resp3: bool, depth: usize) -> Frame {
    // Redis stops where its Lua stack would overflow; a table that contains itself ends here.
    if depth > convert::MAX_REPLY_DEPTH {
        return Frame::error("ERR reached lua stack limit");
    }
    match ffi::lua_type(l, idx) {
        ffi::LUA_TSTRING => Frame::Bulk(Bytes::copy_from_slice(string_at(l, idx))),
        ffi::LUA_TBOOLEAN => {
            let b = ffi::lua_toboolean(l, idx) != 0;
            if resp3 {
                Frame::Boolean(b)
            } else if b {
                Frame::Integer(1)
            } else {
                Frame::Null
            }
        }
        ffi::LUA_TNUMBER => Frame::Integer(convert::number_to_int(ffi::lua_tonumber(l, idx))),
        // Room for the fields read below (none left: too deep, as Redis's limit).
        ffi::LUA_TTABLE if ffi::lua_checkstack(l, 4) != 0 => table_to_frame(l, idx, resp3, depth),
        ffi::LUA_TTABLE => Frame::error("ERR reached lua stack limit"),
        _ => Frame::Null,
    }
}

/// Reads the string field `name` of the table at `idx`, if it is one, and pops it.
unsafe fn string_field(l: *mut lua_State, idx: c_int, name: &[u8]) -> Option<Bytes> {
    let v =
        (field(l, idx, name) == ffi::LUA_TSTRING).then(|| Bytes::copy_from_slice(string_at(l, -1)));
    ffi::lua_settop(l, -2);
    v
}

unsafe fn table_to_frame(l: *mut lua_State, idx: c_int, resp3: bool, depth: usize) -> Frame {
    if let Some(e) = string_field(l, idx, b"err") {
        return Frame::Error(convert::one_line(&e));
    }
    if let Some(s) = string_field(l, idx, b"ok") {
        return Frame::Simple(convert::one_line(&s));
    }
    if field(l, idx, b"double") == ffi::LUA_TNUMBER {
        let n = ffi::lua_tonumber(l, -1);
        ffi::lua_settop(l, -2);
        return Frame::Double(Bytes::from(format_g(n, 17)));
    }
    ffi::lua_settop(l, -2);
    if let Some(s) = string_field(l, idx, b"big_number") {
        return Frame::BigNumber(convert::one_line(&s));
    }
    if field(l, idx, b"verbatim_string") == ffi::LUA_TTABLE {
        let v = ffi::lua_gettop(l);
        let f = string_field(l, v, b"format");
        let s = string_field(l, v, b"string");
        ffi::lua_settop(l, -2);
        if let (Some(f), Some(text)) = (f, s) {
            let mut format = *b"txt";
            for (i, c) in f.iter().take(3).enumerate() {
                format[i] = *c;
            }
            return Frame::Verbatim { format, text };
        }
    } else {
        ffi::lua_settop(l, -2);
    }
    if field(l, idx, b"map") == ffi::LUA_TTABLE {
        let m = ffi::lua_gettop(l);
        let mut pairs = Vec::new();
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, m) != 0 {
            let top = ffi::lua_gettop(l);
            pairs.push((
                to_frame(l, top - 1, resp3, depth + 1),
                to_frame(l, top, resp3, depth + 1),
            ));
            ffi::lua_settop(l, -2);
        }
        ffi::lua_settop(l, -2);
        return Frame::Map(pairs);
    }
    ffi::lua_settop(l, -2);
    if field(l, idx, b"set") == ffi::LUA_TTABLE {
        let m = ffi::lua_gettop(l);
        let mut items = Vec::new();
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, m) != 0 {
            let top = ffi::lua_gettop(l);
            items.push(to_frame(l, top - 1, resp3, depth + 1));
            ffi::lua_settop(l, -2);
        }
        ffi::lua_settop(l, -2);
        return Frame::Set(items);
    }
    ffi::lua_settop(l, -2);
    let mut items = Vec::new();
    for i in 1.. {
        if ffi::lua_rawgeti(l, idx, i) == ffi::LUA_TNIL {
            ffi::lua_settop(l, -2);
            break;
        }
        let top = ffi::lua_gettop(l);
        items.push(to_frame(l, top, resp3, depth + 1));
        ffi::lua_settop(l, -2);
    }
    Frame::Array(items)
}
