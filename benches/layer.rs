//! Layer writing speed against the shell pipelines people use:
//! kbuild gzip vs `tar -c | pigz -6`, kbuild zstd vs `tar -c | zstd -3 -T0`,
//! on the same tree, as ratios of wall times (goal: at or below 1.0x).
//!
//! Run: `scripts/bench-layer.sh` (builds the ~600 MB Debian tree once,
//! then `cargo bench --bench layer -- TREE`). Median of 3 warm runs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kbuild::layer::{write_layer, Compression, TreeKind, WriteOptions};

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    f(); // warm the page cache
    median(
        (0..3)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn kbuild(tree: &Path, out: &Path, compression: Compression) -> Duration {
    time(|| {
        let file = std::fs::File::create(out).unwrap();
        let options = WriteOptions {
            compression,
            source_date_epoch: Some(0),
        };
        write_layer(tree, TreeKind::Full, &options, file).unwrap();
    })
}

fn pipeline(tree: &Path, out: &Path, compressor: &str) -> Duration {
    let script = format!(
        "tar --numeric-owner --xattrs -C '{}' -cf - . | {compressor} > '{}'",
        tree.display(),
        out.display()
    );
    time(|| {
        let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(status.success(), "{script}");
    })
}

fn main() {
    let tree = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .expect("usage: cargo bench --bench layer -- TREE");
    let tree = Path::new(&tree);
    let out = tempfile::tempdir().unwrap();
    let size: u64 = String::from_utf8(
        Command::new("du")
            .args(["-sb"])
            .arg(tree)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .next()
    .unwrap()
    .parse()
    .unwrap();
    println!(
        "tree: {} ({} MB), {} cores",
        tree.display(),
        size / 1_000_000,
        std::thread::available_parallelism().unwrap()
    );
    println!("| case | kbuild | pipeline | time ratio | kbuild blob | pipeline blob |");
    println!("|---|---|---|---|---|---|");
    let cases = [
        ("gzip -6", Compression::Gzip { level: 6 }, "pigz -6"),
        ("zstd -3", Compression::Zstd { level: 3 }, "zstd -3 -T0 -q"),
    ];
    for (name, compression, compressor) in cases {
        let (k_blob, p_blob) = (out.path().join("k.blob"), out.path().join("p.blob"));
        let k = kbuild(tree, &k_blob, compression);
        let p = pipeline(tree, &p_blob, compressor);
        let mb = |p: &Path| std::fs::metadata(p).unwrap().len() / 1_000_000;
        println!(
            "| {name} | {:.2}s | {:.2}s (tar \\| {compressor}) | {:.2}x | {} MB | {} MB |",
            k.as_secs_f64(),
            p.as_secs_f64(),
            k.as_secs_f64() / p.as_secs_f64(),
            mb(&k_blob),
            mb(&p_blob)
        );
    }
}
