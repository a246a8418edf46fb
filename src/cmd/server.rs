//! Server commands: COMMAND, CONFIG, INFO, TIME, SHUTDOWN, LATENCY, SLOWLOG, DEBUG.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hypercache_resp::table::{self, CommandSpec};
use hypercache_resp::{errors, num, Frame};

use super::{err, err_owned, help, verbatim};
use crate::config::{param, PARAMS};
use crate::session::Session;
use crate::state::Shared;

fn status_set(items: &[&'static str]) -> Frame {
    Frame::Set(items.iter().map(|s| Frame::simple(s)).collect())
}

/// A command's spec by its full name: `get`, or a subcommand as `client|id` (as `COMMAND INFO`
/// and `COMMAND DOCS` accept them).
fn spec_by_fullname(name: &[u8]) -> Option<&'static CommandSpec> {
    match name.iter().position(|&b| b == b'|') {
        None => table::lookup(name),
        Some(i) => table::lookup(&name[..i])?.subcommand(&name[i + 1..]),
    }
}

fn command_info(c: &CommandSpec) -> Frame {
    let key_specs = if c.first_key > 0 {
        let kv = |k: &'static str, v: Frame| (Frame::bulk(k.as_bytes()), v);
        vec![Frame::Map(vec![
            kv(
                "flags",
                status_set(if c.has_flag("write") {
                    &["RW", "UPDATE"]
                } else if c.name == "watch" {
                    // WATCH reads no value: only the key's version.
                    &["RO"]
                } else {
                    &["RO", "ACCESS"]
                }),
            ),
            kv(
                "begin_search",
                Frame::Map(vec![
                    kv("type", Frame::bulk(b"index")),
                    kv(
                        "spec",
                        Frame::Map(vec![kv("index", Frame::Integer(i64::from(c.first_key)))]),
                    ),
                ]),
            ),
            kv(
                "find_keys",
                Frame::Map(vec![
                    kv("type", Frame::bulk(b"range")),
                    kv(
                        "spec",
                        Frame::Map(vec![
                            kv(
                                "lastkey",
                                Frame::Integer(if c.last_key < 0 {
                                    -1
                                } else {
                                    i64::from(c.last_key - c.first_key)
                                }),
                            ),
                            kv("keystep", Frame::Integer(i64::from(c.step))),
                            kv("limit", Frame::Integer(0)),
                        ]),
                    ),
                ]),
            ),
        ])]
    } else {
        vec![]
    };
    Frame::Array(vec![
        Frame::bulk(c.fullname.as_bytes()),
        Frame::Integer(i64::from(c.arity)),
        status_set(c.flags),
        Frame::Integer(i64::from(c.first_key)),
        Frame::Integer(i64::from(c.last_key)),
        Frame::Integer(i64::from(c.step)),
        status_set(c.acl),
        Frame::Set(vec![]),
        Frame::Array(key_specs),
        Frame::Array(c.subcommands.iter().map(command_info).collect()),
    ])
}

fn command_docs(c: &CommandSpec) -> Frame {
    let kv = |k: &'static str, v: Frame| (Frame::bulk(k.as_bytes()), v);
    let mut m = vec![
        kv("summary", Frame::bulk(c.summary.as_bytes())),
        kv("since", Frame::bulk(c.since.as_bytes())),
        kv("group", Frame::bulk(c.group.as_bytes())),
    ];
    if !c.subcommands.is_empty() {
        m.push(kv(
            "subcommands",
            Frame::Map(
                c.subcommands
                    .iter()
                    .map(|s| (Frame::bulk(s.fullname.as_bytes()), command_docs(s)))
                    .collect(),
            ),
        ));
    }
    Frame::Map(m)
}

/// Keys of a command line according to its spec (COMMAND GETKEYS).
/// # Format
/// `COMMAND [COUNT | INFO [name ...] | DOCS [name ...] | LIST | GETKEYS command [arg ...] | HELP]`
pub(super) fn command(_s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if a.len() == 1 {
        return Some(Frame::Array(
            table::COMMANDS.iter().map(command_info).collect(),
        ));
    }
    let sub = a[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"count" => Some(Frame::Integer(table::COMMANDS.len() as i64)),
        b"info" => {
            if a.len() == 2 {
                return Some(Frame::Array(
                    table::COMMANDS.iter().map(command_info).collect(),
                ));
            }
            Some(Frame::Array(
                a[2..]
                    .iter()
                    .map(|n| spec_by_fullname(n).map_or(Frame::Null, command_info))
                    .collect(),
            ))
        }
        b"docs" => {
            let pick: Vec<&CommandSpec> = if a.len() == 2 {
                table::COMMANDS.iter().collect()
            } else {
                a[2..].iter().filter_map(|n| spec_by_fullname(n)).collect()
            };
            Some(Frame::Map(
                pick.into_iter()
                    .map(|c| (Frame::bulk(c.fullname.as_bytes()), command_docs(c)))
                    .collect(),
            ))
        }
        b"list" => {
            if a.len() != 2 {
                return err(errors::SYNTAX);
            }
            Some(Frame::Array(
                table::COMMANDS
                    .iter()
                    .map(|c| Frame::bulk(c.name.as_bytes()))
                    .collect(),
            ))
        }
        b"getkeys" => {
            let Some(spec) = table::lookup(&a[2]) else {
                return err("ERR Invalid command specified");
            };
            if !spec.arity_ok(a.len() - 2) {
                return err("ERR Invalid number of arguments specified for command");
            }
            let args = &a[2..];
            let keys: Vec<Frame> = spec
                .key_positions(args)
                .into_iter()
                .map(|i| Frame::Bulk(args[i].clone()))
                .collect();
            if spec.has_flag("movablekeys") {
                return Some(Frame::Array(keys));
            }
            if keys.is_empty() {
                return err("ERR The command has no key arguments");
            }
            Some(Frame::Array(keys))
        }
        _ => help(
            "COMMAND",
            &[
                "(no subcommand)",
                "    Return details about all Redis commands.",
                "COUNT",
                "    Return the total number of commands in this Redis server.",
                "LIST",
                "    Return a list of all commands in this Redis server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "GETKEYS <full-command>",
                "    Return the keys from a full Redis command.",
            ],
        ),
    }
}

/// # Format
/// `CONFIG GET parameter [parameter ...]`, `CONFIG SET parameter value [parameter value ...]`,
/// `CONFIG RESETSTAT`, `CONFIG HELP`
pub(super) fn config(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" => {
            let c = s.shared.config.read();
            // `replicaof` is REPLICAOF's state, not a stored setting.
            let get = |p: &crate::config::Param| -> String {
                match p.name {
                    "replicaof" | "slaveof" => s.shared.upstream.primary(),
                    _ => (p.get)(&c),
                }
            };
            let mut out: Vec<(Frame, Frame)> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for pat in &a[2..] {
                let is_glob = pat.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
                if !is_glob {
                    let name = String::from_utf8_lossy(pat).to_ascii_lowercase();
                    if let Some(p) = param(&name).filter(|p| p.name == name) {
                        if seen.insert(p.name) {
                            out.push((Frame::Bulk(pat.clone()), Frame::Bulk(get(p).into())));
                        }
                    }
                    continue;
                }
                // Hidden settings (Redis's HIDDEN_CONFIG) answer only when named.
                for p in PARAMS
                    .iter()
                    .filter(|p| !crate::config::HIDDEN.contains(&p.name))
                {
                    let lower = pat.to_ascii_lowercase();
                    if hypercache_cluster::glob::matches(&lower, p.name.as_bytes())
                        && seen.insert(p.name)
                    {
                        out.push((Frame::bulk(p.name.as_bytes()), Frame::Bulk(get(p).into())));
                    }
                }
            }
            Some(Frame::Map(out))
        }
        b"set" => {
            if !a.len().is_multiple_of(2) {
                return err(errors::SYNTAX);
            }
            let mut next = s.shared.config.read().clone();
            let mut seen = std::collections::HashSet::new();
            for pair in a[2..].chunks(2) {
                let given = String::from_utf8_lossy(&pair[0]).into_owned();
                let Some(p) = param(&given).filter(|p| p.name == given.to_ascii_lowercase()) else {
                    return err_owned(format!(
                        "ERR Unknown option or number of arguments for CONFIG SET - '{given}'"
                    ));
                };
                let fail = |why: &str| {
                    err_owned(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{given}') - {why}"
                    ))
                };
                if !seen.insert(p.name) {
                    return fail("duplicate parameter");
                }
                if !p.runtime {
                    // Setting a fixed setting to the value it has changes nothing, and is
                    // accepted (Redis may change some of these at run time, `bind` and
                    // `port`; HyperCache fixes them at start).
                    // Those immutable in Redis too are refused whatever the value, as Redis does.
                    let settable = !REDIS_IMMUTABLE.contains(&p.name);
                    if settable && (p.get)(&next) == String::from_utf8_lossy(&pair[1]) {
                        continue;
                    }
                    return fail("can't set immutable config");
                }
                if let Err(r) = p.apply(&mut next, &String::from_utf8_lossy(&pair[1])) {
                    return fail(&r.0);
                }
            }
            if let Err(why) = next.check() {
                return err_owned(format!("ERR CONFIG SET failed - {why}"));
            }
            // A new password is a change of the cluster's users: refused before this node
            // heard them (only EXEC gets here that early; a connection waits first).
            if next.requirepass != s.shared.config.read().requirepass {
                if let Some(e) = crate::cluster::settings::unheard(&s.shared) {
                    return Some(e);
                }
            }
            // A new client port is bound first: if it cannot be had, nothing changes (the
            // listener is dropped if a later step fails).
            let listener = match rebind(s, &next) {
                Ok(l) => l,
                Err(why) => return err_owned(why),
            };
            // New TLS settings load at once, or the command fails and nothing changes.
            let tls_set = a[2..]
                .chunks(2)
                .find(|p| p[0].len() > 4 && p[0][..4].eq_ignore_ascii_case(b"tls-"));
            if let (Some(p), true) = (tls_set, crate::tls::wanted(&next)) {
                if let Err(why) = s.shared.tls.configure(&next) {
                    tracing::warn!(node_id = %s.shared.node_id, component = "server", error = %why, "CONFIG SET: cannot load the TLS settings; the previous ones stay in force");
                    return err_owned(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{}') - Unable to update TLS configuration. Check server logs.",
                        String::from_utf8_lossy(&p[0])
                    ));
                }
            }
            if next.requirepass != s.shared.config.read().requirepass {
                // The default user's password: in a cluster, a change to the users like any
                // (heard already: checked above, before anything was applied).
                if let Err(refused) = crate::cluster::settings::change_users(&s.shared, |users| {
                    users.set_default_password(&next.requirepass);
                    ((), true)
                }) {
                    return Some(refused);
                }
            }
            if let Some((l, port)) = listener {
                *s.shared.rebind.lock() = Some(l);
                s.shared.rebound.notify_one();
                s.shared.port.store(u64::from(port), Ordering::Relaxed);
                tracing::info!(node_id = %s.shared.node_id, component = "server", port, "CONFIG SET port: listening on the new port; the old one is closed");
            }
            *s.shared.config.write() = next;
            s.shared.config_gen.fetch_add(1, Ordering::Release);
            crate::notify::refresh(&s.shared);
            s.refresh_config();
            Some(Frame::ok())
        }
        b"resetstat" => {
            let st = &s.shared.metrics.server;
            for c in [
                &st.commands_processed,
                &st.connections_received,
                &st.rejected_connections,
                &st.net_input_bytes,
                &st.net_output_bytes,
                &st.keyspace_hits,
                &st.keyspace_misses,
                &st.protocol_errors,
            ] {
                c.store(0, Ordering::Relaxed);
            }
            s.shared.metrics.commands.reset();
            Some(Frame::ok())
        }
        _ => help(
            "CONFIG",
            &[
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
            ],
        ),
    }
}

fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (tick(12), tick(11))
}

use crate::memory::human;

/// The INFO text for the requested sections (Redis's layout: `# Section` headers, `key:value`
/// lines, CRLF line ends, a blank line between sections).
pub(super) fn info_text(shared: &Shared, sections: &[String]) -> String {
    // Redis 7's order; `commandstats` and `latencystats` only with `all`, `everything` or by
    // name, as in Redis.
    const SECTIONS: &[&str] = &[
        "server",
        "clients",
        "memory",
        "persistence",
        "stats",
        "replication",
        "cpu",
        "commandstats",
        "errorstats",
        "latencystats",
        "cluster",
        "keyspace",
    ];
    let not_default = |name: &str| matches!(name, "commandstats" | "latencystats");
    let all = sections
        .iter()
        .any(|s| matches!(s.as_str(), "all" | "everything"));
    let default = sections.is_empty() || sections.iter().any(|s| s == "default");
    let want =
        |name: &str| all || (default && !not_default(name)) || sections.iter().any(|s| s == name);
    let mut dist: Option<Vec<(String, u64)>> = None;
    let mut out = String::new();
    let c = shared.config.read().clone();
    let st = &shared.metrics.server;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    for &section in SECTIONS {
        if !want(section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let mut s = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(s, "{k}:{v}\r\n");
        };
        match section {
            "server" => {
                let up = shared.started.elapsed().as_secs();
                line("redis_version", &c.reported_redis_version);
                line("hypercache_version", &env!("CARGO_PKG_VERSION"));
                line("redis_mode", &"standalone");
                line("os", &std::env::consts::OS);
                line("arch_bits", &64);
                line("process_id", &std::process::id());
                line("tcp_port", &shared.port.load(Ordering::Relaxed));
                line(
                    "server_time_usec",
                    &SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros()),
                );
                line("uptime_in_seconds", &up);
                line("uptime_in_days", &(up / 86400));
                line("hz", &c.hz);
                line(
                    "executable",
                    &std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                );
                line("config_file", &c.config_file.clone().unwrap_or_default());
            }
            "clients" => {
                line("connected_clients", &shared.clients.lock().len());
                line("maxclients", &c.maxclients);
                line("blocked_clients", &0);
                line("tracking_clients", &shared.tracking.info().clients);
            }
            "memory" => {
                let used = crate::memory::sample(shared);
                let rss = crate::alloc::rss_bytes();
                let peak = shared.metrics.peak_memory.load(Ordering::Relaxed);
                let store = shared.store.stats();
                line("used_memory", &used);
                line("used_memory_human", &human(used));
                line("used_memory_rss", &rss);
                line("used_memory_rss_human", &human(rss));
                line("used_memory_peak", &peak);
                line("used_memory_peak_human", &human(peak));
                line("used_memory_dataset", &store.bytes);
                let lua = shared.scripts.vm_memory();
                let (scripts, script_bytes) = shared.scripts.cached();
                line("used_memory_lua", &lua);
                line("used_memory_vm_eval", &lua);
                line("used_memory_lua_human", &human(lua as u64));
                line("used_memory_scripts_eval", &script_bytes);
                line("number_of_cached_scripts", &scripts);
                line("used_memory_vm_total", &lua);
                line("used_memory_vm_total_human", &human(lua as u64));
                line("used_memory_scripts", &script_bytes);
                line("used_memory_scripts_human", &human(script_bytes as u64));
                line("maxmemory", &c.maxmemory);
                line("maxmemory_human", &human(c.maxmemory));
                line("maxmemory_policy", &c.maxmemory_policy.name());
                line(
                    "mem_fragmentation_ratio",
                    &format!(
                        "{:.2}",
                        if used > 0 {
                            rss as f64 / used as f64
                        } else {
                            0.0
                        }
                    ),
                );
                // No replication or AOF buffers: everything counts for eviction.
                line("mem_not_counted_for_evict", &0);
                // What client connections hold (`maxmemory-clients` counts the same).
                line(
                    "mem_clients_normal",
                    &shared.clients_memory.load(Ordering::Relaxed),
                );
                line("mem_allocator", &"libc");
                line(
                    "lazyfree_pending_objects",
                    &crate::memory::LAZYFREE_PENDING.load(Ordering::Relaxed),
                );
                line(
                    "lazyfreed_objects",
                    &crate::memory::LAZYFREED.load(Ordering::Relaxed),
                );
            }
            "persistence" => {
                for (name, value) in shared.persist.info(shared) {
                    line(name, &value);
                }
            }
            "stats" => {
                let store = shared.store.stats();
                line(
                    "total_connections_received",
                    &load(&st.connections_received),
                );
                line("total_commands_processed", &load(&st.commands_processed));
                line("total_net_input_bytes", &load(&st.net_input_bytes));
                line("total_net_output_bytes", &load(&st.net_output_bytes));
                line("rejected_connections", &load(&st.rejected_connections));
                let (full, partial_ok, partial_err) = shared.repl.sync_stats();
                line("sync_full", &full);
                line("sync_partial_ok", &partial_ok);
                line("sync_partial_err", &partial_err);
                line("expired_keys", &store.expired);
                line("evicted_keys", &store.evicted);
                line("evicted_clients", &load(&st.evicted_clients));
                line("keyspace_hits", &load(&st.keyspace_hits));
                line("keyspace_misses", &load(&st.keyspace_misses));
                let (channels, patterns) = shared.pubsub.counts();
                line("pubsub_channels", &channels);
                line("pubsub_patterns", &patterns);
                line("pubsubshard_channels", &0);
                let t = shared.tracking.info();
                line("tracking_total_keys", &t.keys);
                line("tracking_total_items", &t.items);
                line("tracking_total_prefixes", &t.prefixes);
                line(
                    "total_error_replies",
                    &load(&shared.metrics.commands.total_errors),
                );
                line("protocol_errors", &load(&st.protocol_errors));
            }
            "replication" => {
                // Redis 7's fields for a primary: its Redis replicas (crate::repl; a cluster's
                // own replication is in the cluster section).
                let backlog = shared.config.read().repl_backlog_size;
                let mut fields = shared.repl.info(backlog);
                if let Some(upstream) = shared.upstream.info() {
                    // A replica: its link first, then its own replicas (role comes from the
                    // link's fields).
                    fields.remove(0);
                    let mut all = upstream;
                    all.append(&mut fields);
                    fields = all;
                }
                for (name, value) in fields {
                    line(&name, &value);
                }
            }
            "cpu" => {
                let (sys, user) = cpu_seconds();
                line("used_cpu_sys", &format!("{sys:.6}"));
                line("used_cpu_user", &format!("{user:.6}"));
                // No child processes (snapshots are written by a thread, not a fork).
                line("used_cpu_sys_children", &"0.000000");
                line("used_cpu_user_children", &"0.000000");
            }
            "cluster" => {
                // 0: clients must not switch to Redis Cluster mode (no MOVED redirections here;
                // any node serves any key).
                line("cluster_enabled", &0);
                match &shared.cluster {
                    None => {
                        line("hc_cluster_mode", &"single");
                        line("hc_node_id", &c.node_id());
                        line("hc_members", &1);
                        line("hc_members_live", &1);
                        line("hc_replication", &1);
                    }
                    Some(cl) => {
                        let v = cl.view();
                        line("hc_cluster_mode", &"cluster");
                        line("hc_node_id", &cl.node_id);
                        line("hc_cluster_name", &cl.name);
                        line("hc_cluster_addr", &cl.cluster_addr);
                        line("hc_members", &v.ring().members().len());
                        line("hc_members_live", &cl.live_members());
                        line("hc_synced", &u8::from(cl.is_synced()));
                        line("hc_replication", &v.ring().replicas());
                        line("hc_read_consistency", &c.read_consistency.name());
                        line("hc_write_consistency", &c.write_consistency.name());
                        line("hc_request_timeout_ms", &c.request_timeout_ms);
                        line("hc_tombstones", &shared.store.tombstones());
                        line("hc_catching_up_slots", &cl.catching.len());
                        line("hc_epoch", &v.epoch());
                        line("hc_joined", &u8::from(v.joined));
                        line("hc_draining", &u8::from(cl.is_draining()));
                        let flat =
                            dist.get_or_insert_with(|| crate::metrics::collect(shared).flat());
                        for (k, val) in flat.iter().filter(|(k, _)| k.starts_with("dist.")) {
                            line(&k.replace('.', "_"), val);
                        }
                    }
                }
            }
            "commandstats" => {
                for (name, stat) in shared.metrics.commands.all() {
                    let calls = load(&stat.calls);
                    let rejected = load(&stat.rejected);
                    if calls == 0 && rejected == 0 {
                        continue;
                    }
                    let usec = stat.latency.export().sum_us;
                    let per_call = if calls > 0 {
                        usec as f64 / calls as f64
                    } else {
                        0.0
                    };
                    line(
                        &format!("cmdstat_{name}"),
                        &format!(
                            "calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={}",
                            load(&stat.failed)
                        ),
                    );
                }
            }
            "errorstats" => {
                for (code, n) in shared.metrics.commands.errors() {
                    line(&format!("errorstat_{code}"), &format!("count={n}"));
                }
            }
            "latencystats" => {
                for (name, stat) in shared.metrics.commands.all() {
                    if load(&stat.calls) == 0 {
                        continue;
                    }
                    let d = stat.latency.export();
                    line(
                        &format!("latency_percentiles_usec_{name}"),
                        &format!(
                            "p50={:.3},p99={:.3},p99.9={:.3}",
                            d.quantile(0.5) as f64,
                            d.quantile(0.99) as f64,
                            d.quantile(0.999) as f64
                        ),
                    );
                }
            }
            "keyspace" => {
                let databases = shared.config.read().databases;
                for db in 0..databases.min(hypercache_cluster::db::MAX_DATABASES as u64) as u8 {
                    let physical = shared.dbs.physical(db);
                    let (keys, volatile) = shared.store.db_stats(physical);
                    if keys > 0 {
                        let avg_ttl = shared.store.avg_ttl(physical);
                        line(
                            &format!("db{db}"),
                            &format!("keys={keys},expires={volatile},avg_ttl={avg_ttl}"),
                        );
                    }
                }
            }
            _ => {}
        }
        let title = {
            let mut t = section.to_string();
            t[..1].make_ascii_uppercase();
            if section == "cpu" {
                t = "CPU".into();
            }
            t
        };
        let _ = write!(out, "# {title}\r\n{s}");
    }
    out
}

/// # Format
/// `INFO [section [section ...]]`
pub(super) fn info(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sections: Vec<String> = a[1..]
        .iter()
        .map(|x| String::from_utf8_lossy(x).to_ascii_lowercase())
        .collect();
    Some(verbatim(info_text(&s.shared, &sections)))
}

/// # Format
/// `TIME`
pub(super) fn time(_s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Some(Frame::Array(vec![
        Frame::Bulk(d.as_secs().to_string().into()),
        Frame::Bulk(d.subsec_micros().to_string().into()),
    ]))
}

/// # Format
/// `SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT]`
pub(super) fn shutdown(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let (mut save, mut nosave, mut force) = (false, false, false);
    for opt in &a[1..] {
        match opt.to_ascii_lowercase().as_slice() {
            b"nosave" => nosave = true,
            b"save" => save = true,
            b"force" => force = true,
            b"now" => {}
            b"abort" => return err("ERR No shutdown in progress."),
            _ => return err(errors::SYNTAX),
        }
    }
    // As Redis: with save points (or SAVE), a snapshot first; the node stops once it is written.
    let points = !s.shared.config.read().save_points.is_empty();
    if s.shared.cluster.is_none() && !nosave && (save || points) {
        s.save_ready = Some(crate::persist::SaveAsk::Shutdown { force });
        return None;
    }
    tracing::warn!(
        node_id = %s.shared.node_id,
        component = "server",
        "SHUTDOWN requested by a client, stopping"
    );
    s.shared.trigger_shutdown();
    s.close_after = true;
    None
}

/// # Format
/// `LATENCY LATEST | HISTORY event | RESET [event ...] | DOCTOR | HELP`
pub(super) fn latency(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match a[1].to_ascii_lowercase().as_slice() {
        // The latency monitor is off (Redis's default, latency-monitor-threshold 0): no samples.
        b"latest" | b"history" => Some(Frame::Array(vec![])),
        b"reset" => Some(Frame::Integer(0)),
        b"histogram" => Some(latency_histogram(s, &a[2..])),
        b"doctor" => Some(verbatim(
            "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. \
             You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. \
             If we weren't in a deep space mission I'd suggest to take a look at https://redis.io/topics/latency-monitor.\n"
                .to_string(),
        )),
        _ => help(
            "LATENCY",
            &[
                "DOCTOR",
                "    Return a human readable latency analysis report.",
                "HISTOGRAM [<command> ...]",
                "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
                "    If no commands are specified then all histograms are replied.",
                "HISTORY <event>",
                "    Return time-latency samples for the <event> class.",
                "LATEST",
                "    Return the latest latency samples for all events.",
                "RESET [<event> ...]",
                "    Reset latency data of one or more <event> classes.",
                "    (default: reset all data for all event classes)",
            ],
        ),
    }
}

/// `LATENCY HISTOGRAM [command ...]`: per command (every command called so far if none is
/// named; unknown or never called ones are left out, as in Redis), its calls and the
/// cumulative count of executions at or below each power of two of microseconds.
fn latency_histogram(s: &Session, names: &[Bytes]) -> Frame {
    let stats = &s.shared.metrics.commands;
    let wanted = |name: &str| {
        names.is_empty()
            || names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut out = Vec::new();
    for (name, stat) in stats.all() {
        let calls = stat.calls.load(Ordering::Relaxed);
        if calls == 0 || !wanted(name) {
            continue;
        }
        let d = stat.latency.export();
        let mut buckets = Vec::new();
        let mut last = 0;
        for (bound, n) in d.powers_of_two() {
            if n > last {
                buckets.push((Frame::Integer(bound as i64), Frame::Integer(n as i64)));
                last = n;
            }
        }
        out.push((
            Frame::Bulk(Bytes::from_static(name.as_bytes())),
            Frame::Map(vec![
                (
                    Frame::Bulk(Bytes::from_static(b"calls")),
                    Frame::Integer(calls as i64),
                ),
                (
                    Frame::Bulk(Bytes::from_static(b"histogram_usec")),
                    Frame::Map(buckets),
                ),
            ]),
        ));
    }
    Frame::Map(out)
}

/// # Format
/// `MONITOR`: from now on this client receives every command the node runs, as Redis writes
/// them (administrative commands and AUTH secrets left out). A second MONITOR gets no reply.
pub(super) fn monitor(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    if s.monitor.is_some() {
        return None;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(crate::state::MONITOR_BACKLOG);
    {
        let mut m = s.shared.monitors.lock();
        m.push(crate::state::Monitor {
            client: s.handle.id,
            tx,
        });
        s.shared.monitor_count.store(m.len(), Ordering::Relaxed);
    }
    s.monitor = Some(rx);
    Some(Frame::ok())
}

/// # Format
/// `SLOWLOG GET [count] | LEN | RESET | HELP`
pub(super) fn slowlog(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match a[1].to_ascii_lowercase().as_slice() {
        b"get" => {
            if a.len() > 3 {
                return err("ERR unknown subcommand or wrong number of arguments for 'GET'. Try SLOWLOG HELP.");
            }
            let count = match a.get(2) {
                None => 10,
                Some(raw) => match num::parse_i64(raw) {
                    Some(-1) => usize::MAX,
                    Some(n) if n >= 0 => n as usize,
                    _ => return err("ERR count should be greater than or equal to -1"),
                },
            };
            let log = s.shared.slowlog.lock();
            Some(Frame::Array(
                log.entries
                    .iter()
                    .take(count)
                    .map(|e| {
                        Frame::Array(vec![
                            Frame::Integer(e.id as i64),
                            Frame::Integer(e.at as i64),
                            Frame::Integer(e.micros as i64),
                            Frame::Array(e.args.iter().cloned().map(Frame::Bulk).collect()),
                            Frame::Bulk(e.addr.clone().into()),
                            Frame::Bulk(e.name.clone().into()),
                        ])
                    })
                    .collect(),
            ))
        }
        b"len" => Some(Frame::Integer(s.shared.slowlog.lock().entries.len() as i64)),
        b"reset" => {
            s.shared.slowlog.lock().entries.clear();
            Some(Frame::ok())
        }
        _ => help(
            "SLOWLOG",
            &[
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
            ],
        ),
    }
}

/// # Format
/// `MEMORY USAGE key [SAMPLES count] | STATS | DOCTOR | HELP`
pub(super) fn memory(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    match a[1].to_ascii_lowercase().as_slice() {
        b"usage" => {
            match a.len() {
                3 => {}
                5 if a[3].eq_ignore_ascii_case(b"samples") => {
                    if num::parse_i64(&a[4]).is_none() {
                        return err(errors::NOT_INTEGER);
                    }
                }
                _ => return err(errors::SYNTAX),
            }
            let usage = s.shared.store.memory_usage(&a[2], &s.ctx());
            Some(usage.map_or(Frame::Null, |b| Frame::Integer(b as i64)))
        }
        b"stats" => {
            let used = crate::memory::sample(&s.shared);
            let store = s.shared.store.stats();
            let rss = crate::alloc::rss_bytes();
            let kv = |k: &'static str, v: i64| (Frame::bulk(k.as_bytes()), Frame::Integer(v));
            let per_key = store.bytes.checked_div(store.keys).unwrap_or(0);
            Some(Frame::Map(vec![
                kv(
                    "peak.allocated",
                    s.shared.metrics.peak_memory.load(Ordering::Relaxed) as i64,
                ),
                kv("total.allocated", used as i64),
                kv("dataset.bytes", store.bytes as i64),
                kv("overhead.total", used.saturating_sub(store.bytes) as i64),
                kv("keys.count", store.keys as i64),
                kv("keys.bytes-per-key", per_key as i64),
                kv("rss", rss as i64),
                (
                    Frame::bulk(b"fragmentation"),
                    Frame::Double(
                        format!(
                            "{:.2}",
                            if used > 0 {
                                rss as f64 / used as f64
                            } else {
                                0.0
                            }
                        )
                        .into(),
                    ),
                ),
            ]))
        }
        b"doctor" => {
            let used = crate::memory::sample(&s.shared);
            let rss = crate::alloc::rss_bytes();
            let ratio = if used > 0 {
                rss as f64 / used as f64
            } else {
                0.0
            };
            let text = if used < 5 * 1024 * 1024 {
                "Hi Sam, this instance is empty or is using very little memory, my issues detector can't be used in these conditions. Please, leave for your mission on Earth and fill it with some data. The new Sam and I will be back to our programming as soon as I finished rebooting.\n".to_string()
            } else if ratio > 1.4 {
                format!("Sam, I detected a few issues in this Redis instance memory implants:\n\n * High total RSS: This instance has a memory fragmentation and RSS overhead greater than 1.4 ({ratio:.2}).\n")
            } else {
                "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n".to_string()
            };
            Some(verbatim(text))
        }
        _ => help(
            "MEMORY",
            &[
                "DOCTOR",
                "    Return memory problems reports.",
                "STATS",
                "    Return information about the memory usage of the server.",
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key> and its value. Nested values are",
                "    sampled up to <count> times (default: 5, 0 means sample all).",
            ],
        ),
    }
}

/// # Format
/// `DEBUG subcommand [arg ...]`: refused, as Redis does by default.
pub(super) fn debug(_s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    err(errors::DEBUG_DISABLED)
}

/// # Format
/// `CLUSTER <subcommand> ...`
///
/// Answered as a Redis without cluster mode answers: HyperCache does not speak the Redis
/// Cluster protocol (no slot map for clients, no redirections): any node serves any key.
/// # Format
/// `SAVE` and `BGSAVE [SCHEDULE]`
///
/// HyperCache keeps its data in memory only (its replicas are its durability): known, so that a
/// transaction or a script refuses them as Redis does, and refused with a clear error.
/// # Format
/// `SAVE`: writes the snapshot file now ([`crate::persist`]); the reply comes once it is
/// written (`+OK`, or `-ERR` with the reason in the log).
pub(super) fn save(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return err(errors::NO_PERSISTENCE);
    }
    if s.shared.persist.in_progress() {
        return err("ERR Background save already in progress");
    }
    s.save_ready = Some(crate::persist::SaveAsk::Save);
    None
}

/// # Format
/// `BGSAVE [SCHEDULE]`: snapshot now, written in the background.
pub(super) fn bgsave(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if s.shared.cluster.is_some() {
        return err(errors::NO_PERSISTENCE);
    }
    let schedule = match a.get(1) {
        None => false,
        Some(o) if a.len() == 2 && o.eq_ignore_ascii_case(b"schedule") => true,
        Some(_) => return err(errors::SYNTAX),
    };
    if s.shared.persist.in_progress() {
        if schedule {
            return Some(Frame::simple("Background saving scheduled"));
        }
        return err("ERR Background save already in progress");
    }
    s.save_ready = Some(crate::persist::SaveAsk::Background);
    Some(Frame::simple("Background saving started"))
}

/// # Format
/// `LASTSAVE`
pub(super) fn lastsave(s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    Some(Frame::Integer(s.shared.persist.last_save() as i64))
}

pub(super) fn cluster(_s: &mut Session, _a: &[Bytes]) -> Option<Frame> {
    err("ERR This instance has cluster support disabled")
}

/// Settings Redis cannot change at run time either: `CONFIG SET` refuses them even to the value
/// they have (HyperCache's other fixed settings accept that value, as a no-op).
const REDIS_IMMUTABLE: [&str; 6] = [
    "aclfile",
    "cluster-port",
    "daemonize",
    "databases",
    "replicaof",
    "slaveof",
];

/// `CONFIG SET port`: binds the new plain-text client port where clients connect (`bind`) and
/// returns its listener, for the accept loop to take once the whole command succeeded. `None`
/// when the port does not change. Refused in a cluster: the client address is each member's
/// identity for the others.
fn rebind(
    s: &Session,
    next: &crate::config::Config,
) -> Result<Option<(tokio::net::TcpListener, u16)>, String> {
    let now = s.shared.config.read().port;
    if next.port == now {
        return Ok(None);
    }
    let fail = |why: String| {
        format!("ERR CONFIG SET failed (possibly related to argument 'port') - {why}")
    };
    if s.shared.cluster.is_some() {
        return Err(fail(
            "the client port of a cluster member cannot change at run time".into(),
        ));
    }
    if next.port == 0 {
        return Err(fail(
            "Unable to listen on this port: the plain-text port cannot be turned off at run time"
                .into(),
        ));
    }
    let bound = std::net::TcpListener::bind((next.bind.as_str(), next.port))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std);
    match bound {
        Ok(l) => Ok(Some((l, next.port))),
        Err(e) => Err(fail(format!("Unable to listen on this port: {e}"))),
    }
}
