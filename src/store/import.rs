//! `kbuild import`: a rootfs tarball becomes a one-layer image, like
//! `docker import`.
//!
//! The tarball goes through the safe extractor into a staging snapshot;
//! the layer is then written from that tree by the reproducible writer, so
//! the same tarball and `SOURCE_DATE_EPOCH` always give the same digests;
//! without an epoch the image is dated by the tarball's newest file.
//! The tag is written last: a crash at any point leaves no visible image.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use oci_spec::image::{ConfigBuilder, Descriptor};

use super::cache::LayerRecord;
use super::image::{commit_image, history_entry, rfc3339, NewImage};
use super::{io_at, remove_tree, Result, Store, StoreError};
use crate::layer::{self, ExtractLimits, ExtractMode, TreeKind, WriteOptions};
use crate::report::{phase, Reporter};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub layer: WriteOptions,
    /// OCI architecture name of the image (e.g. amd64).
    pub architecture: String,
}

/// Imports `tarball` (plain, gzip or zstd) as `name`.
pub fn import_tarball(
    store: &Store,
    tarball: &Path,
    name: &str,
    options: &ImportOptions,
    reporter: &dyn Reporter,
) -> Result<Descriptor> {
    let staging = store.staging_dir()?;
    let result = import_into(store, tarball, name, options, reporter, &staging);
    // Whatever happened, the staging area must not outlive this call.
    let cleanup = remove_tree(&staging);
    let descriptor = result?;
    cleanup?;
    Ok(descriptor)
}

fn import_into(
    store: &Store,
    tarball: &Path,
    name: &str,
    options: &ImportOptions,
    reporter: &dyn Reporter,
    staging: &Path,
) -> Result<Descriptor> {
    let rootfs = staging.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(io_at(&rootfs))?;
    let file = File::open(tarball).map_err(crate::diagnose::InputFileError::at(tarball))?;
    let stats = phase(
        reporter,
        "extract",
        || {
            let reader = layer::decompressing_reader(BufReader::with_capacity(1 << 20, file))
                .map_err(io_at(tarball))?;
            layer::extract_layer(
                reader,
                &rootfs,
                ExtractMode::Flatten,
                ExtractLimits::default(),
            )
            .map_err(|source| StoreError::Extract {
                what: tarball.display().to_string(),
                source,
            })
        },
        |s| format!("{} entries", s.entries),
    )?;
    for (path, node) in &stats.placeholders {
        reporter.report(crate::report::Event::Warning {
            message: format!(
                "/{path}: {node} kept as a stand-in (no CAP_MKNOD rootless): it is in the layer and the ISO's live root, not in the on-disk snapshot"
            ),
        });
    }
    let blob = store.blob_writer()?;
    let (blob, info) = phase(
        reporter,
        "write layer",
        || {
            layer::write_layer_with(
                &rootfs,
                TreeKind::Full,
                &options.layer,
                &stats.placeholders,
                blob,
            )
            .map_err(|source| StoreError::WriteLayer {
                path: rootfs.clone(),
                source,
            })
        },
        |(_, info)| format!("{} ({} bytes)", info.digest, info.size),
    )?;
    blob.commit(Some(&info.digest))?;
    store.commit_snapshot_with(&rootfs, &info.diff_id, &stats.placeholders)?;
    let source = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Without an epoch the tarball dates itself (its newest file), so the
    // same tarball gives the same image on every import.
    let created = rfc3339(options.layer.source_date_epoch.unwrap_or(info.newest_mtime));
    let (descriptor, _) = commit_image(
        store,
        &NewImage {
            layers: &[LayerRecord::from(&info)],
            history: vec![history_entry(
                &created,
                &format!("kbuild import {source}"),
                false,
            )],
            architecture: &options.architecture,
            config: ConfigBuilder::default()
                .env(vec![format!("PATH={}", super::image::DEFAULT_PATH)])
                .build()?,
            created,
        },
    )?;
    store.tag(name, descriptor.clone())?;
    Ok(descriptor)
}

/// Copies the image `tag` (or the only image) of the OCI image layout at
/// `dir` into the store, every blob verified against its digest, and
/// tags it `name`. For a multi-platform index, `platform` picks the entry.
pub fn import_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    platform: &crate::platform::Platform,
    name: &str,
) -> Result<Descriptor> {
    use oci_spec::image::{ImageIndex, ImageManifest};
    let read_index = |path: &Path| -> Result<ImageIndex> {
        let bytes = std::fs::read(path).map_err(io_at(path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            path: path.to_path_buf(),
            source,
        })
    };
    let index = read_index(&dir.join("index.json"))?;
    let wanted = |d: &&Descriptor| match tag {
        Some(tag) => d
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .is_some_and(|t| t == tag),
        None => true,
    };
    let candidates: Vec<&Descriptor> = index.manifests().iter().filter(wanted).collect();
    let [top] = candidates.as_slice() else {
        return Err(StoreError::Invalid(format!(
            "{}: {} images match {}; name one as oci:DIR:TAG",
            dir.display(),
            candidates.len(),
            tag.unwrap_or("no tag")
        )));
    };
    let copy = |digest: &crate::digest::Digest| -> Result<()> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let path = dir.join("blobs/sha256").join(digest.hex());
        let mut source = File::open(&path).map_err(io_at(&path))?;
        let mut blob = store.blob_writer()?;
        std::io::copy(&mut source, &mut blob).map_err(io_at(&path))?;
        blob.commit(Some(digest)).map(|_| ())
    };
    let mut manifest_descriptor = (*top).clone();
    let mut digest = crate::digest::Digest::try_from(top.digest())?;
    copy(&digest)?;
    if super::image::is_index(top.media_type()) {
        let inner: ImageIndex = store.read_json(&digest)?;
        manifest_descriptor = super::image::select_platform(&inner, platform)
            .cloned()
            .ok_or_else(|| StoreError::NoPlatform {
                name: dir.display().to_string(),
                platform: platform.to_string(),
                available: super::image::platforms(&inner),
            })?;
        digest = crate::digest::Digest::try_from(manifest_descriptor.digest())?;
        copy(&digest)?;
    }
    let manifest: ImageManifest = store.read_json(&digest)?;
    copy(&crate::digest::Digest::try_from(
        manifest.config().digest(),
    )?)?;
    for layer in manifest.layers() {
        copy(&crate::digest::Digest::try_from(layer.digest())?)?;
    }
    store.tag(name, manifest_descriptor.clone())?;
    Ok(manifest_descriptor)
}
