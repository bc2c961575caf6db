//! The content-addressed store at `$KBUILD_STORE` (default
//! `~/.cache/kbuild`).
//!
//! Layout:
//! ```text
//! oci-layout, index.json      OCI image layout; index.json holds the tags
//! blobs/sha256/<hex>          blobs
//! snapshots/<diff_id hex>/    extracted layers (overlay lower dirs)
//! cache/steps/<key hex>.json   step cache entries (see [`cache`])
//! cache/mounts/<id hex>/      RUN --mount=type=cache dirs
//! sources/<digest hex>         registry/repository names known to hold a blob
//! derived/<key hex>/          files made from an image (ISO parts; see [`derived`])
//! tmp/                        staging for snapshots being built
//! quarantine/                 what fsck found corrupt
//! lock                        flock: shared while working, exclusive to commit or collect
//! ```
//!
//! Invariants:
//! * Every write is temp file in the same directory + fsync + rename +
//!   fsync of the directory; `index.json` is the commit point, written last,
//!   so a crash leaves only unreferenced temp files and blobs.
//! * A blob is renamed to its digest only after its content hashed to it.
//! * Digests are parsed ([`Digest`]) before they become paths.
//! * Index updates, prune and fsck hold the lock exclusively; other work
//!   holds it shared, so prune never collects another process's temp files.

pub mod atomic;
pub mod cache;
pub mod derived;
mod gc;
pub mod image;
pub mod import;
mod retention;
mod snapshot;
pub mod stamp;
mod usage;
mod view;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Serialize;

pub use gc::{FsckReport, PruneReport};
pub use retention::{Retention, RetentionReport};
pub use snapshot::StandIn;
pub use usage::{StoreUsage, Usage};

use crate::digest::{Digest, DigestError, HashingWriter};

/// The annotation OCI layouts use to name a manifest.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Input(#[from] crate::diagnose::InputFileError),
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("no image named \"{0}\" in the store (see `kbuild images`)")]
    UnknownImage(String),
    #[error("the store {} was made {found}, but this kbuild runs {current}: their snapshots differ in owners, overlay markers and device nodes", root.display())]
    Ownership {
        root: PathBuf,
        found: String,
        current: String,
    },
    /// Data that is well-formed but does not hold together (e.g. more
    /// layers than diff_ids); what is wrong is the whole message.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot extract {what}")]
    Extract {
        what: String,
        #[source]
        source: crate::layer::ExtractError,
    },
    #[error("cannot write a layer from {}", path.display())]
    WriteLayer {
        path: PathBuf,
        #[source]
        source: crate::layer::LayerError,
    },
    #[error("cannot parse {what}")]
    Document {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("layer {digest} does not unpack to its diff_id {expected} (it gives {actual}); the cache or image is corrupt")]
    DiffIdMismatch {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("cannot build an OCI document")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("\"{name}\" has no manifest for {platform} (it has {available})")]
    NoPlatform {
        name: String,
        platform: String,
        available: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Serializes with sorted object keys, so equal values give equal bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("OCI types serialize to JSON");
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

/// An open store. Holds the store lock shared for its lifetime.
pub struct Store {
    root: PathBuf,
    lock: File,
    /// The store a scratch store was made to verify: images this one
    /// lacks and does not build (bases, packages) are copied from it,
    /// every blob verified, instead of pulled (see [`Store::adopt`]).
    origin: Option<PathBuf>,
}

/// Whether `tag` is what the user's `name` means: the same text, or the
/// same image reference once normalized.
fn tag_matches(tag: &str, name: &str) -> bool {
    tag == name || crate::reference::ImageRef::parse(name).is_ok_and(|r| r.to_string() == tag)
}

/// Holds the store lock exclusively until dropped.
pub struct ExclusiveGuard<'a> {
    store: &'a Store,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        // Back to shared: the store stays in use by this process.
        let _ = self.store.lock.lock_shared();
    }
}

/// The file that says who the store's snapshots were made by.
const OWNERSHIP: &str = "ownership";

/// Who this process makes snapshots as: root; rootless with these id maps
/// (files on disk belong to the mapped ids); or an unprivileged user
/// without a namespace (no owners at all).
fn ownership() -> String {
    if crate::rootless::in_user_namespace() {
        let map = |file: &str| {
            fs::read_to_string(file)
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "rootless (uid map {}, gid map {})",
            map("/proc/self/uid_map"),
            map("/proc/self/gid_map")
        )
    } else if rustix::process::geteuid().is_root() {
        "as root".to_string()
    } else {
        format!("unprivileged (uid {})", rustix::process::geteuid().as_raw())
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`. A store is made
    /// either as root or rootless with one id mapping, and refuses the
    /// other (see [`StoreError::Ownership`]); a rootless one is private to
    /// its user (0700): its snapshots hold files that are setuid to the
    /// user or the user's subordinate ids.
    pub fn open(root: &Path) -> Result<Store> {
        // Absolute: overlay mounts name store paths after changing directory.
        let root = &std::path::absolute(root).map_err(io_at(root))?;
        fs::create_dir_all(root).map_err(io_at(root))?;
        if crate::rootless::in_user_namespace() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io_at(root))?;
        }
        check_ownership(root)?;
        for dir in [
            "blobs/sha256",
            "snapshots",
            "cache/steps",
            "sources",
            "tmp",
            "quarantine",
        ] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let lock_path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        lock.lock_shared().map_err(io_at(&lock_path))?;
        let store = Store {
            root: root.to_path_buf(),
            lock,
            origin: None,
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            atomic::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_at(&layout))?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _guard = store.exclusive()?;
            if !index.exists() {
                store.write_index(&image::empty_index())?;
            }
        }
        Ok(store)
    }

    /// Opens (creating) a scratch store at `root` that takes the images
    /// it does not build from `origin`.
    pub fn open_scratch(root: &Path, origin: &Store) -> Result<Store> {
        let mut store = Store::open(root)?;
        store.origin = Some(origin.root.clone());
        Ok(store)
    }

    /// For a scratch store: the image `name` of the origin store copied
    /// in (blobs checked against their digests) and tagged `name`; `None`
    /// when there is no origin or it lacks the image.
    pub fn adopt(
        &self,
        name: &str,
        platform: &crate::platform::Platform,
    ) -> Result<Option<Descriptor>> {
        let Some(origin_root) = &self.origin else {
            return Ok(None);
        };
        let origin = Store::open(origin_root)?;
        let descriptor = match origin.descriptor(name) {
            Ok(d) => d,
            Err(StoreError::UnknownImage(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let tag = origin
            .tags()?
            .into_iter()
            .find(|(_, d)| d.digest() == descriptor.digest())
            .map(|(tag, _)| tag);
        import::import_layout(self, origin_root, tag.as_deref(), platform, name).map(Some)
    }

    /// The default location: `$KBUILD_STORE`, else `~/.cache/kbuild`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("KBUILD_STORE") {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/var/cache"));
        cache.join("kbuild")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the lock exclusively (waits for other kbuild processes' shared
    /// holds to end... except our own, which is converted).
    pub fn exclusive(&self) -> Result<ExclusiveGuard<'_>> {
        self.lock.lock().map_err(io_at(&self.root.join("lock")))?;
        Ok(ExclusiveGuard { store: self })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    /// A fresh staging directory under `tmp/`.
    pub fn staging_dir(&self) -> Result<PathBuf> {
        let dir = atomic::temp_path_in(&self.root.join("tmp"));
        fs::create_dir(&dir).map_err(io_at(&dir))?;
        Ok(dir)
    }

    /// Starts writing a blob; [`BlobWriter::commit`] makes it visible.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.root.join("blobs/sha256");
        let path = atomic::temp_path_in(&dir);
        let file = File::create(&path).map_err(io_at(&path))?;
        Ok(BlobWriter {
            inner: Some(HashingWriter::new(file)),
            temp: path,
            dir,
        })
    }

    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_at(&w.temp))?;
        let (digest, _) = w.commit(None)?;
        Ok(digest)
    }

    /// Reads a whole blob and checks it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob(digest.clone()))
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(digest.clone()),
            _ => io_at(&path)(e),
        })
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            path: self.blob_path(digest),
            source,
        })
    }

    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { path, source })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let path = self.root.join("index.json");
        atomic::write(&path, &canonical_json(index)).map_err(io_at(&path))
    }

    /// Tag name -> manifest descriptor.
    pub fn tags(&self) -> Result<BTreeMap<String, Descriptor>> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .filter_map(|d| Some((image::ref_name(d)?.to_string(), d.clone())))
            .collect())
    }

    /// Points `name` at `manifest` (the commit point of an import or build).
    pub fn tag(&self, name: &str, manifest: Descriptor) -> Result<()> {
        let _guard = self.exclusive()?;
        let mut index = self.index()?;
        image::set_tag(&mut index, name, &manifest);
        self.write_index(&index)
    }

    /// Removes the tags `name` resolves to (as [`Store::descriptor`] finds
    /// it; a manifest digest removes every tag on it) and returns them.
    /// The content stays until `cache prune` finds nothing reaching it.
    pub fn untag(&self, name: &str) -> Result<Vec<String>> {
        let _guard = self.exclusive()?;
        let tags = self.tags()?;
        let target = self.descriptor(name)?;
        let by_name = tags
            .iter()
            .find(|(tag, d)| *d == &target && tag_matches(tag, name))
            .map(|(tag, _)| vec![tag.clone()]);
        let removed = by_name.unwrap_or_else(|| {
            tags.iter()
                .filter(|(_, d)| *d == &target)
                .map(|(tag, _)| tag.clone())
                .collect()
        });
        let mut index = self.index()?;
        let manifests = index
            .manifests()
            .iter()
            .filter(|d| image::ref_name(d).is_none_or(|tag| !removed.iter().any(|r| r == tag)))
            .cloned()
            .collect();
        index.set_manifests(manifests);
        self.write_index(&index)?;
        Ok(removed)
    }

    /// What a name points to: a tag as written, the same name normalized
    /// as an image reference (`debian` = `docker.io/library/debian:latest`),
    /// or a full manifest digest.
    pub fn descriptor(&self, name: &str) -> Result<Descriptor> {
        let tags = self.tags()?;
        let normalized = crate::reference::ImageRef::parse(name)
            .ok()
            .map(|r| r.to_string());
        tags.get(name)
            .or_else(|| normalized.and_then(|n| tags.get(&n)))
            .or_else(|| tags.values().find(|d| d.digest().to_string() == name))
            .cloned()
            .ok_or_else(|| StoreError::UnknownImage(name.to_string()))
    }

    /// The image manifest a name points to; for a multi-platform index,
    /// the host platform's.
    pub fn resolve(&self, name: &str) -> Result<(Descriptor, ImageManifest)> {
        let descriptor = self.descriptor(name)?;
        let descriptor = if image::is_index(descriptor.media_type()) {
            let index: ImageIndex = self.read_json(&Digest::try_from(descriptor.digest())?)?;
            let host = crate::platform::Platform::host();
            image::select_platform(&index, &host)
                .cloned()
                .ok_or_else(|| StoreError::NoPlatform {
                    name: name.to_string(),
                    platform: host.to_string(),
                    available: image::platforms(&index),
                })?
        } else {
            descriptor
        };
        let digest: Digest = Digest::try_from(descriptor.digest())?;
        let manifest = self.read_json(&digest)?;
        Ok((descriptor, manifest))
    }

    /// Moves a finished staging directory to be the snapshot of `diff_id`.
    /// Another process may have made it first: then ours is discarded.
    pub fn commit_snapshot(&self, staging: &Path, diff_id: &Digest) -> Result<PathBuf> {
        let dest = self.snapshot_path(diff_id);
        match fs::rename(staging, &dest) {
            Ok(()) => {}
            Err(_) if dest.is_dir() => remove_tree(staging)?,
            Err(e) => return Err(io_at(&dest)(e)),
        }
        atomic::fsync_dir(&self.root.join("snapshots")).map_err(io_at(&dest))?;
        Ok(dest)
    }
}

/// Records who makes this store's snapshots, or checks it is the same.
fn check_ownership(root: &Path) -> Result<()> {
    let path = root.join(OWNERSHIP);
    let current = ownership();
    match fs::read_to_string(&path) {
        Ok(found) if found.trim() == current => Ok(()),
        Ok(found) => Err(StoreError::Ownership {
            root: root.to_path_buf(),
            found: found.trim().to_string(),
            current,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            atomic::write(&path, format!("{current}\n").as_bytes()).map_err(io_at(&path))
        }
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// Removes a tree that may hold read-only directories (layers do).
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path).map_err(io_at(path))?;
            fs::remove_dir_all(path).map_err(io_at(path))
        }
        Err(e) => Err(io_at(path)(e)),
    }
}

fn make_writable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(path)? {
            make_writable(&entry?.path())?;
        }
    }
    Ok(())
}

/// A blob being written; dropped without commit, its temp file goes away.
pub struct BlobWriter {
    inner: Option<HashingWriter<File>>,
    temp: PathBuf,
    dir: PathBuf,
}

impl BlobWriter {
    /// Fsyncs and renames the blob to its digest; with `expected`, a
    /// mismatch is an error and nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (file, digest, size) = self.inner.take().expect("commit once").finish();
        if let Some(want) = expected {
            if want != &digest {
                drop(file);
                let _ = fs::remove_file(&self.temp);
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        file.sync_all().map_err(io_at(&self.temp))?;
        drop(file);
        let dest = self.dir.join(digest.hex());
        fs::rename(&self.temp, &dest).map_err(io_at(&dest))?;
        atomic::fsync_dir(&self.dir).map_err(io_at(&self.dir))?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.as_mut().expect("not committed").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Re-hashes a blob file.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut w = HashingWriter::new(io::sink());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
    }
    Ok(w.finish().1)
}
