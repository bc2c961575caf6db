//! Ordinary users for the rootless suite, made by the test (CI runs as
//! root): one with subordinate ids, one without. `User::run` makes every
//! `common::kbuild` call inside it run as that user, so the shared fixture
//! helpers (base import, stand-in images) build the user's own store.

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// An ordinary account and its copy of the kbuild binary (the checkout
/// may sit where the user cannot read it).
#[derive(Debug)]
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    kbuild: PathBuf,
}

thread_local! {
    static ACTING: Cell<Option<&'static User>> = const { Cell::new(None) };
}

/// The user `common::kbuild` runs as on this thread, if any.
pub fn acting() -> Option<&'static User> {
    ACTING.with(Cell::get)
}

/// `kbuild-rootless`, with subordinate ids.
pub fn with_subids() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| User::ensure("kbuild-rootless", true))
}

/// `kbuild-nosubids`, with none.
pub fn without_subids() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| User::ensure("kbuild-nosubids", false))
}

fn run(program: &str, args: &[&str]) -> String {
    super::run_ok(program, args)
}

fn subid_lines(file: &str, name: &str) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
        .collect()
}

impl User {
    /// Creates the account unless it exists, and gives it subordinate ids
    /// or takes them away.
    fn ensure(name: &'static str, subids: bool) -> User {
        let exists = Command::new("id")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            run(
                "useradd",
                &["--create-home", "--user-group", "--shell", "/bin/sh", name],
            );
        }
        let has = !subid_lines("/etc/subuid", name).is_empty()
            && !subid_lines("/etc/subgid", name).is_empty();
        if subids && !has {
            run(
                "usermod",
                &[
                    "--add-subuids",
                    "400000-465535",
                    "--add-subgids",
                    "400000-465535",
                    name,
                ],
            );
        }
        if !subids {
            for (file, flag) in [
                ("/etc/subuid", "--del-subuids"),
                ("/etc/subgid", "--del-subgids"),
            ] {
                for line in subid_lines(file, name) {
                    let fields: Vec<u64> = line
                        .split(':')
                        .skip(1)
                        .filter_map(|f| f.parse().ok())
                        .collect();
                    if let [start, count] = fields[..] {
                        let range = format!("{start}-{}", start + count - 1);
                        run("usermod", &[flag, &range, name]);
                    }
                }
            }
        }
        let id = |flag: &str| run("id", &[flag, name]).trim().parse::<u32>().unwrap();
        let passwd = run("getent", &["passwd", name]);
        let home = PathBuf::from(passwd.trim().split(':').nth(5).unwrap());
        let user = User {
            name,
            uid: id("-u"),
            gid: id("-g"),
            kbuild: home.join("bin/kbuild"),
            home,
        };
        let bin = user.home.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_kbuild"), &user.kbuild).unwrap();
        std::fs::set_permissions(&user.kbuild, std::fs::Permissions::from_mode(0o755)).unwrap();
        user.give(&bin);
        user
    }

    /// kbuild with `args`, as this user, in a clean environment (HOME is
    /// the user's, so the default store is under it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(&self.kbuild)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.home)
            .env("USER", self.name)
            .current_dir(&self.home);
        command
    }

    /// Runs `work` with every `common::kbuild` call of this thread made as
    /// this user.
    pub fn run<T>(&'static self, work: impl FnOnce() -> T) -> T {
        let before = ACTING.with(|a| a.replace(Some(self)));
        let result = work();
        ACTING.with(|a| a.set(before));
        result
    }

    /// A fresh directory of this user's, removed when dropped.
    pub fn tempdir(&self, prefix: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.home)
            .unwrap();
        self.give(dir.path());
        dir
    }

    /// Makes `path` and everything below it this user's.
    pub fn give(&self, path: &Path) {
        run(
            "chown",
            &[
                "-R",
                &format!("{}:{}", self.uid, self.gid),
                path.to_str().unwrap(),
            ],
        );
    }
}
