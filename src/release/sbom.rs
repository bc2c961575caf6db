//! SPDX 2.3 JSON software bill of materials of an image: every package
//! its package manager installed, plus the packages kbuild composed
//! (framework, provider, k3s/k0s) with their versions and digests.
//!
//! The dpkg status and the apk installed database are text files, read
//! from the image root. The rpm database is a SQLite, NDB or Berkeley DB
//! file depending on the distribution and its rpm version, so the image's
//! own `rpm` lists it, in the build sandbox like any RUN step
//! ([`rpm_query_spec`]); nothing from the image runs on the host.
//!
//! Invariants:
//! * The same image and inputs give the same document, byte for byte:
//!   packages are sorted, ids derive from names, the namespace and the
//!   creation time derive from the image digest and the epoch.
//! * Only packages the manager records as installed are listed (a dpkg
//!   entry in `config-files` or `half-installed` state is not).
//! * Every package carries a PURL (`pkg:deb/...`, `pkg:apk/...`,
//!   `pkg:oci/...`, `pkg:generic/...`) with its parts percent-encoded.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::rootfs::Root;

/// Where each package manager keeps its database in an image.
const DPKG_STATUS: &str = "var/lib/dpkg/status";
const APK_INSTALLED: &str = "lib/apk/db/installed";
/// rpm databases: SQLite (rpm 4.16+), NDB (openSUSE), Berkeley DB (older),
/// under the classic path or `/usr/lib/sysimage/rpm` (Fedora, openSUSE).
const RPM_DATABASES: [&str; 6] = [
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages.db",
    "var/lib/rpm/Packages",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/Packages.db",
    "usr/lib/sysimage/rpm/Packages",
];
/// The file the rpm query step writes, at the root of its image.
pub const RPM_LIST: &str = "kbuild-rpm-packages.tsv";

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("cannot read {path} in the image: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the image has no package database kbuild reads ({DPKG_STATUS}, {APK_INSTALLED} or an rpm database under /var/lib/rpm or /usr/lib/sysimage/rpm)")]
    NoDatabase,
}

/// Which database the packages came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Dpkg,
    Apk,
    Rpm,
}

/// An image's package database: read, or to be listed by its own rpm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Read(Manager, Vec<Installed>),
    Rpm,
}

/// A package the image's package manager installed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Installed {
    pub name: String,
    /// As the manager writes it (rpm: `version-release`).
    pub version: String,
    pub arch: Option<String>,
    /// rpm's epoch, when not 0 (dpkg keeps its epoch in the version).
    pub epoch: Option<u64>,
}

/// A package kbuild composed into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of what was laid in: an image manifest or a file.
    pub digest: String,
    /// The image reference or URL it came from.
    pub source: String,
    /// True for an image (PURL `pkg:oci`), false for a download.
    pub image: bool,
}

/// What the document describes.
pub struct Subject<'a> {
    /// The image's name by the naming scheme.
    pub image: &'a str,
    /// Its manifest digest.
    pub digest: &'a str,
    /// `debian-12`, `alpine-3.20`: the PURL `distro` qualifier.
    pub distro: &'a str,
    /// PURL namespace of the distribution's packages (`debian`, `alpine`).
    pub vendor: &'a str,
    /// Seconds since the epoch for `created`.
    pub epoch: i64,
    /// The tool and version for `creators`.
    pub creator: &'a str,
}

/// The package database of the image at `root`: the dpkg status or apk
/// database read, or an rpm database found.
pub fn database(root: &Root) -> Result<Database, SbomError> {
    for (path, manager) in [(DPKG_STATUS, Manager::Dpkg), (APK_INSTALLED, Manager::Apk)] {
        match root.read(Path::new(path)) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let packages = match manager {
                    Manager::Apk => apk_installed(&text),
                    _ => dpkg_status(&text),
                };
                return Ok(Database::Read(manager, packages));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SbomError::Read { path, source }),
        }
    }
    match RPM_DATABASES
        .iter()
        .any(|path| root.exists(Path::new(path)))
    {
        true => Ok(Database::Rpm),
        false => Err(SbomError::NoDatabase),
    }
}

/// The spec of the step that lists an image's rpm database with the
/// image's own rpm, into [`RPM_LIST`]: name, epoch, version, release,
/// arch, tab-separated.
pub fn rpm_query_spec(image: &str) -> String {
    format!(
        "FROM {image}\nRUN rpm -qa --qf '%{{NAME}}\\t%{{EPOCHNUM}}\\t%{{VERSION}}\\t%{{RELEASE}}\\t%{{ARCH}}\\n' > /{RPM_LIST}\n"
    )
}

/// The packages of [`rpm_query_spec`]'s output. The `gpg-pubkey` entries
/// are the keys rpm trusts, not software, and are left out.
pub fn rpm_query_output(text: &str) -> Vec<Installed> {
    let mut packages = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, epoch, version, release, arch] = fields[..] else {
            continue;
        };
        if name == "gpg-pubkey" {
            continue;
        }
        packages.insert(Installed {
            name: name.to_string(),
            version: format!("{version}-{release}"),
            arch: (arch != "(none)").then(|| arch.to_string()),
            epoch: epoch.parse().ok().filter(|e| *e != 0),
        });
    }
    packages.into_iter().collect()
}

/// `ID` and `VERSION_ID` of the image's os-release (`debian` and `12`,
/// `fedora` and `40`): the PURL namespace and `distro` qualifier.
pub fn os_release(root: &Root) -> (Option<String>, Option<String>) {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|path| root.read(Path::new(path)).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix('=')?;
            let value = value.trim().trim_matches(['"', '\'']);
            (!value.is_empty()).then(|| value.to_string())
        })
    };
    (field("ID"), field("VERSION_ID"))
}

/// `Key: value` fields of one stanza (continuation lines skipped).
fn fields(stanza: &str, separator: char) -> impl Iterator<Item = (&str, &str)> {
    stanza.lines().filter_map(move |line| {
        if line.starts_with([' ', '\t']) {
            return None;
        }
        let (key, value) = line.split_once(separator)?;
        Some((key.trim(), value.trim()))
    })
}

/// Packages of a dpkg status file whose state is `installed`.
pub fn dpkg_status(text: &str) -> Vec<Installed> {
    let mut packages: BTreeSet<Installed> = BTreeSet::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut installed) = (None, None, None, false);
        for (key, value) in fields(stanza, ':') {
            match key {
                "Package" => name = Some(value),
                "Version" => version = Some(value),
                "Architecture" => arch = Some(value),
                "Status" => installed = value.split_whitespace().nth(2) == Some("installed"),
                _ => {}
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed) {
            packages.insert(Installed {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.map(str::to_string),
                epoch: None,
            });
        }
    }
    packages.into_iter().collect()
}

/// Packages of an apk installed database (`P:` name, `V:` version, `A:`
/// arch).
pub fn apk_installed(text: &str) -> Vec<Installed> {
    let mut packages: BTreeSet<Installed> = BTreeSet::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut arch) = (None, None, None);
        for line in stanza.lines() {
            match line.split_once(':') {
                Some(("P", value)) => name = Some(value),
                Some(("V", value)) => version = Some(value),
                Some(("A", value)) => arch = Some(value),
                _ => {}
            }
        }
        if let (Some(name), Some(version)) = (name, version) {
            packages.insert(Installed {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.map(str::to_string),
                epoch: None,
            });
        }
    }
    packages.into_iter().collect()
}

/// Percent-encodes all but RFC 3986's unreserved characters, as PURL
/// components need (`+` in `1.31.4+k3s1` becomes `%2B`).
fn purl_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn installed_purl(manager: Manager, subject: &Subject, package: &Installed) -> String {
    let kind = match manager {
        Manager::Dpkg => "deb",
        Manager::Apk => "apk",
        Manager::Rpm => "rpm",
    };
    let mut purl = format!(
        "pkg:{kind}/{}/{}@{}",
        purl_encode(subject.vendor),
        purl_encode(&package.name),
        purl_encode(&package.version)
    );
    let mut qualifiers = Vec::new();
    if let Some(arch) = &package.arch {
        qualifiers.push(format!("arch={}", purl_encode(arch)));
    }
    if !subject.distro.is_empty() {
        qualifiers.push(format!("distro={}", purl_encode(subject.distro)));
    }
    if let Some(epoch) = package.epoch {
        qualifiers.push(format!("epoch={epoch}"));
    }
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    purl
}

fn composed_purl(package: &Composed) -> String {
    match package.image {
        true => format!(
            "pkg:oci/{}@{}?repository_url={}",
            purl_encode(&package.name),
            purl_encode(&package.digest),
            purl_encode(package.source.split([':', '@']).next().unwrap_or_default())
        ),
        false => format!(
            "pkg:generic/{}@{}?download_url={}&checksum={}",
            purl_encode(&package.name),
            purl_encode(&package.version),
            purl_encode(&package.source),
            purl_encode(&package.digest)
        ),
    }
}

/// An SPDX id: `SPDXRef-` and letters, digits, `.` and `-` only.
fn spdx_id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                true => c,
                false => '-',
            },
        )
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

fn package(id: String, name: &str, version: &str, purl: String) -> Value {
    json!({
        "SPDXID": id,
        "name": name,
        "versionInfo": version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl,
        }],
    })
}

/// The SPDX 2.3 JSON document.
pub fn document(
    subject: &Subject,
    manager: Manager,
    installed: &[Installed],
    composed: &[Composed],
) -> Value {
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": subject.image,
        "versionInfo": subject.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "checksums": [{
            "algorithm": "SHA256",
            "checksumValue": subject.digest.trim_start_matches("sha256:"),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut contains = |id: &str| {
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }))
    };
    let mut seen = BTreeSet::new();
    for p in installed {
        let mut id = spdx_id(
            "Package",
            &format!("{}-{}", p.name, p.arch.as_deref().unwrap_or("")),
        );
        while !seen.insert(id.clone()) {
            id.push_str("-x");
        }
        contains(&id);
        let version = match p.epoch {
            Some(epoch) => format!("{epoch}:{}", p.version),
            None => p.version.clone(),
        };
        packages.push(package(
            id,
            &p.name,
            &version,
            installed_purl(manager, subject, p),
        ));
    }
    for p in composed {
        let mut id = spdx_id("Composed", &p.name);
        while !seen.insert(id.clone()) {
            id.push_str("-x");
        }
        contains(&id);
        // The source is in the PURL (`download_url`, `repository_url`);
        // SPDX's downloadLocation grammar refuses image references and
        // hosts without a domain name, so it stays NOASSERTION.
        let mut entry = package(id, &p.name, &p.version, composed_purl(p));
        entry["checksums"] = json!([{
            "algorithm": "SHA256",
            "checksumValue": p.digest.trim_start_matches("sha256:"),
        }]);
        packages.push(entry);
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.image,
        "documentNamespace": format!(
            "https://kbuild.invalid/spdx/{}",
            subject.digest.trim_start_matches("sha256:")
        ),
        "creationInfo": {
            "created": crate::store::image::rfc3339(subject.epoch),
            "creators": [format!("Tool: {}", subject.creator)],
        },
        "documentDescribes": ["SPDXRef-Image"],
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2.36-9+deb12u13\nDescription: GNU C Library\n a continuation: line\n\nPackage: old-thing\nStatus: deinstall ok config-files\nVersion: 1.0\nArchitecture: amd64\n\nPackage: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u13\n";

    const APK: &str = "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\no:musl\n\nC:Q1def=\nP:busybox\nV:1.36.1-r29\nA:x86_64\n";

    fn subject() -> Subject<'static> {
        Subject {
            image: "quay.io/kairos/debian:12-core-amd64-generic-v3.2.4",
            digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            distro: "debian-12",
            vendor: "debian",
            epoch: 1_700_000_000,
            creator: "kbuild-0.1.0",
        }
    }

    #[test]
    fn only_installed_dpkg_packages_sorted_and_without_continuations() {
        let packages = dpkg_status(STATUS);
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "libc6"]);
        assert_eq!(packages[1].version, "2.36-9+deb12u13");
        assert_eq!(packages[1].arch.as_deref(), Some("amd64"));
    }

    #[test]
    fn apk_packages_with_versions_and_arches() {
        let packages = apk_installed(APK);
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[0].name, "busybox");
        assert_eq!(packages[1].version, "1.2.5-r0");
    }

    #[test]
    fn rpm_lines_give_version_release_epoch_and_arch_without_keys() {
        let text = "bash\t0\t5.2.26\t3.fc40\tx86_64\n\
                    gpg-pubkey\t0\ta15b79cc\t63d04c2c\t(none)\n\
                    shim-x64\t2\t15.8\t3\tx86_64\n\
                    a truncated line\n";
        let packages = rpm_query_output(text);
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[0].version, "5.2.26-3.fc40");
        assert_eq!(packages[0].epoch, None);
        assert_eq!(packages[1].epoch, Some(2));
        let subject = Subject {
            vendor: "fedora",
            distro: "fedora-40",
            ..subject()
        };
        assert_eq!(
            installed_purl(Manager::Rpm, &subject, &packages[1]),
            "pkg:rpm/fedora/shim-x64@15.8-3?arch=x86_64&distro=fedora-40&epoch=2"
        );
        let spec = rpm_query_spec("fedora:40");
        assert!(spec.starts_with("FROM fedora:40\nRUN rpm -qa --qf '%{NAME}\\t%{EPOCHNUM}\\t"));
        assert!(spec.ends_with(&format!("> /{RPM_LIST}\n")));
    }

    #[test]
    fn purls_encode_their_parts() {
        let libc = &dpkg_status(STATUS)[1];
        assert_eq!(
            installed_purl(Manager::Dpkg, &subject(), libc),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u13?arch=amd64&distro=debian-12"
        );
        let k3s = Composed {
            name: "k3s".into(),
            version: "v1.31.4+k3s1".into(),
            digest: "sha256:aa".into(),
            source: "https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s".into(),
            image: false,
        };
        assert!(composed_purl(&k3s)
            .starts_with("pkg:generic/k3s@v1.31.4%2Bk3s1?download_url=https%3A%2F%2F"));
        let framework = Composed {
            name: "framework".into(),
            version: "v2.14.8".into(),
            digest: "sha256:bb".into(),
            source: "quay.io/kairos/framework:v2.14.8".into(),
            image: true,
        };
        assert_eq!(
            composed_purl(&framework),
            "pkg:oci/framework@sha256%3Abb?repository_url=quay.io%2Fkairos%2Fframework"
        );
    }

    #[test]
    fn the_document_lists_every_package_once_with_valid_ids() {
        let installed = dpkg_status(STATUS);
        let composed = vec![Composed {
            name: "framework".into(),
            version: "v2.14.8".into(),
            digest: "sha256:bb".into(),
            source: "quay.io/kairos/framework:v2.14.8".into(),
            image: true,
        }];
        let doc = document(&subject(), Manager::Dpkg, &installed, &composed);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let packages = doc["packages"].as_array().unwrap();
        // The image itself, two installed, one composed.
        assert_eq!(packages.len(), 4);
        let ids: BTreeSet<&str> = packages
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 4);
        for id in &ids {
            assert!(id
                .trim_start_matches("SPDXRef-")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        }
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 4);
        // Deterministic.
        assert_eq!(
            doc,
            document(&subject(), Manager::Dpkg, &installed, &composed)
        );
    }
}
