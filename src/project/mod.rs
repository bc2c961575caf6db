//! The project a user keeps in git: `kbuild.yaml`, `flavors/*.yaml`,
//! `packages/*.yaml`, `images/Dockerfile.<flavor>` and `templates/`.
//!
//! Invariant: a loaded [`Project`] is consistent: the default flavor exists,
//! every flavor of the matrix has its flavor file, a base image for each of
//! its releases and a Dockerfile; every Kubernetes version of the matrix and
//! the framework and provider have a valid package pin.

pub mod config;
pub mod flavor;
pub mod naming;
pub mod package;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use config::{Arch, Compression, K8sDistribution, ProjectConfig, Variant};
pub use flavor::Flavor;
pub use naming::ArtifactId;
pub use package::Package;

pub const FRAMEWORK_PACKAGE: &str = "framework";
pub const PROVIDER_PACKAGE: &str = "provider-kairos";
pub const EDGEVPN_PACKAGE: &str = "edgevpn";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {}{message}", yaml::locate(path, location), if key.is_empty() { String::new() } else { format!("at `{key}`: ") })]
    Yaml {
        path: PathBuf,
        key: String,
        location: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}: at `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Selection(String),
}

/// A loaded, cross-checked project.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub config: ProjectConfig,
    pub flavors: BTreeMap<String, Flavor>,
    pub packages: BTreeMap<String, Package>,
}

/// One cell of the build matrix, fully resolved.
#[derive(Debug, Clone)]
pub struct Selection {
    pub id: ArtifactId,
    pub base_image: String,
    pub dockerfile: PathBuf,
}

/// What the user asked for; `None` means the project's default.
#[derive(Debug, Clone, Default)]
pub struct SelectionRequest {
    pub flavor: Option<String>,
    pub release: Option<String>,
    pub variant: Option<Variant>,
    pub arch: Option<Arch>,
    pub k8s: Option<K8sDistribution>,
    pub k8s_version: Option<String>,
}

impl Project {
    /// Loads `<root>/kbuild.yaml` and everything it refers to.
    pub fn load(root: &Path) -> Result<Project, ProjectError> {
        let config_path = root.join("kbuild.yaml");
        let config: ProjectConfig = yaml::load(&config_path)?;
        let invalid = |key: &str, message: String| ProjectError::Invalid {
            path: config_path.clone(),
            key: key.to_string(),
            message,
        };
        config
            .iso
            .squashfs
            .validate()
            .map_err(|message| invalid("iso.squashfs.level", message))?;
        if !config.flavors.contains_key(&config.default_flavor) {
            return Err(invalid(
                "default_flavor",
                format!("\"{}\" is not one of `flavors`", config.default_flavor),
            ));
        }
        let mut artifacts = config.release.artifacts.clone();
        artifacts.sort();
        artifacts.dedup();
        if artifacts.len() != config.release.artifacts.len() {
            return Err(invalid(
                "release.artifacts",
                "lists an artifact twice".into(),
            ));
        }
        for (key, empty) in [
            ("arches", config.arches.is_empty()),
            ("variants", config.variants.is_empty()),
            ("release.artifacts", config.release.artifacts.is_empty()),
        ] {
            if empty {
                return Err(invalid(key, "must list at least one entry".into()));
            }
        }
        let mut flavors = BTreeMap::new();
        for (name, entry) in &config.flavors {
            let path = root.join("flavors").join(format!("{name}.yaml"));
            let flavor: Flavor = yaml::load(&path)?;
            if entry.releases.is_empty() {
                return Err(invalid(
                    &format!("flavors.{name}.releases"),
                    "must list at least one release".into(),
                ));
            }
            for release in &entry.releases {
                if !flavor.base_images.contains_key(release) {
                    return Err(ProjectError::Invalid {
                        path,
                        key: "base_images".into(),
                        message: format!(
                            "no base image for release \"{release}\" (kbuild.yaml lists it)"
                        ),
                    });
                }
            }
            let dockerfile = dockerfile_path(root, name);
            if !dockerfile.is_file() {
                return Err(invalid(
                    &format!("flavors.{name}"),
                    format!("{} does not exist", dockerfile.display()),
                ));
            }
            flavors.insert(name.clone(), flavor);
        }
        let packages = load_packages(&root.join("packages"))?;
        let mut needed = vec![FRAMEWORK_PACKAGE.to_string()];
        if config.variants.contains(&Variant::Standard) {
            needed.push(PROVIDER_PACKAGE.into());
            needed.push(EDGEVPN_PACKAGE.into());
            needed.extend(config.kubernetes.keys().map(|d| d.as_str().to_string()));
        }
        if let Some(missing) = needed.iter().find(|n| !packages.contains_key(*n)) {
            return Err(invalid(
                "variants",
                format!("needs packages/{missing}.yaml, which does not exist"),
            ));
        }
        for (distro, entry) in &config.kubernetes {
            let pinned = &packages[distro.as_str()].version;
            for (i, version) in entry.versions.iter().enumerate() {
                if version != pinned {
                    return Err(invalid(
                        &format!("kubernetes.{distro}.versions[{i}]"),
                        format!("{version} has no pin: packages/{distro}.yaml pins {pinned}"),
                    ));
                }
            }
        }
        Ok(Project {
            root: root.to_path_buf(),
            config,
            flavors,
            packages,
        })
    }

    /// Resolves a request against the matrix, filling in defaults.
    pub fn select(&self, request: &SelectionRequest) -> Result<Selection, ProjectError> {
        let config = &self.config;
        let fail = |msg: String| Err(ProjectError::Selection(msg));
        let flavor = request
            .flavor
            .clone()
            .unwrap_or_else(|| config.default_flavor.clone());
        let Some(entry) = config.flavors.get(&flavor) else {
            let known: Vec<_> = config.flavors.keys().map(String::as_str).collect();
            return fail(format!(
                "unknown flavor \"{flavor}\"; kbuild.yaml has: {}",
                known.join(", ")
            ));
        };
        let release = request
            .release
            .clone()
            .unwrap_or_else(|| entry.releases[0].clone());
        if !entry.releases.contains(&release) {
            return fail(format!(
                "flavor {flavor} has no release \"{release}\"; kbuild.yaml has: {}",
                entry.releases.join(", ")
            ));
        }
        let variant = request.variant.unwrap_or(Variant::Core);
        if !config.variants.contains(&variant) {
            return fail(format!(
                "variant {variant} is not in kbuild.yaml's variants"
            ));
        }
        let host = Arch::parse(crate::platform::Platform::host().arch.as_str());
        let arch = request
            .arch
            .or(host.filter(|a| config.arches.contains(a)))
            .unwrap_or(config.arches[0]);
        if !config.arches.contains(&arch) {
            return fail(format!(
                "architecture {arch} is not in kbuild.yaml's arches"
            ));
        }
        let k8s = match variant {
            Variant::Core if request.k8s.is_some() || request.k8s_version.is_some() => {
                return fail("--k8s and --k8s-version apply to the standard variant only".into())
            }
            Variant::Core => None,
            Variant::Standard => Some(self.select_k8s(request)?),
        };
        let base_image = self.flavors[&flavor].base_images[&release].clone();
        Ok(Selection {
            dockerfile: dockerfile_path(&self.root, &flavor),
            base_image,
            id: ArtifactId {
                project: config.name.clone(),
                flavor,
                flavor_release: release,
                variant,
                arch,
                model: config.model.clone(),
                version: config.version.clone(),
                k8s,
            },
        })
    }

    fn select_k8s(
        &self,
        request: &SelectionRequest,
    ) -> Result<(K8sDistribution, String), ProjectError> {
        let kubernetes = &self.config.kubernetes;
        let distro = match request.k8s {
            Some(d) => d,
            None => *kubernetes.keys().next().ok_or_else(|| {
                ProjectError::Selection("the standard variant needs a Kubernetes distribution, and kbuild.yaml lists none".into())
            })?,
        };
        let Some(entry) = kubernetes.get(&distro) else {
            return Err(ProjectError::Selection(format!(
                "{distro} is not in kbuild.yaml's kubernetes"
            )));
        };
        let version = request
            .k8s_version
            .clone()
            .unwrap_or_else(|| entry.versions[0].clone());
        if !entry.versions.contains(&version) {
            return Err(ProjectError::Selection(format!(
                "{distro} {version} is not in kbuild.yaml; it has: {}",
                entry.versions.join(", ")
            )));
        }
        Ok((distro, version))
    }

    /// The build args the flavor's Dockerfile gets for a selection.
    pub fn build_args(&self, selection: &Selection) -> BTreeMap<String, String> {
        let id = &selection.id;
        let mut args = self.flavors[&id.flavor].build_args.clone();
        args.extend([
            ("BASE_IMAGE".to_string(), selection.base_image.clone()),
            ("FLAVOR".into(), id.flavor.clone()),
            ("FLAVOR_RELEASE".into(), id.flavor_release.clone()),
            ("MODEL".into(), id.model.clone()),
            ("VERSION".into(), id.version.clone()),
        ]);
        args
    }
}

/// Loads and validates every `*.yaml` in `dir`, keyed by file stem.
fn load_packages(dir: &Path) -> Result<BTreeMap<String, Package>, ProjectError> {
    let read_err = |source| ProjectError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            paths.push(path);
        }
    }
    let mut packages = BTreeMap::new();
    for path in paths {
        let package: Package = yaml::load(&path)?;
        package
            .validate()
            .map_err(|(key, message)| ProjectError::Invalid {
                path: path.clone(),
                key,
                message,
            })?;
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // The name becomes directory names and mount targets: one name,
        // the file's, everywhere.
        if package.name != stem {
            return Err(ProjectError::Invalid {
                path: path.clone(),
                key: "name".into(),
                message: format!("must be \"{stem}\", the file's name"),
            });
        }
        packages.insert(stem, package);
    }
    Ok(packages)
}

pub fn dockerfile_path(root: &Path, flavor: &str) -> PathBuf {
    root.join("images").join(format!("Dockerfile.{flavor}"))
}
