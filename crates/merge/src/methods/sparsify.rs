//! Which task-vector entries survive sparsification, for the task-vector kernel
//! (`methods::gta`): the exact top-k magnitude rules of TIES and Model Breadcrumbs (thresholds
//! found by streamed passes, `mmerge_core::select`), and DELLA's rank-dependent keep
//! probabilities, drawn per row. The formulas and references are in `gta.rs`'s module doc.

use std::collections::BTreeMap;
use std::ops::Range;

use mmerge_core::hash::splitmix64;
use mmerge_core::select::{Bracket, Pass, RadixSelect, Threshold};

use crate::error::Result;
use crate::exec::{BLOCK, CHUNK, Chunk, Passes};

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

/// |input − base| of a chunk for each input of the chunk, as f32 (the ranking TIES trims by).
fn magnitudes(c: &Chunk<'_>) -> Vec<Vec<f32>> {
    let b = c.base.unwrap_or(&[]);
    c.inputs
        .iter()
        .map(|x| x.iter().zip(b).map(|(v, b)| (v - b).abs()).collect())
        .collect()
}

/// Per-chunk keep rules of every input under magnitude sparsification, input i keeping the
/// `ks[i]` entries of largest |τ| (ties: lowest index first): each input's exact
/// threshold from one bracketed pass ([`bracket_thresholds`]), or from the two radix passes
/// ([`radix_thresholds`]) for an input whose sampled bracket missed it.
pub fn keep_rules(passes: &Passes<'_>, ks: &[u64]) -> Result<Vec<Vec<KeepRule>>> {
    let numel = passes.numel();
    let n_chunks = passes.n_chunks();
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
    for (a, t) in active.iter().zip(bracket_thresholds(passes, &active, ks)?) {
        match t {
            Some((th, equal)) => found.push((*a, th, Some(equal))),
            None => missed.push(*a),
        }
    }
    for (a, th) in missed.iter().zip(radix_thresholds(passes, &missed, ks)?) {
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

/// Breadcrumbs' band as two top-k counts in TIES' order (|τ| descending, lowest index first):
/// the entries at positions [`drop`, `keep`) survive, returned as (`keep`, `drop`). From
/// mergekit's counts: target = ⌊density·numel⌋, top = ⌊gamma·numel⌋ and
/// bottom = max(0, numel − target − top) in ascending order, i.e. the ascending ranks
/// [bottom, bottom + target). All survive for density ≥ 1, none when target is 0.
pub fn band_counts(density: f64, gamma: f64, numel: usize) -> (u64, u64) {
    let n = numel as u64;
    if density >= 1.0 {
        return (n, 0);
    }
    let target = (density.max(0.0) * numel as f64).floor() as u64;
    if target == 0 {
        return (0, 0);
    }
    let top = (gamma.max(0.0) * numel as f64).floor() as u64;
    let bottom = n.saturating_sub(target.saturating_add(top));
    (n - bottom, n - bottom - target)
}

/// Whether each entry of a chunk is among the entries a [`KeepRule`] keeps (threshold ties
/// counted down from the chunk's share, lowest index first).
pub fn top_mask(k: &KeepRule, base: &[f32], x: &[f32]) -> Vec<bool> {
    let mut ties_left = k.ties_left;
    x.iter()
        .zip(base)
        .map(|(&x, &b)| {
            let m = (x - b).abs();
            k.keep_all
                || (!k.keep_none
                    && (m > k.value
                        || (m == k.value && ties_left > 0 && {
                            ties_left -= 1;
                            true
                        })))
        })
        .collect()
}

/// Breadcrumbs' keep mask of a chunk: kept by `keep` and not by `drop` (the outliers).
pub fn band_mask(keep: &KeepRule, drop: &KeepRule, base: &[f32], x: &[f32]) -> Vec<bool> {
    let high = top_mask(drop, base, x);
    top_mask(keep, base, x)
        .into_iter()
        .zip(high)
        .map(|(k, h)| k && !h)
        .collect()
}

/// How DELLA ranks a tensor: along its second axis, as mergekit does (a tensor of fewer than
/// two axes is one row). The tensor is cut into slabs of `slab` consecutive elements (one index
/// of the first axis), each holding `stride` interleaved lines (`stride` = 1 for a matrix: the
/// slab is a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    pub slab: usize,
    pub stride: usize,
}

impl Lines {
    /// The lines of a tensor of this shape.
    pub fn of(shape: &[usize]) -> Self {
        if shape.len() < 2 {
            Lines {
                slab: shape.iter().product::<usize>().max(1),
                stride: 1,
            }
        } else {
            Lines {
                slab: shape[1..].iter().product::<usize>().max(1),
                stride: shape[2..].iter().product::<usize>().max(1),
            }
        }
    }
}

/// DELLA's keep mask of one slab (`first`: the tensor index of its first element): in each
/// line, the entries are ordered by |τ| ascending (ties by index), and the one at position q of
/// n is kept when its uniform number is below density − ε + 2ε·q/(n − 1) (a line of one entry:
/// below density).
pub fn della_slab(
    mags: &[f32],
    stride: usize,
    first: usize,
    stream: u64,
    density: f64,
    epsilon: f64,
) -> Vec<bool> {
    let mut keep = vec![false; mags.len()];
    let n = mags.len() / stride.max(1);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for r in 0..stride {
        order.clear();
        order.extend((0..n).map(|k| r + k * stride));
        order.sort_unstable_by(|&a, &b| mags[a].total_cmp(&mags[b]).then(a.cmp(&b)));
        for (q, &j) in order.iter().enumerate() {
            let rank = if n > 1 {
                q as f64 / (n - 1) as f64
            } else {
                0.5
            };
            let p = density - epsilon + 2.0 * epsilon * rank;
            keep[j] = super::uniform(stream, (first + j) as u64) < p;
        }
    }
    keep
}

/// What DELLA's row-aligned pass finds for one input: ‖τ‖₁ and ‖τ̂‖₁ over the tensor, and the
/// keep masks of the slabs that cross a chunk boundary (a chunk cannot rank their lines alone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DellaInput {
    pub full: f64,
    pub kept: f64,
    pub straddling: BTreeMap<usize, Vec<bool>>,
}

/// DELLA's draw of one input: its random stream, density and ε.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DellaDraw {
    pub stream: u64,
    pub density: f64,
    pub epsilon: f64,
}

/// |τ| of a slice, as f32 (the values DELLA ranks).
fn slice_magnitudes(base: &[f32], x: &[f32]) -> Vec<f32> {
    x.iter().zip(base).map(|(x, b)| (x - b).abs()).collect()
}

/// One pass over the tensor in whole slabs (the slabs starting in chunk c are read with it):
/// per input of `which`, its norms and straddling masks. The norms are summed slab by slab and
/// chunk by chunk in order, so they do not depend on the thread count.
pub fn della_pass(
    passes: &Passes<'_>,
    which: &[usize],
    lines: Lines,
    draws: &[DellaDraw],
) -> Result<Vec<DellaInput>> {
    if which.is_empty() {
        return Ok(vec![]);
    }
    let numel = passes.numel();
    let l = lines.slab;
    let parts = passes.sample(
        which,
        |_, r| {
            let (lo, hi) = (r.start.div_ceil(l), r.end.div_ceil(l));
            if lo < hi {
                let slabs = lo * l..(hi * l).min(numel);
                vec![slabs]
            } else {
                vec![]
            }
        },
        |c| {
            let base = c.base.unwrap_or(&[]);
            c.inputs
                .iter()
                .zip(draws)
                .map(|(x, d)| {
                    let mut acc = DellaInput::default();
                    for at in (0..x.len()).step_by(l) {
                        let end = (at + l).min(x.len());
                        let (b, x) = (&base[at..end], &x[at..end]);
                        let first = c.first + at;
                        let keep = della_slab(
                            &slice_magnitudes(b, x),
                            lines.stride,
                            first,
                            d.stream,
                            d.density,
                            d.epsilon,
                        );
                        for ((&x, &b), &k) in x.iter().zip(b).zip(&keep) {
                            let t = (f64::from(x) - f64::from(b)).abs();
                            acc.full += t;
                            acc.kept += if k { t } else { 0.0 };
                        }
                        if first / CHUNK != (first + l - 1) / CHUNK {
                            acc.straddling.insert(first / l, keep);
                        }
                    }
                    acc
                })
                .collect::<Vec<_>>()
        },
    )?;
    let mut out = vec![DellaInput::default(); which.len()];
    for part in parts.into_iter().flatten() {
        for (o, p) in out.iter_mut().zip(part) {
            o.full += p.full;
            o.kept += p.kept;
            o.straddling.extend(p.straddling);
        }
    }
    Ok(out)
}

/// DELLA's keep mask of one chunk (`first`: its first element): slabs inside the chunk are
/// ranked and drawn here, the others are read from the pass's `straddling` masks.
pub fn della_chunk(
    lines: Lines,
    first: usize,
    base: &[f32],
    x: &[f32],
    draw: &DellaDraw,
    straddling: &BTreeMap<usize, Vec<bool>>,
) -> Vec<bool> {
    let l = lines.slab;
    let end = first + x.len();
    let mut keep = vec![false; x.len()];
    let mut s = first / l;
    while s * l < end {
        let (lo, hi) = (s * l, (s + 1) * l);
        if lo >= first && hi <= end {
            let r = lo - first..hi - first;
            let m = della_slab(
                &slice_magnitudes(&base[r.clone()], &x[r.clone()]),
                lines.stride,
                lo,
                draw.stream,
                draw.density,
                draw.epsilon,
            );
            keep[r].copy_from_slice(&m);
        } else if let Some(m) = straddling.get(&s) {
            let (a, z) = (lo.max(first), hi.min(end));
            keep[a - first..z - first].copy_from_slice(&m[a - lo..z - lo]);
        }
        s += 1;
    }
    keep
}
