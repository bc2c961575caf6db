//! Which architecture an ISO boots, read from the medium: the machine
//! type in the PE header of its removable-media EFI loader
//! (`EFI/BOOT/BOOTX64.EFI`, `BOOTAA64.EFI`) on its EFI system partition,
//! which a hybrid ISO lists in its GPT.
//!
//! Invariants:
//! * The ISO is only read: its GPT by offset, the ESP's files through
//!   mtools at the partition's offset (`-i ISO@@OFFSET`).
//! * Every offset and size taken from the ISO is bounds-checked.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::BootError;
use crate::pe::Pe;
use crate::project::Arch;
use crate::tools;

/// The EFI system partition's type GUID as GPT stores it (mixed-endian
/// C12A7328-F81F-11D2-BA4B-00A0C93EC93B).
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];

/// GPT's logical block size on an ISO (a disk's, not the CD's 2048).
const SECTOR: u64 = 512;

/// Partition entries read at most: GPT's usual 128.
const MAX_ENTRIES: u64 = 128;

/// The loaders tried, with the architecture each names.
const LOADERS: [(&str, Arch); 2] = [("BOOTX64.EFI", Arch::Amd64), ("BOOTAA64.EFI", Arch::Arm64)];

/// The architecture `iso` boots, by its EFI loader's PE machine: on the
/// ESP its GPT lists, else on the medium itself as a FAT image (a bare
/// ESP, as `kbuild uki` media are). `None` when the medium has no such
/// loader (a BIOS-only ISO) or mtools is missing: the caller decides.
pub fn iso_arch(iso: &Path) -> Result<Option<Arch>, BootError> {
    let esp = esp_offset(iso).map_err(|source| BootError::Io {
        path: iso.to_path_buf(),
        source,
    })?;
    let Ok(mcopy) = tools::locate(&tools::MCOPY) else {
        return Ok(None);
    };
    for offset in esp.into_iter().chain([0]) {
        for (name, _) in LOADERS {
            let Some(bytes) = loader(&mcopy, iso, offset, name) else {
                continue;
            };
            return pe_arch(&bytes)
                .map(Some)
                .ok_or_else(|| BootError::UnknownArch {
                    iso: iso.to_path_buf(),
                    reason: format!("EFI/BOOT/{name} is not an amd64 or arm64 EFI binary"),
                });
        }
    }
    Ok(None)
}

/// `EFI/BOOT/<name>` of the FAT file system at `offset` in `image`.
fn loader(mcopy: &tools::Located, image: &Path, offset: u64, name: &str) -> Option<Vec<u8>> {
    let mut at = std::ffi::OsString::from(image);
    at.push(format!("@@{offset}"));
    let mut command = mcopy.command([
        "-i".as_ref(),
        at.as_os_str(),
        format!("::/EFI/BOOT/{name}").as_ref(),
        "-".as_ref(),
    ]);
    command
        .env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let out = command.output().ok()?;
    out.status.success().then_some(out.stdout)
}

/// The architecture of a PE image's machine field.
fn pe_arch(bytes: &[u8]) -> Option<Arch> {
    match Pe::parse(bytes).ok()?.machine() {
        0x8664 => Some(Arch::Amd64),
        0xAA64 => Some(Arch::Arm64),
        _ => None,
    }
}

/// The byte offset of the first EFI system partition the GPT of `iso`
/// lists, if it has one.
fn esp_offset(iso: &Path) -> std::io::Result<Option<u64>> {
    let mut file = std::fs::File::open(iso)?;
    let size = file.metadata()?.len();
    let mut header = [0u8; 92];
    file.seek(SeekFrom::Start(SECTOR))?;
    if file.read_exact(&mut header).is_err() || &header[..8] != b"EFI PART" {
        return Ok(None);
    }
    let field = |at: usize, len: usize| {
        header[at..at + len]
            .iter()
            .rev()
            .fold(0u64, |n, b| n << 8 | u64::from(*b))
    };
    let entries_lba = field(72, 8);
    let count = field(80, 4).min(MAX_ENTRIES);
    let entry_size = field(84, 4);
    if !(128..=4096).contains(&entry_size) {
        return Ok(None);
    }
    let Some(start) = entries_lba.checked_mul(SECTOR) else {
        return Ok(None);
    };
    let mut entry = vec![0u8; entry_size as usize];
    for i in 0..count {
        file.seek(SeekFrom::Start(start + i * entry_size))?;
        file.read_exact(&mut entry)?;
        if entry[..16] == ESP_TYPE {
            let first_lba = u64::from_le_bytes(entry[32..40].try_into().expect("8 bytes"));
            let offset = first_lba.checked_mul(SECTOR).filter(|&o| o < size);
            return Ok(offset);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk image whose GPT lists one partition of `kind` at LBA 34.
    fn gpt_image(kind: [u8; 16]) -> tempfile::NamedTempFile {
        let mut disk = vec![0u8; 64 * 1024];
        let header = &mut disk[512..512 + 92];
        header[..8].copy_from_slice(b"EFI PART");
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[80..84].copy_from_slice(&4u32.to_le_bytes());
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        let entry = &mut disk[1024 + 128..1024 + 256];
        entry[..16].copy_from_slice(&kind);
        entry[32..40].copy_from_slice(&34u64.to_le_bytes());
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &disk).unwrap();
        file
    }

    #[test]
    fn the_esp_is_found_in_the_gpt_by_its_type() {
        let disk = gpt_image(ESP_TYPE);
        assert_eq!(esp_offset(disk.path()).unwrap(), Some(34 * 512));
        let other = gpt_image([7; 16]);
        assert_eq!(esp_offset(other.path()).unwrap(), None);
        let plain = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(plain.path(), vec![0u8; 4096]).unwrap();
        assert_eq!(esp_offset(plain.path()).unwrap(), None);
    }

    #[test]
    fn the_pe_machine_names_the_architecture() {
        let mut stub = crate::pe::tests::stub(0);
        let machine_at = u32::from_le_bytes(stub[0x3c..0x40].try_into().unwrap()) as usize + 4;
        stub[machine_at..machine_at + 2].copy_from_slice(&0xAA64u16.to_le_bytes());
        assert_eq!(pe_arch(&stub), Some(Arch::Arm64));
        stub[machine_at..machine_at + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(pe_arch(&stub), Some(Arch::Amd64));
        stub[machine_at..machine_at + 2].copy_from_slice(&0x014cu16.to_le_bytes());
        assert_eq!(pe_arch(&stub), None);
        assert_eq!(pe_arch(b"not a PE"), None);
    }
}
