//! Artifacts kbuild writes for the user (ISOs, disks, netboot files):
//! each beside a `<name>.sha256` that `sha256sum -c` checks, written
//! whole, and left alone on a re-run that would write the same bytes.
//!
//! Invariants:
//! * An artifact appears under its final name only whole: written to a
//!   temp name in its directory, synced, hashed, renamed; then its
//!   `.sha256` is written the same way.
//! * "Up to date" means: the file there hashes to what the store recorded
//!   for exactly these inputs (a note of a derived entry), and its
//!   `.sha256` says so. A settled [`Stamp`], recorded when a re-run's
//!   read confirmed the hash, stands in for the read while it still
//!   describes the file, so later no-op runs read nothing; a racy or
//!   stale stamp means a read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::store::stamp::Stamp;
use crate::store::{atomic, Store, StoreError};

/// `<path>.sha256`.
pub fn sums_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// A `sha256sum -c` line naming the file by its name, so the pair can be
/// checked wherever it is copied.
pub fn sums_line(sha256: &str, path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!("{sha256}  {name}\n")
}

fn stamp_key(note: &str) -> String {
    format!("{note} stamp")
}

/// The sha256 of `path` when it is the artifact `note` (of the derived
/// entry `key`, whose notes are `notes`) recorded; `None` when it must be
/// written.
pub fn up_to_date(
    store: &Store,
    key: &Digest,
    notes: &BTreeMap<String, String>,
    note: &str,
    path: &Path,
) -> Result<Option<String>, StoreError> {
    let Some(recorded) = notes.get(note) else {
        return Ok(None);
    };
    let listed = std::fs::read_to_string(sums_path(path)).unwrap_or_default();
    if !path.is_file() || listed != sums_line(recorded, path) {
        return Ok(None);
    }
    let stamp = notes.get(&stamp_key(note));
    if stamp
        .and_then(|text| Stamp::parse(text))
        .is_some_and(|stamp| stamp.still_describes(path))
    {
        return Ok(Some(recorded.clone()));
    }
    // Stamped before the read and again after: only a file that did not
    // change while it was read may be stamped as having these bytes.
    let before = Stamp::of(path);
    let Ok(actual) = crate::store::hash_file(path) else {
        return Ok(None);
    };
    if actual.hex() != recorded {
        return Ok(None);
    }
    if let (Ok(before), Ok(after)) = (before, Stamp::of(path)) {
        let fresh = before.to_string();
        if before.same_file_state(&after) && stamp != Some(&fresh) {
            store.note_derived(key, BTreeMap::from([(stamp_key(note), fresh)]))?;
        }
    }
    Ok(Some(recorded.clone()))
}

/// Syncs and hashes the finished `temp`, renames it to `path` and writes
/// `path.sha256`; returns the sha256 hex.
pub fn publish(temp: &Path, path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(temp)?;
    file.sync_all()?;
    let sha256 = crate::store::hash_file(temp)?.hex().to_string();
    // A `.sha256` of the file being replaced must not outlive it.
    match std::fs::remove_file(sums_path(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::rename(temp, path)?;
    atomic::write(&sums_path(path), sums_line(&sha256, path).as_bytes())?;
    Ok(sha256)
}

/// Records that `note` of `key` is the artifact with `sha256`.
pub fn record(store: &Store, key: &Digest, note: &str, sha256: &str) -> Result<(), StoreError> {
    store.note_derived(
        key,
        BTreeMap::from([(note.to_string(), sha256.to_string())]),
    )
}
