//! PE/COFF images, the format of every EFI binary kbuild looks at or
//! makes (shim, GRUB, a kernel with its EFI stub, systemd's EFI stub, a
//! unified kernel image): their headers, sections and data directories
//! read from bytes ([`Pe`]), and sections added to a PE32+ image
//! ([`append_sections`], how `uki` turns a stub into a UKI).
//!
//! Invariants:
//! * Nothing here panics or reads past the bytes, whatever they hold:
//!   images come from images someone else built, so every offset and size
//!   taken from a file is bounds-checked (`get`, checked additions) and a
//!   header that does not fit is a [`PeError`].
//! * Nothing is executed, loaded or verified: a signature is found (a
//!   certificate table inside the file); checking it is the firmware's job.
//! * Both PE32 and PE32+ are read; only PE32+ (every EFI binary kbuild
//!   writes for amd64 and arm64) is written.

mod append;

pub use append::{append_sections, NewSection};

/// Bytes of one section header.
const SECTION_HEADER: usize = 40;
/// The certificate table's index among the data directories.
const CERTIFICATE_TABLE: usize = 4;
/// Bytes of one data directory entry (address or offset, size).
const DIRECTORY_ENTRY: usize = 8;

/// Fields of the COFF file header, from its start.
mod coff {
    pub const SECTION_COUNT: usize = 2;
    pub const SYMBOL_TABLE: usize = 8;
    pub const SYMBOL_COUNT: usize = 12;
    pub const OPTIONAL_HEADER_SIZE: usize = 16;
    /// The optional header follows.
    pub const SIZE: usize = 20;
}

/// Fields of the optional header, from its start (the same in PE32 and
/// PE32+ up to the checksum).
mod optional {
    pub const INITIALIZED_DATA_SIZE: usize = 8;
    pub const SECTION_ALIGNMENT: usize = 32;
    pub const FILE_ALIGNMENT: usize = 36;
    pub const IMAGE_SIZE: usize = 56;
    pub const HEADERS_SIZE: usize = 60;
    pub const CHECKSUM: usize = 64;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeError {
    #[error("not a PE/COFF (EFI) binary: {0}")]
    NotPe(&'static str),
    #[error("truncated PE/COFF {0}")]
    Truncated(&'static str),
    #[error("unknown PE optional header (magic {0:#x})")]
    UnknownOptionalHeader(u16),
    #[error("a PE32 image, not PE32+")]
    NotPe32Plus,
    #[error("{0} is not a power of two up to 64 KiB")]
    BadAlignment(&'static str),
    #[error("the headers have room for {free} more sections, not {needed}")]
    NoRoom { needed: usize, free: usize },
    #[error("section name {0:?} is longer than 8 bytes")]
    LongName(String),
    #[error("the image would exceed 4 GiB")]
    TooLarge,
}

/// `len` bytes of `bytes` at `at`, if they are all there.
fn slice(bytes: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    bytes.get(at..at.checked_add(len)?)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    slice(bytes, at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    slice(bytes, at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The optional header's kind, by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pe32,
    Pe32Plus,
}

impl Format {
    /// Where NumberOfRvaAndSizes sits in the optional header; the data
    /// directories follow it.
    fn directory_count(self) -> usize {
        match self {
            Format::Pe32 => 92,
            Format::Pe32Plus => 108,
        }
    }
}

/// A PE/COFF image whose headers were found inside its bytes.
#[derive(Debug, Clone)]
pub struct Pe<'a> {
    bytes: &'a [u8],
    coff: usize,
    optional: usize,
    format: Format,
    section_table: usize,
    section_count: usize,
}

/// One entry of the section table.
#[derive(Debug, Clone)]
struct SectionHeader {
    name: [u8; 8],
    virtual_size: u32,
    address: u32,
    raw_size: u32,
    raw_at: u32,
}

impl SectionHeader {
    fn read(header: &[u8; SECTION_HEADER]) -> SectionHeader {
        let field = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let mut name = [0; 8];
        name.copy_from_slice(&header[..8]);
        SectionHeader {
            name,
            virtual_size: field(8),
            address: field(12),
            raw_size: field(16),
            raw_at: field(20),
        }
    }

    /// The name without its NUL padding.
    fn name(&self) -> &[u8] {
        let end = self.name.iter().position(|b| *b == 0).unwrap_or(8);
        &self.name[..end]
    }
}

/// A section's virtual address and its bytes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section<'a> {
    pub address: u32,
    pub bytes: &'a [u8],
}

impl<'a> Pe<'a> {
    /// Finds the headers of `bytes`: the DOS header's pointer to the PE
    /// signature, the COFF header, the optional header's magic and the
    /// section table, each inside the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Pe<'a>, PeError> {
        if bytes.get(..2) != Some(b"MZ") {
            return Err(PeError::NotPe("no MZ header"));
        }
        let signature = u32_at(bytes, 0x3c).ok_or(PeError::Truncated("DOS header"))? as usize;
        if slice(bytes, signature, 4) != Some(b"PE\0\0") {
            return Err(PeError::NotPe("no PE signature"));
        }
        let coff = signature + 4;
        let header = |field| u16_at(bytes, coff + field).ok_or(PeError::Truncated("COFF header"));
        let section_count = usize::from(header(coff::SECTION_COUNT)?);
        let optional_size = usize::from(header(coff::OPTIONAL_HEADER_SIZE)?);
        let optional = coff + coff::SIZE;
        let format = match u16_at(bytes, optional).ok_or(PeError::Truncated("optional header"))? {
            0x10b => Format::Pe32,
            0x20b => Format::Pe32Plus,
            magic => return Err(PeError::UnknownOptionalHeader(magic)),
        };
        let section_table = optional + optional_size;
        slice(bytes, section_table, section_count * SECTION_HEADER)
            .ok_or(PeError::Truncated("section table"))?;
        Ok(Pe {
            bytes,
            coff,
            optional,
            format,
            section_table,
            section_count,
        })
    }

    /// The section table, in file order.
    fn section_headers(&self) -> impl Iterator<Item = SectionHeader> + 'a {
        slice(
            self.bytes,
            self.section_table,
            self.section_count * SECTION_HEADER,
        )
        .unwrap_or_default()
        .chunks_exact(SECTION_HEADER)
        .filter_map(|header| header.try_into().ok())
        .map(SectionHeader::read)
    }

    /// The COFF header's machine type (0x8664 x86_64, 0xAA64 arm64).
    pub fn machine(&self) -> u16 {
        u16_at(self.bytes, self.coff).unwrap_or(0)
    }

    /// The first section named `name`: its virtual address and its
    /// VirtualSize bytes from the file (what a section kbuild added holds).
    pub fn section(&self, name: &str) -> Result<Option<Section<'a>>, PeError> {
        let Some(header) = self.section_headers().find(|h| h.name() == name.as_bytes()) else {
            return Ok(None);
        };
        let bytes = slice(
            self.bytes,
            header.raw_at as usize,
            header.virtual_size as usize,
        )
        .ok_or(PeError::Truncated("section data"))?;
        Ok(Some(Section {
            address: header.address,
            bytes,
        }))
    }

    /// A 32-bit field of the optional header.
    fn optional_u32(&self, field: usize) -> Result<u32, PeError> {
        u32_at(self.bytes, self.optional + field).ok_or(PeError::Truncated("optional header"))
    }

    /// Where data directory `index` is in the file, if the image has that
    /// many.
    fn directory_entry(&self, index: usize) -> Result<Option<usize>, PeError> {
        let count_at = self.optional + self.format.directory_count();
        let count = u32_at(self.bytes, count_at).ok_or(PeError::Truncated("optional header"))?;
        if (count as usize) <= index {
            return Ok(None);
        }
        let entry = count_at + 4 + index * DIRECTORY_ENTRY;
        slice(self.bytes, entry, DIRECTORY_ENTRY).ok_or(PeError::Truncated("data directory"))?;
        Ok(Some(entry))
    }

    /// Data directory `index`: (address, or file offset for the
    /// certificate table; size), if the image has that many.
    fn data_directory(&self, index: usize) -> Result<Option<(u32, u32)>, PeError> {
        let entry = self.directory_entry(index)?;
        let field = |at| u32_at(self.bytes, at).ok_or(PeError::Truncated("data directory"));
        entry.map(|at| Ok((field(at)?, field(at + 4)?))).transpose()
    }

    /// Whether the image carries an Authenticode signature: a non-empty
    /// certificate table (data directory 4) inside the file.
    pub fn is_signed(&self) -> Result<bool, PeError> {
        Ok(match self.data_directory(CERTIFICATE_TABLE)? {
            Some((offset, size)) => {
                size > 0 && slice(self.bytes, offset as usize, size as usize).is_some()
            }
            None => false,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
        bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    pub fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Where the fixtures' optional header starts.
    pub const OPTIONAL: usize = 0x84 + coff::SIZE;

    /// A PE32+ stub with one `.text` section, a symbol table after it and
    /// `room` free section headers.
    pub fn stub(room: usize) -> Vec<u8> {
        let mut image = vec![0u8; 0x400];
        image[..2].copy_from_slice(b"MZ");
        put_u32(&mut image, 0x3c, 0x80);
        image[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        put_u16(&mut image, coff, 0x8664);
        put_u16(&mut image, coff + coff::SECTION_COUNT, 1);
        put_u32(&mut image, coff + coff::SYMBOL_TABLE, 0x800);
        put_u32(&mut image, coff + coff::SYMBOL_COUNT, 3);
        put_u16(&mut image, coff + coff::OPTIONAL_HEADER_SIZE, 240);
        put_u16(&mut image, OPTIONAL, 0x20b);
        put_u32(&mut image, OPTIONAL + optional::SECTION_ALIGNMENT, 0x200);
        put_u32(&mut image, OPTIONAL + optional::FILE_ALIGNMENT, 0x200);
        put_u32(&mut image, OPTIONAL + optional::IMAGE_SIZE, 0x2000);
        let table = OPTIONAL + 240;
        let headers = table + (1 + room) * SECTION_HEADER;
        put_u32(
            &mut image,
            OPTIONAL + optional::HEADERS_SIZE,
            headers as u32,
        );
        put_u32(&mut image, OPTIONAL + 108, 16);
        image[table..table + 5].copy_from_slice(b".text");
        put_u32(&mut image, table + 8, 0x150);
        put_u32(&mut image, table + 12, 0x1000);
        put_u32(&mut image, table + 16, 0x200);
        put_u32(&mut image, table + 20, headers as u32);
        image.resize(headers + 0x200, 0xcc);
        image.extend_from_slice(b"symbols and strings");
        image
    }

    /// `image` with its certificate table at `(offset, size)`.
    fn with_certificate_table(mut image: Vec<u8>, table: (u32, u32)) -> Vec<u8> {
        let entry = OPTIONAL + 112 + CERTIFICATE_TABLE * DIRECTORY_ENTRY;
        put_u32(&mut image, entry, table.0);
        put_u32(&mut image, entry + 4, table.1);
        image
    }

    #[test]
    fn sections_are_found_by_name_with_their_address_and_bytes() {
        let image = stub(0);
        let pe = Pe::parse(&image).unwrap();
        let text = pe.section(".text").unwrap().unwrap();
        assert_eq!(text.address, 0x1000);
        let raw_at = OPTIONAL + 240 + SECTION_HEADER;
        assert_eq!(text.bytes, &image[raw_at..raw_at + 0x150]);
        assert_eq!(pe.section(".linux").unwrap(), None);
        let mut beyond = image.clone();
        put_u32(&mut beyond, OPTIONAL + 240 + 20, 0xffff_fff0);
        let pe = Pe::parse(&beyond).unwrap();
        assert_eq!(pe.section(".text"), Err(PeError::Truncated("section data")));
    }

    #[test]
    fn signatures_are_certificate_tables_inside_the_file() {
        let signed = |table| Pe::parse(&with_certificate_table(stub(0), table))?.is_signed();
        let end = stub(0).len() as u32;
        assert_eq!(signed((end - 0x100, 0x100)), Ok(true));
        assert_eq!(signed((0, 0)), Ok(false));
        assert_eq!(signed((end - 0x100, 0x200)), Ok(false));
        assert_eq!(signed((u32::MAX, u32::MAX)), Ok(false));
        let mut few_directories = with_certificate_table(stub(0), (end - 0x100, 0x100));
        put_u32(&mut few_directories, OPTIONAL + 108, 4);
        assert_eq!(Pe::parse(&few_directories).unwrap().is_signed(), Ok(false));
    }

    #[test]
    fn pe32_images_keep_their_directories_sixteen_bytes_earlier() {
        let mut image = stub(0);
        put_u16(&mut image, OPTIONAL, 0x10b);
        put_u32(&mut image, OPTIONAL + 92, 16);
        let entry = OPTIONAL + 96 + CERTIFICATE_TABLE * DIRECTORY_ENTRY;
        put_u32(&mut image, entry, 0x300);
        put_u32(&mut image, entry + 4, 0x10);
        assert_eq!(Pe::parse(&image).unwrap().is_signed(), Ok(true));
    }

    #[test]
    fn what_is_not_pe_is_refused() {
        assert_eq!(
            Pe::parse(b"#!/bin/sh\n").unwrap_err(),
            PeError::NotPe("no MZ header")
        );
        let mut no_signature = stub(0);
        no_signature[0x80] = b'X';
        assert_eq!(
            Pe::parse(&no_signature).unwrap_err(),
            PeError::NotPe("no PE signature")
        );
        let mut unknown = stub(0);
        put_u16(&mut unknown, OPTIONAL, 0x107);
        assert_eq!(
            Pe::parse(&unknown).unwrap_err(),
            PeError::UnknownOptionalHeader(0x107)
        );
        let mut truncated = stub(0);
        truncated.truncate(0x99);
        assert_eq!(
            Pe::parse(&truncated).unwrap_err(),
            PeError::Truncated("optional header")
        );
        let mut far = stub(0);
        put_u32(&mut far, 0x3c, u32::MAX);
        assert!(Pe::parse(&far).is_err());
    }

    /// Every prefix of an image, and every byte of its headers set to
    /// 0xff, is read without a panic.
    #[test]
    fn truncated_and_garbled_headers_never_panic() {
        let image = with_certificate_table(stub(2), (0x200, 0x10));
        let read = |bytes: &[u8]| {
            if let Ok(pe) = Pe::parse(bytes) {
                let _ = pe.section(".text");
                let _ = pe.is_signed();
                let _ = append_sections(
                    bytes,
                    &[NewSection {
                        name: ".osrel",
                        data: b"ID=x",
                    }],
                );
            }
        };
        for len in 0..image.len() {
            read(&image[..len]);
        }
        for at in 0..0x300 {
            let mut garbled = image.clone();
            garbled[at] = 0xff;
            read(&garbled);
        }
    }
}
