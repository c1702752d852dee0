//! The outer loop (MuDSC arXiv 2403.01753 `WeightFusion.transform` / `iter_transform`; Git
//! Re-Basin arXiv 2209.04836 weight matching; ZipIt arXiv 2305.03053).
//!
//! With activations (λ < 1) every unit starts from its activation-only solution on S_A. If
//! λ > 0, coordinate ascent follows: each sweep visits the units in a seeded random order
//! (Fisher–Yates on `SplitMix64(seed)`, a new order per sweep) and re-solves each on
//! S = λ·S_W + (1 − λ)·S_A, S_A frozen and S_W recomputed from the other units' current
//! transforms. The sweep's objective L is the mean over units of the solver's value (mean
//! matched similarity). If L does not exceed the best so far the transforms revert to the best
//! and a non-improving sweep is counted; the loop stops after `tol` such sweeps or `max_iter`
//! sweeps and returns the best. λ = 1 is weight matching (activations, if given, are ignored:
//! they would only change the starting point); λ = 0 is activation matching (no sweeps).
//! Without activations the units start from the identity.

use std::collections::BTreeMap;

use mmerge_core::hash::SplitMix64;

use super::similarity::{JointStats, weight_similarity};
use super::solve::{align, zip};
use super::units::{Unit, Weights, validate_units};
use super::{AlignError, Transform};

/// How a unit's similarity is turned into a transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Solver {
    /// Hungarian permutation of B into A's order (group-wise for heads).
    Align,
    /// ZipIt's greedy zip: reduction `r`, repeat-merge factor `a` (α), budget factor `b` (β).
    Zip { r: f64, a: f64, b: f64 },
}

impl Solver {
    /// Zip with MuDSC's defaults r = 0.5, α = 0.5, β = 1.
    pub const ZIP: Solver = Solver::Zip {
        r: 0.5,
        a: 0.5,
        b: 1.0,
    };
}

/// Settings of [`align_units`].
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Weight of S_W in S = λ·S_W + (1 − λ)·S_A (MuDSC's `fix_rate`), in [0, 1].
    pub lambda: f64,
    pub solver: Solver,
    /// Most coordinate-ascent sweeps (100).
    pub max_iter: usize,
    /// Non-improving sweeps before stopping (5).
    pub tol: usize,
    /// Seed of the unit order.
    pub seed: u64,
}

/// The alignment methods a user picks by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignMethod {
    /// Git Re-Basin weight matching: λ = 1, align.
    WeightMatching,
    /// Activation matching: λ = 0, align.
    ActivationMatching,
    /// ZipIt (full zip): λ = 0, zip.
    Zipit,
    /// MuDSC-Align: λ given (default 0.5), align.
    MudscAlign,
    /// MuDSC-Zip: λ given (default 0.5), zip.
    MudscZip,
}

impl AlignMethod {
    /// The methods' names, in enum order.
    pub const NAMES: [&'static str; 5] = [
        "weight_matching",
        "activation_matching",
        "zipit",
        "mudsc_align",
        "mudsc_zip",
    ];
    const ALL: [AlignMethod; 5] = [
        AlignMethod::WeightMatching,
        AlignMethod::ActivationMatching,
        AlignMethod::Zipit,
        AlignMethod::MudscAlign,
        AlignMethod::MudscZip,
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn from_name(name: &str) -> Result<Self, AlignError> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| AlignError::UnknownMethod(name.to_string()))
    }

    /// The method's options: λ only for the MuDSC methods (default 0.5), zip with
    /// [`Solver::ZIP`], 100 sweeps, tolerance 5, seed 0.
    pub fn options(self, lambda: Option<f64>) -> Result<Options, AlignError> {
        use AlignMethod::*;
        let fixed = match self {
            WeightMatching => Some(1.0),
            ActivationMatching | Zipit => Some(0.0),
            MudscAlign | MudscZip => None,
        };
        let lambda = match (fixed, lambda) {
            (Some(f), Some(l)) if l != f => {
                return Err(AlignError::Param {
                    name: "lambda",
                    value: l,
                    expected: format!("no λ: {} fixes λ = {f}", self.name()),
                });
            }
            (Some(f), _) => f,
            (None, l) => l.unwrap_or(0.5),
        };
        Ok(Options {
            lambda,
            solver: match self {
                Zipit | MudscZip => Solver::ZIP,
                _ => Solver::Align,
            },
            max_iter: 100,
            tol: 5,
            seed: 0,
        })
    }
}

/// Solves one unit's similarity (2O×2O): the transform and its value (mean matched
/// similarity).
pub fn solve(
    s: &[f64],
    width: usize,
    groups: usize,
    solver: &Solver,
) -> Result<(Transform, f64), AlignError> {
    match *solver {
        Solver::Align => align(s, width, groups).map(|(p, v)| (Transform::Perm(p), v)),
        Solver::Zip { r, a, b } => zip(s, width, groups, [r, a, b]),
    }
}

/// Aligns model B to model A unit by unit (see the module doc); `acts` holds the joint
/// activation statistics per unit name, needed by every unit when λ < 1.
pub fn align_units(
    weights_a: &Weights,
    weights_b: &Weights,
    units: &[Unit],
    acts: Option<&BTreeMap<String, JointStats>>,
    opts: &Options,
) -> Result<BTreeMap<String, Transform>, AlignError> {
    let lambda = opts.lambda;
    if !(0.0..=1.0).contains(&lambda) {
        return Err(AlignError::Lambda(lambda));
    }
    if lambda > 0.0 && opts.max_iter == 0 {
        return Err(AlignError::Param {
            name: "max_iter",
            value: 0.0,
            expected: "at least 1 sweep when λ > 0".into(),
        });
    }
    let shape_a = |k: &str| weights_a.get(k).map(|t| t.shape.clone());
    let shape_b = |k: &str| weights_b.get(k).map(|t| t.shape.clone());
    validate_units(units, [Some(&shape_a), Some(&shape_b)])?;
    let mut s_act = Vec::new();
    let mut current = Vec::with_capacity(units.len());
    let mut values = vec![0.0; units.len()];
    for u in units {
        if lambda == 1.0 {
            current.push(Transform::Perm((0..u.width).collect()));
            continue;
        }
        let stats = acts
            .and_then(|a| a.get(&u.name))
            .ok_or_else(|| AlignError::NoActivations {
                unit: u.name.clone(),
                lambda,
            })?;
        let stats_error = |message| AlignError::Stats {
            unit: u.name.clone(),
            message,
        };
        if stats.width != u.width {
            return Err(stats_error(format!(
                "width {} for a unit of width {}",
                stats.width, u.width
            )));
        }
        let s = stats.correlation().map_err(stats_error)?;
        current.push(solve(&s, u.width, u.groups, &opts.solver)?.0);
        s_act.push(s);
    }
    if lambda > 0.0 {
        let mut rng = SplitMix64::new(opts.seed);
        let mut best: Option<(Vec<Transform>, f64)> = None;
        let mut bad = 0;
        for _ in 0..opts.max_iter {
            let mut order: Vec<usize> = (0..units.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            for p in order {
                let mut s = weight_similarity([weights_a, weights_b], units, p, &current)?;
                if let Some(sa) = s_act.get(p) {
                    for (x, y) in s.iter_mut().zip(sa) {
                        *x = lambda * *x + (1.0 - lambda) * y;
                    }
                }
                let (t, v) = solve(&s, units[p].width, units[p].groups, &opts.solver)?;
                current[p] = t;
                values[p] = v;
            }
            let objective = values.iter().sum::<f64>() / values.len().max(1) as f64;
            match &best {
                Some((kept, old)) if objective <= *old => {
                    current = kept.clone();
                    bad += 1;
                    if bad >= opts.tol {
                        break;
                    }
                }
                _ => {
                    bad = 0;
                    best = Some((current.clone(), objective));
                }
            }
        }
        if let Some((kept, _)) = best {
            current = kept;
        }
    }
    Ok(units.iter().map(|u| u.name.clone()).zip(current).collect())
}
