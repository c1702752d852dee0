//! The one error type of `mmerge-data`. Every variant names the file, and where there is one
//! the record (question id, identifier, line), so a user can find what is wrong from the
//! message alone.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Errors from reading, generating and batching task data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error on a named path.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A JSON (or JSON Lines) file that does not parse or does not have the expected shape.
    /// `line` and `column` are 1-based and point into the file itself.
    #[error("{path}:{line}:{column}: {reason}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    /// A record that parses but is wrong (a bad label, an id that does not match, ...).
    #[error("{path}: record {record}: {reason}")]
    BadRecord {
        path: PathBuf,
        record: String,
        reason: String,
    },
    /// A record names an image that is not on disk.
    #[error("{path}: record {record}: image {image} does not exist")]
    MissingImage {
        path: PathBuf,
        record: String,
        image: PathBuf,
    },
    /// An answer (or label) that is not in the vocabulary it must come from.
    #[error("{path}: record {record}: answer `{answer}` is not in the answer vocabulary")]
    UnknownAnswer {
        path: PathBuf,
        record: String,
        answer: String,
    },
    /// A split that has no examples.
    #[error("{path}: split `{split}` is empty")]
    EmptySplit { path: PathBuf, split: String },
    /// An image that cannot be decoded or encoded.
    #[error("{path}: image: {reason}")]
    Image { path: PathBuf, reason: String },
    /// A tokenizer that cannot be loaded, trained or run.
    #[error("tokenizer{}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Tokenizer {
        path: Option<PathBuf>,
        reason: String,
    },
    /// An argument or option outside what is supported (names the option and what is allowed).
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// The output exists and overwriting was not asked for.
    #[error("output {path} already exists; pass --force to replace it")]
    OutputExists { path: PathBuf },
}

/// Wraps an I/O result with the path it concerns.
pub(crate) fn io<T>(path: &std::path::Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })
}
