//! Where COPY/ADD and bind mounts read from: the build context (with its
//! `.dockerignore`), a stage or an image mounted read-only. Sources are
//! found by pattern and hashed by content for the step cache.
//!
//! Invariants:
//! * A source path is resolved in its tree's root ([`Root`]): `..` and
//!   symlinks never leave the context or the stage. Below the resolved
//!   path nothing is followed: symlinks are copied and hashed as links.
//! * An ignored path is invisible: it matches no pattern, is walked past
//!   and counts in no digest.
//! * A digest covers relative paths, types, permission bits, link targets
//!   and file contents (and owners where they are kept), never mtimes: a
//!   fresh checkout of the same files hits the cache.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};

use crate::digest::{hash_reader, Digest, Hasher};
use crate::rootfs::{clean, Root};

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: bad pattern \"{pattern}\"", path.display())]
    Pattern {
        path: PathBuf,
        line: usize,
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
}

/// `.dockerignore` rules: later rules win, `!` re-includes.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<(Pattern, bool)>,
}

impl Ignore {
    /// The context's `.dockerignore`, or no rules.
    pub fn load(context: &Path) -> Result<Ignore, IgnoreError> {
        let path = context.join(".dockerignore");
        match fs::read_to_string(&path) {
            Ok(text) => {
                Ignore::parse(&text).map_err(|(line, pattern, source)| IgnoreError::Pattern {
                    path,
                    line,
                    pattern,
                    source,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ignore::default()),
            Err(source) => Err(IgnoreError::Read { path, source }),
        }
    }

    /// The rules of a `.dockerignore` text; a bad pattern comes back with
    /// its 1-based line.
    pub fn parse(text: &str) -> Result<Ignore, (usize, String, glob::PatternError)> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (text, keep) = match line.strip_prefix('!') {
                Some(rest) => (rest.trim(), true),
                None => (line, false),
            };
            let cleaned = clean(text);
            let pattern = Pattern::new(&cleaned.to_string_lossy())
                .map_err(|e| (n + 1, text.to_string(), e))?;
            rules.push((pattern, keep));
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (context-relative) is excluded: the last rule that
    /// matches it or one of its parents decides.
    pub fn is_ignored(&self, rel: &Path) -> bool {
        let mut ignored = false;
        for (pattern, keep) in &self.rules {
            let hit = rel
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| pattern.matches_path_with(a, MATCH));
            if hit {
                ignored = !keep;
            }
        }
        ignored
    }

    /// Whether an ignored directory may still hold re-included paths.
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, keep)| *keep)
    }
}

/// A tree sources are read from.
pub struct SourceTree<'a> {
    pub root: &'a Root,
    pub ignore: Option<&'a Ignore>,
    /// Stages and images keep owners (COPY --from); the context does not.
    pub keep_owners: bool,
}

/// One resolved source: where it is relative to its tree and on the host.
#[derive(Debug, Clone)]
pub struct Source {
    pub rel: PathBuf,
    pub host: PathBuf,
    pub meta: Metadata,
}

fn has_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

impl SourceTree<'_> {
    fn ignored(&self, rel: &Path) -> bool {
        self.ignore.is_some_and(|i| i.is_ignored(rel))
    }

    /// The sources a COPY argument names: the path itself, or every path
    /// a wildcard pattern matches, sorted.
    pub fn expand(&self, pattern: &str) -> io::Result<Vec<Source>> {
        let rel = clean(pattern);
        let text = rel.to_string_lossy();
        if !has_glob(&text) {
            return Ok(self.resolve(&rel)?.into_iter().collect());
        }
        let glob = Pattern::new(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let literal: PathBuf = rel
            .iter()
            .take_while(|c| !has_glob(&c.to_string_lossy()))
            .collect();
        let depth = if text.contains("**") {
            usize::MAX
        } else {
            rel.iter().count()
        };
        let Some(start) = self.resolve(&literal)? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        if start.meta.is_dir() {
            self.walk(
                &start.host,
                &literal,
                literal.iter().count(),
                depth,
                &mut |rel, host, meta| {
                    if glob.matches_path_with(rel, MATCH) {
                        found.push(Source {
                            rel: rel.to_path_buf(),
                            host: host.to_path_buf(),
                            meta: meta.clone(),
                        });
                    }
                    Ok(())
                },
            )?;
        }
        found.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(found)
    }

    /// The source at `rel`, following symlinks inside the root; `None`
    /// when it does not exist or is ignored.
    pub fn resolve(&self, rel: &Path) -> io::Result<Option<Source>> {
        if !rel.as_os_str().is_empty() && self.ignored(rel) {
            return Ok(None);
        }
        let host = match self.root.resolve(rel) {
            Ok(host) => host,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = fs::symlink_metadata(&host)?;
        Ok(Some(Source {
            rel: rel.to_path_buf(),
            host,
            meta,
        }))
    }

    /// Calls `visit` for every entry below `host` (relative paths start at
    /// `rel`), parents first, siblings sorted, ignored paths skipped.
    pub fn walk(
        &self,
        host: &Path,
        rel: &Path,
        depth: usize,
        max_depth: usize,
        visit: &mut dyn FnMut(&Path, &Path, &Metadata) -> io::Result<()>,
    ) -> io::Result<()> {
        if depth >= max_depth {
            return Ok(());
        }
        let mut names: Vec<_> = fs::read_dir(host)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child_rel = rel.join(&name);
            let child_host = host.join(&name);
            let meta = match fs::symlink_metadata(&child_host) {
                Ok(meta) => meta,
                // Listed but absent: overlayfs lists the whiteouts of a
                // directory only one layer has (a rootless device stand-in).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let ignored = self.ignored(&child_rel);
            if !ignored {
                visit(&child_rel, &child_host, &meta)?;
            }
            let descend = !ignored || self.ignore.is_some_and(Ignore::has_exceptions);
            if meta.is_dir() && descend {
                self.walk(&child_host, &child_rel, depth + 1, max_depth, visit)?;
            }
        }
        Ok(())
    }

    /// The content digest of `source` (the tree below it for a directory).
    pub fn digest(&self, source: &Source) -> io::Result<Digest> {
        let mut hasher = Hasher::default();
        self.hash_entry(&mut hasher, Path::new("."), &source.host, &source.meta)?;
        if source.meta.is_dir() {
            self.walk(
                &source.host,
                &source.rel,
                0,
                usize::MAX,
                &mut |rel, host, meta| {
                    let inner = rel.strip_prefix(&source.rel).unwrap_or(rel);
                    self.hash_entry(&mut hasher, inner, host, meta)
                },
            )?;
        }
        Ok(hasher.finish())
    }

    fn hash_entry(
        &self,
        hasher: &mut Hasher,
        rel: &Path,
        host: &Path,
        meta: &Metadata,
    ) -> io::Result<()> {
        let kind = meta.file_type();
        let tag = if kind.is_dir() {
            "d"
        } else if kind.is_symlink() {
            "l"
        } else if kind.is_file() {
            "f"
        } else if kind.is_fifo() {
            "p"
        } else {
            "o"
        };
        let mut line = format!("{tag} {:o}", meta.mode() & 0o7777);
        if self.keep_owners {
            line.push_str(&format!(" {}:{}", meta.uid(), meta.gid()));
        }
        hasher.update(rel.as_os_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(line.as_bytes());
        if kind.is_symlink() {
            hasher.update(fs::read_link(host)?.as_os_str().as_bytes());
        } else if kind.is_file() {
            let (digest, size) = hash_reader(fs::File::open(host)?)?;
            hasher.update(format!(" {size} {digest}").as_bytes());
        }
        hasher.update(b"\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ignore =
            Ignore::parse("# comment\n*.log\nbuild\n!build/keep\n/secret*\n**/*.tmp\n").unwrap();
        assert!(ignore.is_ignored(Path::new("a.log")));
        assert!(
            !ignore.is_ignored(Path::new("dir/a.log")),
            "* does not cross /"
        );
        assert!(
            ignore.is_ignored(Path::new("build/out/x")),
            "a parent match ignores"
        );
        assert!(!ignore.is_ignored(Path::new("build/keep")), "! re-includes");
        assert!(ignore.is_ignored(Path::new("secret.txt")));
        assert!(ignore.is_ignored(Path::new("deep/er/x.tmp")));
        assert!(!ignore.is_ignored(Path::new("src/main.rs")));
    }

    #[test]
    fn digests_follow_content_not_mtime() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/a"), "one").unwrap();
        fs::write(dir.path().join("d/skip.log"), "noise").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let ignore = Ignore::parse("*.log\nd/*.log\n").unwrap();
        let tree = SourceTree {
            root: &root,
            ignore: Some(&ignore),
            keep_owners: false,
        };
        let digest = |tree: &SourceTree| {
            let source = tree.resolve(Path::new("d")).unwrap().unwrap();
            tree.digest(&source).unwrap()
        };
        let first = digest(&tree);
        fs::write(dir.path().join("d/skip.log"), "other noise").unwrap();
        let f = fs::File::options()
            .write(true)
            .open(dir.path().join("d/a"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            digest(&tree),
            first,
            "ignored files and mtimes do not count"
        );
        fs::write(dir.path().join("d/a"), "two").unwrap();
        assert_ne!(digest(&tree), first);
        let found = tree.expand("d/*").unwrap();
        assert_eq!(found.len(), 1, "the ignored file matches no pattern");
        assert!(
            tree.expand("../../etc/passwd").unwrap().is_empty(),
            "stays in the root"
        );
    }
}
