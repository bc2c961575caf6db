//! Kernel and initrd headers, read from bytes (never executed). EFI
//! binaries' signatures are [`crate::pe`]'s to read.

use std::io::Read;

use crate::project::Arch;

/// How much of an initrd (or kairos-release) is read to know what it is.
pub const HEAD_BYTES: usize = 64 * 1024;
/// How much of a kernel is read: the x86 version string sits within
/// 0x200 + 0xFFFF bytes of the start.
pub const KERNEL_HEAD_BYTES: usize = 128 * 1024;
/// An EFI binary is read whole to find its signature (at its end); none
/// real comes near this.
pub const EFI_BINARY_MAX_BYTES: usize = 256 << 20;

/// The x86 boot protocol: `HdrS` at 0x202, the version string's offset
/// (from 0x200) at 0x20E.
const X86_MAGIC_AT: usize = 0x202;
const X86_VERSION_PTR_AT: usize = 0x20E;
/// The arm64 Image header: `ARM\x64` at 0x38.
const ARM64_MAGIC_AT: usize = 0x38;

/// Checks that `bytes` is a kernel for `arch`; returns the version the
/// header carries, when it carries one.
pub fn kernel(bytes: &[u8], arch: Arch) -> Result<Option<String>, String> {
    match arch {
        Arch::Amd64 => x86_bzimage(bytes),
        Arch::Arm64 => arm64_image(bytes).map(|()| None),
    }
}

fn x86_bzimage(bytes: &[u8]) -> Result<Option<String>, String> {
    if bytes.get(X86_MAGIC_AT..X86_MAGIC_AT + 4) != Some(b"HdrS") {
        return Err("not an x86 bzImage (no HdrS boot header at 0x202)".into());
    }
    let pointer = bytes
        .get(X86_VERSION_PTR_AT..X86_VERSION_PTR_AT + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .unwrap_or(0);
    if pointer == 0 {
        return Ok(None);
    }
    let start = 0x200 + pointer;
    let text = bytes.get(start..).unwrap_or_default();
    let end = text
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(text.len().min(256));
    let version = String::from_utf8_lossy(&text[..end]);
    Ok(version.split_whitespace().next().map(str::to_string))
}

fn arm64_image(bytes: &[u8]) -> Result<(), String> {
    let is_image = |b: &[u8]| b.get(ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4) == Some(b"ARM\x64");
    if is_image(bytes) {
        return Ok(());
    }
    // EFI zboot: a PE file whose payload is a compressed Image.
    if bytes.starts_with(b"MZ") && bytes.get(4..8) == Some(b"zimg") {
        return Ok(());
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut head = Vec::new();
        let _ = flate2::read::GzDecoder::new(bytes)
            .take(ARM64_MAGIC_AT as u64 + 4)
            .read_to_end(&mut head);
        if is_image(&head) {
            return Ok(());
        }
    }
    Err("not an arm64 kernel (no ARM\\x64 Image magic, plain or gzip, and no EFI zboot)".into())
}

/// What kind of initrd `head` starts: a cpio archive, plain or compressed.
pub fn initrd(head: &[u8]) -> Result<&'static str, String> {
    let is_cpio =
        |b: &[u8]| b.starts_with(b"070701") || b.starts_with(b"070702") || b.starts_with(b"070707");
    if is_cpio(head) {
        return Ok("cpio");
    }
    let mut inner = Vec::new();
    if head.starts_with(&[0x1f, 0x8b]) {
        let _ = flate2::read::GzDecoder::new(head)
            .take(6)
            .read_to_end(&mut inner);
        return match is_cpio(&inner) {
            true => Ok("gzip-compressed cpio"),
            false => Err("gzip data that is not a cpio archive".into()),
        };
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        if let Ok(decoder) = zstd::stream::read::Decoder::new(head) {
            let _ = decoder.take(6).read_to_end(&mut inner);
        }
        return match is_cpio(&inner) {
            true => Ok("zstd-compressed cpio"),
            false => Err("zstd data that is not a cpio archive".into()),
        };
    }
    // Formats kbuild has no decompressor for: known by their magic alone.
    for (magic, kind) in [
        (
            &[0xfd, b'7', b'z', b'X', b'Z', 0x00][..],
            "xz-compressed (not opened)",
        ),
        (&[0x02, 0x21, 0x4c, 0x18][..], "lz4-compressed (not opened)"),
        (&b"BZh"[..], "bzip2-compressed (not opened)"),
        (&[0x5d, 0x00, 0x00][..], "lzma-compressed (not opened)"),
    ] {
        if head.starts_with(magic) {
            return Ok(kind);
        }
    }
    Err("neither a cpio archive nor a known compressed one".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: the boot header and a version string.
    pub fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut image = vec![0u8; 0x1000];
        image[X86_MAGIC_AT..X86_MAGIC_AT + 4].copy_from_slice(b"HdrS");
        let pointer: u16 = 0x400;
        image[X86_VERSION_PTR_AT..X86_VERSION_PTR_AT + 2].copy_from_slice(&pointer.to_le_bytes());
        let text = format!("{version} (builder@kbuild) #1 SMP\0");
        image[0x600..0x600 + text.len()].copy_from_slice(text.as_bytes());
        image
    }

    #[test]
    fn kernels_are_known_by_their_headers() {
        let version = kernel(&fake_bzimage("6.1.0-26-amd64"), Arch::Amd64).unwrap();
        assert_eq!(version.as_deref(), Some("6.1.0-26-amd64"));
        assert!(kernel(b"#!/bin/sh\necho not a kernel\n", Arch::Amd64).is_err());
        let mut arm = vec![0u8; 0x40];
        arm[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(kernel(&arm, Arch::Arm64), Ok(None));
        assert!(kernel(&fake_bzimage("6.1"), Arch::Arm64).is_err());
    }

    #[test]
    fn initrds_are_cpio_plain_or_compressed() {
        assert_eq!(initrd(b"070701000000"), Ok("cpio"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"070701abcdef").unwrap();
        assert_eq!(initrd(&gz.finish().unwrap()), Ok("gzip-compressed cpio"));
        let zst = zstd::encode_all(&b"070701abcdef"[..], 3).unwrap();
        assert_eq!(initrd(&zst), Ok("zstd-compressed cpio"));
        assert!(initrd(b"hello").is_err());
        let mut not_cpio = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut not_cpio, b"plain text").unwrap();
        assert!(initrd(&not_cpio.finish().unwrap()).is_err());
    }
}
