//! The one xorriso call that assembles the hybrid ISO.
//!
//! ```text
//! ISO 9660 + Rock Ridge + Joliet, volume id KBUILD
//!   El Torito entry 1: BIOS, GRUB's i386-pc-eltorito image (amd64)
//!   El Torito entry 2: UEFI, the whole appended partition 2 (the ESP)
//!   system area: GRUB's boot_hybrid.img as MBR (BIOS from a USB stick),
//!                GPT listing the ESP, MBR partition marked bootable
//! ```
//! The GPT and the bootable mark are what strict UEFI firmware (OVMF,
//! ESXi, BMCs) needs from a USB stick (AuroraBoot #713; kiwi does the same).
//!
//! An ESP over 32 MiB (a UKI's) is a file in the volume instead,
//! `/boot/efi.img`, with GPT partition 2 pointing at it. El Torito states
//! a boot image's size as a 16-bit count of 512-byte sectors; past that
//! it says 0, and firmware then reads from the image to the end of the
//! ISO 9660 volume (OVMF does), which holds an in-volume ESP but not an
//! appended one.
//!
//! Invariants:
//! * Every date and id xorriso would take from the clock or chance comes
//!   from `epoch` or the caller's `disk_guid`: volume dates and uuid, file
//!   dates, the GPT disk GUID. Owners and permission bits are normalised,
//!   so the host's umask and user do not reach the ISO.
//! * Files are mapped from where they are (`-map`), never copied first.

use std::ffi::OsString;
use std::path::PathBuf;

use super::VOLUME_ID;

/// What goes into the ISO.
pub(super) struct Layout {
    /// (host file or directory, path in the ISO), in order; later maps
    /// add to earlier ones.
    pub maps: Vec<(PathBuf, String)>,
    /// BIOS: the El Torito image's path in the ISO and the MBR template.
    pub bios: Option<(String, PathBuf)>,
    /// The ESP image: appended as partition 2, or in the volume.
    pub esp: PathBuf,
    pub esp_placement: EspPlacement,
    pub epoch: i64,
    /// 32 hex digits.
    pub disk_guid: String,
}

/// Where the ESP goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EspPlacement {
    /// After the volume, as GPT partition 2.
    Appended,
    /// At [`ESP_IN_VOLUME`] in the volume, which GPT partition 2 covers.
    InVolume,
}

/// The ESP's ISO path when it is in the volume.
pub(super) const ESP_IN_VOLUME: &str = "/boot/efi.img";

/// The largest boot image El Torito can give the size of.
const ELTORITO_MAX_LOAD: u64 = 0xffff * 512;

impl EspPlacement {
    /// Appended when El Torito can state its size, else in the volume.
    pub fn for_size(size: u64) -> EspPlacement {
        match size <= ELTORITO_MAX_LOAD {
            true => EspPlacement::Appended,
            false => EspPlacement::InVolume,
        }
    }
}

/// `-volume_date uuid` wants 16 digits, `YYYYMMDDhhmmsscc`.
fn volume_uuid(epoch: i64) -> String {
    let stamp: String = crate::store::image::rfc3339(epoch)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{stamp}00")
}

/// The arguments that write `layout` to `output`.
pub(super) fn arguments(layout: &Layout, output: &std::path::Path) -> Vec<OsString> {
    let at = format!("={}", layout.epoch);
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    push(&["-report_about", "SORRY", "-abort_on", "FAILURE"]);
    push(&["-volid", VOLUME_ID, "-joliet", "on", "-rockridge", "on"]);
    push(&["-volume_date", "uuid", &volume_uuid(layout.epoch)]);
    push(&["-volume_date", "c", &at, "-volume_date", "m", &at]);
    push(&["-volume_date", "all_file_dates", &at, "-iso_nowtime", &at]);
    args.push("-outdev".into());
    args.push(output.into());
    let esp_map = (layout.esp_placement == EspPlacement::InVolume)
        .then(|| (layout.esp.clone(), ESP_IN_VOLUME.to_string()));
    for (host, iso) in layout.maps.iter().chain(&esp_map) {
        args.push("-map".into());
        args.push(host.into());
        args.push(iso.into());
    }
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    push(&["-chown_r", "0", "/", "--", "-chgrp_r", "0", "/", "--"]);
    push(&["-chmod_r", "a+r,u+w", "/", "--"]);
    push(&["-find", "/", "-type", "d", "-exec", "chmod", "a+x", "--"]);
    if let Some((eltorito, mbr)) = &layout.bios {
        push(&["-boot_image", "grub", &format!("bin_path={eltorito}")]);
        args.push("-boot_image".into());
        args.push("grub".into());
        let mut mbr_arg = OsString::from("grub2_mbr=");
        mbr_arg.push(mbr);
        args.push(mbr_arg);
        let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
        for setting in [
            "grub2_boot_info=on",
            "partition_offset=16",
            "boot_info_table=on",
            "platform_id=0x00",
            "emul_type=no_emulation",
            "load_size=2048",
        ] {
            push(&["-boot_image", "any", setting]);
        }
        push(&["-boot_image", "any", "next"]);
    }
    let esp_settings = match layout.esp_placement {
        EspPlacement::Appended => {
            args.push("-append_partition".into());
            args.push("2".into());
            args.push("0xef".into());
            args.push(layout.esp.clone().into());
            [
                "efi_path=--interval:appended_partition_2:all::".to_string(),
                "appended_part_as=gpt".to_string(),
            ]
        }
        EspPlacement::InVolume => [
            format!("efi_path={ESP_IN_VOLUME}"),
            "efi_boot_part=--efi-boot-image".to_string(),
        ],
    };
    let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
    for setting in esp_settings.iter().map(String::as_str).chain([
        // The boot catalog, hidden from the file tree, at one path in
        // every layout (the overlay check reserves it).
        "cat_path=/boot/boot.catalog",
        "cat_hidden=on",
        "platform_id=0xef",
        "emul_type=no_emulation",
        "mbr_force_bootable=on",
        &format!("gpt_disk_guid={}", layout.disk_guid),
    ]) {
        push(&["-boot_image", "any", setting]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(bios: bool) -> Layout {
        Layout {
            maps: vec![(
                "/s/filesystem.squashfs".into(),
                "/live/filesystem.squashfs".into(),
            )],
            bios: bios.then(|| {
                (
                    "/boot/grub/eltorito.img".to_string(),
                    "/s/boot hybrid.img".into(),
                )
            }),
            esp: "/s/efi.img".into(),
            esp_placement: EspPlacement::Appended,
            epoch: 1_700_000_000,
            disk_guid: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn dates_and_ids_come_from_the_inputs() {
        let args = text(&arguments(&layout(true), "/o/x.iso".as_ref()));
        assert!(
            args.contains("-volume_date uuid 2023111422132000"),
            "{args}"
        );
        assert!(
            args.contains("-volume_date all_file_dates =1700000000 -iso_nowtime =1700000000"),
            "{args}"
        );
        assert!(
            args.contains("gpt_disk_guid=0123456789abcdef0123456789abcdef"),
            "{args}"
        );
    }

    #[test]
    fn bios_and_uefi_entries_with_a_gpt_esp() {
        let args = arguments(&layout(true), "/o/x.iso".as_ref());
        let shown = text(&args);
        assert!(
            shown.contains("-boot_image grub bin_path=/boot/grub/eltorito.img"),
            "{shown}"
        );
        // A path with a space stays one argument.
        assert!(
            args.iter().any(|a| a == "grub2_mbr=/s/boot hybrid.img"),
            "{shown}"
        );
        assert!(
            shown.contains("-boot_image any next -append_partition 2 0xef /s/efi.img"),
            "{shown}"
        );
        assert!(shown.contains("appended_part_as=gpt"), "{shown}");
        assert!(shown.contains("mbr_force_bootable=on"), "{shown}");
        let uefi_only = text(&arguments(&layout(false), "/o/x.iso".as_ref()));
        assert!(!uefi_only.contains("grub2_mbr"), "{uefi_only}");
        assert!(!uefi_only.contains("next"), "{uefi_only}");
    }

    #[test]
    fn an_esp_too_big_for_el_torito_goes_into_the_volume() {
        assert_eq!(EspPlacement::for_size(8 << 20), EspPlacement::Appended);
        assert_eq!(EspPlacement::for_size(0xffff * 512), EspPlacement::Appended);
        assert_eq!(EspPlacement::for_size(48 << 20), EspPlacement::InVolume);
        let mut big = layout(false);
        big.esp_placement = EspPlacement::InVolume;
        let shown = text(&arguments(&big, "/o/x.iso".as_ref()));
        assert!(shown.contains("-map /s/efi.img /boot/efi.img"), "{shown}");
        assert!(
            shown.contains("-boot_image any efi_path=/boot/efi.img"),
            "{shown}"
        );
        assert!(shown.contains("efi_boot_part=--efi-boot-image"), "{shown}");
        assert!(!shown.contains("-append_partition"), "{shown}");
        assert!(!shown.contains("appended_part_as"), "{shown}");
    }
}
