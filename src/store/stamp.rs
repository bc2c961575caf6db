//! File stamps: what lets a re-run trust an output it wrote earlier
//! without reading it again (git's index does the same for its work tree).
//!
//! A stamp is the file's device, inode, size, mtime and ctime, and the
//! moment it was taken. Any write to the file, a rename over it or a
//! `touch` changes its ctime, which no user can set back.
//!
//! Invariants:
//! * A stamp taken in the same instant as the file's last change cannot
//!   tell that change from a later one in the same clock tick, so a stamp
//!   taken less than [`SETTLE`] after the ctime it records is *racy* and
//!   never trusted; the caller reads the file and stamps it again.
//! * A stamp is trusted only when every field matches the file now.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after a file's last change a stamp must be taken to be trusted
/// (far above the kernel's coarse timestamp tick).
pub const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    taken_ns: i128,
}

fn nanos(seconds: i64, nanoseconds: i64) -> i128 {
    i128::from(seconds) * 1_000_000_000 + i128::from(nanoseconds)
}

impl Stamp {
    /// The stamp of `path` as it is now.
    pub fn of(path: &Path) -> std::io::Result<Stamp> {
        let taken = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
            ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
            taken_ns: taken.as_nanos() as i128,
        })
    }

    /// Whether `path` is still the file this stamp describes, judged by
    /// its metadata alone. A racy stamp ([`SETTLE`]) never is.
    pub fn still_describes(&self, path: &Path) -> bool {
        if self.taken_ns - self.ctime_ns < SETTLE.as_nanos() as i128 {
            return false;
        }
        Stamp::of(path).is_ok_and(|now| now.same_file_state(self))
    }

    /// Whether `self` and `other` describe the same state of one file
    /// (when they were taken aside).
    pub fn same_file_state(&self, other: &Stamp) -> bool {
        (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)
            == (
                other.dev,
                other.ino,
                other.size,
                other.mtime_ns,
                other.ctime_ns,
            )
    }

    /// Parses what [`fmt::Display`] wrote; `None` for anything else.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut fields = text.split(' ');
        let mut next = || fields.next()?.parse::<i128>().ok();
        let stamp = Stamp {
            dev: u64::try_from(next()?).ok()?,
            ino: u64::try_from(next()?).ok()?,
            size: u64::try_from(next()?).ok()?,
            mtime_ns: next()?,
            ctime_ns: next()?,
            taken_ns: next()?,
        };
        fields.next().is_none().then_some(stamp)
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns, self.taken_ns
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(path: &Path) -> Stamp {
        let mut stamp = Stamp::of(path).unwrap();
        stamp.taken_ns = stamp.ctime_ns + SETTLE.as_nanos() as i128;
        stamp
    }

    #[test]
    fn a_settled_stamp_describes_its_untouched_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let stamp = settled(&path);
        assert!(stamp.still_describes(&path));
        assert_eq!(Stamp::parse(&stamp.to_string()), Some(stamp));
    }

    #[test]
    fn a_fresh_stamp_is_racy_and_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        assert!(!Stamp::of(&path).unwrap().still_describes(&path));
    }

    #[test]
    fn any_change_to_the_file_breaks_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let stamp = settled(&path);
        // Past the coarse clock tick of the stamp's ctime, as a settled
        // stamp is in real use.
        std::thread::sleep(Duration::from_millis(20));
        // Same size, same mtime set back: the ctime still moves.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, b"two").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(mtime).unwrap();
        assert!(!stamp.still_describes(&path));
        let other = dir.path().join("g");
        std::fs::write(&other, b"one").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(!stamp.still_describes(&path));
    }

    #[test]
    fn malformed_stamps_do_not_parse() {
        for text in ["", "1 2 3", "1 2 3 4 5 6 7", "a b c d e f", "-1 2 3 4 5 6"] {
            assert_eq!(Stamp::parse(text), None, "{text:?}");
        }
    }
}
