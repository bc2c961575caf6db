//! UEFI firmware for QEMU (OVMF for x86_64, AAVMF for aarch64), found as
//! QEMU's firmware descriptors describe it (`docs/interop/firmware.json`),
//! the way libvirt and mkosi find it, with the distributions' well-known
//! paths as a fallback for hosts that ship no descriptors.
//!
//! Descriptors are JSON files in `/usr/share/qemu/firmware`,
//! `/etc/qemu/firmware` and `$XDG_CONFIG_HOME/qemu/firmware`; a file in a
//! later directory replaces the one of the same name in an earlier one
//! (an empty file masks it), and the merged set is taken in file-name
//! order, so `40-...` is preferred over `60-...`.
//!
//! Invariants:
//! * Only flash-mapped UEFI firmware whose code and variable template
//!   both exist is chosen.
//! * Plain UEFI is firmware without Secure Boot; Secure Boot is firmware
//!   with it and with keys enrolled (Microsoft's), so that it enforces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::BootError;
use crate::project::Arch;

/// Firmware to boot a guest with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiFirmware {
    pub code: PathBuf,
    /// The variable store template (copied per boot, never written).
    pub vars: PathBuf,
    /// The flash images' format (`raw` or `qcow2`).
    pub format: String,
    /// Secure Boot that only SMM may write to (x86_64): the machine needs
    /// SMM and a secure flash.
    pub requires_smm: bool,
    /// Where it was found: a descriptor's path, or the built-in list.
    pub source: String,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "interface-types")]
    interface_types: Vec<String>,
    mapping: Mapping,
    targets: Vec<Target>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Mapping {
    device: String,
    executable: Option<FlashFile>,
    #[serde(rename = "nvram-template")]
    nvram_template: Option<FlashFile>,
}

#[derive(Debug, Deserialize)]
struct FlashFile {
    filename: PathBuf,
    #[serde(default = "raw")]
    format: String,
}

fn raw() -> String {
    "raw".into()
}

#[derive(Debug, Deserialize)]
struct Target {
    architecture: String,
    machines: Vec<String>,
}

/// QEMU's architecture name and a machine type name of the machine kbuild
/// boots (`q35`, `virt`), as descriptors' machine globs match it.
fn guest(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::Amd64 => ("x86_64", "pc-q35-9.0"),
        Arch::Arm64 => ("aarch64", "virt-9.0"),
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob_matches(tail, &rest[i..]))
        }
    }
}

/// The descriptor directories, lowest precedence first.
fn descriptor_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/share/qemu/firmware"),
        PathBuf::from("/etc/qemu/firmware"),
    ];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(config) = config {
        dirs.push(config.join("qemu/firmware"));
    }
    dirs
}

/// The merged descriptor files of `dirs`, in file-name order.
fn descriptor_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                by_name.insert(name, entry.path());
            }
        }
    }
    by_name.into_values().collect()
}

impl Descriptor {
    /// This descriptor's firmware, if it suits `arch` and `secure`.
    fn firmware(&self, arch: Arch, secure: bool, source: &Path) -> Option<UefiFirmware> {
        let (qemu_arch, machine) = guest(arch);
        let has = |feature: &str| self.features.iter().any(|f| f == feature);
        let suits = self.interface_types.iter().any(|t| t == "uefi")
            && self.mapping.device == "flash"
            && self.targets.iter().any(|t| {
                t.architecture == qemu_arch && t.machines.iter().any(|m| glob_matches(m, machine))
            })
            && match secure {
                true => has("secure-boot") && has("enrolled-keys"),
                false => !has("secure-boot"),
            };
        let code = self.mapping.executable.as_ref()?;
        let vars = self.mapping.nvram_template.as_ref()?;
        (suits && code.filename.is_file() && vars.filename.is_file()).then(|| UefiFirmware {
            code: code.filename.clone(),
            vars: vars.filename.clone(),
            format: code.format.clone(),
            requires_smm: has("requires-smm"),
            source: source.display().to_string(),
        })
    }
}

/// Where distributions install the firmware when they ship no descriptor:
/// (code, variable template), by architecture and Secure Boot.
fn well_known(arch: Arch, secure: bool) -> &'static [(&'static str, &'static str)] {
    match (arch, secure) {
        (Arch::Amd64, false) => &[
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
        ],
        (Arch::Amd64, true) => &[
            (
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
            ),
            (
                "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
                "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
            ),
        ],
        (Arch::Arm64, false) => &[
            (
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
            ),
            (
                "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
                "/usr/share/edk2/aarch64/vars-template-pflash.raw",
            ),
        ],
        (Arch::Arm64, true) => &[
            (
                "/usr/share/AAVMF/AAVMF_CODE.ms.fd",
                "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
            ),
            (
                "/usr/share/AAVMF/AAVMF_CODE.secboot.fd",
                "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
            ),
        ],
    }
}

/// What `find` calls the firmware in its errors.
fn what(arch: Arch, secure: bool) -> &'static str {
    match (arch, secure) {
        (Arch::Amd64, false) => "OVMF (UEFI, x86_64)",
        (Arch::Amd64, true) => "OVMF with Secure Boot (x86_64)",
        (Arch::Arm64, false) => "AAVMF (UEFI, aarch64)",
        (Arch::Arm64, true) => "AAVMF with Secure Boot (aarch64)",
    }
}

/// The firmware for `arch`, with Secure Boot enforced or off.
pub fn find(arch: Arch, secure: bool) -> Result<UefiFirmware, BootError> {
    find_in(&descriptor_dirs(), arch, secure, well_known(arch, secure))
}

fn find_in(
    dirs: &[PathBuf],
    arch: Arch,
    secure: bool,
    candidates: &[(&str, &str)],
) -> Result<UefiFirmware, BootError> {
    let described = descriptor_files(dirs).into_iter().find_map(|path| {
        let text = std::fs::read(&path).ok()?;
        let descriptor: Descriptor = serde_json::from_slice(&text).ok()?;
        descriptor.firmware(arch, secure, &path)
    });
    if let Some(found) = described {
        return Ok(found);
    }
    candidates
        .iter()
        .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
        .map(|(code, vars)| UefiFirmware {
            code: code.into(),
            vars: vars.into(),
            format: raw(),
            // Every Secure Boot OVMF in the list is built with SMM.
            requires_smm: secure && arch == Arch::Amd64,
            source: "well-known path".into(),
        })
        .ok_or_else(|| BootError::NoFirmware {
            what: what(arch, secure),
            looked: dirs
                .iter()
                .map(|d| format!("{}/*.json", d.display()))
                .chain(candidates.iter().map(|(code, _)| code.to_string()))
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(dir: &Path, name: &str, arch: &str, machine: &str, features: &[&str]) {
        let code = dir.join(format!("{name}.code"));
        let vars = dir.join(format!("{name}.vars"));
        std::fs::write(&code, b"code").unwrap();
        std::fs::write(&vars, b"vars").unwrap();
        let json = serde_json::json!({
            "interface-types": ["uefi"],
            "mapping": {
                "device": "flash",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": vars, "format": "raw"},
            },
            "targets": [{"architecture": arch, "machines": [machine]}],
            "features": features,
        });
        std::fs::write(dir.join(format!("{name}.json")), json.to_string()).unwrap();
    }

    #[test]
    fn machine_globs_match_as_qemu_s_do() {
        assert!(glob_matches("pc-q35-*", "pc-q35-9.0"));
        assert!(glob_matches("virt-*", "virt-9.0"));
        assert!(!glob_matches("pc-i440fx-*", "pc-q35-9.0"));
        assert!(glob_matches("*", "virt-9.0"));
    }

    #[test]
    fn descriptors_choose_by_architecture_secure_boot_and_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        descriptor(
            d,
            "40-arm-enrolled",
            "aarch64",
            "virt-*",
            &["secure-boot", "enrolled-keys"],
        );
        descriptor(d, "50-arm-secure", "aarch64", "virt-*", &["secure-boot"]);
        descriptor(d, "60-arm", "aarch64", "virt-*", &[]);
        descriptor(d, "60-x86", "x86_64", "pc-q35-*", &["amd-sev"]);
        descriptor(
            d,
            "40-x86-enrolled",
            "x86_64",
            "pc-q35-*",
            &["secure-boot", "enrolled-keys", "requires-smm"],
        );
        let dirs = [d.to_path_buf()];
        let find = |arch, secure| find_in(&dirs, arch, secure, &[]).unwrap();
        let arm = find(Arch::Arm64, false);
        assert!(arm.code.ends_with("60-arm.code"), "{arm:?}");
        let arm_secure = find(Arch::Arm64, true);
        assert!(arm_secure.code.ends_with("40-arm-enrolled.code"));
        assert!(!arm_secure.requires_smm);
        let x86_secure = find(Arch::Amd64, true);
        assert!(x86_secure.requires_smm);
        assert!(x86_secure.source.ends_with("40-x86-enrolled.json"));
        assert!(find(Arch::Amd64, false).code.ends_with("60-x86.code"));
    }

    #[test]
    fn a_later_directory_masks_a_descriptor_and_missing_files_are_skipped() {
        let system = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        descriptor(system.path(), "60-arm", "aarch64", "virt-*", &[]);
        descriptor(system.path(), "70-arm", "aarch64", "virt-*", &[]);
        std::fs::write(user.path().join("60-arm.json"), "").unwrap();
        std::fs::remove_file(system.path().join("70-arm.vars")).unwrap();
        let dirs = [system.path().to_path_buf(), user.path().to_path_buf()];
        // Masked and incomplete: nothing is left but the fallback list.
        let err = find_in(&dirs, Arch::Arm64, false, &[]).unwrap_err();
        assert!(err.to_string().contains("AAVMF"), "{err}");
        let code = system.path().join("70-arm.code");
        let vars = system.path().join("60-arm.vars");
        let fallback = [(code.to_str().unwrap(), vars.to_str().unwrap())];
        let found = find_in(&dirs, Arch::Arm64, false, &fallback).unwrap();
        assert_eq!(found.source, "well-known path");
        assert_eq!(found.code, code);
    }
}
