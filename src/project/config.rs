//! `kbuild.yaml`: the build matrix (flavors x releases x variants x
//! Kubernetes distributions x architectures) and project-wide settings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Prefix of artifact names (`kairos` gives `kairos-debian-...iso`).
    pub name: String,
    pub version: String,
    /// Registry and organisation images are tagged under, e.g. `quay.io/kairos`.
    pub registry: String,
    pub default_flavor: String,
    #[serde(default = "default_model")]
    pub model: String,
    pub arches: Vec<Arch>,
    #[serde(default = "default_output_dir")]
    pub output_dir: PathBuf,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    pub flavors: BTreeMap<String, FlavorEntry>,
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub kubernetes: BTreeMap<K8sDistribution, K8sEntry>,
    #[serde(default)]
    pub iso: IsoSettings,
    #[serde(default)]
    pub release: ReleaseSettings,
}

/// `release:` in kbuild.yaml: what `kbuild release` writes per cell.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettings {
    /// Each cell's artifacts, in this order [default: iso].
    #[serde(default = "default_artifacts")]
    pub artifacts: Vec<ReleaseArtifact>,
}

impl Default for ReleaseSettings {
    fn default() -> Self {
        ReleaseSettings {
            artifacts: default_artifacts(),
        }
    }
}

fn default_artifacts() -> Vec<ReleaseArtifact> {
    vec![ReleaseArtifact::Iso]
}

/// One kind of release artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseArtifact {
    /// The hybrid ISO (`kbuild iso`).
    Iso,
    /// Disks (`kbuild disk --format ...`).
    Raw,
    Qcow2,
    Vhd,
    Gce,
    /// The network boot set (`kbuild netboot`).
    Netboot,
}

/// `iso:` in kbuild.yaml: how ISOs pack the live root.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IsoSettings {
    #[serde(default)]
    pub squashfs: SquashfsSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SquashfsSettings {
    #[serde(default)]
    pub compression: SquashfsCompression,
    /// The compressor's level (zstd 1-22, gzip 1-9, xz none); absent gives
    /// the compressor's kbuild default.
    #[serde(default)]
    pub level: Option<u32>,
}

impl SquashfsSettings {
    /// The level fits the compressor: zstd 1-22, gzip 1-9; xz and lz4
    /// take none (mksquashfs would refuse it, or drop it unsaid).
    pub fn validate(&self) -> Result<(), String> {
        let range = match self.compression {
            SquashfsCompression::Zstd => Some(1..=22),
            SquashfsCompression::Gzip => Some(1..=9),
            SquashfsCompression::Xz | SquashfsCompression::Lz4 => None,
        };
        let name = format!("{:?}", self.compression).to_lowercase();
        match (self.level, range) {
            (None, _) => Ok(()),
            (Some(level), Some(range)) if range.contains(&level) => Ok(()),
            (Some(level), Some(range)) => Err(format!(
                "{name} levels are {} to {}, not {level}",
                range.start(),
                range.end()
            )),
            (Some(_), None) => Err(format!("{name} takes no level: leave `level` out")),
        }
    }
}

impl Default for SquashfsSettings {
    fn default() -> Self {
        SquashfsSettings {
            compression: SquashfsCompression::Zstd,
            level: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SquashfsCompression {
    #[default]
    Zstd,
    Gzip,
    Xz,
    Lz4,
}

fn default_model() -> String {
    "generic".into()
}

fn default_output_dir() -> PathBuf {
    "out".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlavorEntry {
    pub releases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sEntry {
    pub versions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The kernel's name for the serial console of the machines kbuild
    /// boots this architecture on (a PC's first UART; the PL011 of arm64
    /// boards and QEMU's virt machine).
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::Amd64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    pub fn parse(text: &str) -> Option<Arch> {
        match text {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Flavor base + the Kairos framework layer.
    Core,
    /// Core + the provider layer (provider-kairos and a Kubernetes distribution).
    Standard,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Core => "core",
            Variant::Standard => "standard",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum K8sDistribution {
    K3s,
    K0s,
}

impl K8sDistribution {
    pub fn as_str(self) -> &'static str {
        match self {
            K8sDistribution::K3s => "k3s",
            K8sDistribution::K0s => "k0s",
        }
    }
}

impl fmt::Display for K8sDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
