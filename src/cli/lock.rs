//! `kbuild lock [--update]`: record what the project's floating inputs
//! resolve to in kbuild.lock.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::progress::{summary, CliReporter};
use super::registry::RegistryArgs;
use super::{open_store, StoreArgs};
use crate::compose::resolve::lock_project;
use crate::project::Project;

/// Resolve every floating input of the project's matrix (base images per
/// flavor, release and arch; package images and URLs per arch) and record
/// it in kbuild.lock. Images are pulled into the store on the way, so a
/// locked build afterwards needs no registry for them.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Resolve everything again, not only what the lock lacks.
    #[arg(long)]
    update: bool,
    /// The project directory holding kbuild.yaml.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: LockArgs) -> anyhow::Result<()> {
    let project = Project::load(&args.project)
        .with_context(|| format!("cannot load the project in {}", args.project.display()))?;
    let registry = args.registry.options_for(&project)?;
    let store = open_store(&args.store)?;
    let reporter = CliReporter::new();
    let report = lock_project(&store, &project, args.update, &registry, &reporter)?;
    summary!(
        "lock: {} resolved, {} kept{}",
        report.resolved,
        report.kept,
        if report.written {
            ", kbuild.lock written"
        } else {
            ", kbuild.lock unchanged"
        }
    );
    Ok(())
}
