//! `USER` and `--chown` names resolved against the image's own
//! `/etc/passwd` and `/etc/group`, as Docker does: a name must exist there,
//! a number need not; a user's primary group comes from passwd and its
//! supplementary groups from group membership.

use std::path::Path;

use crate::rootfs::Root;

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (only for `USER`, never for `--chown`).
    pub groups: Vec<u32>,
    /// The home directory from passwd; `/` for a user passwd lacks, as
    /// runc and BuildKit give it.
    pub home: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_lines(root: &Root, file: &str) -> Vec<Vec<String>> {
    let text = root.read(Path::new(file)).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

fn passwd(root: &Root) -> Vec<PasswdEntry> {
    read_lines(root, "etc/passwd")
        .into_iter()
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.clone(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f
                    .get(5)
                    .filter(|h| !h.is_empty())
                    .cloned()
                    .unwrap_or_else(|| "/".into()),
            })
        })
        .collect()
}

fn groups(root: &Root) -> Vec<GroupEntry> {
    read_lines(root, "etc/group")
        .into_iter()
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.clone(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user[:group]` in `root`. With `supplementary`, the groups
/// that list the user are added (what `USER` does for processes).
pub fn resolve(root: &Root, spec: &str, supplementary: bool) -> Result<Identity, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(root);
    let (uid, entry) = match user.parse::<u32>() {
        Ok(uid) => (uid, users.iter().find(|e| e.uid == uid)),
        Err(_) => {
            let entry = users
                .iter()
                .find(|e| e.name == user)
                .ok_or_else(|| UserError::NoUser(user.to_string()))?;
            (entry.uid, Some(entry))
        }
    };
    let primary = entry.map_or(0, |e| e.gid);
    let name = entry.map(|e| e.name.clone());
    let home = entry.map_or_else(|| "/".to_string(), |e| e.home.clone());
    let all_groups = groups(root);
    let gid = match group {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                all_groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| UserError::NoGroup(g.to_string()))?
                    .gid
            }
        },
    };
    let mut extra = Vec::new();
    if supplementary && group.is_none() {
        if let Some(name) = name {
            extra = all_groups
                .iter()
                .filter(|g| g.members.contains(&name) && g.gid != gid)
                .map(|g| g.gid)
                .collect();
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups: extra,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        let root = Root::open(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let (_dir, root) = root_with(
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            "root:x:0:\nalice:x:1000:\nstaff:x:50:alice,bob\n",
        );
        let alice = resolve(&root, "alice", true).unwrap();
        assert_eq!((alice.uid, alice.gid, alice.groups), (1000, 1000, vec![50]));
        let pair = resolve(&root, "alice:staff", true).unwrap();
        assert_eq!((pair.uid, pair.gid, pair.groups.len()), (1000, 50, 0));
        assert_eq!(alice.home, "/home/alice");
        assert_eq!(resolve(&root, "0", true).unwrap().home, "/root");
        let number = resolve(&root, "4242", true).unwrap();
        assert_eq!(
            (number.uid, number.gid, number.home.as_str()),
            (4242, 0, "/")
        );
        assert_eq!(resolve(&root, "1000:7", false).unwrap().gid, 7);
        assert!(matches!(
            resolve(&root, "mallory", true),
            Err(UserError::NoUser(_))
        ));
        assert!(matches!(
            resolve(&root, "alice:nogroup", true),
            Err(UserError::NoGroup(_))
        ));
    }
}
