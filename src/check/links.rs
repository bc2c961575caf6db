//! Symlinks followed by hand inside an image root, so that a link that
//! climbs out of the root or loops is reported as such instead of being
//! quietly clamped (`RESOLVE_IN_ROOT`) or followed.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::rootfs::Root;

/// Links followed at most, as the kernel's ELOOP limit.
const MAX_HOPS: usize = 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} points outside the image root (through {})", path.display(), link.display())]
    Escapes { path: PathBuf, link: PathBuf },
    #[error("{} is a symlink loop", .0.display())]
    Loop(PathBuf),
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
}

/// The root-relative path `path` (absolute, as the image sees it) ends at,
/// every link followed; the path must exist.
pub fn resolve(root: &Root, path: &str) -> Result<PathBuf, LinkError> {
    let original = PathBuf::from(path);
    let mut pending: VecDeque<OsString> = components(Path::new(path));
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if !resolved.pop() {
                return Err(LinkError::Escapes {
                    path: original,
                    link: resolved,
                });
            }
            continue;
        }
        match read_link(root, &resolved, &name) {
            Ok(Some(target)) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(LinkError::Loop(original));
                }
                let mut next = components(&target);
                next.extend(pending.drain(..));
                pending = next;
                // A relative target is read from the link's directory,
                // which `resolved` still is; an absolute one from the root.
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
            }
            Ok(None) => resolved.push(&name),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                return Err(LinkError::Missing(
                    Path::new("/").join(&resolved).join(&name),
                ))
            }
            Err(e) => {
                let at = Path::new("/").join(&resolved).join(&name);
                return Err(LinkError::Io {
                    path: at,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(resolved)
}

/// The normal and `..` components of `path`, in order.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The target of `dir/name` if it is a symlink; `dir` was resolved
/// already, so opening it in-root follows no link.
fn read_link(root: &Root, dir: &Path, name: &OsString) -> io::Result<Option<PathBuf>> {
    let parent = root.open_at(dir, OFlags::PATH | OFlags::DIRECTORY)?;
    match rustix::fs::readlinkat(&parent, name.as_os_str(), Vec::new()) {
        Ok(target) => Ok(Some(PathBuf::from(OsString::from_vec(target.into_bytes())))),
        // EINVAL: it exists and is not a link.
        Err(Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_followed_inside_and_escapes_and_loops_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root_dir = dir.path().join("root");
        std::fs::create_dir_all(root_dir.join("boot")).unwrap();
        std::fs::create_dir_all(root_dir.join("usr/lib/systemd")).unwrap();
        std::fs::write(root_dir.join("boot/vmlinuz-6.1.0"), b"k").unwrap();
        std::fs::write(root_dir.join("usr/lib/systemd/systemd"), b"s").unwrap();
        symlink("vmlinuz-6.1.0", root_dir.join("boot/vmlinuz")).unwrap();
        symlink("usr/lib", root_dir.join("lib")).unwrap();
        std::fs::create_dir_all(root_dir.join("sbin")).unwrap();
        symlink("/lib/systemd/systemd", root_dir.join("sbin/init")).unwrap();
        symlink("../../../../etc/passwd", root_dir.join("boot/escape")).unwrap();
        symlink("loop-b", root_dir.join("boot/loop-a")).unwrap();
        symlink("loop-a", root_dir.join("boot/loop-b")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        assert_eq!(
            resolve(&root, "/boot/vmlinuz").unwrap(),
            PathBuf::from("boot/vmlinuz-6.1.0")
        );
        assert_eq!(
            resolve(&root, "/sbin/init").unwrap(),
            PathBuf::from("usr/lib/systemd/systemd")
        );
        assert!(matches!(
            resolve(&root, "/boot/escape"),
            Err(LinkError::Escapes { .. })
        ));
        assert!(matches!(
            resolve(&root, "/boot/loop-a"),
            Err(LinkError::Loop(_))
        ));
        assert!(matches!(
            resolve(&root, "/boot/none"),
            Err(LinkError::Missing(_))
        ));
    }
}
