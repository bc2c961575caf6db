//! `kbuild check --rootfs` on root filesystem fixtures made here (no root
//! needed): a systemd (Debian-shaped) and an OpenRC (Alpine-shaped) image
//! pass; each missing component fails the check naming it, with the
//! flavor's install hint; an empty root reports everything at once; a
//! kernel link out of the root or in a loop is reported, never followed.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Output;

const KVER: &str = "6.1.0-26-amd64";

fn kbuild(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(args)
        .current_dir(common::root())
        .output()
        .expect("run kbuild")
}

fn put(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
}

fn put_exec(root: &Path, rel: &str) {
    put(root, rel, b"#!/bin/sh\n");
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(0o755)).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _ = fs::remove_file(&path);
    symlink(target, path).unwrap();
}

/// The x86 boot header with a version string, as `kbuild check` reads it.
fn bzimage(version: &str) -> Vec<u8> {
    let mut image = vec![0u8; 0x1000];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x20E..0x210].copy_from_slice(&0x400u16.to_le_bytes());
    let text = format!("{version} (debian-kernel@lists.debian.org) #1 SMP\0");
    image[0x600..0x600 + text.len()].copy_from_slice(text.as_bytes());
    image
}

fn gzip_cpio() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b"070701000000010000").unwrap();
    gz.finish().unwrap()
}

const KAIROS_RELEASE: &str = "KAIROS_ID=\"kairos\"\nKAIROS_ID_LIKE=\"kairos-standard-debian-12\"\nKAIROS_NAME=\"kairos-standard-debian-12\"\nKAIROS_VERSION=\"v3.2.4\"\nKAIROS_RELEASE=\"v3.2.4\"\nKAIROS_ARCH=\"amd64\"\nKAIROS_TARGETARCH=\"amd64\"\nKAIROS_FLAVOR=\"debian\"\nKAIROS_FLAVOR_RELEASE=\"12\"\nKAIROS_FAMILY=\"debian\"\nKAIROS_MODEL=\"generic\"\nKAIROS_VARIANT=\"standard\"\nKAIROS_HOME_URL=\"https://github.com/kairos-io/kairos\"\nKAIROS_BUG_REPORT_URL=\"https://github.com/kairos-io/kairos/issues\"\nKAIROS_SOFTWARE_VERSION=\"v1.31.4+k3s1\"\nKAIROS_SOFTWARE_VERSION_PREFIX=\"k3s\"\n";

/// A Debian-shaped standard image with k3s: merged /usr, systemd.
fn debian_root(root: &Path) {
    link(root, "lib", "usr/lib");
    link(root, "bin", "usr/bin");
    link(root, "sbin", "usr/sbin");
    put_exec(root, "usr/lib/systemd/systemd");
    link(root, "usr/sbin/init", "/lib/systemd/systemd");
    put(root, &format!("boot/vmlinuz-{KVER}"), &bzimage(KVER));
    link(root, "boot/vmlinuz", &format!("vmlinuz-{KVER}"));
    put(root, &format!("boot/initrd.img-{KVER}"), &gzip_cpio());
    link(root, "boot/initrd", &format!("initrd.img-{KVER}"));
    put(root, &format!("usr/lib/modules/{KVER}/modules.dep"), b"");
    for f in ["normal.mod", "cdboot.img", "boot_hybrid.img"] {
        put(root, &format!("usr/lib/grub/i386-pc/{f}"), b"grub");
    }
    put(root, "usr/lib/grub/x86_64-efi/normal.mod", b"grub");
    put_exec(root, "usr/bin/grub-mkimage");
    put_exec(root, "usr/bin/rsync");
    put(root, "etc/kairos-release", KAIROS_RELEASE.as_bytes());
    put(root, "etc/machine-id", b"");
    put(root, "etc/ssh/sshd_config", b"");
    put_exec(root, "system/providers/agent-provider-kairos");
    put_exec(root, "usr/bin/k3s");
}

/// An Alpine-shaped core image: busybox init starting OpenRC, /lib/modules.
fn alpine_root(root: &Path) {
    put_exec(root, "bin/busybox");
    link(root, "sbin/init", "/bin/busybox");
    put_exec(root, "sbin/openrc");
    put(root, "boot/vmlinuz-lts", &bzimage("6.6.58-0-lts"));
    link(root, "boot/vmlinuz", "vmlinuz-lts");
    put(root, "boot/initramfs-lts", &gzip_cpio());
    link(root, "boot/initrd", "initramfs-lts");
    put(root, "lib/modules/6.6.58-0-lts/modules.dep", b"");
    for f in ["normal.mod", "cdboot.img", "boot_hybrid.img"] {
        put(root, &format!("usr/lib/grub/i386-pc/{f}"), b"grub");
    }
    put(root, "usr/lib/grub/x86_64-efi/normal.mod", b"grub");
    put_exec(root, "usr/bin/grub-mkimage");
    put_exec(root, "usr/bin/rsync");
    put(
        root,
        "etc/kairos-release",
        KAIROS_RELEASE
            .replace("debian", "alpine")
            .replace("\"12\"", "\"3.20\"")
            .as_bytes(),
    );
    put(root, "etc/machine-id", b"");
}

fn check(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "check",
        "--rootfs",
        root.to_str().unwrap(),
        "--arch",
        "amd64",
    ];
    args.extend_from_slice(extra);
    kbuild(&args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DEBIAN_STANDARD: &[&str] = &[
    "--flavor",
    "debian",
    "--variant",
    "standard",
    "--k8s",
    "k3s",
];

#[test]
fn a_systemd_and_an_openrc_image_pass() {
    let dir = tempfile::tempdir().unwrap();
    debian_root(dir.path());
    let out = check(dir.path(), DEBIAN_STANDARD);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("Systemd (/sbin/init -> /usr/lib/systemd/systemd)"),
        "{shown}"
    );
    assert!(shown.contains(&format!("({KVER})")), "{shown}");

    let alpine = tempfile::tempdir().unwrap();
    alpine_root(alpine.path());
    let out = check(alpine.path(), &["--flavor", "alpine", "--variant", "core"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Openrc"), "{}", text(&out));
}

/// What to break, how, the component that must fail, text of its hint.
type BrokenCase = (&'static str, fn(&Path), &'static str, &'static str);

#[test]
fn each_missing_component_fails_with_its_name_and_hint() {
    let cases: &[BrokenCase] = &[
        (
            "init",
            |r| fs::remove_file(r.join("usr/lib/systemd/systemd")).unwrap(),
            "init",
            "systemd-sysv",
        ),
        (
            "kernel",
            |r| fs::remove_file(r.join(format!("boot/vmlinuz-{KVER}"))).unwrap(),
            "kernel",
            "linux-image-amd64",
        ),
        (
            "modules",
            |r| fs::remove_dir_all(r.join("usr/lib/modules")).unwrap(),
            "modules",
            "linux-image-amd64",
        ),
        (
            "initrd",
            |r| fs::remove_file(r.join(format!("boot/initrd.img-{KVER}"))).unwrap(),
            "initrd",
            "update-initramfs",
        ),
        (
            "grub-bios",
            |r| fs::remove_dir_all(r.join("usr/lib/grub/i386-pc")).unwrap(),
            "grub-bios",
            "grub-pc-bin",
        ),
        (
            "grub-efi",
            |r| fs::remove_dir_all(r.join("usr/lib/grub/x86_64-efi")).unwrap(),
            "grub-efi",
            "grub-efi-amd64-bin",
        ),
        (
            "rsync",
            |r| fs::remove_file(r.join("usr/bin/rsync")).unwrap(),
            "rsync",
            "apt-get install -y --no-install-recommends rsync",
        ),
        (
            "kairos-release",
            |r| fs::remove_file(r.join("etc/kairos-release")).unwrap(),
            "kairos-release",
            "kbuild image",
        ),
        (
            "provider",
            |r| fs::remove_file(r.join("system/providers/agent-provider-kairos")).unwrap(),
            "provider",
            "--variant standard",
        ),
        (
            "k3s",
            |r| fs::remove_file(r.join("usr/bin/k3s")).unwrap(),
            "k8s",
            "--variant standard",
        ),
    ];
    for (what, break_it, component, hint) in cases {
        let dir = tempfile::tempdir().unwrap();
        debian_root(dir.path());
        break_it(dir.path());
        let out = check(dir.path(), DEBIAN_STANDARD);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {shown}");
        let fail_line = shown
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("FAIL  {component} ")))
            .unwrap_or_else(|| panic!("{what}: no FAIL line for {component}:\n{shown}"));
        let after = shown.split(fail_line).nth(1).unwrap();
        let hint_line = after.lines().nth(1).unwrap_or_default();
        assert!(
            hint_line.contains("hint:") && hint_line.contains(hint),
            "{what}: hint for {component} should mention {hint}:\n{shown}"
        );
        assert_eq!(
            shown.matches("FAIL").count(),
            1,
            "{what}: only {component} should fail:\n{shown}"
        );
    }
}

#[test]
fn baked_identity_and_a_second_kernel_fail() {
    let dir = tempfile::tempdir().unwrap();
    debian_root(dir.path());
    put(
        dir.path(),
        "etc/machine-id",
        b"0123456789abcdef0123456789abcdef\n",
    );
    put(dir.path(), "etc/ssh/ssh_host_ed25519_key", b"secret");
    put(
        dir.path(),
        "usr/lib/modules/6.1.0-25-amd64/modules.dep",
        b"",
    );
    let out = check(dir.path(), DEBIAN_STANDARD);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    for component in ["machine-id", "ssh-host-keys", "modules"] {
        assert!(
            shown.contains(&format!("FAIL  {component} ")),
            "{component}:\n{shown}"
        );
    }
    assert!(shown.contains("holds 2 kernels"), "{shown}");
}

#[test]
fn an_empty_root_reports_everything_at_once_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        &["--variant", "standard", "--k8s", "k0s", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    let failed: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == false)
        .map(|f| f["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "init",
            "kernel",
            "modules",
            "initrd",
            "grub-bios",
            "grub-efi",
            "grub-mkimage",
            "rsync",
            "kairos-release",
            "machine-id",
            "provider",
            "k8s"
        ]
    );
}

#[test]
fn kernel_links_out_of_the_root_or_in_a_loop_are_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    debian_root(&root);
    // Beside the root, a "kernel" the link would reach if it were followed.
    fs::write(dir.path().join("host-kernel"), bzimage(KVER)).unwrap();
    link(&root, "boot/vmlinuz", "../../host-kernel");
    let out = check(&root, DEBIAN_STANDARD);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("points outside the image root"), "{shown}");

    link(&root, "boot/vmlinuz", "vmlinuz-loop");
    link(&root, "boot/vmlinuz-loop", "vmlinuz");
    let out = check(&root, DEBIAN_STANDARD);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("is a symlink loop"), "{shown}");
}

#[test]
fn usage_errors_exit_2() {
    let out = kbuild(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &["--flavor", "gentoo"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("unknown flavor \"gentoo\""),
        "{}",
        text(&out)
    );
}

#[test]
fn an_initrd_made_for_another_kernel_fails() {
    let dir = tempfile::tempdir().unwrap();
    debian_root(dir.path());
    put(dir.path(), "boot/initrd.img-6.1.0-25-amd64", &gzip_cpio());
    link(dir.path(), "boot/initrd", "initrd.img-6.1.0-25-amd64");
    let out = check(dir.path(), DEBIAN_STANDARD);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(&format!("is for kernel 6.1.0-25-amd64, not {KVER}")),
        "{shown}"
    );
}

/// A PE32+ file whose certificate table is `size` bytes at its end.
fn pe(size: u32) -> Vec<u8> {
    let mut image = vec![0u8; 0x400];
    image[..2].copy_from_slice(b"MZ");
    image[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    image[0x80..0x84].copy_from_slice(b"PE\0\0");
    let optional = 0x80 + 24;
    image[optional..optional + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    image[optional + 108..optional + 112].copy_from_slice(&16u32.to_le_bytes());
    let entry = optional + 112 + 4 * 8;
    image[entry..entry + 4].copy_from_slice(&0x300u32.to_le_bytes());
    image[entry + 4..entry + 8].copy_from_slice(&size.to_le_bytes());
    image
}

#[test]
fn the_signed_boot_chain_is_checked_as_warnings_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    debian_root(root);
    // No shim, no signed GRUB, an unsigned kernel: the check passes with
    // three warnings, each with the flavor's Secure Boot hint.
    let out = check(root, DEBIAN_STANDARD);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for component in ["signed-shim", "signed-grub", "signed-kernel"] {
        assert!(
            shown
                .lines()
                .any(|l| l.contains("warn") && l.contains(component)),
            "{component}: {shown}"
        );
    }
    assert!(shown.contains("hint: apt-get install -y --no-install-recommends shim-signed"));

    put(root, "usr/lib/shim/shimx64.efi.signed", &pe(0x100));
    put(
        root,
        "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
        &pe(0x100),
    );
    let out = check(root, &[DEBIAN_STANDARD, &["--format", "json"]].concat());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let finding = |name: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["component"] == name)
            .unwrap()
            .clone()
    };
    for signed in ["signed-shim", "signed-grub"] {
        assert_eq!(finding(signed)["ok"], true, "{report}");
        assert!(finding(signed).get("warning").is_none(), "{report}");
    }
    // The fixture's kernel is a bare boot header, no PE: still a warning.
    assert_eq!(finding("signed-kernel")["warning"], true, "{report}");
    assert_eq!(report["passed"], true);
}
