//! Uncertainty-based gradient matching (Daheim, Möllenhoff, Ponti, Gurevych, Khan, "Model
//! Merging by Uncertainty-Based Gradient Matching", arXiv 2310.12808; config name
//! `gradient_matching`).
//!
//! With θ₀ the base, θₜ the task models, Hₜ = sₜ Fₜ and H₀ = s₀ F₀ diagonal Hessian estimates
//! (Fisher F times a data-size scale s), αₜ the task weights and δ a prior precision:
//! θ = θ₀ + Σₜ αₜ H̄⁻¹ (H₀ + Hₜ + δ)(θₜ − θ₀), H̄ = H₀ + Σₜ αₜ Hₜ + δ, element by element.
//! Special cases (tests/data_dependent.rs): with Hₜ ≪ H₀ it is task arithmetic
//! θ₀ + Σₜ αₜ(θₜ − θ₀) (and the average for αₜ = 1/T); with H₀ = 0, αₜ = 1, δ = 0 it is Fisher
//! averaging Σₜ Fₜ θₜ / Σₜ Fₜ (`fisher`, arXiv 2111.09832).
//!
//! Parameters: `weight` per task model (αₜ, default 1), `scale` per task model (sₜ, default 1:
//! the paper sets it to the task's dataset size), `base_scale` (s₀, default 1; 0 drops H₀ and
//! then the base needs no statistics), `delta` (δ, default 1e-12).
//!
//! Statistics: the `fisher/` checkpoint of each task model's statistics folder and of the
//! base's (`mmerge-torch statistics`).
//!
//! Deviations: αₜ may differ per model (the official code has one scalar α; a mergekit-style
//! port has per-model αₜ, as here). δ is added to H₀ + Hₜ as in the official code. Computed in
//! float64 per element; an element where H̄ = 0 is an error (non-finite result), not skipped.

use std::sync::Arc;

use super::fisher::require_fisher;
use super::linear::RUN;
use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::Result;
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const GRADIENT_MATCHING: Method = Method {
    name: "gradient_matching",
    reference: Reference::Arxiv("2310.12808"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::Fisher,
    params: &[
        ParamSpec::number("weight", Scope::NonBase, 1.0, 1e3),
        ParamSpec::number("scale", Scope::NonBase, 1.0, 1e12),
        ParamSpec::number("base_scale", Scope::Shared, 1.0, 1e12),
        ParamSpec::number("delta", Scope::Shared, 1e-12, 1.0),
    ],
    plan,
    oracle: |c| {
        let n = c.inputs.len();
        let per = |name: &str| c.values.model_numbers(0..n, name, 1.0);
        let p = GradMatch {
            weights: per("weight"),
            scales: per("scale"),
            base_scale: c.values.number("base_scale").unwrap_or(1.0),
            delta: c.values.number("delta").unwrap_or(1e-12),
        };
        let base_fisher = c.statistics.get(n).map(Vec::as_slice);
        oracle(
            &p,
            c.base.unwrap_or(&[]),
            c.inputs,
            &c.statistics[..n],
            base_fisher,
        )
    },
    goldens: Goldens::Unreproducible(
        "mergekit has no gradient matching; the float64 oracle and its special cases (task \
         arithmetic, Fisher averaging) pin it (tests/data_dependent.rs)",
    ),
};

fn plan(t: &TensorPlan<'_>) -> Result<Planned> {
    let inputs = t.non_base();
    let p = GradMatch {
        weights: t
            .values
            .model_numbers(inputs.iter().copied(), "weight", 1.0),
        scales: t.values.model_numbers(inputs.iter().copied(), "scale", 1.0),
        base_scale: t.values.number("base_scale").unwrap_or(1.0),
        delta: t.values.number("delta").unwrap_or(1e-12),
    };
    let mut statistics = inputs.clone();
    if p.base_scale > 0.0 {
        statistics.extend(t.base);
    }
    require_fisher(t, &statistics)?;
    Ok(Planned {
        base: t.base,
        inputs,
        statistics,
        kernel: Some(Arc::new(p)),
    })
}

/// Evaluated parameters of one tensor's gradient-matching merge. The inputs are the T task
/// weights, their T Fishers, then the base's Fisher when `base_scale > 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct GradMatch {
    pub weights: Vec<f64>,
    pub scales: Vec<f64>,
    pub base_scale: f64,
    pub delta: f64,
}

impl GradMatch {
    /// One element: θ₀, the tasks' θₜ and Fₜ (by index), F₀.
    #[inline(always)]
    fn element(
        &self,
        theta0: f64,
        theta: impl Fn(usize) -> f64,
        f: impl Fn(usize) -> f64,
        f0: f64,
    ) -> f64 {
        let h0 = self.base_scale * f0 + self.delta;
        let mut bar = h0;
        for t in 0..self.weights.len() {
            bar += self.weights[t] * self.scales[t] * f(t);
        }
        let mut sum = 0.0;
        for t in 0..self.weights.len() {
            sum += self.weights[t] * (h0 + self.scales[t] * f(t)) * (theta(t) - theta0);
        }
        theta0 + sum / bar
    }
}

impl Kernel for GradMatch {
    type Stats = ();
    const ELEMENTWISE: bool = true;

    fn stats(&self, _: &Passes<'_>) -> Result<()> {
        Ok(())
    }

    fn chunk(&self, _: &(), c: &Chunk<'_>, out: &mut [f32]) {
        let n = self.weights.len();
        let base = c.base.unwrap_or(&[]);
        let (thetas, rest) = c.inputs.split_at(n);
        let (fishers, f0) = rest.split_at(n);
        for (r, o) in out.chunks_mut(RUN).enumerate() {
            let at = r * RUN;
            for (j, o) in o.iter_mut().enumerate() {
                let e = at + j;
                let base_f = f0.first().map_or(0.0, |f| f64::from(f[e]));
                *o = self.element(
                    f64::from(base[e]),
                    |t| f64::from(thetas[t][e]),
                    |t| f64::from(fishers[t][e]),
                    base_f,
                ) as f32;
            }
        }
    }
}

/// The float64 oracle, written out from the formula: for every element,
/// H₀ = s₀F₀, H̄ = H₀ + Σ αₜ sₜ Fₜ + δ, θ = θ₀ + Σ αₜ (H₀ + sₜFₜ + δ)(θₜ − θ₀) / H̄.
pub fn oracle(
    p: &GradMatch,
    base: &[f32],
    thetas: &[Vec<f32>],
    fishers: &[Vec<f32>],
    base_fisher: Option<&[f32]>,
) -> Vec<f64> {
    (0..base.len())
        .map(|j| {
            let f0 = base_fisher.map_or(0.0, |f| f64::from(f[j]));
            let h0 = p.base_scale * f0;
            let ht: Vec<f64> = (0..thetas.len())
                .map(|t| p.scales[t] * f64::from(fishers[t][j]))
                .collect();
            let bar = h0 + (0..thetas.len()).map(|t| p.weights[t] * ht[t]).sum::<f64>() + p.delta;
            let theta0 = f64::from(base[j]);
            theta0
                + (0..thetas.len())
                    .map(|t| {
                        p.weights[t] * (h0 + ht[t] + p.delta) * (f64::from(thetas[t][j]) - theta0)
                            / bar
                    })
                    .sum::<f64>()
        })
        .collect()
}
