//! NuSLERP: spherical interpolation of two models, optionally of their task vectors, over the
//! whole tensor or row by row (mergekit `nuslerp`; no paper, its reference is mergekit 0.1.5's
//! merge_methods/nuslerp.py).
//!
//! Exactly two models x₁, x₂ (besides an optional base b) with weights w₁, w₂ give
//! t = w₂ / (w₁ + w₂), or t = 0.5 when |w₁ + w₂| < 1e-6. The interpolated vectors are
//! v₁ = x₁ − b, v₂ = x₂ − b with a base, else v₁ = x₁, v₂ = x₂. For every group of elements:
//! cos Ω = ⟨v₁, v₂⟩ / (max(‖v₁‖, 1e-7) · max(‖v₂‖, 1e-7)) clamped to [−1, 1]; if
//! 1 − cos²Ω ≤ 1e-16 (colinear) θ = (1 − t) v₁ + t v₂, otherwise
//! θ = (sin((1 − t)Ω) v₁ + sin(tΩ) v₂) / sin Ω; with a base the result is b + that.
//! The groups: the whole tensor with `nuslerp_flatten: true` (the default); otherwise each
//! slice along the last axis (rows of a `[out, in]` matrix), or, with `nuslerp_row_wise: true`,
//! each slice along the first axis (columns of a matrix).
//!
//! Parameters: `weight` per model (required for the two non-base models; a base's is
//! ignored), `nuslerp_flatten` shared flag (default true), `nuslerp_row_wise` shared flag
//! (default false). The kernel's statistics pass sums ‖v₁‖², ‖v₂‖² and ⟨v₁, v₂⟩ per group;
//! each chunk yields its partial sums and they are added in chunk order (bounded windows of
//! chunks when the groups are columns), so the result does not depend on the thread count.
//!
//! Deviations: none beyond float64 arithmetic. mergekit works in the tensors' dtype (float32
//! here): it rounds the task vectors and the normalised vectors to float32 and sums in
//! float32; we subtract, sum and combine in float64 and round once. Its colinearity test
//! 1 − cos² ≤ 1e-16 is in effect cos² = 1 in float32 but cos² ≥ 1 − 1.1e-16 in float64;
//! near the threshold both branches give (1 − t) v₁ + t v₂ to within rounding.

use std::sync::Arc;

use super::{
    Goldens, Inputs, Kernel, Kind, Method, ParamSpec, Planned, Reference, Scope, Statistics,
    TensorPlan,
};
use crate::error::{MergeError, Result};
use crate::exec::{CHUNK, Chunk, Passes};

/// The registry entry.
pub const NUSLERP: Method = Method {
    name: "nuslerp",
    reference: Reference::Other("mergekit 0.1.5's merge_methods/nuslerp.py"),
    needs_base: false,
    inputs: Inputs::Two,
    statistics: Statistics::None,
    params: &[
        ParamSpec {
            name: "weight",
            scope: Scope::Input,
            // Required for the two merged models only; `plan` checks them (a base needs none).
            kind: Kind::Number {
                default: None,
                required: false,
                range: None,
            },
        },
        ParamSpec::flag("nuslerp_flatten", true),
        ParamSpec::flag("nuslerp_row_wise", false),
    ],
    plan,
    oracle: |c| {
        let w = |i: usize| c.values.model_number(i, "weight").unwrap_or(f64::NAN);
        oracle(
            c.base,
            &c.inputs[0],
            &c.inputs[1],
            c.shape,
            [w(0), w(1)],
            c.values.flag("nuslerp_flatten").unwrap_or(true),
            c.values.flag("nuslerp_row_wise").unwrap_or(false),
        )
    },
    goldens: Goldens::Cases(&["nuslerp", "nuslerp_rows", "nuslerp_columns"]),
};

/// Weights summing to less than this in magnitude give t = 0.5 (mergekit's value).
pub const WEIGHT_EPS: f64 = 1e-6;
/// Norms are clamped to at least this before dividing (mergekit's value).
pub const NORM_EPS: f64 = 1e-7;
/// Colinear when 1 − cos² is at most this (mergekit's eps², eps = 1e-8).
pub const COLINEAR_EPS: f64 = 1e-16;
/// Per-group partial sums one statistics window may hold, in bytes.
const WINDOW_BYTES: usize = 64 << 20;

fn interpolation_t(w: [f64; 2]) -> f64 {
    let total = w[0] + w[1];
    if total.abs() < WEIGHT_EPS {
        0.5
    } else {
        w[1] / total
    }
}

fn plan(p: &TensorPlan<'_>) -> Result<Planned> {
    let inputs = p.non_base();
    let mut w = [0.0; 2];
    for (slot, &m) in w.iter_mut().zip(&inputs) {
        *slot = p
            .values
            .model_number(m, "weight")
            .ok_or_else(|| MergeError::Param {
                name: "weight".into(),
                key: p.key.into(),
                message: format!("is required for every model nuslerp merges (model {m})"),
            })?;
    }
    let numel: usize = p.shape.iter().product();
    let flatten = p.values.flag("nuslerp_flatten").unwrap_or(true);
    let row_wise = p.values.flag("nuslerp_row_wise").unwrap_or(false);
    let groups = if flatten || p.shape.len() < 2 {
        Groups::Whole
    } else if row_wise {
        Groups::Strided(numel / p.shape[0].max(1))
    } else {
        Groups::Runs(p.shape[p.shape.len() - 1])
    };
    Ok(Planned {
        statistics: vec![],
        base: p.base,
        inputs,
        kernel: Some(Arc::new(NuSlerp {
            t: interpolation_t(w),
            groups,
            numel,
        })),
    })
}

/// Which elements share one interpolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    /// The whole tensor.
    Whole,
    /// Consecutive runs of this many elements (slices along the last axis).
    Runs(usize),
    /// Elements this far apart (slices along the first axis): element i is in group i mod n.
    Strided(usize),
}

impl Groups {
    fn count(self, numel: usize) -> usize {
        match self {
            Groups::Whole => 1,
            Groups::Runs(n) => numel.div_ceil(n.max(1)).max(1),
            Groups::Strided(n) => n.max(1),
        }
    }

    fn of(self, i: usize) -> usize {
        match self {
            Groups::Whole => 0,
            Groups::Runs(n) => i / n.max(1),
            Groups::Strided(n) => i % n.max(1),
        }
    }

    /// The most groups one chunk's elements fall in.
    fn per_chunk(self, numel: usize) -> usize {
        match self {
            Groups::Whole => 1,
            Groups::Runs(n) => CHUNK / n.max(1) + 2,
            Groups::Strided(_) => CHUNK,
        }
        .min(self.count(numel))
    }
}

/// Evaluated parameters of a NuSLERP of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NuSlerp {
    pub t: f64,
    pub groups: Groups,
    pub numel: usize,
}

/// One chunk's sums [‖v₁‖², ‖v₂‖², ⟨v₁, v₂⟩] for the groups it touches: `sums[k]` belongs to
/// group (`start` + k) mod the group count.
struct Partial {
    start: usize,
    sums: Vec<[f64; 3]>,
}

impl NuSlerp {
    fn partial(&self, c: &Chunk<'_>) -> Partial {
        let groups = self.groups.count(self.numel);
        let n = c.inputs[0].len();
        let start = self.groups.of(c.first);
        let len = match self.groups {
            Groups::Whole => 1,
            Groups::Runs(_) if n > 0 => self.groups.of(c.first + n - 1) - start + 1,
            Groups::Runs(_) => 0,
            Groups::Strided(_) => n.min(groups),
        };
        let mut sums = vec![[0f64; 3]; len];
        for j in 0..n {
            let (a, b) = vectors(c, j);
            let k = (self.groups.of(c.first + j) + groups - start) % groups;
            let s = &mut sums[k];
            s[0] += a * a;
            s[1] += b * b;
            s[2] += a * b;
        }
        Partial { start, sums }
    }

    /// The coefficients (s₁, s₂) of one group from its sums.
    fn coefficients(&self, s: [f64; 3]) -> (f64, f64) {
        let t = self.t;
        let n1 = s[0].sqrt().max(NORM_EPS);
        let n2 = s[1].sqrt().max(NORM_EPS);
        let cos = (s[2] / (n1 * n2)).clamp(-1.0, 1.0);
        if 1.0 - cos * cos <= COLINEAR_EPS {
            return (1.0 - t, t);
        }
        let omega = cos.acos();
        let sin = omega.sin();
        (((1.0 - t) * omega).sin() / sin, (t * omega).sin() / sin)
    }
}

/// Element `j` of the chunk's two interpolated vectors (task vectors when there is a base).
#[inline]
fn vectors(c: &Chunk<'_>, j: usize) -> (f64, f64) {
    let a = f64::from(c.inputs[0][j]);
    let b = f64::from(c.inputs[1][j]);
    match c.base {
        Some(base) => {
            let o = f64::from(base[j]);
            (a - o, b - o)
        }
        None => (a, b),
    }
}

impl Kernel for NuSlerp {
    /// The coefficients (s₁, s₂) of every group.
    type Stats = Vec<(f64, f64)>;
    const ELEMENTWISE: bool = true;

    fn stats(&self, passes: &Passes<'_>) -> Result<Vec<(f64, f64)>> {
        let groups = self.groups.count(self.numel);
        let mut sums = vec![[0f64; 3]; groups];
        let mut add = |p: Partial| {
            for (k, s) in p.sums.iter().enumerate() {
                let acc = &mut sums[(p.start + k) % groups];
                for (a, x) in acc.iter_mut().zip(s) {
                    *a += x;
                }
            }
        };
        let n_chunks = passes.n_chunks();
        let per_chunk = self.groups.per_chunk(self.numel) * std::mem::size_of::<[f64; 3]>();
        let window = (WINDOW_BYTES / per_chunk.max(1)).max(1);
        if window >= n_chunks {
            passes
                .map(&[0, 1], |c| self.partial(c))?
                .into_iter()
                .for_each(&mut add);
        } else {
            // Columns of a large tensor: one window of chunks at a time, each window's partial
            // sums added in chunk order before the next is read.
            for lo in (0..n_chunks).step_by(window) {
                let hi = lo + window;
                let parts = passes.sample(
                    &[0, 1],
                    |c, r| {
                        if (lo..hi).contains(&c) {
                            vec![r.clone()]
                        } else {
                            vec![]
                        }
                    },
                    |c| self.partial(c),
                )?;
                parts.into_iter().flatten().for_each(&mut add);
            }
        }
        Ok(sums.into_iter().map(|s| self.coefficients(s)).collect())
    }

    /// θ = (b +) s₁ v₁ + s₂ v₂ with the coefficients of each element's group.
    fn chunk(&self, coef: &Vec<(f64, f64)>, c: &Chunk<'_>, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            let (s1, s2) = coef[self.groups.of(c.first + j)];
            let (a, b) = vectors(c, j);
            let base = c.base.map_or(0.0, |base| f64::from(base[j]));
            *o = (base + s1 * a + s2 * b) as f32;
        }
    }
}

/// The float64 oracle over whole tensors: gathers each group's elements by index from the
/// shape, interpolates them as vectors and scatters them back.
pub fn oracle(
    base: Option<&[f32]>,
    x1: &[f32],
    x2: &[f32],
    shape: &[usize],
    weights: [f64; 2],
    flatten: bool,
    row_wise: bool,
) -> Vec<f64> {
    let n = x1.len();
    let t = {
        let total = weights[0] + weights[1];
        if total.abs() < 1e-6 {
            0.5
        } else {
            weights[1] / total
        }
    };
    let b = |i: usize| base.map_or(0.0, |b| f64::from(b[i]));
    let v1: Vec<f64> = (0..n).map(|i| f64::from(x1[i]) - b(i)).collect();
    let v2: Vec<f64> = (0..n).map(|i| f64::from(x2[i]) - b(i)).collect();
    // The index lists of the groups.
    let groups: Vec<Vec<usize>> = if flatten || shape.len() < 2 {
        vec![(0..n).collect()]
    } else if row_wise {
        let rows = shape[0];
        let cols = n / rows;
        (0..cols)
            .map(|col| (0..rows).map(|r| r * cols + col).collect())
            .collect()
    } else {
        let len = shape[shape.len() - 1];
        (0..n / len)
            .map(|r| (r * len..(r + 1) * len).collect())
            .collect()
    };
    let mut out = vec![0f64; n];
    for idx in groups {
        let a: Vec<f64> = idx.iter().map(|&i| v1[i]).collect();
        let c: Vec<f64> = idx.iter().map(|&i| v2[i]).collect();
        let unit = |v: &[f64]| {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-7);
            v.iter().map(|x| x / norm).collect::<Vec<f64>>()
        };
        let cos = unit(&a)
            .iter()
            .zip(unit(&c))
            .map(|(x, y)| x * y)
            .sum::<f64>()
            .clamp(-1.0, 1.0);
        let merged: Vec<f64> = if 1.0 - cos * cos <= 1e-16 {
            a.iter()
                .zip(&c)
                .map(|(x, y)| (1.0 - t) * x + t * y)
                .collect()
        } else {
            let theta = cos.acos();
            a.iter()
                .zip(&c)
                .map(|(x, y)| (((1.0 - t) * theta).sin() * x + (t * theta).sin() * y) / theta.sin())
                .collect()
        };
        for (&i, m) in idx.iter().zip(merged) {
            out[i] = b(i) + m;
        }
    }
    out
}
