//! `kbuild cache ls | prune | fsck | export | import`.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::progress::CliReporter;
use super::registry::{describe, parse_reference, runtime, RegistryArgs};
use super::{open_store, FailedError, StoreArgs};

/// Inspect and maintain the store.
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Show what the store holds and how much room it takes.
    Ls,
    /// Remove blobs and snapshots no tag reaches, and leftover temp files.
    Prune,
    /// Re-hash everything reachable; corrupt blobs are quarantined (exit 1 if any).
    Fsck,
    /// Push the step cache to a registry as an OCI artifact (what `build --cache-to` does).
    Export(TransferArgs),
    /// Pull a step cache exported by another machine (what `build --cache-from` does).
    Import(TransferArgs),
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// The cache's reference, e.g. registry.example/kairos/cache:debian.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn dir_usage(path: &std::path::Path) -> (u64, u64) {
    let mut count = 0;
    let mut bytes = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                count += 1;
                bytes += meta.len();
            }
        }
    }
    (count, bytes)
}

pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    match args.command {
        CacheCommand::Ls => {
            let (blobs, blob_bytes) = dir_usage(&store.root().join("blobs"));
            let snapshots = std::fs::read_dir(store.root().join("snapshots"))?.count();
            let (_, snap_bytes) = dir_usage(&store.root().join("snapshots"));
            println!("store:     {}", store.root().display());
            println!("tags:      {}", store.tags()?.len());
            println!("blobs:     {blobs} ({blob_bytes} bytes)");
            println!("snapshots: {snapshots} ({snap_bytes} bytes)");
            println!("steps:     {}", store.cached_steps()?.len());
        }
        CacheCommand::Prune => {
            let r = store.prune()?;
            println!(
                "removed {} blobs, {} snapshots, {} derived entries, {} temp files; freed {} bytes",
                r.removed_blobs,
                r.removed_snapshots,
                r.removed_derived,
                r.removed_temp,
                r.freed_bytes
            );
        }
        CacheCommand::Fsck => {
            let r = store.fsck()?;
            for line in r.corrupt.iter().chain(&r.missing) {
                println!("{line}");
            }
            println!(
                "checked {} blobs: {} corrupt, {} missing",
                r.checked_blobs,
                r.corrupt.len(),
                r.missing.len()
            );
            if !r.is_clean() {
                return Err(FailedError("the store has corrupt or missing content".into()).into());
            }
        }
        CacheCommand::Export(args) => {
            let target = parse_reference(&args.reference)?;
            let options = args.registry.options()?;
            let done = runtime()?
                .block_on(crate::registry::cache::export(
                    &store,
                    &target,
                    &options,
                    &CliReporter::new(),
                ))
                .with_context(|| format!("cannot export the step cache to {target}"))?;
            eprintln!("cache export: {}", describe(&done.totals));
            println!("{} entries {} {}", done.entries, target, done.digest);
        }
        CacheCommand::Import(args) => {
            let source = parse_reference(&args.reference)?;
            let options = args.registry.options()?;
            let done = runtime()?
                .block_on(crate::registry::cache::import(
                    &store,
                    &source,
                    &options,
                    &CliReporter::new(),
                ))
                .with_context(|| format!("cannot import the step cache from {source}"))?;
            eprintln!("cache import: {}", describe(&done.totals));
            println!(
                "{} new entries from {} {}",
                done.entries, source, done.digest
            );
        }
    }
    Ok(())
}
