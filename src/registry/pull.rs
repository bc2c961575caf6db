//! `kbuild pull`: a registry image into the store.
//!
//! Order of commitment: blobs (each verified as it streams in), then the
//! manifests, then the tag, so an interrupted pull leaves at most
//! unreferenced blobs behind and the tag either old or complete.

use std::collections::BTreeMap;
use std::io::Write;

use futures_util::StreamExt;
use oci_client::RegistryOperation;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};

use super::manifest::{self, RawManifest};
use super::transport::{error_chain, Session};
use super::{session_for, short, transfer_all, RegistryError, RegistryOptions, Result, Totals};
use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::report::{Activity, ByteProgress, Reporter};
use crate::store::image::{is_index, is_manifest, platforms, select_platform};
use crate::store::{Store, StoreError};

/// Which manifests of a multi-platform image to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    One(Platform),
    /// The whole index with every platform's image.
    All,
}

#[derive(Debug, Clone)]
pub struct PullRequest {
    pub reference: ImageRef,
    pub platform: PlatformChoice,
    /// The store name to tag; default: the normalized reference.
    pub tag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Pulled {
    pub name: String,
    /// What the tag now points to (an image manifest, or an index with `All`).
    pub digest: Digest,
    pub totals: Totals,
}

pub async fn pull(
    store: &Store,
    request: &PullRequest,
    options: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Pulled> {
    let reference = &request.reference;
    let session = session_for(reference, RegistryOperation::Pull, options)?;
    let top = manifest::fetch(&session, &reference.manifest_reference()).await?;
    let (images, tagged) = if is_index(&top.media_type) {
        let index: ImageIndex = parse(&session, &top)?;
        match &request.platform {
            PlatformChoice::One(platform) => {
                let entry =
                    select_platform(&index, platform).ok_or_else(|| RegistryError::NoPlatform {
                        reference: reference.to_string(),
                        platform: platform.to_string(),
                        available: platforms(&index),
                    })?;
                let image = fetch_image_manifest(&session, entry).await?;
                (vec![image], None)
            }
            PlatformChoice::All => {
                let mut images = Vec::new();
                for entry in index.manifests() {
                    images.push(fetch_image_manifest(&session, entry).await?);
                }
                (images, Some(top))
            }
        }
    } else {
        (vec![top], None)
    };

    let mut blobs = BTreeMap::new();
    for image in &images {
        let parsed: ImageManifest = parse(&session, image)?;
        for d in std::iter::once(parsed.config()).chain(parsed.layers()) {
            blobs.insert(digest_of(&session, d)?, d.size());
        }
    }
    let totals = fetch_blobs(&session, store, &blobs, options.jobs, reporter).await?;

    let mut documents: Vec<&RawManifest> = images.iter().collect();
    documents.extend(tagged.as_ref());
    for document in &documents {
        store.put_blob(&document.bytes)?;
    }
    let target = documents.last().expect("at least one manifest");
    let name = request.tag.clone().unwrap_or_else(|| reference.to_string());
    let descriptor = Descriptor::new(
        target.media_type.clone(),
        target.bytes.len() as u64,
        oci_spec::image::Digest::from(&target.digest),
    );
    store.tag(&name, descriptor)?;
    for digest in blobs.keys().chain(documents.iter().map(|d| &d.digest)) {
        store.add_source(digest, &session.registry, &session.repository)?;
    }
    Ok(Pulled {
        name,
        digest: target.digest.clone(),
        totals,
    })
}

fn parse<T: serde::de::DeserializeOwned>(session: &Session, raw: &RawManifest) -> Result<T> {
    serde_json::from_slice(&raw.bytes).map_err(|e| {
        session.protocol(
            &format!("manifest {}", raw.digest),
            &format!("cannot parse it: {e}"),
        )
    })
}

fn digest_of(session: &Session, descriptor: &Descriptor) -> Result<Digest> {
    Digest::try_from(descriptor.digest())
        .map_err(|e: crate::digest::DigestError| session.protocol("manifest", &e.to_string()))
}

/// Fetches the image manifest an index entry names.
async fn fetch_image_manifest(session: &Session, entry: &Descriptor) -> Result<RawManifest> {
    let digest = digest_of(session, entry)?;
    let image = manifest::fetch(session, &digest.to_string()).await?;
    if !is_manifest(&image.media_type) {
        return Err(session.protocol(
            &format!("manifest {digest}"),
            &format!("expected an image manifest, got {}", image.media_type),
        ));
    }
    Ok(image)
}

/// Fetches every blob the store lacks, `jobs` at a time.
pub(crate) async fn fetch_blobs(
    session: &Session,
    store: &Store,
    blobs: &BTreeMap<Digest, u64>,
    jobs: usize,
    reporter: &dyn Reporter,
) -> Result<Totals> {
    transfer_all(blobs, jobs, |digest, size| {
        fetch_blob(session, store, digest, size, reporter)
    })
    .await
}

/// Streams one blob into the store, resuming with a Range request when
/// the connection breaks, and commits it only if it hashes to `digest`.
async fn fetch_blob(
    session: &Session,
    store: &Store,
    digest: &Digest,
    size: u64,
    reporter: &dyn Reporter,
) -> Result<Totals> {
    let progress = ByteProgress::start(reporter, short(digest), Activity::Pull, size);
    if store.has_blob(digest) {
        progress.skipped("already in the store".into());
        return Ok(Totals {
            skipped: 1,
            ..Totals::default()
        });
    }
    let what = format!("blob {digest}");
    let url = session.url(&format!("blobs/{digest}"));
    let mut writer = store.blob_writer()?;
    let mut written = 0u64;
    let mut breaks = 0;
    loop {
        let offset = written;
        let response = session
            .send(
                &what,
                Method::GET,
                &url,
                |r| {
                    if offset > 0 {
                        r.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        r
                    }
                },
                &|attempt, reason| progress.retrying(attempt, reason),
            )
            .await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 && resumes_at(&response, offset) => {}
            StatusCode::OK => {
                if offset > 0 {
                    // The server ignored the Range: start over.
                    writer = store.blob_writer()?;
                    written = 0;
                    progress.set(0);
                }
            }
            _ => return Err(session.status_error(&what, response).await),
        }
        let mut body = response.bytes_stream();
        let cut = loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    written += chunk.len() as u64;
                    if written > size {
                        return Err(session.protocol(
                            &what,
                            &format!("the registry sent more than its {size} bytes"),
                        ));
                    }
                    writer.write_all(&chunk).map_err(|source| StoreError::Io {
                        path: store.root().join("blobs"),
                        source,
                    })?;
                    progress.set(written);
                }
                Some(Err(e)) => break error_chain(&e),
                None if written == size => break String::new(),
                None => break format!("the body ended after {written} of {size} bytes"),
            }
        };
        if cut.is_empty() {
            break;
        }
        breaks += 1;
        if breaks >= session.policy.attempts {
            return Err(session.protocol(&what, &cut));
        }
        progress.retrying(breaks, cut);
        tokio::time::sleep(session.policy.delay(breaks, None)).await;
    }
    match writer.commit(Some(digest)) {
        Ok(_) => {}
        Err(StoreError::DigestMismatch { expected, actual }) => {
            return Err(RegistryError::DigestMismatch {
                registry: session.registry.clone(),
                repository: session.repository.clone(),
                what: "blob",
                expected,
                actual,
            })
        }
        Err(e) => return Err(e.into()),
    }
    progress.finished();
    Ok(Totals {
        blobs: 1,
        bytes: size,
        skipped: 0,
    })
}

/// Whether a 206 answer starts where we asked (`Content-Range: bytes N-M/T`).
fn resumes_at(response: &reqwest::Response, offset: u64) -> bool {
    response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|start| start.parse::<u64>().ok())
        == Some(offset)
}
