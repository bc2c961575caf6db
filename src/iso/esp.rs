//! The EFI system partition: a FAT image with `EFI/BOOT/BOOT<ARCH>.EFI`
//! (the image's GRUB, or the distribution's signed shim with its signed
//! GRUB and MOK manager beside it), written by mtools (mformat, mmd,
//! mcopy).
//!
//! Invariants:
//! * Byte-for-byte reproducible: mtools takes every time it writes from
//!   `SOURCE_DATE_EPOCH` (with `TZ=UTC`), the volume serial is given
//!   (`-N`, derived from the inputs), and no host mtools config is read.
//! * The image is a file kbuild creates; mtools never sees a device.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::IsoError;
use crate::sandbox::Cancel;
use crate::tools::Located;

/// The FAT volume label (Kairos' is the same).
pub const LABEL: &str = "EFI_LIVE";

const MIB: u64 = 1 << 20;

/// The three mtools programs, located.
pub(crate) struct Mtools {
    pub mformat: Located,
    pub mmd: Located,
    pub mcopy: Located,
}

/// Size of the FAT image for `payload` bytes of files: whole MiB with
/// room for the file system's own structures, at least 4 MiB.
pub(super) fn image_size(payload: u64) -> u64 {
    (payload.div_ceil(MIB) + 2).max(4) * MIB
}

/// The FAT volume: its label and the smallest size it may have (it grows
/// to hold its files).
pub(crate) struct Volume<'a> {
    pub label: &'a str,
    pub min_size: u64,
    pub serial: u32,
}

fn command(tool: &Located, args: &[&std::ffi::OsStr], epoch: i64) -> Command {
    let mut command = tool.command(args);
    command
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TZ", "UTC")
        .env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1");
    command
}

/// Writes the ESP image `dest` holding `files` (path on the ESP, e.g.
/// `EFI/BOOT/BOOTX64.EFI`, and the file to copy there).
pub(crate) fn make(
    tools: &Mtools,
    files: &[(String, PathBuf)],
    dest: &Path,
    volume: &Volume,
    epoch: i64,
    cancel: &Cancel,
) -> Result<(), IsoError> {
    let mut payload = 0;
    for (_, file) in files {
        payload += std::fs::metadata(file).map_err(IsoError::io(file))?.len();
    }
    let sectors = (image_size(payload).max(volume.min_size) / 512).to_string();
    let serial = format!("{:08x}", volume.serial);
    let image = dest.as_os_str();
    let run = |tool: &Located, args: &[&std::ffi::OsStr]| {
        tool.run_command(command(tool, args, epoch), cancel)
    };
    run(
        &tools.mformat,
        &[
            "-i".as_ref(),
            image,
            "-C".as_ref(),
            "-T".as_ref(),
            sectors.as_ref(),
            "-h".as_ref(),
            "64".as_ref(),
            "-s".as_ref(),
            "32".as_ref(),
            "-N".as_ref(),
            serial.as_ref(),
            "-v".as_ref(),
            volume.label.as_ref(),
            "::".as_ref(),
        ],
    )?;
    // Every directory the files need, parents first (a parent sorts
    // before its children).
    let dirs: BTreeSet<String> = files
        .iter()
        .flat_map(|(path, _)| {
            let parts: Vec<&str> = path.split('/').collect();
            (1..parts.len())
                .map(|n| format!("::/{}", parts[..n].join("/")))
                .collect::<Vec<_>>()
        })
        .collect();
    if !dirs.is_empty() {
        let mut args: Vec<&std::ffi::OsStr> = vec!["-i".as_ref(), image];
        args.extend(dirs.iter().map(|d| std::ffi::OsStr::new(d.as_str())));
        run(&tools.mmd, &args)?;
    }
    for (path, file) in files {
        let target = format!("::/{path}");
        run(
            &tools.mcopy,
            &["-i".as_ref(), image, file.as_os_str(), target.as_ref()],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_mebibytes_with_room() {
        assert_eq!(image_size(0), 4 * MIB);
        assert_eq!(image_size(300_000), 4 * MIB);
        assert_eq!(image_size(3 * MIB), 5 * MIB);
        assert_eq!(image_size(3 * MIB + 1), 6 * MIB);
    }
}
