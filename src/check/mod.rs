//! `kbuild check`: static inspection of an OS image's root filesystem.
//! Does it have what a bootable Kairos-style image needs: an init system,
//! a kernel with its modules, an initrd, GRUB for BIOS and UEFI and the
//! tool to make boot images, rsync; for core and standard images the
//! framework's marks; for standard the provider and k3s or k0s.
//!
//! Invariants:
//! * Nothing from the image is executed: files are read and their headers
//!   parsed, through [`Root`], so no path or link leaves the root.
//! * Links are followed by hand ([`links`]): one that climbs out of the
//!   root, or loops, is reported, never followed onto the host.
//! * Every rule runs: the report lists all findings at once, each failure
//!   with the component and the flavor's install hint.
//! * For a flavor with a signed boot chain (`boot.secure_boot`), missing or
//!   unsigned shim, GRUB or kernel are warnings: the image still boots
//!   with Secure Boot off, through its own GRUB.

mod formats;
pub mod links;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use serde::Serialize;

use crate::pe::Pe;
use crate::project::flavor::{Flavor, InitSystem};
use crate::project::{Arch, K8sDistribution, Variant};
use crate::rootfs::{list_dir, Root};

/// What the image is meant to be.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The flavor's facts (paths, init, hints); generic defaults without.
    pub flavor: Option<&'a Flavor>,
    pub arch: Arch,
    /// `None`: a flavor base image (no framework layer expected).
    pub variant: Option<Variant>,
    /// For standard images.
    pub k8s: Option<K8sDistribution>,
}

/// The parts of an image a rule checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Init,
    Kernel,
    Modules,
    Initrd,
    GrubBios,
    GrubEfi,
    GrubMkimage,
    Rsync,
    KairosRelease,
    MachineId,
    SshHostKeys,
    Provider,
    K8s,
    SignedShim,
    SignedGrub,
    SignedKernel,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Init => "init",
            Component::Kernel => "kernel",
            Component::Modules => "modules",
            Component::Initrd => "initrd",
            Component::GrubBios => "grub-bios",
            Component::GrubEfi => "grub-efi",
            Component::GrubMkimage => "grub-mkimage",
            Component::Rsync => "rsync",
            Component::KairosRelease => "kairos-release",
            Component::MachineId => "machine-id",
            Component::SshHostKeys => "ssh-host-keys",
            Component::Provider => "provider",
            Component::K8s => "k8s",
            Component::SignedShim => "signed-shim",
            Component::SignedGrub => "signed-grub",
            Component::SignedKernel => "signed-kernel",
        }
    }
}

/// One rule's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub component: Component,
    pub ok: bool,
    /// Not a failure, but something to fix for part of the image's uses
    /// (Secure Boot); has a hint.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    /// What was found, or what is wrong.
    pub detail: String,
    /// How to fix it (failures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub passed: bool,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.ok)
    }
}

/// Runs every rule on the image root at `root`.
pub fn check(root: &Root, expect: &Expectations) -> CheckReport {
    let mut rules = Rules {
        root,
        expect,
        findings: Vec::new(),
    };
    rules.init();
    let kernel_version = rules.kernel();
    rules.modules(kernel_version.as_deref());
    rules.initrd(kernel_version.as_deref());
    rules.grub();
    rules.rsync();
    rules.secure_boot();
    if let Some(variant) = expect.variant {
        rules.framework(variant);
        if variant == Variant::Standard {
            rules.provider();
        }
    }
    let passed = rules.findings.iter().all(|f| f.ok);
    CheckReport {
        passed,
        findings: rules.findings,
    }
}

struct Rules<'a> {
    root: &'a Root,
    expect: &'a Expectations<'a>,
    findings: Vec<Finding>,
}

/// The kairos-release keys every core and standard image carries.
const KAIROS_KEYS: [&str; 14] = [
    "KAIROS_ID",
    "KAIROS_ID_LIKE",
    "KAIROS_NAME",
    "KAIROS_VERSION",
    "KAIROS_RELEASE",
    "KAIROS_ARCH",
    "KAIROS_TARGETARCH",
    "KAIROS_FLAVOR",
    "KAIROS_FLAVOR_RELEASE",
    "KAIROS_FAMILY",
    "KAIROS_MODEL",
    "KAIROS_VARIANT",
    "KAIROS_HOME_URL",
    "KAIROS_BUG_REPORT_URL",
];
/// And what a standard image adds.
const SOFTWARE_KEYS: [&str; 2] = ["KAIROS_SOFTWARE_VERSION", "KAIROS_SOFTWARE_VERSION_PREFIX"];

impl Rules<'_> {
    fn pass(&mut self, component: Component, detail: String) {
        self.findings.push(Finding {
            component,
            ok: true,
            warning: false,
            detail,
            hint: None,
        });
    }

    fn warn(&mut self, component: Component, detail: String) {
        let hint = self.hint(component);
        self.findings.push(Finding {
            component,
            ok: true,
            warning: true,
            detail,
            hint: Some(hint),
        });
    }

    fn fail(&mut self, component: Component, detail: String) {
        let hint = self.hint(component);
        self.findings.push(Finding {
            component,
            ok: false,
            warning: false,
            detail,
            hint: Some(hint),
        });
    }

    fn hint(&self, component: Component) -> String {
        let hints = self.expect.flavor.map(|f| &f.install_hints);
        let flavor_hint = |pick: fn(&crate::project::flavor::InstallHints) -> &String| {
            hints.map(|h| pick(h).clone())
        };
        let generic = |what: &str| format!("install {what} in the image's spec");
        match component {
            Component::Init => flavor_hint(|h| &h.init).unwrap_or_else(|| generic("systemd or OpenRC")),
            Component::Kernel | Component::Modules => {
                flavor_hint(|h| &h.kernel).unwrap_or_else(|| generic("a kernel package"))
            }
            Component::Initrd => flavor_hint(|h| &h.initrd)
                .unwrap_or_else(|| generic("an initramfs generator and run it")),
            Component::GrubBios => {
                flavor_hint(|h| &h.grub_bios).unwrap_or_else(|| generic("GRUB's i386-pc modules"))
            }
            Component::GrubEfi | Component::GrubMkimage => {
                flavor_hint(|h| &h.grub_efi).unwrap_or_else(|| generic("GRUB's EFI modules and grub-mkimage"))
            }
            Component::Rsync => flavor_hint(|h| &h.rsync).unwrap_or_else(|| generic("rsync")),
            Component::KairosRelease | Component::MachineId | Component::SshHostKeys => {
                "build the image with `kbuild image`, which composes the framework layer (kairos-release, empty machine-id, no SSH host keys)".to_string()
            }
            Component::Provider | Component::K8s => {
                "build it with `kbuild image --variant standard --k8s k3s|k0s`".to_string()
            }
            Component::SignedShim | Component::SignedGrub | Component::SignedKernel => {
                hints
                    .and_then(|h| h.secure_boot.clone())
                    .unwrap_or_else(|| generic("the distribution's signed shim, GRUB and kernel"))
            }
        }
    }

    /// The flavor's signed boot chain, and a signed kernel: warnings only.
    fn secure_boot(&mut self) {
        let Some(flavor) = self.expect.flavor else {
            return;
        };
        let Some(chain) = &flavor.boot.secure_boot else {
            return;
        };
        let arch_path = |path: &String| match self.expect.arch {
            Arch::Amd64 => path.clone(),
            Arch::Arm64 => path.replace("x86_64", "arm64").replace("x64", "aa64"),
        };
        let kernel = vec![flavor.boot.kernel.clone()];
        for (component, candidates) in [
            (Component::SignedShim, &chain.shim),
            (Component::SignedGrub, &chain.grub),
            (Component::SignedKernel, &kernel),
        ] {
            let found = candidates.iter().map(arch_path).find_map(|path| {
                let target = links::resolve(self.root, &path).ok()?;
                Some((path, target))
            });
            let Some((path, target)) = found else {
                let wanted: Vec<String> = candidates.iter().map(arch_path).collect();
                self.warn(
                    component,
                    format!("none of {} (no Secure Boot)", wanted.join(", ")),
                );
                continue;
            };
            let shown = format!("{path} -> /{}", target.display());
            let bytes = self.read_capped(&target, formats::EFI_BINARY_MAX_BYTES);
            let signed = |bytes: Vec<u8>| Pe::parse(&bytes)?.is_signed();
            match bytes.map(signed) {
                Ok(Ok(true)) => self.pass(component, format!("{shown} (signed)")),
                Ok(Ok(false)) => self.warn(component, format!("{shown} carries no signature")),
                Ok(Err(why)) => self.warn(component, format!("{shown}: {why}")),
                Err(e) => self.warn(component, format!("{shown}: {e}")),
            }
        }
    }

    fn init(&mut self) {
        let target = match links::resolve(self.root, "/sbin/init") {
            Ok(target) => target,
            Err(e) => return self.fail(Component::Init, format!("no init: {e}")),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned());
        let openrc = ["/sbin/openrc", "/usr/sbin/openrc"]
            .iter()
            .any(|p| self.is_file(p));
        let found = match name.as_deref() {
            Some("systemd") => Some(InitSystem::Systemd),
            Some("openrc-init") => Some(InitSystem::Openrc),
            // Alpine: busybox init whose inittab starts OpenRC.
            Some("busybox") if openrc => Some(InitSystem::Openrc),
            _ => None,
        };
        let shown = format!("/sbin/init -> /{}", target.display());
        match (found, self.expect.flavor.map(|f| f.init)) {
            (None, _) => self.fail(
                Component::Init,
                format!("{shown} is neither systemd nor OpenRC"),
            ),
            (Some(found), Some(wanted)) if found != wanted => self.fail(
                Component::Init,
                format!("{shown} is {found:?}, but the flavor's init is {wanted:?}"),
            ),
            (Some(found), _) => self.pass(Component::Init, format!("{found:?} ({shown})")),
        }
    }

    /// Returns the kernel's version when it could be read.
    fn kernel(&mut self) -> Option<String> {
        let path = self
            .expect
            .flavor
            .map_or("/boot/vmlinuz", |f| f.boot.kernel.as_str());
        let target = match links::resolve(self.root, path) {
            Ok(target) => target,
            Err(e) => {
                self.fail(Component::Kernel, format!("no kernel: {e}"));
                return None;
            }
        };
        let bytes = match self.read(&target) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.fail(Component::Kernel, format!("/{}: {e}", target.display()));
                return None;
            }
        };
        let from_name = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix("vmlinuz-")
                    .or_else(|| n.strip_prefix("vmlinux-"))
            })
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_string);
        match formats::kernel(&bytes, self.expect.arch) {
            Ok(header_version) => {
                let version = header_version.or(from_name);
                let shown = version.as_deref().unwrap_or("version unknown");
                self.pass(
                    Component::Kernel,
                    format!("{path} -> /{} ({shown})", target.display()),
                );
                version
            }
            Err(why) => {
                self.fail(Component::Kernel, format!("/{}: {why}", target.display()));
                None
            }
        }
    }

    fn modules(&mut self, version: Option<&str>) {
        let dirs: Vec<&str> = match self.expect.flavor {
            Some(f) => vec![f.boot.modules_dir.as_str()],
            None => vec!["/usr/lib/modules", "/lib/modules"],
        };
        let Some((dir, kernels)) = dirs
            .iter()
            .find_map(|d| self.list(d).ok().map(|names| (*d, names)))
        else {
            return self.fail(
                Component::Modules,
                format!("no {} directory", dirs.join(" or ")),
            );
        };
        let kernels: Vec<String> = kernels
            .into_iter()
            .filter(|k| self.is_dir(&format!("{dir}/{k}")))
            .collect();
        match (kernels.as_slice(), version) {
            ([], _) => self.fail(Component::Modules, format!("{dir} holds no kernel")),
            ([_, _, ..], _) => self.fail(
                Component::Modules,
                format!(
                    "{dir} holds {} kernels ({}); an image boots exactly one",
                    kernels.len(),
                    kernels.join(", ")
                ),
            ),
            ([one], Some(version)) if one != version => self.fail(
                Component::Modules,
                format!("{dir}/{one} does not match the kernel {version}"),
            ),
            ([one], _) => self.pass(Component::Modules, format!("{dir}/{one}")),
        }
    }

    fn initrd(&mut self, kernel: Option<&str>) {
        let path = self
            .expect
            .flavor
            .map_or("/boot/initrd", |f| f.boot.initrd.as_str());
        let target = match links::resolve(self.root, path) {
            Ok(target) => target,
            Err(e) => return self.fail(Component::Initrd, format!("no initrd: {e}")),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned());
        if let (Some(built_for), Some(kernel)) = (name.as_deref().and_then(initrd_version), kernel)
        {
            if built_for != kernel {
                return self.fail(
                    Component::Initrd,
                    format!(
                        "/{} is for kernel {built_for}, not {kernel}",
                        target.display()
                    ),
                );
            }
        }
        match self.read_head(&target).map(|head| formats::initrd(&head)) {
            Ok(Ok(kind)) => self.pass(
                Component::Initrd,
                format!("{path} -> /{} ({kind})", target.display()),
            ),
            Ok(Err(why)) => self.fail(Component::Initrd, format!("/{}: {why}", target.display())),
            Err(e) => self.fail(Component::Initrd, format!("/{}: {e}", target.display())),
        }
    }

    fn grub(&mut self) {
        let grub = self.expect.flavor.map(|f| &f.boot.grub);
        if self.expect.arch == Arch::Amd64 {
            let dir = grub.map_or("/usr/lib/grub/i386-pc", |g| g.bios_modules.as_str());
            let missing: Vec<&str> = ["normal.mod", "cdboot.img", "boot_hybrid.img"]
                .into_iter()
                .filter(|f| !self.is_file(&format!("{dir}/{f}")))
                .collect();
            match missing.as_slice() {
                [] => self.pass(Component::GrubBios, dir.to_string()),
                _ => self.fail(
                    Component::GrubBios,
                    format!("{dir} lacks {}", missing.join(", ")),
                ),
            }
        }
        // Flavor files name the x86_64 directory; arm64 keeps its modules
        // in the sibling arm64-efi.
        let efi_dir = grub
            .map_or("/usr/lib/grub/x86_64-efi", |g| g.efi_modules.as_str())
            .to_string();
        let efi_dir = match self.expect.arch {
            Arch::Amd64 => efi_dir,
            Arch::Arm64 => efi_dir.replace("x86_64-efi", "arm64-efi"),
        };
        let efi_dir = efi_dir.as_str();
        let signed = SIGNED_GRUB.iter().find(|p| self.is_file(p));
        if self.is_file(&format!("{efi_dir}/normal.mod")) {
            self.pass(Component::GrubEfi, efi_dir.to_string());
        } else if let Some(signed) = signed {
            self.pass(Component::GrubEfi, format!("signed GRUB {signed}"));
        } else {
            self.fail(
                Component::GrubEfi,
                format!("no {efi_dir}/normal.mod and no signed GRUB EFI binary"),
            );
        }
        let mkimage = grub.map_or("grub-mkimage", |g| g.mkimage.as_str());
        match BIN_DIRS
            .iter()
            .map(|d| format!("{d}/{mkimage}"))
            .find(|p| self.is_file(p))
        {
            Some(path) => self.pass(Component::GrubMkimage, path),
            None => self.fail(
                Component::GrubMkimage,
                format!("no {mkimage} in {}", BIN_DIRS.join(", ")),
            ),
        }
    }

    fn rsync(&mut self) {
        match BIN_DIRS
            .iter()
            .map(|d| format!("{d}/rsync"))
            .find(|p| self.is_executable(p))
        {
            Some(path) => self.pass(Component::Rsync, path),
            None => self.fail(Component::Rsync, "no rsync executable".into()),
        }
    }

    fn framework(&mut self, variant: Variant) {
        match self.read(Path::new("etc/kairos-release")) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let has = |key: &str| {
                    text.lines().any(|l| {
                        l.split_once('=')
                            .is_some_and(|(k, v)| k == key && v != "\"\"")
                    })
                };
                let mut wanted: Vec<&str> = KAIROS_KEYS.to_vec();
                if variant == Variant::Standard {
                    wanted.extend(SOFTWARE_KEYS);
                }
                let missing: Vec<&str> = wanted.into_iter().filter(|k| !has(k)).collect();
                match missing.as_slice() {
                    [] => self.pass(Component::KairosRelease, "/etc/kairos-release".into()),
                    _ => self.fail(
                        Component::KairosRelease,
                        format!("/etc/kairos-release lacks {}", missing.join(", ")),
                    ),
                }
            }
            Err(e) => self.fail(
                Component::KairosRelease,
                format!("/etc/kairos-release: {e}"),
            ),
        }
        match self.root.open_at(Path::new("etc/machine-id"), OFlags::RDONLY) {
            Ok(fd) => match rustix::fs::fstat(&fd).map(|s| s.st_size) {
                Ok(0) => self.pass(Component::MachineId, "/etc/machine-id is empty".into()),
                Ok(size) => self.fail(
                    Component::MachineId,
                    format!("/etc/machine-id holds {size} bytes: every machine booted from the image would share one id"),
                ),
                Err(e) => self.fail(Component::MachineId, format!("/etc/machine-id: {e}")),
            },
            Err(e) => self.fail(Component::MachineId, format!("/etc/machine-id: {e}")),
        }
        let keys: Vec<String> = self
            .list("/etc/ssh")
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.starts_with("ssh_host_"))
            .collect();
        match keys.as_slice() {
            [] => self.pass(Component::SshHostKeys, "none baked in".into()),
            _ => self.fail(
                Component::SshHostKeys,
                format!(
                    "baked-in host keys (every machine would share them): /etc/ssh/{}",
                    keys.join(", /etc/ssh/")
                ),
            ),
        }
    }

    fn provider(&mut self) {
        let provider = "/system/providers/agent-provider-kairos";
        match self.is_executable(provider) {
            true => self.pass(Component::Provider, provider.into()),
            false => self.fail(Component::Provider, format!("no executable {provider}")),
        }
        let Some(k8s) = self.expect.k8s else {
            return self.fail(
                Component::K8s,
                "a standard image needs --k8s k3s or k0s".into(),
            );
        };
        let binary = format!("/usr/bin/{}", k8s.as_str());
        match self.is_executable(&binary) {
            true => self.pass(Component::K8s, binary),
            false => self.fail(Component::K8s, format!("no executable {binary}")),
        }
    }

    /// At most `limit` bytes of a regular file. The image chooses what its
    /// paths are: a fifo must not block the check, nor a huge file fill
    /// memory.
    fn read_capped(&self, rel: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let fd = self.root.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
        let stat = rustix::fs::fstat(&fd)?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit as u64)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Enough of a kernel for its header and version string.
    fn read(&self, rel: &Path) -> std::io::Result<Vec<u8>> {
        self.read_capped(rel, formats::KERNEL_HEAD_BYTES)
    }

    /// The first bytes of a file (enough for every magic number).
    fn read_head(&self, rel: &Path) -> std::io::Result<Vec<u8>> {
        self.read_capped(rel, formats::HEAD_BYTES)
    }

    /// Entry names of the directory `path` (links followed in the root).
    fn list(&self, path: &str) -> std::io::Result<Vec<String>> {
        let rel = strip_root(path);
        let fd = self
            .root
            .open_at(&rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let mut names: Vec<String> = list_dir(std::os::fd::AsFd::as_fd(&fd))?
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn metadata(&self, path: &str) -> Option<std::fs::Metadata> {
        let target = links::resolve(self.root, path).ok()?;
        let fd = self.root.open_at(&target, OFlags::PATH).ok()?;
        std::fs::File::from(fd).metadata().ok()
    }

    fn is_file(&self, path: &str) -> bool {
        self.metadata(path).is_some_and(|m| m.is_file())
    }

    fn is_dir(&self, path: &str) -> bool {
        self.metadata(path).is_some_and(|m| m.is_dir())
    }

    fn is_executable(&self, path: &str) -> bool {
        self.metadata(path)
            .is_some_and(|m| m.is_file() && m.mode() & 0o111 != 0)
    }
}

/// Where distributions keep signed GRUB EFI binaries.
const SIGNED_GRUB: [&str; 6] = [
    "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
    "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
    "/usr/lib/grub/arm64-efi-signed/gcdaa64.efi.signed",
    "/boot/efi/EFI/fedora/grubx64.efi",
    "/usr/share/efi/x86_64/grub.efi",
    "/usr/share/efi/aarch64/grub.efi",
];

/// Where programs live.
const BIN_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// The kernel version an initrd's file name says it was made for
/// (`initrd.img-6.1.0-26-amd64`, `initramfs-6.6.58-0-lts.img`); none for
/// names without one (`initramfs-lts`).
fn initrd_version(name: &str) -> Option<&str> {
    let rest = ["initrd.img-", "initramfs-", "initrd-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))?;
    let rest = rest.strip_suffix(".img").unwrap_or(rest);
    rest.starts_with(|c: char| c.is_ascii_digit())
        .then_some(rest)
}

fn strip_root(path: &str) -> PathBuf {
    PathBuf::from(path.trim_start_matches('/'))
}
