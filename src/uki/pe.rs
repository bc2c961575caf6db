//! Adding sections to a PE32+ image: how a unified kernel image is made
//! from an EFI stub (`.osrel`, `.cmdline`, `.uname`, `.initrd`, `.linux`
//! after the stub's own sections).
//!
//! Invariants:
//! * The output depends only on the inputs: no time is stamped (the
//!   stub's TimeDateStamp is kept), the checksum is recomputed.
//! * New sections follow the stub's in address and file order, aligned
//!   to its SectionAlignment and FileAlignment, never overlapping: the
//!   systemd stub warns about (and may corrupt memory on) overlaps.
//! * What followed the stub's last section in the file (a COFF symbol
//!   table, a signature) is dropped: the symbols are not loaded, and a
//!   signature would not cover the new sections anyway.

use std::ops::Range;

/// Bytes of one section header.
const SECTION_HEADER: usize = 40;
/// Initialized, readable data.
const DATA_CHARACTERISTICS: u32 = 0x4000_0040;
/// The certificate table's index among the data directories.
const CERTIFICATE_TABLE: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeError {
    #[error("the EFI stub is not a PE32+ image: {0}")]
    NotPe(&'static str),
    #[error("the EFI stub's headers have room for {free} more sections, not {needed}")]
    NoRoom { needed: usize, free: usize },
    #[error("section name {0:?} is longer than 8 bytes")]
    LongName(String),
    #[error("the image would exceed 4 GiB")]
    TooLarge,
}

/// One section to add.
pub struct Section<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, PeError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(PeError::NotPe("truncated header"))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, PeError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(PeError::NotPe("truncated header"))
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn align(value: u64, to: u64) -> u64 {
    value.div_ceil(to.max(1)) * to.max(1)
}

/// Where the headers of a PE32+ image are.
struct Layout {
    coff: usize,
    optional: usize,
    sections: Range<usize>,
    count: usize,
}

impl Layout {
    fn read(image: &[u8]) -> Result<Layout, PeError> {
        if image.get(..2) != Some(b"MZ") {
            return Err(PeError::NotPe("no MZ header"));
        }
        let pe = u32_at(image, 0x3c)? as usize;
        if image.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(PeError::NotPe("no PE signature"));
        }
        let coff = pe + 4;
        let count = u16_at(image, coff + 2)? as usize;
        let optional_size = u16_at(image, coff + 16)? as usize;
        let optional = coff + 20;
        if u16_at(image, optional)? != 0x20b {
            return Err(PeError::NotPe("not PE32+"));
        }
        let start = optional + optional_size;
        let sections = start..start + count * SECTION_HEADER;
        if sections.end > image.len() {
            return Err(PeError::NotPe("truncated section table"));
        }
        Ok(Layout {
            coff,
            optional,
            sections,
            count,
        })
    }

    fn section(&self, index: usize) -> usize {
        self.sections.start + index * SECTION_HEADER
    }
}

/// `stub` with `sections` added after its own.
pub fn append_sections(stub: &[u8], sections: &[Section]) -> Result<Vec<u8>, PeError> {
    let layout = Layout::read(stub)?;
    let section_alignment = u64::from(u32_at(stub, layout.optional + 32)?);
    let file_alignment = u64::from(u32_at(stub, layout.optional + 36)?);
    let headers_size = u32_at(stub, layout.optional + 60)? as usize;
    let mut first_raw = headers_size;
    let (mut raw_end, mut address_end) = (headers_size as u64, 0u64);
    for index in 0..layout.count {
        let at = layout.section(index);
        let virtual_size = u64::from(u32_at(stub, at + 8)?);
        let address = u64::from(u32_at(stub, at + 12)?);
        let raw_size = u64::from(u32_at(stub, at + 16)?);
        let raw_at = u64::from(u32_at(stub, at + 20)?);
        if raw_size > 0 {
            first_raw = first_raw.min(raw_at as usize);
            raw_end = raw_end.max(raw_at + raw_size);
        }
        address_end = address_end.max(address + virtual_size.max(raw_size));
    }
    let free = first_raw.saturating_sub(layout.sections.end) / SECTION_HEADER;
    if sections.len() > free {
        return Err(PeError::NoRoom {
            needed: sections.len(),
            free,
        });
    }
    let raw_end = usize::try_from(raw_end).map_err(|_| PeError::TooLarge)?;
    let mut image = stub
        .get(..raw_end)
        .ok_or(PeError::NotPe("sections beyond the end of the file"))?
        .to_vec();
    let mut initialized = u64::from(u32_at(stub, layout.optional + 8)?);
    for (n, section) in sections.iter().enumerate() {
        if section.name.len() > 8 {
            return Err(PeError::LongName(section.name.to_string()));
        }
        let address = align(address_end, section_alignment);
        let raw_at = align(image.len() as u64, file_alignment);
        let raw_size = align(section.data.len() as u64, file_alignment);
        let fits = |v: u64| u32::try_from(v).map_err(|_| PeError::TooLarge);
        image.resize(raw_at as usize, 0);
        image.extend_from_slice(section.data);
        image.resize((raw_at + raw_size) as usize, 0);
        let mut header = [0u8; SECTION_HEADER];
        header[..section.name.len()].copy_from_slice(section.name.as_bytes());
        put_u32(&mut header, 8, fits(section.data.len() as u64)?);
        put_u32(&mut header, 12, fits(address)?);
        put_u32(&mut header, 16, fits(raw_size)?);
        put_u32(&mut header, 20, fits(raw_at)?);
        put_u32(&mut header, 36, DATA_CHARACTERISTICS);
        let at = layout.section(layout.count + n);
        image[at..at + SECTION_HEADER].copy_from_slice(&header);
        address_end = address + section.data.len() as u64;
        initialized += raw_size;
    }
    let fits = |v: u64| u32::try_from(v).map_err(|_| PeError::TooLarge);
    let count = u16::try_from(layout.count + sections.len()).map_err(|_| PeError::TooLarge)?;
    put_u16(&mut image, layout.coff + 2, count);
    // The symbol table and anything else past the sections were cut.
    put_u32(&mut image, layout.coff + 8, 0);
    put_u32(&mut image, layout.coff + 12, 0);
    put_u32(&mut image, layout.optional + 8, fits(initialized)?);
    put_u32(
        &mut image,
        layout.optional + 56,
        fits(align(address_end, section_alignment))?,
    );
    let directories = u32_at(stub, layout.optional + 108)? as usize;
    if directories > CERTIFICATE_TABLE {
        let entry = layout.optional + 112 + CERTIFICATE_TABLE * 8;
        put_u32(&mut image, entry, 0);
        put_u32(&mut image, entry + 4, 0);
    }
    let checksum = checksum(&image, layout.optional + 64);
    put_u32(&mut image, layout.optional + 64, checksum);
    Ok(image)
}

/// The PE checksum: a 16-bit one's-complement sum of the file (with the
/// checksum field itself taken as 0), plus the file's length.
fn checksum(image: &[u8], field: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, pair) in image.chunks(2).enumerate() {
        let at = i * 2;
        let word = if (field..field + 4).contains(&at) {
            0
        } else {
            u64::from(pair[0]) | pair.get(1).map_or(0, |b| u64::from(*b) << 8)
        };
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (sum as u32 & 0xffff) + image.len() as u32
}

/// A section of `image` by name: (virtual address, virtual size, bytes).
pub fn find_section<'a>(image: &'a [u8], name: &str) -> Result<Option<(u32, &'a [u8])>, PeError> {
    let layout = Layout::read(image)?;
    for index in 0..layout.count {
        let at = layout.section(index);
        let raw_name = &image[at..at + 8];
        let end = raw_name.iter().position(|b| *b == 0).unwrap_or(8);
        if &raw_name[..end] != name.as_bytes() {
            continue;
        }
        let size = u32_at(image, at + 8)? as usize;
        let address = u32_at(image, at + 12)?;
        let raw_at = u32_at(image, at + 20)? as usize;
        let bytes = image
            .get(raw_at..raw_at + size)
            .ok_or(PeError::NotPe("section beyond the end of the file"))?;
        return Ok(Some((address, bytes)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ stub with one `.text` section, a symbol table after it and
    /// `room` free section headers.
    pub fn stub(room: usize) -> Vec<u8> {
        let mut image = vec![0u8; 0x400];
        image[..2].copy_from_slice(b"MZ");
        put_u32(&mut image, 0x3c, 0x80);
        image[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        put_u16(&mut image, coff, 0x8664);
        put_u16(&mut image, coff + 2, 1);
        put_u32(&mut image, coff + 8, 0x800);
        put_u32(&mut image, coff + 12, 3);
        put_u16(&mut image, coff + 16, 240);
        let optional = coff + 20;
        put_u16(&mut image, optional, 0x20b);
        put_u32(&mut image, optional + 32, 0x200);
        put_u32(&mut image, optional + 36, 0x200);
        put_u32(&mut image, optional + 56, 0x2000);
        let table = optional + 240;
        let headers = table + (1 + room) * SECTION_HEADER;
        put_u32(&mut image, optional + 60, headers as u32);
        put_u32(&mut image, optional + 108, 16);
        image[table..table + 5].copy_from_slice(b".text");
        put_u32(&mut image, table + 8, 0x150);
        put_u32(&mut image, table + 12, 0x1000);
        put_u32(&mut image, table + 16, 0x200);
        put_u32(&mut image, table + 20, headers as u32);
        image.resize(headers + 0x200, 0xcc);
        image.extend_from_slice(b"symbols and strings");
        image
    }

    #[test]
    fn sections_follow_the_stub_aligned_and_the_tail_is_dropped() {
        let linux = vec![0x4b; 0x345];
        let build = || {
            append_sections(
                &stub(4),
                &[
                    Section {
                        name: ".osrel",
                        data: b"ID=debian\n",
                    },
                    Section {
                        name: ".linux",
                        data: &linux,
                    },
                ],
            )
            .unwrap()
        };
        let out = build();
        let layout = Layout::read(&out).unwrap();
        assert_eq!(layout.count, 3);
        let (address, bytes) = find_section(&out, ".osrel").unwrap().unwrap();
        assert_eq!((address, bytes), (0x1200, &b"ID=debian\n"[..]));
        let (address, bytes) = find_section(&out, ".linux").unwrap().unwrap();
        assert_eq!(address, 0x1400);
        assert_eq!(bytes, &linux[..]);
        // Raw data aligned to 0x200, no symbol table left.
        assert_eq!(out.len() % 0x200, 0);
        assert!(!out.windows(7).any(|w| w == b"symbols"));
        assert_eq!(u32_at(&out, layout.coff + 8).unwrap(), 0);
        assert_eq!(u32_at(&out, layout.optional + 56).unwrap(), 0x1800);
        // The checksum is the one the PE format defines.
        let field = layout.optional + 64;
        assert_eq!(u32_at(&out, field).unwrap(), checksum(&out, field));
        // The same inputs give the same bytes.
        assert_eq!(out, build());
    }

    #[test]
    fn no_room_long_names_and_non_pe_are_refused() {
        let one = [Section {
            name: ".cmdline",
            data: b"quiet",
        }];
        assert_eq!(
            append_sections(&stub(0), &one),
            Err(PeError::NoRoom { needed: 1, free: 0 })
        );
        let long = [Section {
            name: ".toolongname",
            data: b"",
        }];
        assert!(matches!(
            append_sections(&stub(1), &long),
            Err(PeError::LongName(_))
        ));
        assert_eq!(
            append_sections(b"#!/bin/sh\n", &one),
            Err(PeError::NotPe("no MZ header"))
        );
    }

    #[test]
    fn the_checksum_folds_carries_and_adds_the_length() {
        let image = [0xff, 0xff, 0x01, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0x07];
        // 0xffff + 0x0001 = 0x10000 -> 0x0001; then the field at 4..8 is
        // skipped; + 0x0007 = 0x0008; + 9 bytes.
        assert_eq!(checksum(&image, 4), 0x0008 + 9);
    }
}
