//! `ACL`: users and their permissions ([`crate::acl`]), with Redis 7.0's replies.

use bytes::Bytes;
use hypercache_resp::{errors, num, Frame};

use super::{err, err_owned, help};
use crate::acl::{self, Context, Reason};
use crate::session::Session;

/// # Format
/// `ACL CAT|DELUSER|DRYRUN|GENPASS|GETUSER|LIST|LOAD|LOG|SAVE|SETUSER|USERS|WHOAMI|HELP ...`
pub(super) fn acl(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let sub = a[1].to_ascii_lowercase();
    // The table's arity lets these through with one argument too many; Redis's handler then
    // answers its generic subcommand error.
    if matches!(sub.as_slice(), b"cat" | b"genpass" | b"log") && a.len() > 3 {
        return err_owned(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            String::from_utf8_lossy(&a[1])
        ));
    }
    match sub.as_slice() {
        b"setuser" => setuser(s, a),
        b"deluser" => deluser(s, a),
        b"getuser" => getuser(s, a),
        b"list" | b"users" => {
            let names = sub == b"users";
            Some(Frame::Array(if names {
                s.shared
                    .acl
                    .users()
                    .iter()
                    .map(|u| Frame::Bulk(u.name.clone()))
                    .collect()
            } else {
                s.shared
                    .acl
                    .list()
                    .into_iter()
                    .map(|l| Frame::Bulk(l.into()))
                    .collect()
            }))
        }
        b"whoami" => Some(Frame::Bulk(s.user.name.clone())),
        b"load" | b"save" => {
            let path = s.shared.config.read().aclfile.clone();
            if path.is_empty() {
                return err("ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.");
            }
            if sub == b"load" {
                crate::cluster::settings::change_users(&s.shared, |users| {
                    match users.load_file(&path) {
                        Ok(()) => (Some(Frame::ok()), true),
                        Err(e) => (err_owned(format!("ERR {e}")), false),
                    }
                })
                .unwrap_or_else(Some)
            } else {
                match s.shared.acl.save_file(&path) {
                    Ok(()) => Some(Frame::ok()),
                    Err(e) => {
                        tracing::warn!(node_id = %s.shared.node_id, component = "acl", path = %path, error = %e, "ACL SAVE failed");
                        err("ERR There was an error trying to save the ACLs. Please check the server logs for more information")
                    }
                }
            }
        }
        b"cat" => cat(a),
        b"genpass" => {
            let bits = match a.get(2) {
                None => 256,
                Some(b) => match num::parse_i64(b) {
                    Some(n) => n,
                    None => return err(errors::NOT_INTEGER),
                },
            };
            if !(1..=4096).contains(&bits) {
                return err("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096");
            }
            let chars = ((bits + 3) / 4) as usize;
            let mut raw = vec![0u8; chars.div_ceil(2)];
            {
                use rand::TryRngCore;
                rand::rngs::OsRng
                    .try_fill_bytes(&mut raw)
                    .expect("the OS random generator works");
            }
            let mut hex = acl::hex(&raw);
            hex.truncate(chars);
            Some(Frame::Bulk(hex.into()))
        }
        b"log" => log(s, a),
        b"dryrun" => dryrun(s, a),
        _ => help(
            "ACL",
            &[
                "CAT [<category>]",
                "    List all commands that belong to <category>, or all command categories",
                "    when no category is specified.",
                "DELUSER <username> [<username> ...]",
                "    Delete a list of users.",
                "DRYRUN <username> <command> [<arg> ...]",
                "    Returns whether the user can execute the given command without executing the command.",
                "GETUSER <username>",
                "    Get the user's details.",
                "GENPASS [<bits>]",
                "    Generate a secure 256-bit user password. The optional `bits` argument can",
                "    be used to specify a different size.",
                "LIST",
                "    Show users details in config file format.",
                "LOAD",
                "    Reload users from the ACL file.",
                "LOG [<count> | RESET]",
                "    Show the ACL log entries.",
                "SAVE",
                "    Save the current config to the ACL file.",
                "SETUSER <username> <attribute> [<attribute> ...]",
                "    Create or modify a user with the specified attributes.",
                "USERS",
                "    List all the registered usernames.",
                "WHOAMI",
                "    Return the current connection username.",
            ],
        ),
    }
}

fn setuser(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let name = &a[2];
    if !acl::valid_name(name) {
        return err("ERR Usernames can't contain spaces or null characters");
    }
    // In a cluster the change goes to every member (crate::cluster::settings).
    crate::cluster::settings::change_users(&s.shared, |users| {
        match acl::set_user(users.get(name).as_deref(), name, &a[3..]) {
            Ok(u) => {
                users.put(u);
                (Some(Frame::ok()), true)
            }
            Err(e) => (err_owned(format!("ERR {e}")), false),
        }
    })
    .unwrap_or_else(Some)
}

fn deluser(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    if a[2..].iter().any(|n| n.as_ref() == b"default") {
        return err("ERR The 'default' user cannot be removed");
    }
    let deleted = match crate::cluster::settings::change_users(&s.shared, |users| {
        let n = users.delete(&a[2..]);
        (n, n > 0)
    }) {
        Ok(n) => n,
        Err(refused) => return Some(refused),
    };
    // As Redis: every connection authenticated as a deleted user is closed (this one after its
    // reply).
    let gone: Vec<&Bytes> = a[2..].iter().collect();
    let clients: Vec<_> = s.shared.clients.lock().values().cloned().collect();
    for h in clients {
        let user = h.meta.lock().user.clone();
        if !user.is_empty() && gone.contains(&&user) {
            if h.id == s.handle.id {
                s.close_after = true;
            } else {
                h.kill();
            }
        }
    }
    Some(Frame::Integer(deleted as i64))
}

fn getuser(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let Some(u) = s.shared.acl.get(&a[2]) else {
        return Some(Frame::Null);
    };
    let kv = |k: &'static str, v: Frame| (Frame::bulk(k.as_bytes()), v);
    let joined = |rules: Vec<Vec<u8>>| Frame::Bulk(rules.join(&b' ').into());
    Some(Frame::Map(vec![
        kv(
            "flags",
            Frame::Set(
                u.flags()
                    .iter()
                    .map(|f| Frame::bulk(f.as_bytes()))
                    .collect(),
            ),
        ),
        kv(
            "passwords",
            Frame::Array(
                u.passwords
                    .iter()
                    .map(|p| Frame::bulk(p.as_bytes()))
                    .collect(),
            ),
        ),
        kv("commands", Frame::Bulk(u.command_rules().into())),
        kv("keys", joined(u.key_rules())),
        kv("channels", joined(u.channel_rules())),
        kv("selectors", Frame::Array(Vec::new())),
    ]))
}

fn cat(a: &[Bytes]) -> Option<Frame> {
    let Some(cat) = a.get(2) else {
        return Some(Frame::Array(
            acl::CATEGORIES
                .iter()
                .map(|c| Frame::bulk(c.as_bytes()))
                .collect(),
        ));
    };
    let name = String::from_utf8_lossy(cat).to_ascii_lowercase();
    if !acl::CATEGORIES.contains(&name.as_str()) {
        let shown: String = String::from_utf8_lossy(cat).chars().take(128).collect();
        return err_owned(format!("ERR Unknown category '{shown}'"));
    }
    let tag = format!("@{name}");
    let mut out = Vec::new();
    for spec in hypercache_resp::table::COMMANDS {
        if spec.acl.contains(&tag.as_str()) {
            out.push(Frame::bulk(spec.fullname.as_bytes()));
        }
        for sub in spec.subcommands {
            if sub.acl.contains(&tag.as_str()) {
                out.push(Frame::bulk(sub.fullname.as_bytes()));
            }
        }
    }
    Some(Frame::Array(out))
}

fn log(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let mut count = 10i64;
    if let Some(arg) = a.get(2) {
        if arg.eq_ignore_ascii_case(b"reset") {
            s.shared.acl.log_reset();
            return Some(Frame::ok());
        }
        match num::parse_i64(arg) {
            Some(n) => count = n.max(0),
            None => return err(errors::NOT_INTEGER),
        }
    }
    let now = std::time::Instant::now();
    let entries = s.shared.acl.log_entries(count as usize);
    let kv = |k: &'static str, v: Frame| (Frame::bulk(k.as_bytes()), v);
    Some(Frame::Array(
        entries
            .into_iter()
            .map(|e| {
                let reason = match e.reason {
                    Reason::Command => "command",
                    Reason::Key => "key",
                    Reason::Channel => "channel",
                    Reason::Auth => "auth",
                };
                let context = match e.context {
                    Context::Toplevel => "toplevel",
                    Context::Multi => "multi",
                    Context::Lua => "lua",
                };
                let age = now.duration_since(e.at).as_secs_f64();
                Frame::Map(vec![
                    kv("count", Frame::Integer(e.count as i64)),
                    kv("reason", Frame::bulk(reason.as_bytes())),
                    kv("context", Frame::bulk(context.as_bytes())),
                    kv("object", Frame::Bulk(e.object)),
                    kv("username", Frame::Bulk(e.username)),
                    kv("age-seconds", Frame::Double(num::format_g(age, 17).into())),
                    kv("client-info", Frame::Bulk(e.client_info.into())),
                ])
            })
            .collect(),
    ))
}

fn dryrun(s: &mut Session, a: &[Bytes]) -> Option<Frame> {
    let Some(u) = s.shared.acl.get(&a[2]) else {
        return err_owned(format!(
            "ERR User '{}' not found",
            String::from_utf8_lossy(&a[2])
        ));
    };
    let args = &a[3..];
    let Some(mut spec) = hypercache_resp::table::lookup(&args[0]) else {
        return err_owned(format!(
            "ERR Command '{}' not found",
            String::from_utf8_lossy(&args[0])
        ));
    };
    if !spec.subcommands.is_empty() && args.len() >= 2 {
        if let Some(sub) = spec.subcommand(&args[1]) {
            spec = sub;
        }
    }
    if !spec.arity_ok(args.len()) {
        return err_owned(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.fullname
        ));
    }
    Some(match u.check(spec, args) {
        Ok(()) => Frame::ok(),
        Err(acl::Denied::Command) => Frame::Bulk(
            format!(
                "This user has no permissions to run the '{}' command",
                spec.fullname
            )
            .into(),
        ),
        Err(acl::Denied::Key(i)) => Frame::Bulk(
            format!(
                "This user has no permissions to access the '{}' key",
                String::from_utf8_lossy(&args[i])
            )
            .into(),
        ),
        Err(acl::Denied::Channel(i)) => Frame::Bulk(
            format!(
                "This user has no permissions to access the '{}' channel",
                String::from_utf8_lossy(&args[i])
            )
            .into(),
        ),
    })
}
