//! The live root as squashfs: mksquashfs over the read-only view of the
//! image, with the project's compressor and 1 MiB blocks.
//!
//! Invariants:
//! * mksquashfs 4.5+ writes the same bytes for the same tree (its default);
//!   `SOURCE_DATE_EPOCH` sets the filesystem time and clamps newer file
//!   times, so the epoch kbuild derives makes the whole file reproducible.
//! * It runs until done or until the cancel flag is set, then is killed:
//!   Ctrl-C never leaves it running.
//! * Device stand-ins of a rootless store (see `layer::placeholder`) are
//!   excluded from the source and added back as pseudo-file devices with
//!   the stand-in's mode, owner and (clamped) time: the bytes a root
//!   store's real nodes give.

use std::path::Path;
use std::process::Command;

use super::IsoError;
use crate::project::config::{SquashfsCompression, SquashfsSettings};
use crate::sandbox::Cancel;
use crate::store::StandIn;
use crate::tools::Located;

/// The zstd level used when kbuild.yaml names none: the knee of the
/// size/time table in docs/BENCHMARKS.md.
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;

/// Block size: 1 MiB, the largest squashfs allows, compresses best and
/// reads fastest from optical media.
const BLOCK_SIZE: &str = "1M";

/// The arguments after the source and destination.
pub(super) fn options(settings: &SquashfsSettings) -> Vec<String> {
    let mut args: Vec<String> = ["-noappend", "-no-progress", "-quiet", "-b", BLOCK_SIZE]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (name, level) = match settings.compression {
        SquashfsCompression::Zstd => ("zstd", Some(settings.level.unwrap_or(DEFAULT_ZSTD_LEVEL))),
        SquashfsCompression::Gzip => ("gzip", settings.level),
        SquashfsCompression::Xz => ("xz", None),
        SquashfsCompression::Lz4 => ("lz4", None),
    };
    args.extend(["-comp".to_string(), name.to_string()]);
    if let Some(level) = level {
        args.extend(["-Xcompression-level".to_string(), level.to_string()]);
    }
    args
}

/// What to pack: a mounted view and the device stand-ins it holds.
pub(super) struct Source<'a> {
    pub root: &'a Path,
    pub stand_ins: &'a [StandIn],
}

/// Packs `source` into `dest`.
pub(super) fn make(
    tool: &Located,
    source: &Source,
    dest: &Path,
    settings: &SquashfsSettings,
    epoch: i64,
    cancel: &Cancel,
) -> Result<(), IsoError> {
    let mut command: Command = tool.command([source.root.as_os_str(), dest.as_os_str()]);
    command
        .args(options(settings))
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TZ", "UTC");
    let pseudo_file = dest.with_extension("pseudo");
    if !source.stand_ins.is_empty() {
        let text = pseudo_devices(source.stand_ins, epoch)?;
        std::fs::write(&pseudo_file, text).map_err(IsoError::io(&pseudo_file))?;
        command.arg("-pf").arg(&pseudo_file);
    }
    let result = tool.run_command(command, cancel);
    let _ = std::fs::remove_file(&pseudo_file);
    result?;
    Ok(())
}

/// mksquashfs 4.5 pseudo definitions (`path C|B time mode uid gid major
/// minor`) of the stand-ins, times clamped to `epoch` as mksquashfs clamps
/// real files.
fn pseudo_devices(stand_ins: &[StandIn], epoch: i64) -> Result<String, IsoError> {
    let mut text = String::new();
    for stand_in in stand_ins {
        if !stand_in
            .path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@:".contains(&b))
        {
            return Err(IsoError::io(Path::new(&stand_in.path))(
                std::io::Error::other(
                    "a device node whose name a mksquashfs pseudo file cannot carry",
                ),
            ));
        }
        text.push_str(&format!(
            "{} {} {} {:o} {} {} {} {}\n",
            stand_in.path,
            if stand_in.node.block { 'B' } else { 'C' },
            stand_in.mtime.min(epoch).max(0),
            stand_in.mode,
            stand_in.uid,
            stand_in.gid,
            stand_in.node.major,
            stand_in.node.minor,
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_become_pseudo_devices_with_clamped_times_and_plain_names_only() {
        let stand_in = |path: &str| StandIn {
            path: path.to_string(),
            node: crate::layer::DeviceNode {
                block: false,
                major: 1,
                minor: 3,
            },
            mode: 0o666,
            uid: 0,
            gid: 5,
            mtime: 1_700_000_000,
        };
        let text = pseudo_devices(&[stand_in("dev/null")], 1_000).unwrap();
        assert_eq!(text, "dev/null C 1000 666 0 5 1 3\n");
        let later = pseudo_devices(&[stand_in("dev/null")], i64::MAX).unwrap();
        assert_eq!(later, "dev/null C 1700000000 666 0 5 1 3\n");
        assert!(pseudo_devices(&[stand_in("dev/a b")], 1_000).is_err());
        assert!(pseudo_devices(&[stand_in("dev/\"q")], 1_000).is_err());
    }

    #[test]
    fn zstd_with_1m_blocks_by_default_and_levels_only_where_they_exist() {
        let args = options(&SquashfsSettings::default()).join(" ");
        assert_eq!(
            args,
            "-noappend -no-progress -quiet -b 1M -comp zstd -Xcompression-level 3"
        );
        let xz = options(&SquashfsSettings {
            compression: SquashfsCompression::Xz,
            level: Some(9),
        })
        .join(" ");
        assert!(xz.ends_with("-comp xz"), "{xz}");
        let gzip = options(&SquashfsSettings {
            compression: SquashfsCompression::Gzip,
            level: Some(9),
        })
        .join(" ");
        assert!(gzip.ends_with("-comp gzip -Xcompression-level 9"), "{gzip}");
    }
}
