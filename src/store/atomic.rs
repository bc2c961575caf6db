//! Crash-safe file writes: temp file in the destination directory, fsync,
//! rename, fsync of the directory. A reader sees the old file or the whole
//! new one, never a part.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of in-flight temp files; `cache prune` removes leftovers.
pub const TEMP_PREFIX: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique temp path next to `dest` (same filesystem, so rename is atomic).
pub fn temp_path_in(dir: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    dir.join(format!("{TEMP_PREFIX}{}-{nanos}-{n}", std::process::id()))
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dest` atomically and durably.
pub fn write(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with_mode(dest, bytes, 0o666)
}

/// [`write`] unless `dest` already holds exactly `bytes`; returns whether
/// it wrote. A re-run that produces the same file leaves it untouched
/// (inode, mtime), so tools watching the output see no change.
pub fn write_if_changed(dest: &Path, bytes: &[u8]) -> io::Result<bool> {
    let same = fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
        && fs::read(dest).is_ok_and(|existing| existing == bytes);
    if same {
        return Ok(false);
    }
    write(dest, bytes)?;
    Ok(true)
}

/// [`write`] with the file created as `mode` (less the umask), so a secret
/// is never readable by others, not even before a chmod.
pub fn write_with_mode(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = parent_dir(dest);
    let tmp = temp_path_in(dir);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The directory `dest` is in: `.` for a bare file name, whose parent is
/// "" (which cannot be opened to fsync).
fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A temp file of [`temp_path_in`], removed when dropped unless it was
/// renamed away ([`TempFile::renamed`]).
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates an empty temp file in `dir`.
    pub fn create_in(dir: &Path) -> io::Result<TempFile> {
        let path = temp_path_in(dir);
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile { path, armed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// It was renamed to its final name: nothing to remove.
    pub fn renamed(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("bare.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("out/x.json")), Path::new("out"));
        assert_eq!(parent_dir(Path::new("/x.json")), Path::new("/"));
    }
}
