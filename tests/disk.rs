//! `kbuild disk` and `kbuild netboot` end to end (root, QEMU): the run's
//! shared Debian core image (tests/common/seed.rs) written as a raw GPT
//! disk for BIOS and UEFI, as qcow2, fixed VHD and GCE archive, judged by
//! outside tools (sfdisk, sgdisk, e2fsck, fsck.vfat, qemu-img, tar) and
//! booted as a virtio disk under SeaBIOS and OVMF to a login prompt; and
//! written as a netboot set booted by QEMU's iPXE under SeaBIOS, over
//! user-mode networking from kbuild's HTTP server on 127.0.0.1.
//!
//! What this proves: the disk's layout, file systems and GRUB boot path,
//! the recovery system booting with the flavor's live init (live-boot
//! finding the squashfs on COS_RECOVERY), and the cloud-config on COS_OEM
//! readable from the booted system. What only the real framework can
//! prove is out of reach here (its stand-in is a small fixture): Kairos'
//! own GRUB menu and the first-boot reset that makes COS_STATE and
//! COS_PERSISTENT.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use regex::Regex;

use common::builds::{assert_clean, stderr};
use common::harness::Needs;
use common::{kbuild, ok, run_ok, standins};

const EPOCH: &str = common::seed::SEED_EPOCH;
const BOOT_TIMEOUT: &str = "900";
const MIB: u64 = 1 << 20;
const CLOUD_CONFIG: &str = "#cloud-config\nhostname: kbuild-disk-test\n";

/// The netboot test runs kbuild in a network namespace of its own.
const NETBOOT_TOOLS: &[&str] = &[
    "mmdebstrap",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "qemu-system-x86_64",
    "findmnt",
    "unshare",
    "ip",
];

const TOOLS: &[&str] = &[
    "mmdebstrap",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "mke2fs",
    "debugfs",
    "qemu-img",
    "qemu-system-x86_64",
    "findmnt",
];

/// The layout judges too.
const JUDGE_TOOLS: &[&str] = &[
    "mmdebstrap",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "mke2fs",
    "debugfs",
    "qemu-img",
    "findmnt",
    "sfdisk",
    "sgdisk",
    "e2fsck",
    "fsck.vfat",
    "blkid",
    "tar",
];

struct Fixture {
    _work: tempfile::TempDir,
    work: PathBuf,
    store: PathBuf,
    project: PathBuf,
    /// `kbuild disk --report` of the core disk in every format.
    report: serde_json::Value,
}

static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();

fn fixture() -> &'static Fixture {
    common::shared(&FIXTURE, "disk fixture", build_fixture)
}

fn disk_args<'a>(project: &'a str, store: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "disk",
        "--project",
        project,
        "--store",
        store,
        "-o",
        out,
        "--flavor",
        "debian",
        "--variant",
        "core",
    ]
}

fn build_fixture() -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().to_path_buf();
    let store = common::seed::seeded_store(&path);
    let http = standins::binaries();
    let project = standins::project(&path, &http);
    let cloud_config = path.join("cloud-config.yaml");
    fs::write(&cloud_config, CLOUD_CONFIG).unwrap();
    let out = path.join("out");
    let report = path.join("disk.json");
    let (p, s, o) = (
        project.to_str().unwrap(),
        store.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let mut args = disk_args(p, s, o);
    args.extend([
        "--base-image",
        "debian:bookworm",
        "--format",
        "raw,qcow2,vhd,gce",
        "--cloud-config",
        cloud_config.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let report = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    Fixture {
        _work: work,
        work: path,
        store,
        project,
        report,
    }
}

fn artifact(format: &str) -> PathBuf {
    let report = &fixture().report;
    let found = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["format"] == format)
        .unwrap_or_else(|| panic!("no {format} artifact in {report}"));
    PathBuf::from(found["path"].as_str().unwrap())
}

fn boot(label: &str, disk: &Path, extra: &[&str]) -> Output {
    let log = fixture()
        .work
        .join("serial-logs")
        .join(format!("{label}.log"));
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut args = vec![
        "boot",
        disk.to_str().unwrap(),
        "--media",
        "disk",
        "--quiet",
        "--timeout",
        BOOT_TIMEOUT,
        "--serial-log",
        log.to_str().unwrap(),
        "--login",
        "root:kairos",
        "--run",
        "mkdir -p /run/oem && mount -o ro -L COS_OEM /run/oem && cat /run/oem/90_custom.yaml && grep -c 'boot=live' /proc/cmdline",
        "--expect-output",
        "hostname: kbuild-disk-test",
    ];
    args.extend_from_slice(extra);
    kbuild(&args, &[])
}

fn assert_booted(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} did not boot to its cloud-config: {}",
        stderr(out)
    );
    assert!(stderr(out).contains("login:"), "{what}: {}", stderr(out));
}

fn raw_disk_boots_under_seabios_and_reads_its_cloud_config() {
    let out = boot("raw-seabios", &artifact("raw"), &["--firmware", "bios"]);
    assert_booted(&out, "the raw disk under SeaBIOS");
}

fn raw_disk_boots_under_ovmf_and_reads_its_cloud_config() {
    let out = boot("raw-ovmf", &artifact("raw"), &["--firmware", "uefi"]);
    assert_booted(&out, "the raw disk under OVMF");
}

fn qcow2_disk_boots_under_seabios() {
    let out = boot("qcow2-seabios", &artifact("qcow2"), &["--firmware", "bios"]);
    assert_booted(&out, "the qcow2 disk under SeaBIOS");
}

/// `sfdisk --dump` fields of each partition line.
fn partitions(disk: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let dump = run_ok("sfdisk", &["--dump", disk.to_str().unwrap()]);
    assert!(dump.contains("label: gpt"), "{dump}");
    dump.lines()
        .filter(|l| l.contains(" : start="))
        .map(|line| {
            let (_, fields) = line.split_once(" : ").unwrap();
            fields
                .split(", ")
                .map(|f| {
                    let (k, v) = f.split_once('=').unwrap();
                    (k.trim().to_string(), v.trim().trim_matches('"').to_string())
                })
                .collect()
        })
        .collect()
}

fn the_layout_is_kairos_and_outside_judges_accept_every_part() {
    let f = fixture();
    let raw = artifact("raw");
    let verify = run_ok("sgdisk", &["--verify", raw.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let parts = partitions(&raw);
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["bios", "efi", "oem", "recovery"]);
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "21686148-6449-6E6F-744E-656564454649",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ]
    );
    let sectors =
        |p: &std::collections::BTreeMap<String, String>, k: &str| -> u64 { p[k].parse().unwrap() };
    assert_eq!(sectors(&parts[0], "start"), 2048);
    let sizes: Vec<u64> = parts.iter().map(|p| sectors(p, "size") * 512).collect();
    assert_eq!(&sizes[..3], &[MIB, 64 * MIB, 64 * MIB]);
    for p in &parts {
        assert_eq!(sectors(p, "start") * 512 % MIB, 0, "{p:?}");
        assert_eq!(sectors(p, "size") * 512 % MIB, 0, "{p:?}");
    }
    // Each file system by offset: its label, and a clean fsck.
    let offset = |i: usize| sectors(&parts[i], "start") * 512;
    let labels: Vec<String> = (1..4)
        .map(|i| {
            run_ok(
                "blkid",
                &[
                    "-p",
                    "-o",
                    "value",
                    "-s",
                    "LABEL",
                    "-O",
                    &offset(i).to_string(),
                    raw.to_str().unwrap(),
                ],
            )
            .trim()
            .to_string()
        })
        .collect();
    assert_eq!(labels, ["COS_GRUB", "COS_OEM", "COS_RECOVERY"]);
    for i in [2, 3] {
        let device = format!("{}?offset={}", raw.display(), offset(i));
        run_ok("e2fsck", &["-fn", &device]);
    }
    let esp = f.work.join("esp.img");
    let bytes = fs::read(&raw).unwrap();
    fs::write(
        &esp,
        &bytes[offset(1) as usize..(offset(1) + 64 * MIB) as usize],
    )
    .unwrap();
    run_ok("fsck.vfat", &["-n", esp.to_str().unwrap()]);
    let esp_files = run_ok("mdir", &["-i", esp.to_str().unwrap(), "-/b", "::/EFI/BOOT"]);
    assert!(esp_files.contains("BOOTX64.EFI"), "{esp_files}");
    // The cloud-config is on COS_OEM, byte for byte.
    let device = format!("{}?offset={}", raw.display(), offset(2));
    let config = run_ok("debugfs", &["-R", "cat /90_custom.yaml", &device]);
    assert_eq!(config, CLOUD_CONFIG);
    // GRUB's boot code in the MBR, the protective partition after it.
    assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
    assert_eq!(bytes[450], 0xee);
    assert_ne!(&bytes[..440], &[0u8; 440][..]);

    // qcow2: clean, and the same virtual disk.
    let qcow2 = artifact("qcow2");
    run_ok("qemu-img", &["check", qcow2.to_str().unwrap()]);
    let info = |format: &str, path: &Path| -> serde_json::Value {
        let text = run_ok(
            "qemu-img",
            &[
                "info",
                "--output=json",
                "-f",
                format,
                path.to_str().unwrap(),
            ],
        );
        serde_json::from_str(&text).unwrap()
    };
    assert_eq!(info("qcow2", &qcow2)["virtual-size"], bytes.len() as u64);
    run_ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw.to_str().unwrap(),
            qcow2.to_str().unwrap(),
        ],
    );
    // VHD: fixed, the raw size exactly, a whole number of MiB.
    let vhd = artifact("vhd");
    let vhd_info = info("vpc", &vhd);
    assert_eq!(vhd_info["virtual-size"], bytes.len() as u64, "{vhd_info}");
    assert_eq!(bytes.len() as u64 % MIB, 0);
    let vhd_len = fs::metadata(&vhd).unwrap().len();
    assert_eq!(
        vhd_len,
        bytes.len() as u64 + 512,
        "a fixed VHD is the data and a footer"
    );
    let vhd_text = run_ok("qemu-img", &["info", "-f", "vpc", vhd.to_str().unwrap()]);
    assert!(vhd_text.contains("file format: vpc"), "{vhd_text}");
    // GCE: one disk.raw, a whole number of GiB.
    let gce = artifact("gce");
    let listing = run_ok(
        "tar",
        &["--list", "--verbose", "-zf", gce.to_str().unwrap()],
    );
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    assert!(lines[0].ends_with(" disk.raw"), "{listing}");
    let size: u64 = lines[0].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(size % (1 << 30), 0, "{listing}");

    // Every artifact has a checking .sha256.
    for format in ["raw", "qcow2", "vhd", "gce"] {
        let path = artifact(format);
        let sums = common::sums_path(&path);
        let checked = Command::new("sha256sum")
            .args(["-c", sums.file_name().unwrap().to_str().unwrap()])
            .current_dir(path.parent().unwrap())
            .output()
            .unwrap();
        assert!(checked.status.success(), "{format}: {}", stderr(&checked));
    }

    // A re-run with nothing changed writes nothing.
    let cloud_config = f.work.join("cloud-config.yaml");
    let out = f.work.join("out");
    let (p, s, o) = (
        f.project.to_str().unwrap(),
        f.store.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let again_report = f.work.join("again.json");
    let mut args = disk_args(p, s, o);
    args.extend([
        "--base-image",
        "debian:bookworm",
        "--format",
        "raw,qcow2,vhd,gce",
        "--cloud-config",
        cloud_config.to_str().unwrap(),
        "--report",
        again_report.to_str().unwrap(),
    ]);
    let inode = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).unwrap().ino()
    };
    let before: Vec<u64> = ["raw", "qcow2", "vhd", "gce"]
        .iter()
        .map(|f| inode(&artifact(f)))
        .collect();
    ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let again: serde_json::Value =
        serde_json::from_slice(&fs::read(&again_report).unwrap()).unwrap();
    assert_eq!(again["parts_cached"], true, "{again}");
    for a in again["artifacts"].as_array().unwrap() {
        assert_eq!(a["written"], false, "{a}");
    }
    let after: Vec<u64> = ["raw", "qcow2", "vhd", "gce"]
        .iter()
        .map(|f| inode(&artifact(f)))
        .collect();
    assert_eq!(before, after, "a no-op run rewrote an artifact");
}

fn the_same_image_and_epoch_give_the_same_raw_disk_from_two_empty_stores() {
    let f = fixture();
    let layout = tempfile::tempdir_in(&f.work).unwrap();
    let dest = format!("oci:{}:core", layout.path().display());
    let image = f.report["image"].as_str().unwrap();
    ok(&kbuild(
        &["export", image, &dest, "--store", f.store.to_str().unwrap()],
        &[],
    ));
    let mut sums = Vec::new();
    for _ in ["a", "b"] {
        let side = tempfile::tempdir_in(&f.work).unwrap();
        let store = side.path().join("store");
        let out = side.path().join("out");
        let (p, s, o) = (
            f.project.to_str().unwrap(),
            store.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        let cloud_config = f.work.join("cloud-config.yaml");
        let mut args = disk_args(p, s, o);
        args.extend([
            "--from",
            &dest,
            "--cloud-config",
            cloud_config.to_str().unwrap(),
        ]);
        let printed = ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
        sums.push(printed.lines().nth(1).unwrap().to_string());
    }
    assert_eq!(sums[0], sums[1], "two empty stores gave two disks");
    let built = fs::read_to_string(common::sums_path(&artifact("raw"))).unwrap();
    assert!(
        built.starts_with(sums[0].trim_start_matches("sha256 ")),
        "{built} vs {}",
        sums[0]
    );
}

fn netboot_set_boots_through_ipxe_and_fetches_its_squashfs() {
    let f = fixture();
    let out = f.work.join("netboot");
    let report = f.work.join("netboot.json");
    let (p, s, o) = (
        f.project.to_str().unwrap(),
        f.store.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let mut args = disk_args(p, s, o);
    args[0] = "netboot";
    args.extend([
        "--base-image",
        "debian:bookworm",
        "--report",
        report.to_str().unwrap(),
    ]);
    ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let script = PathBuf::from(report["script"].as_str().unwrap());
    let name = script.file_stem().unwrap().to_str().unwrap().to_string();
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#!ipxe\n"), "{text}");
    assert!(
        text.contains(&format!("fetch=${{base-url}}{name}.squashfs")),
        "{text}"
    );
    // The set's kernel, initrd and squashfs are the ISO's parts, each
    // with a checking .sha256.
    for suffix in ["kernel", "initrd", "squashfs", "ipxe"] {
        let file = out.join(format!("{name}.{suffix}"));
        let checked = Command::new("sha256sum")
            .args(["-c", &format!("{name}.{suffix}.sha256")])
            .current_dir(&out)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{}: {}",
            file.display(),
            stderr(&checked)
        );
    }
    // In a network namespace of the test's own with only loopback: the
    // guest's user-mode network reaches kbuild's server and nothing else.
    let log = f.work.join("netboot.log");
    let expected = format!(
        r"fetch=http://10\.0\.2\.2:[0-9]+/{}\.squashfs",
        regex::escape(&name)
    );
    let booted = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(env!("CARGO_BIN_EXE_kbuild"))
        .args([
            "boot",
            "--netboot",
            o,
            "--firmware",
            "bios",
            "--quiet",
            "--timeout",
            BOOT_TIMEOUT,
            "--serial-log",
            log.to_str().unwrap(),
            "--login",
            "root:kairos",
            "--run",
            "cat /proc/cmdline",
            "--expect-output",
            &expected,
        ])
        .output()
        .unwrap();
    assert!(
        booted.status.success(),
        "the netboot set did not boot with its fetched squashfs: {}",
        stderr(&booted)
    );
    // live-boot downloaded the squashfs from kbuild's server.
    let log = String::from_utf8_lossy(&fs::read(&log).unwrap()).into_owned();
    let fetched = Regex::new(&format!(
        r"Trying wget http://10\.0\.2\.2:[0-9]+/{}\.squashfs",
        regex::escape(&name)
    ))
    .unwrap();
    assert!(
        fetched.is_match(&log),
        "live-boot did not fetch the squashfs"
    );
}

/// A release whose kbuild.yaml asks for every artifact kind: each is in
/// the manifest, SHA256SUMS and the provenance subjects.
fn a_release_writes_every_artifact_kind_it_is_asked_for() {
    let f = fixture();
    // A project copy of its own: the other tests read the fixture's.
    let project = f.work.join("release-project");
    fs::create_dir_all(&project).unwrap();
    run_ok(
        "cp",
        &[
            "-a",
            &format!("{}/.", f.project.display()),
            project.to_str().unwrap(),
        ],
    );
    let config = project.join("kbuild.yaml");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("\nrelease:\n  artifacts: [iso, raw, qcow2, vhd, gce, netboot]\n");
    fs::write(&config, text).unwrap();
    let out = f.work.join("release");
    let released = kbuild(
        &[
            "release",
            "--project",
            project.to_str().unwrap(),
            "--store",
            f.store.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--only",
            "kairos-debian-*-core-*",
            "--base-image",
            "debian:bookworm",
        ],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    ok(&released);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let cell = &manifest["cells"][0];
    let name = cell["cell"].as_str().unwrap();
    let paths: Vec<&str> = cell["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    let suffixes = [
        ".iso",
        ".raw",
        ".qcow2",
        ".vhd",
        ".gce.tar.gz",
        ".kernel",
        ".initrd",
        ".squashfs",
        ".ipxe",
    ];
    for suffix in suffixes {
        for file in [format!("{name}{suffix}"), format!("{name}{suffix}.sha256")] {
            let path = format!("{name}/{file}");
            assert!(paths.contains(&path.as_str()), "{path} not in {paths:?}");
        }
    }
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", stderr(&sums));
    let listed = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let provenance: serde_json::Value = serde_json::from_slice(
        &fs::read(out.join(name).join(format!("{name}.provenance.json"))).unwrap(),
    )
    .unwrap();
    let subjects: Vec<&str> = provenance["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(subjects.len(), 1 + suffixes.len(), "{subjects:?}");
    for suffix in suffixes {
        let file = format!("{name}{suffix}");
        assert!(
            subjects.contains(&file.as_str()),
            "{file} not in {subjects:?}"
        );
        assert!(listed.contains(&format!("  {name}/{file}\n")), "{listed}");
    }
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn bad_input_is_clear_and_leaves_nothing() {
    let f = fixture();
    let (p, s) = (f.project.to_str().unwrap(), f.store.to_str().unwrap());
    let image = f.report["image"].as_str().unwrap();

    // A size below what the partitions need.
    let out_dir = f.work.join("too-small");
    let o = out_dir.to_str().unwrap().to_string();
    let mut args = disk_args(p, s, &o);
    args.extend(["--from", image, "--size", "100M"]);
    let out = kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--size 100 MiB is smaller"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));

    // A cloud-config that is not YAML: its line and column.
    let bad = f.work.join("bad.yaml");
    fs::write(&bad, "#cloud-config\nusers:\n  - name: [unclosed\n").unwrap();
    let out_dir = f.work.join("bad-config");
    let o = out_dir.to_str().unwrap().to_string();
    let mut args = disk_args(p, s, &o);
    args.extend(["--from", image, "--cloud-config", bad.to_str().unwrap()]);
    let out = kbuild(&args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.yaml"), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 4"), "{}", stderr(&out));
    assert!(!out_dir.exists(), "the output directory was created");

    // BIOS on arm64 is refused before any work (the project's own
    // kbuild.yaml lists arm64).
    let root = common::root();
    let mut args = disk_args(root.to_str().unwrap(), s, &o);
    args.extend(["--arch", "arm64", "--firmware", "bios"]);
    let out = kbuild(&args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("UEFI only"), "{}", stderr(&out));
    assert_clean(&f.store);
}

fn main() -> std::process::ExitCode {
    let code = common::harness::main(vec![
        (
            "the_layout_is_kairos_and_outside_judges_accept_every_part",
            Needs::root_and(JUDGE_TOOLS),
            the_layout_is_kairos_and_outside_judges_accept_every_part as fn(),
        ),
        (
            "raw_disk_boots_under_seabios_and_reads_its_cloud_config",
            Needs::root_and(TOOLS),
            raw_disk_boots_under_seabios_and_reads_its_cloud_config as fn(),
        ),
        (
            "raw_disk_boots_under_ovmf_and_reads_its_cloud_config",
            Needs::root_and(TOOLS),
            raw_disk_boots_under_ovmf_and_reads_its_cloud_config as fn(),
        ),
        (
            "qcow2_disk_boots_under_seabios",
            Needs::root_and(TOOLS),
            qcow2_disk_boots_under_seabios as fn(),
        ),
        (
            "the_same_image_and_epoch_give_the_same_raw_disk_from_two_empty_stores",
            Needs::root_and(TOOLS),
            the_same_image_and_epoch_give_the_same_raw_disk_from_two_empty_stores as fn(),
        ),
        (
            "netboot_set_boots_through_ipxe_and_fetches_its_squashfs",
            Needs::root_and(NETBOOT_TOOLS),
            netboot_set_boots_through_ipxe_and_fetches_its_squashfs as fn(),
        ),
        (
            "a_release_writes_every_artifact_kind_it_is_asked_for",
            Needs::root_and(JUDGE_TOOLS),
            a_release_writes_every_artifact_kind_it_is_asked_for as fn(),
        ),
        (
            "bad_input_is_clear_and_leaves_nothing",
            Needs::root_and(TOOLS),
            bad_input_is_clear_and_leaves_nothing as fn(),
        ),
    ]);
    if let Some(Ok(fixture)) = FIXTURE.get() {
        let _ = fs::remove_dir_all(&fixture.work);
    }
    code
}
