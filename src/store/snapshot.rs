//! Snapshots: a layer extracted as an overlay lower dir
//! (`snapshots/<diff_id hex>`), made from its blob when missing.
//!
//! Invariant: a snapshot is committed only once the blob's uncompressed
//! stream hashed to the layer's diff_id, so a corrupt or forged blob or
//! cache entry never becomes a lower dir.

use std::fs;
use std::io::{self, BufReader};

use super::cache::LayerRecord;
use super::{io_at, Result, Store, StoreError};
use crate::digest::HashingReader;
use crate::layer::{self, ExtractLimits, ExtractMode};

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
        layer::extract_layer(
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
        self.commit_snapshot(&root, &layer.diff_id)?;
        super::remove_tree(staging)
    }
}
