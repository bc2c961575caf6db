//! The image a stage is building, and how each instruction changes it.
//!
//! [`ImageState::apply`] is the whole of the metadata semantics (ENV, ARG,
//! LABEL, USER, WORKDIR's path, SHELL, ENTRYPOINT, CMD, EXPOSE, VOLUME,
//! STOPSIGNAL): it touches no filesystem, so it is tested without root.
//! Filesystem instructions come back as [`FsWork`] for the stage to run.
//!
//! Invariants:
//! * Every instruction moves the key forward (ARG included, since its
//!   values reach RUN), so two states with equal keys have equal configs.
//! * ARG leaves no history entry, as in BuildKit; every other metadata
//!   instruction leaves an `empty_layer` entry.

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::image::{Config, History};
use serde_json::{json, Value};

use super::keys::{self, chain};
use super::BuildError;
use crate::digest::Digest;
use crate::dockerfile::{Command, Copy, Instruction, InstructionKind, Run, Word};
use crate::plan::StageScope;
use crate::platform::Platform;
use crate::rootfs::clean;
use crate::store::cache::LayerRecord;
use crate::store::image::{history_entry, rfc3339};

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
    /// The newest time in the history so far (seconds since the epoch):
    /// what metadata instructions and the image are dated with when there
    /// is no `SOURCE_DATE_EPOCH`, so they follow the steps, not the clock.
    pub created: i64,
}

impl ImageState {
    pub fn scratch(platform: &Platform) -> ImageState {
        ImageState {
            layers: Vec::new(),
            history: Vec::new(),
            config: Config::default(),
            shell: default_shell(),
            key: keys::scratch(platform),
            architecture: platform.arch.clone(),
            created: 0,
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
    pub fn add_step(&mut self, key: Digest, layer: Option<LayerRecord>, created: i64, text: &str) {
        self.history
            .push(history_entry(&rfc3339(created), text, layer.is_none()));
        self.created = self.created.max(created);
        self.layers.extend(layer);
        self.key = key;
    }
}

pub(super) fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// What an instruction leaves for the filesystem once its metadata is set.
#[derive(Debug)]
pub enum FsWork<'i> {
    None,
    /// Create this absolute directory (owned by the current USER).
    Workdir(String),
    Run(&'i Run),
    Copy(&'i Copy),
}

impl ImageState {
    /// Applies `ins` to the config, history and key; returns the
    /// filesystem work it still needs.
    pub fn apply<'i>(
        &mut self,
        scope: &mut StageScope<'_>,
        ins: &'i Instruction,
        epoch: Option<i64>,
    ) -> Result<FsWork<'i>, BuildError> {
        let text = ins.text.as_str();
        let step = match &ins.kind {
            InstructionKind::From(_) => return Ok(FsWork::None),
            InstructionKind::Run(run) => return Ok(FsWork::Run(run)),
            InstructionKind::Copy(copy) => return Ok(FsWork::Copy(copy)),
            InstructionKind::Workdir(word) => {
                let dir = scope.expand(word)?;
                let path = Path::new(&self.workdir()).join(&dir);
                let path = format!("/{}", clean(&path.to_string_lossy()).display());
                self.config.set_working_dir(Some(path.clone()));
                return Ok(FsWork::Workdir(path));
            }
            InstructionKind::Arg(decls) => {
                for decl in decls {
                    scope.declare_arg(decl)?;
                }
                let values: BTreeMap<&str, &str> = scope.args().collect();
                self.key = chain(&self.key, &json!({ "arg": text, "values": values }));
                return Ok(FsWork::None);
            }
            InstructionKind::Env(pairs) => {
                scope.set_env(pairs)?;
                for pair in pairs {
                    let value = scope.lookup(&pair.key).unwrap_or_default();
                    self.set_env(&pair.key, &value);
                }
                json!({ "env": self.config.env() })
            }
            InstructionKind::Label(pairs) => {
                let mut labels = self.config.labels().clone().unwrap_or_default();
                for pair in pairs {
                    let key = scope.expand(&Word {
                        raw: pair.key.clone(),
                        pos: pair.value.pos,
                    })?;
                    labels.insert(key, scope.expand(&pair.value)?);
                }
                let sorted: BTreeMap<_, _> = labels.iter().collect();
                let step = json!({ "labels": sorted });
                self.config.set_labels(Some(labels));
                step
            }
            InstructionKind::User(word) => {
                let user = scope.expand(word)?;
                self.config.set_user(Some(user.clone()));
                json!({ "user": user })
            }
            InstructionKind::Shell(shell) => {
                self.shell = shell.clone();
                json!({ "shell": shell })
            }
            InstructionKind::Entrypoint(command) => {
                let argv = self.argv(command);
                self.config.set_entrypoint(Some(argv.clone()));
                json!({ "entrypoint": argv })
            }
            InstructionKind::Cmd(command) => {
                let argv = self.argv(command);
                self.config.set_cmd(Some(argv.clone()));
                json!({ "cmd": argv })
            }
            InstructionKind::Expose(ports) => self.expose(scope, ports)?,
            InstructionKind::Volume(volumes) => self.volumes(scope, volumes)?,
            InstructionKind::StopSignal(word) => {
                let signal = scope.expand(word)?;
                self.config.set_stop_signal(Some(signal.clone()));
                json!({ "stopsignal": signal })
            }
            // Not representable in an OCI config: kept in history only.
            InstructionKind::Healthcheck(_)
            | InstructionKind::Onbuild(_)
            | InstructionKind::Maintainer(_) => json!({ "text": text }),
        };
        self.add_metadata(&step, epoch.unwrap_or(self.created), text);
        Ok(FsWork::None)
    }

    /// EXPOSE: `port` means `port/tcp`; each port once.
    fn expose(&mut self, scope: &StageScope<'_>, ports: &[Word]) -> Result<Value, BuildError> {
        let mut all = self.config.exposed_ports().clone().unwrap_or_default();
        for port in ports {
            let port = scope.expand(port)?;
            let port = match port.contains('/') {
                true => port,
                false => format!("{port}/tcp"),
            };
            if !all.contains(&port) {
                all.push(port);
            }
        }
        let step = json!({ "expose": all });
        self.config.set_exposed_ports(Some(all));
        Ok(step)
    }

    fn volumes(&mut self, scope: &StageScope<'_>, volumes: &[Word]) -> Result<Value, BuildError> {
        let mut all = self.config.volumes().clone().unwrap_or_default();
        for volume in volumes {
            let volume = scope.expand(volume)?;
            if !all.contains(&volume) {
                all.push(volume);
            }
        }
        let step = json!({ "volumes": all });
        self.config.set_volumes(Some(all));
        Ok(step)
    }

    /// ENTRYPOINT/CMD: the exec form as is, the shell form through SHELL.
    fn argv(&self, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(argv) => argv.clone(),
            Command::Shell(text) => {
                let mut argv = self.shell.clone();
                argv.push(text.clone());
                argv
            }
        }
    }

    fn add_metadata(&mut self, step: &Value, created: i64, text: &str) {
        self.history
            .push(history_entry(&rfc3339(created), text, true));
        self.key = chain(&self.key, step);
    }
}

#[cfg(test)]
mod tests {
    //! Stage semantics without root: every metadata instruction into the
    //! image config, and the keys of a whole stage pinned (golden values
    //! recorded with kbuild before the executor refactor; a change here
    //! invalidates every user's step cache).

    use super::*;
    use crate::dockerfile::parse;
    use crate::plan::{plan, PlanRequest};

    const SPEC: &str = r#"FROM scratch
ARG VERSION=1.0
ENV PATH=/usr/bin:/bin LANG=C.UTF-8
LABEL org.example.version=$VERSION maintainer="kbuild"
USER 1000:1000
SHELL ["/bin/bash", "-c"]
EXPOSE 8080
VOLUME /data
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/app"]
CMD echo hi
WORKDIR /work/dir
COPY <<notes.txt /etc/notes.txt
hello $VERSION
notes.txt
"#;

    /// Walks the stage as the executor does, with filesystem steps keyed
    /// but not run; returns the final state and the filesystem step keys.
    fn walk(spec: &str) -> (ImageState, Vec<String>) {
        let file = parse("Dockerfile", spec).unwrap();
        let request = PlanRequest {
            platform: Some(Platform::parse("linux/amd64").unwrap()),
            ..PlanRequest::default()
        };
        let plan = plan(&file, &request).unwrap();
        let mut scope = StageScope::new(&plan.build, BTreeMap::new());
        let mut state = ImageState::scratch(&plan.platform);
        let mut fs_keys = Vec::new();
        for ins in &file.stages[0].instructions {
            let key = match state.apply(&mut scope, ins, Some(0)).unwrap() {
                FsWork::None => continue,
                FsWork::Workdir(path) => chain(&state.key, &keys::workdir(&path, &state.user())),
                FsWork::Copy(copy) => {
                    let doc = &copy.heredocs[0];
                    let content = scope
                        .expand(&Word {
                            raw: doc.content.clone(),
                            pos: doc.pos,
                        })
                        .unwrap();
                    let sources = [keys::heredoc_source(&doc.name, content.as_bytes())];
                    let dest = scope.expand(&copy.dest).unwrap();
                    chain(
                        &state.key,
                        &keys::copy(&keys::CopyInputs {
                            text: &ins.text,
                            is_add: copy.is_add,
                            dest: &dest,
                            sources: &sources,
                            from: None,
                            chown: None,
                            chmod: None,
                            parents: false,
                            link: false,
                        }),
                    )
                }
                FsWork::Run(_) => unreachable!("the spec has no RUN"),
            };
            fs_keys.push(key.hex().to_string());
            state.add_step(key, None, 0, &ins.text);
        }
        (state, fs_keys)
    }

    #[test]
    fn metadata_instructions_set_the_image_config() {
        let (state, _) = walk(SPEC);
        let config = &state.config;
        assert_eq!(
            config.env().clone().unwrap(),
            ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
        );
        let labels = config.labels().clone().unwrap();
        assert_eq!(labels["org.example.version"], "1.0");
        assert_eq!(labels["maintainer"], "kbuild");
        assert_eq!(config.user().as_deref(), Some("1000:1000"));
        assert_eq!(state.shell, ["/bin/bash", "-c"]);
        assert_eq!(config.exposed_ports().clone().unwrap(), ["8080/tcp"]);
        assert_eq!(config.volumes().clone().unwrap(), ["/data"]);
        assert_eq!(config.stop_signal().as_deref(), Some("SIGTERM"));
        assert_eq!(config.entrypoint().clone().unwrap(), ["/bin/app"]);
        // The shell form goes through the SHELL in force at that point.
        assert_eq!(
            config.cmd().clone().unwrap(),
            ["/bin/bash", "-c", "echo hi"]
        );
        assert_eq!(config.working_dir().as_deref(), Some("/work/dir"));
        // ARG leaves no history; the 9 other metadata steps and the 2
        // filesystem steps each leave one.
        assert_eq!(state.history.len(), 11);
    }

    #[test]
    fn relative_workdirs_build_on_the_current_one() {
        let (state, _) = walk("FROM scratch\nWORKDIR /a\nWORKDIR b/../c\nWORKDIR ./d\n");
        assert_eq!(state.config.working_dir().as_deref(), Some("/a/c/d"));
    }

    /// Recorded with kbuild before the executor refactor, these were
    /// `068453fe…` and `1776aa28…`; they changed once, on purpose, when a
    /// WORKDIR after a non-root USER began to give the directory to that
    /// user (a cached root-owned directory must not be reused). Every
    /// other step's JSON, and WORKDIR's under root, is unchanged.
    #[test]
    fn stage_keys_are_the_recorded_ones() {
        let (_, fs_keys) = walk(SPEC);
        assert_eq!(
            fs_keys,
            [
                "3611a0449badc6a976386d9c84bdac98d3f72db18c7c424aa72d96520a5ee81e",
                "5b001e08ceb346051382356aab3c9585d315358ad4c42286caabe5e65f1e2dbc",
            ]
        );
        assert_eq!(
            keys::workdir("/w", "0"),
            serde_json::json!({ "workdir": "/w" })
        );
    }
}
