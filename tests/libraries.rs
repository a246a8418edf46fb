//! Real client libraries, unchanged, against a single node and a 3-node cluster, with the same
//! scenarios run against redis-server first (a scenario that fails there is a broken scenario,
//! not a HyperCache bug).
//!
//! redis-py comes from Debian (`python3-redis`, 4.3.4; `.ci/run` installs it): pipelines
//! (MULTI/EXEC by default), WATCH transactions, `Lock` (released and extended by scripts) and
//! `register_script` (EVALSHA, then SCRIPT LOAD on NOSCRIPT). ioredis comes from npm, pinned in
//! `tests/libs/package.json` (`scripts/test.sh` installs it): `multi()`, pipelines, WATCH,
//! `defineCommand` (EVALSHA, then EVAL on NOSCRIPT). Both also run over TLS with client
//! certificates. redis-py 5.2.1 from PyPI (pinned; `scripts/test.sh` installs it into
//! `tests/libs/pylib`) runs client-side caching, which Debian's 4.3.4 does not have. Rails'
//! cache store, phpredis and go-redis are Debian's packages (`scripts/test.sh` installs them).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, TestCluster};

fn redis_py(port: u16, extra: &[&str]) -> (bool, String) {
    scenarios("/usr/bin/python3", "redis_py.py", port, extra)
}

/// Runs `tests/libs/<script>` with `program` against `port`: whether every scenario passed, and
/// what it printed.
fn scenarios(program: &str, script: &str, port: u16, extra: &[&str]) -> (bool, String) {
    scenarios_with(program, script, port, extra, &[])
}

/// [`scenarios`] with environment variables.
fn scenarios_with(
    program: &str,
    script: &str,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/libs")
        .join(script);
    let mut cmd = Command::new(program);
    cmd.envs(env.iter().copied())
        .arg(&path)
        .arg(port.to_string())
        .args(extra);
    outcome(cmd)
}

/// Runs `cmd`: whether it exited 0 (every scenario passed), and what it printed.
fn outcome(mut cmd: Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{:?} runs: {e}", cmd.get_program()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn python_has_redis() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn redis_py_scenarios_pass_on_redis_a_node_and_a_cluster() {
    assert!(
        python_has_redis(),
        "redis-py is missing: apt-get install python3-redis (scripts/test.sh does)"
    );
    let reference = Server::redis();
    let (ok, out) = redis_py(reference.addr.port(), &[]);
    assert!(ok, "the scenarios fail against redis-server itself:\n{out}");

    let node = Server::start(&[]);
    let (ok, out) = redis_py(node.addr.port(), &[]);
    assert!(ok, "single node:\n{out}");
    assert_eq!(out.matches("ok ").count(), 11, "{out}");

    // Through one node of a cluster every scenario passes unchanged, WATCH's too.
    let cluster = TestCluster::start(3, &[]);
    let (ok, out) = redis_py(cluster.addr(0).port(), &[]);
    assert!(ok, "3-node cluster:\n{out}");
    assert_eq!(out.matches("ok ").count(), 11, "{out}");
}

/// redis-py 5.2.1's client-side caching (`protocol=3, cache_config=CacheConfig()`), unchanged:
/// cached reads, and every write by another client, an own write, an expiry and FLUSHALL seen
/// within 2 s, on a node and through a 3-node cluster (the cached client on one node, the writer
/// on another). The nodes report 7.4.0 (`reported-redis-version`): redis-py refuses client-side
/// caching below 7.4, which is also why redis-server 7.0 cannot be the reference here.
#[test]
fn redis_py_client_side_caching_on_a_node_and_a_cluster() {
    let pylib = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libs/pylib");
    assert!(
        pylib.join("redis").is_dir(),
        "redis-py 5.2.1 is missing: pip install --target tests/libs/pylib redis==5.2.1 \
         (scripts/test.sh does)"
    );
    let env = [("PYTHONPATH", pylib.to_str().expect("utf-8 path"))];
    let version = ["--reported-redis-version", "7.4.0"];

    let node = Server::start(&version);
    let (ok, out) = scenarios_with(
        "/usr/bin/python3",
        "redis_py_csc.py",
        node.addr.port(),
        &[],
        &env,
    );
    assert!(ok, "single node:\n{out}");
    assert_eq!(out.matches("ok ").count(), 5, "{out}");

    // A node at the default version: redis-py refuses, as it refuses Redis 7.0.
    let plain = Server::start(&[]);
    let (ok, out) = scenarios_with(
        "/usr/bin/python3",
        "redis_py_csc.py",
        plain.addr.port(),
        &[],
        &env,
    );
    assert!(!ok && out.contains("7.4 or later"), "{out}");

    let cluster = TestCluster::start(3, &version);
    let (ok, out) = scenarios_with(
        "/usr/bin/python3",
        "redis_py_csc.py",
        cluster.addr(0).port(),
        &[&cluster.addr(1).port().to_string()],
        &env,
    );
    assert!(ok, "3-node cluster:\n{out}");
    assert_eq!(out.matches("ok ").count(), 5, "{out}");
}

#[test]
fn ioredis_scenarios_pass_on_redis_a_node_and_a_cluster() {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libs/node_modules/ioredis");
    assert!(
        installed.is_dir(),
        "ioredis is missing: (cd tests/libs && npm ci) (scripts/test.sh does)"
    );
    let reference = Server::redis();
    let (ok, out) = scenarios("node", "ioredis.js", reference.addr.port(), &[]);
    assert!(ok, "the scenarios fail against redis-server itself:\n{out}");

    let node = Server::start(&[]);
    let (ok, out) = scenarios("node", "ioredis.js", node.addr.port(), &[]);
    assert!(ok, "single node:\n{out}");
    assert_eq!(out.matches("ok ").count(), 9, "{out}");

    let cluster = TestCluster::start(3, &[]);
    let (ok, out) = scenarios("node", "ioredis.js", cluster.addr(0).port(), &[]);
    assert!(ok, "3-node cluster:\n{out}");
    assert_eq!(out.matches("ok ").count(), 9, "{out}");
}

/// The pinned Python libraries (`scripts/test.sh` installs them into `tests/libs/pylib`).
fn pylib_env() -> [(&'static str, String); 1] {
    let pylib = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libs/pylib");
    assert!(
        pylib.join("limits").is_dir() && pylib.join("django").is_dir(),
        "the pinned Python libraries are missing: scripts/test.sh installs them"
    );
    [(
        "PYTHONPATH",
        pylib.to_str().expect("utf-8 path").to_string(),
    )]
}

/// Django's cache backend, Flask-Caching, dogpile.cache, aiocache and limits, unchanged
/// (`tests/libs/py_caches.py`), in database 0 and through a `/1` URL: on redis-server, a node,
/// and through one node of a 3-node cluster. limits' moving window keeps its hits in a Redis list,
/// which HyperCache does not store (docs/commands.md): it runs against redis-server only.
#[test]
fn python_cache_libraries_on_redis_a_node_and_a_cluster() {
    let env = pylib_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |port: u16, extra: &[&str]| {
        scenarios_with("/usr/bin/python3", "py_caches.py", port, extra, &env)
    };
    let reference = Server::redis();
    for db in ["0", "1"] {
        let (ok, out) = run(reference.addr.port(), &["--db", db]);
        assert!(
            ok,
            "the scenarios fail against redis-server itself (db {db}):\n{out}"
        );
        assert_eq!(out.matches("ok ").count(), 12, "{out}");
    }
    let node = Server::start(&[]);
    for db in ["0", "1"] {
        let (ok, out) = run(node.addr.port(), &["--db", db, "--no-lists"]);
        assert!(ok, "single node, db {db}:\n{out}");
        assert_eq!(out.matches("ok ").count(), 11, "{out}");
    }
    let cluster = TestCluster::start(3, &[]);
    let (ok, out) = run(cluster.addr(0).port(), &["--db", "1", "--no-lists"]);
    assert!(ok, "3-node cluster, db 1:\n{out}");
    assert_eq!(out.matches("ok ").count(), 11, "{out}");
}

/// node-redis, connect-redis, cache-manager with Keyv, and rate-limit-redis behind
/// express-rate-limit, unchanged (`tests/libs/node_caches.js`), in database 0 and 1: on
/// redis-server, a node, and through one node of a 3-node cluster.
#[test]
fn node_cache_libraries_on_redis_a_node_and_a_cluster() {
    let installed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libs/node_modules/rate-limit-redis");
    assert!(
        installed.is_dir(),
        "the Node libraries are missing: (cd tests/libs && npm ci) (scripts/test.sh does)"
    );
    let run = |port: u16, db: &str| scenarios("node", "node_caches.js", port, &["--db", db]);
    let reference = Server::redis();
    for db in ["0", "1"] {
        let (ok, out) = run(reference.addr.port(), db);
        assert!(
            ok,
            "the scenarios fail against redis-server itself (db {db}):\n{out}"
        );
        assert_eq!(out.matches("ok ").count(), 13, "{out}");
    }
    let node = Server::start(&[]);
    for db in ["0", "1"] {
        let (ok, out) = run(node.addr.port(), db);
        assert!(ok, "single node, db {db}:\n{out}");
        assert_eq!(out.matches("ok ").count(), 13, "{out}");
    }
    let cluster = TestCluster::start(3, &[]);
    let (ok, out) = run(cluster.addr(0).port(), "1");
    assert!(ok, "3-node cluster, db 1:\n{out}");
    assert_eq!(out.matches("ok ").count(), 13, "{out}");
}

/// redis-py and ioredis over TLS with client certificates (`tls-auth-clients yes`), against
/// redis-server's TLS port first and then a node's: every scenario passes unchanged.
#[test]
fn redis_py_and_ioredis_over_tls() {
    let pki = common::pki::Pki::new("libraries");
    let ca = pki.ca("ca");
    ca.issue(&pki, "server");
    ca.issue(&pki, "client");
    let (ca_pem, cert, key) = (
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key"),
    );
    let tls_args = |tls_port: u16| -> Vec<String> {
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_pem,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let client = [
        "--tls",
        &ca_pem,
        &pki.path("client.pem"),
        &pki.path("client.key"),
    ];
    let redis_tls = common::free_port();
    let args = tls_args(redis_tls);
    let _reference = common::start("redis-server", |port| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&args)
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null());
        cmd
    });
    let node_tls = common::free_port();
    let args = tls_args(node_tls);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let _node = Server::start(&args);
    let ioredis = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libs/node_modules/ioredis");
    assert!(
        ioredis.is_dir(),
        "ioredis is missing: (cd tests/libs && npm ci)"
    );
    for (what, port) in [("redis-server", redis_tls), ("hypercache", node_tls)] {
        let (ok, out) = redis_py(port, &client);
        assert!(ok, "redis-py over TLS to {what}:\n{out}");
        assert_eq!(out.matches("ok ").count(), 11, "{out}");
        let (ok, out) = scenarios("node", "ioredis.js", port, &client);
        assert!(ok, "ioredis over TLS to {what}:\n{out}");
        assert_eq!(out.matches("ok ").count(), 9, "{out}");
    }
}

/// Runs a scenario program from Debian's packages against redis-server (databases 0 and 1), a
/// node (0 and 1) and one node of a 3-node cluster (1): every scenario passes on each, `count`
/// of them. `run(port, db)` returns whether all passed and what the program printed.
fn on_redis_a_node_and_a_cluster(
    what: &str,
    count: usize,
    run: impl Fn(u16, &str) -> (bool, String),
) {
    let check = |server: &str, port: u16, db: &str| {
        let (ok, out) = run(port, db);
        assert!(ok, "{what} on {server}, db {db}:\n{out}");
        assert_eq!(
            out.matches("ok ").count(),
            count,
            "{what} on {server}, db {db}:\n{out}"
        );
    };
    let reference = Server::redis();
    for db in ["0", "1"] {
        check(
            "redis-server (a failure here is a broken scenario)",
            reference.addr.port(),
            db,
        );
    }
    let node = Server::start(&[]);
    for db in ["0", "1"] {
        check("a node", node.addr.port(), db);
    }
    let cluster = TestCluster::start(3, &[]);
    check("a 3-node cluster", cluster.addr(0).port(), "1");
}

/// Rails' cache store (`ActiveSupport::Cache::RedisCacheStore` of Debian's ruby-activesupport
/// 6.1) and redis-rb 4.8 under it, unchanged (`tests/libs/rails_cache.rb`): fetch, multi reads
/// and writes, counters, `race_condition_ttl`, namespaces with `delete_matched` and `clear`
/// (SCAN), compression, and redis-rb's pipelines, MULTI/WATCH and scripts.
#[test]
fn rails_cache_store_on_redis_a_node_and_a_cluster() {
    on_redis_a_node_and_a_cluster("Rails' cache store", 14, |port, db| {
        scenarios("ruby", "rails_cache.rb", port, &["--db", db])
    });
}

/// phpredis (Debian's php-redis 5.3.7), unchanged (`tests/libs/php_redis.php`): strings,
/// counters and expiry, MULTI and pipelines, WATCH, EVAL/EVALSHA with NOSCRIPT, SCAN, its
/// serializers and prefix, Pub/Sub, and its session handler (`session.save_handler = redis`):
/// sessions written, read, regenerated and destroyed, and its session locks (SET NX PX, released
/// by a script).
#[test]
fn phpredis_and_its_sessions_on_redis_a_node_and_a_cluster() {
    on_redis_a_node_and_a_cluster("phpredis", 15, |port, db| {
        scenarios("php", "php_redis.php", port, &["--db", db])
    });
}

/// go-redis v5 (Debian's golang-gopkg-redis.v5-dev 5.2.9), unchanged (`tests/libs/go_redis.go`,
/// built here with Debian's Go in GOPATH mode): strings, counters and expiry, pipelines,
/// `TxPipelined` (MULTI/EXEC), WATCH with `TxFailedErr` and an optimistic increment loop,
/// scripts (`NewScript(...).Run`: EVALSHA, then EVAL on NOSCRIPT), SCAN, Pub/Sub and its pool
/// under concurrency.
#[test]
fn go_redis_on_redis_a_node_and_a_cluster() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let program = tmp.join("go_redis");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libs/go_redis.go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&program)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", tmp.join("gocache"))
        .output()
        .expect("go runs (scripts/test.sh installs golang-go)");
    assert!(
        out.status.success(),
        "go build {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    on_redis_a_node_and_a_cluster("go-redis", 14, |port, db| {
        let mut cmd = Command::new(&program);
        cmd.arg(port.to_string()).args(["--db", db]);
        outcome(cmd)
    });
}
