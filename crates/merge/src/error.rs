//! The error type of `mmerge-merge`: every variant names the file, key, tensor or config line
//! that is wrong and, where there is a closed set of valid choices, lists them.

use std::path::PathBuf;

use mmerge_core::CoreError;

/// Result alias for this crate.
pub type Result<T, E = MergeError> = std::result::Result<T, E>;

/// Errors from configuring, planning and running a merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The YAML config is malformed or names something unknown.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A tensor is missing from one of the models being merged.
    #[error("tensor `{key}` is missing from {model} (present in {other})")]
    MissingKey {
        key: String,
        model: PathBuf,
        other: PathBuf,
    },
    /// Two inputs of one merge group have different shapes.
    #[error("tensor `{key}`: shape {shape_a:?} in {model_a} but {shape_b:?} in {model_b}")]
    ShapeMismatch {
        key: String,
        model_a: PathBuf,
        shape_a: Vec<usize>,
        model_b: PathBuf,
        shape_b: Vec<usize>,
    },
    /// A merge produced NaN or infinity.
    #[error("merged tensor `{key}` contains {what} (element {index}); no output was written")]
    NonFinite {
        key: String,
        what: &'static str,
        index: usize,
    },
    /// A parameter is missing, has the wrong type or an invalid value for a tensor.
    #[error("parameter `{name}` for tensor `{key}`: {message}")]
    Param {
        name: String,
        key: String,
        message: String,
    },
    /// A statistics folder does not fit the method or the models.
    #[error("statistics {path}: {message}")]
    Statistics { path: PathBuf, message: String },
    /// Alignment (`align`) failed: a unit, key or parameter at fault.
    #[error(transparent)]
    Align(#[from] crate::align::AlignError),
}
