//! `kbuild lock`: every floating input of the project's matrix resolved
//! and recorded, without building anything: the base image of each
//! flavor, release and arch, and each package's image or URL per arch.

use serde::Serialize;

use super::lock::Lock;
use super::packages::{image_reference, package_key, Resolver};
use super::ComposeError;
use crate::platform::Platform;
use crate::project::{Project, EDGEVPN_PACKAGE, FRAMEWORK_PACKAGE, PROVIDER_PACKAGE};
use crate::registry::RegistryOptions;
use crate::report::Reporter;
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    /// Entries resolved (new or, with `--update`, again).
    pub resolved: usize,
    /// Entries the lock already had and that were kept.
    pub kept: usize,
    pub written: bool,
}

/// Resolves what the lock lacks (everything, with `update`) and writes it.
pub fn lock_project(
    store: &Store,
    project: &Project,
    update: bool,
    registry: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<LockReport, ComposeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ComposeError::Pipeline(crate::pipeline::PipelineError::Runtime(e)))?;
    let old = Lock::load(&project.root)?;
    let mut lock = match update {
        true => Lock::default(),
        false => old.clone(),
    };
    let mut report = LockReport {
        resolved: 0,
        kept: 0,
        written: false,
    };
    let mut packages = vec![FRAMEWORK_PACKAGE.to_string()];
    if project
        .config
        .variants
        .contains(&crate::project::Variant::Standard)
    {
        packages.push(PROVIDER_PACKAGE.into());
        packages.push(EDGEVPN_PACKAGE.into());
        packages.extend(
            project
                .config
                .kubernetes
                .keys()
                .map(|d| d.as_str().to_string()),
        );
    }
    for arch in &project.config.arches {
        let mut resolver = Resolver {
            store,
            registry,
            platform: Platform::parse(&format!("linux/{arch}"))?,
            runtime: &runtime,
            reporter,
            lock: &mut lock,
            locked: false,
        };
        for (name, entry) in &project.config.flavors {
            let flavor = &project.flavors[name];
            for release in &entry.releases {
                let key = format!("base {name}/{release}/{arch}");
                let reference = &flavor.base_images[release];
                match resolver.lock.image(&key, reference).is_some() {
                    true => report.kept += 1,
                    false => {
                        resolver.image(&key, reference)?;
                        report.resolved += 1;
                    }
                }
            }
        }
        for name in &packages {
            let package = &project.packages[name];
            let Some(source) = package.sources.get(arch.as_str()) else {
                continue;
            };
            let key = package_key(name, arch.as_str());
            match (image_reference(source), &source.url) {
                (Some(image), _) if resolver.lock.image(&key, &image).is_some() => report.kept += 1,
                (Some(image), _) => {
                    resolver.image(&key, &image)?;
                    report.resolved += 1;
                }
                (None, Some(url)) => {
                    let sha256 = source.sha256.as_deref().unwrap_or_default();
                    match resolver.lock.url(&key, url) == Some(sha256) {
                        true => report.kept += 1,
                        false => {
                            resolver.lock.set_url(&key, url, sha256);
                            report.resolved += 1;
                        }
                    }
                }
                (None, None) => {}
            }
        }
    }
    if lock != old || update {
        lock.save(&project.root)?;
        report.written = true;
    }
    Ok(report)
}
