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
//! Four registered methods are this one kernel with different steps and defaults (mergekit's
//! "generalized task arithmetic"): `task_arithmetic` (no sparsification, no election),
//! `ties` (magnitude, election), `dare_linear` (random, no election), `dare_ties` (random,
//! election). Parameters: `weight` (per input but the base, required), `density` (per input
//! but the base, default 1, in [0, 1]; not for task arithmetic), shared `normalize`, `lambda`
//! (default 1), `rescale` and `int8_mask` (accepted; it changes only mergekit's mask dtype).
//! Defaults follow mergekit 0.1.5: `normalize` is true for TIES only; `rescale` is true for
//! DARE and false for TIES.
//!
//! Statistics passes: TIES finds each input's exact top-k threshold of |τ| with a radix select
//! over the f32 bit patterns (`mmerge_core::select`), plus a counting pass when entries tie at
//! it; a rescaled TIES or DARE sums ‖τ‖₁ and ‖τ̂‖₁ over the whole tensor.
//!
//! Deviations from mergekit: float64 arithmetic per element and one rounding at the end
//! (mergekit computes in the loaded dtype, bf16 included); TIES ties in |τ| at the threshold
//! are broken by lowest index (mergekit's argsort order is unspecified); DARE draws its mask from
//! a seeded per-element hash (`methods::uniform`) instead of torch's global RNG, so masks are
//! reproducible across thread counts but differ from mergekit's (hence no DARE golden).

use std::sync::Arc;

use mmerge_core::select::{Pass, RadixSelect};

use super::{
    Goldens, Inputs, Kernel, Kind, Method, OracleCase, ParamSpec, Planned, Reference, Scope,
    TensorPlan,
};
use crate::error::Result;
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

/// Task arithmetic (arXiv 2212.04089).
pub const TASK_ARITHMETIC: Method = Method {
    name: "task_arithmetic",
    reference: Reference::Arxiv("2212.04089"),
    needs_base: true,
    inputs: Inputs::Many,
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
    params: &sparsified_params(false, true),
    plan: |t| plan(t, Sparsify::Random, true),
    oracle: |c| oracle_case(c, Sparsify::Random, true),
    goldens: DARE_GOLDENS,
};

fn plan(t: &TensorPlan<'_>, sparsify: Sparsify, elect_sign: bool) -> Result<Planned> {
    let inputs = t.non_base();
    let densities = inputs
        .iter()
        .map(|&m| t.values.model_number(m, "density").unwrap_or(1.0))
        .collect();
    let weights = inputs
        .iter()
        .map(|&m| t.model_number(m, "weight"))
        .collect();
    Ok(Planned {
        base: t.base,
        kernel: Some(Arc::new(Gta::new(
            weights, densities, sparsify, elect_sign, &t.values,
        ))),
        inputs,
    })
}

fn oracle_case(c: &OracleCase<'_>, sparsify: Sparsify, elect_sign: bool) -> Vec<f64> {
    let n = c.inputs.len();
    let p = Gta::new(
        (0..n)
            .map(|i| c.values.model_number(i, "weight").unwrap_or(f64::NAN))
            .collect(),
        (0..n)
            .map(|i| c.values.model_number(i, "density").unwrap_or(1.0))
            .collect(),
        sparsify,
        elect_sign,
        c.values,
    );
    oracle(&p, c.tensor, c.seed, c.base.unwrap_or(&[]), c.inputs)
}

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
    /// The parameters of one tensor from its evaluated shared values (`rescale`, `normalize`,
    /// `lambda`; their defaults are the method's, filled in by the planner).
    pub fn new(
        weights: Vec<f64>,
        densities: Vec<f64>,
        sparsify: Sparsify,
        elect_sign: bool,
        values: &super::Values,
    ) -> Self {
        Gta {
            weights,
            densities,
            sparsify,
            rescale: values.flag("rescale").unwrap_or(false),
            elect_sign,
            normalize: values.flag("normalize").unwrap_or(false),
            lambda: values.number("lambda").unwrap_or(1.0),
        }
    }

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
    pub fn merge_chunk(
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

impl Kernel for Gta {
    /// `rules[i][c]`: how input i is sparsified and rescaled in chunk c.
    type Stats = Vec<Vec<InputRule>>;

    fn stats(&self, passes: &Passes<'_>) -> Result<Vec<Vec<InputRule>>> {
        let n_chunks = passes.n_chunks();
        let n = self.weights.len();
        let keeps = if self.sparsify == Sparsify::Magnitude {
            keep_rules(passes, &self.densities)?
        } else {
            vec![vec![KeepRule::ALL; n_chunks]; n]
        };
        let mut rules: Vec<Vec<InputRule>> = keeps
            .into_iter()
            .enumerate()
            .map(|(i, keep)| {
                let stream = super::stream_id(passes.seed(), passes.name(), i);
                keep.into_iter()
                    .map(|keep| InputRule {
                        keep,
                        stream,
                        scale: 1.0,
                    })
                    .collect()
            })
            .collect();
        // mergekit's L1 rescale needs both norms over the whole tensor first: one pass for
        // every input that is rescaled.
        let rescaled: Vec<usize> = (0..n)
            .filter(|&i| self.rescale && self.sparsify != Sparsify::None && self.densities[i] < 1.0)
            .collect();
        if !rescaled.is_empty() {
            let sums = passes.map(&rescaled, |c| {
                let base = c.base.unwrap_or(&[]);
                rescaled
                    .iter()
                    .zip(c.inputs)
                    .map(|(&i, x)| {
                        let mut tau = vec![0f64; x.len()];
                        self.sparsified(i, c.first, base, x, &rules[i][c.index], &mut tau)
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
        Ok(rules)
    }

    fn chunk(&self, rules: &Vec<Vec<InputRule>>, c: &Chunk<'_>, out: &mut [f32]) {
        let chunk_rules: Vec<InputRule> = rules.iter().map(|v| v[c.index]).collect();
        self.merge_chunk(c.first, c.base.unwrap_or(&[]), c.inputs, &chunk_rules, out);
    }
}

/// |input − base| of a chunk for each input of the chunk, as f32 (the ranking TIES trims by).
fn magnitudes(c: &Chunk<'_>) -> Vec<Vec<f32>> {
    let b = c.base.unwrap_or(&[]);
    c.inputs
        .iter()
        .map(|x| x.iter().zip(b).map(|(v, b)| (v - b).abs()).collect())
        .collect()
}

/// Per-chunk keep rules of every input under magnitude sparsification. The selections of
/// all inputs advance together, so each pass reads the base once.
fn keep_rules(passes: &Passes<'_>, densities: &[f64]) -> Result<Vec<Vec<KeepRule>>> {
    let numel = passes.numel();
    let n_chunks = passes.n_chunks();
    let ks: Vec<u64> = densities.iter().map(|d| keep_count(*d, numel)).collect();
    let mut rules: Vec<Vec<KeepRule>> = ks
        .iter()
        .map(|&k| match k {
            0 => vec![KeepRule::NONE; n_chunks],
            _ => vec![KeepRule::ALL; n_chunks],
        })
        .collect();
    // Inputs that keep some but not all entries need a threshold.
    let active: Vec<usize> = (0..ks.len())
        .filter(|&i| ks[i] > 0 && ks[i] < numel as u64)
        .collect();
    let mut sels: Vec<RadixSelect> = active.iter().map(|&i| RadixSelect::new(ks[i])).collect();
    while sels.iter().any(|s| s.pass() != Pass::Done) {
        // One histogram set per worker over a contiguous run of chunks: memory is bounded by
        // the thread count, and integer counts merge to the same result in any order.
        let worker_parts = passes.fold_runs(
            &active,
            || sels.iter().map(RadixSelect::fork).collect::<Vec<_>>(),
            |f, c| {
                for (s, m) in f.iter_mut().zip(magnitudes(c)) {
                    s.observe(&m);
                }
            },
        )?;
        for wp in &worker_parts {
            sels.iter_mut().zip(wp).for_each(|(a, b)| a.merge(b));
        }
        sels.iter_mut().for_each(RadixSelect::end_pass);
    }
    // Entries equal to the threshold that must partly go are kept lowest index first:
    // each chunk gets its share, from a count of equal entries per chunk.
    let mut need_count = vec![];
    for (a, s) in active.iter().zip(&sels) {
        let Some(th) = s.result() else { continue };
        let wanted = ks[*a] - th.greater;
        let rule = |ties_left| KeepRule {
            value: th.value,
            ties_left,
            keep_all: false,
            keep_none: false,
        };
        rules[*a] = vec![rule(u64::MAX); n_chunks];
        if wanted != th.equal {
            need_count.push((*a, th.value, wanted));
        }
    }
    if !need_count.is_empty() {
        let which: Vec<usize> = need_count.iter().map(|n| n.0).collect();
        let equal: Vec<Vec<u64>> = passes.map(&which, |c| {
            magnitudes(c)
                .iter()
                .zip(&need_count)
                .map(|(m, n)| m.iter().filter(|v| **v == n.1).count() as u64)
                .collect()
        })?;
        for (j, &(a, _, wanted)) in need_count.iter().enumerate() {
            let mut before = 0u64;
            for (c, counts) in equal.iter().enumerate() {
                let e = counts[j];
                rules[a][c].ties_left = wanted.saturating_sub(before).min(e);
                before += e;
            }
        }
    }
    Ok(rules)
}

pub use reference::oracle;

/// The float64 oracle, written from the formula at the top of this module and kept apart from
/// the kernel: it computes its own keep counts (by sorting) and its own DARE numbers (from
/// `mmerge_core::hash`), so a bug in `keep_count`, `uniform` or `stream_id` cannot hide.
mod reference {
    use mmerge_core::hash::{GOLDEN_GAMMA, fnv1a, splitmix64, unit_f64};

    use super::{Gta, Sparsify};

    /// Task arithmetic / TIES / DARE of one whole tensor named `tensor`, merged with `seed`.
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
                    let mag: Vec<f32> = (0..n).map(|j| (x[j] - base[j]).abs()).collect();
                    let mut order: Vec<usize> = (0..n).collect();
                    order.sort_by(|&a, &c| mag[c].total_cmp(&mag[a]).then(a.cmp(&c)));
                    keep = vec![false; n];
                    for &j in order.iter().take(k) {
                        keep[j] = true;
                    }
                }
                Sparsify::Random => {
                    if density < 1.0 {
                        // Stream of input i: FNV-1a(tensor) ⊕ rotl(seed, 17) ⊕ i·0xD6E8FEB86659FD93;
                        // element j keeps when unit(splitmix64(stream ⊕ j·γ)) < density.
                        let stream = fnv1a(tensor.as_bytes())
                            ^ seed.rotate_left(17)
                            ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
                        for (j, k) in keep.iter_mut().enumerate() {
                            let z = splitmix64(stream ^ (j as u64).wrapping_mul(GOLDEN_GAMMA));
                            *k = unit_f64(z) < density;
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
