//! The weight-distance formulas, and the `f64` accumulators that compute them in one streaming
//! pass.
//!
//! # Provenance: our reading, NOT the paper's verified definitions
//!
//! "An Empirical Study of Multimodal Model Merging" (Sung et al., EMNLP Findings 2023,
//! arXiv 2304.14933) proposes two metrics of the distance between the weights to be merged as
//! indicators of the merge outcome. **The paper's exact metric definitions were NOT available to
//! us**: its body could not be read, so every formula below is *our reading* (unverified) of
//! what an "L2 distance" and a "truncated soft sign dissimilarity" are, plus three relatives,
//! so that the correlation study can rank them. Names, normalisations, the truncation rule, its
//! default and the aggregation over tensors may all differ from the paper.
//!
//! # Formulas
//!
//! For two tensors a, b of one group (or task vectors a − w0, b − w0 when a base w0 is given,
//! formed in `f32`, the compute type of every merge), flattened to length d:
//!
//! * **L2**: `l2 = ‖a − b‖₂ = sqrt(Σ (a_i − b_i)²)`; **normalised L2**:
//!   `l2_normalized = ‖a − b‖₂ / sqrt(d)` (the root-mean-square difference).
//! * **Cosine dissimilarity**: `cosine = 1 − ⟨a,b⟩ / (‖a‖₂ ‖b‖₂)` ∈ [0, 2]. When both norms
//!   are 0 it is 0 (equal tensors); when exactly one is 0 it is 1 (no direction in common).
//! * **Sign dissimilarity**: `sign = #{i : sgn(a_i) ≠ sgn(b_i)} / d` ∈ [0, 1], with
//!   `sgn(x) ∈ {−1, 0, +1}` and `sgn(0) = sgn(−0) = 0`, so 0 against a non-zero value counts
//!   as different (NaN counts as 0).
//! * **Soft sign dissimilarity** (SSD): `ssd = ½ (1 − Σ a_i b_i / Σ |a_i||b_i|)` ∈ [0, 1]: the
//!   magnitude-weighted fraction of sign disagreement. It is 0 when `Σ |a_i||b_i| = 0` (no
//!   coordinate where both are non-zero: nothing disagrees).
//! * **Truncated SSD** (TSSD, parameter k %, default 20): the SSD over the m coordinates with
//!   the largest joint magnitude `μ_i = |a_i| + |b_i|` (computed in `f32`), where
//!   `m = round_half_up(k/100 · d)` clamped to [1, d]. Ties at the threshold: every coordinate
//!   with `μ_i` above the m-th largest value, then the lowest-index coordinates equal to it
//!   until exactly m are taken. The threshold is found exactly in bounded memory by
//!   [`mmerge_core::select::RadixSelect`]. At k = 100 % TSSD equals SSD bit for bit (same sums
//!   in the same order).
//!
//! An empty tensor (d = 0) has every distance 0. A NaN or infinite weight makes the affected
//! distances NaN (shown as `null` in JSON); nothing is silently dropped. Rounding can push a
//! value a hair outside its range, so cosine is clamped to [0, 2] and SSD/TSSD to [0, 1].
//!
//! # Aggregation over tensors (groups, layers, the whole model)
//!
//! L2, normalised L2, cosine, sign and SSD of a group combine the accumulated sums, so they are
//! exactly the distances of the concatenation of the group's tensors. TSSD of a group is the
//! numel-weighted mean of its tensors' TSSDs (each tensor truncated to its own top k %): a
//! global top-k over a whole model would let a few large-magnitude tensors (embeddings) take
//! the whole budget.

use crate::error::{DistanceError, Result};
use crate::oracle;

/// Default `k` of the truncated soft sign dissimilarity, in percent.
pub const DEFAULT_TSSD_TOP_K_PERCENT: f64 = 20.0;
/// Default number of elements read and accumulated at a time.
pub const DEFAULT_CHUNK_LEN: usize = 1 << 16;

/// Options of the distance computation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistanceOptions {
    /// `k` of TSSD: the percentage of coordinates (by joint magnitude) kept, in (0, 100].
    pub tssd_top_k_percent: f64,
    /// Elements per chunk (memory per worker is a few chunks of `f32`); at least 1.
    pub chunk_len: usize,
}

impl Default for DistanceOptions {
    fn default() -> Self {
        DistanceOptions {
            tssd_top_k_percent: DEFAULT_TSSD_TOP_K_PERCENT,
            chunk_len: DEFAULT_CHUNK_LEN,
        }
    }
}

impl DistanceOptions {
    /// Checks the ranges: `0 < tssd_top_k_percent <= 100`, `chunk_len >= 1`.
    pub fn validate(&self) -> Result<()> {
        let k = self.tssd_top_k_percent;
        if !(k > 0.0 && k <= 100.0) {
            return Err(DistanceError::InvalidOption(format!(
                "tssd_top_k_percent must be in (0, 100], got {k}"
            )));
        }
        if self.chunk_len == 0 {
            return Err(DistanceError::InvalidOption(
                "chunk_len must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Number of coordinates TSSD keeps out of `d`: `round_half_up(k/100 · d)` clamped to
/// `[1, d]` (0 when `d == 0`).
pub fn tssd_count(d: u64, k_percent: f64) -> u64 {
    if d == 0 {
        return 0;
    }
    // k·d first: exact for integer k and d < 2^53 / 100, so x.5 cases round up reliably.
    let m = (k_percent * d as f64 / 100.0 + 0.5).floor();
    (m as u64).clamp(1, d) // `as` saturates (NaN → 0)
}

/// `sgn(x)` ∈ {−1, 0, +1}; zero (either sign) and NaN give 0.
#[inline]
pub fn sgn(x: f32) -> i8 {
    i8::from(x > 0.0) - i8::from(x < 0.0)
}

/// Joint magnitude `|a| + |b|` in `f32`, the key TSSD ranks coordinates by (never negative,
/// so its bit pattern orders like its value, as [`mmerge_core::select::RadixSelect`] needs).
#[inline]
pub fn joint_magnitude(a: f32, b: f32) -> f32 {
    (a.abs() + b.abs()).abs()
}

/// Cosine dissimilarity from `⟨a,b⟩`, `‖a‖²` and `‖b‖²` (see the module docs for zero norms).
pub fn cosine_from(dot: f64, norm_a_sq: f64, norm_b_sq: f64) -> f64 {
    let (na, nb) = (norm_a_sq.sqrt(), norm_b_sq.sqrt());
    match (na == 0.0, nb == 0.0) {
        (true, true) => 0.0,
        (true, false) | (false, true) => 1.0,
        (false, false) => (1.0 - dot / (na * nb)).clamp(0.0, 2.0),
    }
}

/// Soft sign dissimilarity from `Σ a_i b_i` and `Σ |a_i||b_i|` (0 when the latter is 0).
pub fn soft_sign_from(dot: f64, abs_dot: f64) -> f64 {
    if abs_dot == 0.0 {
        0.0
    } else {
        (0.5 * (1.0 - dot / abs_dot)).clamp(0.0, 1.0)
    }
}

/// The two sums of the (truncated) soft sign dissimilarity, accumulated in index order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SoftSignSums {
    /// `Σ a_i b_i`.
    pub dot: f64,
    /// `Σ |a_i||b_i|`.
    pub abs_dot: f64,
}

impl SoftSignSums {
    /// Adds one product `a_i b_i` (in `f64`).
    #[inline]
    pub fn add(&mut self, product: f64) {
        self.dot += product;
        self.abs_dot += product.abs();
    }

    /// Adds another partial sum (the order of merges fixes the rounding).
    pub fn merge(&mut self, other: &SoftSignSums) {
        self.dot += other.dot;
        self.abs_dot += other.abs_dot;
    }

    /// The soft sign dissimilarity of these sums.
    pub fn value(&self) -> f64 {
        soft_sign_from(self.dot, self.abs_dot)
    }
}

/// Streaming sums, in `f64`, from which L2, cosine, sign and SSD follow. Combining two
/// accumulators ([`Accumulator::merge`]) gives the accumulator of the concatenated inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accumulator {
    /// Number of coordinates seen (d).
    pub numel: u64,
    /// `Σ (a_i − b_i)²`.
    pub sum_sq_diff: f64,
    /// `Σ a_i²`.
    pub norm_a_sq: f64,
    /// `Σ b_i²`.
    pub norm_b_sq: f64,
    /// `Σ a_i b_i` and `Σ |a_i||b_i|`.
    pub soft: SoftSignSums,
    /// `#{i : sgn(a_i) ≠ sgn(b_i)}`.
    pub sign_diff: u64,
}

impl Accumulator {
    /// Accumulates the coordinates of `a` and `b` (same length) in index order.
    pub fn observe(&mut self, a: &[f32], b: &[f32]) {
        debug_assert_eq!(a.len(), b.len());
        for (&x, &y) in a.iter().zip(b) {
            let (xf, yf) = (f64::from(x), f64::from(y));
            let diff = xf - yf;
            self.sum_sq_diff += diff * diff;
            self.norm_a_sq += xf * xf;
            self.norm_b_sq += yf * yf;
            self.soft.add(xf * yf);
            self.sign_diff += u64::from(sgn(x) != sgn(y));
        }
        self.numel += a.len().min(b.len()) as u64;
    }

    /// Adds another accumulator's sums into this one.
    pub fn merge(&mut self, other: &Accumulator) {
        self.numel += other.numel;
        self.sum_sq_diff += other.sum_sq_diff;
        self.norm_a_sq += other.norm_a_sq;
        self.norm_b_sq += other.norm_b_sq;
        self.soft.merge(&other.soft);
        self.sign_diff += other.sign_diff;
    }

    /// `‖a − b‖₂`.
    pub fn l2(&self) -> f64 {
        self.sum_sq_diff.sqrt()
    }

    /// `‖a − b‖₂ / sqrt(d)` (0 when d = 0).
    pub fn l2_normalized(&self) -> f64 {
        if self.numel == 0 {
            0.0
        } else {
            self.l2() / (self.numel as f64).sqrt()
        }
    }

    /// Cosine dissimilarity `1 − ⟨a,b⟩ / (‖a‖‖b‖)`.
    pub fn cosine(&self) -> f64 {
        cosine_from(self.soft.dot, self.norm_a_sq, self.norm_b_sq)
    }

    /// Fraction of coordinates whose signs differ (0 when d = 0).
    pub fn sign(&self) -> f64 {
        if self.numel == 0 {
            0.0
        } else {
            self.sign_diff as f64 / self.numel as f64
        }
    }

    /// Soft sign dissimilarity.
    pub fn soft_sign(&self) -> f64 {
        self.soft.value()
    }
}

/// How a distance is accumulated, which fixes how a group of tensors combines it.
#[derive(Debug, Clone, Copy)]
pub enum Accumulated {
    /// From the [`Accumulator`] of all coordinates. A group's value is that of its summed
    /// accumulators: exactly the distance of the concatenated tensors.
    Full(fn(&Accumulator) -> f64),
    /// From the soft-sign sums over a tensor's top-k % coordinates by joint magnitude. A
    /// group's value is the numel-weighted mean of its tensors' values (0 for no coordinates).
    TopK(fn(&SoftSignSums) -> f64),
}

/// How the terminal table prints a distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Scientific, 4 decimals (`{:>width$.4e}`).
    Sci { header: &'static str, width: usize },
    /// Fixed, 5 decimals (`{:>width$.5}`).
    Fixed { header: &'static str, width: usize },
}

/// One weight distance: a line of [`DISTANCES`].
#[derive(Debug, Clone, Copy)]
pub struct Distance {
    /// The JSON field (`mmerge.distance/1`) and the name in [`Distances::get`].
    pub name: &'static str,
    /// The formula, as `crates/distance/SCHEMA.md` states it.
    pub formula: &'static str,
    /// Its value from the streamed sums.
    pub accumulated: Accumulated,
    /// Its plain float64 reference over whole vectors `(a, b, k %)`.
    pub oracle: fn(&[f32], &[f32], f64) -> f64,
    /// Its table column.
    pub column: Column,
}

/// The registry of weight distances, in the order of the JSON report and the table. Adding a
/// distance is one entry here (its oracle goes in `crate::oracle`) and one row in `SCHEMA.md`;
/// `tests/registry` checks both.
pub const DISTANCES: [Distance; 6] = [
    Distance {
        name: "l2",
        formula: "‖a − b‖₂",
        accumulated: Accumulated::Full(Accumulator::l2),
        oracle: oracle::l2,
        column: Column::Sci {
            header: "l2",
            width: 11,
        },
    },
    Distance {
        name: "l2_normalized",
        formula: "‖a − b‖₂ / √d",
        accumulated: Accumulated::Full(Accumulator::l2_normalized),
        oracle: oracle::l2_normalized,
        column: Column::Sci {
            header: "l2/sqrt(d)",
            width: 11,
        },
    },
    Distance {
        name: "cosine",
        formula: "1 − ⟨a,b⟩ / (‖a‖‖b‖)",
        accumulated: Accumulated::Full(Accumulator::cosine),
        oracle: oracle::cosine,
        column: Column::Fixed {
            header: "cosine",
            width: 8,
        },
    },
    Distance {
        name: "sign",
        formula: "sgn(a_i) ≠ sgn(b_i)",
        accumulated: Accumulated::Full(Accumulator::sign),
        oracle: oracle::sign,
        column: Column::Fixed {
            header: "sign",
            width: 8,
        },
    },
    Distance {
        name: "soft_sign",
        formula: "SSD = ½ (1 − Σ a_i b_i / Σ |a_i||b_i|)",
        accumulated: Accumulated::Full(Accumulator::soft_sign),
        oracle: oracle::soft_sign,
        column: Column::Fixed {
            header: "ssd",
            width: 8,
        },
    },
    Distance {
        name: "truncated_soft_sign",
        formula: "the SSD over the top k % coordinates by |a_i| + |b_i|",
        accumulated: Accumulated::TopK(SoftSignSums::value),
        oracle: oracle::truncated_soft_sign,
        column: Column::Fixed {
            header: "tssd",
            width: 8,
        },
    },
];

/// Every distance of one tensor pair (or one group of tensors), in [`DISTANCES`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distances(pub [f64; DISTANCES.len()]);

impl Distances {
    /// `(name, value)` pairs in the order of the JSON schema and the table.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        DISTANCES.iter().zip(self.0).map(|(d, v)| (d.name, v))
    }

    /// The value of the distance called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.named().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl std::ops::Index<&str> for Distances {
    type Output = f64;

    /// The value of a registered distance; panics on a name that is not in [`DISTANCES`].
    fn index(&self, name: &str) -> &f64 {
        match DISTANCES.iter().position(|d| d.name == name) {
            Some(i) => &self.0[i],
            None => panic!("no distance named `{name}`"),
        }
    }
}

/// The distances of one tensor pair: its accumulator and its TSSD.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TensorDistance {
    /// Sums over all d coordinates.
    pub acc: Accumulator,
    /// The sums over the TSSD's top-k % coordinates.
    pub truncated: SoftSignSums,
    /// How many coordinates the TSSD kept ([`tssd_count`]).
    pub tssd_count: u64,
}

impl TensorDistance {
    /// The value of one registered distance.
    pub fn value(&self, d: &Distance) -> f64 {
        match d.accumulated {
            Accumulated::Full(f) => f(&self.acc),
            Accumulated::TopK(f) => f(&self.truncated),
        }
    }

    /// All distances.
    pub fn distances(&self) -> Distances {
        Distances(DISTANCES.map(|d| self.value(&d)))
    }
}

/// The aggregate of a group of tensors (a layer, or the whole model): summed accumulators and,
/// for the top-k distances, numel-weighted sums of the tensors' values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupStats {
    /// Number of tensors in the group.
    pub tensors: usize,
    /// The accumulator of the concatenated tensors.
    pub acc: Accumulator,
    /// `Σ numel_t · value_t` per distance of [`DISTANCES`] (used by the top-k ones, 0 else).
    pub weighted_sums: [f64; DISTANCES.len()],
}

impl GroupStats {
    /// Adds one tensor.
    pub fn add(&mut self, t: &TensorDistance) {
        self.tensors += 1;
        self.acc.merge(&t.acc);
        for (sum, d) in self.weighted_sums.iter_mut().zip(&DISTANCES) {
            if let Accumulated::TopK(f) = d.accumulated {
                *sum += t.acc.numel as f64 * f(&t.truncated);
            }
        }
    }

    /// Total number of coordinates.
    pub fn numel(&self) -> u64 {
        self.acc.numel
    }

    /// The value of distance `i` of [`DISTANCES`] for the group.
    fn value(&self, i: usize) -> f64 {
        let n = self.acc.numel;
        match DISTANCES[i].accumulated {
            Accumulated::Full(f) => f(&self.acc),
            Accumulated::TopK(_) if n == 0 => 0.0,
            Accumulated::TopK(_) => self.weighted_sums[i] / n as f64,
        }
    }

    /// All distances of the group.
    pub fn distances(&self) -> Distances {
        Distances(std::array::from_fn(|i| self.value(i)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn tssd_count_rounds_half_up_and_clamps() {
        assert_eq!(tssd_count(0, 20.0), 0);
        assert_eq!(tssd_count(4, 12.5), 1); // 0.5 → 1
        assert_eq!(tssd_count(4, 10.0), 1); // 0.4 → 0 → clamped to 1
        assert_eq!(tssd_count(5, 30.0), 2); // 1.5 → 2
        assert_eq!(tssd_count(5, 29.0), 1); // 1.45 → 1
        assert_eq!(tssd_count(10, 20.0), 2);
        assert_eq!(tssd_count(7, 100.0), 7);
        assert_eq!(tssd_count(1_000_000_007, 20.0), 200_000_001); // 200000001.4
    }

    #[test]
    fn options_are_validated() {
        assert!(DistanceOptions::default().validate().is_ok());
        for k in [0.0, -1.0, 100.5, f64::NAN] {
            let o = DistanceOptions {
                tssd_top_k_percent: k,
                ..Default::default()
            };
            let err = o.validate().unwrap_err().to_string();
            assert!(
                err.contains("tssd_top_k_percent must be in (0, 100]"),
                "{err}"
            );
        }
        let o = DistanceOptions {
            chunk_len: 0,
            ..Default::default()
        };
        assert!(o.validate().is_err());
    }

    #[test]
    fn zero_norm_and_empty_conventions() {
        assert_eq!(cosine_from(0.0, 0.0, 0.0), 0.0);
        assert_eq!(cosine_from(0.0, 0.0, 4.0), 1.0);
        assert_eq!(cosine_from(0.0, 4.0, 0.0), 1.0);
        assert_eq!(soft_sign_from(0.0, 0.0), 0.0);
        let mut acc = Accumulator::default();
        acc.observe(&[], &[]);
        assert_eq!(
            (acc.l2(), acc.l2_normalized(), acc.sign(), acc.cosine()),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert_eq!(
            (sgn(0.0), sgn(-0.0), sgn(f32::NAN), sgn(-3.0), sgn(1e-30)),
            (0, 0, 0, -1, 1)
        );
        // 0 against a non-zero value is a sign difference; zero against zero is not.
        acc.observe(&[0.0, 0.0, -0.0, 1.0], &[2.0, 0.0, 0.0, 1.0]);
        assert_eq!(acc.sign(), 0.25);
    }
}
