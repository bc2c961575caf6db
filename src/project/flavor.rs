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
    /// The distribution's signed boot chain; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBoot>,
    /// What a unified kernel image of the image is made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki: Option<Uki>,
}

/// Unified kernel images: systemd's EFI stub, wherever the distribution
/// keeps it (amd64 paths; arm64's derived, `x64` -> `aa64`; the first the
/// image has wins).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Uki {
    pub stub: Vec<String>,
}

/// Where the distribution's packages put its signed shim and GRUB, and
/// where that GRUB reads its config. Paths are for amd64; arm64's are
/// derived (`x64` -> `aa64`, `x86_64` -> `arm64`). Each list is tried in
/// order, the first file the image has wins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBoot {
    /// The signed shim: becomes `EFI/BOOT/BOOTX64.EFI`.
    pub shim: Vec<String>,
    /// The signed GRUB, put beside shim as `grub_name`.
    pub grub: Vec<String>,
    /// The name shim loads its second stage by (`grubx64.efi`).
    pub grub_name: String,
    /// shim's MOK manager (`mmx64.efi` beside shim), when the image has it.
    #[serde(default)]
    pub mok_manager: Vec<String>,
    /// Where on the ESP the signed GRUB reads its config (its prefix is
    /// built in and signed). kbuild writes a chain config there that finds
    /// the ISO volume and loads `/boot/grub/grub.cfg`. Absent: the GRUB
    /// finds the ISO volume itself (Debian's CD GRUB looks for the file
    /// `/.disk/info`, then reads `/boot/grub/grub.cfg` there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_on_esp: Option<String>,
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
    /// The same from a disk image's `COS_RECOVERY` partition (ext2),
    /// which holds the squashfs at the same path.
    pub disk_cmdline: String,
    /// The same over the network (`kbuild netboot`): `{squashfs_url}`
    /// stands for the squashfs's URL.
    pub netboot_cmdline: String,
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
    /// The signed shim, GRUB and kernel (flavors with `boot.secure_boot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<String>,
}
