//! Strict YAML loading: unknown keys are errors, and every error names the
//! file, the key path and, where the parser knows it, line and column.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::ProjectError;

/// Reads and deserializes `path`; the target types use `deny_unknown_fields`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ProjectError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProjectError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ProjectError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        let mut message = inner.to_string();
        // serde_yaml_ng appends "at line X column Y"; we print the location ourselves.
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        ProjectError::Yaml {
            path: path.to_path_buf(),
            key: if key == "." { String::new() } else { key },
            location,
            message,
        }
    })
}

/// `file:line:column` (or just the file) for messages.
pub fn locate(path: &Path, location: &Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!("{}:{line}:{column}", path.display()),
        None => path.display().to_string(),
    }
}
