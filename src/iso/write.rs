//! Assembling the ISO from its parts with one xorriso call, and only
//! when the ISO under its final name is not already the one these inputs
//! give.
//!
//! Invariants:
//! * xorriso writes to a temp name in the output directory, published as
//!   [`crate::artifact`] says; a failure removes the temp file.
//! * "Up to date" is [`artifact::up_to_date`] for exactly these inputs
//!   (parts key, menu, overlay, tool version).

use std::path::{Path, PathBuf};

use super::overlay::Overlay;
use super::parts::{self, Parts};
use super::{xorriso, Firmware, IsoError};
use crate::artifact;
use crate::digest::Digest;
use crate::sandbox::Cancel;
use crate::store::{atomic, Store};
use crate::tools::Located;

/// Room for ISO 9660 structures, the catalog and padding.
const OVERHEAD: u64 = 8 << 20;

pub(super) struct Assembly<'a> {
    pub store: &'a Store,
    pub parts: &'a Parts,
    pub key: &'a Digest,
    pub firmware: &'a Firmware,
    /// Absolute ISO path of the squashfs.
    pub squashfs_path: &'a str,
    /// `boot/grub/grub.cfg`; none when the ESP boots a UKI.
    pub menu: Option<&'a str>,
    /// `.disk/info`.
    pub info: &'a str,
    /// The marker file's ISO path.
    pub marker: &'a str,
    pub overlay: Option<&'a Overlay>,
    pub xorriso: &'a Located,
    pub epoch: i64,
}

impl Assembly<'_> {
    /// The digest of everything that decides the ISO's bytes.
    fn inputs(&self) -> Digest {
        let document = serde_json::json!({
            "parts": self.key.to_string(),
            "squashfs": self.squashfs_path,
            "menu": self.menu,
            "info": self.info,
            "marker": self.marker,
            "overlay": self.overlay.map(|o| o.digest.as_str()),
            "xorriso": self.xorriso.version,
            "epoch": self.epoch,
        });
        Digest::of(&crate::store::canonical_json(&document))
    }

    /// Writes `iso` (and `iso.sha256`) unless it is already right; returns
    /// its sha256 hex and whether it was written.
    pub fn write(&self, iso: &Path, cancel: &Cancel) -> Result<(String, bool), IsoError> {
        let note = format!("iso {}", self.inputs().hex());
        if let Some(sha256) = self.up_to_date(iso, &note)? {
            return Ok((sha256, false));
        }
        let dir = iso.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(IsoError::io(dir))?;
        self.check_space(dir)?;
        let tree = self.store.staging_dir()?;
        let temp = atomic::temp_path_in(dir);
        let result = self.assemble(&tree, &temp, iso, cancel);
        let _ = crate::store::remove_tree(&tree);
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        let sha256 = result?;
        artifact::record(self.store, self.key, &note, &sha256)?;
        Ok((sha256, true))
    }

    fn up_to_date(&self, iso: &Path, note: &str) -> Result<Option<String>, IsoError> {
        Ok(artifact::up_to_date(
            self.store,
            self.key,
            &self.parts.entry.notes,
            note,
            iso,
        )?)
    }

    fn check_space(&self, dir: &Path) -> Result<(), IsoError> {
        let stat = rustix::fs::statvfs(dir).map_err(|e| IsoError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let available = stat.f_bavail.saturating_mul(stat.f_frsize);
        let needed = self.parts.size().saturating_add(OVERHEAD);
        if available < needed {
            return Err(IsoError::NoSpace {
                dir: dir.to_path_buf(),
                needed,
                available,
            });
        }
        Ok(())
    }

    /// The small files kbuild writes into the ISO, under `tree`.
    fn small_files(&self, tree: &Path) -> Result<(), IsoError> {
        let menu = self.menu.map(|menu| ("boot/grub/grub.cfg", menu));
        let files = [
            (".disk/info", self.info),
            (self.marker.trim_start_matches('/'), self.info),
        ];
        for (rel, text) in menu.into_iter().chain(files) {
            let path = tree.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(IsoError::io(parent))?;
            }
            std::fs::write(&path, text).map_err(IsoError::io(&path))?;
        }
        Ok(())
    }

    fn layout(&self, tree: &Path) -> xorriso::Layout {
        let part = |name: &str| self.parts.path(name);
        let mut maps: Vec<(PathBuf, String)> = Vec::new();
        if let Some(overlay) = self.overlay {
            maps.push((overlay.dir.clone(), "/".into()));
        }
        maps.push((tree.to_path_buf(), "/".into()));
        // A UKI's parts have no loose kernel and initrd.
        for (name, at) in [
            (parts::KERNEL, "/boot/kernel"),
            (parts::INITRD, "/boot/initrd"),
        ] {
            if self.parts.entry.files.contains_key(name) {
                maps.push((part(name), at.into()));
            }
        }
        maps.push((part(parts::SQUASHFS), self.squashfs_path.to_string()));
        let bios = self.firmware.bios.then(|| {
            maps.push((part(parts::ELTORITO), "/boot/grub/eltorito.img".into()));
            (
                "/boot/grub/eltorito.img".to_string(),
                part(parts::HYBRID_MBR),
            )
        });
        let esp_size = self.parts.entry.files.get(parts::ESP).map_or(0, |f| f.size);
        xorriso::Layout {
            maps,
            bios,
            esp: part(parts::ESP),
            esp_placement: xorriso::EspPlacement::for_size(esp_size),
            epoch: self.epoch,
            disk_guid: self.key.hex()[..32].to_string(),
        }
    }

    fn assemble(
        &self,
        tree: &Path,
        temp: &Path,
        iso: &Path,
        cancel: &Cancel,
    ) -> Result<String, IsoError> {
        self.small_files(tree)?;
        let args = xorriso::arguments(&self.layout(tree), temp);
        let mut command = self.xorriso.command(args);
        command
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .env("TZ", "UTC");
        self.xorriso.run_command(command, cancel)?;
        artifact::publish(temp, iso).map_err(IsoError::io(iso))
    }
}
