//! Multi-SLERP: barycentric interpolation of several models on a hypersphere (mergekit
//! `multislerp`; reference: Charles Goddard's post "multislerp-wow-what-a-cool-idea", which
//! mergekit cites as goddard.blog/posts/multislerp-wow-what-a-cool-idea).
//!
//! With β the base model's tensor (0 without a base) and τᵢ = θᵢ − β the flattened inputs,
//! weights wᵢ (divided by Σ wᵢ when `normalize_weights`), nᵢ = ‖τᵢ‖ and uᵢ = τᵢ / (nᵢ + ε):
//! the weighted mean direction m = Σ wᵢ uᵢ, m̂ = m / ‖m‖; the tangent vectors at m̂,
//! vᵢ = uᵢ − ⟨uᵢ, m̂⟩ m̂, and their weighted sum r = Σ wᵢ vᵢ with ρ = ‖r‖ + ε; then
//! θ = β + (Σ wᵢ nᵢ) · (m̂ cos ρ + r sin ρ / ρ). One input alone is returned as it is (the
//! base is then ignored). If ‖m‖ < ε (the unit vectors cancel), two inputs fall back to the
//! linear θ = β + w₁ τ₁ + w₂ τ₂, and more inputs are an error.
//!
//! Parameters (mergekit's names and defaults): `weight` per model other than the base
//! (required, any sign), `normalize_weights` (shared flag, default true), `eps` (shared,
//! default 1e-8, in [0, 1]). `base_model` is optional. Everything above is linear in the τᵢ
//! once their Gram matrix Gᵢⱼ = ⟨τᵢ, τⱼ⟩ is known, so the kernel sums G over the whole tensor
//! in one statistics pass (chunk by chunk, in chunk order), turns it into coefficients cᵢ in
//! float64 and then streams θ = β + Σ cᵢ τᵢ chunk by chunk.
//!
//! Deviations: none beyond float64 arithmetic. We compute in float64 and round once (mergekit:
//! in the config's `dtype`, float32 weights included). Note that in exact arithmetic r = 0,
//! since Σ wᵢ ⟨uᵢ, m̂⟩ = ⟨m, m̂⟩ = ‖m‖, so θ = β + (Σ wᵢ nᵢ) cos(ε) m̂: what mergekit adds
//! through r is float32 rounding noise, of relative size about 1e-7; ours is float64 noise.
//! Weights that sum to zero with `normalize_weights` are an error (mergekit divides by zero).

use std::sync::Arc;

use super::passthrough::Passthrough;
use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::{MergeError, Result};
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const MULTISLERP: Method = Method {
    name: "multislerp",
    reference: Reference::Other("goddard.blog/posts/multislerp-wow-what-a-cool-idea"),
    needs_base: false,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &[
        ParamSpec::weight(Scope::NonBase),
        ParamSpec::flag("normalize_weights", true),
        ParamSpec::number("eps", Scope::Shared, DEFAULT_EPS, 1.0),
    ],
    plan,
    oracle: |c| {
        let w = c
            .values
            .model_numbers(0..c.inputs.len(), "weight", f64::NAN);
        oracle(
            c.base,
            c.inputs,
            &w,
            c.values.flag("normalize_weights").unwrap_or(true),
            c.values.number("eps").unwrap_or(DEFAULT_EPS),
        )
    },
    goldens: Goldens::Cases(&["multislerp", "multislerp_base"]),
};

/// mergekit's default `eps`.
pub const DEFAULT_EPS: f64 = 1e-8;

fn plan(p: &TensorPlan<'_>) -> Result<Planned> {
    let inputs = p.non_base();
    if let [only] = inputs[..] {
        // One model: itself, unchanged (cast when the output dtype differs).
        return Ok(Planned {
            statistics: vec![],
            base: None,
            inputs: vec![only],
            kernel: p
                .cast
                .then(|| Arc::new(Passthrough { scale: None }) as Arc<_>),
        });
    }
    let weights = inputs
        .iter()
        .map(|&m| p.model_number(m, "weight"))
        .collect();
    Ok(Planned {
        statistics: vec![],
        base: p.base,
        inputs,
        kernel: Some(Arc::new(MultiSlerp {
            weights,
            normalize: p.values.flag("normalize_weights").unwrap_or(true),
            eps: p.values.number("eps").unwrap_or(DEFAULT_EPS),
        })),
    })
}

/// Evaluated parameters of a Multi-SLERP of one tensor (two inputs or more).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiSlerp {
    pub weights: Vec<f64>,
    pub normalize: bool,
    pub eps: f64,
}

/// The Gram matrix of the task vectors τᵢ = xᵢ − β (row-major, k × k).
#[derive(Debug, Clone, PartialEq)]
pub struct Gram {
    pub k: usize,
    pub g: Vec<f64>,
}

impl Gram {
    fn zero(k: usize) -> Gram {
        Gram {
            k,
            g: vec![0.0; k * k],
        }
    }

    /// The sums of one chunk of the inputs (`base` subtracted when there is one).
    fn of_chunk(base: Option<&[f32]>, inputs: &[Vec<f32>]) -> Gram {
        let k = inputs.len();
        let mut gram = Gram::zero(k);
        let n = inputs.first().map_or(0, Vec::len);
        let mut tau = vec![0f64; k];
        for j in 0..n {
            let b = base.map_or(0.0, |b| f64::from(b[j]));
            for (t, x) in tau.iter_mut().zip(inputs) {
                *t = f64::from(x[j]) - b;
            }
            for p in 0..k {
                for q in p..k {
                    gram.g[p * k + q] += tau[p] * tau[q];
                }
            }
        }
        for p in 0..k {
            for q in 0..p {
                gram.g[p * k + q] = gram.g[q * k + p];
            }
        }
        gram
    }

    fn add(mut self, o: Gram) -> Gram {
        for (a, b) in self.g.iter_mut().zip(o.g) {
            *a += b;
        }
        self
    }

    /// ⟨Σ aᵢ τᵢ, Σ bⱼ τⱼ⟩.
    fn inner(&self, a: &[f64], b: &[f64]) -> f64 {
        let k = self.k;
        (0..k)
            .map(|p| a[p] * (0..k).map(|q| self.g[p * k + q] * b[q]).sum::<f64>())
            .sum()
    }
}

impl MultiSlerp {
    /// The weights as used: divided by their sum when normalising.
    fn used_weights(&self, key: &str) -> Result<Vec<f64>> {
        if !self.normalize {
            return Ok(self.weights.clone());
        }
        let total: f64 = self.weights.iter().sum();
        if total == 0.0 || !total.is_finite() {
            return Err(MergeError::Param {
                name: "weight".into(),
                key: key.into(),
                message: format!(
                    "the weights sum to {total}; normalize_weights divides by their sum"
                ),
            });
        }
        Ok(self.weights.iter().map(|w| w / total).collect())
    }

    /// The coefficients cᵢ with θ = β + Σ cᵢ τᵢ, from the Gram matrix of the τᵢ.
    pub fn coefficients(&self, gram: &Gram, key: &str) -> Result<Vec<f64>> {
        let w = self.used_weights(key)?;
        let k = gram.k;
        let eps = self.eps;
        let norms: Vec<f64> = (0..k).map(|i| gram.g[i * k + i].max(0.0).sqrt()).collect();
        // m = Σ αᵢ τᵢ.
        let alpha: Vec<f64> = w.iter().zip(&norms).map(|(w, n)| w / (n + eps)).collect();
        let m_norm = gram.inner(&alpha, &alpha).max(0.0).sqrt();
        if m_norm < eps {
            if k == 2 {
                return Ok(w);
            }
            return Err(MergeError::Param {
                name: "weight".into(),
                key: key.into(),
                message: format!(
                    "the weighted mean of the {k} models' unit directions is zero (norm \
                     {m_norm:e}): opposite directions balance out; choose other weights"
                ),
            });
        }
        // m̂ = Σ μᵢ τᵢ; ⟨uᵢ, m̂⟩ = (G μ)ᵢ / (nᵢ + ε).
        let mu: Vec<f64> = alpha.iter().map(|a| a / m_norm).collect();
        let along: f64 = (0..k)
            .map(|i| {
                let g_mu: f64 = (0..k).map(|j| gram.g[i * k + j] * mu[j]).sum();
                w[i] * g_mu / (norms[i] + eps)
            })
            .sum();
        // r = Σ wᵢ uᵢ − (Σ wᵢ ⟨uᵢ, m̂⟩) m̂ = Σ ρᵢ τᵢ.
        let rho: Vec<f64> = alpha.iter().zip(&mu).map(|(a, m)| a - along * m).collect();
        let r_norm = gram.inner(&rho, &rho).max(0.0).sqrt() + eps;
        let scale: f64 = w.iter().zip(&norms).map(|(w, n)| w * n).sum();
        let (cos, sinc) = (r_norm.cos(), r_norm.sin() / r_norm);
        Ok(mu
            .iter()
            .zip(&rho)
            .map(|(m, r)| scale * (m * cos + r * sinc))
            .collect())
    }
}

impl Kernel for MultiSlerp {
    /// The coefficients cᵢ.
    type Stats = Vec<f64>;
    const ELEMENTWISE: bool = true;

    fn stats(&self, passes: &Passes<'_>) -> Result<Vec<f64>> {
        let k = self.weights.len();
        let which: Vec<usize> = (0..k).collect();
        let gram = passes
            .map(&which, |c| Gram::of_chunk(c.base, c.inputs))?
            .into_iter()
            // Summed in chunk order: the same bits whatever the thread count.
            .fold(Gram::zero(k), Gram::add);
        self.coefficients(&gram, passes.name())
    }

    fn chunk(&self, coef: &Vec<f64>, c: &Chunk<'_>, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            let b = c.base.map_or(0.0, |b| f64::from(b[j]));
            let mut acc = b;
            for (x, cf) in c.inputs.iter().zip(coef) {
                acc += cf * (f64::from(x[j]) - b);
            }
            *o = acc as f32;
        }
    }
}

/// The float64 oracle over whole tensors, step by step as the formula reads (NaN where the
/// method refuses: weights summing to zero, or cancelling directions of three models or more).
pub fn oracle(
    base: Option<&[f32]>,
    inputs: &[Vec<f32>],
    weights: &[f64],
    normalize: bool,
    eps: f64,
) -> Vec<f64> {
    if inputs.len() == 1 {
        return inputs[0].iter().map(|x| f64::from(*x)).collect();
    }
    let n = inputs[0].len();
    let beta: Vec<f64> = match base {
        Some(b) => b.iter().map(|x| f64::from(*x)).collect(),
        None => vec![0.0; n],
    };
    let tau: Vec<Vec<f64>> = inputs
        .iter()
        .map(|x| {
            x.iter()
                .zip(&beta)
                .map(|(x, b)| f64::from(*x) - b)
                .collect()
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    let w: Vec<f64> = if normalize {
        weights.iter().map(|x| x / sum).collect()
    } else {
        weights.to_vec()
    };
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norms: Vec<f64> = tau.iter().map(|t| norm(t)).collect();
    let units: Vec<Vec<f64>> = tau
        .iter()
        .zip(&norms)
        .map(|(t, nt)| t.iter().map(|x| x / (nt + eps)).collect())
        .collect();
    let mut mean = vec![0f64; n];
    for (u, wi) in units.iter().zip(&w) {
        for (m, x) in mean.iter_mut().zip(u) {
            *m += wi * x;
        }
    }
    let mean_norm = norm(&mean);
    if mean_norm < eps {
        if inputs.len() != 2 {
            return vec![f64::NAN; n];
        }
        return (0..n)
            .map(|j| beta[j] + w[0] * tau[0][j] + w[1] * tau[1][j])
            .collect();
    }
    let dir: Vec<f64> = mean.iter().map(|x| x / mean_norm).collect();
    let mut tangent = vec![0f64; n];
    for (u, wi) in units.iter().zip(&w) {
        let d: f64 = u.iter().zip(&dir).map(|(a, b)| a * b).sum();
        for j in 0..n {
            tangent[j] += wi * (u[j] - d * dir[j]);
        }
    }
    let tn = norm(&tangent) + eps;
    let avg: f64 = norms.iter().zip(&w).map(|(a, b)| a * b).sum();
    (0..n)
        .map(|j| beta[j] + avg * (dir[j] * tn.cos() + tangent[j] * tn.sin() / tn))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// θ = β + Σ cᵢ τᵢ from the kernel's Gram route, whole vectors at once.
    fn via_gram(k: &MultiSlerp, base: Option<&[f32]>, xs: &[Vec<f32>]) -> Result<Vec<f64>> {
        let c = k.coefficients(&Gram::of_chunk(base, xs), "x")?;
        Ok((0..xs[0].len())
            .map(|j| {
                let b = base.map_or(0.0, |b| f64::from(b[j]));
                b + xs
                    .iter()
                    .zip(&c)
                    .map(|(x, c)| c * (f64::from(x[j]) - b))
                    .sum::<f64>()
            })
            .collect())
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn gram_route_matches_the_oracle_with_and_without_a_base() {
        let base: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let xs: Vec<Vec<f32>> = (1..4)
            .map(|s| {
                (0..50)
                    .map(|i| (i as f32 * 0.37).sin() + 0.2 * ((i * s) as f32 * 1.3).cos())
                    .collect()
            })
            .collect();
        for (normalize, eps) in [(true, 1e-8), (false, 0.01)] {
            let k = MultiSlerp {
                weights: vec![0.5, -0.2, 0.9],
                normalize,
                eps,
            };
            for b in [None, Some(base.as_slice())] {
                let want = oracle(b, &xs, &k.weights, normalize, eps);
                close(&via_gram(&k, b, &xs).unwrap(), &want);
            }
        }
    }

    #[test]
    fn cancelling_directions_fall_back_for_two_and_fail_for_three() {
        let x = vec![1.0f32, 2.0, -0.5];
        let neg: Vec<f32> = x.iter().map(|v| -v).collect();
        let two = MultiSlerp {
            weights: vec![1.0, 1.0],
            normalize: true,
            eps: 1e-8,
        };
        let xs = vec![x.clone(), neg.clone()];
        let got = via_gram(&two, None, &xs).unwrap();
        close(&got, &[0.0, 0.0, 0.0]);
        close(&got, &oracle(None, &xs, &two.weights, true, 1e-8));
        let three = MultiSlerp {
            weights: vec![1.0, 1.0, 2.0],
            normalize: true,
            eps: 1e-8,
        };
        let xs = vec![x.clone(), x, vec![-1.0, -2.0, 0.5]];
        assert!(matches!(
            three.coefficients(&Gram::of_chunk(None, &xs), "x"),
            Err(MergeError::Param { .. })
        ));
        let zero_sum = MultiSlerp {
            weights: vec![1.0, -1.0],
            normalize: true,
            eps: 1e-8,
        };
        assert!(zero_sum.used_weights("x").is_err());
    }
}
