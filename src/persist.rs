//! Snapshots to disk for a single node, as Redis takes them: `SAVE`, `BGSAVE`, the `save`
//! schedule, `SHUTDOWN`'s save, `LASTSAVE` and INFO's persistence section, into the RDB file
//! `dir`/`dbfilename` that Redis itself loads ([`crate::rdb`]). A node started with save
//! points loads that file before it serves.
//!
//! Departures, each deliberate:
//! - `save` is empty by default (Redis: `3600 1 300 100 60 10000`): a cache starts empty and
//!   writes nothing unless asked. A node started *without* save points does not load a
//!   `dump.rdb` it finds (Redis always does): turning snapshots on is what says the file is
//!   this node's.
//! - The snapshot is copied with the node's gate held exclusive (no command runs meanwhile:
//!   about 100 ms per 500,000 keys, docs/benchmarks.md), then written by another thread;
//!   Redis forks.
//! - A cluster has neither: its replicas are its durability, and a node that loaded an old
//!   file would bring back keys the cluster deleted since. `SAVE`/`BGSAVE` are refused there,
//!   and so are save points.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hypercache_cluster::op::{ExpiryChange, SetCond};
use hypercache_cluster::{db, Ctx, Op};

use crate::state::{now_ms, Shared};

/// After a failed background save, the schedule waits this long before the next try (Redis's
/// `CONFIG_BGSAVE_RETRY_DELAY`).
const RETRY_AFTER_MS: u64 = 5_000;

/// What the node knows of its snapshots.
#[derive(Debug)]
pub struct Persist {
    /// `LASTSAVE`: unix seconds of the last successful save (the start, before one).
    last_save_s: AtomicU64,
    /// The store's change count when the last successful save's snapshot was taken.
    changes_at_save: AtomicU64,
    /// A background save is writing.
    in_progress: AtomicBool,
    /// The last background save succeeded (`rdb_last_bgsave_status`).
    last_ok: AtomicBool,
    /// When (unix ms) the last save was tried.
    last_try_ms: AtomicU64,
    /// Seconds the last background save took (-1: none yet).
    last_bgsave_secs: AtomicI64,
    /// Successful saves (`rdb_saves`).
    saves: AtomicU64,
}

impl Default for Persist {
    fn default() -> Self {
        Persist {
            last_save_s: AtomicU64::new(now_ms() / 1000),
            changes_at_save: AtomicU64::new(0),
            in_progress: AtomicBool::new(false),
            last_ok: AtomicBool::new(true),
            last_try_ms: AtomicU64::new(0),
            last_bgsave_secs: AtomicI64::new(-1),
            saves: AtomicU64::new(0),
        }
    }
}

/// What a client asked for ([`crate::session::Session::save_ready`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveAsk {
    /// `SAVE`: write now, reply when written.
    Save,
    /// `BGSAVE` (already answered): snapshot now, write in the background.
    Background,
    /// `SHUTDOWN` that saves first (`force`: stop even if the save fails).
    Shutdown {
        /// `SHUTDOWN ... FORCE`.
        force: bool,
    },
}

/// Parses `save`'s value: pairs of seconds and changes (`""`: none). Redis's error otherwise.
pub fn parse_points(text: &str) -> Result<Vec<(u64, u64)>, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.len().is_multiple_of(2) {
        return Err("Invalid save parameters".into());
    }
    words
        .chunks(2)
        .map(|p| match (p[0].parse::<u64>(), p[1].parse::<u64>()) {
            (Ok(s), Ok(c)) => Ok((s, c)),
            _ => Err("Invalid save parameters".into()),
        })
        .collect()
}

/// `save` as CONFIG GET shows it (`3600 1 300 100`).
pub fn render_points(points: &[(u64, u64)]) -> String {
    points
        .iter()
        .map(|(s, c)| format!("{s} {c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The snapshot file: `dir`/`dbfilename`.
pub fn path(shared: &Shared) -> PathBuf {
    let c = shared.config.read();
    PathBuf::from(&c.dir).join(&c.dbfilename)
}

impl Persist {
    /// `LASTSAVE`.
    pub fn last_save(&self) -> u64 {
        self.last_save_s.load(Ordering::Relaxed)
    }

    /// Successful saves.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    /// Whether the last save succeeded.
    pub fn last_ok(&self) -> bool {
        self.last_ok.load(Ordering::Relaxed)
    }

    /// Changes since the last successful save's snapshot.
    pub fn changes_since_save(&self, shared: &Shared) -> u64 {
        shared
            .store
            .changes()
            .saturating_sub(self.changes_at_save.load(Ordering::Relaxed))
    }

    /// Whether a background save is writing.
    pub fn in_progress(&self) -> bool {
        self.in_progress.load(Ordering::Acquire)
    }

    /// INFO's persistence fields.
    pub fn info(&self, shared: &Shared) -> Vec<(&'static str, String)> {
        let changes = self.changes_since_save(shared);
        vec![
            ("loading", "0".into()),
            ("rdb_changes_since_last_save", changes.to_string()),
            (
                "rdb_bgsave_in_progress",
                u8::from(self.in_progress()).to_string(),
            ),
            ("rdb_last_save_time", self.last_save().to_string()),
            (
                "rdb_last_bgsave_status",
                if self.last_ok.load(Ordering::Relaxed) {
                    "ok"
                } else {
                    "err"
                }
                .into(),
            ),
            (
                "rdb_last_bgsave_time_sec",
                self.last_bgsave_secs.load(Ordering::Relaxed).to_string(),
            ),
            ("rdb_saves", self.saves.load(Ordering::Relaxed).to_string()),
            ("aof_enabled", "0".into()),
        ]
    }

    /// Whether a save point is due: some `(seconds, changes)` with at least that many changes
    /// and that many seconds since the last save (after a failure, not before 5 s).
    pub fn due(&self, shared: &Shared) -> bool {
        let points = shared.config.read().save_points.clone();
        if points.is_empty() || self.in_progress() || shared.cluster.is_some() {
            return false;
        }
        let now = now_ms();
        if !self.last_ok.load(Ordering::Relaxed)
            && now.saturating_sub(self.last_try_ms.load(Ordering::Relaxed)) < RETRY_AFTER_MS
        {
            return false;
        }
        let changes = self.changes_since_save(shared);
        let elapsed = (now / 1000).saturating_sub(self.last_save());
        points
            .iter()
            .any(|&(secs, n)| changes >= n && elapsed >= secs)
    }
}

/// Copies the node into an RDB file image. Call with the node's gate held exclusive. Returns
/// the image and the change count it holds.
pub fn snapshot(shared: &Shared) -> (Vec<u8>, u64) {
    let changes = shared.store.changes();
    let offset = shared.repl.lock().offset();
    (
        crate::repl::snapshot(shared, shared.repl.replid(), offset),
        changes,
    )
}

/// Writes `image` to the snapshot file (a temporary file, synced, then renamed over it) and
/// records the outcome. Blocking: call off the runtime's workers, or in `block_in_place`.
pub fn write(shared: &Shared, image: &[u8], changes: u64, background: bool) -> Result<(), String> {
    let p = &shared.persist;
    let started = Instant::now();
    p.last_try_ms.store(now_ms(), Ordering::Relaxed);
    let path = path(shared);
    let r = write_file(&path, image);
    match &r {
        Ok(()) => {
            p.last_save_s.store(now_ms() / 1000, Ordering::Relaxed);
            p.changes_at_save.store(changes, Ordering::Relaxed);
            p.saves.fetch_add(1, Ordering::Relaxed);
            p.last_ok.store(true, Ordering::Relaxed);
            tracing::info!(node_id = %shared.node_id, component = "persist", path = %path.display(), bytes = image.len(), ms = started.elapsed().as_millis() as u64, background, "snapshot saved");
        }
        Err(e) => {
            p.last_ok.store(false, Ordering::Relaxed);
            tracing::error!(node_id = %shared.node_id, component = "persist", path = %path.display(), error = %e, background, "snapshot not saved");
        }
    }
    if background {
        p.last_bgsave_secs
            .store(started.elapsed().as_secs() as i64, Ordering::Relaxed);
    }
    r
}

fn write_file(path: &std::path::Path, image: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let tmp = dir.join(format!("temp-{}.rdb", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(image)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts a background save now (the schedule's, or `BGSAVE`'s): the snapshot is taken with
/// the gate held exclusive, the file written on a blocking thread. False if one is running.
pub async fn background(shared: &Arc<Shared>) -> bool {
    if shared.persist.in_progress.swap(true, Ordering::AcqRel) {
        return false;
    }
    let (image, changes) = {
        let _exclusive = shared.exclusive.exclusive().await;
        snapshot(shared)
    };
    let sh = shared.clone();
    tokio::task::spawn_blocking(move || {
        let _ = write(&sh, &image, changes, true);
        sh.persist.in_progress.store(false, Ordering::Release);
    });
    true
}

/// `key-load-delay` while a snapshot loads: the delay owed after each key, slept a
/// millisecond or more at a time (the timer's grain).
pub struct Pacer {
    per_key_us: u64,
    owed_us: u64,
}

impl Pacer {
    /// The pace `key-load-delay` sets now.
    pub fn new(shared: &Shared) -> Pacer {
        Pacer {
            per_key_us: u64::try_from(shared.config.read().key_load_delay).unwrap_or(0),
            owed_us: 0,
        }
    }

    /// After one key.
    pub async fn key(&mut self) {
        if self.per_key_us == 0 {
            return;
        }
        self.owed_us += self.per_key_us;
        if self.owed_us >= 1000 {
            tokio::time::sleep(std::time::Duration::from_micros(self.owed_us)).await;
            self.owed_us = 0;
        }
    }
}

/// At start, with save points configured on a single node: loads the snapshot file if there is
/// one (its strings with their expiry, skipping those already expired, and its function
/// libraries). A file that cannot be read stops the start, as in Redis: starting empty would
/// overwrite it at the next save.
pub async fn load_at_start(shared: &Arc<Shared>) -> Result<(), String> {
    if shared.cluster.is_some() || shared.config.read().save_points.is_empty() {
        return Ok(());
    }
    let path = path(shared);
    let image = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let started = Instant::now();
    let mut items = Vec::new();
    crate::rdb::parse(&image, |i| items.push(i)).map_err(|e| format!("{}: {e}", path.display()))?;
    let now = now_ms();
    let ctx = Ctx::at(now);
    let databases = shared.config.read().databases;
    let (mut keys, mut skipped, mut expired) = (0u64, 0u64, 0u64);
    let mut libraries = Vec::new();
    let mut pacer = Pacer::new(shared);
    for item in items {
        pacer.key().await;
        match item {
            crate::rdb::Item::Key {
                db: d,
                key,
                value,
                expire_at,
            } => {
                if u64::from(d) >= databases {
                    skipped += 1;
                    continue;
                }
                if expire_at.is_some_and(|t| t <= now) {
                    expired += 1;
                    continue;
                }
                let stored = db::encode(shared.dbs.physical(d as u8), &key);
                let op = Op::Set {
                    value: &value,
                    cond: SetCond::Always,
                    expiry: expire_at.map_or(ExpiryChange::Clear, ExpiryChange::At),
                    get: false,
                };
                shared.store.apply(&stored, &op, &ctx);
                keys += 1;
            }
            crate::rdb::Item::Skipped { .. } => skipped += 1,
            crate::rdb::Item::Library(code) => libraries.push(code),
        }
    }
    for code in libraries {
        let job = crate::script::Job::Function(vec![
            Bytes::from_static(b"FUNCTION"),
            Bytes::from_static(b"LOAD"),
            Bytes::from_static(b"REPLACE"),
            code,
        ]);
        let (sh, rt) = (shared.clone(), tokio::runtime::Handle::current());
        let reply = tokio::task::spawn_blocking(move || {
            crate::script::Scripts::run_job(&sh, job, (None, None), &rt, false).0
        })
        .await
        .map_err(|e| e.to_string())?;
        if let hypercache_resp::Frame::Error(e) = reply {
            return Err(format!(
                "{}: a function library does not load: {}",
                path.display(),
                String::from_utf8_lossy(&e)
            ));
        }
    }
    shared
        .persist
        .changes_at_save
        .store(shared.store.changes(), Ordering::Relaxed);
    tracing::info!(node_id = %shared.node_id, component = "persist", path = %path.display(), keys, expired, skipped, ms = started.elapsed().as_millis() as u64, "snapshot loaded");
    Ok(())
}
