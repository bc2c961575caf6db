//! Layer compression: gzip (level configurable), multi-threaded zstd, or
//! none, behind one writer type.

use std::io::{self, Write};

use super::pgzip::ParallelGzip;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Level 0-9; 6 is gzip's default. Uses every core (pigz-style blocks).
    Gzip {
        level: u32,
    },
    /// Level 1-22; 3 is zstd's default. Uses every core.
    Zstd {
        level: i32,
    },
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip { .. } => crate::media::LAYER_GZIP,
            Compression::Zstd { .. } => crate::media::LAYER_ZSTD,
            Compression::None => crate::media::LAYER_TAR,
        }
    }
}

/// A writer that compresses into `W`; [`Compressor::finish`] flushes the
/// trailer and returns `W`.
pub enum Compressor<W: Write> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip { level } => Compressor::Gzip(ParallelGzip::new(inner, level)?),
            Compression::Zstd { level } => {
                let mut enc = zstd::Encoder::new(inner, level)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                enc.multithread(threads)?;
                // Deterministic output: no content size or dictionary id tricks.
                enc.include_checksum(false)?;
                Compressor::Zstd(enc)
            }
            Compression::None => Compressor::None(inner),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
            Compressor::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for
/// (gzip, zstd, or plain tar).
pub fn decompressing_reader<'a, R: io::BufRead + 'a>(
    mut reader: R,
) -> io::Result<Box<dyn io::Read + 'a>> {
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(reader)?)
    } else {
        Box::new(reader)
    })
}
