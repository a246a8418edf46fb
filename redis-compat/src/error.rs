//! The crate's error type: everything that stops a comparison before it can produce a report.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the corpus, the known-differences list or the reference server could not be used. None of
/// these is a difference between the servers: differences are data in a [`crate::Report`].
#[derive(Debug)]
pub enum CompatError {
    /// A file or directory could not be read. Nothing was run.
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A corpus file is malformed. Nothing was run.
    Corpus {
        /// The corpus file's name (e.g. `01-strings.txt`).
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The known-differences list is malformed. Nothing was run.
    Known {
        /// 1-based line number in the list.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The reference server could not start a case (connect or `FLUSHALL` failed). It is the oracle,
    /// so the comparison stops: without its replies there is nothing to compare against.
    Reference {
        /// The reference server's address.
        addr: SocketAddr,
        /// `file:case` of the case that could not start.
        case: String,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for CompatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompatError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CompatError::Corpus {
                file,
                line,
                message,
            } => write!(f, "{file}:{line}: {message}"),
            CompatError::Known { line, message } => {
                write!(f, "known-differences list, line {line}: {message}")
            }
            CompatError::Reference {
                addr,
                case,
                message,
            } => {
                write!(f, "reference server {addr} could not run {case}: {message}")
            }
        }
    }
}

impl std::error::Error for CompatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CompatError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
