//! The corpus format: cases of commands, one per line, with a few modifiers.
//!
//! ```text
//! # a comment; blank lines are ignored
//! @case name [pipeline]     starts a case (names are unique within a file)
//! SET k "v w"               one command, split like redis-cli, sent as a RESP multibulk array
//! !sorted KEYS *            compare after sorting every aggregate's elements (recursively)
//! !type HELLO 3             compare only the reply's type byte
//! !estimate avg_ttl INFO keyspace
//!                           compare byte for byte, except the number after each `avg_ttl=`
//!                           (for figures both servers estimate on their own schedule)
//! !sleep 120                sleep 120 ms
//! !raw 2 "PING\r\nPING\r\n" send exact bytes (the quoted string is unescaped like an argument),
//!                           then read 2 replies
//! !closed                   the server must close the connection (EOF within ~1 s)
//! ```
//!
//! Every case runs on a fresh connection after `FLUSHALL` on another connection. In a `pipeline`
//! case consecutive commands and `!raw` lines are written in one write and their replies read
//! afterwards; a `!sleep` or `!closed` line ends such a batch and then runs as it would anywhere
//! else, so a pipeline case may still end with `!closed`.

use std::path::Path;
use std::time::Duration;

use hypercache_resp::args::split_args;

use crate::CompatError;

/// One test case: a sequence of steps run on one fresh connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The corpus file's name, e.g. `01-strings.txt`.
    pub file: String,
    /// The case's name from its `@case` line.
    pub name: String,
    /// Whether the case's commands are written in one write (`@case name pipeline`).
    pub pipeline: bool,
    /// The steps, in order. Known-differences entries number them from 1.
    pub steps: Vec<Step>,
}

impl Case {
    /// `file:case`, the way reports and the known-differences list name the case.
    pub fn id(&self) -> String {
        format!("{}:{}", self.file, self.name)
    }
}

/// One line of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line number in the corpus file.
    pub line: usize,
    /// The line as written (trimmed), for reports.
    pub source: String,
    /// What the step does.
    pub action: Action,
}

impl Step {
    /// The bytes this step writes to the server (empty for `!sleep` and `!closed`).
    pub fn payload(&self) -> Vec<u8> {
        match &self.action {
            Action::Command { args, .. } => encode_command(args),
            Action::Raw { bytes, .. } => bytes.clone(),
            Action::Sleep(_) | Action::Closed => Vec::new(),
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one command as a multibulk array and read one reply.
    Command {
        /// The arguments, command name first (never empty).
        args: Vec<Vec<u8>>,
        /// How the reply is compared.
        check: Check,
    },
    /// `!raw N "<bytes>"`: send exact bytes, then read `replies` replies (compared exactly).
    Raw {
        /// The bytes to send.
        bytes: Vec<u8>,
        /// How many replies to read afterwards (may be 0).
        replies: usize,
    },
    /// `!sleep MS`.
    Sleep(Duration),
    /// `!closed`: the server must have closed the connection.
    Closed,
}

/// How a command's reply is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Byte for byte.
    Exact,
    /// `!sorted`: byte for byte after sorting every aggregate's elements by their encoding.
    Sorted,
    /// `!type`: only the type byte.
    Type,
    /// `!estimate FIELD`: byte for byte after replacing the digits that follow each `FIELD=` in
    /// a (verbatim) bulk string with `#`.
    Estimate(Vec<u8>),
}

/// Encodes `args` as a RESP multibulk array.
pub fn encode_command(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads every `*.txt` file of `dir`, in file-name order, and parses its cases.
pub fn load_corpus(dir: &Path) -> Result<Vec<Case>, CompatError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CompatError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|e| e == "txt") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cases.extend(parse_corpus(&name, &text)?);
    }
    Ok(cases)
}

/// Parses the text of one corpus file; `file` is the name cases and errors carry.
pub fn parse_corpus(file: &str, text: &[u8]) -> Result<Vec<Case>, CompatError> {
    let mut cases: Vec<Case> = Vec::new();
    for (idx, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = idx + 1;
        let err = |message: String| CompatError::Corpus {
            file: file.to_string(),
            line,
            message,
        };
        let s = raw.trim_ascii();
        if s.is_empty() || s[0] == b'#' {
            continue;
        }
        let source = String::from_utf8_lossy(s).into_owned();
        let (word, rest) = first_word(s);
        if word == b"@case" {
            let (name, flag) = first_word(rest);
            let pipeline = match flag.trim_ascii() {
                b"" => false,
                b"pipeline" => true,
                other => {
                    return Err(err(format!(
                        "bad case header: expected `@case NAME [pipeline]`, found `{}`",
                        String::from_utf8_lossy(other)
                    )))
                }
            };
            if name.is_empty() {
                return Err(err("`@case` without a name".into()));
            }
            let name = String::from_utf8_lossy(name).into_owned();
            if cases.iter().any(|c| c.name == name) {
                return Err(err(format!("duplicate case name `{name}`")));
            }
            cases.push(Case {
                file: file.to_string(),
                name,
                pipeline,
                steps: Vec::new(),
            });
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(err("line outside any case (missing `@case`?)".into()));
        };
        let action = if s[0] == b'!' {
            parse_modifier(word, rest).map_err(err)?
        } else {
            Action::Command {
                args: command_args(s).map_err(err)?,
                check: Check::Exact,
            }
        };
        case.steps.push(Step {
            line,
            source,
            action,
        });
    }
    Ok(cases)
}

fn parse_modifier(word: &[u8], rest: &[u8]) -> Result<Action, String> {
    match word {
        b"!sorted" => Ok(Action::Command {
            args: command_args(rest)?,
            check: Check::Sorted,
        }),
        b"!type" => Ok(Action::Command {
            args: command_args(rest)?,
            check: Check::Type,
        }),
        b"!estimate" => {
            let (field, command) = first_word(rest);
            if field.is_empty() {
                return Err("`!estimate` needs a field name and a command".into());
            }
            Ok(Action::Command {
                args: command_args(command)?,
                check: Check::Estimate(field.to_vec()),
            })
        }
        b"!sleep" => {
            let ms = std::str::from_utf8(rest.trim_ascii())
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or("`!sleep` needs a number of milliseconds")?;
            Ok(Action::Sleep(Duration::from_millis(ms)))
        }
        b"!raw" => {
            let (n, body) = first_word(rest);
            let replies = std::str::from_utf8(n)
                .ok()
                .and_then(|t| t.parse::<usize>().ok())
                .ok_or("`!raw` needs a reply count: `!raw N \"<bytes>\"`")?;
            let mut args = split_args(body).map_err(|e| format!("`!raw` bytes: {e}"))?;
            match (args.pop(), args.is_empty()) {
                (Some(bytes), true) => Ok(Action::Raw { bytes, replies }),
                _ => Err("`!raw` needs exactly one quoted string after the count".into()),
            }
        }
        b"!closed" if rest.trim_ascii().is_empty() => Ok(Action::Closed),
        b"!closed" => Err("`!closed` takes no arguments".into()),
        other => Err(format!(
            "unknown modifier `{}`",
            String::from_utf8_lossy(other)
        )),
    }
}

fn command_args(s: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let args = split_args(s).map_err(|e| format!("cannot split command: {e}"))?;
    if args.is_empty() {
        return Err("empty command".into());
    }
    Ok(args)
}

/// Splits off the first white-space-delimited word; the rest keeps its leading white space.
fn first_word(s: &[u8]) -> (&[u8], &[u8]) {
    let s = s.trim_ascii_start();
    let end = s
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Case> {
        parse_corpus("t.txt", text.as_bytes()).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse_corpus("t.txt", text.as_bytes())
            .unwrap_err()
            .to_string()
    }

    fn cmd(args: &[&str], check: Check) -> Action {
        Action::Command {
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            check,
        }
    }

    #[test]
    fn cases_comments_and_pipeline_flag() {
        let cases = parse(
            "# header\n\n@case one\nSET a b\n  # indented comment\r\nGET a\r\n\n@case two pipeline\nPING\n",
        );
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].file, "t.txt");
        assert_eq!(cases[0].name, "one");
        assert!(!cases[0].pipeline);
        assert_eq!(cases[0].id(), "t.txt:one");
        assert_eq!(cases[0].steps.len(), 2);
        assert_eq!(cases[0].steps[0].line, 4);
        assert_eq!(cases[0].steps[0].source, "SET a b");
        assert_eq!(cases[0].steps[1].action, cmd(&["GET", "a"], Check::Exact));
        assert_eq!(cases[0].steps[1].source, "GET a");
        assert!(cases[1].pipeline);
        assert_eq!(cases[1].steps[0].action, cmd(&["PING"], Check::Exact));
    }

    #[test]
    fn quoting_like_redis_cli() {
        let cases = parse("@case q\nSET \"a b\" 'it\\'s' \"\\x00\\r\\n\" \"\"\n");
        assert_eq!(
            cases[0].steps[0].action,
            cmd(&["SET", "a b", "it's", "\0\r\n", ""], Check::Exact)
        );
        assert_eq!(
            cases[0].steps[0].payload(),
            b"*5\r\n$3\r\nSET\r\n$3\r\na b\r\n$4\r\nit's\r\n$3\r\n\0\r\n\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn modifiers() {
        let cases = parse(
            "@case m\n!sorted KEYS *\n!type  HELLO 3\n!sleep 150\n!raw 2 \"PING\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n\"\n!raw 0 \"PI\"\n!closed\n",
        );
        let actions: Vec<_> = cases[0].steps.iter().map(|s| s.action.clone()).collect();
        assert_eq!(
            actions,
            vec![
                cmd(&["KEYS", "*"], Check::Sorted),
                cmd(&["HELLO", "3"], Check::Type),
                Action::Sleep(Duration::from_millis(150)),
                Action::Raw {
                    bytes: b"PING\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
                    replies: 2
                },
                Action::Raw {
                    bytes: b"PI".to_vec(),
                    replies: 0
                },
                Action::Closed,
            ]
        );
        assert_eq!(cases[0].steps[3].payload(), b"PING\r\n*1\r\n$4\r\nPING\r\n");
        assert!(cases[0].steps[5].payload().is_empty());
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line() {
        assert_eq!(
            parse_err("SET a b\n"),
            "t.txt:1: line outside any case (missing `@case`?)"
        );
        assert!(parse_err("@case a\n@case a\n").starts_with("t.txt:2: duplicate case name"));
        assert!(parse_err("@case a nopipe\n").contains("bad case header"));
        assert!(parse_err("@case\n").contains("without a name"));
        assert!(parse_err("@case a\n!frob x\n").contains("unknown modifier `!frob`"));
        assert!(parse_err("@case a\n!sleep soon\n").contains("milliseconds"));
        assert!(parse_err("@case a\n!raw \"PING\"\n").contains("reply count"));
        assert!(parse_err("@case a\n!raw 1 \"a\" \"b\"\n").contains("exactly one"));
        assert!(parse_err("@case a\n!raw 1 \"a\n").contains("unbalanced"));
        assert!(parse_err("@case a\n!sorted\n").contains("empty command"));
        assert!(parse_err("@case a\n!estimate\n").contains("field name"));
        assert!(parse_err("@case a\n!estimate avg_ttl\n").contains("empty command"));
        assert!(parse_err("@case a\n!closed now\n").contains("no arguments"));
        assert!(parse_err("@case a\nGET \"a\n").starts_with("t.txt:2: cannot split command"));
    }

    #[test]
    fn the_shipped_corpus_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let cases = load_corpus(&dir).unwrap();
        assert!(cases.len() > 100, "only {} cases", cases.len());
        assert!(
            cases.iter().all(|c| !c.steps.is_empty()),
            "a case without steps"
        );
        assert!(cases.iter().any(|c| c.pipeline));
        assert_eq!(cases[0].file, "01-strings.txt");
    }
}
