//! arm64 from an amd64 host, end to end (root, qemu-user binfmt, QEMU):
//! the project's real `images/Dockerfile.debian` built for arm64 on an
//! `mmdebstrap --arch=arm64` base (its RUN steps run the image's arm64
//! programs through the kernel's binfmt_misc handler), checked, written
//! as a UEFI-only ISO, and booted under AAVMF on QEMU's virt machine
//! (TCG) to a login, where `uname -m` says aarch64. The arm64 core image
//! is built once per run (tests/common/seed.rs) and shared by these
//! tests; the ISO is built once and shared by the boot and ISO tests.
//!
//! The composed packages are the honest stand-ins of
//! tests/common/standins.rs, imported as arm64 images; the arm64 k3s
//! stand-in differs from amd64's, so a test sees which one was composed.
//! Run on an arm64 host, the same tests build natively.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::builds::stderr;
use common::harness::Needs;
use common::{kbuild, ok, run_ok, standins};

const EPOCH: &str = common::seed::SEED_EPOCH;

/// Seconds the arm64 boot may take: a whole system emulated by TCG on a
/// loaded 2-core runner.
const BOOT_TIMEOUT: &str = "1500";

const ISO_TOOLS: &[&str] = &[
    "mmdebstrap",
    "arch-test",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "findmnt",
];

const BOOT_TOOLS: &[&str] = &[
    "mmdebstrap",
    "arch-test",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "findmnt",
    "qemu-system-aarch64",
];

/// The missing-handler test hides binfmt_misc in a mount namespace.
const UNSHARE_TOOLS: &[&str] = &["mmdebstrap", "arch-test", "unshare"];

/// What the tests share: the seeded arm64 store, its project and the
/// core ISO.
struct Fixture {
    _work: tempfile::TempDir,
    work: PathBuf,
    store: PathBuf,
    project: PathBuf,
    _http: common::http::FileServer,
    core_image: String,
    /// `kbuild iso --report` of the core ISO.
    report: serde_json::Value,
    iso: PathBuf,
}

static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();

fn fixture() -> &'static Fixture {
    common::shared(&FIXTURE, "arm64 fixture", build_fixture)
}

fn cell_args<'a>(command: &'a str, project: &'a str, store: &'a str) -> Vec<&'a str> {
    vec![
        command,
        "--project",
        project,
        "--store",
        store,
        "--flavor",
        "debian",
        "--arch",
        "arm64",
        "--base-image",
        "debian:bookworm",
    ]
}

/// `kbuild iso` of the arm64 core cell into `<dir>/out`: its report.
fn core_iso(project: &Path, store: &Path, dir: &Path) -> serde_json::Value {
    let report = dir.join("iso.json");
    let out = dir.join("out");
    let (p, s) = (project.to_str().unwrap(), store.to_str().unwrap());
    let mut args = cell_args("iso", p, s);
    args.extend([
        "--variant",
        "core",
        "-o",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    serde_json::from_slice(&fs::read(&report).unwrap()).unwrap()
}

fn build_fixture() -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().to_path_buf();
    let store = common::seed::seeded_store_for(&path, "arm64");
    let http = standins::binaries();
    let project = standins::project_for(&path, &http, "arm64");
    let report = core_iso(&project, &store, &path);
    Fixture {
        core_image: report["image"].as_str().unwrap().to_string(),
        iso: PathBuf::from(report["iso"].as_str().unwrap()),
        report,
        _work: work,
        work: path,
        store,
        project,
        _http: http,
    }
}

fn arm64_core_image_from_the_real_spec_passes_kbuild_check() {
    let f = fixture();
    let out = kbuild(
        &[
            "check",
            &f.core_image,
            "--store",
            f.store.to_str().unwrap(),
            "--project",
            f.project.to_str().unwrap(),
            "--flavor",
            "debian",
            "--variant",
            "core",
            "--format",
            "json",
        ],
        &[],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}\n{}", stderr(&out));
    assert_eq!(report["passed"], true, "{report:#}");
    let findings = report.to_string();
    // It was checked as arm64: the arm64-efi GRUB modules and the arm64
    // kernel format.
    assert!(findings.contains("arm64-efi"), "{findings}");
    assert!(!findings.contains("x86_64-efi"), "{findings}");
    let config = ok(&kbuild(
        &[
            "inspect",
            &f.core_image,
            "--store",
            f.store.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    ));
    assert!(config.contains("\"arm64\""), "{config}");
}

/// The El Torito boot catalog as xorriso reports it.
fn el_torito(iso: &Path) -> String {
    run_ok(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ],
    )
}

fn arm64_iso_is_uefi_only_and_reproducible_from_the_same_image() {
    let f = fixture();
    let catalog = el_torito(&f.iso);
    let entries: Vec<&str> = catalog
        .lines()
        .filter(|l| l.starts_with("El Torito boot img :"))
        .collect();
    assert_eq!(entries.len(), 1, "{catalog}");
    assert!(entries[0].contains("UEFI"), "{catalog}");
    assert!(!catalog.contains("BIOS"), "{catalog}");
    // No MBR boot code: the first 440 bytes (before the disk signature and
    // the partition table GPT's protective MBR needs) are zero.
    let head = fs::read(&f.iso).unwrap()[..440].to_vec();
    assert!(
        head.iter().all(|&b| b == 0),
        "MBR boot code in an arm64 ISO"
    );
    // The ESP's loader is the arm64 one, and `kbuild boot` reads it so.
    let arch = kbuild::boot::iso_arch(&f.iso).unwrap();
    assert_eq!(arch, Some(kbuild::project::Arch::Arm64));

    // The same image in a store of its own gives the same bytes.
    let again = tempfile::tempdir_in(&f.work).unwrap();
    let store = common::seed::seeded_store_for(again.path(), "arm64");
    let second = core_iso(&f.project, &store, again.path());
    assert_eq!(second["image"], f.report["image"]);
    assert_eq!(second["sha256"], f.report["sha256"], "{second:#}");
}

fn arm64_iso_boots_under_aavmf_to_a_login_as_aarch64() {
    let f = fixture();
    let log = f.work.join("arm64-boot.log");
    // No --arch and no --firmware: both follow the ISO's EFI loader.
    let out = kbuild(
        &[
            "boot",
            f.iso.to_str().unwrap(),
            "--quiet",
            "--timeout",
            BOOT_TIMEOUT,
            "--serial-log",
            log.to_str().unwrap(),
            "--login",
            "root:kairos",
            "--run",
            "uname -m; cat /etc/kairos-release",
            "--expect-output",
            "aarch64",
        ],
        &[],
    );
    let console = fs::read_to_string(&log).unwrap_or_default();
    let tail: String = console
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "the arm64 ISO did not boot: {}\n{tail}",
        stderr(&out)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "aarch64",
        "KAIROS_ARCH=\"arm64\"",
        "KAIROS_VARIANT=\"core\"",
        "KAIROS_FLAVOR=\"debian\"",
    ] {
        assert!(
            printed.contains(expected),
            "{expected} missing from:\n{printed}"
        );
    }
    // It booted through AAVMF, the arm64 GRUB and the arm64 kernel on the
    // PL011 console.
    assert!(console.contains("ttyAMA0"), "{tail}");
}

fn the_standard_k3s_arm64_cell_composes_the_arm64_binary() {
    let f = fixture();
    let scratch = tempfile::tempdir_in(&f.work).unwrap();
    let store = common::seed::seeded_store_for(scratch.path(), "arm64");
    let report = scratch.path().join("image.json");
    let mut args = cell_args(
        "image",
        f.project.to_str().unwrap(),
        store.to_str().unwrap(),
    );
    args.extend([
        "--variant",
        "standard",
        "--k8s",
        "k3s",
        "--report",
        report.to_str().unwrap(),
    ]);
    ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["check"]["passed"], true, "{report:#}");
    let name = report["image"].as_str().unwrap();
    assert!(name.contains("arm64"), "{name}");
    let store = kbuild::store::Store::open(&store).unwrap();
    let layers = store.image_layers(name).unwrap();
    let k3s = store
        .with_image_root(&layers, |root, _| root.read(Path::new("usr/bin/k3s")))
        .unwrap()
        .unwrap();
    assert_eq!(k3s, standins::K3S_ARM64);
}

/// `kbuild` with binfmt_misc replaced, in a mount namespace of its own,
/// by an empty one that has no handler registered: what a host without
/// qemu-user-static shows.
fn kbuild_without_handlers(args: &[&str]) -> Output {
    let script = "mount -t tmpfs binfmt-none /proc/sys/fs/binfmt_misc && \
                  : > /proc/sys/fs/binfmt_misc/register && \
                  echo enabled > /proc/sys/fs/binfmt_misc/status && \
                  exec \"$0\" \"$@\"";
    Command::new("unshare")
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(env!("CARGO_BIN_EXE_kbuild"))
        .args(args)
        .output()
        .unwrap()
}

fn without_the_binfmt_handler_an_arm64_build_fails_before_any_step() {
    let work = tempfile::tempdir().unwrap();
    let store = common::builds::store_with_pinned_base_for(work.path(), EPOCH, "arm64");
    let http = standins::binaries();
    let project = standins::project_for(work.path(), &http, "arm64");
    let mut args = cell_args("image", project.to_str().unwrap(), store.to_str().unwrap());
    args.extend(["--variant", "core", "--progress", "plain"]);
    let out = kbuild_without_handlers(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("RUN needs linux/arm64 programs"), "{err}");
    assert!(err.contains("no binfmt_misc handler"), "{err}");
    assert!(
        err.contains("apt-get install qemu-user-static binfmt-support")
            && err.contains("update-binfmts --enable qemu-aarch64"),
        "{err}"
    );
    // Before any step: nothing ran, nothing was built or cached.
    assert!(!err.contains("apt-get update"), "{err}");
    let steps = store.join("cache/steps");
    let cached = fs::read_dir(&steps).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached, 0, "step cache entries in {}", steps.display());
    common::builds::assert_clean(&store);
}

/// The arm64 core cell, and only it, of the fixture project.
const ARM64_CORE: &str = "kairos-debian-12-core-arm64-*";

fn release_args<'a>(project: &'a Path, store: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "release",
        "--project",
        project.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--only",
        ARM64_CORE,
        "--base-image",
        "debian:bookworm",
    ]
}

fn release_builds_the_arm64_cell_and_without_the_handler_fails_it_clearly() {
    let f = fixture();
    let out = f.work.join("release");
    ok(&kbuild(
        &release_args(&f.project, &f.store, &out),
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let cells = manifest["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{manifest:#}");
    let cell = cells[0].to_string();
    assert!(cell.contains("arm64"), "{cell}");
    // The same image and epoch as the fixture's ISO: the same bytes.
    assert!(
        cell.contains(f.report["sha256"].as_str().unwrap()),
        "{cell}
{:#}",
        f.report
    );

    // A store where nothing is cached, on a host without the handler: the
    // cell fails, saying why and how to fix it, and the release exits 1.
    let work = tempfile::tempdir().unwrap();
    let store = common::builds::store_with_pinned_base_for(work.path(), EPOCH, "arm64");
    standins::import_images_for(&store, "arm64");
    let failing = work.path().join("out");
    let result = kbuild_without_handlers(&release_args(&f.project, &store, &failing));
    let err = stderr(&result);
    assert_eq!(result.status.code(), Some(1), "{err}");
    assert!(err.contains("failed at image"), "{err}");
    assert!(err.contains("no binfmt_misc handler"), "{err}");
    assert!(
        err.contains("update-binfmts --enable qemu-aarch64"),
        "{err}"
    );
    assert!(err.contains("1 of 1 cells failed"), "{err}");
}

tests!(
    arm64_core_image_from_the_real_spec_passes_kbuild_check: Needs::root_and(ISO_TOOLS),
    arm64_iso_is_uefi_only_and_reproducible_from_the_same_image: Needs::root_and(ISO_TOOLS),
    arm64_iso_boots_under_aavmf_to_a_login_as_aarch64: Needs::root_and(BOOT_TOOLS),
    the_standard_k3s_arm64_cell_composes_the_arm64_binary: Needs::root_and(ISO_TOOLS),
    without_the_binfmt_handler_an_arm64_build_fails_before_any_step: Needs::root_and(UNSHARE_TOOLS),
    release_builds_the_arm64_cell_and_without_the_handler_fails_it_clearly: Needs::root_and(ISO_TOOLS),
);
