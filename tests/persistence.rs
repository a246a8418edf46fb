//! Snapshots to disk on a single node (`SAVE`, `BGSAVE`, `save` points, `SHUTDOWN`): the file
//! is Redis's own format (a redis-server loads it, and a node loads a redis-server's), a node
//! started with save points loads it back, and one started without ignores it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use redis::Commands;

fn info_field(c: &mut redis::Connection, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{info}"))
        .trim()
        .to_string()
}

/// A node with save points, its snapshot directory `dir`.
fn saving_node(dir: &std::path::Path, points: &str) -> Server {
    Server::start(&["--save", points, "--dir", dir.to_str().unwrap()])
}

/// A redis-server whose snapshot file is `dir`/dump.rdb (loaded at start if there).
fn redis_in(dir: &std::path::Path) -> Server {
    common::start("redis-server", |port| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir.to_str().unwrap(), "--dbfilename", "dump.rdb"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    })
}

/// A node's data: strings in two databases with expiry times, and a function library.
fn fill(c: &mut redis::Connection) {
    let _: () = c.set("plain", "v").unwrap();
    let _: () = c.set("n", 42).unwrap();
    let _: () = c.set_ex("ttl", "soon-ish", 1000).unwrap();
    let _: () = c.set("bin", b"a\x00\r\nb".to_vec()).unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(c).unwrap();
    let _: () = c.set("in3", "three").unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=keep\nredis.register_function('kept', function() return 7 end)")
        .query(c)
        .unwrap();
}

/// What `fill` wrote, as seen through `c` (a node or a redis-server).
fn check_filled(c: &mut redis::Connection, what: &str) {
    let v: String = c.get("plain").unwrap();
    assert_eq!(v, "v", "{what}");
    let n: i64 = c.get("n").unwrap();
    assert_eq!(n, 42, "{what}");
    let ttl: i64 = c.ttl("ttl").unwrap();
    assert!((900..=1000).contains(&ttl), "{what}: ttl {ttl}");
    let b: Vec<u8> = c.get("bin").unwrap();
    assert_eq!(b, b"a\x00\r\nb", "{what}");
    let _: () = redis::cmd("SELECT").arg(3).query(c).unwrap();
    let v: String = c.get("in3").unwrap();
    assert_eq!(v, "three", "{what}");
    let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    let r: i64 = redis::cmd("FCALL").arg("kept").arg(0).query(c).unwrap();
    assert_eq!(r, 7, "{what}");
}

/// SAVE writes the file; a node started again with save points loads it (keys, expiry times,
/// databases, functions), and so does a redis-server; SHUTDOWN saves first; a node started
/// without save points starts empty even with the file there.
#[test]
fn a_saved_node_restarts_with_its_data_and_redis_reads_the_file() {
    let dir = common::scratch_dir(common::free_port());
    let mut node = saving_node(&dir, "3600 1");
    let mut c = node.conn();
    fill(&mut c);
    let before: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    assert_ne!(info_field(&mut c, "rdb_changes_since_last_save"), "0");
    let ok: String = redis::cmd("SAVE").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(info_field(&mut c, "rdb_changes_since_last_save"), "0");
    assert_eq!(info_field(&mut c, "rdb_saves"), "1");
    let after: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    assert!(after >= before);
    assert!(dir.join("dump.rdb").exists());

    // One more write, saved by SHUTDOWN (save points are set).
    let _: () = c.set("late", "1").unwrap();
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut c);
    assert!(
        node.wait_exit(Duration::from_secs(10)),
        "SHUTDOWN stops the node"
    );

    let node = saving_node(&dir, "3600 1");
    let mut c = node.conn();
    check_filled(&mut c, "the node, restarted");
    let v: String = c.get("late").unwrap();
    assert_eq!(v, "1", "SHUTDOWN saved first");
    drop(node);

    // Redis's own loader reads the file.
    let redis = redis_in(&dir);
    let mut r = redis.conn();
    check_filled(&mut r, "redis-server, loading the node's file");

    // Without save points the file is not this node's business.
    let node = Server::start(&["--dir", dir.to_str().unwrap()]);
    let mut c = node.conn();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 0);
}

/// A save point reached (`save 1 1`: a second and a change) snapshots in the background;
/// BGSAVE answers at once and the file follows.
#[test]
fn save_points_and_bgsave_write_in_the_background() {
    let dir = common::scratch_dir(common::free_port());
    let node = saving_node(&dir, "1 1");
    let mut c = node.conn();
    let _: () = c.set("k", "v").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while info_field(&mut c, "rdb_saves") == "0" {
        assert!(Instant::now() < deadline, "the save point never fired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(info_field(&mut c, "rdb_last_bgsave_status"), "ok");
    assert_eq!(info_field(&mut c, "rdb_changes_since_last_save"), "0");
    let _: () = c.set("k2", "v").unwrap();
    let r: String = redis::cmd("BGSAVE").query(&mut c).unwrap();
    assert_eq!(r, "Background saving started");
    let deadline = Instant::now() + Duration::from_secs(15);
    while info_field(&mut c, "rdb_saves") == "1" {
        assert!(Instant::now() < deadline, "BGSAVE never wrote");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A directory that cannot be written: the save fails, visibly.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("dir")
        .arg("/proc")
        .query(&mut c)
        .unwrap();
    let e = redis::cmd("SAVE").query::<String>(&mut c).unwrap_err();
    assert_eq!(e.code(), Some("ERR"), "{e}");
    assert_eq!(info_field(&mut c, "rdb_last_bgsave_status"), "err");
}

/// A node with save points loads a redis-server's dump: its strings (with their expiry) and
/// functions; its other types are passed over.
#[test]
fn a_node_loads_a_redis_dump() {
    let dir = common::scratch_dir(common::free_port());
    {
        let redis = redis_in(&dir);
        let mut r = redis.conn();
        fill(&mut r);
        let _: i64 = redis::cmd("RPUSH")
            .arg("list")
            .arg("x")
            .query(&mut r)
            .unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg("h")
            .arg("f")
            .arg("v")
            .query(&mut r)
            .unwrap();
        // A long compressible value: Redis writes it LZF-compressed.
        let _: () = r.set("long", "ab".repeat(500)).unwrap();
        let ok: String = redis::cmd("SAVE").query(&mut r).unwrap();
        assert_eq!(ok, "OK");
    }
    let node = saving_node(&dir, "3600 1");
    let mut c = node.conn();
    check_filled(&mut c, "the node, loading redis-server's file");
    let long: String = c.get("long").unwrap();
    assert_eq!(long, "ab".repeat(500));
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 5, "plain, n, ttl, bin, long (list and hash passed over)");
}

/// A file that is not a snapshot stops the start (starting empty would overwrite it at the
/// next save), with the reason in the log.
#[test]
fn a_damaged_snapshot_stops_the_start() {
    let dir = common::scratch_dir(common::free_port());
    std::fs::write(dir.join("dump.rdb"), b"REDIS0010\xfa garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hypercache"))
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &common::free_port().to_string(),
        ])
        .args(["--http-port", "0", "--save", "3600 1"])
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cannot load the snapshot file"), "{log}");
}
