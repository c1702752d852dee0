//! Models for mmerge on libtorch (`tch`): the multiway transformer whose modality experts the
//! study merges, its heads, checkpoint I/O with strict key checks, Hugging Face import and
//! export, and the optimiser and schedules. (Merging the experts into the modality-agnostic
//! `shared` model needs no libtorch: `mmerge_merge::experts`.)

pub mod config;
pub mod error;
pub mod heads;
pub mod hf;
pub mod io;
pub mod itm;
pub mod multiway;
pub mod optim;
pub mod probe;
pub mod schedule;

pub use config::{Expert, MultiwayConfig, Part, Sharing};
pub use error::{ConfigError, ModelError, Result};
pub use multiway::{MultiwayTransformer, TextBatch, parameter_count};
