//! Redis's glob matcher (`stringmatchlen` in util.c), ported byte for byte: `*`, `?`, `[abc]`,
//! `[^a]`, `[a-z]`, and `\` escapes, with the same treatment of malformed patterns and the same
//! protection against patterns that would take exponential time.

/// Whether `string` matches `pattern`.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, &mut skip_longer, 0)
}

fn match_impl(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > 1000 {
        return false;
    }
    // C reads the pattern as a NUL-terminated string; `at` reproduces that.
    let at = |p: &[u8], i: usize| p.get(i).copied().unwrap_or(0);
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_impl(&p[1..], s, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let not = at(p, 0) == b'^';
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                let mut unterminated = false;
                loop {
                    if at(p, 0) == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        if p[0] == s[0] {
                            matched = true;
                        }
                    } else if at(p, 0) == b']' && !p.is_empty() {
                        break;
                    } else if p.is_empty() {
                        unterminated = true;
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        // C compares plain (signed) chars.
                        let (mut start, mut end) = (p[0] as i8, p[2] as i8);
                        let c = s[0] as i8;
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p = &p[2..];
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if p[0] == s[0] {
                        matched = true;
                    }
                    p = &p[1..];
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                if unterminated {
                    // C stepped back one byte and its common `pattern++` steps forward again onto
                    // the terminator: the pattern is exhausted, so only an exhausted string matches.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if p[0] != s[0] {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if c != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while !p.is_empty() && p[0] == b'*' {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_examples() {
        for (p, s, m) in [
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "hllo", true),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hello", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hbllo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("*", "", false), // as in Redis; KEYS and SCAN special-case a lone "*"
            ("", "", true),
            ("a*", "a", true),
            ("a**b", "ab", true),
            ("[abc", "a", true),
            ("[abc", "ab", false),
            ("\\", "\\", true),
            ("a\\", "a\\", true),
        ] {
            assert_eq!(matches(p.as_bytes(), s.as_bytes()), m, "{p} vs {s}");
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let p = "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".as_bytes();
        let s = vec![b'a'; 5000];
        assert!(!matches(p, &s));
    }
}
