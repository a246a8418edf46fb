//! The libraries Redis gives scripts beyond Lua's own: `bit` (LuaBitOp), `cjson` (lua-cjson)
//! and `cmsgpack` (lua-cmsgpack), written here in Rust with their semantics (`struct` is not
//! built yet: docs/commands.md).

use std::sync::Arc;

use mlua::{LightUserData, Lua, MultiValue, Table, Value};
use parking_lot::Mutex;

use super::as_number;

/// Registers `bit`, `cjson` and `cmsgpack` in `globals`.
pub(crate) fn register(lua: &Lua, globals: &Table) -> mlua::Result<()> {
    globals.raw_set("bit", bit(lua)?)?;
    globals.raw_set("cjson", cjson(lua)?)?;
    globals.raw_set("cmsgpack", cmsgpack(lua)?)?;
    Ok(())
}

/// LuaBitOp's conversion of a number to a 32-bit integer: modulo 2^32, as its `barg` does.
fn tobit(n: f64) -> i32 {
    if !n.is_finite() {
        return 0;
    }
    let m = n.trunc().rem_euclid(4_294_967_296.0);
    (m as u64 as u32) as i32
}

fn arg(args: &MultiValue, i: usize, name: &str) -> mlua::Result<i32> {
    match args.get(i) {
        Some(Value::Number(n)) => Ok(tobit(*n)),
        Some(Value::Integer(n)) => Ok(tobit(*n as f64)),
        Some(Value::String(s)) => match std::str::from_utf8(&s.as_bytes())
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            Some(n) => Ok(tobit(n)),
            None => Err(bad_arg(i, name, "number", "string")),
        },
        other => Err(bad_arg(
            i,
            name,
            "number",
            other.map_or("no value", |v| v.type_name()),
        )),
    }
}

fn bad_arg(i: usize, name: &str, want: &str, got: &str) -> mlua::Error {
    mlua::Error::runtime(format!(
        "bad argument #{} to '{name}' ({want} expected, got {got})",
        i + 1
    ))
}

fn bit(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "tobit",
        lua.create_function(|_, a: MultiValue| Ok(f64::from(arg(&a, 0, "tobit")?)))?,
    )?;
    t.raw_set(
        "bnot",
        lua.create_function(|_, a: MultiValue| Ok(f64::from(!arg(&a, 0, "bnot")?)))?,
    )?;
    t.raw_set(
        "bswap",
        lua.create_function(|_, a: MultiValue| Ok(f64::from(arg(&a, 0, "bswap")?.swap_bytes())))?,
    )?;
    type Fold = fn(i32, i32) -> i32;
    let folds: [(&str, Fold); 3] = [
        ("band", |x, y| x & y),
        ("bor", |x, y| x | y),
        ("bxor", |x, y| x ^ y),
    ];
    for (name, f) in folds {
        t.raw_set(
            name,
            lua.create_function(move |_, a: MultiValue| {
                let mut acc = arg(&a, 0, name)?;
                for i in 1..a.len() {
                    acc = f(acc, arg(&a, i, name)?);
                }
                Ok(f64::from(acc))
            })?,
        )?;
    }
    type Shift = fn(i32, u32) -> i32;
    let shifts: [(&str, Shift); 5] = [
        ("lshift", |x, n| ((x as u32) << n) as i32),
        ("rshift", |x, n| ((x as u32) >> n) as i32),
        ("arshift", |x, n| x >> n),
        ("rol", |x, n| (x as u32).rotate_left(n) as i32),
        ("ror", |x, n| (x as u32).rotate_right(n) as i32),
    ];
    for (name, f) in shifts {
        t.raw_set(
            name,
            lua.create_function(move |_, a: MultiValue| {
                let x = arg(&a, 0, name)?;
                let n = (arg(&a, 1, name)? & 31) as u32;
                Ok(f64::from(f(x, n)))
            })?,
        )?;
    }
    t.raw_set(
        "tohex",
        lua.create_function(|_, a: MultiValue| {
            let x = arg(&a, 0, "tohex")? as u32;
            let mut n = if a.len() > 1 { arg(&a, 1, "tohex")? } else { 8 };
            let upper = n < 0;
            if upper {
                n = -n;
            }
            let n = n.clamp(1, 8) as usize;
            let s = if upper {
                format!("{x:08X}")
            } else {
                format!("{x:08x}")
            };
            Ok(s[8 - n..].to_string())
        })?,
    )?;
    Ok(t)
}

/// `cjson.null`: a light userdata holding NULL, as lua-cjson's.
fn json_null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// lua-cjson's settings (`cjson.encode_max_depth(n)` and the others).
#[derive(Debug, Clone, Copy)]
struct JsonCfg {
    encode_max_depth: usize,
    decode_max_depth: usize,
    precision: usize,
    invalid_numbers: bool,
    sparse_convert: bool,
    sparse_ratio: usize,
    sparse_safe: usize,
}

impl Default for JsonCfg {
    fn default() -> Self {
        JsonCfg {
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            precision: 14,
            invalid_numbers: false,
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
        }
    }
}

fn cjson(lua: &Lua) -> mlua::Result<Table> {
    let cfg = Arc::new(Mutex::new(JsonCfg::default()));
    let t = lua.create_table()?;
    t.raw_set("null", json_null())?;
    let c = cfg.clone();
    t.raw_set(
        "encode",
        lua.create_function(move |_, v: Value| {
            let cfg = *c.lock();
            let mut out = Vec::new();
            encode(&v, 0, &cfg, &mut out)?;
            Ok(mlua::BString::from(out))
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "decode",
        lua.create_function(move |lua, s: mlua::LuaString| {
            let max = c.lock().decode_max_depth;
            let parsed: serde_json::Value = serde_json::from_slice(&s.as_bytes()).map_err(|e| {
                mlua::Error::runtime(format!("Expected value but found invalid token ({e})"))
            })?;
            decode(lua, &parsed, 0, max)
        })?,
    )?;
    type Setter = fn(&mut JsonCfg, &MultiValue) -> Vec<Value>;
    let setters: [(&str, Setter); 7] = [
        ("encode_max_depth", |c, a| {
            if let Some(n) = a.front().and_then(as_number) {
                c.encode_max_depth = n.max(1.0) as usize;
            }
            vec![Value::Number(c.encode_max_depth as f64)]
        }),
        ("decode_max_depth", |c, a| {
            if let Some(n) = a.front().and_then(as_number) {
                c.decode_max_depth = n.max(1.0) as usize;
            }
            vec![Value::Number(c.decode_max_depth as f64)]
        }),
        ("encode_number_precision", |c, a| {
            if let Some(n) = a.front().and_then(as_number) {
                c.precision = n.clamp(1.0, 14.0) as usize;
            }
            vec![Value::Number(c.precision as f64)]
        }),
        ("encode_invalid_numbers", |c, a| {
            if let Some(Value::Boolean(b)) = a.front() {
                c.invalid_numbers = *b;
            }
            vec![Value::Boolean(c.invalid_numbers)]
        }),
        ("decode_invalid_numbers", |_, a| {
            vec![a.front().cloned().unwrap_or(Value::Boolean(true))]
        }),
        ("encode_keep_buffer", |_, a| {
            vec![a.front().cloned().unwrap_or(Value::Boolean(true))]
        }),
        ("encode_sparse_array", |c, a| {
            if let Some(Value::Boolean(b)) = a.front() {
                c.sparse_convert = *b;
            }
            if let Some(n) = a.get(1).and_then(as_number) {
                c.sparse_ratio = n.max(0.0) as usize;
            }
            if let Some(n) = a.get(2).and_then(as_number) {
                c.sparse_safe = n.max(0.0) as usize;
            }
            vec![
                Value::Boolean(c.sparse_convert),
                Value::Number(c.sparse_ratio as f64),
                Value::Number(c.sparse_safe as f64),
            ]
        }),
    ];
    for (name, f) in setters {
        let c = cfg.clone();
        t.raw_set(
            name,
            lua.create_function(move |_, a: MultiValue| {
                Ok(MultiValue::from_iter(f(&mut c.lock(), &a)))
            })?,
        )?;
    }
    Ok(t)
}

fn encode(v: &Value, depth: usize, cfg: &JsonCfg, out: &mut Vec<u8>) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Number(n) => {
            if !n.is_finite() && !cfg.invalid_numbers {
                return Err(mlua::Error::runtime(
                    "Cannot serialise number: must not be NaN or Inf",
                ));
            }
            out.extend_from_slice(hypercache_resp::num::format_g(*n, cfg.precision).as_bytes());
        }
        Value::String(s) => encode_string(&s.as_bytes(), out),
        Value::Table(t) => {
            if depth + 1 > cfg.encode_max_depth {
                return Err(mlua::Error::runtime(format!(
                    "Cannot serialise, excessive nesting ({})",
                    depth + 1
                )));
            }
            encode_table(t, depth + 1, cfg, out)?;
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    }
    Ok(())
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            0..=31 | 127 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

/// A table's shape as lua-cjson and lua-cmsgpack both read it: how many keys, the largest
/// positive integer key, and whether every key is one (an array, possibly with holes).
fn array_shape(t: &Table) -> mlua::Result<(usize, usize, bool)> {
    let (mut count, mut max, mut array) = (0usize, 0usize, true);
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair?;
        count += 1;
        match as_number(&k) {
            Some(n) if n >= 1.0 && n.fract() == 0.0 => max = max.max(n as usize),
            _ => array = false,
        }
    }
    Ok((count, max, array))
}

fn encode_table(t: &Table, depth: usize, cfg: &JsonCfg, out: &mut Vec<u8>) -> mlua::Result<()> {
    // lua-cjson: an array if every key is a positive integer (holes up to a sparse ratio
    // become null); an empty table is an object.
    let (count, max, array) = array_shape(t)?;
    if array && max > 0 {
        let sparse =
            cfg.sparse_ratio > 0 && max > count * cfg.sparse_ratio && max > cfg.sparse_safe;
        if sparse && !cfg.sparse_convert {
            return Err(mlua::Error::runtime(
                "Cannot serialise table: excessively sparse array",
            ));
        }
        if !sparse {
            out.push(b'[');
            for i in 1..=max {
                if i > 1 {
                    out.push(b',');
                }
                encode(&t.raw_get::<Value>(i)?, depth, cfg, out)?;
            }
            out.push(b']');
            return Ok(());
        }
    }
    out.push(b'{');
    let mut first = true;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        if !first {
            out.push(b',');
        }
        first = false;
        match &k {
            Value::String(s) => encode_string(&s.as_bytes(), out),
            Value::Number(n) => encode_string(
                hypercache_resp::num::format_g(*n, cfg.precision).as_bytes(),
                out,
            ),
            Value::Integer(n) => encode_string(n.to_string().as_bytes(), out),
            _ => {
                return Err(mlua::Error::runtime(
                    "Cannot serialise table: table key must be a number or string",
                ))
            }
        }
        out.push(b':');
        encode(&v, depth, cfg, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn decode(lua: &Lua, v: &serde_json::Value, depth: usize, max: usize) -> mlua::Result<Value> {
    if depth >= max
        && matches!(
            v,
            serde_json::Value::Array(_) | serde_json::Value::Object(_)
        )
    {
        return Err(mlua::Error::runtime(
            "Found too many nested data structures",
        ));
    }
    Ok(match v {
        serde_json::Value::Null => json_null(),
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, decode(lua, item, depth + 1, max)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(lua.create_string(k)?, decode(lua, item, depth + 1, max)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Deepest nesting `cmsgpack.pack` follows (deeper tables are packed as nil, as lua-cmsgpack
/// does).
const MSGPACK_MAX_NESTING: usize = 16;

fn cmsgpack(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|_, a: MultiValue| {
            if a.is_empty() {
                return Err(mlua::Error::runtime("MessagePack pack needs input."));
            }
            let mut out = Vec::new();
            for v in a.iter() {
                mp_encode(v, 0, &mut out)?;
            }
            Ok(mlua::BString::from(out))
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, s: mlua::LuaString| {
            let b = s.as_bytes();
            let (values, _) = mp_decode_many(lua, &b, 0, 0)?;
            Ok(MultiValue::from_iter(values))
        })?,
    )?;
    t.raw_set(
        "unpack_one",
        lua.create_function(|lua, (s, offset): (mlua::LuaString, Option<f64>)| {
            unpack_limited(lua, &s.as_bytes(), 1, offset.unwrap_or(0.0))
        })?,
    )?;
    t.raw_set(
        "unpack_limit",
        lua.create_function(
            |lua, (s, limit, offset): (mlua::LuaString, f64, Option<f64>)| {
                unpack_limited(
                    lua,
                    &s.as_bytes(),
                    limit.max(0.0) as usize,
                    offset.unwrap_or(0.0),
                )
            },
        )?,
    )?;
    Ok(t)
}

/// `unpack_limit`: the offset after the objects read (-1 at the end), then the objects.
fn unpack_limited(lua: &Lua, b: &[u8], limit: usize, offset: f64) -> mlua::Result<MultiValue> {
    if offset < 0.0 || offset as usize > b.len() {
        return Err(mlua::Error::runtime(format!(
            "Start offset {offset} greater than input length {}.",
            b.len()
        )));
    }
    let (values, at) = mp_decode_many(lua, b, offset as usize, limit)?;
    let next = if at >= b.len() { -1.0 } else { at as f64 };
    let mut out = vec![Value::Number(next)];
    out.extend(values);
    Ok(MultiValue::from_iter(out))
}

fn mp_encode(v: &Value, depth: usize, out: &mut Vec<u8>) -> mlua::Result<()> {
    match v {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(_) | Value::Integer(_) => {
            let n = as_number(v).unwrap_or(0.0);
            if n.is_finite() && (n as i64) as f64 == n {
                mp_int(n as i64, out);
            } else {
                let f = n as f32;
                if f64::from(f) == n {
                    out.push(0xca);
                    out.extend_from_slice(&f.to_be_bytes());
                } else {
                    out.push(0xcb);
                    out.extend_from_slice(&n.to_be_bytes());
                }
            }
        }
        Value::String(s) => {
            let b = s.as_bytes();
            let len = b.len();
            if len < 32 {
                out.push(0xa0 | len as u8);
            } else if len <= 0xff {
                out.extend_from_slice(&[0xd9, len as u8]);
            } else if len <= 0xffff {
                out.push(0xda);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0xdb);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            out.extend_from_slice(&b);
        }
        Value::Table(t) if depth < MSGPACK_MAX_NESTING => {
            let (count, max, array) = array_shape(t)?;
            if array && max == count {
                mp_len(count, 0x90, 0xdc, 0xdd, out);
                for i in 1..=count {
                    mp_encode(&t.raw_get::<Value>(i)?, depth + 1, out)?;
                }
            } else {
                mp_len(count, 0x80, 0xde, 0xdf, out);
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    mp_encode(&k, depth + 1, out)?;
                    mp_encode(&v, depth + 1, out)?;
                }
            }
        }
        _ => out.push(0xc0),
    }
    Ok(())
}

fn mp_len(n: usize, fix: u8, b16: u8, b32: u8, out: &mut Vec<u8>) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= 0xffff {
        out.push(b16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn mp_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        if n <= 127 {
            out.push(n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xcc, n as u8]);
        } else if n <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Decodes objects from `at` until the end (or `limit` of them, 0: no limit).
fn mp_decode_many(
    lua: &Lua,
    b: &[u8],
    mut at: usize,
    limit: usize,
) -> mlua::Result<(Vec<Value>, usize)> {
    let mut out = Vec::new();
    while at < b.len() && (limit == 0 || out.len() < limit) {
        out.push(mp_decode(lua, b, &mut at, 0)?);
    }
    Ok((out, at))
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> mlua::Result<&'a [u8]> {
    if b.len() - *at < n {
        return Err(mlua::Error::runtime("Missing bytes in input."));
    }
    let s = &b[*at..*at + n];
    *at += n;
    Ok(s)
}

fn be(s: &[u8]) -> u64 {
    s.iter().fold(0u64, |acc, &c| (acc << 8) | u64::from(c))
}

fn mp_decode(lua: &Lua, b: &[u8], at: &mut usize, depth: usize) -> mlua::Result<Value> {
    if depth > 500 {
        return Err(mlua::Error::runtime("Bad data format in input."));
    }
    let tag = take(b, at, 1)?[0];
    let string = |lua: &Lua, at: &mut usize, n: usize| -> mlua::Result<Value> {
        Ok(Value::String(lua.create_string(take(b, at, n)?)?))
    };
    let array = |lua: &Lua, at: &mut usize, n: usize| -> mlua::Result<Value> {
        let t = lua.create_table_with_capacity(n.min(1 << 16), 0)?;
        for i in 1..=n {
            t.raw_set(i, mp_decode(lua, b, at, depth + 1)?)?;
        }
        Ok(Value::Table(t))
    };
    let map = |lua: &Lua, at: &mut usize, n: usize| -> mlua::Result<Value> {
        let t = lua.create_table()?;
        for _ in 0..n {
            let k = mp_decode(lua, b, at, depth + 1)?;
            let v = mp_decode(lua, b, at, depth + 1)?;
            if !matches!(k, Value::Nil) {
                t.raw_set(k, v)?;
            }
        }
        Ok(Value::Table(t))
    };
    Ok(match tag {
        0x00..=0x7f => Value::Number(f64::from(tag)),
        0xe0..=0xff => Value::Number(f64::from(tag as i8)),
        0xc0 => Value::Nil,
        0xc2 => Value::Boolean(false),
        0xc3 => Value::Boolean(true),
        0xcc => Value::Number(be(take(b, at, 1)?) as f64),
        0xcd => Value::Number(be(take(b, at, 2)?) as f64),
        0xce => Value::Number(be(take(b, at, 4)?) as f64),
        0xcf => Value::Number(be(take(b, at, 8)?) as f64),
        0xd0 => Value::Number(f64::from(take(b, at, 1)?[0] as i8)),
        0xd1 => Value::Number(f64::from(be(take(b, at, 2)?) as u16 as i16)),
        0xd2 => Value::Number(f64::from(be(take(b, at, 4)?) as u32 as i32)),
        0xd3 => Value::Number(be(take(b, at, 8)?) as i64 as f64),
        0xca => Value::Number(f64::from(f32::from_bits(be(take(b, at, 4)?) as u32))),
        0xcb => Value::Number(f64::from_bits(be(take(b, at, 8)?))),
        0xa0..=0xbf => string(lua, at, usize::from(tag & 0x1f))?,
        0xd9 | 0xc4 | 0xda | 0xc5 | 0xdb | 0xc6 | 0xdc | 0xdd | 0xde | 0xdf => {
            // A length of 1, 2 or 4 bytes, then a string (str and bin alike), an array or a map.
            let width = match tag {
                0xd9 | 0xc4 => 1,
                0xda | 0xc5 | 0xdc | 0xde => 2,
                _ => 4,
            };
            let n = be(take(b, at, width)?) as usize;
            match tag {
                0xdc | 0xdd => array(lua, at, n)?,
                0xde | 0xdf => map(lua, at, n)?,
                _ => string(lua, at, n)?,
            }
        }
        0x90..=0x9f => array(lua, at, usize::from(tag & 0x0f))?,
        0x80..=0x8f => map(lua, at, usize::from(tag & 0x0f))?,
        _ => return Err(mlua::Error::runtime("Bad data format in input.")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_round_trips_every_length_width() {
        let lua = Lua::new();
        let t = cmsgpack(&lua).unwrap();
        let pack: mlua::Function = t.raw_get("pack").unwrap();
        let unpack: mlua::Function = t.raw_get("unpack").unwrap();
        let round = |v: Value| -> Value {
            let packed: mlua::LuaString = pack.call(v).unwrap();
            unpack.call(packed).unwrap()
        };
        for len in [5usize, 40, 300, 70_000] {
            let s = lua.create_string("x".repeat(len)).unwrap();
            match round(Value::String(s)) {
                Value::String(back) => assert_eq!(back.as_bytes().len(), len),
                other => panic!("{other:?}"),
            }
            let arr = lua.create_table().unwrap();
            let map = lua.create_table().unwrap();
            for i in 1..=len.min(70_000) {
                arr.raw_set(i, i as f64).unwrap();
                map.raw_set(format!("k{i}"), i as f64).unwrap();
            }
            match round(Value::Table(arr)) {
                Value::Table(back) => assert_eq!(back.raw_len(), len),
                other => panic!("{other:?}"),
            }
            match round(Value::Table(map)) {
                Value::Table(back) => {
                    assert_eq!(back.pairs::<Value, Value>().count(), len);
                    assert_eq!(back.raw_get::<f64>(format!("k{len}")).unwrap(), len as f64);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn tobit_wraps_like_luabitop() {
        assert_eq!(tobit(0xffff_ffff_u32 as f64), -1);
        assert_eq!(tobit(4_294_967_296.0 + 5.0), 5);
        assert_eq!(tobit(-1.0), -1);
        assert_eq!(tobit(2_147_483_648.0), i32::MIN);
    }
}
