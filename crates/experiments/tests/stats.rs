//! `mmerge_experiments::stats` against scipy/numpy goldens (`fixtures/stats_golden.json`,
//! written by `fixtures/make_stats_golden.py`), against plain float64 oracles written here
//! independently of the module, and the bootstrap's determinism, coverage and shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmerge_core::hash::SplitMix64;
use mmerge_experiments::stats::{
    CorrelationKind, Interval, StatsError, bootstrap_mean, correlation, correlation_interval,
    kendall, mean_std, paired_bootstrap, pearson, percentile, ranks, resample_indices, spearman,
};
use proptest::prelude::*;
use serde_json::Value;

const TOL: f64 = 1e-12;

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stats_golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= TOL,
        "{what}: got {got:e}, scipy/numpy {want:e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Oracles: the textbook definitions, sharing nothing with the module.

/// Rank = 1 + #smaller + (#equal − 1)/2, O(n²).
fn oracle_ranks(xs: &[f64]) -> Vec<f64> {
    xs.iter()
        .map(|&v| {
            let less = xs.iter().filter(|&&w| w < v).count() as f64;
            let equal = xs.iter().filter(|&&w| w == v).count() as f64;
            1.0 + less + (equal - 1.0) / 2.0
        })
        .collect()
}

/// r = Σ z_x z_y / (n − 1) with sample standard deviations.
fn oracle_pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sx = (x.iter().map(|v| (v - mx).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let sy = (y.iter().map(|v| (v - my).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - mx) / sx * ((b - my) / sy))
        .sum::<f64>()
        / (n - 1.0)
}

fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// τ_b = Σ_{i<j} sgn(Δx)sgn(Δy) / √(Σ sgn(Δx)² · Σ sgn(Δy)²).
fn oracle_kendall(x: &[f64], y: &[f64]) -> f64 {
    let (mut s, mut tx, mut ty) = (0.0, 0.0, 0.0);
    for i in 0..x.len() {
        for j in 0..i {
            let (a, b) = (sign(x[i] - x[j]), sign(y[i] - y[j]));
            s += a * b;
            tx += a * a;
            ty += b * b;
        }
    }
    s / (tx * ty).sqrt()
}

// ---------------------------------------------------------------------------------------------
// Goldens

#[test]
fn correlations_match_scipy() {
    let g = golden();
    let cases = g["correlations"].as_object().unwrap();
    assert!(cases.len() >= 5);
    for (name, case) in cases {
        let (x, y) = (floats(&case["x"]), floats(&case["y"]));
        let want = |k: &str| case[k].as_f64().unwrap();
        close(
            pearson(&x, &y).unwrap(),
            want("pearson"),
            &format!("{name} pearson"),
        );
        close(
            spearman(&x, &y).unwrap(),
            want("spearman"),
            &format!("{name} spearman"),
        );
        close(
            kendall(&x, &y).unwrap(),
            want("kendall"),
            &format!("{name} kendall"),
        );
        assert_eq!(
            ranks(&x).unwrap(),
            floats(&case["ranks_x"]),
            "{name} ranks x"
        );
        assert_eq!(
            ranks(&y).unwrap(),
            floats(&case["ranks_y"]),
            "{name} ranks y"
        );
        for kind in CorrelationKind::ALL {
            let iv = correlation_interval(&x, &y, kind, 200, 1, 0.95).unwrap();
            assert_eq!(
                iv.estimate,
                correlation(&x, &y, kind).unwrap(),
                "{name} {kind:?}"
            );
        }
    }
}

#[test]
fn mean_std_matches_numpy() {
    let g = golden();
    for (name, case) in g["mean_std"].as_object().unwrap() {
        let xs = floats(&case["xs"]);
        let m = mean_std(&xs).unwrap();
        assert_eq!(m.n, xs.len());
        close(
            m.mean,
            case["mean"].as_f64().unwrap(),
            &format!("{name} mean"),
        );
        close(m.std, case["std"].as_f64().unwrap(), &format!("{name} std"));
    }
}

#[test]
fn percentile_matches_numpy_linear() {
    let g = golden();
    for (name, case) in g["percentiles"].as_object().unwrap() {
        let xs = floats(&case["xs"]);
        for (q, want) in floats(&case["q"]).into_iter().zip(floats(&case["values"])) {
            close(percentile(&xs, q).unwrap(), want, &format!("{name} q={q}"));
        }
    }
}

#[test]
fn percentile_by_hand() {
    // Sorted 1..=10, q = 0.1: h = 9·0.1 = 0.9, between v₀ = 1 and v₁ = 2 → 1.9.
    // q = 0.9: h = 8.1 → 9 + 0.1·(10 − 9) = 9.1. q = 0.5: h = 4.5 → 5.5.
    let xs: Vec<f64> = (1..=10).rev().map(f64::from).collect();
    assert!((percentile(&xs, 0.1).unwrap() - 1.9).abs() < 1e-15);
    assert!((percentile(&xs, 0.9).unwrap() - 9.1).abs() < 1e-15);
    assert_eq!(percentile(&xs, 0.5).unwrap(), 5.5);
    // Four values, q = 0.25: h = 0.75 → 0 + 0.75·(4 − 0) = 3.
    assert_eq!(percentile(&[4.0, 0.0, 8.0, 12.0], 0.25).unwrap(), 3.0);
    assert_eq!(percentile(&[7.0], 0.975).unwrap(), 7.0);
}

// ---------------------------------------------------------------------------------------------
// Oracles on random data with ties

/// `n` values rounded to `levels` distinct steps, so ties are common.
fn tied_values(g: &mut SplitMix64, n: usize, levels: f64) -> Vec<f64> {
    (0..n)
        .map(|_| (f64::from(g.signed_unit_f32()) * levels).round() / levels)
        .collect()
}

#[test]
fn correlations_match_oracles_on_tied_data() {
    let mut g = SplitMix64::new(42);
    for case in 0..200 {
        let n = 2 + case % 40;
        let levels = [2.0, 4.0, 1e6][case % 3];
        let x = tied_values(&mut g, n, levels);
        let y: Vec<f64> = x
            .iter()
            .zip(tied_values(&mut g, n, levels))
            .map(|(a, b)| if case % 2 == 0 { a + b } else { b - 0.5 * a })
            .collect();
        if x.iter().all(|&v| v == x[0]) || y.iter().all(|&v| v == y[0]) {
            assert!(matches!(
                pearson(&x, &y),
                Err(StatsError::ZeroVariance { .. })
            ));
            continue;
        }
        let tol = 1e-12;
        let (rx, ry) = (oracle_ranks(&x), oracle_ranks(&y));
        assert_eq!(ranks(&x).unwrap(), rx, "case {case}");
        let p = pearson(&x, &y).unwrap();
        assert!(
            (p - oracle_pearson(&x, &y)).abs() < tol,
            "case {case} pearson"
        );
        let s = spearman(&x, &y).unwrap();
        assert!(
            (s - oracle_pearson(&rx, &ry)).abs() < tol,
            "case {case} spearman"
        );
        let k = kendall(&x, &y).unwrap();
        assert!(
            (k - oracle_kendall(&x, &y)).abs() < tol,
            "case {case} kendall"
        );
        assert!([p, s, k].iter().all(|c| (-1.0..=1.0).contains(c)));
    }
}

#[test]
fn two_points_and_perfect_orders() {
    assert_eq!(pearson(&[1.0, 2.0], &[5.0, 3.0]).unwrap(), -1.0);
    let x = [0.3, 0.1, 0.9, 0.5];
    let y: Vec<f64> = x.iter().map(|v: &f64| v.exp()).collect();
    assert_eq!(spearman(&x, &y).unwrap(), 1.0);
    assert_eq!(kendall(&x, &y).unwrap(), 1.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn kendall_and_spearman_match_oracles(
        pts in prop::collection::vec((0i32..6, -3i32..3), 2..30)
    ) {
        let x: Vec<f64> = pts.iter().map(|p| f64::from(p.0)).collect();
        let y: Vec<f64> = pts.iter().map(|p| f64::from(p.1) * 0.25).collect();
        prop_assume!(x.iter().any(|&v| v != x[0]) && y.iter().any(|&v| v != y[0]));
        prop_assert!((kendall(&x, &y).unwrap() - oracle_kendall(&x, &y)).abs() < 1e-12);
        let want = oracle_pearson(&oracle_ranks(&x), &oracle_ranks(&y));
        prop_assert!((spearman(&x, &y).unwrap() - want).abs() < 1e-12);
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

fn bits(iv: &Interval) -> [u64; 4] {
    [iv.estimate, iv.lo, iv.hi, iv.level].map(f64::to_bits)
}

/// Per-item 0/1 correctness of a model with accuracy ≈ `p` on `n` items.
fn accuracies(g: &mut SplitMix64, n: usize, p: f64) -> Vec<f64> {
    (0..n)
        .map(|_| f64::from(u8::from(mmerge_core::hash::unit_f64(g.next_u64()) < p)))
        .collect()
}

#[test]
fn bootstrap_is_deterministic_and_seeded() {
    let mut g = SplitMix64::new(3);
    let (a, b) = (accuracies(&mut g, 500, 0.7), accuracies(&mut g, 500, 0.65));
    let one = paired_bootstrap(&a, &b, 1000, 11, 0.95).unwrap();
    let two = paired_bootstrap(&a, &b, 1000, 11, 0.95).unwrap();
    assert_eq!(bits(&one), bits(&two));
    let other = paired_bootstrap(&a, &b, 1000, 12, 0.95).unwrap();
    assert_eq!(one.estimate, other.estimate);
    assert_ne!((one.lo, one.hi), (other.lo, other.hi));
    let x: Vec<f64> = a.iter().zip(&b).map(|(p, q)| p + 0.3 * q).collect();
    for kind in CorrelationKind::ALL {
        let c1 = correlation_interval(&x[..40], &a[..40], kind, 300, 5, 0.9).unwrap();
        let c2 = correlation_interval(&x[..40], &a[..40], kind, 300, 5, 0.9).unwrap();
        assert_eq!(bits(&c1), bits(&c2));
        assert_eq!(c1.skipped, c2.skipped);
    }
}

#[test]
fn bootstrap_rebuilds_from_the_documented_stream() {
    let xs = [0.2, 1.5, -0.3, 0.9, 2.2, 0.0, 0.4];
    let (resamples, seed, level) = (101, 77, 0.8);
    let iv = bootstrap_mean(&xs, resamples, seed, level).unwrap();
    let mut idx = Vec::new();
    let means: Vec<f64> = (0..resamples as u64)
        .map(|r| {
            resample_indices(seed, r, xs.len(), &mut idx);
            assert_eq!(idx.len(), xs.len());
            idx.iter().map(|&i| xs[i]).sum::<f64>() / xs.len() as f64
        })
        .collect();
    // level 0.8: the 0.1 and 0.9 quantiles of the 101 means; h = 10 and 90, exact order
    // statistics, so numpy's linear rule returns the 11th and 91st smallest.
    let mut sorted = means.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(iv.lo.to_bits(), percentile(&means, 0.1).unwrap().to_bits());
    assert_eq!(iv.hi.to_bits(), percentile(&means, 0.9).unwrap().to_bits());
    assert_eq!(iv.lo, sorted[10]);
    assert_eq!(iv.hi, sorted[90]);
    assert_eq!(iv.estimate, xs.iter().sum::<f64>() / 7.0);
    assert_eq!((iv.resamples, iv.skipped, iv.level), (101, 0, 0.8));
}

#[test]
fn paired_bootstrap_is_the_bootstrap_of_the_differences() {
    let mut g = SplitMix64::new(9);
    let (a, b) = (accuracies(&mut g, 300, 0.6), accuracies(&mut g, 300, 0.5));
    let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    let paired = paired_bootstrap(&a, &b, 500, 4, 0.95).unwrap();
    assert_eq!(
        bits(&paired),
        bits(&bootstrap_mean(&d, 500, 4, 0.95).unwrap())
    );
    // Identical models: every resampled difference is 0.
    let same = paired_bootstrap(&a, &a, 100, 4, 0.95).unwrap();
    assert_eq!((same.estimate, same.lo, same.hi), (0.0, 0.0, 0.0));
}

#[test]
fn interval_contains_the_estimate_and_narrows_with_items() {
    let mut g = SplitMix64::new(21);
    let mut widths = Vec::new();
    for n in [300, 3000] {
        let (a, b) = (accuracies(&mut g, n, 0.72), accuracies(&mut g, n, 0.70));
        let iv = paired_bootstrap(&a, &b, 2000, 1, 0.95).unwrap();
        assert!(iv.lo <= iv.estimate && iv.estimate <= iv.hi, "{iv:?}");
        assert!(iv.lo < iv.hi);
        widths.push(iv.hi - iv.lo);
    }
    // Width ∝ 1/√n: ten times the items, about a third of the width.
    let ratio = widths[0] / widths[1];
    assert!((2.5..4.0).contains(&ratio), "{widths:?}");
}

#[test]
fn the_95_percent_interval_covers_about_95_percent() {
    // 200 data sets of 100 items with true mean 0.5; the percentile interval of the mean
    // should cover 0.5 in roughly 95 % of them (slightly less at n = 100: it is known to
    // undercover a little).
    let mut g = SplitMix64::new(1234);
    let mut covered = 0;
    for k in 0..200 {
        let xs: Vec<f64> = (0..100)
            .map(|_| mmerge_core::hash::unit_f64(g.next_u64()))
            .collect();
        let iv = bootstrap_mean(&xs, 500, k, 0.95).unwrap();
        covered += usize::from(iv.lo <= 0.5 && 0.5 <= iv.hi);
    }
    assert!((176..=198).contains(&covered), "{covered}/200");
}

#[test]
fn degenerate_correlation_resamples_are_counted() {
    // Two points: a resample drawing the same point twice has constant x (about half).
    let (x, y) = ([0.0, 1.0], [2.0, 5.0]);
    let (resamples, seed) = (400, 8);
    let iv = correlation_interval(&x, &y, CorrelationKind::Pearson, resamples, seed, 0.95).unwrap();
    let mut idx = Vec::new();
    let constant = (0..resamples as u64)
        .filter(|&r| {
            resample_indices(seed, r, 2, &mut idx);
            idx[0] == idx[1]
        })
        .count();
    assert_eq!(iv.skipped, constant);
    assert!((150..250).contains(&constant), "{constant}");
    assert_eq!((iv.estimate, iv.lo, iv.hi), (1.0, 1.0, 1.0));

    // A seed whose only resample is degenerate: an error, not an interval.
    let seed = (0..)
        .find(|&s| {
            resample_indices(s, 0, 2, &mut idx);
            idx[0] == idx[1]
        })
        .unwrap();
    assert_eq!(
        correlation_interval(&x, &y, CorrelationKind::Kendall, 1, seed, 0.95),
        Err(StatsError::AllResamplesDegenerate { resamples: 1 })
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn bad_inputs_are_refused_by_name() {
    use StatsError::*;
    assert_eq!(
        mean_std(&[]),
        Err(TooFew {
            what: "xs",
            got: 0,
            need: 1
        })
    );
    assert_eq!(mean_std(&[2.5]).unwrap().std, 0.0);
    let e = mean_std(&[1.0, f64::NAN]).unwrap_err();
    assert!(
        matches!(
            e,
            NonFinite {
                what: "xs",
                index: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.to_string(), "xs[1] is NaN, not a finite number");

    assert_eq!(
        pearson(&[1.0, 2.0, 3.0], &[1.0, 2.0]),
        Err(LengthMismatch {
            left: "x",
            left_len: 3,
            right: "y",
            right_len: 2
        })
    );
    assert!(matches!(
        spearman(&[1.0], &[2.0]),
        Err(TooFew {
            what: "x",
            got: 1,
            need: 2
        })
    ));
    let e = kendall(&[1.0, 2.0, 3.0], &[0.0, f64::INFINITY, 1.0]).unwrap_err();
    assert!(
        matches!(
            e,
            NonFinite {
                what: "y",
                index: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        kendall(&[1.0, 2.0, 3.0], &[4.0, 4.0, 4.0]),
        Err(ZeroVariance { what: "y", n: 3 })
    );
    assert_eq!(
        pearson(&[0.5, 0.5], &[1.0, 2.0]),
        Err(ZeroVariance { what: "x", n: 2 })
    );

    let ok = [0.1, 0.2, 0.3];
    assert_eq!(bootstrap_mean(&ok, 0, 1, 0.95), Err(NoResamples));
    assert_eq!(bootstrap_mean(&ok, 10, 1, 1.0), Err(InvalidLevel(1.0)));
    assert!(matches!(
        bootstrap_mean(&ok, 10, 1, f64::NAN),
        Err(InvalidLevel(_))
    ));
    assert!(matches!(
        bootstrap_mean(&[0.1], 10, 1, 0.95),
        Err(TooFew {
            what: "xs",
            got: 1,
            need: 2
        })
    ));
    assert!(matches!(
        paired_bootstrap(&ok, &[0.1, 0.2], 10, 1, 0.95),
        Err(LengthMismatch {
            left: "a",
            right: "b",
            ..
        })
    ));
    assert!(matches!(
        paired_bootstrap(&[f64::MAX, 0.0], &[-f64::MAX, 0.0], 10, 1, 0.95),
        Err(NonFinite {
            what: "a − b",
            index: 0,
            ..
        })
    ));
    assert!(matches!(
        correlation_interval(&ok, &ok, CorrelationKind::Spearman, 10, 1, 0.0),
        Err(InvalidLevel(_))
    ));
    assert_eq!(percentile(&ok, 1.5), Err(InvalidQuantile(1.5)));
}
