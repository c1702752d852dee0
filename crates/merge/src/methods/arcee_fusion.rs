//! Arcee Fusion: take the other model's value only where it differs importantly from the base
//! (mergekit `arcee_fusion`; no paper, its reference is "https://arcee.ai", as mergekit cites
//! it, and mergekit 0.1.5's merge_methods/arcee_fusion.py).
//!
//! With base θ₀ and the other model θ₁ of one tensor, softmax taken along the last axis (each
//! row of a matrix; a 1-D tensor is one row): p = softmax(θ₁) + 1e-8, q = softmax(θ₀) + 1e-8,
//! and per row KL = Σ p · ln(p / q) over the row. Each element's importance is
//! s = |θ₁ − θ₀| · KL of its row. With q₁, q₂, q₃ the order statistics s₍⌊0.25·(n−1)⌋₎,
//! s₍⌊0.5·(n−1)⌋₎, s₍⌊0.75·(n−1)⌋₎ of the n importances sorted ascending (no interpolation),
//! the threshold is τ = q₂ + 1.5 · (q₃ − q₁), the mask m = [s ≥ τ], and
//! θ = θ₀ + (θ₁ − θ₀) · m.
//!
//! No parameters. Exactly two models: `base_model` and one other.
//!
//! Statistics passes, each reading the tensor chunk by chunk: the per-row maxima and sums of
//! exponentials of both models (a row may span chunks: each chunk's partial row statistics are
//! combined in chunk order); the per-row KL sums, added in chunk order; the three order
//! statistics of the importances, exactly, by radix selects over their f32 bit patterns
//! (`mmerge_core::select`), all three in the same two passes. Memory: a few numbers per row and
//! the two radix histograms, whatever the tensor's size.
//!
//! Deviations from mergekit: for a tensor of more than 1,000,000 elements mergekit takes the
//! quantiles of a sample of 1,000,000 importances drawn with replacement from torch's global
//! RNG, which cannot be reproduced; we take the exact quantiles of all of them (the golden
//! fixtures are small, so they pin the rest). The softmax, the KL and the importance are
//! computed in float64 and the importance is rounded to float32 before it is ranked and
//! compared (mergekit computes all of it in float32, so an element whose importance is within
//! float32 rounding of the threshold may fall on the other side); the KL, non-negative in exact
//! arithmetic, is clamped at 0. The threshold itself is computed in float32 from the float32
//! order statistics, as mergekit does. A tensor only one of the two models holds is an error
//! (missing key), where mergekit copies it from the model that holds it when the architecture
//! marks it optional.

use std::sync::Arc;

use mmerge_core::select::{Pass, RadixSelect};

use super::{Goldens, Inputs, Kernel, Method, Planned, Reference, Statistics, TensorPlan};
use crate::error::Result;
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const ARCEE_FUSION: Method = Method {
    name: "arcee_fusion",
    reference: Reference::Other("https://arcee.ai"),
    needs_base: true,
    inputs: Inputs::One,
    statistics: Statistics::None,
    params: &[],
    plan,
    oracle: |c| oracle(c.base.unwrap_or(&[]), &c.inputs[0], c.shape),
    goldens: Goldens::Cases(&["arcee_fusion"]),
};

fn plan(t: &TensorPlan<'_>) -> Result<Planned> {
    Ok(Planned {
        statistics: vec![],
        base: t.base,
        inputs: t.non_base(),
        kernel: Some(Arc::new(ArceeFusion {
            row: row_len(t.shape),
        })),
    })
}

/// Added to both softmax distributions before the KL (mergekit's value).
pub const EPS: f64 = 1e-8;
/// The quantiles of the importance the threshold is built from (mergekit's values).
pub const QUANTILES: [(u64, u64); 3] = [(1, 4), (1, 2), (3, 4)];

/// Elements per softmax row: the last axis (a scalar is one row of one).
fn row_len(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1).max(1)
}

/// Evaluated parameters of an Arcee Fusion of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ArceeFusion {
    /// Elements per softmax row.
    pub row: usize,
}

/// A running maximum and sum of exp(x − max), for a softmax's normaliser.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LogSumExp {
    max: f64,
    sum: f64,
}

impl LogSumExp {
    const EMPTY: LogSumExp = LogSumExp {
        max: f64::NEG_INFINITY,
        sum: 0.0,
    };

    fn of(xs: impl Iterator<Item = f64> + Clone) -> Self {
        let max = xs.clone().fold(f64::NEG_INFINITY, f64::max);
        LogSumExp {
            max,
            sum: xs.map(|x| (x - max).exp()).sum(),
        }
    }

    fn combine(self, o: LogSumExp) -> LogSumExp {
        if o.sum == 0.0 {
            return self;
        }
        if self.sum == 0.0 {
            return o;
        }
        let max = self.max.max(o.max);
        LogSumExp {
            max,
            sum: self.sum * (self.max - max).exp() + o.sum * (o.max - max).exp(),
        }
    }

    /// The softmax probability of `x`.
    fn prob(self, x: f64) -> f64 {
        (x - self.max).exp() / self.sum
    }
}

/// Per-row values of one chunk: `values[k]` belongs to row `start + k`.
struct RowPart<T> {
    start: usize,
    values: Vec<T>,
}

/// What the statistics passes find.
#[derive(Debug, Clone, PartialEq)]
pub struct FusionStats {
    /// The KL of each row (clamped at 0).
    pub kl: Vec<f64>,
    /// Importances at or above this take the other model's value.
    pub threshold: f32,
}

impl ArceeFusion {
    /// The rows a chunk's elements fall in, as (row, range of the chunk's elements).
    fn segments(&self, c: &Chunk<'_>) -> Vec<(usize, std::ops::Range<usize>)> {
        let n = c.inputs[0].len();
        let mut out = vec![];
        let mut j = 0;
        while j < n {
            let row = (c.first + j) / self.row;
            let end = ((row + 1) * self.row - c.first).min(n);
            out.push((row, j..end));
            j = end;
        }
        out
    }

    /// `f(row, the chunk's elements in it)` for each row the chunk touches, from the first.
    fn per_row<T>(
        &self,
        c: &Chunk<'_>,
        f: impl Fn(usize, std::ops::Range<usize>) -> T,
    ) -> RowPart<T> {
        let segments = self.segments(c);
        RowPart {
            start: segments.first().map_or(0, |s| s.0),
            values: segments.into_iter().map(|(row, r)| f(row, r)).collect(),
        }
    }

    /// Each touched row's softmax normalisers (base, other) over the chunk's part of it.
    fn normalisers(&self, c: &Chunk<'_>) -> RowPart<[LogSumExp; 2]> {
        let base = c.base.unwrap_or(&[]);
        let other = &c.inputs[0];
        self.per_row(c, |_, r| {
            [
                LogSumExp::of(base[r.clone()].iter().map(|x| f64::from(*x))),
                LogSumExp::of(other[r].iter().map(|x| f64::from(*x))),
            ]
        })
    }

    /// Each touched row's KL terms Σ p ln(p / q) over the chunk's part of it.
    fn kl_terms(&self, norms: &[[LogSumExp; 2]], c: &Chunk<'_>) -> RowPart<f64> {
        let base = c.base.unwrap_or(&[]);
        let other = &c.inputs[0];
        self.per_row(c, |row, r| {
            let [nq, np] = norms[row];
            r.map(|j| {
                let p = np.prob(f64::from(other[j])) + EPS;
                let q = nq.prob(f64::from(base[j])) + EPS;
                p * (p / q).ln()
            })
            .sum::<f64>()
        })
    }

    /// The importance |θ₁ − θ₀| · KL of each element of a chunk, rounded to f32.
    fn importances(&self, kl: &[f64], c: &Chunk<'_>, out: &mut Vec<f32>) {
        let base = c.base.unwrap_or(&[]);
        out.clear();
        out.extend(c.inputs[0].iter().zip(base).enumerate().map(|(j, (x, b))| {
            let diff = (f64::from(*x) - f64::from(*b)).abs();
            (diff * kl[(c.first + j) / self.row]) as f32
        }));
    }
}

impl Kernel for ArceeFusion {
    type Stats = FusionStats;
    const ELEMENTWISE: bool = true;

    fn stats(&self, passes: &Passes<'_>) -> Result<FusionStats> {
        let numel = passes.numel();
        let rows = numel.div_ceil(self.row);
        // Pass 1: the softmax normalisers of every row, chunk partials combined in chunk order.
        let mut norms = vec![[LogSumExp::EMPTY; 2]; rows];
        for part in passes.map(&[0], |c| self.normalisers(c))? {
            for (k, v) in part.values.iter().enumerate() {
                let n = &mut norms[part.start + k];
                *n = [n[0].combine(v[0]), n[1].combine(v[1])];
            }
        }
        // Pass 2: the KL of every row, chunk partials added in chunk order.
        let mut kl = vec![0f64; rows];
        for part in passes.map(&[0], |c| self.kl_terms(&norms, c))? {
            for (k, v) in part.values.iter().enumerate() {
                kl[part.start + k] += v;
            }
        }
        drop(norms);
        for v in &mut kl {
            // Non-negative in exact arithmetic (and +0, not −0, for the f32 bit order).
            *v = if *v > 0.0 { *v } else { 0.0 };
        }
        // Passes 3 and 4: the three order statistics, by radix select over the importances.
        let n = numel as u64;
        let mut sels: Vec<RadixSelect> = QUANTILES
            .iter()
            .map(|&(a, b)| RadixSelect::new(n - (n.saturating_sub(1) * a) / b))
            .collect();
        while sels.iter().any(|s| s.pass() != Pass::Done) {
            let parts = passes.fold_runs(
                &[0],
                || sels.iter().map(RadixSelect::fork).collect::<Vec<_>>(),
                |f, c| {
                    let mut imp = vec![];
                    self.importances(&kl, c, &mut imp);
                    f.iter_mut().for_each(|s| s.observe(&imp));
                },
            )?;
            for p in &parts {
                sels.iter_mut().zip(p).for_each(|(a, b)| a.merge(b));
            }
            sels.iter_mut().for_each(RadixSelect::end_pass);
        }
        let q: Vec<f32> = sels
            .iter()
            .map(|s| s.result().map_or(0.0, |t| t.value))
            .collect();
        // In float32, as mergekit computes it.
        let threshold = q[1] + 1.5f32 * (q[2] - q[0]);
        Ok(FusionStats { kl, threshold })
    }

    /// θ₁ where the importance reaches the threshold, θ₀ elsewhere.
    fn chunk(&self, s: &FusionStats, c: &Chunk<'_>, out: &mut [f32]) {
        let base = c.base.unwrap_or(&[]);
        let mut imp = vec![];
        self.importances(&s.kl, c, &mut imp);
        for (((o, b), x), i) in out.iter_mut().zip(base).zip(&c.inputs[0]).zip(&imp) {
            let (b, x) = (f64::from(*b), f64::from(*x));
            let m = if *i >= s.threshold { 1.0 } else { 0.0 };
            *o = (b + (x - b) * m) as f32;
        }
    }
}

/// The float64 oracle over whole tensors, written from the formula: each row's softmaxes and
/// KL directly, the importances sorted in full for the quantiles.
pub fn oracle(base: &[f32], other: &[f32], shape: &[usize]) -> Vec<f64> {
    let n = base.len();
    if n == 0 {
        return vec![];
    }
    let len = shape.last().copied().unwrap_or(1).max(1);
    let softmax = |v: &[f32]| -> Vec<f64> {
        let m = v.iter().map(|x| f64::from(*x)).fold(f64::MIN, f64::max);
        let e: Vec<f64> = v.iter().map(|x| (f64::from(*x) - m).exp()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|x| x / total + 1e-8).collect()
    };
    let mut importance = vec![0f32; n];
    for start in (0..n).step_by(len) {
        let r = start..(start + len).min(n);
        let p = softmax(&other[r.clone()]);
        let q = softmax(&base[r.clone()]);
        let kl: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        for j in r {
            let d = (f64::from(other[j]) - f64::from(base[j])).abs();
            importance[j] = (d * kl.max(0.0)) as f32;
        }
    }
    let mut sorted = importance.clone();
    sorted.sort_by(f32::total_cmp);
    let at = |q: f64| sorted[(q * (n - 1) as f64).floor() as usize];
    let (q1, q2, q3) = (at(0.25), at(0.5), at(0.75));
    let threshold = q2 + 1.5 * (q3 - q1);
    (0..n)
        .map(|j| {
            if importance[j] >= threshold {
                f64::from(other[j])
            } else {
                f64::from(base[j])
            }
        })
        .collect()
}
