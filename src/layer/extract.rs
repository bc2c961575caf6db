//! Layer tar -> directory: kbuild's security boundary against hostile
//! layers.
//!
//! Invariants:
//! * Nothing outside `root` is ever created, written, removed, chowned or
//!   chmodded. Every lookup goes through `openat2(RESOLVE_IN_ROOT)` from a
//!   descriptor of the root, with the whole path from the root, so `..`,
//!   absolute symlinks and relative symlinks at any depth resolve as they
//!   would with `root` as `/` (as BuildKit's in-root resolver does: with
//!   `/var/run -> /run`, `var/run/foo` lands at `run/foo`); the last
//!   component is never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and
//!   metadata is applied through descriptors of what was just created,
//!   never by path. A parent that is a dangling link or a loop is refused.
//! * A local archive (ADD) lands under its destination directory, still
//!   resolved from the image root, and its `.wh.` names are plain files:
//!   only image layers carry whiteouts.
//! * Entry paths are cleaned lexically first (`..` clamps at the root, as
//!   containerd does); a non-directory entry for the root itself is refused.
//! * PAX and GNU long-name records are parsed here (the tar crate runs in
//!   raw mode), with a size cap; a PAX `size` that disagrees with the header
//!   is refused, so no parser can be desynchronized from this one.
//! * Entry count and total bytes are capped; on any error the caller
//!   discards the directory: a layer is applied whole or not at all.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, Dev, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use super::{DeviceNode, Placeholders, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// How whiteouts are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractMode {
    /// Apply deletions to what is already in `root` (a flattened rootfs).
    Flatten,
    /// `root` is one overlayfs lower dir: whiteouts become char 0:0 nodes,
    /// opaque markers the overlay opaque xattr (`trusted.` as root,
    /// `user.` rootless).
    OverlayLower,
    /// A plain archive (ADD): whiteout-named entries are ordinary files.
    Archive,
}

/// Caps that defeat archive bombs.
#[derive(Debug, Clone, Copy)]
pub struct ExtractLimits {
    pub max_entries: u64,
    /// Total bytes read from the (decompressed) tar stream.
    pub max_bytes: u64,
    /// Size of one PAX or GNU long-name record.
    pub max_header_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_entries: 4_000_000,
            max_bytes: 256 << 30,
            max_header_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes left as stand-ins (no `CAP_MKNOD`: rootless).
    pub placeholders: Placeholders,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("malformed layer: {0}")]
    Malformed(String),
    #[error("layer exceeds a limit: {0}")]
    Limit(String),
    #[error("refused layer entry \"{path}\": {reason}")]
    Refused { path: String, reason: String },
    #[error("cannot apply layer entry \"{path}\": {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Applies the tar stream `reader` to the directory `root`.
pub fn extract_layer(
    reader: impl Read,
    root: &Path,
    mode: ExtractMode,
    limits: ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    extract(reader, root, &[], mode, limits)
}

/// Unpacks the archive `reader` (ADD of a local tar) into the directory
/// `dest` of the image at `root`: `dest` is root-relative and already
/// resolved, entries go below it (`..` clamps there) and links in them
/// resolve from `root`, as they would in the image.
pub fn extract_archive(
    reader: impl Read,
    root: &Path,
    dest: &Path,
    limits: ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    let dest = clean(dest.as_os_str().as_bytes()).map_err(|r| refused(b"", &r))?;
    extract(reader, root, &dest, ExtractMode::Archive, limits)
}

fn extract(
    reader: impl Read,
    root: &Path,
    base: &[&[u8]],
    mode: ExtractMode,
    limits: ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(root.as_os_str().as_bytes(), e.into()))?;
    let counter = CountingReader {
        inner: reader,
        read: 0,
        limit: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(counter);
    let mut x = Extractor {
        root: root_fd,
        mode,
        limits,
        is_root: rustix::process::geteuid().is_root(),
        created: HashSet::new(),
        dir_times: Vec::new(),
        stats: ExtractStats::default(),
    };
    let entries = archive.entries().map_err(malformed)?.raw(true);
    let mut pending = Pending::default();
    for entry in entries {
        let entry = entry.map_err(malformed)?;
        x.stats.entries += 1;
        if x.stats.entries > limits.max_entries {
            return Err(ExtractError::Limit(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        x.entry(entry, base, &mut pending)?;
    }
    x.apply_dir_times();
    x.keep_live_placeholders();
    x.stats.bytes = archive.into_inner().read;
    Ok(x.stats)
}

fn malformed(e: io::Error) -> ExtractError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        ExtractError::Limit(e.to_string())
    } else {
        ExtractError::Malformed(e.to_string())
    }
}

fn io_err(path: &[u8], source: io::Error) -> ExtractError {
    ExtractError::Io {
        path: String::from_utf8_lossy(path).into_owned(),
        source,
    }
}

struct CountingReader<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("more than {} bytes of tar data", self.limit),
            ));
        }
        Ok(n)
    }
}

/// Metadata from PAX / GNU records that applies to the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Parses PAX records: `"<len> <key>=<value>\n"`, repeated.
fn parse_pax(mut data: &[u8], pending: &mut Pending) -> Result<(), ExtractError> {
    let bad = |why: &str| ExtractError::Malformed(format!("bad PAX record: {why}"));
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("length is not a number"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("length out of range"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("no '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let number = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad("not a number"))
        };
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"linkpath" => pending.link = Some(value.to_vec()),
            b"size" => pending.size = Some(number(value)?),
            b"uid" => pending.uid = Some(number(value)?),
            b"gid" => pending.gid = Some(number(value)?),
            b"mtime" => {
                let secs = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.split('.').next()?.parse::<i64>().ok());
                pending.mtime = Some(secs.ok_or_else(|| bad("mtime is not a number"))?);
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    pending.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
        }
        data = &data[len..];
    }
    Ok(())
}

/// Lexically cleaned components: no empty, `.` or `..` (clamped at root).
fn clean(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(parts)
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

use crate::rootfs::{list_dir, remove_at, IN_ROOT as RESOLVE};

/// Where one entry goes: its name in an already opened parent directory.
struct At<'a> {
    parent: BorrowedFd<'a>,
    name: &'a [u8],
    /// The cleaned path, for messages and bookkeeping.
    path: &'a [u8],
    /// The path as the archive wrote it, for refusals.
    raw_path: &'a [u8],
    header: &'a tar::Header,
    meta: &'a Pending,
}

impl At<'_> {
    fn refuse(&self, reason: &str) -> ExtractError {
        refused(self.raw_path, reason)
    }

    fn mtime(&self) -> i64 {
        self.meta
            .mtime
            .unwrap_or(self.header.mtime().unwrap_or(0) as i64)
    }

    /// The entry's mtime on the entry itself (never through a link).
    fn set_times(&self) -> Result<(), ExtractError> {
        rustix::fs::utimensat(
            self.parent,
            os(self.name),
            &timestamps(self.mtime()),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(self.path, e.into()))
    }

    fn link_target(&self, missing: &str) -> Result<Vec<u8>, ExtractError> {
        self.meta
            .link
            .clone()
            .or_else(|| self.header.link_name_bytes().map(|l| l.into_owned()))
            .ok_or_else(|| self.refuse(missing))
    }
}

fn refused(raw_path: &[u8], reason: &str) -> ExtractError {
    ExtractError::Refused {
        path: String::from_utf8_lossy(raw_path).into_owned(),
        reason: reason.to_string(),
    }
}

/// What a whiteout entry does to the tree being extracted.
#[derive(Clone, Copy)]
enum Whiteouts {
    /// Remove what it names (a flattened rootfs).
    Delete,
    /// Leave overlayfs's marks: a 0:0 char node, the opaque xattr.
    OverlayNodes,
}

struct Extractor {
    root: OwnedFd,
    mode: ExtractMode,
    limits: ExtractLimits,
    is_root: bool,
    /// Paths this layer created (whiteouts only hide lower content).
    created: HashSet<Vec<u8>>,
    dir_times: Vec<(Vec<u8>, i64)>,
    stats: ExtractStats,
}

impl Extractor {
    fn read_record<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        size: u64,
    ) -> Result<Vec<u8>, ExtractError> {
        if size > self.limits.max_header_bytes {
            return Err(ExtractError::Limit(format!(
                "a PAX or long-name record of {size} bytes (at most {})",
                self.limits.max_header_bytes
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(malformed)?;
        Ok(data)
    }

    /// Applies one archive entry: a metadata record is kept in `pending`
    /// for the next entry; anything else lands at its cleaned path inside
    /// the root (or, for a whiteout, deletes what it names).
    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<R>,
        base: &[&[u8]],
        pending: &mut Pending,
    ) -> Result<(), ExtractError> {
        let header = entry.header().clone();
        let size = header.entry_size().map_err(malformed)?;
        if self.metadata_record(&mut entry, &header, size, pending)? {
            return Ok(());
        }
        let meta = std::mem::take(pending);
        let raw_path = meta
            .path
            .clone()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let refuse = |reason: &str| refused(&raw_path, reason);
        if let Some(pax_size) = meta.size {
            if pax_size != size {
                return Err(refuse(&format!(
                    "PAX size {pax_size} disagrees with the header size {size}"
                )));
            }
        }
        let entry_parts = clean(&raw_path).map_err(|r| refuse(&r))?;
        let parts: Vec<&[u8]> = base.iter().copied().chain(entry_parts).collect();
        let kind = header.entry_type();
        let Some((name, parent)) = parts.split_last() else {
            if kind == EntryType::Directory {
                let fd = self.root.try_clone().map_err(|e| io_err(b".", e))?;
                return self.set_meta(fd.as_fd(), &header, &meta, b".");
            }
            return Err(refuse("a non-directory entry for the root itself"));
        };
        let path = join(&parts);
        // A later entry at the same path replaces an earlier stand-in.
        self.forget_stand_in(&path);
        if let Some(style) = self.whiteout_style() {
            if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                return self.whiteout(style, parent, target, &raw_path);
            }
        }
        let parent_fd = self.open_parent(parent, &raw_path)?;
        let at = At {
            parent: parent_fd.as_fd(),
            name,
            path: &path,
            raw_path: &raw_path,
            header: &header,
            meta: &meta,
        };
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                self.write_file(&at, &mut (&mut entry).take(size))?
            }
            EntryType::Directory => self.make_dir(&at)?,
            EntryType::Symlink => self.make_symlink(&at)?,
            EntryType::Link => {
                if let Some(node) = self.make_hardlink(&at)? {
                    let path = String::from_utf8_lossy(&path).into_owned();
                    self.stats.placeholders.insert(path, node);
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => self.make_node(&at, kind)?,
            other => return Err(refuse(&format!("unsupported entry type {other:?}"))),
        }
        self.created.insert(path);
        Ok(())
    }

    /// PAX and GNU long-name records: read into `pending`. Returns whether
    /// `entry` was one.
    fn metadata_record<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        header: &tar::Header,
        size: u64,
        pending: &mut Pending,
    ) -> Result<bool, ExtractError> {
        let kind = header.entry_type();
        match kind {
            EntryType::XHeader => {
                let data = self.read_record(entry, size)?;
                parse_pax(&data, pending)?;
            }
            EntryType::XGlobalHeader => {
                self.read_record(entry, size)?;
            }
            EntryType::GNULongName | EntryType::GNULongLink => {
                let mut data = self.read_record(entry, size)?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                if kind == EntryType::GNULongName {
                    pending.path = Some(data);
                } else {
                    pending.link = Some(data);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn write_file(&self, at: &At, content: &mut impl Read) -> Result<(), ExtractError> {
        self.remove_existing(at.parent, at.name, false, at.path)?;
        let fd = rustix::fs::openat(
            at.parent,
            os(at.name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err(at.path, e.into()))?;
        let mut file = std::fs::File::from(fd);
        io::copy(content, &mut file).map_err(malformed)?;
        self.set_meta(file.as_fd(), at.header, at.meta, at.path)
    }

    fn make_dir(&mut self, at: &At) -> Result<(), ExtractError> {
        let existing_dir = self.remove_existing(at.parent, at.name, true, at.path)?;
        if !existing_dir {
            rustix::fs::mkdirat(at.parent, os(at.name), Mode::from_raw_mode(0o700))
                .map_err(|e| io_err(at.path, e.into()))?;
        }
        let fd = rustix::fs::openat(
            at.parent,
            os(at.name),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(at.path, e.into()))?;
        self.set_meta(fd.as_fd(), at.header, at.meta, at.path)?;
        self.dir_times.push((at.path.to_vec(), at.mtime()));
        Ok(())
    }

    fn make_symlink(&self, at: &At) -> Result<(), ExtractError> {
        let target = at.link_target("symlink without a target")?;
        self.remove_existing(at.parent, at.name, false, at.path)?;
        rustix::fs::symlinkat(os(&target), at.parent, os(at.name))
            .map_err(|e| io_err(at.path, e.into()))?;
        self.chown_at(at.parent, at.name, at.header, at.meta, at.path)?;
        at.set_times()?;
        Ok(())
    }

    /// A hardlink to an entry already inside the root, never to a
    /// directory, never through a link out of it.
    /// A hard link; a link to a device stand-in stands in for the same
    /// device (returned, to be recorded at the link's path).
    fn make_hardlink(&self, at: &At) -> Result<Option<DeviceNode>, ExtractError> {
        let target = at.link_target("hardlink without a target")?;
        let target_parts = clean(&target).map_err(|r| at.refuse(&r))?;
        if target_parts.is_empty() {
            return Err(at.refuse("hardlink to the root directory"));
        }
        let stood_in = std::str::from_utf8(&join(&target_parts))
            .ok()
            .and_then(|t| self.stats.placeholders.get(t).copied());
        // O_PATH|O_NOFOLLOW: a link to a symlink links the symlink itself.
        let source = rustix::fs::openat2(
            &self.root,
            os(&join(&target_parts)),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(|e| {
            at.refuse(&format!(
                "hardlink target \"{}\" cannot be opened inside the root: {e}",
                String::from_utf8_lossy(&target)
            ))
        })?;
        let stat = rustix::fs::fstat(&source).map_err(|e| io_err(at.path, e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            return Err(at.refuse("hardlink to a directory"));
        }
        self.remove_existing(at.parent, at.name, false, at.path)?;
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&source));
        rustix::fs::linkat(
            rustix::fs::CWD,
            proc_path.as_str(),
            at.parent,
            os(at.name),
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(|e| io_err(at.path, e.into()))?;
        Ok(stood_in)
    }

    /// A device node or fifo. Without `CAP_MKNOD` a device node becomes a
    /// recorded stand-in (see [`super::placeholder`]).
    fn make_node(&mut self, at: &At, kind: EntryType) -> Result<(), ExtractError> {
        self.remove_existing(at.parent, at.name, false, at.path)?;
        let (file_type, dev) = match kind {
            EntryType::Fifo => (FileType::Fifo, 0),
            _ => {
                let major = at.header.device_major().map_err(malformed)?.unwrap_or(0);
                let minor = at.header.device_minor().map_err(malformed)?.unwrap_or(0);
                let ft = if kind == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major, minor))
            }
        };
        match rustix::fs::mknodat(
            at.parent,
            os(at.name),
            file_type,
            Mode::from_raw_mode(0o600),
            dev as Dev,
        ) {
            // A stand-in needs a tree of kbuild's own: an archive unpacks
            // through the step's overlay, where a char 0:0 is a deletion.
            Err(Errno::PERM)
                if file_type != FileType::Fifo && self.mode == ExtractMode::Archive =>
            {
                return Err(io_err(
                    at.path,
                    io::Error::other(
                        "a device node needs CAP_MKNOD, which a rootless build does not have",
                    ),
                ))
            }
            Err(Errno::PERM) if file_type != FileType::Fifo => self.place_stand_in(at, dev)?,
            other => other.map_err(|e| io_err(at.path, e.into()))?,
        }
        self.chown_at(at.parent, at.name, at.header, at.meta, at.path)?;
        let mode = at.header.mode().map_err(malformed)? & 0o7777;
        rustix::fs::chmodat(
            at.parent,
            os(at.name),
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
        .map_err(|e| io_err(at.path, e.into()))?;
        at.set_times()
    }

    /// Forgets the stand-in recorded at `path` (replaced or deleted).
    fn forget_stand_in(&mut self, path: &[u8]) {
        if let Ok(path) = std::str::from_utf8(path) {
            self.stats.placeholders.remove(path);
        }
    }

    /// Opens the directory `parts` only if no component is a symlink, so
    /// a record's path is where its stand-in really is.
    fn open_plain_dir(&self, parts: &[&[u8]]) -> Result<OwnedFd, Errno> {
        let path = if parts.is_empty() {
            b".".to_vec()
        } else {
            join(parts)
        };
        rustix::fs::openat2(
            &self.root,
            os(&path),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
        )
    }

    /// Makes the stand-in for the device node `dev` at `at` and records it.
    fn place_stand_in(&mut self, at: &At, dev: u64) -> Result<(), ExtractError> {
        let path = std::str::from_utf8(at.path).map_err(|_| {
            at.refuse("a device node whose path is not UTF-8 cannot be kept rootless")
        })?;
        let parts: Vec<&[u8]> = at.path.split(|b| *b == b'/').collect();
        if self.open_plain_dir(&parts[..parts.len() - 1]).is_err() {
            return Err(
                at.refuse("a device node under a symlinked directory cannot be kept rootless")
            );
        }
        rustix::fs::mknodat(
            at.parent,
            os(at.name),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            0 as Dev,
        )
        .map_err(|e| io_err(at.path, e.into()))?;
        let dev = dev as Dev;
        self.stats.placeholders.insert(
            path.to_string(),
            DeviceNode {
                block: at.header.entry_type() == EntryType::Block,
                major: rustix::fs::major(dev),
                minor: rustix::fs::minor(dev),
            },
        );
        Ok(())
    }

    /// Drops records whose stand-in a later entry removed (a whiteout, an
    /// opaque marker, a replaced parent): only a char 0:0 node still at the
    /// path stands for a device.
    fn keep_live_placeholders(&mut self) {
        let records = std::mem::take(&mut self.stats.placeholders);
        for (path, node) in records {
            let parts: Vec<&[u8]> = path.as_bytes().split(|b| *b == b'/').collect();
            let Some((name, parent)) = parts.split_last() else {
                continue;
            };
            let live = self.open_plain_dir(parent).is_ok_and(|dir| {
                rustix::fs::statat(&dir, os(name), AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                        && st.st_rdev == 0
                })
            });
            if live {
                self.stats.placeholders.insert(path, node);
            }
        }
    }

    /// Opens (creating as needed) the parent directory inside the root.
    /// Each prefix of `parent` is resolved from the root, so a symlink at
    /// any depth is followed as the image would follow it.
    fn open_parent(&self, parent: &[&[u8]], raw: &[u8]) -> Result<OwnedFd, ExtractError> {
        match self.open_in_root(parent) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
            Err(e) => return Err(io_err(raw, e.into())),
        }
        // Some component is missing or unusable: walk to find which.
        let mut fd = self.root.try_clone().map_err(|e| io_err(raw, e))?;
        for (depth, comp) in parent.iter().enumerate() {
            let prefix = &parent[..=depth];
            fd = match self.open_in_root(prefix) {
                Ok(next) => next,
                Err(Errno::NOENT) => self.make_parent(&fd, prefix, raw)?,
                Err(Errno::NOTDIR) => return Err(self.bad_parent(raw, comp, "is not a directory")),
                Err(Errno::LOOP) => return Err(self.bad_parent(raw, comp, "is a symlink loop")),
                Err(e) => return Err(io_err(raw, e.into())),
            };
        }
        Ok(fd)
    }

    /// Creates the last component of `prefix` in `dir` (the directory its
    /// parent resolved to) and opens it.
    fn make_parent(
        &self,
        dir: &OwnedFd,
        prefix: &[&[u8]],
        raw: &[u8],
    ) -> Result<OwnedFd, ExtractError> {
        let comp = prefix[prefix.len() - 1];
        match rustix::fs::mkdirat(dir, os(comp), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_err(raw, e.into())),
        }
        match self.open_in_root(prefix) {
            Ok(fd) => Ok(fd),
            // It exists but cannot be opened: a symlink to nothing inside the root.
            Err(Errno::NOENT) => Err(self.bad_parent(
                raw,
                comp,
                "is a symlink whose target does not exist inside the root",
            )),
            Err(e) => Err(io_err(raw, e.into())),
        }
    }

    fn open_in_root(&self, parts: &[&[u8]]) -> Result<OwnedFd, Errno> {
        let path = if parts.is_empty() {
            b".".to_vec()
        } else {
            join(parts)
        };
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        rustix::fs::openat2(&self.root, os(&path), flags, Mode::empty(), RESOLVE)
    }

    fn bad_parent(&self, raw: &[u8], comp: &[u8], what: &str) -> ExtractError {
        refused(
            raw,
            &format!("parent \"{}\" {what}", String::from_utf8_lossy(comp)),
        )
    }

    /// Clears the way for a new entry. Keeps an existing directory when a
    /// directory is coming (returns true then); removes anything else,
    /// never following a symlink.
    fn remove_existing(
        &self,
        parent: BorrowedFd,
        name: &[u8],
        want_dir: bool,
        path: &[u8],
    ) -> Result<bool, ExtractError> {
        let stat = match rustix::fs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_err(path, e.into())),
        };
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        if is_dir && want_dir {
            return Ok(true);
        }
        remove_at(parent, name).map_err(|e| io_err(path, e))?;
        Ok(false)
    }

    /// How `.wh.` entries apply; `None` when they are plain files.
    fn whiteout_style(&self) -> Option<Whiteouts> {
        match self.mode {
            ExtractMode::Flatten => Some(Whiteouts::Delete),
            ExtractMode::OverlayLower => Some(Whiteouts::OverlayNodes),
            ExtractMode::Archive => None,
        }
    }

    fn whiteout(
        &mut self,
        style: Whiteouts,
        parent: &[&[u8]],
        target: &[u8],
        raw: &[u8],
    ) -> Result<(), ExtractError> {
        let parent_fd = self.open_parent(parent, raw)?;
        let parent_path = join(parent);
        let whited_out = match parent_path.is_empty() {
            true => target.to_vec(),
            false => [parent_path.as_slice(), b"/", target].concat(),
        };
        self.forget_stand_in(&whited_out);
        if target == &OPAQUE_MARKER.as_bytes()[WHITEOUT_PREFIX.len()..] {
            return match style {
                Whiteouts::OverlayNodes => rustix::fs::fsetxattr(
                    &parent_fd,
                    crate::sandbox::overlay::opaque_xattr(),
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(|e| io_err(raw, e.into())),
                Whiteouts::Delete => {
                    let names = list_dir(parent_fd.as_fd()).map_err(|e| io_err(raw, e))?;
                    for name in names {
                        let child = if parent_path.is_empty() {
                            name.clone()
                        } else {
                            [parent_path.as_slice(), b"/", &name].concat()
                        };
                        if !self.created.contains(&child) {
                            remove_at(parent_fd.as_fd(), &name).map_err(|e| io_err(&child, e))?;
                        }
                    }
                    Ok(())
                }
            };
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ExtractError::Refused {
                path: String::from_utf8_lossy(raw).into_owned(),
                reason: "whiteout of an invalid name".into(),
            });
        }
        match style {
            Whiteouts::Delete => match remove_at(parent_fd.as_fd(), target) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(()),
                Err(e) => Err(io_err(raw, e)),
            },
            Whiteouts::OverlayNodes => {
                self.remove_existing(parent_fd.as_fd(), target, false, raw)?;
                rustix::fs::mknodat(
                    &parent_fd,
                    os(target),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0 as Dev,
                )
                .map_err(|e| io_err(raw, e.into()))
            }
        }
    }

    fn ids(&self, header: &tar::Header, meta: &Pending) -> Result<(u32, u32), ExtractError> {
        let uid = meta.uid.unwrap_or(header.uid().map_err(malformed)?);
        let gid = meta.gid.unwrap_or(header.gid().map_err(malformed)?);
        let uid = u32::try_from(uid)
            .map_err(|_| ExtractError::Malformed(format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid)
            .map_err(|_| ExtractError::Malformed(format!("gid {gid} out of range")))?;
        Ok((uid, gid))
    }

    fn chown_at(
        &self,
        parent: BorrowedFd,
        name: &[u8],
        header: &tar::Header,
        meta: &Pending,
        path: &[u8],
    ) -> Result<(), ExtractError> {
        if !self.is_root {
            return Ok(());
        }
        let (uid, gid) = self.ids(header, meta)?;
        rustix::fs::chownat(
            parent,
            os(name),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(path, e.into()))
    }

    /// Owner, then mode (chown clears setuid), xattrs and mtime, all
    /// through the descriptor of the object itself.
    fn set_meta(
        &self,
        fd: BorrowedFd,
        header: &tar::Header,
        meta: &Pending,
        path: &[u8],
    ) -> Result<(), ExtractError> {
        if self.is_root {
            let (uid, gid) = self.ids(header, meta)?;
            rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| io_err(path, e.into()))?;
        }
        let mode = header.mode().map_err(malformed)? & 0o7777;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| io_err(path, e.into()))?;
        for (name, value) in &meta.xattrs {
            // Overlay's private attributes are never taken from a layer.
            if crate::sandbox::overlay::is_overlay_xattr(name) {
                continue;
            }
            match rustix::fs::fsetxattr(fd, os(name), value, XattrFlags::empty()) {
                Ok(()) => {}
                // Unprivileged: trusted.* and security.* need privileges.
                Err(Errno::PERM | Errno::NOTSUP) if !self.is_root => {}
                // Rootless: left out, it would change the layers.
                Err(Errno::PERM) if crate::rootless::in_user_namespace() => {
                    return Err(io_err(
                        path,
                        io::Error::other(format!(
                            "extended attribute {} needs privileges a rootless build does not have",
                            String::from_utf8_lossy(name)
                        )),
                    ))
                }
                Err(e) => return Err(io_err(path, e.into())),
            }
        }
        let mtime = meta
            .mtime
            .unwrap_or(header.mtime().map_err(malformed)? as i64);
        rustix::fs::futimens(fd, &timestamps(mtime)).map_err(|e| io_err(path, e.into()))
    }

    /// Directory mtimes last: creating children changes them.
    fn apply_dir_times(&self) {
        for (path, mtime) in self.dir_times.iter().rev() {
            let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            if let Ok(fd) = rustix::fs::openat2(&self.root, os(path), flags, Mode::empty(), RESOLVE)
            {
                // Best effort: a directory replaced later in the layer has no time to restore.
                let _ = rustix::fs::futimens(&fd, &timestamps(*mtime));
            }
        }
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}
