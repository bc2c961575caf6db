//! What an image has installed, and its SBOM: the dpkg status or apk
//! database read from the image root, or the rpm database listed by the
//! image's own `rpm` in a generated one-step build (sandboxed and cached
//! by the step cache like any RUN, so an unchanged image is listed once).

use std::path::Path;

use super::sbom::{self, Composed, Database, Installed, Manager, SbomError, Subject};
use crate::executor::BuildOptions;
use crate::pipeline::{Pipeline, PipelineError};
use crate::plan::PlanRequest;
use crate::platform::Platform;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Sbom(#[from] SbomError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listing the rpm database with the image's rpm: {0}")]
    RpmQuery(#[source] Box<PipelineError>),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InventoryError {
    /// Whether the request is at fault (exit 2): the store has no such
    /// image.
    pub fn is_input(&self) -> bool {
        matches!(self, InventoryError::Store(StoreError::UnknownImage(_)))
    }
}

/// An image's installed packages.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub manager: Manager,
    pub packages: Vec<Installed>,
    /// Its os-release `ID` (the PURL namespace) and `VERSION_ID`.
    pub vendor: Option<String>,
    pub version: Option<String>,
}

/// The image `image_sbom` describes, and what it says besides the
/// image's own packages.
pub struct SbomInputs<'a> {
    /// A stored image (as `kbuild images` lists it).
    pub image: &'a str,
    pub composed: &'a [Composed],
    /// The PURL `distro` qualifier, e.g. `debian-bookworm`; by default
    /// the os-release `ID-VERSION_ID` (`debian-12`).
    pub distro: Option<&'a str>,
    /// The namespace when the image has no os-release `ID`.
    pub fallback_vendor: &'a str,
}

/// The installed packages of the stored image `image`.
pub fn inventory(
    pipeline: &Pipeline,
    options: &BuildOptions,
    platform: Option<Platform>,
    image: &str,
) -> Result<Inventory, InventoryError> {
    let store = pipeline.store();
    let (_, manifest) = store.resolve(image)?;
    let layers = store.manifest_layers(&manifest)?;
    let (database, (vendor, version)) = store.with_image_root(&layers, |root, _| {
        sbom::database(root).map(|database| (database, sbom::os_release(root)))
    })??;
    let (manager, packages) = match database {
        Database::Read(manager, packages) => (manager, packages),
        Database::Rpm => (
            Manager::Rpm,
            rpm_packages(pipeline, options, platform, image)?,
        ),
    };
    Ok(Inventory {
        manager,
        packages,
        vendor,
        version,
    })
}

/// Runs [`sbom::rpm_query_spec`] on `image` and reads its list.
fn rpm_packages(
    pipeline: &Pipeline,
    options: &BuildOptions,
    platform: Option<Platform>,
    image: &str,
) -> Result<Vec<Installed>, InventoryError> {
    let store = pipeline.store();
    let context = store.staging_dir()?;
    let result = (|| {
        let dockerfile = context.join("Dockerfile");
        std::fs::write(&dockerfile, sbom::rpm_query_spec(image)).map_err(|source| {
            InventoryError::Io {
                path: dockerfile.clone(),
                source,
            }
        })?;
        let options = BuildOptions {
            context: context.clone(),
            plan: PlanRequest {
                // The executor sets it from the build's epoch.
                source_date_epoch: None,
                build_args: Default::default(),
                target: None,
                platform,
            },
            ..options.clone()
        };
        let built = pipeline
            .execute(&dockerfile, &options)
            .map_err(|e| InventoryError::RpmQuery(Box::new(e)))?;
        let layers = store.manifest_layers(&built.manifest)?;
        let list =
            store.with_image_root(&layers, |root, _| root.read(Path::new(sbom::RPM_LIST)))?;
        let list = list.map_err(|source| InventoryError::Io {
            path: Path::new("/").join(sbom::RPM_LIST),
            source,
        })?;
        Ok(sbom::rpm_query_output(&String::from_utf8_lossy(&list)))
    })();
    crate::store::remove_tree(&context)?;
    result
}

/// The SPDX 2.3 document of the stored image `inputs.image`, as
/// `kbuild sbom` and each release cell write it. The store gives its
/// manifest digest, its epoch (the document's time) and its platform
/// (where an rpm query runs).
pub fn image_sbom(
    pipeline: &Pipeline,
    options: &BuildOptions,
    inputs: &SbomInputs,
) -> Result<serde_json::Value, InventoryError> {
    let store = pipeline.store();
    let (descriptor, manifest) = store.resolve(inputs.image)?;
    let config = store.image_config(&manifest)?;
    let platform = Platform::parse(&format!("{}/{}", config.os(), config.architecture())).ok();
    let found = inventory(pipeline, options, platform, inputs.image)?;
    let vendor = found
        .vendor
        .clone()
        .unwrap_or_else(|| inputs.fallback_vendor.to_string());
    let distro = inputs.distro.map(str::to_string).unwrap_or_else(|| {
        [found.vendor.as_deref(), found.version.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("-")
    });
    let subject = Subject {
        image: inputs.image,
        digest: descriptor.digest().as_ref(),
        distro: &distro,
        vendor: &vendor,
        epoch: crate::store::image::epoch(&config),
        creator: &format!("kbuild-{}", env!("CARGO_PKG_VERSION")),
    };
    Ok(sbom::document(
        &subject,
        found.manager,
        &found.packages,
        inputs.composed,
    ))
}
