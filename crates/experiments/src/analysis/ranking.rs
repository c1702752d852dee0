//! The distance-metric ranking: for each raw-weight metric and each primary and zero-shot
//! score, Pearson r, Spearman ρ and Kendall τ_b over the scatter's points (one per (seed, arm,
//! merge)) with bootstrap intervals over points; metrics ranked by mean |ρ| over the scores
//! (rules in the `analysis` module doc).

use crate::report::{Cell, Column, Row, Table};
use crate::stats::{self, CorrelationKind, StatsError};

use super::data::{Ctx, distinct};
use super::{BOOTSTRAP_SEED, LEVEL, MIN_DISTINCT_DISTANCES, PAPER_METRICS, RESAMPLES, Result};

/// A coefficient with its interval (None when every resample was degenerate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Corr {
    pub estimate: f64,
    pub interval: Option<(f64, f64)>,
}

/// One metric against one score column (index into `cols` then `zs_cols`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricScore {
    pub col: usize,
    pub points: usize,
    /// Pearson, Spearman, Kendall; None when undefined or too few distinct distances.
    pub corr: [Option<Corr>; 3],
}

impl MetricScore {
    pub fn spearman(&self) -> Option<Corr> {
        self.corr[1]
    }
}

/// One metric's row of the ranking.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricRank {
    pub metric: String,
    /// Distinct distance values over the points.
    pub distinct: usize,
    pub scores: Vec<MetricScore>,
    /// Mean |ρ| over the scores where ρ is defined.
    pub mean_abs_spearman: Option<f64>,
}

impl MetricRank {
    /// `l2 (paper)` or `cosine`.
    pub fn label(&self) -> String {
        label(&self.metric)
    }
}

/// A metric's name, with `(paper)` for [`PAPER_METRICS`].
pub(crate) fn label(metric: &str) -> String {
    if PAPER_METRICS.contains(&metric) {
        format!("{metric} (paper)")
    } else {
        metric.to_string()
    }
}

/// The coefficient of `kind` with its interval; None when undefined.
pub(crate) fn corr(x: &[f64], y: &[f64], kind: CorrelationKind) -> Result<Option<Corr>> {
    let what = || format!("{} correlation", kind.name());
    match stats::correlation_interval(x, y, kind, RESAMPLES, BOOTSTRAP_SEED, LEVEL) {
        Ok(i) => Ok(Some(Corr {
            estimate: i.estimate,
            interval: Some((i.lo, i.hi)),
        })),
        Err(StatsError::ZeroVariance { .. } | StatsError::TooFew { .. }) => Ok(None),
        Err(StatsError::AllResamplesDegenerate { .. }) => {
            let estimate = stats::correlation(x, y, kind).map_err(super::stats_err(what()))?;
            Ok(Some(Corr {
                estimate,
                interval: None,
            }))
        }
        Err(e) => Err(super::stats_err(what())(e)),
    }
}

/// Every raw metric of the study, ranked (best first).
pub(crate) fn rank(ctx: &Ctx<'_>) -> Result<Vec<MetricRank>> {
    let cols: Vec<_> = ctx.cols.iter().chain(&ctx.zs_cols).collect();
    let mut out = Vec::new();
    for metric in &ctx.study.distances {
        let mut scores = Vec::new();
        let mut all_x = Vec::new();
        for (i, col) in cols.iter().enumerate() {
            let points = ctx.distance_points(metric, col);
            let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
            all_x.extend_from_slice(&x);
            let mut corr_ = [None; 3];
            if distinct(x.iter().copied()) >= MIN_DISTINCT_DISTANCES {
                for (slot, kind) in corr_.iter_mut().zip(CorrelationKind::ALL) {
                    *slot = corr(&x, &y, kind)?;
                }
            }
            scores.push(MetricScore {
                col: i,
                points: points.len(),
                corr: corr_,
            });
        }
        let rhos: Vec<f64> = scores
            .iter()
            .filter_map(|s| s.spearman().map(|c| c.estimate.abs()))
            .collect();
        out.push(MetricRank {
            metric: metric.clone(),
            distinct: distinct(all_x),
            scores,
            mean_abs_spearman: (!rhos.is_empty())
                .then(|| rhos.iter().sum::<f64>() / rhos.len() as f64),
        });
    }
    // Stable: ties and undefined keep the file's order.
    out.sort_by(|a, b| match (a.mean_abs_spearman, b.mean_abs_spearman) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(out)
}

fn value(v: Option<f64>) -> Cell {
    v.map_or(Cell::Missing, Cell::Value)
}

/// The ranking table and the long-format correlations table; none without metrics.
pub(crate) fn tables(ctx: &Ctx<'_>, ranking: &[MetricRank]) -> Vec<Table> {
    if ranking.is_empty() {
        return vec![];
    }
    let cols: Vec<_> = ctx.cols.iter().chain(&ctx.zs_cols).collect();
    let mut notes = vec![format!(
        "Points: one per (seed, arm, merge): x = the raw-weight distance between that (seed, \
         arm)'s vision and text experts, y = the merge's score in that seed. Metrics ranked by \
         the mean over scores of |Spearman ρ|. (paper): the paper's two metrics, in our \
         reading ({}).",
        PAPER_METRICS.join(", ")
    )];
    for r in ranking {
        if r.distinct < MIN_DISTINCT_DISTANCES {
            notes.push(format!(
                "{}: {} distinct distance value(s), at least {MIN_DISTINCT_DISTANCES} needed \
                 for a correlation: needs more arms or seeds.",
                r.label(),
                r.distinct
            ));
        }
    }
    let mut columns = vec![Column::new("mean |ρ|")];
    columns.extend(cols.iter().map(|c| Column::new(format!("ρ {}", c.header))));
    let rank_rows = ranking
        .iter()
        .map(|r| {
            let mut cells = vec![value(r.mean_abs_spearman)];
            cells.extend(
                r.scores
                    .iter()
                    .map(|s| value(s.spearman().map(|c| c.estimate))),
            );
            Row::new(r.label(), cells)
        })
        .collect();
    let mut detail_cols = vec![Column::new("points").decimals(0)];
    for (name, sym) in [("Pearson r", "r"), ("Spearman ρ", "ρ"), ("Kendall τ", "τ")] {
        detail_cols.extend([
            Column::new(name),
            Column::new(format!("{sym} lo")),
            Column::new(format!("{sym} hi")),
        ]);
    }
    let mut detail_rows = Vec::new();
    for r in ranking {
        for s in &r.scores {
            let mut cells = vec![Cell::Value(s.points as f64)];
            for c in s.corr {
                let i = c.and_then(|c| c.interval);
                cells.extend([
                    value(c.map(|c| c.estimate)),
                    value(i.map(|i| i.0)),
                    value(i.map(|i| i.1)),
                ]);
            }
            detail_rows.push(Row::new(
                format!("{} · {}", r.label(), cols[s.col].header),
                cells,
            ));
        }
    }
    vec![
        Table {
            title: "Distance metrics ranked by mean |Spearman ρ| with merge scores".into(),
            columns,
            rows: rank_rows,
            notes,
        },
        Table {
            title: "Distance–score correlations".into(),
            columns: detail_cols,
            rows: detail_rows,
            notes: vec![format!(
                "Over the points above; [lo, hi]: percentile-bootstrap {:.0}% intervals over \
                 points ({RESAMPLES} resamples, bootstrap seed {BOOTSTRAP_SEED}; resamples \
                 with a constant x or y are skipped). `-`: undefined (a constant score) or \
                 fewer than {MIN_DISTINCT_DISTANCES} distinct distances.",
                LEVEL * 100.0
            )],
        },
    ]
}
