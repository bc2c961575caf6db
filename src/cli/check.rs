//! `kbuild check IMAGE | --rootfs DIR`: the preflight check, rendered.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::OutputFormat as Format;
use super::{open_store, ArchArg, FailedError, K8sArg, StoreArgs, UsageError, VariantArg};
use crate::check::{self, CheckReport, Expectations};
use crate::project::{Arch, Project};
use crate::rootfs::Root;

/// Check that an image can boot as a Kairos-style OS: init system, kernel
/// and modules, initrd, GRUB for BIOS and UEFI, grub-mkimage, rsync; with
/// --variant also the framework's marks, and for standard the provider and
/// k3s or k0s. Reads files only; runs nothing from the image. Exit 0 when
/// everything passes, 1 when something fails, 2 on bad usage.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A store image (name or digest).
    #[arg(required_unless_present = "rootfs", conflicts_with = "rootfs")]
    image: Option<String>,
    /// An unpacked root filesystem instead of a store image.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// What the image should be on top of its flavor base.
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// The Kubernetes distribution of a standard image.
    #[arg(long, value_enum, requires = "variant")]
    k8s: Option<K8sArg>,
    /// Check against this flavor of the project (its paths, init system
    /// and install hints) instead of generic defaults.
    #[arg(long, value_name = "FLAVOR")]
    flavor: Option<String>,
    /// The project holding flavors/<FLAVOR>.yaml.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
    /// The image's architecture [default: a store image's own, else the
    /// host's].
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let project =
        match &args.flavor {
            Some(_) => Some(Project::load(&args.project).with_context(|| {
                format!("cannot load the project in {}", args.project.display())
            })?),
            None => None,
        };
    let flavor = match (&args.flavor, &project) {
        (Some(name), Some(project)) => Some(project.flavors.get(name).ok_or_else(|| {
            UsageError(format!(
                "unknown flavor \"{name}\": the project has {}",
                project
                    .flavors
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
        _ => None,
    };
    let store = match &args.image {
        Some(_) => Some(open_store(&args.store)?),
        None => None,
    };
    // A store image says what it is; a directory does not.
    let image_arch = match (&store, &args.image) {
        (Some(store), Some(image)) => {
            let (_, manifest) = store.resolve(image)?;
            Some(store.image_config(&manifest)?.architecture().to_string())
        }
        _ => None,
    };
    let arch = match args.arch {
        Some(arch) => Arch::from(arch),
        None => {
            let named = image_arch.unwrap_or_else(|| crate::platform::Platform::host().arch);
            Arch::parse(&named).ok_or_else(|| {
                UsageError(format!(
                    "the architecture {named} is not amd64 or arm64: pass --arch"
                ))
            })?
        }
    };
    let expect = Expectations {
        flavor,
        arch,
        variant: args.variant.map(Into::into),
        k8s: args.k8s.map(Into::into),
    };
    let (subject, report) = match (&args.rootfs, &args.image) {
        (Some(dir), _) => {
            let root = Root::open(dir)
                .map_err(crate::diagnose::InputFileError::at(dir))
                .context("cannot open the root filesystem")?;
            (dir.display().to_string(), check::check(&root, &expect))
        }
        (None, Some(image)) => {
            let store = store.as_ref().expect("opened for an image");
            let layers = store.image_layers(image)?;
            let report = store
                .with_image_root(&layers, |root, _| check::check(root, &expect))
                .with_context(|| format!("cannot open the image {image}"))?;
            (image.clone(), report)
        }
        (None, None) => unreachable!("clap requires IMAGE or --rootfs"),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", render(&subject, &report)),
    }
    match report.passed {
        true => Ok(()),
        false => Err(FailedError(format!(
            "{subject} failed {} of {} checks",
            report.failures().count(),
            report.findings.len()
        ))
        .into()),
    }
}

pub(super) fn render(subject: &str, report: &CheckReport) -> String {
    let mut out = format!("check {subject}\n");
    for finding in &report.findings {
        let mark = match (finding.ok, finding.warning) {
            (false, _) => "FAIL",
            (true, true) => "warn",
            (true, false) => "ok  ",
        };
        out.push_str(&format!(
            "  {mark}  {:<15} {}\n",
            finding.component.name(),
            finding.detail
        ));
        if let Some(hint) = &finding.hint {
            out.push_str(&format!("        hint: {hint}\n"));
        }
    }
    out
}
