//! Linear assignment, maximising: the permutation σ that maximises Σᵢ S[i, σ(i)] over a square
//! n×n score matrix, by the shortest-augmenting-path Hungarian method with row and column
//! potentials (Kuhn 1955, Munkres 1957; the O(n³) form of Jonker & Volgenant 1987): costs are
//! c = −S, and row i is added by growing a Dijkstra-like tree over reduced costs
//! c(i, j) − u(i) − v(j) ≥ 0 until a free column is reached.
//!
//! Deterministic: ties are broken towards the lowest column index (strict comparisons in index
//! order), so equal inputs give equal outputs. Non-finite scores are rejected (`AlignError::Lap`),
//! not given a meaning.

use super::AlignError;

/// The row → column assignment maximising the total score of `scores` (n×n, row-major):
/// row `i` is assigned column `col[i]`.
pub fn solve_max(scores: &[f64], n: usize) -> Result<Vec<usize>, AlignError> {
    if scores.len() != n * n {
        return Err(AlignError::Lap(format!(
            "{} scores for a {n}×{n} matrix (expected {})",
            scores.len(),
            n * n
        )));
    }
    if let Some(k) = scores.iter().position(|s| !s.is_finite()) {
        return Err(AlignError::Lap(format!(
            "score ({}, {}) is {}",
            k / n,
            k % n,
            scores[k]
        )));
    }
    // 1-based arrays; column 0 is the virtual root of each search tree.
    let cost = |i: usize, j: usize| -scores[(i - 1) * n + (j - 1)];
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; n + 1];
    let mut row_of = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_v = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=n {
                if used[j] {
                    continue;
                }
                let reduced = cost(i0, j) - u[i0] - v[j];
                if reduced < min_v[j] {
                    min_v[j] = reduced;
                    way[j] = j0;
                }
                if j1 == 0 || min_v[j] < delta {
                    delta = min_v[j];
                    j1 = j;
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_v[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut col = vec![0; n];
    for j in 1..=n {
        col[row_of[j] - 1] = j - 1;
    }
    Ok(col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmerge_core::hash::SplitMix64;

    fn brute_force(s: &[f64], n: usize) -> f64 {
        fn go(s: &[f64], n: usize, i: usize, used: &mut Vec<bool>) -> f64 {
            if i == n {
                return 0.0;
            }
            let mut best = f64::NEG_INFINITY;
            for j in 0..n {
                if !used[j] {
                    used[j] = true;
                    best = best.max(s[i * n + j] + go(s, n, i + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        go(s, n, 0, &mut vec![false; n])
    }

    #[test]
    fn matches_brute_force_on_random_and_tied_matrices() {
        let mut rng = SplitMix64::new(7);
        let mut cases = 0;
        for n in 1..=7 {
            for trial in 0..40 {
                let s: Vec<f64> = (0..n * n)
                    .map(|_| {
                        let x = f64::from(rng.signed_unit_f32());
                        // Every other matrix has small integer scores: many ties.
                        if trial % 2 == 0 {
                            x * 10.0
                        } else {
                            (x * 3.0).round()
                        }
                    })
                    .collect();
                let col = solve_max(&s, n).unwrap();
                let mut seen = vec![false; n];
                for &j in &col {
                    assert!(!seen[j], "not a permutation: {col:?}");
                    seen[j] = true;
                }
                let total: f64 = col.iter().enumerate().map(|(i, &j)| s[i * n + j]).sum();
                assert!((total - brute_force(&s, n)).abs() < 1e-9, "n={n} {s:?}");
                assert_eq!(col, solve_max(&s, n).unwrap(), "deterministic");
                cases += 1;
            }
        }
        assert_eq!(cases, 280);
    }

    #[test]
    fn empty_and_bad_input() {
        assert_eq!(solve_max(&[], 0).unwrap(), Vec::<usize>::new());
        let e = solve_max(&[1.0, 2.0, 3.0], 2).unwrap_err().to_string();
        assert!(e.contains("3 scores") && e.contains("expected 4"), "{e}");
        let e = solve_max(&[1.0, f64::NAN, 3.0, 4.0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(0, 1)") && e.contains("NaN"), "{e}");
        let e = solve_max(&[1.0, 2.0, f64::NEG_INFINITY, 4.0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(1, 0)") && e.contains("-inf"), "{e}");
    }
}
