//! Reinforced Agent Merging, RAM and RAM+ (arXiv 2601.13572; mergekit `ram` and `ramplus_tl`).
//!
//! With base θ₀ and inputs θᵢ, task vectors τᵢ = θᵢ − θ₀. An entry of τᵢ counts as a
//! contribution when |τᵢ| > ε; per element, c = the number of inputs contributing there. An
//! entry contributed by one input alone is kept whole, entries shared by several inputs are
//! averaged over the contributors, the rest are dropped:
//!
//! θ = θ₀ + Σᵢ mᵢ τᵢ · (λᵢ [c = 1] + [c > 1] / c), with mᵢ = [|τᵢ| > ε].
//!
//! `ram` takes λᵢ = 1. `ramplus_tl` (RAM+, tensor-local) raises the weight of an input's unique
//! entries by how much of its contribution the others share, counted over the whole tensor:
//! with sᵢ = #{mᵢ ∧ c > 1} and uᵢ = #{mᵢ ∧ c = 1}, ρᵢ = sᵢ / max(uᵢ, ε) and
//! λᵢ = 1 + r · min(max(ρᵢ, 0), α). Both need `base_model`; a tensor that only the base holds
//! is copied from it.
//!
//! Parameters (all shared, mergekit's names and defaults; mergekit gives none a range, nor do
//! we): `epsilon` (default 1e-5) for both; `r` (default 0.1) and `alpha` (default 0.2) for
//! `ramplus_tl`. Statistics pass (`ramplus_tl` only): one streamed pass counts sᵢ and uᵢ.
//!
//! Deviations: the contribution test is made as mergekit makes it for float32 models, on the
//! float32 difference against ε rounded to float32, so masks agree exactly; values are then
//! combined in float64 and rounded once (mergekit computes τ, ρ, λ and the sums in float32,
//! a difference of a few float32 ulps). Where an input contributes nowhere (uᵢ = 0) with
//! ε ≤ 0, mergekit's ρᵢ is 0/0 and its NaN spreads to the whole tensor; λᵢ multiplies nothing
//! there, so we leave it out instead.

use std::sync::Arc;

use super::{
    Goldens, Inputs, Kernel, Kind, Method, OracleCase, ParamSpec, Planned, Reference, Scope,
    Statistics, TensorPlan,
};
use crate::error::Result;
use crate::exec::{Chunk, Passes};

const fn shared(name: &'static str, default: f64) -> ParamSpec {
    ParamSpec {
        name,
        scope: Scope::Shared,
        kind: Kind::Number {
            default: Some(default),
            required: false,
            range: None,
        },
    }
}

const EPSILON: f64 = 1e-5;
const R: f64 = 0.1;
const ALPHA: f64 = 0.2;

/// The registry entry of RAM.
pub const RAM: Method = Method {
    name: "ram",
    reference: Reference::Arxiv("2601.13572"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &[shared("epsilon", EPSILON)],
    plan: |p| plan(p, false),
    oracle: |c| oracle_case(c, false),
    goldens: Goldens::Cases(&["ram"]),
};

/// The registry entry of RAM+ (tensor-local).
pub const RAMPLUS_TL: Method = Method {
    name: "ramplus_tl",
    reference: Reference::Arxiv("2601.13572"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &[
        shared("r", R),
        shared("alpha", ALPHA),
        shared("epsilon", EPSILON),
    ],
    plan: |p| plan(p, true),
    oracle: |c| oracle_case(c, true),
    goldens: Goldens::Cases(&["ramplus_tl", "ramplus_tl_defaults"]),
};

fn plan(p: &TensorPlan<'_>, plus: bool) -> Result<Planned> {
    let inputs = p.non_base();
    if inputs.is_empty() {
        // Only the base holds the tensor: mergekit returns the base.
        return Ok(Planned {
            statistics: vec![],
            base: None,
            inputs: p.base.into_iter().collect(),
            kernel: None,
        });
    }
    let v = &p.values;
    let epsilon = v.number("epsilon").unwrap_or(EPSILON);
    Ok(Planned {
        statistics: vec![],
        base: p.base,
        kernel: Some(Arc::new(Ram {
            models: inputs.len(),
            epsilon,
            plus: plus.then(|| Plus {
                r: v.number("r").unwrap_or(R),
                alpha: v.number("alpha").unwrap_or(ALPHA),
            }),
        })),
        inputs,
    })
}

/// RAM+'s shared parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plus {
    pub r: f64,
    pub alpha: f64,
}

/// Evaluated parameters of a RAM (or RAM+) merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Ram {
    /// Inputs besides the base.
    pub models: usize,
    pub epsilon: f64,
    /// `Some` for `ramplus_tl`.
    pub plus: Option<Plus>,
}

impl Ram {
    /// Whether input x contributes over base b: mergekit's float32 test.
    #[inline(always)]
    fn contributes(x: f32, b: f32, eps: f32) -> bool {
        (x - b).abs() > eps
    }
}

impl Kernel for Ram {
    /// λᵢ per input.
    type Stats = Vec<f64>;
    const ELEMENTWISE: bool = true;

    /// RAM: λ = 1. RAM+: one pass counting, per input, its shared and unique contributions.
    fn stats(&self, passes: &Passes<'_>) -> Result<Vec<f64>> {
        let n = self.models;
        let Some(plus) = self.plus else {
            return Ok(vec![1.0; n]);
        };
        let eps = self.epsilon as f32;
        let which: Vec<usize> = (0..n).collect();
        let parts = passes.map(&which, |c| {
            // (shared, unique) per input.
            let mut counts = vec![(0u64, 0u64); n];
            let base = c.base.unwrap_or(&[]);
            let mut on = vec![false; n];
            for (j, &b) in base.iter().enumerate() {
                let mut k = 0;
                for (o, x) in on.iter_mut().zip(c.inputs) {
                    *o = Self::contributes(x[j], b, eps);
                    k += usize::from(*o);
                }
                for (s, _) in counts.iter_mut().zip(&on).filter(|(_, o)| **o) {
                    if k > 1 {
                        s.0 += 1;
                    } else {
                        s.1 += 1;
                    }
                }
            }
            counts
        })?;
        let mut total = vec![(0u64, 0u64); n];
        for part in parts {
            for (t, p) in total.iter_mut().zip(part) {
                t.0 += p.0;
                t.1 += p.1;
            }
        }
        Ok(total
            .iter()
            .map(|&(s, u)| {
                if u == 0 && s == 0 {
                    return 1.0;
                }
                let rho = s as f64 / (u as f64).max(self.epsilon);
                1.0 + plus.r * rho.max(0.0).min(plus.alpha)
            })
            .collect())
    }

    /// Per element: count the contributors, keep a lone one (times its λ), average several.
    fn chunk(&self, lambda: &Vec<f64>, c: &Chunk<'_>, out: &mut [f32]) {
        let eps = self.epsilon as f32;
        let base = c.base.unwrap_or(&[]);
        for (j, (o, &b)) in out.iter_mut().zip(base).enumerate() {
            let mut count = 0u32;
            let mut sum = 0f64;
            let mut last = 0;
            for (i, x) in c.inputs.iter().enumerate() {
                let x = x[j];
                if Self::contributes(x, b, eps) {
                    count += 1;
                    sum += f64::from(x) - f64::from(b);
                    last = i;
                }
            }
            let delta = match count {
                0 => 0.0,
                1 => lambda[last] * sum,
                k => sum / f64::from(k),
            };
            *o = (f64::from(b) + delta) as f32;
        }
    }
}

fn oracle_case(c: &OracleCase<'_>, plus: bool) -> Vec<f64> {
    let v = c.values;
    let epsilon = v.number("epsilon").unwrap_or(EPSILON);
    let plus = plus.then(|| {
        (
            v.number("r").unwrap_or(R),
            v.number("alpha").unwrap_or(ALPHA),
        )
    });
    oracle(c.base.unwrap_or(&[]), c.inputs, epsilon, plus)
}

/// The float64 oracle over whole tensors; `plus` = (r, α) for RAM+.
pub fn oracle(
    base: &[f32],
    inputs: &[Vec<f32>],
    epsilon: f64,
    plus: Option<(f64, f64)>,
) -> Vec<f64> {
    if inputs.is_empty() {
        return base.iter().map(|&b| f64::from(b)).collect();
    }
    let n = base.len();
    let eps32 = epsilon as f32;
    // Masks of contributions, input by input, and the contributor count per element.
    let masks: Vec<Vec<bool>> = inputs
        .iter()
        .map(|x| {
            x.iter()
                .zip(base)
                .map(|(&x, &b)| (x - b).abs() > eps32)
                .collect()
        })
        .collect();
    let counts: Vec<usize> = (0..n)
        .map(|j| masks.iter().filter(|m| m[j]).count())
        .collect();
    let lambdas: Vec<f64> = masks
        .iter()
        .map(|m| match plus {
            None => 1.0,
            Some((r, alpha)) => {
                let shared = (0..n).filter(|&j| m[j] && counts[j] > 1).count() as f64;
                let unique = (0..n).filter(|&j| m[j] && counts[j] == 1).count() as f64;
                if shared + unique == 0.0 {
                    1.0
                } else {
                    let rho = shared / unique.max(epsilon);
                    1.0 + r * rho.clamp(0.0, alpha.max(0.0)).min(alpha)
                }
            }
        })
        .collect();
    let mut out: Vec<f64> = base.iter().map(|&b| f64::from(b)).collect();
    for ((x, m), lambda) in inputs.iter().zip(&masks).zip(&lambdas) {
        for j in 0..n {
            if !m[j] {
                continue;
            }
            let tau = f64::from(x[j]) - f64::from(base[j]);
            out[j] += match counts[j] {
                1 => lambda * tau,
                k => tau / k as f64,
            };
        }
    }
    out
}
