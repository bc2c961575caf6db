//! The step cache (`cache/steps/<key hex>.json`) and the remote sources
//! of blobs (`sources/<digest hex>`).
//!
//! A step key is a digest over everything a build step's result depends
//! on; its entry names the layer the step produced, or none when the step
//! changed nothing. Entries are what `--cache-to`/`--cache-from` move
//! between machines.
//!
//! Invariants:
//! * An entry is written (atomically) only after its layer blob is in the
//!   store, so a present entry never points at a missing layer unless the
//!   blob was pruned since; readers then treat it as a miss.
//! * Source records are hints for cross-repository mounts: losing one
//!   costs an upload, never correctness.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::{atomic, io_at, Result, Store, StoreError};
use crate::digest::Digest;

/// A layer blob with its uncompressed digest: what a step produced, or
/// one layer of an image being built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

impl From<&crate::layer::LayerInfo> for LayerRecord {
    fn from(info: &crate::layer::LayerInfo) -> Self {
        LayerRecord {
            digest: info.digest.clone(),
            diff_id: info.diff_id.clone(),
            size: info.size,
            media_type: info.media_type.to_string(),
        }
    }
}

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// `None`: the step changed no file (its history entry is `empty_layer`).
    pub layer: Option<LayerRecord>,
    /// When the step ran (seconds since the epoch). A hit dates its
    /// history entry with it, so a fully cached build without
    /// `SOURCE_DATE_EPOCH` gives the image it gave before. Absent in
    /// entries written before kbuild recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

impl Store {
    pub(super) fn step_path(&self, key: &Digest) -> std::path::PathBuf {
        self.root
            .join("cache/steps")
            .join(format!("{}.json", key.hex()))
    }

    /// The entry for `key`, if it is cached and its layer is present.
    pub fn cached_step(&self, key: &Digest) -> Result<Option<CacheEntry>> {
        let path = self.step_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let entry: CacheEntry =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { path, source })?;
        let present = entry
            .layer
            .as_ref()
            .is_none_or(|layer| self.has_blob(&layer.digest));
        Ok(present.then_some(entry))
    }

    /// Notes that a build just reused `key` (the retention's LRU order).
    pub fn mark_step_used(&self, key: &Digest) -> Result<()> {
        self.mark_used(&self.step_path(key))
    }

    /// Records a step result; its layer blob must already be stored.
    pub fn cache_step(&self, key: &Digest, entry: &CacheEntry) -> Result<()> {
        if let Some(layer) = &entry.layer {
            if !self.has_blob(&layer.digest) {
                return Err(StoreError::MissingBlob(layer.digest.clone()));
            }
        }
        let dir = self.root.join("cache/steps");
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let path = self.step_path(key);
        atomic::write(&path, &super::canonical_json(entry)).map_err(io_at(&path))
    }

    /// Every usable step cache entry, by key.
    pub fn cached_steps(&self) -> Result<BTreeMap<Digest, CacheEntry>> {
        let dir = self.root.join("cache/steps");
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_at(&dir)(e)),
        };
        let mut entries = BTreeMap::new();
        for item in read {
            let item = item.map_err(io_at(&dir))?;
            let name = item.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue; // temp files of a concurrent writer
            };
            let Ok(key) = Digest::from_hex(hex) else {
                continue;
            };
            if let Some(entry) = self.cached_step(&key)? {
                entries.insert(key, entry);
            }
        }
        Ok(entries)
    }

    /// Notes that `registry/repository` holds `digest`.
    pub fn add_source(&self, digest: &Digest, registry: &str, repository: &str) -> Result<()> {
        let line = format!("{registry}/{repository}");
        let mut known = self.sources_of(digest)?;
        if known.contains(&line) {
            return Ok(());
        }
        known.push(line);
        known.sort();
        let path = self.root.join("sources").join(digest.hex());
        atomic::write(&path, format!("{}\n", known.join("\n")).as_bytes()).map_err(io_at(&path))
    }

    /// `registry/repository` names known to hold `digest`.
    pub fn sources_of(&self, digest: &Digest) -> Result<Vec<String>> {
        let path = self.root.join("sources").join(digest.hex());
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_at(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_need_their_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.put_blob(b"layer bytes").unwrap();
        let layer = LayerRecord {
            digest: blob.clone(),
            diff_id: Digest::of(b"diff"),
            size: 11,
            media_type: crate::media::LAYER_GZIP.into(),
        };
        let with_layer = CacheEntry {
            layer: Some(layer),
            created: Some(1),
        };
        let empty = CacheEntry {
            layer: None,
            created: None,
        };
        let (k1, k2, k3) = (Digest::of(b"1"), Digest::of(b"2"), Digest::of(b"3"));
        store.cache_step(&k1, &with_layer).unwrap();
        store.cache_step(&k2, &empty).unwrap();
        let missing = CacheEntry {
            layer: Some(LayerRecord {
                digest: Digest::of(b"absent"),
                ..with_layer.layer.clone().unwrap()
            }),
            created: None,
        };
        assert!(matches!(
            store.cache_step(&k3, &missing),
            Err(StoreError::MissingBlob(_))
        ));
        assert_eq!(store.cached_step(&k1).unwrap(), Some(with_layer.clone()));
        assert_eq!(store.cached_step(&k3).unwrap(), None);
        let all = store.cached_steps().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[&k2], empty);
    }

    #[test]
    fn sources_accumulate_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"x");
        assert!(store.sources_of(&d).unwrap().is_empty());
        store.add_source(&d, "127.0.0.1:5000", "a/b").unwrap();
        store.add_source(&d, "127.0.0.1:5000", "a/b").unwrap();
        store.add_source(&d, "quay.io", "kairos/x").unwrap();
        assert_eq!(
            store.sources_of(&d).unwrap(),
            ["127.0.0.1:5000/a/b", "quay.io/kairos/x"]
        );
    }
}
