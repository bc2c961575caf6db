//! `kbuild boot`: an ISO in QEMU on a serial console.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{cancel_on_signals, progress, UsageError};
use crate::boot::{boot, AccelChoice, BootRequest, Firmware, Media, LOGIN_PROMPT};
use crate::project::Arch;

/// The environment's default for `--accel`.
const ACCEL_VARIABLE: &str = "KBUILD_ACCEL";

/// Boot an ISO in QEMU (KVM when a probe guest executes under it, else
/// TCG with -cpu max; see --accel) with its serial console on this
/// terminal, and exit 0 when the expected text appears (default: a login
/// prompt), 1 on timeout with the last console lines. With --login and
/// --run, log in on the console, run a command and check its output. The
/// guest has no network, except a netboot guest (--netboot).
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The ISO (or, with --media disk, the disk image) to boot.
    #[arg(required_unless_present = "netboot", conflicts_with = "netboot")]
    iso: Option<PathBuf>,
    /// Boot a `kbuild netboot` set instead (amd64): the NIC's iPXE (virtio,
    /// QEMU's user-mode network) loads a chain script from an HTTP server
    /// kbuild runs on 127.0.0.1 for DIR, which sets base-url to that server
    /// and chains the set's script. The guest can reach what the host
    /// reaches; run it under `unshare -n` to keep it to this machine.
    #[arg(long, value_name = "DIR", conflicts_with = "media")]
    netboot: Option<PathBuf>,
    /// The ISO's architecture (default: the machine of its EFI loader,
    /// else the host's):
    /// amd64 boots qemu-system-x86_64 -M q35, arm64 qemu-system-aarch64
    /// -M virt (under TCG on another host architecture).
    #[arg(long, value_enum)]
    arch: Option<super::ArchArg>,
    /// bios: SeaBIOS (amd64); uefi: OVMF or AAVMF; uefi-secure: the same
    /// enforcing Secure Boot with Microsoft's keys (or --vars). Default:
    /// bios for amd64, uefi for arm64.
    #[arg(long, value_enum)]
    firmware: Option<FirmwareArg>,
    /// The UEFI variable store to start from (copied, never written),
    /// e.g. one with your own db enrolled; with --firmware uefi[-secure].
    #[arg(long, value_name = "FILE")]
    vars: Option<PathBuf>,
    /// Attach the ISO as a CD-ROM or as a USB stick, or a disk image
    /// (`kbuild disk`, raw or qcow2) as a virtio disk (the guest's writes
    /// go to a temporary overlay, never to the file).
    #[arg(long, value_enum, default_value_t = MediaArg::Cdrom)]
    media: MediaArg,
    /// Seconds to wait for everything expected, boot included.
    #[arg(long, value_name = "S", default_value_t = 600)]
    timeout: u64,
    /// What the console must show (a regular expression).
    #[arg(long, value_name = "REGEX", default_value = LOGIN_PROMPT)]
    expect: String,
    /// Log in on the console after --expect matched.
    #[arg(long, value_name = "USER:PASS")]
    login: Option<String>,
    /// Run this command after logging in (needs --login).
    #[arg(long, value_name = "CMD", requires = "login")]
    run: Option<String>,
    /// The command's output must match this (else it must exit 0).
    #[arg(long, value_name = "REGEX", requires = "run")]
    expect_output: Option<String>,
    /// Write the whole console to this file.
    #[arg(long, value_name = "FILE")]
    serial_log: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    memory: u32,
    /// auto: KVM if a probe guest executes under it, else TCG; kvm, tcg:
    /// that one, without the probe. Default: $KBUILD_ACCEL, else auto.
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FirmwareArg {
    Bios,
    Uefi,
    UefiSecure,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MediaArg {
    Cdrom,
    Usb,
    Disk,
}

/// `--accel`, else `KBUILD_ACCEL` (unset or empty: auto).
fn accel_choice(flag: Option<AccelArg>, env: Option<OsString>) -> Result<AccelChoice, UsageError> {
    let arg = match (flag, env) {
        (Some(arg), _) => arg,
        (None, Some(value)) if !value.is_empty() => value
            .to_str()
            .and_then(|text| AccelArg::from_str(text, true).ok())
            .ok_or_else(|| {
                UsageError(format!(
                    "{ACCEL_VARIABLE}={value:?} is not an accelerator: use auto, kvm or tcg"
                ))
            })?,
        (None, _) => AccelArg::Auto,
    };
    Ok(match arg {
        AccelArg::Auto => AccelChoice::Auto,
        AccelArg::Kvm => AccelChoice::Kvm,
        AccelArg::Tcg => AccelChoice::Tcg,
    })
}

fn regex(flag: &str, text: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(text)
        .map_err(|e| UsageError(format!("{flag} is not a regular expression: {e}")).into())
}

pub fn run(args: BootArgs) -> anyhow::Result<()> {
    let login = args
        .login
        .as_deref()
        .map(|text| {
            text.split_once(':')
                .map(|(user, password)| (user.to_string(), password.to_string()))
                .ok_or_else(|| UsageError("--login takes USER:PASS".into()))
        })
        .transpose()?;
    // A medium without an EFI loader (BIOS only) boots on this host's kind.
    let host_arch = Arch::parse(&crate::platform::Platform::host().arch).unwrap_or(Arch::Amd64);
    let (medium, media) = match (&args.iso, &args.netboot) {
        (_, Some(dir)) => (dir.clone(), Media::Net),
        (Some(iso), None) => (
            iso.clone(),
            match args.media {
                MediaArg::Cdrom => Media::Cdrom,
                MediaArg::Usb => Media::Usb,
                MediaArg::Disk => Media::Disk,
            },
        ),
        (None, None) => unreachable!("clap requires one"),
    };
    let arch = match args.arch {
        Some(arch) => arch.into(),
        None if media == Media::Net => host_arch,
        // A missing ISO is boot()'s error to report.
        None if medium.is_file() && crate::boot::image_format(&medium) == "raw" => {
            crate::boot::iso_arch(&medium)?.unwrap_or(host_arch)
        }
        None => host_arch,
    };
    let firmware = args.firmware.unwrap_or(match arch {
        Arch::Amd64 => FirmwareArg::Bios,
        Arch::Arm64 => FirmwareArg::Uefi,
    });
    if args.vars.is_some() && matches!(firmware, FirmwareArg::Bios) {
        return Err(UsageError(
            "--vars is a UEFI variable store: use it with --firmware uefi or uefi-secure".into(),
        )
        .into());
    }
    let request = BootRequest {
        iso: medium.clone(),
        arch,
        vars: args.vars.clone(),
        firmware: match firmware {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::Uefi,
            FirmwareArg::UefiSecure => Firmware::UefiSecure,
        },
        media,
        timeout: Duration::from_secs(args.timeout),
        expect: regex("--expect", &args.expect)?,
        login,
        run: args.run.clone(),
        expect_output: args
            .expect_output
            .as_deref()
            .map(|r| regex("--expect-output", r))
            .transpose()?,
        serial_log: args.serial_log.clone(),
        show_console: progress::mode() != progress::Mode::Quiet,
        memory_mib: args.memory,
        accel: accel_choice(args.accel, std::env::var_os(ACCEL_VARIABLE))?,
    };
    let cancel = cancel_on_signals()?;
    let report =
        boot(&request, &cancel).with_context(|| format!("booting {} failed", medium.display()))?;
    eprintln!(
        "\nboot      matched {:?} after {:.0}s ({}: {})",
        report.matched.trim(),
        report.seconds_to_match,
        report.accelerator,
        report.accelerator_reason
    );
    if let Some(output) = &report.output {
        print!("{output}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_kbuild_accel_which_must_name_an_accelerator() {
        let env = |text: &str| Some(OsString::from(text));
        assert_eq!(accel_choice(None, None).unwrap(), AccelChoice::Auto);
        assert_eq!(accel_choice(None, env("")).unwrap(), AccelChoice::Auto);
        assert_eq!(accel_choice(None, env("TCG")).unwrap(), AccelChoice::Tcg);
        assert_eq!(
            accel_choice(Some(AccelArg::Kvm), env("tcg")).unwrap(),
            AccelChoice::Kvm
        );
        assert_eq!(
            accel_choice(Some(AccelArg::Tcg), env("bogus")).unwrap(),
            AccelChoice::Tcg
        );
        let err = accel_choice(None, env("hvf")).unwrap_err();
        assert!(err.to_string().starts_with("KBUILD_ACCEL=\"hvf\""), "{err}");
    }
}
