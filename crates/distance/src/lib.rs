//! Weight distances between checkpoints for mmerge: L2 (plain and normalised), cosine
//! dissimilarity, sign dissimilarity, soft sign dissimilarity (SSD) and truncated SSD (TSSD),
//! on raw weights or on task vectors, per tensor, per layer and over the whole model.
//!
//! The formulas, their conventions and their provenance (our reading of arXiv 2304.14933,
//! whose exact definitions were not available to us) are in [`distance`]; [`DISTANCES`] is the
//! one list of them (name, formula, accumulator, table column, float64 [`oracle`]). Tensors are
//! streamed in bounded memory ([`stream`]); [`compare()`] walks two checkpoints and returns a
//! [`DistanceReport`] that renders as versioned JSON ([`report::SCHEMA`]) or a table.

pub mod compare;
pub mod distance;
pub mod error;
pub mod oracle;
pub mod report;
pub mod stream;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

pub use compare::{
    DistanceReport, LayerReport, Mode, SkippedTensor, TensorReport, compare, compare_with_progress,
};
pub use distance::{
    Accumulated, Accumulator, Column, DISTANCES, Distance, DistanceOptions, Distances, GroupStats,
    TensorDistance,
};
pub use error::{DistanceError, Result};
pub use report::SCHEMA;
pub use stream::{PairSource, SlicePair, pair_distance, slice_distance};
