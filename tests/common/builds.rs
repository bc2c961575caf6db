//! Helpers of the suites that run `kbuild build` on the Debian fixture.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{debian_tarball_for, kbuild, ok};

/// A store with the Debian base imported as `debian:bookworm`.
pub fn store_with_base(work: &Path) -> PathBuf {
    import_base(work, &[], "amd64")
}

/// The same, imported with `SOURCE_DATE_EPOCH`, so every store made by it
/// holds the base under the same digest (and shares step-cache keys).
pub fn store_with_pinned_base(work: &Path, epoch: &str) -> PathBuf {
    store_with_pinned_base_for(work, epoch, "amd64")
}

/// The same with the Debian base of `arch`.
pub fn store_with_pinned_base_for(work: &Path, epoch: &str, arch: &str) -> PathBuf {
    import_base(work, &[("SOURCE_DATE_EPOCH", epoch)], arch)
}

fn import_base(work: &Path, envs: &[(&str, &str)], arch: &str) -> PathBuf {
    let store = work.join("store");
    ok(&kbuild(
        &[
            "import",
            debian_tarball_for(arch).to_str().unwrap(),
            "-t",
            "debian:bookworm",
            "--platform",
            &format!("linux/{arch}"),
            "--store",
            store.to_str().unwrap(),
        ],
        envs,
    ));
    store
}

pub fn build(store: &Path, context: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--store",
        store.to_str().unwrap(),
        context.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kbuild(&args, &[])
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing of the store is mounted, its tmp/ is empty, fsck is clean.
pub fn assert_clean(store: &Path) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = store.to_str().unwrap();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(needle)).collect();
    assert!(leaked.is_empty(), "leaked mounts: {leaked:#?}");
    let findmnt = Command::new("findmnt")
        .args(["-rn", "-o", "TARGET"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&findmnt.stdout).contains(needle),
        "findmnt shows a store mount"
    );
    let temps: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(temps.is_empty(), "leftover temp dirs: {temps:?}");
    let fsck = kbuild(&["cache", "fsck", "--store", store.to_str().unwrap()], &[]);
    assert!(fsck.status.success(), "fsck: {}", stderr(&fsck));
}

pub fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Every layer blob of the store, decompressed, must not contain `needle`.
pub fn assert_absent_from_blobs(store: &Path, needle: &str) {
    for entry in fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let text = decompressed(&fs::read(&path).unwrap());
        assert!(
            !text.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{} contains the secret",
            path.display()
        );
    }
}

/// A blob's bytes as tar sees them: gzip and zstd (by their magic bytes)
/// decompressed, anything else as it is.
fn decompressed(raw: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut text = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(raw)
            .read_to_end(&mut text)
            .unwrap();
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(raw)
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
    } else {
        text = raw.to_vec();
    }
    text
}

/// A package stand-in: `files` (path, content, mode), owned by root, as a
/// one-layer image imported into `store` under `name`. Its digest is the
/// same in every store, as a real package image pulled by digest is.
pub fn import_files(store: &Path, files: &[(&str, &[u8], u32)], name: &str) {
    import_files_for(store, files, name, "amd64");
}

/// The same, as an image of `arch`.
pub fn import_files_for(store: &Path, files: &[(&str, &[u8], u32)], name: &str, arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("rootfs.tar");
    let mut builder = tar::Builder::new(fs::File::create(&tarball).unwrap());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append_data(&mut header, path, *content).unwrap();
    }
    builder.into_inner().unwrap();
    ok(&kbuild(
        &[
            "import",
            tarball.to_str().unwrap(),
            "-t",
            name,
            "--platform",
            &format!("linux/{arch}"),
            "--store",
            store.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    ));
}
