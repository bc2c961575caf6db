//! `kbuild boot`: an ISO, a disk image or a netboot set booted in QEMU on
//! a serial console, with expectations on what the console shows.
//!
//! ```text
//! accelerator: --accel auto (default): KVM if a probe guest of the host's
//!              architecture executes, else TCG -cpu max; --accel kvm | tcg:
//!              as asked, no probe; a foreign guest: TCG
//! qemu-system-x86_64 -M q35 | qemu-system-aarch64 -M virt, no network
//!   (a netboot set: a virtio NIC on QEMU's user-mode network, its iPXE
//!   booting a chain script from serve.rs on 127.0.0.1; amd64 only)
//!   firmware: SeaBIOS (amd64) | OVMF or AAVMF, found through QEMU's
//!             firmware descriptors (a private copy of its variable store)
//!   medium:   CD-ROM (AHCI on q35, virtio-SCSI on virt) | USB stick (xHCI
//!             mass storage), read-only | a disk image (virtio, raw or
//!             qcow2, its writes to a temporary overlay)
//!   serial:   stdio  -> console text -> [--serial-log], [stderr]
//! wait for --expect (default: a login prompt)
//! [--login U:P] type the user and password, wait for a shell prompt
//! [--run CMD]   type CMD between two markers, take its output and status
//! ```
//!
//! The KVM probe ([`probe_kvm`]) boots 64 KiB of firmware of our own, with
//! the boot's machine and CPU, that writes a marker to COM1: only a guest
//! that executes proves KVM, since under nested virtualisation `/dev/kvm`
//! opens and a KVM guest starts, yet may execute nothing.
//!
//! Invariants:
//! * QEMU gets an argument vector and a medium it cannot write (a path's
//!   commas doubled, so no path adds drive options); it is killed when the
//!   run ends, however it ends (timeout, Ctrl-C, error).
//! * The guest has no network device, except a netboot guest: QEMU's
//!   user-mode network reaches whatever the host reaches, so run a
//!   netboot that must send no traffic elsewhere in a network namespace
//!   of its own (the tests do: `unshare -n`, loopback only).
//! * A timeout is an error carrying the last console lines.
//! * Under KVM, a console silent from the start for a grace period is an
//!   error (the guest executes nothing), not a wait until the timeout.

mod accel;
mod console;
mod firmware;
mod media_arch;
mod qemu;
mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use accel::{
    probe_guest, probe_kvm, AccelChoice, Accelerator, GuestFailure, KvmVerdict, KVM_DEVICE,
    PROBE_DEADLINE,
};
pub use firmware::{find as uefi_firmware, UefiFirmware};
pub use media_arch::iso_arch;
pub use qemu::{emulator, image_format, Firmware, Media};

use crate::project::Arch;
use crate::sandbox::Cancel;
use crate::tools::ToolError;

/// The default expectation: a getty's login prompt.
pub const LOGIN_PROMPT: &str = r"\S+ login: ?";

/// Console lines kept for an error.
const TAIL_LINES: usize = 30;

#[derive(Debug, Clone)]
pub struct BootRequest {
    pub iso: PathBuf,
    /// The guest's architecture: QEMU, machine and firmware follow it.
    pub arch: Arch,
    pub firmware: Firmware,
    /// The UEFI variable store to copy instead of the firmware's default.
    pub vars: Option<PathBuf>,
    pub media: Media,
    pub timeout: Duration,
    pub expect: regex::Regex,
    /// Log in with this user and password once `expect` matched.
    pub login: Option<(String, String)>,
    /// Run this command after logging in.
    pub run: Option<String>,
    /// The command's output must match this (else its exit status must be 0).
    pub expect_output: Option<regex::Regex>,
    pub serial_log: Option<PathBuf>,
    /// Copy the console to stderr as it comes.
    pub show_console: bool,
    pub memory_mib: u32,
    pub accel: AccelChoice,
}

#[cfg(test)]
impl BootRequest {
    /// A request for the tests: `/out/a b.iso`, login prompt, 1 s.
    fn example(firmware: Firmware, media: Media) -> BootRequest {
        BootRequest {
            iso: "/out/a b.iso".into(),
            arch: Arch::Amd64,
            firmware,
            vars: None,
            media,
            timeout: Duration::from_secs(1),
            expect: regex::Regex::new(LOGIN_PROMPT).unwrap(),
            login: None,
            run: None,
            expect_output: None,
            serial_log: None,
            show_console: false,
            memory_mib: 2048,
            accel: AccelChoice::Auto,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    pub accelerator: Accelerator,
    /// Why: the probe's verdict, or that it was asked for.
    pub accelerator_reason: String,
    /// The console text that matched `expect`.
    pub matched: String,
    pub seconds_to_match: f64,
    /// The command's output and exit status, with `--run`.
    pub output: Option<String>,
    pub exit_status: Option<i32>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("no {what} firmware file found (looked for {})", looked.join(", "))]
    NoFirmware {
        what: &'static str,
        looked: Vec<String>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not an ISO file")]
    NoIso(PathBuf),
    #[error("{} must hold exactly one iPXE script (*.ipxe, from `kbuild netboot`, its name letters, digits, `.`, `_`, `-`, `+`); found {found:?}", dir.display())]
    NetbootScript { dir: PathBuf, found: Vec<String> },
    #[error(
        "--netboot boots amd64 guests only: QEMU's NIC boot ROMs are x86 iPXE builds, not {0}"
    )]
    NetbootArch(Arch),
    #[error("timed out after {}s waiting for {waiting}; last console lines:\n{}", waited.as_secs(), tail.join("\n"))]
    Timeout {
        waiting: String,
        waited: Duration,
        tail: Vec<String>,
    },
    #[error("QEMU ended ({status}) while waiting for {waiting}; last console lines:\n{}", tail.join("\n"))]
    Exited {
        status: String,
        waiting: String,
        tail: Vec<String>,
    },
    #[error("`{command}` exited with {status}; its output:\n{output}")]
    CommandFailed {
        command: String,
        status: i32,
        output: String,
    },
    #[error("the output of `{command}` does not match /{regex}/; it was:\n{output}")]
    OutputMismatch {
        command: String,
        regex: String,
        output: String,
    },
    #[error("KVM was asked for, but KVM cannot run an {guest} guest on this {host} host")]
    KvmForeign { guest: Arch, host: String },
    #[error("cannot tell which architecture {} boots: {reason}", iso.display())]
    UnknownArch { iso: PathBuf, reason: String },
    #[error("{arch} boots from UEFI only: --firmware bios is for amd64")]
    NoBios { arch: Arch },
    #[error("KVM was asked for, but {} cannot be opened read-write", device.display())]
    KvmUnavailable {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the console stayed silent for {}s under KVM: the guest seems to execute nothing", waited.as_secs())]
    SilentUnderKvm { waited: Duration },
    #[error("interrupted")]
    Cancelled,
}

impl BootError {
    pub fn hint(&self) -> Option<String> {
        match self {
            BootError::Tool(e) => e.hint().map(str::to_string),
            BootError::NoFirmware { what, .. } if what.starts_with("AAVMF") => Some(
                "install the distribution's aarch64 UEFI firmware (Debian/Ubuntu: apt-get install qemu-efi-aarch64; Fedora: dnf install edk2-aarch64)".into(),
            ),
            BootError::NoFirmware { .. } => Some(
                "install the distribution's OVMF package (Debian/Ubuntu: apt-get install ovmf; Fedora: dnf install edk2-ovmf)".into(),
            ),
            BootError::KvmForeign { .. } => Some(
                "boot under TCG with --accel tcg or --accel auto (emulation: minutes, not seconds)".into(),
            ),
            BootError::UnknownArch { .. } => Some("name it with --arch amd64 or --arch arm64".into()),
            BootError::NoBios { .. } => Some("use --firmware uefi (the default for arm64)".into()),
            BootError::Timeout { .. } => Some(
                "without KVM a live system takes minutes to boot: raise --timeout, or see the whole console with --serial-log FILE".into(),
            ),
            BootError::KvmUnavailable { .. } => Some(
                "boot under TCG with --accel tcg (or KBUILD_ACCEL=tcg), or let the probe decide with --accel auto".into(),
            ),
            BootError::SilentUnderKvm { .. } => Some(
                "this host's KVM starts guests that may never run (nested virtualisation): boot under TCG with --accel tcg (or KBUILD_ACCEL=tcg)".into(),
            ),
            _ => None,
        }
    }
}

/// Boots `request.iso` and checks the console.
pub fn boot(request: &BootRequest, cancel: &Cancel) -> Result<BootReport, BootError> {
    let started = Instant::now();
    // For a netboot set: the set's directory served on 127.0.0.1 with a
    // chain script that points the set's script at it.
    let server = match request.media {
        // QEMU's NIC option ROMs are x86 iPXE builds.
        Media::Net if request.arch != Arch::Amd64 => {
            return Err(BootError::NetbootArch(request.arch))
        }
        Media::Net => Some(netboot_server(&request.iso)?),
        _ if !request.iso.is_file() => return Err(BootError::NoIso(request.iso.clone())),
        _ => None,
    };
    let boot_url = server
        .as_ref()
        .map(|s| format!("http://{GUEST_HOST}:{}/{CHAIN}", s.port));
    let machine = qemu::Machine::start(request, boot_url.as_deref())?;
    let mut console = console::Console::new(machine, request, cancel)?;
    let deadline = started + request.timeout;
    let matched = console.wait_for(&request.expect, "the expected text", deadline)?;
    let seconds_to_match = started.elapsed().as_secs_f64();
    let (output, exit_status) = match &request.login {
        Some((user, password)) => {
            console.log_in(user, password, deadline)?;
            match &request.run {
                Some(command) => {
                    let (output, status) = console.run(command, deadline)?;
                    check_output(request, command, &output, status)?;
                    (Some(output), Some(status))
                }
                None => (None, None),
            }
        }
        None => (None, None),
    };
    let acceleration = console.acceleration().clone();
    Ok(BootReport {
        accelerator: acceleration.accelerator,
        accelerator_reason: acceleration.reason,
        matched,
        seconds_to_match,
        output,
        exit_status,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The host as QEMU's user-mode network shows it to the guest.
const GUEST_HOST: &str = "10.0.2.2";
/// The chain script the server adds to a netboot set.
const CHAIN: &str = "kbuild-boot.ipxe";

/// Serves the netboot set in `dir`: its one `*.ipxe` script, chained by a
/// script that sets the base URL to this server.
fn netboot_server(dir: &Path) -> Result<serve::Server, BootError> {
    let io = |source| BootError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let scripts: Vec<String> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".ipxe") && name != CHAIN)
        .collect();
    let [script] = scripts.as_slice() else {
        return Err(BootError::NetbootScript {
            dir: dir.to_path_buf(),
            found: scripts,
        });
    };
    // The name goes into the chain script and a URL.
    if !crate::netboot::is_url_safe_name(script) {
        return Err(BootError::NetbootScript {
            dir: dir.to_path_buf(),
            found: scripts.clone(),
        });
    }
    let setting = crate::netboot::BASE_URL_SETTING;
    let chain = |port: u16| {
        let text = format!(
            "#!ipxe\n\
             # kbuild boot --netboot: the set's files come from this server.\n\
             set {setting} http://{GUEST_HOST}:{port}/\n\
             chain ${{{setting}}}{script}\n"
        );
        BTreeMap::from([(CHAIN.to_string(), text.into_bytes())])
    };
    serve::start(dir, chain).map_err(io)
}

fn check_output(
    request: &BootRequest,
    command: &str,
    output: &str,
    status: i32,
) -> Result<(), BootError> {
    match &request.expect_output {
        Some(regex) if !regex.is_match(output) => Err(BootError::OutputMismatch {
            command: command.to_string(),
            regex: regex.to_string(),
            output: output.to_string(),
        }),
        Some(_) => Ok(()),
        None if status != 0 => Err(BootError::CommandFailed {
            command: command.to_string(),
            status,
            output: output.to_string(),
        }),
        None => Ok(()),
    }
}
