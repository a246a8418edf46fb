//! Process tests for `maxmemory` and the eviction policies: the real binary, real clients.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use redis::Connection;

fn info_field(c: &mut Connection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("everything").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing from INFO"))
        .trim()
        .parse()
        .unwrap()
}

/// Writes `n` keys `prefix{i}` with `size`-byte values in pipelined batches; returns the replies
/// that were errors.
fn write(c: &mut Connection, prefix: &str, n: usize, size: usize, px: Option<u64>) -> Vec<String> {
    let value = vec![b'x'; size];
    let mut errors = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let cmd = pipe.cmd("SET").arg(format!("{prefix}{i}")).arg(&value);
            if let Some(px) = px {
                cmd.arg("PX").arg(px);
            }
        }
        let replies: Vec<redis::Value> = pipe.query(c).unwrap_or_default();
        for r in replies {
            if let redis::Value::ServerError(e) = r {
                errors.push(format!("{e:?}"));
            }
        }
        // The pipeline reports the first error as a whole-query error in some client versions.
    }
    errors
}

fn survivors(c: &mut Connection, prefix: &str, n: usize) -> usize {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("EXISTS").arg(format!("{prefix}{i}"));
    }
    let got: Vec<i64> = pipe.query(c).unwrap();
    got.iter().filter(|v| **v == 1).count()
}

fn set_one(c: &mut Connection, key: &str, size: usize) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(key).arg(vec![b'y'; size]).query(c)
}

/// Sets `prefix{i}` to 1 KB values, one at a time, until a write is refused (at most `max`);
/// returns the refusal's text.
fn write_until_refused(c: &mut Connection, prefix: &str, max: usize) -> Option<String> {
    (0..max).find_map(|i| {
        set_one(c, &format!("{prefix}{i}"), 1000)
            .err()
            .map(|e| e.to_string())
    })
}

#[test]
fn noeviction_refuses_writes_with_oom_and_serves_reads() {
    let s = Server::start(&["--maxmemory", "8mb"]);
    let mut c = s.conn();
    set_one(&mut c, "first", 100).unwrap();
    let e = write_until_refused(&mut c, "k", 20_000).expect("writes past 8 MB must be refused");
    assert!(
        e.contains("command not allowed when used memory > 'maxmemory'"),
        "{e}"
    );
    // Reads and deletes still work; nothing was evicted.
    assert_eq!(
        redis::cmd("GET")
            .arg("first")
            .query::<String>(&mut c)
            .unwrap()
            .len(),
        100
    );
    assert_eq!(info_field(&mut c, "evicted_keys"), 0);
    let del: i64 = redis::cmd("DEL")
        .arg("k0")
        .arg("k1")
        .arg("k2")
        .query(&mut c)
        .unwrap();
    assert_eq!(del, 3);
    assert!(info_field(&mut c, "used_memory") <= 8 * 1024 * 1024 + 64 * 1024);
}

#[test]
fn allkeys_policies_stay_inside_the_budget() {
    for policy in ["allkeys-lru", "allkeys-lfu", "allkeys-random"] {
        let s = Server::start(&["--maxmemory", "10mb", "--maxmemory-policy", policy]);
        let mut c = s.conn();
        let errors = write(&mut c, "k", 30_000, 1000, None);
        assert!(errors.is_empty(), "{policy}: {errors:?}");
        let used = info_field(&mut c, "used_memory");
        assert!(
            used <= 10 * 1024 * 1024 + 256 * 1024,
            "{policy}: used_memory {used}"
        );
        assert!(info_field(&mut c, "evicted_keys") > 15_000, "{policy}");
        let keys: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert!(
            (4_000..12_000).contains(&keys),
            "{policy}: {keys} keys of 1 KB in 10 MB"
        );
    }
}

#[test]
fn volatile_policies_only_evict_keys_with_a_ttl() {
    for policy in [
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] {
        let s = Server::start(&["--maxmemory", "10mb", "--maxmemory-policy", policy]);
        let mut c = s.conn();
        assert!(write(&mut c, "keep", 3_000, 1000, None).is_empty());
        let errors = write(&mut c, "vol", 20_000, 1000, Some(3_600_000));
        assert!(errors.is_empty(), "{policy}: {errors:?}");
        assert_eq!(
            survivors(&mut c, "keep", 3_000),
            3_000,
            "{policy} evicted a key without TTL"
        );
        assert!(info_field(&mut c, "evicted_keys") > 0, "{policy}");
        // Once only keys without TTL are left, writes are refused.
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("4mb")
            .query(&mut c)
            .unwrap();
        assert!(
            write_until_refused(&mut c, "more", 5_000).is_some(),
            "{policy}: persistent keys alone over the budget must give OOM"
        );
        assert_eq!(survivors(&mut c, "keep", 3_000), 3_000, "{policy}");
    }
}

#[test]
fn volatile_ttl_evicts_the_soonest_to_expire() {
    let s = Server::start(&["--maxmemory", "10mb", "--maxmemory-policy", "volatile-ttl"]);
    let mut c = s.conn();
    assert!(write(&mut c, "late", 4_000, 1000, Some(7_200_000)).is_empty());
    assert!(write(&mut c, "soon", 4_000, 1000, Some(3_600_000)).is_empty());
    assert!(write(&mut c, "new", 4_000, 1000, Some(9_000_000)).is_empty());
    let (late, soon) = (
        survivors(&mut c, "late", 4_000),
        survivors(&mut c, "soon", 4_000),
    );
    assert!(
        soon < late / 2,
        "soon-to-expire keys go first: soon {soon}, late {late}"
    );
}

#[test]
fn lru_evicts_idle_keys_before_recent_ones() {
    let s = Server::start(&[
        "--maxmemory",
        "12mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--maxmemory-samples",
        "10",
    ]);
    let mut c = s.conn();
    assert!(write(&mut c, "old", 4_000, 1000, None).is_empty());
    // The LRU clock has one-second resolution, as Redis's does: old keys must be at least two
    // ticks older than every new key, however slowly the new ones are written.
    std::thread::sleep(Duration::from_millis(2100));
    assert!(write(&mut c, "new", 8_000, 1000, None).is_empty());
    let (old, new) = (
        survivors(&mut c, "old", 4_000),
        survivors(&mut c, "new", 8_000),
    );
    let evicted = info_field(&mut c, "evicted_keys");
    assert!(evicted > 1_000, "evicted {evicted}");
    // Sampled LRU is an approximation (as Redis's is): nearly all victims are old.
    assert!(
        new > 7_600 && old < 4_000 - evicted as usize * 3 / 4,
        "old kept {old}, new kept {new}, evicted {evicted}"
    );
}

#[test]
fn lfu_keeps_frequently_read_keys() {
    let s = Server::start(&["--maxmemory", "12mb", "--maxmemory-policy", "allkeys-lfu"]);
    let mut c = s.conn();
    assert!(write(&mut c, "hot", 2_000, 1000, None).is_empty());
    for _ in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..2_000 {
            pipe.cmd("GET").arg(format!("hot{i}")).ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    assert!(write(&mut c, "cold", 15_000, 1000, None).is_empty());
    let hot = survivors(&mut c, "hot", 2_000);
    assert!(info_field(&mut c, "evicted_keys") > 5_000);
    assert!(hot > 1_800, "frequently read keys survive: {hot} of 2000");
}

#[test]
fn config_set_policy_and_budget_take_effect_at_once() {
    let s = Server::start(&["--maxmemory", "6mb"]);
    let mut c = s.conn();
    assert!(write_until_refused(&mut c, "k", 10_000).is_some());
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut c)
        .unwrap();
    set_one(&mut c, "after", 1000).expect("allkeys-lru makes room at once");
    assert!(info_field(&mut c, "evicted_keys") > 0);
    // Lowering the budget: the next write (and the background evictor) bring memory under it.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("4mb")
        .query(&mut c)
        .unwrap();
    set_one(&mut c, "after2", 1000).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // used_memory counts everything, this test's own connection buffers included (as Redis's
    // does): allow them.
    while info_field(&mut c, "used_memory") > 4 * 1024 * 1024 + 64 * 1024 {
        assert!(
            Instant::now() < deadline,
            "memory did not come down under the new budget"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn expired_keys_are_reclaimed_before_live_keys_are_evicted() {
    let s = Server::start(&[
        "--maxmemory",
        "12mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--hz",
        "1",
    ]);
    let mut c = s.conn();
    assert!(write(&mut c, "live", 3_000, 1000, None).is_empty());
    assert!(write(&mut c, "short", 5_000, 1000, Some(300)).is_empty());
    std::thread::sleep(Duration::from_millis(400));
    assert!(write(&mut c, "more", 4_000, 1000, None).is_empty());
    assert_eq!(
        info_field(&mut c, "evicted_keys"),
        0,
        "no live key had to go"
    );
    assert!(info_field(&mut c, "expired_keys") > 0);
    assert_eq!(survivors(&mut c, "live", 3_000), 3_000);
    assert_eq!(survivors(&mut c, "more", 4_000), 4_000);
}

#[test]
fn used_memory_tracks_what_the_process_holds() {
    for (size, n) in [
        (3usize, 150_000usize),
        (100, 100_000),
        (1000, 30_000),
        (20_000, 2_000),
    ] {
        let s = Server::start(&[]);
        let mut c = s.conn();
        let (used0, rss0) = (
            info_field(&mut c, "used_memory"),
            info_field(&mut c, "used_memory_rss"),
        );
        assert!(write(&mut c, "k", n, size, None).is_empty());
        let (used1, rss1) = (
            info_field(&mut c, "used_memory"),
            info_field(&mut c, "used_memory_rss"),
        );
        let (du, dr) = ((used1 - used0) as f64, (rss1 - rss0) as f64);
        let dataset = info_field(&mut c, "used_memory_dataset") as f64;
        assert!(
            (du - dr).abs() / dr < 0.10,
            "{size}-byte values: used_memory grew {du}, RSS {dr}"
        );
        assert!(
            (dataset - du).abs() / du < 0.10,
            "{size}-byte values: dataset {dataset}, used_memory grew {du}"
        );
        let usage: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("k1")
            .query(&mut c)
            .unwrap();
        assert!(
            usage as usize > size && (usage as usize) < size + 200,
            "{size}: MEMORY USAGE {usage}"
        );
    }
}
