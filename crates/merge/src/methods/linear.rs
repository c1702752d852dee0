//! Linear merging (model soups, arXiv 2203.05482; mergekit `linear`).
//!
//! θ = Σᵢ wᵢ θᵢ / Σᵢ wᵢ with `normalize: true` (the default), or Σᵢ wᵢ θᵢ without. Interpolation
//! between two models is the special case w = (1 − α, α).
//!
//! Deviation from mergekit: we compute in float64 per element and round once to the output
//! dtype; mergekit computes in the config's `dtype` (so bf16 configs round at every step).

/// Evaluated parameters of a linear merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub weights: Vec<f64>,
    pub normalize: bool,
}

impl Linear {
    /// Merges element-aligned chunks of the inputs into `out`.
    pub fn chunk(&self, inputs: &[Vec<f32>], out: &mut [f32]) {
        let scale = if self.normalize {
            1.0 / self.weights.iter().sum::<f64>()
        } else {
            1.0
        };
        for (j, o) in out.iter_mut().enumerate() {
            let mut acc = 0f64;
            for (x, w) in inputs.iter().zip(&self.weights) {
                acc += w * f64::from(x[j]);
            }
            *o = (acc * scale) as f32;
        }
    }
}
