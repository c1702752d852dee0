//! The study checked and indexed for the analysis: which columns each task has, which models
//! each arm has (in plan order), look-ups by (arm, model, seed), seed means, pooled paired
//! items, the headline h_t and mean primary score M of the module doc, and the best merge.
//!
//! Checks, once, before anything is computed: every task has a known kind; every model and
//! distance names an existing arm and a listed seed; no (arm, model, seed) twice; every score,
//! item, suite baseline and distance is finite.

use std::collections::BTreeMap;

use crate::report::Cell;
use crate::stats::{self, Interval, MeanStd};
use crate::study::{Arm, DistanceResult, MergeInfo, ModelResult, Role, Study};

use super::{AnalysisError, BOOTSTRAP_SEED, LEVEL, RESAMPLES, Result, stats_err};

/// One score column: a task's score, or a zero-shot signal (`task` None).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScoreCol {
    pub task: Option<String>,
    pub key: &'static str,
    pub header: String,
}

impl ScoreCol {
    /// A file-name part: `<task>-<key>` or `zero-shot-<key>`.
    pub fn stem(&self) -> String {
        format!(
            "{}-{}",
            self.task.as_deref().unwrap_or("zero-shot"),
            self.key
        )
    }
}

/// The models of one arm, by role, each named as in [`ModelResult::name`].
#[derive(Debug, Default)]
pub(crate) struct ArmModels<'a> {
    pub experts: Option<&'a str>,
    pub baseline: Option<&'a str>,
    pub seed: Option<&'a str>,
    /// In plan order.
    pub merges: Vec<(&'a str, &'a MergeInfo)>,
}

impl ArmModels<'_> {
    /// The merge specs in plan order (first appearance).
    pub fn specs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (_, info) in &self.merges {
            if !out.contains(&info.spec.as_str()) {
                out.push(&info.spec);
            }
        }
        out
    }
}

/// A paired comparison: Δ with its interval, over `items` pooled items.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paired {
    pub interval: Interval,
    pub items: usize,
}

/// The checked, indexed study.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub study: &'a Study,
    /// Task name → its kind.
    pub kinds: BTreeMap<&'a str, &'a str>,
    /// The primary score columns, tasks in study order.
    pub cols: Vec<ScoreCol>,
    /// Zero-shot columns (empty when no model has zero-shot signals).
    pub zs_cols: Vec<ScoreCol>,
    pub arms: Vec<ArmModels<'a>>,
    models: BTreeMap<(usize, &'a str, u64), &'a ModelResult>,
    distances: BTreeMap<(u64, usize), &'a DistanceResult>,
    /// The tasks M and M_s average over: those every fine-tuned model of the study was
    /// evaluated on (all of them in one experiment; a combination's arms may differ).
    common_tasks: Vec<&'a str>,
}

/// `seed steps N, experts sharing S` (and `, independent experts` when they did not start
/// from W0).
pub(crate) fn arm_label(arm: &Arm) -> String {
    let init = if arm.init == "shared" {
        String::new()
    } else {
        format!(", {} experts", arm.init)
    };
    format!(
        "seed steps {}, experts sharing {}{init}",
        arm.seed_steps, arm.sharing
    )
}

/// The primary score columns of `task` of `kind` (see the module doc of `analysis`).
fn task_columns(task: &str, kind: &str) -> Result<Vec<ScoreCol>> {
    let named = |canonical: &str, base: &str| {
        if task == canonical {
            base.to_string()
        } else {
            format!("{base} {task}")
        }
    };
    let col = |key: &'static str, header: String| ScoreCol {
        task: Some(task.to_string()),
        key,
        header,
    };
    Ok(match kind {
        "vqa" => vec![col("vqa_score", named("vqa", "VQA"))],
        "retrieval" => vec![
            col("tr_r1", named("retrieval", "TR@1")),
            col("ir_r1", named("retrieval", "IR@1")),
        ],
        "nlvr2" => vec![col("accuracy", named("nlvr2", "NLVR2"))],
        "image_cls" | "text_cls" => vec![col("accuracy", task.to_string())],
        "segmentation" => vec![col("miou", named("segmentation", "mIoU"))],
        _ => {
            return Err(AnalysisError::UnknownTaskKind {
                task: task.to_string(),
                kind: kind.to_string(),
            });
        }
    })
}

fn finite(what: impl FnOnce() -> String, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(AnalysisError::NonFinite {
            what: what(),
            value,
        })
    }
}

fn check_evaluation(what: &str, e: &crate::study::Evaluation) -> Result<()> {
    for (k, &v) in &e.scores {
        finite(|| format!("{what}, score `{k}`"), v)?;
    }
    for (k, items) in &e.items {
        for (i, &v) in items.iter().enumerate() {
            finite(|| format!("{what}, item {i} of `{k}`"), v)?;
        }
    }
    Ok(())
}

impl<'a> Ctx<'a> {
    /// Checks and indexes `study` (see the module doc).
    pub fn new(study: &'a Study) -> Result<Self> {
        if study.arms.is_empty() {
            return Err(AnalysisError::NoArms);
        }
        let mut kinds = BTreeMap::new();
        let mut cols = Vec::new();
        for task in &study.tasks {
            let kind = study
                .task_kinds
                .get(task)
                .ok_or_else(|| AnalysisError::MissingTaskKind { task: task.clone() })?;
            kinds.insert(task.as_str(), kind.as_str());
            cols.extend(task_columns(task, kind)?);
        }
        for (task, b) in &study.baselines {
            for (k, &v) in b {
                finite(|| format!("suite baseline `{k}` of task `{task}`"), v)?;
            }
        }
        let check_place = |what: &dyn Fn() -> String, seed: u64, arm: usize| {
            if arm >= study.arms.len() {
                return Err(AnalysisError::ArmOutOfRange {
                    what: what(),
                    arm,
                    arms: study.arms.len(),
                });
            }
            if !study.seeds.contains(&seed) {
                return Err(AnalysisError::UnknownSeed { what: what(), seed });
            }
            Ok(())
        };
        let mut models = BTreeMap::new();
        let mut arms: Vec<ArmModels<'a>> =
            study.arms.iter().map(|_| ArmModels::default()).collect();
        for m in &study.models {
            let what = || format!("model `{}` (seed {}, arm {})", m.name, m.seed, m.arm);
            check_place(&what, m.seed, m.arm)?;
            for (task, e) in &m.tasks {
                check_evaluation(&format!("{}, task `{task}`", what()), e)?;
            }
            if let Some(z) = &m.zero_shot {
                check_evaluation(&format!("{}, zero-shot", what()), z)?;
            }
            if models.insert((m.arm, m.name.as_str(), m.seed), m).is_some() {
                return Err(AnalysisError::DuplicateModel {
                    name: m.name.clone(),
                    seed: m.seed,
                    arm: m.arm,
                });
            }
            let a = &mut arms[m.arm];
            let name = m.name.as_str();
            match &m.role {
                Role::Experts => {
                    a.experts.get_or_insert(name);
                }
                Role::Baseline => {
                    a.baseline.get_or_insert(name);
                }
                Role::Seed => {
                    a.seed.get_or_insert(name);
                }
                Role::Merge(info) => {
                    if !a.merges.iter().any(|(n, _)| *n == name) {
                        a.merges.push((name, info));
                    }
                }
            }
        }
        let mut distances = BTreeMap::new();
        for (seed, arm, d) in &study.expert_distances {
            let what = || format!("the expert distances of seed {seed}, arm {arm}");
            check_place(&what, *seed, *arm)?;
            for (k, &v) in d.raw.iter().chain(&d.task_vector) {
                finite(|| format!("{}, metric `{k}`", what()), v)?;
            }
            distances.insert((*seed, *arm), d);
        }
        let zs_cols = if study.models.iter().any(|m| m.zero_shot.is_some()) {
            vec![
                ScoreCol {
                    task: None,
                    key: "ir_r1",
                    header: "ZS IR@1".into(),
                },
                ScoreCol {
                    task: None,
                    key: "tr_r1",
                    header: "ZS TR@1".into(),
                },
            ]
        } else {
            vec![]
        };
        let fine_tuned: Vec<&ModelResult> = study
            .models
            .iter()
            .filter(|m| !m.tasks.is_empty())
            .collect();
        let common_tasks = study
            .tasks
            .iter()
            .filter(|t| fine_tuned.iter().all(|m| m.tasks.contains_key(*t)))
            .map(String::as_str)
            .collect();
        Ok(Ctx {
            study,
            kinds,
            cols,
            zs_cols,
            arms,
            models,
            distances,
            common_tasks,
        })
    }

    /// The primary columns of `task`.
    pub fn task_cols(&self, task: &str) -> impl Iterator<Item = &ScoreCol> {
        self.cols
            .iter()
            .filter(move |c| c.task.as_deref() == Some(task))
    }

    /// `model`'s evaluation that holds `col`.
    fn evaluation(
        &self,
        arm: usize,
        name: &str,
        seed: u64,
        col: &ScoreCol,
    ) -> Option<&'a crate::study::Evaluation> {
        let m = self.models.get(&(arm, name, seed))?;
        match &col.task {
            Some(t) => m.tasks.get(t),
            None => m.zero_shot.as_ref(),
        }
    }

    /// One seed's value of `col` for model `name` of `arm`.
    pub fn value(&self, arm: usize, name: &str, seed: u64, col: &ScoreCol) -> Option<f64> {
        self.evaluation(arm, name, seed, col)?
            .scores
            .get(col.key)
            .copied()
    }

    /// Mean ± std of `col` over the seeds that measured it; None if none did.
    pub fn summary(&self, arm: usize, name: &str, col: &ScoreCol) -> Result<Option<MeanStd>> {
        let xs: Vec<f64> = self
            .study
            .seeds
            .iter()
            .filter_map(|&s| self.value(arm, name, s, col))
            .collect();
        if xs.is_empty() {
            return Ok(None);
        }
        stats::mean_std(&xs)
            .map(Some)
            .map_err(stats_err(format!("mean of `{}` for `{name}`", col.header)))
    }

    /// The table cell of `col` for model `name` (Missing when unmeasured or no such model).
    pub fn cell(&self, arm: usize, name: Option<&str>, col: &ScoreCol) -> Result<Cell> {
        let Some(name) = name else {
            return Ok(Cell::Missing);
        };
        Ok(match self.summary(arm, name, col)? {
            Some(m) => Cell::MeanStd {
                mean: m.mean,
                std: m.std,
                n: m.n,
            },
            None => Cell::Missing,
        })
    }

    /// The paired comparison a − b of `col` over items pooled across seeds (module doc), each
    /// model given as (arm, name) (the arms share the suite, so its items pair across arms);
    /// None with fewer than two pooled items.
    pub fn paired(
        &self,
        (arm, a): (usize, &str),
        (arm_b, b): (usize, &str),
        col: &ScoreCol,
    ) -> Result<Option<Paired>> {
        let (mut xa, mut xb) = (Vec::new(), Vec::new());
        for &seed in &self.study.seeds {
            let items = |arm: usize, name: &str| {
                self.evaluation(arm, name, seed, col)
                    .and_then(|e| e.items.get(col.key))
            };
            let (Some(ia), Some(ib)) = (items(arm, a), items(arm_b, b)) else {
                continue;
            };
            if ia.len() != ib.len() {
                return Err(AnalysisError::ItemCountMismatch {
                    task: col.task.clone().unwrap_or_else(|| "zero-shot".into()),
                    score: col.key.to_string(),
                    seed,
                    a: format!("`{a}` (arm {arm})"),
                    a_len: ia.len(),
                    b: format!("`{b}` (arm {arm_b})"),
                    b_len: ib.len(),
                });
            }
            xa.extend_from_slice(ia);
            xb.extend_from_slice(ib);
        }
        if xa.len() < 2 {
            return Ok(None);
        }
        let interval = stats::paired_bootstrap(&xa, &xb, RESAMPLES, BOOTSTRAP_SEED, LEVEL)
            .map_err(stats_err(format!(
                "paired bootstrap of `{a}` − `{b}` on `{}`",
                col.header
            )))?;
        Ok(Some(Paired {
            interval,
            items: xa.len(),
        }))
    }

    /// h_t: the mean of the seed means of `task`'s primary scores; None unless all measured.
    pub fn headline(&self, arm: usize, name: &str, task: &str) -> Result<Option<f64>> {
        let mut sum = 0.0;
        let mut n = 0usize;
        for col in self.task_cols(task) {
            let Some(m) = self.summary(arm, name, col)? else {
                return Ok(None);
            };
            sum += m.mean;
            n += 1;
        }
        Ok((n > 0).then(|| sum / n as f64))
    }

    /// M: (tasks measured, mean of h_t over them); None when no task is measured.
    pub fn overall(&self, arm: usize, name: &str) -> Result<Option<(usize, f64)>> {
        let mut hs = Vec::new();
        for &task in &self.common_tasks {
            if let Some(h) = self.headline(arm, name, task)? {
                hs.push(h);
            }
        }
        Ok((!hs.is_empty()).then(|| (hs.len(), hs.iter().sum::<f64>() / hs.len() as f64)))
    }

    /// M_s: one seed's mean over tasks of the task's mean primary score; None unless all are
    /// measured.
    pub fn seed_overall(&self, arm: usize, name: &str, seed: u64) -> Option<f64> {
        let mut hs = Vec::new();
        for &task in &self.common_tasks {
            let vals: Option<Vec<f64>> = self
                .task_cols(task)
                .map(|c| self.value(arm, name, seed, c))
                .collect();
            let vals = vals?;
            if vals.is_empty() {
                return None;
            }
            hs.push(vals.iter().sum::<f64>() / vals.len() as f64);
        }
        (!hs.is_empty()).then(|| hs.iter().sum::<f64>() / hs.len() as f64)
    }

    /// The best of `names` (most tasks measured, then highest M, then first), with its
    /// (tasks, M); None when none is measured.
    pub fn best_of<'n>(
        &self,
        arm: usize,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Option<(&'n str, usize, f64)>> {
        let mut best: Option<(&str, usize, f64)> = None;
        for name in names {
            let Some((k, m)) = self.overall(arm, name)? else {
                continue;
            };
            let better = match best {
                None => true,
                Some((_, bk, bm)) => k > bk || (k == bk && m > bm),
            };
            if better {
                best = Some((name, k, m));
            }
        }
        Ok(best)
    }

    /// The best merge of `arm`, of spec `spec` if given.
    pub fn best_merge(
        &self,
        arm: usize,
        spec: Option<&str>,
    ) -> Result<Option<(&'a str, usize, f64)>> {
        let names = self.arms[arm]
            .merges
            .iter()
            .filter(|(_, info)| spec.is_none_or(|s| info.spec == s))
            .map(|(n, _)| *n);
        self.best_of(arm, names)
    }

    /// The raw-weight distance `metric` of the experts of (seed, arm).
    pub fn distance(&self, seed: u64, arm: usize, metric: &str) -> Option<f64> {
        self.distances.get(&(seed, arm))?.raw.get(metric).copied()
    }

    /// The scatter points of `metric` vs `col`: one per (arm, seed, merge), in that order.
    pub fn distance_points(&self, metric: &str, col: &ScoreCol) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for (arm, models) in self.arms.iter().enumerate() {
            for &seed in &self.study.seeds {
                let Some(x) = self.distance(seed, arm, metric) else {
                    continue;
                };
                for (name, _) in &models.merges {
                    if let Some(y) = self.value(arm, name, seed, col) {
                        out.push((x, y));
                    }
                }
            }
        }
        out
    }

    /// The arm's label suffix for titles: empty with one arm, else `: seed steps N, ...`.
    pub fn arm_suffix(&self, arm: usize) -> String {
        if self.study.arms.len() > 1 {
            format!(": {}", arm_label(&self.study.arms[arm]))
        } else {
            String::new()
        }
    }
}

/// How many distinct values `xs` has (exact equality).
pub(crate) fn distinct(xs: impl IntoIterator<Item = f64>) -> usize {
    let mut v: Vec<f64> = xs.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| a == b);
    v.len()
}
