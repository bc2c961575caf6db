//! COPY and ADD into a mounted step root, with Docker's rules: a directory
//! source copies its contents, a file lands at the destination path or
//! inside it when the destination is a directory (or ends with `/`), several
//! sources need a directory destination, missing parents are created.
//!
//! Invariants:
//! * Every destination path is resolved in the step's root ([`Root`]); a
//!   symlink in the image can redirect a copy only to somewhere else
//!   inside the image.
//! * Sources are never followed below the named path; links are copied as
//!   links, contents are streamed.
//! * Archives ADDed from local sources are unpacked by the safe extractor
//!   into the destination directory, which is its root.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use glob::Pattern;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid};

use super::source::{Source, SourceTree};
use crate::layer::{decompressing_reader, extract_archive, ExtractLimits};
use crate::rootfs::{chown_fd, clean, Root};
use crate::sandbox::users;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "\"{0}\" not found: no such file or directory in the source, or excluded by .dockerignore"
    )]
    NotFound(String),
    #[error(
        "when copying more than one source, the destination must be a directory and end with a /"
    )]
    NotADirectory,
    #[error("cannot copy to /{}: {source}", path.display())]
    Dest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Owner(#[from] users::UserError),
    #[error("cannot extract {}: {message}", path.display())]
    Archive { path: PathBuf, message: String },
}

/// One COPY/ADD as the mount thread executes it.
pub struct CopyRequest {
    /// (index into the trees, expanded source argument).
    pub sources: Vec<(usize, String)>,
    /// Absolute destination, as written (a trailing `/` matters).
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<u32>,
    /// ADD: local tar archives are unpacked.
    pub unpack_archives: bool,
    /// `--parents`: keep each source's path below the destination.
    pub parents: bool,
    pub excludes: Vec<Pattern>,
}

struct Options {
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
}

fn dest_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Dest {
        path: path.to_path_buf(),
        source,
    }
}

fn source_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Source {
        path: path.to_path_buf(),
        source,
    }
}

/// Performs `request` reading from `trees`, writing into `root`.
pub fn copy(trees: &[SourceTree], request: &CopyRequest, root: &Root) -> Result<(), CopyError> {
    let owner = match &request.chown {
        Some(spec) => {
            let id = users::resolve(root, spec, false)?;
            Some((id.uid, id.gid))
        }
        None => None,
    };
    let options = Options {
        owner,
        chmod: request.chmod,
    };
    let mut found: Vec<(usize, Source)> = Vec::new();
    for (tree, pattern) in &request.sources {
        let sources = trees[*tree]
            .expand(pattern)
            .map_err(source_err(Path::new(pattern)))?;
        if sources.is_empty() {
            return Err(CopyError::NotFound(pattern.clone()));
        }
        found.extend(sources.into_iter().map(|s| (*tree, s)));
    }
    let dest = clean(&request.dest);
    let dest_is_dir = request.dest.ends_with('/')
        || request.dest.ends_with("/.")
        || dest.as_os_str().is_empty()
        || root
            .open_at(&dest, OFlags::PATH | OFlags::DIRECTORY)
            .is_ok();
    if found.len() > 1 && !dest_is_dir {
        return Err(CopyError::NotADirectory);
    }
    for (tree, source) in &found {
        let tree = &trees[*tree];
        let base = if request.parents {
            dest.join(source.rel.parent().unwrap_or(Path::new("")))
        } else {
            dest.clone()
        };
        if source.meta.is_dir() {
            let target = if request.parents {
                dest.join(&source.rel)
            } else {
                base
            };
            copy_dir(tree, source, root, &target, &options, &request.excludes)?;
        } else if request.unpack_archives && is_archive(&source.host) {
            unpack(&source.host, root, &base, &options)?;
        } else {
            let target = if dest_is_dir || request.parents {
                base.join(source.rel.file_name().unwrap_or_default())
            } else {
                dest.clone()
            };
            let parent = target.parent().unwrap_or(Path::new(""));
            let (dir, _) = make_dirs(root, parent, &options)?;
            let name = target.file_name().unwrap_or_default();
            copy_leaf(
                tree,
                &source.host,
                &source.meta,
                &dir,
                Path::new(name),
                &target,
                &options,
            )?;
        }
    }
    Ok(())
}

fn make_dirs(
    root: &Root,
    rel: &Path,
    options: &Options,
) -> Result<(OwnedFd, Vec<PathBuf>), CopyError> {
    root.mkdir_all(rel, 0o755, options.owner)
        .map_err(dest_err(rel))
}

fn copy_dir(
    tree: &SourceTree,
    source: &Source,
    root: &Root,
    target: &Path,
    options: &Options,
    excludes: &[Pattern],
) -> Result<(), CopyError> {
    let (_, created) = make_dirs(root, target, options)?;
    if created.last().map(PathBuf::as_path) == Some(target) {
        let fd = root
            .open_at(target, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(dest_err(target))?;
        apply_meta(&fd, &source.meta, options, true).map_err(dest_err(target))?;
    }
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let mut visit = |rel: &Path, host: &Path, meta: &fs::Metadata| -> io::Result<()> {
        let inner = rel.strip_prefix(&source.rel).unwrap_or(rel);
        if excludes.iter().any(|p| p.matches_path(inner)) {
            return Ok(());
        }
        let dest = target.join(inner);
        let parent = dest.parent().unwrap_or(Path::new(""));
        let name = Path::new(dest.file_name().unwrap_or_default());
        let dir = root.open_at(parent, OFlags::PATH | OFlags::DIRECTORY)?;
        copy_leaf(tree, host, meta, &dir, name, &dest, options).map_err(io::Error::other)?;
        if meta.is_dir() {
            dirs.push((dest, meta.clone()));
        }
        Ok(())
    };
    tree.walk(&source.host, &source.rel, 0, usize::MAX, &mut visit)
        .map_err(source_err(&source.rel))?;
    // Directory mtimes last: creating their children changed them.
    for (dest, meta) in dirs.iter().rev() {
        let fd = root
            .open_at(dest, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(dest_err(dest))?;
        set_mtime(&fd, meta).map_err(dest_err(dest))?;
    }
    Ok(())
}

/// Creates one entry `name` in `dir` (a descriptor of `dest`'s parent).
fn copy_leaf(
    tree: &SourceTree,
    host: &Path,
    meta: &fs::Metadata,
    dir: &OwnedFd,
    name: &Path,
    dest: &Path,
    options: &Options,
) -> Result<(), CopyError> {
    let kind = meta.file_type();
    let existing = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
    let existing_dir = existing
        .as_ref()
        .is_some_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir());
    let owner = options
        .owner
        .or(tree.keep_owners.then(|| (meta.uid(), meta.gid())));
    let options = Options {
        owner: Some(owner.unwrap_or((0, 0))),
        chmod: options.chmod,
    };
    if kind.is_dir() {
        if existing.is_some() && !existing_dir {
            unlink(dir, name, dest)?;
        }
        if !existing_dir {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                .map_err(|e| dest_err(dest)(e.into()))?;
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| dest_err(dest)(e.into()))?;
            apply_meta(&fd, meta, &options, true).map_err(dest_err(dest))?;
        }
        return Ok(());
    }
    if existing_dir {
        return Err(CopyError::Dest {
            path: dest.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::IsADirectory,
                "cannot overwrite a directory with a non-directory",
            ),
        });
    }
    if existing.is_some() {
        unlink(dir, name, dest)?;
    }
    if kind.is_symlink() {
        let target = fs::read_link(host).map_err(source_err(host))?;
        rustix::fs::symlinkat(&target, dir, name).map_err(|e| dest_err(dest)(e.into()))?;
        let (uid, gid) = options.owner.unwrap_or((0, 0));
        rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| dest_err(dest)(e.into()))?;
        let times = timestamps(meta);
        rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| dest_err(dest)(e.into()))?;
        return Ok(());
    }
    if !kind.is_file() {
        // Devices, fifos and sockets have no place in a build context.
        return Ok(());
    }
    let mut input = File::open(host).map_err(source_err(host))?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| dest_err(dest)(e.into()))?;
    let mut output = File::from(fd);
    io::copy(&mut input, &mut output).map_err(dest_err(dest))?;
    let fd = OwnedFd::from(output);
    apply_meta(&fd, meta, &options, false).map_err(dest_err(dest))
}

fn unlink(dir: &OwnedFd, name: &Path, dest: &Path) -> Result<(), CopyError> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| dest_err(dest)(e.into()))
}

fn timestamps(meta: &fs::Metadata) -> Timestamps {
    let mtime = Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec() as _,
    };
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn set_mtime(fd: &OwnedFd, meta: &fs::Metadata) -> io::Result<()> {
    rustix::fs::futimens(fd, &timestamps(meta))?;
    Ok(())
}

/// Owner, then mode (a chown clears setuid bits), then mtime.
fn apply_meta(
    fd: &OwnedFd,
    meta: &fs::Metadata,
    options: &Options,
    is_dir: bool,
) -> io::Result<()> {
    let (uid, gid) = options.owner.unwrap_or((0, 0));
    chown_fd(fd, uid, gid)?;
    let mode = options.chmod.unwrap_or(meta.mode() & 0o7777);
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    if !is_dir {
        set_mtime(fd, meta)?;
    }
    Ok(())
}

/// A tar archive, plain or compressed (what ADD unpacks).
fn is_archive(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(mut reader) = decompressing_reader(BufReader::new(file)) else {
        return false;
    };
    let mut header = [0u8; 512];
    reader.read_exact(&mut header).is_ok() && &header[257..262] == b"ustar"
}

fn unpack(archive: &Path, root: &Root, dest: &Path, options: &Options) -> Result<(), CopyError> {
    make_dirs(root, dest, options)?;
    let resolved = root.resolve_relative(dest).map_err(dest_err(dest))?;
    let file = File::open(archive).map_err(source_err(archive))?;
    let reader = decompressing_reader(BufReader::new(file)).map_err(source_err(archive))?;
    extract_archive(reader, root.path(), &resolved, ExtractLimits::default()).map_err(|e| {
        CopyError::Archive {
            path: archive.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    Ok(())
}

/// `--chmod` takes octal modes.
pub fn parse_chmod(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::source::SourceTree;

    fn tree_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        dir
    }

    fn request(sources: &[&str], dest: &str) -> CopyRequest {
        CopyRequest {
            sources: sources.iter().map(|s| (0, s.to_string())).collect(),
            dest: dest.to_string(),
            chown: None,
            chmod: None,
            unpack_archives: false,
            parents: false,
            excludes: Vec::new(),
        }
    }

    #[test]
    fn docker_destination_rules() {
        if !rustix::process::geteuid().is_root() {
            return; // chown to 0:0 needs root; the integration tests cover it too
        }
        let src = tree_with(&[("a.txt", "a"), ("dir/b.txt", "b"), ("dir/sub/c.txt", "c")]);
        let dst = tempfile::tempdir().unwrap();
        let src_root = Root::open(src.path()).unwrap();
        let dst_root = Root::open(dst.path()).unwrap();
        let trees = [SourceTree {
            root: &src_root,
            ignore: None,
            keep_owners: false,
        }];
        copy(&trees, &request(&["a.txt"], "/x/renamed"), &dst_root).unwrap();
        assert_eq!(
            fs::read_to_string(dst.path().join("x/renamed")).unwrap(),
            "a"
        );
        copy(&trees, &request(&["a.txt"], "/y/"), &dst_root).unwrap();
        assert!(dst.path().join("y/a.txt").is_file());
        copy(&trees, &request(&["dir"], "/z"), &dst_root).unwrap();
        assert!(
            dst.path().join("z/b.txt").is_file(),
            "a directory copies its contents"
        );
        assert!(dst.path().join("z/sub/c.txt").is_file());
        assert!(matches!(
            copy(&trees, &request(&["a.txt", "dir"], "/w"), &dst_root),
            Err(CopyError::NotADirectory)
        ));
        assert!(matches!(
            copy(&trees, &request(&["missing"], "/w/"), &dst_root),
            Err(CopyError::NotFound(_))
        ));
        fs::create_dir(dst.path().join("outside-target")).unwrap();
        std::os::unix::fs::symlink("/outside-target", dst.path().join("link")).unwrap();
        copy(&trees, &request(&["a.txt"], "/link/"), &dst_root).unwrap();
        assert!(
            dst.path().join("outside-target/a.txt").is_file(),
            "symlinks resolve in the root"
        );
        assert_eq!(parse_chmod("755"), Some(0o755));
        assert_eq!(parse_chmod("u+x"), None);
    }
}
