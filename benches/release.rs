//! The 3-cell Debian release (core, standard-k3s, standard-k0s) against
//! the sum of its parts built one by one, each `kbuild iso` in its own
//! empty store, all with the same stand-in packages (tests/common/
//! standins.rs) and `SOURCE_DATE_EPOCH`. Goal: the release costs at most
//! one cold core cell (image and ISO) plus two ISO assemblies; the
//! assembly is measured as `kbuild iso --from` the stored k3s image after
//! `cache prune --all` (its GRUB step and parts rebuilt, its image kept).
//!
//! Run: `scripts/bench-release.sh` (root; the Debian fixture and mirror).
//! One run each: a cold build is minutes long and dominated by apt.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::builds::store_with_pinned_base;
use common::standins;

const EPOCH: &str = "1700000000";

fn kbuild(args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(args)
        .args(["--progress", "plain"])
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "kbuild {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    seconds
}

/// An empty store with the pinned base and the stand-in images.
fn fresh_store(work: &Path, name: &str) -> String {
    let store = store_with_pinned_base(&work.join(name), EPOCH);
    standins::import_images(&store);
    store.display().to_string()
}

fn main() {
    let work = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    let http = standins::binaries();
    let project = standins::project(work.path(), &http);
    let project = project.to_str().unwrap();
    let common = |store: &str, out: &str| -> Vec<String> {
        [
            "--project",
            project,
            "--store",
            store,
            "-o",
            out,
            "--base-image",
            "debian:bookworm",
        ]
        .map(String::from)
        .to_vec()
    };
    let out = |name: &str| work.path().join(name).display().to_string();

    let store = fresh_store(work.path(), "release");
    let mut args = vec![
        "release".to_string(),
        "--only".into(),
        "kairos-debian-*".into(),
    ];
    args.extend(common(&store, &out("release-out")));
    let release = kbuild(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let mut parts = Vec::new();
    for (name, cell) in [
        ("core", vec!["--variant", "core"]),
        ("k3s", vec!["--variant", "standard", "--k8s", "k3s"]),
        ("k0s", vec!["--variant", "standard", "--k8s", "k0s"]),
    ] {
        let store = fresh_store(work.path(), name);
        let mut args = vec!["iso".to_string(), "--flavor".into(), "debian".into()];
        args.extend(cell.iter().map(|s| s.to_string()));
        args.extend(common(&store, &out(&format!("{name}-out"))));
        parts.push((
            name,
            kbuild(&args.iter().map(String::as_str).collect::<Vec<_>>()),
            store,
        ));
    }
    let (_, _, k3s_store) = &parts[1];
    let images = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["images", "--store", k3s_store])
        .output()
        .unwrap();
    let image = String::from_utf8_lossy(&images.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .find(|name| name.contains("standard") && name.contains("k3s"))
        .expect("the k3s image is in its store");
    kbuild(&["cache", "prune", "--all", "--store", k3s_store]);
    let assembly = kbuild(&[
        "iso",
        "--from",
        &image,
        "--flavor",
        "debian",
        "--variant",
        "standard",
        "--k8s",
        "k3s",
        "--project",
        project,
        "--store",
        k3s_store,
        "-o",
        &out("assembly-out"),
    ]);

    let sum: f64 = parts.iter().map(|(_, t, _)| t).sum();
    let core = parts[0].1;
    let goal = core + 2.0 * assembly;
    println!("| measurement | seconds |");
    println!("|---|---|");
    println!("| `kbuild release`, 3 Debian cells, empty store | {release:.1} |");
    for (name, seconds, _) in &parts {
        println!("| `kbuild iso` {name} alone, empty store | {seconds:.1} |");
    }
    println!("| sum of the three parts | {sum:.1} |");
    println!("| ISO assembly (`kbuild iso --from` the k3s image, parts pruned) | {assembly:.1} |");
    println!("| goal: core cell + 2 assemblies | {goal:.1} |");
    println!();
    println!(
        "release / sum of parts = {:.2}x; release / goal = {:.2}x",
        release / sum,
        release / goal
    );
}
