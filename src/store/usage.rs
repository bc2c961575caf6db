//! What the store takes: apparent bytes under a path (the one walker
//! retention, gc and `cache ls` count with) and, per part of the store,
//! its entries and bytes.
//!
//! Invariants:
//! * Bytes are apparent sizes of everything under a path, directories
//!   included and hardlinks once: what `du -sb` reports, so the store's
//!   total is the figure `cache prune --keep-storage` compares.
//! * Reading sizes changes nothing and takes no exclusive lock; a part
//!   whose directory does not exist is empty.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{io_at, Result, Store};

/// Entries and bytes of one part of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
}

/// What each part of the store holds (`kbuild cache ls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreUsage {
    pub tags: u64,
    /// Blobs under `blobs/sha256/`.
    pub blobs: Usage,
    /// Extracted layers under `snapshots/`.
    pub snapshots: Usage,
    /// Step-cache entries under `cache/steps/`.
    pub steps: Usage,
    /// `RUN --mount=type=cache` directories under `cache/mounts/`.
    pub mounts: Usage,
    /// Derived entries (ISO parts) under `derived/`.
    pub derived: Usage,
    /// Bytes of the whole store.
    pub total: u64,
}

/// Apparent bytes under `path` (itself included), hardlinks once.
pub(super) fn usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    usage_of(path, &mut seen)
}

fn usage_of(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    let mut bytes = meta.len();
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            bytes += entries
                .flatten()
                .map(|e| usage_of(&e.path(), seen))
                .sum::<u64>();
        }
    }
    bytes
}

/// The entries of `dir` that `keep` accepts (none when it does not exist).
fn entries(dir: &Path, keep: impl Fn(&fs::DirEntry) -> bool) -> Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(found) => Ok(found.flatten().filter(keep).map(|e| e.path()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_at(dir)(e)),
    }
}

/// The subdirectories of `dir` (none when it does not exist).
pub(super) fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    entries(dir, |e| e.file_type().is_ok_and(|t| t.is_dir()))
}

impl Store {
    /// Entries and bytes of each part of the store, and its total.
    pub fn usage(&self) -> Result<StoreUsage> {
        let part = |dir: &str, count: usize| Usage {
            entries: count as u64,
            bytes: usage(&self.root.join(dir)),
        };
        let all = |dir: &str| entries(&self.root.join(dir), |_| true).map(|e| e.len());
        Ok(StoreUsage {
            tags: self.tags()?.len() as u64,
            blobs: part("blobs", all("blobs/sha256")?),
            snapshots: part("snapshots", all("snapshots")?),
            steps: part("cache/steps", self.cached_steps()?.len()),
            mounts: part(
                "cache/mounts",
                subdirs(&self.root.join("cache/mounts"))?.len(),
            ),
            derived: part("derived", all("derived")?),
            total: usage(&self.root),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_directories_and_hardlinks_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), [0u8; 1000]).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/c"), [0u8; 10]).unwrap();
        let dirs = fs::metadata(dir.path()).unwrap().len()
            + fs::metadata(dir.path().join("sub")).unwrap().len();
        assert_eq!(usage(dir.path()), dirs + 1010);
    }

    #[test]
    fn each_part_counts_its_entries_and_the_total_is_the_whole_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_blob(b"one").unwrap();
        store.put_blob(b"two").unwrap();
        let mounts = dir.path().join("cache/mounts");
        fs::create_dir_all(mounts.join("m1")).unwrap();
        fs::write(mounts.join("m1.lock"), b"").unwrap();
        fs::write(mounts.join("m1/data"), [0u8; 100]).unwrap();
        let found = store.usage().unwrap();
        assert_eq!(found.blobs.entries, 2);
        assert_eq!(found.blobs.bytes, usage(&dir.path().join("blobs")));
        assert_eq!(found.mounts.entries, 1, "the lock file is no mount");
        assert!(found.mounts.bytes >= 100);
        assert_eq!((found.steps.entries, found.derived), (0, Usage::default()));
        assert_eq!(found.total, usage(dir.path()));
    }
}
