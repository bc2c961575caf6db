//! Composition of a project flavor: the stage graph of the flavor's spec
//! with the project's build args, and the layers composed on top of it
//! (framework for core; provider-kairos with k3s or k0s for standard).
//!
//! `kbuild plan --flavor` renders a [`FlavorPlan`]; `kbuild image`, `iso`
//! and `release` build from the same one, so what plan shows is what they
//! build.

pub mod image;
pub mod lock;
pub mod packages;
mod render;
pub mod resolve;
mod spec;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::dockerfile::{self, ParseFileError};
use crate::plan::{self, Plan, PlanError, PlanRequest, PlanSummary};
use crate::platform::{Platform, PlatformError};
use crate::project::package::{ArtifactSource, FileMapping};
use crate::project::{
    self, Arch, K8sDistribution, Project, ProjectError, Selection, SelectionRequest, Variant,
};

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Parse(#[from] ParseFileError),
    #[error("cannot plan {}", spec.display())]
    Plan {
        spec: PathBuf,
        #[source]
        source: PlanError,
    },
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("packages/{package}.yaml has no source for {arch}")]
    NoSource { package: String, arch: Arch },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("{what} is not in kbuild.lock, and --locked allows nothing new")]
    NotLocked { what: String },
    #[error("{what} resolved to {found}, but kbuild.lock says {locked}")]
    LockMismatch {
        what: String,
        locked: String,
        found: String,
    },
    #[error("\"{name}\" is not an image reference")]
    Reference {
        name: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("\"{name}\" is not an OCI layout: use oci:DIR or oci:DIR:TAG")]
    BadLayout { name: String },
    #[error("cannot pull {name}")]
    Pull {
        /// The flavor's base image (else a package's image).
        base: bool,
        name: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    #[error("cannot download {url}")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "package {package}: {url} has sha256 {actual}, not the pinned {expected}; nothing was kept"
    )]
    Checksum {
        package: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url} sent more than {limit} bytes; nothing was kept")]
    TooLarge { url: String, limit: u64 },
    #[error("package {package}: a raw download needs files[0].from to be a plain file name")]
    RawFileName { package: String },
    #[error("package {package}: /{path} is a device node, which a rootless build cannot carry into the image")]
    DeviceNode { package: String, path: String },
    #[error("cannot render {}", template.display())]
    Template {
        template: PathBuf,
        #[source]
        source: Box<minijinja::Error>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("{image} failed kbuild check ({} problems); it was not tagged", report.failures().count())]
    CheckFailed {
        image: String,
        report: Box<crate::check::CheckReport>,
    },
}

impl ComposeError {
    /// Whether the project files or the request are at fault (exit 2),
    /// rather than the job (exit 1).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            ComposeError::Project(_)
                | ComposeError::Parse(_)
                | ComposeError::Plan { .. }
                | ComposeError::Platform(_)
                | ComposeError::NoSource { .. }
                | ComposeError::RawFileName { .. }
                | ComposeError::Reference { .. }
                | ComposeError::BadLayout { .. }
                | ComposeError::Template { .. }
                | ComposeError::Lock(lock::LockError::Parse { .. })
        )
    }

    /// What the user can do about it (the CLI prints it on a `hint:` line).
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            ComposeError::NotLocked { .. } => {
                "run `kbuild image` without --locked (or `kbuild lock`) to record it"
            }
            ComposeError::LockMismatch { .. } => {
                "the input changed upstream: `kbuild lock --update` records the new value if it is expected"
            }
            ComposeError::CheckFailed { .. } => {
                "fix the spec (each failure above has its own hint), or pass --skip-check"
            }
            ComposeError::Pull { base: true, .. } => {
                "the flavor's base image cannot be pulled from here: `kbuild import BASE.tar -t NAME` \
                 (or `kbuild pull` from a mirror), then pass --base-image NAME"
            }
            ComposeError::Pull { base: false, .. } | ComposeError::Download { .. } => {
                "a package source in packages/*.yaml is unreachable from here: with kbuild.lock \
                 pinning it and its digest in the store, --locked needs no network; else mirror it \
                 and point the package file at the mirror"
            }
            ComposeError::Pipeline(crate::pipeline::PipelineError::Build { source, .. })
                if matches!(**source, crate::executor::BuildError::Registry(_)) =>
            {
                "an image the spec names cannot be pulled from here: `kbuild import` or \
                 `kbuild pull` it from a mirror under the name the spec uses"
            }
            _ => return None,
        };
        Some(hint.to_string())
    }
}

/// One composed layer on top of the flavor base.
#[derive(Debug, Clone, Serialize)]
pub struct LayerPlan {
    pub layer: &'static str,
    pub packages: Vec<PackagePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackagePlan {
    pub name: String,
    pub version: String,
    pub source: ArtifactSource,
    pub files: Vec<FileMapping>,
}

#[derive(Debug, Clone, Serialize)]
pub struct K8sPlan {
    pub distribution: K8sDistribution,
    pub version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Artifacts {
    pub iso: String,
    pub image: String,
}

/// Everything a flavor build will do, without doing any of it. Its JSON is
/// the `kbuild plan --flavor --format json` contract.
#[derive(Debug, Clone, Serialize)]
pub struct FlavorPlan {
    #[serde(flatten)]
    pub stages: PlanSummary,
    pub flavor: String,
    pub flavor_release: String,
    pub variant: Variant,
    pub arch: Arch,
    pub platform: String,
    pub k8s: Option<K8sPlan>,
    /// The spec, relative to the project.
    pub dockerfile: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub layers: Vec<LayerPlan>,
    pub artifacts: Artifacts,
}

/// A flavor plan with the resolved stage graph behind it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub selection: Selection,
    pub plan: Plan,
    pub flavor: FlavorPlan,
}

/// Selects a cell of the project's matrix and plans it. `extra_args`
/// override the project's build args; `target` and `platform` default to
/// the spec's last stage and `linux/<arch>`.
pub fn plan_flavor(
    project: &Project,
    request: &SelectionRequest,
    extra_args: &BTreeMap<String, String>,
    target: Option<String>,
    platform: Option<Platform>,
) -> Result<Planned, ComposeError> {
    let selection = project.select(request)?;
    let mut build_args = project.build_args(&selection);
    build_args.extend(extra_args.clone());
    let platform = match platform {
        Some(platform) => platform,
        None => Platform::parse(&format!("linux/{}", selection.id.arch))?,
    };
    let plan_request = PlanRequest {
        // The executor sets it from the build's epoch.
        source_date_epoch: None,
        build_args: build_args.clone(),
        target,
        platform: Some(platform),
    };
    let file = dockerfile::parse_file(&selection.dockerfile)?;
    let plan = plan::plan(&file, &plan_request).map_err(|source| ComposeError::Plan {
        spec: selection.dockerfile.clone(),
        source,
    })?;
    let flavor = compose(project, &selection, &plan, build_args)?;
    Ok(Planned {
        selection,
        plan,
        flavor,
    })
}

fn compose(
    project: &Project,
    selection: &Selection,
    plan: &Plan,
    build_args: BTreeMap<String, String>,
) -> Result<FlavorPlan, ComposeError> {
    let id = &selection.id;
    let package =
        |name: &str| -> Result<PackagePlan, ComposeError> {
            let pkg = &project.packages[name];
            let source = pkg.sources.get(id.arch.as_str()).cloned().ok_or_else(|| {
                ComposeError::NoSource {
                    package: name.to_string(),
                    arch: id.arch,
                }
            })?;
            Ok(PackagePlan {
                name: pkg.name.clone(),
                version: pkg.version.clone(),
                source,
                files: pkg.files.clone(),
            })
        };
    let mut layers = vec![LayerPlan {
        layer: "framework",
        packages: vec![package(project::FRAMEWORK_PACKAGE)?],
    }];
    if let Some((distro, _)) = &id.k8s {
        layers.push(LayerPlan {
            layer: "provider",
            packages: vec![
                package(project::PROVIDER_PACKAGE)?,
                package(project::EDGEVPN_PACKAGE)?,
                package(distro.as_str())?,
            ],
        });
    }
    let dockerfile = selection
        .dockerfile
        .strip_prefix(&project.root)
        .unwrap_or(&selection.dockerfile)
        .to_path_buf();
    Ok(FlavorPlan {
        stages: plan.summary(),
        flavor: id.flavor.clone(),
        flavor_release: id.flavor_release.clone(),
        variant: id.variant,
        arch: id.arch,
        platform: plan.platform.to_string(),
        k8s: id.k8s.clone().map(|(distribution, version)| K8sPlan {
            distribution,
            version,
        }),
        dockerfile,
        build_args,
        layers,
        artifacts: Artifacts {
            iso: format!("{}.iso", id.iso_name()),
            image: id.image_ref(&project.config.registry),
        },
    })
}
