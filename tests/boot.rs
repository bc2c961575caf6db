//! The KVM probe's firmware run by a real QEMU, under TCG so that it runs
//! on any host: the image built in code really executes and prints its
//! marker through the same probe `kbuild boot` uses.

mod common;

use std::time::Duration;

use common::harness::Needs;
use kbuild::boot::{probe_guest, Accelerator};
use kbuild::tools::{locate, QEMU_X86_64};

const QEMU: Needs = Needs {
    root: false,
    tools: &["qemu-system-x86_64"],
};

fn the_probe_firmware_prints_its_marker_under_tcg() {
    let qemu = locate(&QEMU_X86_64).unwrap();
    let took = probe_guest(&qemu.path, Accelerator::Tcg, Duration::from_secs(30))
        .unwrap_or_else(|failure| panic!("the probe guest failed: {failure:?}"));
    assert!(took < Duration::from_secs(30), "{took:?}");
}

tests!(the_probe_firmware_prints_its_marker_under_tcg: QEMU);
