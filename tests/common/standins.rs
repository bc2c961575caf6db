//! A copy of the project whose composed packages are honest stand-ins:
//! the framework, provider-kairos and edgevpn are small images imported
//! into the store under `kbuild.local/fixture/...`, and k3s and k0s are
//! scripts printing their pinned versions, served over HTTP on 127.0.0.1
//! with their sha256 pinned in the copy. The real artifacts (quay.io,
//! GitHub releases) cannot be reached from test machines.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::builds::import_files;
use super::http::FileServer;
use super::sha256_hex;

pub const K3S: &[u8] = b"#!/bin/sh\necho 'k3s version v1.31.4+k3s1 (kbuild test fixture)'\n";
pub const K0S: &[u8] = b"#!/bin/sh\necho 'v1.31.5+k0s.0 (kbuild test fixture)'\n";

/// Serves the k3s and k0s stand-ins.
pub fn binaries() -> FileServer {
    FileServer::start(BTreeMap::from([
        ("k3s".to_string(), K3S.to_vec()),
        ("k0s".to_string(), K0S.to_vec()),
    ]))
}

/// A file of a stand-in image: path, content, mode.
type File = (&'static str, &'static [u8], u32);

/// Imports the image stand-ins into `store`.
pub fn import_images(store: &Path) {
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
        import_files(store, &files, name);
    }
}

/// The project copy in `<work>/project` (amd64 only).
pub fn project(work: &Path, http: &FileServer) -> PathBuf {
    let dir = work.join("project");
    fs::create_dir_all(&dir).unwrap();
    super::copy_project(&dir);
    let config = fs::read_to_string(dir.join("kbuild.yaml"))
        .unwrap()
        .replace("arches: [amd64, arm64]", "arches: [amd64]");
    fs::write(dir.join("kbuild.yaml"), config).unwrap();
    let packages = dir.join("packages");
    let image = |name: &str, version: &str, from: &str, mode: &str| {
        let text = format!(
            "# Test fixture standing in for the pinned upstream artifact.\nname: {name}\nversion: {version}\nsources:\n  amd64: {{ image: \"kbuild.local/fixture/{name}:{version}\" }}\nfiles:\n  - {{ from: \"{from}\", to: \"{from}\"{mode} }}\n"
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
