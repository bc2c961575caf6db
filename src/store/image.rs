//! Image config, manifest and index documents (through `oci-spec`), built
//! reproducibly: `created` comes from `SOURCE_DATE_EPOCH` when it is set
//! (else from what the image is made of, never the clock at commit time),
//! and every document is serialized with sorted keys.

use oci_spec::image::{
    Arch, Config, Descriptor, DescriptorBuilder, History, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, Os, RootFsBuilder, SCHEMA_VERSION,
};

use super::cache::LayerRecord;
use super::{canonical_json, Result, Store, REF_NAME};
use crate::digest::Digest;
use crate::platform::Platform;

pub use crate::media::{is_index, is_manifest};

/// The `os/arch[/variant]` of an index entry, when it says.
fn entry_platform(entry: &Descriptor) -> Option<Platform> {
    let p = entry.platform().as_ref()?;
    let text = match p.variant() {
        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    };
    Platform::parse(&text).ok()
}

/// The entry of `index` for `platform`: same OS and architecture, and the
/// same variant when the platform names one (else the first listed, as
/// containerd picks `arm/v7` for plain `arm`).
pub fn select_platform<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    let candidates = || {
        index.manifests().iter().filter(|entry| {
            entry_platform(entry).is_some_and(|p| p.os == platform.os && p.arch == platform.arch)
        })
    };
    match &platform.variant {
        Some(v) => {
            candidates().find(|e| entry_platform(e).is_some_and(|p| p.variant.as_ref() == Some(v)))
        }
        None => candidates().next(),
    }
}

/// The platforms an index lists, for error messages.
pub fn platforms(index: &ImageIndex) -> String {
    let list: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(entry_platform)
        .map(|p| p.to_string())
        .collect();
    if list.is_empty() {
        "no platform entries".into()
    } else {
        list.join(", ")
    }
}

/// The tag (`org.opencontainers.image.ref.name`) of an index entry.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

/// `manifest` annotated with `name` as its tag.
pub fn tagged(manifest: &Descriptor, name: &str) -> Descriptor {
    let mut d = manifest.clone();
    d.set_annotations(Some(
        [(REF_NAME.to_string(), name.to_string())]
            .into_iter()
            .collect(),
    ));
    d
}

/// Points `name` at `manifest` in `index`, replacing what it pointed to;
/// entries stay sorted by tag so the index bytes are reproducible.
pub fn set_tag(index: &mut ImageIndex, name: &str, manifest: &Descriptor) {
    let mut manifests: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| ref_name(d) != Some(name))
        .cloned()
        .collect();
    manifests.push(tagged(manifest, name));
    manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
    index.set_manifests(manifests);
}

pub fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("an empty index is valid")
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch of an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS`,
/// fractions ignored, `Z` or a numeric offset).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Howard Hinnant's days-from-civil, the inverse of `rfc3339`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let rest = text.get(19..)?;
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    match rest.as_bytes().first() {
        Some(b'Z') | Some(b'z') | None => {}
        Some(sign @ (b'+' | b'-')) => {
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            let offset = hours * 3600 + minutes * 60;
            secs -= if *sign == b'+' { offset } else { -offset };
        }
        Some(_) => return None,
    }
    Some(secs)
}

/// `SOURCE_DATE_EPOCH` from the environment, if set and valid.
pub fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

/// The time everything made from an image is dated (an ISO's files and
/// volume, a UKI's signature, an SBOM): `SOURCE_DATE_EPOCH`, else the
/// image's creation time, else 0. So the same image gives the same bytes.
pub fn epoch(config: &ImageConfiguration) -> i64 {
    source_date_epoch()
        .or_else(|| config.created().as_deref().and_then(parse_rfc3339))
        .unwrap_or(0)
}

fn arch_of(name: &str) -> Arch {
    Arch::from(name)
}

/// The PATH an image without ENV PATH runs with (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What an image is made of, for [`commit_image`].
pub struct NewImage<'a> {
    pub layers: &'a [LayerRecord],
    /// Oldest first; entries without a layer say `empty_layer`.
    pub history: Vec<History>,
    pub architecture: &'a str,
    /// The runtime config: env, labels, entrypoint, cmd, workdir, user, ...
    pub config: Config,
    pub created: String,
}

fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(oci_spec::image::Digest::from(digest))
        .size(size)
        .build()
        .expect("descriptor fields are set")
}

/// One history entry, as BuildKit writes them.
pub fn history_entry(created: &str, created_by: &str, empty_layer: bool) -> History {
    let mut builder = HistoryBuilder::default()
        .created(created.to_string())
        .created_by(created_by.to_string())
        .comment("kbuild".to_string());
    if empty_layer {
        builder = builder.empty_layer(true);
    }
    builder.build().expect("history fields are set")
}

/// Writes config and manifest blobs; returns the manifest descriptor
/// (untagged: tagging is the caller's commit point).
pub fn commit_image(store: &Store, image: &NewImage) -> Result<(Descriptor, ImageManifest)> {
    let diff_ids = image
        .layers
        .iter()
        .map(|l| l.diff_id.to_string())
        .collect::<Vec<_>>();
    let configuration: ImageConfiguration = ImageConfigurationBuilder::default()
        .created(image.created.clone())
        .architecture(arch_of(image.architecture))
        .os(Os::Linux)
        .config(image.config.clone())
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .expect("rootfs fields are set"),
        )
        .history(image.history.clone())
        .build()?;
    let config_bytes = canonical_json(&configuration);
    let config_digest = store.put_blob(&config_bytes)?;
    let layers = image
        .layers
        .iter()
        .map(|l| descriptor(MediaType::from(l.media_type.as_str()), &l.digest, l.size))
        .collect::<Vec<_>>();
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config_bytes.len() as u64,
        ))
        .layers(layers)
        .build()?;
    let manifest_bytes = canonical_json(&manifest);
    let manifest_digest = store.put_blob(&manifest_bytes)?;
    Ok((
        descriptor(
            MediaType::ImageManifest,
            &manifest_digest,
            manifest_bytes.len() as u64,
        ),
        manifest,
    ))
}

/// The same image with `annotations` on its manifest (a new manifest blob;
/// config and layers unchanged). Returns its descriptor and manifest.
pub fn annotate(
    store: &Store,
    manifest: &ImageManifest,
    annotations: std::collections::HashMap<String, String>,
) -> Result<(Descriptor, ImageManifest)> {
    let mut manifest = manifest.clone();
    manifest.set_annotations(Some(annotations));
    let bytes = canonical_json(&manifest);
    let digest = store.put_blob(&bytes)?;
    Ok((
        descriptor(MediaType::ImageManifest, &digest, bytes.len() as u64),
        manifest,
    ))
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, rfc3339};

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs), "{secs}");
        }
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.123456+01:00"),
            Some(1_700_000_000)
        );
        for bad in [
            "",
            "2023-13-01T00:00:00Z",
            "2023-11-14 22:13",
            "2023-11-14T22:13:20Q",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_epoch_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
