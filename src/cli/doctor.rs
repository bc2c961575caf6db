//! `kbuild doctor`: what this host has of what kbuild needs, with a hint
//! for whatever is missing.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::FailedError;
use super::OutputFormat as Format;
use crate::binfmt;
use crate::platform::Platform;
use crate::project::Arch;
use crate::tools::{self, ToolError};

/// List every host prerequisite, found or missing: root and the kernel
/// features builds use, each program kbuild runs (with its version, or
/// how to install it), and per architecture of the project's matrix what
/// building and booting it needs (binfmt_misc and its emulator for a
/// foreign one, UEFI firmware). Exit 0 when everything is there, 1
/// otherwise; without a kbuild.yaml every architecture is listed, and
/// what only a foreign one needs is optional.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The project directory whose kbuild.yaml names the architectures.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
}

#[derive(Debug, Serialize)]
struct Item {
    name: String,
    /// What kbuild uses it for.
    purpose: String,
    ok: bool,
    /// Whether its absence makes the exit status 1.
    required: bool,
    /// A path and version, or what is wrong.
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let (arches, required) = matrix_arches(&args.project)?;
    let mut items = host_items();
    items.extend(tools::ALL.iter().map(|tool| tool_item(tool)));
    for arch in arches {
        items.extend(arch_items(arch, required));
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Format::Text => {
            for item in &items {
                let mark = match (item.ok, item.required) {
                    (true, _) => "ok  ",
                    (false, true) => "MISS",
                    (false, false) => "opt ",
                };
                println!("{mark}  {:<20} {}", item.name, item.detail);
                if let Some(hint) = &item.hint {
                    println!("      {:<20} hint: {hint}", "");
                }
            }
        }
    }
    let missing = items.iter().filter(|i| !i.ok && i.required).count();
    match missing {
        0 => Ok(()),
        n => Err(FailedError(format!("{n} of {} prerequisites missing", items.len())).into()),
    }
}

fn tool_item(tool: &'static tools::Tool) -> Item {
    let (ok, detail, hint) = match tools::locate(tool) {
        Ok(found) => (
            true,
            format!("{} ({})", found.path.display(), found.version),
            None,
        ),
        Err(e @ (ToolError::Missing { .. } | ToolError::TooOld { .. })) => {
            (false, e.to_string(), e.hint().map(str::to_string))
        }
        Err(e) => (false, e.to_string(), None),
    };
    Item {
        name: tool.name.to_string(),
        purpose: tool.purpose.to_string(),
        ok,
        required: true,
        detail,
        hint,
    }
}

/// The architectures of the project's matrix, and whether they are
/// required (they are when a kbuild.yaml names them).
fn matrix_arches(project: &Path) -> anyhow::Result<(Vec<Arch>, bool)> {
    use anyhow::Context as _;
    if !project.join("kbuild.yaml").is_file() {
        return Ok((vec![Arch::Amd64, Arch::Arm64], false));
    }
    let loaded = crate::project::Project::load(project)
        .with_context(|| format!("cannot read the project in {}", project.display()))?;
    Ok((loaded.config.arches.clone(), true))
}

/// What building and booting a foreign `arch` needs here: its
/// binfmt_misc handler, QEMU's system emulator and UEFI firmware for it
/// (the host's own are listed with the tools and by host_items).
fn arch_items(arch: Arch, required: bool) -> Vec<Item> {
    let host = Platform::host();
    let target = Platform::parse(&format!("linux/{arch}")).expect("a valid platform");
    let mut items = Vec::new();
    if !binfmt::native(&target, &host) {
        let handler = binfmt::check(&target);
        items.push(Item {
            name: format!("binfmt-{arch}"),
            purpose: format!("RUN steps of {arch} images on this {} host", host.arch),
            ok: handler.is_ok(),
            required,
            detail: match &handler {
                Ok(Some(h)) => format!("{}: {} (flags: {})", h.name, h.interpreter, h.flags),
                Ok(None) => "native".into(),
                Err(e) => e.to_string(),
            },
            hint: handler.as_ref().err().and_then(|e| e.hint()),
        });
        let mut qemu = tool_item(crate::boot::emulator(arch));
        qemu.required = required;
        items.push(qemu);
        items.extend(firmware_items(arch, required));
    }
    items
}

/// The UEFI firmware of `arch`, with and without Secure Boot.
fn firmware_items(arch: Arch, required: bool) -> Vec<Item> {
    let name = match arch {
        Arch::Amd64 => "ovmf",
        Arch::Arm64 => "aavmf",
    };
    [false, true]
        .into_iter()
        .map(|secure| {
            let found = crate::boot::uefi_firmware(arch, secure);
            Item {
                name: match secure {
                    false => name.to_string(),
                    true => format!("{name}-secure-boot"),
                },
                purpose: match secure {
                    false => format!("UEFI firmware for `kbuild boot --firmware uefi` of {arch} ISOs"),
                    true => format!("`kbuild boot --firmware uefi-secure` of {arch} ISOs (Secure Boot enforced)"),
                },
                ok: found.is_ok(),
                required,
                detail: match &found {
                    Ok(f) => format!("{}, {} ({})", f.code.display(), f.vars.display(), f.source),
                    Err(e) => e.to_string(),
                },
                hint: found.as_ref().err().and_then(|e| e.hint()),
            }
        })
        .collect()
}

/// KVM as `kbuild boot --accel auto` decides it: a probe guest must
/// execute. Optional, so never missing.
fn kvm_item() -> Item {
    use crate::boot::{probe_kvm, KVM_DEVICE, PROBE_DEADLINE};
    let host = Arch::parse(&Platform::host().arch).unwrap_or(Arch::Amd64);
    let verdict = tools::locate(crate::boot::emulator(host))
        .map(|qemu| probe_kvm(&qemu.path, Path::new(KVM_DEVICE), host, PROBE_DEADLINE));
    Item {
        name: "kvm".into(),
        purpose: "fast `kbuild boot` (optional: QEMU falls back to TCG)".into(),
        ok: true,
        required: false,
        detail: match verdict {
            Ok(verdict) if verdict.works() => verdict.to_string(),
            Ok(verdict) => format!("not used: {verdict}; boots use TCG (slower)"),
            Err(_) => {
                "not probed: no qemu-system-x86_64 to run a guest; boots use TCG (slower)".into()
            }
        },
        hint: None,
    }
}

/// Rootless readiness: each prerequisite for an ordinary user, then the
/// proof (overlayfs mounted in the namespace, on the store's filesystem).
/// Required when not root, since it is then the only way to build.
fn rootless_items(root: bool) -> Vec<Item> {
    let purpose = "building as an ordinary user (a user namespace with subordinate ids)";
    if root {
        return vec![Item {
            name: "rootless".into(),
            purpose: purpose.into(),
            ok: true,
            required: false,
            detail:
                "running as root: not used (ordinary users with subordinate ids build rootless)"
                    .into(),
            hint: None,
        }];
    }
    let readiness = crate::rootless::Readiness::of_this_user();
    let ready = readiness.first_blocking_failure().is_none();
    let mut items: Vec<Item> = readiness
        .checks
        .iter()
        .map(|check| Item {
            name: format!("rootless: {}", check.name),
            purpose: purpose.into(),
            ok: check.ok,
            required: true,
            detail: check.detail.clone(),
            hint: check.fix.clone(),
        })
        .collect();
    if let Some(mapping) = readiness.mapping().filter(|_| ready) {
        let store = crate::store::Store::default_root();
        let probed = std::fs::create_dir_all(&store)
            .map_err(|e| format!("{}: {e}", store.display()))
            .and_then(|()| crate::rootless::probe_overlay(&mapping, &store));
        if probed.is_ok() {
            // The namespace was made, whatever the sysctl says (an
            // AppArmor profile may allow kbuild).
            let userns = crate::rootless::readiness::USERNS;
            for item in items.iter_mut().filter(|i| i.name.ends_with(userns)) {
                item.required = false;
            }
        }
        items.push(Item {
            name: "rootless: probe".into(),
            purpose: purpose.into(),
            ok: probed.is_ok(),
            required: true,
            detail: match &probed {
                Ok(()) => format!("overlayfs works in a user namespace on {}", store.display()),
                Err(e) => e.clone(),
            },
            hint: probed.err().map(|_| {
                "the store needs a filesystem with user xattrs (ext4, xfs, btrfs; tmpfs from Linux 6.6): set KBUILD_STORE or --store".to_string()
            }),
        });
    }
    items
}

/// Root, overlayfs, and KVM (optional: boots fall back to TCG).
fn host_items() -> Vec<Item> {
    let root = rustix::process::geteuid().is_root();
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"));
    let mut items = vec![
        Item {
            name: "root".into(),
            purpose: "overlayfs mounts and namespaces for RUN, COPY and WORKDIR steps".into(),
            ok: true,
            required: false,
            detail: match root {
                true => "running as root".into(),
                false => "not root: builds run rootless (see the rootless items)".into(),
            },
            hint: None,
        },
        Item {
            name: "overlayfs".into(),
            purpose: "build step snapshots and image views".into(),
            ok: overlay,
            required: true,
            detail: match overlay {
                true => "in /proc/filesystems".into(),
                false => "not in /proc/filesystems".into(),
            },
            hint: (!overlay).then(|| "load it with `modprobe overlay`".into()),
        },
        kvm_item(),
    ];
    items.extend(rootless_items(root));
    let host = Arch::parse(&Platform::host().arch).unwrap_or(Arch::Amd64);
    items.extend(firmware_items(host, true));
    items
}
