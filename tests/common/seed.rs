//! One Debian core image per test run, shared by the suites that build
//! the real spec (image, iso, release; each a test binary of its own).
//!
//! The first suite that asks builds it into a seed store under
//! `target/fixtures/debian-seed-<key>/`, keyed by the spec, the flavor
//! file, kbuild.yaml and the base tarball, under a file lock so parallel
//! binaries wait for one builder. Every suite then starts from a copy of
//! that store: the flavor's RUN steps are cache hits (what they test is
//! composition, ISOs and releases, not apt), blobs and snapshots are
//! hard links (kbuild never writes them in place: every write is a new
//! file renamed in, every removal an unlink), and the rest (index,
//! lock, step entries, cache mounts that RUN steps write into) is copied.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{builds::store_with_pinned_base, debian_tarball, kbuild, ok, root, standins};

/// The epoch every seeded suite builds with.
pub const SEED_EPOCH: &str = "1700000000";

/// What the seed depends on: its key.
fn seed_key() -> String {
    let mut inputs = Vec::new();
    for file in [
        root().join("images/Dockerfile.debian"),
        root().join("flavors/debian.yaml"),
        root().join("kbuild.yaml"),
        debian_tarball(),
    ] {
        inputs.extend_from_slice(super::sha256_hex(&fs::read(&file).unwrap()).as_bytes());
    }
    super::sha256_hex(&inputs)[..16].to_string()
}

/// The seed store, built once: the pinned Debian base, the package
/// stand-ins and the Debian core image built from the real spec.
fn seed_store() -> PathBuf {
    let fixtures = root().join("target/fixtures");
    fs::create_dir_all(&fixtures).unwrap();
    let lock = fs::File::create(fixtures.join(".seed-lock")).unwrap();
    lock.lock().unwrap();
    let key = seed_key();
    let seed = fixtures.join(format!("debian-seed-{key}"));
    if !seed.exists() {
        remove_old_seeds(&fixtures);
        let partial = fixtures.join(format!("debian-seed-{key}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).unwrap();
        let store = store_with_pinned_base(&partial, SEED_EPOCH);
        standins::import_images(&store);
        let http = standins::binaries();
        let project = standins::project(&partial, &http);
        ok(&kbuild(
            &[
                "image",
                "--project",
                project.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
                "--flavor",
                "debian",
                "--variant",
                "core",
                "--base-image",
                "debian:bookworm",
            ],
            &[("SOURCE_DATE_EPOCH", SEED_EPOCH)],
        ));
        fs::remove_dir_all(&project).unwrap();
        fs::rename(&partial, &seed).unwrap();
    }
    seed.join("store")
}

/// Seeds of other inputs (an edited spec) are dead weight on the disk.
fn remove_old_seeds(fixtures: &Path) {
    for entry in fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("debian-seed-") {
            fs::remove_dir_all(&path).unwrap();
        }
    }
}

/// `<work>/store`: a store holding what the seed holds (the pinned
/// `debian:bookworm`, the stand-in images, the Debian core image and its
/// step cache), as a copy of its own.
pub fn seeded_store(work: &Path) -> PathBuf {
    let seed = seed_store();
    let store = work.join("store");
    fs::create_dir_all(work).unwrap();
    run(
        "cp",
        &["-a", "--reflink=auto"],
        &seed,
        &store,
        &["blobs", "snapshots"],
    );
    for shared in ["blobs", "snapshots"] {
        if seed.join(shared).exists() {
            run("cp", &["-al"], &seed.join(shared), &store.join(shared), &[]);
        }
    }
    store
}

/// `cp FLAGS from to`, leaving out the top-level names in `skip`.
fn run(program: &str, flags: &[&str], from: &Path, to: &Path, skip: &[&str]) {
    if skip.is_empty() {
        let status = Command::new(program)
            .args(flags)
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(status.success(), "{program} {flags:?} {}", from.display());
        return;
    }
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !skip.contains(&name.as_str()) {
            run(program, flags, &path, &to.join(&name), &[]);
        }
    }
}
