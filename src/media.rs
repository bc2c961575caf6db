//! Media types: every `application/vnd...` string kbuild reads or writes,
//! and the tests on them. Code matches on `oci_spec::image::MediaType`
//! where it can; these are the names it has no variant for, and the layer
//! types kbuild writes.

use oci_spec::image::MediaType;

/// Docker's manifest list and schema 2 image manifest, which registries
/// still serve and the store keeps byte for byte.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Layers as kbuild writes them.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The OCI empty descriptor's type (`{}`).
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The step cache as an OCI artifact: its artifact type and config.
pub const CACHE_ARTIFACT: &str = "application/vnd.kbuild.cache.v1+json";
pub const CACHE_CONFIG: &str = "application/vnd.kbuild.cache.config.v1+json";

/// An OCI image index or a Docker manifest list.
pub fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST_LIST,
        _ => false,
    }
}

/// An OCI image manifest or a Docker schema 2 manifest.
pub fn is_manifest(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageManifest => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST,
        _ => false,
    }
}
