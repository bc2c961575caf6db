//! Host programs kbuild runs (xorriso, mksquashfs, mtools, qemu, runc):
//! located on `PATH`, version-checked before any work starts, run with an
//! argument vector (never a shell string), and failing with a typed error
//! that carries the tail of their stderr and an install hint for the host's
//! distribution.
//!
//! Invariants:
//! * A [`Tool`] is only run through [`Located`], which exists only for a
//!   program that was found and whose version was accepted.
//! * Arguments are passed as they are; nothing is ever interpreted by a
//!   shell.

mod hint;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use hint::Distribution;

use crate::sandbox::Cancel;

/// Lines of stderr kept for an error.
const STDERR_TAIL: usize = 12;

/// A host program kbuild may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// What the user calls it (also the program's name on `PATH`).
    pub name: &'static str,
    /// What kbuild needs it for, shown by `kbuild doctor`.
    pub purpose: &'static str,
    /// The arguments that make it print its version.
    pub version_args: &'static [&'static str],
    /// The oldest version known to work, as (major, minor).
    pub minimum: Option<(u32, u32)>,
    /// The package that provides it: Debian/Ubuntu, Fedora/RHEL, Alpine,
    /// openSUSE.
    pub packages: Packages,
}

/// Package names per distribution family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packages {
    pub debian: &'static str,
    pub fedora: &'static str,
    pub alpine: &'static str,
    pub suse: &'static str,
}

pub const XORRISO: Tool = Tool {
    name: "xorriso",
    purpose: "assembles hybrid BIOS/UEFI ISOs",
    version_args: &["-version"],
    minimum: Some((1, 5)),
    packages: Packages {
        debian: "xorriso",
        fedora: "xorriso",
        alpine: "xorriso",
        suse: "xorriso",
    },
};

pub const MKSQUASHFS: Tool = Tool {
    name: "mksquashfs",
    purpose: "writes the live root filesystem of an ISO (4.5+ is reproducible by default)",
    version_args: &["-version"],
    minimum: Some((4, 5)),
    packages: Packages {
        debian: "squashfs-tools",
        fedora: "squashfs-tools",
        alpine: "squashfs-tools",
        suse: "squashfs",
    },
};

/// mtools writes the EFI system partition: unlike mkfs.fat 4.2 it honours
/// `SOURCE_DATE_EPOCH` for every time it writes, and `-N` sets the volume
/// serial, so the FAT image is reproducible byte for byte.
const MTOOLS: Packages = Packages {
    debian: "mtools",
    fedora: "mtools",
    alpine: "mtools",
    suse: "mtools",
};

pub const MFORMAT: Tool = Tool {
    name: "mformat",
    purpose: "formats the EFI system partition of an ISO",
    version_args: &["--version"],
    minimum: Some((4, 0)),
    packages: MTOOLS,
};

pub const MMD: Tool = Tool {
    name: "mmd",
    purpose: "makes the directories of the EFI system partition",
    version_args: &["--version"],
    minimum: Some((4, 0)),
    packages: MTOOLS,
};

pub const MCOPY: Tool = Tool {
    name: "mcopy",
    purpose: "copies the EFI boot files into the EFI system partition",
    version_args: &["--version"],
    minimum: Some((4, 0)),
    packages: MTOOLS,
};

/// e2fsprogs writes the disk's ext2 partitions into the disk file itself
/// (`mke2fs -E offset=`, `debugfs -w`); 1.43 has `E2FSPROGS_FAKE_TIME`,
/// `hash_seed` and offsets.
const E2FSPROGS: Packages = Packages {
    debian: "e2fsprogs",
    fedora: "e2fsprogs",
    alpine: "e2fsprogs e2fsprogs-extra",
    suse: "e2fsprogs",
};

pub const MKE2FS: Tool = Tool {
    name: "mke2fs",
    purpose: "makes the ext2 partitions of a disk image (COS_OEM, COS_RECOVERY)",
    version_args: &["-V"],
    minimum: Some((1, 43)),
    packages: E2FSPROGS,
};

pub const DEBUGFS: Tool = Tool {
    name: "debugfs",
    purpose: "writes the files of a disk image's ext2 partitions",
    version_args: &["-V"],
    minimum: Some((1, 43)),
    packages: E2FSPROGS,
};

pub const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    purpose: "converts raw disk images to qcow2 and VHD",
    version_args: &["--version"],
    minimum: Some((5, 0)),
    packages: Packages {
        debian: "qemu-utils",
        fedora: "qemu-img",
        alpine: "qemu-img",
        suse: "qemu-tools",
    },
};

pub const QEMU_X86_64: Tool = Tool {
    name: "qemu-system-x86_64",
    purpose: "boots ISOs for `kbuild boot`",
    version_args: &["--version"],
    minimum: Some((7, 0)),
    packages: Packages {
        debian: "qemu-system-x86",
        fedora: "qemu-system-x86-core",
        alpine: "qemu-system-x86_64",
        suse: "qemu-x86",
    },
};

pub const QEMU_AARCH64: Tool = Tool {
    name: "qemu-system-aarch64",
    purpose: "boots arm64 ISOs for `kbuild boot`",
    version_args: &["--version"],
    minimum: Some((7, 0)),
    packages: Packages {
        debian: "qemu-system-arm",
        fedora: "qemu-system-aarch64-core",
        alpine: "qemu-system-aarch64",
        suse: "qemu-arm",
    },
};

pub const RUNC: Tool = Tool {
    name: "runc",
    purpose: "runs RUN steps with `--isolation oci`",
    version_args: &["--version"],
    minimum: Some((1, 0)),
    packages: Packages {
        debian: "runc",
        fedora: "runc",
        alpine: "runc",
        suse: "runc",
    },
};

pub const OPENSSL: Tool = Tool {
    name: "openssl",
    purpose: "makes the keys and certificates of `kbuild keys generate`",
    version_args: &["version"],
    minimum: Some((1, 1)),
    packages: Packages {
        debian: "openssl",
        fedora: "openssl",
        alpine: "openssl",
        suse: "openssl",
    },
};

pub const OSSLSIGNCODE: Tool = Tool {
    name: "osslsigncode",
    purpose: "signs unified kernel images (Authenticode) for Secure Boot",
    version_args: &["--version"],
    minimum: Some((2, 0)),
    packages: Packages {
        debian: "osslsigncode",
        fedora: "osslsigncode",
        alpine: "osslsigncode",
        suse: "osslsigncode",
    },
};

/// Every host program kbuild may run, in the order `kbuild doctor` lists
/// them (what only another architecture needs, it lists per architecture).
pub const ALL: [&Tool; 12] = [
    &RUNC,
    &MKSQUASHFS,
    &XORRISO,
    &MFORMAT,
    &MMD,
    &MCOPY,
    &MKE2FS,
    &DEBUGFS,
    &QEMU_IMG,
    &QEMU_X86_64,
    &OPENSSL,
    &OSSLSIGNCODE,
];

/// What `kbuild iso` runs, located before it does any work.
pub const ISO: [&Tool; 5] = [&MKSQUASHFS, &XORRISO, &MFORMAT, &MMD, &MCOPY];

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{} is not installed (kbuild needs it: {})", tool.name, tool.purpose)]
    Missing { tool: &'static Tool, hint: String },
    #[error("{} {found} is too old: kbuild needs {}.{} or newer", tool.name, needed.0, needed.1)]
    TooOld {
        tool: &'static Tool,
        found: String,
        needed: (u32, u32),
        hint: String,
    },
    #[error("{} at {} printed no version we could read", tool.name, path.display())]
    NoVersion { tool: &'static Tool, path: PathBuf },
    #[error("cannot run {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} was interrupted", tool.name)]
    Cancelled { tool: &'static Tool },
    #[error("{} {} failed ({status}){}", tool.name, args, tail_text(stderr_tail))]
    Failed {
        tool: &'static Tool,
        /// The arguments, for the message only (quoted for reading).
        args: String,
        status: String,
        stderr_tail: Vec<String>,
    },
}

impl ToolError {
    /// The install command for the host's distribution.
    pub fn hint(&self) -> Option<&str> {
        match self {
            ToolError::Missing { hint, .. } | ToolError::TooOld { hint, .. } => Some(hint),
            _ => None,
        }
    }
}

fn tail_text(tail: &[String]) -> String {
    match tail.is_empty() {
        true => String::new(),
        false => format!(":\n  {}", tail.join("\n  ")),
    }
}

/// A tool found on this host, with the version it reported.
#[derive(Debug, Clone)]
pub struct Located {
    pub tool: &'static Tool,
    pub path: PathBuf,
    pub version: String,
}

/// Finds `tool` on `PATH` and checks its version.
pub fn locate(tool: &'static Tool) -> Result<Located, ToolError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    locate_in(tool, &path)
}

/// Finds `tool` in the directories of `search` (a `PATH`-style list).
pub fn locate_in(tool: &'static Tool, search: &OsStr) -> Result<Located, ToolError> {
    let hint = || hint::install_command(tool, Distribution::of_host());
    let path = std::env::split_paths(search)
        .map(|dir| dir.join(tool.name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| ToolError::Missing { tool, hint: hint() })?;
    let version = read_version(tool, &path)?;
    if let Some(needed) = tool.minimum {
        if parse_version(&version).is_some_and(|found| found < needed) {
            return Err(ToolError::TooOld {
                tool,
                found: version,
                needed,
                hint: hint(),
            });
        }
    }
    Ok(Located {
        tool,
        path,
        version,
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The version `path` reported, remembered for this process by the
/// file's identity: a release locates the same tools once per cell, and
/// each `--version` run costs tens of milliseconds; an upgraded binary
/// is another file (inode, size, mtime) and is asked again.
fn read_version(tool: &'static Tool, path: &Path) -> Result<String, ToolError> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    type Identity = (PathBuf, u64, u64, u64, i64, i64);
    static SEEN: Mutex<BTreeMap<Identity, String>> = Mutex::new(BTreeMap::new());
    let identity = std::fs::metadata(path).ok().map(|m| {
        (
            path.to_path_buf(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
        )
    });
    let seen = |id: &Identity| {
        SEEN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    };
    if let Some(version) = identity.as_ref().and_then(seen) {
        return Ok(version);
    }
    let version = ask_version(tool, path)?;
    if let Some(id) = identity {
        SEEN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, version.clone());
    }
    Ok(version)
}

/// The first `N.N[.N]` the program prints about its version.
fn ask_version(tool: &'static Tool, path: &Path) -> Result<String, ToolError> {
    let output = Command::new(path)
        .args(tool.version_args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
    let text = [output.stdout, output.stderr].concat();
    let text = String::from_utf8_lossy(&text);
    first_version(&text).ok_or_else(|| ToolError::NoVersion {
        tool,
        path: path.to_path_buf(),
    })
}

fn first_version(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|word| word.trim_matches('.'))
        .find(|word| parse_version(word).is_some())
        .map(str::to_string)
}

/// `(major, minor)` of `4.5`, `1.5.6`, `7.2.19`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Located {
    /// A command for this program with `args`, for callers that stream
    /// its output themselves.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.path);
        command.args(args);
        command
    }

    /// Runs the program to the end; stdout is returned, stderr kept for
    /// the error when it fails.
    pub fn run<I, S>(&self, args: I) -> Result<Vec<u8>, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_command(self.command(args), &Cancel::default())
    }

    /// Runs `command` (made by [`Located::command`], with whatever
    /// environment the caller set) to the end, or kills it as soon as
    /// `cancel` is set.
    pub fn run_command(&self, command: Command, cancel: &Cancel) -> Result<Vec<u8>, ToolError> {
        self.run_captured(command, cancel).map(|(stdout, _)| stdout)
    }

    /// [`Located::run_command`] returning stderr too, for programs that
    /// report failed work there and still exit 0 (debugfs).
    pub fn run_captured(
        &self,
        mut command: Command,
        cancel: &Cancel,
    ) -> Result<(Vec<u8>, Vec<u8>), ToolError> {
        let args: Vec<OsString> = command.get_args().map(OsStr::to_owned).collect();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ToolError::Spawn {
                path: self.path.clone(),
                source,
            })?;
        // Both pipes on their own threads, so a chatty program cannot
        // block on a full pipe while we wait for it.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let read = pipe.read_to_end(&mut text);
                (text, read.is_ok())
            })
        };
        let errors = drain(Box::new(child.stderr.take().expect("piped")));
        let output = drain(Box::new(child.stdout.take().expect("piped")));
        let status = loop {
            let waited = child.try_wait().map_err(|source| ToolError::Spawn {
                path: self.path.clone(),
                source,
            })?;
            if let Some(status) = waited {
                break status;
            }
            if cancel.is_cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ToolError::Cancelled { tool: self.tool });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let (stdout, read) = output.join().unwrap_or_default();
        let (stderr, _) = errors.join().unwrap_or_default();
        if status.success() && read {
            return Ok((stdout, stderr));
        }
        Err(ToolError::Failed {
            tool: self.tool,
            args: args
                .iter()
                .map(|a| format!("{:?}", a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" "),
            status: status.to_string(),
            stderr_tail: tail(&stderr),
        })
    }
}

fn tail(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(STDERR_TAIL)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake program: prints `version_text` for its version, and for a
    /// real run echoes its arguments one per line, complains on stderr and
    /// exits with `code`.
    fn fake(dir: &Path, name: &str, version_text: &str, code: i32) {
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in -version|--version|--help) echo '{version_text}'; exit 0;; esac\nfor a in \"$@\"; do echo \"$a\"; done\necho 'line one' >&2\necho 'it went wrong' >&2\nexit {code}\n"
        );
        crate::test_support::write_executable(&dir.join(name), &script);
    }

    #[test]
    fn finds_checks_and_runs_with_arguments_not_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        fake(
            dir.path(),
            "xorriso",
            "xorriso 1.5.4 : RockRidge filesystem manipulator",
            0,
        );
        let xorriso = locate_in(&XORRISO, dir.path().as_os_str()).unwrap();
        assert_eq!(xorriso.version, "1.5.4");
        let out = xorriso
            .run(["-outdev", "a b.iso", "$(touch /tmp/x)", ";"])
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-outdev\na b.iso\n$(touch /tmp/x)\n;\n"
        );
    }

    #[test]
    fn a_failure_carries_the_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        fake(
            dir.path(),
            "mksquashfs",
            "mksquashfs version 4.5.1 (2022/03/17)",
            3,
        );
        let tool = locate_in(&MKSQUASHFS, dir.path().as_os_str()).unwrap();
        let err = tool.run(["root", "out.sqfs"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("mksquashfs \"root\" \"out.sqfs\" failed (exit status: 3)"),
            "{text}"
        );
        assert!(text.contains("line one\n  it went wrong"), "{text}");
    }

    #[test]
    fn a_cancelled_run_kills_the_program_at_once() {
        let dir = tempfile::tempdir().unwrap();
        crate::test_support::write_executable(
            &dir.path().join("mksquashfs"),
            "#!/bin/sh\ncase \"$1\" in -version) echo 'mksquashfs version 4.5.1'; exit 0;; esac\nexec sleep 30\n",
        );
        let tool = locate_in(&MKSQUASHFS, dir.path().as_os_str()).unwrap();
        let cancel = std::sync::Arc::new(Cancel::default());
        let setter = std::sync::Arc::clone(&cancel);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            setter.cancel();
        });
        let started = std::time::Instant::now();
        let err = tool.run_command(tool.command(["x"]), &cancel).unwrap_err();
        assert!(matches!(err, ToolError::Cancelled { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn missing_and_old_tools_say_how_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate_in(&XORRISO, dir.path().as_os_str()).unwrap_err();
        assert!(matches!(err, ToolError::Missing { .. }), "{err}");
        assert!(err.hint().unwrap().contains("xorriso"), "{:?}", err.hint());
        fake(
            dir.path(),
            "mksquashfs",
            "mksquashfs version 4.4 (2019/08/29)",
            0,
        );
        let err = locate_in(&MKSQUASHFS, dir.path().as_os_str()).unwrap_err();
        assert!(matches!(err, ToolError::TooOld { .. }), "{err}");
        assert!(
            err.to_string().contains("4.4 is too old: kbuild needs 4.5"),
            "{err}"
        );
        assert!(err.hint().unwrap().contains("squashfs"), "{:?}", err.hint());
    }

    #[test]
    fn versions_are_read_from_real_banners() {
        for (banner, version) in [
            (
                "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)",
                "7.2.19",
            ),
            ("mcopy (GNU mtools) 4.0.33\nconfigured with ...", "4.0.33"),
            ("runc version 1.1.5+ds1\ncommit: ...", "1.1.5"),
        ] {
            assert_eq!(first_version(banner).as_deref(), Some(version), "{banner}");
        }
        assert_eq!(first_version("no digits here"), None);
    }
}
