//! Rootless mode: kbuild run by an ordinary user re-executes itself in a
//! new user namespace (and mount namespace) in which the user is uid 0 and
//! the user's subordinate ids (`/etc/subuid`, `/etc/subgid`) are 1 and up,
//! mapped by the setuid `newuidmap`/`newgidmap`.
//!
//! Inside it, every code path is the root one: extraction chowns to image
//! ids (stored on disk as the mapped subordinate ids), overlayfs mounts with
//! `userxattr`, the sandbox makes its own namespaces, and layers record the
//! ids as the namespace sees them, which are the image's. That is why a
//! rootless build gives the root build's digests.
//!
//! Invariants:
//! * The namespace is entered once, by the whole kbuild process, before the
//!   command runs; the outer process only maps the ids, forwards SIGINT and
//!   SIGTERM, and exits with the inner one's status.
//! * The inner process dies with the outer one (`PR_SET_PDEATHSIG`).
//! * Nothing here grants more than the user has: the kernel confines the
//!   namespace's root to the user's own files and its mapped ids (see the
//!   security model in docs/ARCHITECTURE.md).

mod probe;
pub mod readiness;
pub mod subids;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

pub use probe::{probe_main, probe_overlay, PROBE_ARG};
pub use readiness::{Check, Readiness};

/// When rootless mode is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// When not root and the user has subordinate ids.
    Auto,
    /// Always when not root; missing prerequisites are an error.
    Required,
}

/// What the command should do before it runs.
#[derive(Debug)]
pub enum Decision {
    /// Run here: root, or already inside kbuild's user namespace.
    Here,
    /// Run here without privileges: no subordinate ids (auto mode), so an
    /// uncached step fails with a hint naming the fix.
    Unprivileged,
    /// Re-execute inside a user namespace with these maps.
    Enter(Mapping),
}

/// The user and the ids the namespace maps.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub uids: Vec<subids::Range>,
    pub gids: Vec<subids::Range>,
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("rootless mode is not ready: {0}")]
    NotReady(Check),
    #[error("cannot create a user namespace: {0}")]
    Unshare(#[source] io::Error),
    #[error("{tool} failed for the user namespace: {detail}")]
    Map { tool: &'static str, detail: String },
    #[error("cannot start kbuild in a user namespace: {0}")]
    Spawn(#[source] io::Error),
}

impl RootlessError {
    /// The exact command or setting that fixes it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RootlessError::NotReady(check) => check.fix.clone(),
            RootlessError::Unshare(_) => Some(readiness::USERNS_FIX.to_string()),
            RootlessError::Map { .. } => Some(format!(
                "check the ranges in /etc/subuid and /etc/subgid; {}",
                readiness::UIDMAP_FIX
            )),
            RootlessError::Spawn(_) => None,
        }
    }
}

/// Whether this process runs in a user namespace other than the initial
/// one (where uid 0..2^32-1 maps to itself). Read once.
pub fn in_user_namespace() -> bool {
    static NESTED: OnceLock<bool> = OnceLock::new();
    *NESTED.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        })
    })
}

/// Decides how the command runs for this process's user.
pub fn decide(want: Want) -> Result<Decision, RootlessError> {
    if rustix::process::geteuid().is_root() {
        return Ok(Decision::Here);
    }
    let readiness = Readiness::of_this_user();
    match (readiness.first_blocking_failure(), want) {
        (None, _) => Ok(Decision::Enter(
            readiness.mapping().expect("a ready user has a mapping"),
        )),
        (Some(check), Want::Required) => Err(RootlessError::NotReady(check.clone())),
        // Without subordinate ids auto mode stays out of the way.
        (Some(check), Want::Auto) if check.name == readiness::SUBIDS => Ok(Decision::Unprivileged),
        (Some(check), Want::Auto) => Err(RootlessError::NotReady(check.clone())),
    }
}

/// Runs this same command line again inside a new user and mount
/// namespace with `mapping`, and waits for it. Returns its exit status.
pub fn enter(mapping: &Mapping) -> Result<ExitStatus, RootlessError> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut command = Command::new("/proc/self/exe");
    command
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let child = spawn_mapped(command, mapping)?;
    let forwarder = forward_signals(child.id());
    let status = wait(child);
    drop(forwarder);
    status
}

/// Forwards SIGINT and SIGTERM to `pid` for as long as the guard lives;
/// kbuild's own handler in the inner process then stops the job cleanly.
fn forward_signals(pid: u32) -> Option<std::thread::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .ok()?;
    let (mut int, mut term) = runtime
        .block_on(async {
            Ok::<_, io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .ok()?;
    let target = rustix::process::Pid::from_raw(pid as i32)?;
    Some(std::thread::spawn(move || {
        runtime.block_on(async {
            loop {
                let signal = tokio::select! {
                    _ = int.recv() => rustix::process::Signal::INT,
                    _ = term.recv() => rustix::process::Signal::TERM,
                };
                if rustix::process::kill_process(target, signal).is_err() {
                    break;
                }
            }
        })
    }))
}

fn wait(mut child: std::process::Child) -> Result<ExitStatus, RootlessError> {
    loop {
        match child.wait() {
            Ok(status) => return Ok(status),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RootlessError::Spawn(e)),
        }
    }
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal) as u8,
        _ => 1,
    }
}

/// Spawns `command` in new user and mount namespaces. The child stops
/// before exec until a thread of this process has written its id maps
/// (`spawn` itself waits for the exec, so the maps cannot be written after
/// it returns). When mapping fails the thread kills the child, which
/// would otherwise wait forever: it inherited the go pipe's write end.
pub(crate) fn spawn_mapped(
    mut command: Command,
    mapping: &Mapping,
) -> Result<std::process::Child, RootlessError> {
    let (mut ready_reader, ready_writer) = io::pipe().map_err(RootlessError::Spawn)?;
    let (go_reader, mut go_writer) = io::pipe().map_err(RootlessError::Spawn)?;
    let ready_fd = OwnedFd::from(ready_writer);
    let go_fd = OwnedFd::from(go_reader);
    let (ready_raw, go_raw) = (ready_fd.as_raw_fd(), go_fd.as_raw_fd());
    let parent = rustix::process::getpid();
    // SAFETY: between fork and exec only async-signal-safe calls: prctl,
    // getppid, unshare, getpid, write and read on descriptors the child
    // owns; errors are made from raw errnos, without allocating.
    unsafe {
        command.pre_exec(move || enter_in_child(parent, ready_raw, go_raw));
    }
    let maps = mapping.clone();
    let mapper = std::thread::spawn(move || {
        let mut pid = [0u8; 4];
        ready_reader
            .read_exact(&mut pid)
            .map_err(RootlessError::Spawn)?;
        let pid = u32::from_ne_bytes(pid);
        let mapped = write_maps(pid, &maps);
        match &mapped {
            Ok(()) => go_writer.write_all(GO).map_err(RootlessError::Spawn)?,
            Err(_) => {
                if let Some(child) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(child, rustix::process::Signal::KILL);
                }
            }
        }
        mapped
    });
    let spawned = command.spawn();
    drop(command);
    drop(ready_fd);
    drop(go_fd);
    let mapped = mapper.join().unwrap_or_else(|_| {
        Err(RootlessError::Spawn(io::Error::other(
            "the id mapper panicked",
        )))
    });
    match (spawned, mapped) {
        (Ok(child), Ok(())) => Ok(child),
        (Ok(mut killed), Err(error)) => {
            let _ = killed.wait();
            Err(error)
        }
        (Err(_), Err(error @ RootlessError::Map { .. })) => Err(error),
        (Err(spawn_error), _)
            if spawn_error.kind() == io::ErrorKind::PermissionDenied
                || spawn_error.raw_os_error() == Some(libc::ENOSPC) =>
        {
            Err(RootlessError::Unshare(spawn_error))
        }
        (Err(spawn_error), _) => Err(RootlessError::Spawn(spawn_error)),
    }
}

/// The byte that tells the child its maps are written.
const GO: &[u8] = b"1";

/// In the forked child: die with kbuild (or at once if it is already
/// gone), unshare, tell the parent our pid, wait for its go.
fn enter_in_child(parent: rustix::process::Pid, ready: i32, go: i32) -> io::Result<()> {
    use rustix::thread::UnshareFlags;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
    if rustix::process::getppid() != Some(parent) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: the child is single-threaded and about to exec.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS)? };
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    // SAFETY: the descriptors are the child's copies, valid until exec.
    let (ready, go) = unsafe {
        (
            std::os::fd::BorrowedFd::borrow_raw(ready),
            std::os::fd::BorrowedFd::borrow_raw(go),
        )
    };
    rustix::io::write(ready, &pid.to_ne_bytes())?;
    let mut byte = [0u8; 1];
    match rustix::io::read(go, &mut byte)? {
        1 if byte == GO => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

/// Runs `newuidmap` and `newgidmap` for `pid`.
fn write_maps(pid: u32, mapping: &Mapping) -> Result<(), RootlessError> {
    for (tool, path, own, ranges) in [
        ("newuidmap", &mapping.newuidmap, mapping.uid, &mapping.uids),
        ("newgidmap", &mapping.newgidmap, mapping.gid, &mapping.gids),
    ] {
        let output = Command::new(path)
            .arg(pid.to_string())
            .args(subids::map_args(own, ranges))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RootlessError::Map {
                tool,
                detail: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(RootlessError::Map {
                tool,
                detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}
