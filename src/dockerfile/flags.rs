//! The flags each instruction takes, and `RUN --mount=` values.
//!
//! Tables, not code: adding a flag is one line here plus its use in the
//! parser. BuildKit's spellings and defaults (`dst`, `ro`, `readwrite`,
//! read-only binds, shared caches) are accepted as BuildKit accepts them.

use super::ast::{CacheSharing, Mount, MountType};
use super::diagnostic::Pos;
use super::words::unquote;

#[derive(Clone, Copy, PartialEq)]
pub enum FlagKind {
    Bool,
    Value,
    Repeated,
}

pub struct Flag {
    pub name: &'static str,
    pub value: Option<String>,
    pub offset: usize,
}

pub const FROM_FLAGS: &[(&str, FlagKind)] = &[("platform", FlagKind::Value)];
pub const RUN_FLAGS: &[(&str, FlagKind)] = &[
    ("mount", FlagKind::Repeated),
    ("network", FlagKind::Value),
    ("security", FlagKind::Value),
];
pub const COPY_FLAGS: &[(&str, FlagKind)] = &[
    ("from", FlagKind::Value),
    ("chown", FlagKind::Value),
    ("chmod", FlagKind::Value),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::Repeated),
];
pub const ADD_FLAGS: &[(&str, FlagKind)] = &[
    ("chown", FlagKind::Value),
    ("chmod", FlagKind::Value),
    ("link", FlagKind::Bool),
    ("checksum", FlagKind::Value),
    ("keep-git-dir", FlagKind::Bool),
    ("exclude", FlagKind::Repeated),
];
pub const HEALTHCHECK_FLAGS: &[(&str, FlagKind)] = &[
    ("interval", FlagKind::Value),
    ("timeout", FlagKind::Value),
    ("start-period", FlagKind::Value),
    ("start-interval", FlagKind::Value),
    ("retries", FlagKind::Value),
];

/// Parses the value of one `--mount=`; an error is the message to show
/// (the parser adds the position).
pub fn parse_mount(spec: &str, escape: char, pos: Pos) -> Result<Mount, String> {
    let mut mount = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        read_only: true,
        sharing: CacheSharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
        size: None,
        pos,
    };
    let fields: Vec<(String, Option<String>)> = spec
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let f = unquote(f, escape).unwrap_or_else(|_| f.to_string());
            match f.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
                None => (f.to_ascii_lowercase(), None),
            }
        })
        .collect();
    if let Some((_, Some(kind))) = fields.iter().find(|(k, _)| k == "type") {
        mount.kind = mount_type(kind)?;
    }
    let mut read_only = None;
    for (key, value) in fields {
        mount_field(&mut mount, &mut read_only, &key, value)?;
    }
    mount.read_only = read_only.unwrap_or(matches!(mount.kind, MountType::Bind));
    let needs_target = matches!(
        mount.kind,
        MountType::Bind | MountType::Cache | MountType::Tmpfs
    );
    if needs_target && mount.target.is_none() {
        return Err("target=PATH is required".into());
    }
    if mount.kind == MountType::Secret && mount.id.is_none() && mount.target.is_none() {
        return Err("a secret mount needs id=ID or target=PATH".into());
    }
    Ok(mount)
}

fn mount_type(kind: &str) -> Result<MountType, String> {
    Ok(match kind {
        "bind" => MountType::Bind,
        "cache" => MountType::Cache,
        "tmpfs" => MountType::Tmpfs,
        "secret" => MountType::Secret,
        "ssh" => MountType::Ssh,
        other => {
            return Err(format!(
                "unknown mount type \"{other}\": use bind, cache, tmpfs, secret or ssh"
            ))
        }
    })
}

/// One `key[=value]` of a mount.
fn mount_field(
    mount: &mut Mount,
    read_only: &mut Option<bool>,
    key: &str,
    value: Option<String>,
) -> Result<(), String> {
    let need = |v: Option<String>| v.ok_or_else(|| format!("{key} needs a value: {key}=VALUE"));
    let number = |v: Option<String>, radix: u32| {
        let v = need(v)?;
        u32::from_str_radix(&v, radix).map_err(|_| format!("{key}=\"{v}\" is not a number"))
    };
    let boolean = |v: Option<String>| {
        parse_bool(v.as_deref()).ok_or_else(|| format!("{key} takes true or false"))
    };
    match key {
        "type" => {}
        "target" | "dst" | "destination" => mount.target = Some(need(value)?),
        "source" | "src" => mount.source = Some(need(value)?),
        "from" => mount.from = Some(need(value)?),
        "id" => mount.id = Some(need(value)?),
        "ro" | "readonly" => *read_only = Some(boolean(value)?),
        "rw" | "readwrite" => *read_only = Some(!boolean(value)?),
        "sharing" => {
            mount.sharing = match need(value)?.as_str() {
                "shared" => CacheSharing::Shared,
                "private" => CacheSharing::Private,
                "locked" => CacheSharing::Locked,
                other => {
                    return Err(format!(
                        "sharing=\"{other}\": use shared, private or locked"
                    ))
                }
            }
        }
        "mode" => mount.mode = Some(number(value, 8)?),
        "uid" => mount.uid = Some(number(value, 10)?),
        "gid" => mount.gid = Some(number(value, 10)?),
        "required" => mount.required = boolean(value)?,
        "env" => mount.env = Some(need(value)?),
        "size" => mount.size = Some(need(value)?),
        other => return Err(format!("unknown option \"{other}\"")),
    }
    Ok(())
}

pub fn parse_bool(value: Option<&str>) -> Option<bool> {
    match value {
        None | Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        _ => None,
    }
}
