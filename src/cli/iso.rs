//! `kbuild iso`: a cell's image as a bootable hybrid BIOS/UEFI ISO.

use std::path::PathBuf;

use clap::Args;

use super::image::show_failed_check;
use super::medium::MediumArgs;
use super::progress::summary;
use super::progress::CliReporter;
use super::{cancel_on_signals, write_report};
use crate::iso::{build_iso, IsoError, IsoReport, IsoRequest, Signer, UkiBoot};

/// Build (or reuse) a cell's image, exactly as `kbuild image` does, and
/// write it as a hybrid ISO that boots as a CD and as a USB stick, on BIOS
/// and UEFI: the live root as squashfs, the kernel and initrd, GRUB made
/// with the image's own grub-mkimage, an EFI system partition, and
/// `<iso>.sha256`. With SOURCE_DATE_EPOCH (else the image's creation time)
/// every date and id in it is fixed: the same image gives the same bytes.
/// With --uki the ISO boots UEFI only, from a unified kernel image (signed
/// with --sign-key/--sign-cert for Secure Boot with your own keys) that is
/// the only EFI binary on it.
/// Needs xorriso, mksquashfs and mtools, and osslsigncode to sign (see
/// `kbuild doctor`).
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct IsoArgs {
    #[command(flatten)]
    medium: MediumArgs,
    /// Merge the files of this directory into the ISO's root (e.g. a
    /// cloud-config); they may not replace what kbuild writes.
    #[arg(long = "overlay-iso", value_name = "DIR")]
    overlay_iso: Option<PathBuf>,
    /// Boot UEFI only, from a unified kernel image of the image (its own
    /// systemd EFI stub, kernel, initrd, os-release and command line) as
    /// EFI/BOOT/BOOTX64.EFI: no GRUB, no BIOS boot.
    #[arg(long)]
    uki: bool,
    /// Sign the UKI with this private key (PEM, e.g. db.key of `kbuild
    /// keys generate`): the ESP then holds no unsigned executable.
    #[arg(long, value_name = "KEY", requires_all = ["uki", "sign_cert"])]
    sign_key: Option<PathBuf>,
    /// The key's certificate (PEM), enrolled in the firmware's db.
    #[arg(long, value_name = "CERT", requires_all = ["uki", "sign_key"])]
    sign_cert: Option<PathBuf>,
}

pub fn run(args: IsoArgs) -> anyhow::Result<()> {
    let cell = &args.medium.cell;
    let project = cell.project()?;
    let request = IsoRequest {
        overlay: args.overlay_iso.clone(),
        uki: args.uki.then(|| UkiBoot {
            signer: args
                .sign_key
                .clone()
                .zip(args.sign_cert.clone())
                .map(|(key, cert)| Signer { key, cert }),
        }),
        ..args.medium.request(&project)?
    };
    let store = cell.store()?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let result = build_iso(&store, &project, &request, &reporter, &cancel);
    if let Err(IsoError::Compose(err)) = &result {
        show_failed_check(err);
    }
    let report = result?;
    render(&report);
    if let Some(path) = cell.report_path() {
        write_report(path, &report)?;
    }
    println!("{}", report.iso.display());
    println!("sha256 {}", report.sha256);
    Ok(())
}

fn render(report: &IsoReport) {
    if let Some(built) = &report.built {
        super::image::render(built);
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let parts = match report.parts_cached {
        true => "cached",
        false => "made",
    };
    let iso = match report.assembled {
        true => "written",
        false => "already up to date",
    };
    summary!(
        "iso       {} ({:.1} MiB, EFI {}, parts {parts}, {iso}, {:.1}s)",
        report.iso.display(),
        report.size as f64 / (1 << 20) as f64,
        report.efi,
        report.seconds
    );
}
