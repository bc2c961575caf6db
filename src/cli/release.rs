//! `kbuild release` and `kbuild release merge`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::progress::{paint, summary, CliReporter, GREEN, RED};
use super::registry::{parse_reference, RegistryArgs};
use super::{
    cancel_on_signals, key_value, open_store, project_build_options, write_report, FailedError,
    LayerArgs, StoreArgs, UsageError,
};
use crate::project::Project;
use crate::release::{merge, release, ReleaseReport, ReleaseRequest, Shard};

/// Build every cell of kbuild.yaml's matrix (or those --only keeps, or one
/// --shard of them): per cell the OCI image (pushed with --push), the ISO
/// and its .sha256, an SPDX 2.3 SBOM and an in-toto/SLSA provenance
/// statement; for the release manifest.json and SHA256SUMS. Core is built
/// once and shared by its standard cells. A failing cell is reported at
/// the end and the others go on (exit 1).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, disable_version_flag = true)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    command: Option<ReleaseCommand>,
    /// Only the cells whose name (the ISO's base name) matches this glob,
    /// e.g. 'kairos-debian-*'.
    #[arg(long, value_name = "GLOB")]
    only: Option<String>,
    /// Build the I-th of N deterministic slices of the selected cells (for
    /// a CI job matrix; join them with `kbuild release merge`).
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Push each image to the name the naming scheme gives.
    #[arg(long)]
    push: bool,
    /// The release directory [default: kbuild.yaml's output_dir].
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Resolve nothing that kbuild.lock does not hold.
    #[arg(long)]
    locked: bool,
    /// Build every flavor on this image instead of its base (machines that
    /// cannot reach the public registry).
    #[arg(long, value_name = "REF")]
    base_image: Option<String>,
    /// Import the step cache from this registry reference first.
    #[arg(long, value_name = "REF")]
    cache_from: Option<String>,
    /// Export the step cache to this registry reference at the end.
    #[arg(long, value_name = "REF")]
    cache_to: Option<String>,
    /// Write a JSON report (per cell: stages, steps, cache hits, failure).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = key_value)]
    build_args: Vec<(String, String)>,
    #[arg(long)]
    no_cache: bool,
    /// Rebuild each cell in an empty store and compare (as `kbuild verify`
    /// does; needs SOURCE_DATE_EPOCH): a cell that differs fails, and the
    /// provenance of one that matches says `reproducible: true`.
    #[arg(long)]
    verify: bool,
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
    #[command(flatten)]
    layer: LayerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum ReleaseCommand {
    /// Join the shards' manifests (manifest-shard-I-of-N.json) found in
    /// DIR... into one manifest.json and SHA256SUMS, checking every
    /// artifact's sha256 and copying it into --output-dir when elsewhere.
    Merge {
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Where the merged release goes [default: the first DIR].
        #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    text.parse()
}

pub fn run(args: ReleaseArgs) -> anyhow::Result<()> {
    if let Some(ReleaseCommand::Merge { dirs, output_dir }) = &args.command {
        let out = output_dir.clone().unwrap_or_else(|| dirs[0].clone());
        let manifest = merge(dirs, &out)?;
        let artifacts: usize = manifest.cells.iter().map(|c| c.artifacts.len()).sum();
        summary!(
            "merged    {} cells, {artifacts} artifacts",
            manifest.cells.len()
        );
        println!("{}", out.join("SHA256SUMS").display());
        return Ok(());
    }
    let project = Project::load(&args.project)
        .with_context(|| format!("cannot load the project in {}", args.project.display()))?;
    let registry = args.registry.options_for(&project)?;
    let output_dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| project.root.join(&project.config.output_dir));
    let request = ReleaseRequest {
        only: args.only.clone(),
        shard: args.shard,
        push: args.push,
        output_dir,
        locked: args.locked,
        base_image: args.base_image.clone(),
        extra_args: args.build_args.iter().cloned().collect::<BTreeMap<_, _>>(),
        options: project_build_options(&project, args.no_cache, &args.layer, registry)?,
        cache_from: args
            .cache_from
            .as_deref()
            .map(parse_reference)
            .transpose()?,
        cache_to: args.cache_to.as_deref().map(parse_reference).transpose()?,
        verify: match args.verify {
            true => Some(super::source_date_epoch()?.ok_or(crate::verify::VerifyError::NoEpoch)?),
            false => None,
        },
    };
    let store = open_store(&args.store)?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let report = release(&store, &project, &request, &reporter, &cancel)?;
    reporter.finish();
    render_table(&report);
    render_problems(&report);
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    println!("{}", report.manifest.display());
    if report.interrupted {
        return Err(FailedError(format!(
            "interrupted: the release is incomplete ({} cells not attempted: {})",
            report.not_attempted.len(),
            report.not_attempted.join(", ")
        ))
        .into());
    }
    match report.failed {
        0 if report.cells.is_empty() && args.shard.is_none() => {
            Err(UsageError("no cell was selected".into()).into())
        }
        0 if report.complete => Ok(()),
        0 => Err(FailedError("the release is incomplete".into()).into()),
        n => Err(FailedError(format!("{n} of {} cells failed", report.cells.len())).into()),
    }
}

/// The summary table: cell, result, time, cache hits, ISO size.
fn render_table(report: &ReleaseReport) {
    let width = report
        .cells
        .iter()
        .map(|c| c.cell.len())
        .max()
        .unwrap_or(4)
        .max(4);
    summary!("\n{:<width$}  result  time     cached     ISO", "cell");
    for cell in &report.cells {
        let (steps, cached) = cell.image.as_ref().map_or((0, 0), |image| {
            image
                .stages
                .iter()
                .fold((0, 0), |(s, c), stage| (s + stage.steps, c + stage.cached))
        });
        let size = cell.iso_size.map_or_else(
            || "-".to_string(),
            |b| format!("{:.0} MiB", b as f64 / 1048576.0),
        );
        let result = match cell.ok {
            true => paint("ok    ", GREEN),
            false => paint("FAILED", RED),
        };
        summary!(
            "{:<width$}  {result}  {:>6.1}s  {:>4}/{:<4}  {size}",
            cell.cell,
            cell.seconds,
            cached,
            steps,
        );
    }
    if let Some(sums) = &report.sums {
        summary!("\nsums      {}", sums.display());
    }
}

/// Warnings, then every failure with its cell and step (in every mode).
fn render_problems(report: &ReleaseReport) {
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for cell in report.cells.iter().filter(|c| !c.ok) {
        if let Some(failure) = &cell.failure {
            eprintln!(
                "\nerror: {} failed at {}: {}",
                cell.cell, failure.step, failure.message
            );
            if let Some(hint) = &failure.hint {
                eprintln!("hint: {hint}");
            }
        }
    }
}
