//! Writing a stored image out: an OCI layout directory (`oci:DIR[:TAG]`),
//! an OCI layout tarball (`oci-archive:FILE`) or a `docker load`-able
//! tarball (`docker-archive:FILE`: the OCI layout plus Docker's
//! `manifest.json`, as `docker save` writes since Docker 25).
//!
//! Invariant: archives are written to a temp file and renamed, so a
//! failed export never leaves a half-written file at the destination.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Serialize;

use crate::digest::Digest;
use crate::store::image::{empty_index, set_tag, tagged};
use crate::store::{atomic, canonical_json, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    OciDir { path: PathBuf, tag: Option<String> },
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "unknown destination \"{0}\": use oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE"
    )]
    BadDestination(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FromStr for Destination {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, ExportError> {
        let bad = || ExportError::BadDestination(s.to_string());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match kind {
            "oci" => {
                // DIR:TAG, where the tag is what follows the last ':' after the last '/'.
                let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
                Ok(match rest[last_slash..].rfind(':') {
                    Some(i) => Destination::OciDir {
                        path: PathBuf::from(&rest[..last_slash + i]),
                        tag: Some(rest[last_slash + i + 1..].to_string()),
                    },
                    None => Destination::OciDir {
                        path: PathBuf::from(rest),
                        tag: None,
                    },
                })
            }
            "oci-archive" => Ok(Destination::OciArchive(PathBuf::from(rest))),
            "docker-archive" => Ok(Destination::DockerArchive(PathBuf::from(rest))),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::OciDir { path, tag: None } => write!(f, "oci:{}", path.display()),
            Destination::OciDir {
                path,
                tag: Some(tag),
            } => write!(f, "oci:{}:{tag}", path.display()),
            Destination::OciArchive(path) => write!(f, "oci-archive:{}", path.display()),
            Destination::DockerArchive(path) => write!(f, "docker-archive:{}", path.display()),
        }
    }
}

/// The tag part of a stored name (`debian:bookworm` -> `bookworm`), or `latest`.
fn tag_of(name: &str) -> String {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => name[last_slash + i + 1..].to_string(),
        None => "latest".to_string(),
    }
}

/// The blobs an image consists of: manifest, config, layers.
fn blobs_of(
    manifest_descriptor: &Descriptor,
    manifest: &ImageManifest,
) -> Result<Vec<Digest>, ExportError> {
    let parse = |d: &oci_spec::image::Digest| Digest::try_from(d).map_err(StoreError::from);
    let mut out = vec![
        parse(manifest_descriptor.digest())?,
        parse(manifest.config().digest())?,
    ];
    for layer in manifest.layers() {
        out.push(parse(layer.digest())?);
    }
    Ok(out)
}

pub fn export(store: &Store, name: &str, dest: &Destination) -> Result<(), ExportError> {
    let (descriptor, manifest) = store.resolve(name)?;
    export_image(store, &descriptor, &manifest, name, dest)
}

/// Exports an image of the store, tagged or not; `name` annotates it.
pub fn export_image(
    store: &Store,
    descriptor: &Descriptor,
    manifest: &ImageManifest,
    name: &str,
    dest: &Destination,
) -> Result<(), ExportError> {
    let (descriptor, manifest) = (descriptor.clone(), manifest.clone());
    match dest {
        Destination::OciDir { path, tag } => {
            let tag = tag.clone().unwrap_or_else(|| tag_of(name));
            write_layout_dir(store, path, &tag, &descriptor, &manifest)
        }
        Destination::OciArchive(path) => {
            write_archive(store, path, &tag_of(name), &descriptor, &manifest, None)
        }
        Destination::DockerArchive(path) => {
            let repo_tag = docker_repo_tag(name);
            write_archive(
                store,
                path,
                &tag_of(name),
                &descriptor,
                &manifest,
                Some(repo_tag),
            )
        }
    }
}

/// `debian` -> `debian:latest`; names keep their registry and path.
fn docker_repo_tag(name: &str) -> String {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    if name[last_slash..].contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn write_layout_dir(
    store: &Store,
    dir: &Path,
    tag: &str,
    descriptor: &Descriptor,
    manifest: &ImageManifest,
) -> Result<(), ExportError> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(io_at(&blob_dir))?;
    for digest in blobs_of(descriptor, manifest)? {
        let dest = blob_dir.join(digest.hex());
        if dest.exists() {
            continue;
        }
        let src = store.blob_path(&digest);
        // Same filesystem: share the blob; otherwise copy it.
        if fs::hard_link(&src, &dest).is_err() {
            let tmp = atomic::temp_path_in(&blob_dir);
            fs::copy(&src, &tmp).map_err(io_at(&src))?;
            fs::rename(&tmp, &dest).map_err(io_at(&dest))?;
        }
    }
    let layout = dir.join("oci-layout");
    atomic::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_at(&layout))?;
    let index_path = dir.join("index.json");
    let mut index: ImageIndex = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|_| empty_index()),
        Err(_) => empty_index(),
    };
    set_tag(&mut index, tag, descriptor);
    atomic::write(&index_path, &canonical_json(&index)).map_err(io_at(&index_path))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn write_archive(
    store: &Store,
    path: &Path,
    tag: &str,
    descriptor: &Descriptor,
    manifest: &ImageManifest,
    docker_repo_tag: Option<String>,
) -> Result<(), ExportError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = atomic::temp_path_in(dir);
    let result = (|| {
        let file = File::create(&tmp).map_err(io_at(&tmp))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        let mut add = |name: &str, bytes: &[u8]| -> Result<(), ExportError> {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            tar.append_data(&mut h, name, bytes).map_err(io_at(&tmp))
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut index = empty_index();
        index.set_manifests(vec![tagged(descriptor, tag)]);
        add("index.json", &canonical_json(&index))?;
        if let Some(repo_tag) = docker_repo_tag {
            let blob = |d: &oci_spec::image::Digest| format!("blobs/sha256/{}", d.digest());
            let entry = DockerManifestEntry {
                config: blob(manifest.config().digest()),
                repo_tags: vec![repo_tag],
                layers: manifest.layers().iter().map(|l| blob(l.digest())).collect(),
            };
            add(
                "manifest.json",
                &serde_json::to_vec(&[entry]).expect("serializable"),
            )?;
        }
        for digest in blobs_of(descriptor, manifest)? {
            let mut file = store.open_blob(&digest)?;
            let len = file.metadata().map_err(io_at(&tmp))?.len();
            let mut h = tar::Header::new_ustar();
            h.set_size(len);
            h.set_mode(0o644);
            h.set_mtime(0);
            tar.append_data(&mut h, format!("blobs/sha256/{}", digest.hex()), &mut file)
                .map_err(io_at(&tmp))?;
        }
        let mut out = tar.into_inner().map_err(io_at(&tmp))?;
        out.flush().map_err(io_at(&tmp))?;
        out.get_ref().sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, path).map_err(io_at(path))?;
        atomic::fsync_dir(dir).map_err(io_at(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        assert_eq!(
            "oci:/tmp/out:v1".parse::<Destination>().unwrap(),
            Destination::OciDir {
                path: "/tmp/out".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            "oci:out".parse::<Destination>().unwrap(),
            Destination::OciDir {
                path: "out".into(),
                tag: None
            }
        );
        assert_eq!(
            "oci-archive:x.tar".parse::<Destination>().unwrap(),
            Destination::OciArchive("x.tar".into())
        );
        assert_eq!(
            "docker-archive:d.tar".parse::<Destination>().unwrap(),
            Destination::DockerArchive("d.tar".into())
        );
        assert!("zip:x".parse::<Destination>().is_err());
        assert!("oci:".parse::<Destination>().is_err());
        assert_eq!(tag_of("quay.io/kairos/debian:12-core"), "12-core");
        assert_eq!(tag_of("localhost:5000/debian"), "latest");
        assert_eq!(
            docker_repo_tag("localhost:5000/debian"),
            "localhost:5000/debian:latest"
        );
    }
}
