//! Reachability, `cache prune` and `cache fsck`.
//!
//! Reachable = the tagged manifests (and indexes with every manifest in
//! them), their configs and layers, the step cache's layers, and the
//! snapshots of all those layers' diff_ids. `prune` first lets the
//! [`Retention`] drop caches, then collects the rest.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::retention::{Retention, RetentionReport};
use super::usage::usage;
use super::{atomic::TEMP_PREFIX, hash_file, io_at, remove_tree, Result, Store, StoreError};
use crate::digest::Digest;

#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed_blobs: u64,
    /// Derived-file entries (ISO parts) of images no tag reaches.
    pub removed_derived: u64,
    pub removed_snapshots: u64,
    pub removed_temp: u64,
    pub freed_bytes: u64,
    /// The caches dropped first, and the store's size before and after.
    pub retention: RetentionReport,
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub checked_blobs: u64,
    /// What failed, moved to `quarantine/`.
    pub corrupt: Vec<String>,
    pub missing: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

fn parse(d: &oci_spec::image::Digest) -> Result<Digest> {
    Ok(Digest::try_from(d)?)
}

impl Store {
    /// Blobs and snapshot diff_ids reachable from the tags and the step
    /// cache. Unreadable documents are reported through `missing` by fsck,
    /// skipped here.
    fn reachable(
        &self,
        fsck: Option<&mut FsckReport>,
    ) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        let (mut blobs, mut diff_ids) = self.tag_reachable(fsck)?;
        // The step cache keeps its layers (and their snapshots) alive.
        for entry in self.cached_steps()?.into_values() {
            if let Some(layer) = entry.layer {
                blobs.insert(layer.digest);
                diff_ids.insert(layer.diff_id);
            }
        }
        Ok((blobs, diff_ids))
    }

    /// Blobs and snapshot diff_ids reachable from the tags alone.
    pub(super) fn tag_reachable(
        &self,
        fsck: Option<&mut FsckReport>,
    ) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        let mut blobs = BTreeSet::new();
        let mut diff_ids = BTreeSet::new();
        let mut report = fsck;
        for (name, manifest_digest) in self.tagged_manifests(&mut blobs, report.as_deref_mut())? {
            blobs.insert(manifest_digest.clone());
            let manifest: ImageManifest = match self.read_json(&manifest_digest) {
                Ok(m) => m,
                Err(e) => {
                    if let Some(r) = report.as_deref_mut() {
                        r.missing
                            .push(format!("{name}: manifest {manifest_digest}: {e}"));
                    }
                    continue;
                }
            };
            let config_digest = parse(manifest.config().digest())?;
            blobs.insert(config_digest.clone());
            for layer in manifest.layers() {
                blobs.insert(parse(layer.digest())?);
            }
            if let Ok(config) = self.read_json::<ImageConfiguration>(&config_digest) {
                for id in config.rootfs().diff_ids() {
                    diff_ids.insert(id.parse()?);
                }
            }
        }
        Ok((blobs, diff_ids))
    }

    /// The image manifests the tags reach, with the tag naming each; a tag
    /// on a multi-platform index reaches every manifest in it (the index
    /// itself goes into `blobs`).
    fn tagged_manifests(
        &self,
        blobs: &mut BTreeSet<Digest>,
        mut report: Option<&mut FsckReport>,
    ) -> Result<Vec<(String, Digest)>> {
        let mut manifests = Vec::new();
        for (name, descriptor) in self.tags()? {
            let digest = parse(descriptor.digest())?;
            if !super::image::is_index(descriptor.media_type()) {
                manifests.push((name, digest));
                continue;
            }
            blobs.insert(digest.clone());
            match self.read_json::<ImageIndex>(&digest) {
                Ok(index) => {
                    for child in index.manifests() {
                        manifests.push((name.clone(), parse(child.digest())?));
                    }
                }
                Err(e) => {
                    if let Some(r) = report.as_deref_mut() {
                        r.missing.push(format!("{name}: index {digest}: {e}"));
                    }
                }
            }
        }
        Ok(manifests)
    }

    /// Drops the caches `retention` selects, then removes blobs,
    /// snapshots and derived entries nothing reaches, and leftover temp
    /// files.
    pub fn prune(&self, retention: &Retention) -> Result<PruneReport> {
        let _guard = self.exclusive()?;
        let retained = self.apply_retention(retention)?;
        let mut report = self.collect()?;
        report.removed_derived += retained.removed_derived;
        report.retention = RetentionReport {
            after: usage(&self.root),
            ..retained
        };
        Ok(report)
    }

    /// Removes what nothing reaches (the caller holds the lock exclusively).
    fn collect(&self) -> Result<PruneReport> {
        let (blobs, diff_ids) = self.reachable(None)?;
        let mut report = PruneReport::default();
        let blob_dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir).map_err(io_at(&blob_dir))? {
            let path = entry.map_err(io_at(&blob_dir))?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let keep = Digest::from_hex(&name).is_ok_and(|d| blobs.contains(&d));
            if !keep {
                report.freed_bytes += fs::metadata(&path).map_or(0, |m| m.len());
                fs::remove_file(&path).map_err(io_at(&path))?;
                let _ = fs::remove_file(self.root.join("sources").join(&name));
                if name.starts_with(TEMP_PREFIX) {
                    report.removed_temp += 1;
                } else {
                    report.removed_blobs += 1;
                }
            }
        }
        let snap_dir = self.root.join("snapshots");
        for entry in fs::read_dir(&snap_dir).map_err(io_at(&snap_dir))? {
            let path = entry.map_err(io_at(&snap_dir))?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let hex = name
                .strip_suffix(super::snapshot::DEVICES_SUFFIX)
                .unwrap_or(&name);
            if !Digest::from_hex(hex).is_ok_and(|d| diff_ids.contains(&d)) {
                if hex.len() == name.len() {
                    remove_tree(&path)?;
                    report.removed_snapshots += 1;
                } else {
                    fs::remove_file(&path).map_err(io_at(&path))?;
                }
            }
        }
        for (path, entry) in self.derived_entries()? {
            if !entry.is_some_and(|e| blobs.contains(&e.image)) {
                report.freed_bytes += usage(&path);
                remove_tree(&path)?;
                report.removed_derived += 1;
            }
        }
        for sub in ["tmp", "."] {
            let dir = self.root.join(sub);
            for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
                let path = entry.map_err(io_at(&dir))?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if sub == "tmp" || name.starts_with(TEMP_PREFIX) {
                    remove_tree(&path)?;
                    report.removed_temp += 1;
                }
            }
        }
        Ok(report)
    }

    /// Re-hashes every reachable blob; corrupt ones go to `quarantine/`.
    pub fn fsck(&self) -> Result<FsckReport> {
        let _guard = self.exclusive()?;
        let mut report = FsckReport::default();
        let (blobs, diff_ids) = self.reachable(Some(&mut report))?;
        for digest in &blobs {
            let path = self.blob_path(digest);
            report.checked_blobs += 1;
            match hash_file(&path) {
                Ok(actual) if &actual == digest => {}
                Ok(actual) => {
                    let dest = self.quarantine_path(digest);
                    fs::rename(&path, &dest).map_err(io_at(&path))?;
                    report.corrupt.push(format!(
                        "blob {digest} hashes to {actual}; moved to {}",
                        dest.display()
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    report.missing.push(format!("blob {digest} is missing"))
                }
                Err(e) => return Err(StoreError::Io { path, source: e }),
            }
        }
        // Snapshots are caches of their layers (absent ones are re-extracted
        // on use), so only the blobs carry the truth fsck verifies.
        let _ = diff_ids;
        self.fsck_derived(&mut report)?;
        Ok(report)
    }

    fn quarantine_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("quarantine").join(digest.hex())
    }
}

impl Store {
    /// Re-hashes every derived entry's files; an entry that does not match
    /// its record is removed (it is rebuilt on next use) and reported.
    fn fsck_derived(&self, report: &mut FsckReport) -> Result<()> {
        for (path, entry) in self.derived_entries()? {
            let Some(entry) = entry else {
                remove_tree(&path)?;
                report
                    .corrupt
                    .push(format!("{}: unreadable record; removed", path.display()));
                continue;
            };
            let bad = entry.files.iter().find(|(name, file)| {
                hash_file(&path.join(name.as_str())).map_or(true, |d| d != file.sha256)
            });
            if let Some((name, _)) = bad {
                remove_tree(&path)?;
                report.corrupt.push(format!(
                    "{}: {name} does not match its record; removed",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}
