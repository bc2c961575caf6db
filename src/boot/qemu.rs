//! The QEMU machine: arguments, firmware files, and the child process
//! whose stdio is the guest's serial port.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};

use super::accel::{self, Acceleration, Accelerator};
use super::{BootError, BootRequest};
use crate::tools::{self, Located};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF (EDK II), Secure Boot off.
    Uefi,
    /// OVMF built with Secure Boot, enforcing it: SMM on, the flash's
    /// variable store writable only from SMM, Microsoft's keys enrolled
    /// unless the request names another variable store.
    UefiSecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// The ISO as a CD-ROM on the AHCI controller (El Torito boot).
    Cdrom,
    /// The ISO as a USB stick on an xHCI controller (MBR / GPT boot).
    Usb,
}

use serde::Serialize;

/// Where distributions install OVMF: (code, variable store template).
const OVMF: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/qemu/ovmf-x86_64-code.bin",
        "/usr/share/qemu/ovmf-x86_64-vars.bin",
    ),
];

/// The same with Secure Boot: (code, variable store with Microsoft's
/// keys enrolled and Secure Boot on).
const OVMF_SECURE: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
    ),
];

/// A running guest.
pub struct Machine {
    child: Child,
    pub stdin: ChildStdin,
    /// Console bytes as they come; closed when QEMU ends.
    pub output: Receiver<Vec<u8>>,
    pub acceleration: Acceleration,
    /// This run's copy of the UEFI variable store, removed on drop.
    vars: Option<PathBuf>,
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(vars) = &self.vars {
            let _ = std::fs::remove_file(vars);
        }
    }
}

/// The OVMF code and variable-store template this host has.
pub fn ovmf() -> Result<(&'static str, &'static str), BootError> {
    first_firmware(OVMF, "OVMF (UEFI)")
}

/// The Secure Boot OVMF code and its Microsoft-keys variable store.
pub fn ovmf_secure() -> Result<(&'static str, &'static str), BootError> {
    first_firmware(OVMF_SECURE, "OVMF with Secure Boot")
}

fn first_firmware(
    candidates: &[(&'static str, &'static str)],
    what: &'static str,
) -> Result<(&'static str, &'static str), BootError> {
    candidates
        .iter()
        .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
        .copied()
        .ok_or_else(|| BootError::NoFirmware {
            what,
            looked: candidates
                .iter()
                .map(|(code, _)| code.to_string())
                .collect(),
        })
}

/// A private, writable copy of the variable store template.
fn private_vars(template: &Path) -> Result<PathBuf, BootError> {
    let dest = crate::store::atomic::temp_path_in(&std::env::temp_dir());
    std::fs::copy(template, &dest).map_err(|source| BootError::Io {
        path: dest.clone(),
        source,
    })?;
    Ok(dest)
}

/// QEMU's arguments for `request`, with the variable store at `vars`.
pub(super) fn arguments(
    request: &BootRequest,
    accelerator: Accelerator,
    ovmf: Option<(&str, &Path)>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let secure = request.firmware == Firmware::UefiSecure;
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    push(&[
        "-machine",
        if secure { "q35,smm=on" } else { "q35" },
        "-m",
        &request.memory_mib.to_string(),
        "-smp",
        "2",
    ]);
    push(&accelerator.qemu_arguments());
    push(&[
        "-nodefaults",
        "-vga",
        "std",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-nic",
        "none",
        "-no-reboot",
    ]);
    if secure {
        // Only SMM may write the variable store: what makes the enrolled
        // keys, and so Secure Boot, binding on the guest.
        push(&["-global", "driver=cfi.pflash01,property=secure,value=on"]);
    }
    if let Some((code, vars)) = ovmf {
        push(&[
            "-drive",
            &format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
        ]);
        let mut drive = OsString::from("if=pflash,format=raw,unit=1,file=");
        drive.push(vars);
        args.push("-drive".into());
        args.push(drive);
    }
    let mut drive = OsString::from("if=none,id=boot,format=raw,readonly=on,file=");
    drive.push(&request.iso);
    if request.media == Media::Cdrom {
        drive.push(",media=cdrom");
    }
    args.push("-drive".into());
    args.push(drive);
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    match request.media {
        Media::Cdrom => push(&["-device", "ide-cd,drive=boot,bootindex=0"]),
        Media::Usb => push(&[
            "-device",
            "qemu-xhci,id=xhci",
            "-device",
            "usb-storage,bus=xhci.0,drive=boot,removable=on,bootindex=0",
        ]),
    }
    args
}

impl Machine {
    pub fn start(request: &BootRequest) -> Result<Machine, BootError> {
        let qemu: Located = tools::locate(&tools::QEMU_X86_64)?;
        let acceleration = accel::choose(request.accel, &qemu.path, Path::new(accel::KVM_DEVICE))?;
        let firmware = match request.firmware {
            Firmware::Bios => None,
            Firmware::Uefi => Some(ovmf()?),
            Firmware::UefiSecure => Some(ovmf_secure()?),
        };
        let (vars, code) = match firmware {
            None => (None, None),
            Some((code, template)) => {
                let template = request.vars.as_deref().unwrap_or(Path::new(template));
                (Some(private_vars(template)?), Some(code))
            }
        };
        let ovmf = code.zip(vars.as_deref());
        let child = qemu
            .command(arguments(request, acceleration.accelerator, ovmf))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| BootError::Io {
                path: qemu.path.clone(),
                source,
            })?;
        Ok(Machine::attach(child, acceleration, vars))
    }

    /// A machine around `child`, whose stdin and stdout are piped.
    pub(super) fn attach(
        mut child: Child,
        acceleration: Acceleration,
        vars: Option<PathBuf>,
    ) -> Machine {
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let (sender, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || sender.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Machine {
            child,
            stdin,
            output,
            acceleration,
            vars,
        }
    }

    /// How QEMU ended, if it has.
    pub fn exit_status(&mut self) -> Option<String> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|status| status.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(firmware: Firmware, media: Media) -> BootRequest {
        BootRequest::example(firmware, media)
    }

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_read_only_medium_no_network_and_the_serial_port_on_stdio() {
        let cd = arguments(
            &request(Firmware::Bios, Media::Cdrom),
            Accelerator::Tcg,
            None,
        );
        let shown = text(&cd);
        assert!(shown.contains("-accel tcg -cpu max"), "{shown}");
        assert!(shown.contains("-nic none"), "{shown}");
        assert!(shown.contains("-serial stdio"), "{shown}");
        // The path is one argument, spaces and all.
        assert!(cd
            .iter()
            .any(|a| a == "if=none,id=boot,format=raw,readonly=on,file=/out/a b.iso,media=cdrom"));
        assert!(!shown.contains("pflash"), "{shown}");
        let usb = text(&arguments(
            &request(Firmware::Uefi, Media::Usb),
            Accelerator::Kvm,
            Some(("/ovmf/CODE.fd", Path::new("/tmp/vars.fd"))),
        ));
        assert!(usb.contains("-accel kvm -cpu host"), "{usb}");
        assert!(usb.contains("usb-storage,bus=xhci.0,drive=boot"), "{usb}");
        assert!(
            usb.contains("unit=0,readonly=on,file=/ovmf/CODE.fd"),
            "{usb}"
        );
        assert!(usb.contains("unit=1,file=/tmp/vars.fd"), "{usb}");
        assert!(!usb.contains("media=cdrom"), "{usb}");
        assert!(
            !usb.contains("smm=on") && !usb.contains("secure=on"),
            "{usb}"
        );
    }

    #[test]
    fn secure_boot_turns_on_smm_and_the_flash_s_secure_mode() {
        let secure = text(&arguments(
            &request(Firmware::UefiSecure, Media::Cdrom),
            Accelerator::Tcg,
            Some(("/ovmf/CODE.secboot.fd", Path::new("/tmp/vars.fd"))),
        ));
        assert!(secure.contains("-machine q35,smm=on"), "{secure}");
        assert!(
            secure.contains("-global driver=cfi.pflash01,property=secure,value=on"),
            "{secure}"
        );
        assert!(secure.contains("file=/ovmf/CODE.secboot.fd"), "{secure}");
    }
}
