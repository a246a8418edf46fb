//! Every error text HyperCache sends to Redis clients, byte for byte as Redis 7 sends it. The
//! differential suite in `redis-compat/` checks them against a real redis-server.
//!
//! Texts include the error code (`ERR`, `NOAUTH`, ...) and exclude the leading `-` and trailing CRLF.

/// `SET k v NX XX`, unknown options, and similar.
pub const SYNTAX: &str = "ERR syntax error";
/// An argument that must be an integer is not, or is out of range.
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// An argument or value that must be a float is not.
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
/// INCR and friends past `i64` range.
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
/// INCRBYFLOAT whose result is not finite.
pub const NAN_OR_INF: &str = "ERR increment would produce NaN or Infinity";
/// A command that needs authentication, before AUTH.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// AUTH with a wrong password.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// AUTH when no password is configured.
pub const AUTH_NOT_CONFIGURED: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
/// A value of another type (none exist yet; kept for the day they do).
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
/// RENAME and friends on a missing source.
pub const NO_SUCH_KEY: &str = "ERR no such key";
/// SELECT of a database other than 0.
pub const DB_OUT_OF_RANGE: &str = "ERR DB index is out of range";
/// The connection limit is reached.
pub const MAX_CLIENTS: &str = "ERR max number of clients reached";
/// SETRANGE/APPEND past `proto-max-bulk-len`.
pub const STRING_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
/// SETRANGE with a negative offset.
pub const OFFSET_OUT_OF_RANGE: &str = "ERR offset is out of range";
/// SCAN with a cursor that is not an unsigned integer.
pub const INVALID_CURSOR: &str = "ERR invalid cursor";
/// HELLO with an unsupported protocol version.
pub const NOPROTO: &str = "NOPROTO unsupported protocol version";
/// EXPIRE with both NX and XX/GT/LT.
pub const EXPIRE_NX_AND_OTHERS: &str =
    "ERR NX and XX, GT or LT options at the same time are not compatible";
/// EXPIRE with both GT and LT.
pub const EXPIRE_GT_AND_LT: &str = "ERR GT and LT options at the same time are not compatible";
/// A quorum write that could not reach its consistency level.
pub const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";
/// A client's write while this node replicates a Redis primary (`replica-read-only yes`).
pub const READONLY: &str = "READONLY You can't write against a read only replica.";
/// A command while the link to the primary is down and `replica-serve-stale-data` is `no`.
pub const MASTERDOWN: &str =
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.";
/// Writes refused by a node that is draining (`HC.DRAIN`); other nodes take them.
pub const DRAINING: &str =
    "DRAINING This node is draining and takes no writes; send them to another node.";
/// Writes refused under `maxmemory` with `noeviction`.
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// CLIENT SETNAME with a space or newline.
pub const CLIENT_NAME_CHARS: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";
/// CLIENT KILL that matched nobody.
pub const NO_SUCH_CLIENT: &str = "ERR No such client";
/// OBJECT FREQ when the policy is not LFU.
pub const OBJECT_FREQ_NOT_LFU: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
/// OBJECT IDLETIME under an LFU policy.
pub const OBJECT_IDLE_LFU: &str = "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
/// DEBUG, which Redis disables by default.
pub const DEBUG_DISABLED: &str = "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.";

/// `ERR wrong number of arguments for '<name>' command`, where name is the command's full
/// lower-case name (`get`, `client|setname`).
pub fn wrong_arity(fullname: &str) -> String {
    format!("ERR wrong number of arguments for '{fullname}' command")
}

/// `ERR invalid expire time in '<cmd>' command`.
pub fn invalid_expire(cmd: &str) -> String {
    format!("ERR invalid expire time in '{cmd}' command")
}

/// `ERR unknown subcommand '<sub>'. Try <CMD> HELP.`
pub fn unknown_subcommand(sub: &[u8], cmd: &str) -> Vec<u8> {
    let mut v = b"ERR unknown subcommand '".to_vec();
    v.extend_from_slice(&sanitize(&sub[..sub.len().min(128)]));
    v.extend_from_slice(format!("'. Try {} HELP.", cmd.to_ascii_uppercase()).as_bytes());
    v
}

/// Redis's unknown-command error: the name and the first arguments, each cut to 128 bytes, the
/// argument list stopping once it reaches 128 bytes, with CR and LF turned into spaces.
pub fn unknown_command(args: &[bytes::Bytes]) -> Vec<u8> {
    let mut v = b"ERR unknown command '".to_vec();
    let name = args.first().map(|a| &a[..]).unwrap_or(b"");
    v.extend_from_slice(cstr(name, 128));
    v.extend_from_slice(b"', with args beginning with: ");
    let mut list: Vec<u8> = Vec::new();
    for a in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(cstr(a, room));
        list.extend_from_slice(b"' ");
    }
    v.extend_from_slice(&list);
    sanitize(&v)
}

/// A C string view of `b`: up to the first NUL, at most `max` bytes (printf's `%.*s`).
fn cstr(b: &[u8], max: usize) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(max);
    &b[..end]
}

/// Replaces CR and LF with spaces so an error stays one protocol line, as Redis does.
pub fn sanitize(b: &[u8]) -> Vec<u8> {
    b.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect()
}

/// EVALSHA of a script not in the cache.
pub const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";
/// SCRIPT KILL of a script that wrote.
pub const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";
/// A command while a script has run past `busy-reply-threshold`.
pub const BUSY_SCRIPT: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
/// A command while a function has run past `busy-reply-threshold`.
pub const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";
/// Keys of one command (or of a script's declared keys) in different slots, in a cluster.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// EVAL's numkeys above the number of arguments.
pub const NUMKEYS_TOO_MANY: &str = "ERR Number of keys can't be greater than number of args";
/// EVAL's numkeys below 0.
pub const NUMKEYS_NEGATIVE: &str = "ERR Number of keys can't be negative";

/// `EXEC` of a transaction that had a command refused while it was queued.
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
/// `MULTI` inside a transaction.
pub const MULTI_NESTED: &str = "ERR MULTI calls can not be nested";
/// `EXEC` outside a transaction.
pub const EXEC_WITHOUT_MULTI: &str = "ERR EXEC without MULTI";
/// `DISCARD` outside a transaction.
pub const DISCARD_WITHOUT_MULTI: &str = "ERR DISCARD without MULTI";
/// A transaction whose queued arguments outgrow `client-query-buffer-limit` (HyperCache's bound:
/// Redis queues without one).
pub const MULTI_TOO_LARGE: &str =
    "ERR transaction too large: its queued commands exceed 'client-query-buffer-limit'";
/// A `no_multi` command (SHUTDOWN) inside a transaction.
pub const NOT_IN_MULTI: &str = "ERR Command not allowed inside a transaction";
/// An integer argument outside a C `int` (Redis's `getIntFromObjectOrReply`: `SELECT`, `MOVE`,
/// `COPY ... DB`).
pub const NOT_AN_INT: &str =
    "ERR value is out of range, value must between -2147483648 and 2147483647";
/// `SAVE`/`BGSAVE` in a cluster (a single node writes snapshots: `crate::persist`).
pub const NO_PERSISTENCE: &str =
    "ERR SAVE and BGSAVE are not available in a HyperCache cluster: its replicas are its durability (see docs/persistence.md)";
/// `COPY`/`MOVE` onto itself (Redis's `shared.sameobjecterr`).
pub const SAME_OBJECT: &str = "ERR source and destination objects are the same";
/// `SWAPDB` on a node of a cluster (Redis Cluster's text; HyperCache: the map of databases would
/// have to change on every node at once).
pub const SWAPDB_IN_CLUSTER: &str = "ERR SWAPDB is not allowed in cluster mode";
/// `WATCH` inside a transaction.
pub const WATCH_IN_MULTI: &str = "ERR WATCH inside MULTI is not allowed";

/// `EXEC` of a watched transaction in a cluster that cannot run as one round: its keys (watched
/// ones included) span slots, or a command is not a single-key operation (HyperCache: the check
/// and the writes are one read-modify-write round of one slot; see docs/cluster.md).
pub const WATCH_SHAPE_IN_CLUSTER: &str =
    "ERR in a cluster a WATCHed transaction must be single-key commands on keys of one slot (see docs/cluster.md)";

/// `EXEC` refused for `reason` (an error reply's text, code included): Redis discards the
/// transaction and says why.
pub fn exec_abort(reason: &str) -> String {
    format!("EXECABORT Transaction discarded because of: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn unknown_command_text() {
        let args: Vec<Bytes> = ["foo", "a", "b c"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        assert_eq!(
            String::from_utf8(unknown_command(&args)).unwrap(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b c' "
        );
        let args = vec![Bytes::from("foo")];
        assert_eq!(
            String::from_utf8(unknown_command(&args)).unwrap(),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }
}
