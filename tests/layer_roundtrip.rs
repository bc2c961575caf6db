//! The layer writer and the extractor together: every kind of file
//! survives a round trip, overlayfs upper dirs become OCI whiteouts, and
//! those whiteouts delete lower content when applied. Needs root (device
//! nodes, ownership, trusted.* xattrs), as CI runs it.

mod common;

use common::harness::ROOT;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kbuild::layer::{
    decompressing_reader, extract_layer, read_xattrs, write_layer, Compression, ExtractLimits,
    ExtractMode, TreeKind, WriteOptions,
};
use rustix::fs::{FileType, Mode, XattrFlags};

fn tree(root: &Path) -> BTreeMap<String, String> {
    common::walk(root, None)
        .into_iter()
        .map(|(rel, path, meta)| {
            let ft = meta.file_type();
            let what = if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if ft.is_dir() {
                "dir".into()
            } else if ft.is_file() {
                format!(
                    "file {:?} nlink={}",
                    std::fs::read(&path).unwrap(),
                    meta.nlink()
                )
            } else {
                format!("special rdev={}", meta.rdev())
            };
            let xattrs = if ft.is_symlink() {
                Vec::new()
            } else {
                read_xattrs(&path).unwrap()
            };
            let attrs = format!(
                "mode={:o} uid={} gid={} mtime={}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                meta.mtime()
            );
            (rel, format!("{what} {attrs} xattrs={xattrs:?}"))
        })
        .collect()
}

fn layer_bytes(root: &Path, kind: TreeKind, compression: Compression) -> Vec<u8> {
    let options = WriteOptions {
        compression,
        source_date_epoch: Some(1_700_000_000),
    };
    write_layer(root, kind, &options, Vec::new()).unwrap().0
}

fn apply(layer: &[u8], root: &Path, mode: ExtractMode) {
    let reader = decompressing_reader(std::io::BufReader::new(layer)).unwrap();
    extract_layer(reader, root, mode, ExtractLimits::default()).unwrap();
}

fn entry_names(layer: &[u8]) -> Vec<String> {
    let reader = decompressing_reader(std::io::BufReader::new(layer)).unwrap();
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn every_kind_of_file_survives_a_round_trip() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("usr/bin")).unwrap();
    std::fs::create_dir_all(src.join("etc/ssl")).unwrap();
    std::fs::write(src.join("usr/bin/sudo"), b"#!fake sudo").unwrap();
    std::fs::set_permissions(
        src.join("usr/bin/sudo"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(src.join("usr/bin/ping"), b"ping").unwrap();
    rustix::fs::setxattr(
        src.join("usr/bin/ping").as_path(),
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        src.join("etc/ssl").as_path(),
        "user.note",
        b"kept",
        XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(src.join("etc/hostname"), b"kbuild\n").unwrap();
    std::fs::hard_link(src.join("etc/hostname"), src.join("etc/hostname.link")).unwrap();
    std::os::unix::fs::symlink("../usr/bin/sudo", src.join("etc/sudo-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs", src.join("etc/dangling")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("etc/null").as_path(),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("etc/fifo").as_path(),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    std::os::unix::fs::chown(src.join("etc/hostname"), Some(1000), Some(1001)).unwrap();
    std::fs::create_dir(src.join("empty")).unwrap();
    let long = "d".repeat(150);
    std::fs::create_dir_all(src.join(&long)).unwrap();
    std::fs::write(src.join(&long).join("f".repeat(200)), b"long names").unwrap();
    for compression in [
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
        Compression::None,
    ] {
        let layer = layer_bytes(&src, TreeKind::Full, compression);
        assert_eq!(
            layer,
            layer_bytes(&src, TreeKind::Full, compression),
            "{compression:?} is not reproducible"
        );
        let dst = work.path().join(format!("dst-{compression:?}"));
        std::fs::create_dir(&dst).unwrap();
        apply(&layer, &dst, ExtractMode::Flatten);
        // Times are clamped to SOURCE_DATE_EPOCH in the layer; compare all but mtime.
        let strip = |t: BTreeMap<String, String>| -> BTreeMap<String, String> {
            t.into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.split(" mtime=").next().unwrap().to_string()
                            + v.split(" xattrs=")
                                .nth(1)
                                .map(|x| format!(" xattrs={x}"))
                                .unwrap_or_default()
                                .as_str(),
                    )
                })
                .collect()
        };
        assert_eq!(strip(tree(&src)), strip(tree(&dst)), "{compression:?}");
        let mtimes: Vec<i64> = tree(&dst)
            .values()
            .map(|v| {
                v.split(" mtime=")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(!mtimes.is_empty());
        assert!(mtimes.iter().all(|m| *m <= 1_700_000_000), "{mtimes:?}");
        assert_eq!(
            std::fs::metadata(dst.join("etc/hostname")).unwrap().ino(),
            std::fs::metadata(dst.join("etc/hostname.link"))
                .unwrap()
                .ino()
        );
    }
}

fn overlay_upper_dirs_become_oci_whiteouts_that_delete_lower_content() {
    let work = tempfile::tempdir().unwrap();
    let upper = work.path().join("upper");
    std::fs::create_dir_all(upper.join("opq")).unwrap();
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("etc/gone").as_path(),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        upper.join("opq").as_path(),
        "trusted.overlay.opaque",
        b"y",
        XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(upper.join("opq/new"), b"new").unwrap();
    std::fs::write(upper.join("etc/added"), b"added").unwrap();
    let layer = layer_bytes(&upper, TreeKind::OverlayUpper, Compression::None);
    let names = entry_names(&layer);
    assert!(names.contains(&"etc/.wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&"opq/.wh..wh..opq".to_string()), "{names:?}");
    let mut raw = Vec::new();
    decompressing_reader(std::io::BufReader::new(layer.as_slice()))
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    assert!(
        !raw.windows(15).any(|w| w == b"trusted.overlay"),
        "overlay xattrs leaked into the layer"
    );

    // Applied on a lower tree: the whiteout and the opaque dir delete lower content only.
    let lower = work.path().join("lower");
    std::fs::create_dir_all(lower.join("opq/sub")).unwrap();
    std::fs::create_dir_all(lower.join("etc")).unwrap();
    std::fs::write(lower.join("etc/gone"), b"old").unwrap();
    std::fs::write(lower.join("etc/kept"), b"kept").unwrap();
    std::fs::write(lower.join("opq/old"), b"old").unwrap();
    std::fs::write(lower.join("opq/sub/deep"), b"old").unwrap();
    apply(&layer, &lower, ExtractMode::Flatten);
    let names: Vec<String> = tree(&lower).into_keys().collect();
    assert_eq!(names, ["etc", "etc/added", "etc/kept", "opq", "opq/new"]);

    // As an overlay lower dir: whiteouts stay overlay whiteouts.
    let as_lower = work.path().join("as-lower");
    std::fs::create_dir(&as_lower).unwrap();
    apply(&layer, &as_lower, ExtractMode::OverlayLower);
    let gone = std::fs::symlink_metadata(as_lower.join("etc/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&gone.file_type()) && gone.rdev() == 0);
    let xattrs = read_xattrs(&as_lower.join("opq")).unwrap();
    assert!(
        xattrs.contains(&(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())),
        "{xattrs:?}"
    );
}

tests!(
    every_kind_of_file_survives_a_round_trip: ROOT,
    overlay_upper_dirs_become_oci_whiteouts_that_delete_lower_content: ROOT,
);
