//! Reproducibility end to end (root): the real `images/Dockerfile.debian`
//! rebuilt by `kbuild verify` in an empty store gives the same image and
//! ISO; a clock in a RUN step is named by path; `kbuild diff` names a mode
//! change; and without `SOURCE_DATE_EPOCH` a second `kbuild image` and
//! `kbuild iso` of an unchanged cell change nothing.
//!
//! The composed packages are the honest stand-ins of
//! `tests/common/standins.rs`; the Debian packages come from the machine's
//! apt mirror, which does not move within one run.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::builds::{import_files, stderr, store_with_pinned_base, write};
use common::harness::{Needs, ROOT};
use common::{kbuild, ok, standins};

const EPOCH: &str = common::seed::SEED_EPOCH;

const ISO_TOOLS: &[&str] = &["mmdebstrap", "mksquashfs", "xorriso", "mformat", "mcopy"];

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kbuild without `SOURCE_DATE_EPOCH`, whatever the runner's environment.
fn kbuild_without_epoch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn cell_args<'a>(project: &'a str, store: &'a str) -> Vec<&'a str> {
    vec![
        "--project",
        project,
        "--store",
        store,
        "--flavor",
        "debian",
        "--variant",
        "core",
        "--base-image",
        "debian:bookworm",
    ]
}

/// A file of the image `digest` in `store`, `None` when it is absent.
fn image_file(store: &Path, digest: &str, path: &str) -> Option<Vec<u8>> {
    let store = kbuild::store::Store::open(store).unwrap();
    let layers = store.image_layers(digest).unwrap();
    store
        .with_image_root(&layers, |root, _| root.read(Path::new(path)).ok())
        .unwrap()
}

fn image_dir(store: &Path, digest: &str, path: &str) -> Vec<String> {
    let store = kbuild::store::Store::open(store).unwrap();
    let layers = store.image_layers(digest).unwrap();
    store
        .with_image_root(&layers, |_, merged| {
            fs::read_dir(merged.join(path))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap()
}

fn verify_rebuilds_the_debian_core_cell_bit_for_bit() {
    let work = tempfile::tempdir().unwrap();
    let store = common::seed::seeded_store(work.path());
    let http = standins::binaries();
    let project = standins::project(work.path(), &http);
    let report_path = work.path().join("verify.json");
    let (p, s) = (project.to_str().unwrap(), store.to_str().unwrap());
    let mut args = vec!["verify"];
    args.extend(cell_args(p, s));
    args.extend(["--report", report_path.to_str().unwrap()]);
    let out = kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("reproducible: the same image and the same ISO bytes"));
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["reproducible"], true, "{report}");
    assert_eq!(
        report["first"]["image_digest"],
        report["second"]["image_digest"]
    );
    let iso = report["first"]["iso_sha256"].as_str().unwrap();
    assert_eq!(iso.len(), 64, "{report}");
    assert_eq!(report["second"]["iso_sha256"], iso);
    // The scratch store is gone.
    let tmp: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");

    // What used to differ from build to build is settled in the image, and
    // no machine identity made at package install is in it.
    let digest = report["first"]["image_digest"].as_str().unwrap();
    let file = |path: &str| image_file(&store, digest, path);
    assert_eq!(
        file("etc/iscsi/initiatorname.iscsi").as_deref(),
        Some(&b"GenerateName=yes\n"[..])
    );
    assert_eq!(file("etc/machine-id").as_deref(), Some(&b""[..]));
    assert_eq!(file("var/cache/ldconfig/aux-cache"), None);
    assert_eq!(file("var/lib/systemd/random-seed"), None);
    let keys: Vec<String> = image_dir(&store, digest, "etc/ssh")
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "{keys:?}");
    // mkconf and shadow's tools dated what they wrote with the epoch
    // (1700000000 is Tue, 14 Nov 2023 22:13:20 UTC, day 19675).
    let mdadm = String::from_utf8(file("etc/mdadm/mdadm.conf").unwrap()).unwrap();
    assert!(
        mdadm.contains("auto-generated on Tue, 14 Nov 2023 22:13:20"),
        "{mdadm}"
    );
    let shadow = String::from_utf8(file("etc/shadow").unwrap()).unwrap();
    let root = shadow.lines().find(|l| l.starts_with("root:")).unwrap();
    assert_eq!(root.split(':').nth(2), Some("19675"), "{root}");
    assert!(file("boot/initrd").is_some());
}

fn verify_names_the_file_a_clock_wrote() {
    let work = tempfile::tempdir().unwrap();
    let store = store_with_pinned_base(work.path(), EPOCH);
    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    let spec = context.join("Dockerfile");
    write(&spec, "FROM debian:bookworm\nRUN date > /stamp\n");
    let s = store.to_str().unwrap();
    let args = ["verify", "-f", spec.to_str().unwrap(), "--store", s];

    let out = kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("~ /stamp changed: content sha256:"), "{text}");
    assert!(text.contains("--- left/stamp"), "{text}");
    assert!(
        stderr(&out).contains("error: not reproducible"),
        "{}",
        stderr(&out)
    );

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let out = kbuild(&json_args, &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reproducible"], false);
    let paths = report["diff"]["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1, "{report}");
    assert_eq!(paths[0]["path"], "/stamp");
    assert_eq!(paths[0]["change"], "changed");
    assert_eq!(paths[0]["fields"][0]["field"], "content", "{report}");

    // Without an epoch there is nothing to compare: a clear input error.
    let out = kbuild_without_epoch(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs SOURCE_DATE_EPOCH"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint: "), "{}", stderr(&out));
}

fn diff_names_a_mode_change_in_store_images_and_layouts() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let same: (&str, &[u8], u32) = ("etc/same.conf", b"same\n", 0o644);
    import_files(
        &store,
        &[same, ("usr/bin/tool", b"#!/bin/sh\n", 0o644)],
        "left:1",
    );
    import_files(
        &store,
        &[same, ("usr/bin/tool", b"#!/bin/sh\n", 0o755)],
        "right:1",
    );
    let s = store.to_str().unwrap();

    let out = kbuild(&["diff", "left:1", "right:1", "--store", s], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("~ /usr/bin/tool changed: mode 0644 -> 0755\n"),
        "{text}"
    );
    assert!(!text.contains("same.conf"), "{text}");

    // The same from an OCI layout, and as JSON.
    let layout = work.path().join("layout");
    ok(&kbuild(
        &[
            "export",
            "right:1",
            &format!("oci:{}:r", layout.display()),
            "--store",
            s,
        ],
        &[],
    ));
    let right = format!("oci:{}:r", layout.display());
    let out = kbuild(
        &["diff", "left:1", &right, "--store", s, "--format", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths = report["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1, "{report}");
    assert_eq!(paths[0]["path"], "/usr/bin/tool");
    assert_eq!(
        paths[0]["fields"],
        serde_json::json!([{ "field": "mode", "left": "0644", "right": "0755" }])
    );

    let out = kbuild(&["diff", "left:1", "left:1", "--store", s], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("identical"), "{}", stdout(&out));
    let out = kbuild(&["diff", "left:1", "absent:1", "--store", s], &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("absent"), "{}", stderr(&out));
}

/// The ISO file's identity: inode, times and content.
fn file_state(path: &Path) -> (u64, i64, i64, i64, i64, String) {
    let meta = fs::metadata(path).unwrap();
    (
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        common::sha256_hex(&fs::read(path).unwrap()),
    )
}

fn without_an_epoch_a_second_run_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = common::seed::seeded_store(work.path());
    let http = standins::binaries();
    let project = standins::project(work.path(), &http);
    let out_dir = work.path().join("out");
    let (p, s, o) = (
        project.to_str().unwrap(),
        store.to_str().unwrap(),
        out_dir.to_str().unwrap(),
    );
    let run = |command: &str, report: &Path| -> serde_json::Value {
        let mut args = vec![command];
        args.extend(cell_args(p, s));
        if command == "iso" {
            args.extend(["-o", o]);
        }
        args.extend(["--report", report.to_str().unwrap()]);
        let out = kbuild_without_epoch(&args);
        assert!(out.status.success(), "{command}: {}", stderr(&out));
        serde_json::from_slice(&fs::read(report).unwrap()).unwrap()
    };
    // The seed was built with an epoch, which its RUN steps see: without
    // one this is a new build, dated by the clock.
    let first = run("iso", &work.path().join("first.json"));
    let iso = PathBuf::from(first["iso"].as_str().unwrap());
    let before = file_state(&iso);
    let sums = iso.with_extension("iso.sha256");
    let sums_before = file_state(&sums);
    // A second apart, so a clock in the image's dates would show.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let image = run("image", &work.path().join("image.json"));
    assert_eq!(image["digest"], first["image_digest"], "{image}");
    let again = run("iso", &work.path().join("again.json"));
    assert_eq!(again["image_digest"], first["image_digest"], "{again}");
    assert_eq!(again["sha256"], first["sha256"], "{again}");
    assert_eq!(again["parts_cached"], true, "{again}");
    assert_eq!(again["assembled"], false, "{again}");
    for stage in again["built"]["stages"].as_array().unwrap() {
        assert_eq!(stage["steps"], stage["cached"], "{stage}");
    }
    assert_eq!(file_state(&iso), before, "the ISO was rewritten");
    assert_eq!(file_state(&sums), sums_before, "its .sha256 was rewritten");

    // The run above read the ISO and stamped it; one byte changed since,
    // with the size and mtime kept, must still be noticed and repaired.
    let mtime = fs::metadata(&iso).unwrap().modified().unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = fs::File::options().write(true).open(&iso).unwrap();
        file.seek(SeekFrom::Start(40_000)).unwrap();
        file.write_all(b"X").unwrap();
        file.set_modified(mtime).unwrap();
    }
    assert_ne!(file_state(&iso).5, before.5);
    let repaired = run("iso", &work.path().join("repaired.json"));
    assert_eq!(repaired["assembled"], true, "{repaired}");
    assert_eq!(repaired["sha256"], first["sha256"], "{repaired}");
    assert_eq!(file_state(&iso).5, before.5, "the tampered ISO stayed");
}

fn main() -> std::process::ExitCode {
    common::harness::main(vec![
        (
            "verify_rebuilds_the_debian_core_cell_bit_for_bit",
            Needs::root_and(ISO_TOOLS),
            verify_rebuilds_the_debian_core_cell_bit_for_bit as fn(),
        ),
        (
            "verify_names_the_file_a_clock_wrote",
            Needs::root_and(&["mmdebstrap"]),
            verify_names_the_file_a_clock_wrote as fn(),
        ),
        (
            "diff_names_a_mode_change_in_store_images_and_layouts",
            ROOT,
            diff_names_a_mode_change_in_store_images_and_layouts as fn(),
        ),
        (
            "without_an_epoch_a_second_run_changes_nothing",
            Needs::root_and(ISO_TOOLS),
            without_an_epoch_a_second_run_changes_nothing as fn(),
        ),
    ])
}
