//! `kbuild inspect NAME` and `kbuild images`.

use anyhow::Context;
use clap::Args;
use oci_spec::image::ImageConfiguration;

use super::OutputFormat as Format;
use super::{open_store, StoreArgs};
use crate::digest::Digest;

/// Show an image's manifest digest, config and layers.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The stored image name or manifest digest.
    name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    store: StoreArgs,
}

/// List the images (tags) in the store.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let (descriptor, manifest) = store.resolve(&args.name)?;
    let config_digest: Digest = Digest::try_from(manifest.config().digest())?;
    let config: ImageConfiguration = store
        .read_json(&config_digest)
        .context("cannot read the image config")?;
    match args.format {
        Format::Json => {
            let out = serde_json::json!({
                "name": args.name,
                "digest": descriptor.digest().to_string(),
                "manifest": manifest,
                "config": config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => {
            println!("Name:         {}", args.name);
            println!("Digest:       {}", descriptor.digest());
            println!(
                "Created:      {}",
                config.created().clone().unwrap_or_default()
            );
            println!("Architecture: {}", config.architecture());
            println!("OS:           {}", config.os());
            if let Some(c) = config.config() {
                println!(
                    "Env:          {}",
                    c.env().clone().unwrap_or_default().join(" ")
                );
                if let Some(cmd) = c.cmd() {
                    println!("Cmd:          {cmd:?}");
                }
            }
            println!("Layers:");
            for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
                println!(
                    "  {} {:>12} bytes  diff_id {}",
                    layer.digest(),
                    layer.size(),
                    diff_id
                );
            }
        }
    }
    Ok(())
}

pub fn run_images(args: ImagesArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    println!("{:<50} {:<20} {:>12}", "NAME", "DIGEST", "SIZE");
    for (name, descriptor) in store.tags()? {
        let (_, manifest) = store.resolve(&name)?;
        let size: u64 =
            manifest.layers().iter().map(|l| l.size()).sum::<u64>() + manifest.config().size();
        let digest = descriptor.digest().to_string();
        println!(
            "{name:<50} {:<20} {size:>12}",
            &digest[..digest.len().min(19)]
        );
    }
    Ok(())
}
