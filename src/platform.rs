//! Target and build platforms (`os/arch[/variant]`) and the automatic
//! platform ARGs BuildKit defines from them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform \"{0}\": expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64")]
pub struct PlatformError(pub String);

impl Platform {
    /// Parses `linux/amd64`, `linux/arm/v7`; architecture aliases are
    /// normalized to the OCI names (`x86_64` -> `amd64`, `aarch64` -> `arm64`).
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(PlatformError(text.to_string()));
        }
        let arch = normalize_arch(&parts[1].to_ascii_lowercase());
        let variant = parts.get(2).map(|v| v.to_ascii_lowercase());
        // arm64's only variant is v8, which is implied.
        let variant = variant.filter(|v| !(arch == "arm64" && v == "v8"));
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            arch,
            variant,
        })
    }

    /// The platform this process runs on.
    pub fn host() -> Platform {
        let arch = normalize_arch(std::env::consts::ARCH);
        let variant = (arch == "arm").then(|| "v7".to_string());
        Platform {
            os: "linux".into(),
            arch,
            variant,
        }
    }

    /// The automatic ARGs for this platform with the given prefix
    /// (`TARGET` or `BUILD`): `{P}PLATFORM`, `{P}OS`, `{P}ARCH`, `{P}VARIANT`.
    pub fn automatic_args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.arch.clone()),
            (
                format!("{prefix}VARIANT"),
                self.variant.clone().unwrap_or_default(),
            ),
        ]
    }
}

fn normalize_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" | "x86" => "386",
        "powerpc64" | "ppc64el" => "ppc64le",
        "armhf" | "armv7l" => "arm",
        other => other,
    }
    .to_string()
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/aarch64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn automatic_args_follow_buildkit_names() {
        let args = Platform::parse("linux/arm/v7")
            .unwrap()
            .automatic_args("TARGET");
        assert_eq!(
            args,
            vec![
                ("TARGETPLATFORM".to_string(), "linux/arm/v7".to_string()),
                ("TARGETOS".into(), "linux".into()),
                ("TARGETARCH".into(), "arm".into()),
                ("TARGETVARIANT".into(), "v7".into()),
            ]
        );
    }
}
