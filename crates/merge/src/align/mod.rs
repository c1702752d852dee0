//! Permutation and zip alignment of transformer units: Git Re-Basin weight matching
//! (Ainsworth et al., arXiv 2209.04836), activation matching, ZipIt (Stoica et al., arXiv
//! 2305.03053) and MuDSC (Xu et al., arXiv 2403.01753), pure Rust, float64.
//!
//! A *unit* ([`Unit`]) is a feature axis shared by a set of tensors; model B's features of
//! every unit are matched to model A's on a 2O×2O similarity S (A's O features, then B's):
//! - S_A, activation similarity: the Pearson correlation of the two models' features on the
//!   same inputs ([`JointStats`]).
//! - S_W, weight similarity: the Pearson correlation of the features' concatenated weight
//!   vectors, with every other axis mapped by its unit's current transform.
//! - S = λ·S_W + (1 − λ)·S_A (MuDSC; λ = `fix_rate`). λ = 1: weight matching; λ = 0: activation
//!   matching (align) or ZipIt (zip); in between: MuDSC-Align / MuDSC-Zip.
//!
//! Solvers ([`solve`](mod@solve)): align, σ = argmax Σᵢ S[i, O+σ(i)] by linear assignment ([`lap`]), and
//! group align for attention heads (heads matched by their within-head assignments' mean
//! similarity, dims permuted only within a head); zip, ZipIt's greedy pairing of the most
//! similar features, with merge = P/colsum and unmerge = P. The driver ([`matching`]) runs
//! MuDSC's coordinate ascent over units; [`apply()`] moves each model into the aligned or merged
//! space, where averaging the two models gives the merge.
//!
//! Deviations from the papers' code:
//! - S_W is the Pearson correlation over concatenated weight vectors (MuDSC `_correlation`),
//!   also for plain weight matching, where Git Re-Basin maximises raw inner products; so
//!   MuDSC with λ = 1 *is* weight matching here. Git Re-Basin's stop rule (no unit improves by
//!   1e-12) is replaced by MuDSC's (`tol` non-improving sweeps of the mean matched similarity).
//! - Zip's merge is P/colsum(P) without the reference's +1e-5 (columns are never empty), so
//!   zipping identical models reproduces them exactly.
//! - With λ = 1, activations are ignored (MuDSC would still start from their solution).
//! - Group zip budgets are per head pair with β (MuDSC: β fixed at 1); a zip with no admissible
//!   pair left is an error; a zero within-model budget blocks within-model merges at once.
//! - A negative variance from rounding counts as 0 in the correlation's normalisation.

pub mod apply;
pub mod io;
pub mod lap;
pub mod matching;
pub mod similarity;
pub mod solve;
pub mod units;

pub use apply::{Side, apply};
pub use io::{
    AlignSummary, align_checkpoints, align_experts, read_joint_stats, write_joint_stats,
    zip_checkpoints,
};
pub use matching::{AlignMethod, Options, Solver, align_units, solve};
pub use similarity::{JointStats, weight_similarity};
pub use solve::Transform;
pub use units::{Member, Role, Tensor, Unit, Weights, expert_units, model_units, validate_units};

/// Errors of the alignment module; each names the key, unit or value at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlignError {
    /// Bad input to the linear assignment.
    #[error("linear assignment: {0}")]
    Lap(String),
    /// Bad input to a solver.
    #[error("alignment solver: {0}")]
    Solver(String),
    /// A parameter out of range.
    #[error("alignment parameter `{name}` = {value}: expected {expected}")]
    Param {
        name: &'static str,
        value: f64,
        expected: String,
    },
    #[error("λ = {0} is outside [0, 1]")]
    Lambda(f64),
    /// λ < 1 needs activation statistics for every unit.
    #[error("unit `{unit}` has no activation statistics, needed for λ = {lambda} < 1")]
    NoActivations { unit: String, lambda: f64 },
    /// Activation statistics of the wrong size.
    #[error("activation statistics of unit `{unit}`: {message}")]
    Stats { unit: String, message: String },
    #[error("tensor `{key}` is missing from model {model}")]
    MissingKey { key: String, model: &'static str },
    /// A member's axis is missing or not of the unit's width.
    #[error("unit `{unit}`: axis {axis} of `{key}` has length {}, expected {expected}", found.map_or("none (no such axis)".to_string(), |f| f.to_string()))]
    Width {
        unit: String,
        key: String,
        axis: usize,
        expected: usize,
        found: Option<usize>,
    },
    /// A malformed unit or transform.
    #[error("unit `{unit}`: {message}")]
    Unit { unit: String, message: String },
    /// A key of the multiway transformer that the unit spec does not know.
    #[error("key `{0}` is not in the multiway transformer's unit spec")]
    UnknownKey(String),
    #[error("unknown alignment method `{0}` (known: {known})", known = matching::AlignMethod::NAMES.join(", "))]
    UnknownMethod(String),
    /// A method or setting that this alignment mode (model or expert, [`io`]) cannot run.
    #[error("alignment method `{method}`: {message}")]
    Mode {
        method: &'static str,
        message: String,
    },
    /// An expert name that the multiway checkpoint does not store, or named twice.
    #[error("expert `{name}`: {message}")]
    Expert { name: String, message: String },
}
