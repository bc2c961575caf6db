//! COPY and ADD as steps: their options and sources resolved (context
//! paths with their content digests, heredocs and downloads written to the
//! step's inputs directory), the step key, and the copy itself through
//! `copy::copy` over the step's overlay.
//!
//! Invariants:
//! * Heredoc and download files are written only inside the step's
//!   inputs directory, as single plain names ([`StepInputs::write`]).
//! * A context source is keyed by its content digest, never its mtime.

use std::io;
use std::path::Path;

use serde_json::Value;

use super::copy::{self, CopyRequest};
use super::keys::{self, chain};
use super::source::SourceTree;
use super::stage::StageRun;
use super::step::StepDir;
use super::{BuildError, ImageState, Location};
use crate::digest::Digest;
use crate::dockerfile::{Copy, Heredoc, Instruction, Word};
use crate::rootfs::Root;
use crate::store::{Store, StoreError};

/// The flags of one COPY/ADD, expanded and checked.
struct CopyOptions {
    chown: Option<String>,
    chmod: Option<u32>,
    /// Absolute, relative ones joined to WORKDIR.
    dest: String,
    excludes: Vec<glob::Pattern>,
}

/// Where each source is read from and what the key records of it.
#[derive(Default)]
struct Sources {
    /// (tree, path): tree 0 is the context, a stage or an image; tree 1
    /// holds heredocs and downloads.
    paths: Vec<(usize, String)>,
    keys: Vec<Value>,
}

impl StageRun<'_, '_> {
    pub(super) fn copy_step(
        &mut self,
        id: &str,
        ins: &Instruction,
        copy: &Copy,
    ) -> Result<(), BuildError> {
        let location = self.location(ins.pos);
        let options = self.copy_options(copy, &location)?;
        let from = match &copy.from {
            Some(word) => Some(self.source_image(word)?),
            None => None,
        };
        let inputs = StepInputs::new(self.exec.store)?;
        let sources = self.copy_sources(copy, from.as_ref(), &inputs, &location)?;
        let step = keys::copy(&keys::CopyInputs {
            text: &ins.text,
            is_add: copy.is_add,
            dest: &options.dest,
            sources: &sources.keys,
            from: from.as_ref().map(|f| f.key.to_string()),
            chown: options.chown.as_deref(),
            chmod: options.chmod,
            parents: copy.parents,
            link: copy.link,
        });
        // --link layers do not depend on what is below them.
        let (parent, lowers) = match copy.link {
            true => (keys::link_parent(), Vec::new()),
            false => (self.state.key.clone(), self.state.snapshots()),
        };
        let key = chain(&parent, &step);
        let source_views: Vec<Vec<String>> = from.iter().map(|f| f.snapshots()).collect();
        if let Some(from) = &from {
            self.exec.ensure_snapshots(&from.layers)?;
        }
        let request = CopyRequest {
            sources: sources.paths,
            dest: options.dest,
            chown: options.chown,
            chmod: options.chmod,
            unpack_archives: copy.is_add,
            parents: copy.parents,
            excludes: options.excludes,
        };
        let inputs_path = inputs.path().to_path_buf();
        self.fs_step(id, ins, key, |run, step| {
            run.exec.with_view(
                step,
                &lowers,
                &source_views,
                Box::new(move |root, views| {
                    let inputs_root =
                        Root::open(&inputs_path).map_err(|source| BuildError::Mount {
                            what: "open the step's inputs",
                            source,
                        })?;
                    let first = match views.first() {
                        Some(view) => SourceTree {
                            root: view,
                            ignore: None,
                            keep_owners: true,
                        },
                        None => run.context_tree(),
                    };
                    let inputs_tree = SourceTree {
                        root: &inputs_root,
                        ignore: None,
                        keep_owners: false,
                    };
                    copy::copy(&[first, inputs_tree], &request, root).map_err(|source| {
                        BuildError::Copy {
                            location: location.clone(),
                            source,
                        }
                    })
                }),
            )
        })
    }

    fn context_tree(&self) -> SourceTree<'_> {
        SourceTree {
            root: &self.exec.context,
            ignore: Some(&self.exec.ignore),
            keep_owners: false,
        }
    }

    fn copy_options(&self, copy: &Copy, location: &Location) -> Result<CopyOptions, BuildError> {
        let refuse = |message: String| BuildError::Step {
            location: location.clone(),
            message,
        };
        let chown = copy.chown.as_ref().map(|w| self.expand(w)).transpose()?;
        let chmod = match &copy.chmod {
            Some(word) => {
                let text = self.expand(word)?;
                Some(copy::parse_chmod(&text).ok_or_else(|| {
                    refuse(format!("--chmod={text}: expected an octal mode like 0755"))
                })?)
            }
            None => None,
        };
        let mut dest = self.expand(&copy.dest)?;
        if !dest.starts_with('/') {
            let base = self.state.workdir();
            let slash = if dest.ends_with('/') { "/" } else { "" };
            dest = format!("{}/{}{slash}", base.trim_end_matches('/'), dest);
        }
        let excludes = copy
            .excludes
            .iter()
            .map(|w| {
                let text = self.expand(w)?;
                glob::Pattern::new(&text).map_err(|e| refuse(format!("--exclude={text}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CopyOptions {
            chown,
            chmod,
            dest,
            excludes,
        })
    }

    fn copy_sources(
        &self,
        copy: &Copy,
        from: Option<&ImageState>,
        inputs: &StepInputs,
        location: &Location,
    ) -> Result<Sources, BuildError> {
        let mut sources = Sources::default();
        for word in &copy.sources {
            if let Some(doc) = copy
                .heredocs
                .iter()
                .find(|h| heredoc_name(&word.raw) == Some(h.name.as_str()))
            {
                let content = self.heredoc_content(doc)?;
                inputs
                    .write(&doc.name, content.as_bytes(), 0o644)
                    .map_err(|source| BuildError::StepIo {
                        location: location.clone(),
                        what: format!("cannot write heredoc {}", doc.name),
                        source,
                    })?;
                sources
                    .keys
                    .push(keys::heredoc_source(&doc.name, content.as_bytes()));
                sources.paths.push((1, doc.name.clone()));
                continue;
            }
            let text = self.expand(word)?;
            if copy.is_add && (text.starts_with("http://") || text.starts_with("https://")) {
                if from.is_some() {
                    return Err(BuildError::Step {
                        location: location.clone(),
                        message: "ADD --from cannot fetch URLs".into(),
                    });
                }
                let checksum = copy.checksum.as_ref().map(|w| self.expand(w)).transpose()?;
                let (name, digest) = self.download(location, &text, checksum.as_deref(), inputs)?;
                sources.keys.push(keys::url_source(&text, &digest));
                sources.paths.push((1, name));
                continue;
            }
            if from.is_none() {
                sources
                    .keys
                    .extend(self.context_source_keys(&text, location)?);
            }
            sources.paths.push((0, text));
        }
        Ok(sources)
    }

    fn heredoc_content(&self, doc: &Heredoc) -> Result<String, BuildError> {
        match doc.expand {
            true => self.expand(&Word {
                raw: doc.content.clone(),
                pos: doc.pos,
            }),
            false => Ok(doc.content.clone()),
        }
    }

    /// The key values of what `pattern` matches in the context; matching
    /// nothing is an error, as in BuildKit.
    fn context_source_keys(
        &self,
        pattern: &str,
        location: &Location,
    ) -> Result<Vec<Value>, BuildError> {
        let io_fail = |source| BuildError::StepIo {
            location: location.clone(),
            what: pattern.to_string(),
            source,
        };
        let tree = self.context_tree();
        let found = tree.expand(pattern).map_err(io_fail)?;
        if found.is_empty() {
            return Err(BuildError::Step {
                location: location.clone(),
                message: format!(
                    "\"{pattern}\" not found in the build context {} (or excluded by .dockerignore)",
                    self.exec.options.context.display()
                ),
            });
        }
        found
            .iter()
            .map(|source| {
                let digest = tree.digest(source).map_err(io_fail)?;
                Ok(keys::context_source(&source.rel, &digest))
            })
            .collect()
    }

    /// ADD of a URL: fetched into the step inputs, checked against
    /// `--checksum` when given. Returns the file name and its digest.
    fn download(
        &self,
        location: &Location,
        url: &str,
        checksum: Option<&str>,
        inputs: &StepInputs,
    ) -> Result<(String, Digest), BuildError> {
        let name = url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .filter(|n| crate::rootfs::is_plain_name(n))
            .unwrap_or("download")
            .to_string();
        let bytes = self
            .exec
            .runtime
            .block_on(async {
                // rustls has no default provider here (see registry::transport).
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(30))
                    .build()?;
                let response = client.get(url).send().await?.error_for_status()?;
                response.bytes().await
            })
            .map_err(|source| BuildError::Download {
                location: location.clone(),
                url: url.to_string(),
                source,
            })?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = checksum {
            if expected != digest.to_string() {
                return Err(BuildError::Step {
                    location: location.clone(),
                    message: format!(
                        "ADD {url}: checksum mismatch: expected {expected}, got {digest}"
                    ),
                });
            }
        }
        inputs
            .write(&name, &bytes, 0o600)
            .map_err(|source| BuildError::StepIo {
                location: location.clone(),
                what: format!("cannot write the download of {url}"),
                source,
            })?;
        Ok((name, digest))
    }
}

/// `<<EOF` and `<<-EOF` name a heredoc.
pub(super) fn heredoc_name(word: &str) -> Option<&str> {
    let name = word.strip_prefix("<<")?;
    let name = name.strip_prefix('-').unwrap_or(name);
    Some(name.trim_matches(['"', '\'']))
}

/// Files a COPY/ADD makes itself (heredocs, downloads), in the store's tmp.
struct StepInputs(StepDir);

impl StepInputs {
    fn new(store: &Store) -> Result<Self, StoreError> {
        Ok(StepInputs(StepDir::new(store)?))
    }

    fn path(&self) -> &Path {
        &self.0.path
    }

    /// Writes one input file. The name comes from the spec (a heredoc) or
    /// a URL: it is written inside the inputs directory or not at all.
    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        Root::open(&self.0.path)?.write_file(name, bytes, mode)
    }
}
