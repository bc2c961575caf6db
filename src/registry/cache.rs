//! The step cache as an OCI artifact (`--cache-to` / `--cache-from`), so
//! the machines of a CI matrix reuse each other's steps.
//!
//! Format: an OCI image manifest with
//! `artifactType: application/vnd.kbuild.cache.v1+json`, whose config blob
//! (`application/vnd.kbuild.cache.config.v1+json`) maps step keys to
//! entries, and whose layers are the cached layers themselves with their
//! usual media types. Registries store it like any image; tools that do
//! not know the config type show it as an artifact and leave it alone.
//!
//! Invariant: an imported entry is recorded only once its layer blob is
//! stored and verified.

use std::collections::BTreeMap;

use oci_client::RegistryOperation;
use oci_spec::image::{ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use super::manifest::{self, RawManifest};
use super::pull::fetch_blobs;
use super::push::push_blobs;
use super::{session_for, RegistryError, RegistryOptions, Result, Totals};
use crate::digest::Digest;
use crate::media::{CACHE_ARTIFACT, CACHE_CONFIG, EMPTY};
use crate::reference::ImageRef;
use crate::report::Reporter;
use crate::store::cache::CacheEntry;
use crate::store::{canonical_json, Store};

#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    /// Step key -> entry.
    entries: BTreeMap<Digest, CacheEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTransfer {
    pub entries: usize,
    pub digest: Digest,
    pub totals: Totals,
}

/// Pushes every step cache entry of the store, with its layers, to `target`.
pub async fn export(
    store: &Store,
    target: &ImageRef,
    options: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<CacheTransfer> {
    let entries = store.cached_steps()?;
    let config_bytes = canonical_json(&CacheConfig {
        entries: entries.clone(),
    });
    let config = store.put_blob(&config_bytes)?;
    let mut blobs = BTreeMap::from([(config.clone(), config_bytes.len() as u64)]);
    let mut layers: BTreeMap<Digest, serde_json::Value> = BTreeMap::new();
    for layer in entries.values().filter_map(|e| e.layer.as_ref()) {
        blobs.insert(layer.digest.clone(), layer.size);
        layers.insert(
            layer.digest.clone(),
            descriptor(&layer.media_type, &layer.digest, layer.size),
        );
    }
    let mut layers: Vec<serde_json::Value> = layers.into_values().collect();
    if layers.is_empty() {
        let empty = store.put_blob(b"{}")?;
        blobs.insert(empty.clone(), 2);
        layers.push(descriptor(EMPTY, &empty, 2));
    }
    let document = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageManifest.to_string(),
        "artifactType": CACHE_ARTIFACT,
        "config": descriptor(CACHE_CONFIG, &config, config_bytes.len() as u64),
        "layers": layers,
    });
    let manifest = RawManifest::from_bytes(canonical_json(&document), MediaType::ImageManifest);

    let session = session_for(target, RegistryOperation::Push, options)?;
    let totals = push_blobs(&session, store, &blobs, options, reporter).await?;
    let reference = target
        .tag_or_latest()
        .map(str::to_string)
        .unwrap_or_else(|| manifest.digest.to_string());
    manifest::put(&session, &reference, &manifest).await?;
    Ok(CacheTransfer {
        entries: entries.len(),
        digest: manifest.digest,
        totals,
    })
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}

/// Pulls the cache at `source` into the store's step cache. Entries the
/// store already has are kept; their layers are not fetched again.
pub async fn import(
    store: &Store,
    source: &ImageRef,
    options: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<CacheTransfer> {
    let session = session_for(source, RegistryOperation::Pull, options)?;
    let raw = manifest::fetch(&session, &source.manifest_reference()).await?;
    let what = format!("cache {source}");
    let parsed: ImageManifest = serde_json::from_slice(&raw.bytes)
        .map_err(|e| session.protocol(&what, &format!("not an image manifest: {e}")))?;
    if parsed.config().media_type().to_string() != CACHE_CONFIG {
        return Err(RegistryError::Protocol {
            registry: session.registry.clone(),
            what,
            reason: format!(
                "not a kbuild cache: its config is {}, not {CACHE_CONFIG}",
                parsed.config().media_type()
            ),
        });
    }
    let config_digest: Digest = Digest::try_from(parsed.config().digest())
        .map_err(|e: crate::digest::DigestError| session.protocol(&what, &e.to_string()))?;
    let mut blobs = BTreeMap::from([(config_digest.clone(), parsed.config().size())]);
    let mut totals = fetch_blobs(&session, store, &blobs, 1, reporter).await?;
    let config: CacheConfig = store.read_json(&config_digest)?;

    let known = store.cached_steps()?;
    let wanted: BTreeMap<&Digest, &CacheEntry> = config
        .entries
        .iter()
        .filter(|(key, _)| !known.contains_key(*key))
        .collect();
    blobs.clear();
    for layer in wanted.values().filter_map(|e| e.layer.as_ref()) {
        blobs.insert(layer.digest.clone(), layer.size);
    }
    totals += fetch_blobs(&session, store, &blobs, options.jobs, reporter).await?;
    for (key, entry) in &wanted {
        store.cache_step(key, entry)?;
    }
    for digest in blobs.keys() {
        store.add_source(digest, &session.registry, &session.repository)?;
    }
    Ok(CacheTransfer {
        entries: wanted.len(),
        digest: raw.digest,
        totals,
    })
}
