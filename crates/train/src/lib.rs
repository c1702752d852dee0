//! Training and evaluation of mmerge's multiway transformers on task suites: the paper's
//! recipe (arXiv 2304.14933) at any scale. A [`recipe::Recipe`] (YAML) names the suite, the
//! model and its initialisation, and either pre-training objectives or a downstream task;
//! [`trainer::train`] runs it with resumable checkpoints and one logging sink, and
//! [`trainer::evaluate`] scores a checkpoint on a task ([`trainer::evaluate_detailed`] adds
//! the per-item values of each score, for paired comparisons).
//!
//! - [`input`]: items → decoded samples → the one model input type;
//! - [`net`]: the encoder and its heads, initialised from scratch, a checkpoint, a `shared`
//!   checkpoint expanded into every expert, or Hugging Face weights;
//! - [`tasks`]: the task registry (VQA, retrieval, NLVR2, image / text classification,
//!   segmentation);
//! - [`objectives`]: the pre-training objective registry (ITC, ITM, MLM, MIM, text MLM);
//! - [`eval`]: running a split through a network.

pub mod error;
pub mod eval;
pub mod input;
pub mod logging;
pub mod net;
pub mod objectives;
pub mod recipe;
pub mod state;
pub mod statistics;
pub mod tasks;
pub mod trainer;
pub mod zeroshot;

pub use error::{Result, TrainError};
