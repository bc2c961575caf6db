//! Manifests and indexes on the wire: what we accept, how big they may be,
//! and how they are verified before anyone parses them.

use bytes::Bytes;
use oci_spec::image::MediaType;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;

use super::transport::Session;
use super::{RegistryError, Result};
use crate::digest::Digest;
use crate::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};

/// Larger manifests are refused (the distribution reference registry
/// itself caps them at 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// A manifest or index exactly as the registry served it, verified.
pub struct RawManifest {
    pub bytes: Bytes,
    pub media_type: MediaType,
    pub digest: Digest,
}

impl RawManifest {
    pub fn from_bytes(bytes: Vec<u8>, media_type: MediaType) -> RawManifest {
        RawManifest {
            digest: Digest::of(&bytes),
            bytes: bytes.into(),
            media_type,
        }
    }
}

fn accept_header() -> String {
    [
        MediaType::ImageIndex.to_string(),
        MediaType::ImageManifest.to_string(),
        DOCKER_MANIFEST_LIST.to_string(),
        DOCKER_MANIFEST.to_string(),
    ]
    .join(", ")
}

/// Fetches `reference` (a tag or a digest) and verifies it: against the
/// digest it was asked by, else against the registry's
/// `Docker-Content-Digest`.
pub async fn fetch(session: &Session, reference: &str) -> Result<RawManifest> {
    let what = format!("manifest {}:{reference}", session.repository);
    let url = session.url(&format!("manifests/{reference}"));
    let mut response = session
        .send(
            &what,
            Method::GET,
            &url,
            |r| r.header(ACCEPT, accept_header()),
            &|_, _| {},
        )
        .await?;
    if !response.status().is_success() {
        return Err(session.status_error(&what, response).await);
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(CONTENT_TYPE.as_str());
    let served_digest = header(DOCKER_CONTENT_DIGEST);
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| RegistryError::Http {
            registry: session.registry.clone(),
            what: what.clone(),
            error: source,
        })?
    {
        if bytes.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(session.protocol(&what, "larger than 4 MiB; refusing it"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = Digest::of(&bytes);
    let pinned = reference.contains(':').then(|| reference.parse::<Digest>());
    let expected = match pinned {
        Some(Ok(digest)) => Some(digest),
        Some(Err(_)) => {
            return Err(session.protocol(&what, "only sha256 digests can be verified"));
        }
        None => served_digest.and_then(|d| d.parse().ok()),
    };
    if let Some(expected) = expected {
        if expected != actual {
            return Err(RegistryError::DigestMismatch {
                registry: session.registry.clone(),
                repository: session.repository.clone(),
                what: "manifest",
                expected,
                actual,
            });
        }
    }
    let media_type = media_type_of(&bytes, content_type.as_deref())
        .map_err(|reason| session.protocol(&what, &reason))?;
    Ok(RawManifest {
        bytes: bytes.into(),
        media_type,
        digest: actual,
    })
}

/// The manifest's own `mediaType`, else the response's Content-Type.
fn media_type_of(bytes: &[u8], content_type: Option<&str>) -> Result<MediaType, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON manifest: {e}"))?;
    if head.schema_version != Some(2) {
        return Err(format!(
            "schema version {:?} is not supported (only schema 2 / OCI manifests are)",
            head.schema_version
        ));
    }
    let declared = head
        .media_type
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()));
    let media_type = match declared {
        Some(t) => MediaType::from(t.as_str()),
        // An OCI document without mediaType: an index has `manifests`.
        None if head.manifests.is_some() => MediaType::ImageIndex,
        None => MediaType::ImageManifest,
    };
    let known = crate::media::is_index(&media_type) || crate::media::is_manifest(&media_type);
    if known {
        Ok(media_type)
    } else {
        Err(format!("unsupported manifest media type {media_type}"))
    }
}

/// Uploads a manifest under `reference` (a tag or its digest) and checks
/// the digest the registry reports back.
pub async fn put(session: &Session, reference: &str, manifest: &RawManifest) -> Result<()> {
    let what = format!("manifest {}:{reference}", session.repository);
    let url = session.url(&format!("manifests/{reference}"));
    let response = session
        .send(
            &what,
            Method::PUT,
            &url,
            |r| {
                r.header(CONTENT_TYPE, manifest.media_type.to_string())
                    .body(manifest.bytes.clone())
            },
            &|_, _| {},
        )
        .await?;
    if !response.status().is_success() {
        return Err(session.status_error(&what, response).await);
    }
    let reported = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    match reported {
        Some(d) if d != manifest.digest => Err(session.protocol(
            &what,
            &format!(
                "the registry stored it as {d}, not {}; it rewrote the manifest",
                manifest.digest
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let oci =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        assert_eq!(media_type_of(oci, None), Ok(MediaType::ImageManifest));
        let bare_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(media_type_of(bare_index, None), Ok(MediaType::ImageIndex));
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(crate::media::is_index(
            &media_type_of(docker, None).unwrap()
        ));
        let from_header = br#"{"schemaVersion":2,"config":{}}"#;
        assert_eq!(
            media_type_of(
                from_header,
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")
            ),
            Ok(MediaType::Other(DOCKER_MANIFEST.into()))
        );
        assert!(media_type_of(br#"{"schemaVersion":1}"#, None)
            .unwrap_err()
            .contains("schema version"));
        assert!(media_type_of(br#"{"schemaVersion":2,"mediaType":"text/html"}"#, None).is_err());
        assert!(media_type_of(b"<html>", None).is_err());
    }
}
