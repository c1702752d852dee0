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
    /// A setting outside its valid range (`what` names the setting and its value, e.g.
    /// `image size 8`; `allowed` says what is valid).
    #[error("{what}: {allowed}")]
    OutOfRange { what: String, allowed: String },
    /// A name that is not one of the valid choices (a scale, a split, a task).
    #[error("{what} `{name}` is unknown; valid: {valid}")]
    UnknownName {
        what: &'static str,
        name: String,
        valid: String,
    },
    /// A class or label list that names one entry twice.
    #[error("{list}: `{label}` is given twice")]
    DuplicateLabel { list: &'static str, label: String },
    /// An image file-name pattern that cannot be used (see `formats::vqa::ImagePattern`).
    #[error("image pattern `{pattern}`: {reason}")]
    BadImagePattern { pattern: String, reason: String },
    /// A file whose extension does not say which format it is in.
    #[error("{path}: extension must be {expected}")]
    UnknownExtension {
        path: PathBuf,
        expected: &'static str,
    },
    /// Arrays that must agree in shape do not (a retrieval split's parts, a score matrix, an
    /// image to cut into patches); `what` names them.
    #[error("{what}: {reason}")]
    Shape { what: &'static str, reason: String },
    /// A NaN among values that must be numbers (a score matrix); `at` says where.
    #[error("{what}: NaN at {at}")]
    NaN { what: &'static str, at: String },
    /// A task of a suite whose kind and layout do not go together (`suite.json`).
    #[error("{path}: task `{task}`: {reason}")]
    BadTask {
        path: PathBuf,
        task: String,
        reason: String,
    },
    /// Real-asset sources that are not (or not fully) prepared: `path` is what is missing
    /// or wrong.
    #[error("{path}: not prepared real-asset sources: {reason}")]
    SourcesNotPrepared { path: PathBuf, reason: String },
    /// A value that cannot be turned into JSON bytes for `path` (relative to its suite).
    #[error("{path}: cannot encode as JSON: {reason}")]
    Encode { path: PathBuf, reason: String },
    /// The synthetic generator could not make an item that satisfies its constraints.
    #[error("synthetic suite: could not build {what} in {tries} tries")]
    Unsatisfiable { what: String, tries: usize },
    /// A thread of the batch loader could not be started.
    #[error("{what}: cannot start threads: {reason}")]
    Threads { what: &'static str, reason: String },
    /// The caller's load function panicked inside the batch loader.
    #[error("batch loader: the load function panicked: {message}")]
    LoaderPanicked { message: String },
    /// The output exists and overwriting was not asked for.
    #[error("output {path} already exists")]
    OutputExists { path: PathBuf },
    /// Another error from `mmerge-core` (its I/O and existing-output errors become
    /// [`DataError::Io`] and [`DataError::OutputExists`]).
    #[error(transparent)]
    Core(mmerge_core::CoreError),
}

impl From<mmerge_core::CoreError> for DataError {
    /// The core errors this crate meets (atomic files and folders) in this crate's terms.
    fn from(e: mmerge_core::CoreError) -> Self {
        use mmerge_core::CoreError;
        match e {
            CoreError::Io { path, error } => DataError::Io { path, error },
            CoreError::OutputExists { path } => DataError::OutputExists { path },
            other => DataError::Core(other),
        }
    }
}

/// [`DataError::Encode`] for a serde_json error while writing `path`.
pub(crate) fn encode(path: impl Into<PathBuf>, e: &serde_json::Error) -> DataError {
    DataError::Encode {
        path: path.into(),
        reason: e.to_string(),
    }
}

/// Wraps an I/O result with the path it concerns.
pub(crate) fn io<T>(path: &std::path::Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })
}
