//! `LCS`: the longest common subsequence of two strings, Redis 7.0's dynamic programming and its
//! walk back through the table (which decides which of several equally long answers, and which
//! match ranges, a client gets).

/// One match range of `LCS ... IDX`: inclusive byte ranges in the first and second string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// `[start, end]` in the first string.
    pub a: (u32, u32),
    /// `[start, end]` in the second string.
    pub b: (u32, u32),
}

impl Match {
    /// The match's length.
    pub fn len(&self) -> u32 {
        self.a.1 - self.a.0 + 1
    }

    /// Whether the match is empty (never: a match has at least one byte).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The table's size in bytes for strings of these lengths (Redis refuses more than
/// `proto-max-bulk-len`).
pub fn table_bytes(a: usize, b: usize) -> u64 {
    (a as u64 + 1) * (b as u64 + 1) * 4
}

/// What `LCS` computes: the subsequence, its length, and its match ranges from the end of the
/// strings backwards (only those at least `min_len` long; 0: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lcs {
    /// The common subsequence.
    pub seq: Vec<u8>,
    /// Its length.
    pub len: u32,
    /// The match ranges, last first, as Redis lists them.
    pub matches: Vec<Match>,
}

/// Computes the LCS of `a` and `b` as Redis does. The caller has checked [`table_bytes`].
pub fn lcs(a: &[u8], b: &[u8], min_len: u64) -> Lcs {
    let (alen, blen) = (a.len(), b.len());
    let w = blen + 1;
    let mut t = vec![0u32; (alen + 1) * w];
    for i in 1..=alen {
        for j in 1..=blen {
            t[i * w + j] = if a[i - 1] == b[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    let len = t[alen * w + blen];
    let mut seq = vec![0u8; len as usize];
    let mut idx = len as usize;
    let mut matches = Vec::new();
    // `open`: the current range, as (a_start, a_end, b_start, b_end).
    let mut open: Option<(usize, usize, usize, usize)> = None;
    let (mut i, mut j) = (alen, blen);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            seq[idx - 1] = a[i - 1];
            match &mut open {
                None => open = Some((i - 1, i - 1, j - 1, j - 1)),
                Some(r) if r.0 == i && r.2 == j => {
                    r.0 -= 1;
                    r.2 -= 1;
                }
                Some(_) => emit = true,
            }
            if open.is_some_and(|r| r.0 == 0 || r.2 == 0) {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if t[(i - 1) * w + j] > t[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = open.is_some();
        }
        if emit {
            if let Some((a0, a1, b0, b1)) = open.take() {
                let m = Match {
                    a: (a0 as u32, a1 as u32),
                    b: (b0 as u32, b1 as u32),
                };
                if min_len == 0 || u64::from(m.len()) >= min_len {
                    matches.push(m);
                }
            }
        }
    }
    Lcs { seq, len, matches }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_documentation_example() {
        let r = lcs(b"ohmytext", b"mynewtext", 0);
        assert_eq!(r.seq, b"mytext");
        assert_eq!(r.len, 6);
        assert_eq!(
            r.matches,
            vec![
                Match {
                    a: (4, 7),
                    b: (5, 8)
                },
                Match {
                    a: (2, 3),
                    b: (0, 1)
                }
            ]
        );
        assert_eq!(lcs(b"ohmytext", b"mynewtext", 4).matches.len(), 1);
        assert_eq!(lcs(b"", b"abc", 0).len, 0);
    }
}
