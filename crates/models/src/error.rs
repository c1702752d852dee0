//! The error type of `mmerge-models`.

use std::path::PathBuf;

use mmerge_core::CoreError;

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// A key whose tensor has the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub key: String,
    pub expected: Vec<i64>,
    pub found: Vec<usize>,
}

/// Errors from building, loading and running models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A model config is malformed or inconsistent.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A checkpoint does not fit the model.
    #[error(
        "{path} does not fit the model:{}",
        describe(missing, unexpected, mismatched)
    )]
    Keys {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<ShapeMismatch>,
    },
    /// libtorch reported an error (bad shapes, device problems).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Inputs that do not fit the model (shapes, token ids, missing modalities).
    #[error("bad input: {0}")]
    Input(String),
}

fn describe(missing: &[String], unexpected: &[String], mismatched: &[ShapeMismatch]) -> String {
    let mut s = String::new();
    if !missing.is_empty() {
        s.push_str(&format!(
            "\n  missing keys ({}): {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    if !unexpected.is_empty() {
        s.push_str(&format!(
            "\n  unexpected keys ({}): {}",
            unexpected.len(),
            unexpected.join(", ")
        ));
    }
    for m in mismatched {
        s.push_str(&format!(
            "\n  `{}`: expected shape {:?}, found {:?}",
            m.key, m.expected, m.found
        ));
    }
    s
}
