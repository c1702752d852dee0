//! NearSwap: keep the base where the other model is far from it, take the other model where
//! the two nearly agree (mergekit `nearswap`; reference: the model card
//! "alchemonaut/QuartetAnemoi-70B-t0.0001", the method's origin, as mergekit cites it).
//!
//! Per element, with a the base model's value and b the other model's:
//! w = clamp(t / max(|a − b|, 1e-6), 0, 1) and θ = w·b + (1 − w)·a. Where |a − b| ≤ t the
//! weight is 1 and θ = b; farther apart the result moves towards the base as t / |a − b|.
//! t ≤ 0 returns the base.
//!
//! Parameter: `t` (shared, required, a gradient over depth allowed; mergekit gives it no
//! range, nor do we). Exactly two models: `base_model` and one other. No statistics pass:
//! every element depends on its own two values only.
//!
//! Deviations: we compute in float64 per element and round once to the output dtype (mergekit
//! computes in the config's `dtype`, so with float32 it rounds |a − b|, the weight and each
//! product; the difference stays within a few float32 ulps of the result), and the floor on
//! |a − b| is 1e-6 exactly rather than its float32 rounding. A tensor that only the base holds
//! is an error (missing key), where mergekit copies the base's.

use std::sync::Arc;

use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::Result;
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const NEARSWAP: Method = Method {
    name: "nearswap",
    reference: Reference::Other("alchemonaut/QuartetAnemoi-70B-t0.0001"),
    needs_base: true,
    inputs: Inputs::One,
    statistics: Statistics::None,
    params: &[ParamSpec::required("t", Scope::Shared)],
    plan,
    oracle: |c| {
        oracle(
            c.base.unwrap_or(&[]),
            &c.inputs[0],
            c.values.number("t").unwrap_or(f64::NAN),
        )
    },
    goldens: Goldens::Cases(&["nearswap"]),
};

fn plan(p: &TensorPlan<'_>) -> Result<Planned> {
    Ok(Planned {
        statistics: vec![],
        base: p.base,
        inputs: p.non_base(),
        kernel: Some(Arc::new(NearSwap {
            t: p.values.number("t").unwrap_or(f64::NAN),
        })),
    })
}

/// The smallest |a − b| divided by (mergekit's value).
pub const MIN_DIFF: f64 = 1e-6;

/// Evaluated parameters of a NearSwap of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NearSwap {
    pub t: f64,
}

impl Kernel for NearSwap {
    type Stats = ();
    const ELEMENTWISE: bool = true;

    fn stats(&self, _: &Passes<'_>) -> Result<()> {
        Ok(())
    }

    /// Per element: the weight of the other model from the distance, then the blend.
    fn chunk(&self, _: &(), c: &Chunk<'_>, out: &mut [f32]) {
        let base = c.base.unwrap_or(&[]);
        for ((o, a), b) in out.iter_mut().zip(base).zip(&c.inputs[0]) {
            let (a, b) = (f64::from(*a), f64::from(*b));
            let w = (self.t / (a - b).abs().max(MIN_DIFF)).clamp(0.0, 1.0);
            *o = (w * b + (1.0 - w) * a) as f32;
        }
    }
}

/// The float64 oracle over whole tensors: `base` is a (kept when far), `other` is b.
pub fn oracle(base: &[f32], other: &[f32], t: f64) -> Vec<f64> {
    base.iter()
        .zip(other)
        .map(|(&a, &b)| {
            let a = f64::from(a);
            let diff = f64::from(b) - a;
            let dist = if diff.abs() < 1e-6 { 1e-6 } else { diff.abs() };
            let w = (t / dist).clamp(0.0, 1.0);
            a + w * diff
        })
        .collect()
}
