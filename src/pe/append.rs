//! Sections added to a PE32+ image: how a unified kernel image is made
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
//! * A stub whose fields point outside it, or whose alignments would
//!   make the output huge, is refused, never written past.

use super::{
    coff, optional, Format, Pe, PeError, CERTIFICATE_TABLE, DIRECTORY_ENTRY, SECTION_HEADER,
};

/// Initialized, readable data.
const DATA_CHARACTERISTICS: u32 = 0x4000_0040;
/// The largest FileAlignment the PE format allows.
const MAX_FILE_ALIGNMENT: u32 = 0x1_0000;

/// One section to add.
pub struct NewSection<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) -> Result<(), PeError> {
    put(bytes, at, &value.to_le_bytes())
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) -> Result<(), PeError> {
    put(bytes, at, &value.to_le_bytes())
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) -> Result<(), PeError> {
    at.checked_add(value.len())
        .and_then(|end| bytes.get_mut(at..end))
        .ok_or(PeError::Truncated("headers"))?
        .copy_from_slice(value);
    Ok(())
}

fn fits(value: u64) -> Result<u32, PeError> {
    u32::try_from(value).map_err(|_| PeError::TooLarge)
}

fn align(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// The stub's alignments, checked: powers of two, the file's at most
/// 64 KiB (a larger one would pad each section to gigabytes).
fn alignments(pe: &Pe) -> Result<(u64, u64), PeError> {
    let section = pe.optional_u32(optional::SECTION_ALIGNMENT)?;
    let file = pe.optional_u32(optional::FILE_ALIGNMENT)?;
    if !section.is_power_of_two() {
        return Err(PeError::BadAlignment("SectionAlignment"));
    }
    if !file.is_power_of_two() || file > MAX_FILE_ALIGNMENT {
        return Err(PeError::BadAlignment("FileAlignment"));
    }
    Ok((u64::from(section), u64::from(file)))
}

/// The stub's extent, headers included: where its first section's raw
/// data starts, where its raw data ends and where its address space ends.
fn extent(pe: &Pe) -> Result<(u64, u64, u64), PeError> {
    let headers_size = u64::from(pe.optional_u32(optional::HEADERS_SIZE)?);
    let (mut first_raw, mut raw_end, mut address_end) = (headers_size, headers_size, 0);
    for header in pe.section_headers() {
        let (raw_at, raw_size) = (u64::from(header.raw_at), u64::from(header.raw_size));
        if raw_size > 0 {
            first_raw = first_raw.min(raw_at);
            raw_end = raw_end.max(raw_at + raw_size);
        }
        let size = header.virtual_size.max(header.raw_size);
        address_end = address_end.max(u64::from(header.address) + u64::from(size));
    }
    Ok((first_raw, raw_end, address_end))
}

/// `stub` with `sections` added after its own.
pub fn append_sections(stub: &[u8], sections: &[NewSection]) -> Result<Vec<u8>, PeError> {
    let pe = Pe::parse(stub)?;
    if pe.format != Format::Pe32Plus {
        return Err(PeError::NotPe32Plus);
    }
    let (section_alignment, file_alignment) = alignments(&pe)?;
    let (first_raw, raw_end, mut address_end) = extent(&pe)?;
    let table_end = (pe.section_table + pe.section_count * SECTION_HEADER) as u64;
    let free = first_raw.saturating_sub(table_end) as usize / SECTION_HEADER;
    if sections.len() > free {
        return Err(PeError::NoRoom {
            needed: sections.len(),
            free,
        });
    }
    let mut image = usize::try_from(raw_end)
        .ok()
        .and_then(|end| stub.get(..end))
        .ok_or(PeError::Truncated("section data"))?
        .to_vec();
    let mut initialized = u64::from(pe.optional_u32(optional::INITIALIZED_DATA_SIZE)?);
    for (n, section) in sections.iter().enumerate() {
        let address = align(address_end, section_alignment);
        let raw_at = align(image.len() as u64, file_alignment);
        let raw_size = align(section.data.len() as u64, file_alignment);
        let header = section_header(section, address, raw_at, raw_size)?;
        image.resize(raw_at as usize, 0);
        image.extend_from_slice(section.data);
        image.resize((raw_at + raw_size) as usize, 0);
        put(
            &mut image,
            pe.section_table + (pe.section_count + n) * SECTION_HEADER,
            &header,
        )?;
        address_end = address + section.data.len() as u64;
        initialized += raw_size;
    }
    let headers = Headers {
        sections: pe.section_count + sections.len(),
        initialized,
        image_size: align(address_end, section_alignment),
    };
    update_headers(&pe, &mut image, &headers)?;
    Ok(image)
}

/// The section table entry of `section`.
fn section_header(
    section: &NewSection,
    address: u64,
    raw_at: u64,
    raw_size: u64,
) -> Result<[u8; SECTION_HEADER], PeError> {
    if section.name.len() > 8 {
        return Err(PeError::LongName(section.name.to_string()));
    }
    let mut header = [0u8; SECTION_HEADER];
    header[..section.name.len()].copy_from_slice(section.name.as_bytes());
    put_u32(&mut header, 8, fits(section.data.len() as u64)?)?;
    put_u32(&mut header, 12, fits(address)?)?;
    put_u32(&mut header, 16, fits(raw_size)?)?;
    put_u32(&mut header, 20, fits(raw_at)?)?;
    put_u32(&mut header, 36, DATA_CHARACTERISTICS)?;
    Ok(header)
}

/// What the headers say about the image once the sections are added.
struct Headers {
    sections: usize,
    initialized: u64,
    image_size: u64,
}

/// Writes `headers` into `image` (the stub's headers, copied), with no
/// symbol table or certificate table (they were cut with the tail), and
/// the checksum of the result.
fn update_headers(pe: &Pe, image: &mut [u8], headers: &Headers) -> Result<(), PeError> {
    let count = u16::try_from(headers.sections).map_err(|_| PeError::TooLarge)?;
    put_u16(image, pe.coff + coff::SECTION_COUNT, count)?;
    put_u32(image, pe.coff + coff::SYMBOL_TABLE, 0)?;
    put_u32(image, pe.coff + coff::SYMBOL_COUNT, 0)?;
    let initialized = fits(headers.initialized)?;
    put_u32(
        image,
        pe.optional + optional::INITIALIZED_DATA_SIZE,
        initialized,
    )?;
    let image_size = fits(headers.image_size)?;
    put_u32(image, pe.optional + optional::IMAGE_SIZE, image_size)?;
    if let Some(entry) = pe.directory_entry(CERTIFICATE_TABLE)? {
        put(image, entry, &[0; DIRECTORY_ENTRY])?;
    }
    let checksum_at = pe.optional + optional::CHECKSUM;
    let sum = checksum(image, checksum_at);
    put_u32(image, checksum_at, sum)
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

#[cfg(test)]
mod tests {
    use super::super::tests::{put_u16 as set_u16, put_u32 as set_u32, stub, OPTIONAL};
    use super::super::u32_at;
    use super::*;

    #[test]
    fn sections_follow_the_stub_aligned_and_the_tail_is_dropped() {
        let linux = vec![0x4b; 0x345];
        let build = || {
            append_sections(
                &stub(4),
                &[
                    NewSection {
                        name: ".osrel",
                        data: b"ID=debian\n",
                    },
                    NewSection {
                        name: ".linux",
                        data: &linux,
                    },
                ],
            )
            .unwrap()
        };
        let out = build();
        let pe = Pe::parse(&out).unwrap();
        assert_eq!(pe.section_count, 3);
        let osrel = pe.section(".osrel").unwrap().unwrap();
        assert_eq!((osrel.address, osrel.bytes), (0x1200, &b"ID=debian\n"[..]));
        let kernel = pe.section(".linux").unwrap().unwrap();
        assert_eq!(kernel.address, 0x1400);
        assert_eq!(kernel.bytes, &linux[..]);
        // Raw data aligned to 0x200, no symbol table left.
        assert_eq!(out.len() % 0x200, 0);
        assert!(!out.windows(7).any(|w| w == b"symbols"));
        assert_eq!(u32_at(&out, pe.coff + coff::SYMBOL_TABLE), Some(0));
        assert_eq!(pe.optional_u32(optional::IMAGE_SIZE), Ok(0x1800));
        // The checksum is the one the PE format defines.
        let field = pe.optional + optional::CHECKSUM;
        assert_eq!(u32_at(&out, field), Some(checksum(&out, field)));
        // The same inputs give the same bytes.
        assert_eq!(out, build());
    }

    #[test]
    fn a_signature_is_dropped_with_the_tail() {
        let mut signed = stub(1);
        let entry = OPTIONAL + 112 + CERTIFICATE_TABLE * 8;
        let end = signed.len() as u32;
        set_u32(&mut signed, entry, end - 0x10);
        set_u32(&mut signed, entry + 4, 0x10);
        assert_eq!(Pe::parse(&signed).unwrap().is_signed(), Ok(true));
        let one = [NewSection {
            name: ".cmdline",
            data: b"quiet",
        }];
        let out = append_sections(&signed, &one).unwrap();
        let pe = Pe::parse(&out).unwrap();
        assert_eq!(pe.data_directory(CERTIFICATE_TABLE), Ok(Some((0, 0))));
    }

    #[test]
    fn no_room_long_names_and_non_pe_are_refused() {
        let one = [NewSection {
            name: ".cmdline",
            data: b"quiet",
        }];
        assert_eq!(
            append_sections(&stub(0), &one),
            Err(PeError::NoRoom { needed: 1, free: 0 })
        );
        let long = [NewSection {
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
        let mut pe32 = stub(1);
        set_u16(&mut pe32, OPTIONAL, 0x10b);
        assert_eq!(append_sections(&pe32, &one), Err(PeError::NotPe32Plus));
    }

    #[test]
    fn alignments_that_would_blow_up_the_output_are_refused() {
        let one = [NewSection {
            name: ".cmdline",
            data: b"quiet",
        }];
        for (field, value, name) in [
            (optional::FILE_ALIGNMENT, 0x8000_0000, "FileAlignment"),
            (optional::FILE_ALIGNMENT, 0, "FileAlignment"),
            (optional::SECTION_ALIGNMENT, 0x300, "SectionAlignment"),
        ] {
            let mut image = stub(1);
            set_u32(&mut image, OPTIONAL + field, value);
            assert_eq!(
                append_sections(&image, &one),
                Err(PeError::BadAlignment(name))
            );
        }
    }

    #[test]
    fn the_checksum_folds_carries_and_adds_the_length() {
        let image = [0xff, 0xff, 0x01, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0x07];
        // 0xffff + 0x0001 = 0x10000 -> 0x0001; then the field at 4..8 is
        // skipped; + 0x0007 = 0x0008; + 9 bytes.
        assert_eq!(checksum(&image, 4), 0x0008 + 9);
    }
}
