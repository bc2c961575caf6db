//! Device nodes kept without creating them.
//!
//! `mknod` of a real device needs `CAP_MKNOD` in the initial user
//! namespace, which a rootless build never has. The extractor then leaves a
//! stand-in at the node's path: a char 0:0 node (which anyone may make; it
//! is also overlayfs's whiteout, so in a lower dir it hides what is below,
//! as the device would) with the node's mode, owner and time, and records
//! what the node was. The layer writer turns a recorded stand-in back into
//! the node, and the ISO's squashfs gets it as a pseudo-file definition, so
//! layers and the live root match a root build's bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A device node that exists only as a stand-in on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub block: bool,
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for DeviceNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.block { "block" } else { "character" };
        write!(f, "{kind} device {}:{}", self.major, self.minor)
    }
}

/// Stand-ins by root-relative path (no leading `/`).
pub type Placeholders = BTreeMap<String, DeviceNode>;
