//! `flavors/<flavor>.yaml`: the facts about one distribution that the
//! build, the preflight check and the ISO writer rely on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    pub family: Family,
    pub init: InitSystem,
    pub package_manager: PackageManager,
    /// flavor_release -> base image reference.
    pub base_images: BTreeMap<String, String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    pub boot: Boot,
    pub install_hints: InstallHints,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Alpine,
    Rhel,
    Suse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitSystem {
    Systemd,
    Openrc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Apk,
    Dnf,
    Zypper,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// Stable link to the kernel inside the image, e.g. `/boot/vmlinuz`.
    pub kernel: String,
    /// Stable link to the initrd inside the image, e.g. `/boot/initrd`.
    pub initrd: String,
    pub modules_dir: String,
    pub grub: Grub,
    pub live: Live,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grub {
    pub bios_modules: String,
    pub efi_modules: String,
    pub mkimage: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Live {
    /// Where the rootfs squashfs sits on the ISO for this flavor's initrd.
    pub squashfs_path: String,
    /// Kernel command line that makes the initrd boot that squashfs.
    pub cmdline: String,
}

/// One package-manager command per component a preflight check may miss.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstallHints {
    pub init: String,
    pub kernel: String,
    pub initrd: String,
    pub grub_bios: String,
    pub grub_efi: String,
    pub rsync: String,
}
