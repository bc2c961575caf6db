//! Running a build step's command in a sandbox over an overlayfs snapshot.
//!
//! kbuild re-executes itself as a helper (`kbuild __sandbox SPEC`) in new
//! mount, pid, uts and ipc namespaces (and a network namespace for
//! `--network=none`). The helper mounts the overlay (lower = the parent's
//! snapshots, upper = a fresh dir of the step), a minimal `/dev`, `/proc`,
//! read-only `/sys`, the host's `resolv.conf` and `hosts` and the step's
//! `--mount`s, then starts the command as PID 1 of the new pid namespace
//! after `pivot_root` ([`Isolation::Builtin`]), or hands the prepared root
//! to runc ([`Isolation::Oci`]).
//!
//! Invariants:
//! * Every mount lives in the helper's private mount namespace, which dies
//!   with its last process; nothing is ever mounted in the host's.
//! * The helper runs in its own session and dies with kbuild
//!   (`PR_SET_PDEATHSIG`); the command dies with the helper, and every
//!   process of the pid namespace dies with the command (PID 1). Killing
//!   the helper's process group therefore ends the whole step.
//! * Mount targets missing from the image are created as stubs before the
//!   command runs and removed from the upper dir after, unless the command
//!   put something there: a secret's mount point never reaches a layer.

mod confine;
pub mod helper;
mod oci;
pub mod overlay;
pub mod users;

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The argument that makes the kbuild binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox";
/// The helper's exit code when it could not set the sandbox up.
const SETUP_FAILED: i32 = 125;
/// Where the helper writes the host pid of the step's PID 1.
const PID1_FILE: &str = "pid1";
/// How long a killed step may take to be gone entirely.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Output lines kept for the failure message.
pub const TAIL_LINES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    Host,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// kbuild's own namespaces and pivot_root.
    Builtin,
    /// An OCI runtime (runc) at this path, given an `oci-spec` bundle.
    Oci { runtime: PathBuf },
}

/// What a mount reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A host file or directory (build context, cache dir, secret).
    Path(PathBuf),
    /// A path inside a layered tree (another stage or an image): snapshot
    /// names under [`Spec::snapshots`], top first.
    Layers {
        snapshots: Vec<String>,
        subpath: String,
    },
    Tmpfs {
        size: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path in the container.
    pub target: String,
    pub source: MountSource,
    /// Writable mounts of a path or layers get a throwaway overlay upper,
    /// so the source itself never changes (cache mounts excepted).
    pub read_only: bool,
    /// Write straight to the source (cache mounts).
    pub persistent: bool,
}

/// Everything the helper needs, passed as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The directory holding the snapshots named in `lowers`.
    pub snapshots: PathBuf,
    /// The parent's snapshots, top first.
    pub lowers: Vec<String>,
    /// The step's own directory: `upper/`, `work/`, `merged/`, mount scratch.
    pub step_dir: PathBuf,
    pub mounts: Vec<Mount>,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `USER` as written: `name`, `uid`, `name:group` ...
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub isolation: Isolation,
}

impl Spec {
    pub fn upper(&self) -> PathBuf {
        self.step_dir.join("upper")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the sandbox helper: {0}")]
    Spawn(#[source] io::Error),
    #[error("cannot set up the sandbox: {what}")]
    Setup {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

/// Why the helper could not set a step up. It crosses from the helper
/// process to kbuild as JSON, so it keeps the errno rather than the error.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct SetupFailure {
    /// What the helper was doing.
    pub what: String,
    pub errno: Option<i32>,
    pub detail: String,
}

impl SetupFailure {
    pub fn io(what: &str, error: io::Error) -> Self {
        SetupFailure {
            what: what.to_string(),
            errno: error.raw_os_error(),
            detail: error.to_string(),
        }
    }

    pub fn other(what: &str, detail: impl std::fmt::Display) -> Self {
        SetupFailure {
            what: what.to_string(),
            errno: None,
            detail: detail.to_string(),
        }
    }
}

impl From<SetupFailure> for SandboxError {
    fn from(failure: SetupFailure) -> Self {
        let source = match failure.errno {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::other(failure.detail),
        };
        SandboxError::Setup {
            what: failure.what,
            source,
        }
    }
}

impl SandboxError {
    /// What the user can do about it (the CLI prints it on a `hint:` line).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SandboxError::Setup { source, .. }
                if source.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) =>
            {
                Some("the sandbox needs root or kbuild's rootless mode (overlayfs, namespaces): run kbuild as root, or see `kbuild doctor` for rootless readiness")
            }
            SandboxError::Setup { .. } => Some(
                "the kernel needs overlayfs and mount, pid, uts and ipc namespaces; `--isolation oci` uses runc instead",
            ),
            _ => None,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, or 128 + signal number.
    pub code: i32,
    /// The last [`TAIL_LINES`] lines of output.
    pub tail: Vec<String>,
}

/// Set from a signal handler to stop the running steps.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A path entry the helper created before the command ran (a mount stub or
/// a directory copied up to hold one), with its metadata at that moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stub {
    pub path: PathBuf,
    pub is_dir: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the step described by `spec` through `helper` (the kbuild
/// executable); every output line goes to `output`. Returns once every
/// process of the step is gone and the stubs are removed from the upper
/// dir.
pub fn run(
    spec: &Spec,
    helper: &Path,
    output: &mut dyn FnMut(&str),
    cancel: &Cancel,
) -> Result<Outcome, SandboxError> {
    for dir in ["upper", "work", "merged"] {
        let path = spec.step_dir.join(dir);
        fs::create_dir_all(&path).map_err(io_at(&path))?;
    }
    let spec_path = spec.step_dir.join("spec.json");
    let json = serde_json::to_vec(spec).expect("a spec serializes");
    fs::write(&spec_path, json).map_err(io_at(&spec_path))?;
    let (reader, writer) = io::pipe().map_err(SandboxError::Spawn)?;
    let mut command = Command::new(helper);
    command
        .arg(HELPER_ARG)
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(SandboxError::Spawn)?)
        .stderr(writer);
    let network = spec.network;
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        command.pre_exec(move || enter_namespaces(network));
    }
    let mut child = command.spawn().map_err(SandboxError::Spawn)?;
    drop(command);
    let helper = rustix::process::Pid::from_child(&child);
    let (lines_tx, lines_rx) = mpsc::channel();
    let pump = std::thread::spawn(move || {
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            if lines_tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut keep = |line: String, output: &mut dyn FnMut(&str)| {
        output(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let mut interrupted = false;
    let status = loop {
        match lines_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => keep(line, output),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The output is closed but the helper not yet reaped.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
        if cancel.is_cancelled() && !interrupted {
            interrupted = true;
            let _ = rustix::process::kill_process_group(helper, rustix::process::Signal::KILL);
        }
        if let Some(status) = child.try_wait().map_err(SandboxError::Spawn)? {
            break status;
        }
    };
    // The pipe closes once the last process holding it is gone.
    let _ = pump.join();
    for line in lines_rx.try_iter() {
        keep(line, output);
    }
    if interrupted {
        wait_for_namespace_end(&spec.step_dir);
    }
    remove_stubs(spec)?;
    if interrupted {
        return Err(SandboxError::Interrupted);
    }
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if code == SETUP_FAILED {
        if let Ok(json) = fs::read(spec.step_dir.join("error")) {
            if let Ok(failure) = serde_json::from_slice::<SetupFailure>(&json) {
                return Err(failure.into());
            }
        }
    }
    Ok(Outcome {
        code,
        tail: tail.into(),
    })
}

/// After a kill: SIGKILL is delivered at once but processes end
/// asynchronously. PID 1 of a pid namespace finishes exiting only once
/// every other process of it has been reaped, so waiting for PID 1 to be
/// gone (or a zombie) waits for the whole step.
fn wait_for_namespace_end(step_dir: &Path) {
    let Ok(pid) = fs::read_to_string(step_dir.join(PID1_FILE)) else {
        return;
    };
    let stat = format!("/proc/{}/stat", pid.trim());
    let deadline = std::time::Instant::now() + KILL_GRACE;
    while std::time::Instant::now() < deadline {
        let state = fs::read_to_string(&stat)
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().chars().next())
            })
            .flatten();
        if matches!(state, None | Some('Z') | Some('X')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// In the forked child, before exec: its own session (so a terminal's
/// Ctrl-C reaches kbuild only), death with kbuild, new namespaces.
fn enter_namespaces(network: Network) -> io::Result<()> {
    use rustix::thread::UnshareFlags;
    rustix::process::setsid()?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    if network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    // SAFETY: the child is about to exec; no other thread shares its tables.
    unsafe { rustix::thread::unshare_unsafe(flags)? };
    Ok(())
}

/// Removes the helper's stubs from the upper dir, deepest first, where the
/// command left them as they were: an empty dir or file with the same
/// mode and owner. The command had the upper dir in its hands, so every
/// path is opened without following symlinks: a stub whose parent became
/// a link is left alone, and nothing outside the upper dir is touched.
fn remove_stubs(spec: &Spec) -> Result<(), SandboxError> {
    let list = spec.step_dir.join("stubs.json");
    let stubs: Vec<Stub> = match fs::read(&list) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(&list)(e)),
    };
    let upper = spec.upper();
    let root = crate::rootfs::Root::open(&upper).map_err(io_at(&upper))?;
    for stub in stubs.iter().rev() {
        remove_stub(&root, stub);
    }
    Ok(())
}

fn remove_stub(root: &crate::rootfs::Root, stub: &Stub) {
    use rustix::fs::{AtFlags, FileType};
    let (Some(parent), Some(name)) = (stub.path.parent(), stub.path.file_name()) else {
        return;
    };
    let Ok(dir) = root.open_dir_no_follow(parent) else {
        return;
    };
    let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return;
    };
    let unchanged = stat.st_mode & 0o7777 == stub.mode & 0o7777
        && stat.st_uid == stub.uid
        && stat.st_gid == stub.gid;
    if !unchanged {
        return;
    }
    let kind = FileType::from_raw_mode(stat.st_mode);
    if stub.is_dir && kind == FileType::Directory {
        // Fails, as it should, when the command left something inside.
        let _ = rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
    } else if !stub.is_dir && kind == FileType::RegularFile && stat.st_size == 0 {
        let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
    }
}
