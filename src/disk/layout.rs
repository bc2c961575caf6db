//! Where each partition goes: Kairos' layout (README, "Disk images and
//! network boot"), aligned to 1 MiB, with every id derived from the image
//! and the epoch.
//!
//! ```text
//! firmware  partitions (GPT name / file system label)
//! efi       efi/COS_GRUB (FAT, 64 MiB, ESP)  oem/COS_OEM  recovery/COS_RECOVERY
//! bios      bios (1 MiB, BIOS boot)          oem/COS_OEM  recovery/COS_RECOVERY
//! both      bios, then efi/COS_GRUB,         oem/COS_OEM, recovery/COS_RECOVERY
//! ```
//! `COS_STATE` and `COS_PERSISTENT` are made at first boot by the
//! framework from the space after them (`--size`).
//!
//! Invariants: the first partition starts at LBA 2048, every partition
//! starts and ends on a MiB boundary, and the disk ends at least 1 MiB
//! after the last one (room for the backup GPT), on a MiB boundary.

use uuid::Uuid;

use super::gpt::{self, Partition, Table, SECTOR};
use super::DiskError;

pub const MIB: u64 = 1 << 20;
pub const ESP_SIZE: u64 = 64 * MIB;
pub const OEM_SIZE: u64 = 64 * MIB;
pub const BIOS_SIZE: u64 = MIB;
pub const ESP_LABEL: &str = "COS_GRUB";
pub const OEM_LABEL: &str = "COS_OEM";
pub const RECOVERY_LABEL: &str = "COS_RECOVERY";

/// What the disk boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFirmware {
    Efi,
    Bios,
    Both,
}

impl DiskFirmware {
    pub fn efi(self) -> bool {
        self != DiskFirmware::Bios
    }

    pub fn bios(self) -> bool {
        self != DiskFirmware::Efi
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DiskFirmware::Efi => "efi",
            DiskFirmware::Bios => "bios",
            DiskFirmware::Both => "both",
        }
    }
}

/// What a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    BiosBoot,
    Esp,
    Oem,
    Recovery,
}

impl Role {
    fn gpt_name(self) -> &'static str {
        match self {
            Role::BiosBoot => "bios",
            Role::Esp => "efi",
            Role::Oem => "oem",
            Role::Recovery => "recovery",
        }
    }

    fn type_guid(self) -> Uuid {
        match self {
            Role::BiosBoot => gpt::BIOS_BOOT,
            Role::Esp => gpt::EFI_SYSTEM,
            Role::Oem | Role::Recovery => gpt::LINUX_FILESYSTEM,
        }
    }
}

/// Every id of one disk, derived from one seed (the image, the epoch, the
/// firmware), so the same inputs give the same ids and no two disks of
/// different images share them.
pub struct Ids {
    pub disk: Uuid,
}

impl Ids {
    pub fn new(seed: &str) -> Ids {
        Ids {
            disk: Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("kbuild:disk:{seed}").as_bytes(),
            ),
        }
    }

    /// A named id within this disk.
    pub fn of(&self, name: &str) -> Uuid {
        Uuid::new_v5(&self.disk, name.as_bytes())
    }

    /// The FAT volume serial.
    pub fn fat_serial(&self) -> u32 {
        let bytes = self.of("fat-serial").into_bytes();
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

/// The planned disk.
#[derive(Debug)]
pub struct Layout {
    pub size: u64,
    pub partitions: Vec<(Role, Partition)>,
    pub table: Table,
}

impl Layout {
    pub fn get(&self, role: Role) -> Option<&Partition> {
        self.partitions
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p)
    }
}

/// The recovery partition's size for `payload` bytes of files: room for
/// ext2's own structures (inode tables, bitmaps, indirect blocks) and
/// 1/16 slack, in whole MiB.
pub fn recovery_size(payload: u64) -> u64 {
    (payload + payload / 16 + 16 * MIB).div_ceil(MIB) * MIB
}

/// Lays the partitions out; `size` is the disk's size when asked for
/// (`--size`), at least what the partitions need.
pub fn plan(
    firmware: DiskFirmware,
    recovery: u64,
    size: Option<u64>,
    ids: &Ids,
) -> Result<Layout, DiskError> {
    let mut roles = Vec::new();
    if firmware.bios() {
        roles.push((Role::BiosBoot, BIOS_SIZE));
    }
    if firmware.efi() {
        roles.push((Role::Esp, ESP_SIZE));
    }
    roles.push((Role::Oem, OEM_SIZE));
    roles.push((Role::Recovery, recovery.div_ceil(MIB) * MIB));
    let mut start = MIB;
    let mut partitions = Vec::new();
    for (role, bytes) in roles {
        partitions.push((
            role,
            Partition {
                name: role.gpt_name().to_string(),
                type_guid: role.type_guid(),
                guid: ids.of(role.gpt_name()),
                first_lba: start / SECTOR,
                last_lba: (start + bytes) / SECTOR - 1,
            },
        ));
        start += bytes;
    }
    let needed = start + MIB;
    let size = match size {
        Some(asked) if asked < needed => {
            return Err(DiskError::TooSmall { asked, needed });
        }
        Some(asked) => asked
            .checked_next_multiple_of(MIB)
            .ok_or(DiskError::TooLarge(asked))?,
        None => needed,
    };
    let table = Table::new(
        ids.disk,
        size / SECTOR,
        partitions.iter().map(|(_, p)| p.clone()).collect(),
    )?;
    Ok(Layout {
        size,
        partitions,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_mib_aligned_in_kairos_order() {
        let layout = plan(DiskFirmware::Both, 300 * MIB + 5, None, &Ids::new("x")).unwrap();
        let names: Vec<&str> = layout
            .partitions
            .iter()
            .map(|(_, p)| p.name.as_str())
            .collect();
        assert_eq!(names, ["bios", "efi", "oem", "recovery"]);
        for (_, p) in &layout.partitions {
            assert_eq!(p.offset() % MIB, 0, "{p:?}");
            assert_eq!(p.size() % MIB, 0, "{p:?}");
        }
        assert_eq!(layout.partitions[0].1.first_lba, 2048);
        assert_eq!(layout.get(Role::Esp).unwrap().size(), 64 * MIB);
        assert_eq!(layout.get(Role::Recovery).unwrap().size(), 301 * MIB);
        let end = layout.get(Role::Recovery).unwrap();
        assert_eq!(layout.size, end.offset() + end.size() + MIB);
        let efi = plan(DiskFirmware::Efi, MIB, None, &Ids::new("x")).unwrap();
        assert!(efi.get(Role::BiosBoot).is_none());
        assert_eq!(efi.partitions[0].1.name, "efi");
    }

    #[test]
    fn ids_follow_the_seed_and_a_small_size_is_refused() {
        assert_eq!(Ids::new("a").disk, Ids::new("a").disk);
        assert_ne!(Ids::new("a").disk, Ids::new("b").disk);
        assert_ne!(Ids::new("a").of("oem"), Ids::new("a").of("recovery"));
        assert!(matches!(
            plan(DiskFirmware::Bios, MIB, Some(10 * MIB), &Ids::new("a")),
            Err(DiskError::TooSmall { .. })
        ));
        let big = plan(DiskFirmware::Bios, MIB, Some(8 << 30), &Ids::new("a")).unwrap();
        assert_eq!(big.size, 8 << 30);
    }
}
