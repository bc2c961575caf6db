//! Install hints: which package manager the host uses, from
//! `/etc/os-release` (`ID`, then `ID_LIKE`).

use super::Tool;

/// A family of distributions that share a package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Debian,
    Fedora,
    Alpine,
    Suse,
    Unknown,
}

impl Distribution {
    /// The host's, from `/etc/os-release`.
    pub fn of_host() -> Distribution {
        let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        Distribution::from_os_release(&text)
    }

    pub fn from_os_release(text: &str) -> Distribution {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim_matches(['"', '\'']).to_ascii_lowercase())
                .unwrap_or_default()
        };
        let id = field("ID");
        let like = field("ID_LIKE");
        std::iter::once(id.as_str())
            .chain(like.split_whitespace())
            .find_map(|name| match name {
                "debian" | "ubuntu" => Some(Distribution::Debian),
                "fedora" | "rhel" | "centos" | "rocky" | "almalinux" => Some(Distribution::Fedora),
                "alpine" => Some(Distribution::Alpine),
                "suse" | "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "sles" => {
                    Some(Distribution::Suse)
                }
                _ => None,
            })
            .unwrap_or(Distribution::Unknown)
    }
}

/// The command that installs `tool` on `distribution`.
pub fn install_command(tool: &Tool, distribution: Distribution) -> String {
    let p = &tool.packages;
    match distribution {
        Distribution::Debian => format!("install it with `apt-get install {}`", p.debian),
        Distribution::Fedora => format!("install it with `dnf install {}`", p.fedora),
        Distribution::Alpine => format!("install it with `apk add {}`", p.alpine),
        Distribution::Suse => format!("install it with `zypper install {}`", p.suse),
        Distribution::Unknown => format!(
            "install the package that provides {} (Debian: {}, Fedora: {}, Alpine: {}, openSUSE: {})",
            tool.name, p.debian, p.fedora, p.alpine, p.suse
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::MKSQUASHFS;

    #[test]
    fn hints_follow_the_distribution() {
        let debian = Distribution::from_os_release("ID=debian\nVERSION_ID=\"12\"\n");
        assert_eq!(debian, Distribution::Debian);
        let rocky = Distribution::from_os_release("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n");
        assert_eq!(rocky, Distribution::Fedora);
        let mint = Distribution::from_os_release("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
        assert_eq!(mint, Distribution::Debian);
        assert_eq!(
            install_command(&MKSQUASHFS, Distribution::Suse),
            "install it with `zypper install squashfs`"
        );
        assert!(
            install_command(&MKSQUASHFS, Distribution::Unknown).contains("Debian: squashfs-tools")
        );
    }
}
