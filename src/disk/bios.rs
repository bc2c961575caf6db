//! GRUB's BIOS boot path on a GPT disk, installed by kbuild the way
//! `grub-bios-setup` does it for a core image embedded in a BIOS boot
//! partition (GRUB 2.06, `util/setup.c`), without running anything from
//! the image on the host:
//!
//! ```text
//! MBR:  boot.img's first 440 bytes; at 0x5c the LBA of core.img's first
//!       sector; the "drive is a floppy" jump at 0x66 replaced by NOPs
//! core.img (made by `grub-mkimage -O i386-pc`, diskboot.img in front):
//!       its first sector's block list (the last 12 bytes: start u64,
//!       sectors u16, segment u16) points at the sectors after it
//! ```
//!
//! Invariants: both images are checked for the layout this code patches
//! (boot signature, the default block list grub-mkimage leaves), so an
//! unexpected GRUB fails the disk instead of writing one that cannot boot.

use super::DiskError;

const KERNEL_SECTOR: usize = 0x5c;
const DRIVE_CHECK: usize = 0x66;
const BLOCKLIST: usize = 512 - 12;
/// The segment grub-mkimage's diskboot.img loads the rest of core.img to.
const CORE_SEGMENT: u16 = 0x0820;

fn unexpected(what: &str) -> DiskError {
    DiskError::Grub(what.to_string())
}

/// The MBR boot code: boot.img made to load core.img from `core_lba`.
pub fn boot_code(boot_img: &[u8], core_lba: u64) -> Result<Vec<u8>, DiskError> {
    if boot_img.len() != 512 || boot_img[510..] != [0x55, 0xaa] {
        return Err(unexpected("boot.img is not a 512-byte boot sector"));
    }
    let mut code = boot_img[..super::gpt::BOOT_CODE].to_vec();
    code[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    // A hard disk: trust the drive number the BIOS passes.
    code[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(code)
}

/// core.img with its block list pointing at the sectors after its first,
/// which is written at `core_lba`.
pub fn core_image(mut core: Vec<u8>, core_lba: u64) -> Result<Vec<u8>, DiskError> {
    if core.len() < 1024 {
        return Err(unexpected("core.img is shorter than two sectors"));
    }
    let list = &core[BLOCKLIST..512];
    let start = u64::from_le_bytes(list[0..8].try_into().expect("8 bytes"));
    let sectors = u16::from_le_bytes([list[8], list[9]]);
    let segment = u16::from_le_bytes([list[10], list[11]]);
    let rest = (core.len() as u64 - 512).div_ceil(512);
    if start != 2 || segment != CORE_SEGMENT || u64::from(sectors) != rest {
        return Err(unexpected(
            "core.img's first block list is not the one grub-mkimage -O i386-pc writes",
        ));
    }
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core.resize(512 * (rest as usize + 1), 0);
    Ok(core)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_img() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0xeb;
        b[KERNEL_SECTOR] = 1;
        b[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0xeb, 0x05]);
        b[510..].copy_from_slice(&[0x55, 0xaa]);
        b
    }

    fn core_img(sectors: u16) -> Vec<u8> {
        let mut c = vec![0u8; 512 * (sectors as usize + 1) - 100];
        c[BLOCKLIST] = 2;
        c[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&sectors.to_le_bytes());
        c[BLOCKLIST + 10..512].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
        c
    }

    #[test]
    fn boot_code_points_at_core_and_skips_the_floppy_check() {
        let code = boot_code(&boot_img(), 2048).unwrap();
        assert_eq!(code.len(), 440);
        assert_eq!(
            &code[KERNEL_SECTOR..KERNEL_SECTOR + 8],
            &2048u64.to_le_bytes()
        );
        assert_eq!(&code[DRIVE_CHECK..DRIVE_CHECK + 2], &[0x90, 0x90]);
        assert!(boot_code(&[0u8; 512], 2048).is_err());
    }

    #[test]
    fn core_block_list_follows_its_first_sector() {
        let core = core_image(core_img(40), 2048).unwrap();
        assert_eq!(core.len(), 41 * 512);
        assert_eq!(&core[BLOCKLIST..BLOCKLIST + 8], &2049u64.to_le_bytes());
        assert_eq!(&core[BLOCKLIST + 8..BLOCKLIST + 10], &40u16.to_le_bytes());
        let mut wrong = core_img(40);
        wrong[BLOCKLIST + 10] = 0;
        assert!(core_image(wrong, 2048).is_err());
    }
}
