//! SLERP: spherical linear interpolation (Shoemake 1985; mergekit `slerp`).
//!
//! With v₀ the base model's tensor (t = 0) and v₁ the other's (t = 1), both flattened:
//! cos Ω = ⟨v₀/‖v₀‖, v₁/‖v₁‖⟩ (a norm ≤ 1e-8 is left unnormalised). If |cos Ω| > 0.9995 the
//! vectors are nearly parallel and the result is the linear interpolation (1 − t) v₀ + t v₁;
//! otherwise θ = (sin((1 − t)Ω) / sin Ω) v₀ + (sin(tΩ) / sin Ω) v₁ (the un-normalised tensors
//! are combined, as in mergekit). t = 0 and t = 1 return the ends exactly.
//!
//! Parameter: `t` (shared, required, a gradient over depth as a rule). The kernel's statistics
//! pass sums ‖v₀‖², ‖v₁‖² and ⟨v₀, v₁⟩ over the whole tensor first.
//!
//! Deviations: the norms and the dot product are accumulated in float64 over the whole tensor
//! (mergekit: float32 numpy), so the result is at least as accurate. SLERP has no arXiv paper;
//! its reference is Shoemake 1985.

use std::sync::Arc;

use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::Result;
use crate::exec::{Chunk, Passes};

/// The registry entry.
pub const SLERP: Method = Method {
    name: "slerp",
    reference: Reference::Other("Shoemake 1985"),
    needs_base: true,
    inputs: Inputs::One,
    statistics: Statistics::None,
    params: &[ParamSpec::required("t", Scope::Shared)],
    plan,
    oracle: |c| {
        let base = c.base.unwrap_or(&[]);
        oracle(base, &c.inputs[0], c.values.number("t").unwrap_or(f64::NAN))
    },
    goldens: Goldens::Cases(&[
        "slerp",
        "slerp_models",
        "slerp_two_slices",
        "slerp_models_permodel_t",
    ]),
};

fn plan(p: &TensorPlan<'_>) -> Result<Planned> {
    Ok(Planned {
        statistics: vec![],
        base: p.base,
        inputs: p.non_base(),
        kernel: Some(Arc::new(Slerp {
            t: p.values.number("t").unwrap_or(f64::NAN),
        })),
    })
}

/// Tolerance above which |cos Ω| falls back to linear interpolation (mergekit's value).
pub const DOT_THRESHOLD: f64 = 0.9995;
/// Norms at or below this are not divided by (mergekit's value).
pub const EPS: f64 = 1e-8;

/// Evaluated parameters of a SLERP of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Slerp {
    pub t: f64,
}

/// Sums over the whole tensor that fix the interpolation coefficients.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SlerpStats {
    pub sq0: f64,
    pub sq1: f64,
    pub dot: f64,
}

impl SlerpStats {
    /// Adds a chunk of both ends.
    pub fn add(&mut self, v0: &[f32], v1: &[f32]) {
        for (a, b) in v0.iter().zip(v1) {
            let (a, b) = (f64::from(*a), f64::from(*b));
            self.sq0 += a * a;
            self.sq1 += b * b;
            self.dot += a * b;
        }
    }

    /// Combines the sums of two parts.
    pub fn merge(self, o: SlerpStats) -> SlerpStats {
        SlerpStats {
            sq0: self.sq0 + o.sq0,
            sq1: self.sq1 + o.sq1,
            dot: self.dot + o.dot,
        }
    }
}

impl Slerp {
    /// The coefficients (s₀, s₁) with θ = s₀ v₀ + s₁ v₁.
    pub fn coefficients(&self, s: SlerpStats) -> (f64, f64) {
        let n0 = s.sq0.sqrt();
        let n1 = s.sq1.sqrt();
        let d0 = if n0 > EPS { n0 } else { 1.0 };
        let d1 = if n1 > EPS { n1 } else { 1.0 };
        let cos = (s.dot / (d0 * d1)).clamp(-1.0, 1.0);
        let t = self.t;
        if cos.abs() > DOT_THRESHOLD {
            return (1.0 - t, t);
        }
        let omega = cos.acos();
        let sin_omega = omega.sin();
        let omega_t = omega * t;
        (
            (omega - omega_t).sin() / sin_omega,
            omega_t.sin() / sin_omega,
        )
    }
}

impl Kernel for Slerp {
    /// The coefficients (s₀, s₁).
    type Stats = (f64, f64);
    const ELEMENTWISE: bool = true;

    fn stats(&self, passes: &Passes<'_>) -> Result<(f64, f64)> {
        let sums = passes
            .map(&[0], |c| {
                let mut s = SlerpStats::default();
                s.add(c.base.unwrap_or(&[]), &c.inputs[0]);
                s
            })?
            .into_iter()
            // Summed in chunk order: the same bits whatever the thread count.
            .fold(SlerpStats::default(), SlerpStats::merge);
        Ok(self.coefficients(sums))
    }

    /// Combines chunks of both ends with the coefficients.
    fn chunk(&self, coef: &(f64, f64), c: &Chunk<'_>, out: &mut [f32]) {
        let v0 = c.base.unwrap_or(&[]);
        for ((o, a), b) in out.iter_mut().zip(v0).zip(&c.inputs[0]) {
            *o = (coef.0 * f64::from(*a) + coef.1 * f64::from(*b)) as f32;
        }
    }
}

/// The float64 oracle: SLERP between `v0` (t = 0) and `v1` (t = 1), whole vectors.
pub fn oracle(v0: &[f32], v1: &[f32], t: f64) -> Vec<f64> {
    let a: Vec<f64> = v0.iter().map(|x| f64::from(*x)).collect();
    let b: Vec<f64> = v1.iter().map(|x| f64::from(*x)).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nb) = (norm(&a), norm(&b));
    let an: Vec<f64> = a
        .iter()
        .map(|x| if na > EPS { x / na } else { *x })
        .collect();
    let bn: Vec<f64> = b
        .iter()
        .map(|x| if nb > EPS { x / nb } else { *x })
        .collect();
    let dot: f64 = an
        .iter()
        .zip(&bn)
        .map(|(x, y)| x * y)
        .sum::<f64>()
        .clamp(-1.0, 1.0);
    if dot.abs() > DOT_THRESHOLD {
        return a
            .iter()
            .zip(&b)
            .map(|(x, y)| (1.0 - t) * x + t * y)
            .collect();
    }
    let theta = dot.acos();
    let s0 = (theta - theta * t).sin() / theta.sin();
    let s1 = (theta * t).sin() / theta.sin();
    a.iter().zip(&b).map(|(x, y)| s0 * x + s1 * y).collect()
}
