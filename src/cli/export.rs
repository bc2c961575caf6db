//! `kbuild export NAME DEST`.

use anyhow::Context;
use clap::Args;

use super::{open_store, StoreArgs};
use crate::export::{export, Destination};

/// Write a stored image out as an OCI layout dir, an OCI archive or a docker-archive.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The stored image name (see `kbuild images`).
    name: String,
    /// oci:DIR[:TAG] | oci-archive:FILE | docker-archive:FILE (loadable with `docker load`).
    destination: String,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let dest: Destination = args
        .destination
        .parse()
        .map_err(|e: crate::export::ExportError| super::UsageError(e.to_string()))?;
    let store = open_store(&args.store)?;
    export(&store, &args.name, &dest)
        .with_context(|| format!("cannot export {} to {}", args.name, args.destination))?;
    Ok(())
}
