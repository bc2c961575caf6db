//! Fixtures shared by the integration tests, built once per run under
//! `target/fixtures/` (a file lock makes parallel test binaries wait for
//! one builder instead of racing).

#![allow(dead_code)]

pub mod builds;
pub mod evil_tar;
pub mod harness;
pub mod hostile;
pub mod http;
pub mod registry;
pub mod rootless;
pub mod seed;
pub mod standins;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The tools an integration test needs; CI installs them (ci/setup.sh).
pub fn require(tools: &[&str]) {
    for tool in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is missing: run ci/setup.sh");
    }
}

/// `mmdebstrap --variant=minbase bookworm` as a tarball, built once.
pub fn debian_tarball() -> PathBuf {
    debian_tarball_for("amd64")
}

/// The same for `arch` (an arm64 one on an amd64 host runs its package
/// scripts through qemu-user's binfmt_misc handler), built once.
pub fn debian_tarball_for(arch: &str) -> PathBuf {
    let dir = root().join("target/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let name = match arch {
        "amd64" => "debian-minbase-bookworm".to_string(),
        other => format!("debian-minbase-bookworm-{other}"),
    };
    let tarball = dir.join(format!("{name}.tar"));
    if !tarball.exists() {
        require(&["mmdebstrap"]);
        let partial = dir.join(format!("{name}.partial.tar"));
        let status = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--quiet", "--mode=root"])
            .arg(format!("--arch={arch}"))
            .arg("bookworm")
            .arg(&partial)
            .status()
            .expect("run mmdebstrap");
        assert!(status.success(), "mmdebstrap --arch={arch} failed");
        std::fs::rename(&partial, &tarball).unwrap();
    }
    tarball
}

/// A suite's shared fixture, built by the first test that needs it. A
/// failure is kept, so the other tests fail at once with it instead of
/// building it again.
pub fn shared<T>(
    cell: &'static std::sync::OnceLock<Result<T, String>>,
    what: &str,
    build: fn() -> T,
) -> &'static T {
    let built = cell.get_or_init(|| {
        std::panic::catch_unwind(build).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match built {
        Ok(fixture) => fixture,
        Err(message) => panic!("the shared {what} could not be built: {message}"),
    }
}

/// Runs kbuild (as the user of `rootless::User::run`, inside one).
pub fn kbuild(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = match rootless::acting() {
        Some(user) => user.command(args),
        None => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_kbuild"));
            cmd.args(args);
            cmd
        }
    };
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run kbuild")
}

/// Runs `command` to its end, killing it after `limit` (a hang fails the
/// test instead of stalling the run).
pub fn output_within(mut command: Command, limit: std::time::Duration) -> Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("still running after {limit:?}");
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    watchdog.join().expect("the command hung");
    out
}

/// Runs a host program (an outside judge) and returns its stdout; its
/// failure fails the test with its stderr.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kbuild failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every entry under `root` (symlinks not followed), except `skip` and what
/// is below it: (path relative to `root`, full path, metadata).
pub fn walk(root: &Path, skip: Option<&Path>) -> Vec<(String, PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if Some(path.as_path()) == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, path, meta));
        }
    }
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// path -> "type mode uid gid content-or-target xattrs"
pub type Tree = BTreeMap<String, String>;

/// Every entry under `root` with its type, content hash or link target,
/// mode, owner and xattrs.
pub fn disk_tree(root: &Path) -> Tree {
    use std::os::unix::fs::FileTypeExt;
    walk(root, None)
        .into_iter()
        .map(|(name, path, meta)| {
            use std::os::unix::fs::MetadataExt;
            let ft = meta.file_type();
            let what = if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_char_device() || ft.is_block_device() {
                let kind = if ft.is_char_device() { "Char" } else { "Block" };
                let dev = rustix::fs::Dev::from(meta.rdev());
                format!(
                    "dev {kind} {}:{}",
                    rustix::fs::major(dev),
                    rustix::fs::minor(dev)
                )
            } else if ft.is_fifo() {
                "fifo".to_string()
            } else {
                format!("file {}", sha256_hex(&std::fs::read(&path).unwrap()))
            };
            let mut xattrs: Vec<String> = if ft.is_symlink() {
                Vec::new()
            } else {
                kbuild::layer::read_xattrs(&path)
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(&k), sha256_hex(&v)))
                    .collect()
            };
            xattrs.sort();
            let attrs = format!(
                "mode={:o} uid={} gid={}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            );
            (name, format!("{what} {attrs} xattrs={xattrs:?}"))
        })
        .collect()
}

/// Copies the shipped project (kbuild.yaml, images, flavors, packages,
/// templates) into `dir`, to change or break on purpose.
pub fn copy_project(dir: &Path) {
    for sub in ["images", "flavors", "packages", "templates"] {
        copy_dir(&root().join(sub), &dir.join(sub));
    }
    std::fs::copy(root().join("kbuild.yaml"), dir.join("kbuild.yaml")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// `<path>.sha256`, as kbuild writes beside each artifact.
pub fn sums_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}
