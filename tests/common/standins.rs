//! A copy of the project whose composed packages are honest stand-ins:
//! the framework, provider-kairos and edgevpn are small images imported
//! into the store under `kbuild.local/fixture/...`, and k3s and k0s are
//! scripts printing their pinned versions, served over HTTP on 127.0.0.1
//! with their sha256 pinned in the copy. The real artifacts (quay.io,
//! GitHub releases) cannot be reached from test machines.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::builds::import_files_for;
use super::http::FileServer;
use super::sha256_hex;

pub const K3S: &[u8] = b"#!/bin/sh\necho 'k3s version v1.31.4+k3s1 (kbuild test fixture)'\n";
pub const K0S: &[u8] = b"#!/bin/sh\necho 'v1.31.5+k0s.0 (kbuild test fixture)'\n";
/// The arm64 release binaries' stand-ins: other bytes, so a test sees
/// which one an arm64 cell composed.
pub const K3S_ARM64: &[u8] =
    b"#!/bin/sh\necho 'k3s version v1.31.4+k3s1 (kbuild test fixture, arm64)'\n";
pub const K0S_ARM64: &[u8] = b"#!/bin/sh\necho 'v1.31.5+k0s.0 (kbuild test fixture, arm64)'\n";

/// The k3s or k0s stand-in of `arch`: its name on the server and bytes.
fn binary(name: &str, arch: &str) -> (String, &'static [u8]) {
    let body = match (name, arch) {
        ("k3s", "amd64") => K3S,
        ("k0s", "amd64") => K0S,
        ("k3s", _) => K3S_ARM64,
        _ => K0S_ARM64,
    };
    match arch {
        "amd64" => (name.to_string(), body),
        other => (format!("{name}-{other}"), body),
    }
}

/// Serves the k3s and k0s stand-ins of both architectures.
pub fn binaries() -> FileServer {
    let mut files = BTreeMap::new();
    for name in ["k3s", "k0s"] {
        for arch in ["amd64", "arm64"] {
            let (served, body) = binary(name, arch);
            files.insert(served, body.to_vec());
        }
    }
    FileServer::start(files)
}

/// A file of a stand-in image: path, content, mode.
type File = (&'static str, &'static [u8], u32);

/// Imports the image stand-ins into `store`.
pub fn import_images(store: &Path) {
    import_images_for(store, "amd64");
}

/// Imports the image stand-ins into `store` as images of `arch`.
pub fn import_images_for(store: &Path, arch: &str) {
    let images: [(&str, Vec<File>); 3] = [
        (
            "kbuild.local/fixture/framework:v2.14.8",
            vec![
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
        ),
        (
            "kbuild.local/fixture/provider-kairos:v2.7.5",
            vec![(
                "system/providers/agent-provider-kairos",
                b"#!/bin/sh\necho provider fixture\n",
                0o755,
            )],
        ),
        (
            "kbuild.local/fixture/edgevpn:v0.28.4",
            vec![(
                "usr/bin/edgevpn",
                b"#!/bin/sh\necho edgevpn fixture\n",
                0o755,
            )],
        ),
    ];
    for (name, files) in images {
        import_files_for(store, &files, name, arch);
    }
}

/// The project copy in `<work>/project` (amd64 only).
pub fn project(work: &Path, http: &FileServer) -> PathBuf {
    project_for(work, http, "amd64")
}

/// The project copy in `<work>/project` whose matrix and stand-ins are
/// `arch` only.
pub fn project_for(work: &Path, http: &FileServer, arch: &str) -> PathBuf {
    let dir = work.join("project");
    fs::create_dir_all(&dir).unwrap();
    super::copy_project(&dir);
    let config = fs::read_to_string(dir.join("kbuild.yaml"))
        .unwrap()
        .replace("arches: [amd64, arm64]", &format!("arches: [{arch}]"));
    fs::write(dir.join("kbuild.yaml"), config).unwrap();
    let packages = dir.join("packages");
    let image = |name: &str, version: &str, from: &str, mode: &str| {
        let text = format!(
            "# Test fixture standing in for the pinned upstream artifact.\nname: {name}\nversion: {version}\nsources:\n  {arch}: {{ image: \"kbuild.local/fixture/{name}:{version}\" }}\nfiles:\n  - {{ from: \"{from}\", to: \"{from}\"{mode} }}\n"
        );
        fs::write(packages.join(format!("{name}.yaml")), text).unwrap();
    };
    image("framework", "v2.14.8", "/", "");
    image(
        "provider-kairos",
        "v2.7.5",
        "/system/providers/agent-provider-kairos",
        ", mode: \"0755\"",
    );
    image("edgevpn", "v0.28.4", "/usr/bin/edgevpn", ", mode: \"0755\"");
    for (name, version) in [("k3s", "v1.31.4+k3s1"), ("k0s", "v1.31.5+k0s.0")] {
        let (served, body) = binary(name, arch);
        let text = format!(
            "# Test fixture standing in for the pinned upstream release binary.\nname: {name}\nversion: {version}\nsources:\n  {arch}: {{ url: \"{}\", sha256: \"{}\", format: raw }}\nfiles:\n  - {{ from: {name}, to: /usr/bin/{name}, mode: \"0755\" }}\n",
            http.url(&served),
            sha256_hex(body)
        );
        fs::write(packages.join(format!("{name}.yaml")), text).unwrap();
    }
    dir
}
