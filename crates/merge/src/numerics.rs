//! mergekit's half-precision numerics, on request (`numerics: mergekit` in a config, or
//! `mmerge merge --numerics mergekit`).
//!
//! By default every method computes in float64 per element and rounds once to the output dtype.
//! mergekit 0.1.5 instead casts every input tensor to the config's `dtype` when it loads it and
//! runs torch CPU operations on the cast tensors; with `dtype: float16` or `bfloat16` the
//! result then differs from ours by up to a few steps of the dtype (the README's mergekit
//! section has the numbers). For users who must reproduce a published merge bit for bit, this
//! module re-does mergekit's operation sequence for `linear`, `task_arithmetic`, `ties` and
//! `slerp`, emulating each torch operation as torch's CPU kernels compute it:
//!
//! - an element-wise operation on half tensors (`a − b`, `a · b`, `a / b`, `a + b`) is done in
//!   float32 and rounded to the dtype (round to nearest even), a Python scalar operand
//!   (`λ`) entering as float32;
//! - a sum over the stacked models (`tensor.sum(dim=0)`) accumulates in float32 in model order
//!   and rounds once;
//! - `linear` and `slerp` compute in float32 internally (mergekit's own choice) and round the
//!   result once; `linear` accumulates with fused multiply-adds (torch's `addcmul_`).
//!
//! Per method, with r(·) the rounding to the dtype, x̃ = r(x) the cast inputs, and weights as
//! mergekit makes them (float32 for linear and slerp, r(w) for the task-vector methods):
//! - linear: θ = r(fma(x̃ₙ, wₙ, … fma(x̃₁, w₁, 0)) / Σ wᵢ), the division only with `normalize`;
//! - task_arithmetic / ties: τᵢ = r(x̃ᵢ − b̃), TIES keeps the k largest r-magnitudes (k as in
//!   `methods::gta`), vᵢ = r(τ̂ᵢ · r(wᵢ)), then the sign election, sums and divisions of
//!   `methods::gta` with every sum rounded once and every operation rounded, θ = r(b̃ + r(λ·δ));
//! - slerp: float32 norms, cosine, acos and sines, θ = r(s₀·x̃₀ + s₁·x̃₁) in float32.
//!
//! What is not emulated exactly: the float32 reductions of slerp's norms and dot product
//! (torch sums in vector lanes in an order of its own; we sum in float64 and round to float32,
//! so the two coefficients can differ from mergekit's in their last float32 bit, which moves a
//! rare output across a rounding boundary), and the order in which torch's unstable argsort
//! ranks TIES magnitudes that tie exactly at the threshold (we keep the lowest index, as the
//! float64 kernel does). The sums over models are emulated as torch computes them for fewer
//! than 16 models (in order; with more, torch's vectorised reduction regroups them). Methods
//! without an emulation, DARE (random masks), and TIES with `rescale` are refused.

use std::sync::Arc;

use half::{bf16, f16};
use mmerge_core::Dtype;
use mmerge_core::select::{Pass, RadixSelect};

use crate::error::{MergeError, Result};
use crate::exec::{Chunk, Passes};
use crate::methods::gta::{KeepRule, keep_count};
use crate::methods::{Kernel, MethodKind, Planned, TensorPlan};

/// How a merge computes: float64 with one rounding (the default), or as mergekit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numerics {
    #[default]
    Float64,
    Mergekit,
}

impl Numerics {
    /// Valid names, for error messages.
    pub const NAMES: &'static str = "float64, mergekit";

    /// Parses a name as configs and the command line spell it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "float64" => Some(Numerics::Float64),
            "mergekit" => Some(Numerics::Mergekit),
            _ => None,
        }
    }

    /// The name as configs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Numerics::Float64 => "float64",
            Numerics::Mergekit => "mergekit",
        }
    }
}

/// The methods with a mergekit-numerics emulation.
pub const METHODS: [MethodKind; 4] = [
    MethodKind::Linear,
    MethodKind::TaskArithmetic,
    MethodKind::Ties,
    MethodKind::Slerp,
];

/// The golden cases under `tests/fixtures/mergekit/cases` that pin these numerics (mergekit
/// computing in a half dtype; `crates/cli/tests/mergekit_numerics.rs` compares them bit for
/// bit). The float64 methods do not list them: their outputs differ by design.
pub const GOLDENS: [&str; 8] = [
    "linear_float16",
    "linear_bfloat16",
    "task_arithmetic_float16",
    "task_arithmetic_bfloat16",
    "slerp_float16",
    "slerp_bfloat16",
    "ties_float16",
    "ties_bfloat16",
];

/// Whether `numerics: mergekit` is implemented for `method`.
pub fn supports(method: MethodKind) -> bool {
    METHODS.contains(&method)
}

/// A half-precision dtype that mergekit computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    F16,
    BF16,
}

impl Half {
    /// The half dtype `d` is, if it is one.
    pub fn of(d: Dtype) -> Option<Half> {
        match d {
            Dtype::F16 => Some(Half::F16),
            Dtype::BF16 => Some(Half::BF16),
            _ => None,
        }
    }

    /// `x` rounded to the nearest value of the dtype (ties to even), as a float32.
    #[inline(always)]
    pub fn round(self, x: f32) -> f32 {
        match self {
            Half::F16 => f16::from_f32(x).to_f32(),
            Half::BF16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// The spacing of the dtype's values at `x` (its step: one unit in the last place).
    pub fn step(self, x: f32) -> f32 {
        let r = self.round(x).abs();
        let up = match self {
            Half::F16 => f16::from_bits(f16::from_f32(r).to_bits() + 1).to_f32(),
            Half::BF16 => bf16::from_bits(bf16::from_f32(r).to_bits() + 1).to_f32(),
        };
        up - r
    }
}

/// The mergekit-numerics plan of one tensor of `method` (which [`supports`] must accept),
/// computing in `half`.
pub fn plan(method: MethodKind, t: &TensorPlan<'_>, half: Half) -> Result<Planned> {
    let kernel: Arc<dyn crate::methods::DynKernel> = match method {
        MethodKind::Linear => {
            let weights: Vec<f32> = (0..t.members)
                .map(|m| t.model_number(m, "weight") as f32)
                .collect();
            let normalize = t.values.flag("normalize").unwrap_or(true);
            return Ok(Planned {
                statistics: vec![],
                base: None,
                inputs: (0..t.members).collect(),
                kernel: Some(Arc::new(Linear {
                    half,
                    denominator: normalize.then(|| sum_f32(&weights)),
                    weights,
                })),
            });
        }
        MethodKind::Slerp => Arc::new(Slerp {
            half,
            t: t.values.number("t").unwrap_or(f64::NAN) as f32,
        }),
        MethodKind::TaskArithmetic | MethodKind::Ties => {
            let ties = method == MethodKind::Ties;
            if ties && t.values.flag("rescale").unwrap_or(false) {
                return Err(MergeError::Param {
                    name: "rescale".into(),
                    key: t.key.to_string(),
                    message: "`numerics: mergekit` does not emulate TIES with `rescale: true` \
                              (torch's float16 L1 sums); use the default numerics"
                        .into(),
                });
            }
            let inputs = t.non_base();
            let lambda = t.values.number("lambda").unwrap_or(1.0);
            Arc::new(Gta {
                half,
                // mergekit builds the weight tensor in the tensors' dtype.
                weights: inputs
                    .iter()
                    .map(|&m| half.round(t.model_number(m, "weight") as f32))
                    .collect(),
                densities: if ties {
                    t.values
                        .model_numbers(inputs.iter().copied(), "density", 1.0)
                } else {
                    vec![1.0; inputs.len()]
                },
                ties,
                normalize: t.values.flag("normalize").unwrap_or(ties),
                lambda: (lambda != 1.0).then_some(lambda as f32),
            })
        }
        other => {
            return Err(MergeError::Param {
                name: "numerics".into(),
                key: t.key.to_string(),
                message: format!(
                    "`numerics: mergekit` is not implemented for merge_method `{}`",
                    other.name()
                ),
            });
        }
    };
    Ok(Planned {
        statistics: vec![],
        base: t.base,
        inputs: t.non_base(),
        kernel: Some(kernel),
    })
}

/// A float32 sum in order, from +0 (torch's reduction of a few elements).
pub fn sum_f32(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |a, v| a + v)
}

/// mergekit's linear merge: float32 fused multiply-adds of the cast inputs, one division by
/// the float32 weight sum, one rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub half: Half,
    pub weights: Vec<f32>,
    /// Σ wᵢ in float32 when normalising.
    pub denominator: Option<f32>,
}

impl Kernel for Linear {
    type Stats = ();
    const ELEMENTWISE: bool = true;

    fn stats(&self, _: &Passes<'_>) -> Result<()> {
        Ok(())
    }

    fn chunk(&self, _: &(), c: &Chunk<'_>, out: &mut [f32]) {
        let h = self.half;
        for (j, o) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (x, w) in c.inputs.iter().zip(&self.weights) {
                acc = h.round(x[j]).mul_add(*w, acc);
            }
            if let Some(d) = self.denominator {
                acc /= d;
            }
            *o = h.round(acc);
        }
    }
}

/// mergekit's task arithmetic and TIES in the half dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct Gta {
    pub half: Half,
    /// r(wᵢ), as float32.
    pub weights: Vec<f32>,
    pub densities: Vec<f64>,
    /// Magnitude sparsification and sign election (TIES).
    pub ties: bool,
    pub normalize: bool,
    /// λ as float32, when it is not 1 (mergekit skips the multiplication then).
    pub lambda: Option<f32>,
}

impl Gta {
    /// |r(r(x) − r(b))| of every element of a chunk, per input: the magnitudes TIES ranks.
    fn magnitudes(&self, c: &Chunk<'_>) -> Vec<Vec<f32>> {
        let h = self.half;
        let b = c.base.unwrap_or(&[]);
        c.inputs
            .iter()
            .map(|x| {
                x.iter()
                    .zip(b)
                    .map(|(x, b)| h.round(h.round(*x) - h.round(*b)).abs())
                    .collect()
            })
            .collect()
    }
}

impl Kernel for Gta {
    /// Per input, per chunk: which entries survive.
    type Stats = Vec<Vec<KeepRule>>;

    fn stats(&self, passes: &Passes<'_>) -> Result<Self::Stats> {
        let n_chunks = passes.n_chunks();
        let numel = passes.numel();
        if !self.ties {
            return Ok(vec![vec![KeepRule::ALL; n_chunks]; self.weights.len()]);
        }
        let ks: Vec<u64> = self
            .densities
            .iter()
            .map(|d| keep_count(*d, numel))
            .collect();
        let mut rules: Vec<Vec<KeepRule>> = ks
            .iter()
            .map(|&k| {
                vec![
                    if k == 0 {
                        KeepRule::NONE
                    } else {
                        KeepRule::ALL
                    };
                    n_chunks
                ]
            })
            .collect();
        let active: Vec<usize> = (0..ks.len())
            .filter(|&i| ks[i] > 0 && ks[i] < numel as u64)
            .collect();
        if active.is_empty() {
            return Ok(rules);
        }
        // Exact k-th largest magnitude of each active input: two radix passes.
        let mut sels: Vec<RadixSelect> = active.iter().map(|&i| RadixSelect::new(ks[i])).collect();
        while sels.iter().any(|s| s.pass() != Pass::Done) {
            let parts = passes.fold_runs(
                &active,
                || sels.iter().map(RadixSelect::fork).collect::<Vec<_>>(),
                |f, c| {
                    for (s, m) in f.iter_mut().zip(self.magnitudes(c)) {
                        s.observe(&m);
                    }
                },
            )?;
            for p in &parts {
                sels.iter_mut().zip(p).for_each(|(a, b)| a.merge(b));
            }
            sels.iter_mut().for_each(RadixSelect::end_pass);
        }
        let thresholds: Vec<_> = sels.iter().map(RadixSelect::result).collect();
        // Entries equal to the threshold are kept lowest index first: count them per chunk.
        let equal: Vec<Vec<u64>> = passes.map(&active, |c| {
            self.magnitudes(c)
                .iter()
                .zip(&thresholds)
                .map(|(m, th)| {
                    th.map_or(0, |th| m.iter().filter(|v| **v == th.value).count() as u64)
                })
                .collect()
        })?;
        for (a, (&i, th)) in active.iter().zip(&thresholds).enumerate() {
            let Some(th) = th else { continue };
            let mut before = 0u64;
            let wanted = ks[i] - th.greater;
            for (rule, counts) in rules[i].iter_mut().zip(&equal) {
                let e = counts[a];
                *rule = KeepRule {
                    value: th.value,
                    ties_left: wanted.saturating_sub(before).min(e),
                    keep_all: false,
                    keep_none: false,
                };
                before += e;
            }
        }
        Ok(rules)
    }

    fn chunk(&self, rules: &Self::Stats, c: &Chunk<'_>, out: &mut [f32]) {
        let h = self.half;
        let b = c.base.unwrap_or(&[]);
        let n = self.weights.len();
        let mut ties_left: Vec<u64> = rules.iter().map(|r| r[c.index].ties_left).collect();
        let mut v = vec![0f32; n];
        // |divisor| < 1e-8 compares in the dtype: r(1e-8) (0 in float16).
        let tiny = h.round(1e-8);
        for (j, o) in out.iter_mut().enumerate() {
            let base = h.round(b[j]);
            for (i, vi) in v.iter_mut().enumerate() {
                let tau = h.round(h.round(c.inputs[i][j]) - base);
                let rule = &rules[i][c.index];
                let keep = rule.keep_all
                    || (!rule.keep_none
                        && (tau.abs() > rule.value
                            || (tau.abs() == rule.value && ties_left[i] > 0 && {
                                ties_left[i] -= 1;
                                true
                            })));
                // τ · mask in the dtype (exact), then · r(w), rounded.
                let kept = if keep { tau } else { tau * 0.0 };
                *vi = h.round(kept * self.weights[i]);
            }
            let (mixed, divisor) = if self.ties {
                let sign_sum = h.round(sum_f32(&v));
                let majority = if sign_sum >= 0.0 { 1.0 } else { -1.0 };
                let (mut mixed, mut divisor) = (0f32, 0f32);
                for (vi, w) in v.iter().zip(&self.weights) {
                    let sign = if *vi > 0.0 {
                        1.0
                    } else if *vi < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    let m = if sign == majority { 1.0 } else { 0.0 };
                    mixed += vi * m;
                    divisor += w * m;
                }
                let divisor = h.round(divisor);
                (h.round(mixed), if divisor == 0.0 { 1.0 } else { divisor })
            } else {
                let divisor = h.round(sum_f32(&self.weights));
                (
                    h.round(sum_f32(&v)),
                    if divisor.abs() < tiny { 1.0 } else { divisor },
                )
            };
            let mut delta = mixed;
            if self.normalize {
                delta = h.round(delta / divisor);
            }
            if let Some(l) = self.lambda {
                delta = h.round(delta * l);
            }
            *o = h.round(base + delta);
        }
    }
}

/// mergekit's SLERP of half inputs: float32 throughout, one rounding of the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Slerp {
    pub half: Half,
    /// t as float32.
    pub t: f32,
}

/// Norms at or below this are not divided by (mergekit's value, compared in float32).
const EPS: f32 = 1e-8;
/// |cos Ω| above this interpolates linearly (mergekit's value, compared in float32).
const DOT_THRESHOLD: f32 = 0.9995;

impl Slerp {
    /// (s₀, s₁) from the float32 norms and cosine, with float32 operations as mergekit's.
    pub fn coefficients(&self, dot: f32) -> (f32, f32) {
        let t = self.t;
        let dot = dot.clamp(-1.0, 1.0);
        if dot.abs() > DOT_THRESHOLD {
            return (1.0 - t, t);
        }
        let theta = dot.acos();
        let sin_theta = theta.sin();
        (
            ((1.0 - t) * theta).sin() / sin_theta,
            (t * theta).sin() / sin_theta,
        )
    }
}

impl Kernel for Slerp {
    type Stats = (f32, f32);
    const ELEMENTWISE: bool = true;

    fn stats(&self, passes: &Passes<'_>) -> Result<(f32, f32)> {
        let h = self.half;
        // Norms: float64 sums (in chunk order) rounded to float32 (torch: float32 lanes).
        let sq = passes
            .map(&[0], |c| {
                let a = c.base.unwrap_or(&[]);
                a.iter()
                    .zip(&c.inputs[0])
                    .fold((0f64, 0f64), |(s0, s1), (x, y)| {
                        let (x, y) = (f64::from(h.round(*x)), f64::from(h.round(*y)));
                        (s0 + x * x, s1 + y * y)
                    })
            })?
            .into_iter()
            .fold((0f64, 0f64), |a, s| (a.0 + s.0, a.1 + s.1));
        let norm = |s: f64| {
            let n = s.sqrt() as f32;
            if n > EPS { n } else { 1.0 }
        };
        let (n0, n1) = (norm(sq.0), norm(sq.1));
        // cos Ω = Σ r32(x/‖x‖) · r32(y/‖y‖): float32 quotients and products, float64 sum.
        let dot = passes
            .map(&[0], |c| {
                let a = c.base.unwrap_or(&[]);
                a.iter().zip(&c.inputs[0]).fold(0f64, |s, (x, y)| {
                    let p = (h.round(*x) / n0) * (h.round(*y) / n1);
                    s + f64::from(p)
                })
            })?
            .into_iter()
            .sum::<f64>() as f32;
        Ok(self.coefficients(dot))
    }

    fn chunk(&self, coef: &(f32, f32), c: &Chunk<'_>, out: &mut [f32]) {
        let h = self.half;
        let a = c.base.unwrap_or(&[]);
        for ((o, x), y) in out.iter_mut().zip(a).zip(&c.inputs[0]) {
            *o = h.round(coef.0 * h.round(*x) + coef.1 * h.round(*y));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_and_steps_are_the_dtypes() {
        // 1 + 2⁻¹¹ is halfway between float16 neighbours 1 and 1 + 2⁻¹⁰: even (1) wins.
        assert_eq!(Half::F16.round(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(
            Half::F16.round(1.0 + 3.0 * 2f32.powi(-11)),
            1.0 + 2.0 * 2f32.powi(-10)
        );
        assert_eq!(Half::BF16.round(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            Half::BF16.round(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2.0 * 2f32.powi(-7)
        );
        assert_eq!(Half::F16.step(1.0), 2f32.powi(-10));
        assert_eq!(Half::BF16.step(-1.5), 2f32.powi(-7));
        assert_eq!(Half::F16.step(0.0), 2f32.powi(-24));
    }

    #[test]
    fn names_round_trip() {
        for n in [Numerics::Float64, Numerics::Mergekit] {
            assert_eq!(Numerics::from_name(n.name()), Some(n));
        }
        assert_eq!(Numerics::from_name("f16"), None);
        assert!(supports(MethodKind::Ties) && !supports(MethodKind::DareTies));
    }

    #[test]
    fn slerp_ends_are_exact() {
        let s = Slerp {
            half: Half::F16,
            t: 0.0,
        };
        assert_eq!(s.coefficients(0.3), (1.0, 0.0));
        let s = Slerp {
            half: Half::F16,
            t: 1.0,
        };
        assert_eq!(s.coefficients(0.3), (0.0, 1.0));
    }
}
