//! Task-vector merging: task arithmetic, TIES and DARE, as one kernel (mergekit's
//! "generalized task arithmetic").
//!
//! With base θ₀ and inputs θᵢ, task vectors τᵢ = θᵢ − θ₀ and weights wᵢ:
//! 1. **Sparsify** each τᵢ to τ̂ᵢ:
//!    - none (task arithmetic, arXiv 2212.04089);
//!    - magnitude (TIES, arXiv 2306.01708): keep the k = max(1, ⌊densityᵢ · numel⌋) entries of
//!      largest |τᵢ| in this tensor (all for density ≥ 1, none for density ≤ 0);
//!    - random (DARE, arXiv 2311.03099): keep each entry with probability densityᵢ.
//!
//!    With `rescale`, a sparsified τ̂ᵢ is multiplied by ‖τᵢ‖₁ / ‖τ̂ᵢ‖₁ (left as is when either
//!    norm is below 1e-7): mergekit's rule, which matches 1/density in expectation.
//! 2. **Elect signs** (TIES and DARE-TIES): γ = sign(Σᵢ wᵢ τ̂ᵢ), with +1 where the sum is 0;
//!    mᵢ = [sign(wᵢ τ̂ᵢ) = γ] (zeros never agree). Without election mᵢ = 1.
//! 3. **Combine**: δ = Σᵢ wᵢ τ̂ᵢ mᵢ; with `normalize`, δ /= Σᵢ wᵢ mᵢ (a zero divisor, or one below
//!    1e-8 in magnitude without election, counts as 1).
//! 4. θ = θ₀ + λ δ.
//!
//! Defaults follow mergekit 0.1.5: `normalize` is true for TIES only; `rescale` is true for
//! DARE and false for TIES; λ = 1.
//!
//! Deviations from mergekit: float64 arithmetic per element and one rounding at the end
//! (mergekit computes in the loaded dtype, bf16 included); TIES ties in |τ| at the threshold
//! are broken by lowest index (mergekit's argsort order is unspecified); DARE draws its mask from
//! a seeded per-element hash (`methods::uniform`) instead of torch's global RNG, so masks are
//! reproducible across thread counts but differ from mergekit's.

/// How task vectors are sparsified before they are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparsify {
    None,
    Magnitude,
    Random,
}

/// Evaluated parameters of a task-vector merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Gta {
    pub weights: Vec<f64>,
    pub densities: Vec<f64>,
    pub sparsify: Sparsify,
    pub rescale: bool,
    pub elect_sign: bool,
    pub normalize: bool,
    pub lambda: f64,
}

/// Which entries of one input's task vector survive magnitude sparsification within a chunk:
/// |τ| > `value`, or |τ| = `value` among the first `ties_left` such entries of the chunk (the
/// executor gives each chunk its share, so the lowest-index ties are kept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepRule {
    pub value: f32,
    pub ties_left: u64,
    pub keep_all: bool,
    pub keep_none: bool,
}

impl KeepRule {
    /// Keeps every entry.
    pub const ALL: KeepRule = KeepRule {
        value: 0.0,
        ties_left: 0,
        keep_all: true,
        keep_none: false,
    };
    /// Keeps no entry.
    pub const NONE: KeepRule = KeepRule {
        value: 0.0,
        ties_left: 0,
        keep_all: false,
        keep_none: true,
    };
}

/// What one input contributes to a chunk: its magnitude rule, its DARE random stream, and its
/// L1 rescale factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputRule {
    pub keep: KeepRule,
    pub stream: u64,
    pub scale: f64,
}

/// Number of entries magnitude sparsification keeps: all for density ≥ 1, none for density ≤ 0,
/// else mergekit's `max(1, int(density * numel))`.
pub fn keep_count(density: f64, numel: usize) -> u64 {
    if density >= 1.0 {
        numel as u64
    } else if density <= 0.0 {
        0
    } else {
        ((density * numel as f64).floor() as u64).max(1)
    }
}

/// mergekit's L1 rescale factor ‖τ‖₁ / ‖τ̂‖₁, or 1 when either norm is below 1e-7.
pub fn l1_scale(full: f64, kept: f64) -> f64 {
    if full < 1e-7 || kept < 1e-7 {
        1.0
    } else {
        full / kept
    }
}

impl Gta {
    /// τ̂ of input `i` over a chunk (`first` = index of its first element), before rescaling.
    /// Returns (‖τ‖₁, ‖τ̂‖₁) of the chunk.
    pub fn sparsified(
        &self,
        i: usize,
        first: usize,
        base: &[f32],
        x: &[f32],
        rule: &InputRule,
        out: &mut [f64],
    ) -> (f64, f64) {
        let mut ties_left = rule.keep.ties_left;
        let (mut full, mut kept) = (0f64, 0f64);
        let p = self.densities[i];
        for (j, o) in out.iter_mut().enumerate() {
            let d = f64::from(x[j]) - f64::from(base[j]);
            let keep = match self.sparsify {
                Sparsify::None => true,
                Sparsify::Magnitude => {
                    let k = &rule.keep;
                    let mag = (x[j] - base[j]).abs();
                    k.keep_all
                        || (!k.keep_none
                            && (mag > k.value
                                || (mag == k.value && ties_left > 0 && {
                                    ties_left -= 1;
                                    true
                                })))
                }
                Sparsify::Random => p >= 1.0 || super::uniform(rule.stream, (first + j) as u64) < p,
            };
            full += d.abs();
            *o = if keep { d } else { 0.0 };
            kept += o.abs();
        }
        (full, kept)
    }

    /// Merges a chunk: `base` and `inputs[i]` hold the same elements, `first` is the index of the
    /// chunk's first element, `rules[i]` says how input i is sparsified and rescaled.
    pub fn chunk(
        &self,
        first: usize,
        base: &[f32],
        inputs: &[Vec<f32>],
        rules: &[InputRule],
        out: &mut [f32],
    ) {
        // Struct-of-arrays passes over the chunk (input by input, element by element), so the
        // inner loops are branch-free and vectorise; per element, inputs are still summed in
        // input order, as the oracle does.
        let len = out.len();
        let mut wds: Vec<Vec<f64>> = Vec::with_capacity(inputs.len());
        let mut total = vec![0f64; len];
        for (i, x) in inputs.iter().enumerate() {
            let mut wd = vec![0f64; len];
            self.sparsified(i, first, base, x, &rules[i], &mut wd);
            let s = rules[i].scale * self.weights[i];
            wd.iter_mut().for_each(|t| *t *= s);
            total.iter_mut().zip(&wd).for_each(|(a, v)| *a += v);
            wds.push(wd);
        }
        let (mixed, divisor) = if self.elect_sign {
            // γ = +1 where the sum is ≥ 0; an entry agrees when v·γ > 0 (zeros never do).
            let gamma: Vec<f64> = total
                .iter()
                .map(|t| if *t >= 0.0 { 1.0 } else { -1.0 })
                .collect();
            let mut mixed = vec![0f64; len];
            let mut divisor = vec![0f64; len];
            for (wd, w) in wds.iter().zip(&self.weights) {
                for j in 0..len {
                    let agree = wd[j] * gamma[j] > 0.0;
                    mixed[j] += if agree { wd[j] } else { 0.0 };
                    divisor[j] += if agree { *w } else { 0.0 };
                }
            }
            divisor.iter_mut().for_each(|d| {
                if *d == 0.0 {
                    *d = 1.0
                }
            });
            (mixed, divisor)
        } else {
            let d: f64 = self.weights.iter().sum();
            (total, vec![if d.abs() < 1e-8 { 1.0 } else { d }; len])
        };
        for j in 0..len {
            let delta = if self.normalize {
                mixed[j] / divisor[j]
            } else {
                mixed[j]
            };
            out[j] = (f64::from(base[j]) + self.lambda * delta) as f32;
        }
    }
}
