//! The EFI system partition: a FAT image with `EFI/BOOT/BOOT<ARCH>.EFI`,
//! written by mtools (mformat, mmd, mcopy).
//!
//! Invariants:
//! * Byte-for-byte reproducible: mtools takes every time it writes from
//!   `SOURCE_DATE_EPOCH` (with `TZ=UTC`), the volume serial is given
//!   (`-N`, derived from the inputs), and no host mtools config is read.
//! * The image is a file kbuild creates; mtools never sees a device.

use std::path::Path;
use std::process::Command;

use super::{Firmware, IsoError};
use crate::sandbox::Cancel;
use crate::tools::Located;

/// The FAT volume label (Kairos' is the same).
pub const LABEL: &str = "EFI_LIVE";

const MIB: u64 = 1 << 20;

/// The three mtools programs, located.
pub(super) struct Mtools {
    pub mformat: Located,
    pub mmd: Located,
    pub mcopy: Located,
}

/// Size of the FAT image for `payload` bytes of files: whole MiB with
/// room for the file system's own structures, at least 4 MiB.
pub(super) fn image_size(payload: u64) -> u64 {
    (payload.div_ceil(MIB) + 2).max(4) * MIB
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

/// Writes the ESP image `dest` holding `loader` as the firmware's default
/// boot file; `serial` is the FAT volume serial.
pub(super) fn make(
    tools: &Mtools,
    firmware: &Firmware,
    loader: &Path,
    dest: &Path,
    serial: u32,
    epoch: i64,
    cancel: &Cancel,
) -> Result<(), IsoError> {
    let payload = std::fs::metadata(loader)
        .map_err(IsoError::io(loader))?
        .len();
    let sectors = (image_size(payload) / 512).to_string();
    let serial = format!("{serial:08x}");
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
            LABEL.as_ref(),
            "::".as_ref(),
        ],
    )?;
    run(
        &tools.mmd,
        &[
            "-i".as_ref(),
            image,
            "::/EFI".as_ref(),
            "::/EFI/BOOT".as_ref(),
        ],
    )?;
    let target = format!("::/EFI/BOOT/{}", firmware.efi_loader);
    run(
        &tools.mcopy,
        &["-i".as_ref(), image, loader.as_os_str(), target.as_ref()],
    )?;
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
