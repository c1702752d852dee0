//! SLERP: spherical linear interpolation (Shoemake 1985; mergekit `slerp`).
//!
//! With v₀ the base model's tensor (t = 0) and v₁ the other's (t = 1), both flattened:
//! cos Ω = ⟨v₀/‖v₀‖, v₁/‖v₁‖⟩ (a norm ≤ 1e-8 is left unnormalised). If |cos Ω| > 0.9995 the
//! vectors are nearly parallel and the result is the linear interpolation (1 − t) v₀ + t v₁;
//! otherwise θ = (sin((1 − t)Ω) / sin Ω) v₀ + (sin(tΩ) / sin Ω) v₁ (the un-normalised tensors
//! are combined, as in mergekit). t = 0 and t = 1 return the ends exactly.
//!
//! Deviations: the norms and the dot product are accumulated in float64 over the whole tensor
//! (mergekit: float32 numpy), so the result is at least as accurate.

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

    /// Combines chunks of both ends with the coefficients.
    pub fn chunk(coef: (f64, f64), v0: &[f32], v1: &[f32], out: &mut [f32]) {
        for ((o, a), b) in out.iter_mut().zip(v0).zip(v1) {
            *o = (coef.0 * f64::from(*a) + coef.1 * f64::from(*b)) as f32;
        }
    }
}
