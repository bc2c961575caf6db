//! `kbuild pull`, `kbuild push`, `kbuild login`, and the registry flags
//! they share with `kbuild cache export|import`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::progress::{summary, CliReporter};
use super::{open_store, StoreArgs, UsageError};
use crate::platform::Platform;
use crate::project::Project;
use crate::reference::ImageRef;
use crate::registry::pull::{PlatformChoice, PullRequest};
use crate::registry::retry::RetryPolicy;
use crate::registry::{auth, RegistryOptions, Totals, TransportOptions};

/// How to reach registries.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Reach this registry (host or host:port) over plain HTTP; loopback
    /// registries always are. Adds to kbuild.yaml's insecure_registries.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
    /// Blob transfers in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    /// Attempts per request before giving up (transient errors only).
    #[arg(long, value_name = "N", default_value_t = 6)]
    retries: u32,
    /// Connect timeout in seconds; a read stalls out after four times it.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Upload chunk size in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    chunk_size: usize,
    /// Also reach the insecure_registries of this project's kbuild.yaml
    /// over HTTP (never read unless asked for: a plain pull or push does
    /// not depend on the working directory).
    #[arg(long = "registries-from", value_name = "PROJECT_DIR")]
    registries_from: Option<PathBuf>,
}

impl RegistryArgs {
    /// The options for a command that works on `project`: its
    /// insecure_registries are reached over HTTP too.
    pub fn options_for(&self, project: &Project) -> anyhow::Result<RegistryOptions> {
        let mut options = self.options()?;
        options
            .transport
            .insecure
            .extend(project.config.insecure_registries.iter().cloned());
        Ok(options)
    }

    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        let mut insecure = self.insecure.clone();
        if let Some(dir) = &self.registries_from {
            let project = Project::load(dir)
                .with_context(|| format!("cannot load the project in {}", dir.display()))?;
            insecure.extend(project.config.insecure_registries.iter().cloned());
        }
        if self.jobs == 0 || self.retries == 0 || self.chunk_size == 0 {
            return Err(
                UsageError("--jobs, --retries and --chunk-size must be at least 1".into()).into(),
            );
        }
        Ok(RegistryOptions {
            transport: TransportOptions {
                insecure,
                retry: RetryPolicy {
                    attempts: self.retries,
                    ..RetryPolicy::default()
                },
                timeout: Some(Duration::from_secs(self.timeout.max(1))),
            },
            jobs: self.jobs,
            chunk_size: self.chunk_size << 20,
            auth_files: auth::auth_files(),
        })
    }
}

pub fn parse_reference(text: &str) -> anyhow::Result<ImageRef> {
    ImageRef::parse(text).map_err(|e| UsageError(e.to_string()).into())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn describe(totals: &Totals) -> String {
    format!(
        "{} blobs ({}) transferred, {} already there",
        totals.blobs,
        indicatif::HumanBytes(totals.bytes),
        totals.skipped
    )
}

/// One line about a pipeline transfer (push, cache-from, cache-to).
pub fn describe_transfer(transfer: &crate::pipeline::TransferReport) -> String {
    let totals = Totals {
        blobs: transfer.blobs,
        bytes: transfer.bytes,
        skipped: transfer.skipped,
    };
    match transfer.entries {
        Some(entries) => format!("{entries} entries, {}", describe(&totals)),
        None => describe(&totals),
    }
}

/// Pull an image from a registry into the store.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image, e.g. debian:bookworm or 127.0.0.1:5000/kairos/core@sha256:...
    reference: String,
    /// Platform to pick from a multi-platform image (os/arch[/variant]), or
    /// `all` to keep the whole index [default: the host's].
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Name to tag it with in the store [default: the full reference].
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tag: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run_pull(args: PullArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.reference)?;
    let platform = match args.platform.as_deref() {
        None => PlatformChoice::One(Platform::host()),
        Some("all") => PlatformChoice::All,
        Some(text) => {
            PlatformChoice::One(Platform::parse(text).map_err(|e| UsageError(e.to_string()))?)
        }
    };
    let options = args.registry.options()?;
    let store = open_store(&args.store)?;
    let request = PullRequest {
        reference,
        platform,
        tag: args.tag,
    };
    let reporter = CliReporter::new();
    let pulled = runtime()?
        .block_on(crate::registry::pull::pull(
            &store, &request, &options, &reporter,
        ))
        .with_context(|| format!("cannot pull {}", args.reference))?;
    summary!("pull: {}", describe(&pulled.totals));
    println!("{} {}", pulled.name, pulled.digest);
    Ok(())
}

/// Push an image of the store to a registry.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the store (see `kbuild images`).
    name: String,
    /// Where to push it [default: NAME, when it is a full reference].
    reference: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run_push(args: PushArgs) -> anyhow::Result<()> {
    let target = parse_reference(args.reference.as_deref().unwrap_or(&args.name))?;
    let options = args.registry.options()?;
    let store = open_store(&args.store)?;
    let reporter = CliReporter::new();
    let pushed = runtime()?
        .block_on(crate::registry::push::push(
            &store, &args.name, &target, &options, &reporter,
        ))
        .with_context(|| format!("cannot push {} to {target}", args.name))?;
    summary!("push: {}", describe(&pushed.totals));
    println!("{} {}", pushed.reference, pushed.digest);
    Ok(())
}

/// Store credentials for a registry in the Docker config
/// ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), after
/// checking them against the registry.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, e.g. quay.io or 127.0.0.1:5000.
    registry: String,
    #[arg(short = 'u', long)]
    username: String,
    /// Read the password from stdin (the only way: it stays out of `ps` and shell history).
    #[arg(long, required = true)]
    password_stdin: bool,
    #[command(flatten)]
    registry_args: RegistryArgs,
}

pub fn run_login(args: LoginArgs) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(UsageError("the password on stdin is empty".into()).into());
    }
    let options = args.registry_args.options()?;
    runtime()?
        .block_on(crate::registry::check_login(
            &args.registry,
            &args.username,
            &password,
            &options,
        ))
        .with_context(|| format!("cannot log in to {}", args.registry))?;
    let path = docker_config_path()
        .context("cannot tell where the Docker config lives: set DOCKER_CONFIG or HOME")?;
    auth::store_basic(&path, &args.registry, &args.username, &password)?;
    summary!(
        "login: credentials for {} saved in {}",
        args.registry,
        path.display()
    );
    Ok(())
}

fn docker_config_path() -> Option<PathBuf> {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DOCKER_CONFIG")
        .map(|d| d.join("config.json"))
        .or_else(|| env("HOME").map(|h| h.join(".docker/config.json")))
}
