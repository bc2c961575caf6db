//! Command-line edge: clap types live here and nowhere else. Each
//! subcommand has its own file that turns arguments into library calls;
//! errors become `anyhow` chains with context and are printed uv-style.

mod boot;
mod build;
mod cache;
mod check;
mod completions;
mod diff;
mod disk;
mod doctor;
mod export;
mod image;
mod import;
mod inspect;
mod iso;
mod keys;
mod lock;
mod medium;
mod netboot;
mod plan;
mod progress;
mod registry;
mod release;
mod sbom;
mod uki;
mod verify;

use std::process::ExitCode;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::layer::{Compression, WriteOptions};
use crate::store::Store;

/// kbuild: declarative, daemonless OS image builder.
///
/// Reads Dockerfile-dialect specs and a kbuild.yaml build matrix, and
/// produces OCI images and bootable ISOs without a Docker daemon.
#[derive(Debug, Parser)]
#[command(
    name = "kbuild",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How to show progress on stderr.
    #[arg(long, value_enum, default_value_t = progress::ProgressArg::Auto, global = true)]
    progress: progress::ProgressArg,
    /// Show no progress (errors and results only; `boot`: no console).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Build rootless even where auto mode would not (kbuild is rootless
    /// on its own when run without root by a user with subordinate ids):
    /// fail at once, naming the fix, if that cannot work.
    #[arg(long, global = true)]
    rootless: bool,
}

impl Command {
    /// Whether the command touches the store, so runs in the rootless
    /// user namespace when kbuild is not root.
    fn uses_store(&self) -> bool {
        !matches!(
            self,
            Command::Plan(_)
                | Command::Boot(_)
                | Command::Keys(_)
                | Command::Lock(_)
                | Command::Doctor(_)
                | Command::Login(_)
                | Command::Completions(_)
                | Command::Man(_)
        )
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    Plan(plan::PlanArgs),
    Build(Box<build::BuildArgs>),
    Check(check::CheckArgs),
    Image(Box<image::ImageArgs>),
    Iso(Box<iso::IsoArgs>),
    Disk(Box<disk::DiskArgs>),
    Netboot(Box<netboot::NetbootArgs>),
    Boot(boot::BootArgs),
    Keys(keys::KeysArgs),
    Uki(uki::UkiArgs),
    Release(Box<release::ReleaseArgs>),
    Lock(lock::LockArgs),
    Doctor(doctor::DoctorArgs),
    Import(import::ImportArgs),
    Export(export::ExportArgs),
    Inspect(inspect::InspectArgs),
    Images(inspect::ImagesArgs),
    Rmi(cache::RmiArgs),
    Sbom(sbom::SbomArgs),
    Verify(Box<verify::VerifyArgs>),
    Diff(diff::DiffArgs),
    Cache(cache::CacheArgs),
    Pull(registry::PullArgs),
    Push(registry::PushArgs),
    Login(registry::LoginArgs),
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
}

/// Exit code for a job that ran and failed.
const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or bad input (spec, project files).
const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::configure(cli.progress, cli.quiet);
    if cli.command.uses_store() {
        if let Some(code) = run_rootless(cli.rootless) {
            return code;
        }
    }
    let result = match cli.command {
        Command::Plan(args) => plan::run(args),
        Command::Build(args) => build::run(*args),
        Command::Check(args) => check::run(args),
        Command::Image(args) => image::run(*args),
        Command::Iso(args) => iso::run(*args),
        Command::Disk(args) => disk::run(*args),
        Command::Netboot(args) => netboot::run(*args),
        Command::Boot(args) => boot::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Uki(args) => uki::run(args),
        Command::Release(args) => release::run(*args),
        Command::Lock(args) => lock::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Import(args) => import::run(args),
        Command::Export(args) => export::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Images(args) => inspect::run_images(args),
        Command::Rmi(args) => cache::run_rmi(args),
        Command::Sbom(args) => sbom::run(args),
        Command::Verify(args) => verify::run(*args),
        Command::Diff(args) => diff::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Pull(args) => registry::run_pull(args),
        Command::Push(args) => registry::run_push(args),
        Command::Login(args) => registry::run_login(args),
        Command::Completions(args) => completions::run_completions(args),
        Command::Man(args) => completions::run_man(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            print_error(&err);
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Re-runs the command in kbuild's user namespace when that is how it
/// must run; returns its exit code then, `None` to run it here.
fn run_rootless(required: bool) -> Option<ExitCode> {
    use crate::rootless::{Decision, Want};
    let want = if required { Want::Required } else { Want::Auto };
    let entered = match crate::rootless::decide(want) {
        Ok(Decision::Here | Decision::Unprivileged) => return None,
        Ok(Decision::Enter(mapping)) => crate::rootless::enter(&mapping),
        Err(e) => Err(e),
    };
    Some(match entered {
        Ok(status) => ExitCode::from(crate::rootless::exit_code(status)),
        Err(e) => {
            print_error(&anyhow::Error::new(e));
            ExitCode::from(EXIT_FAILED)
        }
    })
}

/// Input errors (the user can fix the file or the flags) exit with 2; the
/// library errors decide which they are (`crate::diagnose`).
fn exit_code(err: &anyhow::Error) -> u8 {
    let is_input = err.chain().any(|cause| cause.is::<UsageError>())
        || crate::diagnose::is_input(err.as_ref());
    if is_input {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}

fn print_error(err: &anyhow::Error) {
    eprint!("{}", error_report(err));
}

/// `error:`, then each cause whose text the lines above do not already
/// show (an error that embeds its source also names it as its cause),
/// then the first hint.
fn error_report(err: &anyhow::Error) -> String {
    let mut shown = err.to_string();
    let mut report = format!("error: {shown}\n");
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if shown.contains(&text) {
            continue;
        }
        report.push_str(&format!("  Caused by: {}\n", text.replace('\n', "\n  ")));
        shown.push('\n');
        shown.push_str(&text);
    }
    if let Some(hint) = crate::diagnose::hint(err.as_ref()) {
        report.push_str(&format!("\nhint: {hint}\n"));
    }
    report
}

/// The job ran and found a problem (exit 1), e.g. fsck found corruption.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FailedError(pub String);

/// `--store DIR`, shared by every command that uses the store.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store directory [default: $KBUILD_STORE, else ~/.cache/kbuild].
    #[arg(long = "store", value_name = "DIR", global = true)]
    store: Option<PathBuf>,
}

fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    let root = args.store.clone().unwrap_or_else(Store::default_root);
    Store::open(&root).with_context(|| format!("cannot open the store at {}", root.display()))
}

/// Layer compression flags.
#[derive(Debug, Args)]
pub struct LayerArgs {
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    compression: CompressionArg,
    /// Compression level (gzip 0-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

impl LayerArgs {
    fn options(&self) -> anyhow::Result<WriteOptions> {
        let compression = match (self.compression, self.compression_level) {
            (CompressionArg::Gzip, level) => {
                let level = level.unwrap_or(6);
                if !(0..=9).contains(&level) {
                    return Err(UsageError(format!("gzip levels are 0 to 9, not {level}")).into());
                }
                Compression::Gzip {
                    level: level as u32,
                }
            }
            (CompressionArg::Zstd, level) => {
                let level = level.unwrap_or(3);
                if !(1..=22).contains(&level) {
                    return Err(UsageError(format!("zstd levels are 1 to 22, not {level}")).into());
                }
                Compression::Zstd { level }
            }
            (CompressionArg::None, _) => Compression::None,
        };
        Ok(WriteOptions {
            compression,
            source_date_epoch: source_date_epoch()?,
        })
    }
}

/// `--platform`, parsed; absent means the host's.
pub fn parse_platform(text: Option<&str>) -> Result<Option<crate::platform::Platform>, UsageError> {
    text.map(crate::platform::Platform::parse)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))
}

/// `SOURCE_DATE_EPOCH` from the environment; a value that is not a whole
/// number of seconds is a usage error, not silently the clock.
pub fn source_date_epoch() -> Result<Option<i64>, UsageError> {
    match std::env::var(crate::plan::SOURCE_DATE_EPOCH) {
        Ok(value) if !value.trim().is_empty() => parse_epoch(&value).map(Some),
        _ => Ok(None),
    }
}

/// A `SOURCE_DATE_EPOCH` value: seconds since 1970-01-01 UTC.
pub fn parse_epoch(value: &str) -> Result<i64, UsageError> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|secs| *secs >= 0)
        .ok_or_else(|| {
            UsageError(format!(
                "SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds since 1970-01-01 UTC"
            ))
        })
}

/// The program the sandbox runs as its helper: this binary, which
/// dispatches `__sandbox` before clap (see `main.rs`).
/// How `kbuild image`, `iso` and `release` run a project's steps: in the
/// builtin sandbox, with the host's network, from the project directory.
fn project_build_options(
    project: &crate::project::Project,
    no_cache: bool,
    layer: &LayerArgs,
    registry: crate::registry::RegistryOptions,
) -> anyhow::Result<crate::executor::BuildOptions> {
    build_options(project.root.clone(), no_cache, layer, registry)
}

/// Build options for steps kbuild generates itself (with `context`),
/// with the defaults of `kbuild build`.
fn build_options(
    context: PathBuf,
    no_cache: bool,
    layer: &LayerArgs,
    registry: crate::registry::RegistryOptions,
) -> anyhow::Result<crate::executor::BuildOptions> {
    Ok(crate::executor::BuildOptions {
        context,
        plan: crate::plan::PlanRequest::default(),
        no_cache,
        secrets: std::collections::BTreeMap::new(),
        isolation: crate::sandbox::Isolation::Builtin,
        network: crate::sandbox::Network::Host,
        jobs: registry.jobs,
        layer: layer.options()?,
        registry,
        helper: sandbox_helper()?,
    })
}

fn sandbox_helper() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the kbuild executable for the sandbox helper")
}

/// A [`Cancel`] set by SIGINT or SIGTERM (Ctrl-C stops the job cleanly).
fn cancel_on_signals() -> anyhow::Result<std::sync::Arc<crate::sandbox::Cancel>> {
    use tokio::signal::unix::{signal, SignalKind};
    let cancel = std::sync::Arc::new(crate::sandbox::Cancel::default());
    let on_signal = std::sync::Arc::clone(&cancel);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the signal handler")?;
    // Installed here, before the job starts, so no early Ctrl-C is lost.
    let (mut int, mut term) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        on_signal.cancel();
    });
    Ok(cancel)
}

/// Writes a `--report FILE` as pretty JSON.
fn write_report(path: &std::path::Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(path, json)
        .with_context(|| format!("cannot write the report to {}", path.display()))
}

/// `--format` of the commands that print a result.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// `--variant`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum VariantArg {
    Core,
    Standard,
}

impl From<VariantArg> for crate::project::Variant {
    fn from(arg: VariantArg) -> Self {
        match arg {
            VariantArg::Core => Self::Core,
            VariantArg::Standard => Self::Standard,
        }
    }
}

/// `--k8s`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum K8sArg {
    K3s,
    K0s,
}

impl From<K8sArg> for crate::project::K8sDistribution {
    fn from(arg: K8sArg) -> Self {
        match arg {
            K8sArg::K3s => Self::K3s,
            K8sArg::K0s => Self::K0s,
        }
    }
}

/// `--arch`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArchArg {
    Amd64,
    Arm64,
}

impl From<ArchArg> for crate::project::Arch {
    fn from(arg: ArchArg) -> Self {
        match arg {
            ArchArg::Amd64 => Self::Amd64,
            ArchArg::Arm64 => Self::Arm64,
        }
    }
}

/// `--output`: an OCI layout dir or archive.
fn parse_output(text: &str) -> anyhow::Result<crate::export::Destination> {
    use crate::export::Destination;
    match text.parse::<Destination>() {
        Ok(dest @ (Destination::OciDir { .. } | Destination::OciArchive(_))) => Ok(dest),
        _ => Err(UsageError(format!(
            "--output {text}: use oci:DIR[:TAG] or oci-archive:FILE"
        ))
        .into()),
    }
}

/// A command line that parses but asks for something impossible.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses `KEY=VALUE` (for `--build-arg`).
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got \"{text}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::BuildError;

    /// clap's own consistency checks (duplicate flags and the like) over
    /// every subcommand, so a clash fails here and not in a user's hands.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_panicked_stage_exits_1_and_bad_input_exits_2() {
        let panicked = anyhow::Error::from(BuildError::Panicked {
            stage: "builder".into(),
            message: "injected".into(),
        })
        .context("cannot build Dockerfile");
        assert_eq!(exit_code(&panicked), EXIT_FAILED);
        let embedded = anyhow::Error::from(crate::boot::BootError::Io {
            path: "/out/x.iso".into(),
            source: std::io::Error::other("disk on fire"),
        })
        .context("cannot boot");
        assert_eq!(
            error_report(&embedded),
            "error: cannot boot\n  Caused by: /out/x.iso: disk on fire\n"
        );
        let usage = anyhow::Error::from(UsageError("bad flag".into()));
        assert_eq!(exit_code(&usage), EXIT_USAGE);
    }
}
