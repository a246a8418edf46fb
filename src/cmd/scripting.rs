//! Scripting: `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `SCRIPT`.
//!
//! The handlers check the arguments and hand the script to the connection
//! ([`Session::script_ready`]), which runs it ([`Session::run_script`]): on a single node with no
//! other command in between. The engine is [`crate::script`].

use bytes::Bytes;
use hypercache_cluster::slot::key_slot;
use hypercache_resp::{errors, num, Frame};

use super::{err, err_owned};
use crate::script::{sha1_hex, Call, Job};
use crate::session::Session;

/// # Format
/// `EVAL script numkeys [key ...] [arg ...]`
pub(super) fn eval(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, false, false)
}

/// # Format
/// `EVALSHA sha1 numkeys [key ...] [arg ...]`
pub(super) fn evalsha(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, true, false)
}

/// # Format
/// `EVAL_RO script numkeys [key ...] [arg ...]`
pub(super) fn eval_ro(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, false, true)
}

/// # Format
/// `EVALSHA_RO sha1 numkeys [key ...] [arg ...]`
pub(super) fn evalsha_ro(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    eval_generic(s, a, true, true)
}

fn eval_generic(s: &mut Session, a: &[Bytes], by_sha: bool, read_only: bool) -> Option<Frame> {
    let Some(numkeys) = num::parse_i64(&a[2]) else {
        return err(errors::NOT_INTEGER);
    };
    if numkeys > (a.len() - 3) as i64 {
        return err(errors::NUMKEYS_TOO_MANY);
    }
    if numkeys < 0 {
        return err(errors::NUMKEYS_NEGATIVE);
    }
    let n = numkeys as usize;
    let keys = a[3..3 + n].to_vec();
    if s.shared.cluster.is_some() && keys.windows(2).any(|w| key_slot(&w[0]) != key_slot(&w[1])) {
        return err(errors::CROSSSLOT);
    }
    let (sha, body) = if by_sha {
        let sha = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
        if a[1].len() != 40 || !s.shared.scripts.exists(&sha) {
            return err(errors::NOSCRIPT);
        }
        (sha, None)
    } else {
        (sha1_hex(&a[1]), Some(a[1].clone()))
    };
    s.script_ready = Some(Job::Run(Call {
        sha,
        body,
        keys,
        args: a[3 + n..].to_vec(),
        read_only,
    }));
    None
}

/// # Format
/// `SCRIPT LOAD|EXISTS|FLUSH|KILL|DEBUG|HELP ...`
pub(super) fn script(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"load" => {
            s.script_ready = Some(Job::Load(a[2].clone()));
            None
        }
        b"exists" => Some(Frame::Array(
            a[2..]
                .iter()
                .map(|sha| {
                    let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                    Frame::Integer(i64::from(s.shared.scripts.exists(&sha)))
                })
                .collect(),
        )),
        b"flush" => {
            match a.get(2) {
                None => {}
                Some(m)
                    if a.len() == 3
                        && (m.eq_ignore_ascii_case(b"sync") || m.eq_ignore_ascii_case(b"async")) => {}
                Some(_) => return err("ERR SCRIPT FLUSH only support SYNC|ASYNC option"),
            }
            s.shared.scripts.flush();
            Some(Frame::ok())
        }
        b"kill" => match s.shared.scripts.running.kill() {
            Ok(()) => Some(Frame::ok()),
            Err(e) => err(e),
        },
        b"debug" => err_owned(
            "ERR SCRIPT DEBUG is not supported: HyperCache has no Lua debugger".to_string(),
        ),
        _ => super::help_with(
            "SCRIPT",
            &[
                "DEBUG (YES|SYNC|NO)",
                "    Set the debug mode for subsequent scripts executed.",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache. Very dangerous on replicas.",
                "    When called without the optional mode argument, the behavior is determined by the",
                "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
                "    * ASYNC: Asynchronously flush the scripts cache.",
                "    * SYNC: Synchronously flush the scripts cache.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
            ],
            "    Prints this help.",
        ),
    }
}
