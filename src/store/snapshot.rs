//! Snapshots: a layer extracted as an overlay lower dir
//! (`snapshots/<diff_id hex>`), made from its blob when missing.
//!
//! Invariants:
//! * A snapshot is committed only once the blob's uncompressed stream
//!   hashed to the layer's diff_id, so a corrupt or forged blob or cache
//!   entry never becomes a lower dir.
//! * Device nodes a rootless extraction left as stand-ins are listed in
//!   `snapshots/<hex>.devices.json`, written before the snapshot itself is
//!   renamed into place (a snapshot never exists without its list).

use std::fs;
use std::io::{self, BufReader};

use std::path::{Path, PathBuf};

use super::cache::LayerRecord;
use super::{atomic, io_at, Result, Store, StoreError};
use crate::digest::{Digest, HashingReader};
use crate::layer::{self, DeviceNode, ExtractLimits, ExtractMode, Placeholders};

/// Suffix of a snapshot's list of device stand-ins.
pub const DEVICES_SUFFIX: &str = ".devices.json";

/// A device an image's root holds as a stand-in: where, what, and the
/// mode, owner and time its stand-in carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    /// Root-relative path.
    pub path: String,
    pub node: DeviceNode,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

impl Store {
    /// Makes sure `layer` has its snapshot.
    pub fn ensure_snapshot(&self, layer: &LayerRecord) -> Result<()> {
        if self.snapshot_path(&layer.diff_id).is_dir() {
            return Ok(());
        }
        let staging = self.staging_dir()?;
        let result = self.extract_snapshot(layer, &staging);
        if result.is_err() {
            let _ = super::remove_tree(&staging);
        }
        result
    }

    fn extract_snapshot(&self, layer: &LayerRecord, staging: &std::path::Path) -> Result<()> {
        let root = staging.join("rootfs");
        fs::create_dir(&root).map_err(io_at(&root))?;
        let blob = self.open_blob(&layer.digest)?;
        let blob_path = self.blob_path(&layer.digest);
        let tar = layer::decompressing_reader(BufReader::with_capacity(1 << 20, blob))
            .map_err(io_at(&blob_path))?;
        let mut hashing = HashingReader::new(tar);
        let stats = layer::extract_layer(
            &mut hashing,
            &root,
            ExtractMode::OverlayLower,
            ExtractLimits::default(),
        )
        .map_err(|source| StoreError::Extract {
            what: format!("layer {}", layer.digest),
            source,
        })?;
        // The tar's end-of-archive blocks count in the diff_id too.
        io::copy(&mut hashing, &mut io::sink()).map_err(io_at(&blob_path))?;
        let actual = hashing.finish();
        if actual != layer.diff_id {
            return Err(StoreError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual,
            });
        }
        self.commit_snapshot_with(&root, &layer.diff_id, &stats.placeholders)?;
        super::remove_tree(staging)
    }

    /// [`Store::commit_snapshot`] of a tree with device stand-ins.
    pub fn commit_snapshot_with(
        &self,
        staging: &Path,
        diff_id: &Digest,
        placeholders: &Placeholders,
    ) -> Result<PathBuf> {
        let list = self.devices_path(diff_id);
        if placeholders.is_empty() {
            match fs::remove_file(&list) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&list)(e)),
                _ => {}
            }
        } else {
            let json = serde_json::to_vec_pretty(placeholders).expect("a map serializes");
            atomic::write(&list, &json).map_err(io_at(&list))?;
        }
        self.commit_snapshot(staging, diff_id)
    }

    fn devices_path(&self, diff_id: &Digest) -> PathBuf {
        self.root()
            .join("snapshots")
            .join(format!("{}{DEVICES_SUFFIX}", diff_id.hex()))
    }

    /// The list of `diff_id`'s snapshot; every path in it is checked to be
    /// plain and relative.
    fn snapshot_devices(&self, diff_id: &Digest) -> Result<Placeholders> {
        let list = self.devices_path(diff_id);
        let invalid = |what: String| io_at(&list)(io::Error::new(io::ErrorKind::InvalidData, what));
        let records: Placeholders = match fs::read(&list) {
            Ok(json) => serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Placeholders::new()),
            Err(e) => return Err(io_at(&list)(e)),
        };
        match records.keys().find(|path| !is_plain_relative(path)) {
            Some(bad) => Err(invalid(format!("\"{bad}\" is not a plain relative path"))),
            None => Ok(records),
        }
    }

    /// The device stand-ins the image made of `layers` (bottom first)
    /// shows: those no layer above replaced, deleted, or hid behind an
    /// opaque or non-directory parent. Empty for a store made as root.
    pub fn image_stand_ins(&self, layers: &[LayerRecord]) -> Result<Vec<StandIn>> {
        let dirs: Vec<PathBuf> = layers
            .iter()
            .map(|l| self.snapshot_path(&l.diff_id))
            .collect();
        let mut found = Vec::new();
        for (index, layer) in layers.iter().enumerate() {
            for (path, node) in self.snapshot_devices(&layer.diff_id)? {
                if dirs[index + 1..].iter().any(|above| hides(above, &path)) {
                    continue;
                }
                // The stand-in itself gives the node's mode, owner and time.
                let Some(stat) = lstat_beneath(&dirs[index], &path) else {
                    continue;
                };
                let is_stand_in = rustix::fs::FileType::from_raw_mode(stat.st_mode)
                    == rustix::fs::FileType::CharacterDevice
                    && stat.st_rdev == 0;
                if is_stand_in {
                    found.push(StandIn {
                        path,
                        node,
                        mode: stat.st_mode & 0o7777,
                        uid: stat.st_uid,
                        gid: stat.st_gid,
                        mtime: stat.st_mtime,
                    });
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }
}

/// Whether the lower dir `above` hides `path` of the dirs below it: it has
/// an entry there (a file, a whiteout), or a parent that is not a plain
/// directory or is opaque. Nothing is looked up through a symlink.
fn hides(above: &Path, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    for depth in 1..parts.len() {
        let parent = parts[..depth].join("/");
        match lstat_beneath(above, &parent) {
            None => return false,
            Some(stat)
                if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                    != rustix::fs::FileType::Directory =>
            {
                return true
            }
            Some(_) if is_opaque(above, &parent) => return true,
            Some(_) => {}
        }
    }
    lstat_beneath(above, path).is_some()
}

/// `a/b/c`: no empty, `.` or `..` component, not absolute.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Opens `rel` beneath `dir` with no symlink on the way or at the end.
fn open_beneath(dir: &Path, rel: &str, flags: rustix::fs::OFlags) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    rustix::fs::openat2(
        &root,
        rel,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )
    .ok()
}

/// lstat of `rel` beneath `dir`, through directories only.
fn lstat_beneath(dir: &Path, rel: &str) -> Option<rustix::fs::Stat> {
    use rustix::fs::OFlags;
    let (parent, name) = rel.rsplit_once('/').unwrap_or((".", rel));
    let parent = open_beneath(dir, parent, OFlags::PATH | OFlags::DIRECTORY)?;
    rustix::fs::statat(&parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()
}

/// Whether the directory `rel` beneath `dir` carries the opaque marker.
fn is_opaque(dir: &Path, rel: &str) -> bool {
    use rustix::fs::OFlags;
    let opaque = crate::sandbox::overlay::opaque_xattr();
    open_beneath(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY)
        .is_some_and(|fd| rustix::fs::fgetxattr(&fd, opaque, &mut [0u8; 4]).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, TreeKind, WriteOptions};

    fn stand_in(dir: &Path, rel: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    }

    fn device(major: u32, minor: u32) -> DeviceNode {
        DeviceNode {
            block: false,
            major,
            minor,
        }
    }

    fn record(n: u8) -> LayerRecord {
        let hex = format!("{n:02x}").repeat(32);
        LayerRecord {
            digest: Digest::from_hex(&hex).unwrap(),
            diff_id: Digest::from_hex(&hex).unwrap(),
            size: 0,
            media_type: String::new(),
        }
    }

    #[test]
    fn a_recorded_stand_in_is_written_back_as_its_device() {
        let dir = tempfile::tempdir().unwrap();
        stand_in(dir.path(), "dev/null");
        stand_in(dir.path(), "dev/other");
        let placeholders = Placeholders::from([("dev/null".to_string(), device(1, 3))]);
        let options = WriteOptions {
            compression: Compression::None,
            source_date_epoch: None,
        };
        let (tar, _) = layer::write_layer_with(
            dir.path(),
            TreeKind::Full,
            &options,
            &placeholders,
            Vec::new(),
        )
        .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let nodes: Vec<(String, u32, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type() == tar::EntryType::Char)
            .map(|e| {
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            nodes,
            [
                ("dev/null".to_string(), 1, 3),
                ("dev/other".to_string(), 0, 0)
            ]
        );
    }

    #[test]
    fn an_image_shows_the_stand_ins_no_layer_above_hides() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (lower, upper) = (record(1), record(2));
        let staging = dir.path().join("lower");
        for rel in ["dev/null", "dev/zero", "a/b/c"] {
            stand_in(&staging, rel);
        }
        let recorded = Placeholders::from([
            ("dev/null".to_string(), device(1, 3)),
            ("dev/zero".to_string(), device(1, 5)),
            ("a/b/c".to_string(), device(4, 1)),
        ]);
        store
            .commit_snapshot_with(&staging, &lower.diff_id, &recorded)
            .unwrap();
        // Above: a file at dev/null, and `a` no longer a directory.
        let staging = dir.path().join("upper");
        fs::create_dir_all(staging.join("dev")).unwrap();
        fs::write(staging.join("dev/null"), b"").unwrap();
        fs::write(staging.join("a"), b"").unwrap();
        store
            .commit_snapshot_with(&staging, &upper.diff_id, &Placeholders::new())
            .unwrap();
        let shown = store.image_stand_ins(&[lower.clone(), upper]).unwrap();
        let paths: Vec<&str> = shown.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["dev/zero"]);
        assert_eq!(shown[0].node, device(1, 5));
        assert_eq!(shown[0].mode, 0o640, "the stand-in's mode");
        let alone = store.image_stand_ins(&[lower]).unwrap();
        assert_eq!(alone.len(), 3);
    }
}
