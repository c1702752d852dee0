//! The training crate's errors: what went wrong, in the trainer's terms (the CLI adds advice).

use std::path::PathBuf;

use mmerge_data::DataError;
use mmerge_models::ModelError;
use mmerge_models::itm::ItmError;
use mmerge_models::optim::OptimError;
use mmerge_models::schedule::ScheduleError;

/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A recipe that does not parse or validate: the file, the line when known, the problem.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Recipe {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A name that is not registered (task kind, objective, suite task, preset ...).
    #[error("unknown {what} `{name}`; valid: {valid}")]
    Unknown {
        what: &'static str,
        name: String,
        valid: String,
    },
    /// Inputs that do not fit together (a task's data and its head, a batch and its model).
    #[error("{0}")]
    Invalid(String),
    /// The run folder already holds a finished model (`model/`).
    #[error("{} already holds a finished model", path.display())]
    FinishedRun { path: PathBuf },
    /// The run folder holds the resumable state of a run that did not finish.
    #[error("{} holds the state of an unfinished run", path.display())]
    UnfinishedRun { path: PathBuf },
    /// A loss or score that is NaN or infinite.
    #[error("{what} is {value} at step {step}")]
    NotFinite { what: String, step: u64, value: f64 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Itm(#[from] ItmError),
    #[error(transparent)]
    Core(#[from] mmerge_core::CoreError),
    /// The run's log, metrics or TensorBoard events could not be written.
    #[error(transparent)]
    Sink(#[from] mmerge_sink::SinkError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
