//! `--overlay-iso DIR`: files merged into the ISO's root, e.g. a
//! cloud-config the installer reads.
//!
//! Invariants:
//! * An overlay never replaces what kbuild writes (kernel, initrd, GRUB,
//!   `.disk/`, the squashfs): a collision is an error naming the path.
//! * Only directories, regular files and symlinks; symlinks are recorded
//!   as links in the ISO, never followed on the host.
//! * Its digest covers names, kinds, modes and contents, so an unchanged
//!   ISO is recognised and a changed overlay is not.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::IsoError;

/// Paths kbuild owns in the ISO (a directory owns what is below it).
const RESERVED: &[&str] = &[
    "/boot/kernel",
    "/boot/initrd",
    "/boot/grub",
    "/boot/boot.catalog",
    super::xorriso::ESP_IN_VOLUME,
    "/.disk",
];

/// A scanned overlay.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub dir: PathBuf,
    /// sha256 hex of its tree.
    pub digest: String,
}

/// Checks `dir` and digests it; `squashfs` is the flavor's squashfs path.
pub fn scan(dir: &Path, squashfs: &str) -> Result<Overlay, IsoError> {
    let fail = |reason: String| IsoError::Overlay {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".into()));
    }
    let mut reserved: Vec<&str> = RESERVED.to_vec();
    reserved.push(squashfs);
    let mut hasher = Sha256::new();
    walk(dir, "", &reserved, &mut hasher).map_err(fail)?;
    Ok(Overlay {
        dir: dir.to_path_buf(),
        digest: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

fn walk(dir: &Path, prefix: &str, reserved: &[&str], hasher: &mut Sha256) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| format!("{}: a name that is not UTF-8", entry.path().display()))?;
        let iso = format!("{prefix}/{name}");
        let meta = entry
            .metadata()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let kind = meta.file_type();
        let owned = reserved
            .iter()
            .find(|r| iso == **r || iso.starts_with(&format!("{r}/")));
        let shadows = reserved
            .iter()
            .find(|r| !kind.is_dir() && r.starts_with(&format!("{iso}/")));
        if let Some(path) = owned.or(shadows) {
            return Err(format!("{iso} collides with {path}, which kbuild writes"));
        }
        hasher.update(iso.as_bytes());
        hasher.update([0]);
        hasher.update(meta.permissions().mode().to_le_bytes());
        if kind.is_dir() {
            hasher.update(b"d");
            walk(&entry.path(), &iso, reserved, hasher)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            hasher.update(b"l");
            hasher.update(target.as_os_str().as_encoded_bytes());
        } else if kind.is_file() {
            hasher.update(b"f");
            hash_file(&entry.path(), hasher)
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        } else {
            return Err(format!(
                "{iso} is not a file, directory or symlink; an ISO cannot carry it"
            ));
        }
        hasher.update([0]);
    }
    Ok(())
}

fn hash_file(path: &Path, hasher: &mut Sha256) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    hasher.update(len.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_with_what_kbuild_writes_are_refused() {
        // A file at a reserved path, below one, or where a reserved
        // path needs a directory.
        for path in [
            "boot/kernel",
            "boot/grub/grub.cfg",
            ".disk/info",
            "live/filesystem.squashfs",
            "live",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, b"x").unwrap();
            let err = scan(dir.path(), "/live/filesystem.squashfs").unwrap_err();
            assert!(err.to_string().contains("collides with"), "{path}: {err}");
        }
    }

    #[test]
    fn the_digest_follows_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(dir.path().join("cloud-config.yaml"), b"#cloud-config\n").unwrap();
        std::fs::write(dir.path().join("boot/extra.txt"), b"fine").unwrap();
        let first = scan(dir.path(), "/live/filesystem.squashfs").unwrap();
        assert_eq!(
            first.digest,
            scan(dir.path(), "/live/filesystem.squashfs")
                .unwrap()
                .digest
        );
        std::fs::write(dir.path().join("cloud-config.yaml"), b"#cloud-config\nx\n").unwrap();
        assert_ne!(
            first.digest,
            scan(dir.path(), "/live/filesystem.squashfs")
                .unwrap()
                .digest
        );
        assert!(scan(&dir.path().join("missing"), "/l").is_err());
    }
}
