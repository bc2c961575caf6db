//! GUID partition tables, written by kbuild: a protective MBR (carrying
//! GRUB's BIOS boot code when given), the primary header and entries at
//! LBA 1–33 and the backup entries and header in the last 33 sectors, as
//! the UEFI specification (5.3) lays them out.
//!
//! Invariants:
//! * 512-byte sectors, 128 entries of 128 bytes; both headers carry the
//!   CRC32 of themselves and of the entry array.
//! * Every partition lies within the usable LBAs and none overlap
//!   ([`Table::new`] refuses otherwise).

use uuid::Uuid;

pub const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors of the entry array.
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
const HEADER_SIZE: u32 = 92;
/// Bytes of MBR boot code before the disk signature (GRUB's boot.img
/// fills them).
pub const BOOT_CODE: usize = 440;

/// Partition type GUIDs.
pub const EFI_SYSTEM: Uuid = uuid::uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
pub const BIOS_BOOT: Uuid = uuid::uuid!("21686148-6449-6e6f-744e-656564454649");
pub const LINUX_FILESYSTEM: Uuid = uuid::uuid!("0fc63daf-8483-4772-8e79-3d69d8477de4");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub type_guid: Uuid,
    pub guid: Uuid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GptError {
    #[error("partition {name} (LBA {first}–{last}) is outside the usable LBAs {usable_first}–{usable_last}")]
    OutOfRange {
        name: String,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error("partitions {0} and {1} overlap")]
    Overlap(String, String),
    #[error("partition name {0:?} is longer than 36 UTF-16 units")]
    LongName(String),
    #[error("a disk of {0} sectors has no room for two partition tables")]
    TooSmall(u64),
}

/// A disk's partition table.
#[derive(Debug)]
pub struct Table {
    disk_guid: Uuid,
    sectors: u64,
    partitions: Vec<Partition>,
}

impl Table {
    /// The table of a disk of `sectors` sectors.
    pub fn new(
        disk_guid: Uuid,
        sectors: u64,
        partitions: Vec<Partition>,
    ) -> Result<Table, GptError> {
        if sectors < 2 * (2 + ENTRY_SECTORS) + 1 {
            return Err(GptError::TooSmall(sectors));
        }
        let (usable_first, usable_last) = usable(sectors);
        for (index, p) in partitions.iter().enumerate() {
            if p.name.encode_utf16().count() > 36 {
                return Err(GptError::LongName(p.name.clone()));
            }
            if p.first_lba < usable_first || p.last_lba > usable_last || p.last_lba < p.first_lba {
                return Err(GptError::OutOfRange {
                    name: p.name.clone(),
                    first: p.first_lba,
                    last: p.last_lba,
                    usable_first,
                    usable_last,
                });
            }
            for q in &partitions[..index] {
                if p.first_lba <= q.last_lba && q.first_lba <= p.last_lba {
                    return Err(GptError::Overlap(q.name.clone(), p.name.clone()));
                }
            }
        }
        Ok(Table {
            disk_guid,
            sectors,
            partitions,
        })
    }

    /// The first sector: a protective MBR with `boot_code` (up to 440
    /// bytes) in front.
    pub fn protective_mbr(&self, boot_code: Option<&[u8]>) -> [u8; SECTOR as usize] {
        let mut mbr = [0u8; SECTOR as usize];
        if let Some(code) = boot_code {
            let n = code.len().min(BOOT_CODE);
            mbr[..n].copy_from_slice(&code[..n]);
        }
        // The disk signature, from the disk GUID.
        mbr[440..444].copy_from_slice(&self.disk_guid.as_bytes()[..4]);
        let entry = &mut mbr[446..462];
        entry[0] = 0x00;
        entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        entry[4] = 0xee;
        entry[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        entry[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.sectors - 1).unwrap_or(u32::MAX);
        entry[12..16].copy_from_slice(&size.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        mbr
    }

    fn entries(&self) -> Vec<u8> {
        let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (index, p) in self.partitions.iter().enumerate() {
            let entry = &mut array[index * ENTRY_SIZE as usize..][..ENTRY_SIZE as usize];
            entry[0..16].copy_from_slice(&p.type_guid.to_bytes_le());
            entry[16..32].copy_from_slice(&p.guid.to_bytes_le());
            entry[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            entry[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            for (i, unit) in p.name.encode_utf16().enumerate() {
                entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        array
    }

    fn header(&self, primary: bool, entries_crc: u32) -> [u8; SECTOR as usize] {
        let (usable_first, usable_last) = usable(self.sectors);
        let last = self.sectors - 1;
        let (mine, other, entries_lba) = match primary {
            true => (1, last, 2),
            false => (last, 1, last - ENTRY_SECTORS),
        };
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&u64::to_le_bytes(mine));
        h[32..40].copy_from_slice(&u64::to_le_bytes(other));
        h[40..48].copy_from_slice(&usable_first.to_le_bytes());
        h[48..56].copy_from_slice(&usable_last.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&u64::to_le_bytes(entries_lba));
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// What goes at LBA 1 (the primary header, then the entries).
    pub fn primary(&self) -> Vec<u8> {
        let entries = self.entries();
        let mut bytes = self.header(true, crc32fast::hash(&entries)).to_vec();
        bytes.extend(entries);
        bytes
    }

    /// What goes in the last 33 sectors (the entries, then the backup
    /// header), and its byte offset.
    pub fn backup(&self) -> (u64, Vec<u8>) {
        let entries = self.entries();
        let header = self.header(false, crc32fast::hash(&entries));
        let mut bytes = entries;
        bytes.extend(header);
        ((self.sectors - 1 - ENTRY_SECTORS) * SECTOR, bytes)
    }
}

/// First and last usable LBA of a disk of `sectors` sectors.
fn usable(sectors: u64) -> (u64, u64) {
    (2 + ENTRY_SECTORS, sectors - 2 - ENTRY_SECTORS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, first: u64, last: u64) -> Partition {
        Partition {
            name: name.into(),
            type_guid: LINUX_FILESYSTEM,
            guid: Uuid::from_u128(first as u128),
            first_lba: first,
            last_lba: last,
        }
    }

    #[test]
    fn headers_carry_their_crcs_and_point_at_each_other() {
        let table = Table::new(Uuid::from_u128(7), 8192, vec![part("a", 2048, 4095)]).unwrap();
        let primary = table.primary();
        assert_eq!(&primary[..8], b"EFI PART");
        let mut header = primary[..92].to_vec();
        let crc = u32::from_le_bytes(header[16..20].try_into().unwrap());
        header[16..20].fill(0);
        assert_eq!(crc32fast::hash(&header), crc);
        let entries_crc = u32::from_le_bytes(primary[88..92].try_into().unwrap());
        assert_eq!(crc32fast::hash(&primary[512..]), entries_crc);
        let (offset, backup) = table.backup();
        assert_eq!(offset + backup.len() as u64, 8192 * 512);
        let backup_header = &backup[backup.len() - 512..];
        assert_eq!(
            u64::from_le_bytes(backup_header[24..32].try_into().unwrap()),
            8191
        );
        assert_eq!(
            u64::from_le_bytes(backup_header[72..80].try_into().unwrap()),
            8191 - 32
        );
        // The name is UTF-16LE at byte 56 of the entry.
        assert_eq!(&primary[512 + 56..512 + 58], &[b'a', 0]);
    }

    #[test]
    fn overlaps_and_out_of_range_partitions_are_refused() {
        let guid = Uuid::from_u128(1);
        assert_eq!(
            Table::new(
                guid,
                8192,
                vec![part("a", 2048, 4095), part("b", 4095, 5000)]
            )
            .unwrap_err(),
            GptError::Overlap("a".into(), "b".into())
        );
        assert!(matches!(
            Table::new(guid, 8192, vec![part("a", 2048, 8191)]),
            Err(GptError::OutOfRange { .. })
        ));
        assert!(matches!(
            Table::new(guid, 8192, vec![part("a", 10, 100)]),
            Err(GptError::OutOfRange { .. })
        ));
        assert_eq!(
            Table::new(guid, 60, vec![]).unwrap_err(),
            GptError::TooSmall(60)
        );
    }

    #[test]
    fn the_protective_mbr_covers_the_disk_and_keeps_boot_code() {
        let table = Table::new(Uuid::from_u128(1), 8192, vec![]).unwrap();
        let mbr = table.protective_mbr(Some(&[0xeb; 512]));
        assert_eq!(mbr[439], 0xeb);
        assert_eq!(mbr[450], 0xee);
        assert_eq!(u32::from_le_bytes(mbr[454..458].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(mbr[458..462].try_into().unwrap()), 8191);
        assert_eq!(&mbr[510..], &[0x55, 0xaa]);
    }
}
