//! Whether this user can build rootless, check by check, each failure with
//! the exact command or setting that fixes it (`kbuild doctor` lists them;
//! [`super::decide`] stops at the first).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::subids::{self, Range};
use super::Mapping;

/// The check of subordinate ids (auto mode skips rootless without them).
pub const SUBIDS: &str = "subordinate ids";
/// The check of the sysctls: advisory, since an AppArmor profile may
/// allow kbuild what the sysctl forbids others (the attempt decides).
pub const USERNS: &str = "user namespaces";
pub const SUBUID_FILE: &str = "/etc/subuid";
pub const SUBGID_FILE: &str = "/etc/subgid";
/// How to get `newuidmap`/`newgidmap`.
pub const UIDMAP_FIX: &str = "install newuidmap and newgidmap, setuid root: `sudo apt-get install uidmap` (Debian, Ubuntu) or `sudo dnf install shadow-utils` (Fedora)";
/// What allows unprivileged user namespaces where a distribution restricts them.
pub const USERNS_FIX: &str = "allow unprivileged user namespaces: `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 23.10+, or give kbuild an AppArmor profile with `userns,`), `sudo sysctl -w kernel.unprivileged_userns_clone=1` (older Debian), `sudo sysctl -w user.max_user_namespaces=15000` (where it is 0)";
/// Namespace-local overlayfs (`userxattr`) came with this kernel.
const OVERLAY_KERNEL: (u32, u32) = (5, 11);
/// Ids an image commonly uses (0..65535, with nobody at 65534).
const WANTED_IDS: u64 = 65536;

/// One prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.detail)
    }
}

/// Every prerequisite of rootless mode for one user.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub checks: Vec<Check>,
    user: String,
    uid: u32,
    gid: u32,
    uids: Vec<Range>,
    gids: Vec<Range>,
    newuidmap: Option<PathBuf>,
    newgidmap: Option<PathBuf>,
}

impl Readiness {
    /// The checks for the user running this process.
    pub fn of_this_user() -> Self {
        let uid = rustix::process::getuid().as_raw();
        // newgidmap maps only the passwd entry's group, whatever the
        // current one (`sg`, `newgrp`) is.
        let (user, gid) = passwd_entry(uid)
            .unwrap_or_else(|| (uid.to_string(), rustix::process::getgid().as_raw()));
        let uids = subids::ranges(Path::new(SUBUID_FILE), &user, uid).unwrap_or_default();
        let gids = subids::ranges(Path::new(SUBGID_FILE), &user, uid).unwrap_or_default();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let newuidmap = find_program("newuidmap", &path);
        let newgidmap = find_program("newgidmap", &path);
        let mut checks = vec![subids_check(&user, &uids, &gids)];
        checks.push(uidmap_check(&newuidmap, &newgidmap));
        checks.push(userns_check(Path::new("/proc/sys")));
        checks.push(kernel_check(
            &rustix::system::uname().release().to_string_lossy(),
        ));
        Readiness {
            checks,
            user,
            uid,
            gid,
            uids,
            gids,
            newuidmap,
            newgidmap,
        }
    }

    /// The first failed check that rules rootless mode out; the sysctl
    /// check does not (entering the namespace then tells).
    pub fn first_blocking_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok && c.name != USERNS)
    }

    /// The maps to use, when the ids and the tools are there.
    pub fn mapping(&self) -> Option<Mapping> {
        Some(Mapping {
            user: self.user.clone(),
            uid: self.uid,
            gid: self.gid,
            uids: (!self.uids.is_empty()).then(|| self.uids.clone())?,
            gids: (!self.gids.is_empty()).then(|| self.gids.clone())?,
            newuidmap: self.newuidmap.clone()?,
            newgidmap: self.newgidmap.clone()?,
        })
    }
}

fn subids_check(user: &str, uids: &[Range], gids: &[Range]) -> Check {
    let fix = format!(
        "give {user} subordinate ids (a range no other user has): `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"
    );
    let (ok, detail) = match (uids.is_empty(), gids.is_empty()) {
        (true, _) => (false, format!("{user} has no range in {SUBUID_FILE}")),
        (_, true) => (false, format!("{user} has no range in {SUBGID_FILE}")),
        _ => {
            let (u, g) = (subids::mapped(uids), subids::mapped(gids));
            if u.min(g) < WANTED_IDS {
                (
                    true,
                    format!(
                        "{u} uids and {g} gids mapped: images using ids from {} up cannot be built",
                        u.min(g)
                    ),
                )
            } else {
                (true, format!("{u} uids and {g} gids mapped"))
            }
        }
    };
    Check {
        name: SUBIDS,
        ok,
        detail,
        fix: (!ok).then_some(fix),
    }
}

fn uidmap_check(newuidmap: &Option<PathBuf>, newgidmap: &Option<PathBuf>) -> Check {
    let problem = [("newuidmap", newuidmap), ("newgidmap", newgidmap)]
        .into_iter()
        .find_map(|(name, found)| match found {
            None => Some(format!("{name} is not on PATH")),
            Some(path) if !is_privileged(path) => Some(format!(
                "{} is neither setuid root nor given file capabilities",
                path.display()
            )),
            Some(_) => None,
        });
    Check {
        name: "newuidmap",
        ok: problem.is_none(),
        detail: problem
            .clone()
            .unwrap_or_else(|| "newuidmap and newgidmap are installed".into()),
        fix: problem.map(|_| UIDMAP_FIX.to_string()),
    }
}

/// The sysctls that forbid unprivileged user namespaces, read under `sys`
/// (`/proc/sys`).
pub fn userns_check(sys: &Path) -> Check {
    let read = |name: &str| {
        std::fs::read_to_string(sys.join(name))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let problem = [
        (
            "kernel/unprivileged_userns_clone",
            0,
            "kernel.unprivileged_userns_clone=1",
        ),
        (
            "user/max_user_namespaces",
            0,
            "user.max_user_namespaces=15000",
        ),
        (
            "kernel/apparmor_restrict_unprivileged_userns",
            1,
            "kernel.apparmor_restrict_unprivileged_userns=0",
        ),
    ]
    .into_iter()
    .find(|(name, forbidding, _)| read(name) == Some(*forbidding));
    match problem {
        None => Check {
            name: USERNS,
            ok: true,
            detail: "unprivileged user namespaces are allowed".into(),
            fix: None,
        },
        Some((name, value, setting)) => Check {
            name: USERNS,
            ok: false,
            detail: format!(
                "{} is {value}: the kernel refuses unprivileged user namespaces",
                name.replace('/', ".")
            ),
            fix: Some(format!(
                "`sudo sysctl -w {setting}` (and in /etc/sysctl.d to keep it)"
            )),
        },
    }
}

fn kernel_check(release: &str) -> Check {
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    let ok = match version.as_slice() {
        [major, minor] => (*major, *minor) >= OVERLAY_KERNEL,
        _ => true,
    };
    Check {
        name: "overlayfs in a user namespace",
        ok,
        detail: match ok {
            true => format!("Linux {release} mounts overlayfs with userxattr"),
            false => format!("Linux {release} is older than 5.11"),
        },
        fix: (!ok).then(|| "run Linux 5.11 or newer, or build as root".to_string()),
    }
}

fn find_program(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Setuid root, or file capabilities.
fn is_privileged(path: &Path) -> bool {
    let setuid_root = path
        .metadata()
        .is_ok_and(|m| m.uid() == 0 && m.permissions().mode() & 0o4000 != 0);
    setuid_root || rustix::fs::getxattr(path, "security.capability", &mut [0u8; 64]).is_ok()
}

/// The user's name and primary group from the passwd database (NSS
/// included).
fn passwd_entry(uid: u32) -> Option<(String, u32)> {
    let mut buffer = vec![0 as libc::c_char; 16384];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r fills it
    // with pointers into `buffer`, which outlives their use below.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points to a NUL-terminated string inside `buffer`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some((name.to_string_lossy().into_owned(), entry.pw_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_restricting_sysctl_is_named_with_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["kernel", "user"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("user/max_user_namespaces"), "63000\n").unwrap();
        assert!(userns_check(dir.path()).ok);
        std::fs::write(
            dir.path()
                .join("kernel/apparmor_restrict_unprivileged_userns"),
            "1\n",
        )
        .unwrap();
        let check = userns_check(dir.path());
        assert!(!check.ok);
        assert!(
            check
                .detail
                .contains("kernel.apparmor_restrict_unprivileged_userns is 1"),
            "{}",
            check.detail
        );
        assert_eq!(
            check.fix.as_deref(),
            Some("`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (and in /etc/sysctl.d to keep it)")
        );
        std::fs::write(dir.path().join("kernel/unprivileged_userns_clone"), "0\n").unwrap();
        assert!(userns_check(dir.path())
            .fix
            .unwrap()
            .contains("kernel.unprivileged_userns_clone=1"));
    }

    #[test]
    fn no_subordinate_ids_names_the_usermod_command() {
        let check = subids_check("alice", &[], &[]);
        assert!(!check.ok);
        assert_eq!(check.detail, "alice has no range in /etc/subuid");
        assert!(check
            .fix
            .unwrap()
            .contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice"));
        let one = [Range {
            start: 100000,
            count: 65536,
        }];
        assert!(subids_check("alice", &one, &one).ok);
    }

    #[test]
    fn kernels_before_5_11_have_no_namespaced_overlayfs() {
        assert!(kernel_check("6.1.0-18-amd64").ok);
        assert!(kernel_check("5.11.0").ok);
        assert!(!kernel_check("5.10.0-28-amd64").ok);
    }
}
