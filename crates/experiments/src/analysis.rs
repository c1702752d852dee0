//! A [`Study`] turned into its [`Report`]: the paper's main table, paired comparisons, plots,
//! a ranking of the distance metrics, and findings with explicit rules ([`analyse`]).
//!
//! Everything is byte-deterministic: the inputs are walked in the study's order (seeds, tasks,
//! arms, models and distance metrics as listed; merges in plan order, i.e. the order of their
//! first appearance in [`Study::models`]), every bootstrap uses the seed [`BOOTSTRAP_SEED`],
//! and no text holds a time or a path.
//!
//! # Scores
//!
//! A task's *primary scores*, by kind: `vqa` → `vqa_score`; `retrieval` → `tr_r1`, `ir_r1`;
//! `nlvr2`, `image_cls`, `text_cls` → `accuracy`; `segmentation` → `miou`. The zero-shot
//! signals are `ir_r1` and `tr_r1` of [`crate::study::ModelResult::zero_shot`]. A model is
//! identified in an arm by its name (the same in every seed).
//!
//! - Cell of model m, score k: the mean ± sample std over the seeds that measured it,
//!   x̄ = Σₛ xₛ / n, s = √(Σₛ (xₛ − x̄)² / (n − 1)) (s = 0 for n = 1; [`stats::mean_std`]).
//! - A task's headline h_t(m) = the mean over its primary scores of their seed means
//!   (retrieval: (TR@1 + IR@1) / 2); defined only when every primary score is measured.
//! - Mean primary score M(m) = the mean of h_t(m) over the tasks where it is defined, among
//!   the tasks every fine-tuned model of the study was evaluated on (in a combination of
//!   experiments with different task lists, the common ones, so arms compare alike). "The
//!   best merge" of a set is the one measured on the most tasks, then with the highest M
//!   (then the first in plan order). It is chosen on the test items it is then judged on, so
//!   its comparisons are optimistic by that selection.
//! - Per seed: M_s(m) = the mean over tasks of the mean of that seed's primary scores of the
//!   task; defined only when all are measured.
//!
//! # Paired comparisons (the comparisons table, findings a, c, d)
//!
//! For models a and b of one arm and a score with per-item values: the item vectors of every
//! seed (in the study's seed order) where both have them are concatenated, a's and b's alike
//! (a seed whose two vectors differ in length is an error: items pair by position), and
//! [`stats::paired_bootstrap`] gives Δ = mean over items of (aᵢ − bᵢ) with its percentile
//! interval ([`RESAMPLES`] resamples, seed [`BOOTSTRAP_SEED`], level [`LEVEL`]). Fewer than two
//! pooled items, or a score without items (mIoU): no comparison (`-`).
//!
//! The comparisons table is long-format: one row per merge × primary score (merge-major, plan
//! order), columns Δ, interval lo, interval hi and the number of pooled items, once against
//! the modality-agnostic baseline and once against the unmerged modality-specific model.
//!
//! # Plots
//!
//! - Sweeps: for each arm, merge spec and axis — α = w_vision / (w_vision + w_text) when the
//!   spec's merges give both weights, and each method parameter — with ≥ 2 distinct values,
//!   one plot per primary score: x = the axis value, y = the merge's seed mean with ± std
//!   error bars; merges that differ in anything else form separate series; the baseline's
//!   and the unmerged model's seed means are horizontal reference lines. (One plot per score,
//!   not one for all scores: each score brings its two reference lines, and one plot with
//!   every score's three lines cannot be read.)
//! - Seed pre-training: when the arms have ≥ 2 distinct `seed_steps`, one plot per primary
//!   score: x = seed_steps, one line per merge spec (its best merge in each arm), the baseline
//!   and the unmerged model, per sharing variant.
//! - Distance vs score: for each raw-weight distance metric and each primary and zero-shot
//!   score, one point per (seed, arm, merge): x = the distance between that (seed, arm)'s
//!   vision and text experts, y = the merge's score in that seed; drawn with its
//!   least-squares line when there are ≥ 2 distinct x.
//!
//! # Distance-metric ranking
//!
//! Over the scatter's points, Pearson r, Spearman ρ and Kendall τ_b each with a bootstrap
//! interval over points ([`stats::correlation_interval`], same resamples, seed and level);
//! only with ≥ [`MIN_DISTINCT_DISTANCES`] distinct distances ("needs more arms or seeds"
//! otherwise), and `-` where a coefficient is undefined (a constant score). Metrics are
//! ranked by the mean of |ρ| over the scores where ρ is defined (undefined last, then file
//! order). [`PAPER_METRICS`] are marked "(paper)".
//!
//! # Findings (rules)
//!
//! Verdicts are [`Holds`](crate::report::Verdict::Holds),
//! [`DoesNotHold`](crate::report::Verdict::DoesNotHold) or
//! [`Inconclusive`](crate::report::Verdict::Inconclusive);
//! each finding states the numbers it rests on. "Testable scores" are the primary scores with
//! a paired comparison.
//!
//! - (a) *Merging after shared-init pre-training approaches the modality-agnostic baseline.*
//!   Among arms with `seed_steps` > 0, the best merge of all (by the rule above) against the
//!   baseline of its arm, on every testable score: **holds** if every interval's lower end
//!   is ≥ −[`DELTA`]; **does not hold** if some interval's upper end is < −δ; otherwise (or
//!   with no testable score, no baseline, no such arm) **inconclusive**.
//! - (b) *More seed pre-training gives better merges and smaller distances.* Within the
//!   sharing variant with the most distinct seed budgets (first in arm order on a tie), it
//!   needs ≥ 3 distinct `seed_steps` (else inconclusive, "needs ≥ 3 seed budgets"). Points are
//!   (seed, arm): Spearman ρ of (seed_steps, M_s(best merge of the arm)) and of (seed_steps,
//!   the arm's expert distance in that seed) for the metric `l2` (else the first metric
//!   listed), each with its bootstrap interval. **Holds** if the score interval is > 0 and the
//!   distance interval < 0; **does not hold** if the score interval is < 0 or the distance
//!   interval > 0; otherwise inconclusive. (Per (seed, arm) rather than per-arm means: three
//!   arm means give no usable interval, and seeds are the noise the claim must beat.)
//! - (c) *Which merge method is best.* In the arm of the study's best merge (the reference
//!   arm), each merge spec is represented by its best merge; the spec with the highest M
//!   against the runner-up, on every testable score: **holds** (naming it and its margin in
//!   M) if the interval lies above 0 on more than half of the testable scores; otherwise
//!   inconclusive (also with one spec).
//! - (d) *Which architecture merges best.* Among the seed budgets, the one with the most
//!   distinct sharing variants (the larger budget on a tie); needs ≥ 2 (else inconclusive,
//!   "one architecture"). Each variant (its first arm at that budget) is represented by its
//!   best merge; the variant with the highest M against the runner-up, by the rule of (c).
//! - (e) *Which distance metric predicts merge outcome best.* The top of the ranking:
//!   **holds** if its Spearman interval excludes 0 on more than half of the scores where it
//!   has one; otherwise (or with too few distinct distances) inconclusive.
//!
//! We report what we measure: these rules test the paper's claims on our data; nothing here
//! encodes the paper's numbers.

mod data;
mod findings;
mod plots;
mod ranking;
mod tables;

use std::path::{Path, PathBuf};

use mmerge_core::CoreError;
use thiserror::Error;

use crate::report::{Report, ReportError};
use crate::stats::{self, StatsError};
use crate::study::Study;

/// Bootstrap resamples of every interval in a report.
pub const RESAMPLES: usize = 2000;
/// The seed of every bootstrap in a report.
pub const BOOTSTRAP_SEED: u64 = 0;
/// The confidence level of every interval.
pub const LEVEL: f64 = 0.95;
/// Finding (a)'s tolerance: a merge "approaches" the baseline when its paired interval stays
/// above −δ (absolute score units).
pub const DELTA: f64 = 0.02;
/// Correlations need at least this many distinct distance values.
pub const MIN_DISTINCT_DISTANCES: usize = 3;
/// The paper's two metrics, in our reading (names as in [`Study::distances`]).
pub const PAPER_METRICS: [&str; 2] = ["l2", "truncated_soft_sign"];

/// What can go wrong analysing a study.
#[derive(Debug, Error)]
pub enum AnalysisError {
    /// A task without an entry in [`Study::task_kinds`].
    #[error("task `{task}` has no kind in the study")]
    MissingTaskKind { task: String },
    /// A task kind this analysis does not know.
    #[error(
        "task `{task}` has kind `{kind}`; known: vqa, retrieval, nlvr2, image_cls, text_cls, \
         segmentation"
    )]
    UnknownTaskKind { task: String, kind: String },
    /// The study has no arm.
    #[error("the study has no arm")]
    NoArms,
    /// A model or distance names an arm the study does not have.
    #[error("{what} names arm {arm}, but the study has {arms} arm(s)")]
    ArmOutOfRange {
        what: String,
        arm: usize,
        arms: usize,
    },
    /// A model or distance names a seed the study does not list.
    #[error("{what} names seed {seed}, which is not among the study's seeds")]
    UnknownSeed { what: String, seed: u64 },
    /// Two results for the same model, seed and arm.
    #[error("model `{name}` appears twice for seed {seed} in arm {arm}")]
    DuplicateModel { name: String, seed: u64, arm: usize },
    /// A NaN or infinite score, item or distance.
    #[error("{what} is {value}, not a finite number")]
    NonFinite { what: String, value: f64 },
    /// Two models' item vectors of one seed that should pair up item by item do not (`a` and
    /// `b` name the model and its arm).
    #[error(
        "task `{task}`, score `{score}`, seed {seed}: {a} has {a_len} items but {b} has \
         {b_len}; items pair by position"
    )]
    ItemCountMismatch {
        task: String,
        score: String,
        seed: u64,
        a: String,
        a_len: usize,
        b: String,
        b_len: usize,
    },
    /// A statistic failed on data this analysis had checked (a bug, not bad input).
    #[error("{what}: {source}")]
    Stats {
        what: String,
        #[source]
        source: StatsError,
    },
    /// Drawing a plot or building a table failed.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, AnalysisError>;

/// Builds the report of `study`: the intro, per arm the main table and the comparisons
/// table, the distance-metric ranking, the findings, and the plots, which are drawn into
/// [`Report::plots_dir`]`(dir)` (created if needed). The caller writes the rest with
/// [`Report::write`]`(dir)`. Stale plots from an earlier report in `dir` are left alone.
pub fn analyse(study: &Study, dir: &Path) -> Result<Report> {
    let ctx = data::Ctx::new(study)?;
    let plots_dir = Report::plots_dir(dir);
    std::fs::create_dir_all(&plots_dir)
        .map_err(|e| ReportError::Core(CoreError::io(PathBuf::from(&plots_dir), e)))?;

    let mut tables = Vec::new();
    for arm in 0..study.arms.len() {
        if let Some(t) = tables::main_table(&ctx, arm)? {
            tables.push(t);
        }
        if let Some(t) = tables::comparisons_table(&ctx, arm)? {
            tables.push(t);
        }
    }
    let ranking = ranking::rank(&ctx)?;
    tables.extend(ranking::tables(&ctx, &ranking));
    let findings = findings::findings(&ctx, &ranking)?;
    let figures = plots::plots(&ctx, &plots_dir)?;
    Ok(Report {
        title: format!("{} (profile {})", study.experiment, study.profile),
        intro: intro(study),
        tables,
        findings,
        figures,
    })
}

fn intro(study: &Study) -> Vec<String> {
    let join = |v: Vec<String>| v.join(", ");
    let seeds = join(study.seeds.iter().map(u64::to_string).collect());
    let tasks = join(
        study
            .tasks
            .iter()
            .map(|t| match study.task_kinds.get(t) {
                Some(k) if k != t => format!("{t} ({k})"),
                _ => t.clone(),
            })
            .collect(),
    );
    // Arm labels contain commas: `;` between arms.
    let arms = study
        .arms
        .iter()
        .map(data::arm_label)
        .collect::<Vec<_>>()
        .join("; ");
    let distances = if study.distances.is_empty() {
        "none".to_string()
    } else {
        join(study.distances.clone())
    };
    let commit = match &study.git_commit {
        Some(c) => format!("commit `{c}`"),
        None => "not a git checkout".to_string(),
    };
    vec![
        format!(
            "Suite: {}. Seeds: {seeds} ({} in all). Tasks: {tasks}. Arms: {arms}. Distance \
             metrics: {distances}.",
            study.suite,
            study.seeds.len()
        ),
        format!("Reproduce with `{}` ({commit}).", study.command),
        format!(
            "Reading guide: cells are mean ± std over seeds (n = the seeds that measured \
             it); Δ intervals are paired percentile-bootstrap {:.0}% intervals over the test \
             items pooled across seeds ({RESAMPLES} resamples, bootstrap seed \
             {BOOTSTRAP_SEED}); correlation intervals resample points the same way. The rule \
             behind each finding is stated in the `mmerge_experiments::analysis` module \
             documentation.",
            LEVEL * 100.0
        ),
    ]
}

/// `stats` errors on checked data, with what was being computed.
fn stats_err(what: impl Into<String>) -> impl FnOnce(StatsError) -> AnalysisError {
    let what = what.into();
    move |source| AnalysisError::Stats { what, source }
}

/// A signed number with 3 decimals (`+0.012`, `-0.003`, `+0.000`).
fn signed(v: f64) -> String {
    let s = crate::report::fixed(v, 3);
    if s.starts_with('-') {
        s
    } else {
        format!("+{s}")
    }
}

/// `+0.012 [-0.003, +0.027]`.
fn with_interval(i: &stats::Interval) -> String {
    format!(
        "{} [{}, {}]",
        signed(i.estimate),
        signed(i.lo),
        signed(i.hi)
    )
}
