//! `kbuild push`: a store image (or multi-platform index) to a registry.
//!
//! Each blob: HEAD first (skip what the repository has), then a
//! cross-repository mount from a repository of the same registry known to
//! hold it (falling back to an upload when the registry answers 202),
//! else a chunked upload whose chunks are retried alone and resumed at the
//! offset the registry confirms. Manifests go last, children before the
//! index, so the tag never names something incomplete.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use oci_client::RegistryOperation;
use oci_spec::image::{ImageIndex, ImageManifest};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode, Url};

use super::manifest::{self, RawManifest};
use super::transport::Session;
use super::{session_for, short, transfer_all, RegistryError, RegistryOptions, Result, Totals};
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::report::{Activity, ByteProgress, Reporter};
use crate::store::image::is_index;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct Pushed {
    pub reference: String,
    pub digest: Digest,
    pub totals: Totals,
}

/// Pushes the store image `name` to `target`.
pub async fn push(
    store: &Store,
    name: &str,
    target: &ImageRef,
    options: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let descriptor = store.descriptor(name)?;
    let top_digest: Digest = Digest::try_from(descriptor.digest()).map_err(StoreError::from)?;
    let top = RawManifest::from_bytes(
        store.read_blob(&top_digest)?,
        descriptor.media_type().clone(),
    );
    let mut documents = Vec::new();
    if is_index(&top.media_type) {
        let index: ImageIndex = store.read_json(&top_digest)?;
        for entry in index.manifests() {
            let digest: Digest = Digest::try_from(entry.digest()).map_err(StoreError::from)?;
            documents.push(RawManifest::from_bytes(
                store.read_blob(&digest)?,
                entry.media_type().clone(),
            ));
        }
    }
    let mut blobs = BTreeMap::new();
    for image in documents.iter().chain(std::iter::once(&top)) {
        if is_index(&image.media_type) {
            continue;
        }
        let parsed: ImageManifest =
            serde_json::from_slice(&image.bytes).map_err(|source| StoreError::Document {
                what: format!("manifest {}", image.digest),
                source,
            })?;
        for d in std::iter::once(parsed.config()).chain(parsed.layers()) {
            let digest: Digest = Digest::try_from(d.digest()).map_err(StoreError::from)?;
            blobs.insert(digest, d.size());
        }
    }
    let session = session_for(target, RegistryOperation::Push, options)?;
    let totals = push_blobs(&session, store, &blobs, options, reporter).await?;
    for child in &documents {
        manifest::put(&session, &child.digest.to_string(), child).await?;
    }
    let reference = target
        .tag_or_latest()
        .map(str::to_string)
        .unwrap_or_else(|| top.digest.to_string());
    manifest::put(&session, &reference, &top).await?;
    for digest in blobs.keys() {
        store.add_source(digest, &session.registry, &session.repository)?;
    }
    Ok(Pushed {
        reference: target.to_string(),
        digest: top.digest,
        totals,
    })
}

/// Uploads every blob the repository lacks, `jobs` at a time.
pub(crate) async fn push_blobs(
    session: &Session,
    store: &Store,
    blobs: &BTreeMap<Digest, u64>,
    options: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Totals> {
    transfer_all(blobs, options.jobs, |digest, size| {
        push_blob(session, store, digest, size, options, reporter)
    })
    .await
}

async fn push_blob(
    session: &Session,
    store: &Store,
    digest: &Digest,
    size: u64,
    options: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Totals> {
    let progress = ByteProgress::start(reporter, short(digest), Activity::Push, size);
    let skipped = Totals {
        skipped: 1,
        ..Totals::default()
    };
    if exists(session, digest).await? {
        progress.skipped("already in the registry".into());
        return Ok(skipped);
    }
    let mount_from = store
        .sources_of(digest)?
        .into_iter()
        .filter_map(|s| {
            let repo = s.strip_prefix(&format!("{}/", session.registry))?;
            (repo != session.repository).then(|| repo.to_string())
        })
        .next();
    let location = match &mount_from {
        Some(from) => match mount(session, digest, from).await {
            Ok(Mount::Done) => {
                progress.skipped(format!("mounted from {from}"));
                return Ok(skipped);
            }
            Ok(Mount::Upload(location)) => location,
            // Token registries refuse a mount whose token lacks pull access
            // to the source repository: upload instead.
            Err(RegistryError::Unauthorized { .. }) => start_upload(session, digest).await?,
            Err(other) => return Err(other),
        },
        None => start_upload(session, digest).await?,
    };
    upload(session, store, digest, size, location, options, progress).await?;
    Ok(Totals {
        blobs: 1,
        bytes: size,
        skipped: 0,
    })
}

async fn exists(session: &Session, digest: &Digest) -> Result<bool> {
    let what = format!("blob {digest}");
    let url = session.url(&format!("blobs/{digest}"));
    let response = session
        .send(&what, Method::HEAD, &url, |r| r, &|_, _| {})
        .await?;
    match response.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(session.status_error(&what, response).await),
    }
}

enum Mount {
    Done,
    /// The registry could not mount and opened an upload session instead.
    Upload(Url),
}

async fn mount(session: &Session, digest: &Digest, from: &str) -> Result<Mount> {
    let what = format!("mount of {digest} from {from}");
    let mut url = session.url("blobs/uploads/");
    url.query_pairs_mut()
        .append_pair("mount", &digest.to_string())
        .append_pair("from", from);
    let response = session
        .send(
            &what,
            Method::POST,
            &url,
            |r| r.header(CONTENT_LENGTH, 0),
            &|_, _| {},
        )
        .await?;
    match response.status() {
        StatusCode::CREATED => Ok(Mount::Done),
        StatusCode::ACCEPTED => Ok(Mount::Upload(session.location(&response, &what)?)),
        _ => Err(session.status_error(&what, response).await),
    }
}

async fn start_upload(session: &Session, digest: &Digest) -> Result<Url> {
    let what = format!("upload of {digest}");
    let url = session.url("blobs/uploads/");
    let response = session
        .expect(&what, Method::POST, &url, StatusCode::ACCEPTED)
        .await?;
    session.location(&response, &what)
}

/// PATCHes the blob in chunks, then PUTs the digest to finish. After a
/// failed chunk the registry is asked where the upload stands (416 or a
/// lost response may mean it got part of it).
async fn upload(
    session: &Session,
    store: &Store,
    digest: &Digest,
    size: u64,
    mut location: Url,
    options: &RegistryOptions,
    progress: ByteProgress<'_>,
) -> Result<()> {
    let what = format!("upload of {digest}");
    let file = Arc::new(store.open_blob(digest)?);
    let chunk_size = options.chunk_size.max(1 << 20) as u64;
    let mut offset = 0u64;
    let mut failures = 0;
    while offset < size {
        let len = chunk_size.min(size - offset);
        let range = format!("{}-{}", offset, offset + len - 1);
        let sent_bytes = Arc::new(AtomicU64::new(offset));
        let on_retry = |attempt, reason| progress.retrying(attempt, reason);
        let request = session.send(
            &what,
            Method::PATCH,
            &location,
            |r| {
                sent_bytes.store(offset, Ordering::Relaxed);
                let body = file_range(&file, offset, len, sent_bytes.clone());
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .header("Content-Range", range.clone())
                    .header(CONTENT_LENGTH, len)
                    .body(reqwest::Body::wrap_stream(body))
            },
            &on_retry,
        );
        let sent = with_ticks(request, || progress.set(sent_bytes.load(Ordering::Relaxed))).await;
        match sent {
            Ok(response) if response.status() == StatusCode::ACCEPTED => {
                location = session.location(&response, &what)?;
                offset += len;
                progress.set(offset);
                continue;
            }
            Ok(response) if response.status() != StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(session.status_error(&what, response).await);
            }
            Ok(_) => {}
            Err(e) if failures + 1 >= session.policy.attempts => return Err(e),
            Err(_) => {}
        }
        failures += 1;
        if failures >= session.policy.attempts {
            return Err(session.protocol(&what, "the registry kept refusing the chunk's range"));
        }
        // Ask where the upload stands and go on from there.
        let status = session
            .send(&what, Method::GET, &location, |r| r, &|_, _| {})
            .await?;
        if status.status() != StatusCode::NO_CONTENT {
            return Err(session.status_error(&what, status).await);
        }
        location = session.location(&status, &what)?;
        offset = confirmed_end(&status).unwrap_or(0);
        progress.retrying(failures, format!("resuming at byte {offset}"));
        progress.set(offset);
    }
    let mut done = location.clone();
    done.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    let committed = session
        .expect(&what, Method::PUT, &done, StatusCode::CREATED)
        .await;
    // A retried PUT finds the session closed if the first one committed
    // and only its answer was lost: the blob being there is what counts.
    if let Err(e) = committed {
        if !exists(session, digest).await? {
            return Err(e);
        }
    }
    progress.finished();
    Ok(())
}

/// `len` bytes of `file` from `offset`, read piece by piece as the
/// request body is sent (reads overlap the upload; nothing is buffered
/// beyond one piece). `sent` counts what has been handed to the connection.
fn file_range(
    file: &Arc<File>,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    const PIECE: u64 = 1 << 20;
    let end = offset + len;
    stream::try_unfold((file.clone(), offset), move |(file, at)| {
        let sent = sent.clone();
        async move {
            if at >= end {
                return Ok(None);
            }
            let mut piece = vec![0u8; PIECE.min(end - at) as usize];
            file.read_exact_at(&mut piece, at)?;
            let next = at + piece.len() as u64;
            sent.store(next, Ordering::Relaxed);
            Ok(Some((Bytes::from(piece), (file, next))))
        }
    })
}

/// Runs `work`, calling `tick` every 200 ms until it is done (live
/// progress for a request whose body streams by itself).
async fn with_ticks<T>(work: impl std::future::Future<Output = T>, mut tick: impl FnMut()) -> T {
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = interval.tick() => tick(),
        }
    }
}

/// The byte after the last one the registry holds (`Range: 0-N` -> N+1).
/// The reference registry also says `0-0` for an empty upload; reading
/// it as empty costs at most one refused chunk when it held one byte.
fn confirmed_end(response: &reqwest::Response) -> Option<u64> {
    let range = response.headers().get(RANGE)?.to_str().ok()?;
    let end: u64 = range.rsplit('-').next()?.parse().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}
