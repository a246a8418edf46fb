//! The command table: every command HyperCache serves, with Redis 7's arity, flags, key positions
//! and docs. It drives the generic arity check, `COMMAND COUNT/INFO/DOCS/LIST`, and key extraction.

use std::collections::HashMap;
use std::sync::OnceLock;

/// One command (or subcommand) as `COMMAND INFO` describes it.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name (`get`, or `setname` for a subcommand).
    pub name: &'static str,
    /// Full name used in error texts: `get`, `client|setname`.
    pub fullname: &'static str,
    /// Redis arity: N means exactly N arguments (name included), -N at least N.
    pub arity: i32,
    /// Flags such as `write`, `readonly`, `fast`, `denyoom`, `no_auth`.
    pub flags: &'static [&'static str],
    /// Position of the first key (0 if none).
    pub first_key: i32,
    /// Position of the last key (-1: the last argument).
    pub last_key: i32,
    /// Step between keys.
    pub step: i32,
    /// ACL categories (`@read`, `@string`, ...).
    pub acl: &'static [&'static str],
    /// Docs group (`string`, `generic`, `connection`, `server`).
    pub group: &'static str,
    /// First Redis version with the command.
    pub since: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Subcommands of a container command (CLIENT, CONFIG, ...).
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    /// Whether `argc` arguments (the command name, and for a subcommand the parent's, included) fit
    /// the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        if a >= 0 {
            argc == a as usize
        } else {
            argc >= (-a) as usize
        }
    }

    /// Where the keys are in `args` (the command name at 0): from the first key to the last (a
    /// negative last counts from the end) by the step; for EVAL, EVALSHA, FCALL and their _RO
    /// forms (`movablekeys`), the `numkeys` arguments after it (none if it is not a count that
    /// fits), as Redis's keynum key spec finds them.
    pub fn key_positions(&self, args: &[impl AsRef<[u8]>]) -> Vec<usize> {
        if self.has_flag("movablekeys") {
            let n = args
                .get(2)
                .and_then(|a| crate::num::parse_i64(a.as_ref()))
                .filter(|n| *n >= 0 && (*n as usize) <= args.len().saturating_sub(3))
                .unwrap_or(0) as usize;
            return (3..3 + n).collect();
        }
        if self.first_key <= 0 {
            return Vec::new();
        }
        let last = if self.last_key < 0 {
            args.len() as i64 + i64::from(self.last_key)
        } else {
            i64::from(self.last_key)
        };
        let last = last.min(args.len() as i64 - 1);
        if last < i64::from(self.first_key) {
            return Vec::new();
        }
        (self.first_key as usize..=last as usize)
            .step_by(self.step.max(1) as usize)
            .collect()
    }

    /// Whether the command has `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// The subcommand named `name` (any case).
    pub fn subcommand(&self, name: &[u8]) -> Option<&'static CommandSpec> {
        self.subcommands
            .iter()
            .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
    }
}

macro_rules! spec {
    ($name:literal, $full:expr, $arity:expr, [$($f:literal),*], $fk:expr, $lk:expr, $st:expr,
     [$($acl:literal),*], $group:literal, $since:literal, $summary:literal, $subs:expr) => {
        CommandSpec {
            name: $name, fullname: $full, arity: $arity, flags: &[$($f),*], first_key: $fk,
            last_key: $lk, step: $st, acl: &[$($acl),*], group: $group, since: $since,
            summary: $summary, subcommands: $subs,
        }
    };
}

macro_rules! cmd {
    ($name:literal, $arity:expr, [$($f:literal),*], $fk:expr, $lk:expr, $st:expr, [$($acl:literal),*],
     $group:literal, $since:literal, $summary:literal) => {
        spec!($name, $name, $arity, [$($f),*], $fk, $lk, $st, [$($acl),*], $group, $since, $summary, &[])
    };
}

macro_rules! sub {
    ($parent:literal, $name:literal, $arity:expr, [$($f:literal),*], [$($acl:literal),*],
     $since:literal, $summary:literal) => {
        spec!($name, concat!($parent, "|", $name), $arity, [$($f),*], 0, 0, 0, [$($acl),*], "server",
              $since, $summary, &[])
    };
}

static OBJECT_SUBS: &[CommandSpec] = &[
    spec!(
        "encoding",
        "object|encoding",
        3,
        ["readonly"],
        2,
        2,
        1,
        ["@keyspace", "@read", "@slow"],
        "generic",
        "2.2.3",
        "Returns the internal encoding of a Redis object.",
        &[]
    ),
    spec!(
        "freq",
        "object|freq",
        3,
        ["readonly"],
        2,
        2,
        1,
        ["@keyspace", "@read", "@slow"],
        "generic",
        "4.0.0",
        "Returns the logarithmic access frequency counter of a Redis object.",
        &[]
    ),
    spec!(
        "idletime",
        "object|idletime",
        3,
        ["readonly"],
        2,
        2,
        1,
        ["@keyspace", "@read", "@slow"],
        "generic",
        "2.2.3",
        "Returns the time since the last access to a Redis object.",
        &[]
    ),
    spec!(
        "refcount",
        "object|refcount",
        3,
        ["readonly"],
        2,
        2,
        1,
        ["@keyspace", "@read", "@slow"],
        "generic",
        "2.2.3",
        "Returns the reference count of a value of a key.",
        &[]
    ),
    spec!(
        "help",
        "object|help",
        2,
        ["loading", "stale"],
        0,
        0,
        0,
        ["@keyspace", "@slow"],
        "generic",
        "6.2.0",
        "Returns helpful text about the different subcommands.",
        &[]
    ),
];

static ACL_SUBS: &[CommandSpec] = &[
    sub!(
        "acl",
        "cat",
        -2,
        ["noscript", "loading", "stale"],
        ["@slow"],
        "6.0.0",
        "Lists the ACL categories, or the commands inside a category."
    ),
    sub!(
        "acl",
        "deluser",
        -3,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Deletes ACL users, and terminates their connections."
    ),
    sub!(
        "acl",
        "dryrun",
        -4,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "7.0.0",
        "Simulates the execution of a command by a user, without executing the command."
    ),
    sub!(
        "acl",
        "genpass",
        -2,
        ["noscript", "loading", "stale"],
        ["@slow"],
        "6.0.0",
        "Generates a pseudorandom, secure password that can be used to identify ACL users."
    ),
    sub!(
        "acl",
        "getuser",
        3,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Lists the ACL rules of a user."
    ),
    sub!(
        "acl",
        "help",
        2,
        ["loading", "stale"],
        ["@slow"],
        "6.0.0",
        "Returns helpful text about the different subcommands."
    ),
    sub!(
        "acl",
        "list",
        2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Dumps the effective rules in ACL file format."
    ),
    sub!(
        "acl",
        "load",
        2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Reloads the rules from the configured ACL file."
    ),
    sub!(
        "acl",
        "log",
        -2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Lists recent security events generated due to ACL rules."
    ),
    sub!(
        "acl",
        "save",
        2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Saves the effective ACL rules in the configured ACL file."
    ),
    sub!(
        "acl",
        "setuser",
        -3,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Creates and modifies an ACL user and its rules."
    ),
    sub!(
        "acl",
        "users",
        2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "6.0.0",
        "Lists all ACL users."
    ),
    sub!(
        "acl",
        "whoami",
        2,
        ["noscript", "loading", "stale"],
        ["@slow"],
        "6.0.0",
        "Returns the authenticated username of the current connection."
    ),
];

static PUBSUB_SUBS: &[CommandSpec] = &[
    sub!(
        "pubsub",
        "channels",
        -2,
        ["pubsub", "loading", "stale"],
        ["@pubsub", "@slow"],
        "2.8.0",
        "List active channels"
    ),
    sub!(
        "pubsub",
        "help",
        2,
        ["loading", "stale"],
        ["@slow"],
        "6.2.0",
        "Show helpful text about the different subcommands"
    ),
    sub!(
        "pubsub",
        "numpat",
        2,
        ["pubsub", "loading", "stale"],
        ["@pubsub", "@slow"],
        "2.8.0",
        "Get the count of unique patterns pattern subscriptions"
    ),
    sub!(
        "pubsub",
        "numsub",
        -2,
        ["pubsub", "loading", "stale"],
        ["@pubsub", "@slow"],
        "2.8.0",
        "Get the count of subscribers for channels"
    ),
    sub!(
        "pubsub",
        "shardchannels",
        -2,
        ["pubsub", "loading", "stale"],
        ["@pubsub", "@slow"],
        "7.0.0",
        "List active shard channels"
    ),
    sub!(
        "pubsub",
        "shardnumsub",
        -2,
        ["pubsub", "loading", "stale"],
        ["@pubsub", "@slow"],
        "7.0.0",
        "Get the count of subscribers for shard channels"
    ),
];

static CLIENT_SUBS: &[CommandSpec] = &[
    sub!(
        "client",
        "tracking",
        -3,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "6.0.0",
        "Controls server-assisted client-side caching for the connection."
    ),
    sub!(
        "client",
        "caching",
        3,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "6.0.0",
        "Instructs the server whether to track the keys in the next request."
    ),
    sub!(
        "client",
        "getredir",
        2,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "6.0.0",
        "Returns the client ID to which the connection's tracking notifications are redirected."
    ),
    sub!(
        "client",
        "trackinginfo",
        2,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "6.2.0",
        "Returns information about server-assisted client-side caching for the connection."
    ),
    sub!(
        "client",
        "id",
        2,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "5.0.0",
        "Returns the unique client ID of the connection."
    ),
    sub!(
        "client",
        "setname",
        3,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "2.6.9",
        "Sets the connection name."
    ),
    sub!(
        "client",
        "getname",
        2,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "2.6.9",
        "Returns the name of the connection."
    ),
    sub!(
        "client",
        "info",
        2,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "6.2.0",
        "Returns information about the connection."
    ),
    sub!(
        "client",
        "list",
        -2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous", "@connection"],
        "2.4.0",
        "Lists open connections."
    ),
    sub!(
        "client",
        "kill",
        -3,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous", "@connection"],
        "2.4.0",
        "Terminates open connections."
    ),
    sub!(
        "client",
        "setinfo",
        4,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "7.2.0",
        "Sets information specific to the client or connection."
    ),
    sub!(
        "client",
        "no-evict",
        3,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous", "@connection"],
        "7.0.0",
        "Sets the client eviction mode of the connection."
    ),
    sub!(
        "client",
        "reply",
        3,
        ["noscript", "loading", "stale"],
        ["@slow", "@connection"],
        "3.2.0",
        "Instructs the server whether to reply to commands."
    ),
    sub!(
        "client",
        "help",
        2,
        ["loading", "stale"],
        ["@slow", "@connection"],
        "5.0.0",
        "Returns helpful text about the different subcommands."
    ),
];

static COMMAND_SUBS: &[CommandSpec] = &[
    sub!(
        "command",
        "count",
        2,
        ["loading", "stale"],
        ["@slow", "@connection"],
        "2.8.13",
        "Returns a count of commands."
    ),
    sub!(
        "command",
        "info",
        -2,
        ["loading", "stale"],
        ["@slow", "@connection"],
        "2.8.13",
        "Returns information about one, multiple or all commands."
    ),
    sub!(
        "command",
        "docs",
        -2,
        ["loading", "stale"],
        ["@slow", "@connection"],
        "7.0.0",
        "Returns documentary information about one, multiple or all commands."
    ),
    sub!(
        "command",
        "list",
        -2,
        ["loading", "stale"],
        ["@slow", "@connection"],
        "7.0.0",
        "Returns a list of command names."
    ),
    sub!(
        "command",
        "getkeys",
        -3,
        ["loading", "stale"],
        ["@slow", "@connection"],
        "2.8.13",
        "Extracts the key names from an arbitrary command."
    ),
    sub!(
        "command",
        "help",
        2,
        ["loading", "stale"],
        ["@slow", "@connection"],
        "5.0.0",
        "Returns helpful text about the different subcommands."
    ),
];

static MEMORY_SUBS: &[CommandSpec] = &[
    spec!(
        "usage",
        "memory|usage",
        -3,
        ["readonly"],
        2,
        2,
        1,
        ["@read", "@slow"],
        "server",
        "4.0.0",
        "Estimates the memory usage of a key.",
        &[]
    ),
    sub!(
        "memory",
        "stats",
        2,
        [],
        ["@slow"],
        "4.0.0",
        "Returns details about memory usage."
    ),
    sub!(
        "memory",
        "doctor",
        2,
        [],
        ["@slow"],
        "4.0.0",
        "Outputs a memory problems report."
    ),
    sub!(
        "memory",
        "help",
        2,
        ["loading", "stale"],
        ["@slow"],
        "4.0.0",
        "Returns helpful text about the different subcommands."
    ),
];

static CONFIG_SUBS: &[CommandSpec] = &[
    sub!(
        "config",
        "get",
        -3,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.0.0",
        "Returns the effective values of configuration parameters."
    ),
    sub!(
        "config",
        "set",
        -4,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.0.0",
        "Sets configuration parameters in-flight."
    ),
    sub!(
        "config",
        "resetstat",
        2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.0.0",
        "Resets the server's statistics."
    ),
    sub!(
        "config",
        "help",
        2,
        ["loading", "stale"],
        ["@slow"],
        "5.0.0",
        "Returns helpful text about the different subcommands."
    ),
];

static LATENCY_SUBS: &[CommandSpec] = &[
    sub!(
        "latency",
        "latest",
        2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.8.13",
        "Returns the latest latency samples for all events."
    ),
    sub!(
        "latency",
        "history",
        3,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.8.13",
        "Returns timestamp-latency samples for an event."
    ),
    sub!(
        "latency",
        "reset",
        -2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.8.13",
        "Resets the latency data for one or more events."
    ),
    sub!(
        "latency",
        "histogram",
        -2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "7.0.0",
        "Returns the cumulative distribution of latencies of a subset or all commands."
    ),
    sub!(
        "latency",
        "doctor",
        2,
        ["admin", "noscript", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.8.13",
        "Returns a human-readable latency analysis report."
    ),
    sub!(
        "latency",
        "help",
        2,
        ["loading", "stale"],
        ["@slow"],
        "2.8.13",
        "Returns helpful text about the different subcommands."
    ),
];

static SLOWLOG_SUBS: &[CommandSpec] = &[
    sub!(
        "slowlog",
        "get",
        -2,
        ["admin", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.2.12",
        "Returns the slow log's entries."
    ),
    sub!(
        "slowlog",
        "len",
        2,
        ["admin", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.2.12",
        "Returns the number of entries in the slow log."
    ),
    sub!(
        "slowlog",
        "reset",
        2,
        ["admin", "loading", "stale"],
        ["@admin", "@slow", "@dangerous"],
        "2.2.12",
        "Clears all entries from the slow log."
    ),
    sub!(
        "slowlog",
        "help",
        2,
        ["loading", "stale"],
        ["@slow"],
        "6.2.0",
        "Show helpful text about the different subcommands"
    ),
];

/// Every top-level command, in the order `COMMAND` lists them.
pub static COMMANDS: &[CommandSpec] = &[
    // strings
    cmd!("get", 2, ["readonly", "fast"], 1, 1, 1, ["@read", "@string", "@fast"], "string", "1.0.0", "Returns the string value of a key."),
    cmd!("set", -3, ["write", "denyoom"], 1, 1, 1, ["@write", "@string", "@slow"], "string", "1.0.0", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist."),
    cmd!("setnx", 3, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "1.0.0", "Set the string value of a key only when the key doesn't exist."),
    cmd!("setex", 4, ["write", "denyoom"], 1, 1, 1, ["@write", "@string", "@slow"], "string", "2.0.0", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist."),
    cmd!("psetex", 4, ["write", "denyoom"], 1, 1, 1, ["@write", "@string", "@slow"], "string", "2.6.0", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist."),
    cmd!("getset", 3, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "1.0.0", "Returns the previous string value of a key after setting it to a new value."),
    cmd!("getdel", 2, ["write", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "6.2.0", "Returns the string value of a key after deleting the key."),
    cmd!("getex", -2, ["write", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "6.2.0", "Returns the string value of a key after setting its expiration time."),
    cmd!("mget", -2, ["readonly", "fast"], 1, -1, 1, ["@read", "@string", "@fast"], "string", "1.0.0", "Atomically returns the string values of one or more keys."),
    cmd!("mset", -3, ["write", "denyoom"], 1, -1, 2, ["@write", "@string", "@slow"], "string", "1.0.1", "Atomically creates or modifies the string values of one or more keys."),
    cmd!("msetnx", -3, ["write", "denyoom"], 1, -1, 2, ["@write", "@string", "@slow"], "string", "1.0.1", "Atomically modifies the string values of one or more keys only when all keys don't exist."),
    cmd!("incr", 2, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    cmd!("decr", 2, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    cmd!("incrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    cmd!("decrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist."),
    cmd!("incrbyfloat", 3, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    cmd!("append", 3, ["write", "denyoom", "fast"], 1, 1, 1, ["@write", "@string", "@fast"], "string", "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist."),
    cmd!("strlen", 2, ["readonly", "fast"], 1, 1, 1, ["@read", "@string", "@fast"], "string", "2.2.0", "Returns the length of a string value."),
    cmd!("getrange", 4, ["readonly"], 1, 1, 1, ["@read", "@string", "@slow"], "string", "2.4.0", "Returns a substring of the string stored at a key."),
    cmd!("setrange", 4, ["write", "denyoom"], 1, 1, 1, ["@write", "@string", "@slow"], "string", "2.2.0", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist."),
    cmd!("lcs", -3, ["readonly"], 1, 2, 1, ["@read", "@string", "@slow"], "string", "7.0.0", "Finds the longest common substring."),
    // bitmaps
    cmd!("setbit", 4, ["write", "denyoom"], 1, 1, 1, ["@write", "@bitmap", "@slow"], "bitmap", "2.2.0", "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist."),
    cmd!("getbit", 3, ["readonly", "fast"], 1, 1, 1, ["@read", "@bitmap", "@fast"], "bitmap", "2.2.0", "Returns a bit value by offset."),
    cmd!("bitcount", -2, ["readonly"], 1, 1, 1, ["@read", "@bitmap", "@slow"], "bitmap", "2.6.0", "Counts the number of set bits (population counting) in a string."),
    cmd!("bitpos", -3, ["readonly"], 1, 1, 1, ["@read", "@bitmap", "@slow"], "bitmap", "2.8.7", "Finds the first set (1) or clear (0) bit in a string."),
    cmd!("bitop", -4, ["write", "denyoom"], 2, -1, 1, ["@write", "@bitmap", "@slow"], "bitmap", "2.6.0", "Performs bitwise operations on multiple strings, and stores the result."),
    cmd!("bitfield", -2, ["write", "denyoom"], 1, 1, 1, ["@write", "@bitmap", "@slow"], "bitmap", "3.2.0", "Performs arbitrary bitfield integer operations on strings."),
    cmd!("bitfield_ro", -2, ["readonly", "fast"], 1, 1, 1, ["@read", "@bitmap", "@fast"], "bitmap", "6.0.0", "Performs arbitrary read-only bitfield integer operations on strings."),
    cmd!("substr", 4, ["readonly"], 1, 1, 1, ["@read", "@string", "@slow"], "string", "1.0.0", "Returns a substring from a string value."),
    // keyspace
    cmd!("del", -2, ["write"], 1, -1, 1, ["@keyspace", "@write", "@slow"], "generic", "1.0.0", "Deletes one or more keys."),
    cmd!("unlink", -2, ["write", "fast"], 1, -1, 1, ["@keyspace", "@write", "@fast"], "generic", "4.0.0", "Asynchronously deletes one or more keys."),
    cmd!("exists", -2, ["readonly", "fast"], 1, -1, 1, ["@keyspace", "@read", "@fast"], "generic", "1.0.0", "Determines whether one or more keys exist."),
    cmd!("touch", -2, ["readonly", "fast"], 1, -1, 1, ["@keyspace", "@read", "@fast"], "generic", "3.2.1", "Returns the number of existing keys out of those specified after updating the time they were last accessed."),
    cmd!("type", 2, ["readonly", "fast"], 1, 1, 1, ["@keyspace", "@read", "@fast"], "generic", "1.0.0", "Determines the type of value stored at a key."),
    cmd!("expire", -3, ["write", "fast"], 1, 1, 1, ["@keyspace", "@write", "@fast"], "generic", "1.0.0", "Sets the expiration time of a key in seconds."),
    cmd!("pexpire", -3, ["write", "fast"], 1, 1, 1, ["@keyspace", "@write", "@fast"], "generic", "2.6.0", "Sets the expiration time of a key in milliseconds."),
    cmd!("expireat", -3, ["write", "fast"], 1, 1, 1, ["@keyspace", "@write", "@fast"], "generic", "1.2.0", "Sets the expiration time of a key to a Unix timestamp."),
    cmd!("pexpireat", -3, ["write", "fast"], 1, 1, 1, ["@keyspace", "@write", "@fast"], "generic", "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp."),
    cmd!("ttl", 2, ["readonly", "fast"], 1, 1, 1, ["@keyspace", "@read", "@fast"], "generic", "1.0.0", "Returns the expiration time in seconds of a key."),
    cmd!("pttl", 2, ["readonly", "fast"], 1, 1, 1, ["@keyspace", "@read", "@fast"], "generic", "2.6.0", "Returns the expiration time in milliseconds of a key."),
    cmd!("expiretime", 2, ["readonly", "fast"], 1, 1, 1, ["@keyspace", "@read", "@fast"], "generic", "7.0.0", "Returns the expiration time of a key as a Unix timestamp."),
    cmd!("pexpiretime", 2, ["readonly", "fast"], 1, 1, 1, ["@keyspace", "@read", "@fast"], "generic", "7.0.0", "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    cmd!("persist", 2, ["write", "fast"], 1, 1, 1, ["@keyspace", "@write", "@fast"], "generic", "2.2.0", "Removes the expiration time of a key."),
    cmd!("keys", 2, ["readonly"], 0, 0, 0, ["@keyspace", "@read", "@slow", "@dangerous"], "generic", "1.0.0", "Returns all key names that match a pattern."),
    cmd!("scan", -2, ["readonly"], 0, 0, 0, ["@keyspace", "@read", "@slow"], "generic", "2.8.0", "Iterates over the key names in the database."),
    cmd!("randomkey", 1, ["readonly"], 0, 0, 0, ["@keyspace", "@read", "@slow"], "generic", "1.0.0", "Returns a random key name from the database."),
    cmd!("rename", 3, ["write"], 1, 2, 1, ["@keyspace", "@write", "@slow"], "generic", "1.0.0", "Renames a key and overwrites the destination."),
    cmd!("renamenx", 3, ["write", "fast"], 1, 2, 1, ["@keyspace", "@write", "@fast"], "generic", "1.0.0", "Renames a key only when the target key name doesn't exist."),
    cmd!("copy", -3, ["write", "denyoom"], 1, 2, 1, ["@keyspace", "@write", "@slow"], "generic", "6.2.0", "Copies the value of a key to a new key."),
    cmd!("move", 3, ["write", "fast"], 1, 1, 1, ["@keyspace", "@write", "@fast"], "generic", "1.0.0", "Moves a key to another database."),
    cmd!("swapdb", 3, ["write", "fast"], 0, 0, 0, ["@keyspace", "@write", "@fast", "@dangerous"], "server", "4.0.0", "Swaps two Redis databases."),
    cmd!("dump", 2, ["readonly"], 1, 1, 1, ["@keyspace", "@read", "@slow"], "generic", "2.6.0", "Return a serialized version of the value stored at the specified key."),
    cmd!("restore", -4, ["write", "denyoom"], 1, 1, 1, ["@keyspace", "@write", "@slow", "@dangerous"], "generic", "2.6.0", "Create a key using the provided serialized value, previously obtained using DUMP."),
    cmd!("migrate", -6, ["write", "movablekeys"], 3, 3, 1, ["@keyspace", "@write", "@slow", "@dangerous"], "generic", "2.6.0", "Atomically transfer a key from a Redis instance to another one."),
    cmd!("dbsize", 1, ["readonly", "fast"], 0, 0, 0, ["@keyspace", "@read", "@fast"], "server", "1.0.0", "Returns the number of keys in the database."),
    cmd!("flushdb", -1, ["write"], 0, 0, 0, ["@keyspace", "@write", "@slow", "@dangerous"], "server", "1.0.0", "Remove all keys from the current database."),
    cmd!("flushall", -1, ["write"], 0, 0, 0, ["@keyspace", "@write", "@slow", "@dangerous"], "server", "1.0.0", "Removes all keys from all databases."),
    spec!("object", "object", -2, [], 0, 0, 0, ["@slow"], "generic", "2.2.3", "A container for object introspection commands.", OBJECT_SUBS),
    // connection
    // scripting
    cmd!("eval", -3, ["noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "2.6.0", "Executes a server-side Lua script."),
    cmd!("evalsha", -3, ["noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "2.6.0", "Executes a server-side Lua script by SHA1 digest."),
    cmd!("eval_ro", -3, ["readonly", "noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Executes a read-only server-side Lua script."),
    cmd!("evalsha_ro", -3, ["readonly", "noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Executes a read-only server-side Lua script by SHA1 digest."),
    spec!("script", "script", -2, [], 0, 0, 0, ["@slow"], "scripting", "2.6.0", "A container for Lua scripts management commands.", &[
        spec!("flush", "script|flush", -2, ["noscript"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "2.6.0", "Removes all server-side Lua scripts from the script cache.", &[]),
        spec!("exists", "script|exists", -3, ["noscript"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "2.6.0", "Determines whether server-side Lua scripts exist in the script cache.", &[]),
        spec!("kill", "script|kill", 2, ["noscript", "allow_busy"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "2.6.0", "Terminates a server-side Lua script during execution.", &[]),
        spec!("load", "script|load", 3, ["noscript", "stale"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "2.6.0", "Loads a server-side Lua script to the script cache.", &[]),
        spec!("debug", "script|debug", 3, ["noscript"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "3.2.0", "Sets the debug mode of server-side Lua scripts.", &[]),
        spec!("help", "script|help", 2, ["loading", "stale"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "5.0.0", "Returns helpful text about the different subcommands.", &[]),
    ]),
    cmd!("fcall", -3, ["noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Invokes a function."),
    cmd!("fcall_ro", -3, ["readonly", "noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Invokes a read-only function."),
    spec!("function", "function", -2, [], 0, 0, 0, ["@slow"], "scripting", "7.0.0", "A container for function commands.", &[
        spec!("kill", "function|kill", 2, ["noscript", "allow_busy"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Terminates a function during execution.", &[]),
        spec!("load", "function|load", -3, ["write", "denyoom", "noscript"], 0, 0, 0, ["@write", "@slow", "@scripting"], "scripting", "7.0.0", "Creates a library.", &[]),
        spec!("dump", "function|dump", 2, ["noscript"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Dumps all libraries into a serialized binary payload.", &[]),
        spec!("list", "function|list", -2, ["noscript"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Returns information about all libraries.", &[]),
        spec!("restore", "function|restore", -3, ["write", "denyoom", "noscript"], 0, 0, 0, ["@write", "@slow", "@scripting"], "scripting", "7.0.0", "Restores all libraries from a payload.", &[]),
        spec!("delete", "function|delete", 3, ["write", "noscript"], 0, 0, 0, ["@write", "@slow", "@scripting"], "scripting", "7.0.0", "Deletes a library and its functions.", &[]),
        spec!("help", "function|help", 2, ["loading", "stale"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Returns helpful text about the different subcommands.", &[]),
        spec!("flush", "function|flush", -2, ["write", "noscript"], 0, 0, 0, ["@write", "@slow", "@scripting"], "scripting", "7.0.0", "Deletes all libraries and functions.", &[]),
        spec!("stats", "function|stats", 2, ["noscript", "allow_busy"], 0, 0, 0, ["@slow", "@scripting"], "scripting", "7.0.0", "Returns information about a function during execution.", &[]),
    ]),
    // Redis Cluster's command, answered as by a Redis without cluster mode
    spec!("cluster", "cluster", -2, [], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "A container for cluster commands", &[
    spec!("addslots", "cluster|addslots", -3, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Assign new hash slots to receiving node", &[]),
    spec!("addslotsrange", "cluster|addslotsrange", -4, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "7.0.0", "Assign new hash slots to receiving node", &[]),
    spec!("bumpepoch", "cluster|bumpepoch", 2, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Advance the cluster config epoch", &[]),
    spec!("count-failure-reports", "cluster|count-failure-reports", 3, ["admin", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Return the number of failure reports active for a given node", &[]),
    spec!("countkeysinslot", "cluster|countkeysinslot", 3, ["stale"], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "Return the number of local keys in the specified hash slot", &[]),
    spec!("delslots", "cluster|delslots", -3, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Set hash slots as unbound in receiving node", &[]),
    spec!("delslotsrange", "cluster|delslotsrange", -4, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "7.0.0", "Set hash slots as unbound in receiving node", &[]),
    spec!("failover", "cluster|failover", -2, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Forces a replica to perform a manual failover of its master.", &[]),
    spec!("flushslots", "cluster|flushslots", 2, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Delete a node's own slots information", &[]),
    spec!("forget", "cluster|forget", 3, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Remove a node from the nodes table", &[]),
    spec!("getkeysinslot", "cluster|getkeysinslot", 4, ["stale"], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "Return local key names in the specified hash slot", &[]),
    spec!("help", "cluster|help", 2, ["loading", "stale"], 0, 0, 0, ["@slow"], "cluster", "5.0.0", "Show helpful text about the different subcommands", &[]),
    spec!("info", "cluster|info", 2, ["stale"], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "Provides info about Redis Cluster node state", &[]),
    spec!("keyslot", "cluster|keyslot", 3, ["stale"], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "Returns the hash slot of the specified key", &[]),
    spec!("links", "cluster|links", 2, ["stale"], 0, 0, 0, ["@slow"], "cluster", "7.0.0", "Returns a list of all TCP links to and from peer nodes in cluster", &[]),
    spec!("meet", "cluster|meet", -4, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Force a node cluster to handshake with another node", &[]),
    spec!("myid", "cluster|myid", 2, ["stale"], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "Return the node id", &[]),
    spec!("nodes", "cluster|nodes", 2, ["stale"], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "Get Cluster config for the node", &[]),
    spec!("replicas", "cluster|replicas", 3, ["admin", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "5.0.0", "List replica nodes of the specified master node", &[]),
    spec!("replicate", "cluster|replicate", 3, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Reconfigure a node as a replica of the specified master node", &[]),
    spec!("reset", "cluster|reset", -2, ["admin", "noscript", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Reset a Redis Cluster node", &[]),
    spec!("saveconfig", "cluster|saveconfig", 2, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Forces the node to save cluster state on disk", &[]),
    spec!("set-config-epoch", "cluster|set-config-epoch", 3, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Set the configuration epoch in a new node", &[]),
    spec!("setslot", "cluster|setslot", -4, ["admin", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "Bind a hash slot to a specific node", &[]),
    spec!("shards", "cluster|shards", 2, ["stale"], 0, 0, 0, ["@slow"], "cluster", "7.0.0", "Get array of cluster slots to node mappings", &[]),
    spec!("slaves", "cluster|slaves", 3, ["admin", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "3.0.0", "List replica nodes of the specified master node", &[]),
    spec!("slots", "cluster|slots", 2, ["stale"], 0, 0, 0, ["@slow"], "cluster", "3.0.0", "Get array of Cluster slot to node mappings", &[]),
    ]),
    // transactions
    cmd!("multi", 1, ["noscript", "loading", "stale", "fast", "allow_busy"], 0, 0, 0, ["@fast", "@transaction"], "transactions", "1.2.0", "Starts a transaction."),
    cmd!("exec", 1, ["noscript", "loading", "stale", "skip_slowlog"], 0, 0, 0, ["@slow", "@transaction"], "transactions", "1.2.0", "Executes all commands in a transaction."),
    cmd!("discard", 1, ["noscript", "loading", "stale", "fast", "allow_busy"], 0, 0, 0, ["@fast", "@transaction"], "transactions", "2.0.0", "Discards a transaction."),
    cmd!("watch", -2, ["noscript", "loading", "stale", "fast", "allow_busy"], 1, -1, 1, ["@fast", "@transaction"], "transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction."),
    cmd!("unwatch", 1, ["noscript", "loading", "stale", "fast", "allow_busy"], 0, 0, 0, ["@fast", "@transaction"], "transactions", "2.2.0", "Forgets about watched keys of a transaction."),
    cmd!("ping", -1, ["fast"], 0, 0, 0, ["@fast", "@connection"], "connection", "1.0.0", "Returns the server's liveliness response."),
    cmd!("echo", 2, ["fast"], 0, 0, 0, ["@fast", "@connection"], "connection", "1.0.0", "Returns the given string."),
    cmd!("hello", -1, ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], 0, 0, 0, ["@fast", "@connection"], "connection", "6.0.0", "Handshakes with the Redis server."),
    cmd!("auth", -2, ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], 0, 0, 0, ["@fast", "@connection"], "connection", "1.0.0", "Authenticates the connection."),
    cmd!("select", 2, ["loading", "stale", "fast"], 0, 0, 0, ["@keyspace", "@fast"], "connection", "1.0.0", "Changes the selected database."),
    cmd!("quit", -1, ["allow_busy", "noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0, ["@fast", "@connection"], "connection", "1.0.0", "Closes the connection."),
    cmd!("reset", 1, ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], 0, 0, 0, ["@fast", "@connection"], "connection", "6.2.0", "Resets the connection."),
    spec!("client", "client", -2, [], 0, 0, 0, ["@slow"], "connection", "2.4.0", "A container for client connection commands.", CLIENT_SUBS),
    // pub/sub
    cmd!("subscribe", -2, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, ["@pubsub", "@slow"], "pubsub", "2.0.0", "Listen for messages published to the given channels"),
    cmd!("psubscribe", -2, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, ["@pubsub", "@slow"], "pubsub", "2.0.0", "Listen for messages published to channels matching the given patterns"),
    cmd!("unsubscribe", -1, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, ["@pubsub", "@slow"], "pubsub", "2.0.0", "Stop listening for messages posted to the given channels"),
    cmd!("punsubscribe", -1, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, ["@pubsub", "@slow"], "pubsub", "2.0.0", "Stop listening for messages posted to channels matching the given patterns"),
    cmd!("publish", 3, ["pubsub", "loading", "stale", "fast"], 0, 0, 0, ["@pubsub", "@fast"], "pubsub", "2.0.0", "Post a message to a channel"),
    spec!("pubsub", "pubsub", -2, [], 0, 0, 0, ["@slow"], "pubsub", "2.8.0", "A container for Pub/Sub commands", PUBSUB_SUBS),
    spec!("acl", "acl", -2, [], 0, 0, 0, ["@slow"], "server", "6.0.0", "A container for Access List Control commands.", ACL_SUBS),
    // server
    spec!("command", "command", -1, ["loading", "stale"], 0, 0, 0, ["@slow", "@connection"], "server", "2.8.13", "Returns detailed information about all commands.", COMMAND_SUBS),
    spec!("config", "config", -2, [], 0, 0, 0, ["@slow"], "server", "2.0.0", "A container for server configuration commands.", CONFIG_SUBS),
    cmd!("info", -1, ["loading", "stale"], 0, 0, 0, ["@slow", "@dangerous"], "server", "1.0.0", "Returns information and statistics about the server."),
    cmd!("time", 1, ["loading", "stale", "fast"], 0, 0, 0, ["@fast"], "server", "2.6.0", "Returns the server time."),
    cmd!("save", 1, ["admin", "noscript", "no_async_loading", "no_multi"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "1.0.0", "Synchronously saves the database(s) to disk."),
    cmd!("lastsave", 1, ["loading", "stale", "fast"], 0, 0, 0, ["@admin", "@fast", "@dangerous"], "server", "1.0.0", "Returns the Unix timestamp of the last successful save to disk."),
    cmd!("bgsave", -1, ["admin", "noscript", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "1.0.0", "Asynchronously saves the database(s) to disk."),
    cmd!("shutdown", -1, ["admin", "noscript", "loading", "stale", "no_multi", "allow_busy"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "1.0.0", "Synchronously saves the database(s) to disk and shuts down the Redis server."),
    spec!("latency", "latency", -2, [], 0, 0, 0, ["@slow"], "server", "2.8.13", "A container for latency diagnostics commands.", LATENCY_SUBS),
    spec!("slowlog", "slowlog", -2, [], 0, 0, 0, ["@slow"], "server", "2.2.12", "A container for slow log commands.", SLOWLOG_SUBS),
    spec!("memory", "memory", -2, [], 0, 0, 0, ["@slow"], "server", "4.0.0", "A container for memory diagnostics commands.", MEMORY_SUBS),
    cmd!("sync", 1, ["admin", "noscript", "no_async_loading", "no_multi"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "1.0.0", "Internal command used for replication"),
    cmd!("psync", -3, ["admin", "noscript", "no_async_loading", "no_multi"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "2.8.0", "Internal command used for replication"),
    cmd!("replconf", -1, ["admin", "noscript", "loading", "stale", "allow_busy"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "3.0.0", "An internal command for configuring the replication stream"),
    cmd!("replicaof", 3, ["admin", "noscript", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "5.0.0", "Make the server a replica of another instance, or promote it as master."),
    cmd!("slaveof", 3, ["admin", "noscript", "stale", "no_async_loading"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "1.0.0", "Make the server a replica of another instance, or promote it as master."),
    cmd!("role", 1, ["noscript", "loading", "stale", "fast"], 0, 0, 0, ["@admin", "@fast", "@dangerous"], "server", "2.8.12", "Return the role of the instance in the context of replication"),
    cmd!("wait", 3, ["noscript"], 0, 0, 0, ["@slow", "@connection"], "generic", "3.0.0", "Wait for the synchronous replication of all the write commands sent in the context of the current connection"),
    cmd!("monitor", 1, ["admin", "noscript", "loading", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "1.0.0", "Listens for all requests received by the server in real-time."),
    cmd!("debug", -2, ["admin", "noscript", "loading", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "server", "1.0.0", "A container for debugging commands."),
    // HyperCache cluster administration
    cmd!("hc.node", 1, ["loading", "stale", "fast"], 0, 0, 0, ["@admin", "@fast"], "cluster", "0.1.0", "Returns this node's id, addresses, cluster name and version."),
    cmd!("hc.members", 1, ["loading", "stale"], 0, 0, 0, ["@admin", "@slow"], "cluster", "0.1.0", "Returns one entry per cluster member: id, addresses, state and slots held."),
    cmd!("hc.keyslot", 2, ["loading", "stale", "fast"], 0, 0, 0, ["@keyspace", "@fast"], "cluster", "0.1.0", "Returns a key's slot and the slot's preference list."),
    cmd!("hc.consistency", -1, ["loading", "stale", "fast"], 0, 0, 0, ["@connection", "@fast"], "cluster", "0.1.0", "Shows or sets this connection's read and write consistency levels."),
    cmd!("hc.metrics", 1, ["loading", "stale"], 0, 0, 0, ["@admin", "@slow"], "cluster", "0.1.0", "Returns the cluster layer's counters and latencies as flat name/value pairs."),
    cmd!("hc.hints", 1, ["loading", "stale"], 0, 0, 0, ["@admin", "@slow"], "cluster", "0.1.0", "Returns each target node's queue of hints: count, bytes and the oldest hint's age."),
    cmd!("hc.drain", -1, ["admin", "loading", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "0.1.0", "Starts draining this node (HC.DRAIN), or reports the drain's progress and whether it is safe to stop (HC.DRAIN STATUS)."),
    cmd!("hc.forget", 2, ["admin", "loading", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "0.1.0", "Removes a member from the cluster at once, on every node: its slots go to the others."),
    cmd!("hc.sync", -1, ["loading", "stale"], 0, 0, 0, ["@admin", "@slow", "@dangerous"], "cluster", "0.1.0", "Runs an anti-entropy round now against one node or every node sharing slots, and reports what it did."),
];

fn index() -> &'static HashMap<&'static str, &'static CommandSpec> {
    static INDEX: OnceLock<HashMap<&'static str, &'static CommandSpec>> = OnceLock::new();
    INDEX.get_or_init(|| COMMANDS.iter().map(|c| (c.name, c)).collect())
}

/// Calls `f` with `name` in lower case, without allocating; `None` if the name is longer than any
/// command's (16 bytes) or not UTF-8, so it cannot be a command.
pub fn with_lowercase<R>(name: &[u8], f: impl FnOnce(&str) -> Option<R>) -> Option<R> {
    let mut buf = [0u8; 16];
    if name.len() > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    f(std::str::from_utf8(&buf[..name.len()]).ok()?)
}

/// Finds a command by name, in any case, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    with_lowercase(name, |lower| index().get(lower).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"GeT").unwrap().name, "get");
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"averyveryverylongcommandname").is_none());
        assert_eq!(
            lookup(b"CLIENT")
                .unwrap()
                .subcommand(b"SetName")
                .unwrap()
                .fullname,
            "client|setname"
        );
    }

    #[test]
    fn names_are_unique_and_lowercase() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            assert!(seen.insert(c.name), "duplicate {}", c.name);
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.name.len() <= 16);
        }
    }
}
