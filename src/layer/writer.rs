//! Directory -> layer blob, in one streaming pass.
//!
//! Invariants:
//! * Entries are emitted parent first, siblings sorted by name bytes, with
//!   numeric uid/gid only and mtimes clamped to `source_date_epoch` when
//!   set, so the same tree always gives the same bytes.
//! * The diff_id (digest of the tar) and the blob digest (digest of the
//!   compressed stream) are computed while writing; nothing is buffered
//!   beyond the compressor's window, whatever the layer size.
//! * In [`TreeKind::OverlayUpper`] mode overlayfs whiteouts (char 0:0) and
//!   opaque directories (`trusted.overlay.opaque=y`, or `user.overlay.opaque`
//!   rootless) become OCI `.wh.<name>` and `.wh..wh..opq` entries; overlay
//!   xattrs of either namespace never leak.
//! * A [`Placeholders`] map turns the char 0:0 stand-ins a rootless
//!   extraction left for device nodes back into those nodes.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::compress::{Compression, Compressor};
use super::{LayerError, Placeholders, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::digest::{Digest, HashingWriter};

/// What kind of directory the layer is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// A plain tree: every file is content.
    Full,
    /// An overlayfs upper dir: whiteouts and opaque markers are deletions.
    OverlayUpper,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    pub compression: Compression,
    /// Clamp mtimes to this (seconds since the epoch), e.g. `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
}

/// The identity of a written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar (`rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    pub media_type: &'static str,
    /// The newest mtime written (after clamping): what an image made of
    /// this one layer can be dated with when nothing else dates it.
    pub newest_mtime: i64,
}

type TarSink<W> = HashingWriter<Compressor<HashingWriter<BufWriter<W>>>>;

/// Writes the layer of `root` to `out`.
pub fn write_layer<W: Write>(
    root: &Path,
    kind: TreeKind,
    options: &WriteOptions,
    out: W,
) -> Result<(W, LayerInfo), LayerError> {
    write_layer_with(root, kind, options, &Placeholders::new(), out)
}

/// [`write_layer`] of a tree holding device stand-ins: each char 0:0 node
/// recorded in `placeholders` is written as the device it stands for.
pub fn write_layer_with<W: Write>(
    root: &Path,
    kind: TreeKind,
    options: &WriteOptions,
    placeholders: &Placeholders,
    out: W,
) -> Result<(W, LayerInfo), LayerError> {
    let io_err = |source| LayerError::Io {
        path: root.to_path_buf(),
        source,
    };
    let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
    let tar_stream =
        HashingWriter::new(Compressor::new(blob, options.compression).map_err(io_err)?);
    let mut builder = tar::Builder::new(tar_stream);
    builder.mode(tar::HeaderMode::Complete);
    let mut walker = Walker {
        root,
        kind,
        options,
        placeholders,
        builder,
        links: HashMap::new(),
        newest_mtime: std::cell::Cell::new(0),
    };
    walker.dir_children(root, Path::new(""))?;
    let tar_stream: TarSink<W> = walker.builder.into_inner().map_err(io_err)?;
    let (compressor, diff_id, _) = tar_stream.finish();
    let blob = compressor.finish().map_err(io_err)?;
    let (buffered, digest, size) = blob.finish();
    let out = buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
    Ok((
        out,
        LayerInfo {
            digest,
            diff_id,
            size,
            media_type: options.compression.media_type(),
            newest_mtime: walker.newest_mtime.get(),
        },
    ))
}

struct Walker<'a, W: Write> {
    root: &'a Path,
    kind: TreeKind,
    options: &'a WriteOptions,
    placeholders: &'a Placeholders,
    builder: tar::Builder<TarSink<W>>,
    /// (dev, inode) -> first path, to emit later links as hardlink entries.
    links: HashMap<(u64, u64), PathBuf>,
    newest_mtime: std::cell::Cell<i64>,
}

impl<W: Write> Walker<'_, W> {
    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> LayerError {
        let path = self.root.join(path);
        move |source| LayerError::Io { path, source }
    }

    fn dir_children(&mut self, dir: &Path, rel: &Path) -> Result<(), LayerError> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(self.io(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(self.io(rel))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(self.io(&rel))?;
            self.entry(&path, &rel, &meta)?;
        }
        Ok(())
    }

    fn header(&self, meta: &Metadata, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        let mtime = meta.mtime().max(0);
        let mtime = match self.options.source_date_epoch {
            Some(epoch) => mtime.min(epoch.max(0)),
            None => mtime,
        };
        h.set_mtime(mtime as u64);
        self.newest_mtime.set(self.newest_mtime.get().max(mtime));
        h.set_size(0);
        h
    }

    fn entry(&mut self, path: &Path, rel: &Path, meta: &Metadata) -> Result<(), LayerError> {
        let ft = meta.file_type();
        let upper = self.kind == TreeKind::OverlayUpper;
        if upper && ft.is_char_device() && meta.rdev() == 0 {
            return self.whiteout(rel, meta);
        }
        if ft.is_socket() {
            // Sockets cannot be archived; they are runtime state, never content.
            return Ok(());
        }
        let xattrs = read_xattrs(path).map_err(self.io(rel))?;
        let opaque_name = crate::sandbox::overlay::opaque_xattr().as_bytes();
        let opaque =
            upper && ft.is_dir() && xattrs.iter().any(|(k, v)| k == opaque_name && v == b"y");
        let xattrs: Vec<_> = xattrs
            .into_iter()
            .filter(|(k, _)| !crate::sandbox::overlay::is_overlay_xattr(k))
            .collect();
        if !xattrs.is_empty() {
            let records: Vec<(Vec<u8>, Vec<u8>)> = xattrs
                .into_iter()
                .map(|(k, v)| ([b"SCHILY.xattr.".as_slice(), &k].concat(), v))
                .collect();
            self.builder
                .append_pax_extensions(
                    records
                        .iter()
                        .map(|(k, v)| (std::str::from_utf8(k).unwrap_or_default(), v.as_slice())),
                )
                .map_err(self.io(rel))?;
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(meta, EntryType::Link);
                return self
                    .builder
                    .append_link(&mut h, rel, &first)
                    .map_err(self.io(rel));
            }
            self.links.insert(key, rel.to_path_buf());
        }
        if ft.is_dir() {
            let mut h = self.header(meta, EntryType::Directory);
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(self.io(rel))?;
            if opaque {
                let mut marker = self.header(meta, EntryType::Regular);
                marker.set_mode(0o644);
                self.builder
                    .append_data(&mut marker, rel.join(OPAQUE_MARKER), io::empty())
                    .map_err(self.io(rel))?;
            }
            return self.dir_children(path, rel);
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(self.io(rel))?;
            let mut h = self.header(meta, EntryType::Symlink);
            return self
                .builder
                .append_link(&mut h, rel, target)
                .map_err(self.io(rel));
        }
        if ft.is_file() {
            let mut h = self.header(meta, EntryType::Regular);
            h.set_size(meta.len());
            let file = File::open(path).map_err(self.io(rel))?;
            // A file that changed size while being read would corrupt the stream.
            let mut reader = io::Read::take(file, meta.len());
            return self
                .builder
                .append_data(&mut h, rel, &mut reader)
                .map_err(self.io(rel));
        }
        let dev = rustix::fs::Dev::from(meta.rdev());
        let (kind, major, minor) = match rel.to_str().and_then(|p| self.placeholders.get(p)) {
            Some(node) if ft.is_char_device() && dev == 0 => (
                if node.block {
                    EntryType::Block
                } else {
                    EntryType::Char
                },
                node.major,
                node.minor,
            ),
            _ if ft.is_char_device() => (
                EntryType::Char,
                rustix::fs::major(dev),
                rustix::fs::minor(dev),
            ),
            _ if ft.is_block_device() => (
                EntryType::Block,
                rustix::fs::major(dev),
                rustix::fs::minor(dev),
            ),
            _ => (EntryType::Fifo, 0, 0),
        };
        let mut h = self.header(meta, kind);
        if kind != EntryType::Fifo {
            h.set_device_major(major).map_err(self.io(rel))?;
            h.set_device_minor(minor).map_err(self.io(rel))?;
        }
        self.builder
            .append_data(&mut h, rel, io::empty())
            .map_err(self.io(rel))
    }

    fn whiteout(&mut self, rel: &Path, meta: &Metadata) -> Result<(), LayerError> {
        let name = rel.file_name().unwrap_or_default();
        let marker = rel.with_file_name(
            [WHITEOUT_PREFIX.as_bytes(), name.as_bytes()]
                .concat()
                .as_slice()
                .as_os_str_lossy(),
        );
        let mut h = self.header(meta, EntryType::Regular);
        h.set_mode(0o644);
        self.builder
            .append_data(&mut h, marker, io::empty())
            .map_err(self.io(rel))
    }
}

trait BytesAsOsStr {
    fn as_os_str_lossy(&self) -> &std::ffi::OsStr;
}

impl BytesAsOsStr for [u8] {
    fn as_os_str_lossy(&self) -> &std::ffi::OsStr {
        std::ffi::OsStr::from_bytes(self)
    }
}

/// All extended attributes of `path` (not following a final symlink), sorted.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        let mut value = vec![0u8; 256];
        loop {
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value) {
                Ok(n) => {
                    value.truncate(n);
                    break;
                }
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                // Removed between list and get: nothing to keep.
                Err(rustix::io::Errno::NODATA) => {
                    value.clear();
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}
