//! Artifact names as Kairos spells them.
//!
//! ISO: `<name>-<flavor>-<flavor_release>-<variant>-<arch>-<model>-<version>[-<k8s>v<k8s_version>]`
//! Image: `<registry>/<flavor>:<the same without "<name>-<flavor>-", '+' as '-'>`
//! (OCI tags cannot hold '+').

use serde::Serialize;

use super::config::{Arch, K8sDistribution, Variant};

/// Everything that identifies one artifact of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactId {
    pub project: String,
    pub flavor: String,
    pub flavor_release: String,
    pub variant: Variant,
    pub arch: Arch,
    pub model: String,
    pub version: String,
    pub k8s: Option<(K8sDistribution, String)>,
}

impl ArtifactId {
    /// `<release>-<variant>-<arch>-<model>-<version>[-<k8s>v<ver>]`.
    fn suffix(&self) -> String {
        let mut s = format!(
            "{}-{}-{}-{}-{}",
            self.flavor_release, self.variant, self.arch, self.model, self.version
        );
        if let Some((distro, version)) = &self.k8s {
            let bare = version.strip_prefix('v').unwrap_or(version);
            s.push_str(&format!("-{distro}v{bare}"));
        }
        s
    }

    /// The ISO's base name, without `.iso`.
    pub fn iso_name(&self) -> String {
        format!("{}-{}-{}", self.project, self.flavor, self.suffix())
    }

    /// `<registry>/<flavor>:<tag>`.
    pub fn image_ref(&self, registry: &str) -> String {
        let registry = registry.trim_end_matches('/');
        format!(
            "{registry}/{}:{}",
            self.flavor,
            self.suffix().replace('+', "-")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k8s: Option<(K8sDistribution, &str)>) -> ArtifactId {
        ArtifactId {
            project: "kairos".into(),
            flavor: "ubuntu".into(),
            flavor_release: "24.04".into(),
            variant: if k8s.is_some() {
                Variant::Standard
            } else {
                Variant::Core
            },
            arch: Arch::Amd64,
            model: "generic".into(),
            version: "v3.2.4".into(),
            k8s: k8s.map(|(d, v)| (d, v.to_string())),
        }
    }

    #[test]
    fn core_names() {
        let core = id(None);
        assert_eq!(
            core.iso_name(),
            "kairos-ubuntu-24.04-core-amd64-generic-v3.2.4"
        );
        assert_eq!(
            core.image_ref("quay.io/kairos"),
            "quay.io/kairos/ubuntu:24.04-core-amd64-generic-v3.2.4"
        );
    }

    #[test]
    fn standard_names_carry_k8s_and_sanitize_plus() {
        let std = id(Some((K8sDistribution::K3s, "v1.31.1+k3s1")));
        assert_eq!(
            std.iso_name(),
            "kairos-ubuntu-24.04-standard-amd64-generic-v3.2.4-k3sv1.31.1+k3s1"
        );
        assert_eq!(
            std.image_ref("quay.io/kairos/"),
            "quay.io/kairos/ubuntu:24.04-standard-amd64-generic-v3.2.4-k3sv1.31.1-k3s1"
        );
        let k0s = id(Some((K8sDistribution::K0s, "1.30.4+k0s.0")));
        assert!(k0s.iso_name().ends_with("-k0sv1.30.4+k0s.0"));
    }
}
