//! The per-arm tables: the main table in the paper's layout (unmerged modality-specific
//! model, modality-agnostic baseline, each merge, the seed model W0's zero-shot row, then the
//! suite's model-free baselines) and the long-format paired comparisons of each merge against
//! the baseline and the unmerged model (rules in the `analysis` module doc).

use crate::report::{Cell, Column, Row, Table};

use super::data::{Ctx, Paired, ScoreCol};
use super::{LEVEL, RESAMPLES, Result};

/// Row labels of the models.
pub(crate) const UNMERGED: &str = "modality-specific (unmerged)";
pub(crate) const BASELINE: &str = "modality-agnostic baseline";
const SEED: &str = "seed model W0";

/// The suite baselines a main table shows: (suite key, row label, task kinds, score key).
const SUITE_ROWS: [(&str, &str, &[&str], &str); 4] = [
    (
        "question_prior",
        "text-only: per-question prior",
        &["vqa"],
        "vqa_score",
    ),
    (
        "statement_prior",
        "text-only: statement prior",
        &["nlvr2"],
        "accuracy",
    ),
    ("chance_r1", "chance", &["retrieval"], "ir_r1"),
    (
        "majority",
        "majority",
        &["image_cls", "text_cls"],
        "accuracy",
    ),
];

/// The main table of `arm`; None when it would have no columns (no tasks, no zero-shot).
pub(crate) fn main_table(ctx: &Ctx<'_>, arm: usize) -> Result<Option<Table>> {
    let all: Vec<&ScoreCol> = ctx.cols.iter().chain(&ctx.zs_cols).collect();
    if all.is_empty() {
        return Ok(None);
    }
    let models = &ctx.arms[arm];
    let cells = |name: Option<&str>, only_zs: bool| -> Result<Vec<Cell>> {
        all.iter()
            .map(|c| {
                if only_zs && c.task.is_some() {
                    Ok(Cell::Missing)
                } else {
                    ctx.cell(arm, name, c)
                }
            })
            .collect()
    };
    let mut rows = vec![
        Row::new(UNMERGED, cells(models.experts, false)?),
        Row::new(BASELINE, cells(models.baseline, false)?),
    ];
    for (name, _) in &models.merges {
        rows.push(Row::new(*name, cells(Some(name), false)?));
    }
    if !ctx.zs_cols.is_empty() && models.seed.is_some() {
        rows.push(Row::new(SEED, cells(models.seed, true)?));
    }
    for (key, label, kinds, score) in SUITE_ROWS {
        let cells: Vec<Cell> = all
            .iter()
            .map(|c| {
                let Some(task) = c.task.as_deref() else {
                    return Cell::Missing;
                };
                let applies =
                    c.key == score && ctx.kinds.get(task).is_some_and(|k| kinds.contains(k));
                ctx.study
                    .baselines
                    .get(task)
                    .and_then(|b| b.get(key))
                    .filter(|_| applies)
                    .map_or(Cell::Missing, |&v| Cell::Value(v))
            })
            .collect();
        if cells.iter().any(|c| *c != Cell::Missing) {
            rows.push(Row::baseline(label, cells));
        }
    }
    let mut notes = vec![
        "Cells: mean ± std over seeds (n = the seeds that measured it); `-`: not measured."
            .to_string(),
        "(baseline) rows: the suite's model-free scores on the test split.".to_string(),
    ];
    if !ctx.zs_cols.is_empty() {
        notes.push(
            "ZS: zero-shot retrieval R@1 of each model without fine-tuning (the seed model W0 \
             has only these)."
                .to_string(),
        );
    }
    Ok(Some(Table {
        title: format!("Main results{}", ctx.arm_suffix(arm)),
        columns: all.iter().map(|c| Column::new(c.header.clone())).collect(),
        rows,
        notes,
    }))
}

fn paired_cells(p: Option<Paired>) -> [Cell; 4] {
    match p {
        Some(p) => [
            Cell::Value(p.interval.estimate),
            Cell::Value(p.interval.lo),
            Cell::Value(p.interval.hi),
            Cell::Value(p.items as f64),
        ],
        None => [Cell::Missing; 4],
    }
}

/// The comparisons table of `arm`; None when the arm has no merge or no task has scores.
pub(crate) fn comparisons_table(ctx: &Ctx<'_>, arm: usize) -> Result<Option<Table>> {
    let models = &ctx.arms[arm];
    if models.merges.is_empty() || ctx.cols.is_empty() {
        return Ok(None);
    }
    let mut rows = Vec::new();
    for (name, _) in &models.merges {
        for col in &ctx.cols {
            let vs = |reference: Option<&str>| match reference {
                Some(r) => ctx.paired((arm, name), (arm, r), col),
                None => Ok(None),
            };
            let mut cells = Vec::with_capacity(8);
            cells.extend(paired_cells(vs(models.baseline)?));
            cells.extend(paired_cells(vs(models.experts)?));
            rows.push(Row::new(format!("{name} · {}", col.header), cells));
        }
    }
    let mut columns = Vec::new();
    for reference in ["baseline", "unmerged"] {
        columns.extend([
            Column::new(format!("Δ vs {reference}")),
            Column::new(format!("lo vs {reference}")),
            Column::new(format!("hi vs {reference}")),
            Column::new(format!("items vs {reference}")).decimals(0),
        ]);
    }
    Ok(Some(Table {
        title: format!(
            "Paired differences, merge − reference{}",
            ctx.arm_suffix(arm)
        ),
        columns,
        rows,
        notes: vec![
            format!(
                "Δ: mean over test items, pooled across seeds, of (merge − reference); \
                 [lo, hi]: its paired percentile-bootstrap {:.0}% interval ({RESAMPLES} \
                 resamples, bootstrap seed {}). Baseline: the {BASELINE}; unmerged: the \
                 {UNMERGED} model.",
                LEVEL * 100.0,
                super::BOOTSTRAP_SEED
            ),
            "items: the pooled items (only seeds where both models have per-item values); \
             `-`: no per-item values (e.g. mIoU) or no such reference model."
                .to_string(),
        ],
    }))
}
