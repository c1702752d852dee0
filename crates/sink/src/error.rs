//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong logging: each variant names the file, or the tag and step, at fault.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file or folder of the run folder could not be created or written.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done, e.g. "appending to the log".
        what: &'static str,
        source: std::io::Error,
    },
    /// The TensorBoard event file could not be created or written.
    #[error("{}: {what}: {source}", path.display())]
    Tensorboard {
        /// The event file (its folder when it could not be created).
        path: PathBuf,
        what: &'static str,
        source: Box<mmerge_tensorboard::TensorboardError>,
    },
    /// `metrics.json` could not be encoded.
    #[error("{}: encoding the metrics: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// `metrics.json` could not be written (atomically).
    #[error("writing the metrics: {source}")]
    Write {
        path: PathBuf,
        source: Box<mmerge_core::CoreError>,
    },
    /// A scalar that is NaN or infinite: refused, so a diverged run is not logged as if fine.
    #[error("scalar {tag:?} at step {step} is {value}, not a finite number; refusing to log it")]
    NotFinite { tag: String, step: u64, value: f64 },
    /// A histogram holding a NaN or infinite value.
    #[error(
        "histogram {tag:?} at step {step}: value {index} is {value}, not a finite number; refusing to log it"
    )]
    HistogramNotFinite {
        tag: String,
        step: u64,
        index: usize,
        value: f32,
    },
    /// A histogram of no values.
    #[error("histogram {tag:?} at step {step} has no values")]
    EmptyHistogram { tag: String, step: u64 },
    /// A step TensorBoard cannot store (its steps are `i64`).
    #[error(
        "{tag:?}: step {step} is larger than TensorBoard's largest step ({})",
        i64::MAX
    )]
    StepTooLarge { tag: String, step: u64 },
}

/// `Result` with [`SinkError`].
pub type Result<T, E = SinkError> = std::result::Result<T, E>;
