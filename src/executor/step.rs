//! Filesystem steps: cache lookup, the step directory, the overlay view
//! COPY/WORKDIR write through, and committing the upper dir as a layer
//! and a snapshot.
//!
//! Invariants:
//! * A step directory lives under the store's `tmp/` and is removed when
//!   the step ends, whatever the outcome ([`StepDir`]'s `Drop`).
//! * COPY and WORKDIR mount in a private mount namespace of a thread that
//!   exits when the step's file work is done; the namespace and all its
//!   mounts die with it, so nothing leaks even if kbuild is killed.
//! * A snapshot made from a blob is checked against the layer's diff_id
//!   before it is committed: a corrupt or forged cache entry cannot become
//!   a lower dir.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::keys::{self, chain};
use super::stage::StageRun;
use super::{BuildError, Executor};
use crate::digest::Digest;
use crate::dockerfile::{Instruction, Word};
use crate::layer::{self, TreeKind};
use crate::report::{Activity, ByteProgress, CountingWriter, Event, StepState};
use crate::rootfs::Root;
use crate::sandbox::overlay::{self, Overlay};
use crate::sandbox::users;
use crate::store::cache::{CacheEntry, LayerRecord};
use crate::store::{remove_tree, Store, StoreError};

/// A step's scratch directory under the store's `tmp/`; removed on drop.
pub struct StepDir {
    pub path: PathBuf,
}

impl StepDir {
    pub fn new(store: &Store) -> Result<Self, StoreError> {
        Ok(StepDir {
            path: store.staging_dir()?,
        })
    }

    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
}

impl Drop for StepDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// What a step does once its directory exists.
pub type FileWork<'w> = Box<dyn FnOnce(&Root, &[Root]) -> Result<(), BuildError> + Send + 'w>;

impl Executor<'_> {
    /// Makes sure every layer has its snapshot (lower dir).
    pub(super) fn ensure_snapshots(&self, layers: &[LayerRecord]) -> Result<(), BuildError> {
        for layer in layers {
            self.store.ensure_snapshot(layer)?;
        }
        Ok(())
    }

    /// Turns step `id`'s upper dir into a layer blob (its compressed bytes
    /// reported as they are written) and a snapshot.
    fn commit_upper(&self, id: &str, upper: &Path) -> Result<CacheEntry, BuildError> {
        let empty = fs::read_dir(upper)
            .map_err(|source| StoreError::Io {
                path: upper.to_path_buf(),
                source,
            })?
            .next()
            .is_none();
        if empty {
            return Ok(CacheEntry {
                layer: None,
                created: Some(now()),
            });
        }
        let progress = ByteProgress::start(self.reporter, id.to_string(), Activity::Compress, 0);
        let blob = CountingWriter::new(self.store.blob_writer()?, progress);
        let (blob, info) =
            layer::write_layer(upper, TreeKind::OverlayUpper, &self.options.layer, blob).map_err(
                |source| StoreError::WriteLayer {
                    path: upper.to_path_buf(),
                    source,
                },
            )?;
        blob.finish().commit(Some(&info.digest))?;
        self.store.commit_snapshot(upper, &info.diff_id)?;
        Ok(CacheEntry {
            layer: Some(LayerRecord::from(&info)),
            created: Some(now()),
        })
    }

    /// Mounts the step's overlay (and read-only `sources` views) in a
    /// private mount namespace of a new thread and runs `work` there.
    pub(super) fn with_view(
        &self,
        step: &StepDir,
        lowers: &[String],
        sources: &[Vec<String>],
        work: FileWork,
    ) -> Result<(), BuildError> {
        let snapshots = self.store.root().join("snapshots");
        let dirs = ["upper", "work", "merged", "empty"];
        for dir in dirs {
            let path = step.path.join(dir);
            fs::create_dir_all(&path).map_err(|source| StoreError::Io { path, source })?;
        }
        let setup = |what: &'static str, source: io::Error| BuildError::Mount { what, source };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    overlay::private_namespace()
                        .map_err(|e| setup("private mount namespace", e))?;
                    let empty = step.path.join("empty");
                    let merged = step.path.join("merged");
                    overlay::mount(
                        &Overlay {
                            snapshots: &snapshots,
                            lowers,
                            upper: Some((step.upper(), step.path.join("work"))),
                            empty: &empty,
                        },
                        &merged,
                    )
                    .map_err(|e| setup("mount the step overlay", e))?;
                    let mut roots = Vec::new();
                    for (i, source) in sources.iter().enumerate() {
                        let at = step.path.join(format!("source-{i}"));
                        fs::create_dir_all(&at).map_err(|e| setup("source mount point", e))?;
                        overlay::mount(
                            &Overlay {
                                snapshots: &snapshots,
                                lowers: source,
                                upper: None,
                                empty: &empty,
                            },
                            &at,
                        )
                        .map_err(|e| setup("mount a source view", e))?;
                        roots.push(Root::open(&at).map_err(|e| setup("open a source view", e))?);
                    }
                    let root = Root::open(&merged).map_err(|e| setup("open the step root", e))?;
                    work(&root, &roots)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(BuildError::Panicked {
                        stage: "a COPY, ADD or WORKDIR step".into(),
                        message: "its file thread panicked".into(),
                    })
                })
        })
    }
}

impl StageRun<'_, '_> {
    /// Runs a filesystem step: a cache hit reuses the recorded result,
    /// a miss calls `execute` with a fresh step directory and commits
    /// its upper dir.
    pub(super) fn fs_step(
        &mut self,
        id: &str,
        ins: &Instruction,
        key: Digest,
        execute: impl FnOnce(&Self, &StepDir) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let exec = self.exec;
        let start = Instant::now();
        let report = |state| {
            exec.reporter.report(Event::Step {
                id: id.to_string(),
                text: ins.text.clone(),
                state,
            })
        };
        let cached = match exec.options.no_cache {
            true => None,
            false => exec.store.cached_step(&key)?,
        };
        exec.stats.lock().unwrap_or_else(|e| e.into_inner()).steps += 1;
        if let Some(entry) = cached {
            exec.ensure_snapshots(entry.layer.as_slice())?;
            exec.store.mark_step_used(&key)?;
            let created = exec
                .epoch
                .unwrap_or(entry.created.unwrap_or(self.state.created));
            self.state.add_step(key, entry.layer, created, &ins.text);
            exec.stats.lock().unwrap_or_else(|e| e.into_inner()).cached += 1;
            report(StepState::Cached {
                millis: start.elapsed().as_millis(),
            });
            return Ok(());
        }
        if !rustix::process::geteuid().is_root() {
            return Err(BuildError::NeedsRoot {
                location: self.location(ins.pos),
                instruction: ins
                    .text
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_uppercase(),
            });
        }
        report(StepState::Started);
        let result = (|| {
            exec.ensure_snapshots(&self.state.layers)?;
            let step = StepDir::new(exec.store)?;
            execute(self, &step)?;
            let entry = exec.commit_upper(id, &step.upper())?;
            exec.store.cache_step(&key, &entry)?;
            Ok(entry)
        })();
        let millis = start.elapsed().as_millis();
        match result {
            Ok(entry) => {
                let created = exec.epoch.or(entry.created).unwrap_or(self.state.created);
                self.state.add_step(key, entry.layer, created, &ins.text);
                report(StepState::Done { millis });
                Ok(())
            }
            Err(e) => {
                report(StepState::Failed { millis });
                Err(e)
            }
        }
    }

    pub(super) fn workdir_step(
        &mut self,
        id: &str,
        ins: &Instruction,
        path: &str,
    ) -> Result<(), BuildError> {
        let user = self.state.user();
        let key = chain(&self.state.key, &keys::workdir(path, &user));
        let lowers = self.state.snapshots();
        let path = path.to_string();
        let location = self.location(ins.pos);
        self.fs_step(id, ins, key, |run, step| {
            run.exec.with_view(
                step,
                &lowers,
                &[],
                Box::new(move |root, _| {
                    // Missing directories belong to the current USER, as
                    // BuildKit and buildah make them.
                    let owner =
                        users::resolve(root, &user, false).map_err(|source| BuildError::User {
                            location: location.clone(),
                            user: user.clone(),
                            source,
                        })?;
                    root.mkdir_all(Path::new(&path), 0o755, Some((owner.uid, owner.gid)))
                        .map(|_| ())
                        .map_err(|source| BuildError::StepIo {
                            location: location.clone(),
                            what: format!("WORKDIR {path}"),
                            source,
                        })
                }),
            )
        })
    }

    /// The stage or image a `--from` names.
    pub(super) fn source_image(&self, word: &Word) -> Result<super::ImageState, BuildError> {
        let name = self.expand(word)?;
        let headers = &self.exec.plan.headers;
        let stage = match name.parse::<usize>() {
            Ok(i) if i < headers.len() => Some(i),
            _ => headers
                .iter()
                .position(|h| h.named && h.name.eq_ignore_ascii_case(&name)),
        };
        match stage {
            Some(i) => Ok(self
                .exec
                .result(i)
                .expect("stage dependencies are built first")),
            None => self.exec.image_state(&name, &self.platform),
        }
    }
}

/// Seconds since the epoch, now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
