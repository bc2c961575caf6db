//! One stage: its base, then each instruction in order on an
//! [`ImageState`]. Metadata instructions change the config and history
//! only; RUN, COPY/ADD and WORKDIR are filesystem steps (see `step`).

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::image::{Config, History, ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::{json, Value};

use super::{BuildError, Executor};
use crate::digest::Digest;
use crate::dockerfile::{Command, Instruction, InstructionKind, Pos, Word};
use crate::plan::{Origin, StageScope};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::pull::{PlatformChoice, PullRequest};
use crate::store::cache::LayerRecord;
use crate::store::image::{history_entry, is_index, select_platform, DEFAULT_PATH};
use crate::store::{canonical_json, StoreError};

/// The image a stage is building, after some of its instructions.
#[derive(Debug, Clone)]
pub struct ImageState {
    pub layers: Vec<LayerRecord>,
    pub history: Vec<History>,
    pub config: Config,
    /// SHELL (Docker keeps it outside the OCI config).
    pub shell: Vec<String>,
    pub key: Digest,
    pub architecture: String,
}

impl ImageState {
    fn scratch(platform: &Platform) -> ImageState {
        ImageState {
            layers: Vec::new(),
            history: Vec::new(),
            config: Config::default(),
            shell: default_shell(),
            key: Digest::of(format!("scratch {platform}").as_bytes()),
            architecture: platform.arch.clone(),
        }
    }

    /// Snapshot names of the layers, top first, each once.
    pub fn snapshots(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for layer in self.layers.iter().rev() {
            let name = layer.diff_id.hex().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    pub fn env(&self) -> BTreeMap<String, String> {
        self.config
            .env()
            .iter()
            .flatten()
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (pair.clone(), String::new()),
            })
            .collect()
    }

    /// Sets one variable, keeping the order of the others.
    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.config.env().clone().unwrap_or_default();
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|p| p.split_once('=').map_or(p.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
        self.config.set_env(Some(env));
    }

    pub fn workdir(&self) -> String {
        self.config
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    pub fn user(&self) -> String {
        self.config
            .user()
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "0".to_string())
    }

    /// Adds the result of a filesystem step.
    pub fn add_step(&mut self, key: Digest, layer: Option<LayerRecord>, created: &str, text: &str) {
        self.history
            .push(history_entry(created, text, layer.is_none()));
        self.layers.extend(layer);
        self.key = key;
    }

    fn add_metadata(&mut self, key: Digest, created: &str, text: &str) {
        self.history.push(history_entry(created, text, true));
        self.key = key;
    }
}

fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// The key of a step: its parent's key and what the step reads.
pub fn chain(parent: &Digest, step: &Value) -> Digest {
    Digest::of(&canonical_json(
        &json!({ "parent": parent.to_string(), "step": step }),
    ))
}

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

    pub fn location(&self, pos: Pos) -> String {
        format!(
            "{}:{}:{}",
            self.exec.file.source.name(),
            pos.line,
            pos.column
        )
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
        let created = self.exec.created.clone();
        let text = ins.text.as_str();
        let meta = |run: &mut Self, step: Value| {
            let key = chain(&run.state.key, &step);
            run.state.add_metadata(key, &created, text);
        };
        match &ins.kind {
            InstructionKind::From(_) => {}
            InstructionKind::Arg(decls) => {
                for decl in decls {
                    self.scope.declare_arg(decl)?;
                }
                let values: BTreeMap<&str, &str> = self.scope.args().collect();
                // ARG leaves no history (as BuildKit); its values reach RUN keys.
                self.state.key = chain(&self.state.key, &json!({ "arg": text, "values": values }));
            }
            InstructionKind::Env(pairs) => {
                self.scope.set_env(pairs)?;
                for pair in pairs {
                    let value = self.scope.lookup(&pair.key).unwrap_or_default();
                    self.state.set_env(&pair.key, &value);
                }
                let env = self.state.config.env().clone();
                meta(self, json!({ "env": env }));
            }
            InstructionKind::Label(pairs) => {
                let mut labels = self.state.config.labels().clone().unwrap_or_default();
                for pair in pairs {
                    labels.insert(
                        self.expand(&Word {
                            raw: pair.key.clone(),
                            pos: pair.value.pos,
                        })?,
                        self.expand(&pair.value)?,
                    );
                }
                let sorted: BTreeMap<_, _> = labels.iter().collect();
                let step = json!({ "labels": sorted });
                self.state.config.set_labels(Some(labels));
                meta(self, step);
            }
            InstructionKind::Workdir(word) => {
                let dir = self.expand(word)?;
                let path = Path::new(&self.state.workdir()).join(&dir);
                let path = format!(
                    "/{}",
                    crate::sandbox::rootfs::clean(&path.to_string_lossy()).display()
                );
                self.state.config.set_working_dir(Some(path.clone()));
                self.workdir_step(id, ins, &path)?;
            }
            InstructionKind::User(word) => {
                let user = self.expand(word)?;
                self.state.config.set_user(Some(user.clone()));
                meta(self, json!({ "user": user }));
            }
            InstructionKind::Shell(shell) => {
                self.state.shell = shell.clone();
                meta(self, json!({ "shell": shell }));
            }
            InstructionKind::Entrypoint(command) => {
                let argv = self.argv(command);
                self.state.config.set_entrypoint(Some(argv.clone()));
                meta(self, json!({ "entrypoint": argv }));
            }
            InstructionKind::Cmd(command) => {
                let argv = self.argv(command);
                self.state.config.set_cmd(Some(argv.clone()));
                meta(self, json!({ "cmd": argv }));
            }
            InstructionKind::Expose(ports) => {
                let mut all = self
                    .state
                    .config
                    .exposed_ports()
                    .clone()
                    .unwrap_or_default();
                for port in ports {
                    let port = self.expand(port)?;
                    let port = if port.contains('/') {
                        port
                    } else {
                        format!("{port}/tcp")
                    };
                    if !all.contains(&port) {
                        all.push(port);
                    }
                }
                let step = json!({ "expose": all });
                self.state.config.set_exposed_ports(Some(all));
                meta(self, step);
            }
            InstructionKind::Volume(volumes) => {
                let mut all = self.state.config.volumes().clone().unwrap_or_default();
                for volume in volumes {
                    let volume = self.expand(volume)?;
                    if !all.contains(&volume) {
                        all.push(volume);
                    }
                }
                let step = json!({ "volumes": all });
                self.state.config.set_volumes(Some(all));
                meta(self, step);
            }
            InstructionKind::StopSignal(word) => {
                let signal = self.expand(word)?;
                self.state.config.set_stop_signal(Some(signal.clone()));
                meta(self, json!({ "stopsignal": signal }));
            }
            // Not representable in an OCI config: kept in history only.
            InstructionKind::Healthcheck(_)
            | InstructionKind::Onbuild(_)
            | InstructionKind::Maintainer(_) => meta(self, json!({ "text": text })),
            InstructionKind::Run(run) => self.run_step(id, ins, run)?,
            InstructionKind::Copy(copy) => self.copy_step(id, ins, copy)?,
        }
        Ok(())
    }

    /// ENTRYPOINT/CMD: the exec form as is, the shell form through SHELL.
    fn argv(&self, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(argv) => argv.clone(),
            Command::Shell(text) => {
                let mut argv = self.state.shell.clone();
                argv.push(text.clone());
                argv
            }
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
            Err(StoreError::UnknownImage(_)) => {
                let reference = ImageRef::parse(name)
                    .map_err(|e| BuildError::Context(format!("{name}: {e}")))?;
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
            let digest: Digest = descriptor
                .digest()
                .to_string()
                .parse()
                .map_err(StoreError::from)?;
            let index: ImageIndex = self.store.read_json(&digest)?;
            select_platform(&index, platform)
                .cloned()
                .ok_or_else(|| BuildError::Context(format!("{name} has no image for {platform}")))?
        } else {
            descriptor
        };
        let manifest_digest: Digest = descriptor
            .digest()
            .to_string()
            .parse()
            .map_err(StoreError::from)?;
        let manifest: ImageManifest = self.store.read_json(&manifest_digest)?;
        let config_digest: Digest = manifest
            .config()
            .digest()
            .to_string()
            .parse()
            .map_err(StoreError::from)?;
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
                    digest: layer.digest().to_string().parse()?,
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
            key: chain(
                &Digest::of(b"image"),
                &json!({ "diff_ids": diff_ids, "config": configuration.config() }),
            ),
            architecture: configuration.architecture().to_string(),
        })
    }
}
