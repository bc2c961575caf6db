//! `kbuild doctor`: what this host has of what kbuild needs, with a hint
//! for whatever is missing.

use std::path::Path;

use clap::Args;
use serde::Serialize;

use super::FailedError;
use super::OutputFormat as Format;
use crate::tools::{self, ToolError};

/// List every host prerequisite, found or missing: root and the kernel
/// features builds use, and each program kbuild runs (with its version, or
/// how to install it). Exit 0 when everything is there, 1 otherwise.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Serialize)]
struct Item {
    name: String,
    /// What kbuild uses it for.
    purpose: String,
    ok: bool,
    /// A path and version, or what is wrong.
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut items = host_items();
    items.extend(tools::ALL.iter().map(|tool| tool_item(tool)));
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Format::Text => {
            for item in &items {
                let mark = if item.ok { "ok  " } else { "MISS" };
                println!("{mark}  {:<20} {}", item.name, item.detail);
                if let Some(hint) = &item.hint {
                    println!("      {:<20} hint: {hint}", "");
                }
            }
        }
    }
    let missing = items.iter().filter(|i| !i.ok).count();
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
        detail,
        hint,
    }
}

/// KVM as `kbuild boot --accel auto` decides it: a probe guest must
/// execute. Optional, so never missing.
fn kvm_item() -> Item {
    use crate::boot::{probe_kvm, KVM_DEVICE, PROBE_DEADLINE};
    let verdict = tools::locate(&tools::QEMU_X86_64)
        .map(|qemu| probe_kvm(&qemu.path, Path::new(KVM_DEVICE), PROBE_DEADLINE));
    Item {
        name: "kvm".into(),
        purpose: "fast `kbuild boot` (optional: QEMU falls back to TCG)".into(),
        ok: true,
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

/// Root, overlayfs, and KVM (optional: boots fall back to TCG).
fn host_items() -> Vec<Item> {
    let root = rustix::process::geteuid().is_root();
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"));
    let ovmf = crate::boot::ovmf();
    let ovmf_secure = crate::boot::ovmf_secure();
    vec![
        Item {
            name: "root".into(),
            purpose: "overlayfs mounts and namespaces for RUN, COPY and WORKDIR steps".into(),
            ok: root,
            detail: match root {
                true => "running as root".into(),
                false => "not root: uncached build steps will fail".into(),
            },
            hint: (!root).then(|| "run kbuild as root (e.g. `sudo -E kbuild ...`)".into()),
        },
        Item {
            name: "overlayfs".into(),
            purpose: "build step snapshots and image views".into(),
            ok: overlay,
            detail: match overlay {
                true => "in /proc/filesystems".into(),
                false => "not in /proc/filesystems".into(),
            },
            hint: (!overlay).then(|| "load it with `modprobe overlay`".into()),
        },
        kvm_item(),
        Item {
            name: "ovmf".into(),
            purpose: "UEFI firmware for `kbuild boot --firmware uefi`".into(),
            ok: ovmf.is_ok(),
            detail: match &ovmf {
                Ok((code, vars)) => format!("{code}, {vars}"),
                Err(e) => e.to_string(),
            },
            hint: ovmf.as_ref().err().and_then(|e| e.hint()),
        },
        Item {
            name: "ovmf-secure-boot".into(),
            purpose: "`kbuild boot --firmware uefi-secure` (Secure Boot enforced)".into(),
            ok: ovmf_secure.is_ok(),
            detail: match &ovmf_secure {
                Ok((code, vars)) => format!("{code}, {vars}"),
                Err(e) => e.to_string(),
            },
            hint: ovmf_secure.as_ref().err().and_then(|e| e.hint()),
        },
    ]
}
