//! `kbuild uki`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::progress::summary;
use super::{open_store, StoreArgs, UsageError};
use crate::project::Project;
use crate::uki::{build_uki, Signer, UkiRequest};

/// Write a unified kernel image of a stored image: its own EFI stub
/// (systemd's) with its kernel, initrd, os-release and the flavor's live
/// command line in one EFI binary, signed with your key when given
/// (osslsigncode; the signing time is SOURCE_DATE_EPOCH or the image's
/// creation time, so the same inputs and key give the same bytes).
#[derive(Debug, Args)]
pub struct UkiArgs {
    /// A stored image (as `kbuild images` lists it).
    #[arg(long, value_name = "IMAGE")]
    from: String,
    /// The flavor whose boot facts apply (flavors/<FLAVOR>.yaml).
    #[arg(long)]
    flavor: String,
    /// Where the EFI binary goes.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: PathBuf,
    /// The private key to sign with (PEM, e.g. db.key of `kbuild keys generate`).
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// Its certificate (PEM).
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// Appended to the flavor's live command line.
    #[arg(long, value_name = "ARGS")]
    cmdline: Option<String>,
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: UkiArgs) -> anyhow::Result<()> {
    let project = Project::load(&args.project)
        .with_context(|| format!("cannot load the project in {}", args.project.display()))?;
    if !project.flavors.contains_key(&args.flavor) {
        return Err(UsageError(format!("unknown flavor \"{}\"", args.flavor)).into());
    }
    let store = open_store(&args.store)?;
    let signer = args
        .sign_key
        .clone()
        .zip(args.sign_cert.clone())
        .map(|(key, cert)| Signer { key, cert });
    let report = build_uki(
        &store,
        &project,
        &UkiRequest {
            image: args.from.clone(),
            flavor: args.flavor.clone(),
            output: args.output.clone(),
            signer,
            extra_cmdline: args.cmdline.clone(),
        },
    )
    .with_context(|| format!("cannot make the UKI of {}", args.from))?;
    summary!(
        "uki       {} ({:.1} MiB, {})",
        report.path.display(),
        report.size as f64 / 1048576.0,
        if report.signed { "signed" } else { "unsigned" }
    );
    summary!("cmdline   {}", report.cmdline);
    println!("{}", report.path.display());
    println!("sha256 {}", report.sha256);
    Ok(())
}
