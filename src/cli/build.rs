//! `kbuild build -f FILE [-t NAME]... CONTEXT`: run a spec and tag the image.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::progress::CliReporter;
use super::registry::{describe, parse_reference, runtime, RegistryArgs};
use super::{key_value, open_store, LayerArgs, StoreArgs, UsageError};
use crate::dockerfile;
use crate::executor::{build, BuildOptions};
use crate::export::{export_image, Destination};
use crate::plan::PlanRequest;
use crate::platform::Platform;
use crate::sandbox::{Cancel, Isolation, Network};

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

fn parse_output(text: &str) -> anyhow::Result<Destination> {
    if let Some(rest) = text.strip_prefix("oci-archive:") {
        return Ok(Destination::OciArchive(PathBuf::from(rest)));
    }
    if let Some(rest) = text.strip_prefix("oci:") {
        return Ok(match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') => Destination::OciDir {
                path: PathBuf::from(dir),
                tag: Some(tag.to_string()),
            },
            _ => Destination::OciDir {
                path: PathBuf::from(rest),
                tag: None,
            },
        });
    }
    Err(UsageError(format!(
        "--output {text}: use oci:DIR[:TAG] or oci-archive:FILE"
    ))
    .into())
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let file_path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let file = dockerfile::parse_file(&file_path)?;
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let output = args.output.as_deref().map(parse_output).transpose()?;
    let push = args.push.as_deref().map(parse_reference).transpose()?;
    let cache_from = args
        .cache_from
        .as_deref()
        .map(parse_reference)
        .transpose()?;
    let cache_to = args.cache_to.as_deref().map(parse_reference).transpose()?;
    let registry = args.registry.options()?;
    let options = BuildOptions {
        context: args.context.clone(),
        plan: PlanRequest {
            build_args: args.build_args.into_iter().collect(),
            target: args.target.clone(),
            platform,
        },
        no_cache: args.no_cache,
        secrets,
        isolation: match args.isolation {
            IsolationArg::Builtin => Isolation::Builtin,
            IsolationArg::Oci => Isolation::Oci {
                runtime: args.runtime.clone(),
            },
        },
        network: match args.network {
            NetworkArg::Host => Network::Host,
            NetworkArg::None => Network::None,
        },
        jobs: registry.jobs,
        layer: args.layer.options()?,
        registry: registry.clone(),
    };
    let store = open_store(&args.store)?;
    let reporter = CliReporter::new();
    let runtime = runtime()?;
    if let Some(source) = &cache_from {
        let done = runtime
            .block_on(crate::registry::cache::import(
                &store, source, &registry, &reporter,
            ))
            .with_context(|| format!("cannot import the step cache from {source}"))?;
        eprintln!(
            "cache-from {source}: {} entries, {}",
            done.entries,
            describe(&done.totals)
        );
    }
    let cancel = Arc::new(Cancel::default());
    let on_signal = Arc::clone(&cancel);
    runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    let started = std::time::Instant::now();
    let built = build(&store, &file, &options, &reporter, &cancel)
        .with_context(|| format!("cannot build {}", file_path.display()))?;
    let mut names = args.tags.clone();
    if let Some(target) = &push {
        names.push(target.to_string());
    }
    for name in &names {
        store.tag(name, built.descriptor.clone())?;
    }
    eprintln!(
        "build: {} steps, {} cached, {:.1}s",
        built.steps,
        built.cached,
        started.elapsed().as_secs_f64()
    );
    if let Some(dest) = &output {
        let name = names
            .first()
            .cloned()
            .unwrap_or_else(|| "kbuild-build".into());
        export_image(&store, &built.descriptor, &built.manifest, &name, dest)
            .with_context(|| format!("cannot write {}", args.output.as_deref().unwrap_or("")))?;
    }
    if let Some(target) = &push {
        let pushed = runtime
            .block_on(crate::registry::push::push(
                &store,
                &target.to_string(),
                target,
                &registry,
                &reporter,
            ))
            .with_context(|| format!("cannot push to {target}"))?;
        eprintln!("push: {}", describe(&pushed.totals));
    }
    if let Some(target) = &cache_to {
        let done = runtime
            .block_on(crate::registry::cache::export(
                &store, target, &registry, &reporter,
            ))
            .with_context(|| format!("cannot export the step cache to {target}"))?;
        eprintln!(
            "cache-to {target}: {} entries, {}",
            done.entries,
            describe(&done.totals)
        );
    }
    println!("{}", built.descriptor.digest());
    Ok(())
}
