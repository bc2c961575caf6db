//! `packages/<name>.yaml`: a pinned artifact (framework, provider-kairos,
//! k3s, k0s, edgevpn) per architecture, and the files taken from it.
//!
//! Invariant: after [`Package::validate`], every source is either a URL with
//! a 64-hex sha256 or an image reference (optionally pinned by digest).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reference::ImageRef;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// arch -> where the artifact comes from.
    pub sources: BTreeMap<String, ArtifactSource>,
    pub files: Vec<FileMapping>,
}

/// Exactly one of `url` (with `sha256`) or `image` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ArchiveFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ArchiveFormat {
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "tar")]
    Tar,
    #[serde(rename = "tar.gz")]
    TarGz,
    #[serde(rename = "tar.zst")]
    TarZst,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileMapping {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

fn is_hex_digest(text: &str) -> bool {
    text.len() == 64
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

impl Package {
    /// Checks the invariants serde cannot; errors name the key path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        if !self
            .name
            .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            || !self.name.chars().all(plain)
        {
            return Err((
                "name".into(),
                "a package name is lowercase letters, digits, '.', '_' and '-'".into(),
            ));
        }
        if self.version.is_empty()
            || self
                .version
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err((
                "version".into(),
                "a version is one word, without spaces or control characters".into(),
            ));
        }
        if self.sources.is_empty() {
            return Err((
                "sources".into(),
                "at least one architecture is needed".into(),
            ));
        }
        for (arch, source) in &self.sources {
            let at = |key: &str| format!("sources.{arch}.{key}");
            match (&source.url, &source.image) {
                (Some(_), Some(_)) => {
                    return Err((
                        format!("sources.{arch}"),
                        "give either url or image, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err((
                        format!("sources.{arch}"),
                        "give url (with sha256) or image".into(),
                    ))
                }
                (Some(_), None) => {
                    let sha = source.sha256.as_deref().unwrap_or("");
                    if !is_hex_digest(sha) {
                        return Err((
                            at("sha256"),
                            "a URL source needs the 64 lowercase hex digits of its sha256".into(),
                        ));
                    }
                    if sha.bytes().all(|b| b == b'0') {
                        return Err((
                            at("sha256"),
                            "all zeros is a placeholder, not a checksum: pin the artifact's real sha256".into(),
                        ));
                    }
                    if source.digest.is_some() {
                        return Err((
                            at("digest"),
                            "digest is for image sources; URL sources use sha256".into(),
                        ));
                    }
                }
                (None, Some(image)) => {
                    ImageRef::parse(image).map_err(|e| (at("image"), e.to_string()))?;
                    if source.sha256.is_some() || source.format.is_some() {
                        return Err((
                            format!("sources.{arch}"),
                            "sha256 and format are for URL sources".into(),
                        ));
                    }
                    if let Some(d) = &source.digest {
                        if !d.strip_prefix("sha256:").is_some_and(is_hex_digest) {
                            return Err((at("digest"), "expected sha256:<64 hex digits>".into()));
                        }
                    }
                }
            }
        }
        for (i, file) in self.files.iter().enumerate() {
            if !file.to.starts_with('/') {
                return Err((
                    format!("files[{i}].to"),
                    "must be an absolute path in the image".into(),
                ));
            }
            if let Some(mode) = &file.mode {
                if u32::from_str_radix(mode, 8).map_or(true, |m| m > 0o7777) {
                    return Err((
                        format!("files[{i}].mode"),
                        format!("\"{mode}\" is not an octal mode like 0755"),
                    ));
                }
            }
        }
        Ok(())
    }
}
