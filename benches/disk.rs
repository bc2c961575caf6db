//! `kbuild disk --format raw` from a cached image (issue 23), one run on
//! one machine: the run's shared Debian core image (tests/common/seed.rs),
//! its ISO and disk parts removed before each run so the squashfs, the
//! GRUB images, the ESP and both ext2 partitions are made again (the GRUB
//! step's outputs come from the step cache, as they would), against the
//! floor a person would script: mksquashfs of the same tree (unpacked by
//! umoci) with the same options, mke2fs -d of a directory holding that
//! squashfs with the kernel and initrd (the copy of the bytes into the
//! disk), then sha256sum of the result. Median of 3. The issue sets no
//! goal; the ratio is reported.
//!
//! Run: `scripts/bench-disk.sh` (root; the Debian fixture and mirror).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn kbuild(args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(args)
        .args(["--progress", "plain"])
        .env("SOURCE_DATE_EPOCH", common::seed::SEED_EPOCH)
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "kbuild {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    seconds
}

fn clear(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let work = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    let work = work.path();
    let store = common::seed::seeded_store(work);
    let http = common::standins::binaries();
    let project = common::standins::project(work, &http);
    let (p, s) = (project.to_str().unwrap(), store.to_str().unwrap());
    let out = work.join("out");
    let o = out.to_str().unwrap();
    let cell = [
        "--project",
        p,
        "--store",
        s,
        "--flavor",
        "debian",
        "--variant",
        "core",
    ];
    // The image, built once (cached in the seed) and named.
    let mut args = vec!["disk", "-o", o, "--base-image", "debian:bookworm"];
    args.extend(cell);
    kbuild(&args);
    let images = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["images", "--store", s])
        .output()
        .unwrap();
    let core = String::from_utf8_lossy(&images.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .find(|name| name.starts_with("kbuild.local/") && name.contains("-core"))
        .expect("the core image is in the store");
    let derived = store.join("derived");
    let parts = std::fs::read_dir(&derived)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("kernel").is_file())
        .expect("the ISO parts are in the store");
    let floor_parts = work.join("floor-parts");
    std::fs::create_dir_all(&floor_parts).unwrap();
    for name in ["kernel", "initrd"] {
        std::fs::copy(parts.join(name), floor_parts.join(name)).unwrap();
    }

    let mut disk = Vec::new();
    for _ in 0..3 {
        clear(&out);
        for entry in std::fs::read_dir(&derived).unwrap() {
            clear(&entry.unwrap().path());
        }
        let mut args = vec!["disk", "-o", o, "--from", &core];
        args.extend(cell);
        // Nothing dirty in the page cache at the start of a timed run.
        run("sync", &[]);
        disk.push(kbuild(&args));
    }
    let disk = median(disk);

    let layout = work.join("core-oci");
    kbuild(&[
        "export",
        &core,
        &format!("oci:{}:core", layout.display()),
        "--store",
        s,
    ]);
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
    let tree = bundle.join("rootfs");
    let mut floor = Vec::new();
    for _ in 0..3 {
        let squashfs = floor_parts.join("filesystem.squashfs");
        let raw = work.join("floor.raw");
        let _ = std::fs::remove_file(&squashfs);
        let _ = std::fs::remove_file(&raw);
        run("sync", &[]);
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
        let payload: u64 = std::fs::read_dir(&floor_parts)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let size = format!("{}k", (payload + payload / 16 + (16 << 20)) / 1024);
        run(
            "mke2fs",
            &[
                "-q",
                "-F",
                "-t",
                "ext2",
                "-b",
                "4096",
                "-d",
                floor_parts.to_str().unwrap(),
                raw.to_str().unwrap(),
                &size,
            ],
        );
        run("sha256sum", &[raw.to_str().unwrap()]);
        floor.push(started.elapsed().as_secs_f64());
    }
    let floor = median(floor);
    println!("| run | kbuild (s) | floor (s) | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| `kbuild disk --format raw --from` the cached core image, parts removed (median of 3) vs mksquashfs + mke2fs -d + sha256sum | {disk:.2} | {floor:.2} | {:.2} | reported |",
        disk / floor
    );
}
