//! Karcher mean on the unit sphere (arXiv 2603.04972; mergekit `karcher`).
//!
//! Each of the N input tensors θᵢ (flattened; a base model, when given, is an ordinary input)
//! is split into its norm rᵢ = ‖θᵢ‖ and direction uᵢ = θᵢ / rᵢ. Only inputs with rᵢ > tol take
//! part in the direction, with equal weights aᵢ (1 / their count). The direction starts at the
//! normalised weighted mean m = Σ aᵢ uᵢ / ‖Σ aᵢ uᵢ‖ (the first valid uᵢ if that norm is below
//! tol), then takes Riemannian gradient steps, at most `max_iter`: with dᵢ = ⟨m, uᵢ⟩ clamped
//! to [−1, 1] and φᵢ = arccos dᵢ (inputs with φᵢ < tol skipped), the tangent
//! v = Σ aᵢ (φᵢ / sin φᵢ)(uᵢ − dᵢ m); stop when ‖v‖ < tol, else
//! m ← cos‖v‖ m + sin‖v‖ v / ‖v‖, renormalised when its norm exceeds tol. The result is
//! θ = (Σᵢ rᵢ / N) · m, over all N inputs (zero when no input is valid). One input is copied.
//!
//! Parameters (mergekit's, shared): `max_iter` (default 10; an integer, we accept 0 … 10⁶)
//! and `tol` (default 1e-5; we accept 0 … 1). No per-model weights.
//!
//! Streaming: m always lies in the span of the uᵢ, so we carry it as coefficients
//! m = Σ βᵢ uᵢ. One statistics pass sums the Gram matrix ⟨θᵢ, θⱼ⟩ of the inputs in float64
//! (chunk sums combined in chunk order); every norm and dot product of the iteration follows
//! from it, the iteration runs on N coefficients, and the merge pass writes
//! θ = Σᵢ (r̄ βᵢ / rᵢ) θᵢ chunk by chunk. Memory stays a few chunks per thread.
//!
//! Deviations: none beyond float64 arithmetic. mergekit iterates on whole tensors in the
//! config's dtype (float32 in our fixtures), we in float64 on the Gram matrix, which is the
//! same iteration in exact arithmetic; the golden cases agree far inside the 1e-6 tolerance.
//! Out-of-range `tol` or `max_iter` (negative, a non-integer `max_iter`) is refused where
//! mergekit would run with it.

use std::sync::Arc;

use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::{MergeError, Result};
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const KARCHER: Method = Method {
    name: "karcher",
    reference: Reference::Arxiv("2603.04972"),
    needs_base: false,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &[
        ParamSpec::number("max_iter", Scope::Shared, 10.0, 1e6),
        ParamSpec::number("tol", Scope::Shared, 1e-5, 1.0),
    ],
    plan,
    oracle: |c| {
        let max_iter = c.values.number("max_iter").unwrap_or(10.0) as usize;
        let tol = c.values.number("tol").unwrap_or(1e-5);
        oracle(c.inputs, max_iter, tol)
    },
    goldens: Goldens::Cases(&["karcher", "karcher_defaults"]),
};

fn plan(p: &TensorPlan<'_>) -> Result<Planned> {
    let inputs: Vec<usize> = (0..p.members).collect();
    let max_iter = p.values.number("max_iter").unwrap_or(10.0);
    if max_iter.fract() != 0.0 {
        return Err(MergeError::Param {
            name: "max_iter".into(),
            key: p.key.to_string(),
            message: format!("{max_iter} is not an integer"),
        });
    }
    let kernel = (inputs.len() > 1).then(|| {
        Arc::new(Karcher {
            models: inputs.len(),
            max_iter: max_iter as usize,
            tol: p.values.number("tol").unwrap_or(1e-5),
        }) as Arc<dyn super::DynKernel>
    });
    Ok(Planned {
        statistics: vec![],
        base: None,
        inputs,
        kernel,
    })
}

/// One tensor's Karcher mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Karcher {
    /// N, the inputs.
    pub models: usize,
    pub max_iter: usize,
    pub tol: f64,
}

impl Karcher {
    /// The output's coefficients γ with θ = Σ γᵢ θᵢ, from the Gram matrix `gram` (N × N, row
    /// major) of the inputs.
    pub fn coefficients(&self, gram: &[f64]) -> Vec<f64> {
        let n = self.models;
        let tol = self.tol;
        let r: Vec<f64> = (0..n).map(|i| gram[i * n + i].max(0.0).sqrt()).collect();
        // Gram matrix of the directions (a zero input has a zero direction).
        let mut u = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                if r[i] != 0.0 && r[j] != 0.0 {
                    u[i * n + j] = gram[i * n + j] / (r[i] * r[j]);
                }
            }
        }
        let quad = |x: &[f64]| -> f64 {
            let mut s = 0.0;
            for i in 0..n {
                for j in 0..n {
                    s += x[i] * u[i * n + j] * x[j];
                }
            }
            s.max(0.0)
        };
        let valid: Vec<usize> = (0..n).filter(|&i| r[i] > tol).collect();
        let Some(&first) = valid.first() else {
            return vec![0.0; n];
        };
        let alpha = 1.0 / n as f64;
        let alpha_sum: f64 = valid.iter().map(|_| alpha).sum();
        let a = alpha / alpha_sum;
        let mut beta = vec![0f64; n];
        for &i in &valid {
            beta[i] = a;
        }
        let norm = quad(&beta).sqrt();
        if norm < tol {
            beta.iter_mut().for_each(|b| *b = 0.0);
            beta[first] = 1.0;
        } else {
            beta.iter_mut().for_each(|b| *b /= norm);
        }
        for _ in 0..self.max_iter {
            let mut tangent = vec![0f64; n];
            for &i in &valid {
                let dot: f64 = (0..n)
                    .map(|j| beta[j] * u[j * n + i])
                    .sum::<f64>()
                    .clamp(-1.0, 1.0);
                let phi = dot.acos();
                if phi < tol {
                    continue;
                }
                let w = a * phi / phi.sin();
                tangent[i] += w;
                for (t, b) in tangent.iter_mut().zip(&beta) {
                    *t -= w * dot * b;
                }
            }
            let len = quad(&tangent).sqrt();
            if len < tol {
                break;
            }
            let (s, c) = len.sin_cos();
            for (b, t) in beta.iter_mut().zip(&tangent) {
                *b = c * *b + s * t / len;
            }
            let norm = quad(&beta).sqrt();
            if norm > tol {
                beta.iter_mut().for_each(|b| *b /= norm);
            }
        }
        let scale: f64 = r.iter().map(|x| alpha * x).sum();
        (0..n)
            .map(|i| {
                if r[i] != 0.0 {
                    scale * beta[i] / r[i]
                } else {
                    0.0
                }
            })
            .collect()
    }
}

impl Kernel for Karcher {
    /// γ: θ = Σ γᵢ θᵢ.
    type Stats = Vec<f64>;
    const ELEMENTWISE: bool = true;

    fn stats(&self, passes: &Passes<'_>) -> Result<Vec<f64>> {
        let n = self.models;
        let which: Vec<usize> = (0..n).collect();
        let parts = passes.map(&which, |c| {
            let mut g = vec![0f64; n * n];
            for i in 0..n {
                for j in i..n {
                    g[i * n + j] = c.inputs[i]
                        .iter()
                        .zip(&c.inputs[j])
                        .map(|(x, y)| f64::from(*x) * f64::from(*y))
                        .sum();
                }
            }
            g
        })?;
        let mut gram = vec![0f64; n * n];
        // Added in chunk order: the same bits whatever the thread count.
        for g in parts {
            gram.iter_mut().zip(&g).for_each(|(s, x)| *s += x);
        }
        for i in 0..n {
            for j in 0..i {
                gram[i * n + j] = gram[j * n + i];
            }
        }
        Ok(self.coefficients(&gram))
    }

    fn chunk(&self, gamma: &Vec<f64>, c: &Chunk<'_>, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            let s: f64 = c
                .inputs
                .iter()
                .zip(gamma)
                .map(|(x, g)| g * f64::from(x[j]))
                .sum();
            *o = s as f32;
        }
    }
}

/// The float64 oracle: the iteration on whole vectors, as the formula states it.
pub fn oracle(inputs: &[Vec<f32>], max_iter: usize, tol: f64) -> Vec<f64> {
    let xs: Vec<Vec<f64>> = inputs
        .iter()
        .map(|x| x.iter().map(|v| f64::from(*v)).collect())
        .collect();
    if xs.len() == 1 {
        return xs[0].clone();
    }
    let len = xs[0].len();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let norms: Vec<f64> = xs.iter().map(|x| norm(x)).collect();
    let units: Vec<Vec<f64>> = xs
        .iter()
        .zip(&norms)
        .map(|(x, &r)| {
            if r == 0.0 {
                vec![0.0; len]
            } else {
                x.iter().map(|v| v / r).collect()
            }
        })
        .collect();
    let valid: Vec<&Vec<f64>> = units
        .iter()
        .zip(&norms)
        .filter(|(_, r)| **r > tol)
        .map(|(u, _)| u)
        .collect();
    if valid.is_empty() {
        return vec![0.0; len];
    }
    let weight = 1.0 / valid.len() as f64;
    let mut mean = vec![0.0; len];
    for u in &valid {
        for (m, x) in mean.iter_mut().zip(u.iter()) {
            *m += weight * x;
        }
    }
    let mn = norm(&mean);
    mean = if mn < tol {
        valid[0].clone()
    } else {
        mean.iter().map(|x| x / mn).collect()
    };
    for _ in 0..max_iter {
        let mut tangent = vec![0.0; len];
        for u in &valid {
            let d = dot(&mean, u).clamp(-1.0, 1.0);
            let phi = d.acos();
            if phi < tol {
                continue;
            }
            let f = weight * phi / phi.sin();
            for k in 0..len {
                tangent[k] += f * (u[k] - d * mean[k]);
            }
        }
        let tn = norm(&tangent);
        if tn < tol {
            break;
        }
        for k in 0..len {
            mean[k] = tn.cos() * mean[k] + tn.sin() * tangent[k] / tn;
        }
        let un = norm(&mean);
        if un > tol {
            mean.iter_mut().for_each(|x| *x /= un);
        }
    }
    let scale = norms.iter().sum::<f64>() / norms.len() as f64;
    mean.iter().map(|x| scale * x).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (uniform in [-1, 1)).
    fn vector(seed: u64, len: usize, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                scale * ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            })
            .collect()
    }

    /// The kernel's Gram-matrix path on whole vectors.
    fn via_gram(xs: &[Vec<f32>], max_iter: usize, tol: f64) -> Vec<f64> {
        let n = xs.len();
        let mut gram = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                gram[i * n + j] = xs[i]
                    .iter()
                    .zip(&xs[j])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
            }
        }
        let k = Karcher {
            models: n,
            max_iter,
            tol,
        };
        let g = k.coefficients(&gram);
        (0..xs[0].len())
            .map(|e| xs.iter().zip(&g).map(|(x, c)| c * f64::from(x[e])).sum())
            .collect()
    }

    fn check(xs: &[Vec<f32>], max_iter: usize, tol: f64) {
        let want = oracle(xs, max_iter, tol);
        let got = via_gram(xs, max_iter, tol);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-10 * w.abs().max(1.0),
                "max_iter {max_iter} tol {tol}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn gram_iteration_matches_the_vector_iteration() {
        let base = vector(1, 200, 0.5);
        let near: Vec<Vec<f32>> = (2..6)
            .map(|s| {
                base.iter()
                    .zip(vector(s, 200, 0.2))
                    .map(|(a, b)| a + b)
                    .collect()
            })
            .collect();
        let far: Vec<Vec<f32>> = (10..13).map(|s| vector(s, 200, 1.0)).collect();
        for xs in [&near, &far] {
            for (max_iter, tol) in [(10, 1e-5), (0, 1e-5), (1, 1e-9), (3, 0.0), (50, 1e-12)] {
                check(xs, max_iter, tol);
            }
        }
        // A zero input and a tiny one: directions from the others, norms from all.
        let mut odd = near.clone();
        odd[0] = vec![0.0; 200];
        odd[1] = vector(7, 200, 1e-9);
        check(&odd, 10, 1e-5);
        // Nothing valid: zeros.
        let tiny = vec![vector(8, 200, 1e-9), vec![0.0; 200]];
        check(&tiny, 10, 1e-5);
        assert!(via_gram(&tiny, 10, 1e-5).iter().all(|x| *x == 0.0));
        // Opposite inputs: the mean direction is zero, the first valid direction is taken.
        let opposite = vec![far[0].clone(), far[0].iter().map(|x| -x).collect()];
        check(&opposite, 10, 1e-5);
    }
}

#[cfg(test)]
mod plan_tests {
    use super::super::{Value, Values};
    use super::*;

    fn planned(members: usize, max_iter: f64) -> Result<Planned> {
        let mut values = Values::default();
        values.shared.insert("max_iter", Value::Number(max_iter));
        plan(&TensorPlan {
            key: "w",
            shape: &[4],
            members,
            base: None,
            cast: false,
            values,
            statistics: vec![],
        })
    }

    #[test]
    fn max_iter_must_be_an_integer_and_one_input_is_copied() {
        let err = planned(3, 2.5).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("`max_iter`") && err.contains("not an integer"),
            "{err}"
        );
        assert!(planned(1, 10.0).is_ok_and(|p| p.kernel.is_none()));
        assert!(planned(2, 0.0).is_ok_and(|p| p.kernel.is_some() && p.base.is_none()));
    }
}
