//! Differential test: the whole `redis-compat` corpus against a real `redis-server` (the reference)
//! and the `hypercache` binary (the candidate). Every reply must be byte-identical unless
//! `redis-compat/KNOWN_DIFFERENCES.md` lists the step or case.
//!
//! Needs `redis-server` (7.0, the version the corpus was written against) on `PATH`; `.ci/run`
//! installs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;
use hypercache_compat::{compare, load_corpus, parse_corpus, KnownDifferences};

fn redis_server() -> Server {
    if let Ok(out) = Command::new("redis-server").arg("--version").output() {
        let version = String::from_utf8_lossy(&out.stdout);
        if !version.contains("v=7.0.") {
            eprintln!(
                "warning: the corpus was written against Redis 7.0; found {}",
                version.trim()
            );
        }
    }
    Server::redis()
}

fn hypercache() -> Server {
    Server::start(&[])
}

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("redis-compat")
}

/// Runs the whole corpus against redis-server and the candidate at `candidate` (called `what` in
/// messages). Known differences and stale entries are printed; only unexpected ones fail.
/// Runs the corpus but the files in `leave_out` (what the candidate refuses on purpose: each
/// left out file says why at its top).
fn corpus_matches(candidate: std::net::SocketAddr, what: &str, leave_out: &[&str]) {
    let mut cases = load_corpus(&compat_dir().join("corpus")).unwrap_or_else(|e| panic!("{e}"));
    cases.retain(|c| !leave_out.contains(&c.file.as_str()));
    let known = KnownDifferences::load(&compat_dir().join("KNOWN_DIFFERENCES.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    for e in known.unmatched(&cases) {
        eprintln!(
            "STALE known-differences entry `{}` (line {}): no such case or step",
            e.key(),
            e.line
        );
    }
    let redis = redis_server();
    let report = compare(redis.addr, candidate, &cases, &known).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert!(
        report.compared > 1000,
        "only {} steps compared",
        report.compared
    );
    assert_eq!(
        report.failed(),
        0,
        "{what} differs from redis-server (printed above); fix it, or list a deliberate \
         departure in redis-compat/KNOWN_DIFFERENCES.md: {}",
        report.summary()
    );
}

#[test]
fn corpus_matches_redis() {
    let candidate = hypercache();
    corpus_matches(candidate.addr, "HyperCache", &[]);
}

/// The same corpus against a 3-node cluster (replication 3, writes at QUORUM), the client on one
/// node: a cluster must answer exactly as a single Redis does (WATCH aside).
#[test]
fn corpus_matches_redis_through_a_3_node_cluster() {
    let cluster = common::TestCluster::start(3, &[]);
    // A watched transaction in a cluster is one command on the one watched key (several are
    // refused on purpose: docs/cluster.md), and 18-watch has several; tests/transactions.rs
    // checks WATCH through a cluster. Keyspace notifications
    // are a per-node setting there, and a client's own keyspace events and invalidations come
    // when its write's coordinator acknowledges it, not at Redis's place next to the reply:
    // tests/pubsub.rs and tests/tracking.rs check both through a cluster. SWAPDB is refused in a
    // cluster (tests/cluster.rs checks the refusal).
    corpus_matches(
        cluster.addr(0),
        "a 3-node cluster",
        &[
            "18-watch.txt",
            "24-notifications.txt",
            "26-tracking.txt",
            "28-swapdb.txt",
        ],
    );
}

/// The runner must not pass silently: against a real server, two connections get different
/// `CLIENT ID`s, which it must report unless the list says otherwise.
#[test]
fn runner_detects_differences_against_real_redis() {
    let redis = redis_server();
    let cases = parse_corpus("t.txt", b"@case ids\nCLIENT ID\nPING\n").expect("parse");
    let none = KnownDifferences::default();
    let report = compare(redis.addr, redis.addr, &cases, &none).expect("compare");
    assert_eq!(report.compared, 2);
    let keys: Vec<_> = report.unexpected().map(|d| d.key()).collect();
    assert_eq!(keys, ["t.txt:ids:1"], "{report}");
    assert!(
        report
            .to_string()
            .contains("DIFF t.txt:ids:1 (line 2): CLIENT ID"),
        "{report}"
    );

    let known = KnownDifferences::parse(
        "- `t.txt:ids:1` — every connection has its own id\n- `t:ids:2` — PING never differs\n",
    )
    .expect("parse known");
    let report = compare(redis.addr, redis.addr, &cases, &known).expect("compare");
    assert_eq!(report.summary(), "2 passed, 0 failed", "{report}");
    assert_eq!(report.known().count(), 1);
    let stale: Vec<_> = report.stale.iter().map(|e| e.key()).collect();
    assert_eq!(stale, ["t:ids:2"]);
}

/// Bitmaps and LCS on random values: where several answers are equally right (which common
/// subsequence, which match ranges; which bits a range covers), the same one as Redis. 300
/// random pairs of short strings over a small alphabet (many ties) and random ranges, with a
/// fixed seed.
#[test]
fn random_lcs_and_bit_ranges_match_redis() {
    use rand::{Rng, SeedableRng};
    let (ours, redis) = (hypercache(), redis_server());
    let (mut a, mut b) = (ours.conn(), redis.conn());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(23);
    let word = |rng: &mut rand::rngs::SmallRng| -> Vec<u8> {
        let n = rng.random_range(0..24);
        (0..n)
            .map(|_| b"abc\xff\x00"[rng.random_range(0..5)])
            .collect()
    };
    for round in 0..300 {
        let (x, y) = (word(&mut rng), word(&mut rng));
        let (s, e) = (rng.random_range(-30..30i64), rng.random_range(-30..30i64));
        let bit = rng.random_range(0..2);
        let cmds: Vec<redis::Cmd> = vec![
            redis::cmd("MSET").arg("x").arg(&x).arg("y").arg(&y).clone(),
            redis::cmd("LCS").arg("x").arg("y").clone(),
            redis::cmd("LCS")
                .arg("x")
                .arg("y")
                .arg("IDX")
                .arg("WITHMATCHLEN")
                .clone(),
            redis::cmd("LCS")
                .arg("y")
                .arg("x")
                .arg("IDX")
                .arg("MINMATCHLEN")
                .arg(2)
                .clone(),
            redis::cmd("BITCOUNT")
                .arg("x")
                .arg(s)
                .arg(e)
                .arg("BIT")
                .clone(),
            redis::cmd("BITPOS")
                .arg("x")
                .arg(bit)
                .arg(s)
                .arg(e)
                .arg("BIT")
                .clone(),
            redis::cmd("BITPOS").arg("x").arg(bit).arg(s).clone(),
            redis::cmd("BITOP")
                .arg("XOR")
                .arg("z")
                .arg("x")
                .arg("y")
                .clone(),
            redis::cmd("GET").arg("z").clone(),
        ];
        for c in cmds {
            let ra: redis::Value = c
                .query(&mut a)
                .unwrap_or_else(|e| redis::Value::SimpleString(e.to_string()));
            let rb: redis::Value = c
                .query(&mut b)
                .unwrap_or_else(|e| redis::Value::SimpleString(e.to_string()));
            assert_eq!(
                ra,
                rb,
                "round {round}: {:?} {:?} {:?}",
                c.get_packed_command(),
                x,
                y
            );
        }
    }
}
