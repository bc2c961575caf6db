//! `kbuild release`: the project's whole matrix (or a filtered slice of
//! it, or one shard of it) built through the same library call as
//! `kbuild iso`, with per-cell SBOM and provenance, and one manifest and
//! `SHA256SUMS` for the release.
//!
//! ```text
//! matrix::cells -> --only -> --shard I/N
//!   per cell (core first, so its standard cells find it in the store):
//!     iso::build_iso (image: flavor, core, standard; check; push)
//!     <cell>/<name>.iso, .iso.sha256, .spdx.json, .provenance.json
//!   a failing cell is recorded (cell, step, message) and the others go on
//! manifest.json + SHA256SUMS        (a shard writes manifest-shard-I-of-N.json;
//!                                    `release merge` joins the shards)
//! ```
//!
//! Invariants:
//! * Artifacts are written whole (temp file + rename); `SHA256SUMS` lists
//!   every artifact by its path relative to the release directory, sorted,
//!   so a merged sharded release and an unsharded one with the same inputs
//!   and `SOURCE_DATE_EPOCH` list the same lines.
//! * Nothing in an artifact depends on the runner or the wall clock.

pub mod inventory;
mod matrix;
mod merge;
pub mod provenance;
pub mod sbom;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use inventory::{image_sbom, SbomInputs};
pub use matrix::{Cell, Shard};
pub use merge::merge;

use crate::compose::image::{ImageReport, ImageRequest};
use crate::compose::lock::Lock;
use crate::compose::packages::package_key;
use crate::disk::{build_disk, DiskFirmware, DiskFormat, DiskRequest};
use crate::executor::BuildOptions;
use crate::iso::{build_iso, IsoError, IsoRequest};
use crate::netboot::{build_netboot, NetbootRequest};
use crate::pipeline::Pipeline;
use crate::project::config::ReleaseArtifact;
use crate::project::Project;
use crate::reference::ImageRef;
use crate::report::{CellState, Event, Reporter};
use crate::sandbox::Cancel;
use crate::store::{atomic, Store};

/// What `kbuild release` was asked for.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    /// A glob on cell names (the ISO base names).
    pub only: Option<String>,
    pub shard: Option<Shard>,
    pub push: bool,
    pub output_dir: PathBuf,
    pub locked: bool,
    /// Instead of each flavor's base image (machines without the public
    /// registry).
    pub base_image: Option<String>,
    pub extra_args: BTreeMap<String, String>,
    pub options: BuildOptions,
    /// Step cache shared between runners: imported before the first cell
    /// (a missing one is a warning: the first runner has none yet) and
    /// exported after the last.
    pub cache_from: Option<ImageRef>,
    pub cache_to: Option<ImageRef>,
    /// `--verify`: rebuild each cell in an empty store and compare
    /// (needs `SOURCE_DATE_EPOCH`); the provenance says `reproducible`
    /// only for a cell that passed.
    pub verify: Option<i64>,
}

/// A file of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Relative to the release directory: `<cell>/<file>`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// One cell in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCell {
    pub cell: String,
    pub image: String,
    pub image_digest: String,
    /// Flavor, release, variant, arch, k8s and each composed package's
    /// version.
    pub versions: BTreeMap<String, String>,
    pub artifacts: Vec<Artifact>,
    /// The cell was rebuilt in an empty store with the same image digest
    /// and ISO bytes (`--verify`); absent when nobody checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproducible: Option<bool>,
}

/// What a release was asked to build, so that a merge can tell a whole
/// set of shards from a short one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Cells in the project's matrix.
    pub matrix_cells: usize,
    /// The `--only` glob, if one narrowed the matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
    /// Every cell of the selection, over all shards, in release order.
    pub cells: Vec<String>,
}

/// `manifest.json` (or one shard's part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub project: String,
    pub version: String,
    /// `I/N` for a shard's part; absent for a whole release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub selection: Selection,
    /// Every cell this run was to build is here (false when a cell failed
    /// or the run was interrupted).
    pub complete: bool,
    /// Cells this run was to build that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// Cells this run was to build and never started (interrupted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_attempted: Vec<String>,
    /// Sorted by cell name.
    pub cells: Vec<ManifestCell>,
}

/// Why a cell failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// `image`, `iso`, `sbom` or `provenance`.
    pub step: &'static str,
    pub message: String,
    /// What fixes it, when kbuild knows (the CLI prints it on a `hint:`
    /// line, as for a single build).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    pub cell: String,
    pub ok: bool,
    pub failure: Option<Failure>,
    /// The image build's stages (steps and cache hits), when it ran.
    pub image: Option<ImageReport>,
    pub iso_size: Option<u64>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    /// Every cell this run was to build succeeded.
    pub complete: bool,
    /// The run was cancelled (a signal) before it ended.
    pub interrupted: bool,
    /// Cells this run was to build and never started.
    pub not_attempted: Vec<String>,
    pub cells: Vec<CellReport>,
    pub manifest: PathBuf,
    /// Absent for a shard (`release merge` writes it).
    pub sums: Option<PathBuf>,
    pub failed: usize,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Project(#[from] crate::project::ProjectError),
    #[error("--only \"{pattern}\" is not a glob: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
    #[error("--only \"{0}\" matches no cell of the matrix (see `kbuild plan --flavor F`)")]
    NothingSelected(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a release manifest: {source}", path.display())]
    BadManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Input(#[from] crate::diagnose::InputFileError),
    #[error("cannot merge: {0}")]
    Merge(String),
    #[error("{0} is not in kbuild.lock, so the SBOM and provenance cannot name it by digest")]
    Unlocked(String),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

impl ReleaseError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
        move |source| ReleaseError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the request is at fault (exit 2).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            ReleaseError::Project(_)
                | ReleaseError::Input(_)
                | ReleaseError::Pattern { .. }
                | ReleaseError::NothingSelected(_)
                | ReleaseError::BadManifest { .. }
        )
    }
}

/// The manifest's file name for `shard`.
fn manifest_name(shard: Option<Shard>) -> String {
    match shard {
        Some(s) => format!("manifest-shard-{}-of-{}.json", s.index, s.count),
        None => "manifest.json".into(),
    }
}

/// The error and its causes on one line (a cause its parent's message
/// already shows is not repeated).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

/// Builds the selected cells and writes the release.
pub fn release(
    store: &Store,
    project: &Project,
    request: &ReleaseRequest,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<ReleaseReport, ReleaseError> {
    let started = Instant::now();
    let only = request
        .only
        .as_deref()
        .map(|pattern| {
            glob::Pattern::new(pattern).map_err(|source| ReleaseError::Pattern {
                pattern: pattern.to_string(),
                source,
            })
        })
        .transpose()?;
    let matrix = matrix::cells(project)?;
    let matrix_cells = matrix.len();
    let selected = matrix::select(matrix, only.as_ref(), None);
    let selection = Selection {
        matrix_cells,
        only: request.only.clone(),
        cells: selected.iter().map(|c| c.name.clone()).collect(),
    };
    let cells = matrix::select(selected, None, request.shard);
    if cells.is_empty() && request.shard.is_none() {
        return Err(ReleaseError::NothingSelected(
            request.only.clone().unwrap_or_default(),
        ));
    }
    let out = &request.output_dir;
    std::fs::create_dir_all(out).map_err(ReleaseError::io(out))?;
    let pipeline = Pipeline::new(store, reporter, cancel)?;
    let mut warnings = Vec::new();
    if let Some(reference) = &request.cache_from {
        if let Err(e) = pipeline.cache_from(reference, &request.options.registry) {
            warnings.push(format!("--cache-from: {}", chain(&e)));
        }
    }
    let mut reports = Vec::new();
    let mut manifest_cells = Vec::new();
    let mut not_attempted = Vec::new();
    for (index, cell) in cells.iter().enumerate() {
        if cancel.is_cancelled() {
            not_attempted.extend(cells[index..].iter().map(|c| c.name.clone()));
            break;
        }
        let cell_event = |state| {
            reporter.report(Event::Cell {
                name: cell.name.clone(),
                index: index + 1,
                total: cells.len(),
                state,
            })
        };
        cell_event(CellState::Started);
        let cell_started = Instant::now();
        let mut report = CellReport {
            cell: cell.name.clone(),
            ok: false,
            failure: None,
            image: None,
            iso_size: None,
            seconds: 0.0,
        };
        match build_cell(&pipeline, project, request, cell, cancel, &mut report) {
            Ok(entry) => {
                report.ok = true;
                manifest_cells.push(entry);
            }
            Err(failure) => report.failure = Some(failure),
        }
        report.seconds = cell_started.elapsed().as_secs_f64();
        cell_event(CellState::Finished {
            ok: report.ok,
            millis: cell_started.elapsed().as_millis(),
            failure: report
                .failure
                .as_ref()
                .map(|f| format!("{}: {}", f.step, f.message)),
        });
        reports.push(report);
    }
    manifest_cells.sort_by(|a, b| a.cell.cmp(&b.cell));
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.cell.clone())
        .collect();
    let complete = failed.is_empty() && not_attempted.is_empty();
    let manifest = Manifest {
        project: project.config.name.clone(),
        version: project.config.version.clone(),
        shard: request.shard.map(|s| s.to_string()),
        selection,
        complete,
        failed: failed.clone(),
        not_attempted: not_attempted.clone(),
        cells: manifest_cells,
    };
    let manifest_path = out.join(manifest_name(request.shard));
    write_json(&manifest_path, &manifest)?;
    let sums = match request.shard {
        Some(_) => None,
        None => Some(write_sums(out, &manifest.cells)?),
    };
    // Like --cache-from, a cache that cannot be written costs the next
    // runner time, never this release its artifacts.
    if let Some(reference) = &request.cache_to {
        if let Err(e) = pipeline.cache_to(reference, &request.options.registry) {
            warnings.push(format!("--cache-to: {}", chain(&e)));
        }
    }
    Ok(ReleaseReport {
        complete,
        interrupted: cancel.is_cancelled(),
        not_attempted,
        failed: failed.len(),
        cells: reports,
        manifest: manifest_path,
        sums,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes `value` as JSON, leaving a file that already says the same
/// untouched (a re-run of an unchanged release rewrites nothing).
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ReleaseError> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serializable");
    bytes.push(b'\n');
    atomic::write_if_changed(path, &bytes)
        .map(drop)
        .map_err(ReleaseError::io(path))
}

/// `SHA256SUMS` of every artifact of `cells`, sorted by path (untouched
/// when it already lists them).
fn write_sums(out: &Path, cells: &[ManifestCell]) -> Result<PathBuf, ReleaseError> {
    let lines: BTreeSet<String> = cells
        .iter()
        .flat_map(|c| &c.artifacts)
        .map(|a| format!("{}  {}\n", a.sha256, a.path))
        .collect();
    let path = out.join("SHA256SUMS");
    atomic::write_if_changed(&path, lines.into_iter().collect::<String>().as_bytes())
        .map_err(ReleaseError::io(&path))?;
    Ok(path)
}

fn failure(step: &'static str) -> impl FnOnce(&(dyn std::error::Error + 'static)) -> Failure {
    move |error| Failure {
        step,
        message: chain(error),
        hint: crate::diagnose::hint(error),
    }
}

/// The files one artifact kind gave a cell, with their sha256.
struct Made {
    built: Option<ImageReport>,
    image: String,
    image_digest: String,
    files: Vec<(PathBuf, String)>,
}

/// One cell: its image and every artifact kbuild.yaml asks for (the ISO,
/// disks, the netboot set), then SBOM and provenance.
fn build_cell(
    pipeline: &Pipeline,
    project: &Project,
    request: &ReleaseRequest,
    cell: &Cell,
    cancel: &Cancel,
    report: &mut CellReport,
) -> Result<ManifestCell, Failure> {
    let (store, reporter) = (pipeline.store(), pipeline.reporter());
    let dir = request.output_dir.join(&cell.name);
    let iso_request = IsoRequest {
        image: ImageRequest {
            selection: cell.request.clone(),
            extra_args: request.extra_args.clone(),
            base_image: request.base_image.clone(),
            locked: request.locked,
            skip_check: false,
            output: None,
            push: request.push,
            options: request.options.clone(),
        },
        from: None,
        output_dir: dir.clone(),
        name: None,
        overlay: None,
        extra_cmdline: None,
        uki: None,
    };
    let wanted = &project.config.release.artifacts;
    let mut made = Vec::new();
    let mut iso = None;
    if wanted.contains(&ReleaseArtifact::Iso) {
        let built = build_iso(store, project, &iso_request, reporter, cancel).map_err(|e| {
            let step = match e {
                IsoError::Compose(_) => "image",
                _ => "iso",
            };
            failure(step)(&e)
        })?;
        report.iso_size = Some(built.size);
        made.push(Made {
            built: built.built.clone(),
            image: built.image.clone(),
            image_digest: built.image_digest.clone(),
            files: vec![(built.iso.clone(), built.sha256.clone())],
        });
        iso = Some(built);
    }
    let formats: Vec<DiskFormat> = wanted
        .iter()
        .filter_map(|a| match a {
            ReleaseArtifact::Raw => Some(DiskFormat::Raw),
            ReleaseArtifact::Qcow2 => Some(DiskFormat::Qcow2),
            ReleaseArtifact::Vhd => Some(DiskFormat::Vhd),
            ReleaseArtifact::Gce => Some(DiskFormat::Gce),
            _ => None,
        })
        .collect();
    if !formats.is_empty() {
        let arch = project
            .select(&cell.request)
            .map_err(|e| failure("image")(&e))?
            .id
            .arch;
        let firmware = match arch {
            crate::project::Arch::Amd64 => DiskFirmware::Both,
            crate::project::Arch::Arm64 => DiskFirmware::Efi,
        };
        let disk_request = DiskRequest {
            iso: iso_request.clone(),
            formats,
            firmware,
            size: None,
            cloud_config: None,
        };
        let disk = build_disk(store, project, &disk_request, reporter, cancel)
            .map_err(|e| failure("disk")(&e))?;
        made.push(Made {
            built: disk.built.clone(),
            image: disk.image.clone(),
            image_digest: disk.image_digest.clone(),
            files: disk
                .artifacts
                .iter()
                .map(|a| (a.path.clone(), a.sha256.clone()))
                .collect(),
        });
    }
    if wanted.contains(&ReleaseArtifact::Netboot) {
        let netboot_request = NetbootRequest {
            iso: iso_request.clone(),
            base_url: None,
        };
        let set = build_netboot(store, project, &netboot_request, reporter, cancel)
            .map_err(|e| failure("netboot")(&e))?;
        made.push(Made {
            built: set.built.clone(),
            image: set.image.clone(),
            image_digest: set.image_digest.clone(),
            files: set
                .files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect(),
        });
    }
    let first = made.first().ok_or_else(|| Failure {
        step: "image",
        message: "kbuild.yaml's release.artifacts is empty".into(),
        hint: None,
    })?;
    let built = made
        .iter()
        .find_map(|m| m.built.clone())
        .ok_or_else(|| Failure {
            step: "image",
            message: "the image was not built".into(),
            hint: None,
        })?;
    let (image, image_digest) = (first.image.clone(), first.image_digest.clone());
    if let Some(other) = made.iter().find(|m| m.image_digest != image_digest) {
        return Err(Failure {
            step: "image",
            message: format!(
                "the cell's artifacts came from two images ({image_digest} and {}): its inputs changed during the release",
                other.image_digest
            ),
            hint: None,
        });
    }
    report.image = Some(built.clone());
    let reproducible = match (request.verify, &iso) {
        (Some(epoch), Some(iso)) => Some(verify_cell(
            pipeline,
            project,
            &iso_request,
            iso,
            epoch,
            cancel,
        )?),
        (Some(_), None) => {
            return Err(Failure {
                step: "verify",
                message: "--verify compares ISOs, and kbuild.yaml's release.artifacts has no iso"
                    .into(),
                hint: Some("add iso to release.artifacts, or release without --verify".into()),
            })
        }
        (None, _) => None,
    };
    let selection = project
        .select(&cell.request)
        .map_err(|e| failure("image")(&e))?;
    let lock = Lock::load(&project.root).map_err(|e| failure("sbom")(&e))?;
    let composed = composed_packages(&built.plan.layers, &lock, selection.id.arch.as_str())
        .map_err(|e| failure("provenance")(&e))?;
    let sbom_path = dir.join(format!("{}.spdx.json", cell.name));
    let flavor = cell.request.flavor.clone().unwrap_or_default();
    let family = project
        .flavors
        .get(&flavor)
        .map(|f| format!("{:?}", f.family).to_lowercase())
        .unwrap_or_default();
    let inputs = SbomInputs {
        image: &image,
        composed: &composed,
        distro: Some(&format!(
            "{flavor}-{}",
            cell.request.release.clone().unwrap_or_default()
        )),
        fallback_vendor: &family,
    };
    let sbom = image_sbom(pipeline, &request.options, &inputs).map_err(|e| failure("sbom")(&e))?;
    write_json(&sbom_path, &sbom).map_err(|e| failure("sbom")(&e))?;
    let files: Vec<&(PathBuf, String)> = made.iter().flat_map(|m| &m.files).collect();
    let mut subjects = vec![provenance::Subject {
        name: image.clone(),
        digest: image_digest.clone(),
    }];
    subjects.extend(files.iter().map(|(path, sha256)| {
        provenance::Subject {
            name: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            digest: format!("sha256:{sha256}"),
        }
    }));
    let statement = provenance::statement(
        &subjects,
        &format!("kbuild/{}", env!("CARGO_PKG_VERSION")),
        serde_json::to_value(&built.plan).unwrap_or_default(),
        &materials(project, request, &selection, &lock, &composed)
            .map_err(|e| failure("provenance")(&e))?,
        // `--verify` rebuilt the image and the ISO; disks and netboot sets
        // were not rebuilt, so the claim is made only when the ISO is all.
        reproducible == Some(true) && wanted.as_slice() == [ReleaseArtifact::Iso],
    );
    let provenance_path = dir.join(format!("{}.provenance.json", cell.name));
    write_json(&provenance_path, &statement).map_err(|e| failure("provenance")(&e))?;
    let mut artifacts = Vec::new();
    for (path, sha256) in &files {
        artifacts.push(
            known_artifact(&request.output_dir, path, sha256.clone())
                .map_err(|e| failure("artifact")(&e))?,
        );
        artifacts.push(
            artifact(&request.output_dir, &crate::artifact::sums_path(path))
                .map_err(|e| failure("artifact")(&e))?,
        );
    }
    for path in [sbom_path, provenance_path] {
        artifacts.push(artifact(&request.output_dir, &path).map_err(|e| failure("artifact")(&e))?);
    }
    Ok(ManifestCell {
        cell: cell.name.clone(),
        image,
        image_digest,
        versions: versions(&built, &composed),
        artifacts,
        reproducible,
    })
}

/// `--verify`: the cell built again in an empty store must give the same
/// image and ISO; a difference fails the cell, naming what differs.
fn verify_cell(
    pipeline: &Pipeline,
    project: &Project,
    iso_request: &IsoRequest,
    iso: &crate::iso::IsoReport,
    epoch: i64,
    cancel: &Cancel,
) -> Result<bool, Failure> {
    let subject = crate::verify::Subject::Cell {
        project,
        request: iso_request.clone(),
    };
    let first = crate::verify::Outcome {
        image_digest: iso.image_digest.clone(),
        iso_sha256: Some(iso.sha256.clone()),
    };
    let report = crate::verify::rebuild_and_compare(
        pipeline.store(),
        &subject,
        first,
        epoch,
        pipeline.reporter(),
        cancel,
    )
    .map_err(|e| failure("verify")(&e))?;
    if report.reproducible {
        return Ok(true);
    }
    let what = match &report.diff {
        Some(diff) => {
            let paths: Vec<&str> = diff.paths.iter().take(5).map(|p| p.path.as_str()).collect();
            format!(
                "{} config values and {} paths differ (first: {}); `kbuild verify` with this cell's flags lists them",
                diff.config.len(),
                diff.paths.len(),
                paths.join(", ")
            )
        }
        None => "the same image gave a different ISO".into(),
    };
    Err(Failure {
        step: "verify",
        message: format!("not reproducible: {what}"),
        hint: None,
    })
}

/// `path`'s record, named relative to the release directory.
fn artifact(out: &Path, path: &Path) -> Result<Artifact, ReleaseError> {
    let sha256 = crate::store::hash_file(path)
        .map_err(ReleaseError::io(path))?
        .hex()
        .to_string();
    known_artifact(out, path, sha256)
}

/// [`artifact`] of a file whose sha256 is already known (the ISO, hashed
/// as it was written or recognised untouched), so it is not read again.
fn known_artifact(out: &Path, path: &Path, sha256: String) -> Result<Artifact, ReleaseError> {
    let size = std::fs::metadata(path)
        .map_err(ReleaseError::io(path))?
        .len();
    let relative = path.strip_prefix(out).unwrap_or(path);
    Ok(Artifact {
        path: relative.to_string_lossy().into_owned(),
        size,
        sha256,
    })
}

/// The packages the cell's layers composed, with the digests the lock
/// recorded for them; a package the lock does not know is an error, never
/// a silent gap in the SBOM and the provenance.
fn composed_packages(
    layers: &[crate::compose::LayerPlan],
    lock: &Lock,
    arch: &str,
) -> Result<Vec<sbom::Composed>, ReleaseError> {
    let unlocked = |name: &str| ReleaseError::Unlocked(format!("composed package {name} ({arch})"));
    let mut composed = Vec::new();
    for package in layers.iter().flat_map(|layer| &layer.packages) {
        let key = package_key(&package.name, arch);
        let (source, digest, image) = match (&package.source.image, &package.source.url) {
            (Some(image), _) => {
                let entry = lock
                    .images
                    .get(&key)
                    .ok_or_else(|| unlocked(&package.name))?;
                (image.clone(), entry.digest.clone(), true)
            }
            (None, Some(url)) => {
                let entry = lock.urls.get(&key).ok_or_else(|| unlocked(&package.name))?;
                let sha = entry.sha256.trim_start_matches("sha256:");
                (url.clone(), format!("sha256:{sha}"), false)
            }
            (None, None) => {
                return Err(ReleaseError::Unlocked(format!(
                    "composed package {} has no source for {arch}",
                    package.name
                )))
            }
        };
        composed.push(sbom::Composed {
            name: package.name.clone(),
            version: package.version.clone(),
            digest,
            source,
            image,
        });
    }
    Ok(composed)
}

fn versions(built: &ImageReport, composed: &[sbom::Composed]) -> BTreeMap<String, String> {
    let plan = &built.plan;
    let mut versions = BTreeMap::from([
        ("flavor".to_string(), plan.flavor.clone()),
        ("flavor_release".to_string(), plan.flavor_release.clone()),
        ("variant".to_string(), plan.variant.to_string()),
        ("arch".to_string(), plan.arch.to_string()),
    ]);
    if let Some(k8s) = &plan.k8s {
        versions.insert(k8s.distribution.to_string(), k8s.version.clone());
    }
    for package in composed {
        versions.insert(package.name.clone(), package.version.clone());
    }
    versions
}

/// The base image, the composed packages and the flavor's spec, each by
/// digest; one that cannot be named by digest is an error.
fn materials(
    project: &Project,
    request: &ReleaseRequest,
    selection: &crate::project::Selection,
    lock: &Lock,
    composed: &[sbom::Composed],
) -> Result<Vec<provenance::Material>, ReleaseError> {
    let id = &selection.id;
    let cell = format!("{}/{}/{}", id.flavor, id.flavor_release, id.arch);
    let base_key = match request.base_image {
        Some(_) => format!("base-override {cell}"),
        None => format!("base {cell}"),
    };
    let base = lock
        .images
        .get(&base_key)
        .ok_or_else(|| ReleaseError::Unlocked(format!("the base image ({base_key})")))?;
    let mut materials = vec![provenance::Material {
        uri: base.reference.clone(),
        digest: base.digest.clone(),
    }];
    materials.extend(composed.iter().map(|p| provenance::Material {
        uri: p.source.clone(),
        digest: p.digest.clone(),
    }));
    let spec = crate::project::dockerfile_path(&project.root, &id.flavor);
    let hash = crate::store::hash_file(&spec).map_err(ReleaseError::io(&spec))?;
    let relative = spec.strip_prefix(&project.root).unwrap_or(&spec);
    materials.push(provenance::Material {
        uri: relative.to_string_lossy().into_owned(),
        digest: hash.to_string(),
    });
    Ok(materials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_composed_package_missing_from_the_lock_is_an_error() {
        let package = |name: &str, image: bool| crate::compose::PackagePlan {
            name: name.into(),
            version: "v1".into(),
            source: crate::project::package::ArtifactSource {
                image: image.then(|| format!("quay.io/kairos/{name}:v1")),
                url: (!image).then(|| format!("https://example.invalid/{name}")),
                sha256: None,
                format: None,
                digest: None,
            },
            files: Vec::new(),
        };
        let layers = [crate::compose::LayerPlan {
            layer: "core",
            packages: vec![package("framework", true), package("k3s", false)],
        }];
        let mut lock = Lock::default();
        lock.images.insert(
            package_key("framework", "amd64"),
            crate::compose::lock::LockedImage {
                reference: "quay.io/kairos/framework:v1".into(),
                digest: "sha256:aa".into(),
            },
        );
        let err = composed_packages(&layers, &lock, "amd64").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("composed package k3s (amd64) is not in kbuild.lock"),
            "{err}"
        );
        lock.urls.insert(
            package_key("k3s", "amd64"),
            crate::compose::lock::LockedUrl {
                url: "https://example.invalid/k3s".into(),
                sha256: "bb".into(),
            },
        );
        let composed = composed_packages(&layers, &lock, "amd64").unwrap();
        let digests: Vec<&str> = composed.iter().map(|c| c.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:aa", "sha256:bb"]);
    }

    #[test]
    fn errors_read_on_one_line_with_their_causes() {
        let inner = std::io::Error::other("disk full");
        let outer = ReleaseError::Io {
            path: "/out/x.iso".into(),
            source: inner,
        };
        assert_eq!(chain(&outer), "/out/x.iso: disk full");
        let nested = ReleaseError::Merge("b/b.iso changed".into());
        assert_eq!(chain(&nested), "cannot merge: b/b.iso changed");
    }
}
