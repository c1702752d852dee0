//! The statistics a finding rests on: mean ± std over seeds, percentile-bootstrap intervals
//! (one sample, and paired per-item differences between two models), and the Pearson,
//! Spearman and Kendall correlations of a distance metric with a downstream score, each with
//! a bootstrap interval over points.
//!
//! # Formulas
//!
//! - Mean and sample standard deviation: x̄ = Σxᵢ/n, s = √(Σ(xᵢ − x̄)²/(n − 1)); s = 0 when
//!   n = 1 (two passes, so no catastrophic cancellation).
//! - Pearson: r = Σ(xᵢ − x̄)(yᵢ − ȳ) / √(Σ(xᵢ − x̄)² · Σ(yᵢ − ȳ)²), clamped to [−1, 1].
//! - Spearman: ρ = Pearson r of the ranks, tied values sharing the average of the ranks they
//!   span (ranks 1…n; `scipy.stats.rankdata(method="average")`).
//! - Kendall tau-b: τ_b = (P − Q) / √((n₀ − n₁)(n₀ − n₂)), with P and Q the concordant and
//!   discordant pairs, n₀ = n(n − 1)/2, n₁ = Σ tᵢ(tᵢ − 1)/2 over groups of tᵢ tied x values,
//!   n₂ likewise for y (a pair tied in both counts in n₁ and n₂, in neither P nor Q).
//!   Computed in O(n²) over all pairs, on purpose: correlations here run over merges (tens
//!   of points, at most a few hundred), where Knight's O(n log n) algorithm buys nothing and
//!   the direct count is its own proof.
//! - Percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*,
//!   ch. 13): draw B resamples of the n items with replacement, compute the statistic θ* on
//!   each, and report [θ*₍α/2₎, θ*₍1−α/2₎] for α = 1 − level around the statistic of the
//!   whole sample. The paired bootstrap of two models scored on the same items is the
//!   bootstrap of the mean per-item difference dᵢ = aᵢ − bᵢ (items, not models, are
//!   resampled, so the item-difficulty variance both models share cancels). Correlation
//!   intervals resample (xᵢ, yᵢ) pairs.
//! - Percentile (numpy's default `method="linear"`, Hyndman & Fan's type 7): for sorted
//!   values v₀ ≤ … ≤ v_{m−1} and q ∈ [0, 1], h = (m − 1)q, j = ⌊h⌋,
//!   P(q) = v_j + (h − j)(v_{j+1} − v_j) (and v_{m−1} when j = m − 1).
//!
//! # Randomness
//!
//! Resample r (0 ≤ r < B) of `seed` draws its n indices from its own stream,
//! `SplitMix64::new(splitmix64(seed ⊕ splitmix64(r)))` (see [`resample_indices`]), each index
//! by Lemire's unbiased multiply-and-reject on 64-bit outputs. Same seed, same data ⇒ same
//! bits; no global RNG, and resamples could run in any order or in parallel.
//!
//! # Reference and deviations
//!
//! scipy (`pearsonr`, `spearmanr`, `kendalltau` with `variant="b"`) and numpy (`std(ddof=1)`,
//! `percentile`) are the reference implementations: `tests/fixtures/make_stats_golden.py`
//! writes their values and `tests/stats.rs` matches them within 1e-12. Deviations:
//!
//! - A correlation with a constant x or y is undefined: scipy warns and returns NaN, we
//!   return [`StatsError::ZeroVariance`]. "Constant" means exactly equal values, tested
//!   directly, not a variance that rounding left at 1e-33.
//! - In a correlation bootstrap, a resample whose x or y is constant (likely with few
//!   points and ties) has no coefficient: it is skipped and counted in
//!   [`Interval::skipped`]; the percentiles are taken over the rest. If every resample is
//!   skipped the result is [`StatsError::AllResamplesDegenerate`].
//! - Inputs must be finite; NaN is refused ([`StatsError::NonFinite`]), never propagated or
//!   dropped. No p-values: findings here rest on intervals.
//! - Kendall is O(n²) (above); scipy's is O(n log n). Same counts, so the same τ_b.

use mmerge_core::hash::{SplitMix64, splitmix64};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a statistics function refuses, naming the argument at fault.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StatsError {
    /// Fewer values than the statistic needs (an empty input has `got: 0`).
    #[error("{what}: {got} values, at least {need} needed")]
    TooFew {
        what: &'static str,
        got: usize,
        need: usize,
    },
    /// Two inputs that must pair up item by item have different lengths.
    #[error("length mismatch: {left} has {left_len} values, {right} has {right_len}")]
    LengthMismatch {
        left: &'static str,
        left_len: usize,
        right: &'static str,
        right_len: usize,
    },
    /// A NaN or infinite input value.
    #[error("{what}[{index}] is {value}, not a finite number")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    /// Every value of a correlation's input is the same: the coefficient is undefined.
    #[error("{what}: all {n} values are equal, so its correlation is undefined")]
    ZeroVariance { what: &'static str, n: usize },
    /// A confidence level outside (0, 1).
    #[error("confidence level {0} is not in (0, 1)")]
    InvalidLevel(f64),
    /// A quantile outside [0, 1].
    #[error("quantile {0} is not in [0, 1]")]
    InvalidQuantile(f64),
    /// A bootstrap asked for zero resamples.
    #[error("the bootstrap needs at least one resample")]
    NoResamples,
    /// Every bootstrap resample of a correlation had a constant x or y.
    #[error("all {resamples} bootstrap resamples had a constant x or y; no interval")]
    AllResamplesDegenerate { resamples: usize },
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, StatsError>;

/// Mean and sample standard deviation (n − 1 in the denominator) of `n` values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
}

/// A percentile-bootstrap interval around a statistic of the whole sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the whole sample (not a bootstrap average).
    pub estimate: f64,
    /// The (1 − level)/2 percentile of the resampled statistics.
    pub lo: f64,
    /// The (1 + level)/2 percentile of the resampled statistics.
    pub hi: f64,
    /// The confidence level, e.g. 0.95.
    pub level: f64,
    /// Resamples drawn.
    pub resamples: usize,
    /// Resamples with no defined statistic (a correlation over a constant x or y), left out
    /// of the percentiles; always 0 for means.
    pub skipped: usize,
}

/// Which correlation coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorrelationKind {
    Pearson,
    Spearman,
    /// Kendall's tau-b.
    Kendall,
}

impl CorrelationKind {
    /// All three, in the order tables list them.
    pub const ALL: [CorrelationKind; 3] = [Self::Pearson, Self::Spearman, Self::Kendall];

    /// The name tables and configs use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pearson => "pearson",
            Self::Spearman => "spearman",
            Self::Kendall => "kendall",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

fn check_finite(what: &'static str, xs: &[f64]) -> Result<()> {
    match xs.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(StatsError::NonFinite {
            what,
            index,
            value: xs[index],
        }),
        None => Ok(()),
    }
}

fn check_len(what: &'static str, xs: &[f64], need: usize) -> Result<()> {
    if xs.len() < need {
        return Err(StatsError::TooFew {
            what,
            got: xs.len(),
            need,
        });
    }
    Ok(())
}

fn check_sample(what: &'static str, xs: &[f64], need: usize) -> Result<()> {
    check_len(what, xs, need)?;
    check_finite(what, xs)
}

fn check_pair(
    left: &'static str,
    xs: &[f64],
    right: &'static str,
    ys: &[f64],
    need: usize,
) -> Result<()> {
    if xs.len() != ys.len() {
        return Err(StatsError::LengthMismatch {
            left,
            left_len: xs.len(),
            right,
            right_len: ys.len(),
        });
    }
    check_sample(left, xs, need)?;
    check_sample(right, ys, need)
}

fn check_bootstrap(resamples: usize, level: f64) -> Result<()> {
    if resamples == 0 {
        return Err(StatsError::NoResamples);
    }
    // Written so that NaN fails too.
    if !(level > 0.0 && level < 1.0) {
        return Err(StatsError::InvalidLevel(level));
    }
    Ok(())
}

fn is_constant(xs: &[f64]) -> bool {
    xs.iter().all(|&v| v == xs[0])
}

fn check_varies(what: &'static str, xs: &[f64]) -> Result<()> {
    if is_constant(xs) {
        return Err(StatsError::ZeroVariance { what, n: xs.len() });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Mean, std, percentile

fn mean_unchecked(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Mean and sample standard deviation of `xs` (std 0 for one value); refuses an empty or
/// non-finite input.
pub fn mean_std(xs: &[f64]) -> Result<MeanStd> {
    check_sample("xs", xs, 1)?;
    let n = xs.len();
    let mean = mean_unchecked(xs);
    let std = if n == 1 {
        0.0
    } else {
        let ss: f64 = xs.iter().map(|&v| (v - mean) * (v - mean)).sum();
        (ss / (n - 1) as f64).sqrt()
    };
    Ok(MeanStd { n, mean, std })
}

/// numpy's "linear" percentile of already sorted, non-empty `v` at `q` ∈ [0, 1].
fn percentile_sorted(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let j = h.floor() as usize;
    if j + 1 >= v.len() {
        return v[v.len() - 1];
    }
    let frac = h - j as f64;
    v[j] + frac * (v[j + 1] - v[j])
}

/// The `q`-quantile (`q` ∈ [0, 1], not 0–100) of `xs` by numpy's default "linear" method:
/// h = (m − 1)q over the sorted values, interpolating between the two values around h.
pub fn percentile(xs: &[f64], q: f64) -> Result<f64> {
    check_sample("xs", xs, 1)?;
    if !(0.0..=1.0).contains(&q) {
        return Err(StatsError::InvalidQuantile(q));
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    Ok(percentile_sorted(&v, q))
}

/// The percentile interval [P((1 − level)/2), P((1 + level)/2)] of bootstrap statistics
/// (sorted in place).
fn percentile_interval(stats: &mut [f64], level: f64) -> (f64, f64) {
    stats.sort_by(f64::total_cmp);
    let alpha = 1.0 - level;
    (
        percentile_sorted(stats, alpha / 2.0),
        percentile_sorted(stats, 1.0 - alpha / 2.0),
    )
}

// ---------------------------------------------------------------------------------------------
// The resampling stream

/// A uniform index in 0..n (n ≥ 1) by Lemire's multiply-and-reject: unbiased.
fn below(g: &mut SplitMix64, n: u64) -> u64 {
    let threshold = n.wrapping_neg() % n; // 2⁶⁴ mod n
    loop {
        let m = u128::from(g.next_u64()) * u128::from(n);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// The indices of bootstrap resample `r` of `n` items under `seed`: n draws with
/// replacement from 0..n, from the stream `SplitMix64::new(splitmix64(seed ⊕ splitmix64(r)))`.
/// Written into `out` (cleared first). Every bootstrap in this module draws through this
/// function, so a test can rebuild any interval from it.
pub fn resample_indices(seed: u64, r: u64, n: usize, out: &mut Vec<usize>) {
    out.clear();
    if n == 0 {
        return;
    }
    let mut g = SplitMix64::new(splitmix64(seed ^ splitmix64(r)));
    out.extend((0..n).map(|_| below(&mut g, n as u64) as usize));
}

/// The percentile bootstrap of the mean of already validated `xs`.
fn bootstrap_mean_unchecked(xs: &[f64], resamples: usize, seed: u64, level: f64) -> Interval {
    let n = xs.len();
    let mut idx = Vec::with_capacity(n);
    let mut stats: Vec<f64> = (0..resamples as u64)
        .map(|r| {
            resample_indices(seed, r, n, &mut idx);
            idx.iter().map(|&i| xs[i]).sum::<f64>() / n as f64
        })
        .collect();
    let (lo, hi) = percentile_interval(&mut stats, level);
    Interval {
        estimate: mean_unchecked(xs),
        lo,
        hi,
        level,
        resamples,
        skipped: 0,
    }
}

/// The percentile-bootstrap `level` interval (e.g. 0.95) of the mean of `xs` (≥ 2 values),
/// from `resamples` resamples of `seed`.
pub fn bootstrap_mean(xs: &[f64], resamples: usize, seed: u64, level: f64) -> Result<Interval> {
    check_sample("xs", xs, 2)?;
    check_bootstrap(resamples, level)?;
    Ok(bootstrap_mean_unchecked(xs, resamples, seed, level))
}

/// The paired percentile bootstrap of mean(a − b): `a` and `b` are per-item scores of two
/// models on the same items (e.g. VQA accuracy per question), in the same order. The items
/// are resampled, each keeping its pair; `estimate` is mean(aᵢ − bᵢ) over all items.
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    seed: u64,
    level: f64,
) -> Result<Interval> {
    check_pair("a", a, "b", b, 2)?;
    check_bootstrap(resamples, level)?;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    // Two finite values can differ by more than f64::MAX.
    check_finite("a − b", &d)?;
    Ok(bootstrap_mean_unchecked(&d, resamples, seed, level))
}

// ---------------------------------------------------------------------------------------------
// Correlations

/// Pearson r of validated, non-constant `x` and `y`.
fn pearson_unchecked(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean_unchecked(x), mean_unchecked(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    // √(sxx·syy) rounds twice, √sxx·√syy three times; the latter only where the product
    // would overflow or underflow.
    let denom = match (sxx * syy).sqrt() {
        d if d.is_normal() => d,
        _ => sxx.sqrt() * syy.sqrt(),
    };
    (sxy / denom).clamp(-1.0, 1.0)
}

/// Average ranks (1…n, ties sharing the mean of the ranks they span) of validated `xs`.
fn ranks_unchecked(xs: &[f64]) -> Vec<f64> {
    let n = xs.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| xs[i].total_cmp(&xs[j]));
    let mut ranks = vec![0.0; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && xs[order[end]] == xs[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Kendall tau-b of validated, non-constant `x` and `y`, counting all pairs (O(n²)).
fn kendall_unchecked(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    // concordant − discordant, pairs untied in x, pairs untied in y.
    let (mut s, mut untied_x, mut untied_y) = (0i64, 0u64, 0u64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = x[i].total_cmp(&x[j]) as i64;
            let dy = y[i].total_cmp(&y[j]) as i64;
            // total_cmp orders −0 before +0; they are equal values here.
            let dx = if x[i] == x[j] { 0 } else { dx };
            let dy = if y[i] == y[j] { 0 } else { dy };
            s += dx * dy;
            untied_x += u64::from(dx != 0);
            untied_y += u64::from(dy != 0);
        }
    }
    // The product is exact in f64 up to n ≈ 9,000 points.
    (s as f64 / (untied_x as f64 * untied_y as f64).sqrt()).clamp(-1.0, 1.0)
}

/// The coefficient of validated `x`, `y`; `None` if either is constant.
fn correlation_unchecked(x: &[f64], y: &[f64], kind: CorrelationKind) -> Option<f64> {
    if is_constant(x) || is_constant(y) {
        return None;
    }
    Some(match kind {
        CorrelationKind::Pearson => pearson_unchecked(x, y),
        CorrelationKind::Spearman => pearson_unchecked(&ranks_unchecked(x), &ranks_unchecked(y)),
        CorrelationKind::Kendall => kendall_unchecked(x, y),
    })
}

/// Average ranks of `xs` (1…n; tied values share the mean of the ranks they span), as
/// `scipy.stats.rankdata(method="average")`.
pub fn ranks(xs: &[f64]) -> Result<Vec<f64>> {
    check_sample("xs", xs, 1)?;
    Ok(ranks_unchecked(xs))
}

/// The `kind` coefficient of paired `x` and `y` (≥ 2 points, neither constant).
pub fn correlation(x: &[f64], y: &[f64], kind: CorrelationKind) -> Result<f64> {
    check_pair("x", x, "y", y, 2)?;
    check_varies("x", x)?;
    check_varies("y", y)?;
    correlation_unchecked(x, y, kind).ok_or(StatsError::ZeroVariance {
        what: "x",
        n: x.len(),
    })
}

/// Pearson's r of paired `x` and `y`.
pub fn pearson(x: &[f64], y: &[f64]) -> Result<f64> {
    correlation(x, y, CorrelationKind::Pearson)
}

/// Spearman's ρ (Pearson on average ranks) of paired `x` and `y`.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64> {
    correlation(x, y, CorrelationKind::Spearman)
}

/// Kendall's tau-b of paired `x` and `y` (O(n²): meant for tens to hundreds of points).
pub fn kendall(x: &[f64], y: &[f64]) -> Result<f64> {
    correlation(x, y, CorrelationKind::Kendall)
}

/// The `kind` coefficient of `x`, `y` with a percentile-bootstrap `level` interval over
/// points: each resample draws n (xᵢ, yᵢ) pairs with replacement. A resample whose x or y
/// is constant has no coefficient and is counted in [`Interval::skipped`] instead.
pub fn correlation_interval(
    x: &[f64],
    y: &[f64],
    kind: CorrelationKind,
    resamples: usize,
    seed: u64,
    level: f64,
) -> Result<Interval> {
    let estimate = correlation(x, y, kind)?;
    check_bootstrap(resamples, level)?;
    let n = x.len();
    let (mut idx, mut xr, mut yr) = (Vec::with_capacity(n), vec![0.0; n], vec![0.0; n]);
    let mut stats = Vec::with_capacity(resamples);
    for r in 0..resamples as u64 {
        resample_indices(seed, r, n, &mut idx);
        for (k, &i) in idx.iter().enumerate() {
            xr[k] = x[i];
            yr[k] = y[i];
        }
        if let Some(c) = correlation_unchecked(&xr, &yr, kind) {
            stats.push(c);
        }
    }
    let skipped = resamples - stats.len();
    if stats.is_empty() {
        return Err(StatsError::AllResamplesDegenerate { resamples });
    }
    let (lo, hi) = percentile_interval(&mut stats, level);
    Ok(Interval {
        estimate,
        lo,
        hi,
        level,
        resamples,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut g = SplitMix64::new(7);
        let mut seen = [0usize; 5];
        for _ in 0..5_000 {
            seen[below(&mut g, 5) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        assert_eq!(below(&mut g, 1), 0);
    }

    #[test]
    fn percentile_sorted_ends() {
        let v = [1.0, 2.0, 4.0];
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&v, 1.0), 4.0);
        assert_eq!(percentile_sorted(&v, 0.75), 3.0);
        assert_eq!(percentile_sorted(&[5.0], 0.3), 5.0);
    }

    #[test]
    fn signed_zero_ties() {
        let r = ranks_unchecked(&[0.0, -0.0, 1.0]);
        assert_eq!(r, vec![1.5, 1.5, 3.0]);
        let t = kendall_unchecked(&[0.0, -0.0, 1.0], &[1.0, 2.0, 3.0]);
        assert!((t - 2.0 / 6f64.sqrt()).abs() < 1e-15, "{t}");
    }
}
