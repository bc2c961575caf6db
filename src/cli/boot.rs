//! `kbuild boot`: an ISO in QEMU on a serial console.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{cancel_on_signals, progress, UsageError};
use crate::boot::{boot, BootRequest, Firmware, Media, LOGIN_PROMPT};

/// Boot an ISO in QEMU (KVM when /dev/kvm works, else TCG with -cpu max)
/// with its serial console on this terminal, and exit 0 when the expected
/// text appears (default: a login prompt), 1 on timeout with the last
/// console lines. With --login and --run, log in on the console, run a
/// command and check its output. The guest has no network.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The ISO to boot.
    iso: PathBuf,
    /// bios: SeaBIOS; uefi: OVMF; uefi-secure: OVMF enforcing Secure Boot
    /// with Microsoft's keys (or --vars).
    #[arg(long, value_enum, default_value_t = FirmwareArg::Bios)]
    firmware: FirmwareArg,
    /// The UEFI variable store to start from (copied, never written),
    /// e.g. one with your own db enrolled; with --firmware uefi[-secure].
    #[arg(long, value_name = "FILE")]
    vars: Option<PathBuf>,
    /// Attach the ISO as a CD-ROM or as a USB stick.
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
    if args.vars.is_some() && matches!(args.firmware, FirmwareArg::Bios) {
        return Err(UsageError(
            "--vars is a UEFI variable store: use it with --firmware uefi or uefi-secure".into(),
        )
        .into());
    }
    let request = BootRequest {
        iso: args.iso.clone(),
        vars: args.vars.clone(),
        firmware: match args.firmware {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::Uefi,
            FirmwareArg::UefiSecure => Firmware::UefiSecure,
        },
        media: match args.media {
            MediaArg::Cdrom => Media::Cdrom,
            MediaArg::Usb => Media::Usb,
        },
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
    };
    let cancel = cancel_on_signals()?;
    let report = boot(&request, &cancel)
        .with_context(|| format!("booting {} failed", args.iso.display()))?;
    eprintln!(
        "\nboot      matched {:?} after {:.0}s ({})",
        report.matched.trim(),
        report.seconds_to_match,
        report.accelerator
    );
    if let Some(output) = &report.output {
        print!("{output}");
    }
    Ok(())
}
