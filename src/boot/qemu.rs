//! The QEMU machine: arguments, firmware files, and the child process
//! whose stdio is the guest's serial port.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};

use super::accel::{self, Acceleration, Accelerator};
use super::firmware::UefiFirmware;
use super::{BootError, BootRequest};
use crate::project::Arch;
use crate::tools::{self, Located};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF or AAVMF (EDK II), Secure Boot off.
    Uefi,
    /// The same built with Secure Boot, enforcing it (on x86_64 SMM on,
    /// the flash's variable store writable only from SMM), Microsoft's
    /// keys enrolled unless the request names another variable store.
    UefiSecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// The ISO as a CD-ROM (El Torito boot): on the AHCI controller of
    /// q35, on a virtio-SCSI controller on virt (which has no AHCI).
    Cdrom,
    /// The ISO as a USB stick on an xHCI controller (MBR / GPT boot).
    Usb,
    /// A disk image (raw or qcow2, by its magic) as a virtio disk. The
    /// guest may write to it; its writes go to a temporary overlay
    /// (`snapshot=on`), never to the file.
    Disk,
    /// No medium: the virtio NIC's iPXE boots a URL over QEMU's user-mode
    /// network (`kbuild boot --netboot`).
    Net,
}

/// `path` for a QEMU option value: each `,` doubled.
fn escape_commas(path: &std::path::Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        bytes.push(b);
        if b == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

/// QEMU's name for the format of the image at `path`: qcow2 by its magic,
/// else raw.
pub fn image_format(path: &std::path::Path) -> &'static str {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let qcow2 = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"QFI\xfb";
    match qcow2 {
        true => "qcow2",
        false => "raw",
    }
}

use serde::Serialize;

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

/// A private, writable copy of the variable store template.
fn private_vars(template: &Path) -> Result<PathBuf, BootError> {
    let dest = crate::store::atomic::temp_path_in(&std::env::temp_dir());
    std::fs::copy(template, &dest).map_err(|source| BootError::Io {
        path: dest.clone(),
        source,
    })?;
    Ok(dest)
}

/// The QEMU system emulator for guests of `arch`.
pub fn emulator(arch: Arch) -> &'static tools::Tool {
    match arch {
        Arch::Amd64 => &tools::QEMU_X86_64,
        Arch::Arm64 => &tools::QEMU_AARCH64,
    }
}

/// UEFI firmware with the path of this run's variable store.
pub(super) struct Flash<'a> {
    pub firmware: &'a UefiFirmware,
    pub vars: &'a Path,
}

/// QEMU's arguments for `request`, with the firmware's flash.
pub(super) fn arguments(
    request: &BootRequest,
    accelerator: Accelerator,
    flash: Option<Flash>,
    boot_url: Option<&str>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let smm = flash.as_ref().is_some_and(|f| f.firmware.requires_smm);
    let machine = accel::machine_type(request.arch);
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    push(&[
        "-machine",
        &if smm {
            format!("{machine},smm=on")
        } else {
            machine.to_string()
        },
        "-m",
        &request.memory_mib.to_string(),
        "-smp",
        "2",
    ]);
    push(&accelerator.qemu_arguments());
    push(&["-nodefaults"]);
    if request.arch == Arch::Amd64 {
        // A graphical console for tty0; virt has no VGA, and its firmware
        // and kernel console are the PL011 serial port.
        push(&["-vga", "std"]);
    }
    push(&[
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ]);
    match boot_url {
        Some(url) => push(&[
            "-netdev",
            &format!("user,id=net0,bootfile={url}"),
            "-device",
            "virtio-net-pci,netdev=net0,bootindex=0",
        ]),
        None => push(&["-nic", "none"]),
    }
    if smm {
        // Only SMM may write the variable store: what makes the enrolled
        // keys, and so Secure Boot, binding on the guest.
        push(&["-global", "driver=cfi.pflash01,property=secure,value=on"]);
    }
    if let Some(flash) = flash {
        let format = &flash.firmware.format;
        let mut code = OsString::from(format!(
            "if=pflash,format={format},unit=0,readonly=on,file="
        ));
        code.push(&flash.firmware.code);
        let mut vars = OsString::from(format!("if=pflash,format={format},unit=1,file="));
        vars.push(flash.vars);
        args.extend(["-drive".into(), code, "-drive".into(), vars]);
    }
    if request.media == Media::Net {
        return args;
    }
    let mut drive = match request.media {
        Media::Disk => OsString::from(format!(
            "if=none,id=boot,format={},snapshot=on,file=",
            image_format(&request.iso)
        )),
        _ => OsString::from("if=none,id=boot,format=raw,readonly=on,file="),
    };
    // QEMU's option parser splits at `,`; a doubled one is a literal comma.
    drive.push(escape_commas(&request.iso));
    if request.media == Media::Cdrom {
        drive.push(",media=cdrom");
    }
    args.push("-drive".into());
    args.push(drive);
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    match (request.media, request.arch) {
        (Media::Cdrom, Arch::Amd64) => push(&["-device", "ide-cd,drive=boot,bootindex=0"]),
        (Media::Cdrom, Arch::Arm64) => push(&[
            "-device",
            "virtio-scsi-pci,id=scsi",
            "-device",
            "scsi-cd,bus=scsi.0,drive=boot,bootindex=0",
        ]),
        (Media::Disk, _) => push(&["-device", "virtio-blk-pci,drive=boot,bootindex=0"]),
        (Media::Net, _) => {}
        (Media::Usb, _) => push(&[
            "-device",
            "qemu-xhci,id=xhci",
            "-device",
            "usb-storage,bus=xhci.0,drive=boot,removable=on,bootindex=0",
        ]),
    }
    args
}

impl Machine {
    pub fn start(request: &BootRequest, boot_url: Option<&str>) -> Result<Machine, BootError> {
        let qemu: Located = tools::locate(emulator(request.arch))?;
        let firmware = match request.firmware {
            Firmware::Bios if request.arch != Arch::Amd64 => {
                return Err(BootError::NoBios { arch: request.arch })
            }
            Firmware::Bios => None,
            Firmware::Uefi => Some(super::firmware::find(request.arch, false)?),
            Firmware::UefiSecure => Some(super::firmware::find(request.arch, true)?),
        };
        let acceleration = accel::choose(
            request.accel,
            &qemu.path,
            Path::new(accel::KVM_DEVICE),
            request.arch,
        )?;
        let vars = match &firmware {
            None => None,
            Some(found) => {
                let template = request.vars.as_deref().unwrap_or(&found.vars);
                Some(private_vars(template)?)
            }
        };
        let flash = firmware
            .as_ref()
            .zip(vars.as_deref())
            .map(|(firmware, vars)| Flash { firmware, vars });
        let child = qemu
            .command(arguments(
                request,
                acceleration.accelerator,
                flash,
                boot_url,
            ))
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

    fn uefi(code: &str, requires_smm: bool) -> UefiFirmware {
        UefiFirmware {
            code: code.into(),
            vars: "/fw/VARS.fd".into(),
            format: "raw".into(),
            requires_smm,
            source: "test".into(),
        }
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
        let ovmf = uefi("/ovmf/CODE.fd", false);
        let usb = text(&arguments(
            &request(Firmware::Uefi, Media::Usb),
            Accelerator::Kvm,
            Some(Flash {
                firmware: &ovmf,
                vars: Path::new("/tmp/vars.fd"),
            }),
            None,
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
        let ovmf = uefi("/ovmf/CODE.secboot.fd", true);
        let secure = text(&arguments(
            &request(Firmware::UefiSecure, Media::Cdrom),
            Accelerator::Tcg,
            Some(Flash {
                firmware: &ovmf,
                vars: Path::new("/tmp/vars.fd"),
            }),
            None,
        ));
        assert!(secure.contains("-machine q35,smm=on"), "{secure}");
        assert!(
            secure.contains("-global driver=cfi.pflash01,property=secure,value=on"),
            "{secure}"
        );
        assert!(secure.contains("file=/ovmf/CODE.secboot.fd"), "{secure}");
    }

    #[test]
    fn arm64_boots_the_virt_machine_from_aavmf_with_a_virtio_scsi_cd() {
        let aavmf = uefi("/usr/share/AAVMF/AAVMF_CODE.fd", false);
        let mut arm = request(Firmware::Uefi, Media::Cdrom);
        arm.arch = Arch::Arm64;
        let args = text(&arguments(
            &arm,
            Accelerator::Tcg,
            Some(Flash {
                firmware: &aavmf,
                vars: Path::new("/tmp/vars.fd"),
            }),
            None,
        ));
        assert!(args.starts_with("-machine virt -m 2048"), "{args}");
        assert!(args.contains("-accel tcg -cpu max"), "{args}");
        assert!(
            args.contains("unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd"),
            "{args}"
        );
        assert!(args.contains("virtio-scsi-pci,id=scsi"), "{args}");
        assert!(
            args.contains("scsi-cd,bus=scsi.0,drive=boot,bootindex=0"),
            "{args}"
        );
        assert!(!args.contains("-vga") && !args.contains("ide-cd"), "{args}");
        assert!(!args.contains("smm=on"), "{args}");
    }

    #[test]
    fn a_netboot_boots_the_nic_and_attaches_no_medium() {
        let args = text(&arguments(
            &request(Firmware::Bios, Media::Net),
            Accelerator::Tcg,
            None,
            Some("http://10.0.2.2:8080/kbuild-boot.ipxe"),
        ));
        assert!(
            args.contains("-netdev user,id=net0,bootfile=http://10.0.2.2:8080/kbuild-boot.ipxe -device virtio-net-pci,netdev=net0,bootindex=0"),
            "{args}"
        );
        assert!(!args.contains("-nic none"), "{args}");
        assert!(!args.contains("-drive"), "{args}");
    }
}
