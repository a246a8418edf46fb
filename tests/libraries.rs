//! Real client libraries, unchanged, against a single node and a 3-node cluster, with the same
//! scenarios run against redis-server first (a scenario that fails there is a broken scenario,
//! not a HyperCache bug).
//!
//! redis-py comes from Debian (`python3-redis`, 4.3.4; `.ci/run` installs it): pipelines
//! (MULTI/EXEC by default), WATCH transactions, `Lock` (released and extended by scripts) and
//! `register_script` (EVALSHA, then SCRIPT LOAD on NOSCRIPT). ioredis comes from npm, pinned in
//! `tests/libs/package.json` (`scripts/test.sh` installs it): `multi()`, pipelines, WATCH,
//! `defineCommand` (EVALSHA, then EVAL on NOSCRIPT).

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
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/libs")
        .join(script);
    let out = Command::new(program)
        .arg(&path)
        .arg(port.to_string())
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
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
    assert_eq!(out.matches("ok ").count(), 9, "{out}");

    // Through one node of a cluster, WATCH is refused on purpose (docs/cluster.md); every other
    // scenario must pass unchanged.
    let cluster = TestCluster::start(3, &[]);
    let (ok, out) = redis_py(cluster.addr(0).port(), &["--no-watch"]);
    assert!(ok, "3-node cluster:\n{out}");
    assert_eq!(out.matches("ok ").count(), 8, "{out}");
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
    assert_eq!(out.matches("ok ").count(), 8, "{out}");

    let cluster = TestCluster::start(3, &[]);
    let (ok, out) = scenarios(
        "node",
        "ioredis.js",
        cluster.addr(0).port(),
        &["--no-watch"],
    );
    assert!(ok, "3-node cluster:\n{out}");
    assert_eq!(out.matches("ok ").count(), 7, "{out}");
}
