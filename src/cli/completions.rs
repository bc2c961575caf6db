//! `kbuild completions SHELL` and `kbuild man`: generated from the clap
//! definition at run time, so they always match the flags of this binary.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::Cli;

/// Print a shell completion script for kbuild.
///
/// bash: `kbuild completions bash > /etc/bash_completion.d/kbuild`;
/// zsh: into a directory of `$fpath` as `_kbuild`; fish:
/// `~/.config/fish/completions/kbuild.fish`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run_completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "kbuild", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the completion script")
}

/// Print the kbuild(1) man page, or write it and one page per subcommand
/// (kbuild-release(1), ...) into a directory.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write kbuild.1 and every kbuild-<command>.1 here instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run_man(args: ManArgs) -> anyhow::Result<()> {
    let command = Cli::command();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            std::io::stdout()
                .write_all(&page)
                .context("cannot write the man page")
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}
