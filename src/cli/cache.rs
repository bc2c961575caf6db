//! `kbuild cache ls | prune | fsck | export | import`.

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use super::progress::{summary, CliReporter};
use super::registry::{describe, parse_reference, runtime, RegistryArgs};
use super::{open_store, FailedError, StoreArgs};
use crate::store::{Retention, Store, Usage};

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
    /// Drop caches (step-cache entries, RUN cache-mount dirs, ISO parts)
    /// as asked, least recently used first, then remove whatever no tag
    /// or kept entry reaches, and leftover temp files.
    Prune(PruneArgs),
    /// Re-hash everything reachable; corrupt blobs are quarantined (exit 1 if any).
    Fsck,
    /// Push the step cache to a registry as an OCI artifact (what `build --cache-to` does).
    Export(TransferArgs),
    /// Pull a step cache exported by another machine (what `build --cache-from` does).
    Import(TransferArgs),
}

#[derive(Debug, Args)]
struct PruneArgs {
    /// Drop every cache; only tagged images stay.
    #[arg(long)]
    all: bool,
    /// Drop the least recently used caches until the store takes at most
    /// SIZE (bytes, or with a unit: 500M, 10G, 10GB = 10^10, 10GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// Drop caches not used for DURATION (e.g. 90m, 24h, 7d, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    until: Option<std::time::Duration>,
}

/// `500M`, `10G`, `10GB`, `1.5GiB`, `4096`: K, M, G, T alone and with
/// `iB` are powers of 1024 (as `du` and docker read them); with `B`,
/// powers of 1000.
fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size (e.g. 500M, 10G, 10GB)"))?;
    let power = |exp: i32, base: f64| base.powi(exp);
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KIB" => power(1, 1024.0),
        "M" | "MIB" => power(2, 1024.0),
        "G" | "GIB" => power(3, 1024.0),
        "T" | "TIB" => power(4, 1024.0),
        "KB" => power(1, 1000.0),
        "MB" => power(2, 1000.0),
        "GB" => power(3, 1000.0),
        "TB" => power(4, 1000.0),
        other => {
            return Err(format!(
                "unknown size unit \"{other}\" (B, K, M, G, T, KB, MiB, ...)"
            ))
        }
    };
    let bytes = number * factor;
    match bytes.is_finite() && bytes < u64::MAX as f64 {
        true => Ok(bytes as u64),
        false => Err(format!("\"{text}\" is too large")),
    }
}

/// `90s`, `30m`, `24h`, `7d`, `1w`, or a sequence like `1h30m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("\"{text}\" is not a duration (e.g. 30m, 24h, 7d, 1h30m)");
    let mut secs: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        secs = n
            .checked_mul(unit)
            .and_then(|s| secs.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    match number.is_empty() && !text.is_empty() {
        true => Ok(std::time::Duration::from_secs(secs)),
        false => Err(bad()),
    }
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// The cache's reference, e.g. registry.example/kairos/cache:debian.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `cache ls`: the store's parts, as `Store::usage` counts them.
fn list(store: &Store) -> anyhow::Result<()> {
    let usage = store.usage()?;
    let part = |part: Usage| format!("{} ({} bytes)", part.entries, part.bytes);
    println!("store:     {}", store.root().display());
    println!("tags:      {}", usage.tags);
    println!("blobs:     {}", part(usage.blobs));
    println!("snapshots: {}", part(usage.snapshots));
    println!("steps:     {}", part(usage.steps));
    println!("mounts:    {}", part(usage.mounts));
    println!("derived:   {}", part(usage.derived));
    println!("total:     {} bytes", usage.total);
    Ok(())
}

pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    match args.command {
        CacheCommand::Ls => list(&store)?,
        CacheCommand::Prune(prune) => {
            let retention = Retention {
                all: prune.all,
                unused_for: prune.until,
                keep_storage: prune.keep_storage,
            };
            let r = store.prune(&retention)?;
            let kept = &r.retention;
            println!(
                "removed {} step-cache entries, {} cache mounts, {} derived entries, {} blobs, {} snapshots, {} temp files",
                kept.removed_steps,
                kept.removed_mounts,
                r.removed_derived,
                r.removed_blobs,
                r.removed_snapshots,
                r.removed_temp,
            );
            println!(
                "store: {} -> {}",
                HumanBytes(kept.before),
                HumanBytes(kept.after)
            );
            if let Some(limit) = prune.keep_storage.filter(|limit| kept.after > *limit) {
                eprintln!(
                    "warning: the store still takes {}, above --keep-storage {}: tagged images are never pruned (remove them with `kbuild rmi`)",
                    HumanBytes(kept.after),
                    HumanBytes(limit)
                );
            }
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
            summary!("cache export: {}", describe(&done.totals));
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
            summary!("cache import: {}", describe(&done.totals));
            println!(
                "{} new entries from {} {}",
                done.entries, source, done.digest
            );
        }
    }
    Ok(())
}

/// `kbuild rmi NAME...`: untag images.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Tags (as `kbuild images` lists them, or as references) or manifest
    /// digests (every tag on it).
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Removes each name's tags; every name is tried, and an unknown one
/// fails the command at the end.
pub fn run_rmi(args: RmiArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let mut first_error = None;
    for name in &args.names {
        match store.untag(name) {
            Ok(removed) => {
                for tag in removed {
                    println!("untagged {tag}");
                }
            }
            Err(e) => {
                let e = anyhow::Error::from(e).context(format!("cannot remove {name}"));
                if first_error.is_none() {
                    first_error = Some(e);
                } else {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
    summary!("the space returns at `kbuild cache prune`");
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_binary_and_decimal_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations_add_up_their_parts() {
        assert_eq!(
            parse_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("1h30m"),
            Ok(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("7d"),
            Ok(std::time::Duration::from_secs(604_800))
        );
        for bad in ["", "10", "h", "3y", "1h30", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
