//! Task-vector merging: task arithmetic, TIES, DARE, Model Breadcrumbs and DELLA, as one
//! kernel (mergekit's "generalized task arithmetic").
//!
//! With base θ₀ and inputs θᵢ, task vectors τᵢ = θᵢ − θ₀ and weights wᵢ:
//! 1. **Sparsify** each τᵢ to τ̂ᵢ (n = numel; all entries survive for densityᵢ ≥ 1):
//!    - none (task arithmetic, arXiv 2212.04089);
//!    - magnitude (TIES, arXiv 2306.01708): keep the k = max(1, ⌊densityᵢ · n⌋) entries of
//!      largest |τᵢ| in this tensor (none for density ≤ 0);
//!    - random (DARE, arXiv 2311.03099): keep each entry with probability densityᵢ;
//!    - magnitude outliers (Model Breadcrumbs, arXiv 2312.06795): with target = ⌊densityᵢ · n⌋,
//!      top = ⌊gammaᵢ · n⌋ and bottom = max(0, n − target − top), rank |τᵢ| ascending and keep
//!      the ranks [bottom, bottom + target): the smallest entries and the top largest ones
//!      (the outliers) go;
//!    - rank-dependent random (DELLA's MagPrune, arXiv 2406.11617): within each line of τᵢ
//!      along its second axis (a tensor of fewer axes is one line), the entry of ascending
//!      |τᵢ| rank q among m is kept with probability pᵢ = densityᵢ − εᵢ + 2εᵢ · q/(m − 1), so
//!      large entries survive more often (none survive for density ≤ 0).
//!
//!    With `rescale`, a sparsified τ̂ᵢ is multiplied by ‖τᵢ‖₁ / ‖τ̂ᵢ‖₁ (left as is when either
//!    norm is below 1e-7): mergekit's rule, which matches 1/density in expectation.
//! 2. **Elect signs** (TIES, DARE-TIES, `breadcrumbs_ties`, `della`): γ = sign(Σᵢ wᵢ τ̂ᵢ), with
//!    +1 where the sum is 0; mᵢ = [sign(wᵢ τ̂ᵢ) = γ] (zeros never agree). Without election mᵢ = 1.
//! 3. **Combine**: δ = Σᵢ wᵢ τ̂ᵢ mᵢ; with `normalize`, δ /= Σᵢ wᵢ mᵢ (a zero divisor, or one below
//!    1e-8 in magnitude without election, counts as 1).
//! 4. θ = θ₀ + λ δ.
//!
//! Eight registered methods are this one kernel with different steps and defaults (mergekit's
//! "generalized task arithmetic"): `task_arithmetic` (no sparsification, no election),
//! `ties` (magnitude, election), `dare_linear` (random, no election), `dare_ties` (random,
//! election), `breadcrumbs` (magnitude outliers, no election), `breadcrumbs_ties` (magnitude
//! outliers, election), `della_linear` (rank-dependent random, no election) and `della`
//! (rank-dependent random, election). Parameters: `weight` (per input but the base, required),
//! `density` (per input but the base, default 1, in [0, 1]; not for task arithmetic), `gamma`
//! (Breadcrumbs, per input but the base, default 0.01, in [0, 1]), `epsilon` (DELLA, per input
//! but the base, default 0.15, in [0, 0.5]; mergekit refuses, and so do we, an ε that puts
//! density ± ε outside (0, 1) when 0 < density < 1), shared `normalize`, `lambda` (default 1),
//! `rescale` and `int8_mask` (accepted; it changes only mergekit's mask dtype). Defaults follow
//! mergekit 0.1.5: `normalize` is true for TIES and `della` only; `rescale` is true for DARE and
//! DELLA and false for TIES and Breadcrumbs.
//!
//! Statistics passes: TIES finds each input's exact top-k threshold of |τ| with a radix select
//! over the f32 bit patterns (`mmerge_core::select`), plus a counting pass when entries tie at
//! it; Breadcrumbs finds two such thresholds (the band's two ends, as top-k counts n − bottom
//! and n − bottom − target). DELLA reads the tensor once in whole slabs (one index of the first
//! axis: a row of a matrix) to sum its norms and keep the masks of the slabs that cross a chunk
//! boundary; the merge pass ranks the other slabs itself (`methods::sparsify`). A rescaled
//! TIES, DARE or Breadcrumbs sums ‖τ‖₁ and ‖τ̂‖₁ over the whole tensor.
//!
//! Deviations from mergekit: float64 arithmetic per element and one rounding at the end
//! (mergekit computes in the loaded dtype, bf16 included); ties in |τ| are broken by index
//! (mergekit's sort order of equal magnitudes is unspecified): TIES and Breadcrumbs rank equal
//! magnitudes lowest index first in descending order, DELLA lowest index first in ascending
//! order; DARE and DELLA draw their masks from a seeded per-element hash (`methods::uniform`)
//! instead of torch's global RNG, so masks are reproducible across thread counts but differ from
//! mergekit's (hence no DARE or DELLA golden); a DELLA line of one entry (a one-column matrix)
//! is kept with probability density, where mergekit's rank normalisation divides 0 by 0 and
//! torch refuses the NaN probability; a tensor of fewer than two axes is one DELLA line and is
//! read whole in its statistics pass (norm gains and biases are small); `gamma` and `epsilon`
//! are refused outside [0, 1] and [0, 0.5] (mergekit takes any number; an ε of 0.5 or more
//! always fails its own check for a density strictly inside (0, 1), a negative one would favour
//! small entries).

use std::sync::Arc;

use super::linear::RUN;
use super::sparsify::{
    DellaDraw, DellaInput, Lines, band_counts, band_mask, della_chunk, della_pass, keep_rules,
};
pub use super::sparsify::{KeepRule, keep_count, sample_runs};
use super::{
    Goldens, Inputs, Kernel, Kind, Method, OracleCase, ParamSpec, Planned, Reference, Scope,
    Statistics, TensorPlan, Values,
};
use crate::error::{MergeError, Result};
use crate::exec::{Chunk, Passes};

const DENSITY: ParamSpec = ParamSpec {
    name: "density",
    scope: Scope::NonBase,
    kind: Kind::Number {
        default: Some(1.0),
        required: false,
        range: Some((0.0, 1.0)),
    },
};
const LAMBDA: ParamSpec = ParamSpec {
    name: "lambda",
    scope: Scope::Shared,
    kind: Kind::Number {
        default: Some(1.0),
        required: false,
        range: None,
    },
};
const WEIGHT: ParamSpec = ParamSpec::weight(Scope::NonBase);
/// The parameters of a sparsifying method, with its `normalize` and `rescale` defaults.
const fn sparsified_params(normalize: bool, rescale: bool) -> [ParamSpec; 6] {
    [
        WEIGHT,
        DENSITY,
        ParamSpec::flag("normalize", normalize),
        LAMBDA,
        ParamSpec::flag("int8_mask", false),
        ParamSpec::flag("rescale", rescale),
    ]
}
const DARE_GOLDENS: Goldens = Goldens::Unreproducible(
    "mergekit draws DARE's mask from torch's global RNG; ours is a seeded per-element hash",
);
/// Breadcrumbs' share of largest |τ| dropped as outliers (mergekit's default 0.01).
const GAMMA: ParamSpec = ParamSpec::number("gamma", Scope::NonBase, 0.01, 1.0);
/// DELLA's spread of keep probabilities around the density (mergekit's default 0.15).
const EPSILON: ParamSpec = ParamSpec::number("epsilon", Scope::NonBase, 0.15, 0.5);
/// [`sparsified_params`] with one more per-model parameter after `density`.
const fn sparsified_params_with(
    normalize: bool,
    rescale: bool,
    extra: ParamSpec,
) -> [ParamSpec; 7] {
    let p = sparsified_params(normalize, rescale);
    [p[0], p[1], extra, p[2], p[3], p[4], p[5]]
}
const DELLA_GOLDENS: Goldens = Goldens::Unreproducible(
    "mergekit draws DELLA's mask with torch.bernoulli from torch's global RNG; ours is a seeded \
     per-element hash",
);

/// Task arithmetic (arXiv 2212.04089).
pub const TASK_ARITHMETIC: Method = Method {
    name: "task_arithmetic",
    reference: Reference::Arxiv("2212.04089"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &[WEIGHT, ParamSpec::flag("normalize", false), LAMBDA],
    plan: |t| plan(t, Sparsify::None, false),
    oracle: |c| oracle_case(c, Sparsify::None, false),
    goldens: Goldens::Cases(&["task_arithmetic", "task_arithmetic_normalize"]),
};

/// TIES-merging (arXiv 2306.01708).
pub const TIES: Method = Method {
    name: "ties",
    reference: Reference::Arxiv("2306.01708"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &sparsified_params(true, false),
    plan: |t| plan(t, Sparsify::Magnitude, true),
    oracle: |c| oracle_case(c, Sparsify::Magnitude, true),
    goldens: Goldens::Cases(&["ties", "ties_gradient"]),
};

/// DARE with linear combination (arXiv 2311.03099).
pub const DARE_LINEAR: Method = Method {
    name: "dare_linear",
    reference: Reference::Arxiv("2311.03099"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &sparsified_params(false, true),
    plan: |t| plan(t, Sparsify::Random, false),
    oracle: |c| oracle_case(c, Sparsify::Random, false),
    goldens: DARE_GOLDENS,
};

/// DARE with TIES' sign election (arXiv 2311.03099).
pub const DARE_TIES: Method = Method {
    name: "dare_ties",
    reference: Reference::Arxiv("2311.03099"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &sparsified_params(false, true),
    plan: |t| plan(t, Sparsify::Random, true),
    oracle: |c| oracle_case(c, Sparsify::Random, true),
    goldens: DARE_GOLDENS,
};

/// Model Breadcrumbs (arXiv 2312.06795).
pub const BREADCRUMBS: Method = Method {
    name: "breadcrumbs",
    reference: Reference::Arxiv("2312.06795"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &sparsified_params_with(false, false, GAMMA),
    plan: |t| plan(t, Sparsify::Band, false),
    oracle: |c| oracle_case(c, Sparsify::Band, false),
    goldens: Goldens::Cases(&["breadcrumbs"]),
};

/// Model Breadcrumbs with TIES' sign election (arXiv 2312.06795).
pub const BREADCRUMBS_TIES: Method = Method {
    name: "breadcrumbs_ties",
    reference: Reference::Arxiv("2312.06795"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &sparsified_params_with(false, false, GAMMA),
    plan: |t| plan(t, Sparsify::Band, true),
    oracle: |c| oracle_case(c, Sparsify::Band, true),
    goldens: Goldens::Cases(&["breadcrumbs_ties"]),
};

/// DELLA with TIES' sign election (arXiv 2406.11617).
pub const DELLA: Method = Method {
    name: "della",
    reference: Reference::Arxiv("2406.11617"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &sparsified_params_with(true, true, EPSILON),
    plan: |t| plan(t, Sparsify::Della, true),
    oracle: |c| oracle_case(c, Sparsify::Della, true),
    goldens: DELLA_GOLDENS,
};

/// DELLA with linear combination (arXiv 2406.11617).
pub const DELLA_LINEAR: Method = Method {
    name: "della_linear",
    reference: Reference::Arxiv("2406.11617"),
    needs_base: true,
    inputs: Inputs::Many,
    statistics: Statistics::None,
    params: &sparsified_params_with(false, true, EPSILON),
    plan: |t| plan(t, Sparsify::Della, false),
    oracle: |c| oracle_case(c, Sparsify::Della, false),
    goldens: DELLA_GOLDENS,
};

fn plan(t: &TensorPlan<'_>, sparsify: Sparsify, elect_sign: bool) -> Result<Planned> {
    let inputs = t.non_base();
    let p = Gta::new(&t.values, &inputs, t.shape, sparsify, elect_sign);
    if sparsify == Sparsify::Della {
        // mergekit refuses a DELLA probability range that leaves (0, 1) for a density that
        // sparsifies at all.
        for (k, (&d, &e)) in p.densities.iter().zip(&p.epsilons).enumerate() {
            if d > 0.0 && d < 1.0 && (d + e >= 1.0 || d - e <= 0.0) {
                return Err(MergeError::Param {
                    name: "epsilon".into(),
                    key: t.key.into(),
                    message: format!(
                        "density ± epsilon must stay inside (0, 1); model {} has density {d} \
                         and epsilon {e}",
                        inputs[k]
                    ),
                });
            }
        }
    }
    Ok(Planned {
        statistics: vec![],
        base: t.base,
        kernel: Some(Arc::new(p)),
        inputs,
    })
}

fn oracle_case(c: &OracleCase<'_>, sparsify: Sparsify, elect_sign: bool) -> Vec<f64> {
    let models: Vec<usize> = (0..c.inputs.len()).collect();
    let p = Gta::new(c.values, &models, c.shape, sparsify, elect_sign);
    oracle(&p, c.tensor, c.seed, c.base.unwrap_or(&[]), c.inputs)
}

/// How task vectors are sparsified before they are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparsify {
    None,
    /// Top-k of |τ| (TIES).
    Magnitude,
    /// Bernoulli with the density (DARE).
    Random,
    /// A band of |τ| ranks below the outliers (Model Breadcrumbs, mergekit's
    /// `magnitude_outliers`).
    Band,
    /// Bernoulli with rank-dependent probabilities per row (DELLA, mergekit's
    /// `della_magprune`).
    Della,
}

/// Evaluated parameters of a task-vector merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Gta {
    pub weights: Vec<f64>,
    pub densities: Vec<f64>,
    /// Breadcrumbs' per-input `gamma` (empty for the other sparsifications).
    pub gammas: Vec<f64>,
    /// DELLA's per-input `epsilon` (empty for the other sparsifications).
    pub epsilons: Vec<f64>,
    /// The tensor's shape (DELLA ranks along its second axis).
    pub shape: Vec<usize>,
    pub sparsify: Sparsify,
    pub rescale: bool,
    pub elect_sign: bool,
    pub normalize: bool,
    pub lambda: f64,
}

/// What one input contributes to a chunk: its magnitude rule (and Breadcrumbs' outlier rule
/// `drop`), its DARE/DELLA random stream, and its L1 rescale factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputRule {
    pub keep: KeepRule,
    pub drop: KeepRule,
    pub stream: u64,
    pub scale: f64,
}

/// What the statistics passes find for one tensor: `rules[i][c]` says how input i is
/// sparsified and rescaled in chunk c; `della[i]` holds DELLA's straddling masks of input i.
#[derive(Debug)]
pub struct GtaStats {
    pub rules: Vec<Vec<InputRule>>,
    pub della: Vec<Option<DellaInput>>,
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
    /// The parameters of one tensor of `shape` from its evaluated values: the per-model ones of
    /// `models` (the merged inputs, in order), the shared `rescale`, `normalize` and `lambda`
    /// (their defaults are the method's, filled in by the planner).
    pub fn new(
        values: &Values,
        models: &[usize],
        shape: &[usize],
        sparsify: Sparsify,
        elect_sign: bool,
    ) -> Self {
        let per_model = |name, default, used| {
            if used {
                values.model_numbers(models.iter().copied(), name, default)
            } else {
                vec![]
            }
        };
        Gta {
            weights: per_model("weight", f64::NAN, true),
            densities: per_model("density", 1.0, true),
            gammas: per_model("gamma", 0.01, sparsify == Sparsify::Band),
            epsilons: per_model("epsilon", 0.15, sparsify == Sparsify::Della),
            shape: shape.to_vec(),
            sparsify,
            rescale: values.flag("rescale").unwrap_or(false),
            elect_sign,
            normalize: values.flag("normalize").unwrap_or(false),
            lambda: values.number("lambda").unwrap_or(1.0),
        }
    }

    /// τ̂ of input `i` over a chunk (`first` = index of its first element), before rescaling.
    /// `mask`: the chunk's keep mask of a Breadcrumbs or DELLA input (`None`: keep all).
    /// Returns (‖τ‖₁, ‖τ̂‖₁) of the chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn sparsified(
        &self,
        i: usize,
        first: usize,
        base: &[f32],
        x: &[f32],
        rule: &InputRule,
        mask: Option<&[bool]>,
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
                Sparsify::Band | Sparsify::Della => mask.is_none_or(|m| m[j]),
            };
            full += d.abs();
            *o = if keep { d } else { 0.0 };
            kept += o.abs();
        }
        (full, kept)
    }

    /// Merges a chunk: `base` and `inputs[i]` hold the same elements, `first` is the index of the
    /// chunk's first element, `rules[i]` says how input i is sparsified and rescaled (its
    /// `ties_left` counts down as threshold ties are kept), `masks[i]` is the chunk's keep mask
    /// of a Breadcrumbs or DELLA input (`None`: keep all).
    ///
    /// Per element the same float64 operations as the oracle, inputs summed in input order; laid
    /// out input by input over runs of [`RUN`] elements (temporaries on the stack) so that the
    /// loops are branch-free and vectorise.
    pub fn merge_chunk(
        &self,
        first: usize,
        base: &[f32],
        inputs: &[Vec<f32>],
        rules: &mut [InputRule],
        masks: &[Option<Vec<bool>>],
        out: &mut [f32],
    ) {
        let mut wds = vec![0f64; inputs.len() * RUN];
        mmerge_core::simd::fast(
            #[inline(always)]
            || {
                for (r, o) in out.chunks_mut(RUN).enumerate() {
                    let (at, len) = (r * RUN, o.len());
                    let b = &base[at..at + len];
                    let mut total = [0f64; RUN];
                    let total = &mut total[..len];
                    for (i, wd) in wds.chunks_exact_mut(RUN).enumerate() {
                        let wd = &mut wd[..len];
                        let x = &inputs[i][at..at + len];
                        let mask = masks[i].as_deref().map(|m| &m[at..at + len]);
                        self.sparsify_run(i, first + at, b, x, &mut rules[i], mask, wd);
                        let s = rules[i].scale * self.weights[i];
                        for (t, v) in total.iter_mut().zip(wd.iter_mut()) {
                            *v *= s;
                            *t += *v;
                        }
                    }
                    let mut mixed = [0f64; RUN];
                    let mut divisor = [0f64; RUN];
                    let (mixed, divisor) = (&mut mixed[..len], &mut divisor[..len]);
                    if self.elect_sign {
                        // γ = +1 where the sum is ≥ 0; an entry agrees when v·γ > 0 (zeros never do).
                        let mut gamma = [0f64; RUN];
                        for (g, t) in gamma.iter_mut().zip(total.iter()) {
                            *g = if *t >= 0.0 { 1.0 } else { -1.0 };
                        }
                        for (wd, &w) in wds.chunks_exact(RUN).zip(&self.weights) {
                            for (((mx, dv), &v), &g) in mixed
                                .iter_mut()
                                .zip(divisor.iter_mut())
                                .zip(&wd[..len])
                                .zip(&gamma)
                            {
                                let agree = v * g > 0.0;
                                *mx += if agree { v } else { 0.0 };
                                *dv += if agree { w } else { 0.0 };
                            }
                        }
                        for d in divisor.iter_mut() {
                            *d = if *d == 0.0 { 1.0 } else { *d };
                        }
                    } else {
                        let d: f64 = self.weights.iter().sum();
                        mixed.copy_from_slice(total);
                        divisor.fill(if d.abs() < 1e-8 { 1.0 } else { d });
                    }
                    for (((o, &b), &mx), &dv) in
                        o.iter_mut().zip(b).zip(mixed.iter()).zip(divisor.iter())
                    {
                        let delta = if self.normalize { mx / dv } else { mx };
                        *o = (f64::from(b) + self.lambda * delta) as f32;
                    }
                }
            },
        );
    }

    /// τ̂ of input `i` over a run (`first` = index of its first element), before rescaling, into
    /// `out`: what [`Gta::sparsified`] computes, without the norms, and with `rule.keep.ties_left`
    /// counting down. Runs whose threshold ties are all kept (or all dropped) are decided by one
    /// comparison per element; only the run where the kept ties run out goes element by element.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn sparsify_run(
        &self,
        i: usize,
        first: usize,
        base: &[f32],
        x: &[f32],
        rule: &mut InputRule,
        mask: Option<&[bool]>,
        out: &mut [f64],
    ) {
        match (self.sparsify, mask) {
            (Sparsify::Band | Sparsify::Della, Some(mask)) => {
                for (((o, &x), &b), &keep) in out.iter_mut().zip(x).zip(base).zip(mask) {
                    *o = if keep {
                        f64::from(x) - f64::from(b)
                    } else {
                        0.0
                    };
                }
            }
            (Sparsify::None | Sparsify::Band | Sparsify::Della, _) => {
                for ((o, &x), &b) in out.iter_mut().zip(x).zip(base) {
                    *o = f64::from(x) - f64::from(b);
                }
            }
            (Sparsify::Random, _) => {
                let p = self.densities[i];
                for (j, ((o, &x), &b)) in out.iter_mut().zip(x).zip(base).enumerate() {
                    let keep = p >= 1.0 || super::uniform(rule.stream, (first + j) as u64) < p;
                    *o = if keep {
                        f64::from(x) - f64::from(b)
                    } else {
                        0.0
                    };
                }
            }
            (Sparsify::Magnitude, _) => {
                let k = &mut rule.keep;
                let v = k.value;
                if k.keep_all || k.keep_none {
                    let keep = k.keep_all;
                    for ((o, &x), &b) in out.iter_mut().zip(x).zip(base) {
                        *o = if keep {
                            f64::from(x) - f64::from(b)
                        } else {
                            0.0
                        };
                    }
                    return;
                }
                let equal = x
                    .iter()
                    .zip(base)
                    .map(|(&x, &b)| u32::from((x - b).abs() == v))
                    .sum::<u32>();
                let equal = u64::from(equal);
                if k.ties_left >= equal {
                    k.ties_left -= equal;
                    for ((o, &x), &b) in out.iter_mut().zip(x).zip(base) {
                        let keep = (x - b).abs() >= v;
                        *o = if keep {
                            f64::from(x) - f64::from(b)
                        } else {
                            0.0
                        };
                    }
                } else if k.ties_left == 0 {
                    for ((o, &x), &b) in out.iter_mut().zip(x).zip(base) {
                        let keep = (x - b).abs() > v;
                        *o = if keep {
                            f64::from(x) - f64::from(b)
                        } else {
                            0.0
                        };
                    }
                } else {
                    for ((o, &x), &b) in out.iter_mut().zip(x).zip(base) {
                        let m = (x - b).abs();
                        let keep = m > v
                            || (m == v && k.ties_left > 0 && {
                                k.ties_left -= 1;
                                true
                            });
                        *o = if keep {
                            f64::from(x) - f64::from(b)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

impl Gta {
    /// DELLA's draw of input `i`, with its random `stream`.
    fn della_draw(&self, i: usize, stream: u64) -> DellaDraw {
        DellaDraw {
            stream,
            density: self.densities[i],
            epsilon: self.epsilons.get(i).copied().unwrap_or(0.0),
        }
    }

    /// The keep mask of input `i` over chunk `c` for Breadcrumbs and DELLA (`None`: keep all,
    /// or another sparsification).
    fn chunk_mask(&self, i: usize, st: &GtaStats, c: &Chunk<'_>) -> Option<Vec<bool>> {
        let (base, x) = (c.base.unwrap_or(&[]), &c.inputs[i]);
        let rule = &st.rules[i][c.index];
        match self.sparsify {
            _ if self.densities[i] >= 1.0 => None,
            Sparsify::Band => Some(band_mask(&rule.keep, &rule.drop, base, x)),
            Sparsify::Della => Some(match &st.della[i] {
                Some(d) => della_chunk(
                    Lines::of(&self.shape),
                    c.first,
                    base,
                    x,
                    &self.della_draw(i, rule.stream),
                    &d.straddling,
                ),
                // density ≤ 0: nothing survives.
                None => vec![false; x.len()],
            }),
            _ => None,
        }
    }
}

impl Kernel for Gta {
    type Stats = GtaStats;

    fn stats(&self, passes: &Passes<'_>) -> Result<GtaStats> {
        let n_chunks = passes.n_chunks();
        let numel = passes.numel();
        let n = self.weights.len();
        let all = || vec![vec![KeepRule::ALL; n_chunks]; n];
        let none = || vec![vec![KeepRule::NONE; n_chunks]; n];
        let (keeps, drops) = match self.sparsify {
            Sparsify::Magnitude => {
                let ks: Vec<u64> = self
                    .densities
                    .iter()
                    .map(|d| keep_count(*d, numel))
                    .collect();
                (keep_rules(passes, &ks)?, none())
            }
            Sparsify::Band => {
                // The band is the top `keep` entries less the top `drop` (the outliers).
                let (ks, ds): (Vec<u64>, Vec<u64>) = self
                    .densities
                    .iter()
                    .zip(&self.gammas)
                    .map(|(&d, &g)| band_counts(d, g, numel))
                    .unzip();
                (keep_rules(passes, &ks)?, keep_rules(passes, &ds)?)
            }
            _ => (all(), none()),
        };
        let mut rules: Vec<Vec<InputRule>> = keeps
            .into_iter()
            .zip(drops)
            .enumerate()
            .map(|(i, (keep, drop))| {
                let stream = super::stream_id(passes.seed(), passes.name(), i);
                keep.into_iter()
                    .zip(drop)
                    .map(|(keep, drop)| InputRule {
                        keep,
                        drop,
                        stream,
                        scale: 1.0,
                    })
                    .collect()
            })
            .collect();
        // DELLA: one pass in whole rows finds the norms and the masks of rows that cross a
        // chunk boundary.
        let mut della: Vec<Option<DellaInput>> = vec![None; n];
        if self.sparsify == Sparsify::Della {
            let which: Vec<usize> = (0..n)
                .filter(|&i| self.densities[i] > 0.0 && self.densities[i] < 1.0)
                .collect();
            let draws: Vec<DellaDraw> = which
                .iter()
                .map(|&i| self.della_draw(i, super::stream_id(passes.seed(), passes.name(), i)))
                .collect();
            let found = della_pass(passes, &which, Lines::of(&self.shape), &draws)?;
            for (&i, d) in which.iter().zip(found) {
                if self.rescale {
                    let scale = l1_scale(d.full, d.kept);
                    rules[i].iter_mut().for_each(|r| r.scale = scale);
                }
                della[i] = Some(d);
            }
        }
        // mergekit's L1 rescale needs both norms over the whole tensor first: one pass for
        // every input that is rescaled.
        let rescaled: Vec<usize> = (0..n)
            .filter(|&i| {
                self.rescale
                    && !matches!(self.sparsify, Sparsify::None | Sparsify::Della)
                    && self.densities[i] < 1.0
            })
            .collect();
        if !rescaled.is_empty() {
            let sums = passes.map(&rescaled, |c| {
                let base = c.base.unwrap_or(&[]);
                rescaled
                    .iter()
                    .zip(c.inputs)
                    .map(|(&i, x)| {
                        let rule = &rules[i][c.index];
                        let mask = (self.sparsify == Sparsify::Band)
                            .then(|| band_mask(&rule.keep, &rule.drop, base, x));
                        let mut tau = vec![0f64; x.len()];
                        self.sparsified(i, c.first, base, x, rule, mask.as_deref(), &mut tau)
                    })
                    .collect::<Vec<_>>()
            })?;
            for (k, &i) in rescaled.iter().enumerate() {
                // Summed in chunk order: the same bits whatever the thread count.
                let (full, kept) = sums
                    .iter()
                    .fold((0.0, 0.0), |a, s| (a.0 + s[k].0, a.1 + s[k].1));
                let scale = l1_scale(full, kept);
                rules[i].iter_mut().for_each(|r| r.scale = scale);
            }
        }
        Ok(GtaStats { rules, della })
    }

    fn chunk(&self, st: &GtaStats, c: &Chunk<'_>, out: &mut [f32]) {
        let mut chunk_rules: Vec<InputRule> = st.rules.iter().map(|v| v[c.index]).collect();
        let masks: Vec<Option<Vec<bool>>> = (0..c.inputs.len())
            .map(|i| self.chunk_mask(i, st, c))
            .collect();
        self.merge_chunk(
            c.first,
            c.base.unwrap_or(&[]),
            c.inputs,
            &mut chunk_rules,
            &masks,
            out,
        );
    }
}

pub use reference::oracle;

/// The float64 oracle, written from the formula at the top of this module and kept apart from
/// the kernel: it computes its own keep counts (by sorting) and its own DARE numbers (from
/// `mmerge_core::hash`), so a bug in `keep_count`, `uniform` or `stream_id` cannot hide.
mod reference {
    use mmerge_core::hash::{GOLDEN_GAMMA, fnv1a, splitmix64, unit_f64};

    use super::{Gta, Sparsify};

    /// Task arithmetic / TIES / DARE / Breadcrumbs / DELLA of one whole tensor named `tensor`,
    /// merged with `seed`.
    pub fn oracle(p: &Gta, tensor: &str, seed: u64, base: &[f32], inputs: &[Vec<f32>]) -> Vec<f64> {
        let n = base.len();
        let m = inputs.len();
        let b: Vec<f64> = base.iter().map(|x| f64::from(*x)).collect();
        // Step 1: task vectors, sparsified, rescaled.
        let mut taus: Vec<Vec<f64>> = Vec::new();
        for (i, x) in inputs.iter().enumerate() {
            let full: Vec<f64> = (0..n).map(|j| f64::from(x[j]) - b[j]).collect();
            let density = p.densities[i];
            let mut keep = vec![true; n];
            // Stream of input i: FNV-1a(tensor) ⊕ rotl(seed, 17) ⊕ i·0xD6E8FEB86659FD93; the
            // uniform number of element j is unit(splitmix64(stream ⊕ j·γ)).
            let stream = fnv1a(tensor.as_bytes())
                ^ seed.rotate_left(17)
                ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
            let u = |j: usize| unit_f64(splitmix64(stream ^ (j as u64).wrapping_mul(GOLDEN_GAMMA)));
            let mag: Vec<f32> = (0..n).map(|j| (x[j] - base[j]).abs()).collect();
            match p.sparsify {
                Sparsify::None => {}
                Sparsify::Magnitude => {
                    // k = all for density ≥ 1, none for density ≤ 0, else max(1, ⌊density·n⌋).
                    let k = if density >= 1.0 {
                        n
                    } else if density <= 0.0 {
                        0
                    } else {
                        ((density * n as f64).floor() as usize).max(1)
                    };
                    // Rank by |τ| as stored (f32), largest first; equal magnitudes by index.
                    let mut order: Vec<usize> = (0..n).collect();
                    order.sort_by(|&a, &c| mag[c].total_cmp(&mag[a]).then(a.cmp(&c)));
                    keep = vec![false; n];
                    for &j in order.iter().take(k) {
                        keep[j] = true;
                    }
                }
                Sparsify::Random => {
                    if density < 1.0 {
                        // Element j keeps when its uniform number is below the density.
                        for (j, k) in keep.iter_mut().enumerate() {
                            *k = u(j) < density;
                        }
                    }
                }
                Sparsify::Band => {
                    if density < 1.0 {
                        // Ascending |τ| (equal magnitudes: higher index first, the reverse of
                        // the descending order by lowest index): keep the ranks
                        // [bottom, bottom + target).
                        let target = if density <= 0.0 {
                            0
                        } else {
                            (density * n as f64).floor() as usize
                        };
                        let top = (p.gammas[i] * n as f64).floor() as usize;
                        let bottom = n.saturating_sub(target + top);
                        let mut order: Vec<usize> = (0..n).collect();
                        order.sort_by(|&a, &c| mag[a].total_cmp(&mag[c]).then(c.cmp(&a)));
                        keep = vec![false; n];
                        for &j in order.iter().skip(bottom).take(target) {
                            keep[j] = true;
                        }
                    }
                }
                Sparsify::Della => {
                    if density <= 0.0 {
                        keep = vec![false; n];
                    } else if density < 1.0 {
                        // Lines along the second axis (a tensor of fewer axes is one line):
                        // element (a, k, r) of shape [A, K, R…] is in line (a, r).
                        let eps = p.epsilons[i];
                        let (outer, len) = match p.shape.len() {
                            0 | 1 => (1, n),
                            _ => (p.shape[0], p.shape[1]),
                        };
                        let inner = n.checked_div(len * outer).unwrap_or(0);
                        for a in 0..outer {
                            for r in 0..inner {
                                let mut line: Vec<usize> =
                                    (0..len).map(|k| (a * len + k) * inner + r).collect();
                                // Smallest |τ| first; equal magnitudes by index.
                                line.sort_by(|&s, &t| mag[s].total_cmp(&mag[t]).then(s.cmp(&t)));
                                for (q, &j) in line.iter().enumerate() {
                                    let rank = if len > 1 {
                                        q as f64 / (len as f64 - 1.0)
                                    } else {
                                        0.5
                                    };
                                    keep[j] = u(j) < density - eps + 2.0 * eps * rank;
                                }
                            }
                        }
                    }
                }
            }
            let mut tau: Vec<f64> = (0..n)
                .map(|j| if keep[j] { full[j] } else { 0.0 })
                .collect();
            if p.rescale && p.sparsify != Sparsify::None && density < 1.0 {
                let l1_full: f64 = full.iter().map(|v| v.abs()).sum();
                let l1_kept: f64 = tau.iter().map(|v| v.abs()).sum();
                if l1_full >= 1e-7 && l1_kept >= 1e-7 {
                    for t in &mut tau {
                        *t *= l1_full / l1_kept;
                    }
                }
            }
            taus.push(tau);
        }
        // Steps 2-4.
        let mut out = vec![0f64; n];
        for j in 0..n {
            let wd: Vec<f64> = (0..m).map(|i| p.weights[i] * taus[i][j]).collect();
            let mut mixed = 0.0;
            let mut divisor = 0.0;
            if p.elect_sign {
                let gamma = if wd.iter().sum::<f64>() >= 0.0 {
                    1.0
                } else {
                    -1.0
                };
                for (v, w) in wd.iter().zip(&p.weights) {
                    let s = if *v > 0.0 {
                        1.0
                    } else if *v < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    if s == gamma {
                        mixed += v;
                        divisor += w;
                    }
                }
                if divisor == 0.0 {
                    divisor = 1.0;
                }
            } else {
                mixed = wd.iter().sum();
                divisor = p.weights.iter().sum();
                if divisor.abs() < 1e-8 {
                    divisor = 1.0;
                }
            }
            let delta = if p.normalize { mixed / divisor } else { mixed };
            out[j] = b[j] + p.lambda * delta;
        }
        out
    }
}
