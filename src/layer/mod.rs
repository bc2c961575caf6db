//! OCI layers: the reproducible writer (directory -> tar -> compressed
//! blob) and, in `extract`, the safe extractor that is kbuild's security
//! boundary against hostile layers.

mod compress;
mod extract;
mod pgzip;
mod placeholder;
mod writer;

use std::path::PathBuf;

pub use compress::{decompressing_reader, Compression, Compressor};
pub use extract::{
    extract_archive, extract_layer, ExtractError, ExtractLimits, ExtractMode, ExtractStats,
};
pub use placeholder::{DeviceNode, Placeholders};
pub use writer::{read_xattrs, write_layer, write_layer_with, LayerInfo, TreeKind, WriteOptions};

/// Prefix of an OCI whiteout entry: `.wh.<name>` deletes `<name>`.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// An entry with this name makes its directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
