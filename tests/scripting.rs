//! Lua scripts through real clients: the redis-py `Lock` pattern, atomicity, `-BUSY` and
//! `SCRIPT KILL`, the memory limit, scripts inside transactions, and scripts through a cluster.

mod common;

use std::time::{Duration, Instant};

use common::{Server, TestCluster};
use redis::Commands;

/// redis-py's `Lock.release` script: delete the lock only if it still holds our token.
const RELEASE: &str = r#"
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
return 1
"#;

/// EVALSHA first, and on `NOSCRIPT` load the script and try again: what redis-py's
/// `Script.__call__` does.
fn evalsha(c: &mut redis::Connection, body: &str, keys: &[&str], args: &[&str]) -> i64 {
    let sha = sha1_hex(body);
    let run = |c: &mut redis::Connection| -> redis::RedisResult<i64> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&sha).arg(keys.len()).arg(keys).arg(args);
        cmd.query(c)
    };
    match run(c) {
        Ok(v) => v,
        Err(e) if e.code() == Some("NOSCRIPT") => {
            let loaded: String = redis::cmd("SCRIPT").arg("LOAD").arg(body).query(c).unwrap();
            assert_eq!(loaded, sha);
            run(c).unwrap()
        }
        Err(e) => panic!("{e}"),
    }
}

/// SHA1 computed here, independently of the node: its `SCRIPT LOAD` answer must match.
fn sha1_hex(body: &str) -> String {
    sha1_smol::Sha1::from(body.as_bytes()).digest().to_string()
}

/// Each connection of `conns`, on its own thread, takes the lock `lock` `each` times with `SET NX
/// PX`, does a read-modify-write of `counter` that is only correct under mutual exclusion, and
/// releases the lock with the compare-and-delete script (loaded on first `NOSCRIPT`, as redis-py
/// does). Releasing a lock no longer held does nothing.
fn lock_workers(conns: Vec<redis::Connection>, each: usize, lock: &str, counter: &str) {
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(w, mut c)| {
            let (lock, counter) = (lock.to_string(), counter.to_string());
            std::thread::spawn(move || {
                let token = format!("worker-{w}");
                let (mut done, mut tries) = (0, 0);
                while done < each {
                    tries += 1;
                    assert!(tries < 1_000_000, "worker {w} starved");
                    let got: Option<String> = redis::cmd("SET")
                        .arg(&lock)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(30_000)
                        .query(&mut c)
                        .unwrap();
                    if got.is_none() {
                        continue;
                    }
                    let n: i64 = c.get::<_, Option<i64>>(&counter).unwrap().unwrap_or(0);
                    std::thread::sleep(Duration::from_micros(200));
                    let _: () = c.set(&counter, n + 1).unwrap();
                    assert_eq!(evalsha(&mut c, RELEASE, &[lock.as_str()], &[&token]), 1);
                    done += 1;
                }
                assert_eq!(evalsha(&mut c, RELEASE, &[lock.as_str()], &[&token]), 0);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Workers on separate connections share a lock released by a script: no increment is lost.
#[test]
fn a_lua_released_lock_gives_mutual_exclusion() {
    let s = Server::start(&["--threads", "4"]);
    lock_workers((0..4).map(|_| s.conn()).collect(), 50, "lock", "counter");
    let n: i64 = s.conn().get("counter").unwrap();
    assert_eq!(n, 200);
    let exists: i64 = s.conn().exists("lock").unwrap();
    assert_eq!(exists, 0, "the lock was released");
}

/// The same lock across the nodes of a 3-node cluster, while no node fails: each worker talks to
/// another node. The lock's SET NX is a read-modify-write round (two coordinators cannot both
/// take it), the critical section's read sees the last acknowledged write (QUORUM reads and
/// writes), and the release script runs through the lock's slot coordinator. No increment may
/// be lost.
#[test]
fn a_lua_released_lock_gives_mutual_exclusion_across_cluster_nodes() {
    let c = TestCluster::start(3, &[]);
    lock_workers(
        (0..3).map(|i| c.conn(i)).collect(),
        25,
        "{l}lock",
        "{l}counter",
    );
    for node in 0..3 {
        let mut conn = c.conn_at(node, "all", "quorum");
        let n: i64 = conn.get("{l}counter").unwrap();
        assert_eq!(n, 75, "through node {node}");
        let exists: i64 = conn.exists("{l}lock").unwrap();
        assert_eq!(exists, 0, "the lock was released");
    }
}

/// A script is atomic on a single node: readers never see its first write without its last.
#[test]
fn no_command_runs_during_a_script() {
    let s = Server::start(&["--threads", "4"]);
    let script = "redis.call('decr', KEYS[1]) \
                  for i = 1, 50 do redis.call('incr', KEYS[3]) end \
                  return redis.call('incr', KEYS[2])";
    common::reads_never_see_half_a_move(&s, 2, 1_000_000, |c| {
        for _ in 0..1000 {
            let _: i64 = redis::cmd("EVAL")
                .arg(script)
                .arg(3)
                .arg("a")
                .arg("b")
                .arg("pad")
                .query(c)
                .unwrap();
        }
    });
    let got: (i64, i64) = redis::cmd("MGET")
        .arg("a")
        .arg("b")
        .query(&mut s.conn())
        .unwrap();
    assert_eq!(got, (999_000, 1000));
}

/// Runs a script that never ends on `conn`, in a thread that returns the error it ends with.
fn spin(mut conn: redis::Connection) -> std::thread::JoinHandle<redis::RedisError> {
    std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("local i = 0 while true do i = i + 1 end")
            .arg(0)
            .query::<()>(&mut conn)
            .unwrap_err()
    })
}

/// A script past `busy-reply-threshold` makes other clients' commands answer `-BUSY`; SCRIPT
/// KILL stops it (its caller gets Redis's error) and the node serves again. With one runtime
/// worker, the one the script started on: a script that runs long leaves it to the node.
#[test]
fn a_busy_script_answers_busy_until_script_kill() {
    let s = Server::start(&["--busy-reply-threshold", "100", "--threads", "1"]);
    let looping = s.conn();
    // A node that stopped serving fails the test instead of hanging it.
    let mut c = s.conn();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let runner = spin(looping);
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        match redis::cmd("PING").query::<String>(&mut c) {
            Err(e) if e.to_string().contains("BUSY") => break e,
            _ if Instant::now() > deadline => panic!("never busy"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(
        busy.to_string().contains(
            "Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
        ),
        "{busy}"
    );
    // A client that connects while the script runs is served too.
    let mut late = s
        .client()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let late = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut late)
        .unwrap_err();
    assert!(late.to_string().contains("BUSY"), "{late}");
    let killed: String = redis::cmd("SCRIPT").arg("KILL").query(&mut c).unwrap();
    assert_eq!(killed, "OK");
    let err = runner.join().unwrap();
    assert!(
        err.to_string()
            .contains("Script killed by user with SCRIPT KILL"),
        "{err}"
    );
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let not_busy = redis::cmd("SCRIPT")
        .arg("KILL")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        not_busy
            .to_string()
            .contains("No scripts in execution right now."),
        "{not_busy}"
    );
}

/// A `SCRIPT LOAD` sent while a script runs long waits, as every command does, and past
/// `busy-reply-threshold` answers `-BUSY` (as Redis: only SCRIPT KILL, FUNCTION KILL and
/// SHUTDOWN NOSAVE run then); once the script is killed it loads.
#[test]
fn a_script_load_during_a_long_script_answers_busy() {
    let s = Server::start(&["--busy-reply-threshold", "500", "--threads", "1"]);
    let looping = s.conn();
    let mut c = s.conn();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let runner = spin(looping);
    // Inside the threshold: it waits, then is refused.
    std::thread::sleep(Duration::from_millis(100));
    let busy = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(busy.to_string().contains("BUSY"), "{busy}");
    let killed: String = redis::cmd("SCRIPT").arg("KILL").query(&mut c).unwrap();
    assert_eq!(killed, "OK");
    assert!(runner.join().unwrap().to_string().contains("Script killed"));
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query(&mut c)
        .unwrap();
    assert_eq!(sha, sha1_hex("return 1"));
}

/// A script that allocates past `script-memory-limit` fails; the node and its next scripts do
/// not.
#[test]
fn a_script_is_held_to_its_memory_limit() {
    let s = Server::start(&["--script-memory-limit", "2mb"]);
    let mut c = s.conn();
    let err = redis::cmd("EVAL")
        .arg("local t = {} for i = 1, 1000000 do t[i] = string.rep('x', 100) .. i end return #t")
        .arg(0)
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("not enough memory"), "{err}");
    let n: i64 = redis::cmd("EVAL")
        .arg("return #string.rep('x', 1000)")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1000);
}

/// EVAL queued in a transaction runs in its place, with the transaction's isolation.
#[test]
fn a_script_runs_inside_exec() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let (a, b, n): (String, i64, i64) = redis::pipe()
        .atomic()
        .set("k", 41)
        .cmd("EVAL")
        .arg("return redis.call('incr', KEYS[1])")
        .arg(1)
        .arg("k")
        .get("k")
        .query(&mut c)
        .unwrap();
    assert_eq!((a.as_str(), b, n), ("OK", 42, 42));
}

/// Through a node of a 3-node cluster: a script's keys must share a slot (`CROSSSLOT`), a key
/// of another slot touched by the script is refused, and a script that keeps to one slot runs
/// and replicates its writes (read back through another node at QUORUM).
#[test]
fn scripts_through_a_cluster_node() {
    let cluster = TestCluster::start(3, &[]);
    let mut c = cluster.conn(0);
    let n: i64 = redis::cmd("EVAL")
        .arg("redis.call('set', KEYS[1], ARGV[1]) return redis.call('incrby', KEYS[2], 5)")
        .arg(2)
        .arg("{user:1}:name")
        .arg("{user:1}:visits")
        .arg("ada")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 5);
    let err = redis::cmd("EVAL")
        .arg("return 1")
        .arg(2)
        .arg("a")
        .arg("b")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Keys in request don't hash to the same slot"),
        "{err}"
    );
    let err = redis::cmd("EVAL")
        .arg("return redis.call('get', 'elsewhere')")
        .arg(1)
        .arg("{user:1}:name")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Script attempted to access keys that do not hash to the same slot"),
        "{err}"
    );
    let mut other = cluster.conn_at(2, "quorum", "quorum");
    let name: String = other.get("{user:1}:name").unwrap();
    assert_eq!(name, "ada");
    let visits: i64 = other.get("{user:1}:visits").unwrap();
    assert_eq!(visits, 5);
}

/// A script whose keys share a slot runs atomically at the slot's coordinator: six clients on
/// three nodes run a read-then-write script (GET, then SET of the value plus one: lost updates
/// if anything came between) and a script that increments two keys, and no update is lost and
/// no script sees another's half. A key of the slot it did not declare is used as outside a
/// script; what it may not do there is refused in words (a command on its keys that is not an
/// operation of them, a flush).
#[test]
fn a_script_is_atomic_at_its_slot_s_coordinator() {
    let cluster = TestCluster::start(3, &[]);
    let read_then_write = "local v = tonumber(redis.call('get', KEYS[1]) or '0') \
        redis.call('set', KEYS[1], v + 1) return v + 1";
    let both = "return {redis.call('incr', KEYS[1]), redis.call('incr', KEYS[2])}";
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let mut c = cluster.conn(i % 3);
            let seen = seen.clone();
            std::thread::spawn(move || {
                for _ in 0..40 {
                    let n: i64 = redis::cmd("EVAL")
                        .arg(read_then_write)
                        .arg(1)
                        .arg("{s}counter")
                        .query(&mut c)
                        .unwrap();
                    assert!(seen.lock().unwrap().insert(n), "{n} twice: a lost update");
                    let (a, b): (i64, i64) = redis::cmd("EVAL")
                        .arg(both)
                        .arg(2)
                        .arg("{s}a")
                        .arg("{s}b")
                        .query(&mut c)
                        .unwrap();
                    assert_eq!(a, b, "a script saw another's half");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for node in 0..3 {
        let mut c = cluster.conn_at(node, "all", "quorum");
        let got: (i64, i64, i64) = redis::cmd("MGET")
            .arg("{s}counter")
            .arg("{s}a")
            .arg("{s}b")
            .query(&mut c)
            .unwrap();
        assert_eq!(got, (240, 240, 240), "through node {node}");
    }
    // All 480 ran at the slot's coordinator (a machine books its counts once its last
    // acknowledgement is in, just after its reply).
    let scripts = |n: usize| -> i64 {
        cluster
            .info_in(n, "cluster", "dist_group_scripts")
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ran: Vec<i64> = (0..3).map(scripts).collect();
    while ran.iter().sum::<i64>() < 480 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ran = (0..3).map(scripts).collect();
    }
    assert_eq!(ran.iter().sum::<i64>(), 480, "{ran:?}");
    assert_eq!(ran.iter().filter(|n| **n > 0).count(), 1, "{ran:?}");
    let mut c = cluster.conn(1);
    // A key of the slot it did not declare is reached as outside a script.
    let v: String = redis::cmd("EVAL")
        .arg("redis.call('set', '{s}undeclared', 'u') return redis.call('get', '{s}undeclared')")
        .arg(1)
        .arg("{s}counter")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "u");
    for (body, want) in [
        (
            "return redis.call('rename', KEYS[1], '{s}a')",
            "This command is not available to a script in a cluster",
        ),
        (
            "return redis.call('flushall')",
            "This command is not available to a script in a cluster",
        ),
    ] {
        let e = redis::cmd("EVAL")
            .arg(body)
            .arg(1)
            .arg("{s}counter")
            .query::<redis::Value>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains(want), "{body}: {e}");
    }
    // A script that fails half way keeps what it did before the error, as in Redis (whose
    // scripts do not roll back): its round replicates that.
    let e = redis::cmd("EVAL")
        .arg("redis.call('set', KEYS[1], 'half') return redis.call('incr', KEYS[2]) .. error()")
        .arg(2)
        .arg("{s}x")
        .arg("{s}counter")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("nil script"), "{e}");
    let got: (String, i64) = redis::cmd("MGET")
        .arg("{s}x")
        .arg("{s}counter")
        .query(&mut cluster.conn_at(2, "quorum", "quorum"))
        .unwrap();
    assert_eq!(got, ("half".to_string(), 241));
    // A function with keys runs the same way (its library loaded through one node: libraries
    // are cluster-wide).
    let library = "#!lua name=counters\n\
        redis.register_function('bump', function(keys) \
        local v = tonumber(redis.call('get', keys[1]) or '0') \
        redis.call('set', keys[1], v + 1) return v + 1 end)";
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library)
        .query(&mut cluster.conn(0))
        .unwrap();
    for node in 0..3 {
        wait_libraries(&cluster, node, &["counters"]);
    }
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let mut c = cluster.conn(i);
            std::thread::spawn(move || {
                for _ in 0..30 {
                    let _: i64 = redis::cmd("FCALL")
                        .arg("bump")
                        .arg(1)
                        .arg("{s}f")
                        .query(&mut c)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n: i64 = cluster.conn_at(0, "all", "quorum").get("{s}f").unwrap();
    assert_eq!(n, 90);
}

/// A library loaded on one node, dumped and restored on another, answers the same there; a
/// payload that is not a dump is refused.
#[test]
fn a_function_library_moves_between_nodes_by_dump_and_restore() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let (mut ca, mut cb) = (a.conn(), b.conn());
    let lib = "#!lua name=counter\n\
               redis.register_function('bump', function(keys, args) \
                 return redis.call('incrby', keys[1], args[1]) end)\n\
               redis.register_function{function_name='peek', \
                 callback=function(keys) return redis.call('get', keys[1]) end, \
                 flags={'no-writes'}}";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut ca)
        .unwrap();
    assert_eq!(name, "counter");
    let n: i64 = redis::cmd("FCALL")
        .arg("bump")
        .arg(1)
        .arg("c")
        .arg(5)
        .query(&mut ca)
        .unwrap();
    assert_eq!(n, 5);
    let dump: Vec<u8> = redis::cmd("FUNCTION").arg("DUMP").query(&mut ca).unwrap();
    let ok: String = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&dump)
        .query(&mut cb)
        .unwrap();
    assert_eq!(ok, "OK");
    let n: i64 = redis::cmd("FCALL")
        .arg("BUMP")
        .arg(1)
        .arg("c")
        .arg(2)
        .query(&mut cb)
        .unwrap();
    assert_eq!(n, 2);
    let v: String = redis::cmd("FCALL_RO")
        .arg("peek")
        .arg(1)
        .arg("c")
        .query(&mut cb)
        .unwrap();
    assert_eq!(v, "2");
    let err = redis::cmd("FCALL_RO")
        .arg("bump")
        .arg(1)
        .arg("c")
        .arg(1)
        .query::<i64>(&mut cb)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Can not execute a script with write flag using *_ro command."),
        "{err}"
    );
    // Restoring again collides (APPEND is the default), a corrupt payload is refused.
    let err = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&dump)
        .query::<String>(&mut cb)
        .unwrap_err();
    assert!(
        err.to_string().contains("Library counter already exists"),
        "{err}"
    );
    let mut bad = dump.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&bad)
        .arg("REPLACE")
        .query::<String>(&mut cb)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("DUMP payload version or checksum are wrong"),
        "{err}"
    );
}

/// A function past `busy-reply-threshold` answers FUNCTION's `-BUSY` to others, shows in
/// FUNCTION STATS, and FUNCTION KILL (not SCRIPT KILL) stops it.
#[test]
fn function_kill_stops_a_busy_function() {
    let s = Server::start(&["--busy-reply-threshold", "100", "--threads", "1"]);
    let mut c = s.conn();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=spin\nredis.register_function('spin', function() local i = 0 while true do i = i + 1 end end)")
        .query(&mut c)
        .unwrap();
    let mut looping = s.conn();
    let runner = std::thread::spawn(move || {
        redis::cmd("FCALL")
            .arg("spin")
            .arg(0)
            .query::<()>(&mut looping)
            .unwrap_err()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match redis::cmd("PING").query::<String>(&mut c) {
            Err(e) if e.to_string().contains("You can only call FUNCTION KILL") => break,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            _ if Instant::now() > deadline => panic!("never busy"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let stats: redis::Value = redis::cmd("FUNCTION").arg("STATS").query(&mut c).unwrap();
    assert!(format!("{stats:?}").contains("spin"), "{stats:?}");
    let wrong = redis::cmd("SCRIPT")
        .arg("KILL")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(
        wrong
            .to_string()
            .contains("You can only call FUNCTION KILL"),
        "{wrong}"
    );
    let ok: String = redis::cmd("FUNCTION").arg("KILL").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let err = runner.join().unwrap();
    assert!(err.to_string().contains("Script killed by user"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

/// The names of the libraries node `node` lists.
fn libraries(cluster: &TestCluster, node: usize) -> Vec<String> {
    let list: Vec<Vec<redis::Value>> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut cluster.conn(node))
        .unwrap();
    let mut names: Vec<String> = list
        .iter()
        .filter_map(|lib| {
            lib.chunks(2).find_map(|kv| match (&kv[0], kv.get(1)) {
                (redis::Value::BulkString(k), Some(redis::Value::BulkString(v)))
                    if k == b"library_name" =>
                {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            })
        })
        .collect();
    names.sort();
    names
}

/// Waits (at most 10 s) until node `node` lists exactly the libraries `want` (sorted).
fn wait_libraries(cluster: &TestCluster, node: usize, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let have = libraries(cluster, node);
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} lists {have:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Libraries loaded at the same time through different nodes (as application servers load
/// theirs at startup, each through the node it reaches) are all kept: each library is its own
/// entry of the cluster-wide settings, so one node's change never replaces another's made
/// meanwhile. (With one version for all the libraries, the change made last, without the
/// others', replaced them on every node.) Users set at the same time likewise.
#[test]
fn libraries_and_users_changed_at_once_through_different_nodes_are_all_kept() {
    let cluster = TestCluster::start(3, &[]);
    const EACH: usize = 8;
    let name = |node: usize, i: usize| format!("lib{node}x{i}");
    std::thread::scope(|s| {
        for node in 0..3 {
            let mut conn = cluster.conn(node);
            s.spawn(move || {
                for i in 0..EACH {
                    let lib = format!("lib{node}x{i}");
                    let code = format!(
                        "#!lua name={lib}\nredis.register_function('{lib}_f', function() \
                         return '{lib}' end)"
                    );
                    let got: String = redis::cmd("FUNCTION")
                        .arg("LOAD")
                        .arg(code)
                        .query(&mut conn)
                        .unwrap();
                    assert_eq!(got, lib);
                    let _: () = redis::cmd("ACL")
                        .arg("SETUSER")
                        .arg(format!("user{node}x{i}"))
                        .arg("on")
                        .arg(">pw")
                        .query(&mut conn)
                        .unwrap();
                }
            });
        }
    });
    let mut all: Vec<String> = (0..3)
        .flat_map(|n| (0..EACH).map(move |i| name(n, i)))
        .collect();
    all.sort();
    let want: Vec<&str> = all.iter().map(String::as_str).collect();
    for node in 0..3 {
        wait_libraries(&cluster, node, &want);
        let f = format!("{}_f", name((node + 1) % 3, EACH - 1));
        let got: String = redis::cmd("FCALL")
            .arg(&f)
            .arg(0)
            .query(&mut cluster.conn(node))
            .unwrap();
        assert_eq!(got, name((node + 1) % 3, EACH - 1), "node {node}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in 0..3 {
        loop {
            let users: Vec<String> = redis::cmd("ACL")
                .arg("USERS")
                .query(&mut cluster.conn(node))
                .unwrap();
            if users.len() == 3 * EACH + 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} has {} users, not {}: {users:?}",
                users.len(),
                3 * EACH + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Function libraries are cluster-wide: one loaded, replaced, deleted or flushed through any
/// node is so on every node (FCALL works through each), a node that was down when they changed
/// has the cluster's libraries once it is back, and a library loaded through it as it comes
/// back joins them instead of replacing them.
#[test]
fn function_libraries_are_cluster_wide() {
    let mut cluster = TestCluster::start(3, &[]);
    let lib = |name: &str, reply: &str| {
        format!(
            "#!lua name={name}\nredis.register_function('{name}_f', function(keys, args) \
             return '{reply}' end)"
        )
    };
    let load = |cluster: &TestCluster, node: usize, body: &str, replace: bool| -> String {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD");
        if replace {
            cmd.arg("REPLACE");
        }
        cmd.arg(body).query(&mut cluster.conn(node)).unwrap()
    };
    let fcall = |cluster: &TestCluster, node: usize, f: &str| -> redis::RedisResult<String> {
        redis::cmd("FCALL")
            .arg(f)
            .arg(1)
            .arg("{lib}k")
            .query(&mut cluster.conn(node))
    };
    assert_eq!(load(&cluster, 0, &lib("alpha", "a1"), false), "alpha");
    for node in 0..3 {
        wait_libraries(&cluster, node, &["alpha"]);
        assert_eq!(
            fcall(&cluster, node, "alpha_f").unwrap(),
            "a1",
            "node {node}"
        );
    }
    // Loading it again through another node is the error a single Redis gives.
    let e = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib("alpha", "a1"))
        .query::<String>(&mut cluster.conn(2))
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    // REPLACE through node 1, a second library through node 2.
    assert_eq!(load(&cluster, 1, &lib("alpha", "a2"), true), "alpha");
    assert_eq!(load(&cluster, 2, &lib("beta", "b1"), false), "beta");
    for node in 0..3 {
        wait_libraries(&cluster, node, &["alpha", "beta"]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..3).any(|n| fcall(&cluster, n, "alpha_f").ok().as_deref() != Some("a2")) {
        assert!(
            Instant::now() < deadline,
            "the replaced library did not reach every node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Node 2 down while alpha is deleted through node 0; back, it has what the others have.
    cluster.stop(2);
    let _: String = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("alpha")
        .query(&mut cluster.conn(0))
        .unwrap();
    wait_libraries(&cluster, 1, &["beta"]);
    let e = fcall(&cluster, 1, "alpha_f").unwrap_err();
    assert!(e.to_string().contains("Function not found"), "{e}");
    cluster.restart(2);
    // A library loaded through it at once is added to the cluster's: the node first hears
    // them (beta), rather than publishing its empty set plus gamma.
    assert_eq!(load(&cluster, 2, &lib("gamma", "g1"), false), "gamma");
    for node in 0..3 {
        wait_libraries(&cluster, node, &["beta", "gamma"]);
    }
    assert_eq!(fcall(&cluster, 2, "beta_f").unwrap(), "b1");
    // FLUSH through the node that came back empties every node.
    let _: String = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut cluster.conn(2))
        .unwrap();
    for node in 0..3 {
        wait_libraries(&cluster, node, &[]);
    }
}
