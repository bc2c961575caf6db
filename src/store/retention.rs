//! `cache prune`'s retention: which caches go before unreachable content
//! is collected. The caches are the step-cache entries (each holding its
//! layer blob and snapshot alive), the `RUN --mount=type=cache` dirs and
//! the derived entries (ISO parts). Like `docker builder prune`, they go
//! least recently used first: all of them (`--all`), those unused for a
//! while (`--until`), then more until the store fits (`--keep-storage`).
//!
//! Invariants:
//! * "Used" is the mtime of the entry's file or directory, which a build
//!   sets on every hit (see [`Store::mark_used`]), so an old entry that a
//!   build just reused counts as new.
//! * Sizes are [`usage`]'s: apparent bytes, directories included and
//!   hardlinks once (what `du -sb` reports). A layer counts as freed only
//!   when no tag and no kept entry still holds it, so what [`select`]
//!   expects to free is what the collection then frees.
//! * Tagged images are never touched: when they alone exceed the limit,
//!   every cache goes and the store stays above it (the report says so).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::usage::{subdirs, usage};
use super::{io_at, remove_tree, Result, Store};
use crate::digest::Digest;

/// What `cache prune` drops before collecting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Every cache.
    pub all: bool,
    /// Caches last used longer ago than this.
    pub unused_for: Option<Duration>,
    /// Then the least recently used caches until the store takes at most
    /// this many bytes.
    pub keep_storage: Option<u64>,
}

impl Retention {
    pub fn drops_nothing(&self) -> bool {
        !self.all && self.unused_for.is_none() && self.keep_storage.is_none()
    }
}

/// A cache retention may drop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Cache {
    Step(Digest),
    Mount(PathBuf),
    Derived(PathBuf),
}

#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub cache: Cache,
    pub used: SystemTime,
    /// Bytes of its own files (an entry's JSON, a whole directory).
    pub own: u64,
    /// A step's layer: the blob digest, and blob + snapshot bytes.
    pub layer: Option<(Digest, u64)>,
}

/// What retention dropped, and what the store took before and after.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    pub removed_steps: u64,
    pub removed_mounts: u64,
    pub removed_derived: u64,
    pub before: u64,
    pub after: u64,
}

/// The caches to drop, oldest first, and the store's expected size after.
/// `pinned` are the blobs tags reach; `total` the store's size now.
pub(super) fn select(
    mut candidates: Vec<Candidate>,
    pinned: &BTreeSet<Digest>,
    total: u64,
    retention: &Retention,
    now: SystemTime,
) -> (Vec<Cache>, u64) {
    candidates.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.cache.cmp(&b.cache)));
    let mut holders: BTreeMap<&Digest, usize> = BTreeMap::new();
    for layer in candidates.iter().filter_map(|c| c.layer.as_ref()) {
        *holders.entry(&layer.0).or_default() += 1;
    }
    let mut total = total;
    let mut dropped = Vec::new();
    for candidate in &candidates {
        let stale = retention
            .unused_for
            .is_some_and(|limit| now.duration_since(candidate.used).unwrap_or_default() > limit);
        let too_big = retention.keep_storage.is_some_and(|limit| total > limit);
        if !(retention.all || stale || too_big) {
            continue;
        }
        total = total.saturating_sub(candidate.own);
        if let Some((blob, bytes)) = &candidate.layer {
            let left = holders.get_mut(blob).expect("counted above");
            *left -= 1;
            if *left == 0 && !pinned.contains(blob) {
                total = total.saturating_sub(*bytes);
            }
        }
        dropped.push(candidate.cache.clone());
    }
    (dropped, total)
}

fn modified(path: &Path) -> SystemTime {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Store {
    /// Records that a cache at `path` (a step entry, cache-mount dir or
    /// derived entry) was just used, for the retention's LRU order.
    pub fn mark_used(&self, path: &Path) -> Result<()> {
        let now = fs::FileTimes::new().set_modified(SystemTime::now());
        fs::File::open(path)
            .and_then(|f| f.set_times(now))
            .map_err(io_at(path))
    }

    /// Every cache retention may drop, with its size and last use.
    fn cache_candidates(&self) -> Result<Vec<Candidate>> {
        let mut candidates = Vec::new();
        for (key, entry) in self.cached_steps()? {
            let path = self.step_path(&key);
            let layer = entry.layer.map(|layer| {
                let snapshot = self.root.join("snapshots").join(layer.diff_id.hex());
                let bytes = usage(&self.blob_path(&layer.digest)) + usage(&snapshot);
                (layer.digest, bytes)
            });
            candidates.push(Candidate {
                used: modified(&path),
                own: usage(&path),
                cache: Cache::Step(key),
                layer,
            });
        }
        for dir in subdirs(&self.root.join("cache/mounts"))? {
            candidates.push(Candidate {
                used: modified(&dir),
                own: usage(&dir),
                cache: Cache::Mount(dir),
                layer: None,
            });
        }
        for (dir, _) in self.derived_entries()? {
            candidates.push(Candidate {
                used: modified(&dir),
                own: usage(&dir),
                cache: Cache::Derived(dir),
                layer: None,
            });
        }
        Ok(candidates)
    }

    /// Drops the caches `retention` selects. The caller holds the store
    /// exclusively and collects what became unreachable afterwards.
    pub(super) fn apply_retention(&self, retention: &Retention) -> Result<RetentionReport> {
        let before = usage(&self.root);
        let mut report = RetentionReport {
            before,
            after: before,
            ..RetentionReport::default()
        };
        if retention.drops_nothing() {
            return Ok(report);
        }
        let (pinned, _) = self.tag_reachable(None)?;
        let (dropped, _) = select(
            self.cache_candidates()?,
            &pinned,
            before,
            retention,
            SystemTime::now(),
        );
        for cache in dropped {
            match cache {
                Cache::Step(key) => {
                    let path = self.step_path(&key);
                    fs::remove_file(&path).map_err(io_at(&path))?;
                    report.removed_steps += 1;
                }
                Cache::Mount(dir) => {
                    remove_tree(&dir)?;
                    // Its `sharing=` lock file (no build holds it: the
                    // store is locked exclusively).
                    let lock = dir.with_extension("lock");
                    match fs::remove_file(&lock) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_at(&lock)(e)),
                    }
                    report.removed_mounts += 1;
                }
                Cache::Derived(dir) => {
                    remove_tree(&dir)?;
                    report.removed_derived += 1;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn step(n: u8, used: u64, blob: u8, bytes: u64) -> Candidate {
        Candidate {
            cache: Cache::Step(Digest::of(&[n])),
            used: at(used),
            own: 100,
            layer: Some((Digest::of(&[blob]), bytes)),
        }
    }

    #[test]
    fn keep_storage_drops_least_recently_used_first_until_it_fits() {
        let candidates = vec![
            step(1, 30, 1, 1000),
            step(2, 10, 2, 1000),
            step(3, 20, 3, 1000),
        ];
        let retention = Retention {
            keep_storage: Some(2000),
            ..Retention::default()
        };
        let (dropped, after) = select(candidates, &BTreeSet::new(), 3300, &retention, at(40));
        assert_eq!(
            dropped,
            vec![Cache::Step(Digest::of(&[2])), Cache::Step(Digest::of(&[3]))]
        );
        assert_eq!(after, 1100);
    }

    #[test]
    fn a_layer_frees_bytes_only_when_nothing_else_holds_it() {
        // Steps 1 and 2 share blob 9; blob 8 is tagged.
        let candidates = vec![
            step(1, 10, 9, 1000),
            step(2, 20, 9, 1000),
            step(3, 30, 8, 1000),
        ];
        let pinned = BTreeSet::from([Digest::of(&[8])]);
        let all = Retention {
            all: true,
            ..Retention::default()
        };
        let (dropped, after) = select(candidates.clone(), &pinned, 5000, &all, at(40));
        assert_eq!(dropped.len(), 3);
        // Three entries' own bytes and blob 9 once; blob 8 stays.
        assert_eq!(after, 5000 - 300 - 1000);
        let keep = Retention {
            keep_storage: Some(4850),
            ..Retention::default()
        };
        // Dropping step 1 frees only its entry (step 2 holds blob 9), so
        // step 2 goes too.
        let (dropped, after) = select(candidates, &pinned, 5000, &keep, at(40));
        assert_eq!(dropped.len(), 2);
        assert_eq!(after, 5000 - 200 - 1000);
    }

    #[test]
    fn until_drops_what_was_unused_for_longer() {
        let candidates = vec![
            step(1, 100, 1, 10),
            Candidate {
                cache: Cache::Mount(PathBuf::from("m")),
                used: at(10),
                own: 50,
                layer: None,
            },
        ];
        let retention = Retention {
            unused_for: Some(Duration::from_secs(60)),
            ..Retention::default()
        };
        let (dropped, after) = select(candidates, &BTreeSet::new(), 1000, &retention, at(120));
        assert_eq!(dropped, vec![Cache::Mount(PathBuf::from("m"))]);
        assert_eq!(after, 950);
    }
}
