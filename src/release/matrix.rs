//! The release matrix: every cell of kbuild.yaml (flavor x release x arch x
//! variant, and for standard x Kubernetes distribution x version), in one
//! deterministic order, filtered by `--only` and sliced by `--shard I/N`.
//!
//! Invariants:
//! * The order depends only on the project: cells sort by flavor, release
//!   and arch, core before the standard cells built on it, then by name.
//!   So every shard of every runner computes the same slices.
//! * The shards partition the selection: each cell is in exactly one.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::project::{Project, ProjectError, SelectionRequest, Variant};

/// One cell to build.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The ISO base name by the naming scheme; also the cell's directory.
    pub name: String,
    /// `flavor/release/arch`: the cells that share a core.
    pub group: String,
    #[serde(skip)]
    pub request: SelectionRequest,
}

/// `--shard I/N`: the I-th of N slices (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard takes I/N with 1 <= I <= N (e.g. 1/3), not \"{text}\"");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = index.trim().parse().map_err(|_| bad())?;
        let count: usize = count.trim().parse().map_err(|_| bad())?;
        match (1..=count).contains(&index) {
            true => Ok(Shard { index, count }),
            false => Err(bad()),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Every cell of the project's matrix, in release order.
pub fn cells(project: &Project) -> Result<Vec<Cell>, ProjectError> {
    let config = &project.config;
    let mut cells = Vec::new();
    for (flavor, entry) in &config.flavors {
        for release in &entry.releases {
            for arch in &config.arches {
                let base = SelectionRequest {
                    flavor: Some(flavor.clone()),
                    release: Some(release.clone()),
                    arch: Some(*arch),
                    ..SelectionRequest::default()
                };
                let mut requests = Vec::new();
                if config.variants.contains(&Variant::Core) {
                    requests.push(SelectionRequest {
                        variant: Some(Variant::Core),
                        ..base.clone()
                    });
                }
                if config.variants.contains(&Variant::Standard) {
                    for (distro, k8s) in &config.kubernetes {
                        for version in &k8s.versions {
                            requests.push(SelectionRequest {
                                variant: Some(Variant::Standard),
                                k8s: Some(*distro),
                                k8s_version: Some(version.clone()),
                                ..base.clone()
                            });
                        }
                    }
                }
                let group = format!("{flavor}/{release}/{arch}");
                for request in requests {
                    let name = project.select(&request)?.id.iso_name();
                    cells.push(Cell {
                        name,
                        group: group.clone(),
                        request,
                    });
                }
            }
        }
    }
    Ok(cells)
}

/// The cells `only` (a glob on the cell name) keeps, then the slice of
/// `shard`: cell `k` of the filtered list goes to shard `k mod N + 1`.
pub fn select(cells: Vec<Cell>, only: Option<&glob::Pattern>, shard: Option<Shard>) -> Vec<Cell> {
    cells
        .into_iter()
        .filter(|cell| only.is_none_or(|pattern| pattern.matches(&cell.name)))
        .enumerate()
        .filter(|(k, _)| shard.is_none_or(|s| k % s.count + 1 == s.index))
        .map(|(_, cell)| cell)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        Project::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_matrix_is_every_cell_once_core_first() {
        let project = project();
        let all = cells(&project).unwrap();
        let releases: usize = project
            .config
            .flavors
            .values()
            .map(|f| f.releases.len())
            .sum();
        let k8s: usize = project
            .config
            .kubernetes
            .values()
            .map(|k| k.versions.len())
            .sum();
        assert_eq!(
            all.len(),
            releases * project.config.arches.len() * (1 + k8s)
        );
        let names: std::collections::BTreeSet<&str> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), all.len(), "names are unique");
        let debian: Vec<&str> = all
            .iter()
            .filter(|c| c.group == "debian/12/amd64")
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(debian.len(), 3, "{debian:?}");
        assert!(debian[0].contains("-core-"), "{debian:?}");
    }

    #[test]
    fn shards_partition_the_filtered_selection() {
        let project = project();
        let only = glob::Pattern::new("kairos-debian-*").unwrap();
        let picked = select(cells(&project).unwrap(), Some(&only), None);
        assert!(picked.iter().all(|c| c.name.starts_with("kairos-debian-")));
        let mut seen: Vec<String> = Vec::new();
        for index in 1..=2 {
            let shard = Shard { index, count: 2 };
            let slice = select(cells(&project).unwrap(), Some(&only), Some(shard));
            assert!(!slice.is_empty(), "shard {shard} is empty");
            seen.extend(slice.into_iter().map(|c| c.name));
        }
        seen.sort();
        let mut all: Vec<String> = picked.into_iter().map(|c| c.name).collect();
        all.sort();
        assert_eq!(seen, all);
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
