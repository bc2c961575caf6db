//! One Debian core image per architecture and test run, shared by the
//! suites that build the real spec (image, iso, release, arm64; each a
//! test binary of its own).
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

use super::{builds::store_with_pinned_base_for, debian_tarball_for, kbuild, ok, root, standins};

/// The epoch every seeded suite builds with.
pub const SEED_EPOCH: &str = "1700000000";

/// What the seed of `arch` depends on: its key.
fn seed_key(arch: &str) -> String {
    let mut inputs = Vec::new();
    for file in [
        root().join("images/Dockerfile.debian"),
        root().join("flavors/debian.yaml"),
        root().join("kbuild.yaml"),
        debian_tarball_for(arch),
    ] {
        inputs.extend_from_slice(super::sha256_hex(&fs::read(&file).unwrap()).as_bytes());
    }
    super::sha256_hex(&inputs)[..16].to_string()
}

/// The name prefix of the seeds of `arch` (amd64's is the one it always
/// had).
fn seed_prefix(arch: &str) -> String {
    match arch {
        "amd64" => "debian-seed-".into(),
        other => format!("debian-{other}-seed-"),
    }
}

/// The seed store of `arch`, built once: the pinned Debian base, the
/// package stand-ins and the Debian core image built from the real spec,
/// all of `arch` (arm64's RUN steps go through qemu-user on amd64).
fn seed_store(arch: &str) -> PathBuf {
    let fixtures = root().join("target/fixtures");
    fs::create_dir_all(&fixtures).unwrap();
    let lock = fs::File::create(fixtures.join(format!(".seed-lock-{arch}"))).unwrap();
    lock.lock().unwrap();
    let key = seed_key(arch);
    let prefix = seed_prefix(arch);
    let seed = fixtures.join(format!("{prefix}{key}"));
    if !seed.exists() {
        remove_old_seeds(&fixtures, &prefix);
        let partial = fixtures.join(format!("{prefix}{key}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).unwrap();
        let store = store_with_pinned_base_for(&partial, SEED_EPOCH, arch);
        standins::import_images_for(&store, arch);
        let http = standins::binaries();
        let project = standins::project_for(&partial, &http, arch);
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
                "--arch",
                arch,
            ],
            &[("SOURCE_DATE_EPOCH", SEED_EPOCH)],
        ));
        fs::remove_dir_all(&project).unwrap();
        fs::rename(&partial, &seed).unwrap();
    }
    seed.join("store")
}

/// Seeds of other inputs (an edited spec) are dead weight on the disk.
fn remove_old_seeds(fixtures: &Path, prefix: &str) {
    for entry in fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            fs::remove_dir_all(&path).unwrap();
        }
    }
}

/// `<work>/store`: a store holding what the seed holds (the pinned
/// `debian:bookworm`, the stand-in images, the Debian core image and its
/// step cache), as a copy of its own.
pub fn seeded_store(work: &Path) -> PathBuf {
    seeded_store_for(work, "amd64")
}

/// The same with the seed of `arch` (its base is `debian:bookworm` too:
/// each architecture has its own store).
pub fn seeded_store_for(work: &Path, arch: &str) -> PathBuf {
    let seed = seed_store(arch);
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
