//! The findings (a)–(e): each claim of the paper checked against the study by the rule stated
//! in the `analysis` module doc, with the numbers the verdict rests on.

use crate::report::{Finding, Verdict, fixed};
use crate::stats::CorrelationKind;

use super::data::{Ctx, Paired, ScoreCol, arm_label, distinct};
use super::ranking::{Corr, MetricRank, corr};
use super::{DELTA, LEVEL, Result, signed, with_interval};

const CLAIM_A: &str =
    "Merging after shared-init pre-training approaches the modality-agnostic baseline";
const CLAIM_B: &str = "More seed pre-training gives better merges and smaller distances";
const CLAIM_C: &str = "Which merge method is best";
const CLAIM_D: &str = "Which architecture merges best";
const CLAIM_E: &str = "Which distance metric predicts merge outcome best";
const CLAIM_F: &str =
    "Aligning independently initialised experts recovers the shared-initialisation merge";

/// The five findings (a)–(e), and (f) when the experiment sweeps the experts' initialisation.
pub(crate) fn findings(ctx: &Ctx<'_>, ranking: &[MetricRank]) -> Result<Vec<Finding>> {
    let mut out = vec![
        approaches_baseline(ctx)?,
        seed_steps(ctx)?,
        best_method(ctx)?,
        best_architecture(ctx)?,
        best_metric(ctx, ranking),
    ];
    if ctx.study.arms.iter().any(|a| a.init != "shared") {
        out.push(alignment(ctx)?);
    }
    Ok(out)
}

/// (f): in the independent-init arm, the best aligned merge against the shared-init arm's
/// best unaligned merge (same seed budget and sharing), and against its own best unaligned
/// merge; the share of the gap alignment closes, on M.
fn alignment(ctx: &Ctx<'_>) -> Result<Finding> {
    let arms = &ctx.study.arms;
    let pair = arms.iter().enumerate().find_map(|(i, a)| {
        (a.init == "independent").then_some(())?;
        let j = arms.iter().position(|b| {
            b.init == "shared" && b.seed_steps == a.seed_steps && b.sharing == a.sharing
        })?;
        Some((i, j))
    });
    let Some((ind, sh)) = pair else {
        return Ok(inconclusive(
            CLAIM_F,
            "needs an arm of independent experts and one of shared-init experts with the same seed budget and sharing",
        ));
    };
    let best = |arm: usize, aligned: bool| {
        let names = ctx.arms[arm]
            .merges
            .iter()
            .filter(|(_, info)| info.align.is_some() == aligned)
            .map(|(n, _)| *n);
        ctx.best_of(arm, names)
    };
    let (Some((a_name, _, a_m)), Some((u_name, _, u_m)), Some((s_name, _, s_m))) =
        (best(ind, true)?, best(ind, false)?, best(sh, false)?)
    else {
        return Ok(inconclusive(
            CLAIM_F,
            "needs scored aligned and unaligned merges of the independent experts and an unaligned merge of the shared-init experts",
        ));
    };
    let vs_shared = compare_all(ctx, (ind, a_name), (sh, s_name))?;
    let vs_unaligned = compare_all(ctx, (ind, a_name), (ind, u_name))?;
    let tested: Vec<Paired> = vs_shared.iter().filter_map(|(_, p)| *p).collect();
    let closed = if (s_m - u_m).abs() > 1e-12 {
        format!("{:.0}%", 100.0 * (a_m - u_m) / (s_m - u_m))
    } else {
        "undefined (no gap)".to_string()
    };
    let head = format!(
        "independent experts: best aligned merge `{a_name}` M = {}, best unaligned `{u_name}` M = {}; shared-init experts: best unaligned `{s_name}` M = {}; share of the gap closed: {closed}",
        fixed(a_m, 3),
        fixed(u_m, 3),
        fixed(s_m, 3),
    );
    if tested.is_empty() {
        return Ok(inconclusive(CLAIM_F, format!("{head}: no per-item values")));
    }
    let verdict = not_worse_than(&tested);
    Ok(finding(
        CLAIM_F,
        verdict,
        format!(
            "{head}. Δ aligned (independent) − unaligned (shared init), paired {} intervals: {}; δ = {DELTA} (holds if every lower end ≥ −δ, does not hold if some upper end < −δ). Δ aligned − unaligned (both independent): {}",
            level_pct(),
            describe(&vs_shared),
            describe(&vs_unaligned)
        ),
    ))
}

fn finding(claim: &str, verdict: Verdict, evidence: String) -> Finding {
    Finding {
        claim: claim.to_string(),
        verdict,
        evidence,
    }
}

fn inconclusive(claim: &str, evidence: impl Into<String>) -> Finding {
    finding(claim, Verdict::Inconclusive, evidence.into())
}

/// Every primary score's paired comparison a − b, in column order.
fn compare_all<'c>(
    ctx: &'c Ctx<'_>,
    a: (usize, &str),
    b: (usize, &str),
) -> Result<Vec<(&'c ScoreCol, Option<Paired>)>> {
    ctx.cols
        .iter()
        .map(|c| Ok((c, ctx.paired(a, b, c)?)))
        .collect()
}

/// `VQA +0.010 [-0.002, +0.021] (n=600 items); ...; no per-item values: mIoU`.
fn describe(comps: &[(&ScoreCol, Option<Paired>)]) -> String {
    let tested: Vec<String> = comps
        .iter()
        .filter_map(|(c, p)| {
            p.map(|p| {
                format!(
                    "{} {} (n={} items)",
                    c.header,
                    with_interval(&p.interval),
                    p.items
                )
            })
        })
        .collect();
    let untested: Vec<&str> = comps
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(c, _)| c.header.as_str())
        .collect();
    let mut out = tested.join("; ");
    if !untested.is_empty() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&format!("no per-item values: {}", untested.join(", ")));
    }
    out
}

fn level_pct() -> String {
    format!("{:.0}%", LEVEL * 100.0)
}

/// (a): the best merge after seed pre-training against its arm's baseline.
fn approaches_baseline(ctx: &Ctx<'_>) -> Result<Finding> {
    let arms = &ctx.study.arms;
    let mut best: Option<(usize, &str, usize, f64)> = None;
    for (arm, a) in arms.iter().enumerate() {
        if a.seed_steps == 0 {
            continue;
        }
        if let Some((name, k, m)) = ctx.best_merge(arm, None)?
            && best.is_none_or(|(_, _, bk, bm)| k > bk || (k == bk && m > bm))
        {
            best = Some((arm, name, k, m));
        }
    }
    let Some((arm, merge, _, m)) = best else {
        return Ok(inconclusive(
            CLAIM_A,
            if arms.iter().all(|a| a.seed_steps == 0) {
                "no arm has seed pre-training (seed_steps > 0)"
            } else {
                "no merge of an arm with seed pre-training has a score"
            },
        ));
    };
    let Some(baseline) = ctx.arms[arm].baseline else {
        return Ok(inconclusive(
            CLAIM_A,
            format!(
                "the arm of the best merge `{merge}` ({}) has no modality-agnostic baseline",
                arm_label(&arms[arm])
            ),
        ));
    };
    let comps = compare_all(ctx, (arm, merge), (arm, baseline))?;
    let tested: Vec<Paired> = comps.iter().filter_map(|(_, p)| *p).collect();
    let base_m = ctx
        .overall(arm, baseline)?
        .map_or_else(|| "-".to_string(), |(_, v)| fixed(v, 3));
    let head = format!(
        "best merge `{merge}` ({}; mean primary score {} vs baseline {base_m})",
        arm_label(&arms[arm]),
        fixed(m, 3)
    );
    if tested.is_empty() {
        return Ok(inconclusive(
            CLAIM_A,
            format!("{head}: no score has per-item values to compare"),
        ));
    }
    let verdict = not_worse_than(&tested);
    Ok(finding(
        CLAIM_A,
        verdict,
        format!(
            "{head}; Δ merge − baseline with paired {} intervals: {}; δ = {DELTA} (holds if \
             every lower end ≥ −δ, does not hold if some upper end < −δ)",
            level_pct(),
            describe(&comps)
        ),
    ))
}

/// Holds if every lower end ≥ −δ, does not hold if some upper end < −δ, else inconclusive.
fn not_worse_than(tested: &[Paired]) -> Verdict {
    if tested.iter().all(|p| p.interval.lo >= -DELTA) {
        Verdict::Holds
    } else if tested.iter().any(|p| p.interval.hi < -DELTA) {
        Verdict::DoesNotHold
    } else {
        Verdict::Inconclusive
    }
}

fn corr_text(c: Option<Corr>) -> String {
    match c {
        None => "undefined".to_string(),
        Some(Corr {
            estimate,
            interval: Some((lo, hi)),
        }) => format!("{} [{}, {}]", signed(estimate), signed(lo), signed(hi)),
        Some(Corr { estimate, .. }) => format!("{} (no interval)", signed(estimate)),
    }
}

fn interval_above(c: Option<Corr>) -> bool {
    matches!(c, Some(Corr { interval: Some((lo, _)), .. }) if lo > 0.0)
}

fn interval_below(c: Option<Corr>) -> bool {
    matches!(c, Some(Corr { interval: Some((_, hi)), .. }) if hi < 0.0)
}

/// (b): Spearman of seed steps with the best merge's M_s and with the expert distance.
fn seed_steps(ctx: &Ctx<'_>) -> Result<Finding> {
    let arms = &ctx.study.arms;
    // The sharing with the most distinct seed budgets (first on a tie).
    let mut sharings: Vec<&str> = Vec::new();
    for a in arms {
        if !sharings.contains(&a.sharing.as_str()) {
            sharings.push(&a.sharing);
        }
    }
    let budgets = |sharing: &str| {
        distinct(
            arms.iter()
                .filter(|a| a.sharing == sharing)
                .map(|a| a.seed_steps as f64),
        )
    };
    let mut sharing = sharings.first().copied().unwrap_or_default();
    for &s in &sharings {
        if budgets(s) > budgets(sharing) {
            sharing = s;
        }
    }
    let n_budgets = budgets(sharing);
    if n_budgets < 3 {
        return Ok(inconclusive(
            CLAIM_B,
            format!("needs ≥ 3 seed budgets (arms with distinct seed_steps), have {n_budgets}"),
        ));
    }
    let metric = if ctx.study.distances.iter().any(|d| d == "l2") {
        Some("l2")
    } else {
        ctx.study.distances.first().map(String::as_str)
    };
    let (mut score_pts, mut dist_pts) = (Vec::new(), Vec::new());
    let mut per_arm = Vec::new();
    for (arm, a) in arms
        .iter()
        .enumerate()
        .filter(|(_, a)| a.sharing == sharing)
    {
        let x = a.seed_steps as f64;
        if let Some((merge, _, m)) = ctx.best_merge(arm, None)? {
            per_arm.push(format!("{}: {}", a.seed_steps, fixed(m, 3)));
            for &seed in &ctx.study.seeds {
                if let Some(y) = ctx.seed_overall(arm, merge, seed) {
                    score_pts.push((x, y));
                }
            }
        }
        if let Some(metric) = metric {
            for &seed in &ctx.study.seeds {
                if let Some(d) = ctx.distance(seed, arm, metric) {
                    dist_pts.push((x, d));
                }
            }
        }
    }
    let spearman = |pts: &[(f64, f64)]| -> Result<Option<Corr>> {
        let (x, y): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
        corr(&x, &y, CorrelationKind::Spearman)
    };
    let score = spearman(&score_pts)?;
    let dist = if metric.is_some() {
        spearman(&dist_pts)?
    } else {
        None
    };
    let verdict = if interval_above(score) && interval_below(dist) {
        Verdict::Holds
    } else if interval_below(score) || interval_above(dist) {
        Verdict::DoesNotHold
    } else {
        Verdict::Inconclusive
    };
    let dist_text = match metric {
        Some(m) => format!(
            "Spearman ρ(seed steps, {m} distance of the experts) = {} over {} (seed, arm) points",
            corr_text(dist),
            dist_pts.len()
        ),
        None => "no distance metric was computed".to_string(),
    };
    Ok(finding(
        CLAIM_B,
        verdict,
        format!(
            "sharing {sharing}, {n_budgets} seed budgets; best merge's mean primary score by \
             seed steps: {}; Spearman ρ(seed steps, best merge's per-seed mean primary score) \
             = {} over {} (seed, arm) points; {dist_text} ({} bootstrap intervals; holds if \
             the score interval is above 0 and the distance interval below 0)",
            per_arm.join(", "),
            corr_text(score),
            score_pts.len(),
            level_pct()
        ),
    ))
}

/// A contender of (c) or (d): what it is, its arm, its best merge and (tasks, M).
struct Contender<'a> {
    what: String,
    arm: usize,
    merge: &'a str,
    tasks: usize,
    m: f64,
}

/// Best of `contenders` vs the runner-up by the majority rule of (c) and (d).
fn versus(ctx: &Ctx<'_>, claim: &str, mut contenders: Vec<Contender<'_>>) -> Result<Finding> {
    // Stable: ties keep the given order.
    contenders.sort_by(|a, b| b.tasks.cmp(&a.tasks).then(b.m.total_cmp(&a.m)));
    let (Some(best), Some(second)) = (contenders.first(), contenders.get(1)) else {
        return Ok(inconclusive(claim, "fewer than two contenders have scores"));
    };
    let comps = compare_all(ctx, (best.arm, best.merge), (second.arm, second.merge))?;
    let tested: Vec<Paired> = comps.iter().filter_map(|(_, p)| *p).collect();
    let above = tested.iter().filter(|p| p.interval.lo > 0.0).count();
    let verdict = if !tested.is_empty() && 2 * above > tested.len() {
        Verdict::Holds
    } else {
        Verdict::Inconclusive
    };
    let others: Vec<String> = contenders[2..]
        .iter()
        .map(|c| format!("{} {}", c.what, fixed(c.m, 3)))
        .collect();
    Ok(finding(
        claim,
        verdict,
        format!(
            "{} (best merge `{}`, mean primary score {}) vs runner-up {} (`{}`, {}): margin {}; \
             Δ with paired {} intervals: {}; above 0 on {above} of {} scores with per-item \
             values (rule: holds if above 0 on a majority){}",
            best.what,
            best.merge,
            fixed(best.m, 3),
            second.what,
            second.merge,
            fixed(second.m, 3),
            signed(best.m - second.m),
            level_pct(),
            describe(&comps),
            tested.len(),
            if others.is_empty() {
                String::new()
            } else {
                format!("; others: {}", others.join(", "))
            }
        ),
    ))
}

/// (c): the best merge spec in the arm of the study's best merge.
fn best_method(ctx: &Ctx<'_>) -> Result<Finding> {
    let mut reference: Option<(usize, usize, f64)> = None;
    for arm in 0..ctx.arms.len() {
        if let Some((_, k, m)) = ctx.best_merge(arm, None)?
            && reference.is_none_or(|(_, bk, bm)| k > bk || (k == bk && m > bm))
        {
            reference = Some((arm, k, m));
        }
    }
    let Some((arm, _, _)) = reference else {
        return Ok(inconclusive(CLAIM_C, "no merge has a score"));
    };
    let specs = ctx.arms[arm].specs();
    if specs.len() < 2 {
        return Ok(inconclusive(
            CLAIM_C,
            format!(
                "one merge method ({})",
                specs.first().copied().unwrap_or("none")
            ),
        ));
    }
    let mut contenders = Vec::new();
    for spec in specs {
        if let Some((merge, tasks, m)) = ctx.best_merge(arm, Some(spec))? {
            contenders.push(Contender {
                what: format!("`{spec}`"),
                arm,
                merge,
                tasks,
                m,
            });
        }
    }
    let mut f = versus(ctx, CLAIM_C, contenders)?;
    if ctx.study.arms.len() > 1 {
        f.evidence = format!("in arm {}: {}", arm_label(&ctx.study.arms[arm]), f.evidence);
    }
    Ok(f)
}

/// (d): the best sharing variant at the seed budget with the most variants.
fn best_architecture(ctx: &Ctx<'_>) -> Result<Finding> {
    let arms = &ctx.study.arms;
    // (seed_steps, first arm of each sharing at that budget), budgets in arm order.
    let mut budgets: Vec<(u64, Vec<usize>)> = Vec::new();
    for (i, a) in arms.iter().enumerate() {
        match budgets.iter_mut().find(|(s, _)| *s == a.seed_steps) {
            Some((_, v)) => {
                if !v.iter().any(|&j| arms[j].sharing == a.sharing) {
                    v.push(i);
                }
            }
            None => budgets.push((a.seed_steps, vec![i])),
        }
    }
    let mut chosen: Option<&(u64, Vec<usize>)> = None;
    for b in &budgets {
        if chosen.is_none_or(|c| b.1.len() > c.1.len() || (b.1.len() == c.1.len() && b.0 > c.0)) {
            chosen = Some(b);
        }
    }
    let Some((steps, arm_ids)) = chosen.filter(|c| c.1.len() >= 2) else {
        let mut sharings: Vec<&str> = arms.iter().map(|a| a.sharing.as_str()).collect();
        sharings.sort_unstable();
        sharings.dedup();
        return Ok(inconclusive(
            CLAIM_D,
            if sharings.len() < 2 {
                "one architecture".to_string()
            } else {
                "no seed budget has arms with ≥ 2 architectures".to_string()
            },
        ));
    };
    let mut contenders = Vec::new();
    for &arm in arm_ids {
        if let Some((merge, tasks, m)) = ctx.best_merge(arm, None)? {
            contenders.push(Contender {
                what: format!("sharing {}", arms[arm].sharing),
                arm,
                merge,
                tasks,
                m,
            });
        }
    }
    let mut f = versus(ctx, CLAIM_D, contenders)?;
    f.evidence = format!("at seed steps {steps}: {}", f.evidence);
    Ok(f)
}

/// (e): the top of the ranking.
fn best_metric(ctx: &Ctx<'_>, ranking: &[MetricRank]) -> Finding {
    let Some(top) = ranking.first() else {
        return inconclusive(CLAIM_E, "no distance metric was computed");
    };
    let Some(mean) = top.mean_abs_spearman else {
        return inconclusive(
            CLAIM_E,
            format!(
                "no metric has a defined Spearman ρ ({} distinct distance value(s) for {}): \
                 needs more arms or seeds",
                top.distinct,
                top.label()
            ),
        );
    };
    let cols: Vec<&ScoreCol> = ctx.cols.iter().chain(&ctx.zs_cols).collect();
    let per_score: Vec<String> = top
        .scores
        .iter()
        .filter(|s| s.spearman().is_some())
        .map(|s| format!("{} {}", cols[s.col].header, corr_text(s.spearman())))
        .collect();
    let with_interval: Vec<Corr> = top
        .scores
        .iter()
        .filter_map(|s| s.spearman())
        .filter(|c| c.interval.is_some())
        .collect();
    let excl = with_interval
        .iter()
        .filter(|c| interval_above(Some(**c)) || interval_below(Some(**c)))
        .count();
    let verdict = if !with_interval.is_empty() && 2 * excl > with_interval.len() {
        Verdict::Holds
    } else {
        Verdict::Inconclusive
    };
    let paper: Vec<String> = ranking
        .iter()
        .enumerate()
        .filter(|(_, r)| super::PAPER_METRICS.contains(&r.metric.as_str()))
        .map(|(i, r)| format!("{} #{}", r.metric, i + 1))
        .collect();
    finding(
        CLAIM_E,
        verdict,
        format!(
            "{} ranks first of {} with mean |ρ| = {} over {} score(s); Spearman ρ with {} \
             intervals: {}; the interval excludes 0 on {excl} of {} (rule: holds if it \
             excludes 0 on a majority); \
             paper metrics' ranks: {}",
            top.label(),
            ranking.len(),
            fixed(mean, 3),
            per_score.len(),
            level_pct(),
            per_score.join("; "),
            with_interval.len(),
            if paper.is_empty() {
                "not computed".to_string()
            } else {
                paper.join(", ")
            }
        ),
    )
}
