//! overlayfs mounts of snapshot chains, and the private mount namespace
//! they are made in.
//!
//! Invariants:
//! * `redirect_dir=off` and `metacopy=off`: a renamed directory is copied
//!   up whole and a chmod copies data, so the upper dir is always a plain
//!   tree plus whiteouts and opaque markers, which is all a layer can say.
//! * Inside kbuild's rootless user namespace the mount adds `userxattr`:
//!   opaque markers are `user.overlay.opaque`, whiteouts still char 0:0
//!   nodes (which an unprivileged process may make).
//! * Lower dirs are given relative to the snapshots directory (the caller's
//!   cwd during the mount), so a chain of ~60 snapshots fits the one page
//!   the kernel accepts for mount options.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags};

/// Overlay marks (opaque directories) as root in the initial user namespace.
const TRUSTED_PREFIX: &str = "trusted.overlay.";
/// The same in a user namespace, where `trusted.*` is out of reach: the
/// `userxattr` mount option moves overlayfs to `user.overlay.*`.
const USER_PREFIX: &str = "user.overlay.";

/// The xattr that marks an opaque directory for the overlays this process
/// mounts.
pub fn opaque_xattr() -> &'static str {
    if crate::rootless::in_user_namespace() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// Whether `name` is one of overlayfs's private attributes (in either
/// namespace): never taken from a layer, never written into one, so a root
/// and a rootless build see and write the same trees.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(TRUSTED_PREFIX.as_bytes()) || name.starts_with(USER_PREFIX.as_bytes())
}

/// Mount options are limited to one page.
const MAX_OPTIONS: usize = 4000;

/// Where an overlay's layers come from and where it writes.
pub struct Overlay<'a> {
    pub snapshots: &'a Path,
    /// Snapshot names, top first; empty means an empty tree.
    pub lowers: &'a [String],
    /// Upper and work dirs; `None` for a read-only view.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// An empty directory to stand in for missing lowers.
    pub empty: &'a Path,
}

/// Makes this thread's (or process's) mounts private to a new mount
/// namespace: nothing mounted afterwards propagates to the host, and it
/// all goes away when the namespace's last user ends.
pub fn private_namespace() -> io::Result<()> {
    // SAFETY: only the mount namespace (and the fs info it implies) is
    // unshared, never the file descriptor table.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// Mounts `overlay` at `target`. Changes the cwd of the calling thread.
pub fn mount(overlay: &Overlay, target: &Path) -> io::Result<()> {
    std::env::set_current_dir(overlay.snapshots)?;
    let mut lowers: Vec<String> = overlay.lowers.to_vec();
    // overlayfs needs two lowers for a read-only mount, and one at all.
    if lowers.is_empty() || (overlay.upper.is_none() && lowers.len() == 1) {
        lowers.push(overlay.empty.display().to_string());
    }
    let mut options = format!("lowerdir={}", lowers.join(":"));
    if let Some((upper, work)) = &overlay.upper {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    if crate::rootless::in_user_namespace() {
        // `off` still follows redirects, which the kernel refuses with
        // `userxattr`; kbuild's lower dirs never hold any.
        options.push_str(",redirect_dir=nofollow,metacopy=off,index=off,userxattr");
    } else {
        options.push_str(",redirect_dir=off,metacopy=off,index=off");
    }
    if options.len() > MAX_OPTIONS {
        return Err(io::Error::other(format!(
            "{} layers are more than one overlay mount can stack",
            lowers.len()
        )));
    }
    let data = std::ffi::CString::new(options).map_err(io::Error::other)?;
    // Device nodes from image layers never work through an overlay: no
    // device cgroup guards a step, so a node for a host disk in a layer
    // would otherwise be the disk. Read-only views carry no setuid either.
    let flags = if overlay.upper.is_some() {
        MountFlags::NODEV
    } else {
        MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID
    };
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())?;
    Ok(())
}
