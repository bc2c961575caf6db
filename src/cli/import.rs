//! `kbuild import ROOTFS.tar[.gz|.zst] -t NAME`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::progress::CliReporter;
use super::{open_store, LayerArgs, StoreArgs};
use crate::store::import::{import_tarball, ImportOptions};

/// Import a rootfs tarball (plain, gzip or zstd) as a one-layer image, like `docker import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The rootfs tarball.
    tarball: PathBuf,
    /// Name to tag the image with, e.g. debian:bookworm.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tag: String,
    /// OCI architecture of the image (default: the host's).
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    #[command(flatten)]
    layer: LayerArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let options = ImportOptions {
        layer: args.layer.options()?,
        architecture: args
            .arch
            .unwrap_or_else(|| crate::platform::Platform::host().arch),
    };
    let descriptor = import_tarball(
        &store,
        &args.tarball,
        &args.tag,
        &options,
        &CliReporter::new(),
    )
    .with_context(|| format!("cannot import {}", args.tarball.display()))?;
    println!("{} {}", args.tag, descriptor.digest());
    Ok(())
}
