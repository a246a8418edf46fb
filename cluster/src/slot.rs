//! Key -> slot: CRC16 (XMODEM) of the key, or of its `{hash tag}`, modulo 16384, exactly as Redis
//! Cluster computes it, so cluster-aware clients route the same way.

/// Number of slots.
pub const SLOTS: usize = 16384;

/// A slot number, `0..16384`.
pub type Slot = u16;

static CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut j = 0;
        while j < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            j += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC16-CCITT (XMODEM), Redis Cluster's checksum.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The slot of a stored key (see [`crate::db`]): the slot of the client's key, without its
/// database, so that a key has the same slot in every database.
#[inline]
pub fn key_slot(stored: &[u8]) -> Slot {
    redis_slot(crate::db::user_key(stored))
}

/// The slot of a client's key, as Redis Cluster computes it: if the key has a non-empty `{...}`
/// section, only that part is hashed.
pub fn redis_slot(key: &[u8]) -> Slot {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & (SLOTS as u16 - 1)
}

/// A set of slots, safe to read and change from any thread (a bit per slot).
#[derive(Debug)]
pub struct SlotSet {
    bits: Box<[std::sync::atomic::AtomicU64]>,
    len: std::sync::atomic::AtomicUsize,
}

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet {
            bits: (0..SLOTS / 64)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            len: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl SlotSet {
    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: Slot) -> bool {
        let i = usize::from(slot) % SLOTS;
        self.bits[i / 64].load(std::sync::atomic::Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Adds (`on`) or removes `slot`.
    pub fn set(&self, slot: Slot, on: bool) {
        use std::sync::atomic::Ordering;
        let i = usize::from(slot) % SLOTS;
        let bit = 1u64 << (i % 64);
        let before = if on {
            self.bits[i / 64].fetch_or(bit, Ordering::AcqRel)
        } else {
            self.bits[i / 64].fetch_and(!bit, Ordering::AcqRel)
        };
        match (before & bit != 0, on) {
            (false, true) => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// How many slots are in the set.
    pub fn len(&self) -> usize {
        self.len.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster() {
        // Values from Redis Cluster's spec and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b""), 0);
    }
}
