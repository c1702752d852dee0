//! SCE: select, calculate, erase (arXiv 2408.07990; mergekit `sce`).
//!
//! With base θ₀, the N other models θᵢ and their task vectors τᵢ = θᵢ − θ₀ of one tensor:
//! 1. **Select** (only when `select_topk` < 1): the per-element variance across the task
//!    vectors, v = (1/N) Σᵢ (τᵢ − τ̄)² (population variance), ranks the elements; the
//!    k = ⌊count_nonzero(v) · select_topk⌋ elements of largest v are kept in every τᵢ and the
//!    others are zeroed (k = 0, or `select_topk` ≤ 0, zeroes them all).
//! 2. **Calculate** a weight per model from its selected task vector: sᵢ = mean(τᵢ²) over the
//!    whole tensor, wᵢ = sᵢ / Σⱼ sⱼ, or wᵢ = 1/N when Σⱼ sⱼ < 1e-6.
//! 3. **Erase** by sign election, as TIES does with its "sum" consensus: γ = sign(Σᵢ τᵢ) with +1
//!    where the sum is 0; mᵢ = [sign(τᵢ) = γ] (zeros never agree).
//! 4. θ = θ₀ + Σᵢ wᵢ mᵢ τᵢ / max(Σᵢ wᵢ mᵢ, 1e-6).
//!
//! Parameters (shared; mergekit's names and defaults): `select_topk` (default 1, in [0, 1]:
//! the fraction of the nonzero-variance elements kept), `int8_mask` (default false; it changes
//! only mergekit's mask dtype, accepted and ignored). There is no per-model weight: the
//! weights come from the task vectors. `base_model` is required; a tensor only the base holds
//! is the base.
//!
//! Statistics passes, each reading the tensor chunk by chunk: the count of nonzero variances;
//! the k-th largest variance, exactly, by a radix select over the f32 bit patterns
//! (`mmerge_core::select`), plus a count of the entries equal to it per chunk when only some
//! of those are kept; the sums Σ τᵢ² of the selected task vectors, added in chunk order.
//!
//! Deviations from mergekit: float64 arithmetic per element and one rounding at the end
//! (mergekit computes in float32); the variance is computed in float64 and rounded to float32
//! before it is ranked (mergekit's is float32 throughout, so elements whose variances agree to
//! within float32 rounding may rank differently); elements whose variance ties with the k-th
//! largest are kept lowest index first, where torch.topk's order among ties is unspecified;
//! k itself is computed as mergekit does, ⌊count · select_topk⌋ in float32. A `select_topk`
//! outside [0, 1] is a config error (mergekit treats it as 0 or 1).

use std::sync::Arc;

use mmerge_core::select::{Pass, RadixSelect};

use super::{
    Goldens, Inputs, Kernel, Method, OracleCase, ParamSpec, Planned, Reference, Scope, Statistics,
    TensorPlan,
};
use crate::error::Result;
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const SCE: Method = Method {
    name: "sce",
    reference: Reference::Arxiv("2408.07990"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &[
        ParamSpec::number("select_topk", Scope::Shared, 1.0, 1.0),
        ParamSpec::flag("int8_mask", false),
    ],
    plan,
    oracle: oracle_case,
    goldens: Goldens::Cases(&["sce", "sce_topk"]),
};

fn plan(t: &TensorPlan<'_>) -> Result<Planned> {
    let inputs = t.non_base();
    Ok(Planned {
        statistics: vec![],
        base: t.base,
        kernel: Some(Arc::new(Sce {
            select_topk: t.values.number("select_topk").unwrap_or(1.0),
            inputs: inputs.len(),
        })),
        inputs,
    })
}

fn oracle_case(c: &OracleCase<'_>) -> Vec<f64> {
    oracle(
        c.base.unwrap_or(&[]),
        c.inputs,
        c.values.number("select_topk").unwrap_or(1.0),
    )
}

/// A total weight of the task vectors below this gives every model 1/N (mergekit's value).
pub const WEIGHT_SUM_EPS: f64 = 1e-6;
/// The floor of the divisor Σ wᵢ mᵢ (mergekit's value).
pub const DIVISOR_MIN: f64 = 1e-6;

/// Evaluated parameters of an SCE merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Sce {
    pub select_topk: f64,
    /// The number of merged models (the base excluded).
    pub inputs: usize,
}

/// Which elements the top-k variance selection keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Every element (`select_topk` ≥ 1).
    All,
    /// None.
    Nothing,
    /// Variance > `value`, or = `value` among the first `ties[c]` such elements of chunk c.
    Above { value: f32, ties: Vec<u64> },
}

/// What the statistics passes find: the selection and the per-model weights.
#[derive(Debug, Clone, PartialEq)]
pub struct SceStats {
    pub selection: Selection,
    pub weights: Vec<f64>,
}

/// mergekit's k: ⌊count · select_topk⌋, the product taken in float32.
pub fn select_count(nonzero: u64, select_topk: f64) -> u64 {
    let k = (nonzero as f32) * (select_topk as f32);
    k.floor() as u64
}

/// The population variance of the task vectors at each element of a chunk, rounded to f32.
fn variances(c: &Chunk<'_>, out: &mut Vec<f32>) {
    let base = c.base.unwrap_or(&[]);
    let n = c.inputs.len() as f64;
    out.clear();
    out.extend(base.iter().enumerate().map(|(j, &b)| {
        let b = f64::from(b);
        let mean = c.inputs.iter().map(|x| f64::from(x[j]) - b).sum::<f64>() / n;
        let var = c
            .inputs
            .iter()
            .map(|x| {
                let d = f64::from(x[j]) - b - mean;
                d * d
            })
            .sum::<f64>()
            / n;
        var as f32
    }));
}

/// Walks a chunk's selection: `keep(j)` for each element in order, counting down the ties.
struct Selector<'a> {
    selection: &'a Selection,
    ties_left: u64,
    vars: Vec<f32>,
}

impl<'a> Selector<'a> {
    fn new(selection: &'a Selection, c: &Chunk<'_>) -> Self {
        let mut vars = vec![];
        let ties_left = match selection {
            Selection::Above { ties, .. } => {
                variances(c, &mut vars);
                ties[c.index]
            }
            _ => 0,
        };
        Selector {
            selection,
            ties_left,
            vars,
        }
    }

    #[inline]
    fn keep(&mut self, j: usize) -> bool {
        match self.selection {
            Selection::All => true,
            Selection::Nothing => false,
            Selection::Above { value, .. } => {
                let v = self.vars[j];
                v > *value
                    || (v == *value && self.ties_left > 0 && {
                        self.ties_left -= 1;
                        true
                    })
            }
        }
    }
}

impl Sce {
    /// The top-k selection, from three or four passes over the tensor.
    fn selection(&self, passes: &Passes<'_>, all: &[usize]) -> Result<Selection> {
        if self.select_topk >= 1.0 || all.is_empty() {
            return Ok(Selection::All);
        }
        if self.select_topk <= 0.0 {
            return Ok(Selection::Nothing);
        }
        let nonzero: u64 = passes
            .map(all, |c| {
                let mut v = vec![];
                variances(c, &mut v);
                v.iter().filter(|x| **x != 0.0).count() as u64
            })?
            .into_iter()
            .sum();
        let k = select_count(nonzero, self.select_topk);
        if k == 0 {
            return Ok(Selection::Nothing);
        }
        let mut sel = RadixSelect::new(k);
        while sel.pass() != Pass::Done {
            let parts = passes.fold_runs(
                all,
                || sel.fork(),
                |s, c| {
                    let mut v = vec![];
                    variances(c, &mut v);
                    s.observe(&v);
                },
            )?;
            parts.iter().for_each(|p| sel.merge(p));
            sel.end_pass();
        }
        // k ≤ the count of nonzero variances, so the threshold exists and is positive.
        let Some(th) = sel.result() else {
            return Ok(Selection::Nothing);
        };
        let wanted = k - th.greater;
        let n_chunks = passes.n_chunks();
        let ties = if wanted >= th.equal {
            vec![u64::MAX; n_chunks]
        } else {
            // Only some ties are kept: lowest index first, each chunk its share.
            let equal = passes.map(all, |c| {
                let mut v = vec![];
                variances(c, &mut v);
                v.iter().filter(|x| **x == th.value).count() as u64
            })?;
            let mut before = 0u64;
            equal
                .iter()
                .map(|&e| {
                    let share = wanted.saturating_sub(before).min(e);
                    before += e;
                    share
                })
                .collect()
        };
        Ok(Selection::Above {
            value: th.value,
            ties,
        })
    }
}

impl Kernel for Sce {
    type Stats = SceStats;

    fn stats(&self, passes: &Passes<'_>) -> Result<SceStats> {
        let n = self.inputs;
        let all: Vec<usize> = (0..n).collect();
        let selection = self.selection(passes, &all)?;
        // Σ τᵢ² of the selected task vectors, per chunk, added in chunk order.
        let sums = if n == 0 || selection == Selection::Nothing {
            vec![0.0; n]
        } else {
            passes
                .map(&all, |c| {
                    let base = c.base.unwrap_or(&[]);
                    let mut sel = Selector::new(&selection, c);
                    let mut s = vec![0f64; n];
                    for (j, &b) in base.iter().enumerate() {
                        if sel.keep(j) {
                            for (acc, x) in s.iter_mut().zip(c.inputs) {
                                let d = f64::from(x[j]) - f64::from(b);
                                *acc += d * d;
                            }
                        }
                    }
                    s
                })?
                .into_iter()
                .fold(vec![0f64; n], |mut a, s| {
                    a.iter_mut().zip(&s).for_each(|(a, s)| *a += s);
                    a
                })
        };
        let numel = passes.numel().max(1) as f64;
        let means: Vec<f64> = sums.iter().map(|s| s / numel).collect();
        let total: f64 = means.iter().sum();
        let weights = if total.abs() < WEIGHT_SUM_EPS {
            vec![1.0 / n.max(1) as f64; n]
        } else {
            means.iter().map(|m| m / total).collect()
        };
        Ok(SceStats { selection, weights })
    }

    fn chunk(&self, stats: &SceStats, c: &Chunk<'_>, out: &mut [f32]) {
        let base = c.base.unwrap_or(&[]);
        let mut sel = Selector::new(&stats.selection, c);
        let mut tau = vec![0f64; c.inputs.len()];
        for (j, (o, &b)) in out.iter_mut().zip(base).enumerate() {
            let b = f64::from(b);
            let keep = sel.keep(j);
            for (t, x) in tau.iter_mut().zip(c.inputs) {
                *t = if keep { f64::from(x[j]) - b } else { 0.0 };
            }
            let gamma = if tau.iter().sum::<f64>() >= 0.0 {
                1.0
            } else {
                -1.0
            };
            let (mut num, mut den) = (0f64, 0f64);
            for (t, w) in tau.iter().zip(&stats.weights) {
                if t * gamma > 0.0 {
                    num += w * t;
                    den += w;
                }
            }
            *o = (b + num / den.max(DIVISOR_MIN)) as f32;
        }
    }
}

/// The float64 oracle over whole tensors, written from the formula: variances by element,
/// the selection by a full sort (largest first, ties by index), the weights, the election.
pub fn oracle(base: &[f32], inputs: &[Vec<f32>], select_topk: f64) -> Vec<f64> {
    let numel = base.len();
    let n = inputs.len();
    if n == 0 {
        return base.iter().map(|b| f64::from(*b)).collect();
    }
    let mut tau: Vec<Vec<f64>> = inputs
        .iter()
        .map(|x| {
            x.iter()
                .zip(base)
                .map(|(a, b)| f64::from(*a) - f64::from(*b))
                .collect()
        })
        .collect();
    if select_topk < 1.0 {
        let mut keep = vec![false; numel];
        if select_topk > 0.0 {
            let var: Vec<f32> = (0..numel)
                .map(|j| {
                    let m = tau.iter().map(|t| t[j]).sum::<f64>() / n as f64;
                    let v = tau.iter().map(|t| (t[j] - m).powi(2)).sum::<f64>() / n as f64;
                    v as f32
                })
                .collect();
            let nonzero = var.iter().filter(|v| **v != 0.0).count();
            let k = ((nonzero as f32) * (select_topk as f32)).floor() as usize;
            let mut order: Vec<usize> = (0..numel).collect();
            order.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
            for &j in order.iter().take(k) {
                keep[j] = true;
            }
        }
        for t in &mut tau {
            for (v, k) in t.iter_mut().zip(&keep) {
                if !k {
                    *v = 0.0;
                }
            }
        }
    }
    let sq: Vec<f64> = tau
        .iter()
        .map(|t| t.iter().map(|v| v * v).sum::<f64>() / numel as f64)
        .collect();
    let total: f64 = sq.iter().sum();
    let w: Vec<f64> = if total.abs() < 1e-6 {
        vec![1.0 / n as f64; n]
    } else {
        sq.iter().map(|s| s / total).collect()
    };
    (0..numel)
        .map(|j| {
            let sum: f64 = tau.iter().map(|t| t[j]).sum();
            let gamma = if sum >= 0.0 { 1.0 } else { -1.0 };
            let (mut num, mut den) = (0.0, 0.0);
            for (t, wi) in tau.iter().zip(&w) {
                let s = t[j].signum() * f64::from(u8::from(t[j] != 0.0));
                if s == gamma {
                    num += wi * t[j];
                    den += wi;
                }
            }
            f64::from(base[j]) + num / f64::max(den, 1e-6)
        })
        .collect()
}
