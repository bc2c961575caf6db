//! `kbuild build`: executes a plan on the store.
//!
//! Each stage runs its instructions in order on an [`ImageState`] (layers,
//! history, runtime config, cache key). Filesystem steps (RUN, COPY, ADD,
//! WORKDIR) go through [`step`]: a cache hit reuses the recorded layer and
//! its snapshot; a miss mounts an overlay over the parent's snapshots with
//! a fresh upper dir, runs the step (RUN in the [`crate::sandbox`], COPY in
//! a private mount namespace of one thread), and the upper dir becomes the
//! layer and the next snapshot. Stages that do not depend on each other
//! run in parallel, up to `jobs` at once.
//!
//! Invariants:
//! * A step key is a digest over its parent's key and everything the step
//!   reads: the instruction, the variables it sees, its sources' contents,
//!   its mounts' sources. Equal keys mean interchangeable results.
//! * The store is only ever added to: blobs, then snapshots, then the
//!   step-cache entry, then (at the very end) the tags. A failed or
//!   interrupted build leaves complete entries or nothing; its step
//!   directories are removed on every path out.

mod copy;
mod copy_step;
mod image_state;
pub mod keys;
mod run;
mod schedule;
pub mod source;
mod stage;
mod step;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use oci_spec::image::{Descriptor, ImageManifest};

pub use image_state::{FsWork, ImageState};

use crate::dockerfile::{Dockerfile, SpecError};
use crate::layer::WriteOptions;
use crate::plan::{Plan, PlanError, PlanRequest};
use crate::registry::{RegistryError, RegistryOptions};
use crate::report::Reporter;
use crate::rootfs::Root;
use crate::sandbox::{Cancel, Isolation, Network, SandboxError};
use crate::store::image::{commit_image, rfc3339, NewImage};
use crate::store::{Store, StoreError};

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    pub plan: PlanRequest,
    pub no_cache: bool,
    /// `--secret id=ID,src=PATH`.
    pub secrets: BTreeMap<String, PathBuf>,
    pub isolation: Isolation,
    /// The network of RUN steps that do not say `--network`.
    pub network: Network,
    /// Stages built at once.
    pub jobs: usize,
    pub layer: WriteOptions,
    pub registry: RegistryOptions,
    /// The kbuild executable RUN steps start as their sandbox helper
    /// (`kbuild __sandbox SPEC`); a test binary is not one.
    pub helper: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A step refused its input; the message is the whole story.
    #[error("{location}: {message}")]
    Step { location: Location, message: String },
    #[error("{location}: {what}")]
    StepIo {
        location: Location,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: cannot copy")]
    Copy {
        location: Location,
        #[source]
        source: copy::CopyError,
    },
    #[error("{location}: {user}")]
    User {
        location: Location,
        user: String,
        #[source]
        source: crate::sandbox::users::UserError,
    },
    #[error("{location}: cannot fetch {url}")]
    Download {
        location: Location,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "{location}: {text}: the command exited with code {code}{}",
        tail_text(tail)
    )]
    RunFailed {
        location: Location,
        text: String,
        code: i32,
        tail: Vec<String>,
    },
    #[error("{location}: cannot run the step")]
    Sandbox {
        location: Location,
        #[source]
        source: SandboxError,
    },
    #[error("{location}: {instruction} needs root: an uncached {instruction} step runs over an overlayfs mount in new mount and pid namespaces")]
    NeedsRoot {
        location: Location,
        instruction: String,
    },
    #[error("{location}: RUN needs {platform} programs to run on this host")]
    ForeignPlatform {
        location: Location,
        platform: String,
        #[source]
        source: Box<crate::binfmt::BinfmtError>,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("stages {stages} wait for stages that were never built (a bug in kbuild)")]
    Unscheduled { stages: String },
    #[error("stage {stage} stopped on an internal error (a bug in kbuild): {message}")]
    Panicked { stage: String, message: String },
    #[error("cannot read the build context {}", path.display())]
    ContextDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ignore(#[from] source::IgnoreError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("\"{name}\" is not an image reference")]
    Reference {
        name: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("{name} has no image for {platform}")]
    NoPlatform { name: String, platform: String },
    #[error("cannot {what} for a COPY, ADD or WORKDIR step")]
    Mount {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// What the user can do about it (the CLI prints it on a `hint:` line).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            BuildError::NeedsRoot { .. } => Some(
                "run kbuild as root (e.g. `sudo -E kbuild build ...`), or rootless: give your user subordinate ids (`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER`) and install `uidmap`; steps already in the step cache need no privilege",
            ),
            BuildError::Panicked { .. } => {
                Some("this is a bug in kbuild: please report it with the spec that triggers it")
            }
            BuildError::Store(StoreError::DiffIdMismatch { .. }) => {
                Some("run `kbuild cache fsck` to quarantine the corrupt blob, then build again")
            }
            _ => None,
        }
    }
}

/// Where in which spec: `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub pos: crate::dockerfile::Pos,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.pos.line, self.pos.column)
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut text = format!("\nlast {} lines of output:", tail.len());
    for line in tail {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    pub descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub steps: usize,
    pub cached: usize,
}

/// Counts of filesystem steps.
#[derive(Debug, Default)]
struct Stats {
    steps: usize,
    cached: usize,
}

/// What every stage of one build shares.
struct Executor<'a> {
    store: &'a Store,
    file: &'a Dockerfile,
    plan: &'a Plan,
    options: &'a BuildOptions,
    reporter: &'a dyn Reporter,
    cancel: &'a Cancel,
    runtime: tokio::runtime::Runtime,
    context: Root,
    ignore: source::Ignore,
    results: Mutex<Vec<Option<ImageState>>>,
    stats: Mutex<Stats>,
    /// One pull at a time: two stages FROM the same image pull it once.
    pulls: Mutex<()>,
    /// `SOURCE_DATE_EPOCH`: every new history entry and the image are
    /// dated with it; without it they follow the steps' own times.
    epoch: Option<i64>,
}

/// Builds the plan's target stage of `file` and commits the image
/// (untagged: tagging is the caller's commit point).
pub fn build(
    store: &Store,
    file: &Dockerfile,
    options: &BuildOptions,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<Built, BuildError> {
    let request = PlanRequest {
        source_date_epoch: options.layer.source_date_epoch,
        ..options.plan.clone()
    };
    let plan = crate::plan::plan(file, &request)?;
    check_foreign_runs(file, &plan)?;
    let context = Root::open(&options.context).map_err(|source| BuildError::ContextDir {
        path: options.context.clone(),
        source,
    })?;
    let ignore = source::Ignore::load(&options.context)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BuildError::Runtime)?;
    let executor = Executor {
        store,
        file,
        plan: &plan,
        options,
        reporter,
        cancel,
        runtime,
        context,
        ignore,
        results: Mutex::new(vec![None; file.stages.len()]),
        stats: Mutex::new(Stats::default()),
        pulls: Mutex::new(()),
        epoch: options.layer.source_date_epoch,
    };
    executor.run_stages()?;
    let state = executor
        .result(plan.target)
        .expect("the target stage was built");
    let (descriptor, manifest) = commit_image(
        store,
        &NewImage {
            layers: &state.layers,
            history: state.history.clone(),
            architecture: &state.architecture,
            config: state.config.clone(),
            created: rfc3339(executor.epoch.unwrap_or(state.created)),
        },
    )?;
    let stats = executor.stats.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Built {
        descriptor,
        manifest,
        steps: stats.steps,
        cached: stats.cached,
    })
}

/// Fails before any work when a planned stage has RUN steps for a
/// platform whose programs this host cannot run (see [`crate::binfmt`]).
fn check_foreign_runs(file: &Dockerfile, plan: &Plan) -> Result<(), BuildError> {
    for &stage in &plan.order {
        let platform = plan.headers[stage]
            .platform
            .as_ref()
            .unwrap_or(&plan.platform);
        let first_run = file.stages[stage]
            .instructions
            .iter()
            .find(|i| matches!(i.kind, crate::dockerfile::InstructionKind::Run(_)));
        if let Some(run) = first_run {
            crate::binfmt::check(platform).map_err(|source| BuildError::ForeignPlatform {
                location: Location {
                    file: file.source.name().to_string(),
                    pos: run.pos,
                },
                platform: platform.to_string(),
                source: Box::new(source),
            })?;
        }
    }
    Ok(())
}

impl Executor<'_> {
    fn result(&self, stage: usize) -> Option<ImageState> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())[stage].clone()
    }

    /// The stages a stage waits for: its base and every `--from`.
    fn dependencies(&self, stage: usize) -> BTreeSet<usize> {
        let mut deps: BTreeSet<usize> = self.plan.inputs[stage]
            .iter()
            .flat_map(|i| i.stage_deps.iter().map(|(d, _)| *d))
            .collect();
        if let crate::plan::Origin::Stage(base) = self.plan.headers[stage].base {
            deps.insert(base);
        }
        deps
    }

    /// Runs every planned stage, each once its dependencies are done, up
    /// to `jobs` at once; the first failure stops the others.
    fn run_stages(&self) -> Result<(), BuildError> {
        let stages: Vec<(usize, BTreeSet<usize>)> = self
            .plan
            .order
            .iter()
            .map(|&stage| (stage, self.dependencies(stage)))
            .collect();
        schedule::run(&stages, self.options.jobs, self.cancel, |stage| {
            self.run_stage(stage)
        })
        .map_err(|e| match e {
            BuildError::Panicked { stage, message } => BuildError::Panicked {
                stage: stage
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.plan.headers.get(i))
                    .map_or(stage, |h| h.name.clone()),
                message,
            },
            e => e,
        })
    }

    fn run_stage(&self, index: usize) -> Result<(), BuildError> {
        let state = stage::StageRun::new(self, index)?.run()?;
        self.results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(state);
        Ok(())
    }
}
