//! `kbuild disk`: a cell's image as a bootable GPT disk image.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::image::show_failed_check;
use super::medium::MediumArgs;
use super::progress::summary;
use super::progress::CliReporter;
use super::{cancel_on_signals, write_report, UsageError};
use crate::disk::{build_disk, DiskError, DiskFirmware, DiskFormat, DiskReport, DiskRequest};
use crate::iso::IsoError;

/// Build (or reuse) a cell's image, exactly as `kbuild image` does, and
/// write it as a GPT disk in Kairos' layout: COS_GRUB (the EFI system
/// partition) or a BIOS boot partition or both, COS_OEM (ext2, with
/// --cloud-config as 90_custom.yaml) and COS_RECOVERY (ext2, the live
/// system: kernel, initrd, squashfs and GRUB's menu); the framework makes
/// COS_STATE and COS_PERSISTENT at first boot from the space after them.
/// Written as files (mtools, mke2fs, debugfs, qemu-img): no loop device,
/// no mount. Each artifact gets a .sha256; the same image and
/// SOURCE_DATE_EPOCH give the same bytes.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct DiskArgs {
    #[command(flatten)]
    medium: MediumArgs,
    /// Formats to write, comma-separated or repeated: raw, qcow2, vhd
    /// (Azure, fixed), gce (disk.raw in tar.gz, a whole GiB).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "raw")]
    format: Vec<FormatArg>,
    /// What the disk boots on [default: both on amd64, efi on arm64].
    #[arg(long, value_enum)]
    firmware: Option<FirmwareArg>,
    /// The disk's size, e.g. 8G or 2048M [default: what the partitions
    /// need]; the space after them is for COS_STATE and COS_PERSISTENT.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// A cloud-config (YAML) for COS_OEM.
    #[arg(long = "cloud-config", value_name = "FILE")]
    cloud_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Raw,
    Qcow2,
    Vhd,
    Gce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FirmwareArg {
    Efi,
    Bios,
    Both,
}

/// `8G`, `512M`, `1T` or plain bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: give a size such as 8G, 2048M or 1T")),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: give a size such as 8G, 2048M or 1T"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub fn run(args: DiskArgs) -> anyhow::Result<()> {
    let cell = &args.medium.cell;
    let project = cell.project()?;
    let iso = args.medium.request(&project)?;
    let arch = project
        .select(&iso.image.selection)
        .map_err(|e| UsageError(e.to_string()))?
        .id
        .arch;
    let firmware = match args.firmware {
        Some(FirmwareArg::Efi) => DiskFirmware::Efi,
        Some(FirmwareArg::Bios) => DiskFirmware::Bios,
        Some(FirmwareArg::Both) => DiskFirmware::Both,
        None if arch == crate::project::Arch::Amd64 => DiskFirmware::Both,
        None => DiskFirmware::Efi,
    };
    let mut formats: Vec<DiskFormat> = args
        .format
        .iter()
        .map(|f| match f {
            FormatArg::Raw => DiskFormat::Raw,
            FormatArg::Qcow2 => DiskFormat::Qcow2,
            FormatArg::Vhd => DiskFormat::Vhd,
            FormatArg::Gce => DiskFormat::Gce,
        })
        .collect();
    formats.sort();
    formats.dedup();
    let request = DiskRequest {
        iso,
        formats,
        firmware,
        size: args.size,
        cloud_config: args.cloud_config.clone(),
    };
    let store = cell.store()?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let result = build_disk(&store, &project, &request, &reporter, &cancel);
    if let Err(DiskError::Iso(IsoError::Compose(err))) = &result {
        show_failed_check(err);
    }
    let report = result?;
    render(&report);
    if let Some(path) = cell.report_path() {
        write_report(path, &report)?;
    }
    for artifact in &report.artifacts {
        println!("{}", artifact.path.display());
        println!("sha256 {}", artifact.sha256);
    }
    Ok(())
}

fn render(report: &DiskReport) {
    if let Some(built) = &report.built {
        super::image::render(built);
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let layout: Vec<String> = report
        .partitions
        .iter()
        .map(|p| {
            format!(
                "{}{} {} MiB",
                p.name,
                p.label.map(|l| format!("/{l}")).unwrap_or_default(),
                p.size >> 20
            )
        })
        .collect();
    summary!(
        "disk      {} firmware, {} MiB: {}{}",
        report.firmware.as_str(),
        report.size >> 20,
        layout.join(", "),
        report
            .efi
            .as_deref()
            .map(|e| format!(" (EFI {e})"))
            .unwrap_or_default()
    );
    for artifact in &report.artifacts {
        let state = match artifact.written {
            true => "written",
            false => "already up to date",
        };
        summary!(
            "{:<9} {} ({:.1} MiB, {state})",
            artifact.format.as_str(),
            artifact.path.display(),
            artifact.size as f64 / (1 << 20) as f64
        );
    }
    summary!("          {:.1}s", report.seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("2048M"), Ok(2048 << 20));
        assert_eq!(parse_size("2048MiB"), Ok(2048 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
