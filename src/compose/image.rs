//! `kbuild image`: one cell of the project's matrix, built and composed.
//!
//! ```text
//! base image (flavor default or --base-image; resolved, locked)
//!   -> images/Dockerfile.<flavor> with the project's build args   [flavor]
//!   -> + framework layer (kairos-release, framework files, identity
//!        reset, boot links)                                        [core]
//!   -> + provider layer (provider-kairos, edgevpn, k3s|k0s and its
//!        services, kairos-release with the software version)       [standard]
//!   -> kbuild check -> tag by the naming scheme, output, push
//! ```
//!
//! Invariants:
//! * Each stage is its own image in the store (tagged under
//!   `kbuild.local/<project>/...`), so core is built once and every
//!   standard cell builds on the same core layers.
//! * The final tag, output and push happen only after the check passed
//!   (or was skipped, with a warning): a failing image is never published.
//! * `kbuild.lock` is written only when something was resolved anew, and
//!   never under `--locked`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::lock::Lock;
use super::packages::{Resolver, StagedPackage};
use super::spec::{self, LayerSpec, Service};
use super::{plan_flavor, ComposeError, FlavorPlan, LayerPlan};
use crate::check::{self, CheckReport, Expectations};
use crate::executor::{BuildOptions, Built};
use crate::export::Destination;
use crate::pipeline::{BuildReport, Pipeline, Publish, StepRecord};
use crate::plan::PlanRequest;
use crate::platform::Platform;
use crate::project::flavor::InitSystem;
use crate::project::{ArtifactId, K8sDistribution, Project, Selection, SelectionRequest, Variant};
use crate::reference::ImageRef;
use crate::report::Reporter;
use crate::sandbox::Cancel;
use crate::store::Store;

/// What `kbuild image` was asked for.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub selection: SelectionRequest,
    /// `--build-arg`s over the project's.
    pub extra_args: BTreeMap<String, String>,
    /// Instead of the flavor's base image: a store name or a registry
    /// reference.
    pub base_image: Option<String>,
    pub locked: bool,
    pub skip_check: bool,
    pub output: Option<Destination>,
    /// Push to the image reference the naming scheme gives.
    pub push: bool,
    /// How to build (context and plan are set per stage).
    pub options: BuildOptions,
}

/// What one stage of the image did.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// `flavor`, `core` or `standard`.
    pub stage: &'static str,
    /// Its image in the store.
    pub name: String,
    pub digest: String,
    pub steps: usize,
    pub cached: usize,
    pub steps_run: Vec<StepRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The image's name by the naming scheme, as tagged in the store.
    pub image: String,
    pub digest: String,
    pub plan: FlavorPlan,
    pub stages: Vec<StageReport>,
    pub check: Option<CheckReport>,
    pub published: BuildReport,
    pub lock_written: bool,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// Builds the cell `request` selects.
pub fn build_image(
    store: &Store,
    project: &Project,
    request: &ImageRequest,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<ImageReport, ComposeError> {
    let started = Instant::now();
    let selection = project.select(&request.selection)?;
    let platform = Platform::parse(&format!("linux/{}", selection.id.arch))?;
    let pipeline = Pipeline::new(store, reporter, cancel)?;
    let mut lock = Lock::load(&project.root)?;
    let mut resolver = Resolver {
        store,
        registry: &request.options.registry,
        platform: platform.clone(),
        runtime: pipeline.runtime(),
        reporter: pipeline.reporter(),
        lock: &mut lock,
        locked: request.locked,
    };
    let id = &selection.id;
    let base_name = request.base_image.as_ref().unwrap_or(&selection.base_image);
    // An override is recorded apart, so a one-off --base-image never
    // rewrites the project's own base entry.
    let base_key = match request.base_image {
        Some(_) => format!(
            "base-override {}/{}/{}",
            id.flavor, id.flavor_release, id.arch
        ),
        None => format!("base {}/{}/{}", id.flavor, id.flavor_release, id.arch),
    };
    let (base, _) = resolver.image(&base_key, base_name)?;
    let mut args = request.extra_args.clone();
    args.insert("BASE_IMAGE".into(), base);
    let planned = plan_flavor(
        project,
        &request.selection,
        &args,
        None,
        Some(platform.clone()),
    )?;
    let names = InternalNames::new(project, &selection);
    let mut stages = Vec::new();

    let flavor_options = BuildOptions {
        context: project.root.clone(),
        plan: PlanRequest {
            // The executor sets it from the build's epoch.
            source_date_epoch: None,
            build_args: planned.flavor.build_args.clone(),
            target: None,
            platform: Some(platform.clone()),
        },
        ..request.options.clone()
    };
    let built = pipeline.execute(&selection.dockerfile, &flavor_options)?;
    stages.push(stage_done(&pipeline, "flavor", &names.flavor, &built)?);

    let mut below = names.flavor.clone();
    let mut last = built;
    for layer in &planned.flavor.layers {
        let variant = match layer.layer {
            "framework" => Variant::Core,
            _ => Variant::Standard,
        };
        let name = match variant {
            Variant::Core => &names.core,
            Variant::Standard => &names.standard,
        };
        let composed = Composition {
            project,
            selection: &selection,
            layer,
            variant,
            below: &below,
            platform: &platform,
            options: &request.options,
        };
        last = composed.build(&pipeline, &mut resolver)?;
        stages.push(stage_done(&pipeline, variant_name(variant), name, &last)?);
        below = name.clone();
    }

    let image = id.image_ref(&project.config.registry);
    let mut warnings = Vec::new();
    let check = match request.skip_check {
        true => {
            warnings.push(format!(
                "--skip-check: {image} was not checked before tagging"
            ));
            None
        }
        false => Some(check_image(store, project, &selection, &last.manifest)?),
    };
    if let Some(report) = check.as_ref().filter(|r| !r.passed) {
        return Err(ComposeError::CheckFailed {
            image,
            report: Box::new(report.clone()),
        });
    }
    let last = annotated(store, &last)?;
    let push = match request.push {
        true => Some(
            ImageRef::parse(&image).map_err(|source| ComposeError::Reference {
                name: image.clone(),
                source,
            })?,
        ),
        false => None,
    };
    let mut published = BuildReport::default();
    pipeline.publish(
        &last,
        &Publish {
            tags: vec![image.clone()],
            output: request.output.clone(),
            push,
        },
        &request.options.registry,
        &mut published,
    )?;
    let lock_written = lock.changed() && !request.locked;
    if lock_written {
        lock.save(&project.root)?;
    }
    Ok(ImageReport {
        image,
        digest: last.descriptor.digest().to_string(),
        plan: planned.flavor,
        stages,
        check,
        published,
        lock_written,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The final image with its `org.opencontainers.image.*` labels also as
/// manifest annotations, where registries and tools look for them.
fn annotated(store: &Store, built: &Built) -> Result<Built, ComposeError> {
    let config: oci_spec::image::ImageConfiguration = store.read_json(
        &crate::digest::Digest::try_from(built.manifest.config().digest())?,
    )?;
    let annotations = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key.starts_with("org.opencontainers.image."))
        .collect();
    let (descriptor, manifest) =
        crate::store::image::annotate(store, &built.manifest, annotations)?;
    Ok(Built {
        descriptor,
        manifest,
        ..built.clone()
    })
}

fn variant_name(variant: Variant) -> &'static str {
    match variant {
        Variant::Core => "core",
        Variant::Standard => "standard",
    }
}

/// Tags a stage's image under its internal name and reports it.
fn stage_done(
    pipeline: &Pipeline,
    stage: &'static str,
    name: &str,
    built: &Built,
) -> Result<StageReport, ComposeError> {
    pipeline.store().tag(name, built.descriptor.clone())?;
    Ok(StageReport {
        stage,
        name: name.to_string(),
        digest: built.descriptor.digest().to_string(),
        steps: built.steps,
        cached: built.cached,
        steps_run: pipeline.take_steps(),
    })
}

/// The store names of a cell's stages. Core does not depend on the k8s
/// choice, so both standard cells find the same core.
struct InternalNames {
    flavor: String,
    core: String,
    standard: String,
}

impl InternalNames {
    fn new(project: &Project, selection: &Selection) -> Self {
        let id = &selection.id;
        let repo = format!("kbuild.local/{}/{}", project.config.name, id.flavor);
        let cell = format!("{}-{}", id.flavor_release, id.arch).replace('+', "-");
        let k8s = id
            .k8s
            .as_ref()
            .map(|(d, v)| format!("-{d}-{v}").replace('+', "-"))
            .unwrap_or_default();
        let version = format!("{}-{}", id.model, id.version).replace('+', "-");
        InternalNames {
            flavor: format!("{repo}:{cell}-flavor"),
            core: format!("{repo}:{cell}-{version}-core"),
            standard: format!("{repo}:{cell}-{version}-standard{k8s}"),
        }
    }
}

/// One composed layer of a cell.
struct Composition<'a> {
    project: &'a Project,
    selection: &'a Selection,
    layer: &'a LayerPlan,
    variant: Variant,
    below: &'a str,
    platform: &'a Platform,
    options: &'a BuildOptions,
}

impl Composition<'_> {
    fn build(&self, pipeline: &Pipeline, resolver: &mut Resolver) -> Result<Built, ComposeError> {
        let dir = pipeline.store().staging_dir()?;
        let result = self.build_in(&dir, pipeline, resolver);
        let _ = crate::store::remove_tree(&dir);
        result
    }

    fn build_in(
        &self,
        dir: &std::path::Path,
        pipeline: &Pipeline,
        resolver: &mut Resolver,
    ) -> Result<Built, ComposeError> {
        let files = dir.join("files");
        let packages = self
            .layer
            .packages
            .iter()
            .map(|plan| resolver.stage(plan, &files))
            .collect::<Result<Vec<StagedPackage>, _>>()?;
        let release = super::render::kairos_release(self.project, &self.id())?;
        let services = match self.variant {
            Variant::Standard => self.services()?,
            Variant::Core => Vec::new(),
        };
        let labels = self.labels();
        let dockerfile = spec::write(
            dir,
            &LayerSpec {
                from: self.below,
                packages: &packages,
                kairos_release: &release,
                core: self.variant == Variant::Core,
                services: &services,
                labels: &labels,
            },
        )?;
        let options = BuildOptions {
            context: dir.to_path_buf(),
            plan: PlanRequest {
                // The executor sets it from the build's epoch.
                source_date_epoch: None,
                build_args: BTreeMap::new(),
                target: None,
                platform: Some(self.platform.clone()),
            },
            ..self.options.clone()
        };
        Ok(pipeline.execute(&dockerfile, &options)?)
    }

    /// The k3s or k0s services for the flavor's init system.
    fn services(&self) -> Result<Vec<Service>, ComposeError> {
        let Some((distro, _)) = &self.selection.id.k8s else {
            return Ok(Vec::new());
        };
        let init = self.project.flavors[&self.selection.id.flavor].init;
        let roles: [(&str, &str, bool); 2] = match distro {
            K8sDistribution::K3s => [("k3s", "server", true), ("k3s-agent", "agent", true)],
            K8sDistribution::K0s => [
                ("k0scontroller", "controller", false),
                ("k0sworker", "worker", false),
            ],
        };
        roles
            .iter()
            .map(|(name, role, notify)| {
                super::render::service(
                    &self.project.root,
                    init,
                    distro.as_str(),
                    name,
                    role,
                    *notify,
                )
                .map(|content| Service {
                    path: match init {
                        InitSystem::Systemd => format!("/etc/systemd/system/{name}.service"),
                        InitSystem::Openrc => format!("/etc/init.d/{name}"),
                    },
                    content,
                    mode: match init {
                        InitSystem::Systemd => 0o644,
                        InitSystem::Openrc => 0o755,
                    },
                })
            })
            .collect()
    }

    /// The artifact this layer's image is: core is the same for every
    /// standard cell built on it, so it names no k8s.
    fn id(&self) -> ArtifactId {
        let mut id = self.selection.id.clone();
        id.variant = self.variant;
        if self.variant == Variant::Core {
            id.k8s = None;
        }
        id
    }

    /// `io.kairos.*` and OCI labels of this layer's image.
    fn labels(&self) -> BTreeMap<String, String> {
        let id = &self.id();
        let flavor = &self.project.flavors[&id.flavor];
        let mut labels = BTreeMap::from([
            (
                "io.kairos.variant".to_string(),
                variant_name(self.variant).to_string(),
            ),
            (
                "io.kairos.family".into(),
                format!("{:?}", flavor.family).to_lowercase(),
            ),
            ("io.kairos.flavor".into(), id.flavor.clone()),
            ("io.kairos.flavor_release".into(), id.flavor_release.clone()),
            ("io.kairos.model".into(), id.model.clone()),
            ("io.kairos.targetarch".into(), id.arch.to_string()),
            ("io.kairos.version".into(), id.version.clone()),
            ("org.opencontainers.image.title".into(), id.iso_name()),
            (
                "org.opencontainers.image.version".into(),
                id.version.clone(),
            ),
            (
                "org.opencontainers.image.vendor".into(),
                self.project.config.name.clone(),
            ),
        ]);
        if let (Variant::Standard, Some((distro, version))) = (self.variant, &id.k8s) {
            labels.insert("io.kairos.software-version".into(), version.clone());
            labels.insert(
                "io.kairos.software-version-prefix".into(),
                distro.as_str().into(),
            );
        }
        labels
    }
}

/// `kbuild check` on an image of the store, against what the cell should be.
pub fn check_image(
    store: &Store,
    project: &Project,
    selection: &Selection,
    manifest: &oci_spec::image::ImageManifest,
) -> Result<CheckReport, ComposeError> {
    let layers = store.manifest_layers(manifest)?;
    let id = &selection.id;
    let expect = Expectations {
        flavor: project.flavors.get(&id.flavor),
        arch: id.arch,
        variant: Some(id.variant),
        k8s: id.k8s.as_ref().map(|(d, _)| *d),
    };
    Ok(store.with_image_root(&layers, |root, _| check::check(root, &expect))?)
}
