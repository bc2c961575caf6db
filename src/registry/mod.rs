//! Talking to registries: pull, push and the shared step cache, over the
//! OCI distribution API.
//!
//! * [`auth`] finds credentials the way Docker, Podman and skopeo do.
//! * [`transport`] is one authenticated, retrying session per repository.
//! * [`pull`] and [`push`] move images between the store and a registry;
//!   [`cache`] moves the step cache as an OCI artifact.
//!
//! Invariants:
//! * Everything pulled is digest-checked before it is committed to the
//!   store: blobs as they stream in, manifests against the digest they
//!   were asked by (or the registry's `Docker-Content-Digest`). A mismatch
//!   stores nothing.
//! * A tag in the store changes only after every blob and manifest it
//!   reaches is stored.
//! * Blob transfers run concurrently, at most [`RegistryOptions::jobs`] at once.

pub mod auth;
pub mod cache;
mod manifest;
pub mod pull;
pub mod push;
pub mod retry;
pub mod transport;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::store::StoreError;

pub use transport::TransportOptions;

/// Options shared by pull, push and cache transfers.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub transport: TransportOptions,
    /// Blob transfers in flight at once.
    pub jobs: usize,
    /// Upload chunk size in bytes (each chunk is one PATCH, retried alone).
    pub chunk_size: usize,
    /// Credential files, searched in order (see [`auth::auth_files`]).
    pub auth_files: Vec<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            transport: TransportOptions::default(),
            jobs: 4,
            chunk_size: 64 << 20,
            auth_files: auth::auth_files(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The chain of causes is part of the message (it is what says
    /// "connection refused" or "certificate verify failed").
    #[error("{registry}: {what}: {}", transport::error_chain(error))]
    Http {
        registry: String,
        what: String,
        error: reqwest::Error,
    },
    #[error("{registry}: {what}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Status {
        registry: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{registry}: access to {repository} denied: {detail}")]
    Unauthorized {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("{registry}: {what} not found")]
    NotFound { registry: String, what: String },
    #[error("{registry}/{repository}: {what} {expected} failed verification: the content served hashes to {actual}; nothing was stored")]
    DigestMismatch {
        registry: String,
        repository: String,
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("{registry}: {what}: {reason}")]
    Protocol {
        registry: String,
        what: String,
        reason: String,
    },
    #[error("{reference} has no manifest for {platform} (it has {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// `sha256:0123456789ab`, the way transfers are labelled.
pub fn short(digest: &Digest) -> String {
    format!("sha256:{}", &digest.hex()[..12])
}

/// Bytes and blobs moved by one command.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Blobs transferred, and their bytes.
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs the other side already had (or that were mounted).
    pub skipped: usize,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Totals) {
        self.blobs += other.blobs;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
    }
}

/// Runs `transfer` for every blob, at most `jobs` at once, adding up what
/// they moved; the first error stops the rest.
pub(crate) async fn transfer_all<'a, F, Fut>(
    blobs: &'a BTreeMap<Digest, u64>,
    jobs: usize,
    transfer: F,
) -> Result<Totals>
where
    F: Fn(&'a Digest, u64) -> Fut,
    Fut: std::future::Future<Output = Result<Totals>>,
{
    use futures_util::{stream, StreamExt, TryStreamExt};
    stream::iter(blobs.iter())
        .map(|(digest, size)| transfer(digest, *size))
        .buffer_unordered(jobs.max(1))
        .try_fold(Totals::default(), |mut totals, one| async move {
            totals += one;
            Ok(totals)
        })
        .await
}

/// Opens a session for `reference`'s repository with the credential the
/// auth files hold for its registry.
pub(crate) fn session_for(
    reference: &ImageRef,
    operation: oci_client::RegistryOperation,
    options: &RegistryOptions,
) -> Result<transport::Session> {
    let credential = auth::find(&reference.registry, &options.auth_files)?;
    transport::Session::new(
        &reference.registry,
        &reference.repository,
        credential,
        operation,
        &options.transport,
    )
}

/// Checks `username`/`password` against `registry` (what `kbuild login`
/// does before storing them): the API root must answer 200 with them.
pub async fn check_login(
    registry: &str,
    username: &str,
    password: &str,
    options: &RegistryOptions,
) -> Result<()> {
    let credential = auth::Credential::Basic {
        username: username.to_string(),
        password: password.to_string(),
    };
    let session = transport::Session::new(
        registry,
        "kbuild/login-check",
        Some(credential),
        oci_client::RegistryOperation::Pull,
        &options.transport,
    )?;
    let root = session.url("../../");
    let response = session
        .send("login", reqwest::Method::GET, &root, |r| r, &|_, _| {})
        .await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(session.status_error("login", response).await)
    }
}
