//! `kbuild keys generate DIR`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::progress::summary;
use crate::keys::{generate, KeyRequest, KEYS};

/// Secure Boot keys of your own.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new PK, KEK and db (RSA-2048 keys, self-signed certificates
    /// as PEM and DER) with the EFI signature lists to enroll them and an
    /// ENROLL.md saying how, into DIR (which must not hold files yet).
    Generate {
        dir: PathBuf,
        /// Subject of the certificates: "CN=<NAME> PK" and so on.
        #[arg(long, value_name = "NAME", default_value = "kbuild Secure Boot")]
        common_name: String,
        /// How long the certificates are valid.
        #[arg(long, value_name = "DAYS", default_value_t = 3650)]
        days: u32,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Generate {
            dir,
            common_name,
            days,
        } => {
            let set = generate(&KeyRequest {
                dir: dir.clone(),
                common_name,
                days,
            })
            .with_context(|| format!("cannot write a key set into {}", dir.display()))?;
            summary!("keys      {} (owner GUID {})", KEYS.join(", "), set.owner);
            summary!("enroll    see {}", set.dir.join("ENROLL.md").display());
            println!("{}", set.dir.display());
            Ok(())
        }
    }
}
