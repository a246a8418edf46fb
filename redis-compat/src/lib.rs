//! # hypercache-compat
//!
//! The differential runner: the same command streams go to a reference `redis-server` and to a
//! candidate (HyperCache), and the reply **bytes** are compared.
//!
//! ## Layout
//! - [`corpus`]: the corpus format (`@case`, commands split like redis-cli, `!sorted`, `!type`,
//!   `!sleep`, `!raw`, `!closed`) and its parser, [`load_corpus`].
//! - [`known`]: the known-differences list (`KNOWN_DIFFERENCES.md`), [`KnownDifferences`].
//! - [`run`]: running one case against one server, [`run_case`]: blocking `std::net`, no runtime.
//! - this module: [`compare`], which runs every case on both servers and builds a [`Report`].
//!
//! ## Promises
//! - Every read has a deadline ([`Timeouts`]): a server that does not answer yields a timeout in
//!   the report, never a hang.
//! - Replies are compared as raw bytes, except where the corpus asks for `!sorted` or `!type`.
//! - Nothing here panics on I/O: a misbehaving server shows up as a difference; only a reference
//!   server that cannot start a case, or an unreadable corpus, is an error ([`CompatError`]).

pub mod corpus;
mod error;
pub mod known;
pub mod run;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

pub use corpus::{load_corpus, parse_corpus, Action, Case, Check, Step};
pub use error::CompatError;
pub use known::{KnownDifferences, KnownEntry};
pub use run::{run_case, run_case_with, Failure, Observed, Reply, Timeouts};

/// One step on which the two servers disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The corpus file's name.
    pub file: String,
    /// The case's name.
    pub case: String,
    /// The 1-based step within the case (as in the known-differences list).
    pub step: usize,
    /// The step's 1-based line number in the corpus file.
    pub line: usize,
    /// The step's line as written in the corpus.
    pub source: String,
    /// The bytes the step sent.
    pub sent: Vec<u8>,
    /// What the reference server did.
    pub expected: Observed,
    /// What the candidate did.
    pub actual: Observed,
    /// The known-differences entry covering this step, if one does.
    pub known: Option<KnownEntry>,
}

impl Difference {
    /// `file:case:step`, ready to paste into the known-differences list.
    pub fn key(&self) -> String {
        format!("{}:{}:{}", self.file, self.case, self.step)
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = if self.known.is_some() {
            "KNOWN"
        } else {
            "DIFF"
        };
        writeln!(
            f,
            "{label} {} (line {}): {}",
            self.key(),
            self.line,
            self.source
        )?;
        if let Some(entry) = &self.known {
            writeln!(f, "  reason:   {}", entry.reason)?;
        }
        if !self.sent.is_empty() {
            writeln!(f, "  sent:     {}", escape(&self.sent))?;
        }
        writeln!(f, "  expected: {}", self.expected)?;
        write!(f, "  actual:   {}", self.actual)
    }
}

/// The outcome of a comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Steps compared: every command, `!raw` and `!closed` step (`!sleep` steps are not counted).
    pub compared: usize,
    /// Every step on which the servers disagreed, known or not, in corpus order.
    pub differences: Vec<Difference>,
    /// Known-differences entries for cases that ran and showed no difference the entry covers:
    /// the departure they describe is gone, so the entry should be removed.
    pub stale: Vec<KnownEntry>,
}

impl Report {
    /// Differences not covered by the known-differences list: these fail a run.
    pub fn unexpected(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| d.known.is_none())
    }

    /// Differences covered by the known-differences list.
    pub fn known(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| d.known.is_some())
    }

    /// Steps that failed: unexpected differences.
    pub fn failed(&self) -> usize {
        self.unexpected().count()
    }

    /// Steps that passed: identical, or different in a known way.
    pub fn passed(&self) -> usize {
        self.compared - self.failed()
    }

    /// `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

impl fmt::Display for Report {
    /// Every unexpected difference in full, then one line per known-differences entry that
    /// covered differences (with their steps), one per stale entry, and the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.unexpected() {
            writeln!(f, "{d}")?;
        }
        let mut known: Vec<(&KnownEntry, Vec<String>)> = Vec::new();
        for d in &self.differences {
            let Some(entry) = &d.known else { continue };
            let step = d.step.to_string();
            match known.iter_mut().find(|(e, _)| *e == entry) {
                Some((_, steps)) => steps.push(step),
                None => known.push((entry, vec![step])),
            }
        }
        for (entry, steps) in known {
            writeln!(
                f,
                "known `{}` (steps {}): {}",
                entry.key(),
                steps.join(", "),
                entry.reason
            )?;
        }
        for e in &self.stale {
            writeln!(
                f,
                "STALE known-differences entry `{}` (line {}): no longer differs",
                e.key(),
                e.line
            )?;
        }
        write!(f, "{}", self.summary())
    }
}

/// Runs every case on both servers with the default [`Timeouts`] and compares what they did, step
/// by step. Each case runs on both servers at once (one case at a time), or one after the other
/// when both addresses are the same server, whose `FLUSHALL`s would otherwise interfere.
///
/// Errors only when the corpus cannot be compared at all: the reference server cannot start a
/// case ([`CompatError::Reference`]). Everything the candidate does is data in the [`Report`].
pub fn compare(
    reference: SocketAddr,
    candidate: SocketAddr,
    cases: &[Case],
    known: &KnownDifferences,
) -> Result<Report, CompatError> {
    compare_with(reference, candidate, cases, known, &Timeouts::default())
}

/// [`compare`] with explicit timeouts.
pub fn compare_with(
    reference: SocketAddr,
    candidate: SocketAddr,
    cases: &[Case],
    known: &KnownDifferences,
    timeouts: &Timeouts,
) -> Result<Report, CompatError> {
    let mut report = Report::default();
    // Known entries (by index) that covered at least one difference.
    let mut used = HashSet::new();
    for case in cases {
        let (expected, actual) = if reference == candidate {
            // One server cannot run two cases at once: the FLUSHALLs would interfere.
            (
                run_case_with(reference, case, timeouts),
                run_case_with(candidate, case, timeouts),
            )
        } else {
            std::thread::scope(|s| {
                let cand = s.spawn(|| run_case_with(candidate, case, timeouts));
                let expected = run_case_with(reference, case, timeouts);
                let actual = cand
                    .join()
                    .unwrap_or_else(|_| vec![Observed::NotRun; case.steps.len()]);
                (expected, actual)
            })
        };
        if let Some(Observed::Failed {
            failure: Failure::Setup(message),
            ..
        }) = expected.first()
        {
            return Err(CompatError::Reference {
                addr: reference,
                case: case.id(),
                message: message.clone(),
            });
        }
        for (i, ((step, exp), act)) in case.steps.iter().zip(expected).zip(actual).enumerate() {
            if matches!(step.action, Action::Sleep(_)) {
                continue;
            }
            report.compared += 1;
            if exp == act {
                continue;
            }
            let entry = known
                .entries
                .iter()
                .position(|e| e.covers(&case.file, &case.name, i + 1));
            if let Some(idx) = entry {
                used.insert(idx);
            }
            report.differences.push(Difference {
                file: case.file.clone(),
                case: case.name.clone(),
                step: i + 1,
                line: step.line,
                source: step.source.clone(),
                sent: step.payload(),
                expected: exp,
                actual: act,
                known: entry.map(|idx| known.entries[idx].clone()),
            });
        }
    }
    report.stale = known
        .entries
        .iter()
        .enumerate()
        .filter(|(idx, e)| !used.contains(idx) && cases.iter().any(|c| e.names(c)))
        .map(|(_, e)| e.clone())
        .collect();
    Ok(report)
}

/// Escapes bytes for printing, in double quotes: printable ASCII as is, `\r`, `\n`, `\t`, `\"`,
/// `\\`, and `\xHH` for everything else. The result can be pasted back into a corpus line.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
