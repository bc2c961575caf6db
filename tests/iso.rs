//! `kbuild iso` and `kbuild boot` end to end (root, QEMU): the project's
//! real `images/Dockerfile.debian` on an `mmdebstrap` base, composed as
//! core and as standard with k3s, written as hybrid ISOs, and booted on a
//! serial console as SeaBIOS CD, OVMF CD, SeaBIOS USB disk and OVMF USB
//! disk. The ISOs are built once per run and shared by the boot tests.
//!
//! The composed packages are honest fixtures, not the real artifacts: the
//! framework, provider-kairos and edgevpn stand-ins are small images
//! imported into the store, and k3s is a script printing its pinned
//! version, served over HTTP on 127.0.0.1 with its sha256 pinned in a copy
//! of the project. What booted is checked by what those fixtures put in
//! the image (`/etc/kairos-release`, `k3s --version`).
//!
//! The Alpine test exercises only the Alpine flavor's own live init (the
//! script in `images/Dockerfile.alpine`): packed with Debian's
//! busybox-static and the Debian kernel's modules, it boots the Debian
//! squashfs with the Alpine flavor's command line. It proves the init
//! finds the medium by label, mounts the squashfs with an overlay and
//! hands over to the real init; it does not prove Alpine's kernel, its
//! mkinitfs packing or OpenRC, which need Alpine's archive.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use regex::Regex;

use common::builds::{assert_clean, stderr};
use common::harness::Needs;
use common::{kbuild, ok, run_ok, standins};

/// The shared Debian image (tests/common/seed.rs) is built with it.
const EPOCH: &str = common::seed::SEED_EPOCH;
/// OVMF refusing the boot medium's loader. Its boot options for devices
/// are named "UEFI QEMU DVD-ROM ...", "UEFI QEMU HARDDISK ..."; its own
/// EFI shell ("EFI Internal Shell") is refused under Secure Boot too, and
/// that refusal must not count.
const REFUSED: &str = r#"failed to (load|start) Boot[0-9A-F]{4} "UEFI [^"]*" from [^\n]*: (Access Denied|Security Violation)"#;
/// Seconds a boot may take: TCG on a loaded 2-core runner is slow.
const BOOT_TIMEOUT: &str = "900";

const TOOLS: &[&str] = &[
    "mmdebstrap",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "qemu-system-x86_64",
    "findmnt",
];

/// The Alpine test also packs the host's busybox-static.
const ALPINE_TOOLS: &[&str] = &[
    "mmdebstrap",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "qemu-system-x86_64",
    "findmnt",
    "busybox",
];

/// The Secure Boot test with one's own keys also makes a key set and a
/// variable store holding it.
const OWN_KEY_TOOLS: &[&str] = &[
    "mmdebstrap",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "qemu-system-x86_64",
    "findmnt",
    "openssl",
    "virt-fw-vars",
];

/// The UKI test also signs, verifies and reads PE headers.
const UKI_TOOLS: &[&str] = &[
    "mmdebstrap",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mmd",
    "mcopy",
    "mdir",
    "qemu-system-x86_64",
    "findmnt",
    "openssl",
    "virt-fw-vars",
    "osslsigncode",
    "sbverify",
    "objdump",
];

/// What every test shares: one store, the fixture project, the core and
/// standard ISOs.
struct Fixture {
    _work: tempfile::TempDir,
    work: PathBuf,
    store: PathBuf,
    project: PathBuf,
    core_image: String,
    /// `kbuild iso --report` of the core ISO.
    core_report: serde_json::Value,
    core_iso: PathBuf,
    standard_iso: PathBuf,
}

/// Built by the first test that needs it; a failure is kept, so the
/// other tests fail at once with it instead of building it again.
static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();

fn fixture() -> &'static Fixture {
    common::shared(&FIXTURE, "ISO fixture", build_fixture)
}

fn iso_args<'a>(fixture_project: &'a str, store: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "iso",
        "--project",
        fixture_project,
        "--store",
        store,
        "-o",
        out,
        "--flavor",
        "debian",
    ]
}

/// A directory of its own under the fixture's, removed when the test
/// drops it: the suite makes several ISOs and stores, and a CI runner's
/// disk must hold only the ones in use.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(&fixture().work)
        .unwrap()
}

fn build_fixture() -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().to_path_buf();
    // The Debian core image is the run's shared one (tests/common/seed.rs).
    let store = common::seed::seeded_store(&path);
    let http = standins::binaries();
    let project = standins::project(&path, &http);
    let out = path.join("out");
    let report = path.join("core.json");
    let (p, s, o) = (
        project.to_str().unwrap(),
        store.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let mut args = iso_args(p, s, o);
    args.extend([
        "--variant",
        "core",
        "--base-image",
        "debian:bookworm",
        "--report",
        report.to_str().unwrap(),
    ]);
    let printed = ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let core_iso = PathBuf::from(report["iso"].as_str().unwrap());
    assert!(
        printed.contains(&format!("sha256 {}", report["sha256"].as_str().unwrap())),
        "{printed}"
    );
    let mut args = iso_args(p, s, o);
    args.extend([
        "--variant",
        "standard",
        "--k8s",
        "k3s",
        "--base-image",
        "debian:bookworm",
    ]);
    let printed = ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let standard_iso = PathBuf::from(printed.lines().next().unwrap());
    Fixture {
        core_image: report["image"].as_str().unwrap().to_string(),
        core_report: report.clone(),
        _work: work,
        work: path,
        store,
        project,
        core_iso,
        standard_iso,
    }
}

/// Where `boot(label, ..)` writes the console.
fn serial_log(label: &str) -> PathBuf {
    fixture()
        .work
        .join("serial-logs")
        .join(format!("{label}.log"))
}

/// `kbuild boot` with `extra`; the console goes to `serial_log(label)`.
fn boot(label: &str, iso: &Path, extra: &[&str]) -> Output {
    let log = serial_log(label);
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut args = vec![
        "boot",
        iso.to_str().unwrap(),
        "--quiet",
        "--timeout",
        BOOT_TIMEOUT,
        "--serial-log",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kbuild(&args, &[])
}

fn assert_booted(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} did not reach its expectation: {}",
        stderr(out)
    );
    assert!(stderr(out).contains("login:"), "{what}: {}", stderr(out));
}

fn core_iso_boots_from_a_seabios_cd_and_is_the_composed_core() {
    let f = fixture();
    let out = boot(
        "seabios-cd",
        &f.core_iso,
        &[
            "--firmware",
            "bios",
            "--media",
            "cdrom",
            "--login",
            "root:kairos",
            "--run",
            "cat /etc/kairos-release",
            "--expect-output",
            "KAIROS_VARIANT=\"core\"",
        ],
    );
    assert_booted(&out, "SeaBIOS CD");
    let printed = String::from_utf8_lossy(&out.stdout);
    for key in [
        "KAIROS_FLAVOR=\"debian\"",
        "KAIROS_VERSION=\"v3.2.4\"",
        "KAIROS_ARTIFACT=",
    ] {
        assert!(printed.contains(key), "{key} missing from:\n{printed}");
    }
}

fn core_iso_boots_from_an_ovmf_cd() {
    let out = boot(
        "ovmf-cd",
        &fixture().core_iso,
        &["--firmware", "uefi", "--media", "cdrom"],
    );
    assert_booted(&out, "OVMF CD");
}

fn core_iso_boots_from_a_seabios_usb_disk() {
    let out = boot(
        "seabios-usb",
        &fixture().core_iso,
        &["--firmware", "bios", "--media", "usb"],
    );
    assert_booted(&out, "SeaBIOS USB disk");
}

fn core_iso_boots_from_an_ovmf_usb_disk() {
    let out = boot(
        "ovmf-usb",
        &fixture().core_iso,
        &["--firmware", "uefi", "--media", "usb"],
    );
    assert_booted(&out, "OVMF USB disk");
}

/// The core ISO boots through Debian's signed shim, signed GRUB and
/// signed kernel with Secure Boot enforced (OVMF's Secure Boot build with
/// Microsoft's keys), and the kernel says so.
fn core_iso_boots_with_secure_boot_enforced() {
    let f = fixture();
    assert_eq!(f.core_report["signed_chain"], true, "{}", f.core_report);
    boots_locked_down("ovmf-secure-cd", &f.core_iso, None);
}

/// Boots `iso` as a CD under OVMF enforcing Secure Boot (with the
/// variable store `vars`, else Microsoft's keys), logs in, and checks
/// that the kernel says Secure Boot is on and runs locked down; returns
/// what the commands printed (they end with `/proc/cmdline`).
fn boots_locked_down(label: &str, iso: &Path, vars: Option<&Path>) -> String {
    let mut args = vec!["--firmware", "uefi-secure"];
    if let Some(vars) = vars {
        args.extend(["--vars", vars.to_str().unwrap()]);
    }
    args.extend([
        "--login",
        "root:kairos",
        "--run",
        "dmesg | grep -i 'secure boot'; cat /sys/kernel/security/lockdown /proc/cmdline",
        "--expect-output",
        r"(?i)secure ?boot enabled",
    ]);
    let out = boot(label, iso, &args);
    assert_booted(&out, label);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("[integrity]"),
        "{label}: lockdown: {printed}"
    );
    printed
}

/// A key set from `kbuild keys generate` and an OVMF variable store with
/// only it enrolled and Secure Boot on (made once per run).
fn own_keys() -> (PathBuf, PathBuf) {
    static MADE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    MADE.get_or_init(|| {
        let work = &fixture().work;
        let keys = work.join("own-keys");
        ok(&kbuild(&["keys", "generate", keys.to_str().unwrap()], &[]));
        let owner = fs::read_to_string(keys.join("GUID")).unwrap();
        let vars = work.join("own_VARS.fd");
        let key = |name: &str| keys.join(name).to_str().unwrap().to_string();
        let made = Command::new("virt-fw-vars")
            .args(["--input", "/usr/share/OVMF/OVMF_VARS_4M.fd", "--output"])
            .arg(&vars)
            .args(["--set-pk", owner.trim(), &key("PK.crt")])
            .args(["--add-kek", owner.trim(), &key("KEK.crt")])
            .args(["--add-db", owner.trim(), &key("db.crt")])
            .arg("--secure-boot")
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        (keys, vars)
    })
    .clone()
}

/// Secure Boot is enforced, not waved through: under a variable store
/// whose db holds only a key set from `kbuild keys generate` (no
/// Microsoft key), the firmware refuses the Microsoft-signed shim.
fn core_iso_is_refused_by_secure_boot_without_its_signers_key() {
    let f = fixture();
    let (_, vars) = own_keys();
    assert_refused("ovmf-secure-own-keys", &f.core_iso, "cdrom", Some(&vars));
}

/// The sections kbuild adds to a UKI, in the order `objdump -h` lists
/// them (address order), taken from its listing.
fn added_sections_in_address_order(headers: &str) -> Vec<String> {
    const ADDED: [&str; 5] = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"];
    headers
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|name| ADDED.contains(name))
        .map(str::to_string)
        .collect()
}

/// OVMF enforcing Secure Boot (with the variable store `vars`, else
/// Microsoft's keys) refuses the loader of `medium` attached as `media`.
fn assert_refused(label: &str, medium: &Path, media: &str, vars: Option<&Path>) {
    let mut args = vec![
        "--firmware",
        "uefi-secure",
        "--media",
        media,
        "--expect",
        REFUSED,
    ];
    if let Some(vars) = vars {
        args.extend(["--vars", vars.to_str().unwrap()]);
    }
    let out = boot(label, medium, &args);
    assert!(
        out.status.success(),
        "{label}: not refused: {}",
        stderr(&out)
    );
    // `--quiet` keeps the console off stderr: the serial log holds it.
    let console = fs::read_to_string(serial_log(label)).unwrap();
    assert!(
        Regex::new(REFUSED).unwrap().is_match(&console),
        "{label}: {console}"
    );
    assert!(!console.contains("login:"), "{label}: {console}");
}

/// `efi` as the removable-media loader of a bare FAT disk beside it (no
/// ISO around it: what boots is the UKI alone).
fn fat_disk_with(efi: &Path, name: &str) -> PathBuf {
    let disk = efi.with_file_name(format!("{name}.img"));
    let _ = fs::remove_file(&disk);
    let size = fs::metadata(efi).unwrap().len() / 512 + 16 * 2048;
    for args in [
        vec![
            "mformat".to_string(),
            "-i".into(),
            disk.display().to_string(),
            "-C".into(),
            "-T".into(),
            size.to_string(),
            "-h".into(),
            "64".into(),
            "-s".into(),
            "32".into(),
            "::".into(),
        ],
        vec![
            "mmd".into(),
            "-i".into(),
            disk.display().to_string(),
            "::/EFI".into(),
            "::/EFI/BOOT".into(),
        ],
        vec![
            "mcopy".into(),
            "-i".into(),
            disk.display().to_string(),
            efi.display().to_string(),
            "::/EFI/BOOT/BOOTX64.EFI".into(),
        ],
    ] {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    disk
}

/// Flips one bit in the middle of the kernel (`.linux`) of the UKI `efi`.
fn flip_a_kernel_bit(efi: &Path) {
    let mut bytes = fs::read(efi).unwrap();
    let linux = kbuild::pe::Pe::parse(&bytes)
        .unwrap()
        .section(".linux")
        .unwrap()
        .unwrap()
        .bytes;
    let at = linux.as_ptr() as usize - bytes.as_ptr() as usize + linux.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(efi, &bytes).unwrap();
}

/// `kbuild uki` of the core image, signed with a generated db key: the
/// same bytes twice, verified by sbverify with that certificate only, the
/// sections objdump lists in address order; it boots with Secure Boot
/// enforced under the store holding that key, and is refused under the
/// Microsoft-keys store and, with one byte of its kernel flipped, under
/// its own.
fn a_signed_uki_boots_under_secure_boot_with_its_own_keys_only() {
    let f = fixture();
    let (keys, vars) = own_keys();
    let dir = scratch("uki");
    let uki = |name: &str| {
        let out = dir.path().join(name);
        ok(&kbuild(
            &[
                "uki",
                "--from",
                &f.core_image,
                "--flavor",
                "debian",
                "--project",
                f.project.to_str().unwrap(),
                "--store",
                f.store.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--sign-key",
                keys.join("db.key").to_str().unwrap(),
                "--sign-cert",
                keys.join("db.crt").to_str().unwrap(),
            ],
            &[("SOURCE_DATE_EPOCH", EPOCH)],
        ));
        out
    };
    let first = uki("core-a.efi");
    let second = uki("core-b.efi");
    assert_eq!(
        fs::read(&first).unwrap(),
        fs::read(&second).unwrap(),
        "not reproducible"
    );
    let verify = |cert: &str| {
        Command::new("sbverify")
            .args(["--cert", keys.join(cert).to_str().unwrap()])
            .arg(&first)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(verify("db.crt"), "sbverify refuses the db signature");
    assert!(
        !verify("PK.crt"),
        "sbverify accepts a certificate that did not sign"
    );
    let headers = Command::new("objdump")
        .arg("-h")
        .arg(&first)
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).into_owned();
    assert_eq!(
        added_sections_in_address_order(&headers),
        [".osrel", ".cmdline", ".uname", ".initrd", ".linux"],
        "{headers}"
    );

    let disk = fat_disk_with(&first, "uki");
    let booted = boot(
        "uki-own-keys",
        &disk,
        &[
            "--firmware",
            "uefi-secure",
            "--media",
            "usb",
            "--vars",
            vars.to_str().unwrap(),
            "--expect",
            "secureboot: Secure boot enabled",
        ],
    );
    assert!(
        booted.status.success(),
        "the signed UKI did not boot: {}",
        stderr(&booted)
    );
    assert_refused("uki-ms-keys", &disk, "usb", None);

    let tampered_file = dir.path().join("core-tampered.efi");
    fs::copy(&first, &tampered_file).unwrap();
    flip_a_kernel_bit(&tampered_file);
    let disk = fat_disk_with(&tampered_file, "uki-tampered");
    assert_refused("uki-tampered", &disk, "usb", Some(&vars));
}

/// The 512-byte sector where the ISO's appended ESP (GPT partition 2)
/// starts, as xorriso reports it.
fn esp_offset(iso: &Path) -> u64 {
    let report = xorriso_report(iso);
    let line = report
        .lines()
        .find(|l| l.starts_with("GPT start and size :   2"))
        .unwrap_or_else(|| panic!("no GPT partition 2:\n{report}"));
    let start: u64 = line.split_whitespace().nth(6).unwrap().parse().unwrap();
    start * 512
}

/// `kbuild iso --uki` signed with a generated db key: UEFI only, the ESP
/// holds the signed UKI and nothing else, the ISO has no GRUB, grub.cfg
/// or loose kernel. It boots to a login with Secure Boot enforced under
/// the store holding that key, is refused under the Microsoft-keys store,
/// and, with one byte of the UKI inside it flipped, under its own; an
/// empty store given the same image, epoch and key writes the same bytes.
fn a_signed_uki_iso_boots_under_secure_boot_with_its_own_keys_only() {
    let f = fixture();
    let (keys, vars) = own_keys();
    let dir = scratch("uki-iso");
    let (p, key, cert) = (
        f.project.to_str().unwrap(),
        keys.join("db.key"),
        keys.join("db.crt"),
    );
    let uki_iso = |store: &Path, from: &str, out: &str| {
        let mut args = iso_args(p, store.to_str().unwrap(), out);
        args.extend(["--variant", "core", "--from", from, "--uki"]);
        args.extend(["--sign-key", key.to_str().unwrap()]);
        args.extend(["--sign-cert", cert.to_str().unwrap()]);
        let printed = ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
        let mut lines = printed.lines();
        let iso = PathBuf::from(lines.next().unwrap());
        (iso, lines.next().unwrap().to_string())
    };
    let out = dir.path().join("out");
    let (iso, sha) = uki_iso(&f.store, &f.core_image, out.to_str().unwrap());

    // UEFI only, and no GRUB, menu or loose kernel in the ISO.
    let report = xorriso_report(&iso);
    assert!(
        report.contains("El Torito boot img :   1  UEFI"),
        "{report}"
    );
    assert!(!report.contains("BIOS"), "{report}");
    let listing = run_ok(
        "xorriso",
        &["-indev", iso.to_str().unwrap(), "-find", "/", "-type", "f"],
    );
    // The ESP (48 MiB, too big for El Torito to size) is in the volume;
    // besides it, only the live root and the volume's id files.
    let files: Vec<&str> = listing
        .lines()
        .map(|l| l.trim_matches('\''))
        .filter(|l| l.starts_with('/') && !l.starts_with("/.disk/kbuild-"))
        .collect();
    assert_eq!(
        files,
        ["/.disk/info", "/boot/efi.img", "/live/filesystem.squashfs"],
        "{listing}"
    );
    assert!(iso.to_str().unwrap().ends_with("-uki.iso"), "{iso:?}");

    // The ESP: one file, the UKI, signed by the db key.
    let esp = format!("{}@@{}", iso.display(), esp_offset(&iso));
    let on_esp = Command::new("mdir")
        .args(["-i", &esp, "-/", "-b", "::"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    let on_esp = String::from_utf8_lossy(&on_esp.stdout).into_owned();
    let esp_files: Vec<&str> = on_esp.lines().filter(|l| !l.ends_with('/')).collect();
    assert_eq!(esp_files, ["::/EFI/BOOT/BOOTX64.EFI"], "{on_esp}");
    let uki = dir.path().join("BOOTX64.EFI");
    let copied = Command::new("mcopy")
        .args(["-i", &esp, "::/EFI/BOOT/BOOTX64.EFI"])
        .arg(&uki)
        .env("MTOOLS_SKIP_CHECK", "1")
        .status()
        .unwrap();
    assert!(copied.success());
    run_ok(
        "sbverify",
        &["--cert", cert.to_str().unwrap(), uki.to_str().unwrap()],
    );

    assert_refused("uki-iso-ms-keys", &iso, "cdrom", None);

    // The UKI with one bit of its kernel flipped, written back into a
    // copy of the ISO's ESP.
    flip_a_kernel_bit(&uki);
    let tampered_iso = dir.path().join("tampered.iso");
    fs::copy(&iso, &tampered_iso).unwrap();
    let tampered_esp = format!("{}@@{}", tampered_iso.display(), esp_offset(&tampered_iso));
    let written = Command::new("mcopy")
        .args(["-o", "-i", &tampered_esp])
        .arg(&uki)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .env("MTOOLS_SKIP_CHECK", "1")
        .status()
        .unwrap();
    assert!(written.success());
    assert_ne!(
        common::sha256_hex(&fs::read(&tampered_iso).unwrap()),
        sha.trim_start_matches("sha256 ")
    );
    assert_refused("uki-iso-tampered", &tampered_iso, "cdrom", Some(&vars));
    fs::remove_file(&tampered_iso).unwrap();

    let printed = boots_locked_down("uki-iso-own-keys", &iso, Some(&vars));
    assert!(printed.contains("boot=live"), "cmdline: {printed}");

    // An empty store, the same image (as an OCI layout), epoch and key.
    let layout = dir.path().join("oci");
    let dest = format!("oci:{}:core", layout.display());
    let s = f.store.to_str().unwrap();
    ok(&kbuild(
        &["export", &f.core_image, &dest, "--store", s],
        &[],
    ));
    let again = dir.path().join("again");
    let (_, sha_again) = uki_iso(&dir.path().join("store"), &dest, again.to_str().unwrap());
    assert_eq!(sha, sha_again, "the same inputs and key gave two ISOs");
}

fn standard_k3s_iso_boots_and_runs_its_k3s() {
    let out = boot(
        "standard-k3s",
        &fixture().standard_iso,
        &[
            "--firmware",
            "uefi",
            "--login",
            "root:kairos",
            "--run",
            "k3s --version",
            "--expect-output",
            r"k3s version v1\.31\.4\+k3s1",
        ],
    );
    assert_booted(&out, "standard k3s ISO");
}

fn xorriso_report(iso: &Path) -> String {
    let out = Command::new("xorriso")
        .args(["-indev", iso.to_str().unwrap()])
        .args(["-report_el_torito", "plain", "-report_system_area", "plain"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn iso_has_bios_and_uefi_boot_a_gpt_esp_a_checksum_and_is_cached() {
    let f = fixture();
    let report = xorriso_report(&f.core_iso);
    assert!(
        report.contains("El Torito boot img :   1  BIOS"),
        "{report}"
    );
    assert!(
        report.contains("El Torito boot img :   2  UEFI"),
        "{report}"
    );
    assert!(
        report.contains("GPT partname local :   2  Appended2"),
        "{report}"
    );
    // The EFI System Partition type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B,
    // as xorriso prints its bytes.
    assert!(
        report.contains("28732ac11ff8d211ba4b00a0c93ec93b"),
        "{report}"
    );
    let sums = Command::new("sha256sum")
        .arg("-c")
        .arg(f.core_iso.with_extension("iso.sha256"))
        .current_dir(f.core_iso.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );

    // Unchanged inputs: nothing is made or written again (the files
    // themselves say so, not only the report).
    let untouched = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).unwrap();
        let bytes = fs::read(path).unwrap();
        (
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
            common::sha256_hex(&bytes),
        )
    };
    let sums_path = f.core_iso.with_extension("iso.sha256");
    let before = (untouched(&f.core_iso), untouched(&sums_path));
    let (p, s) = (f.project.to_str().unwrap(), f.store.to_str().unwrap());
    let out_dir = f.core_iso.parent().unwrap().to_str().unwrap().to_string();
    let report_path = f.work.join("again.json");
    let mut args = iso_args(p, s, &out_dir);
    args.extend([
        "--from",
        &f.core_image,
        "--report",
        report_path.to_str().unwrap(),
    ]);
    ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let again: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(again["parts_cached"], true, "{again}");
    assert_eq!(again["assembled"], false, "{again}");
    assert_eq!(
        (untouched(&f.core_iso), untouched(&sums_path)),
        before,
        "the ISO or its .sha256 was written again"
    );

    // An overlay changes the ISO, not its parts.
    let overlaid_dir = scratch("overlaid");
    let overlay = overlaid_dir.path().join("overlay");
    fs::create_dir_all(&overlay).unwrap();
    fs::write(
        overlay.join("cloud-config.yaml"),
        "#cloud-config\nhostname: kbuild\n",
    )
    .unwrap();
    let other = overlaid_dir.path().join("out");
    let o = other.to_str().unwrap().to_string();
    let mut args = iso_args(p, s, &o);
    args.extend([
        "--from",
        &f.core_image,
        "--overlay-iso",
        overlay.to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
    ]);
    ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let overlaid: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(overlaid["parts_cached"], true, "{overlaid}");
    assert_eq!(overlaid["assembled"], true, "{overlaid}");
    let iso = PathBuf::from(overlaid["iso"].as_str().unwrap());
    let listing = Command::new("xorriso")
        .args([
            "-indev",
            iso.to_str().unwrap(),
            "-find",
            "/",
            "-name",
            "cloud-config.yaml",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("/cloud-config.yaml"));
}

fn the_same_image_and_epoch_give_the_same_iso_from_two_empty_stores() {
    let f = fixture();
    let layout = scratch("core-oci");
    let dest = format!("oci:{}:core", layout.path().display());
    ok(&kbuild(
        &[
            "export",
            &f.core_image,
            &dest,
            "--store",
            f.store.to_str().unwrap(),
        ],
        &[],
    ));
    let mut sums = Vec::new();
    for side in ["a", "b"] {
        // Each side's store and ISO go once its sha256 is read.
        let side_dir = scratch(&format!("repro-{side}"));
        let store = side_dir.path().join("store");
        let out = side_dir.path().join("out");
        let (p, s, o) = (
            f.project.to_str().unwrap(),
            store.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        let mut args = iso_args(p, s, o);
        args.extend(["--variant", "core", "--from", &dest]);
        let printed = ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]));
        sums.push(printed.lines().nth(1).unwrap().to_string());
    }
    assert_eq!(sums[0], sums[1], "two empty stores gave two ISOs");
    // And the ISO `kbuild iso` built the image for is that same ISO.
    let built = fs::read_to_string(f.core_iso.with_extension("iso.sha256")).unwrap();
    assert!(
        built.starts_with(sums[0].trim_start_matches("sha256 ")),
        "{built} vs {}",
        sums[0]
    );
}

/// Files in `dir` (none expected after a failure).
fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn failures_are_clear_and_leave_nothing_half_written() {
    let f = fixture();
    let (p, s) = (f.project.to_str().unwrap(), f.store.to_str().unwrap());

    // A missing host tool: refused before any work, with an install hint.
    let out_dir = f.work.join("no-tools");
    let o = out_dir.to_str().unwrap().to_string();
    let mut args = iso_args(p, s, &o);
    args.extend(["--from", &f.core_image]);
    let out = kbuild(&args, &[("PATH", "/nonexistent")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("mksquashfs is not installed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    assert!(!out_dir.exists(), "the output directory was created");

    // An image that fails `kbuild check` (the bare base has no kernel).
    let out_dir = f.work.join("unchecked");
    let o = out_dir.to_str().unwrap().to_string();
    let mut args = iso_args(p, s, &o);
    args.extend(["--from", "debian:bookworm"]);
    let out = kbuild(&args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed kbuild check"),
        "{}",
        stderr(&out)
    );
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));

    // A full disk: a 16 MiB tmpfs as the output directory.
    let small = f.work.join("small");
    fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16m",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success());
    let o = small.to_str().unwrap().to_string();
    let mut args = iso_args(p, s, &o);
    args.extend(["--from", &f.core_image]);
    let out = kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]);
    let left = entries(&small);
    let _ = Command::new("umount").arg(&small).status();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("MiB free; the ISO needs about"),
        "{}",
        stderr(&out)
    );
    assert!(left.is_empty(), "left in the full directory: {left:?}");
    assert_clean(&f.store);

    // Ctrl-C while mksquashfs runs (a fresh store, so the parts are made).
    let interrupt = scratch("interrupt");
    let dest = format!("oci:{}:core", interrupt.path().join("oci").display());
    ok(&kbuild(
        &["export", &f.core_image, &dest, "--store", s],
        &[],
    ));
    let store = interrupt.path().join("store");
    let out_dir = interrupt.path().join("out");
    let (s2, o) = (store.to_str().unwrap(), out_dir.to_str().unwrap());
    let mut args = iso_args(p, s2, o);
    args.extend(["--from", &dest]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pattern = format!("mksquashfs .*{}", store.display());
    loop {
        let found = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        if found.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "mksquashfs never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "kbuild ended before mksquashfs ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let still = Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    assert!(!still.status.success(), "mksquashfs still runs");
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));
    assert_clean(&store);
}

/// The body of the heredoc that writes `target` in the Alpine spec.
fn alpine_heredoc(target: &str) -> String {
    let spec = fs::read_to_string(common::root().join("images/Dockerfile.alpine")).unwrap();
    let (head, rest) = spec
        .split_once(&format!("cat > {target} <<'"))
        .unwrap_or_else(|| panic!("{target} is not written by images/Dockerfile.alpine"));
    let _ = head;
    let (delimiter, rest) = rest.split_once("'\n").unwrap();
    let (body, _) = rest.split_once(&format!("\n{delimiter}\n")).unwrap();
    format!("{body}\n")
}

fn alpine_live_init_boots_the_debian_squashfs() {
    let f = fixture();
    let context = f.work.join("alpine-init");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("live-init"),
        alpine_heredoc("/usr/share/kbuild/live-init"),
    )
    .unwrap();
    fs::write(
        context.join("kbuild-live.modules"),
        alpine_heredoc("/etc/mkinitfs/features.d/kbuild-live.modules"),
    )
    .unwrap();
    fs::copy("/bin/busybox", context.join("busybox")).unwrap();
    // The initrd: the Alpine init as /init, busybox-static, and the
    // modules the Alpine feature file names with their dependencies (what
    // mkinitfs packs), from the Debian kernel.
    let spec = format!(
        r#"FROM {image}
COPY live-init kbuild-live.modules busybox /kbuild-alpine/
RUN <<'EOF'
set -eu
kver="$(ls /usr/lib/modules | sort -V | tail -n 1)"
w=/tmp/alpine-initrd
mkdir -p "$w/bin" "$w/lib/modules/$kver"
cp /kbuild-alpine/busybox "$w/bin/busybox"
cp /kbuild-alpine/live-init "$w/init"
chmod 0755 "$w/bin/busybox" "$w/init"
cd "/usr/lib/modules/$kver"
while read -r pattern; do
    for path in $pattern; do
        [ -e "$path" ] && cp -a --parents "$path" "$w/lib/modules/$kver/"
    done
done < /kbuild-alpine/kbuild-live.modules
# Their dependencies too, as mkinitfs adds them (modules.dep is transitive).
find "$w/lib/modules/$kver" -name '*.ko*' | sed "s|^$w/lib/modules/$kver/||" > /tmp/listed
while read -r module; do
    grep "^$module:" modules.dep | cut -d: -f2 | tr ' ' '\n'
done < /tmp/listed | sort -u | while read -r dependency; do
    [ -n "$dependency" ] && cp -a --parents "$dependency" "$w/lib/modules/$kver/"
done
rm -f /tmp/listed
cp -a modules.order modules.builtin modules.builtin.modinfo "$w/lib/modules/$kver/"
depmod -b "$w" "$kver"
cd "$w"
find . | sort | cpio --quiet -o -H newc > /boot/initrd-alpine-live
ln -sfn initrd-alpine-live /boot/initrd
rm -rf "$w" /kbuild-alpine
EOF
"#,
        image = f.core_image
    );
    fs::write(context.join("Dockerfile"), spec).unwrap();
    let s = f.store.to_str().unwrap();
    ok(&kbuild(
        &[
            "build",
            "--store",
            s,
            "-t",
            "kbuild.test/alpine-init-on-debian:1",
            context.to_str().unwrap(),
        ],
        &[],
    ));
    let out_dir = scratch("alpine-out");
    let out_dir = out_dir.path();
    let (p, o) = (f.project.to_str().unwrap(), out_dir.to_str().unwrap());
    let args = vec![
        "iso",
        "--project",
        p,
        "--store",
        s,
        "-o",
        o,
        "--flavor",
        "alpine",
        "--arch",
        "amd64",
        "--from",
        "kbuild.test/alpine-init-on-debian:1",
        "--skip-check",
        "--name",
        "alpine-init-on-debian",
    ];
    let printed = ok(&kbuild(&args, &[]));
    let iso = PathBuf::from(printed.lines().next().unwrap());
    let out = boot(
        "alpine-init",
        &iso,
        &[
            "--login",
            "root:kairos",
            "--run",
            "cat /proc/cmdline; findmnt -n -o FSTYPE /",
            "--expect-output",
            r"(?s)root=live:CDLABEL=KBUILD kbuild\.live\.squashfs=/live/filesystem\.squashfs.*overlay",
        ],
    );
    assert_booted(&out, "the Alpine live init");
}

/// The suite, then the shared fixture's files (a static is never dropped,
/// so its temporary directory is removed here).
fn main() -> std::process::ExitCode {
    let code = common::harness::main(vec![
        (
            "core_iso_boots_from_a_seabios_cd_and_is_the_composed_core",
            Needs::root_and(TOOLS),
            core_iso_boots_from_a_seabios_cd_and_is_the_composed_core as fn(),
        ),
        (
            "core_iso_boots_from_an_ovmf_cd",
            Needs::root_and(TOOLS),
            core_iso_boots_from_an_ovmf_cd as fn(),
        ),
        (
            "core_iso_boots_from_a_seabios_usb_disk",
            Needs::root_and(TOOLS),
            core_iso_boots_from_a_seabios_usb_disk as fn(),
        ),
        (
            "core_iso_boots_from_an_ovmf_usb_disk",
            Needs::root_and(TOOLS),
            core_iso_boots_from_an_ovmf_usb_disk as fn(),
        ),
        (
            "core_iso_boots_with_secure_boot_enforced",
            Needs::root_and(TOOLS),
            core_iso_boots_with_secure_boot_enforced as fn(),
        ),
        (
            "core_iso_is_refused_by_secure_boot_without_its_signers_key",
            Needs::root_and(OWN_KEY_TOOLS),
            core_iso_is_refused_by_secure_boot_without_its_signers_key as fn(),
        ),
        (
            "a_signed_uki_boots_under_secure_boot_with_its_own_keys_only",
            Needs::root_and(UKI_TOOLS),
            a_signed_uki_boots_under_secure_boot_with_its_own_keys_only as fn(),
        ),
        (
            "a_signed_uki_iso_boots_under_secure_boot_with_its_own_keys_only",
            Needs::root_and(UKI_TOOLS),
            a_signed_uki_iso_boots_under_secure_boot_with_its_own_keys_only as fn(),
        ),
        (
            "standard_k3s_iso_boots_and_runs_its_k3s",
            Needs::root_and(TOOLS),
            standard_k3s_iso_boots_and_runs_its_k3s as fn(),
        ),
        (
            "iso_has_bios_and_uefi_boot_a_gpt_esp_a_checksum_and_is_cached",
            Needs::root_and(TOOLS),
            iso_has_bios_and_uefi_boot_a_gpt_esp_a_checksum_and_is_cached as fn(),
        ),
        (
            "the_same_image_and_epoch_give_the_same_iso_from_two_empty_stores",
            Needs::root_and(TOOLS),
            the_same_image_and_epoch_give_the_same_iso_from_two_empty_stores as fn(),
        ),
        (
            "failures_are_clear_and_leave_nothing_half_written",
            Needs::root_and(TOOLS),
            failures_are_clear_and_leave_nothing_half_written as fn(),
        ),
        (
            "alpine_live_init_boots_the_debian_squashfs",
            Needs::root_and(ALPINE_TOOLS),
            alpine_live_init_boots_the_debian_squashfs as fn(),
        ),
    ]);
    if let Some(Ok(fixture)) = FIXTURE.get() {
        let _ = fs::remove_dir_all(&fixture.work);
    }
    code
}
