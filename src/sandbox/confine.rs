//! What a RUN step may do as root in its namespaces (built-in isolation).
//!
//! The step runs as uid 0 without a user namespace, so its limits are the
//! ones runc gives a container by default, applied here in PID 1 just
//! before the command starts:
//! * the capability bounding set is Docker's default set less `CAP_MKNOD`
//!   ([`KEPT_CAPABILITIES`]): no mounts (`CAP_SYS_ADMIN`), no
//!   `open_by_handle_at` (`CAP_DAC_READ_SEARCH`), no modules, raw I/O,
//!   clock, ptrace of other processes or device nodes;
//! * `/proc/sys`, `/proc/sysrq-trigger` and the other host-global `/proc`
//!   files are read-only, and `/proc/kcore` and friends are masked, the
//!   paths runc's defaults name; without `CAP_SYS_ADMIN` the step cannot
//!   remount them.
//!
//! Everything here runs between fork and exec in a single-threaded helper.

use std::io;
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::MountFlags;
use rustix::thread::{CapabilitySet, CapabilitySets};

/// The same set as the OCI runtime config (`oci::CAPABILITIES`).
pub const KEPT_CAPABILITIES: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// Host-global `/proc` entries a step may read but not write.
const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `/proc` and `/sys` entries a step may not see at all.
const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Drops every capability outside [`KEPT_CAPABILITIES`] from the bounding
/// set and from the current sets, so neither this process nor anything it
/// executes (setuid binaries included) can regain them.
pub fn drop_capabilities() -> io::Result<()> {
    for bit in 0..64 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if KEPT_CAPABILITIES.contains(cap) {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            // EINVAL: this kernel has no capability with that number.
            Ok(()) | Err(Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let current = rustix::thread::capabilities(None)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: current.effective & KEPT_CAPABILITIES,
            permitted: current.permitted & KEPT_CAPABILITIES,
            inheritable: current.inheritable & KEPT_CAPABILITIES,
        },
    )?;
    rustix::thread::clear_ambient_capability_set()?;
    Ok(())
}

/// Makes [`READ_ONLY`] read-only and hides [`MASKED`] in the step's
/// freshly mounted `/proc`. Entries this kernel lacks are skipped.
pub fn mask_proc() -> io::Result<()> {
    for path in READ_ONLY {
        match rustix::mount::mount_bind(path, path) {
            Ok(()) => {}
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        }
        rustix::mount::mount_remount(
            path,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            "",
        )?;
    }
    for path in MASKED {
        let masked = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => rustix::mount::mount(
                "tmpfs",
                path,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                None,
            ),
            Ok(_) => rustix::mount::mount_bind(Path::new("/dev/null"), path),
            Err(_) => continue,
        };
        masked?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both isolations keep the same capabilities.
    #[test]
    fn builtin_and_oci_keep_the_same_capabilities() {
        let oci: Vec<String> = super::super::oci::CAPABILITIES
            .iter()
            .map(|c| format!("{c:?}").to_ascii_uppercase())
            .collect();
        let builtin: Vec<String> = KEPT_CAPABILITIES
            .iter_names()
            .map(|(name, _)| name.replace('_', ""))
            .collect();
        let mut oci = oci;
        let mut builtin = builtin;
        oci.sort();
        builtin.sort();
        assert_eq!(oci, builtin);
    }
}
