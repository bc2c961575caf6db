//! The raw disk in the formats clouds and hypervisors import:
//! * qcow2: `qemu-img convert` (compat 1.1; no time or random id in it);
//! * VHD (Azure): a fixed VHD, `qemu-img convert -O vpc` with
//!   `force_size` so the virtual size is the raw size exactly (a whole
//!   number of MiB), then its footer's time stamp and UUID set from the
//!   epoch and the disk's ids and its checksum recomputed;
//! * GCE: `disk.raw` in a gzip'd tar in GNU format, the raw disk already
//!   a whole number of GiB (its GPT laid out for that size).
//!
//! Invariants: each output is a function of the raw disk, the epoch and
//! the ids alone.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use uuid::Uuid;

use super::DiskError;
use crate::sandbox::Cancel;
use crate::tools::Located;

/// Seconds from the Unix epoch to the VHD epoch (2000-01-01T00:00:00Z).
const VHD_EPOCH: i64 = 946_684_800;
const FOOTER: u64 = 512;

pub fn qcow2(
    qemu_img: &Located,
    raw: &Path,
    dest: &Path,
    cancel: &Cancel,
) -> Result<(), DiskError> {
    let command = qemu_img.command([
        "convert".as_ref(),
        "-f".as_ref(),
        "raw".as_ref(),
        "-O".as_ref(),
        "qcow2".as_ref(),
        "-o".as_ref(),
        "compat=1.1".as_ref(),
        raw.as_os_str(),
        dest.as_os_str(),
    ]);
    qemu_img.run_command(command, cancel)?;
    Ok(())
}

pub fn vhd(
    qemu_img: &Located,
    raw: &Path,
    dest: &Path,
    epoch: i64,
    id: Uuid,
    cancel: &Cancel,
) -> Result<(), DiskError> {
    let command = qemu_img.command([
        "convert".as_ref(),
        "-f".as_ref(),
        "raw".as_ref(),
        "-O".as_ref(),
        "vpc".as_ref(),
        "-o".as_ref(),
        "subformat=fixed,force_size=on".as_ref(),
        raw.as_os_str(),
        dest.as_os_str(),
    ]);
    qemu_img.run_command(command, cancel)?;
    fix_footer(dest, epoch, id).map_err(DiskError::io(dest))
}

/// Sets the fixed VHD footer's time stamp and UUID, and its checksum.
fn fix_footer(path: &Path, epoch: i64, id: Uuid) -> std::io::Result<()> {
    let mut file = File::options().read(true).write(true).open(path)?;
    let length = file.metadata()?.len();
    let bad = |what: &str| std::io::Error::other(format!("qemu-img wrote no fixed VHD: {what}"));
    if length < FOOTER {
        return Err(bad("too short"));
    }
    file.seek(SeekFrom::Start(length - FOOTER))?;
    let mut footer = [0u8; FOOTER as usize];
    file.read_exact(&mut footer)?;
    if &footer[..8] != b"conectix" {
        return Err(bad("no footer cookie"));
    }
    if u32::from_be_bytes(footer[60..64].try_into().expect("4 bytes")) != 2 {
        return Err(bad("not the fixed disk type"));
    }
    let stamp = u32::try_from((epoch - VHD_EPOCH).max(0)).unwrap_or(u32::MAX);
    footer[24..28].copy_from_slice(&stamp.to_be_bytes());
    footer[68..84].copy_from_slice(id.as_bytes());
    footer[64..68].fill(0);
    let sum = footer
        .iter()
        .fold(0u32, |sum, b| sum.wrapping_add(u32::from(*b)));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
    file.seek(SeekFrom::Start(length - FOOTER))?;
    file.write_all(&footer)?;
    file.sync_all()
}

/// `disk.raw` (the raw disk at `raw`) in a gzip'd GNU tar at `dest`.
pub fn gce(raw: &Path, dest: &Path, epoch: i64) -> std::io::Result<()> {
    let mut source = File::open(raw)?;
    let size = source.metadata()?.len();
    let out = std::io::BufWriter::new(File::create(dest)?);
    // No name and a fixed time in the gzip header.
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    let mut header = tar::Header::new_gnu();
    header.set_path("disk.raw")?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(epoch).unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append(&header, &mut source)?;
    let gzip = tar.into_inner()?;
    gzip.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footer_gets_the_epoch_the_id_and_a_valid_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.vhd");
        let mut bytes = vec![0u8; 1024 + 512];
        let footer = &mut bytes[1024..];
        footer[..8].copy_from_slice(b"conectix");
        footer[60..64].copy_from_slice(&2u32.to_be_bytes());
        footer[24..28].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        fix_footer(&path, 1_700_000_000, Uuid::from_u128(9)).unwrap();
        let written = std::fs::read(&path).unwrap();
        let footer = &written[1024..];
        assert_eq!(
            u32::from_be_bytes(footer[24..28].try_into().unwrap()),
            (1_700_000_000 - VHD_EPOCH) as u32
        );
        assert_eq!(&footer[68..84], Uuid::from_u128(9).as_bytes());
        let mut zeroed = footer.to_vec();
        zeroed[64..68].fill(0);
        let sum = zeroed
            .iter()
            .fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
        assert_eq!(u32::from_be_bytes(footer[64..68].try_into().unwrap()), !sum);
        // Not a fixed VHD: refused.
        let other = dir.path().join("x");
        std::fs::write(&other, vec![0u8; 1024]).unwrap();
        assert!(fix_footer(&other, 0, Uuid::nil()).is_err());
    }

    #[test]
    fn the_gce_archive_holds_disk_raw_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("r");
        std::fs::write(&raw, vec![7u8; 4096]).unwrap();
        let dest = dir.path().join("g.tar.gz");
        gce(&raw, &dest, 1_700_000_000).unwrap();
        let first = std::fs::read(&dest).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&first[..]));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["disk.raw"]);
        gce(&raw, &dest, 1_700_000_000).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), first);
    }
}
