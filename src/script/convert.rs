//! Redis's conversions between replies and Lua values, both ways (`script_lua.c`:
//! `redisProtocolToLuaType` and `luaReplyToRedisReply`).

use bytes::Bytes;
use hypercache_resp::num::format_g;
use hypercache_resp::Frame;
use mlua::{Lua, LuaString, Table, Value};

/// The field names Redis's conversions look for, made once per VM: a lookup with a Lua string
/// already made costs a fraction of one that makes the string first.
pub(crate) struct Names {
    err: LuaString,
    ok: LuaString,
    double: LuaString,
    big_number: LuaString,
    verbatim_string: LuaString,
    map: LuaString,
    set: LuaString,
}

impl Names {
    pub(crate) fn new(lua: &Lua) -> mlua::Result<Names> {
        Ok(Names {
            err: lua.create_string("err")?,
            ok: lua.create_string("ok")?,
            double: lua.create_string("double")?,
            big_number: lua.create_string("big_number")?,
            verbatim_string: lua.create_string("verbatim_string")?,
            map: lua.create_string("map")?,
            set: lua.create_string("set")?,
        })
    }
}

/// A command's reply as the script sees it, with the script's protocol (`redis.setresp`).
pub(crate) fn reply_to_lua(
    lua: &Lua,
    names: &Names,
    f: &Frame,
    resp3: bool,
) -> mlua::Result<Value> {
    Ok(match f {
        Frame::Integer(i) => Value::Number(*i as f64),
        Frame::Bulk(b) => Value::String(lua.create_string(b)?),
        Frame::Null | Frame::NullArray => {
            if resp3 {
                Value::Nil
            } else {
                Value::Boolean(false)
            }
        }
        Frame::Simple(s) => single_field(lua, &names.ok, Value::String(lua.create_string(s)?))?,
        Frame::Error(e) => single_field(lua, &names.err, Value::String(lua.create_string(e)?))?,
        Frame::Array(items) | Frame::Push(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, reply_to_lua(lua, names, item, resp3)?)?;
            }
            Value::Table(t)
        }
        Frame::Map(pairs) => {
            let m = lua.create_table()?;
            for (k, v) in pairs {
                m.raw_set(
                    reply_to_lua(lua, names, k, resp3)?,
                    reply_to_lua(lua, names, v, resp3)?,
                )?;
            }
            single_field(lua, &names.map, Value::Table(m))?
        }
        Frame::Set(items) => {
            let m = lua.create_table()?;
            for k in items {
                m.raw_set(reply_to_lua(lua, names, k, resp3)?, true)?;
            }
            single_field(lua, &names.set, Value::Table(m))?
        }
        Frame::Double(d) => {
            let v = std::str::from_utf8(d)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            single_field(lua, &names.double, Value::Number(v))?
        }
        Frame::Boolean(b) => Value::Boolean(*b),
        Frame::BigNumber(n) => {
            single_field(lua, &names.big_number, Value::String(lua.create_string(n)?))?
        }
        Frame::Verbatim { format, text } => {
            let v = lua.create_table()?;
            v.raw_set("format", lua.create_string(format)?)?;
            v.raw_set("string", lua.create_string(text)?)?;
            single_field(lua, &names.verbatim_string, Value::Table(v))?
        }
    })
}

fn single_field(lua: &Lua, name: &LuaString, v: Value) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(0, 1)?;
    t.raw_set(name, v)?;
    Ok(Value::Table(t))
}

/// Lua's number as Redis turns it into an integer reply (`(long long)lua_tonumber`).
fn number_to_int(n: f64) -> i64 {
    if n.is_nan() {
        i64::MIN
    } else {
        n as i64
    }
}

/// Replaces CR and LF by spaces (a status or big number reply is one line).
fn one_line(b: &[u8]) -> Bytes {
    b.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect::<Vec<u8>>()
        .into()
}

/// What an error table `{err=...}` becomes: the error text as the client sees it (its code
/// included). `None` if `t` is not an error table.
pub(crate) fn error_text(t: &Table) -> Option<Bytes> {
    match t.raw_get::<Value>("err").ok()? {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        _ => None,
    }
}

/// How deep a script's reply may nest.
const MAX_REPLY_DEPTH: usize = 1000;

/// The script's return value as a reply. `resp3` is the script's protocol: a boolean is a RESP3
/// boolean only when the script chose RESP3 (otherwise `true` is 1 and `false` nil).
pub(crate) fn lua_to_reply(names: &Names, v: &Value, resp3: bool, depth: usize) -> Frame {
    // Redis stops where its Lua stack would overflow (about 2,000 levels); a table that
    // contains itself ends there with this error, nested in the arrays already written.
    if depth > MAX_REPLY_DEPTH {
        return Frame::error("ERR reached lua stack limit");
    }
    match v {
        Value::String(s) => Frame::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Boolean(b) if resp3 => Frame::Boolean(*b),
        Value::Boolean(true) => Frame::Integer(1),
        Value::Boolean(false) => Frame::Null,
        Value::Integer(i) => Frame::Integer(*i),
        Value::Number(n) => Frame::Integer(number_to_int(*n)),
        Value::Table(t) => table_to_reply(names, t, resp3, depth),
        _ => Frame::Null,
    }
}

fn table_to_reply(names: &Names, t: &Table, resp3: bool, depth: usize) -> Frame {
    if let Ok(Value::String(e)) = t.raw_get::<Value>(&names.err) {
        return Frame::Error(one_line(&e.as_bytes()));
    }
    if let Ok(Value::String(s)) = t.raw_get::<Value>(&names.ok) {
        return Frame::Simple(one_line(&s.as_bytes()));
    }
    if let Ok(v) = t.raw_get::<Value>(&names.double) {
        if let Some(n) = super::as_number(&v) {
            return Frame::Double(Bytes::from(format_g(n, 17)));
        }
    }
    if let Ok(Value::String(s)) = t.raw_get::<Value>(&names.big_number) {
        return Frame::BigNumber(one_line(&s.as_bytes()));
    }
    if let Ok(Value::Table(v)) = t.raw_get::<Value>(&names.verbatim_string) {
        if let (Ok(Value::String(f)), Ok(Value::String(s))) =
            (v.raw_get::<Value>("format"), v.raw_get::<Value>("string"))
        {
            let fb = f.as_bytes();
            let mut format = *b"txt";
            for (i, c) in fb.iter().take(3).enumerate() {
                format[i] = *c;
            }
            return Frame::Verbatim {
                format,
                text: Bytes::copy_from_slice(&s.as_bytes()),
            };
        }
    }
    if let Ok(Value::Table(m)) = t.raw_get::<Value>(&names.map) {
        let mut pairs = Vec::new();
        for (k, v) in m.pairs::<Value, Value>().flatten() {
            pairs.push((
                lua_to_reply(names, &k, resp3, depth + 1),
                lua_to_reply(names, &v, resp3, depth + 1),
            ));
        }
        return Frame::Map(pairs);
    }
    if let Ok(Value::Table(m)) = t.raw_get::<Value>(&names.set) {
        let items = m
            .pairs::<Value, Value>()
            .flatten()
            .map(|(k, _)| lua_to_reply(names, &k, resp3, depth + 1))
            .collect();
        return Frame::Set(items);
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(lua_to_reply(names, &v, resp3, depth + 1)),
        }
    }
    Frame::Array(items)
}
