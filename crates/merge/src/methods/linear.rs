//! Linear merging (model soups, arXiv 2203.05482; mergekit `linear`).
//!
//! θ = Σᵢ wᵢ θᵢ / Σᵢ wᵢ with `normalize: true` (the default), or Σᵢ wᵢ θᵢ without. Interpolation
//! between two models is the special case w = (1 − α, α). Parameters: `weight` per input
//! (required), `normalize` shared (default true). A base model, when given, is an ordinary input.
//!
//! Deviation from mergekit: we compute in float64 per element and round once to the output
//! dtype; mergekit computes in the config's `dtype` (so bf16 configs round at every step).

use std::sync::Arc;

use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::Result;
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const LINEAR: Method = Method {
    name: "linear",
    reference: Reference::Arxiv("2203.05482"),
    needs_base: false,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &[
        ParamSpec::weight(Scope::Input),
        ParamSpec::flag("normalize", true),
    ],
    plan,
    oracle: |c| {
        let w = c
            .values
            .model_numbers(0..c.inputs.len(), "weight", f64::NAN);
        oracle(c.inputs, &w, c.values.flag("normalize").unwrap_or(true))
    },
    goldens: Goldens::Cases(&[
        "linear_weights",
        "linear_unnormalized",
        "linear_gradient_filter",
    ]),
};

fn plan(t: &TensorPlan<'_>) -> Result<Planned> {
    let inputs: Vec<usize> = (0..t.members).collect();
    Ok(Planned {
        statistics: vec![],
        base: None,
        kernel: Some(Arc::new(Linear {
            weights: inputs
                .iter()
                .map(|&m| t.model_number(m, "weight"))
                .collect(),
            normalize: t.values.flag("normalize").unwrap_or(true),
        })),
        inputs,
    })
}

/// Evaluated parameters of a linear merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub weights: Vec<f64>,
    pub normalize: bool,
}

impl Kernel for Linear {
    type Stats = ();
    const ELEMENTWISE: bool = true;

    fn stats(&self, _: &Passes<'_>) -> Result<()> {
        Ok(())
    }

    /// Per element the same float64 operations as before, in input order; laid out input by
    /// input over runs of [`RUN`] elements so that the loops vectorise.
    fn chunk(&self, _: &(), c: &Chunk<'_>, out: &mut [f32]) {
        let scale = if self.normalize {
            1.0 / self.weights.iter().sum::<f64>()
        } else {
            1.0
        };
        mmerge_core::simd::fast(
            #[inline(always)]
            || {
                let mut acc = [0f64; RUN];
                for (r, o) in out.chunks_mut(RUN).enumerate() {
                    let acc = &mut acc[..o.len()];
                    acc.fill(0.0);
                    for (x, w) in c.inputs.iter().zip(&self.weights) {
                        for (a, v) in acc.iter_mut().zip(&x[r * RUN..]) {
                            *a += w * f64::from(*v);
                        }
                    }
                    for (o, a) in o.iter_mut().zip(acc.iter()) {
                        *o = (a * scale) as f32;
                    }
                }
            },
        );
    }
}

/// Elements a kernel's float64 temporaries cover at a time (they live on the stack).
pub(crate) const RUN: usize = 256;

/// The float64 oracle: Σ wᵢ xᵢ (/ Σ wᵢ when normalising).
pub fn oracle(inputs: &[Vec<f32>], weights: &[f64], normalize: bool) -> Vec<f64> {
    let n = inputs[0].len();
    let mut out = vec![0f64; n];
    for (x, w) in inputs.iter().zip(weights) {
        for j in 0..n {
            out[j] += w * f64::from(x[j]);
        }
    }
    if normalize {
        let total: f64 = weights.iter().sum();
        for o in &mut out {
            *o /= total;
        }
    }
    out
}
