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

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use report::{BuildReport, StepRecord, StepRecorder, TransferReport};

use crate::dockerfile::{self, ParseFileError};
use crate::executor::{self, BuildError, BuildOptions};
use crate::export::{export_image, Destination, ExportError};
use crate::reference::ImageRef;
use crate::registry::{self, RegistryError, RegistryOptions};
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

/// Where a built image goes once it is accepted.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    pub tags: Vec<String>,
    pub output: Option<Destination>,
    pub push: Option<ImageRef>,
}

/// One run of the pipeline's phases, sharing a store, a reporter (whose
/// steps it records), a cancel flag and an async runtime for registries.
/// `kbuild build` runs them all in a row ([`build`]); `kbuild image` runs
/// several executions, checks the result, then publishes.
pub struct Pipeline<'a> {
    store: &'a Store,
    recorder: StepRecorder<'a>,
    cancel: &'a Cancel,
    runtime: tokio::runtime::Runtime,
}

impl<'a> Pipeline<'a> {
    pub fn new(
        store: &'a Store,
        reporter: &'a dyn Reporter,
        cancel: &'a Cancel,
    ) -> Result<Self, PipelineError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(PipelineError::Runtime)?;
        Ok(Pipeline {
            store,
            recorder: StepRecorder::new(reporter),
            cancel,
            runtime,
        })
    }

    pub fn store(&self) -> &Store {
        self.store
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The reporter phases report to (it records steps for the report).
    pub fn reporter(&self) -> &dyn Reporter {
        &self.recorder
    }

    /// The steps that ended since the last call.
    pub fn take_steps(&self) -> Vec<StepRecord> {
        self.recorder.take()
    }

    /// Imports the step cache at `reference` (`--cache-from`).
    pub fn cache_from(
        &self,
        reference: &ImageRef,
        options: &RegistryOptions,
    ) -> Result<TransferReport, PipelineError> {
        self.cache_transfer(reference, options, CacheDirection::From)
    }

    /// Parses and builds `spec`; the image is committed, not tagged.
    pub fn execute(
        &self,
        spec: &Path,
        options: &BuildOptions,
    ) -> Result<executor::Built, PipelineError> {
        let file = dockerfile::parse_file(spec)?;
        executor::build(self.store, &file, options, &self.recorder, self.cancel).map_err(|source| {
            PipelineError::Build {
                spec: spec.to_path_buf(),
                source: Box::new(source),
            }
        })
    }

    /// Tags `built` (the commit point), writes the output, pushes.
    pub fn publish(
        &self,
        built: &executor::Built,
        publish: &Publish,
        options: &RegistryOptions,
        report: &mut BuildReport,
    ) -> Result<(), PipelineError> {
        let mut names = publish.tags.clone();
        names.extend(publish.push.iter().map(ToString::to_string));
        for name in &names {
            self.store
                .tag(name, built.descriptor.clone())
                .map_err(|source| PipelineError::Tag {
                    name: name.clone(),
                    source,
                })?;
        }
        if let Some(destination) = &publish.output {
            let name = names.first().map_or("kbuild-build", String::as_str);
            export_image(
                self.store,
                &built.descriptor,
                &built.manifest,
                name,
                destination,
            )
            .map_err(|source| PipelineError::Output {
                destination: destination.to_string(),
                source,
            })?;
            report.output = Some(destination.to_string());
        }
        if let Some(reference) = &publish.push {
            let pushed = self
                .runtime
                .block_on(registry::push::push(
                    self.store,
                    &reference.to_string(),
                    reference,
                    options,
                    &self.recorder,
                ))
                .map_err(|source| PipelineError::Push {
                    reference: reference.clone(),
                    source: Box::new(source),
                })?;
            report.pushed = Some(TransferReport::of_push(&pushed));
        }
        report.digest = built.descriptor.digest().to_string();
        report.tags = names;
        Ok(())
    }

    /// Exports the store's step cache to `reference` (`--cache-to`).
    pub fn cache_to(
        &self,
        reference: &ImageRef,
        options: &RegistryOptions,
    ) -> Result<TransferReport, PipelineError> {
        self.cache_transfer(reference, options, CacheDirection::To)
    }

    fn cache_transfer(
        &self,
        reference: &ImageRef,
        options: &RegistryOptions,
        direction: CacheDirection,
    ) -> Result<TransferReport, PipelineError> {
        let result = match direction {
            CacheDirection::From => self.runtime.block_on(registry::cache::import(
                self.store,
                reference,
                options,
                &self.recorder,
            )),
            CacheDirection::To => self.runtime.block_on(registry::cache::export(
                self.store,
                reference,
                options,
                &self.recorder,
            )),
        };
        let done = result.map_err(|source| {
            let (reference, source) = (reference.clone(), Box::new(source));
            match direction {
                CacheDirection::From => PipelineError::CacheFrom { reference, source },
                CacheDirection::To => PipelineError::CacheTo { reference, source },
            }
        })?;
        Ok(TransferReport::of_cache(reference, &done))
    }
}

#[derive(Clone, Copy)]
enum CacheDirection {
    From,
    To,
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
    let pipeline = Pipeline::new(store, reporter, cancel)?;
    let registry_options = &request.options.registry;
    let mut report = BuildReport::default();
    if let Some(reference) = &request.cache_from {
        report.cache_from = Some(pipeline.cache_from(reference, registry_options)?);
    }
    let built = pipeline.execute(&request.spec, &request.options)?;
    let publish = Publish {
        tags: request.tags.clone(),
        output: request.output.clone(),
        push: request.push.clone(),
    };
    pipeline.publish(&built, &publish, registry_options, &mut report)?;
    if let Some(reference) = &request.cache_to {
        report.cache_to = Some(pipeline.cache_to(reference, registry_options)?);
    }
    report.steps = built.steps;
    report.cached = built.cached;
    report.steps_run = pipeline.take_steps();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
