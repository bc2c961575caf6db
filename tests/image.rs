//! `kbuild image` end to end (root): the project's real
//! `images/Dockerfile.debian` built on an `mmdebstrap --variant=minbase
//! bookworm` base, then composed as core and as standard with k3s and k0s,
//! each checked by `kbuild check`.
//!
//! The packages are honest fixtures, not the real artifacts: the real
//! framework, provider-kairos and edgevpn images (quay.io) and the k3s and
//! k0s binaries (GitHub releases) come from the pinned upstream sources in
//! `packages/*.yaml`, which test machines cannot reach. Here small images
//! with the same paths are pushed to a registry on 127.0.0.1, and small
//! executables that print the pinned versions are served over HTTP on
//! 127.0.0.1, with their real sha256 pinned in a copy of the project.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Output;

use common::builds::{assert_clean, import_files, stderr, store_with_base};
use common::harness::Needs;
use common::http::FileServer;
use common::registry::Registry;
use common::{kbuild, ok, sha256_hex};

const K3S: &[u8] = b"#!/bin/sh\necho 'k3s version v1.31.4+k3s1 (kbuild test fixture)'\n";
const K0S: &[u8] = b"#!/bin/sh\necho 'v1.31.5+k0s.0 (kbuild test fixture)'\n";

/// A fixture package image: `files` (path, content, mode) as one layer,
/// imported and pushed to `target`.
fn push_fixture(store: &Path, files: &[(&str, &[u8], u32)], target: &str) {
    import_files(store, files, "fixture:pkg");
    let s = store.to_str().unwrap();
    ok(&kbuild(&["push", "fixture:pkg", target, "--store", s], &[]));
}

/// A copy of the project whose packages point at the fixtures.
fn project(registry: &str, http: &FileServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_project(dir.path());
    let config = fs::read_to_string(common::root().join("kbuild.yaml"))
        .unwrap()
        .lines()
        .map(|l| match l {
            l if l.starts_with("registry:") => format!("registry: {registry}/kairos"),
            l if l.starts_with("arches:") => "arches: [amd64]".to_string(),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(dir.path().join("kbuild.yaml"), config).unwrap();
    let packages = dir.path().join("packages");
    let image = |name: &str, version: &str, image: &str, from: &str, mode: &str| {
        let text = format!(
            "# Test fixture standing in for the pinned upstream artifact.\nname: {name}\nversion: {version}\nsources:\n  amd64: {{ image: \"{registry}/{image}\" }}\nfiles:\n  - {{ from: \"{from}\", to: \"{from}\"{mode} }}\n"
        );
        fs::write(packages.join(format!("{name}.yaml")), text).unwrap();
    };
    image("framework", "v2.14.8", "kairos/framework:v2.14.8", "/", "");
    image(
        "provider-kairos",
        "v2.7.5",
        "kairos/packages:provider-kairos-system-2.7.5",
        "/system/providers/agent-provider-kairos",
        ", mode: \"0755\"",
    );
    image(
        "edgevpn",
        "v0.28.4",
        "kairos/packages:edgevpn-utils-0.28.4",
        "/usr/bin/edgevpn",
        ", mode: \"0755\"",
    );
    for (name, version, body) in [("k3s", "v1.31.4+k3s1", K3S), ("k0s", "v1.31.5+k0s.0", K0S)] {
        let text = format!(
            "# Test fixture standing in for the pinned upstream release binary.\nname: {name}\nversion: {version}\nsources:\n  amd64: {{ url: \"{}\", sha256: \"{}\", format: raw }}\nfiles:\n  - {{ from: {name}, to: /usr/bin/{name}, mode: \"0755\" }}\n",
            http.url(name),
            sha256_hex(body)
        );
        fs::write(packages.join(format!("{name}.yaml")), text).unwrap();
    }
    dir
}

struct Cell<'a> {
    project: &'a Path,
    store: &'a Path,
    work: &'a Path,
}

impl Cell<'_> {
    /// `kbuild image --flavor debian` with `variant`; the report if it ran.
    fn image(&self, variant: &[&str], extra: &[&str]) -> (Output, Option<serde_json::Value>) {
        let report = self.work.join("report.json");
        let _ = fs::remove_file(&report);
        let base = match extra.contains(&"--base-image") {
            true => &[][..],
            false => &["--base-image", "debian:bookworm"][..],
        };
        let mut args = vec!["image", "--flavor", "debian"];
        args.extend_from_slice(base);
        args.extend_from_slice(&[
            "--project",
            self.project.to_str().unwrap(),
            "--store",
            self.store.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--variant",
        ]);
        args.extend_from_slice(variant);
        args.extend_from_slice(extra);
        let out = kbuild(&args, &[]);
        let json = fs::read(&report)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        (out, json)
    }
}

fn layers(store: &Path, name: &str) -> Vec<String> {
    kbuild::store::Store::open(store)
        .unwrap()
        .image_layers(name)
        .unwrap()
        .into_iter()
        .map(|l| l.digest.to_string())
        .collect()
}

/// Every filesystem step of every stage was served by the step cache,
/// and there were such steps (zero steps prove nothing).
fn all_cached(report: &serde_json::Value) -> bool {
    let steps: Vec<&serde_json::Value> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|stage| stage["steps_run"].as_array().unwrap())
        .collect();
    !steps.is_empty() && steps.iter().all(|s| s["result"] == "cached")
}

fn images_compose_core_and_standard_and_check_them() {
    let registry = Registry::start(None);
    let host = registry.host();
    let http = FileServer::start(BTreeMap::from([
        ("k3s".to_string(), K3S.to_vec()),
        ("k0s".to_string(), K0S.to_vec()),
    ]));
    let work = tempfile::tempdir().unwrap();
    let store = store_with_base(work.path());
    push_fixture(
        &store,
        &[
            (
                "etc/kairos/framework-fixture",
                b"test fixture for the Kairos framework\n",
                0o644,
            ),
            (
                "usr/bin/kairos-agent",
                b"#!/bin/sh\necho kairos-agent fixture\n",
                0o755,
            ),
        ],
        &format!("{host}/kairos/framework:v2.14.8"),
    );
    push_fixture(
        &store,
        &[(
            "system/providers/agent-provider-kairos",
            b"#!/bin/sh\necho provider fixture\n",
            0o755,
        )],
        &format!("{host}/kairos/packages:provider-kairos-system-2.7.5"),
    );
    push_fixture(
        &store,
        &[(
            "usr/bin/edgevpn",
            b"#!/bin/sh\necho edgevpn fixture\n",
            0o755,
        )],
        &format!("{host}/kairos/packages:edgevpn-utils-0.28.4"),
    );
    // A store that has never seen the package images: kbuild pulls them.
    // It starts from the run's shared Debian core image (its flavor steps
    // are cached: tests/common/seed.rs).
    let store_dir = work.path().join("image-store");
    let store = common::seed::seeded_store(&store_dir);
    let project_dir = project(&host, &http);
    let cell = Cell {
        project: project_dir.path(),
        store: &store,
        work: work.path(),
    };

    // Core on the real Debian spec passes the check and is tagged.
    let (out, report) = cell.image(&["core"], &[]);
    assert!(out.status.success(), "core: {}", stderr(&out));
    let report = report.unwrap();
    assert_eq!(report["check"]["passed"], true, "{report}");
    let core = report["image"].as_str().unwrap().to_string();
    assert_eq!(
        core,
        format!("{host}/kairos/debian:12-core-amd64-generic-v3.2.4")
    );
    let core_layers = layers(&store, &core);

    // Standard with k3s and with k0s: one layer on the same core.
    let mut standard = Vec::new();
    for k8s in ["k3s", "k0s"] {
        let (out, report) = cell.image(&["standard", "--k8s", k8s], &[]);
        assert!(out.status.success(), "{k8s}: {}", stderr(&out));
        let report = report.unwrap();
        assert_eq!(report["check"]["passed"], true, "{report}");
        let name = report["image"].as_str().unwrap().to_string();
        let these = layers(&store, &name);
        assert_eq!(these.len(), core_layers.len() + 1, "{k8s}: {these:?}");
        assert_eq!(
            these[..core_layers.len()],
            core_layers[..],
            "{k8s}: core layers differ"
        );
        standard.push(name);
    }
    assert_ne!(layers(&store, &standard[0]), layers(&store, &standard[1]));
    let downloads = http.requests();
    assert_eq!(downloads, 2, "k3s and k0s fetched once each");

    // Again: no step runs, nothing is downloaded.
    for variant in [
        &["core"][..],
        &["standard", "--k8s", "k3s"],
        &["standard", "--k8s", "k0s"],
    ] {
        let (out, report) = cell.image(variant, &[]);
        assert!(out.status.success(), "{variant:?}: {}", stderr(&out));
        assert!(all_cached(&report.unwrap()), "{variant:?} ran steps again");
    }
    assert_eq!(http.requests(), downloads, "something was downloaded again");

    // What the standard image is made of, read back.
    let check = kbuild(
        &[
            "check",
            &standard[0],
            "--store",
            store.to_str().unwrap(),
            "--variant",
            "standard",
            "--k8s",
            "k3s",
            "--flavor",
            "debian",
            "--project",
            project_dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let inspect: serde_json::Value = serde_json::from_str(&ok(&kbuild(
        &[
            "inspect",
            &standard[0],
            "--store",
            store.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    )))
    .unwrap();
    let text = inspect.to_string();
    for label in [
        "io.kairos.variant",
        "io.kairos.software-version",
        "io.kairos.targetarch",
    ] {
        assert!(text.contains(label), "{label} missing: {text}");
    }
    let lock = fs::read_to_string(project_dir.path().join("kbuild.lock")).unwrap();
    for entry in [
        "base-override debian/12/amd64",
        "package framework/amd64",
        "package k3s/amd64",
        "package k0s/amd64",
    ] {
        assert!(lock.contains(entry), "{entry} not locked:\n{lock}");
    }

    let (_, manifest) = kbuild::store::Store::open(&store)
        .unwrap()
        .resolve(&standard[0])
        .unwrap();
    let annotations = manifest.annotations().clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some("v3.2.4"),
        "{annotations:?}"
    );

    a_failing_check_tags_nothing_unless_skipped(&cell, project_dir.path(), &store);
    locked_and_checksum_failures(&cell, project_dir.path());

    // The same base from an OCI layout (the lock now names it): same
    // content, so every step hits.
    let layout = work.path().join("base-oci");
    ok(&kbuild(
        &[
            "export",
            "debian:bookworm",
            &format!("oci:{}:base", layout.display()),
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    ));
    let (out, report) = cell.image(
        &["core"],
        &["--base-image", &format!("oci:{}:base", layout.display())],
    );
    assert!(out.status.success(), "oci layout base: {}", stderr(&out));
    assert!(
        all_cached(&report.unwrap()),
        "an OCI layout base of the same content missed the cache"
    );

    lock_records_the_matrix(&cell, project_dir.path());
    assert_clean(&store);
}

/// `kbuild lock` on a matrix of one flavor whose base is a store image:
/// every input recorded, then nothing left to resolve.
fn lock_records_the_matrix(cell: &Cell, project: &Path) {
    let config = project.join("kbuild.yaml");
    let text = fs::read_to_string(&config).unwrap();
    let start = text.find("flavors:\n").unwrap();
    let end = text[start..].find("variants:").unwrap() + start;
    let only_debian = format!(
        "{}flavors:\n  debian: {{ releases: [\"12\"] }}\n{}",
        &text[..start],
        &text[end..]
    );
    fs::write(&config, only_debian).unwrap();
    let flavor = project.join("flavors/debian.yaml");
    let text = fs::read_to_string(&flavor).unwrap();
    fs::write(
        &flavor,
        text.replace("docker.io/library/debian:bookworm-slim", "debian:bookworm"),
    )
    .unwrap();
    let args = [
        "lock",
        "--project",
        project.to_str().unwrap(),
        "--store",
        cell.store.to_str().unwrap(),
    ];
    let mut update = args.to_vec();
    update.push("--update");
    let out = kbuild(&update, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lock: 6 resolved, 0 kept, kbuild.lock written"),
        "{}",
        stderr(&out)
    );
    let out = kbuild(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lock: 0 resolved, 6 kept, kbuild.lock unchanged"),
        "{}",
        stderr(&out)
    );
    let lock = fs::read_to_string(project.join("kbuild.lock")).unwrap();
    for entry in [
        "base debian/12/amd64",
        "package edgevpn/amd64",
        "package provider-kairos/amd64",
    ] {
        assert!(lock.contains(entry), "{entry}:\n{lock}");
    }
}

/// An image that fails `kbuild check` (here: the flavor names a
/// grub-mkimage the image lacks) is not tagged; `--skip-check` tags it
/// with a warning.
fn a_failing_check_tags_nothing_unless_skipped(cell: &Cell, project: &Path, store: &Path) {
    let flavor = project.join("flavors/debian.yaml");
    let original = fs::read_to_string(&flavor).unwrap();
    fs::write(
        &flavor,
        original.replace("mkimage: grub-mkimage", "mkimage: grub-nope-mkimage"),
    )
    .unwrap();
    let (out, _) = cell.image(&["core"], &["--version", "v9.9.9"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed kbuild check") && err.contains("grub-nope-mkimage"),
        "{err}"
    );
    let images = ok(&kbuild(
        &["images", "--store", store.to_str().unwrap()],
        &[],
    ));
    assert!(
        !images.contains("debian:12-core-amd64-generic-v9.9.9"),
        "a failing image was tagged:\n{images}"
    );
    let (out, _) = cell.image(&["core"], &["--version", "v9.9.9", "--skip-check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: --skip-check"),
        "{}",
        stderr(&out)
    );
    fs::write(&flavor, original).unwrap();
}

/// `--locked` without the entry, and a wrong pinned checksum: clear
/// failures, nothing half-written.
fn locked_and_checksum_failures(cell: &Cell, project: &Path) {
    let lock_path = project.join("kbuild.lock");
    let lock = fs::read_to_string(&lock_path).unwrap();
    let (out, _) = cell.image(&["standard", "--k8s", "k0s"], &["--locked"]);
    assert!(
        out.status.success(),
        "locked with every entry: {}",
        stderr(&out)
    );
    let without_k0s: String = remove_entry(&lock, "package k0s/amd64");
    fs::write(&lock_path, &without_k0s).unwrap();
    let (out, _) = cell.image(&["standard", "--k8s", "k0s"], &["--locked"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("package k0s/amd64"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not in kbuild.lock"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(&lock_path).unwrap(),
        without_k0s,
        "--locked wrote the lock"
    );
    fs::write(&lock_path, &lock).unwrap();

    let k3s_yaml = project.join("packages/k3s.yaml");
    let original = fs::read_to_string(&k3s_yaml).unwrap();
    let wrong = sha256_hex(b"not the k3s fixture");
    fs::write(&k3s_yaml, original.replace(&sha256_hex(K3S), &wrong)).unwrap();
    fs::remove_file(&lock_path).unwrap();
    let (out, _) = cell.image(&["standard", "--k8s", "k3s"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("not the pinned sha256:{wrong}")),
        "{}",
        stderr(&out)
    );
    fs::write(&k3s_yaml, original).unwrap();
    fs::write(&lock_path, &lock).unwrap();
}

/// `lock` without the entry `key` (its two lines under `images:`/`urls:`).
fn remove_entry(lock: &str, key: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in lock.lines() {
        if line.trim_end() == format!("  {key}:") {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("    ") {
            continue;
        }
        skipping = false;
        out.push(line);
    }
    out.join("\n") + "\n"
}

tests!(
    images_compose_core_and_standard_and_check_them: Needs::root_and(&["mmdebstrap", "docker-registry", "htpasswd", "findmnt"]),
);
