//! `kbuild release` end to end (root): the Debian cells of the project's
//! matrix (core, standard with k3s, standard with k0s) built with honest
//! stand-in packages (see `tests/common/standins.rs`), then the same
//! release as two shards in two empty stores sharing a step cache through
//! a registry on 127.0.0.1, merged, and a release with one cell made to
//! fail.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::builds::{stderr, store_with_pinned_base};
use common::harness::Needs;
use common::registry::Registry;
use common::{kbuild, ok, standins};

const EPOCH: &str = "1700000000";
const ONLY: &str = "kairos-debian-*";

fn release(project: &Path, store: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "release",
        "--project",
        project.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--only",
        ONLY,
        "--base-image",
        "debian:bookworm",
    ];
    args.extend_from_slice(extra);
    kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)])
}

/// Installed packages of the image's dpkg status, counted plainly.
fn dpkg_installed(store: &Path, image: &str) -> usize {
    let store = kbuild::store::Store::open(store).unwrap();
    let layers = store.image_layers(image).unwrap();
    let status = store
        .with_image_root(&layers, |root, _| {
            root.read(Path::new("var/lib/dpkg/status"))
        })
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&status)
        .split("\n\n")
        .filter(|stanza| stanza.lines().any(|l| l == "Status: install ok installed"))
        .count()
}

fn check_sums(dir: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn release_shards_sboms_and_a_failing_cell() {
    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start(None);
    let cache = format!("{}/kbuild/cache:release", registry.host());
    let http = standins::binaries();
    let project = standins::project(work.path(), &http);
    let store = store_with_pinned_base(&work.path().join("one"), EPOCH);
    standins::import_images(&store);

    // One run: every artifact, checked.
    let out = work.path().join("release");
    let report_path = work.path().join("report.json");
    let result = release(
        &project,
        &store,
        &out,
        &[
            "--report",
            report_path.to_str().unwrap(),
            "--cache-to",
            &cache,
        ],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    check_sums(&out);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let cells = manifest["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "{manifest}");
    for cell in cells {
        let name = cell["cell"].as_str().unwrap();
        let files: Vec<&str> = cell["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["path"].as_str().unwrap())
            .collect();
        for suffix in [".iso", ".iso.sha256", ".spdx.json", ".provenance.json"] {
            assert!(
                files.contains(&format!("{name}/{name}{suffix}").as_str()),
                "{name}: {files:?}"
            );
        }
        let sbom_path = out.join(name).join(format!("{name}.spdx.json"));
        let validated = Command::new("pyspdxtools")
            .arg("-i")
            .arg(&sbom_path)
            .output()
            .unwrap();
        assert!(
            validated.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&validated.stdout),
            String::from_utf8_lossy(&validated.stderr)
        );
        let sbom: serde_json::Value =
            serde_json::from_slice(&fs::read(&sbom_path).unwrap()).unwrap();
        let packages = sbom["packages"].as_array().unwrap();
        let deb = packages
            .iter()
            .filter(|p| {
                p["externalRefs"][0]["referenceLocator"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("pkg:deb/")
            })
            .count();
        let composed = packages
            .iter()
            .filter(|p| {
                p["SPDXID"]
                    .as_str()
                    .unwrap()
                    .starts_with("SPDXRef-Composed-")
            })
            .count();
        let image = cell["image"].as_str().unwrap();
        assert_eq!(deb, dpkg_installed(&store, image), "{name}");
        let expected_composed = if name.contains("-core-") { 1 } else { 4 };
        assert_eq!(composed, expected_composed, "{name}");
        // The image itself is the one other package.
        assert_eq!(packages.len(), deb + composed + 1, "{name}");
    }
    // Core was built once: the standard cells found all its steps cached.
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).unwrap()).unwrap();
    for cell in report["cells"].as_array().unwrap() {
        if cell["cell"].as_str().unwrap().contains("-standard-") {
            let core = cell["image"]["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stage"] == "core")
                .unwrap();
            assert_eq!(core["steps"], core["cached"], "{cell}");
        }
    }

    // Two shards in two empty stores sharing the registry cache, merged:
    // the same SHA256SUMS.
    let mut shard_dirs = Vec::new();
    for index in 1..=2 {
        let store = store_with_pinned_base(&work.path().join(format!("shard-{index}")), EPOCH);
        standins::import_images(&store);
        let dir = work.path().join(format!("shard-out-{index}"));
        let shard = format!("{index}/2");
        let result = release(
            &project,
            &store,
            &dir,
            &["--shard", &shard, "--cache-from", &cache],
        );
        assert!(
            result.status.success(),
            "shard {shard}: {}",
            stderr(&result)
        );
        assert!(
            !dir.join("SHA256SUMS").exists(),
            "a shard writes no SHA256SUMS"
        );
        shard_dirs.push(dir);
    }
    let merged = work.path().join("merged");
    ok(&kbuild(
        &[
            "release",
            "merge",
            shard_dirs[0].to_str().unwrap(),
            shard_dirs[1].to_str().unwrap(),
            "-o",
            merged.to_str().unwrap(),
        ],
        &[],
    ));
    check_sums(&merged);
    assert_eq!(
        fs::read_to_string(merged.join("SHA256SUMS")).unwrap(),
        fs::read_to_string(out.join("SHA256SUMS")).unwrap()
    );

    // A bad checksum fails the k0s cell alone.
    let k0s = project.join("packages/k0s.yaml");
    let text = fs::read_to_string(&k0s).unwrap();
    let wrong = "0".repeat(63) + "1";
    let pinned = text.split("sha256: \"").nth(1).unwrap()[..64].to_string();
    fs::write(&k0s, text.replace(&pinned, &wrong)).unwrap();
    let lock = project.join("kbuild.lock");
    let _ = fs::remove_file(&lock);
    let failing = work.path().join("failing");
    let result = release(&project, &store, &failing, &[]);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    let err = stderr(&result);
    assert!(
        err.contains("k0s") && err.contains("failed at image"),
        "{err}"
    );
    assert!(
        err.contains(&format!("not the pinned sha256:{wrong}")),
        "{err}"
    );
    assert!(err.contains("1 of 3 cells failed"), "{err}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(failing.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["cells"].as_array().unwrap().len(), 2, "{manifest}");
    check_sums(&failing);
}

tests!(
    release_shards_sboms_and_a_failing_cell: Needs::root_and(&[
        "mmdebstrap",
        "mksquashfs",
        "xorriso",
        "mformat",
        "mcopy",
        "docker-registry",
        "htpasswd",
        "pyspdxtools",
        "sha256sum",
    ]),
);
