//! `--isolation=oci`: the runtime config (`config.json`) for runc, built
//! with `oci-spec` from the same [`Spec`] the built-in sandbox uses.
//!
//! Invariant: the config carries no cgroup resources and no cgroups path,
//! so runc only places the process in a cgroup and never configures
//! controllers (which fails on hybrid-cgroup hosts).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxNamespace, LinuxNamespaceType, MountBuilder,
    ProcessBuilder, RootBuilder, UserBuilder,
};

use super::users::Identity;
use super::SetupFailure;
use super::{Network, Spec};

/// A mount as the runtime sees it: sources are paths in the helper's view.
pub enum OciMount {
    Bind {
        target: String,
        source: PathBuf,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

/// Docker's default capability set for build steps, less `CAP_MKNOD`
/// (no device cgroup guards the nodes a step could make); the built-in
/// isolation keeps the same set (`confine::KEPT_CAPABILITIES`).
pub(super) const CAPABILITIES: [Capability; 13] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

fn mount(
    target: &str,
    typ: &str,
    source: &Path,
    options: &[&str],
) -> Result<oci_spec::runtime::Mount, SetupFailure> {
    MountBuilder::default()
        .destination(target)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| SetupFailure::other("the runtime config", e))
}

/// The JSON of the runtime config for `spec`, rooted at `rootfs`.
pub fn runtime_config(
    spec: &Spec,
    rootfs: &Path,
    identity: &Identity,
    host_files: &[&str],
    mounts: &[OciMount],
) -> Result<Vec<u8>, SetupFailure> {
    let caps: HashSet<Capability> = CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(|e| SetupFailure::other("the runtime config", e))?;
    let user = UserBuilder::default()
        .uid(identity.uid)
        .gid(identity.gid)
        .additional_gids(identity.groups.clone())
        .umask(0o022u32)
        .build()
        .map_err(|e| SetupFailure::other("the runtime config", e))?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.argv.clone())
        .env(spec.env.clone())
        .cwd(Path::new("/").join(crate::rootfs::clean(&spec.cwd)))
        .user(user)
        .capabilities(capabilities)
        .no_new_privileges(false)
        .build()
        .map_err(|e| SetupFailure::other("the runtime config", e))?;
    let mut config = oci_spec::runtime::Spec::default();
    config.set_process(Some(process));
    config.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(false)
            .build()
            .map_err(|e| SetupFailure::other("the runtime config", e))?,
    ));
    config.set_hostname(Some(spec.hostname.clone()));
    let mut all = config.mounts().clone().unwrap_or_default();
    for file in host_files {
        let target = format!("/{file}");
        all.push(mount(
            &target,
            "bind",
            &Path::new("/").join(file),
            &["rbind", "ro"],
        )?);
    }
    for m in mounts {
        all.push(match m {
            OciMount::Bind {
                target,
                source,
                read_only,
            } => mount(
                target,
                "bind",
                source,
                &["rbind", if *read_only { "ro" } else { "rw" }],
            )?,
            OciMount::Tmpfs { target, size } => {
                let size = size.map(|s| format!("size={s}"));
                let mut options = vec!["nosuid", "nodev", "mode=1777"];
                if let Some(size) = &size {
                    options.push(size);
                }
                mount(target, "tmpfs", Path::new("tmpfs"), &options)?
            }
        });
    }
    config.set_mounts(Some(all));
    let mut linux = config.linux().clone().unwrap_or_default();
    linux.set_resources(None);
    linux.set_cgroups_path(None);
    let namespaces: Vec<LinuxNamespace> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| ns.typ() != LinuxNamespaceType::Network || spec.network == Network::None)
        .filter(|ns| ns.typ() != LinuxNamespaceType::Cgroup)
        .collect();
    linux.set_namespaces(Some(namespaces));
    config.set_linux(Some(linux));
    serde_json::to_vec_pretty(&config).map_err(|e| SetupFailure::other("the runtime config", e))
}
