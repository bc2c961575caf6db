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

tests!(
    the_probe_firmware_prints_its_marker_under_tcg: QEMU_X86,
    the_aarch64_probe_firmware_prints_its_marker_on_the_virt_machine: QEMU_ARM,
);
