//! Solvers on a unit's 2O×2O similarity S (model A's O features first, then model B's).
//!
//! - Align (Git Re-Basin arXiv 2209.04836; MuDSC `permute_weight`): σ = argmax_σ Σᵢ S[i, O+σ(i)]
//!   by linear assignment on the cross block; B's feature σ(i) moves to position i. Value: the
//!   mean matched similarity.
//! - Group align (MuDSC arXiv 2403.01753, `group_permute_weight`), G heads of O_g = O/G dims:
//!   for every head pair (j, k) assign within the pair's O_g×O_g cross block and score it by its
//!   mean matched similarity C[j, k]; assign heads on C; the permutation concatenates the
//!   matched pairs' within-head assignments, so heads move whole and dims only within a head.
//! - Zip (ZipIt arXiv 2305.03053, `match_tensors_zipit`; MuDSC's defaults r = 0.5, α = 0.5,
//!   β = 1): diag(S) = −∞; repeatedly merge the most similar pair (i < j) of remaining columns
//!   into column i, S[·, i] ← α·min(S[·, i], S[·, j]) (α ≤ 0: the two models' entries of
//!   column i become −∞), until ⌊2O(1−r)⌋ columns remain (at least 1). Each model may merge
//!   within itself ⌊⌊(2O − kept)/2⌋·β⌋ times; then its block is −∞. Ties go to the first pair in
//!   row-major order. Unmerge U = P (0/1, [2O, O_new]), merge M = P / colsum(P), split per
//!   model into [O, O_new] blocks. Value: the mean similarity of the merged pairs.
//! - Group zip: heads matched as in group align, then each matched head pair is zipped on its
//!   own 2O_g×2O_g block to ⌊2O_g(1−r)⌋ dims with its own budgets; merged heads stay contiguous.
//!
//! Deviations: merge = P / colsum exactly (the reference divides by colsum + 1e-5 against empty
//! columns, which cannot occur: every column holds a feature), so merging identical models is
//! exact. A zero within-model budget forbids within-model merges from the start. Group zip's
//! budget is ⌊⌊(2O_g − kept_g)/2⌋·β⌋ per head pair (MuDSC: the whole unit's budget ÷ G with
//! β = 1, equal for β = 1). A zip with no admissible pair left is an error (reference: merges a
//! −∞ pair).

use super::AlignError;
use super::lap::solve_max;

/// A unit's solution.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// B's feature order: position i of aligned B holds B's feature `perm[i]`; A is unchanged.
    Perm(Vec<usize>),
    /// Per model i ∈ {A, B}: `merge[i]`, `unmerge[i]` are [O, new_width] row-major.
    Zip {
        merge: [Vec<f64>; 2],
        unmerge: [Vec<f64>; 2],
        new_width: usize,
    },
}

impl Transform {
    /// The unit's width after the transform.
    pub fn new_width(&self) -> usize {
        match self {
            Transform::Perm(p) => p.len(),
            Transform::Zip { new_width, .. } => *new_width,
        }
    }
}

/// Align: B's feature order and the mean matched similarity.
pub fn align(s: &[f64], width: usize, groups: usize) -> Result<(Vec<usize>, f64), AlignError> {
    let cross = cross_block(s, width)?;
    if groups <= 1 {
        let perm = solve_max(&cross, width)?;
        let value = mean_matched(&cross, width, &perm);
        return Ok((perm, value));
    }
    let heads = match_heads(&cross, width, groups)?;
    let og = width / groups;
    let mut perm = Vec::with_capacity(width);
    let mut value = 0.0;
    for (k, within, v) in heads {
        perm.extend(within.iter().map(|&x| k * og + x));
        value += v / groups as f64;
    }
    Ok((perm, value))
}

/// Zip with reduction `r`, repeat-merge factor `alpha` and within-model budget factor `beta`:
/// the transform and the mean similarity of the merged pairs.
pub fn zip(
    s: &[f64],
    width: usize,
    groups: usize,
    [r, alpha, beta]: [f64; 3],
) -> Result<(Transform, f64), AlignError> {
    let cross = cross_block(s, width)?;
    for (name, value, ok) in [
        ("r", r, (0.0..1.0).contains(&r)),
        ("a", alpha, alpha.is_finite()),
        ("b", beta, beta.is_finite() && beta >= 0.0),
    ] {
        if !ok {
            return Err(AlignError::Param {
                name,
                value,
                expected: "r in [0, 1), finite a, finite b ≥ 0".into(),
            });
        }
    }
    let n2 = 2 * width;
    let origin = |i: usize| usize::from(i >= width);
    let run = |features: &[usize]| {
        let m = features.len();
        let sub: Vec<f64> = features
            .iter()
            .flat_map(|&i| features.iter().map(move |&j| s[i * n2 + j]))
            .collect();
        let keep = ((m as f64 * (1.0 - r)) as usize).max(1);
        let budget = (((m - keep) / 2) as f64 * beta) as usize;
        let org: Vec<usize> = features.iter().map(|&i| origin(i)).collect();
        let (clusters, values) = zip_core(&sub, &org, keep, budget, alpha)?;
        let global: Vec<Vec<usize>> = clusters
            .into_iter()
            .map(|c| c.into_iter().map(|k| features[k]).collect())
            .collect();
        Ok::<_, AlignError>((global, values))
    };
    let (clusters, values) = if groups <= 1 {
        run(&(0..n2).collect::<Vec<_>>())?
    } else {
        let og = width / groups;
        let mut all = (Vec::new(), Vec::new());
        for (j, (k, _, _)) in match_heads(&cross, width, groups)?.into_iter().enumerate() {
            let features: Vec<usize> = (j * og..(j + 1) * og)
                .chain(width + k * og..width + (k + 1) * og)
                .collect();
            let (c, v) = run(&features)?;
            all.0.extend(c);
            all.1.extend(v);
        }
        all
    };
    let new_width = clusters.len();
    let mut merge = [vec![0.0; width * new_width], vec![0.0; width * new_width]];
    let mut unmerge = merge.clone();
    for (c, members) in clusters.iter().enumerate() {
        for &f in members {
            let (model, k) = (origin(f), f % width);
            unmerge[model][k * new_width + c] = 1.0;
            merge[model][k * new_width + c] = 1.0 / members.len() as f64;
        }
    }
    let value = values.iter().sum::<f64>() / values.len().max(1) as f64;
    Ok((
        Transform::Zip {
            merge,
            unmerge,
            new_width,
        },
        value,
    ))
}

/// The cross block S[0:O, O:2O] (O×O), after checking the size of `s`.
fn cross_block(s: &[f64], width: usize) -> Result<Vec<f64>, AlignError> {
    let n2 = 2 * width;
    if s.len() != n2 * n2 {
        return Err(AlignError::Solver(format!(
            "similarity has {} entries, expected (2·{width})² = {}",
            s.len(),
            n2 * n2
        )));
    }
    Ok((0..width)
        .flat_map(|i| s[i * n2 + width..(i + 1) * n2].iter().copied())
        .collect())
}

fn mean_matched(m: &[f64], n: usize, perm: &[usize]) -> f64 {
    perm.iter()
        .enumerate()
        .map(|(i, &j)| m[i * n + j])
        .sum::<f64>()
        / n.max(1) as f64
}

/// Two-level head matching on the O×O cross block: for each head j of A, (the matched head k
/// of B, the within-pair assignment, the pair's mean matched similarity).
fn match_heads(
    cross: &[f64],
    width: usize,
    groups: usize,
) -> Result<Vec<(usize, Vec<usize>, f64)>, AlignError> {
    let og = width / groups;
    let mut within = Vec::with_capacity(groups * groups);
    let mut corr = Vec::with_capacity(groups * groups);
    for j in 0..groups {
        for k in 0..groups {
            let block: Vec<f64> = (0..og)
                .flat_map(|a| (0..og).map(move |b| cross[(j * og + a) * width + k * og + b]))
                .collect();
            let perm = solve_max(&block, og)?;
            corr.push(mean_matched(&block, og, &perm));
            within.push(perm);
        }
    }
    let heads = solve_max(&corr, groups)?;
    Ok(heads
        .into_iter()
        .enumerate()
        .map(|(j, k)| {
            (
                k,
                std::mem::take(&mut within[j * groups + k]),
                corr[j * groups + k],
            )
        })
        .collect())
}

/// The greedy zip on an m×m symmetric similarity with model ids `origin` (0 or 1): merges
/// until `keep` columns remain; the clusters of feature indices in column order, and the merge
/// values.
fn zip_core(
    s: &[f64],
    origin: &[usize],
    keep: usize,
    budget: usize,
    alpha: f64,
) -> Result<(Vec<Vec<usize>>, Vec<f64>), AlignError> {
    let m = origin.len();
    let mut s = s.to_vec();
    if let Some(k) = s.iter().position(|v| v.is_nan()) {
        return Err(AlignError::Solver(format!("similarity entry {k} is NaN")));
    }
    for i in 0..m {
        s[i * m + i] = f64::NEG_INFINITY;
    }
    let mask_block = |s: &mut [f64], model: usize| {
        for i in (0..m).filter(|&i| origin[i] == model) {
            for j in (0..m).filter(|&j| origin[j] == model) {
                s[i * m + j] = f64::NEG_INFINITY;
            }
        }
    };
    if budget == 0 {
        mask_block(&mut s, 0);
        mask_block(&mut s, 1);
    }
    let mut budget = [budget; 2];
    let mut clusters: Vec<Vec<usize>> = (0..m).map(|i| vec![i]).collect();
    let mut alive = vec![true; m];
    let mut values = Vec::new();
    for _ in keep..m {
        let mut best = (0, 0, f64::NEG_INFINITY);
        for i in (0..m).filter(|&i| alive[i]) {
            for j in (i + 1..m).filter(|&j| alive[j]) {
                if s[i * m + j] > best.2 {
                    best = (i, j, s[i * m + j]);
                }
            }
        }
        let (i, j, v) = best;
        if v == f64::NEG_INFINITY {
            return Err(AlignError::Solver(format!(
                "zip: no admissible pair left with {} columns (target {keep})",
                m - values.len()
            )));
        }
        values.push(v);
        let moved = std::mem::take(&mut clusters[j]);
        clusters[i].extend(moved);
        alive[j] = false;
        for k in (0..m).filter(|&k| alive[k] && k != i) {
            let new = if alpha > 0.0 {
                alpha * s[k * m + i].min(s[k * m + j])
            } else if origin[k] == origin[i] || origin[k] == origin[j] {
                f64::NEG_INFINITY
            } else {
                s[k * m + i].min(s[k * m + j])
            };
            s[k * m + i] = new;
            s[i * m + k] = new;
        }
        if origin[i] == origin[j] {
            let o = origin[i];
            budget[o] = budget[o].saturating_sub(1);
            if budget[o] == 0 {
                mask_block(&mut s, o);
            }
        }
    }
    let clusters = clusters.into_iter().filter(|c| !c.is_empty()).collect();
    Ok((clusters, values))
}
