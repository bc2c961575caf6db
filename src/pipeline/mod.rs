//! The build pipeline: what runs after what for `kbuild build` (and for
//! `image`, `iso` and `release`, which call it too).
//!
//! ```text
//! cache-from (registry -> step cache) -> parse -> execute -> commit
//!   -> tag -> output (oci dir | oci archive) -> push -> cache-to
//! ```
//!
//! Invariants:
//! * Tags are written only once the image is committed, so a failed build
//!   never moves a tag; the output is written only once the image is tagged,
//!   and pushed only once written.
//! * The CLI only maps flags to a [`BuildRequest`] and renders the
//!   [`BuildReport`]; nothing here prints.

mod report;

use std::path::PathBuf;
use std::time::Instant;

pub use report::{BuildReport, StepRecord, StepRecorder, TransferReport};

use crate::dockerfile::{self, ParseFileError};
use crate::executor::{self, BuildError, BuildOptions};
use crate::export::{export_image, Destination, ExportError};
use crate::reference::ImageRef;
use crate::registry::{self, RegistryError};
use crate::report::Reporter;
use crate::sandbox::Cancel;
use crate::store::{Store, StoreError};

/// A whole `kbuild build`.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The spec file.
    pub spec: PathBuf,
    pub options: BuildOptions,
    /// Store tags for the image.
    pub tags: Vec<String>,
    /// Also write the image here.
    pub output: Option<Destination>,
    /// Push the image here (and tag it so in the store).
    pub push: Option<ImageRef>,
    /// Import the step cache from here first.
    pub cache_from: Option<ImageRef>,
    /// Export the step cache here when done.
    pub cache_to: Option<ImageRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Parse(#[from] ParseFileError),
    #[error("cannot import the step cache from {reference}")]
    CacheFrom {
        reference: ImageRef,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("cannot build {}", spec.display())]
    Build {
        spec: PathBuf,
        #[source]
        source: Box<BuildError>,
    },
    #[error("cannot tag the image as {name}")]
    Tag {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot write the image to {destination}")]
    Output {
        destination: String,
        #[source]
        source: ExportError,
    },
    #[error("cannot push to {reference}")]
    Push {
        reference: ImageRef,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("cannot export the step cache to {reference}")]
    CacheTo {
        reference: ImageRef,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Runs `request` on `store`; progress goes to `reporter`, `cancel` stops
/// it (Ctrl-C).
pub fn build(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<BuildReport, PipelineError> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(PipelineError::Runtime)?;
    let registry_options = &request.options.registry;
    let recorder = StepRecorder::new(reporter);
    let mut report = BuildReport::default();
    if let Some(reference) = &request.cache_from {
        let done = runtime
            .block_on(registry::cache::import(
                store,
                reference,
                registry_options,
                &recorder,
            ))
            .map_err(|source| PipelineError::CacheFrom {
                reference: reference.clone(),
                source: Box::new(source),
            })?;
        report.cache_from = Some(TransferReport::of_cache(reference, &done));
    }
    let file = dockerfile::parse_file(&request.spec)?;
    let built =
        executor::build(store, &file, &request.options, &recorder, cancel).map_err(|source| {
            PipelineError::Build {
                spec: request.spec.clone(),
                source: Box::new(source),
            }
        })?;
    let mut names = request.tags.clone();
    names.extend(request.push.iter().map(ToString::to_string));
    for name in &names {
        store
            .tag(name, built.descriptor.clone())
            .map_err(|source| PipelineError::Tag {
                name: name.clone(),
                source,
            })?;
    }
    if let Some(destination) = &request.output {
        let name = names.first().map_or("kbuild-build", String::as_str);
        export_image(store, &built.descriptor, &built.manifest, name, destination).map_err(
            |source| PipelineError::Output {
                destination: destination.to_string(),
                source,
            },
        )?;
        report.output = Some(destination.to_string());
    }
    if let Some(reference) = &request.push {
        let pushed = runtime
            .block_on(registry::push::push(
                store,
                &reference.to_string(),
                reference,
                registry_options,
                &recorder,
            ))
            .map_err(|source| PipelineError::Push {
                reference: reference.clone(),
                source: Box::new(source),
            })?;
        report.pushed = Some(TransferReport::of_push(&pushed));
    }
    if let Some(reference) = &request.cache_to {
        let done = runtime
            .block_on(registry::cache::export(
                store,
                reference,
                registry_options,
                &recorder,
            ))
            .map_err(|source| PipelineError::CacheTo {
                reference: reference.clone(),
                source: Box::new(source),
            })?;
        report.cache_to = Some(TransferReport::of_cache(reference, &done));
    }
    report.digest = built.descriptor.digest().to_string();
    report.tags = names;
    report.steps = built.steps;
    report.cached = built.cached;
    report.steps_run = recorder.take();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
