//! The one error type of `mmerge-core`. Every variant names the file (and, where there is one,
//! the tensor) that is wrong, so a user can act on the message alone.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Errors from reading and writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An operating-system error on a named path. (The I/O error is part of the message, not a
    /// `source`, so error chains print it once.)
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not a readable safetensors file (bad header, truncated data, ...).
    #[error("{path}: not a valid safetensors file: {reason}")]
    BadSafetensors { path: PathBuf, reason: String },
    /// A sharded checkpoint's index file is malformed or points at missing data.
    #[error("{path}: bad checkpoint index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    /// The path is neither a safetensors file nor a folder holding one.
    #[error(
        "{path}: no checkpoint found (expected a .safetensors file, or a folder with \
         model.safetensors or model.safetensors.index.json)"
    )]
    NotACheckpoint { path: PathBuf },
    /// A hub id that is not in the local Hugging Face cache (nothing is ever downloaded).
    #[error(
        "`{model}` is neither a path nor a model in the local hub cache {cache}; mmerge never \
         downloads, so put it there first (or give a folder)"
    )]
    NotInHubCache { model: String, cache: PathBuf },
    /// A tensor that was asked for is not in the checkpoint.
    #[error("{path}: tensor `{name}` not found")]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor's dtype cannot be converted to `f32` for computation.
    #[error("{path}: tensor `{name}` has dtype {dtype}; only F64, F32, F16 and BF16 can be merged")]
    NotFloat {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// The output exists and replacing it was not asked for. (How to ask is the caller's
    /// business: the CLI adds its `--force`.)
    #[error("output {path} already exists")]
    OutputExists { path: PathBuf },
    /// A write was asked for a tensor or range the output does not have.
    #[error("output tensor `{name}`: {reason}")]
    BadWrite { name: String, reason: String },
}

impl CoreError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            error,
        }
    }
}
