//! The list of known differences: deliberate departures from Redis that do not fail a run.
//!
//! The list is a markdown file. Every line of the form
//!
//! ```text
//! - `<file>:<case>` — reason          (the whole case)
//! - `<file>:<case>:<step>` — reason   (one step, numbered from 1 within the case)
//! ```
//!
//! is an entry; every other line (headers, prose, fenced code blocks) is ignored. `<file>` may omit
//! the `.txt`. The separator before the reason may be `—`, `–`, `-` or `:`; the reason is required.

use std::path::Path;

use crate::{Case, CompatError};

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEntry {
    /// The corpus file as written in the entry (with or without `.txt`).
    pub file: String,
    /// The case name.
    pub case: String,
    /// The 1-based step, or `None` for the whole case.
    pub step: Option<usize>,
    /// Why the difference is accepted.
    pub reason: String,
    /// 1-based line number in the list, for messages.
    pub line: usize,
}

impl KnownEntry {
    /// Whether the entry names case `case` of corpus file `file` (a full file name).
    pub fn names_case(&self, file: &str, case: &str) -> bool {
        self.case == case
            && (self.file == file || file.strip_suffix(".txt") == Some(self.file.as_str()))
    }

    /// Whether the entry covers step `step` (1-based) of case `case` of `file`.
    pub fn covers(&self, file: &str, case: &str, step: usize) -> bool {
        self.names_case(file, case) && (self.step.is_none() || self.step == Some(step))
    }

    /// Whether the entry names `case`, and a step the case has.
    pub fn names(&self, case: &Case) -> bool {
        let step_exists = match self.step {
            None => true,
            Some(s) => s <= case.steps.len(),
        };
        self.names_case(&case.file, &case.name) && step_exists
    }

    /// The entry's key as written between the backticks.
    pub fn key(&self) -> String {
        match self.step {
            Some(s) => format!("{}:{}:{s}", self.file, self.case),
            None => format!("{}:{}", self.file, self.case),
        }
    }
}

/// The parsed list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownDifferences {
    /// The entries, in file order.
    pub entries: Vec<KnownEntry>,
}

impl KnownDifferences {
    /// Reads and parses the list at `path`.
    pub fn load(path: &Path) -> Result<KnownDifferences, CompatError> {
        let text = std::fs::read_to_string(path).map_err(|source| CompatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        KnownDifferences::parse(&text)
    }

    /// Parses the markdown text of a list. A line that starts like an entry (``- ` ``) but is not
    /// a well-formed one is an error, so a typo cannot silently drop an entry.
    pub fn parse(text: &str) -> Result<KnownDifferences, CompatError> {
        let mut entries: Vec<KnownEntry> = Vec::new();
        let mut in_fence = false;
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let s = raw.trim();
            if s.starts_with("```") {
                in_fence = !in_fence;
                continue;
            }
            let Some(body) = s.strip_prefix("- `").filter(|_| !in_fence) else {
                continue;
            };
            let entry =
                parse_entry(body, line).map_err(|message| CompatError::Known { line, message })?;
            if let Some(dup) = entries.iter().find(|e| e.key() == entry.key()) {
                return Err(CompatError::Known {
                    line,
                    message: format!("`{}` is already listed on line {}", entry.key(), dup.line),
                });
            }
            entries.push(entry);
        }
        Ok(KnownDifferences { entries })
    }

    /// The entry covering step `step` (1-based) of case `case` in `file`, if any.
    pub fn lookup(&self, file: &str, case: &str, step: usize) -> Option<&KnownEntry> {
        self.entries.iter().find(|e| e.covers(file, case, step))
    }

    /// Entries that name no case of `cases`, or a step past the end of their case: typos, or
    /// entries left behind when a case was renamed or removed.
    pub fn unmatched<'a>(&'a self, cases: &[Case]) -> Vec<&'a KnownEntry> {
        self.entries
            .iter()
            .filter(|e| !cases.iter().any(|c| e.names(c)))
            .collect()
    }
}

fn parse_entry(body: &str, line: usize) -> Result<KnownEntry, String> {
    let (key, rest) = body
        .split_once('`')
        .ok_or("entry without a closing backtick")?;
    let parts: Vec<&str> = key.split(':').collect();
    let (file, case, step) = match parts[..] {
        [file, case] => (file, case, None),
        [file, case, step] => {
            let n = step
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| format!("step `{step}` is not a number from 1 up"))?;
            (file, case, Some(n))
        }
        _ => return Err(format!("`{key}` is not `file:case` or `file:case:step`")),
    };
    if file.is_empty() || case.is_empty() {
        return Err(format!("`{key}` has an empty file or case name"));
    }
    let reason = rest
        .trim_start()
        .trim_start_matches(['—', '–', '-', ':'])
        .trim();
    if reason.is_empty() {
        return Err(format!("`{key}` has no reason"));
    }
    Ok(KnownEntry {
        file: file.to_string(),
        case: case.to_string(),
        step,
        reason: reason.to_string(),
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::parse_corpus;

    const LIST: &str = "# Known differences

Prose, and an example that is not an entry:

```
- `file:case` — reason
```

- `15-unknown-and-types.txt:other_data_types` — HyperCache stores strings only.
- `09-connection:select:3` – one step, file without .txt
  - `10-server.txt:debug:2`: nested list item, colon separator
* `not:an:entry` — not a dash item
";

    #[test]
    fn parses_entries_and_ignores_the_rest() {
        let k = KnownDifferences::parse(LIST).unwrap();
        assert_eq!(k.entries.len(), 3);
        let e = &k.entries[0];
        assert_eq!(
            (e.file.as_str(), e.case.as_str(), e.step, e.line),
            ("15-unknown-and-types.txt", "other_data_types", None, 9)
        );
        assert_eq!(e.reason, "HyperCache stores strings only.");
        assert_eq!(k.entries[1].step, Some(3));
        assert_eq!(k.entries[1].reason, "one step, file without .txt");
        assert_eq!(k.entries[1].key(), "09-connection:select:3");
        assert_eq!(k.entries[2].reason, "nested list item, colon separator");
    }

    #[test]
    fn lookup_by_case_and_step() {
        let k = KnownDifferences::parse(LIST).unwrap();
        assert!(k
            .lookup("15-unknown-and-types.txt", "other_data_types", 7)
            .is_some());
        assert!(k.lookup("15-unknown-and-types.txt", "other", 1).is_none());
        assert!(k.lookup("09-connection.txt", "select", 3).is_some());
        assert!(k.lookup("09-connection.txt", "select", 4).is_none());
        assert!(k.lookup("09-connection.txtx", "select", 3).is_none());
    }

    #[test]
    fn malformed_entries_are_errors() {
        let err = |t: &str| KnownDifferences::parse(t).unwrap_err().to_string();
        assert!(err("- `a:b — reason").contains("closing backtick"));
        assert!(err("- `a` — reason").contains("not `file:case`"));
        assert!(err("- `a:b:c:d` — reason").contains("not `file:case`"));
        assert!(err("- `a:b:0` — reason").contains("from 1 up"));
        assert!(err("- `a:b:x` — reason").contains("from 1 up"));
        assert!(err("- `a:` — reason").contains("empty"));
        assert!(err("- `a:b` —  ").contains("no reason"));
        assert!(err("- `a:b` — r\n- `a:b` — again").starts_with("known-differences list, line 2"));
    }

    #[test]
    fn unmatched_entries() {
        let cases = parse_corpus("f.txt", b"@case c\nPING\nPING\n").unwrap();
        let k = KnownDifferences::parse(
            "- `f.txt:c` — ok\n- `f:c:2` — ok\n- `f:c:3` — past the end\n- `f:d` — no such case\n",
        )
        .unwrap();
        let keys: Vec<_> = k.unmatched(&cases).iter().map(|e| e.key()).collect();
        assert_eq!(keys, ["f:c:3", "f:d"]);
    }

    #[test]
    fn the_shipped_list_parses_and_names_real_cases() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let known = KnownDifferences::load(&dir.join("KNOWN_DIFFERENCES.md")).unwrap();
        assert!(!known.entries.is_empty());
        let cases = crate::load_corpus(&dir.join("corpus")).unwrap();
        let unmatched: Vec<_> = known.unmatched(&cases).iter().map(|e| e.key()).collect();
        assert!(
            unmatched.is_empty(),
            "entries naming no case: {unmatched:?}"
        );
    }
}
