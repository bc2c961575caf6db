//! Composed packages made ready for a compose step: an image source is
//! pulled into the store (or found there) and bind-mounted into the step;
//! a URL source is downloaded into the store as a blob named by its
//! pinned sha256 (verified; never downloaded again while it is there) and
//! unpacked into the step's files.
//!
//! Invariants:
//! * A URL artifact is used only if its bytes hash to the pinned sha256;
//!   a mismatch leaves nothing in the store.
//! * With `--locked`, nothing is resolved that `kbuild.lock` does not name,
//!   and what is resolved must match it.
//! * Archive members are unpacked by the safe extractor, inside the
//!   package's own directory.

use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use super::lock::Lock;
use super::{ComposeError, PackagePlan};
use crate::digest::Digest;
use crate::layer::{self, ExtractLimits, ExtractMode};
use crate::platform::Platform;
use crate::project::package::ArchiveFormat;
use crate::reference::ImageRef;
use crate::registry::pull::{self, PlatformChoice, PullRequest};
use crate::registry::RegistryOptions;
use crate::report::Reporter;
use crate::store::Store;

/// Where a package's files are for the compose step.
#[derive(Debug, Clone)]
pub enum Staged {
    /// A store image, bind-mounted from its root.
    Image { name: String, digest: String },
    /// Unpacked into this directory of the step's files (relative).
    Files { dir: String },
}

#[derive(Debug, Clone)]
pub struct StagedPackage {
    pub plan: PackagePlan,
    pub staged: Staged,
}

/// What staging needs from the run.
pub struct Resolver<'a> {
    pub store: &'a Store,
    pub registry: &'a RegistryOptions,
    pub platform: Platform,
    pub runtime: &'a tokio::runtime::Runtime,
    pub reporter: &'a dyn Reporter,
    pub lock: &'a mut Lock,
    pub locked: bool,
}

impl Resolver<'_> {
    /// Resolves `name` (a store tag or a registry reference) to a store
    /// image, pulling it if the store lacks it; checks it against (or
    /// records it in) the lock under `key`. Returns the store name and
    /// the manifest digest.
    pub fn image(&mut self, key: &str, name: &str) -> Result<(String, String), ComposeError> {
        let pinned = self.lock.image(key, name).map(str::to_string);
        if self.locked && pinned.is_none() {
            return Err(ComposeError::NotLocked {
                what: format!("{key} ({name})"),
            });
        }
        let found = match self.store.descriptor(name) {
            _ if name.starts_with("oci:") => self.import_layout(name)?,
            // The locked digest already in the store (under the name a
            // pull by digest gave it): no registry needed.
            _ if pinned
                .as_deref()
                .is_some_and(|d| self.stored_by_digest(name, d).is_some()) =>
            {
                let digest = pinned.clone().expect("checked");
                let stored = self.stored_by_digest(name, &digest).expect("checked");
                (stored, digest)
            }
            // One reference may serve several arches: a store image of
            // another arch is not this one, pull the right one.
            Ok(_) if !self.is_for_platform(name)? => self.pull(key, name, pinned.as_deref())?,
            Ok(descriptor) => (name.to_string(), descriptor.digest().to_string()),
            Err(crate::store::StoreError::UnknownImage(_))
                if self.store.adopt(name, &self.platform)?.is_some() =>
            {
                let descriptor = self.store.descriptor(name)?;
                (name.to_string(), descriptor.digest().to_string())
            }
            Err(crate::store::StoreError::UnknownImage(_)) => {
                self.pull(key, name, pinned.as_deref())?
            }
            Err(e) => return Err(e.into()),
        };
        match pinned {
            // A registry image is pulled by its locked digest, so only a
            // store image can differ; under --locked that is an error,
            // otherwise the lock follows what the store holds now.
            Some(digest) if digest != found.1 && self.locked => Err(ComposeError::LockMismatch {
                what: format!("{key} ({name})"),
                locked: digest,
                found: found.1,
            }),
            _ => {
                self.lock.set_image(key, name, &found.1);
                Ok(found)
            }
        }
    }

    /// A store tag of `name`'s repository that points at `digest`.
    fn stored_by_digest(&self, name: &str, digest: &str) -> Option<String> {
        let repository = ImageRef::parse(name).ok()?;
        self.store
            .tags()
            .ok()?
            .into_iter()
            .find_map(|(tag, descriptor)| {
                let same_repo = ImageRef::parse(&tag).is_ok_and(|r| {
                    r.registry == repository.registry && r.repository == repository.repository
                });
                (same_repo && descriptor.digest().to_string() == digest).then_some(tag)
            })
    }

    /// Whether the store image `name` is for this run's architecture.
    fn is_for_platform(&self, name: &str) -> Result<bool, ComposeError> {
        let (_, manifest) = self.store.resolve(name)?;
        let config: oci_spec::image::ImageConfiguration = self
            .store
            .read_json(&Digest::try_from(manifest.config().digest())?)?;
        Ok(config.architecture().to_string() == self.platform.arch)
    }

    /// `oci:DIR[:TAG]`: the image of an OCI layout, copied into the store
    /// under a name derived from the layout's path.
    fn import_layout(&self, name: &str) -> Result<(String, String), ComposeError> {
        let Ok(crate::export::Destination::OciDir { path, tag }) = name.parse() else {
            return Err(ComposeError::BadLayout {
                name: name.to_string(),
            });
        };
        let id = Digest::of(name.as_bytes());
        let store_name = format!("kbuild.local/oci-layout:{}", &id.hex()[..16]);
        let descriptor = crate::store::import::import_layout(
            self.store,
            &path,
            tag.as_deref(),
            &self.platform,
            &store_name,
        )?;
        Ok((store_name, descriptor.digest().to_string()))
    }

    /// Pulls `name`, by the locked digest when there is one.
    fn pull(
        &self,
        key: &str,
        name: &str,
        pinned: Option<&str>,
    ) -> Result<(String, String), ComposeError> {
        let reference = ImageRef::parse(name).map_err(|source| ComposeError::Reference {
            name: name.to_string(),
            source,
        })?;
        let mut reference = reference;
        if let Some(digest) = pinned {
            reference.digest = Some(digest.to_string());
        }
        let request = PullRequest {
            reference,
            platform: PlatformChoice::One(self.platform.clone()),
            tag: None,
        };
        let pulled = self
            .runtime
            .block_on(pull::pull(
                self.store,
                &request,
                self.registry,
                self.reporter,
            ))
            .map_err(|source| ComposeError::Pull {
                base: key.starts_with("base"),
                name: name.to_string(),
                source: Box::new(source),
            })?;
        let digest = self.store.descriptor(&pulled.name)?.digest().to_string();
        Ok((pulled.name, digest))
    }

    /// Makes `plan` ready: its image resolved, or its download verified
    /// and unpacked under `files/pkg-<name>`.
    pub fn stage(
        &mut self,
        plan: &PackagePlan,
        files: &Path,
    ) -> Result<StagedPackage, ComposeError> {
        let source = &plan.source;
        let staged = match (&source.image, &source.url) {
            (Some(_), _) => {
                let name = image_reference(source).expect("an image source");
                let key = package_key(&plan.name, &self.platform.arch);
                let (name, digest) = self.image(&key, &name)?;
                Staged::Image { name, digest }
            }
            (None, Some(url)) => {
                let sha256 = source.sha256.as_deref().unwrap_or_default();
                let dir = format!("pkg-{}", plan.name);
                self.download(plan, url, sha256)?;
                let blob: Digest = format!("sha256:{sha256}").parse()?;
                unpack(self.store, plan, &blob, &files.join(&dir))?;
                Staged::Files { dir }
            }
            (None, None) => unreachable!("packages are validated to have a source"),
        };
        Ok(StagedPackage {
            plan: plan.clone(),
            staged,
        })
    }

    /// Puts the artifact in the store as the blob its sha256 names,
    /// unless it is there already.
    fn download(
        &mut self,
        plan: &PackagePlan,
        url: &str,
        sha256: &str,
    ) -> Result<(), ComposeError> {
        let key = package_key(&plan.name, &self.platform.arch);
        match self.lock.url(&key, url) {
            // The package file's pin is the authority; the lock records
            // it, and under --locked must already agree with it.
            Some(locked) if locked != sha256 && self.locked => {
                return Err(ComposeError::LockMismatch {
                    what: format!("{key} ({url})"),
                    locked: locked.to_string(),
                    found: sha256.to_string(),
                })
            }
            None if self.locked => {
                return Err(ComposeError::NotLocked {
                    what: format!("{key} ({url})"),
                })
            }
            _ => {}
        }
        let expected: Digest = format!("sha256:{sha256}").parse()?;
        if !self.store.has_blob(&expected) {
            let mut blob = self.store.blob_writer()?;
            self.runtime.block_on(fetch_into(url, &mut blob))?;
            blob.commit(Some(&expected)).map_err(|e| match e {
                crate::store::StoreError::DigestMismatch { expected, actual } => {
                    ComposeError::Checksum {
                        package: plan.name.clone(),
                        url: url.to_string(),
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    }
                }
                e => e.into(),
            })?;
        }
        self.lock.set_url(&key, url, sha256);
        Ok(())
    }
}

/// The lock key of a package on an arch (`package k3s/amd64`).
pub fn package_key(name: &str, arch: &str) -> String {
    format!("package {name}/{arch}")
}

/// The reference an image source is resolved by: pinned by its `digest`
/// when the package file gives one.
pub fn image_reference(source: &crate::project::package::ArtifactSource) -> Option<String> {
    let image = source.image.as_ref()?;
    Some(match &source.digest {
        Some(digest) => format!("{}@{digest}", image.split('@').next().unwrap_or(image)),
        None => image.clone(),
    })
}

/// Downloads are streamed (never held in memory) and bounded: a server
/// that stalls or never stops sending ends the build with an error.
const MAX_DOWNLOAD: u64 = 4 << 30;
const STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// Streams `url` into `blob`.
async fn fetch_into(url: &str, blob: &mut impl Write) -> Result<(), ComposeError> {
    let network = |source| ComposeError::Download {
        url: url.to_string(),
        source,
    };
    // rustls has no default provider here (see registry::transport).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(STALL)
        .build()
        .map_err(network)?;
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(network)?;
    let mut received: u64 = 0;
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        received = received.saturating_add(chunk.len() as u64);
        if received > MAX_DOWNLOAD {
            return Err(ComposeError::TooLarge {
                url: url.to_string(),
                limit: MAX_DOWNLOAD,
            });
        }
        blob.write_all(&chunk)
            .map_err(|source| crate::store::StoreError::Io {
                path: PathBuf::from(url),
                source,
            })?;
    }
    Ok(())
}

/// Lays the verified blob out in `dir`: a raw artifact as the file its
/// first mapping names, an archive through the safe extractor.
fn unpack(
    store: &Store,
    plan: &PackagePlan,
    blob: &Digest,
    dir: &Path,
) -> Result<(), ComposeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| crate::store::StoreError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    match plan.source.format.unwrap_or(ArchiveFormat::Raw) {
        ArchiveFormat::Raw => {
            let name = plan
                .files
                .first()
                .map(|f| f.from.trim_start_matches('/').to_string())
                .filter(|n| crate::rootfs::is_plain_name(n))
                .ok_or_else(|| ComposeError::RawFileName {
                    package: plan.name.clone(),
                })?;
            let target = dir.join(name);
            fs::copy(store.blob_path(blob), &target).map_err(io(&target))?;
        }
        _ => {
            let file = store.open_blob(blob)?;
            let reader = layer::decompressing_reader(BufReader::new(file))
                .map_err(io(&store.blob_path(blob)))?;
            let stats =
                layer::extract_layer(reader, dir, ExtractMode::Flatten, ExtractLimits::default())
                    .map_err(|source| crate::store::StoreError::Extract {
                    what: format!("package {}", plan.name),
                    source,
                })?;
            // A stand-in copied into a step's upper dir would be a deletion.
            if let Some(path) = stats.placeholders.keys().next() {
                return Err(ComposeError::DeviceNode {
                    package: plan.name.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    Ok(())
}
