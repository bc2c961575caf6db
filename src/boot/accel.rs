//! Which accelerator a boot runs under, and the probe that decides it.
//!
//! `/dev/kvm` opening, or even a paused KVM guest staying up, proves
//! nothing: under nested virtualisation a KVM guest can start and then
//! execute nothing, and a boot waits forever on a console that never
//! prints. So the probe boots a guest of its own, with the boot's machine,
//! accelerator and CPU, whose firmware (64 KiB built here, for x86_64 and
//! for aarch64) writes a marker to the serial port and halts. KVM is used
//! only if the marker arrives in time, and only for a guest of the host's
//! own architecture (a foreign guest always runs under TCG).
//!
//! The firmware reaches QEMU as a memfd (`-bios /dev/fd/N`): nothing is
//! written on the host.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BootError;
use crate::project::Arch;

/// The device KVM is used through.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// What the probe firmware writes to the serial port.
pub const PROBE_MARKER: &[u8] = b"KBUILD-PROBE-OK\n";

/// How long a probe guest has to print the marker. It needs milliseconds;
/// the rest is room for a loaded host.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// How long a QEMU that ended still gets to report its status and stderr.
const AFTERMATH: Duration = Duration::from_secs(1);

/// The firmware's size: QEMU maps an x86 `-bios` image so that it ends at
/// 4 GiB; the aarch64 one starts at 0 and is padded to the same size.
const FIRMWARE_SIZE: usize = 0x1_0000;

/// Where the CPU starts: real mode, CS base 0xFFFF0000, IP 0xFFF0, i.e.
/// 16 bytes below the end of the image.
const RESET_VECTOR: usize = 0xFFF0;

/// The probe firmwares, built at compile time.
static X86_FIRMWARE: [u8; FIRMWARE_SIZE] = x86_firmware();
static AARCH64_FIRMWARE: [u8; FIRMWARE_SIZE] = aarch64_firmware();

/// QEMU's machine for a guest of `arch`: the one boots and probes use.
pub(super) fn machine_type(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "q35",
        Arch::Arm64 => "virt",
    }
}

/// The host's architecture, if kbuild boots guests of it.
pub(super) fn host_arch() -> Option<Arch> {
    Arch::parse(&crate::platform::Platform::host().arch)
}

/// The accelerator QEMU runs a guest under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl Accelerator {
    /// QEMU's accelerator and CPU model: the host's CPU under KVM, the most
    /// capable emulated one under TCG. The probe uses the same, since a
    /// nested KVM may run QEMU's default CPU yet abort on the host's MSRs.
    pub(super) fn qemu_arguments(self) -> [&'static str; 4] {
        match self {
            Accelerator::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accelerator::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        })
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM if the probe proves it executes a guest, else TCG.
    #[default]
    Auto,
    /// KVM without a probe; an error if the KVM device cannot be opened.
    Kvm,
    /// TCG without a probe.
    Tcg,
}

/// The accelerator a boot runs under, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceleration {
    pub accelerator: Accelerator,
    pub reason: String,
}

/// What the probe found out about KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmVerdict {
    /// A KVM guest printed the marker after `took`.
    Works {
        took: Duration,
    },
    NoDevice {
        device: PathBuf,
    },
    DeviceUnusable {
        device: PathBuf,
        error: String,
    },
    Guest(GuestFailure),
}

/// How a probe guest failed to print the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFailure {
    /// QEMU ended, or closed its output, without printing the marker.
    Ended { status: String, message: String },
    /// QEMU ran but its guest printed no marker within `waited`.
    Silent { waited: Duration },
    /// The probe could not be set up or QEMU not started.
    CannotRun { error: String },
}

impl KvmVerdict {
    pub fn works(&self) -> bool {
        matches!(self, KvmVerdict::Works { .. })
    }
}

impl fmt::Display for KvmVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmVerdict::Works { took } => {
                write!(f, "a guest executed the probe in {} s", seconds(*took))
            }
            KvmVerdict::NoDevice { device } => write!(f, "no {}", device.display()),
            KvmVerdict::DeviceUnusable { device, error } => {
                write!(
                    f,
                    "{} cannot be opened read-write: {error}",
                    device.display()
                )
            }
            KvmVerdict::Guest(GuestFailure::Ended { status, message }) => {
                write!(f, "QEMU could not start a KVM guest ({status})")?;
                match message.is_empty() {
                    true => Ok(()),
                    false => write!(f, ": {message}"),
                }
            }
            KvmVerdict::Guest(GuestFailure::Silent { waited }) => write!(
                f,
                "a KVM guest started but executed nothing in {} s",
                seconds(*waited)
            ),
            KvmVerdict::Guest(GuestFailure::CannotRun { error }) => {
                write!(f, "the KVM probe could not run: {error}")
            }
        }
    }
}

/// `5` for 5 s, `0.2` for 200 ms.
fn seconds(duration: Duration) -> String {
    let text = format!("{:.1}", duration.as_secs_f64());
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

/// The accelerator for a guest of `arch` under `choice`: probed with
/// `qemu` and the KVM device `device` under [`AccelChoice::Auto`], as
/// asked otherwise; TCG for a guest of another architecture than the
/// host's, which KVM cannot run.
pub fn choose(
    choice: AccelChoice,
    qemu: &Path,
    device: &Path,
    arch: Arch,
) -> Result<Acceleration, BootError> {
    let asked = |accelerator| Acceleration {
        accelerator,
        reason: "asked for, not probed".into(),
    };
    let host = host_arch();
    if host != Some(arch) {
        let host = crate::platform::Platform::host().arch;
        return match choice {
            AccelChoice::Kvm => Err(BootError::KvmForeign { guest: arch, host }),
            _ => Ok(Acceleration {
                accelerator: Accelerator::Tcg,
                reason: format!(
                    "an {arch} guest on an {host} host: KVM runs only the host's architecture"
                ),
            }),
        };
    }
    match choice {
        AccelChoice::Tcg => Ok(asked(Accelerator::Tcg)),
        AccelChoice::Kvm => match open_read_write(device) {
            Ok(_) => Ok(asked(Accelerator::Kvm)),
            Err(source) => Err(BootError::KvmUnavailable {
                device: device.to_path_buf(),
                source,
            }),
        },
        AccelChoice::Auto => {
            let verdict = probe_kvm(qemu, device, arch, PROBE_DEADLINE);
            Ok(Acceleration {
                accelerator: match verdict.works() {
                    true => Accelerator::Kvm,
                    false => Accelerator::Tcg,
                },
                reason: verdict.to_string(),
            })
        }
    }
}

fn open_read_write(device: &Path) -> io::Result<File> {
    File::options().read(true).write(true).open(device)
}

/// Whether KVM executes a guest of `arch`: `device` must open read-write,
/// then `qemu` must run the probe firmware under KVM to its marker within
/// `deadline`.
pub fn probe_kvm(qemu: &Path, device: &Path, arch: Arch, deadline: Duration) -> KvmVerdict {
    match open_read_write(device) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => KvmVerdict::NoDevice {
            device: device.to_path_buf(),
        },
        Err(e) => KvmVerdict::DeviceUnusable {
            device: device.to_path_buf(),
            error: e.to_string(),
        },
        Ok(_) => match probe_guest(qemu, Accelerator::Kvm, arch, deadline) {
            Ok(took) => KvmVerdict::Works { took },
            Err(failure) => KvmVerdict::Guest(failure),
        },
    }
}

/// Runs the probe firmware of `arch` in `qemu` under `accelerator`;
/// returns how long the marker took to arrive. QEMU is killed however
/// this ends.
pub fn probe_guest(
    qemu: &Path,
    accelerator: Accelerator,
    arch: Arch,
    deadline: Duration,
) -> Result<Duration, GuestFailure> {
    let firmware = firmware_memfd(arch).map_err(|e| GuestFailure::CannotRun {
        error: format!("cannot hold the probe firmware in memory: {e}"),
    })?;
    let started = Instant::now();
    let mut guest =
        Guest::spawn(qemu, accelerator, arch, &firmware).map_err(|e| GuestFailure::CannotRun {
            error: format!("cannot run {}: {e}", qemu.display()),
        })?;
    guest.wait_for_marker(started, deadline)
}

/// The firmware in an anonymous memory file. It is close-on-exec, so that
/// no other child of this process inherits it; only QEMU's copy stays open
/// (see [`Guest::spawn`]).
fn firmware_memfd(arch: Arch) -> io::Result<OwnedFd> {
    use rustix::fs::{memfd_create, MemfdFlags};
    let mut file = File::from(memfd_create("kbuild-kvm-probe", MemfdFlags::CLOEXEC)?);
    file.write_all(match arch {
        Arch::Amd64 => &X86_FIRMWARE,
        Arch::Arm64 => &AARCH64_FIRMWARE,
    })?;
    Ok(file.into())
}

/// QEMU's arguments for the probe: the boot's machine and CPU, 16 MiB,
/// no devices but the serial port on stdout, the firmware read from
/// `firmware_fd` (QEMU reopens `/dev/fd/N`, a seekable memfd, like any
/// file).
fn probe_arguments(accelerator: Accelerator, arch: Arch, firmware_fd: RawFd) -> Vec<String> {
    let mut args: Vec<String> = ["-machine", machine_type(arch), "-m", "16"]
        .map(String::from)
        .into();
    args.extend(accelerator.qemu_arguments().map(String::from));
    args.extend(
        [
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-bios",
        ]
        .map(String::from),
    );
    args.push(format!("/dev/fd/{firmware_fd}"));
    args
}

/// A running probe QEMU, killed on drop.
struct Guest {
    child: Child,
    stdout: Receiver<Vec<u8>>,
    stderr: Receiver<Vec<u8>>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guest {
    fn spawn(
        qemu: &Path,
        accelerator: Accelerator,
        arch: Arch,
        firmware: &OwnedFd,
    ) -> io::Result<Guest> {
        let fd = firmware.as_raw_fd();
        let mut command = Command::new(qemu);
        command
            .args(probe_arguments(accelerator, arch, fd))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the hook runs in the child between fork and exec, where
        // `fd` is open (the child's copy of ours), and makes two system
        // calls, both async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                // A QEMU whose KVM vCPU fails aborts: no core file of it
                // in the working directory, on every boot of such a host.
                let none = rustix::process::Rlimit {
                    current: Some(0),
                    maximum: Some(0),
                };
                Ok(rustix::process::setrlimit(
                    rustix::process::Resource::Core,
                    none,
                )?)
            });
        }
        let mut child = command.spawn()?;
        let stdout = read_in_background(child.stdout.take().expect("piped"));
        let stderr = read_in_background(child.stderr.take().expect("piped"));
        Ok(Guest {
            child,
            stdout,
            stderr,
        })
    }

    /// Reads the guest's serial output until the marker, QEMU's end, or
    /// `deadline` after `started`.
    fn wait_for_marker(
        &mut self,
        started: Instant,
        deadline: Duration,
    ) -> Result<Duration, GuestFailure> {
        let mut seen = Vec::new();
        loop {
            if seen.windows(PROBE_MARKER.len()).any(|w| w == PROBE_MARKER) {
                return Ok(started.elapsed());
            }
            let left = (started + deadline).saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GuestFailure::Silent { waited: deadline });
            }
            match self.stdout.recv_timeout(left) {
                Ok(bytes) => seen.extend(bytes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
            }
        }
    }

    /// Why QEMU ended: its exit status and the errors it printed.
    fn ended(&mut self) -> GuestFailure {
        let status = exit_status(&mut self.child, AFTERMATH)
            .map_or_else(|| "it closed its output".into(), |s| s.to_string());
        let stderr = collect(&self.stderr, AFTERMATH);
        GuestFailure::Ended {
            status,
            message: errors(&String::from_utf8_lossy(&stderr)),
        }
    }
}

/// The lines QEMU printed that are not warnings, the last three at most,
/// joined: KVM's failures come as an error and an assertion, while
/// warnings about CPU features come even when the guest runs.
fn errors(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("warning:"))
        .collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// The bytes of `pipe` as they come, on a channel that closes at its end.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 || sender.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    receiver
}

/// What `receiver` brings until it closes, or for `within` at most.
fn collect(receiver: &Receiver<Vec<u8>>, within: Duration) -> Vec<u8> {
    let until = Instant::now() + within;
    let mut bytes = Vec::new();
    while let Ok(chunk) = receiver.recv_timeout(until.saturating_duration_since(Instant::now())) {
        bytes.extend(chunk);
    }
    bytes
}

/// The child's exit status, if it ends within `within`.
fn exit_status(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// The x86 probe firmware: real-mode code that writes [`PROBE_MARKER`] to
/// COM1 and halts. Every byte not written below is `hlt` (F4), so a stray
/// jump stops the CPU instead of running garbage.
const fn x86_firmware() -> [u8; FIRMWARE_SIZE] {
    let mut image = [0xF4; FIRMWARE_SIZE];
    // At the reset vector, E9 0D 00: `jmp near +0x0D`. IP after it is
    // 0xFFF3; 0xFFF3 + 0x0D wraps (16-bit IP) to 0x0000, the image's start.
    put(&mut image, RESET_VECTOR, &[0xE9, 0x0D, 0x00]);
    // BA F8 03: `mov dx, 0x3F8`, COM1's transmit register.
    let mut at = put(&mut image, 0, &[0xBA, 0xF8, 0x03]);
    let mut i = 0;
    while i < PROBE_MARKER.len() {
        // B0 xx: `mov al, xx`; EE: `out dx, al`. QEMU's UART sends a byte
        // written there at once, no setup needed.
        at = put(&mut image, at, &[0xB0, PROBE_MARKER[i], 0xEE]);
        i += 1;
    }
    // F4: `hlt`; EB FD: `jmp -3`, back to the hlt should anything wake
    // the CPU.
    put(&mut image, at, &[0xF4, 0xEB, 0xFD]);
    image
}

/// The aarch64 probe firmware for QEMU's `virt` machine, where the CPU
/// starts at address 0 (the flash `-bios` fills) with the MMU off: it
/// enables the PL011 UART at 0x0900_0000, writes [`PROBE_MARKER`] to its
/// data register byte by byte and waits for interrupts forever. The rest
/// of the image is zero, an undefined instruction that traps.
const fn aarch64_firmware() -> [u8; FIRMWARE_SIZE] {
    const CODE: [u32; 10] = [
        0xD2A1_2000, // 0x00 movz x0, #0x0900, lsl #16   the UART's base
        0x5280_6023, // 0x04 movz w3, #0x301             UARTEN | TXE | RXE
        0xB900_3003, // 0x08 str  w3, [x0, #0x30]        UARTCR
        0x1000_00E1, // 0x0c adr  x1, 0x28               the marker
        0x3840_1422, // 0x10 ldrb w2, [x1], #1
        0x3400_0062, // 0x14 cbz  w2, 0x20               its NUL: done
        0x3900_0002, // 0x18 strb w2, [x0]               UARTDR
        0x17FF_FFFD, // 0x1c b    0x10
        0xD503_207F, // 0x20 wfi
        0x17FF_FFFF, // 0x24 b    0x20
    ];
    let mut image = [0; FIRMWARE_SIZE];
    let mut i = 0;
    while i < CODE.len() {
        let word = CODE[i].to_le_bytes();
        put(&mut image, i * 4, &word);
        i += 1;
    }
    // The marker at 0x28, followed by the image's zeros (its NUL).
    put(&mut image, CODE.len() * 4, PROBE_MARKER);
    image
}

/// Copies `code` into `image` at `at`; returns the offset after it.
const fn put(image: &mut [u8; FIRMWARE_SIZE], at: usize, code: &[u8]) -> usize {
    let mut i = 0;
    while i < code.len() {
        image[at + i] = code[i];
        i += 1;
    }
    at + code.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firmware_jumps_from_the_reset_vector_to_code_printing_the_marker() {
        let image = &X86_FIRMWARE;
        assert_eq!(image.len(), 64 * 1024);
        assert_eq!(image[RESET_VECTOR..RESET_VECTOR + 3], [0xE9, 0x0D, 0x00]);
        // The jump's target, computed as the CPU does: a 16-bit IP.
        let after = RESET_VECTOR as u16 + 3;
        assert_eq!(after.wrapping_add(u16::from_le_bytes([0x0D, 0x00])), 0);
        assert_eq!(image[..3], [0xBA, 0xF8, 0x03]);
        let marker_code: Vec<u8> = PROBE_MARKER
            .iter()
            .flat_map(|&byte| [0xB0, byte, 0xEE])
            .collect();
        let end = 3 + marker_code.len();
        assert_eq!(image[3..end], marker_code[..]);
        assert_eq!(image[end..end + 3], [0xF4, 0xEB, 0xFD]);
        assert!(image[end + 3..RESET_VECTOR].iter().all(|&b| b == 0xF4));
        assert!(image[RESET_VECTOR + 3..].iter().all(|&b| b == 0xF4));
    }

    /// A fake QEMU running `body`, and a fake KVM device that opens.
    fn fakes(body: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let qemu = dir.path().join("qemu");
        crate::test_support::write_executable(&qemu, &format!("#!/bin/sh\n{body}\n"));
        let device = dir.path().join("kvm");
        std::fs::write(&device, "").unwrap();
        (dir, qemu, device)
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn host() -> Arch {
        host_arch().expect("the tests run on amd64 or arm64")
    }

    fn foreign() -> Arch {
        match host() {
            Arch::Amd64 => Arch::Arm64,
            Arch::Arm64 => Arch::Amd64,
        }
    }

    #[test]
    fn the_aarch64_firmware_writes_the_marker_to_the_virt_machine_s_uart() {
        let image = &AARCH64_FIRMWARE;
        assert_eq!(image.len(), 64 * 1024);
        // movz x0, #0x0900, lsl #16: imm16 in bits 5..21, hw = 1.
        let first = u32::from_le_bytes(image[..4].try_into().unwrap());
        assert_eq!((first >> 5) & 0xFFFF, 0x0900);
        assert_eq!((first >> 21) & 0b11, 1);
        // adr x1 points 0x1c past itself, at the marker and its NUL.
        let adr = u32::from_le_bytes(image[0x0c..0x10].try_into().unwrap());
        let offset = ((adr >> 5) & 0x7FFFF) << 2 | ((adr >> 29) & 0b11);
        let marker = 0x0c + offset as usize;
        assert_eq!(marker, 0x28);
        assert_eq!(&image[marker..marker + PROBE_MARKER.len()], PROBE_MARKER);
        assert_eq!(image[marker + PROBE_MARKER.len()], 0);
    }

    #[test]
    fn a_foreign_guest_runs_under_tcg_without_a_probe_and_kvm_is_refused() {
        let (dir, qemu, device) = fakes("touch \"$(dirname \"$0\")/ran\"; echo KBUILD-PROBE-OK");
        let auto = choose(AccelChoice::Auto, &qemu, &device, foreign()).unwrap();
        assert_eq!(auto.accelerator, Accelerator::Tcg);
        assert!(
            auto.reason
                .contains("KVM runs only the host's architecture"),
            "{}",
            auto.reason
        );
        assert!(!dir.path().join("ran").exists());
        let err = choose(AccelChoice::Kvm, &qemu, &device, foreign()).unwrap_err();
        assert!(matches!(err, BootError::KvmForeign { .. }), "{err}");
    }

    #[test]
    fn a_guest_that_prints_the_marker_proves_kvm() {
        let (_dir, qemu, device) = fakes("echo KBUILD-PROBE-OK; exec sleep 30");
        // It returns at the marker: a long deadline only absorbs a loaded
        // machine's slow start of the fake.
        let verdict = probe_kvm(&qemu, &device, host(), 10 * SECOND);
        assert!(verdict.works(), "{verdict}");
        assert!(
            verdict
                .to_string()
                .starts_with("a guest executed the probe in"),
            "{verdict}"
        );
    }

    #[test]
    fn the_firmware_reaches_qemu_as_a_readable_file_with_the_boot_s_cpu() {
        let (_dir, qemu, device) = fakes(
            r#"for a; do last=$a; done
case "$*" in *"-accel kvm -cpu host"*) ;; *) exit 3;; esac
test "$(head -c 3 "$last" | od -An -tx1 | tr -d ' ')" = baf803 || exit 4
test "$(wc -c < "$last")" -eq 65536 || exit 5
echo KBUILD-PROBE-OK; exec sleep 30"#,
        );
        let verdict = probe_kvm(&qemu, &device, host(), 10 * SECOND);
        assert!(verdict.works(), "{verdict}");
    }

    #[test]
    fn a_silent_guest_means_tcg_within_the_deadline() {
        let (_dir, qemu, device) = fakes("exec sleep 30");
        let started = Instant::now();
        let verdict = probe_kvm(&qemu, &device, host(), SECOND);
        assert!(started.elapsed() < 5 * SECOND, "{:?}", started.elapsed());
        assert_eq!(
            verdict,
            KvmVerdict::Guest(GuestFailure::Silent { waited: SECOND })
        );
        assert_eq!(
            verdict.to_string(),
            "a KVM guest started but executed nothing in 1 s"
        );
    }

    #[test]
    fn a_qemu_that_fails_gives_its_status_and_error() {
        let (_dir, qemu, device) = fakes(
            "echo 'qemu: warning: host lacks a feature' >&2\necho 'qemu: failed to set MSR 0x10a' >&2\nexit 1",
        );
        let verdict = probe_kvm(&qemu, &device, host(), 10 * SECOND);
        assert_eq!(
            verdict.to_string(),
            "QEMU could not start a KVM guest (exit status: 1): qemu: failed to set MSR 0x10a"
        );
    }

    #[test]
    fn without_the_device_qemu_is_not_run() {
        let (dir, qemu, _) = fakes("touch \"$(dirname \"$0\")/ran\"; echo KBUILD-PROBE-OK");
        let missing = dir.path().join("no-kvm");
        let verdict = probe_kvm(&qemu, &missing, host(), SECOND);
        assert_eq!(
            verdict,
            KvmVerdict::NoDevice {
                device: missing.clone()
            }
        );
        assert!(!dir.path().join("ran").exists());
        let err = choose(AccelChoice::Kvm, &qemu, &missing, host()).unwrap_err();
        assert!(matches!(err, BootError::KvmUnavailable { .. }), "{err}");
        assert!(err.hint().unwrap().contains("--accel tcg"), "{err}");
        // Asked for, TCG needs neither.
        let tcg = choose(AccelChoice::Tcg, &qemu, &missing, host()).unwrap();
        assert_eq!(tcg.accelerator, Accelerator::Tcg);
        assert!(!dir.path().join("ran").exists());
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(5)), "5");
        assert_eq!(seconds(Duration::from_millis(213)), "0.2");
    }
}
