//! ext2 file systems written straight into the disk file at their
//! partition's offset: `mke2fs -E offset=` makes an empty one, then one
//! `debugfs -w` script creates the directories and writes the files in a
//! fixed order. No loop device, no mount, no root needed.
//!
//! Invariants:
//! * Reproducible: the UUID and the directory hash seed are given, every
//!   time is `E2FSPROGS_FAKE_TIME` (the epoch), no host `mke2fs.conf` is
//!   read, files are written in the order given (never a directory
//!   listing's order), and each file's mode, owner and times are set.
//! * Source files are named relative to a staging directory kbuild made,
//!   so no host path (and no space or quote in one) reaches debugfs'
//!   command parser; destination paths are checked plain.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use uuid::Uuid;

use super::DiskError;
use crate::sandbox::Cancel;
use crate::tools::Located;

/// mke2fs and debugfs, located.
pub struct Ext2Tools {
    pub mke2fs: Located,
    pub debugfs: Located,
}

/// One file system to write.
pub struct Ext2<'a> {
    pub label: &'a str,
    pub uuid: Uuid,
    pub hash_seed: Uuid,
    pub epoch: i64,
    /// (path in the file system, file name in `staging`), in write order.
    pub files: &'a [(String, String)],
    pub staging: &'a Path,
}

fn plain(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | '+'))
        })
}

/// The debugfs script that fills the file system.
fn script(fs: &Ext2) -> Result<String, DiskError> {
    let mut dirs = BTreeSet::new();
    for (dest, source) in fs.files {
        if !plain(dest) || !plain(source) || source.contains('/') {
            return Err(DiskError::BadPath(dest.clone()));
        }
        let parts: Vec<&str> = dest.split('/').collect();
        for n in 1..parts.len() {
            dirs.insert(parts[..n].join("/"));
        }
    }
    let mut text = String::new();
    // A parent sorts before its children.
    for dir in &dirs {
        text.push_str(&format!("mkdir {dir}\n"));
    }
    for (dest, source) in fs.files {
        text.push_str(&format!("write {source} {dest}\n"));
    }
    let stamp = |path: &str, mode: &str, text: &mut String| {
        text.push_str(&format!("sif {path} mode {mode}\n"));
        for field in ["uid", "gid"] {
            text.push_str(&format!("sif {path} {field} 0\n"));
        }
        for field in ["atime", "mtime", "ctime", "crtime"] {
            text.push_str(&format!("sif {path} {field} @{}\n", fs.epoch));
        }
    };
    for dir in &dirs {
        stamp(dir, "040755", &mut text);
    }
    for (dest, _) in fs.files {
        stamp(dest, "0100644", &mut text);
    }
    Ok(text)
}

fn command(tool: &Located, epoch: i64) -> Command {
    let mut command = Command::new(&tool.path);
    command
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("MKE2FS_CONFIG", "/dev/null")
        .env("TZ", "UTC");
    command
}

/// Writes `fs` into `disk` at `offset`, `size` bytes long.
pub fn make(
    tools: &Ext2Tools,
    disk: &Path,
    offset: u64,
    size: u64,
    fs: &Ext2,
    cancel: &Cancel,
) -> Result<(), DiskError> {
    let script = script(fs)?;
    let mut mke2fs = command(&tools.mke2fs, fs.epoch);
    mke2fs
        .args([
            "-q", "-F", "-t", "ext2", "-T", "default", "-b", "4096", "-I", "256",
        ])
        .args(["-m", "0", "-L", fs.label, "-U"])
        .arg(fs.uuid.to_string())
        .arg("-E")
        .arg(format!(
            "offset={offset},hash_seed={},root_owner=0:0",
            fs.hash_seed
        ))
        .arg(disk)
        .arg(format!("{}k", size / 1024));
    tools.mke2fs.run_command(mke2fs, cancel)?;
    let commands = fs.staging.join(".debugfs");
    std::fs::write(&commands, script).map_err(DiskError::io(&commands))?;
    let mut device = disk.as_os_str().to_owned();
    device.push(format!("?offset={offset}"));
    let mut debugfs = command(&tools.debugfs, fs.epoch);
    debugfs
        .current_dir(fs.staging)
        .arg("-w")
        .arg("-f")
        .arg(".debugfs")
        .arg(device);
    let (_, stderr) = tools.debugfs.run_captured(debugfs, cancel)?;
    std::fs::remove_file(&commands).map_err(DiskError::io(&commands))?;
    // debugfs reports a failed command on stderr and still exits 0.
    let stderr = String::from_utf8_lossy(&stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.starts_with("Allocated inode"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !complaints.is_empty() {
        return Err(DiskError::Debugfs {
            label: fs.label.to_string(),
            output: complaints.join("\n"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs<'a>(files: &'a [(String, String)]) -> Ext2<'a> {
        Ext2 {
            label: "COS_OEM",
            uuid: Uuid::from_u128(1),
            hash_seed: Uuid::from_u128(2),
            epoch: 1_700_000_000,
            files,
            staging: Path::new("/nonexistent"),
        }
    }

    #[test]
    fn the_script_makes_parents_first_and_stamps_everything() {
        let files = [
            ("live/filesystem.squashfs".to_string(), "f0".to_string()),
            ("boot/grub/grub.cfg".to_string(), "f1".to_string()),
        ];
        let text = script(&fs(&files)).unwrap();
        let boot = text.find("mkdir boot\n").unwrap();
        let grub = text.find("mkdir boot/grub\n").unwrap();
        assert!(boot < grub, "{text}");
        assert!(
            text.contains("write f0 live/filesystem.squashfs\n"),
            "{text}"
        );
        assert!(
            text.contains("sif boot/grub/grub.cfg crtime @1700000000\n"),
            "{text}"
        );
        assert!(text.contains("sif live mode 040755\n"), "{text}");
    }

    #[test]
    fn paths_debugfs_would_misread_are_refused() {
        for dest in ["a b", "../x", "a//b", "/abs", "a\"b", "a;b"] {
            let files = [(dest.to_string(), "f0".to_string())];
            assert!(script(&fs(&files)).is_err(), "{dest}");
        }
        let files = [("ok".to_string(), "dir/f0".to_string())];
        assert!(script(&fs(&files)).is_err());
    }
}
