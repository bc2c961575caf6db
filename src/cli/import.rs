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
    /// OCI architecture of the image (default: the host's), e.g. arm64
    /// for an `mmdebstrap --arch=arm64` tarball.
    #[arg(long, value_name = "ARCH", conflicts_with = "platform")]
    arch: Option<String>,
    /// The image's platform, as BuildKit names it: linux/amd64, linux/arm64.
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    #[command(flatten)]
    layer: LayerArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let platform = match (&args.platform, &args.arch) {
        (Some(_), _) => super::parse_platform(args.platform.as_deref())?,
        (None, Some(arch)) => super::parse_platform(Some(&format!("linux/{arch}")))?,
        (None, None) => None,
    }
    .unwrap_or_else(crate::platform::Platform::host);
    let store = open_store(&args.store)?;
    let options = ImportOptions {
        layer: args.layer.options()?,
        architecture: platform.arch,
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
