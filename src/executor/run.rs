//! RUN: the command line (shell, exec or heredoc form), its environment
//! and `--mount`s, turned into a [`sandbox::Spec`].
//!
//! Invariants:
//! * Secret contents never enter a key, a layer or the history: a secret
//!   is a read-only bind of the host file over a stub the sandbox removes,
//!   or an environment variable of the process only.
//! * Cache mounts are directories of the store (`cache/mounts/<id digest>`)
//!   shared by every build; `sharing=locked` holds an exclusive lock on
//!   the directory for the step, `private` takes a fresh directory when
//!   another step holds it.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::copy_step::heredoc_name;
use super::keys::{self, chain};
use super::source::SourceTree;
use super::stage::StageRun;
use super::step::StepDir;
use super::{BuildError, Location};
use crate::digest::Digest;
use crate::dockerfile::{self, CacheSharing, Command, Instruction, MountType, Run};
use crate::report::Event;
use crate::rootfs::clean;
use crate::sandbox::{self, Mount, MountSource, Network, SandboxError};
use crate::store::image::DEFAULT_PATH;
use crate::store::StoreError;

/// Where a heredoc script with a shebang is mounted for the step.
const HEREDOC_SCRIPT: &str = "/dev/.kbuild-heredoc";

/// A cache directory and how to hold it during the step.
struct CacheMount {
    dir: PathBuf,
    target: String,
    sharing: CacheSharing,
    read_only: bool,
}

/// The mounts of one RUN, split by when they are prepared.
#[derive(Default)]
struct Mounts {
    fixed: Vec<Mount>,
    caches: Vec<CacheMount>,
    /// What the key records of each mount (never secret contents).
    keys: Vec<Value>,
    /// Secrets passed as environment variables.
    env: Vec<String>,
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

impl StageRun<'_, '_> {
    pub(super) fn run_step(
        &mut self,
        id: &str,
        ins: &Instruction,
        run: &Run,
    ) -> Result<(), BuildError> {
        let location = self.location(ins.pos);
        let (argv, script) = self.command(run);
        let mut env: Vec<String> = self.state.config.env().clone().unwrap_or_default();
        let defined = self.state.env();
        for (k, v) in self.scope.args() {
            if !defined.contains_key(k) {
                env.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|p| p.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let mut mounts = self.mounts(run, &location)?;
        let network = match run.network {
            dockerfile::Network::None => Network::None,
            dockerfile::Network::Host => Network::Host,
            dockerfile::Network::Default => self.exec.options.network,
        };
        let cwd = self.state.workdir();
        let user = self.state.user();
        let key = chain(
            &self.state.key,
            &keys::run(&keys::RunInputs {
                argv: &argv,
                script: script.as_deref(),
                env: &env,
                cwd: &cwd,
                user: &user,
                network: &format!("{network:?}"),
                mounts: &mounts.keys,
            }),
        );
        env.append(&mut mounts.env);
        let lowers = self.state.snapshots();
        let text = ins.text.clone();
        self.fs_step(id, ins, key, |run, step| {
            let exec = run.exec;
            let mut all = mounts.fixed.clone();
            let _locks = hold_caches(&mounts.caches, step, &mut all)?;
            if let Some(script) = &script {
                let path = step.path.join("heredoc-script");
                let write = fs::write(&path, script)
                    .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)));
                write.map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?;
                all.push(Mount {
                    target: HEREDOC_SCRIPT.to_string(),
                    source: MountSource::Path(path),
                    read_only: true,
                    persistent: false,
                });
            }
            let spec = sandbox::Spec {
                snapshots: exec.store.root().join("snapshots"),
                lowers,
                step_dir: step.path.clone(),
                mounts: all,
                argv,
                env,
                cwd,
                user,
                hostname: "kbuild".to_string(),
                network,
                isolation: exec.options.isolation.clone(),
            };
            let mut output = |line: &str| {
                exec.reporter.report(Event::Output {
                    id: id.to_string(),
                    line: line.to_string(),
                })
            };
            let helper = &exec.options.helper;
            let outcome =
                sandbox::run(&spec, helper, &mut output, exec.cancel).map_err(|e| match e {
                    SandboxError::Interrupted => BuildError::Interrupted,
                    source => BuildError::Sandbox {
                        location: location.clone(),
                        source,
                    },
                })?;
            if outcome.code != 0 {
                return Err(BuildError::RunFailed {
                    location: location.clone(),
                    text,
                    code: outcome.code,
                    tail: outcome.tail,
                });
            }
            Ok(())
        })
    }

    /// The argv of a RUN, and a heredoc script to mount when it has a
    /// shebang.
    fn command(&self, run: &Run) -> (Vec<String>, Option<String>) {
        let shell = |script: String| {
            let mut argv = self.state.shell.clone();
            argv.push(script);
            argv
        };
        match &run.command {
            Command::Exec(argv) => (argv.clone(), None),
            Command::Shell(text) => {
                let only = match run.heredocs.as_slice() {
                    [doc] if is_marker_only(text, &doc.name) => Some(doc),
                    _ => None,
                };
                if let Some(doc) = only {
                    if doc.content.starts_with("#!") {
                        return (vec![HEREDOC_SCRIPT.to_string()], Some(doc.content.clone()));
                    }
                    return (shell(doc.content.clone()), None);
                }
                let mut script = text.clone();
                for doc in &run.heredocs {
                    script.push('\n');
                    script.push_str(&doc.content);
                    script.push_str(&doc.name);
                }
                (shell(script), None)
            }
        }
    }
}

/// `RUN <<EOF` with nothing else on the line.
fn is_marker_only(text: &str, name: &str) -> bool {
    heredoc_name(text.trim()) == Some(name)
}

fn prepare_cache_dir(
    dir: &Path,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), BuildError> {
    let io_err = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode.unwrap_or(0o755))).map_err(io_err)?;
    std::os::unix::fs::chown(dir, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))
        .map_err(io_err)?;
    Ok(())
}

/// Takes each cache's lock as its sharing mode says and adds its mount;
/// the returned files hold the locks until dropped.
fn hold_caches(
    caches: &[CacheMount],
    step: &StepDir,
    mounts: &mut Vec<Mount>,
) -> Result<Vec<File>, BuildError> {
    let mut locks = Vec::new();
    for (i, cache) in caches.iter().enumerate() {
        let lock_path = cache.dir.with_extension("lock");
        let io_err = |source| StoreError::Io {
            path: lock_path.clone(),
            source,
        };
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err)?;
        let dir = match cache.sharing {
            CacheSharing::Shared => {
                lock.lock_shared().map_err(io_err)?;
                cache.dir.clone()
            }
            CacheSharing::Locked => {
                lock.lock().map_err(io_err)?;
                cache.dir.clone()
            }
            CacheSharing::Private => match lock.try_lock() {
                Ok(()) => cache.dir.clone(),
                Err(_) => {
                    let fresh = step.path.join(format!("private-cache-{i}"));
                    fs::create_dir_all(&fresh).map_err(|source| StoreError::Io {
                        path: fresh.clone(),
                        source,
                    })?;
                    fresh
                }
            },
        };
        locks.push(lock);
        mounts.push(Mount {
            target: cache.target.clone(),
            source: MountSource::Path(dir),
            read_only: cache.read_only,
            persistent: true,
        });
    }
    Ok(locks)
}

/// One `--mount`'s flags, expanded in the stage's scope.
struct MountArgs<'m> {
    mount: &'m dockerfile::Mount,
    target: Option<String>,
    source: Option<String>,
    id: Option<String>,
}

impl StageRun<'_, '_> {
    /// Every `--mount` of a RUN: what to mount, what the key records, and
    /// secrets passed as variables.
    fn mounts(&self, run: &Run, location: &Location) -> Result<Mounts, BuildError> {
        let mut out = Mounts::default();
        for mount in &run.mounts {
            let expand = |text: &Option<String>| -> Result<Option<String>, BuildError> {
                text.as_ref()
                    .map(|raw| {
                        self.expand(&dockerfile::Word {
                            raw: raw.clone(),
                            pos: mount.pos,
                        })
                    })
                    .transpose()
            };
            let flags = MountArgs {
                mount,
                target: expand(&mount.target)?,
                source: expand(&mount.source)?,
                id: expand(&mount.id)?,
            };
            let refuse = |message: &str| BuildError::Step {
                location: location.clone(),
                message: message.to_string(),
            };
            match mount.kind {
                MountType::Cache => self.cache_mount(flags, &mut out, refuse)?,
                MountType::Bind => self.bind_mount(flags, &mut out, location)?,
                MountType::Tmpfs => tmpfs_mount(flags, &mut out, refuse)?,
                MountType::Secret => self.secret_mount(flags, &mut out, location)?,
                MountType::Ssh if mount.required => {
                    return Err(refuse(
                        "RUN --mount=type=ssh is not supported: kbuild forwards no SSH agent",
                    ))
                }
                MountType::Ssh => {}
            }
        }
        Ok(out)
    }

    /// A store directory named by the digest of the id, whatever the id.
    fn cache_mount(
        &self,
        flags: MountArgs,
        out: &mut Mounts,
        refuse: impl Fn(&str) -> BuildError,
    ) -> Result<(), BuildError> {
        let mount = flags.mount;
        let target = flags
            .target
            .ok_or_else(|| refuse("a cache mount needs target="))?;
        let id = flags.id.unwrap_or_else(|| target.clone());
        let dir = self
            .exec
            .store
            .root()
            .join("cache/mounts")
            .join(Digest::of(id.as_bytes()).hex());
        prepare_cache_dir(&dir, mount.mode, mount.uid, mount.gid)?;
        self.exec.store.mark_used(&dir)?;
        out.keys.push(keys::cache_mount(&id, &target));
        out.caches.push(CacheMount {
            dir,
            target,
            sharing: mount.sharing,
            read_only: mount.read_only,
        });
        Ok(())
    }

    /// A path of the context (resolved inside it) or of a stage or image.
    fn bind_mount(
        &self,
        flags: MountArgs,
        out: &mut Mounts,
        location: &Location,
    ) -> Result<(), BuildError> {
        let mount = flags.mount;
        let target = flags.target.ok_or_else(|| BuildError::Step {
            location: location.clone(),
            message: "a bind mount needs target=".into(),
        })?;
        let subpath = flags.source.unwrap_or_else(|| "/".to_string());
        let from = mount
            .from
            .as_ref()
            .map(|raw| {
                self.expand(&dockerfile::Word {
                    raw: raw.clone(),
                    pos: mount.pos,
                })
            })
            .transpose()?;
        let (source, key) = match from {
            Some(from) => {
                let state = self.source_image(&dockerfile::Word {
                    raw: from,
                    pos: mount.pos,
                })?;
                self.exec.ensure_snapshots(&state.layers)?;
                let key = keys::stage_bind_source(&state.key, &subpath);
                let source = MountSource::Layers {
                    snapshots: state.snapshots(),
                    subpath,
                };
                (source, key)
            }
            None => self.context_bind(&subpath, location)?,
        };
        out.keys
            .push(keys::bind_mount(&target, key, !mount.read_only));
        out.fixed.push(Mount {
            target,
            source,
            read_only: mount.read_only,
            persistent: false,
        });
        Ok(())
    }

    fn context_bind(
        &self,
        subpath: &str,
        location: &Location,
    ) -> Result<(MountSource, Value), BuildError> {
        let io_fail = |source| BuildError::StepIo {
            location: location.clone(),
            what: format!("bind source {subpath}"),
            source,
        };
        let tree = SourceTree {
            root: &self.exec.context,
            ignore: Some(&self.exec.ignore),
            keep_owners: false,
        };
        let found = tree
            .resolve(&clean(subpath))
            .map_err(io_fail)?
            .ok_or_else(|| BuildError::Step {
                location: location.clone(),
                message: format!("bind source {subpath} is not in the build context"),
            })?;
        let digest = tree.digest(&found).map_err(io_fail)?;
        Ok((
            MountSource::Path(found.host),
            keys::context_bind_source(subpath, &digest),
        ))
    }

    /// A `--secret` as a read-only file, or a variable with `env=`.
    fn secret_mount(
        &self,
        flags: MountArgs,
        out: &mut Mounts,
        location: &Location,
    ) -> Result<(), BuildError> {
        let mount = flags.mount;
        let target = flags.target;
        let id = flags
            .id
            .or_else(|| {
                target
                    .as_ref()
                    .and_then(|t| Path::new(t).file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .ok_or_else(|| BuildError::Step {
                location: location.clone(),
                message: "a secret mount needs id= or target=".into(),
            })?;
        let Some(file) = self.exec.options.secrets.get(&id) else {
            if mount.required {
                return Err(BuildError::Step {
                    location: location.clone(),
                    message: format!("secret \"{id}\" is required: pass --secret id={id},src=FILE"),
                });
            }
            return Ok(());
        };
        out.keys.push(keys::secret_mount(
            &id,
            target.as_deref(),
            mount.env.as_deref(),
        ));
        if let Some(var) = &mount.env {
            let value = fs::read_to_string(file).map_err(|source| BuildError::StepIo {
                location: location.clone(),
                what: format!("secret {id}: cannot read {}", file.display()),
                source,
            })?;
            out.env
                .push(format!("{var}={}", value.trim_end_matches('\n')));
            if target.is_none() {
                return Ok(());
            }
        }
        out.fixed.push(Mount {
            target: target.unwrap_or_else(|| format!("/run/secrets/{id}")),
            source: MountSource::Path(file.clone()),
            read_only: true,
            persistent: false,
        });
        Ok(())
    }
}

fn tmpfs_mount(
    flags: MountArgs,
    out: &mut Mounts,
    refuse: impl Fn(&str) -> BuildError,
) -> Result<(), BuildError> {
    let target = flags
        .target
        .ok_or_else(|| refuse("a tmpfs mount needs target="))?;
    let size = match &flags.mount.size {
        Some(text) => Some(
            parse_size(text)
                .ok_or_else(|| refuse(&format!("tmpfs size={text}: expected a size like 64m")))?,
        ),
        None => None,
    };
    out.keys.push(keys::tmpfs_mount(&target, size));
    out.fixed.push(Mount {
        target,
        source: MountSource::Tmpfs { size },
        read_only: false,
        persistent: false,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{is_marker_only, parse_size};

    #[test]
    fn sizes_and_markers() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999999999999g"), None);
        assert_eq!(parse_size("18446744073709551615g"), None);
        assert!(is_marker_only(" <<EOF ", "EOF"));
        assert!(is_marker_only("<<-'EOT'", "EOT"));
        assert!(!is_marker_only("python3 <<EOF", "EOF"));
    }
}
