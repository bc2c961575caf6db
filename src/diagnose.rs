//! What an error means to the person who ran kbuild: whether their input
//! is at fault (exit 2: a spec, a project file, a flag, a file they named)
//! or the job failed (exit 1), and what flag or setting is the way out.
//!
//! Invariants:
//! * Each library error type decides for itself ([`Diagnose`]); the CLI
//!   only walks an error's chain and asks [`diagnosis`] of each cause.
//! * [`diagnosis`] knows every library error type that implements
//!   [`Diagnose`]; a type missing here would exit 1 without a hint, so
//!   the unit test below names each one.

use std::error::Error;

/// An error's verdict for the exit code and the `hint:` line.
pub trait Diagnose {
    /// Whether the user's input is at fault (exit 2).
    fn is_input(&self) -> bool {
        false
    }

    /// A flag, a setting or a command that gets past it.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// A file or directory the user named that cannot be read: bad input
/// (exit 2), whichever module found it.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct InputFileError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl InputFileError {
    /// For `map_err`: the error of reading `path`.
    pub fn at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> InputFileError + '_ {
        move |source| InputFileError {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Diagnose for InputFileError {
    fn is_input(&self) -> bool {
        true
    }
}

/// `cause` as an `E`, also when a variant keeps it boxed.
fn as_error<'a, E: Error + 'static>(cause: &'a (dyn Error + 'static)) -> Option<&'a E> {
    cause
        .downcast_ref::<E>()
        .or_else(|| cause.downcast_ref::<Box<E>>().map(|b| b.as_ref()))
}

/// The verdict of `cause`, if it is a library error.
pub fn diagnosis<'a>(cause: &'a (dyn Error + 'static)) -> Option<&'a dyn Diagnose> {
    macro_rules! first_of {
        ($($ty:ty),+ $(,)?) => {
            None$(.or_else(|| as_error::<$ty>(cause).map(|e| e as &dyn Diagnose)))+
        };
    }
    first_of!(
        InputFileError,
        crate::dockerfile::SpecError,
        crate::dockerfile::ParseFileError,
        crate::plan::PlanError,
        crate::project::ProjectError,
        crate::pipeline::PipelineError,
        crate::store::StoreError,
        crate::executor::BuildError,
        crate::sandbox::SandboxError,
        crate::tools::ToolError,
        crate::compose::ComposeError,
        crate::iso::IsoError,
        crate::disk::DiskError,
        crate::netboot::NetbootError,
        crate::boot::BootError,
        crate::release::ReleaseError,
        crate::keys::KeyError,
        crate::uki::BuildUkiError,
        crate::release::inventory::InventoryError,
        crate::verify::VerifyError,
        crate::rootless::RootlessError,
    )
}

impl Diagnose for crate::rootless::RootlessError {
    fn hint(&self) -> Option<String> {
        crate::rootless::RootlessError::hint(self)
    }
}

/// Whether any cause in the chain from `error` blames the input.
pub fn is_input(error: &(dyn Error + 'static)) -> bool {
    chain(error).any(|cause| diagnosis(cause).is_some_and(|d| d.is_input()))
}

/// The first hint any cause in the chain from `error` carries.
pub fn hint(error: &(dyn Error + 'static)) -> Option<String> {
    chain(error).find_map(|cause| diagnosis(cause).and_then(|d| d.hint()))
}

fn chain<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |e| Error::source(*e))
}

impl Diagnose for crate::dockerfile::SpecError {
    fn is_input(&self) -> bool {
        true
    }
}

impl Diagnose for crate::dockerfile::ParseFileError {
    /// The spec could not be read or parsed: the file the user named.
    fn is_input(&self) -> bool {
        true
    }
}

impl Diagnose for crate::plan::PlanError {
    fn is_input(&self) -> bool {
        true
    }
}

impl Diagnose for crate::project::ProjectError {
    fn is_input(&self) -> bool {
        true
    }
}

impl Diagnose for crate::pipeline::PipelineError {
    fn is_input(&self) -> bool {
        matches!(self, crate::pipeline::PipelineError::Parse(_))
    }
}

impl Diagnose for crate::store::StoreError {
    fn is_input(&self) -> bool {
        use crate::store::StoreError;
        matches!(self, StoreError::UnknownImage(_) | StoreError::Input(_))
    }

    fn hint(&self) -> Option<String> {
        match self {
            crate::store::StoreError::Ownership { .. } => Some(
                "give root and each rootless user a store of their own: --store DIR or KBUILD_STORE (with sudo, HOME often stays the user's)".into(),
            ),
            _ => None,
        }
    }
}

impl Diagnose for crate::executor::BuildError {
    fn hint(&self) -> Option<String> {
        match self {
            // Boxed, so the chain's look-up by type would not find it.
            crate::executor::BuildError::ForeignPlatform { source, .. } => source.hint(),
            other => crate::executor::BuildError::hint(other).map(str::to_string),
        }
    }
}

impl Diagnose for crate::sandbox::SandboxError {
    fn hint(&self) -> Option<String> {
        crate::sandbox::SandboxError::hint(self).map(str::to_string)
    }
}

impl Diagnose for crate::tools::ToolError {
    fn hint(&self) -> Option<String> {
        crate::tools::ToolError::hint(self).map(str::to_string)
    }
}

impl Diagnose for crate::compose::ComposeError {
    fn is_input(&self) -> bool {
        crate::compose::ComposeError::is_input(self)
    }

    fn hint(&self) -> Option<String> {
        crate::compose::ComposeError::hint(self)
    }
}

impl Diagnose for crate::iso::IsoError {
    fn is_input(&self) -> bool {
        crate::iso::IsoError::is_input(self)
    }

    fn hint(&self) -> Option<String> {
        crate::iso::IsoError::hint(self)
    }
}

impl Diagnose for crate::disk::DiskError {
    fn is_input(&self) -> bool {
        crate::disk::DiskError::is_input(self)
    }

    fn hint(&self) -> Option<String> {
        crate::disk::DiskError::hint(self)
    }
}

impl Diagnose for crate::netboot::NetbootError {
    fn is_input(&self) -> bool {
        crate::netboot::NetbootError::is_input(self)
    }

    fn hint(&self) -> Option<String> {
        crate::netboot::NetbootError::hint(self)
    }
}

impl Diagnose for crate::boot::BootError {
    fn is_input(&self) -> bool {
        matches!(self, crate::boot::BootError::NoIso(_))
    }

    fn hint(&self) -> Option<String> {
        crate::boot::BootError::hint(self)
    }
}

impl Diagnose for crate::release::ReleaseError {
    fn is_input(&self) -> bool {
        crate::release::ReleaseError::is_input(self)
    }
}

impl Diagnose for crate::keys::KeyError {
    fn is_input(&self) -> bool {
        crate::keys::KeyError::is_input(self)
    }
}

impl Diagnose for crate::release::inventory::InventoryError {
    fn is_input(&self) -> bool {
        crate::release::inventory::InventoryError::is_input(self)
    }
}

impl Diagnose for crate::uki::BuildUkiError {
    fn is_input(&self) -> bool {
        crate::uki::BuildUkiError::is_input(self)
    }
}

impl Diagnose for crate::verify::VerifyError {
    fn is_input(&self) -> bool {
        matches!(self, crate::verify::VerifyError::NoEpoch)
    }

    fn hint(&self) -> Option<String> {
        match self {
            crate::verify::VerifyError::NoEpoch => Some(
                "set it to a fixed time, e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)".into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_library_error_type_is_known() {
        let spec = crate::dockerfile::parse("Dockerfile", "FROM").unwrap_err();
        assert!(is_input(&spec));
        let missing =
            crate::dockerfile::parse_file(std::path::Path::new("/nonexistent/Dockerfile"))
                .unwrap_err();
        assert!(is_input(&missing), "{missing}");
        let unknown = crate::store::StoreError::UnknownImage("nope".into());
        assert!(is_input(&unknown));
        let boot = crate::boot::BootError::NoIso("/nonexistent.iso".into());
        assert!(is_input(&boot));
        let unreadable = std::fs::read("/nonexistent/input.tar")
            .map_err(InputFileError::at("/nonexistent/input.tar".as_ref()))
            .unwrap_err();
        assert!(is_input(&unreadable));
        let interrupted = crate::executor::BuildError::Interrupted;
        assert!(!is_input(&interrupted));
        assert!(diagnosis(&interrupted).is_some());
    }
}
