//! kbuild: a declarative, daemonless OS image builder.
//!
//! The library holds the whole engine; the `kbuild` binary in `main.rs` and
//! `cli/` only turns command lines into calls of these modules.

pub mod artifact;
pub mod binfmt;
pub mod boot;
pub mod check;
pub mod cli;
pub mod compose;
pub mod diagnose;
pub mod diff;
pub mod digest;
pub mod disk;
pub mod dockerfile;
pub mod executor;
pub mod export;
pub mod iso;
pub mod keys;
pub mod layer;
pub mod media;
pub mod netboot;
pub mod pe;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod project;
pub mod reference;
pub mod registry;
pub mod release;
pub mod report;
pub mod rootfs;
pub mod rootless;
pub mod sandbox;
pub mod store;
pub mod tools;
pub mod uki;
pub mod verify;

#[cfg(test)]
pub(crate) mod test_support;
