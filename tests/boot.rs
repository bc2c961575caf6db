//! The KVM probe's firmwares run by a real QEMU, under TCG so that they
//! run on any host: the images built in code really execute and print
//! their marker through the same probe `kbuild boot` uses (x86_64 on q35,
//! aarch64 on virt).

mod common;

use std::time::Duration;

use common::harness::Needs;
use kbuild::boot::{probe_guest, Accelerator};
use kbuild::project::Arch;
use kbuild::tools::{locate, Tool, QEMU_AARCH64, QEMU_X86_64};

const QEMU_X86: Needs = Needs {
    root: false,
    tools: &["qemu-system-x86_64"],
};

const QEMU_ARM: Needs = Needs {
    root: false,
    tools: &["qemu-system-aarch64"],
};

fn probe(tool: &'static Tool, arch: Arch) {
    let qemu = locate(tool).unwrap();
    let took = probe_guest(&qemu.path, Accelerator::Tcg, arch, Duration::from_secs(30))
        .unwrap_or_else(|failure| panic!("the {arch} probe guest failed: {failure:?}"));
    assert!(took < Duration::from_secs(30), "{took:?}");
}

fn the_probe_firmware_prints_its_marker_under_tcg() {
    probe(&QEMU_X86_64, Arch::Amd64);
}

fn the_aarch64_probe_firmware_prints_its_marker_on_the_virt_machine() {
    probe(&QEMU_AARCH64, Arch::Arm64);
}

const MTOOLS: Needs = Needs {
    root: false,
    tools: &["mformat", "mmd", "mcopy"],
};

/// A PE32+ header whose machine is `machine`: what `iso_arch` reads.
fn pe(machine: u16) -> Vec<u8> {
    let mut image = vec![0u8; 0x200];
    image[..2].copy_from_slice(b"MZ");
    image[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    image[0x80..0x84].copy_from_slice(b"PE\0\0");
    image[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    // No sections, an optional header of 240 bytes, PE32+.
    image[0x94..0x96].copy_from_slice(&240u16.to_le_bytes());
    image[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
    image
}

fn mtools(program: &str, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?}");
}

fn a_bare_esp_and_a_medium_without_loader_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp.img");
    std::fs::write(&esp, vec![0u8; 8 << 20]).unwrap();
    let loader = dir.path().join("loader.efi");
    std::fs::write(&loader, pe(0xAA64)).unwrap();
    let image = esp.as_os_str();
    mtools("mformat", &["-i".as_ref(), image, "::".as_ref()]);
    // BIOS-only media have no loader: the caller falls back to the host.
    assert_eq!(kbuild::boot::iso_arch(&esp).unwrap(), None);
    mtools(
        "mmd",
        &[
            "-i".as_ref(),
            image,
            "::/EFI".as_ref(),
            "::/EFI/BOOT".as_ref(),
        ],
    );
    mtools(
        "mcopy",
        &[
            "-i".as_ref(),
            image,
            loader.as_os_str(),
            "::/EFI/BOOT/BOOTAA64.EFI".as_ref(),
        ],
    );
    // A bare ESP (no GPT), as `kbuild uki` media are, is read as it is.
    assert_eq!(kbuild::boot::iso_arch(&esp).unwrap(), Some(Arch::Arm64));
}

tests!(
    a_bare_esp_and_a_medium_without_loader_are_told_apart: MTOOLS,
    the_probe_firmware_prints_its_marker_under_tcg: QEMU_X86,
    the_aarch64_probe_firmware_prints_its_marker_on_the_virt_machine: QEMU_ARM,
);
