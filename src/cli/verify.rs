//! `kbuild verify`: build a cell (or a spec) again in an empty store and
//! compare.

use std::path::PathBuf;

use clap::Args;

use super::image::CellArgs;
use super::progress::{summary, CliReporter};
use super::{cancel_on_signals, source_date_epoch, FailedError, OutputFormat};
use crate::iso::IsoRequest;
use crate::pipeline::BuildRequest;
use crate::plan::PlanRequest;
use crate::verify::{verify, Subject, VerifyReport};

/// Check that a cell (its image and ISO) or a spec (-f) is reproducible:
/// build it as `kbuild iso` (or `kbuild build`) does, then again in a
/// scratch, empty store that shares nothing with yours but the base and
/// package images (copied, every blob checked against its digest), with
/// the same inputs and SOURCE_DATE_EPOCH (required). Exits 0 when the
/// manifest digests (and ISO sha256) are equal; otherwise lists every
/// differing path and config value, as `kbuild diff` does, and exits 1.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct VerifyArgs {
    #[command(flatten)]
    cell: CellArgs,
    /// Verify this spec instead of a cell, built as `kbuild build -f FILE`.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with_all = ["flavor", "release", "variant", "k8s", "k8s_version", "arch", "base_image", "output", "push"]
    )]
    file: Option<PathBuf>,
    /// Where the first build's ISO goes [default: kbuild.yaml's
    /// output_dir]; the rebuild's goes to a scratch directory.
    #[arg(
        short = 'o',
        long = "output-dir",
        value_name = "DIR",
        conflicts_with = "file"
    )]
    output_dir: Option<PathBuf>,
    /// The build context of -f [default: the spec's directory].
    #[arg(long, value_name = "DIR", requires = "file")]
    context: Option<PathBuf>,
    /// The stage of -f to build [default: the last].
    #[arg(long, value_name = "STAGE", requires = "file")]
    target: Option<String>,
    /// The platform of -f [default: the host's].
    #[arg(long, value_name = "PLATFORM", requires = "file")]
    platform: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let epoch = source_date_epoch()?;
    let cell = &args.cell;
    let store = cell.store()?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let report = match &args.file {
        Some(file) => {
            let subject = Subject::Spec(spec_request(&args, file)?);
            verify(&store, &subject, epoch, &reporter, &cancel)?
        }
        None => {
            let project = cell.project()?;
            let request = IsoRequest {
                image: cell.request(&project)?,
                from: None,
                output_dir: args
                    .output_dir
                    .clone()
                    .unwrap_or_else(|| project.root.join(&project.config.output_dir)),
                name: None,
                overlay: None,
                extra_cmdline: None,
                uki: None,
            };
            let subject = Subject::Cell {
                project: &project,
                request,
            };
            verify(&store, &subject, epoch, &reporter, &cancel)?
        }
    };
    if let Some(path) = cell.report_path() {
        super::write_report(path, &report)?;
    }
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", render(&report)),
    }
    match report.reproducible {
        true => Ok(()),
        false => Err(
            FailedError("not reproducible: the rebuild in an empty store differs".into()).into(),
        ),
    }
}

fn spec_request(args: &VerifyArgs, file: &std::path::Path) -> anyhow::Result<BuildRequest> {
    let context = args.context.clone().unwrap_or_else(|| {
        file.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    });
    let platform = super::parse_platform(args.platform.as_deref())?;
    let plan = PlanRequest {
        target: args.target.clone(),
        platform,
        ..PlanRequest::default()
    };
    Ok(BuildRequest {
        spec: file.to_path_buf(),
        options: args.cell.spec_options(context, plan)?,
        tags: Vec::new(),
        output: None,
        push: None,
        cache_from: None,
        cache_to: None,
    })
}

fn render(report: &VerifyReport) -> String {
    let mut out = String::new();
    let iso = |sha: &Option<String>| {
        sha.as_ref()
            .map(|s| format!(", ISO sha256 {s}"))
            .unwrap_or_default()
    };
    summary!(
        "first     {}{}",
        report.first.image_digest,
        iso(&report.first.iso_sha256)
    );
    summary!(
        "rebuild   {}{} (empty store, SOURCE_DATE_EPOCH={}, {:.1}s)",
        report.second.image_digest,
        iso(&report.second.iso_sha256),
        report.epoch,
        report.seconds
    );
    match (&report.diff, report.reproducible) {
        (_, true) if report.first.iso_sha256.is_some() => {
            out.push_str("reproducible: the same image and the same ISO bytes\n")
        }
        (_, true) => out.push_str("reproducible: the same image\n"),
        (Some(diff), false) => out.push_str(&super::diff::render(diff)),
        (None, false) => out.push_str(
            "the images are the same, the ISOs differ (an ISO stage that is not deterministic)\n",
        ),
    }
    out
}
