//! The sandbox helper: the kbuild binary re-executed in fresh namespaces
//! (see the module above). It is single-threaded, so forking the command
//! from it is safe; it never runs anything from the image itself except
//! the command, and that only after `pivot_root` (or inside runc).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::{MountAttrFlags, MountFlags, UnmountFlags};

use super::overlay::{self, Overlay};
use super::users::{self, Identity};
use super::{Isolation, Mount, MountSource, Network, SetupFailure, Spec, Stub, SETUP_FAILED};
use crate::rootfs::{clean, Root};

/// Runs the helper for the spec at `spec_path`; the exit code is the
/// command's, or [`SETUP_FAILED`] with the reason in `<step_dir>/error`.
pub fn main(spec_path: &Path) -> ExitCode {
    let spec: Spec = match fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("kbuild sandbox: {}: {e}", spec_path.display());
            return ExitCode::from(SETUP_FAILED as u8);
        }
    };
    match run(&spec) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            let json = serde_json::to_vec(&failure).unwrap_or_default();
            let _ = fs::write(spec.step_dir.join("error"), json);
            ExitCode::from(SETUP_FAILED as u8)
        }
    }
}

fn ctx<T>(what: &str, result: io::Result<T>) -> Result<T, SetupFailure> {
    result.map_err(|e| SetupFailure::io(what, e))
}

/// Where a mount's source ends up on the helper's side.
enum MountFrom {
    Bind { source: PathBuf, read_only: bool },
    Tmpfs { size: Option<u64> },
}

/// The step's root as the helper prepared it, before the command runs.
struct Prepared {
    spec: Spec,
    root: Root,
    merged: PathBuf,
    cwd: PathBuf,
    identity: Identity,
    /// Host files bound read-only into the root (resolv.conf, hosts).
    host_files: Vec<&'static str>,
    /// Where each mount's source is, in `spec.mounts` order.
    sources: Vec<MountFrom>,
}

fn run(spec: &Spec) -> Result<u8, SetupFailure> {
    let prepared = prepare(spec)?;
    let status = match &spec.isolation {
        Isolation::Builtin => run_builtin_isolation(prepared)?,
        Isolation::Oci { runtime } => run_oci_isolation(prepared, runtime)?,
    };
    Ok(status
        .code()
        .map(|c| c as u8)
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0) as u8))
}

/// Mounts the overlay, makes the mount points (recording the stubs),
/// resolves the user and prepares every mount's source.
fn prepare(spec: &Spec) -> Result<Prepared, SetupFailure> {
    ctx("make mounts private", overlay::private_namespace())?;
    let merged = spec.step_dir.join("merged");
    let empty = spec.step_dir.join("empty");
    ctx("create the empty lower", fs::create_dir_all(&empty))?;
    ctx(
        "mount the overlay",
        overlay::mount(
            &Overlay {
                snapshots: &spec.snapshots,
                lowers: &spec.lowers,
                upper: Some((spec.upper(), spec.step_dir.join("work"))),
                empty: &empty,
            },
            &merged,
        ),
    )?;
    let root = ctx("open the root", Root::open(&merged))?;
    let mut targets: Vec<(PathBuf, bool)> = ["proc", "dev", "sys"]
        .into_iter()
        .map(|dir| (PathBuf::from(dir), true))
        .collect();
    for mount in &spec.mounts {
        targets.push((clean(&mount.target), is_dir_mount(mount)));
    }
    for (target, is_dir) in &targets {
        ensure_target(&root, target, *is_dir)?;
    }
    // Best effort: an image whose resolv.conf is a dangling symlink keeps it.
    let host_files: Vec<&'static str> = ["etc/resolv.conf", "etc/hosts"]
        .into_iter()
        .filter(|f| Path::new("/").join(f).is_file() && root.touch(Path::new(f)).is_ok())
        .collect();
    record_stubs(spec)?;
    let identity =
        users::resolve(&root, &spec.user, true).map_err(|e| SetupFailure::other("USER", e))?;
    let spec = with_home(spec, &identity);
    let cwd = clean(&spec.cwd);
    ctx(
        &format!("create the working directory /{}", cwd.display()),
        root.mkdir_all(&cwd, 0o755, None),
    )?;
    let sources = spec
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| prepare_source(&spec, i, m, &empty))
        .collect::<Result<Vec<_>, _>>()?;
    ctx(
        "set the hostname",
        rustix::system::sethostname(spec.hostname.as_bytes()).map_err(io::Error::from),
    )?;
    Ok(Prepared {
        spec,
        root,
        merged,
        cwd,
        identity,
        host_files,
        sources,
    })
}

/// kbuild's own isolation: /dev, /proc, /sys and the mounts in place, then
/// the command as PID 1 after `pivot_root`.
fn run_builtin_isolation(prepared: Prepared) -> Result<std::process::ExitStatus, SetupFailure> {
    let Prepared {
        spec,
        root,
        merged,
        cwd,
        identity,
        host_files,
        sources,
    } = prepared;
    mount_system(&root, spec.network)?;
    for file in &host_files {
        let target = ctx(file, root.resolve(Path::new(file)))?;
        bind(&Path::new("/").join(file), &target, true)?;
    }
    for (mount, source) in spec.mounts.iter().zip(&sources) {
        let target = clean(&mount.target);
        ensure_target(&root, &target, is_dir_mount(mount))?;
        let at = ctx(&mount.target, root.resolve(&target))?;
        match source {
            MountFrom::Bind { source, read_only } => bind(source, &at, *read_only)?,
            MountFrom::Tmpfs { size } => tmpfs(&at, *size, 0o1777)?,
        }
    }
    let proc = ctx("/proc", root.resolve(Path::new("proc")))?;
    drop(root);
    run_builtin(&spec, &merged, &proc, &cwd, &identity)
}

/// An OCI runtime: the prepared root and mounts as a bundle's
/// `config.json`, the runtime as PID 1 of the helper's pid namespace.
fn run_oci_isolation(
    prepared: Prepared,
    runtime: &Path,
) -> Result<std::process::ExitStatus, SetupFailure> {
    let Prepared {
        spec,
        root,
        merged,
        identity,
        host_files,
        sources,
        ..
    } = prepared;
    drop(root);
    let bundle = spec.step_dir.join("bundle");
    ctx("create the bundle", fs::create_dir_all(&bundle))?;
    let mounts: Vec<_> = spec.mounts.iter().zip(&sources).map(oci_mount).collect();
    let config = super::oci::runtime_config(&spec, &merged, &identity, &host_files, &mounts)?;
    ctx(
        "write config.json",
        fs::write(bundle.join("config.json"), config),
    )?;
    let name = spec
        .step_dir
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        })
        .unwrap_or_default();
    let mut command = Command::new(runtime);
    command
        .arg("--root")
        .arg(spec.step_dir.join("runc"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("kbuild-{name}"));
    // SAFETY: plain syscalls between fork and exec. The runtime is PID 1
    // of the new pid namespace and needs a /proc that shows it.
    unsafe {
        command.pre_exec(|| pid1_with_proc(Path::new("/proc")));
    }
    let pid1 = open_pid1(&spec)?;
    let mut child = ctx(&format!("start {}", runtime.display()), command.spawn())?;
    record_pid1(pid1, &child)?;
    ctx("wait for the runtime", child.wait())
}

/// HOME from the user's passwd entry unless the image's ENV sets it, as
/// Docker, BuildKit and buildah do.
fn with_home(spec: &Spec, identity: &Identity) -> Spec {
    let mut spec = spec.clone();
    if !spec.env.iter().any(|pair| pair.starts_with("HOME=")) {
        spec.env.push(format!("HOME={}", identity.home));
    }
    spec
}

fn oci_mount((mount, prepared): (&Mount, &MountFrom)) -> super::oci::OciMount {
    match prepared {
        MountFrom::Bind { source, read_only } => super::oci::OciMount::Bind {
            target: mount.target.clone(),
            source: source.clone(),
            read_only: *read_only,
        },
        MountFrom::Tmpfs { size } => super::oci::OciMount::Tmpfs {
            target: mount.target.clone(),
            size: *size,
        },
    }
}

/// A mount takes a directory target unless its source is a file.
fn is_dir_mount(mount: &Mount) -> bool {
    match &mount.source {
        MountSource::Path(p) => !p.is_file(),
        MountSource::Layers { .. } | MountSource::Tmpfs { .. } => true,
    }
}

fn ensure_target(root: &Root, target: &Path, is_dir: bool) -> Result<(), SetupFailure> {
    let what = format!("create mount point /{}", target.display());
    if is_dir {
        ctx(&what, root.mkdir_all(target, 0o755, None).map(|_| ()))
    } else {
        ctx(&what, root.touch(target).map(|_| ()))
    }
}

/// Everything in the upper dir now is there for the mounts: record it so
/// it can be taken out again after the command.
fn record_stubs(spec: &Spec) -> Result<(), SetupFailure> {
    let upper = spec.upper();
    let mut stubs = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        for entry in ctx("list the upper dir", fs::read_dir(&dir))? {
            let entry = ctx("list the upper dir", entry)?;
            let path = rel.join(entry.file_name());
            let meta = ctx("stat a stub", fs::symlink_metadata(upper.join(&path)))?;
            if meta.is_dir() {
                stack.push(path.clone());
            }
            stubs.push(Stub {
                path,
                is_dir: meta.is_dir(),
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    // Parents before children, so removal can go in reverse.
    stubs.sort_by(|a, b| a.path.cmp(&b.path));
    let json = serde_json::to_vec(&stubs).map_err(|e| SetupFailure::other("stubs.json", e))?;
    ctx(
        "write stubs.json",
        fs::write(spec.step_dir.join("stubs.json"), json),
    )
}

/// Resolves a mount's source to something to bind (or a tmpfs).
fn prepare_source(
    spec: &Spec,
    index: usize,
    mount: &Mount,
    empty: &Path,
) -> Result<MountFrom, SetupFailure> {
    let scratch = spec.step_dir.join(format!("mount-{index}"));
    let view =
        |lowers: Vec<String>, snapshots: &Path, writable: bool| -> Result<PathBuf, SetupFailure> {
            let merged = scratch.join("merged");
            ctx("create mount scratch", fs::create_dir_all(&merged))?;
            let upper = if writable {
                let (upper, work) = (scratch.join("upper"), scratch.join("work"));
                ctx("create mount scratch", fs::create_dir_all(&upper))?;
                ctx("create mount scratch", fs::create_dir_all(&work))?;
                Some((upper, work))
            } else {
                None
            };
            let overlay = Overlay {
                snapshots,
                lowers: &lowers,
                upper,
                empty,
            };
            ctx(
                &format!("mount the source of {}", mount.target),
                overlay::mount(&overlay, &merged),
            )?;
            Ok(merged)
        };
    match &mount.source {
        MountSource::Tmpfs { size } => Ok(MountFrom::Tmpfs { size: *size }),
        MountSource::Path(path) if mount.read_only || mount.persistent || path.is_file() => {
            Ok(MountFrom::Bind {
                source: path.clone(),
                read_only: mount.read_only,
            })
        }
        MountSource::Path(path) => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let merged = view(vec![name], parent, true)?;
            Ok(MountFrom::Bind {
                source: merged,
                read_only: false,
            })
        }
        MountSource::Layers { snapshots, subpath } => {
            let merged = view(snapshots.clone(), &spec.snapshots, !mount.read_only)?;
            let root = ctx("open the mount source", Root::open(&merged))?;
            let source = ctx(
                &format!("source {subpath} of {}", mount.target),
                root.resolve(&clean(subpath)),
            )?;
            Ok(MountFrom::Bind {
                source,
                read_only: mount.read_only,
            })
        }
    }
}

fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), SetupFailure> {
    let what = format!("bind {} on {}", source.display(), target.display());
    ctx(
        &what,
        rustix::mount::mount_bind_recursive(source, target).map_err(io::Error::from),
    )?;
    if read_only {
        ctx(
            &what,
            set_recursive(target, MountAttrFlags::MOUNT_ATTR_RDONLY),
        )?;
    }
    Ok(())
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attrs` on the mount at `target` and every mount below it, in
/// one atomic mount_setattr(2) (Linux 5.12); a remount would change the
/// top mount only. rustix has no wrapper for it.
fn set_recursive(target: &Path, attrs: MountAttrFlags) -> io::Result<()> {
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())?;
    let attr = MountAttr {
        attr_set: u64::from(attrs.bits()),
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a plain syscall with a valid C string and a struct of the
    // size passed; the kernel reads both and keeps neither.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn tmpfs(target: &Path, size: Option<u64>, mode: u32) -> Result<(), SetupFailure> {
    mount_tmpfs(target, size, mode, MountFlags::NOSUID | MountFlags::NODEV)
}

/// `/dev` itself must allow device nodes.
fn mount_tmpfs(
    target: &Path,
    size: Option<u64>,
    mode: u32,
    flags: MountFlags,
) -> Result<(), SetupFailure> {
    let mut data = format!("mode={mode:o}");
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    let data = CString::new(data).map_err(|e| SetupFailure::other("tmpfs options", e))?;
    ctx(
        &format!("mount a tmpfs on {}", target.display()),
        rustix::mount::mount("tmpfs", target, "tmpfs", flags, data.as_c_str())
            .map_err(io::Error::from),
    )
}

/// Binds the host's `/dev/<name>` onto a new empty file in the sandbox's
/// `/dev` (a rootless sandbox cannot make device nodes).
fn bind_host_device(
    dev_fd: &std::os::fd::OwnedFd,
    dev: &Path,
    name: &str,
) -> rustix::io::Result<()> {
    drop(rustix::fs::openat(
        dev_fd,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )?);
    rustix::mount::mount_bind(Path::new("/dev").join(name), dev.join(name))
}

/// `/dev` (a tmpfs with the usual nodes, devpts, shm) and read-only `/sys`.
fn mount_system(root: &Root, network: Network) -> Result<(), SetupFailure> {
    let dev = ctx("/dev", root.resolve(Path::new("dev")))?;
    mount_tmpfs(
        &dev,
        Some(64 << 20),
        0o755,
        MountFlags::NOSUID | MountFlags::STRICTATIME,
    )?;
    let dev_fd = ctx(
        "/dev",
        rustix::fs::open(&dev, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .map_err(io::Error::from),
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let made = rustix::fs::mknodat(
            &dev_fd,
            name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        );
        let made = match made {
            // Rootless: no CAP_MKNOD, so the host's node is bound instead.
            Err(rustix::io::Errno::PERM) => bind_host_device(&dev_fd, &dev, name),
            other => other.and_then(|()| {
                rustix::fs::chmodat(
                    &dev_fd,
                    name,
                    Mode::from_raw_mode(0o666),
                    rustix::fs::AtFlags::empty(),
                )
            }),
        };
        ctx(&format!("/dev/{name}"), made.map_err(io::Error::from))?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ctx(
            &format!("/dev/{link}"),
            rustix::fs::symlinkat(target, &dev_fd, link).map_err(io::Error::from),
        )?;
    }
    for dir in ["pts", "shm"] {
        ctx(
            &format!("/dev/{dir}"),
            rustix::fs::mkdirat(&dev_fd, dir, Mode::from_raw_mode(0o755)).map_err(io::Error::from),
        )?;
    }
    let pts = CString::new("newinstance,ptmxmode=0666,mode=0620,gid=5").expect("no NUL");
    ctx(
        "mount devpts",
        rustix::mount::mount(
            "devpts",
            dev.join("pts"),
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            pts.as_c_str(),
        )
        .map_err(io::Error::from),
    )?;
    tmpfs(&dev.join("shm"), Some(64 << 20), 0o1777)?;
    let sys = ctx("/sys", root.resolve(Path::new("sys")))?;
    let sys_flags =
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let fresh = rustix::mount::mount("sysfs", &sys, "sysfs", sys_flags, None);
    if fresh.is_err() && network == Network::Host {
        // No fresh sysfs outside a network namespace of our own: the
        // host's, with every submount (cgroups, securityfs, ...) read-only.
        ctx(
            "bind /sys",
            rustix::mount::mount_bind_recursive("/sys", &sys).map_err(io::Error::from),
        )?;
        let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        ctx(
            "make the bound /sys read-only, submounts included",
            set_recursive(&sys, attrs),
        )?;
    } else {
        ctx("mount sysfs", fresh.map_err(io::Error::from))?;
    }
    Ok(())
}

/// Starts the command as PID 1 of the new pid namespace, inside the root.
fn run_builtin(
    spec: &Spec,
    merged: &Path,
    proc: &Path,
    cwd: &Path,
    identity: &Identity,
) -> Result<std::process::ExitStatus, SetupFailure> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| SetupFailure::other("RUN", "empty command"))?;
    let mut command = Command::new(program);
    command.args(args).env_clear();
    for pair in &spec.env {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        command.env(k, v);
    }
    let merged = merged.to_path_buf();
    let proc = proc.to_path_buf();
    let cwd = Path::new("/").join(cwd);
    let identity = identity.clone();
    // SAFETY: the helper is single-threaded, so the child may allocate;
    // everything here is plain syscalls.
    unsafe {
        command.pre_exec(move || enter_root(&merged, &proc, &cwd, &identity));
    }
    let pid1 = open_pid1(spec)?;
    let mut child = command
        .spawn()
        .map_err(|e| SetupFailure::io(&format!("cannot run {program}"), e))?;
    record_pid1(pid1, &child)?;
    ctx("wait for the command", child.wait())
}

/// Opened before the command starts: its `pivot_root` moves the root of
/// the whole mount namespace, the helper's included, so host paths are
/// out of reach afterwards.
fn open_pid1(spec: &Spec) -> Result<fs::File, SetupFailure> {
    ctx(
        "create pid1",
        fs::File::create(spec.step_dir.join(super::PID1_FILE)),
    )
}

/// Tells kbuild which host pid is the namespace's PID 1: once it is gone,
/// every process of the step is.
fn record_pid1(mut file: fs::File, child: &std::process::Child) -> Result<(), SetupFailure> {
    ctx(
        "write pid1",
        io::Write::write_all(&mut file, child.id().to_string().as_bytes()),
    )
}

/// In PID 1 of the step's pid namespace: die with the helper, and mount
/// a `/proc` that shows this namespace at `proc` (the root's `/proc`,
/// resolved inside it). Done before `pivot_root` detaches the host's
/// `/proc`: in a user namespace the kernel mounts a new proc only where
/// one is fully visible already.
fn pid1_with_proc(proc: &Path) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    rustix::mount::mount(
        "proc",
        proc,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )?;
    Ok(())
}

fn enter_root(merged: &Path, proc: &Path, cwd: &Path, identity: &Identity) -> io::Result<()> {
    use rustix::fs::{Gid, Uid};
    pid1_with_proc(proc)?;
    rustix::process::chdir(merged)?;
    rustix::process::pivot_root(".", ".")?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)?;
    rustix::process::chdir("/")?;
    super::confine::mask_proc()?;
    super::confine::drop_capabilities()?;
    rustix::process::chdir(cwd)?;
    let groups: Vec<Gid> = identity.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    rustix::thread::set_thread_groups(&groups)?;
    rustix::thread::set_thread_res_gid(
        Gid::from_raw(identity.gid),
        Gid::from_raw(identity.gid),
        Gid::from_raw(identity.gid),
    )?;
    rustix::thread::set_thread_res_uid(
        Uid::from_raw(identity.uid),
        Uid::from_raw(identity.uid),
        Uid::from_raw(identity.uid),
    )?;
    rustix::process::umask(Mode::from_raw_mode(0o022));
    Ok(())
}
