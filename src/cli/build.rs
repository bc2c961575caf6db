//! `kbuild build -f FILE [-t NAME]... CONTEXT`: run a spec and tag the image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::progress::{summary, CliReporter};
use super::registry::{describe_transfer, parse_reference, RegistryArgs};
use super::{
    cancel_on_signals, key_value, open_store, parse_output, sandbox_helper, write_report,
    LayerArgs, StoreArgs, UsageError,
};
use crate::executor::BuildOptions;
use crate::pipeline::{self, BuildReport, BuildRequest};
use crate::plan::{PlanRequest, SOURCE_DATE_EPOCH};
use crate::sandbox::{Isolation, Network};

/// Build an image from a spec, daemonless: RUN steps in a namespace
/// sandbox over overlayfs snapshots, a step cache in the store.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context directory.
    context: PathBuf,
    /// The spec file [default: CONTEXT/Dockerfile].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Name to tag the image with (repeatable).
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Set a build-time variable (repeatable); overrides ARG defaults.
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = key_value)]
    build_args: Vec<(String, String)>,
    /// The stage to build [default: the last stage].
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Target platform as OS/ARCH[/VARIANT] [default: the host's].
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Run every step; take nothing from the step cache.
    #[arg(long)]
    no_cache: bool,
    /// A secret for RUN --mount=type=secret: id=ID,src=FILE (repeatable).
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    secrets: Vec<String>,
    /// Also write the image here: oci:DIR[:TAG] or oci-archive:FILE.
    #[arg(long, value_name = "DEST")]
    output: Option<String>,
    /// Push the image to this reference when built (and tag it so).
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    /// Import the step cache from this registry reference first.
    #[arg(long = "cache-from", value_name = "REF")]
    cache_from: Option<String>,
    /// Export the step cache to this registry reference when done.
    #[arg(long = "cache-to", value_name = "REF")]
    cache_to: Option<String>,
    /// How RUN steps are isolated.
    #[arg(long, value_enum, default_value_t = IsolationArg::Builtin)]
    isolation: IsolationArg,
    /// The OCI runtime for --isolation=oci.
    #[arg(long, value_name = "PATH", default_value = "runc")]
    runtime: PathBuf,
    /// The network of RUN steps that do not set --network.
    #[arg(long, value_enum, default_value_t = NetworkArg::Host)]
    network: NetworkArg,
    /// Write a JSON report (digest, tags, per-step times and cache hits,
    /// transfers) to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    #[command(flatten)]
    layer: LayerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IsolationArg {
    /// kbuild's own namespaces and pivot_root.
    Builtin,
    /// An OCI runtime (runc) with a generated config.json.
    Oci,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NetworkArg {
    Host,
    None,
}

fn parse_secret(text: &str) -> anyhow::Result<(String, PathBuf)> {
    let mut id = None;
    let mut src = None;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            _ => {
                return Err(UsageError(format!("--secret {text}: expected id=ID,src=FILE")).into())
            }
        }
    }
    match (id, src) {
        (Some(id), Some(src)) if src.is_file() => Ok((id, src)),
        (Some(_), Some(src)) => {
            Err(UsageError(format!("--secret {text}: {} is not a file", src.display())).into())
        }
        _ => Err(UsageError(format!("--secret {text}: expected id=ID,src=FILE")).into()),
    }
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let spec = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let platform = super::parse_platform(args.platform.as_deref())?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let registry = args.registry.options()?;
    let mut build_args: BTreeMap<String, String> = args.build_args.into_iter().collect();
    let mut layer = args.layer.options()?;
    // As in BuildKit, the build argument dates the build like the variable.
    if let Some(value) = build_args.remove(SOURCE_DATE_EPOCH) {
        layer.source_date_epoch = Some(super::parse_epoch(&value)?);
    }
    let request = BuildRequest {
        spec,
        options: BuildOptions {
            context: args.context.clone(),
            plan: PlanRequest {
                build_args,
                target: args.target.clone(),
                platform,
                source_date_epoch: layer.source_date_epoch,
            },
            no_cache: args.no_cache,
            secrets,
            isolation: match args.isolation {
                IsolationArg::Builtin => Isolation::Builtin,
                IsolationArg::Oci if crate::rootless::in_user_namespace() => {
                    return Err(UsageError(
                        "--isolation oci is not available rootless (runc would need its own rootless set-up): use the builtin sandbox, or run as root".into(),
                    )
                    .into())
                }
                IsolationArg::Oci => Isolation::Oci {
                    runtime: oci_runtime(&args.runtime)?,
                },
            },
            network: match args.network {
                NetworkArg::Host => Network::Host,
                NetworkArg::None => Network::None,
            },
            jobs: registry.jobs,
            layer,
            registry,
            helper: sandbox_helper()?,
        },
        tags: args.tags.clone(),
        output: args.output.as_deref().map(parse_output).transpose()?,
        push: args.push.as_deref().map(parse_reference).transpose()?,
        cache_from: args
            .cache_from
            .as_deref()
            .map(parse_reference)
            .transpose()?,
        cache_to: args.cache_to.as_deref().map(parse_reference).transpose()?,
    };
    let store = open_store(&args.store)?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let report = pipeline::build(&store, &request, &reporter, &cancel)?;
    render(&report);
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    println!("{}", report.digest);
    Ok(())
}

/// `--runtime`: a path is taken as given; the default name is located on
/// PATH and version-checked, so a missing runc fails before any work.
fn oci_runtime(runtime: &std::path::Path) -> anyhow::Result<PathBuf> {
    if runtime.as_os_str() == crate::tools::RUNC.name {
        return Ok(crate::tools::locate(&crate::tools::RUNC)?.path);
    }
    Ok(runtime.to_path_buf())
}

fn render(report: &BuildReport) {
    if let Some(done) = &report.cache_from {
        summary!("cache-from {}: {}", done.reference, describe_transfer(done));
    }
    summary!(
        "build: {} steps, {} cached, {:.1}s",
        report.steps,
        report.cached,
        report.seconds
    );
    if let Some(pushed) = &report.pushed {
        summary!("push: {}", describe_transfer(pushed));
    }
    if let Some(done) = &report.cache_to {
        summary!("cache-to {}: {}", done.reference, describe_transfer(done));
    }
}
