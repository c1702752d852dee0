//! The one error type of `mmerge-distance`. Every variant that concerns a tensor names it and the
//! checkpoint(s) involved, so a user can act on the message alone.

use std::path::PathBuf;

use mmerge_core::CoreError;

/// Result alias for this crate.
pub type Result<T, E = DistanceError> = std::result::Result<T, E>;

/// Errors from computing weight distances.
#[derive(Debug, thiserror::Error)]
pub enum DistanceError {
    /// Reading a checkpoint failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A tensor is in one checkpoint and not in another.
    #[error("tensor `{name}` is in {present} but missing from {missing}")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The checkpoint that has it.
        present: PathBuf,
        /// The checkpoint that lacks it.
        missing: PathBuf,
    },
    /// A tensor has different shapes in two checkpoints.
    #[error("tensor `{name}`: shape {shape:?} in {path} but {other_shape:?} in {other_path}")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// The first checkpoint (always `a`).
        path: PathBuf,
        /// Its shape there.
        shape: Vec<usize>,
        /// The other checkpoint (`b` or the base).
        other_path: PathBuf,
        /// Its shape there.
        other_shape: Vec<usize>,
    },
    /// A tensor is floating point in one checkpoint and not in another.
    #[error(
        "tensor `{name}`: dtype {dtype} in {path} but {other_dtype} in {other_path}; \
         both must be floating point, or both not (then the tensor is skipped)"
    )]
    KindMismatch {
        /// The tensor name.
        name: String,
        /// The first checkpoint (always `a`).
        path: PathBuf,
        /// Its dtype there.
        dtype: String,
        /// The other checkpoint (`b` or the base).
        other_path: PathBuf,
        /// Its dtype there.
        other_dtype: String,
    },
    /// In-memory inputs of different lengths.
    #[error("length mismatch: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// Which input (`b` or `base`).
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length of `a`.
        expected: usize,
    },
    /// An option is out of range.
    #[error("invalid distance option: {0}")]
    InvalidOption(String),
    /// A broken internal invariant (a bug in this crate; please report it).
    #[error("internal error in mmerge-distance: {0}")]
    Internal(String),
}
