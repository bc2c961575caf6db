//! Foreign-architecture programs through the kernel's binfmt_misc: RUN
//! steps (and the ISO's grub-mkimage) of an arm64 image on an amd64 host
//! run the image's own binaries, which the kernel hands to an emulator
//! such as `qemu-aarch64` (Debian: qemu-user-static).
//!
//! A handler is found by what it matches, not by its name: the handler of
//! an architecture is the enabled entry whose magic and mask accept an
//! ELF header of that architecture (executable and position-independent).
//!
//! Invariants:
//! * A build is checked before any work: an unusable handler is an error
//!   naming what is wrong and the commands that fix it, never an
//!   `exec format error` halfway through a build.
//! * Only a handler with the `F` flag counts: the kernel opens its
//!   interpreter when it is registered, so it runs inside the sandbox's
//!   namespaces and the image's root, where the host's file is not.
//! * This module only reads `/proc/sys/fs/binfmt_misc`; it never registers
//!   anything (that is the host administrator's choice).

use std::path::{Path, PathBuf};

use crate::platform::Platform;

/// Where the kernel shows binfmt_misc.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// A registered handler, as its file in binfmt_misc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinfmtError {
    #[error("{arch} programs cannot run on this {host} host: binfmt_misc is not mounted at {}", dir.display())]
    NotMounted {
        arch: String,
        host: String,
        dir: PathBuf,
    },
    #[error("{arch} programs cannot run on this {host} host: no binfmt_misc handler in {} runs {arch} ELF executables", dir.display())]
    NoHandler {
        arch: String,
        host: String,
        dir: PathBuf,
    },
    #[error("{arch} programs cannot run on this {host} host: the binfmt_misc handler {name} is disabled")]
    Disabled {
        arch: String,
        host: String,
        name: String,
    },
    #[error("the binfmt_misc handler {name} for {arch} lacks the F flag (flags: \"{flags}\"): its interpreter {interpreter} would be looked up inside the build's root, where it is not")]
    NotFixed {
        arch: String,
        name: String,
        flags: String,
        interpreter: String,
    },
    #[error("kbuild cannot emulate {arch}: it knows no ELF machine for that architecture")]
    UnknownArch { arch: String },
}

impl BinfmtError {
    /// The commands that fix it (Debian's packages; other distributions
    /// ship the same emulators as qemu-user-static or qemu-user-binfmt).
    pub fn hint(&self) -> Option<String> {
        let emulator = |arch: &str| qemu_name(arch).unwrap_or(arch).to_string();
        match self {
            BinfmtError::NotMounted { arch, .. } => Some(format!(
                "mount it and enable the emulator: `mount -t binfmt_misc binfmt_misc {BINFMT_MISC} && update-binfmts --enable qemu-{}`",
                emulator(arch)
            )),
            BinfmtError::NoHandler { arch, .. } => Some(format!(
                "install and register the emulator: `apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-{}` (in a container, mount binfmt_misc first: `mount -t binfmt_misc binfmt_misc {BINFMT_MISC}`)",
                emulator(arch)
            )),
            BinfmtError::Disabled { name, .. } => Some(format!(
                "enable it: `update-binfmts --enable {name}` (or `echo 1 > {BINFMT_MISC}/{name}`)"
            )),
            BinfmtError::NotFixed { arch, .. } => Some(format!(
                "use the static emulator, which Debian registers with the F flag: `apt-get install qemu-user-static && update-binfmts --enable qemu-{}`",
                emulator(arch)
            )),
            BinfmtError::UnknownArch { .. } => None,
        }
    }
}

/// QEMU's name for an OCI architecture.
fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "riscv64" => "riscv64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// The identifying start of an ELF header of `arch` with type `e_type`
/// (20 bytes: ident, type, machine), as binfmt_misc matches it.
fn elf_header(arch: &str, e_type: u16) -> Option<[u8; 20]> {
    // (ELF class, big-endian, e_machine)
    let (class, big, machine): (u8, bool, u16) = match arch {
        "amd64" => (2, false, 62),
        "arm64" => (2, false, 183),
        "arm" => (1, false, 40),
        "386" => (1, false, 3),
        "riscv64" => (2, false, 243),
        "ppc64le" => (2, false, 21),
        "s390x" => (2, true, 22),
        _ => return None,
    };
    let mut header = [0u8; 20];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = class;
    header[5] = if big { 2 } else { 1 };
    header[6] = 1;
    let (t, m) = if big {
        (e_type.to_be_bytes(), machine.to_be_bytes())
    } else {
        (e_type.to_le_bytes(), machine.to_le_bytes())
    };
    header[16..18].copy_from_slice(&t);
    header[18..20].copy_from_slice(&m);
    Some(header)
}

impl Handler {
    /// Parses a handler file's text (`enabled`, `interpreter P`,
    /// `flags: F`, `offset N`, `magic HEX`, `mask HEX`). Extension
    /// handlers (no magic) give `None`.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut handler = Handler {
            name: name.to_string(),
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "enabled" => handler.enabled = true,
                "interpreter" => handler.interpreter = value.to_string(),
                "flags:" => handler.flags = value.trim().to_string(),
                "offset" => handler.offset = value.trim().parse().ok()?,
                "magic" => handler.magic = decode_hex(value.trim())?,
                "mask" => handler.mask = decode_hex(value.trim())?,
                _ => {}
            }
        }
        (!handler.magic.is_empty()).then_some(handler)
    }

    /// Whether the kernel would hand `header` (the file's first bytes) to
    /// this handler.
    fn matches(&self, header: &[u8]) -> bool {
        let Some(window) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        window.iter().enumerate().all(|(i, byte)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            byte & mask == self.magic[i] & mask
        })
    }

    /// Whether it runs both executables and PIEs of `arch`.
    fn runs(&self, arch: &str) -> bool {
        [2u16, 3]
            .iter()
            .all(|&e_type| elf_header(arch, e_type).is_some_and(|header| self.matches(&header)))
    }

    /// The `F` (fix binary) flag.
    pub fn fixed(&self) -> bool {
        self.flags.contains('F')
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether programs of `target` run here without an emulator.
pub fn native(target: &Platform, host: &Platform) -> bool {
    target.arch == host.arch || (host.arch == "amd64" && target.arch == "386")
}

/// Every handler registered in `dir` (unreadable entries are skipped).
pub fn handlers(dir: &Path) -> Vec<Handler> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Handler> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                return None;
            }
            let text = std::fs::read_to_string(entry.path()).ok()?;
            Handler::parse(&name, &text)
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The usable handler for `arch` in `dir`, or what is wrong. An enabled
/// handler with the F flag wins over others that match too.
pub fn handler_in(dir: &Path, arch: &str, host: &Platform) -> Result<Handler, BinfmtError> {
    if elf_header(arch, 2).is_none() {
        return Err(BinfmtError::UnknownArch { arch: arch.into() });
    }
    if !dir.join("register").exists() {
        return Err(BinfmtError::NotMounted {
            arch: arch.into(),
            host: host.arch.clone(),
            dir: dir.to_path_buf(),
        });
    }
    let candidates: Vec<Handler> = handlers(dir).into_iter().filter(|h| h.runs(arch)).collect();
    if let Some(ready) = candidates.iter().find(|h| h.enabled && h.fixed()) {
        return Ok(ready.clone());
    }
    match candidates.iter().find(|h| h.enabled) {
        Some(unfixed) => Err(BinfmtError::NotFixed {
            arch: arch.into(),
            name: unfixed.name.clone(),
            flags: unfixed.flags.clone(),
            interpreter: unfixed.interpreter.clone(),
        }),
        None => match candidates.first() {
            Some(disabled) => Err(BinfmtError::Disabled {
                arch: arch.into(),
                host: host.arch.clone(),
                name: disabled.name.clone(),
            }),
            None => Err(BinfmtError::NoHandler {
                arch: arch.into(),
                host: host.arch.clone(),
                dir: dir.to_path_buf(),
            }),
        },
    }
}

/// Checks that programs of `target` can run here: `Ok(None)` natively,
/// `Ok(Some(handler))` through binfmt_misc.
pub fn check(target: &Platform) -> Result<Option<Handler>, BinfmtError> {
    let host = Platform::host();
    if native(target, &host) {
        return Ok(None);
    }
    handler_in(Path::new(BINFMT_MISC), &target.arch, &host).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's qemu-user-static registration of qemu-aarch64.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    fn binfmt(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("register"), "").unwrap();
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        for (name, text) in entries {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn the_handler_is_found_by_what_it_matches_not_by_its_name() {
        let dir = binfmt(&[("anything", AARCH64)]);
        let found = handler_in(dir.path(), "arm64", &amd64()).unwrap();
        assert_eq!(found.name, "anything");
        assert!(found.fixed());
        // It does not run other architectures.
        assert!(matches!(
            handler_in(dir.path(), "riscv64", &amd64()),
            Err(BinfmtError::NoHandler { .. })
        ));
    }

    #[test]
    fn a_disabled_or_unfixed_handler_is_named_with_its_fix() {
        let disabled = AARCH64.replace("enabled\n", "disabled\n");
        let dir = binfmt(&[("qemu-aarch64", &disabled)]);
        let err = handler_in(dir.path(), "arm64", &amd64()).unwrap_err();
        assert!(matches!(err, BinfmtError::Disabled { .. }), "{err}");
        assert!(err
            .hint()
            .unwrap()
            .contains("update-binfmts --enable qemu-aarch64"));

        let unfixed = AARCH64.replace("flags: PF", "flags: P");
        let dir = binfmt(&[("qemu-aarch64", &unfixed)]);
        let err = handler_in(dir.path(), "arm64", &amd64()).unwrap_err();
        assert!(matches!(err, BinfmtError::NotFixed { .. }), "{err}");
        assert!(err.to_string().contains("aarch64-binfmt-P"), "{err}");
    }

    #[test]
    fn an_unmounted_or_empty_binfmt_misc_gives_the_commands_to_fix_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = handler_in(empty.path(), "arm64", &amd64()).unwrap_err();
        assert!(matches!(err, BinfmtError::NotMounted { .. }), "{err}");
        assert!(err.hint().unwrap().contains("mount -t binfmt_misc"));

        let dir = binfmt(&[]);
        let err = handler_in(dir.path(), "arm64", &amd64()).unwrap_err();
        assert!(err.to_string().contains("no binfmt_misc handler"), "{err}");
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("apt-get install qemu-user-static binfmt-support"),
            "{hint}"
        );
        assert!(
            hint.contains("update-binfmts --enable qemu-aarch64"),
            "{hint}"
        );
    }

    #[test]
    fn extension_handlers_and_the_host_s_own_architecture_need_nothing() {
        assert!(Handler::parse(
            "jar",
            "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"
        )
        .is_none());
        assert!(native(&amd64(), &amd64()));
        assert!(native(&Platform::parse("linux/386").unwrap(), &amd64()));
        assert!(!native(&Platform::parse("linux/arm64").unwrap(), &amd64()));
    }

    #[test]
    fn elf_headers_carry_class_byte_order_and_machine() {
        let arm = elf_header("arm64", 2).unwrap();
        assert_eq!(&arm[18..20], &[0xb7, 0x00]);
        let s390 = elf_header("s390x", 3).unwrap();
        assert_eq!(s390[5], 2);
        assert_eq!(&s390[16..20], &[0, 3, 0, 22]);
    }
}
