//! The parts of an ISO made from its image, kept as one derived entry of
//! the store (see [`crate::store::derived`]) keyed by everything they are
//! made from: the image's manifest digest, the epoch, the flavor's boot
//! paths, the squashfs settings and the versions of the tools that write
//! them. Re-running `kbuild iso` on an unchanged image finds them and
//! only re-assembles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{esp, grub, signed, squashfs, Firmware, IsoError, IsoTools};
use crate::digest::Digest;
use crate::executor::BuildOptions;
use crate::pipeline::Pipeline;
use crate::platform::Platform;
use crate::project::config::SquashfsSettings;
use crate::project::flavor::Boot;
use crate::report::{phase, watch_growth, Activity, ByteProgress};
use crate::sandbox::Cancel;
use crate::store::cache::LayerRecord;
use crate::store::derived::{DerivedEntry, FileRecord};

pub const SQUASHFS: &str = "filesystem.squashfs";
pub const KERNEL: &str = "kernel";
pub const INITRD: &str = "initrd";
pub const ELTORITO: &str = "eltorito.img";
pub const HYBRID_MBR: &str = "boot_hybrid.img";
pub const ESP: &str = "efi.img";
/// The note saying which EFI loader the ESP starts (`shim` or `grub`).
pub const EFI_NOTE: &str = "efi";
/// The EFI GRUB, only until it is inside the ESP.
pub const EFI_LOADER: &str = "loader.efi";

/// Bumped when what kbuild writes for the same inputs changes.
const FORMAT: u32 = 1;
/// How often the squashfs's size is reported while mksquashfs writes it.
const GROWTH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// What the parts are made from.
pub(super) struct Inputs<'a> {
    /// The image as a store name (the GRUB step builds `FROM` it).
    pub image_name: &'a str,
    pub image: &'a Digest,
    pub layers: &'a [LayerRecord],
    pub boot: &'a Boot,
    pub firmware: &'a Firmware,
    pub squashfs: &'a SquashfsSettings,
    pub epoch: i64,
    pub tools: &'a IsoTools,
}

#[derive(Serialize)]
struct KeyDocument<'a> {
    format: u32,
    image: &'a Digest,
    epoch: i64,
    boot: &'a Boot,
    arch: &'a str,
    squashfs: Vec<String>,
    tools: BTreeMap<&'static str, &'a str>,
}

impl Inputs<'_> {
    /// The key of the derived entry.
    pub fn key(&self) -> Digest {
        let document = KeyDocument {
            format: FORMAT,
            image: self.image,
            epoch: self.epoch,
            boot: self.boot,
            arch: self.firmware.arch.as_str(),
            squashfs: squashfs::options(self.squashfs),
            tools: self.tools.versions(),
        };
        Digest::of(&crate::store::canonical_json(&document))
    }
}

/// The parts, found or made.
pub(super) struct Parts {
    pub dir: PathBuf,
    pub entry: DerivedEntry,
    pub cached: bool,
}

impl Parts {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Bytes the parts will take in the ISO.
    pub fn size(&self) -> u64 {
        self.entry.files.values().map(|f| f.size).sum()
    }
}

/// How the parts are made, when they must be.
pub(super) struct Maker<'a> {
    pub pipeline: &'a Pipeline<'a>,
    pub options: &'a BuildOptions,
    pub platform: &'a Platform,
    pub cancel: &'a Cancel,
    /// The file the core images search for.
    pub marker: &'a str,
}

/// The parts of `inputs` under `key`, made if the store lacks them.
pub(super) fn ensure(inputs: &Inputs, key: &Digest, maker: &Maker) -> Result<Parts, IsoError> {
    let store = maker.pipeline.store();
    if let Some((dir, entry)) = store.derived(key)? {
        store.mark_used(&dir)?;
        return Ok(Parts {
            dir,
            entry,
            cached: true,
        });
    }
    let staging = store.staging_dir()?;
    let made = make(inputs, maker, &staging).and_then(|(files, notes)| {
        let entry = DerivedEntry {
            image: inputs.image.clone(),
            files,
            notes,
        };
        Ok(store.commit_derived(&staging, key, entry)?)
    });
    match made {
        Ok((dir, entry)) => Ok(Parts {
            dir,
            entry,
            cached: false,
        }),
        Err(e) => {
            let _ = crate::store::remove_tree(&staging);
            Err(e)
        }
    }
}

/// The files of the parts (their records filled in on commit) and notes:
/// `efi` is `shim` when the ESP boots the signed chain, else `grub`.
type Made = (BTreeMap<String, FileRecord>, BTreeMap<String, String>);

fn make(inputs: &Inputs, maker: &Maker, dir: &Path) -> Result<Made, IsoError> {
    let reporter = maker.pipeline.reporter();
    let firmware = inputs.firmware;
    let spec = grub::spec_text(inputs.image_name, &inputs.boot.grub, firmware, maker.marker);
    let efi_loader = phase(
        reporter,
        "grub",
        || {
            grub::core_images(
                maker.pipeline,
                maker.options,
                maker.platform,
                &spec,
                firmware,
                dir,
            )
        },
        |_| "core images made by the image's grub-mkimage".to_string(),
    )?;
    let squashfs = dir.join(SQUASHFS);
    let store = maker.pipeline.store();
    let chain = phase(
        reporter,
        "squashfs",
        || {
            store.with_image_root(inputs.layers, |root, merged| {
                let chain = match &inputs.boot.secure_boot {
                    Some(secure_boot) => signed::stage(
                        root,
                        secure_boot,
                        firmware,
                        dir,
                        &grub::embedded_config(maker.marker),
                    )?,
                    None => None,
                };
                super::copy_out(root, &inputs.boot.kernel, &dir.join(KERNEL))?;
                super::copy_out(root, &inputs.boot.initrd, &dir.join(INITRD))?;
                if firmware.bios {
                    let mbr = format!("{}/boot_hybrid.img", inputs.boot.grub.bios_modules);
                    super::copy_out(root, &mbr, &dir.join(HYBRID_MBR))?;
                }
                let progress =
                    ByteProgress::start(reporter, SQUASHFS.to_string(), Activity::Squashfs, 0);
                watch_growth(progress, &squashfs, GROWTH_INTERVAL, || {
                    squashfs::make(
                        &inputs.tools.mksquashfs,
                        merged,
                        &squashfs,
                        inputs.squashfs,
                        inputs.epoch,
                        maker.cancel,
                    )
                })?;
                Ok::<_, IsoError>(chain)
            })?
        },
        |_| {
            std::fs::metadata(&squashfs).map_or_else(
                |_| String::new(),
                |m| format!("{:.1} MiB", m.len() as f64 / (1 << 20) as f64),
            )
        },
    )?;
    let signed = chain.is_some();
    let files = chain.unwrap_or_else(|| {
        vec![(
            format!("EFI/BOOT/{}", firmware.efi_loader),
            efi_loader.clone(),
        )]
    });
    phase(
        reporter,
        "esp",
        || {
            esp::make(
                &inputs.tools.mtools,
                &files,
                &dir.join(ESP),
                volume_serial(inputs),
                inputs.epoch,
                maker.cancel,
            )
        },
        |_| {
            let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
            format!("FAT image with {}", names.join(", "))
        },
    )?;
    std::fs::remove_file(&efi_loader).map_err(IsoError::io(&efi_loader))?;
    signed::unstage(dir)?;
    let mut names = vec![SQUASHFS, KERNEL, INITRD, ESP];
    if firmware.bios {
        names.extend([ELTORITO, HYBRID_MBR]);
    }
    let files = names
        .into_iter()
        .map(|name| {
            (
                name.to_string(),
                FileRecord {
                    size: 0,
                    sha256: Digest::of(b""),
                },
            )
        })
        .collect();
    let efi = match signed {
        true => "shim",
        false => "grub",
    };
    Ok((
        files,
        BTreeMap::from([(EFI_NOTE.to_string(), efi.to_string())]),
    ))
}

/// The FAT volume serial: from the inputs, like every other id.
fn volume_serial(inputs: &Inputs) -> u32 {
    let key = inputs.key();
    u32::from_str_radix(&key.hex()[..8], 16).unwrap_or(0)
}
