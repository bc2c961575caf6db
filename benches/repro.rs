//! Reproducibility benchmarks (issue 21), one run on one machine, with the
//! tests' stand-in packages (tests/common/standins.rs):
//!
//! 1. No-op: `kbuild iso` of the Debian core cell and `kbuild release` of
//!    the three Debian cells re-run on unchanged inputs without
//!    `SOURCE_DATE_EPOCH` (median of 3), against their cold runs from a
//!    store holding only the base and the stand-ins. Goal: at most 1%.
//! 2. The ISO stage: `kbuild iso --from` the stored core image with its
//!    ISO parts removed (median of 3) against the hand-made floor with its
//!    checksum: mksquashfs of the same tree (unpacked by umoci), xorriso
//!    with the same options reusing kbuild's GRUB images and ESP (so the
//!    floor skips the ESP that kbuild makes with mtools), then sha256sum
//!    of the ISO. Goal: at most 1.1x. Both start each run after a `sync`
//!    (untimed); kbuild's ISO is synced before its rename, the floor's is
//!    not.
//! 3. `kbuild verify` of the core cell (its first store warm) against a
//!    cold `kbuild iso` of it: the floor is one cold build.
//!
//! Run: `scripts/bench-repro.sh` (root; the Debian fixture and mirror).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::builds::store_with_pinned_base;
use common::standins;

const EPOCH: &str = "1700000000";

/// Runs kbuild with or without an epoch; returns seconds and stderr.
fn kbuild(args: &[&str], epoch: Option<&str>) -> (f64, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kbuild"));
    command
        .args(args)
        .args(["--progress", "plain"])
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(epoch) = epoch {
        command.env("SOURCE_DATE_EPOCH", epoch);
    }
    let started = Instant::now();
    let out = command.output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kbuild {args:?}: {stderr}");
    (seconds, stderr)
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// An empty store with the pinned base and the stand-in images.
fn fresh_store(work: &Path, name: &str) -> String {
    let store = store_with_pinned_base(&work.join(name), EPOCH);
    standins::import_images(&store);
    store.display().to_string()
}

/// The hand-made ISO of `tree` with kbuild's GRUB images and ESP, and its
/// checksum; returns seconds.
fn floor(tree: &Path, parts: &Path, work: &Path) -> f64 {
    let squashfs = work.join("floor.squashfs");
    let iso = work.join("floor.iso");
    let part = |name: &str| parts.join(name).display().to_string();
    let started = Instant::now();
    run(
        "mksquashfs",
        &[
            tree.to_str().unwrap(),
            squashfs.to_str().unwrap(),
            "-noappend",
            "-no-progress",
            "-quiet",
            "-b",
            "1M",
            "-comp",
            "zstd",
            "-Xcompression-level",
            "3",
        ],
    );
    let mbr = format!("grub2_mbr={}", part("boot_hybrid.img"));
    run(
        "xorriso",
        &[
            "-report_about",
            "SORRY",
            "-volid",
            "KBUILD",
            "-joliet",
            "on",
            "-rockridge",
            "on",
            "-outdev",
            iso.to_str().unwrap(),
            "-map",
            squashfs.to_str().unwrap(),
            "/live/filesystem.squashfs",
            "-map",
            &part("kernel"),
            "/boot/kernel",
            "-map",
            &part("initrd"),
            "/boot/initrd",
            "-map",
            &part("eltorito.img"),
            "/boot/grub/eltorito.img",
            "-boot_image",
            "grub",
            "bin_path=/boot/grub/eltorito.img",
            "-boot_image",
            "grub",
            &mbr,
            "-boot_image",
            "any",
            "grub2_boot_info=on",
            "-boot_image",
            "any",
            "partition_offset=16",
            "-boot_image",
            "any",
            "cat_path=/boot/boot.catalog",
            "-boot_image",
            "any",
            "boot_info_table=on",
            "-boot_image",
            "any",
            "platform_id=0x00",
            "-boot_image",
            "any",
            "emul_type=no_emulation",
            "-boot_image",
            "any",
            "load_size=2048",
            "-boot_image",
            "any",
            "next",
            "-append_partition",
            "2",
            "0xef",
            &part("efi.img"),
            "-boot_image",
            "any",
            "efi_path=--interval:appended_partition_2:all::",
            "-boot_image",
            "any",
            "platform_id=0xef",
            "-boot_image",
            "any",
            "emul_type=no_emulation",
            "-boot_image",
            "any",
            "appended_part_as=gpt",
        ],
    );
    run("sha256sum", &[iso.to_str().unwrap()]);
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&squashfs);
    let _ = std::fs::remove_file(&iso);
    seconds
}

/// The only derived entry of `store` (the ISO parts of one image).
fn parts_dir(store: &str) -> PathBuf {
    std::fs::read_dir(Path::new(store).join("derived"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("the ISO parts are in the store")
}

fn main() {
    let work = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    let work = work.path();
    let http = standins::binaries();
    let project = standins::project(work, &http);
    let project = project.to_str().unwrap();
    let out = |name: &str| work.join(name).display().to_string();
    let cell = |store: &str, out: &str| -> Vec<String> {
        [
            "--project",
            project,
            "--store",
            store,
            "-o",
            out,
            "--base-image",
            "debian:bookworm",
            "--flavor",
            "debian",
            "--variant",
            "core",
        ]
        .map(String::from)
        .to_vec()
    };

    println!("| run | kbuild (s) | against (s) | ratio | goal |");
    println!("|---|---|---|---|---|");

    if std::env::var_os("PAUSE").is_some() {
        let release_store = fresh_store(work, "release");
        let args: Vec<String> = [
            "release",
            "--only",
            "kairos-debian-*",
            "--project",
            project,
            "--store",
            &release_store,
            "-o",
            &out("release-out"),
            "--base-image",
            "debian:bookworm",
        ]
        .map(String::from)
        .to_vec();
        let (cold, _) = kbuild(&strs(&args), None);
        eprintln!("COLD {cold} ARGS {:?}", args);
        std::thread::sleep(std::time::Duration::from_secs(7200));
    }
    // 1. iso: cold, then no-op.
    let iso_store = fresh_store(work, "iso");
    let mut iso_args = vec!["iso".to_string()];
    iso_args.extend(cell(&iso_store, &out("iso-out")));
    let (iso_cold, _) = kbuild(&strs(&iso_args), None);
    let mut noops = Vec::new();
    for _ in 0..3 {
        let (seconds, log) = kbuild(&strs(&iso_args), None);
        assert!(log.contains("parts cached, already up to date"), "{log}");
        noops.push(seconds);
    }
    let iso_noop = median(noops);
    println!(
        "| no-op `kbuild iso` (core, no epoch, median of 3) vs its cold run | {iso_noop:.2} | {iso_cold:.1} | {:.4} | ≤ 0.01 |",
        iso_noop / iso_cold
    );

    // 1. release: cold, then no-op.
    let release_store = fresh_store(work, "release");
    let release_args: Vec<String> = [
        "release",
        "--only",
        "kairos-debian-*",
        "--project",
        project,
        "--store",
        &release_store,
        "-o",
        &out("release-out"),
        "--base-image",
        "debian:bookworm",
    ]
    .map(String::from)
    .to_vec();
    let (release_cold, _) = kbuild(&strs(&release_args), None);
    let release_noop = median(
        (0..3)
            .map(|_| kbuild(&strs(&release_args), None).0)
            .collect(),
    );
    println!(
        "| no-op `kbuild release` (3 cells, no epoch, median of 3) vs its cold run | {release_noop:.2} | {release_cold:.1} | {:.4} | ≤ 0.01 |",
        release_noop / release_cold
    );

    // 2. The ISO stage against the hand-made floor.
    let images = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["images", "--store", &iso_store])
        .output()
        .unwrap();
    let core = String::from_utf8_lossy(&images.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .find(|name| name.contains("12-core-amd64"))
        .expect("the core image is in its store");
    let layout = work.join("core-oci");
    kbuild(
        &[
            "export",
            &core,
            &format!("oci:{}:core", layout.display()),
            "--store",
            &iso_store,
        ],
        None,
    );
    let bundle = work.join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:core", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let floor_parts = work.join("floor-parts");
    run(
        "cp",
        &[
            "-a",
            parts_dir(&iso_store).to_str().unwrap(),
            floor_parts.to_str().unwrap(),
        ],
    );
    let mut stage_args = vec!["iso".to_string(), "--from".into(), core.clone()];
    // --from replaces the cell's build, and with it --base-image.
    stage_args.extend(
        cell(&iso_store, &out("stage-out"))
            .into_iter()
            .filter(|a| a != "--base-image" && a != "debian:bookworm"),
    );
    let (mut stage, mut hand) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        std::fs::remove_dir_all(Path::new(&iso_store).join("derived")).unwrap();
        let _ = std::fs::remove_dir_all(out("stage-out"));
        // Each timed run starts with nothing dirty in the page cache, so
        // kbuild's fsync of its ISO never pays for the other's writes.
        run("sync", &[]);
        stage.push(kbuild(&strs(&stage_args), None).0);
        run("sync", &[]);
        hand.push(floor(&bundle.join("rootfs"), &floor_parts, work));
    }
    let (stage, hand) = (median(stage), median(hand));
    println!(
        "| `kbuild iso --from` the stored core image, parts removed, vs mksquashfs + xorriso + sha256sum (median of 3) | {stage:.2} | {hand:.2} | {:.2} | ≤ 1.1 |",
        stage / hand
    );

    // 3. verify against a cold build.
    let verify_store = fresh_store(work, "verify");
    let mut verify_args = vec!["iso".to_string()];
    verify_args.extend(cell(&verify_store, &out("verify-out")));
    let (verify_cold, _) = kbuild(&strs(&verify_args), Some(EPOCH));
    verify_args[0] = "verify".into();
    let (verify, _) = kbuild(&strs(&verify_args), Some(EPOCH));

    println!(
        "| `kbuild verify` of the core cell (first store warm) vs a cold `kbuild iso` of it | {verify:.1} | {verify_cold:.1} | {:.2} | floor 1.0 |",
        verify / verify_cold
    );
}
