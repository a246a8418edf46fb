//! `redis-compat`: runs the corpus against a reference redis-server and a candidate and prints
//! every difference.
//!
//! ```text
//! redis-compat --reference 127.0.0.1:6379 --candidate 127.0.0.1:6380
//!              [--corpus DIR] [--known FILE] [--filter SUBSTR]
//! ```
//!
//! Exit status: 0 when every difference is known, 1 when some are not, 2 when the comparison could
//! not run (bad arguments, unreadable corpus, reference server unreachable).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use hypercache_compat::{compare, load_corpus, KnownDifferences};

const USAGE: &str = "usage: redis-compat --reference HOST:PORT --candidate HOST:PORT \
[--corpus DIR] [--known FILE] [--filter SUBSTR]

  --reference  the redis-server whose replies are correct
  --candidate  the server under test
  --corpus     directory of *.txt cases (default: the crate's corpus/)
  --known      known-differences list (default: the crate's KNOWN_DIFFERENCES.md)
  --filter     run only cases whose `file:case` contains SUBSTR";

struct Args {
    reference: SocketAddr,
    candidate: SocketAddr,
    corpus: PathBuf,
    known: PathBuf,
    filter: Option<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (mut reference, mut candidate, mut filter) = (None, None, None);
    let mut corpus = crate_dir.join("corpus");
    let mut known = crate_dir.join("KNOWN_DIFFERENCES.md");
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--reference" => reference = Some(resolve(&value)?),
            "--candidate" => candidate = Some(resolve(&value)?),
            "--corpus" => corpus = value.into(),
            "--known" => known = value.into(),
            "--filter" => filter = Some(value),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(Args {
        reference: reference.ok_or("--reference is required")?,
        candidate: candidate.ok_or("--candidate is required")?,
        corpus,
        known,
        filter,
    })
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("redis-compat: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("redis-compat: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the comparison and prints the report; `Ok(true)` when nothing unexpected differs.
fn run(args: &Args) -> Result<bool, hypercache_compat::CompatError> {
    let mut cases = load_corpus(&args.corpus)?;
    let known = KnownDifferences::load(&args.known)?;
    for e in known.unmatched(&cases) {
        println!(
            "STALE known-differences entry `{}` (line {}): no such case or step",
            e.key(),
            e.line
        );
    }
    if let Some(f) = &args.filter {
        cases.retain(|c| c.id().contains(f.as_str()));
    }
    let report = compare(args.reference, args.candidate, &cases, &known)?;
    println!("{report}");
    Ok(report.failed() == 0)
}
