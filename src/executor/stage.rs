//! One stage: its base, then each instruction in order on an
//! [`ImageState`]. Metadata instructions change the config and history
//! only; RUN, COPY/ADD and WORKDIR are filesystem steps (see `step`).

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::image_state::{default_shell, FsWork, ImageState};
use super::keys;
use super::{BuildError, Executor, Location};
use crate::digest::Digest;
use crate::dockerfile::{Instruction, Pos, Word};
use crate::plan::{Origin, StageScope};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::pull::{PlatformChoice, PullRequest};
use crate::store::cache::LayerRecord;
use crate::store::image::{is_index, parse_rfc3339, select_platform, DEFAULT_PATH};
use crate::store::StoreError;

/// A stage being run.
pub struct StageRun<'e, 'a> {
    pub exec: &'e Executor<'a>,
    pub index: usize,
    pub name: String,
    pub state: ImageState,
    pub scope: StageScope<'e>,
    pub platform: Platform,
}

impl<'e, 'a> StageRun<'e, 'a> {
    pub fn new(exec: &'e Executor<'a>, index: usize) -> Result<Self, BuildError> {
        let header = &exec.plan.headers[index];
        let platform = header
            .platform
            .clone()
            .unwrap_or_else(|| exec.plan.platform.clone());
        let state = match &header.base {
            Origin::Scratch => ImageState::scratch(&platform),
            Origin::Stage(base) => exec.result(*base).expect("dependencies are built first"),
            Origin::Image(name) => exec.image_state(name, &platform)?,
        };
        let scope = StageScope::new(&exec.plan.build, state.env());
        Ok(StageRun {
            exec,
            index,
            name: header.name.clone(),
            state,
            scope,
            platform,
        })
    }

    pub fn location(&self, pos: Pos) -> Location {
        Location {
            file: self.exec.file.source.name().to_string(),
            pos,
        }
    }

    pub fn expand(&self, word: &Word) -> Result<String, BuildError> {
        Ok(self.scope.expand(word)?)
    }

    pub fn run(mut self) -> Result<ImageState, BuildError> {
        let stage = &self.exec.file.stages[self.index];
        let total = stage.instructions.len();
        for (n, ins) in stage.instructions.iter().enumerate() {
            if self.exec.cancel.is_cancelled() {
                return Err(BuildError::Interrupted);
            }
            let id = format!("{} {}/{}", self.name, n + 1, total);
            self.instruction(&id, ins)?;
        }
        Ok(self.state)
    }

    fn instruction(&mut self, id: &str, ins: &Instruction) -> Result<(), BuildError> {
        match self.state.apply(&mut self.scope, ins, self.exec.epoch)? {
            FsWork::None => Ok(()),
            FsWork::Workdir(path) => self.workdir_step(id, ins, &path),
            FsWork::Run(run) => self.run_step(id, ins, run),
            FsWork::Copy(copy) => self.copy_step(id, ins, copy),
        }
    }
}

impl Executor<'_> {
    /// The state of an external image, pulled if the store lacks it.
    pub(super) fn image_state(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<ImageState, BuildError> {
        let _one_pull = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        let descriptor = match self.store.descriptor(name) {
            Ok(d) => d,
            Err(StoreError::UnknownImage(_)) if self.store.adopt(name, platform)?.is_some() => {
                self.store.descriptor(name)?
            }
            Err(StoreError::UnknownImage(_)) => {
                let reference = ImageRef::parse(name).map_err(|source| BuildError::Reference {
                    name: name.to_string(),
                    source,
                })?;
                let request = PullRequest {
                    reference,
                    platform: PlatformChoice::One(platform.clone()),
                    tag: None,
                };
                let pulled = self.runtime.block_on(crate::registry::pull::pull(
                    self.store,
                    &request,
                    &self.options.registry,
                    self.reporter,
                ))?;
                self.store.descriptor(&pulled.name)?
            }
            Err(e) => return Err(e.into()),
        };
        let descriptor = if is_index(descriptor.media_type()) {
            let digest: Digest = Digest::try_from(descriptor.digest()).map_err(StoreError::from)?;
            let index: ImageIndex = self.store.read_json(&digest)?;
            select_platform(&index, platform)
                .cloned()
                .ok_or_else(|| BuildError::NoPlatform {
                    name: name.to_string(),
                    platform: platform.to_string(),
                })?
        } else {
            descriptor
        };
        let manifest_digest: Digest =
            Digest::try_from(descriptor.digest()).map_err(StoreError::from)?;
        let manifest: ImageManifest = self.store.read_json(&manifest_digest)?;
        let config_digest: Digest =
            Digest::try_from(manifest.config().digest()).map_err(StoreError::from)?;
        let configuration: ImageConfiguration = self.store.read_json(&config_digest)?;
        let diff_ids = configuration.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(StoreError::Invalid(format!(
                "{name}: {} layers but {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ))
            .into());
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| {
                Ok(LayerRecord {
                    digest: Digest::try_from(layer.digest())?,
                    diff_id: diff_id.parse()?,
                    size: layer.size(),
                    media_type: layer.media_type().to_string(),
                })
            })
            .collect::<Result<Vec<_>, crate::digest::DigestError>>()
            .map_err(StoreError::from)?;
        let mut config = configuration.config().clone().unwrap_or_default();
        if config.env().is_none() {
            config.set_env(Some(vec![format!("PATH={DEFAULT_PATH}")]));
        }
        Ok(ImageState {
            layers,
            history: configuration.history().clone().unwrap_or_default(),
            config,
            shell: default_shell(),
            // By content, not by manifest digest: the same layers and
            // runtime config imported or pulled anywhere give the same keys.
            key: keys::image(diff_ids, configuration.config().as_ref()),
            architecture: configuration.architecture().to_string(),
            created: configuration
                .created()
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(0),
        })
    }
}
