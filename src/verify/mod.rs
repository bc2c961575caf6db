//! `kbuild verify`: build again from nothing and compare, so "same inputs,
//! same bytes" is checked rather than hoped for.
//!
//! ```text
//! first:  the cell's image and ISO (or the spec's image) in the user's store
//! second: the same request in a scratch store under <store>/tmp, empty but
//!         for the images it does not build (bases, packages), copied from
//!         the first store with every blob checked against its digest
//! compare: manifest digests (and ISO sha256); on a difference, `diff`
//!         names every differing path and config value
//! ```
//!
//! Invariants:
//! * Both builds run with the same `SOURCE_DATE_EPOCH`; without one the
//!   clock dates new steps and nothing could match, so it is required.
//! * The second build shares nothing with the first but those copied
//!   images: no step cache, snapshots, cache mounts or ISO parts, and it
//!   neither pulls nor pushes the step cache.
//! * The scratch store and its outputs are removed on every path out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::diff::{self, DiffError, DiffReport, Side};
use crate::digest::Digest;
use crate::iso::{build_iso, IsoError, IsoRequest};
use crate::pipeline::{self, BuildRequest, PipelineError};
use crate::project::Project;
use crate::report::Reporter;
use crate::sandbox::Cancel;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("kbuild verify needs SOURCE_DATE_EPOCH: without it each build is dated by the clock, so no two builds can match")]
    NoEpoch,
    #[error("the first build failed")]
    First(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the rebuild in an empty store failed")]
    Second(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot compare the two images")]
    Diff(#[from] DiffError),
}

/// What to build twice.
pub enum Subject<'a> {
    /// A project cell: its image and its ISO.
    Cell {
        project: &'a Project,
        request: IsoRequest,
    },
    /// A spec, as `kbuild build` builds it (tags, outputs, pushes and
    /// the registry cache are left out of both builds).
    Spec(BuildRequest),
}

/// One build's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub image_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub epoch: i64,
    pub first: Outcome,
    pub second: Outcome,
    /// Same image digest and (for a cell) the same ISO bytes.
    pub reproducible: bool,
    /// What differs, when the images do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<DiffReport>,
    pub seconds: f64,
}

/// The scratch store's directory, removed when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = crate::store::remove_tree(&self.dir);
    }
}

/// Builds `subject` in `store`, then again in a scratch store, and
/// compares the two.
pub fn verify(
    store: &Store,
    subject: &Subject,
    epoch: Option<i64>,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let epoch = epoch.ok_or(VerifyError::NoEpoch)?;
    let first = build_once(store, subject, None, reporter, cancel).map_err(VerifyError::First)?;
    rebuild_and_compare(store, subject, first, epoch, reporter, cancel).map(|mut report| {
        report.seconds = started.elapsed().as_secs_f64();
        report
    })
}

/// The second half of [`verify`], for a caller that has just built
/// `subject` in `store` (a release): `first` is what that build gave.
pub fn rebuild_and_compare(
    store: &Store,
    subject: &Subject,
    first: Outcome,
    epoch: i64,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let scratch = Scratch {
        dir: store.staging_dir()?,
    };
    let second_store = Store::open_scratch(&scratch.dir.join("store"), store)?;
    let out = scratch.dir.join("out");
    std::fs::create_dir_all(&out).map_err(|source| StoreError::Io {
        path: out.clone(),
        source,
    })?;
    let second = build_once(&second_store, subject, Some(&out), reporter, cancel)
        .map_err(VerifyError::Second)?;
    let diff = match first.image_digest == second.image_digest {
        true => None,
        false => Some(compare(store, &first, &second_store, &second)?),
    };
    Ok(VerifyReport {
        epoch,
        reproducible: diff.is_none() && first.iso_sha256 == second.iso_sha256,
        first,
        second,
        diff,
        seconds: started.elapsed().as_secs_f64(),
    })
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// One build; `output` replaces the cell's output directory (the second
/// build must not touch the user's ISO).
fn build_once(
    store: &Store,
    subject: &Subject,
    output: Option<&Path>,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<Outcome, AnyError> {
    match subject {
        Subject::Cell { project, request } => {
            let mut request = request.clone();
            if let Some(dir) = output {
                request.output_dir = dir.to_path_buf();
            }
            let report = build_iso(store, project, &request, reporter, cancel)
                .map_err(|e: IsoError| Box::new(e) as AnyError)?;
            Ok(Outcome {
                image_digest: report.image_digest,
                iso_sha256: Some(report.sha256),
            })
        }
        Subject::Spec(request) => {
            let mut request = request.clone();
            if output.is_some() {
                request.tags.clear();
                request.output = None;
                request.push = None;
                request.cache_from = None;
                request.cache_to = None;
            }
            let report = pipeline::build(store, &request, reporter, cancel)
                .map_err(|e: PipelineError| Box::new(e) as AnyError)?;
            Ok(Outcome {
                image_digest: report.digest,
                iso_sha256: None,
            })
        }
    }
}

fn compare(
    first_store: &Store,
    first: &Outcome,
    second_store: &Store,
    second: &Outcome,
) -> Result<DiffReport, VerifyError> {
    let side = |store: &'_ Store, outcome: &Outcome, name: &str| -> Result<_, VerifyError> {
        let digest: Digest = outcome.image_digest.parse().map_err(StoreError::from)?;
        Ok((
            store.read_json(&digest)?,
            name.to_string(),
            outcome.image_digest.clone(),
        ))
    };
    let (left_manifest, left_name, left_digest) = side(first_store, first, "first build")?;
    let (right_manifest, right_name, right_digest) =
        side(second_store, second, "rebuild in an empty store")?;
    Ok(diff::diff(
        &Side {
            store: first_store,
            name: left_name,
            manifest: left_manifest,
            digest: left_digest,
        },
        &Side {
            store: second_store,
            name: right_name,
            manifest: right_manifest,
            digest: right_digest,
        },
    )?)
}
