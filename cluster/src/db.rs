//! Databases (`SELECT n`): a key's database is part of its identity, so it is part of the key.
//!
//! A key `k` of database `n` is stored, replicated, hinted and repaired as one byte string, its
//! *stored form*:
//!
//! - database 0, `k` not starting with `0xFF`: `k` itself (the common case costs nothing);
//! - otherwise: `0xFF`, `n`, then `k`.
//!
//! The mapping is one-to-one (a database-0 key that starts with `0xFF` is escaped as database 0),
//! so every machine keeps treating keys as opaque bytes: the store, the versions, the Merkle
//! trees, hints and the wire protocol need no database field. Only the edges see databases: the
//! connection encodes the keys of a command before it runs, and whatever hands keys back to a
//! client (KEYS, SCAN, RANDOMKEY, notifications, invalidations) decodes them.
//!
//! A key's slot is the slot of `k` (see [`crate::slot::key_slot`]): the same key in every database
//! lives in the same slot, so `MOVE` and `COPY ... DB` stay within one slot, and hash tags mean
//! what they mean in Redis.

use bytes::{BufMut, Bytes, BytesMut};

/// Databases a node can have (`databases` is at most this): a database number is one byte.
pub const MAX_DATABASES: usize = 256;

/// First byte of every stored form that carries its database.
pub const MARK: u8 = 0xFF;

/// Whether `key` of database `db` has a stored form other than itself.
#[inline]
pub fn needs_encoding(db: u8, key: &[u8]) -> bool {
    db != 0 || key.first() == Some(&MARK)
}

/// The stored form of `key` in database `db`.
pub fn encode(db: u8, key: &[u8]) -> Bytes {
    if !needs_encoding(db, key) {
        return Bytes::copy_from_slice(key);
    }
    let mut b = BytesMut::with_capacity(key.len() + 2);
    b.put_u8(MARK);
    b.put_u8(db);
    b.put_slice(key);
    b.freeze()
}

/// The database and the client's key of a stored form.
#[inline]
pub fn split(stored: &[u8]) -> (u8, &[u8]) {
    match stored {
        [MARK, db, key @ ..] => (*db, key),
        _ => (0, stored),
    }
}

/// The client's key of a stored form (without its database).
#[inline]
pub fn user_key(stored: &[u8]) -> &[u8] {
    split(stored).1
}

/// The database of a stored form.
#[inline]
pub fn of(stored: &[u8]) -> u8 {
    split(stored).0
}

/// [`split`]'s key as its own `Bytes`, sharing `stored`'s buffer.
pub fn user_key_bytes(stored: &Bytes) -> Bytes {
    match stored.first() {
        Some(&MARK) if stored.len() >= 2 => stored.slice(2..),
        _ => stored.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_forms_are_one_to_one() {
        let keys: [&[u8]; 6] = [b"", b"a", b"\xff", b"\xff\x01a", b"\xff\xff", b"{tag}x"];
        let mut seen = std::collections::HashSet::new();
        for db in [0u8, 1, 2, 123, 255] {
            for k in keys {
                let s = encode(db, k);
                assert_eq!(split(&s), (db, k), "db {db} key {k:?}");
                assert_eq!(user_key_bytes(&s), k);
                assert!(seen.insert(s.to_vec()), "db {db} key {k:?} collides");
            }
        }
    }

    #[test]
    fn database_zero_costs_nothing_for_ordinary_keys() {
        assert_eq!(&encode(0, b"user:1")[..], b"user:1");
        assert!(!needs_encoding(0, b""));
        assert_eq!(&encode(0, b"\xffx")[..], b"\xff\x00\xffx");
        assert_eq!(&encode(3, b"k")[..], b"\xff\x03k");
    }
}
