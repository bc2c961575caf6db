//! `kbuild diff IMAGE IMAGE`: what differs between two images.

use clap::Args;

use super::progress::CliReporter;
use super::registry::RegistryArgs;
use super::{cancel_on_signals, open_store, FailedError, OutputFormat, StoreArgs, UsageError};
use crate::compose::lock::Lock;
use crate::compose::packages::Resolver;
use crate::diff::{self, Change, DiffReport, Side};
use crate::pipeline::Pipeline;
use crate::platform::Platform;

/// Compare two images path by path (kind, content, size, mode, owner,
/// mtime, link target, xattrs; added and removed paths) and config value
/// by config value, with a unified diff of the first lines of small text
/// files. Each image is a store name, a registry reference or
/// oci:DIR[:TAG]. Exits 0 when they are the same image, 1 when they differ.
#[derive(Debug, Args)]
pub struct DiffArgs {
    left: String,
    right: String,
    /// The platform to pick from multi-platform images [default: the host's].
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let platform = match &args.platform {
        Some(text) => Platform::parse(text).map_err(|e| UsageError(e.to_string()))?,
        None => Platform::host(),
    };
    let store = open_store(&args.store)?;
    let registry = args.registry.options()?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let pipeline = Pipeline::new(&store, &reporter, &cancel)?;
    // Images named here are not project inputs: nothing goes to a lock.
    let mut lock = Lock::default();
    let mut resolver = Resolver {
        store: &store,
        registry: &registry,
        platform,
        runtime: pipeline.runtime(),
        reporter: &reporter,
        lock: &mut lock,
        locked: false,
    };
    let mut side = |name: &str| -> anyhow::Result<(String, String)> {
        let (stored, digest) = resolver.image("diff", name)?;
        Ok((stored, digest))
    };
    let (left_name, _) = side(&args.left)?;
    let (right_name, _) = side(&args.right)?;
    let load = |shown: &str, stored: &str| -> anyhow::Result<Side<'_>> {
        let (descriptor, manifest) = store.resolve(stored)?;
        Ok(Side {
            store: &store,
            name: shown.to_string(),
            manifest,
            digest: descriptor.digest().to_string(),
        })
    };
    let report = diff::diff(
        &load(&args.left, &left_name)?,
        &load(&args.right, &right_name)?,
    )?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", render(&report)),
    }
    match report.identical {
        true => Ok(()),
        false => Err(FailedError(format!(
            "the images differ: {} config values and {} paths",
            report.config.len(),
            report.paths.len()
        ))
        .into()),
    }
}

/// The report as text: one line per config value and per path, with
/// each differing field as `left -> right`.
pub fn render(report: &DiffReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "--- {} {}", report.left.name, report.left.digest);
    let _ = writeln!(out, "+++ {} {}", report.right.name, report.right.digest);
    if report.identical {
        out.push_str("identical: the same manifest digest\n");
        return out;
    }
    for config in &report.config {
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        let _ = writeln!(
            out,
            "config {}: {} -> {}",
            config.key,
            shown(&config.left),
            shown(&config.right)
        );
    }
    for path in &report.paths {
        let (mark, what) = match path.change {
            Change::Added => ("+", "added"),
            Change::Removed => ("-", "removed"),
            Change::Changed => ("~", "changed"),
        };
        let fields: Vec<String> = path
            .fields
            .iter()
            .map(|f| match path.change {
                Change::Added => format!("{} {}", f.field, f.right),
                Change::Removed => format!("{} {}", f.field, f.left),
                Change::Changed => format!("{} {} -> {}", f.field, f.left, f.right),
            })
            .collect();
        let _ = writeln!(out, "{mark} {} {what}: {}", path.path, fields.join(", "));
        if let Some(text) = &path.text_diff {
            for line in text.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    let _ = writeln!(
        out,
        "{} config values and {} paths differ",
        report.config.len(),
        report.paths.len()
    );
    out
}
