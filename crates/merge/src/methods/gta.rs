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

use std::ops::Range;

use mmerge_core::hash::splitmix64;
use mmerge_core::select::{Bracket, Pass, RadixSelect, Threshold};

use super::linear::RUN;
use super::{
    Goldens, Inputs, Kernel, Kind, Method, OracleCase, ParamSpec, Planned, Reference, Scope,
    Statistics, TensorPlan,
};
use crate::error::Result;
use crate::exec::{BLOCK, Chunk, Passes};

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

fn plan(t: &TensorPlan<'_>, sparsify: Sparsify, elect_sign: bool) -> Result<Planned> {
    let inputs = t.non_base();
    let densities = t
        .values
        .model_numbers(inputs.iter().copied(), "density", 1.0);
    let weights = inputs
        .iter()
        .map(|&m| t.model_number(m, "weight"))
        .collect();
    Ok(Planned {
        statistics: vec![],
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
        c.values.model_numbers(0..n, "weight", f64::NAN),
        c.values.model_numbers(0..n, "density", 1.0),
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
    /// chunk's first element, `rules[i]` says how input i is sparsified and rescaled (its
    /// `ties_left` counts down as threshold ties are kept).
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
                        self.sparsify_run(i, first + at, b, x, &mut rules[i], wd);
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
    fn sparsify_run(
        &self,
        i: usize,
        first: usize,
        base: &[f32],
        x: &[f32],
        rule: &mut InputRule,
        out: &mut [f64],
    ) {
        match self.sparsify {
            Sparsify::None => {
                for ((o, &x), &b) in out.iter_mut().zip(x).zip(base) {
                    *o = f64::from(x) - f64::from(b);
                }
            }
            Sparsify::Random => {
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
            Sparsify::Magnitude => {
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
        let mut chunk_rules: Vec<InputRule> = rules.iter().map(|v| v[c.index]).collect();
        self.merge_chunk(
            c.first,
            c.base.unwrap_or(&[]),
            c.inputs,
            &mut chunk_rules,
            out,
        );
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

/// Per-chunk keep rules of every input under magnitude sparsification: each input's exact
/// threshold from one bracketed pass ([`bracket_thresholds`]), or from the two radix passes
/// ([`radix_thresholds`]) for an input whose sampled bracket missed it.
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
    // (input, threshold, equal entries per chunk when already counted)
    let mut found: Vec<(usize, Threshold, Option<Vec<u64>>)> = vec![];
    let mut missed = vec![];
    for (a, t) in active.iter().zip(bracket_thresholds(passes, &active, &ks)?) {
        match t {
            Some((th, equal)) => found.push((*a, th, Some(equal))),
            None => missed.push(*a),
        }
    }
    for (a, th) in missed.iter().zip(radix_thresholds(passes, &missed, &ks)?) {
        if let Some(th) = th {
            found.push((*a, th, None));
        }
    }
    // Entries equal to the threshold that must partly go are kept lowest index first:
    // each chunk gets its share, from a count of equal entries per chunk.
    let mut need_count = vec![];
    for (a, th, equal) in &mut found {
        let wanted = ks[*a] - th.greater;
        let rule = |ties_left| KeepRule {
            value: th.value,
            ties_left,
            keep_all: false,
            keep_none: false,
        };
        rules[*a] = vec![rule(u64::MAX); n_chunks];
        if wanted != th.equal {
            match equal.take() {
                Some(e) => share_ties(&mut rules[*a], wanted, &e),
                None => need_count.push((*a, th.value, wanted)),
            }
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
            let per_chunk: Vec<u64> = equal.iter().map(|counts| counts[j]).collect();
            share_ties(&mut rules[a], wanted, &per_chunk);
        }
    }
    Ok(rules)
}

/// Spreads the `wanted` threshold ties over the chunks, lowest index first, given the count of
/// entries equal to the threshold in each chunk.
fn share_ties(rules: &mut [KeepRule], wanted: u64, equal: &[u64]) {
    let mut before = 0u64;
    for (rule, &e) in rules.iter_mut().zip(equal) {
        rule.ties_left = wanted.saturating_sub(before).min(e);
        before += e;
    }
}

/// Runs of |τ| sampled per chunk by [`bracket_thresholds`], and their length: 1/256 of a full
/// chunk.
const SAMPLE_RUNS: usize = 4;
const SAMPLE_LEN: usize = 64;

/// The element ranges of chunk `c` (elements `r`) that TIES samples to bracket its thresholds:
/// `SAMPLE_RUNS` runs of `SAMPLE_LEN` at hashed offsets, or the whole chunk when it is short.
pub fn sample_runs(c: usize, r: &Range<usize>) -> Vec<Range<usize>> {
    if r.len() <= SAMPLE_RUNS * SAMPLE_LEN {
        return vec![r.clone()];
    }
    (0..SAMPLE_RUNS)
        .map(|s| {
            let h = splitmix64((c * SAMPLE_RUNS + s) as u64);
            let at = r.start + (h % (r.len() - SAMPLE_LEN + 1) as u64) as usize;
            at..at + SAMPLE_LEN
        })
        .collect()
}

/// A threshold with the count of entries equal to it in each chunk.
type Counted = (Threshold, Vec<u64>);

/// The exact threshold of each input in `which` (its `ks[i]`-th largest |τ|) with the count of
/// entries equal to it in each chunk, in one pass over the tensor plus a sample: a sample of
/// |τ| gives each input a bracket (`mmerge_core::select::Bracket`), the pass counts the entries
/// above it and gathers those inside. `None` for an input whose bracket missed.
fn bracket_thresholds(
    passes: &Passes<'_>,
    which: &[usize],
    ks: &[u64],
) -> Result<Vec<Option<Counted>>> {
    if which.is_empty() {
        return Ok(vec![]);
    }
    let numel = passes.numel();
    let samples = passes.sample(which, sample_runs, magnitudes)?;
    let brackets: Vec<Bracket> = (0..which.len())
        .map(|j| {
            let s: Vec<f32> = samples
                .iter()
                .flatten()
                .flat_map(|m| m[j].iter().copied())
                .collect();
            Bracket::from_sample(&s, ks[which[j]], numel as u64)
        })
        .collect();
    drop(samples);
    // The pass: per chunk and input, the count above the bracket and the entries inside.
    let parts: Vec<Vec<(u64, Vec<f32>)>> = passes.map(which, |c| {
        let b = c.base.unwrap_or(&[]);
        let mut acc = vec![(0u64, vec![]); which.len()];
        let mut mags = vec![0f32; BLOCK.min(b.len())];
        mmerge_core::simd::fast(
            #[inline(always)]
            || {
                // Block by block, so that the magnitudes stay in the core's cache.
                for at in (0..b.len()).step_by(BLOCK) {
                    let b = &b[at..(at + BLOCK).min(b.len())];
                    let mags = &mut mags[..b.len()];
                    for ((x, (greater, inside)), bracket) in
                        c.inputs.iter().zip(&mut acc).zip(&brackets)
                    {
                        for ((m, x), b) in mags.iter_mut().zip(&x[at..]).zip(b) {
                            *m = (x - b).abs();
                        }
                        bracket.observe(mags, greater, inside);
                    }
                }
            },
        );
        acc.iter_mut().for_each(|a| a.1.shrink_to_fit());
        acc
    })?;
    Ok((0..which.len())
        .map(|j| {
            let greater = parts.iter().map(|p| p[j].0).sum();
            let inside: Vec<&[f32]> = parts.iter().map(|p| p[j].1.as_slice()).collect();
            let th = brackets[j].resolve(ks[which[j]], greater, &inside)?;
            // Counted as the final pass compares: by value.
            let equal = parts
                .iter()
                .map(|p| p[j].1.iter().filter(|v| **v == th.value).count() as u64)
                .collect();
            Some((th, equal))
        })
        .collect())
}

/// The exact threshold of each input in `which` by two radix passes over the tensor (the
/// selections of all inputs advance together, so each pass reads the base once).
fn radix_thresholds(
    passes: &Passes<'_>,
    which: &[usize],
    ks: &[u64],
) -> Result<Vec<Option<Threshold>>> {
    let mut sels: Vec<RadixSelect> = which.iter().map(|&i| RadixSelect::new(ks[i])).collect();
    while sels.iter().any(|s| s.pass() != Pass::Done) {
        // One histogram set per worker over a contiguous run of chunks: memory is bounded by
        // the thread count, and integer counts merge to the same result in any order.
        let worker_parts = passes.fold_runs(
            which,
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
    Ok(sels.iter().map(RadixSelect::result).collect())
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
