//! `kbuild uki`: a unified kernel image of an image. The image's own EFI
//! stub (systemd's) gets the image's kernel, initrd, os-release and
//! kernel release and the live command line as PE sections
//! ([`crate::pe::append_sections`]), and
//! is signed with the user's key when asked, by osslsigncode with the
//! signing time fixed to the epoch.
//!
//! Invariants:
//! * Everything in the binary comes from the image and the request; no
//!   host file enters it (the signing tool and key are the user's).
//! * The same image, command line, epoch and key give the same bytes:
//!   the sections carry no time, and RSA PKCS#1 v1.5 signatures with a
//!   fixed signing time are deterministic.
//! * The output appears whole (temp file beside it, renamed).

use std::path::{Path, PathBuf};

use crate::pe::{self, NewSection, PeError};
use crate::project::flavor::Boot;
use crate::project::Arch;
use crate::rootfs::Root;
use crate::tools::{self, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("the flavor names no EFI stub (flavors/<f>.yaml, boot.uki.stub)")]
    NoStubConfigured,
    #[error("the image has none of the EFI stubs {0}: install systemd's stub (Debian: systemd-boot-efi)")]
    NoStub(String),
    #[error("the image has no {what} at {path}: {source}")]
    NotInImage {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the EFI stub: {0}")]
    Pe(#[from] PeError),
    #[error("signing: {0}")]
    Sign(#[from] ToolError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The key and certificate to sign with (PEM, unencrypted key).
#[derive(Debug, Clone)]
pub struct Signer {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// The parts of a UKI, read from an image root.
struct Parts {
    stub: Vec<u8>,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    os_release: Vec<u8>,
    /// The kernel release (`uname -r`), when the image has exactly one.
    uname: Option<String>,
}

fn read(root: &Root, what: &'static str, path: &str) -> Result<Vec<u8>, UkiError> {
    root.read(&crate::rootfs::clean(path))
        .map_err(|source| UkiError::NotInImage {
            what,
            path: path.to_string(),
            source,
        })
}

/// Reads the stub, kernel, initrd and os-release of the image at `root`.
fn parts(root: &Root, boot: &Boot, arch: Arch) -> Result<Parts, UkiError> {
    let stubs = boot
        .uki
        .as_ref()
        .map(|uki| &uki.stub)
        .ok_or(UkiError::NoStubConfigured)?;
    let for_arch = |path: &String| match arch {
        Arch::Amd64 => path.clone(),
        Arch::Arm64 => path.replace("x64", "aa64"),
    };
    let stub_path = stubs
        .iter()
        .map(for_arch)
        .find(|path| root.exists(&crate::rootfs::clean(path)))
        .ok_or_else(|| {
            UkiError::NoStub(stubs.iter().map(for_arch).collect::<Vec<_>>().join(", "))
        })?;
    let os_release = read(root, "os-release", "/etc/os-release")
        .or_else(|_| read(root, "os-release", "/usr/lib/os-release"))?;
    let modules = crate::rootfs::clean(&boot.modules_dir);
    let uname = std::fs::read_dir(root.resolve(&modules).unwrap_or_default())
        .ok()
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .and_then(|names| match names.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        });
    Ok(Parts {
        stub: read(root, "EFI stub", &stub_path)?,
        kernel: read(root, "kernel", &boot.kernel)?,
        initrd: read(root, "initrd", &boot.initrd)?,
        os_release,
        uname,
    })
}

/// The unsigned UKI of `parts` booting with `cmdline`.
fn assemble(parts: &Parts, cmdline: &str) -> Result<Vec<u8>, UkiError> {
    let mut sections = vec![
        NewSection {
            name: ".osrel",
            data: &parts.os_release,
        },
        NewSection {
            name: ".cmdline",
            data: cmdline.as_bytes(),
        },
    ];
    if let Some(uname) = &parts.uname {
        sections.push(NewSection {
            name: ".uname",
            data: uname.as_bytes(),
        });
    }
    // The kernel last, as systemd's ukify places it: it may use memory
    // past its section while it decompresses.
    sections.push(NewSection {
        name: ".initrd",
        data: &parts.initrd,
    });
    sections.push(NewSection {
        name: ".linux",
        data: &parts.kernel,
    });
    Ok(pe::append_sections(&parts.stub, &sections)?)
}

/// The unsigned UKI of the image at `root` booting with `cmdline`.
pub fn of_root(root: &Root, boot: &Boot, arch: Arch, cmdline: &str) -> Result<Vec<u8>, UkiError> {
    assemble(&parts(root, boot, arch)?, cmdline)
}

/// Writes `image` to `dest`, signed by `signer` when given (the signing
/// time is `epoch`).
pub fn write(
    image: &[u8],
    dest: &Path,
    signer: Option<&Signer>,
    epoch: i64,
) -> Result<(), UkiError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UkiError::Io { path, source }
    };
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let unsigned = crate::store::atomic::temp_path_in(dir);
    std::fs::write(&unsigned, image).map_err(io(&unsigned))?;
    let result = match signer {
        None => std::fs::rename(&unsigned, dest).map_err(io(dest)),
        Some(signer) => sign(&unsigned, dest, signer, epoch, dir),
    };
    let _ = std::fs::remove_file(&unsigned);
    result
}

fn sign(
    unsigned: &Path,
    dest: &Path,
    signer: &Signer,
    epoch: i64,
    dir: &Path,
) -> Result<(), UkiError> {
    let osslsigncode = tools::locate(&tools::OSSLSIGNCODE)?;
    let signed = crate::store::atomic::temp_path_in(dir);
    let result = osslsigncode
        .run([
            "sign".as_ref(),
            "-h".as_ref(),
            "sha256".as_ref(),
            "-certs".as_ref(),
            signer.cert.as_os_str(),
            "-key".as_ref(),
            signer.key.as_os_str(),
            "-time".as_ref(),
            epoch.to_string().as_ref(),
            "-in".as_ref(),
            unsigned.as_os_str(),
            "-out".as_ref(),
            signed.as_os_str(),
        ] as [&std::ffi::OsStr; 13])
        .map_err(UkiError::from)
        .and_then(|_| {
            std::fs::rename(&signed, dest).map_err(|source| UkiError::Io {
                path: dest.to_path_buf(),
                source,
            })
        });
    let _ = std::fs::remove_file(&signed);
    result
}

/// What `kbuild uki` was asked for.
#[derive(Debug, Clone)]
pub struct UkiRequest {
    /// A stored image (as `kbuild images` lists it).
    pub image: String,
    /// The flavor whose boot facts apply (stub, kernel, initrd, live
    /// command line).
    pub flavor: String,
    pub output: PathBuf,
    pub signer: Option<Signer>,
    /// Appended to the flavor's live command line.
    pub extra_cmdline: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UkiReport {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub signed: bool,
    pub cmdline: String,
    pub epoch: i64,
}

/// The command line a UKI of `boot`'s flavor boots on `arch` with: the
/// live one, both consoles (as the ISO's menu), then `extra`.
pub fn cmdline(boot: &Boot, arch: Arch, extra: Option<&str>) -> String {
    let mut line = format!(
        "{} console=tty0 console={},115200",
        boot.live.cmdline,
        arch.serial_console()
    );
    if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
        line.push(' ');
        line.push_str(extra.trim());
    }
    line
}

/// Builds the UKI of a stored image and writes it to `request.output`.
pub fn build_uki(
    store: &crate::store::Store,
    project: &crate::project::Project,
    request: &UkiRequest,
) -> Result<UkiReport, BuildUkiError> {
    let flavor = project
        .flavors
        .get(&request.flavor)
        .ok_or_else(|| BuildUkiError::UnknownFlavor(request.flavor.clone()))?;
    let (_, manifest) = store.resolve(&request.image)?;
    let config = store.image_config(&manifest)?;
    let arch = Arch::parse(&config.architecture().to_string())
        .ok_or_else(|| BuildUkiError::UnknownArch(config.architecture().to_string()))?;
    let epoch = crate::store::image::epoch(&config);
    let layers = store.manifest_layers(&manifest)?;
    let line = cmdline(&flavor.boot, arch, request.extra_cmdline.as_deref());
    if line.chars().any(|c| c.is_control()) {
        return Err(BuildUkiError::BadCmdline(line));
    }
    let image =
        store.with_image_root(&layers, |root, _| of_root(root, &flavor.boot, arch, &line))??;
    write(&image, &request.output, request.signer.as_ref(), epoch)?;
    let size = std::fs::metadata(&request.output)
        .map_err(|source| UkiError::Io {
            path: request.output.clone(),
            source,
        })?
        .len();
    let sha256 = crate::store::hash_file(&request.output)
        .map_err(|source| UkiError::Io {
            path: request.output.clone(),
            source,
        })?
        .hex()
        .to_string();
    Ok(UkiReport {
        path: request.output.clone(),
        sha256,
        size,
        signed: request.signer.is_some(),
        cmdline: line,
        epoch,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BuildUkiError {
    #[error("unknown flavor \"{0}\"")]
    UnknownFlavor(String),
    #[error("the image's architecture {0} is not amd64 or arm64")]
    UnknownArch(String),
    #[error("the command line has control characters: {0:?}")]
    BadCmdline(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Uki(#[from] UkiError),
}

impl BuildUkiError {
    /// Whether the request is at fault (exit 2).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            BuildUkiError::UnknownFlavor(_) | BuildUkiError::BadCmdline(_)
        )
    }
}
