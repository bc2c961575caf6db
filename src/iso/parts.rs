//! The parts of an ISO made from its image, kept as one derived entry of
//! the store (see [`crate::store::derived`]) keyed by everything they are
//! made from: the image's manifest digest, the epoch, the flavor's boot
//! paths, the squashfs settings and the versions of the tools that write
//! them. Re-running `kbuild iso` on an unchanged image finds them and
//! only re-assembles.
//!
//! With `--uki` the parts are the squashfs and an ESP holding the UKI;
//! its command line and, when signed, the digests of the certificate and
//! key are part of the key, since they are part of its bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{esp, grub, signed, squashfs, Firmware, IsoError, IsoTools, Signer, UkiBoot};
use crate::digest::Digest;
use crate::executor::BuildOptions;
use crate::pipeline::Pipeline;
use crate::platform::Platform;
use crate::project::config::SquashfsSettings;
use crate::project::flavor::Boot;
use crate::report::{phase, watch_growth, Activity, ByteProgress};
use crate::rootfs::Root;
use crate::sandbox::Cancel;
use crate::store::cache::LayerRecord;
use crate::store::derived::{DerivedEntry, FileRecord};
use crate::tools;

pub const SQUASHFS: &str = "filesystem.squashfs";
pub const KERNEL: &str = "kernel";
pub const INITRD: &str = "initrd";
pub const ELTORITO: &str = "eltorito.img";
pub const HYBRID_MBR: &str = "boot_hybrid.img";
pub const ESP: &str = "efi.img";
/// The note saying which EFI loader the ESP starts: one of the four below.
pub const EFI_NOTE: &str = "efi";
pub const EFI_GRUB: &str = "grub";
pub const EFI_SHIM: &str = "shim";
pub const EFI_UKI: &str = "uki";
pub const EFI_SIGNED_UKI: &str = "signed-uki";
/// The EFI GRUB or the UKI, only until it is inside the ESP.
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
    pub uki: Option<&'a UkiInputs>,
}

/// `--uki`: what the UKI on the ESP is made from besides the image.
pub(super) struct UkiInputs {
    pub cmdline: String,
    pub signer: Option<Signer>,
    signature: Option<SignatureKey>,
}

/// What a signature's bytes are a function of (RSA PKCS#1 v1.5 with the
/// signing time fixed): the certificate, the key and the signing tool.
#[derive(Serialize)]
struct SignatureKey {
    cert: Digest,
    key: Digest,
    osslsigncode: String,
}

impl UkiInputs {
    /// Reads the signer's files and locates the signing tool, so that a
    /// missing one, or a flavor that names no EFI stub, fails the run
    /// before any work.
    pub fn new(boot: &UkiBoot, flavor: &Boot, cmdline: String) -> Result<UkiInputs, IsoError> {
        if flavor.uki.is_none() {
            return Err(crate::uki::UkiError::NoStubConfigured.into());
        }
        let hash = |path: &Path| {
            crate::store::hash_file(path).map_err(|source| IsoError::Signer {
                path: path.to_path_buf(),
                source,
            })
        };
        let signature = match &boot.signer {
            Some(signer) => Some(SignatureKey {
                cert: hash(&signer.cert)?,
                key: hash(&signer.key)?,
                osslsigncode: tools::locate(&tools::OSSLSIGNCODE)?.version,
            }),
            None => None,
        };
        Ok(UkiInputs {
            cmdline,
            signer: boot.signer.clone(),
            signature,
        })
    }
}

#[derive(Serialize)]
struct UkiKey<'a> {
    cmdline: &'a str,
    signature: Option<&'a SignatureKey>,
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
    /// Absent for GRUB, so the keys of GRUB parts stay what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    uki: Option<UkiKey<'a>>,
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
            uki: self.uki.map(|uki| UkiKey {
                cmdline: &uki.cmdline,
                signature: uki.signature.as_ref(),
            }),
        };
        Digest::of(&crate::store::canonical_json(&document))
    }
}

/// The parts, found or made.
pub(crate) struct Parts {
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
/// `efi` names what the ESP starts ([`EFI_GRUB`], [`EFI_SHIM`],
/// [`EFI_UKI`] or [`EFI_SIGNED_UKI`]).
type Made = (BTreeMap<String, FileRecord>, BTreeMap<String, String>);

fn make(inputs: &Inputs, maker: &Maker, dir: &Path) -> Result<Made, IsoError> {
    let reporter = maker.pipeline.reporter();
    let firmware = inputs.firmware;
    let store = maker.pipeline.store();
    let efi_loader = dir.join(EFI_LOADER);
    match inputs.uki {
        None => {
            let spec =
                grub::spec_text(inputs.image_name, &inputs.boot.grub, firmware, maker.marker);
            phase(
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
        }
        Some(uki) => {
            phase(
                reporter,
                "uki",
                || {
                    store.with_image_root(inputs.layers, |root, _| {
                        make_uki(root, inputs, uki, &efi_loader)
                    })?
                },
                |_| {
                    let size = std::fs::metadata(&efi_loader).map_or(0, |m| m.len());
                    let signed = match uki.signer {
                        Some(_) => "signed",
                        None => "unsigned",
                    };
                    format!("{signed} unified kernel image, {:.1} MiB", mib(size))
                },
            )?;
        }
    }
    let squashfs = dir.join(SQUASHFS);
    let chain = phase(
        reporter,
        "squashfs",
        || {
            store.with_image_root(inputs.layers, |root, merged| {
                let chain = match (inputs.uki, &inputs.boot.secure_boot) {
                    (None, Some(secure_boot)) => signed::stage(
                        root,
                        secure_boot,
                        firmware,
                        dir,
                        &grub::embedded_config(maker.marker),
                    )?,
                    _ => None,
                };
                if inputs.uki.is_none() {
                    super::copy_out(root, &inputs.boot.kernel, &dir.join(KERNEL))?;
                    super::copy_out(root, &inputs.boot.initrd, &dir.join(INITRD))?;
                }
                if firmware.bios {
                    let mbr = format!("{}/boot_hybrid.img", inputs.boot.grub.bios_modules);
                    super::copy_out(root, &mbr, &dir.join(HYBRID_MBR))?;
                }
                let progress =
                    ByteProgress::start(reporter, SQUASHFS.to_string(), Activity::Squashfs, 0);
                let stand_ins = store.image_stand_ins(inputs.layers)?;
                watch_growth(progress, &squashfs, GROWTH_INTERVAL, || {
                    squashfs::make(
                        &inputs.tools.mksquashfs,
                        &squashfs::Source {
                            root: merged,
                            stand_ins: &stand_ins,
                        },
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
            std::fs::metadata(&squashfs)
                .map_or_else(|_| String::new(), |m| format!("{:.1} MiB", mib(m.len())))
        },
    )?;
    let efi = match (&chain, inputs.uki) {
        (Some(_), _) => EFI_SHIM,
        (None, None) => EFI_GRUB,
        (None, Some(uki)) if uki.signer.is_some() => EFI_SIGNED_UKI,
        (None, Some(_)) => EFI_UKI,
    };
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
                &esp::Volume {
                    label: esp::LABEL,
                    min_size: 0,
                    serial: volume_serial(inputs),
                },
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
    let mut names = vec![SQUASHFS, ESP];
    if inputs.uki.is_none() {
        names.extend([KERNEL, INITRD]);
    }
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
    Ok((
        files,
        BTreeMap::from([(EFI_NOTE.to_string(), efi.to_string())]),
    ))
}

/// The UKI of the image at `root`, signed when asked, written to `dest`.
fn make_uki(root: &Root, inputs: &Inputs, uki: &UkiInputs, dest: &Path) -> Result<(), IsoError> {
    let image = crate::uki::of_root(root, inputs.boot, inputs.firmware.arch, &uki.cmdline)?;
    crate::uki::write(&image, dest, uki.signer.as_ref(), inputs.epoch)?;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The FAT volume serial: from the inputs, like every other id.
fn volume_serial(inputs: &Inputs) -> u32 {
    let key = inputs.key();
    u32::from_str_radix(&key.hex()[..8], 16).unwrap_or(0)
}
