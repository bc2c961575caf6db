//! `kbuild disk`: a cell's image as a GPT disk in Kairos' layout
//! ([`layout`]), bootable on BIOS, UEFI or both, written as files: no
//! loop device, no mount, no root.
//!
//! ```text
//! image + ISO parts (kernel, initrd, squashfs)   crate::iso::prepare
//! disk parts (derived entry keyed by the ISO parts, firmware, tools):
//!   GRUB step: the image's grub-mkimage -> core.img (i386-pc) and the
//!              EFI GRUB, both finding COS_RECOVERY by label
//!   or the image's signed shim chain on the ESP
//!   boot.img   <- the image's GRUB; esp.img (COS_GRUB, FAT, mtools)
//! raw disk in a temp file of the output directory:
//!   protective MBR (+ boot.img) | GPT | bios: core.img | efi: esp.img
//!   oem: COS_OEM ext2 with the cloud-config
//!   recovery: COS_RECOVERY ext2 with the ISO's tree (grub.cfg, kernel,
//!             initrd, squashfs), booted by the flavor's live init
//! formats: raw | qcow2 (qemu-img) | vhd (fixed) | gce (disk.raw in tar.gz)
//! ```
//!
//! Invariants:
//! * Every id (disk and partition GUIDs, FAT serial, ext2 UUIDs and hash
//!   seeds) derives from the image digest, the epoch and the firmware,
//!   and every time is the epoch: the same image gives the same bytes.
//! * Artifacts are published as [`crate::artifact`] says: whole or not at
//!   all, left alone when a re-run would write the same bytes.
//! * Nothing from the image runs on the host: its grub-mkimage runs in the
//!   sandbox; its files are read through the image root.

pub mod bios;
pub mod ext2;
pub mod formats;
pub mod gpt;
pub mod layout;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::artifact;
use crate::compose::image::ImageReport;
use crate::digest::Digest;
use crate::iso::{self, esp, grub, parts, IsoError, IsoRequest, Prepared};
use crate::project::{Arch, Project};
use crate::report::{phase, Reporter};
use crate::sandbox::Cancel;
use crate::store::atomic::TempFile;
use crate::store::derived::{DerivedEntry, FileRecord};
use crate::store::{Store, StoreError};
use crate::tools::{self, Located, ToolError};
pub use layout::DiskFirmware;
use layout::{Ids, Layout, Role};

/// Bumped when what kbuild writes for the same inputs changes.
const FORMAT: u32 = 1;
/// Where the cloud-config goes on `COS_OEM` (Kairos reads `/oem/*.yaml`).
pub const CLOUD_CONFIG: &str = "90_custom.yaml";
const GIB: u64 = 1 << 30;
/// The largest `--size` taken: 64 TiB.
const MAX_SIZE: u64 = 64 << 40;

/// What a disk is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vhd,
    Gce,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Gce => "gce",
        }
    }

    /// The file name suffix.
    pub fn extension(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Gce => "gce.tar.gz",
        }
    }
}

pub struct DiskRequest {
    /// The cell, `--from`, `-o`, `--name` and `--cmdline`, as for an ISO.
    pub iso: IsoRequest,
    pub formats: Vec<DiskFormat>,
    pub firmware: DiskFirmware,
    /// The raw disk's size; at least what the partitions need.
    pub size: Option<u64>,
    /// A cloud-config for `COS_OEM`.
    pub cloud_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskArtifact {
    pub format: DiskFormat,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// False when it was already up to date.
    pub written: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub name: String,
    pub label: Option<&'static str>,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct DiskReport {
    pub image: String,
    pub image_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built: Option<ImageReport>,
    pub firmware: DiskFirmware,
    /// What the ESP starts (`grub` or `shim`); none on a BIOS-only disk.
    pub efi: Option<String>,
    /// The raw disk's size and partitions.
    pub size: u64,
    pub partitions: Vec<PartitionReport>,
    pub artifacts: Vec<DiskArtifact>,
    pub parts_cached: bool,
    pub epoch: i64,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Iso(#[from] IsoError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gpt(#[from] gpt::GptError),
    #[error("unexpected GRUB image: {0}")]
    Grub(String),
    #[error("{0:?} is not a plain path for an ext2 partition")]
    BadPath(String),
    #[error("--size {} MiB is smaller than the {} MiB the partitions need", asked >> 20, needed >> 20)]
    TooSmall { asked: u64, needed: u64 },
    #[error("--size {} GiB is more than the 64 TiB kbuild writes", .0 >> 30)]
    TooLarge(u64),
    #[error("the output directory {} holds a `?`, which e2fsprogs reads as the start of its options", .0.display())]
    QuestionMark(PathBuf),
    #[error("{0} firmware cannot boot an {1} disk (UEFI only)")]
    NoBios(&'static str, Arch),
    #[error("the {part} ({} KiB) does not fit its {} KiB partition", size >> 10, room >> 10)]
    DoesNotFit {
        part: &'static str,
        size: u64,
        room: u64,
    },
    #[error("debugfs could not fill {label}: {output}")]
    Debugfs { label: String, output: String },
    #[error("--cloud-config {}: {reason}", path.display())]
    CloudConfig { path: PathBuf, reason: String },
    #[error("--uki and --overlay-iso are ISO options; a disk boots GRUB from its ESP")]
    IsoOnly,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted")]
    Cancelled,
}

impl DiskError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
        move |source| DiskError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the request or the project files are at fault (exit 2).
    pub fn is_input(&self) -> bool {
        match self {
            DiskError::Iso(e) => e.is_input(),
            DiskError::TooSmall { .. }
            | DiskError::TooLarge(_)
            | DiskError::QuestionMark(_)
            | DiskError::NoBios(..)
            | DiskError::CloudConfig { .. }
            | DiskError::IsoOnly => true,
            _ => false,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            DiskError::Iso(e) => e.hint(),
            DiskError::Tool(e) => e.hint().map(str::to_string),
            DiskError::TooSmall { needed, .. } => Some(format!(
                "leave --size out, or give at least {}M",
                needed >> 20
            )),
            DiskError::NoBios(..) => Some("use --firmware efi".into()),
            _ => None,
        }
    }
}

/// The host programs a disk needs beyond the ISO's.
struct DiskTools {
    ext2: ext2::Ext2Tools,
    qemu_img: Option<Located>,
}

impl DiskTools {
    fn locate(formats: &[DiskFormat]) -> Result<DiskTools, ToolError> {
        let needs_qemu_img = formats
            .iter()
            .any(|f| matches!(f, DiskFormat::Qcow2 | DiskFormat::Vhd));
        Ok(DiskTools {
            ext2: ext2::Ext2Tools {
                mke2fs: tools::locate(&tools::MKE2FS)?,
                debugfs: tools::locate(&tools::DEBUGFS)?,
            },
            qemu_img: needs_qemu_img
                .then(|| tools::locate(&tools::QEMU_IMG))
                .transpose()?,
        })
    }

    /// The versions of the tools that write `format`.
    fn versions(&self, format: DiskFormat) -> BTreeMap<&'static str, &str> {
        let converter = match format {
            DiskFormat::Qcow2 | DiskFormat::Vhd => self.qemu_img.as_ref(),
            DiskFormat::Raw | DiskFormat::Gce => None,
        };
        [&self.ext2.mke2fs, &self.ext2.debugfs]
            .into_iter()
            .chain(converter)
            .map(|t| (t.tool.name, t.version.as_str()))
            .collect()
    }
}

/// The config built into the disk's GRUB: the recovery partition by label.
fn embedded_config() -> String {
    format!(
        "search --no-floppy --set=root --label {}\n\
         set prefix=($root)/boot/grub\n\
         configfile $prefix/grub.cfg\n",
        layout::RECOVERY_LABEL
    )
}

/// Reads and checks `--cloud-config` before any work.
fn read_cloud_config(path: &Path) -> Result<Vec<u8>, DiskError> {
    let fail = |reason: String| DiskError::CloudConfig {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        let place = e
            .location()
            .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
            .unwrap_or_default();
        return Err(fail(format!("{place}not YAML: {e}")));
    }
    Ok(bytes)
}

/// Builds (or reuses) the cell's image and writes its disk in every
/// format asked for.
pub fn build_disk(
    store: &Store,
    project: &Project,
    request: &DiskRequest,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<DiskReport, DiskError> {
    let started = Instant::now();
    if request.iso.uki.is_some() || request.iso.overlay.is_some() {
        return Err(DiskError::IsoOnly);
    }
    // libext2fs reads `?` in a device name as the start of its options.
    let dir = &request.iso.output_dir;
    if dir.to_string_lossy().contains('?') {
        return Err(DiskError::QuestionMark(dir.clone()));
    }
    if request.size.is_some_and(|size| size > MAX_SIZE) {
        return Err(DiskError::TooLarge(request.size.unwrap_or(0)));
    }
    let cloud_config = request
        .cloud_config
        .as_deref()
        .map(read_cloud_config)
        .transpose()?;
    let arch = project
        .select(&request.iso.image.selection)
        .map_err(IsoError::from)?
        .id
        .arch;
    if request.firmware.bios() && arch != Arch::Amd64 {
        return Err(DiskError::NoBios(request.firmware.as_str(), arch));
    }
    let tools = DiskTools::locate(&request.formats)?;
    let prepared = iso::prepare(store, project, &request.iso, reporter, cancel)?;
    let boot = prepared.boot(project);
    let ids = Ids::new(&format!(
        "{}:{}:{}",
        prepared.image_digest,
        prepared.epoch,
        request.firmware.as_str()
    ));
    let disk_parts = phase(
        reporter,
        "disk parts",
        || ensure_parts(&prepared, project, request.firmware, &ids, cancel),
        |p| match p.cached {
            true => "cached".to_string(),
            false => "GRUB and ESP made".to_string(),
        },
    )?;
    let cmdline = match &prepared.extra_cmdline {
        Some(extra) => format!("{} {extra}", boot.live.disk_cmdline),
        None => boot.live.disk_cmdline.clone(),
    };
    iso::check_cmdline(&cmdline)?;
    let menu = grub::menu(
        &project.root,
        &grub::MenuContext {
            cmdline: &cmdline,
            serial_console: arch.serial_console(),
            iso_label: layout::RECOVERY_LABEL,
            marker: &prepared.marker,
            title: &prepared.name,
        },
    )?;
    let recovery = Recovery::new(&prepared, &menu)?;
    let writer = Writer {
        store,
        prepared: &prepared,
        parts: &disk_parts,
        tools: &tools,
        ids: &ids,
        firmware: request.firmware,
        recovery: &recovery,
        cloud_config: cloud_config.as_deref(),
        cancel,
    };
    let raw_layout = writer.layout(request.size)?;
    let artifacts = phase(
        reporter,
        "disk",
        || writer.write_all(&request.formats, &raw_layout, request),
        |artifacts| {
            artifacts
                .iter()
                .map(|a| match a.written {
                    true => format!("{}", a.path.display()),
                    false => format!("{} is up to date", a.path.display()),
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
    )?;
    Ok(DiskReport {
        image: prepared.image_name.clone(),
        image_digest: prepared.image_digest.to_string(),
        built: prepared.built.clone(),
        firmware: request.firmware,
        efi: request
            .firmware
            .efi()
            .then(|| disk_parts.entry.notes.get(parts::EFI_NOTE).cloned())
            .flatten(),
        size: raw_layout.size,
        partitions: raw_layout
            .partitions
            .iter()
            .map(|(role, p)| PartitionReport {
                name: p.name.clone(),
                label: match role {
                    Role::BiosBoot => None,
                    Role::Esp => Some(layout::ESP_LABEL),
                    Role::Oem => Some(layout::OEM_LABEL),
                    Role::Recovery => Some(layout::RECOVERY_LABEL),
                },
                offset: p.offset(),
                size: p.size(),
            })
            .collect(),
        artifacts,
        parts_cached: disk_parts.cached,
        epoch: prepared.epoch,
        warnings: prepared.warnings.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The disk's own parts, found or made.
struct DiskParts {
    key: Digest,
    dir: PathBuf,
    entry: DerivedEntry,
    cached: bool,
}

const CORE_IMG: &str = "core.img";
const BOOT_IMG: &str = "boot.img";
const ESP_IMG: &str = "esp.img";
const EFI_LOADER: &str = "loader.efi";

fn ensure_parts(
    prepared: &Prepared,
    project: &Project,
    firmware: DiskFirmware,
    ids: &Ids,
    cancel: &Cancel,
) -> Result<DiskParts, DiskError> {
    let store = prepared.pipeline.store();
    let key = Digest::of(&crate::store::canonical_json(&serde_json::json!({
        "format": FORMAT,
        "iso_parts": prepared.key.to_string(),
        "firmware": firmware.as_str(),
        "mtools": prepared.tools.mtools.mformat.version,
    })));
    if let Some((dir, entry)) = store.derived(&key)? {
        store.mark_used(&dir)?;
        return Ok(DiskParts {
            key,
            dir,
            entry,
            cached: true,
        });
    }
    let staging = store.staging_dir()?;
    let made = make_parts(prepared, project, firmware, ids, &staging, cancel).and_then(
        |(names, notes)| {
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
            let entry = DerivedEntry {
                image: prepared.image_digest.clone(),
                files,
                notes,
            };
            Ok(store.commit_derived(&staging, &key, entry)?)
        },
    );
    match made {
        Ok((dir, entry)) => Ok(DiskParts {
            key,
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

type MadeParts = (Vec<&'static str>, BTreeMap<String, String>);

fn make_parts(
    prepared: &Prepared,
    project: &Project,
    firmware: DiskFirmware,
    ids: &Ids,
    dir: &Path,
    cancel: &Cancel,
) -> Result<MadeParts, DiskError> {
    let boot = prepared.boot(project);
    let store = prepared.pipeline.store();
    let arch_firmware = &prepared.firmware;
    let config = embedded_config();
    // The signed chain when the image has it (as on the ISO), and the
    // GRUB that finds COS_RECOVERY for BIOS, GRUB's MBR code.
    let chain = store.with_image_root(&prepared.layers, |root, _| {
        let chain = match (&boot.secure_boot, firmware.efi()) {
            (Some(secure_boot), true) => {
                iso::signed::stage(root, secure_boot, arch_firmware, dir, &config)?
            }
            _ => None,
        };
        if firmware.bios() {
            let mbr = format!("{}/boot.img", boot.grub.bios_modules);
            iso::copy_out(root, &mbr, &dir.join(BOOT_IMG))?;
        }
        Ok::<_, IsoError>(chain)
    })??;
    let mut images = Vec::new();
    if firmware.bios() {
        images.push(grub::MkImage {
            format: "i386-pc",
            modules_dir: boot.grub.bios_modules.clone(),
            output: CORE_IMG,
            modules: &["biosdisk", "ext2"],
        });
    }
    if firmware.efi() && chain.is_none() {
        images.push(grub::MkImage {
            format: arch_firmware.efi_format,
            modules_dir: arch_firmware.efi_modules(&boot.grub),
            output: arch_firmware.efi_loader,
            modules: &["efifwsetup", "ext2"],
        });
    }
    let mut outputs = Vec::new();
    if firmware.bios() {
        outputs.push((CORE_IMG, dir.join(CORE_IMG)));
    }
    if firmware.efi() && chain.is_none() {
        outputs.push((arch_firmware.efi_loader, dir.join(EFI_LOADER)));
    }
    if !images.is_empty() {
        let spec = grub::step_text(
            &prepared.image_name,
            "a disk's GRUB core images",
            &boot.grub,
            &config,
            &images,
        );
        grub::run_step(
            &prepared.pipeline,
            &prepared.options,
            &prepared.platform,
            &spec,
            dir,
            &outputs,
        )?;
    }
    let mut names = Vec::new();
    let mut notes = BTreeMap::new();
    if firmware.bios() {
        names.extend([CORE_IMG, BOOT_IMG]);
    }
    if firmware.efi() {
        let (efi, files) = match &chain {
            Some(files) => (parts::EFI_SHIM, files.clone()),
            None => (
                parts::EFI_GRUB,
                vec![(
                    format!("EFI/BOOT/{}", arch_firmware.efi_loader),
                    dir.join(EFI_LOADER),
                )],
            ),
        };
        esp::make(
            &prepared.tools.mtools,
            &files,
            &dir.join(ESP_IMG),
            &esp::Volume {
                label: layout::ESP_LABEL,
                min_size: layout::ESP_SIZE,
                serial: ids.fat_serial(),
            },
            prepared.epoch,
            cancel,
        )?;
        iso::signed::unstage(dir)?;
        if chain.is_none() {
            std::fs::remove_file(dir.join(EFI_LOADER)).map_err(DiskError::io(dir))?;
        }
        names.push(ESP_IMG);
        notes.insert(parts::EFI_NOTE.to_string(), efi.to_string());
    }
    Ok((names, notes))
}

/// The files of `COS_RECOVERY`: the ISO's tree.
struct Recovery {
    /// (path in the file system, source file).
    files: Vec<(String, RecoverySource)>,
    payload: u64,
}

enum RecoverySource {
    Part(PathBuf),
    Text(String),
}

impl Recovery {
    fn new(prepared: &Prepared, menu: &str) -> Result<Recovery, DiskError> {
        let rel = |path: &str| path.trim_start_matches('/').to_string();
        let files = vec![
            (
                "boot/grub/grub.cfg".to_string(),
                RecoverySource::Text(menu.to_string()),
            ),
            (
                ".disk/info".to_string(),
                RecoverySource::Text(format!("{} {}\n", prepared.name, prepared.image_digest)),
            ),
            (
                rel(&prepared.marker),
                RecoverySource::Text(format!("{} {}\n", prepared.name, prepared.image_digest)),
            ),
            (
                "boot/kernel".to_string(),
                RecoverySource::Part(prepared.part(parts::KERNEL)),
            ),
            (
                "boot/initrd".to_string(),
                RecoverySource::Part(prepared.part(parts::INITRD)),
            ),
            (
                rel(&prepared.squashfs_path),
                RecoverySource::Part(prepared.part(parts::SQUASHFS)),
            ),
        ];
        let mut payload = 0;
        for (_, source) in &files {
            payload += match source {
                RecoverySource::Part(path) => {
                    std::fs::metadata(path).map_err(DiskError::io(path))?.len()
                }
                RecoverySource::Text(text) => text.len() as u64,
            };
        }
        Ok(Recovery { files, payload })
    }

    /// Digest of what the partition holds.
    fn digest(&self, prepared: &Prepared) -> Digest {
        let texts: Vec<(&str, &str)> = self
            .files
            .iter()
            .filter_map(|(path, source)| match source {
                RecoverySource::Text(text) => Some((path.as_str(), text.as_str())),
                RecoverySource::Part(_) => None,
            })
            .collect();
        Digest::of(&crate::store::canonical_json(&serde_json::json!({
            "iso_parts": prepared.key.to_string(),
            "texts": texts,
        })))
    }

    /// Puts the files into `staging` under plain names (parts hard-linked,
    /// or copied across file systems) and returns the ext2 file list.
    fn stage(&self, staging: &Path) -> Result<Vec<(String, String)>, DiskError> {
        let mut list = Vec::new();
        for (index, (dest, source)) in self.files.iter().enumerate() {
            let name = format!("f{index}");
            let path = staging.join(&name);
            match source {
                RecoverySource::Part(part) => link_or_copy(part, &path)?,
                RecoverySource::Text(text) => {
                    std::fs::write(&path, text).map_err(DiskError::io(&path))?
                }
            }
            list.push((dest.clone(), name));
        }
        Ok(list)
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), DiskError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map(drop).map_err(DiskError::io(to))
}

/// Writes raw disks and converts them.
struct Writer<'a> {
    store: &'a Store,
    prepared: &'a Prepared<'a>,
    parts: &'a DiskParts,
    tools: &'a DiskTools,
    ids: &'a Ids,
    firmware: DiskFirmware,
    recovery: &'a Recovery,
    cloud_config: Option<&'a [u8]>,
    cancel: &'a Cancel,
}

impl Writer<'_> {
    fn layout(&self, size: Option<u64>) -> Result<Layout, DiskError> {
        layout::plan(
            self.firmware,
            layout::recovery_size(self.recovery.payload),
            size,
            self.ids,
        )
    }

    /// The digest of everything that decides an artifact's bytes.
    fn inputs(&self, format: DiskFormat, layout: &Layout) -> Digest {
        Digest::of(&crate::store::canonical_json(&serde_json::json!({
            "format": format.as_str(),
            "parts": self.parts.key.to_string(),
            "size": layout.size,
            "recovery": self.recovery.digest(self.prepared).to_string(),
            "cloud_config": self.cloud_config.map(|c| Digest::of(c).to_string()),
            "tools": self.tools.versions(format),
            "epoch": self.prepared.epoch,
        })))
    }

    fn write_all(
        &self,
        formats: &[DiskFormat],
        raw_layout: &Layout,
        request: &DiskRequest,
    ) -> Result<Vec<DiskArtifact>, DiskError> {
        let dir = &request.iso.output_dir;
        std::fs::create_dir_all(dir).map_err(DiskError::io(dir))?;
        // debugfs runs in a staging directory: it gets the disk by an
        // absolute path.
        let dir = &std::path::absolute(dir).map_err(DiskError::io(dir))?;
        let mut artifacts = Vec::new();
        // The raw disk the raw, qcow2 and VHD artifacts come from, written
        // once when one of them is needed.
        let mut raw: Option<TempFile> = None;
        for &format in formats {
            if self.cancel.is_cancelled() {
                return Err(DiskError::Cancelled);
            }
            let path = dir.join(format!("{}.{}", self.prepared.name, format.extension()));
            let layout = match format {
                DiskFormat::Gce => self.layout(Some(
                    request.size.unwrap_or(raw_layout.size).div_ceil(GIB) * GIB,
                ))?,
                _ => self.layout(request.size)?,
            };
            let note = format!("disk {}", self.inputs(format, &layout).hex());
            if let Some(sha256) = artifact::up_to_date(
                self.store,
                &self.parts.key,
                &self.parts.entry.notes,
                &note,
                &path,
            )? {
                artifacts.push(done(format, path, sha256, false)?);
                continue;
            }
            let temp = TempFile::create_in(dir).map_err(DiskError::io(dir))?;
            let target = temp.path();
            match format {
                DiskFormat::Raw => self.write_raw(target, &layout)?,
                DiskFormat::Gce => {
                    let disk = self.scratch_raw(dir, &layout)?;
                    formats::gce(disk.path(), target, self.prepared.epoch)
                        .map_err(DiskError::io(target))?;
                }
                DiskFormat::Qcow2 | DiskFormat::Vhd => {
                    if raw.is_none() {
                        raw = Some(self.scratch_raw(dir, &layout)?);
                    }
                    let source = raw.as_ref().expect("written above").path();
                    let qemu_img = self.tools.qemu_img.as_ref().expect("located for these");
                    match format {
                        DiskFormat::Qcow2 => formats::qcow2(qemu_img, source, target, self.cancel)?,
                        _ => formats::vhd(
                            qemu_img,
                            source,
                            target,
                            self.prepared.epoch,
                            self.ids.of("vhd"),
                            self.cancel,
                        )?,
                    }
                }
            }
            let sha256 = artifact::publish(target, &path).map_err(DiskError::io(&path))?;
            temp.renamed();
            artifact::record(self.store, &self.parts.key, &note, &sha256)?;
            artifacts.push(done(format, path, sha256, true)?);
        }
        Ok(artifacts)
    }

    /// A raw disk in a temp file of `dir`, removed when dropped.
    fn scratch_raw(&self, dir: &Path, layout: &Layout) -> Result<TempFile, DiskError> {
        let temp = TempFile::create_in(dir).map_err(DiskError::io(dir))?;
        self.write_raw(temp.path(), layout)?;
        Ok(temp)
    }

    /// Writes the raw disk of `layout` to `path`.
    fn write_raw(&self, path: &Path, layout: &Layout) -> Result<(), DiskError> {
        let io = DiskError::io(path);
        let file = File::options()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(io)?;
        let io = || DiskError::io(path);
        file.set_len(layout.size).map_err(io())?;
        let parts = |name: &str| self.parts.dir.join(name);
        let boot_code = match layout.get(Role::BiosBoot) {
            Some(bios_part) => {
                let core = std::fs::read(parts(CORE_IMG)).map_err(io())?;
                let core = bios::core_image(core, bios_part.first_lba)?;
                if core.len() as u64 > bios_part.size() {
                    return Err(DiskError::DoesNotFit {
                        part: "GRUB core image",
                        size: core.len() as u64,
                        room: bios_part.size(),
                    });
                }
                file.write_all_at(&core, bios_part.offset()).map_err(io())?;
                let boot_img = std::fs::read(parts(BOOT_IMG)).map_err(io())?;
                Some(bios::boot_code(&boot_img, bios_part.first_lba)?)
            }
            None => None,
        };
        file.write_all_at(&layout.table.protective_mbr(boot_code.as_deref()), 0)
            .map_err(io())?;
        file.write_all_at(&layout.table.primary(), gpt::SECTOR)
            .map_err(io())?;
        let (offset, backup) = layout.table.backup();
        file.write_all_at(&backup, offset).map_err(io())?;
        if let Some(esp_part) = layout.get(Role::Esp) {
            copy_into(
                &parts(ESP_IMG),
                &file,
                esp_part,
                "EFI system partition",
                path,
            )?;
        }
        drop(file);
        self.write_oem(path, layout)?;
        self.write_recovery(path, layout)
    }

    fn write_oem(&self, disk: &Path, layout: &Layout) -> Result<(), DiskError> {
        let part = layout.get(Role::Oem).expect("every layout has COS_OEM");
        let staging = self.prepared.pipeline.store().staging_dir()?;
        let result = (|| {
            let mut files = Vec::new();
            if let Some(config) = self.cloud_config {
                let source = staging.join("f0");
                std::fs::write(&source, config).map_err(DiskError::io(&source))?;
                files.push((CLOUD_CONFIG.to_string(), "f0".to_string()));
            }
            self.ext2(disk, part, layout::OEM_LABEL, &files, &staging)
        })();
        let _ = crate::store::remove_tree(&staging);
        result
    }

    fn write_recovery(&self, disk: &Path, layout: &Layout) -> Result<(), DiskError> {
        let part = layout
            .get(Role::Recovery)
            .expect("every layout has COS_RECOVERY");
        let staging = self.prepared.pipeline.store().staging_dir()?;
        let result = self
            .recovery
            .stage(&staging)
            .and_then(|files| self.ext2(disk, part, layout::RECOVERY_LABEL, &files, &staging));
        let _ = crate::store::remove_tree(&staging);
        result
    }

    fn ext2(
        &self,
        disk: &Path,
        part: &gpt::Partition,
        label: &str,
        files: &[(String, String)],
        staging: &Path,
    ) -> Result<(), DiskError> {
        ext2::make(
            &self.tools.ext2,
            disk,
            part.offset(),
            part.size(),
            &ext2::Ext2 {
                label,
                uuid: self.ids.of(&format!("fs:{label}")),
                hash_seed: self.ids.of(&format!("hash-seed:{label}")),
                epoch: self.prepared.epoch,
                files,
                staging,
            },
            self.cancel,
        )
    }
}

/// Copies the image file `from` into `disk` at the partition's offset.
fn copy_into(
    from: &Path,
    disk: &File,
    part: &gpt::Partition,
    what: &'static str,
    disk_path: &Path,
) -> Result<(), DiskError> {
    let mut source = File::open(from).map_err(DiskError::io(from))?;
    let size = source.metadata().map_err(DiskError::io(from))?.len();
    if size > part.size() {
        return Err(DiskError::DoesNotFit {
            part: what,
            size,
            room: part.size(),
        });
    }
    let mut target = disk.try_clone().map_err(DiskError::io(disk_path))?;
    target
        .seek(SeekFrom::Start(part.offset()))
        .map_err(DiskError::io(disk_path))?;
    std::io::copy(&mut source, &mut target).map_err(DiskError::io(disk_path))?;
    target.flush().map_err(DiskError::io(disk_path))
}

fn done(
    format: DiskFormat,
    path: PathBuf,
    sha256: String,
    written: bool,
) -> Result<DiskArtifact, DiskError> {
    let size = std::fs::metadata(&path)
        .map_err(DiskError::io(&path))?
        .len();
    Ok(DiskArtifact {
        format,
        path,
        sha256,
        size,
        written,
    })
}
