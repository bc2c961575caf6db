//! `kbuild.lock`: what every floating input of the project resolved to,
//! so a build can be repeated exactly (`--locked`) and a change of an
//! upstream tag is a visible diff.
//!
//! YAML, sorted, one entry per input: base images per flavor, release
//! and arch, package images per arch (by reference), URL artifacts (by
//! URL). Written atomically, and only when something was resolved anew.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's name, beside `kbuild.yaml`.
pub const LOCK_FILE: &str = "kbuild.lock";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// What resolved to which image digest: key (e.g. `base debian/12/amd64`,
    /// `package framework/amd64`) -> entry.
    #[serde(default)]
    pub images: BTreeMap<String, LockedImage>,
    /// URL artifacts: key -> entry.
    #[serde(default)]
    pub urls: BTreeMap<String, LockedUrl>,
    #[serde(skip)]
    changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    pub reference: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedUrl {
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid lock file", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Lock {
    /// The project's lock, empty if it has none.
    pub fn load(project: &Path) -> Result<Lock, LockError> {
        let path = project.join(LOCK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_yaml_ng::from_str(&text).map_err(|source| LockError::Parse { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::default()),
            Err(source) => Err(LockError::Read { path, source }),
        }
    }

    /// The digest `key` was locked to, if it was locked for `reference`.
    pub fn image(&self, key: &str, reference: &str) -> Option<&str> {
        self.images
            .get(key)
            .filter(|e| e.reference == reference)
            .map(|e| e.digest.as_str())
    }

    pub fn set_image(&mut self, key: &str, reference: &str, digest: &str) {
        let entry = LockedImage {
            reference: reference.to_string(),
            digest: digest.to_string(),
        };
        if self.images.get(key) != Some(&entry) {
            self.images.insert(key.to_string(), entry);
            self.changed = true;
        }
    }

    /// The sha256 `key` was locked to, if it was locked for `url`.
    pub fn url(&self, key: &str, url: &str) -> Option<&str> {
        self.urls
            .get(key)
            .filter(|e| e.url == url)
            .map(|e| e.sha256.as_str())
    }

    pub fn set_url(&mut self, key: &str, url: &str, sha256: &str) {
        let entry = LockedUrl {
            url: url.to_string(),
            sha256: sha256.to_string(),
        };
        if self.urls.get(key) != Some(&entry) {
            self.urls.insert(key.to_string(), entry);
            self.changed = true;
        }
    }

    /// Whether anything was resolved anew since `load`.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Writes the lock beside `kbuild.yaml` (temp file + rename).
    pub fn save(&self, project: &Path) -> Result<(), LockError> {
        let path = project.join(LOCK_FILE);
        let body = serde_yaml_ng::to_string(self).expect("a lock serializes");
        let text = format!(
            "# kbuild.lock: what the project's floating inputs resolved to.\n# Written by kbuild; `kbuild image --locked` refuses anything not in it.\n{body}"
        );
        crate::store::atomic::write(&path, text.as_bytes())
            .map_err(|source| LockError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_changes_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let mut lock = Lock::load(dir.path()).unwrap();
        assert!(!lock.changed());
        lock.set_image("base debian/12/amd64", "debian:bookworm", "sha256:aa");
        lock.set_url("package k3s/amd64", "http://x/k3s", "bb");
        assert!(lock.changed());
        lock.save(dir.path()).unwrap();
        let again = Lock::load(dir.path()).unwrap();
        assert_eq!(
            again.image("base debian/12/amd64", "debian:bookworm"),
            Some("sha256:aa")
        );
        assert_eq!(again.image("base debian/12/amd64", "debian:trixie"), None);
        assert_eq!(again.url("package k3s/amd64", "http://x/k3s"), Some("bb"));
        let mut same = again.clone();
        same.set_image("base debian/12/amd64", "debian:bookworm", "sha256:aa");
        assert!(!same.changed());
    }
}
