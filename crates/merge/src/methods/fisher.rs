//! Fisher-weighted averaging (Matena & Raffel, "Merging Models with Fisher-Weighted
//! Averaging", arXiv 2111.09832; config name `fisher`).
//!
//! Per element, with Fᵢ the diagonal Fisher of model i and λᵢ its weight:
//! θ = Σᵢ λᵢ F̃ᵢ θᵢ / Σᵢ λᵢ F̃ᵢ, F̃ᵢ = max(Fᵢ, floor).
//! Equal Fishers give the weighted average; it is the special case H₀ = 0, αₜ = 1 of
//! uncertainty-based gradient matching (`gradient_matching`, arXiv 2310.12808).
//!
//! Parameters: `weight` per model (λᵢ, default 1), `fisher_floor` shared (default 1e-6, in
//! [0, 1]).
//!
//! Statistics: the `fisher/` checkpoint of each model's statistics folder, one tensor per
//! parameter under its own key (`mmerge-torch statistics`: mean squared gradients, empirical
//! or with labels sampled from the model).
//!
//! Deviations: the floor applies to every model's Fisher (the reference code can floor only
//! the target model's); `normalize_fishers` (dividing λᵢ by the global L2 norm of Fᵢ, a
//! whole-model pass) is not offered. Computed in float64 per element.

use std::sync::Arc;

use super::linear::RUN;
use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::{MergeError, Result};
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const FISHER: Method = Method {
    name: "fisher",
    reference: Reference::Arxiv("2111.09832"),
    needs_base: false,
    inputs: Inputs::Many,
    statistics: Statistics::Fisher,
    params: &[
        ParamSpec::number("weight", Scope::Input, 1.0, 1e6),
        ParamSpec::number("fisher_floor", Scope::Shared, 1e-6, 1.0),
    ],
    plan,
    oracle: |c| {
        let n = c.inputs.len();
        let w = c.values.model_numbers(0..n, "weight", 1.0);
        let floor = c.values.number("fisher_floor").unwrap_or(1e-6);
        oracle(c.inputs, &c.statistics[..n], &w, floor)
    },
    goldens: Goldens::Unreproducible(
        "mergekit has no Fisher merging; the float64 oracle and the special cases of \
         gradient matching pin it (tests/data_dependent.rs)",
    ),
};

/// Checks that every member in `members` has a statistics tensor of the weight's shape.
pub(crate) fn require_fisher(t: &TensorPlan<'_>, members: &[usize]) -> Result<()> {
    for &m in members {
        match &t.statistics[m] {
            Some(shape) if shape.as_slice() == t.shape => {}
            other => {
                return Err(MergeError::Param {
                    name: "statistics".into(),
                    key: t.key.to_string(),
                    message: match other {
                        None => format!("model {m} has no Fisher for this tensor"),
                        Some(s) => format!(
                            "model {m}'s Fisher has shape {s:?}, the tensor's is {:?}",
                            t.shape
                        ),
                    },
                });
            }
        }
    }
    Ok(())
}

fn plan(t: &TensorPlan<'_>) -> Result<Planned> {
    let members: Vec<usize> = (0..t.members).collect();
    require_fisher(t, &members)?;
    Ok(Planned {
        base: None,
        inputs: members.clone(),
        statistics: members.clone(),
        kernel: Some(Arc::new(Fisher {
            weights: t
                .values
                .model_numbers(members.iter().copied(), "weight", 1.0),
            floor: t.values.number("fisher_floor").unwrap_or(1e-6),
        })),
    })
}

/// Evaluated parameters of one tensor's Fisher merge: the inputs are the n weights, then
/// their n Fishers.
#[derive(Debug, Clone, PartialEq)]
pub struct Fisher {
    pub weights: Vec<f64>,
    pub floor: f64,
}

impl Kernel for Fisher {
    type Stats = ();
    const ELEMENTWISE: bool = true;

    fn stats(&self, _: &Passes<'_>) -> Result<()> {
        Ok(())
    }

    fn chunk(&self, _: &(), c: &Chunk<'_>, out: &mut [f32]) {
        let n = self.weights.len();
        let (thetas, fishers) = c.inputs.split_at(n);
        let (mut num, mut den) = ([0f64; RUN], [0f64; RUN]);
        for (r, o) in out.chunks_mut(RUN).enumerate() {
            let (num, den) = (&mut num[..o.len()], &mut den[..o.len()]);
            num.fill(0.0);
            den.fill(0.0);
            for ((x, f), w) in thetas.iter().zip(fishers).zip(&self.weights) {
                let at = r * RUN;
                for j in 0..o.len() {
                    let g = w * f64::from(f[at + j]).max(self.floor);
                    num[j] += g * f64::from(x[at + j]);
                    den[j] += g;
                }
            }
            for ((o, n), d) in o.iter_mut().zip(num.iter()).zip(den.iter()) {
                *o = (n / d) as f32;
            }
        }
    }
}

/// The float64 oracle: Σ λᵢ max(Fᵢ, floor) θᵢ / Σ λᵢ max(Fᵢ, floor), element by element.
pub fn oracle(thetas: &[Vec<f32>], fishers: &[Vec<f32>], w: &[f64], floor: f64) -> Vec<f64> {
    (0..thetas[0].len())
        .map(|j| {
            let (mut num, mut den) = (0.0, 0.0);
            for i in 0..thetas.len() {
                let g = w[i] * f64::from(fishers[i][j]).max(floor);
                num += g * f64::from(thetas[i][j]);
                den += g;
            }
            num / den
        })
        .collect()
}
