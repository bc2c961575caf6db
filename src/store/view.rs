//! A read-only view of an image's root: its layers' snapshots stacked as
//! overlay lower dirs, mounted in a private mount namespace of one thread
//! for as long as the caller's work runs.
//!
//! Invariants:
//! * The mount is made in a namespace of its own (the thread unshares),
//!   so it never appears on the host and dies with the thread, whatever
//!   the work does or however kbuild ends.
//! * The view has no upper dir: nothing written through it is possible.

use std::path::Path;

use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::cache::LayerRecord;
use super::{io_at, Result, Store, StoreError};
use crate::digest::Digest;
use crate::rootfs::Root;
use crate::sandbox::overlay::{self, Overlay};

impl Store {
    /// Runs `work` on the root of the image made of `layers` (bottom
    /// first), read-only. Needs root (overlayfs).
    pub fn with_image_root<T: Send>(
        &self,
        layers: &[LayerRecord],
        work: impl FnOnce(&Root, &Path) -> T + Send,
    ) -> Result<T> {
        for layer in layers {
            self.ensure_snapshot(layer)?;
        }
        let mut lowers: Vec<String> = Vec::new();
        for layer in layers.iter().rev() {
            let name = layer.diff_id.hex().to_string();
            if !lowers.contains(&name) {
                lowers.push(name);
            }
        }
        let dir = self.staging_dir()?;
        let result = self.mounted(&dir, &lowers, work);
        let _ = super::remove_tree(&dir);
        result
    }

    fn mounted<T: Send>(
        &self,
        dir: &Path,
        lowers: &[String],
        work: impl FnOnce(&Root, &Path) -> T + Send,
    ) -> Result<T> {
        let merged = dir.join("merged");
        let empty = dir.join("empty");
        for path in [&merged, &empty] {
            std::fs::create_dir(path).map_err(io_at(path))?;
        }
        let snapshots = self.root().join("snapshots");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    overlay::private_namespace().map_err(io_at(&merged))?;
                    overlay::mount(
                        &Overlay {
                            snapshots: &snapshots,
                            lowers,
                            upper: None,
                            empty: &empty,
                        },
                        &merged,
                    )
                    .map_err(io_at(&merged))?;
                    let root = Root::open(&merged).map_err(io_at(&merged))?;
                    Ok(work(&root, &merged))
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(StoreError::Invalid(
                        "the image view's thread panicked".into(),
                    ))
                })
        })
    }
}

impl Store {
    /// The layers of the store image `name` (the host's platform of an
    /// index), bottom first, with their diff_ids from the image config.
    pub fn image_layers(&self, name: &str) -> Result<Vec<LayerRecord>> {
        let (_, manifest) = self.resolve(name)?;
        self.manifest_layers(&manifest)
    }

    /// The image configuration an image manifest of the store names.
    pub fn image_config(&self, manifest: &ImageManifest) -> Result<ImageConfiguration> {
        self.read_json(&Digest::try_from(manifest.config().digest())?)
    }

    /// The layers of an image manifest of the store, bottom first.
    pub fn manifest_layers(&self, manifest: &ImageManifest) -> Result<Vec<LayerRecord>> {
        let name = Digest::try_from(manifest.config().digest())?.to_string();
        let config = self.image_config(manifest)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(StoreError::Invalid(format!(
                "{name}: {} layers but {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| {
                Ok(LayerRecord {
                    digest: Digest::try_from(layer.digest())?,
                    diff_id: diff_id.parse()?,
                    size: layer.size(),
                    media_type: layer.media_type().to_string(),
                })
            })
            .collect()
    }
}
