//! `kbuild release merge`: the shards' parts of one release joined into
//! one manifest and `SHA256SUMS`.
//!
//! Invariants:
//! * Everything is verified before anything is written: every shard 1..N
//!   of one selection is there once and complete, the cells they hold are
//!   exactly the cells the selection names, each once; every artifact path
//!   is `<cell>/<file>` of its own cell, named once, opened without
//!   following any symlink (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and
//!   hashes to its manifest's sha256 and size.
//! * The output directory is written through descriptors: no link in it
//!   (nor `-o` itself) is followed; artifacts are copied to temp files,
//!   hashed again as they are copied, then renamed into place.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::digest::HashingWriter;

use super::{write_json, write_sums, Manifest, ManifestCell, ReleaseError, Selection, Shard};

/// Lookups in a shard or output directory: never above it, never through
/// a symlink.
const STRICT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn refuse(message: String) -> ReleaseError {
    ReleaseError::Merge(message)
}

/// One shard's manifest and the directory it came from.
struct ShardPart {
    dir: PathBuf,
    manifest: Manifest,
}

/// Joins the shards' manifests found in `dirs` into `out/manifest.json`
/// and `out/SHA256SUMS`, copying each cell's artifacts into `out` when
/// they are elsewhere.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Manifest, ReleaseError> {
    let shards = read_shards(dirs)?;
    let selection = check_selection(&shards)?;
    let mut cells = Vec::new();
    let mut sources = Vec::new();
    for part in shards.values() {
        let root = open_dir(&part.dir)?;
        for cell in &part.manifest.cells {
            for artifact in &cell.artifacts {
                let (dir_name, file_name) = artifact_names(cell, &artifact.path)?;
                let file = open_beneath(&root, &artifact.path, &part.dir)?;
                verify(file, artifact, &part.dir)?;
                sources.push((part.dir.clone(), dir_name, file_name, artifact.clone()));
            }
            cells.push(cell.clone());
        }
    }
    cells.sort_by(|a, b| a.cell.cmp(&b.cell));
    let first = &shards.values().next().expect("checked").manifest;
    let manifest = Manifest {
        project: first.project.clone(),
        version: first.version.clone(),
        shard: None,
        selection,
        complete: true,
        failed: Vec::new(),
        not_attempted: Vec::new(),
        cells,
    };
    write_release(out, &sources, &manifest)?;
    Ok(manifest)
}

/// Every `manifest-shard-*.json` in `dirs`, by shard index; each shard
/// 1..N once.
fn read_shards(dirs: &[PathBuf]) -> Result<BTreeMap<usize, ShardPart>, ReleaseError> {
    let mut shards = BTreeMap::new();
    let mut count = None;
    for dir in dirs {
        let unreadable = crate::diagnose::InputFileError::at;
        for entry in std::fs::read_dir(dir).map_err(unreadable(dir))? {
            let path = entry.map_err(unreadable(dir))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !(name.starts_with("manifest-shard-") && name.ends_with(".json")) {
                continue;
            }
            let manifest = read_manifest(&path)?;
            let shard: Shard = manifest
                .shard
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e: String| refuse(format!("{}: {e}", path.display())))?;
            if *count.get_or_insert(shard.count) != shard.count {
                return Err(refuse(format!(
                    "{} is a shard of {}, the others of {}",
                    path.display(),
                    shard.count,
                    count.unwrap_or_default()
                )));
            }
            let part = ShardPart {
                dir: dir.clone(),
                manifest,
            };
            if shards.insert(shard.index, part).is_some() {
                return Err(refuse(format!("shard {shard} is there twice")));
            }
        }
    }
    let count =
        count.ok_or_else(|| refuse("no manifest-shard-*.json in the given directories".into()))?;
    let missing: Vec<String> = (1..=count)
        .filter(|i| !shards.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!("shards {} are missing", missing.join(", "))));
    }
    Ok(shards)
}

fn read_manifest(path: &Path) -> Result<Manifest, ReleaseError> {
    let bytes = std::fs::read(path).map_err(crate::diagnose::InputFileError::at(path))?;
    serde_json::from_slice(&bytes).map_err(|source| ReleaseError::BadManifest {
        path: path.to_path_buf(),
        source,
    })
}

/// The shards are of one release and one selection, each complete, and
/// together hold exactly the selection's cells, each once.
fn check_selection(shards: &BTreeMap<usize, ShardPart>) -> Result<Selection, ReleaseError> {
    let first = &shards.values().next().expect("at least one shard").manifest;
    for part in shards.values() {
        let m = &part.manifest;
        let shard = m.shard.as_deref().unwrap_or_default();
        if (&m.project, &m.version) != (&first.project, &first.version) {
            return Err(refuse("the shards are of different releases".into()));
        }
        if m.selection != first.selection {
            return Err(refuse(format!(
                "shard {shard} was cut from another selection of the matrix"
            )));
        }
        if !m.complete {
            let mut short = m.failed.clone();
            short.extend(m.not_attempted.iter().cloned());
            return Err(refuse(format!(
                "shard {shard} is incomplete (missing: {})",
                short.join(", ")
            )));
        }
    }
    let mut held = BTreeSet::new();
    for cell in shards.values().flat_map(|p| &p.manifest.cells) {
        if !held.insert(cell.cell.as_str()) {
            return Err(refuse(format!("cell {} is in two shards", cell.cell)));
        }
    }
    let wanted: BTreeSet<&str> = first.selection.cells.iter().map(String::as_str).collect();
    let missing: Vec<&str> = wanted.difference(&held).copied().collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "cells {} of the selection are in no shard",
            missing.join(", ")
        )));
    }
    let extra: Vec<&str> = held.difference(&wanted).copied().collect();
    if !extra.is_empty() {
        return Err(refuse(format!(
            "cells {} are not in the selection",
            extra.join(", ")
        )));
    }
    Ok(first.selection.clone())
}

/// `<cell>/<file>`, the cell's own directory and one plain file name.
fn artifact_names(cell: &ManifestCell, path: &str) -> Result<(String, String), ReleaseError> {
    let bad = || {
        refuse(format!(
            "artifact path {path} of cell {} is not <cell>/<file> in its own directory",
            cell.cell
        ))
    };
    let (dir, file) = path.split_once('/').ok_or_else(bad)?;
    let plain = |name: &str| crate::rootfs::is_plain_name(name);
    if dir != cell.cell || !plain(dir) || !plain(file) {
        return Err(bad());
    }
    Ok((dir.to_string(), file.to_string()))
}

fn open_dir(path: &Path) -> Result<OwnedFd, ReleaseError> {
    rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ReleaseError::io(path)(e.into()))
}

/// A regular file at `relative` below `root`, reached through no symlink.
fn open_beneath(root: &OwnedFd, relative: &str, shard: &Path) -> Result<File, ReleaseError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat2(root, relative, flags, Mode::empty(), STRICT).map_err(|e| {
        refuse(format!(
            "{}: {relative} cannot be opened without following a link: {e}",
            shard.display()
        ))
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(ReleaseError::io(&shard.join(relative)))?;
    if !meta.is_file() {
        return Err(refuse(format!(
            "{}: {relative} is not a regular file",
            shard.display()
        )));
    }
    Ok(file)
}

/// Copies `reader` to `sink`, returning the bytes' size and sha256.
fn hash_copy(mut reader: impl Read, sink: impl Write) -> io::Result<(u64, String)> {
    let mut writer = HashingWriter::new(sink);
    io::copy(&mut reader, &mut writer)?;
    let (_, digest, size) = writer.finish();
    Ok((size, digest.hex().to_string()))
}

fn verify(file: File, artifact: &super::Artifact, shard: &Path) -> Result<(), ReleaseError> {
    let path = shard.join(&artifact.path);
    let (size, sha256) = hash_copy(file, io::sink()).map_err(ReleaseError::io(&path))?;
    check_hash(&path, artifact, size, &sha256)
}

fn check_hash(
    path: &Path,
    artifact: &super::Artifact,
    size: u64,
    sha256: &str,
) -> Result<(), ReleaseError> {
    if sha256 != artifact.sha256 || size != artifact.size {
        return Err(refuse(format!(
            "{} hashes to {sha256} ({size} bytes), not the {} ({} bytes) its manifest lists",
            path.display(),
            artifact.sha256,
            artifact.size
        )));
    }
    Ok(())
}

/// Writes the verified artifacts, the manifest and the sums into `out`.
fn write_release(
    out: &Path,
    sources: &[(PathBuf, String, String, super::Artifact)],
    manifest: &Manifest,
) -> Result<(), ReleaseError> {
    make_out_dir(out)?;
    let out_fd = open_dir_no_follow(out)?;
    for (shard, dir_name, file_name, artifact) in sources {
        let source = open_beneath(&open_dir(shard)?, &artifact.path, shard)?;
        let cell_dir = cell_dir(&out_fd, dir_name, out)?;
        if same_file(&source, &cell_dir, file_name) {
            continue;
        }
        copy_verified(
            source,
            &cell_dir,
            file_name,
            artifact,
            &out.join(&artifact.path),
        )?;
    }
    write_json(&out.join("manifest.json"), manifest)?;
    write_sums(out, &manifest.cells)?;
    Ok(())
}

fn make_out_dir(out: &Path) -> Result<(), ReleaseError> {
    match std::fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(refuse(format!(
            "{} is not a directory (a link is not followed)",
            out.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(ReleaseError::io(out))
        }
        Err(e) => Err(ReleaseError::io(out)(e)),
    }
}

fn open_dir_no_follow(path: &Path) -> Result<OwnedFd, ReleaseError> {
    rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ReleaseError::io(path)(e.into()))
}

/// The cell's directory in the output, created if missing; a link there
/// is refused.
fn cell_dir(out_fd: &OwnedFd, name: &str, out: &Path) -> Result<OwnedFd, ReleaseError> {
    match rustix::fs::mkdirat(out_fd, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(ReleaseError::io(&out.join(name))(e.into())),
    }
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    rustix::fs::openat2(out_fd, name, flags, Mode::empty(), STRICT).map_err(|e| {
        refuse(format!(
            "{}: not a directory of its own (a link is not followed): {e}",
            out.join(name).display()
        ))
    })
}

/// Whether `dir/name` is the very file `source` (merging in place).
fn same_file(source: &File, dir: &OwnedFd, name: &str) -> bool {
    let Ok(there) = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else {
        return false;
    };
    let Ok(meta) = rustix::fs::fstat(source.as_fd()) else {
        return false;
    };
    (there.st_dev, there.st_ino) == (meta.st_dev, meta.st_ino)
}

/// Copies `source` into `dir` under a temp name, hashing what it copies;
/// renames it to `name` only when the hash holds.
fn copy_verified(
    source: File,
    dir: &OwnedFd,
    name: &str,
    artifact: &super::Artifact,
    shown: &Path,
) -> Result<(), ReleaseError> {
    let temp = format!(".tmp-merge-{}-{name}", std::process::id());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, temp.as_str(), flags, Mode::from_raw_mode(0o644))
        .map_err(|e| ReleaseError::io(shown)(e.into()))?;
    let mut written = File::from(fd);
    let copied = hash_copy(source, &mut written).and_then(|h| written.sync_all().map(|()| h));
    let checked = copied
        .map_err(ReleaseError::io(shown))
        .and_then(|(size, sha256)| check_hash(shown, artifact, size, &sha256));
    if let Err(e) = checked {
        let _ = rustix::fs::unlinkat(dir, temp.as_str(), rustix::fs::AtFlags::empty());
        return Err(e);
    }
    rustix::fs::renameat(dir, temp.as_str(), dir, name)
        .map_err(|e| ReleaseError::io(shown)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::super::{artifact, manifest_name};
    use super::*;

    const PROJECT: (&str, &str) = ("kairos", "v1");

    fn selection(cells: &[&str]) -> Selection {
        Selection {
            matrix_cells: 3,
            only: None,
            cells: cells.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// A shard directory holding `cells` (name, ISO bytes) of a
    /// selection of a, b and c cut in two.
    fn shard_dir(root: &Path, index: usize, cells: &[(&str, &[u8])]) -> PathBuf {
        let dir = root.join(format!("shard-{index}"));
        let mut manifest_cells = Vec::new();
        for (cell, content) in cells {
            std::fs::create_dir_all(dir.join(cell)).unwrap();
            let path = dir.join(cell).join(format!("{cell}.iso"));
            std::fs::write(&path, content).unwrap();
            manifest_cells.push(ManifestCell {
                cell: cell.to_string(),
                image: format!("r/{cell}"),
                image_digest: "sha256:00".into(),
                versions: BTreeMap::new(),
                artifacts: vec![artifact(&dir, &path).unwrap()],
                reproducible: None,
            });
        }
        let manifest = Manifest {
            project: PROJECT.0.into(),
            version: PROJECT.1.into(),
            shard: Some(format!("{index}/2")),
            selection: selection(&["a", "b", "c"]),
            complete: true,
            failed: Vec::new(),
            not_attempted: Vec::new(),
            cells: manifest_cells,
        };
        write_manifest(&dir, index, &manifest);
        dir
    }

    fn write_manifest(dir: &Path, index: usize, manifest: &Manifest) {
        write_json(
            &dir.join(manifest_name(Some(Shard { index, count: 2 }))),
            manifest,
        )
        .unwrap();
    }

    fn edit_manifest(dir: &Path, index: usize, edit: impl FnOnce(&mut Manifest)) {
        let path = dir.join(manifest_name(Some(Shard { index, count: 2 })));
        let mut manifest = read_manifest(&path).unwrap();
        edit(&mut manifest);
        write_manifest(dir, index, &manifest);
    }

    /// Two good shards: a and c in the first, b in the second.
    fn shards(root: &Path) -> (PathBuf, PathBuf) {
        (
            shard_dir(root, 1, &[("a", b"iso a"), ("c", b"iso c")]),
            shard_dir(root, 2, &[("b", b"iso b")]),
        )
    }

    /// Merging fails with `expected` and writes nothing at all.
    fn refused(dirs: &[PathBuf], root: &Path, expected: &str) {
        let out = root.join("out");
        let err = merge(dirs, &out).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        assert!(!out.exists(), "a refused merge wrote {}", out.display());
    }

    #[test]
    fn merged_shards_list_what_one_run_would() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = shards(root.path());
        let out = root.path().join("release");
        let merged = merge(&[one, two], &out).unwrap();
        let names: Vec<&str> = merged.cells.iter().map(|c| c.cell.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(merged.complete);
        let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
        assert_eq!(sums.lines().count(), 3);
        assert!(
            sums.lines().next().unwrap().ends_with("  a/a.iso"),
            "{sums}"
        );
        assert_eq!(std::fs::read(out.join("b/b.iso")).unwrap(), b"iso b");
    }

    #[test]
    fn a_missing_shard_or_a_tampered_artifact_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = shards(root.path());
        refused(
            std::slice::from_ref(&one),
            root.path(),
            "shards 2/2 are missing",
        );
        std::fs::write(two.join("b/b.iso"), b"tampered").unwrap();
        refused(&[one, two], root.path(), "not the");
    }

    #[test]
    fn a_traversal_path_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = shards(root.path());
        std::fs::write(root.path().join("outside.iso"), b"iso b").unwrap();
        edit_manifest(&two, 2, |m| {
            m.cells[0].artifacts[0].path = "b/../../outside.iso".into()
        });
        refused(
            &[one.clone(), two.clone()],
            root.path(),
            "not <cell>/<file>",
        );
        // Another cell's directory is no better.
        edit_manifest(&two, 2, |m| m.cells[0].artifacts[0].path = "a/a.iso".into());
        refused(&[one, two], root.path(), "not <cell>/<file>");
    }

    #[test]
    fn a_symlinked_artifact_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = shards(root.path());
        let outside = root.path().join("outside.iso");
        std::fs::write(&outside, b"iso b").unwrap();
        std::fs::remove_file(two.join("b/b.iso")).unwrap();
        std::os::unix::fs::symlink(&outside, two.join("b/b.iso")).unwrap();
        refused(
            &[one.clone(), two.clone()],
            root.path(),
            "without following a link",
        );
        // A link that stays inside the shard, to the very same bytes, is
        // refused too: the artifact must be the file the manifest names.
        std::fs::write(two.join("same.iso"), b"iso b").unwrap();
        std::fs::remove_file(two.join("b/b.iso")).unwrap();
        std::os::unix::fs::symlink("../same.iso", two.join("b/b.iso")).unwrap();
        refused(
            &[one.clone(), two.clone()],
            root.path(),
            "without following a link",
        );
        // And so is a cell directory that is a link.
        std::fs::rename(two.join("b"), two.join("b-real")).unwrap();
        std::fs::remove_file(two.join("b-real/b.iso")).unwrap();
        std::fs::write(two.join("b-real/b.iso"), b"iso b").unwrap();
        std::os::unix::fs::symlink("b-real", two.join("b")).unwrap();
        refused(&[one, two], root.path(), "without following a link");
    }

    #[test]
    fn a_doubled_cell_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let one = shard_dir(root.path(), 1, &[("a", b"iso a"), ("c", b"iso c")]);
        let two = shard_dir(root.path(), 2, &[("b", b"iso b"), ("c", b"iso c")]);
        refused(&[one, two], root.path(), "cell c is in two shards");
    }

    #[test]
    fn a_missing_or_unfinished_cell_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let one = shard_dir(root.path(), 1, &[("a", b"iso a")]);
        let two = shard_dir(root.path(), 2, &[("b", b"iso b")]);
        refused(
            &[one.clone(), two.clone()],
            root.path(),
            "cells c of the selection are in no shard",
        );
        edit_manifest(&one, 1, |m| {
            m.complete = false;
            m.not_attempted = vec!["c".into()];
        });
        refused(
            &[one, two],
            root.path(),
            "shard 1/2 is incomplete (missing: c)",
        );
    }

    #[test]
    fn shards_of_other_selections_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = shards(root.path());
        edit_manifest(&two, 2, |m| m.selection.only = Some("*-core-*".into()));
        refused(&[one, two], root.path(), "another selection");
    }

    #[test]
    fn a_link_in_the_output_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = shards(root.path());
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("b")).unwrap();
        let err = merge(&[one.clone(), two.clone()], &out).unwrap_err();
        assert!(err.to_string().contains("a link is not followed"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // -o itself a link: refused too.
        let linked_out = root.path().join("linked-out");
        std::os::unix::fs::symlink(&elsewhere, &linked_out).unwrap();
        let err = merge(&[one, two], &linked_out).unwrap_err();
        assert!(err.to_string().contains("a link is not followed"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
