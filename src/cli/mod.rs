//! Command-line edge: clap types live here and nowhere else. Each
//! subcommand has its own file that turns arguments into library calls;
//! errors become `anyhow` chains with context and are printed uv-style.

mod plan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::plan::PlanError;
use crate::project::ProjectError;
use crate::spec::{ParseFileError, SpecError};

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
}

#[derive(Debug, Subcommand)]
enum Command {
    Plan(plan::PlanArgs),
}

/// Exit code for a job that ran and failed.
const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or bad input (spec, project files).
const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            print_error(&err);
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Input errors (the user can fix the file or the flags) exit with 2.
fn exit_code(err: &anyhow::Error) -> u8 {
    let is_input = err.chain().any(|cause| {
        cause.is::<SpecError>()
            || cause.is::<PlanError>()
            || cause.is::<ProjectError>()
            || cause.is::<ParseFileError>()
            || cause.is::<UsageError>()
    });
    if is_input {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}

fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  Caused by: {}", cause.to_string().replace('\n', "\n  "));
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
