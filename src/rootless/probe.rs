//! `kbuild doctor`'s proof that overlayfs works in the user namespace:
//! kbuild re-executed there mounts an overlay with `userxattr` in the
//! store's filesystem (which must support `user.*` xattrs) and deletes a
//! lower file through it, as every RUN step does.

use std::io;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use super::{spawn_mapped, Mapping, RootlessError};
use crate::sandbox::overlay::{self, Overlay};

/// The argument that makes the kbuild binary run the probe.
pub const PROBE_ARG: &str = "__rootless-probe";

/// Runs the probe under `dir` in a namespace mapped as `mapping`.
pub fn probe_overlay(mapping: &Mapping, dir: &Path) -> Result<(), String> {
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(PROBE_ARG)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = spawn_mapped(command, mapping).map_err(|e| match e.hint() {
        Some(hint) => format!("{e} ({hint})"),
        None => e.to_string(),
    })?;
    let output = child
        .wait_with_output()
        .map_err(|e| RootlessError::Spawn(e).to_string())?;
    match output.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
    }
}

/// The probe itself, inside the namespace: exit 0 when it worked.
pub fn probe_main(dir: &Path) -> ExitCode {
    let base = dir.join(format!(".rootless-probe-{}", std::process::id()));
    let result = probe_in(&base);
    let _ = std::fs::remove_dir_all(&base);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn probe_in(base: &Path) -> Result<(), String> {
    let at = |what: &'static str| move |e: io::Error| format!("{what}: {e}");
    for sub in ["lower", "upper", "work", "merged", "empty"] {
        std::fs::create_dir_all(base.join(sub)).map_err(at("create the probe's directories"))?;
    }
    std::fs::write(base.join("lower/file"), b"probe").map_err(at("write a lower file"))?;
    overlay::private_namespace().map_err(at("make a private mount namespace"))?;
    let merged = base.join("merged");
    overlay::mount(
        &Overlay {
            snapshots: base,
            lowers: &["lower".to_string()],
            upper: Some((base.join("upper"), base.join("work"))),
            empty: &base.join("empty"),
        },
        &merged,
    )
    .map_err(at("mount overlayfs with userxattr"))?;
    let deleted = std::fs::remove_file(merged.join("file"))
        .map_err(at("delete a lower file through the overlay"));
    let _ = rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH);
    deleted
}
