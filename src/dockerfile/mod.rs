//! The Dockerfile dialect: lexing, parsing, variable expansion and the
//! positioned errors they produce.
//!
//! Invariant: [`parse`] accepts any text and either returns the syntax tree
//! or a [`SpecError`] with file, line and column; it never panics.

pub mod ast;
pub mod diagnostic;
mod flags;
mod lexer;
mod parser;
pub mod words;

pub use ast::*;
pub use diagnostic::{ErrorKind, Pos, Source, SpecError};

/// Parses spec text; `name` is used in error messages (usually the path).
pub fn parse(name: &str, text: &str) -> Result<Dockerfile, SpecError> {
    parser::parse(&Source::new(name, text))
}

/// Reads and parses a spec file.
pub fn parse_file(path: &std::path::Path) -> Result<Dockerfile, ParseFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ParseFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse(&path.display().to_string(), &text)?)
}

#[derive(Debug, thiserror::Error)]
pub enum ParseFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
}
