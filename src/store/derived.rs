//! Derived files: what kbuild makes *from* an image that is not an image
//! itself (an ISO's squashfs, GRUB images, EFI system partition, kernel and
//! initrd), kept under `derived/<key hex>/` so an unchanged image is never
//! packed twice.
//!
//! Invariants:
//! * An entry appears by one rename of a finished staging directory, so a
//!   reader sees a whole entry or none; `entry.json` lists every file with
//!   its size and sha256, and a file that no longer matches makes the entry
//!   absent (it is rebuilt), never trusted.
//! * The key is a digest of every input (the caller's business), and each
//!   entry names the image it came from: `cache prune` drops entries whose
//!   image no tag reaches, `cache fsck` re-hashes what entries hold.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{atomic, hash_file, io_at, remove_tree, Result, Store, StoreError};
use crate::digest::Digest;

/// The record of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedEntry {
    /// The manifest digest of the image the files were made from.
    pub image: Digest,
    /// Plain file name -> what it must hash to.
    pub files: BTreeMap<String, FileRecord>,
    /// Small facts the maker wants back (e.g. an assembled ISO's sha256).
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub size: u64,
    pub sha256: Digest,
}

const RECORD: &str = "entry.json";

impl Store {
    fn derived_root(&self) -> PathBuf {
        self.root().join("derived")
    }

    fn derived_dir(&self, key: &Digest) -> PathBuf {
        self.derived_root().join(key.hex())
    }

    /// The directory of entry `key` and its record, if it is there and its
    /// files have the sizes the record gives (a full re-hash is fsck's).
    pub fn derived(&self, key: &Digest) -> Result<Option<(PathBuf, DerivedEntry)>> {
        let dir = self.derived_dir(key);
        let record = dir.join(RECORD);
        let bytes = match fs::read(&record) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&record)(e)),
        };
        let Ok(entry) = serde_json::from_slice::<DerivedEntry>(&bytes) else {
            return Ok(None);
        };
        let whole = entry.files.iter().all(|(name, file)| {
            crate::rootfs::is_plain_name(name)
                && fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == file.size)
        });
        Ok(whole.then_some((dir, entry)))
    }

    /// Makes the finished `staging` directory entry `key`: hashes the files
    /// `entry.files` names (filling in their records) and renames it into
    /// place. An entry already there (another process made it) wins.
    pub fn commit_derived(
        &self,
        staging: &Path,
        key: &Digest,
        mut entry: DerivedEntry,
    ) -> Result<(PathBuf, DerivedEntry)> {
        for (name, record) in entry.files.iter_mut() {
            if !crate::rootfs::is_plain_name(name) {
                return Err(StoreError::Invalid(format!(
                    "derived file name \"{name}\" is not a plain name"
                )));
            }
            let path = staging.join(name);
            let file = fs::File::open(&path).map_err(io_at(&path))?;
            file.sync_all().map_err(io_at(&path))?;
            record.size = file.metadata().map_err(io_at(&path))?.len();
            record.sha256 = hash_file(&path).map_err(io_at(&path))?;
        }
        self.write_record(staging, &entry)?;
        fs::create_dir_all(self.derived_root()).map_err(io_at(&self.derived_root()))?;
        let dest = self.derived_dir(key);
        if dest.exists() {
            // A stale or broken entry: replace it.
            remove_tree(&dest)?;
        }
        match fs::rename(staging, &dest) {
            Ok(()) => {}
            Err(_) if dest.is_dir() => remove_tree(staging)?,
            Err(e) => return Err(io_at(&dest)(e)),
        }
        atomic::fsync_dir(&self.derived_root()).map_err(io_at(&self.derived_root()))?;
        Ok((dest, entry))
    }

    /// Records `notes` in entry `key` (atomically replacing its record).
    pub fn note_derived(&self, key: &Digest, notes: BTreeMap<String, String>) -> Result<()> {
        let Some((dir, mut entry)) = self.derived(key)? else {
            return Ok(());
        };
        entry.notes.extend(notes);
        self.write_record(&dir, &entry)
    }

    fn write_record(&self, dir: &Path, entry: &DerivedEntry) -> Result<()> {
        let record = dir.join(RECORD);
        atomic::write(&record, &super::canonical_json(entry)).map_err(io_at(&record))
    }

    /// Every entry's key and record (unreadable records as `None`).
    pub(super) fn derived_entries(&self) -> Result<Vec<(PathBuf, Option<DerivedEntry>)>> {
        let root = self.derived_root();
        let entries = match fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&root)(e)),
        };
        let mut found = Vec::new();
        for dirent in entries {
            let path = dirent.map_err(io_at(&root))?.path();
            let record = fs::read(path.join(RECORD))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            found.push((path, record));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(image: &Digest, names: &[&str]) -> DerivedEntry {
        DerivedEntry {
            image: image.clone(),
            files: names
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        FileRecord {
                            size: 0,
                            sha256: Digest::of(b""),
                        },
                    )
                })
                .collect(),
            notes: BTreeMap::new(),
        }
    }

    #[test]
    fn an_entry_is_whole_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Digest::of(b"inputs");
        let image = Digest::of(b"image");
        assert!(store.derived(&key).unwrap().is_none());
        let staging = store.staging_dir().unwrap();
        fs::write(staging.join("a.img"), b"hello").unwrap();
        let (path, made) = store
            .commit_derived(&staging, &key, entry(&image, &["a.img"]))
            .unwrap();
        assert_eq!(made.files["a.img"].size, 5);
        assert_eq!(made.files["a.img"].sha256, Digest::of(b"hello"));
        let (again, found) = store.derived(&key).unwrap().unwrap();
        assert_eq!((again.clone(), found), (path.clone(), made));
        store
            .note_derived(&key, BTreeMap::from([("iso".into(), "x".into())]))
            .unwrap();
        assert_eq!(store.derived(&key).unwrap().unwrap().1.notes["iso"], "x");
        // A truncated file makes the entry absent.
        fs::write(path.join("a.img"), b"hel").unwrap();
        assert!(store.derived(&key).unwrap().is_none());
    }

    #[test]
    fn names_must_be_plain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let staging = store.staging_dir().unwrap();
        let err = store
            .commit_derived(
                &staging,
                &Digest::of(b"k"),
                entry(&Digest::of(b"i"), &["../x"]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("plain name"), "{err}");
    }
}
