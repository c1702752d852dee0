//! The report's plots (which, and from what points: the `analysis` module doc): score vs a
//! merge spec's swept axis (α or a method parameter) with reference lines, score vs seed
//! pre-training steps, and distance vs score with a least-squares line. File stems are
//! slugs of what a plot shows, made unique by a `-2`, `-3`, ... suffix in drawing order.

use std::collections::BTreeSet;
use std::path::Path;

use crate::report::{Figure, Series, fixed, line_plot, scatter_with_fit, slug};
use crate::study::MergeInfo;

use super::Result;
use super::data::{Ctx, ScoreCol, arm_label, distinct};
use super::tables::{BASELINE, UNMERGED};

/// Hands out unique file stems.
#[derive(Debug, Default)]
struct Names(BTreeSet<String>);

impl Names {
    fn take(&mut self, raw: &str) -> String {
        let base = slug(raw);
        let mut name = base.clone();
        let mut k = 2;
        while self.0.contains(&name) {
            name = format!("{base}-{k}");
            k += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

/// All figures, drawn into `dir` (which exists).
pub(crate) fn plots(ctx: &Ctx<'_>, dir: &Path) -> Result<Vec<Figure>> {
    let mut names = Names::default();
    let mut figures = Vec::new();
    for arm in 0..ctx.arms.len() {
        sweeps(ctx, dir, arm, &mut names, &mut figures)?;
    }
    seed_steps(ctx, dir, &mut names, &mut figures)?;
    distances(ctx, dir, &mut names, &mut figures)?;
    Ok(figures)
}

/// (x, mean, std) of one point of a line.
type Point = (f64, f64, f64);

/// (arm, the model of that arm a line shows there).
type ArmModel<'a> = (usize, Option<&'a str>);

/// A swept axis of a merge spec.
#[derive(Debug, Clone, PartialEq)]
enum Axis {
    /// α = w_vision / (w_vision + w_text).
    Alpha,
    Param(String),
}

fn weight(info: &MergeInfo, key: &str) -> Option<f64> {
    info.weights.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

fn alpha(info: &MergeInfo) -> Option<f64> {
    let (v, t) = (weight(info, "vision")?, weight(info, "text")?);
    let a = v / (v + t);
    a.is_finite().then_some(a)
}

/// The merge's value on `axis` and a label of everything else that sets it.
fn on_axis(info: &MergeInfo, axis: &Axis) -> Option<(f64, String)> {
    let mut rest: Vec<String> = Vec::new();
    let x = match axis {
        Axis::Alpha => {
            let a = alpha(info)?;
            rest.extend(info.params.iter().map(|(k, v)| format!("{k}={v}")));
            rest.extend(
                info.weights
                    .iter()
                    .filter(|(k, _)| k != "vision" && k != "text")
                    .map(|(k, v)| format!("weights.{k}={v}")),
            );
            a
        }
        Axis::Param(p) => {
            let x = info.params.iter().find(|(k, _)| k == p)?.1;
            rest.extend(
                info.params
                    .iter()
                    .filter(|(k, _)| k != p)
                    .map(|(k, v)| format!("{k}={v}")),
            );
            rest.extend(info.weights.iter().map(|(k, v)| format!("weights.{k}={v}")));
            x
        }
    };
    Some((x, rest.join(", ")))
}

/// `baseline 0.512, unmerged 0.530` and the horizontal reference series over [x0, x1].
fn references(
    ctx: &Ctx<'_>,
    arm: usize,
    col: &ScoreCol,
    (x0, x1): (f64, f64),
) -> Result<(Vec<Series>, Vec<String>)> {
    let models = &ctx.arms[arm];
    let (mut series, mut text) = (Vec::new(), Vec::new());
    for (label, name) in [(BASELINE, models.baseline), (UNMERGED, models.experts)] {
        let Some(name) = name else { continue };
        if let Some(m) = ctx.summary(arm, name, col)? {
            series.push(Series::new(label, vec![(x0, m.mean), (x1, m.mean)]));
            text.push(format!("{label} {}", fixed(m.mean, 3)));
        }
    }
    Ok((series, text))
}

/// Score vs each swept axis of each merge spec of `arm`.
fn sweeps(
    ctx: &Ctx<'_>,
    dir: &Path,
    arm: usize,
    names: &mut Names,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let models = &ctx.arms[arm];
    let (arm_tag, arm_paren) = if ctx.study.arms.len() > 1 {
        (
            format!("-arm{arm}"),
            format!(" ({})", arm_label(&ctx.study.arms[arm])),
        )
    } else {
        (String::new(), String::new())
    };
    for spec in models.specs() {
        let merges: Vec<(&str, &MergeInfo)> = models
            .merges
            .iter()
            .filter(|(_, i)| i.spec == spec)
            .copied()
            .collect();
        let mut axes = vec![Axis::Alpha];
        for (_, info) in &merges {
            for (k, _) in &info.params {
                if !axes.contains(&Axis::Param(k.clone())) {
                    axes.push(Axis::Param(k.clone()));
                }
            }
        }
        for axis in axes {
            let placed: Vec<(&str, f64, String)> = merges
                .iter()
                .filter_map(|(n, i)| on_axis(i, &axis).map(|(x, r)| (*n, x, r)))
                .collect();
            if distinct(placed.iter().map(|p| p.1)) < 2 {
                continue;
            }
            // (file-name part, shown name, x label)
            let (axis_file, axis_name, x_label) = match &axis {
                Axis::Alpha => (
                    "alpha",
                    "α",
                    "α = w_vision / (w_vision + w_text)".to_string(),
                ),
                Axis::Param(p) => (p.as_str(), p.as_str(), p.clone()),
            };
            for col in &ctx.cols {
                // Groups of merges that differ only on the axis, in plan order.
                let mut groups: Vec<(String, Vec<Point>)> = Vec::new();
                for (name, x, rest) in &placed {
                    let Some(m) = ctx.summary(arm, name, col)? else {
                        continue;
                    };
                    match groups.iter_mut().find(|(r, _)| r == rest) {
                        Some((_, pts)) => pts.push((*x, m.mean, m.std)),
                        None => groups.push((rest.clone(), vec![(*x, m.mean, m.std)])),
                    }
                }
                if groups.is_empty() {
                    continue;
                }
                let mut series = Vec::new();
                let several = groups.len() > 1;
                for (rest, mut pts) in groups {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let label = if several && !rest.is_empty() {
                        format!("{spec} ({rest})")
                    } else {
                        spec.to_string()
                    };
                    series.push(Series {
                        label,
                        points: pts.iter().map(|p| (p.0, p.1)).collect(),
                        err: Some(pts.iter().map(|p| p.2).collect()),
                    });
                }
                let xs: Vec<f64> = series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|p| p.0))
                    .collect();
                let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let (refs, ref_text) = references(ctx, arm, col, (lo, hi))?;
                series.extend(refs);
                let name = names.take(&format!("{axis_file}-{spec}-{}{arm_tag}", col.stem()));
                let title = format!("{spec}: {} vs {axis_name}{arm_paren}", col.header);
                line_plot(dir, &name, &series, &x_label, &col.header, &title)?;
                figures.push(Figure {
                    name,
                    caption: format!(
                        "{} of the merges of `{spec}` vs {axis_name}{arm_paren}: mean over seeds \
                         with ± std error bars; reference lines: {}.",
                        col.header,
                        if ref_text.is_empty() {
                            "none measured".to_string()
                        } else {
                            ref_text.join(", ")
                        }
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Score vs seed pre-training steps (when the arms have ≥ 2 budgets).
fn seed_steps(
    ctx: &Ctx<'_>,
    dir: &Path,
    names: &mut Names,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let arms = &ctx.study.arms;
    if distinct(arms.iter().map(|a| a.seed_steps as f64)) < 2 {
        return Ok(());
    }
    let mut sharings: Vec<&str> = Vec::new();
    for a in arms {
        if !sharings.contains(&a.sharing.as_str()) {
            sharings.push(&a.sharing);
        }
    }
    let mut specs: Vec<&str> = Vec::new();
    for m in &ctx.arms {
        for s in m.specs() {
            if !specs.contains(&s) {
                specs.push(s);
            }
        }
    }
    for col in &ctx.cols {
        let mut series = Vec::new();
        for &sharing in &sharings {
            let mut arm_ids: Vec<usize> = (0..arms.len())
                .filter(|&i| arms[i].sharing == sharing)
                .collect();
            arm_ids.sort_by_key(|&i| arms[i].seed_steps);
            let suffix = if sharings.len() > 1 {
                format!(" — {sharing}")
            } else {
                String::new()
            };
            // (label, the model of each arm)
            let mut lines: Vec<(String, Vec<ArmModel<'_>>)> = Vec::new();
            for &spec in &specs {
                let mut pts = Vec::new();
                for &arm in &arm_ids {
                    pts.push((arm, ctx.best_merge(arm, Some(spec))?.map(|b| b.0)));
                }
                lines.push((format!("{spec} (best){suffix}"), pts));
            }
            lines.push((
                format!("{BASELINE}{suffix}"),
                arm_ids.iter().map(|&a| (a, ctx.arms[a].baseline)).collect(),
            ));
            lines.push((
                format!("{UNMERGED}{suffix}"),
                arm_ids.iter().map(|&a| (a, ctx.arms[a].experts)).collect(),
            ));
            for (label, models) in lines {
                let (mut points, mut err) = (Vec::new(), Vec::new());
                for (arm, name) in models {
                    let Some(name) = name else { continue };
                    if let Some(m) = ctx.summary(arm, name, col)? {
                        points.push((arms[arm].seed_steps as f64, m.mean));
                        err.push(m.std);
                    }
                }
                if !points.is_empty() {
                    series.push(Series {
                        label,
                        points,
                        err: Some(err),
                    });
                }
            }
        }
        if series.is_empty() {
            continue;
        }
        let name = names.take(&format!("seed-steps-{}", col.stem()));
        let title = format!("{} vs seed pre-training steps", col.header);
        line_plot(
            dir,
            &name,
            &series,
            "seed pre-training steps",
            &col.header,
            &title,
        )?;
        figures.push(Figure {
            name,
            caption: format!(
                "{} vs seed pre-training steps: each merge spec's best merge per arm (chosen \
                 by mean primary score over tasks, on the test items), the {BASELINE} and the \
                 {UNMERGED} model; mean over seeds with ± std error bars.",
                col.header
            ),
        });
    }
    Ok(())
}

/// Each raw distance metric vs each primary and zero-shot score of the merges.
fn distances(
    ctx: &Ctx<'_>,
    dir: &Path,
    names: &mut Names,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    for metric in &ctx.study.distances {
        for col in ctx.cols.iter().chain(&ctx.zs_cols) {
            let points = ctx.distance_points(metric, col);
            if distinct(points.iter().map(|p| p.0)) < 2 {
                continue;
            }
            let name = names.take(&format!("distance-{metric}-{}", col.stem()));
            let title = format!("{metric} distance vs {}", col.header);
            let fit = scatter_with_fit(
                dir,
                &name,
                &points,
                &format!("{metric} distance between the vision and text experts"),
                &col.header,
                &title,
            )?;
            figures.push(Figure {
                name,
                caption: format!(
                    "{} of each merge vs the {metric} distance between the vision and text \
                     experts it merges: one point per (seed, arm, merge), n = {}, least-squares \
                     line, Pearson r = {}.",
                    col.header,
                    fit.n,
                    fit.r
                        .map_or_else(|| "undefined".to_string(), |r| fixed(r, 3))
                ),
            });
        }
    }
    Ok(())
}
