//! Image references (`[registry/]repository[:tag][@digest]`), validated and
//! normalized the way Docker and the distribution spec read them.
//!
//! Invariant: a parsed [`ImageRef`] always has a registry and a repository;
//! `docker.io` single-name repositories get the `library/` prefix.

use std::fmt;

pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference \"{reference}\": {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<ImageRef, ReferenceError> {
        let fail = |reason| ReferenceError {
            reference: reference.to_string(),
            reason,
        };
        if reference.is_empty() {
            return Err(fail("it is empty"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (reference, None),
        };
        if let Some(d) = digest {
            let valid = d.split_once(':').is_some_and(|(alg, hex)| {
                !alg.is_empty()
                    && alg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                    && hex.len() >= 32
                    && hex
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            });
            if !valid {
                return Err(fail("the digest must look like sha256:<hex>"));
            }
        }
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let mut chars = t.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && t.len() <= 128;
            if !valid {
                return Err(fail(
                    "the tag may use letters, digits, '_', '.' and '-' (at most 128)",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry(first) => (first.to_string(), path),
            _ => (DEFAULT_REGISTRY.to_string(), name),
        };
        if !is_registry(&registry) {
            return Err(fail("the registry host is not valid"));
        }
        if path.is_empty() || !path.split('/').all(is_path_component) {
            return Err(fail("repository names use lowercase letters, digits and separators ('.', '_', '__', '-')"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(ImageRef {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// What to ask a registry's manifest endpoint for: the digest when
    /// pinned, else the tag (or `latest`).
    pub fn manifest_reference(&self) -> String {
        match &self.digest {
            Some(d) => d.clone(),
            None => self.tag_or_latest().unwrap_or("latest").to_string(),
        }
    }

    /// The tag, or `latest` when neither a tag nor a digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = self.tag_or_latest() {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The first path element names a registry when it has a '.' or a ':'
/// (host:port) or is `localhost`, as Docker decides it.
fn is_registry(first: &str) -> bool {
    if !(first.contains('.') || first.contains(':') || first == "localhost") {
        return false;
    }
    let (host, port) = match first.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || first.starts_with('[') => (h, Some(p)),
        _ => (first, None),
    };
    let host_ok = if host.starts_with('[') {
        host.ends_with(']')
            && host[1..host.len() - 1]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':')
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_validates() {
        let cases: &[(&str, Option<&str>)] = &[
            ("alpine", Some("docker.io/library/alpine:latest")),
            ("alpine:3.19", Some("docker.io/library/alpine:3.19")),
            ("quay.io/kairos/framework:v2.1_generic", Some("quay.io/kairos/framework:v2.1_generic")),
            ("localhost:5000/a/b", Some("localhost:5000/a/b:latest")),
            ("127.0.0.1:5000/x:1", Some("127.0.0.1:5000/x:1")),
            (
                "debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                Some("docker.io/library/debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            ),
            ("org/img", Some("docker.io/org/img:latest")),
            ("Builder", None),
            ("a//b", None),
            ("a:b:c", None),
            ("x@sha256:zz", None),
            ("", None),
            ("-a", None),
            ("a__b/c--d/e.f", Some("docker.io/a__b/c--d/e.f:latest")),
        ];
        for (input, want) in cases {
            let got = ImageRef::parse(input).ok().map(|r| r.to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }
}
