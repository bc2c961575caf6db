//! Paths inside a root (an image root, a build context, a step's inputs,
//! an extraction target), resolved as a container would see them. The
//! extractor, COPY/ADD, WORKDIR and the sandbox all go through here.
//!
//! Invariant: every lookup is `openat2(RESOLVE_IN_ROOT)` from a descriptor
//! of the root, and every creation is `*at` relative to a descriptor of a
//! directory that was itself resolved that way, with a single-component
//! name. So `..`, absolute and relative symlinks never reach outside the
//! root, whatever the image holds.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

/// How every lookup in a root resolves: `..`, absolute and relative
/// symlinks stay inside it; `/proc` magic links are refused.
pub const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// An open container root.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// The normal components of `path` (absolute or relative), `..` clamped at
/// the root and `.` dropped, as a root-relative path.
pub fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in Path::new(path).components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// One plain path component: not empty, `.` or `..`, no `/` or NUL.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (cleaned) inside the root, following symlinks inside it.
    pub fn open_at(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        self.open_with(rel, flags, IN_ROOT)
    }

    fn open_with(&self, rel: &Path, flags: OFlags, resolve: ResolveFlags) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(rustix::fs::openat2(
            self.fd.as_fd(),
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )?)
    }

    /// Opens the directory `rel` below the root without following any
    /// symlink: a symlink anywhere in `rel` is an error, so what is opened
    /// is exactly the directory at that path, never one a link points to.
    pub fn open_dir_no_follow(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_with(
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Where an open directory of the root is, root-relative.
    fn relative(&self, fd: &OwnedFd) -> Option<PathBuf> {
        let root = fd_path(&self.fd).ok()?;
        let at = fd_path(fd).ok()?;
        at.strip_prefix(&root).ok().map(Path::to_path_buf)
    }

    /// The root-relative path `rel` resolves to (it must exist), with
    /// every link on the way followed inside the root.
    pub fn resolve_relative(&self, rel: &Path) -> io::Result<PathBuf> {
        let fd = self.open_at(rel, OFlags::PATH)?;
        self.relative(&fd).ok_or_else(|| {
            io::Error::other(format!("/{} resolves outside the root", rel.display()))
        })
    }

    /// The host path `rel` resolves to (it must exist).
    pub fn resolve(&self, rel: &Path) -> io::Result<PathBuf> {
        let fd = self.open_at(rel, OFlags::PATH)?;
        fd_path(&fd)
    }

    pub fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let fd = self.open_at(rel, OFlags::RDONLY)?;
        let mut file = std::fs::File::from(fd);
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok(bytes)
    }

    /// Whether `rel` exists (a dangling symlink counts as missing).
    pub fn exists(&self, rel: &Path) -> bool {
        self.open_at(rel, OFlags::PATH).is_ok()
    }

    /// `mkdir -p` of `rel`: missing directories are created with `mode`
    /// and `owner`. A dangling symlink on the way is followed inside the
    /// root and its target created, as BuildKit and buildah do. Returns a
    /// descriptor of the directory and the root-relative paths created,
    /// parents first.
    pub fn mkdir_all(
        &self,
        rel: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<(OwnedFd, Vec<PathBuf>)> {
        let mut rel = clean(&rel.to_string_lossy());
        let mut created = Vec::new();
        // Each dangling link restarts the walk at its target; a bound on
        // restarts ends link cycles, as the kernel's ELOOP does.
        for _ in 0..MAX_LINK_HOPS {
            match self.mkdir_walk(&rel, mode, owner, &mut created)? {
                Walk::Done(fd) => return Ok((fd, created)),
                Walk::Retarget(next) => rel = next,
            }
        }
        Err(Errno::LOOP.into())
    }

    fn mkdir_walk(
        &self,
        rel: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
        created: &mut Vec<PathBuf>,
    ) -> io::Result<Walk> {
        let mut dir = self.open_at(Path::new("."), OFlags::PATH | OFlags::DIRECTORY)?;
        let mut prefix = PathBuf::new();
        let names: Vec<_> = rel.iter().collect();
        for (i, name) in names.iter().enumerate() {
            let parent = prefix.clone();
            prefix.push(name);
            dir = match self.open_at(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    // A relative link is read from the directory it is in,
                    // which links on the way may have moved from `parent`.
                    let here = self.relative(&dir).unwrap_or(parent);
                    if let Some(target) = dangling_link_target(&dir, &here, name)? {
                        let rest: PathBuf = names[i + 1..].iter().collect();
                        return Ok(Walk::Retarget(target.join(rest)));
                    }
                    match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    let fd = rustix::fs::openat(
                        &dir,
                        *name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    // The umask must not narrow what was asked for.
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                    if let Some((uid, gid)) = owner {
                        chown_fd(&fd, uid, gid)?;
                    }
                    created.push(prefix.clone());
                    fd
                }
                Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("/{} is not a directory", prefix.display()),
                    ))
                }
                Err(e) => return Err(e),
            };
        }
        Ok(Walk::Done(dir))
    }

    /// Creates (or truncates) the file `name` directly in the root and
    /// writes `bytes`. `name` must be one plain component; a symlink there
    /// is refused, never followed.
    pub fn write_file(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        if !is_plain_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("\"{name}\" is not a plain file name"),
            ));
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        io::Write::write_all(&mut std::fs::File::from(fd), bytes)
    }

    /// Creates an empty file at `rel` if nothing is there (parents too).
    /// Returns the root-relative paths created.
    pub fn touch(&self, rel: &Path) -> io::Result<Vec<PathBuf>> {
        if self.exists(rel) {
            return Ok(Vec::new());
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let (dir, mut created) = self.mkdir_all(parent, 0o755, None)?;
        rustix::fs::openat(
            &dir,
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        created.push(rel.to_path_buf());
        Ok(created)
    }
}

/// The names in `dir` (`.` and `..` left out), as bytes.
pub fn list_dir(dir: BorrowedFd) -> io::Result<Vec<Vec<u8>>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` in `parent` (recursively for a directory) without ever
/// following a symlink.
pub fn remove_at(parent: BorrowedFd, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, OsStr::from_bytes(name), AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = rustix::fs::openat(
        parent,
        OsStr::from_bytes(name),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(dir.as_fd())? {
        remove_at(dir.as_fd(), &child)?;
    }
    rustix::fs::unlinkat(parent, OsStr::from_bytes(name), AtFlags::REMOVEDIR)?;
    Ok(())
}

/// How many dangling links `mkdir_all` follows before giving up.
const MAX_LINK_HOPS: usize = 40;

enum Walk {
    Done(OwnedFd),
    /// A dangling link: start again at this root-relative path.
    Retarget(PathBuf),
}

/// If `name` in `dir` (at root-relative `parent`) is a symlink, where it
/// points as a root-relative path: absolute targets start at the root,
/// relative ones at `parent`, `..` clamped at the root.
fn dangling_link_target(
    dir: &OwnedFd,
    parent: &Path,
    name: &std::ffi::OsStr,
) -> io::Result<Option<PathBuf>> {
    let target = match rustix::fs::readlinkat(dir, name, Vec::new()) {
        Ok(target) => target,
        Err(Errno::INVAL) | Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let target = target.to_string_lossy().into_owned();
    let joined = match target.starts_with('/') {
        true => target,
        false => format!("{}/{target}", parent.display()),
    };
    Ok(Some(clean(&joined)))
}

pub fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    Ok(())
}

/// The path the kernel reports for an open descriptor.
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::{clean, Root};
    use std::path::{Path, PathBuf};

    #[test]
    fn mkdir_all_follows_dangling_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("root");
        std::fs::create_dir(&inner).unwrap();
        let host = dir.path().join("host-target");
        std::os::unix::fs::symlink(&host, inner.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../up/x", inner.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", inner.join("loop")).unwrap();
        let root = Root::open(&inner).unwrap();
        root.mkdir_all(Path::new("abs/sub"), 0o755, None).unwrap();
        assert!(inner
            .join(host.strip_prefix("/").unwrap())
            .join("sub")
            .is_dir());
        assert!(!host.exists());
        root.mkdir_all(Path::new("rel/y"), 0o755, None).unwrap();
        assert!(inner.join("up/x/y").is_dir());
        // A relative dangling link behind a linked directory is read from
        // where it really is.
        std::fs::create_dir_all(inner.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", inner.join("lib")).unwrap();
        std::os::unix::fs::symlink("../share/foo", inner.join("usr/lib/foo")).unwrap();
        root.mkdir_all(Path::new("lib/foo/bar"), 0o755, None)
            .unwrap();
        assert!(inner.join("usr/share/foo/bar").is_dir());
        assert!(root.mkdir_all(Path::new("loop/z"), 0o755, None).is_err());
    }

    #[test]
    fn write_file_takes_plain_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("root");
        std::fs::create_dir(&inner).unwrap();
        let root = Root::open(&inner).unwrap();
        for bad in ["/tmp/x", "../x", "a/b", "..", ".", ""] {
            assert!(root.write_file(bad, b"x", 0o644).is_err(), "{bad}");
        }
        assert!(!dir.path().join("x").exists());
        std::os::unix::fs::symlink(dir.path().join("outside"), inner.join("link")).unwrap();
        assert!(root.write_file("link", b"x", 0o644).is_err());
        assert!(!dir.path().join("outside").exists());
        root.write_file("ok.txt", b"hello", 0o600).unwrap();
        assert_eq!(root.read(Path::new("ok.txt")).unwrap(), b"hello");
    }

    #[test]
    fn clean_clamps_at_the_root() {
        assert_eq!(clean("/a/./b/../c"), PathBuf::from("a/c"));
        assert_eq!(clean("../../etc/passwd"), PathBuf::from("etc/passwd"));
        assert_eq!(clean("/"), PathBuf::new());
    }
}
