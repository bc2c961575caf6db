//! `kbuild iso`: a cell's image (built through `kbuild image`'s library
//! call, or taken `--from` a store, registry or OCI layout) as a hybrid
//! BIOS/UEFI ISO that boots as a CD and as a USB stick.
//!
//! ```text
//! tools located (xorriso, mksquashfs, mtools)       before any work
//! image: compose::image::build_image | --from        checked
//! parts (derived entry, cached by image digest):
//!   GRUB core images  <- the image's grub-mkimage, in the sandbox
//!   kernel, initrd, boot_hybrid.img <- the image's root
//!   squashfs          <- mksquashfs of the image's root
//!   ESP               <- mtools, holding the EFI GRUB, or (signed.rs) the
//!                        image's signed shim + signed GRUB when it has them
//! ISO tree: grub.cfg (templates/), .disk/, --overlay-iso files
//! one xorriso call -> <out>/.tmp-* -> sha256 -> <name>.iso + <name>.iso.sha256
//! ```
//!
//! With `--uki` the ISO boots UEFI only: there are no GRUB images, no
//! grub.cfg, no loose kernel or initrd and no BIOS entry; the ESP holds
//! one file, `EFI/BOOT/BOOT<ARCH>.EFI`, a unified kernel image of the
//! image ([`crate::uki`]) signed with the user's key when one is given.
//!
//! Invariants:
//! * A missing or too old host tool fails the run before anything is
//!   built or written.
//! * The ISO appears under its final name only whole (written to a temp
//!   name in the output directory, hashed, renamed); a failure or Ctrl-C
//!   leaves no partial file there and nothing half-made in the store.
//! * Every date and id in the ISO derives from the inputs: the epoch is
//!   `SOURCE_DATE_EPOCH` or, unset, the image's creation time, so the same
//!   image always gives the same bytes.
//! * Nothing from the image runs on the host: the image's grub-mkimage runs
//!   in the build sandbox; kernel, initrd and GRUB's MBR are read through
//!   the image root's in-root path resolution.
//! * A signed UKI ISO carries exactly one EFI executable, the signed UKI:
//!   what the firmware verifies is everything it runs before the kernel.

pub(crate) mod esp;
pub(crate) mod grub;
mod overlay;
pub(crate) mod parts;
pub(crate) mod signed;
mod squashfs;
mod write;
mod xorriso;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use squashfs::DEFAULT_ZSTD_LEVEL;

use crate::compose::image::{build_image, check_image, ImageReport, ImageRequest};
use crate::compose::lock::Lock;
use crate::compose::packages::Resolver;
use crate::compose::ComposeError;
use crate::digest::Digest;
use crate::pipeline::Pipeline;
use crate::platform::Platform;
use crate::project::flavor::Grub;
use crate::project::{Arch, Project, Selection};
use crate::report::{phase, Reporter};
use crate::rootfs::Root;
use crate::sandbox::Cancel;
use crate::store::Store;
use crate::tools::{self, Located, ToolError};
pub use crate::uki::Signer;
use write::Assembly;

/// The ISO 9660 volume id. The Alpine flavor's live init finds its medium
/// by it (`root=live:CDLABEL=KBUILD`).
pub const VOLUME_ID: &str = "KBUILD";

/// What `kbuild iso` was asked for.
#[derive(Debug, Clone)]
pub struct IsoRequest {
    /// The cell, and how to build its image when there is no `from`.
    pub image: ImageRequest,
    /// An existing image instead of building one: a store name, a
    /// registry reference or `oci:DIR[:TAG]`.
    pub from: Option<String>,
    pub output_dir: PathBuf,
    /// The file name without `.iso` [default: the naming scheme's].
    pub name: Option<String>,
    /// Files merged into the ISO's root (e.g. a cloud-config).
    pub overlay: Option<PathBuf>,
    /// Appended to the flavor's live command line.
    pub extra_cmdline: Option<String>,
    /// Boot a unified kernel image instead of GRUB (UEFI only).
    pub uki: Option<UkiBoot>,
}

/// `--uki`: the ESP starts a unified kernel image directly.
#[derive(Debug, Clone)]
pub struct UkiBoot {
    /// The key it is signed with, for Secure Boot with one's own keys.
    pub signer: Option<Signer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IsoReport {
    pub iso: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// The image the ISO was made from, and its manifest digest.
    pub image: String,
    pub image_digest: String,
    /// What building the image did (absent with `--from`).
    pub built: Option<ImageReport>,
    /// The squashfs, GRUB images and ESP came from the store's cache.
    pub parts_cached: bool,
    /// The ESP boots the distribution's signed shim and GRUB (Secure
    /// Boot), not the image's own GRUB.
    pub signed_chain: bool,
    /// What the ESP starts: `grub` (the image's own), `shim` (the signed
    /// chain), `uki` or `signed-uki`.
    pub efi: String,
    /// False when the ISO was already there, verified, for these inputs.
    pub assembled: bool,
    /// The time every date in the ISO is set to.
    pub epoch: i64,
    /// Host tools used, with their versions (the bytes depend on them).
    pub tools: BTreeMap<&'static str, String>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error(transparent)]
    Project(#[from] crate::project::ProjectError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error(transparent)]
    Uki(#[from] crate::uki::UkiError),
    #[error("cannot read the signing key or certificate {}", path.display())]
    Signer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--name \"{0}\" must be a plain file name (no `/`, not starting with `.`, none of GRUB's special characters such as `\"` and `$`)")]
    BadName(String),
    #[error("the kernel command line \"{}\" holds {found:?}, which GRUB would interpret in its `linux` line", cmdline.escape_debug())]
    BadCmdline { cmdline: String, found: char },
    #[error("--overlay-iso {}: {reason}", path.display())]
    Overlay { path: PathBuf, reason: String },
    #[error("the flavor's secure_boot.config_on_esp/grub_name \"{0}\" is not a plain relative path on the ESP")]
    BadEspPath(String),
    #[error("the image has no {what} at {path}")]
    NotInImage {
        what: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has {} MiB free; the ISO needs about {} MiB", dir.display(), available >> 20, needed >> 20)]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("cannot render {}", template.display())]
    Template {
        template: PathBuf,
        #[source]
        source: Box<minijinja::Error>,
    },
    #[error("interrupted")]
    Cancelled,
}

impl IsoError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IsoError + '_ {
        move |source| IsoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the request or the project files are at fault (exit 2).
    pub fn is_input(&self) -> bool {
        match self {
            IsoError::Compose(e) => e.is_input(),
            IsoError::Project(_)
            | IsoError::BadName(_)
            | IsoError::BadCmdline { .. }
            | IsoError::BadEspPath(_)
            | IsoError::Signer { .. }
            | IsoError::Overlay { .. }
            | IsoError::Template { .. } => true,
            _ => false,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            IsoError::Tool(e) => e.hint().map(str::to_string),
            IsoError::Compose(e) => e.hint(),
            IsoError::NotInImage { .. } => Some(
                "`kbuild check` the image: the flavor's boot paths (flavors/<f>.yaml, boot:) must exist in it"
                    .into(),
            ),
            IsoError::NoSpace { .. } => {
                Some("free space there, or write the ISO elsewhere with -o DIR".into())
            }
            _ => None,
        }
    }
}

/// The firmware an ISO boots on, by architecture.
#[derive(Debug, Clone)]
pub struct Firmware {
    pub arch: Arch,
    /// BIOS (El Torito + hybrid MBR): amd64 only.
    pub bios: bool,
    /// grub-mkimage's EFI format.
    pub efi_format: &'static str,
    /// The removable-media default name under `EFI/BOOT/`.
    pub efi_loader: &'static str,
}

impl Firmware {
    pub fn for_arch(arch: Arch) -> Firmware {
        match arch {
            Arch::Amd64 => Firmware {
                arch,
                bios: true,
                efi_format: "x86_64-efi",
                efi_loader: "BOOTX64.EFI",
            },
            Arch::Arm64 => Firmware {
                arch,
                bios: false,
                efi_format: "arm64-efi",
                efi_loader: "BOOTAA64.EFI",
            },
        }
    }

    /// The same architecture booting from UEFI alone.
    fn uefi_only(self) -> Firmware {
        Firmware {
            bios: false,
            ..self
        }
    }

    /// The EFI module directory: the flavor names x86_64's; arm64's is its
    /// sibling.
    pub(crate) fn efi_modules(&self, grub: &Grub) -> String {
        match self.arch {
            Arch::Amd64 => grub.efi_modules.clone(),
            Arch::Arm64 => grub.efi_modules.replace("x86_64-efi", "arm64-efi"),
        }
    }
}

/// The host tools `kbuild iso` runs.
pub struct IsoTools {
    mksquashfs: Located,
    xorriso: Located,
    pub(crate) mtools: esp::Mtools,
}

impl IsoTools {
    /// Finds them all, or fails naming the first one missing.
    pub fn locate() -> Result<IsoTools, ToolError> {
        let [mksquashfs, xorriso, mformat, mmd, mcopy] = tools::ISO.map(tools::locate);
        Ok(IsoTools {
            mksquashfs: mksquashfs?,
            xorriso: xorriso?,
            mtools: esp::Mtools {
                mformat: mformat?,
                mmd: mmd?,
                mcopy: mcopy?,
            },
        })
    }

    fn versions(&self) -> BTreeMap<&'static str, &str> {
        [
            &self.mksquashfs,
            &self.xorriso,
            &self.mtools.mformat,
            &self.mtools.mmd,
            &self.mtools.mcopy,
        ]
        .into_iter()
        .map(|t| (t.tool.name, t.version.as_str()))
        .collect()
    }
}

/// Copies the file at `path` of the image root to `dest`.
pub(crate) fn copy_out(root: &Root, path: &str, dest: &Path) -> Result<(), IsoError> {
    let rel = crate::rootfs::clean(path);
    let not_in_image = |source| IsoError::NotInImage {
        what: Path::new(path)
            .file_name()
            .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned()),
        path: path.to_string(),
        source,
    };
    let fd = root
        .open_at(&rel, rustix::fs::OFlags::RDONLY)
        .map_err(not_in_image)?;
    let mut source = std::fs::File::from(fd);
    if !source.metadata().map_err(not_in_image)?.is_file() {
        return Err(not_in_image(std::io::Error::other("not a regular file")));
    }
    let mut file = std::fs::File::create(dest).map_err(IsoError::io(dest))?;
    std::io::copy(&mut source, &mut file).map_err(IsoError::io(dest))?;
    Ok(())
}

/// A cell's image with its ISO parts made (or found): what `kbuild iso`,
/// `kbuild disk` and `kbuild netboot` start from.
pub(crate) struct Prepared<'a> {
    pub pipeline: Pipeline<'a>,
    /// The build options (for steps such as GRUB's).
    pub options: crate::executor::BuildOptions,
    pub tools: IsoTools,
    pub selection: Selection,
    pub platform: Platform,
    /// The artifact's base name (the cell's, or `--name`).
    pub name: String,
    pub image_name: String,
    pub image_digest: Digest,
    pub layers: Vec<crate::store::cache::LayerRecord>,
    pub epoch: i64,
    pub firmware: Firmware,
    /// The flavor's live command line plus `--cmdline`.
    pub cmdline: String,
    pub extra_cmdline: Option<String>,
    /// Absolute path of the squashfs on the medium.
    pub squashfs_path: String,
    pub key: Digest,
    pub marker: String,
    pub parts: parts::Parts,
    pub built: Option<ImageReport>,
    pub warnings: Vec<String>,
    uki: bool,
}

impl Prepared<'_> {
    /// The kernel, initrd and squashfs the parts hold (GRUB parts only).
    pub fn part(&self, name: &str) -> PathBuf {
        self.parts.path(name)
    }

    /// The flavor's boot settings.
    pub fn boot<'p>(&self, project: &'p Project) -> &'p crate::project::flavor::Boot {
        &project.flavors[&self.selection.id.flavor].boot
    }

    /// What the ESP starts: `grub`, `shim`, `uki` or `signed-uki`.
    pub fn efi(&self) -> &str {
        self.parts
            .entry
            .notes
            .get(parts::EFI_NOTE)
            .map_or("grub", String::as_str)
    }

    pub fn tool_versions(&self) -> BTreeMap<&'static str, String> {
        self.tools
            .versions()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    }
}

/// Builds (or reuses) the image of `request` and makes its ISO parts.
pub(crate) fn prepare<'a>(
    store: &'a Store,
    project: &Project,
    request: &IsoRequest,
    reporter: &'a dyn Reporter,
    cancel: &'a Cancel,
) -> Result<Prepared<'a>, IsoError> {
    let tools = IsoTools::locate()?;
    let selection = project.select(&request.image.selection)?;
    let name = match &request.name {
        Some(name) => iso_name(name)?,
        // A UKI ISO is another artifact of the same cell: it must not
        // replace the GRUB one in the same output directory.
        None if request.uki.is_some() => format!("{}-uki", selection.id.iso_name()),
        None => selection.id.iso_name(),
    };
    let flavor = &project.flavors[&selection.id.flavor];
    let squashfs_path = iso_path(&flavor.boot.live.squashfs_path);
    let cmdline = match &request.extra_cmdline {
        Some(extra) => format!("{} {extra}", flavor.boot.live.cmdline),
        None => flavor.boot.live.cmdline.clone(),
    };
    check_cmdline(&cmdline)?;
    let uki = request
        .uki
        .as_ref()
        .map(|uki| {
            parts::UkiInputs::new(
                uki,
                &flavor.boot,
                crate::uki::cmdline(
                    &flavor.boot,
                    selection.id.arch,
                    request.extra_cmdline.as_deref(),
                ),
            )
        })
        .transpose()?;
    let platform = Platform::parse(&format!("linux/{}", selection.id.arch))?;
    let pipeline = Pipeline::new(store, reporter, cancel)?;
    let (image_name, built, warnings) = image_for(
        &pipeline, project, &selection, request, &platform, reporter, cancel,
    )?;
    let (descriptor, manifest) = store.resolve(&image_name)?;
    let image_digest = Digest::try_from(descriptor.digest())?;
    let layers = store.manifest_layers(&manifest)?;
    let epoch = crate::store::image::epoch(&store.image_config(&manifest)?);
    let firmware = match uki {
        Some(_) => Firmware::for_arch(selection.id.arch).uefi_only(),
        None => Firmware::for_arch(selection.id.arch),
    };
    let inputs = parts::Inputs {
        image_name: &image_name,
        image: &image_digest,
        layers: &layers,
        boot: &flavor.boot,
        firmware: &firmware,
        squashfs: &project.config.iso.squashfs,
        epoch,
        tools: &tools,
        uki: uki.as_ref(),
    };
    let key = inputs.key();
    let marker = format!("/.disk/kbuild-{}", &key.hex()[..16]);
    let parts = parts::ensure(
        &inputs,
        &key,
        &parts::Maker {
            pipeline: &pipeline,
            options: &request.image.options,
            platform: &platform,
            cancel,
            marker: &marker,
        },
    )?;
    if cancel.is_cancelled() {
        return Err(IsoError::Cancelled);
    }
    Ok(Prepared {
        pipeline,
        options: request.image.options.clone(),
        tools,
        selection,
        platform,
        name,
        image_name,
        image_digest,
        layers,
        epoch,
        firmware,
        cmdline,
        extra_cmdline: request.extra_cmdline.clone(),
        squashfs_path,
        key,
        marker,
        parts,
        built,
        warnings,
        uki: uki.is_some(),
    })
}

/// Builds (or reuses) the image of `request` and writes its ISO.
pub fn build_iso(
    store: &Store,
    project: &Project,
    request: &IsoRequest,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<IsoReport, IsoError> {
    let started = Instant::now();
    let overlay = request
        .overlay
        .as_deref()
        .map(|dir| {
            let flavor = project.select(&request.image.selection)?.id.flavor;
            let squashfs_path = iso_path(&project.flavors[&flavor].boot.live.squashfs_path);
            overlay::scan(dir, &squashfs_path)
        })
        .transpose()?;
    let prepared = prepare(store, project, request, reporter, cancel)?;
    let p = &prepared;
    // A UKI carries its command line; nothing reads a grub.cfg.
    let menu = match p.uki {
        true => None,
        false => Some(grub::menu(
            &project.root,
            &grub::MenuContext {
                cmdline: &p.cmdline,
                serial_console: p.selection.id.arch.serial_console(),
                iso_label: VOLUME_ID,
                marker: &p.marker,
                title: &p.name,
            },
        )?),
    };
    let assembly = Assembly {
        store,
        parts: &p.parts,
        key: &p.key,
        firmware: &p.firmware,
        squashfs_path: &p.squashfs_path,
        menu: menu.as_deref(),
        info: &format!("{} {}\n", p.name, p.image_digest),
        marker: &p.marker,
        overlay: overlay.as_ref(),
        xorriso: &p.tools.xorriso,
        epoch: p.epoch,
    };
    let iso = request.output_dir.join(format!("{}.iso", p.name));
    let (sha256, assembled) = phase(
        reporter,
        "xorriso",
        || assembly.write(&iso, cancel),
        |(_, assembled)| match assembled {
            true => format!("{}", iso.display()),
            false => format!("{} is up to date", iso.display()),
        },
    )?;
    let size = std::fs::metadata(&iso).map_err(IsoError::io(&iso))?.len();
    Ok(IsoReport {
        iso,
        sha256,
        size,
        image: p.image_name.clone(),
        image_digest: p.image_digest.to_string(),
        built: p.built.clone(),
        parts_cached: p.parts.cached,
        signed_chain: p.efi() == parts::EFI_SHIM,
        efi: p.efi().to_string(),
        assembled,
        epoch: p.epoch,
        tools: p.tool_versions(),
        warnings: p.warnings.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The image to pack: built as `kbuild image` builds it, or `--from`.
/// Returns its store name, the build's report and warnings.
fn image_for(
    pipeline: &Pipeline,
    project: &Project,
    selection: &Selection,
    request: &IsoRequest,
    platform: &Platform,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<(String, Option<ImageReport>, Vec<String>), IsoError> {
    match &request.from {
        Some(from) => {
            let name = existing_image(pipeline, project, selection, request, from, platform)?;
            let warnings = match request.image.skip_check {
                true => vec![format!("--skip-check: {name} was not checked")],
                false => Vec::new(),
            };
            Ok((name, None, warnings))
        }
        None => {
            let report = build_image(pipeline.store(), project, &request.image, reporter, cancel)?;
            let warnings = report.warnings.clone();
            Ok((report.image.clone(), Some(report), warnings))
        }
    }
}

/// `--from`: the image resolved into the store (pulled or imported if
/// need be) and checked against the cell, unless `--skip-check`.
fn existing_image(
    pipeline: &Pipeline,
    project: &Project,
    selection: &Selection,
    request: &IsoRequest,
    from: &str,
    platform: &Platform,
) -> Result<String, IsoError> {
    // A one-off image is not a project input: nothing goes to kbuild.lock.
    let mut lock = Lock::default();
    let mut resolver = Resolver {
        store: pipeline.store(),
        registry: &request.image.options.registry,
        platform: platform.clone(),
        runtime: pipeline.runtime(),
        reporter: pipeline.reporter(),
        lock: &mut lock,
        locked: false,
    };
    let (name, _) = resolver.image("iso --from", from)?;
    if !request.image.skip_check {
        let (_, manifest) = pipeline.store().resolve(&name)?;
        let report = check_image(pipeline.store(), project, selection, &manifest)?;
        if !report.passed {
            return Err(ComposeError::CheckFailed {
                image: name,
                report: Box::new(report),
            }
            .into());
        }
    }
    Ok(name)
}

/// What GRUB's script lexer reads as more than a plain word character:
/// command ends (`;`, `&`, `|`, newlines), blocks, variable expansion
/// (`$`), quotes and escapes (`"`, `'`, `\`), comments (`#`), redirections.
fn grub_special(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            ';' | '{' | '}' | '&' | '|' | '`' | '$' | '"' | '\'' | '\\' | '#' | '<' | '>'
        )
}

/// The command line goes into a `linux` line of grub.cfg: a character
/// GRUB interprets would end that line, start GRUB commands or change
/// what the kernel is given.
pub(crate) fn check_cmdline(cmdline: &str) -> Result<(), IsoError> {
    match cmdline.chars().find(|c| grub_special(*c)) {
        Some(c) => Err(IsoError::BadCmdline {
            cmdline: cmdline.to_string(),
            found: c,
        }),
        None => Ok(()),
    }
}

/// `--name`: a plain file name; `x.iso` means x.iso, not x.iso.iso.
fn iso_name(name: &str) -> Result<String, IsoError> {
    let stem = name.strip_suffix(".iso").unwrap_or(name);
    // The name is also the title of grub.cfg's quoted menu entries.
    let plain = crate::rootfs::is_plain_name(stem) && !stem.starts_with('.');
    match plain && !stem.chars().any(grub_special) {
        true => Ok(stem.to_string()),
        false => Err(IsoError::BadName(name.to_string())),
    }
}

/// A path of the flavor file as an absolute ISO path.
fn iso_path(path: &str) -> String {
    format!("/{}", crate::rootfs::clean(path).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_files_and_iso_is_not_doubled() {
        assert_eq!(iso_name("my-live").unwrap(), "my-live");
        assert_eq!(iso_name("my-live.iso").unwrap(), "my-live");
        for bad in ["../x", "a/b", ".iso", ".hidden", "..", ""] {
            let err = iso_name(bad).unwrap_err();
            assert!(err.is_input(), "{bad}: {err}");
        }
    }

    #[test]
    fn a_command_line_cannot_start_grub_commands() {
        assert!(check_cmdline("boot=live components quiet console=ttyS0,115200").is_ok());
        for (bad, found) in [
            ("a\nmenuentry x {", '\n'),
            ("a; reboot", ';'),
            ("a } b", '}'),
            ("x\u{7}", '\u{7}'),
            ("root=$root", '$'),
            ("a=\"b c\"", '"'),
            ("quiet #", '#'),
            ("a\\b", '\\'),
            ("init='/bin/sh'", '\''),
        ] {
            let err = check_cmdline(bad).unwrap_err();
            assert!(err.is_input(), "{bad}: {err}");
            assert!(
                matches!(err, IsoError::BadCmdline { found: f, .. } if f == found),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&format!("{found:?}")), "{err}");
        }
    }

    #[test]
    fn a_name_cannot_break_out_of_grub_s_menu_titles() {
        assert_eq!(iso_name("kairos-debian.iso").unwrap(), "kairos-debian");
        for bad in ["a\"b", "x$y", "back\\slash", "a/b", ".hidden", "nl\n"] {
            assert!(
                matches!(iso_name(bad), Err(IsoError::BadName(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn arm64_boots_uefi_only_from_its_own_modules() {
        let grub = Grub {
            bios_modules: "/usr/lib/grub/i386-pc".into(),
            efi_modules: "/usr/lib/grub/x86_64-efi".into(),
            mkimage: "grub-mkimage".into(),
        };
        let arm = Firmware::for_arch(Arch::Arm64);
        assert!(!arm.bios);
        assert_eq!(arm.efi_modules(&grub), "/usr/lib/grub/arm64-efi");
        assert_eq!(arm.efi_loader, "BOOTAA64.EFI");
        assert_eq!(
            Firmware::for_arch(Arch::Amd64).efi_modules(&grub),
            "/usr/lib/grub/x86_64-efi"
        );
    }
}
