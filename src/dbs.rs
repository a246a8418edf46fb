//! Databases on the connection's side (`SELECT`, `SWAPDB`, `MOVE`): which database a command
//! runs in, and its keys in their stored form ([`hypercache_cluster::db`]).
//!
//! A session names a *logical* database (what `SELECT` chose). Keys are stored under a
//! *physical* one: the same number until `SWAPDB` swaps two of them, which swaps their entries in
//! [`DbMap`] and touches no key (O(1), as in Redis). `SWAPDB` is refused in a cluster, where the
//! map would have to change on every node at once: there physical and logical are always the
//! same.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use hypercache_cluster::db;
use hypercache_resp::table::CommandSpec;
use parking_lot::Mutex;

/// Logical database -> physical database, and back.
pub struct DbMap {
    physical: [AtomicU8; db::MAX_DATABASES],
    logical: [AtomicU8; db::MAX_DATABASES],
    swapping: Mutex<()>,
}

impl Default for DbMap {
    fn default() -> Self {
        DbMap {
            physical: std::array::from_fn(|i| AtomicU8::new(i as u8)),
            logical: std::array::from_fn(|i| AtomicU8::new(i as u8)),
            swapping: Mutex::new(()),
        }
    }
}

impl DbMap {
    /// Where the keys of logical database `db` are stored.
    #[inline]
    pub fn physical(&self, db: u8) -> u8 {
        self.physical[usize::from(db)].load(Ordering::Acquire)
    }

    /// Which logical database the keys stored under `physical` belong to.
    #[inline]
    pub fn logical(&self, physical: u8) -> u8 {
        self.logical[usize::from(physical)].load(Ordering::Acquire)
    }

    /// `SWAPDB a b`: from now on each name the other's keys.
    pub fn swap(&self, a: u8, b: u8) {
        let _one_at_a_time = self.swapping.lock();
        let (pa, pb) = (self.physical(a), self.physical(b));
        self.physical[usize::from(a)].store(pb, Ordering::Release);
        self.physical[usize::from(b)].store(pa, Ordering::Release);
        self.logical[usize::from(pb)].store(a, Ordering::Release);
        self.logical[usize::from(pa)].store(b, Ordering::Release);
    }
}

/// The arguments of a command run in physical database `db`, with its keys in their stored
/// form; `None` when every key is stored as written (database 0, no key starting with `0xFF`:
/// checked without looking up the key positions, so the common case allocates nothing).
///
/// Scripts (`EVAL`, `FCALL`, ...) keep their keys as written: a script sees `KEYS` as the client
/// sent them, and each command it calls is encoded when it runs.
pub fn stored_args(db: u8, spec: &CommandSpec, args: &[Bytes]) -> Option<Vec<Bytes>> {
    if db == 0 && !args[1..].iter().any(|a| a.first() == Some(&db::MARK)) {
        return None;
    }
    if spec.first_key <= 0 || spec.has_flag("movablekeys") {
        return None;
    }
    let positions = spec.key_positions(args);
    if positions.iter().all(|&i| !db::needs_encoding(db, &args[i])) {
        return None;
    }
    let mut out = args.to_vec();
    for i in positions {
        out[i] = db::encode(db, &args[i]);
    }
    Some(out)
}

/// The client's name of a key stored as `stored`, and the logical database it is in.
pub fn client_key<'k>(map: &DbMap, stored: &'k [u8]) -> (u8, &'k [u8]) {
    let (physical, key) = db::split(stored);
    (map.logical(physical), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapping_twice_restores_the_map() {
        let m = DbMap::default();
        m.swap(0, 3);
        assert_eq!(
            (m.physical(0), m.physical(3), m.logical(0), m.logical(3)),
            (3, 0, 3, 0)
        );
        m.swap(3, 5);
        assert_eq!((m.physical(3), m.physical(5)), (5, 0));
        assert_eq!((m.logical(5), m.logical(0)), (3, 5));
        m.swap(3, 5);
        m.swap(0, 3);
        for d in 0..=255u8 {
            assert_eq!((m.physical(d), m.logical(d)), (d, d));
        }
    }

    #[test]
    fn keys_are_encoded_only_where_the_spec_puts_them() {
        let spec = |name: &str| hypercache_resp::table::lookup(name.as_bytes()).unwrap();
        let args = |v: &[&str]| -> Vec<Bytes> {
            v.iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect()
        };
        assert_eq!(stored_args(0, spec("set"), &args(&["SET", "k", "v"])), None);
        let mset = stored_args(2, spec("mset"), &args(&["MSET", "a", "1", "b", "2"])).unwrap();
        assert_eq!(
            mset,
            args(&["MSET", "\u{0}", "1", "\u{0}", "2"])
                .iter()
                .enumerate()
                .map(|(i, a)| match i {
                    1 => db::encode(2, b"a"),
                    3 => db::encode(2, b"b"),
                    _ => a.clone(),
                })
                .collect::<Vec<_>>()
        );
        // A value that starts with 0xFF is not a key.
        let v = vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k"),
            Bytes::from_static(b"\xffv"),
        ];
        assert_eq!(stored_args(0, spec("set"), &v), None);
        // Scripts see their keys as written.
        assert_eq!(
            stored_args(1, spec("eval"), &args(&["EVAL", "return 1", "1", "k"])),
            None
        );
    }
}
