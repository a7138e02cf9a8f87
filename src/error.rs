//! The library's error type: every variant names what was wrong (flag, file, array, layer).

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in gradscope, with enough context for a one-line message.
///
/// All variants except [`Error::Internal`] and [`Error::Device`] are caused by the user's
/// input; the binary maps every variant to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or configuration value that is out of range or malformed.
    #[error("invalid value for {flag}: {message}")]
    InvalidArgument { flag: String, message: String },

    /// A file that could not be opened, read, written or parsed.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },

    /// An array in a .npy/.npz file with the wrong shape.
    #[error("{}: array '{array}' has shape {found:?}, expected {expected}", path.display())]
    Shape {
        path: PathBuf,
        array: String,
        expected: String,
        found: Vec<usize>,
    },

    /// A non-finite value in user data.
    #[error("{}: array '{array}' holds a non-finite value ({value}) at index {index:?}", path.display())]
    NonFinite {
        path: PathBuf,
        array: String,
        index: Vec<usize>,
        value: f64,
    },

    /// A job that would need more memory than is available.
    #[error("{what} would need {needed_mib} MiB, more than the {available_mib} MiB available; {hint}")]
    OutOfMemory {
        what: String,
        needed_mib: u64,
        available_mib: u64,
        hint: String,
    },

    /// A backend that is not compiled in, or a device problem (no adapter, device lost,
    /// validation error) with the kernel and sizes involved.
    #[error("{0}")]
    Device(String),

    /// A numerical quantity that is undefined for the given parameters (no fixed point,
    /// no critical point, non-convergence).
    #[error("{0}")]
    Numerical(String),

    /// `--check` found the GPU outside the tolerance of the CPU reference (exit code 1).
    #[error("{0}")]
    CheckFailed(String),

    /// A bug: an invariant that should hold did not.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn arg(flag: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            flag: flag.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
