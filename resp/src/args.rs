//! Splitting a text line into arguments exactly as Redis's `sdssplitargs` does: the inline protocol
//! and `redis-cli` both use it.

/// Why a line could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A quoted argument was not closed, or its closing quote was followed by something other than
    /// white space.
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
}

fn is_space(b: u8) -> bool {
    // C's isspace in the "C" locale.
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` into arguments. A NUL byte ends the line, as it does for Redis (C strings).
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(n) => &line[..n],
        None => line,
    };
    let mut out = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let mut inq = false; // inside "double quotes"
        let mut insq = false; // inside 'single quotes'
        loop {
            let c = line.get(p).copied();
            if inq {
                match c {
                    None => return Err(SplitError::UnbalancedQuotes),
                    Some(b'\\') if p + 3 < line.len() && line[p + 1] == b'x' => {
                        match (hex_val(line[p + 2]), hex_val(line[p + 3])) {
                            (Some(h), Some(l)) => {
                                cur.push(h * 16 + l);
                                p += 3;
                            }
                            _ => {
                                // Not a valid \xHH: the backslash escapes the 'x'.
                                cur.push(b'x');
                                p += 1;
                            }
                        }
                    }
                    Some(b'\\') if p + 1 < line.len() => {
                        p += 1;
                        cur.push(match line[p] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // Closing quote must be followed by a space or nothing at all.
                        if p + 1 < line.len() && !is_space(line[p + 1]) {
                            return Err(SplitError::UnbalancedQuotes);
                        }
                        p += 1;
                        break;
                    }
                    Some(other) => cur.push(other),
                }
            } else if insq {
                match c {
                    None => return Err(SplitError::UnbalancedQuotes),
                    Some(b'\\') if p + 1 < line.len() && line[p + 1] == b'\'' => {
                        p += 1;
                        cur.push(b'\'');
                    }
                    Some(b'\'') => {
                        if p + 1 < line.len() && !is_space(line[p + 1]) {
                            return Err(SplitError::UnbalancedQuotes);
                        }
                        p += 1;
                        break;
                    }
                    Some(other) => cur.push(other),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t' | 0) => break,
                    Some(b'"') => inq = true,
                    Some(b'\'') => insq = true,
                    Some(other) => cur.push(other),
                }
            }
            p += 1;
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Vec<String> {
        split_args(line.as_bytes())
            .unwrap()
            .into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn splits_like_sdssplitargs() {
        assert_eq!(s("SET a b"), ["SET", "a", "b"]);
        assert_eq!(s("  SET   \"a b\"  'c d' "), ["SET", "a b", "c d"]);
        assert_eq!(s(r#"SET "\x41\x4a\n" 'it\'s'"#), ["SET", "AJ\n", "it's"]);
        assert_eq!(s(r#"a"b c""#), ["ab c"]);
        assert_eq!(s(r#""\xZZ""#), ["xZZ"]);
    }

    #[test]
    fn quotes_must_close_and_be_followed_by_space() {
        assert_eq!(split_args(b"SET \"a b"), Err(SplitError::UnbalancedQuotes));
        assert_eq!(split_args(b"SET \"a\"b"), Err(SplitError::UnbalancedQuotes));
        assert_eq!(split_args(b"SET 'a"), Err(SplitError::UnbalancedQuotes));
        assert_eq!(split_args(b""), Ok(vec![]));
        assert_eq!(split_args(b"   "), Ok(vec![]));
    }
}
