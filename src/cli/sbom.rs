//! `kbuild sbom IMAGE`: the SPDX 2.3 SBOM of a stored image.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::progress::CliReporter;
use super::registry::RegistryArgs;
use super::{build_options, cancel_on_signals, open_store, LayerArgs, StoreArgs};
use crate::pipeline::Pipeline;
use crate::release::inventory::{image_sbom, SbomInputs};

/// Write an SPDX 2.3 JSON SBOM of a stored image: every package its
/// package manager installed (the dpkg status or the apk database, read
/// from the image; an rpm database listed by the image's own rpm in the
/// build sandbox). `kbuild release` adds the packages kbuild composed.
#[derive(Debug, Args)]
pub struct SbomArgs {
    /// A stored image (as `kbuild images` lists it).
    image: String,
    /// Write the document here instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    layer: LayerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: SbomArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let context = std::env::temp_dir();
    let options = build_options(context, false, &args.layer, args.registry.options()?)?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let pipeline = Pipeline::new(&store, &reporter, &cancel)?;
    let inputs = SbomInputs {
        image: &args.image,
        composed: &[],
        distro: None,
        fallback_vendor: "unknown",
    };
    let document = image_sbom(&pipeline, &options, &inputs)
        .with_context(|| format!("cannot make the SBOM of {}", args.image))?;
    let mut text = serde_json::to_vec_pretty(&document)?;
    text.push(b'\n');
    match &args.output {
        Some(path) => crate::store::atomic::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &text)?,
    }
    Ok(())
}
