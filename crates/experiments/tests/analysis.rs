//! The analysis on hand-built studies: exact main-table cells and suite baseline rows, a
//! constant per-item difference giving a point interval, findings that flip with the data,
//! the ranking of a perfectly correlated metric, plot files, byte determinism, missing items
//! and malformed studies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use mmerge_core::hash::{fnv1a, splitmix64, unit_f64};
use mmerge_experiments::analysis::{AnalysisError, analyse};
use mmerge_experiments::report::{Cell, Finding, Report, Row, RowKind, Table, Verdict};
use mmerge_experiments::study::{
    Arm, DistanceResult, Evaluation, MergeInfo, ModelResult, Role, Study,
};

mod common;
use common::names_in;

/// Items per score and seed.
const N: usize = 120;

const ALPHAS: [f64; 3] = [0.25, 0.5, 0.75];
const LAMBDAS: [f64; 2] = [0.5, 1.0];

fn interp(a: f64) -> String {
    format!(
        "interpolation[weights.vision={a}, weights.text={}]",
        1.0 - a
    )
}

fn arith(l: f64) -> String {
    format!("modality-arithmetic[lambda={l}]")
}

/// Item i of a score: 1 when its difficulty (shared by every model) is below the model's
/// quality `q`, so a better model is at least as good on every item.
fn items(salt: &str, q: f64) -> Vec<f64> {
    (0..N)
        .map(|i| {
            let u = unit_f64(splitmix64(fnv1a(salt.as_bytes()) ^ i as u64));
            if u < q { 1.0 } else { 0.0 }
        })
        .collect()
}

fn evaluation(scores: &[(&str, &str)], q: f64) -> Evaluation {
    let mut e = Evaluation::default();
    for (key, salt) in scores {
        let it = items(salt, q);
        e.scores
            .insert(key.to_string(), it.iter().sum::<f64>() / N as f64);
        e.items.insert(key.to_string(), it);
    }
    e
}

/// The models of the study, as (name, role).
fn models() -> Vec<(String, Role)> {
    let mut v = vec![
        ("seed".to_string(), Role::Seed),
        ("experts".to_string(), Role::Experts),
        ("baseline".to_string(), Role::Baseline),
    ];
    for a in ALPHAS {
        v.push((
            interp(a),
            Role::Merge(MergeInfo {
                spec: "interpolation".into(),
                method: "linear".into(),
                params: vec![],
                weights: vec![("vision".into(), a), ("text".into(), 1.0 - a)],
                align: None,
            }),
        ));
    }
    for l in LAMBDAS {
        v.push((
            arith(l),
            Role::Merge(MergeInfo {
                spec: "modality-arithmetic".into(),
                method: "task_arithmetic".into(),
                params: vec![("lambda".into(), l)],
                weights: vec![],
                align: None,
            }),
        ));
    }
    v
}

/// A study of tasks vqa, retrieval, nlvr2 with zero-shot signals: every model of seed index
/// s and arm a has quality `quality(s, a, name)`; the experts of (s, a) have distances
/// `dist(s, a)` = [l2, truncated_soft_sign, cosine].
fn build(
    seeds: &[u64],
    arms: &[(u64, &str)],
    quality: impl Fn(usize, usize, &str) -> f64,
    dist: impl Fn(usize, usize) -> [f64; 3],
) -> Study {
    let mut out = Vec::new();
    let mut distances = Vec::new();
    for (arm, _) in arms.iter().enumerate() {
        for (si, &seed) in seeds.iter().enumerate() {
            for (name, role) in models() {
                let q = quality(si, arm, &name);
                let mut tasks = BTreeMap::new();
                if role != Role::Seed {
                    tasks.insert("vqa".into(), evaluation(&[("vqa_score", "vqa")], q));
                    tasks.insert(
                        "retrieval".into(),
                        evaluation(&[("tr_r1", "tr"), ("ir_r1", "ir")], q),
                    );
                    tasks.insert("nlvr2".into(), evaluation(&[("accuracy", "nlvr2")], q));
                }
                out.push(ModelResult {
                    seed,
                    arm,
                    name,
                    role,
                    tasks,
                    zero_shot: Some(evaluation(&[("ir_r1", "zs-ir"), ("tr_r1", "zs-tr")], q)),
                });
            }
            let [l2, tssd, cos] = dist(si, arm);
            distances.push((
                seed,
                arm,
                DistanceResult {
                    raw: BTreeMap::from([
                        ("l2".into(), l2),
                        ("truncated_soft_sign".into(), tssd),
                        ("cosine".into(), cos),
                    ]),
                    task_vector: BTreeMap::new(),
                },
            ));
        }
    }
    Study {
        experiment: "analysis-test".into(),
        profile: "quick".into(),
        git_commit: None,
        command: "mmerge run experiments/analysis-test.yaml --profile quick".into(),
        suite: "synthetic small, generator seed 0".into(),
        baselines: BTreeMap::from([
            (
                "vqa".into(),
                BTreeMap::from([("question_prior".into(), 0.31), ("majority".into(), 0.2)]),
            ),
            (
                "retrieval".into(),
                BTreeMap::from([("chance_r1".into(), 0.01), ("chance_r5".into(), 0.05)]),
            ),
            (
                "nlvr2".into(),
                BTreeMap::from([("statement_prior".into(), 0.52)]),
            ),
        ]),
        seeds: seeds.to_vec(),
        tasks: vec!["vqa".into(), "retrieval".into(), "nlvr2".into()],
        task_kinds: BTreeMap::from([
            ("vqa".into(), "vqa".into()),
            ("retrieval".into(), "retrieval".into()),
            ("nlvr2".into(), "nlvr2".into()),
        ]),
        distances: vec!["l2".into(), "truncated_soft_sign".into(), "cosine".into()],
        arms: arms
            .iter()
            .map(|&(seed_steps, sharing)| Arm {
                seed_steps,
                sharing: sharing.into(),
                init: "shared".into(),
            })
            .collect(),
        models: out,
        expert_distances: distances,
    }
}

/// A plausible default: experts 0.62, baseline 0.6, α = 0.5 the best interpolation,
/// modality arithmetic in between; seeds and arms shift everything a little.
fn default_quality(s: usize, a: usize, name: &str) -> f64 {
    let base = match name {
        "experts" => 0.62,
        "baseline" | "seed" => 0.6,
        n if n == interp(0.5) => 0.58,
        n if n.starts_with("interpolation") => 0.5,
        n if n == arith(0.5) => 0.55,
        _ => 0.45,
    };
    base + 0.01 * s as f64 + 0.02 * a as f64
}

fn default_dist(s: usize, a: usize) -> [f64; 3] {
    let noise = unit_f64(splitmix64((s * 31 + a) as u64));
    [
        5.0 + a as f64 + 0.1 * s as f64,
        0.3 + 0.01 * s as f64,
        noise,
    ]
}

fn default_study() -> Study {
    build(
        &[0, 1, 2],
        &[(100, "all_specific")],
        default_quality,
        default_dist,
    )
}

fn model_mut<'a>(study: &'a mut Study, seed: u64, arm: usize, name: &str) -> &'a mut ModelResult {
    study
        .models
        .iter_mut()
        .find(|m| m.seed == seed && m.arm == arm && m.name == name)
        .unwrap()
}

fn table<'a>(r: &'a Report, title: &str) -> &'a Table {
    r.tables
        .iter()
        .find(|t| t.title == title)
        .unwrap_or_else(|| {
            let titles: Vec<_> = r.tables.iter().map(|t| &t.title).collect();
            panic!("no table `{title}` in {titles:?}")
        })
}

fn row<'a>(t: &'a Table, label: &str) -> &'a Row {
    t.rows
        .iter()
        .find(|r| r.label == label)
        .unwrap_or_else(|| panic!("no row `{label}` in `{}`", t.title))
}

fn col(t: &Table, header: &str) -> usize {
    t.columns
        .iter()
        .position(|c| c.header() == header)
        .unwrap_or_else(|| panic!("no column `{header}` in `{}`", t.title))
}

fn finding<'a>(r: &'a Report, claim_start: &str) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.claim.starts_with(claim_start))
        .unwrap()
}

fn run(study: &Study) -> (tempfile::TempDir, Report) {
    let dir = tempfile::tempdir().unwrap();
    let report = analyse(study, dir.path()).unwrap();
    (dir, report)
}

#[test]
fn main_table_cells_rows_and_intro() {
    let mut study = default_study();
    for (seed, v) in [(0, 0.5), (1, 0.625), (2, 0.75)] {
        let e = model_mut(&mut study, seed, 0, "baseline")
            .tasks
            .get_mut("vqa")
            .unwrap();
        e.scores.insert("vqa_score".into(), v);
    }
    // One seed without the experts' NLVR2 score: n = 2.
    model_mut(&mut study, 1, 0, "experts").tasks.remove("nlvr2");
    let (_dir, r) = run(&study);

    assert_eq!(r.title, "analysis-test (profile quick)");
    assert!(
        r.intro[0].contains("Seeds: 0, 1, 2 (3 in all)"),
        "{}",
        r.intro[0]
    );
    assert_eq!(
        r.intro[1],
        "Reproduce with `mmerge run experiments/analysis-test.yaml --profile quick` (not a \
         git checkout)."
    );
    assert!(r.intro[2].contains("2000 resamples"));

    let t = table(&r, "Main results");
    let headers: Vec<String> = t.columns.iter().map(|c| c.header()).collect();
    assert_eq!(
        headers,
        ["VQA", "TR@1", "IR@1", "NLVR2", "ZS IR@1", "ZS TR@1"]
    );
    let labels: Vec<&str> = t.rows.iter().map(|r| r.label.as_str()).collect();
    let mut expected = vec![
        "modality-specific (unmerged)".to_string(),
        "modality-agnostic baseline".to_string(),
    ];
    expected.extend(ALPHAS.map(interp));
    expected.extend(LAMBDAS.map(arith));
    expected.extend(
        [
            "seed model W0",
            "text-only: per-question prior",
            "text-only: statement prior",
            "chance",
        ]
        .map(String::from),
    );
    assert_eq!(labels, expected);

    let vqa = col(t, "VQA");
    assert_eq!(
        row(t, "modality-agnostic baseline").cells[vqa],
        Cell::MeanStd {
            mean: 0.625,
            std: 0.125,
            n: 3
        }
    );
    match row(t, "modality-specific (unmerged)").cells[col(t, "NLVR2")] {
        Cell::MeanStd { n, .. } => assert_eq!(n, 2),
        other => panic!("{other:?}"),
    }
    // The seed model has only zero-shot cells.
    let seed = row(t, "seed model W0");
    assert_eq!(seed.cells[..4], [Cell::Missing; 4]);
    assert!(matches!(seed.cells[4], Cell::MeanStd { n: 3, .. }));

    // Suite baselines: only the columns they apply to.
    let prior = row(t, "text-only: per-question prior");
    assert_eq!(prior.kind, RowKind::Baseline);
    assert_eq!(
        prior.cells,
        [
            Cell::Value(0.31),
            Cell::Missing,
            Cell::Missing,
            Cell::Missing,
            Cell::Missing,
            Cell::Missing
        ]
    );
    let chance = row(t, "chance");
    assert_eq!(chance.kind, RowKind::Baseline);
    assert_eq!(chance.cells[col(t, "IR@1")], Cell::Value(0.01));
    assert_eq!(chance.cells[col(t, "TR@1")], Cell::Missing);
    assert_eq!(
        row(t, "text-only: statement prior").cells[col(t, "NLVR2")],
        Cell::Value(0.52)
    );
    // Markdown renders it (the report's own checks pass).
    let md = r.to_markdown().unwrap();
    assert!(
        md.contains("| modality-agnostic baseline | 0.625 ± 0.125 (n=3) |"),
        "{md}"
    );
    assert!(md.contains("\n## Findings\n"));
}

#[test]
fn constant_item_difference_gives_a_point_interval() {
    let mut study = default_study();
    let merge = interp(0.5);
    for seed in [0, 1, 2] {
        let base = model_mut(&mut study, seed, 0, "baseline").tasks["vqa"].clone();
        let e = model_mut(&mut study, seed, 0, &merge)
            .tasks
            .get_mut("vqa")
            .unwrap();
        let shifted: Vec<f64> = base.items["vqa_score"].iter().map(|x| x + 0.25).collect();
        e.scores
            .insert("vqa_score".into(), base.scores["vqa_score"] + 0.25);
        e.items.insert("vqa_score".into(), shifted);
    }
    let (_dir, r) = run(&study);
    let t = table(&r, "Paired differences, merge − reference");
    let cells = &row(t, &format!("{merge} · VQA")).cells;
    assert_eq!(
        cells[..4],
        [
            Cell::Value(0.25),
            Cell::Value(0.25),
            Cell::Value(0.25),
            Cell::Value((3 * N) as f64)
        ]
    );
    assert_eq!(t.rows.len(), 5 * 4, "5 merges × 4 scores");
}

fn approach_finding(merge_q: f64) -> Finding {
    let study = build(
        &[0, 1, 2],
        &[(100, "all_specific")],
        |s, _, name| {
            let q = match name {
                "baseline" | "experts" | "seed" => 0.8,
                _ => merge_q,
            };
            q + 0.01 * s as f64
        },
        default_dist,
    );
    let (_dir, r) = run(&study);
    finding(&r, "Merging after shared-init").clone()
}

#[test]
fn finding_a_follows_the_data() {
    let worse = approach_finding(0.3);
    assert_eq!(worse.verdict, Verdict::DoesNotHold, "{}", worse.evidence);
    assert!(worse.evidence.contains("δ = 0.02"), "{}", worse.evidence);
    let equal = approach_finding(0.8);
    assert_eq!(equal.verdict, Verdict::Holds, "{}", equal.evidence);
    assert!(
        equal
            .evidence
            .contains("VQA +0.000 [+0.000, +0.000] (n=360 items)"),
        "{}",
        equal.evidence
    );
}

#[test]
fn seed_steps_finding_and_plots() {
    let arms = [
        (0, "all_specific"),
        (100, "all_specific"),
        (200, "all_specific"),
    ];
    let study = build(
        &[0, 1, 2],
        &arms,
        |s, a, name| default_quality(s, 0, name) - 0.3 + 0.15 * a as f64,
        |s, a| [10.0 - 2.0 * a as f64 + 0.01 * s as f64, 0.5, 0.1 * s as f64],
    );
    let (dir, r) = run(&study);
    let f = finding(&r, "More seed pre-training");
    assert_eq!(f.verdict, Verdict::Holds, "{}", f.evidence);
    assert!(
        f.evidence.contains("over 9 (seed, arm) points"),
        "{}",
        f.evidence
    );
    // One main table per arm, named after it.
    assert!(
        r.tables
            .iter()
            .any(|t| t.title == "Main results: seed steps 200, experts sharing all_specific")
    );
    let plots = Report::plots_dir(dir.path());
    for stem in [
        "seed-steps-vqa-vqa-score",
        "alpha-interpolation-vqa-vqa-score-arm2",
    ] {
        assert!(plots.join(format!("{stem}.png")).is_file(), "{stem}");
        assert!(plots.join(format!("{stem}.svg")).is_file(), "{stem}");
    }
    // Architecture: one sharing variant.
    let d = finding(&r, "Which architecture");
    assert_eq!(d.verdict, Verdict::Inconclusive);
    assert_eq!(d.evidence, "one architecture");

    let (_dir, one) = run(&default_study());
    let f = finding(&one, "More seed pre-training");
    assert_eq!(f.verdict, Verdict::Inconclusive);
    assert!(
        f.evidence.contains("needs ≥ 3 seed budgets"),
        "{}",
        f.evidence
    );
}

#[test]
fn ranking_puts_the_perfectly_correlated_metric_first() {
    // Every model of (seed, arm) has the same quality; `cosine` is that quality, `l2` and
    // `truncated_soft_sign` are noise.
    let q = |s: usize, a: usize| 0.2 + 0.06 * (3 * a + s) as f64;
    let arms = [
        (100, "all_specific"),
        (200, "all_specific"),
        (300, "all_specific"),
    ];
    let study = build(
        &[0, 1, 2],
        &arms,
        |s, a, _| q(s, a),
        |s, a| {
            let noise = |k: u64| unit_f64(splitmix64((s * 7 + a * 3) as u64 ^ (k << 32)));
            [noise(1), noise(2), q(s, a)]
        },
    );
    let (_dir, r) = run(&study);
    let t = table(
        &r,
        "Distance metrics ranked by mean |Spearman ρ| with merge scores",
    );
    assert_eq!(t.rows[0].label, "cosine");
    assert_eq!(t.rows[0].cells[0], Cell::Value(1.0));
    for other in &t.rows[1..] {
        match other.cells[0] {
            Cell::Value(v) => assert!(v < 1.0, "{}: {v}", other.label),
            c => panic!("{c:?}"),
        }
    }
    assert!(t.rows.iter().any(|r| r.label == "l2 (paper)"));
    let e = finding(&r, "Which distance metric");
    assert_eq!(e.verdict, Verdict::Holds, "{}", e.evidence);
    assert!(
        e.evidence.starts_with("cosine ranks first of 3"),
        "{}",
        e.evidence
    );
}

#[test]
fn too_few_distances_give_a_note_and_no_scatter() {
    // One seed, one arm: one distance value per metric.
    let study = build(
        &[0],
        &[(100, "all_specific")],
        default_quality,
        default_dist,
    );
    let (dir, r) = run(&study);
    let t = table(
        &r,
        "Distance metrics ranked by mean |Spearman ρ| with merge scores",
    );
    assert!(
        t.notes.iter().any(
            |n| n.starts_with("l2 (paper): 1 distinct distance value(s)")
                && n.contains("needs more arms or seeds")
        ),
        "{:?}",
        t.notes
    );
    assert!(
        t.rows
            .iter()
            .all(|r| r.cells.iter().all(|c| *c == Cell::Missing))
    );
    let names = names_in(&Report::plots_dir(dir.path()));
    assert!(
        !names.iter().any(|n| n.starts_with("distance-")),
        "{names:?}"
    );
    assert_eq!(
        finding(&r, "Which distance metric").verdict,
        Verdict::Inconclusive
    );
}

#[test]
fn plot_files_exist_for_every_figure() {
    let (dir, r) = run(&default_study());
    let plots = Report::plots_dir(dir.path());
    let stems: Vec<&str> = r.figures.iter().map(|f| f.name.as_str()).collect();
    for stem in [
        "alpha-interpolation-vqa-vqa-score",
        "lambda-modality-arithmetic-nlvr2-accuracy",
        "distance-l2-vqa-vqa-score",
        "distance-truncated-soft-sign-zero-shot-ir-r1",
    ] {
        assert!(stems.contains(&stem), "{stem} not in {stems:?}");
    }
    for f in &r.figures {
        for ext in ["png", "svg"] {
            assert!(
                plots.join(format!("{}.{ext}", f.name)).is_file(),
                "{}",
                f.name
            );
        }
    }
    // α: 4 scores; λ: 4 scores; distance: 3 metrics × 6 scores; no seed-steps plot.
    assert_eq!(r.figures.len(), 4 + 4 + 18);
    assert_eq!(names_in(&plots).len(), 2 * r.figures.len());
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "tables", "plots"] {
        let d = dir.join(sub);
        for name in names_in(&d) {
            let p = d.join(&name);
            if p.is_file() {
                out.push((format!("{sub}/{name}"), std::fs::read(p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn same_study_same_bytes() {
    let study = build(
        &[0, 1],
        &[
            (0, "all_specific"),
            (100, "all_specific"),
            (100, "custom_attn"),
        ],
        default_quality,
        default_dist,
    );
    let write = || {
        let dir = tempfile::tempdir().unwrap();
        analyse(&study, dir.path())
            .unwrap()
            .write(dir.path())
            .unwrap();
        let f = files(dir.path());
        (dir, f)
    };
    let (_a, fa) = write();
    let (_b, fb) = write();
    let names: Vec<&str> = fa.iter().map(|f| f.0.as_str()).collect();
    assert!(names.contains(&"/README.md"));
    assert!(names.iter().any(|n| n.ends_with(".csv")));
    assert!(names.iter().any(|n| n.ends_with(".svg")));
    assert_eq!(fa, fb);
}

#[test]
fn missing_items_render_missing_cells() {
    let mut study = default_study();
    for m in &mut study.models {
        if m.name == "baseline" {
            for e in m.tasks.values_mut() {
                e.items.clear();
            }
        }
        if m.seed == 1 && matches!(m.role, Role::Merge(_)) {
            for e in m.tasks.values_mut() {
                e.items.clear();
            }
        }
    }
    // A merge without any VQA score.
    for seed in [0, 1, 2] {
        model_mut(&mut study, seed, 0, &arith(1.0))
            .tasks
            .remove("vqa");
    }
    let (_dir, r) = run(&study);
    let main = table(&r, "Main results");
    assert_eq!(row(main, &arith(1.0)).cells[0], Cell::Missing);
    let t = table(&r, "Paired differences, merge − reference");
    let cells = &row(t, &format!("{} · VQA", interp(0.25))).cells;
    assert_eq!(cells[..4], [Cell::Missing; 4]);
    assert_eq!(cells[7], Cell::Value((2 * N) as f64), "seeds 0 and 2 only");
    assert_eq!(
        row(t, &format!("{} · VQA", arith(1.0))).cells,
        [Cell::Missing; 8]
    );
    let a = finding(&r, "Merging after shared-init");
    assert_eq!(a.verdict, Verdict::Inconclusive, "{}", a.evidence);

    // No items anywhere, no zero-shot: still a report.
    for m in &mut study.models {
        m.zero_shot = None;
        for e in m.tasks.values_mut() {
            e.items.clear();
        }
    }
    let (_dir, r) = run(&study);
    assert_eq!(table(&r, "Main results").columns.len(), 4);
    r.to_markdown().unwrap();
}

#[test]
fn best_method_names_the_winner() {
    let study = build(
        &[0, 1, 2],
        &[(100, "all_specific")],
        |s, _, name| {
            let q = if name.starts_with("modality-arithmetic") {
                0.8
            } else {
                0.4
            };
            q + 0.01 * s as f64
        },
        default_dist,
    );
    let (_dir, r) = run(&study);
    let c = finding(&r, "Which merge method");
    assert_eq!(c.verdict, Verdict::Holds, "{}", c.evidence);
    assert!(
        c.evidence.starts_with(&format!(
            "`modality-arithmetic` (best merge `{}`",
            arith(0.5)
        )),
        "{}",
        c.evidence
    );
    assert!(
        c.evidence.contains("above 0 on 4 of 4 scores"),
        "{}",
        c.evidence
    );
}

#[test]
fn malformed_studies_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut study = default_study();
    study.task_kinds.insert("vqa".into(), "audio".into());
    let e = analyse(&study, dir.path()).unwrap_err();
    assert!(
        matches!(&e, AnalysisError::UnknownTaskKind { task, kind } if task == "vqa" && kind == "audio"),
        "{e}"
    );

    let mut study = default_study();
    model_mut(&mut study, 1, 0, &interp(0.5))
        .tasks
        .get_mut("vqa")
        .unwrap()
        .items
        .get_mut("vqa_score")
        .unwrap()
        .pop();
    let e = analyse(&study, dir.path()).unwrap_err();
    assert!(
        matches!(&e, AnalysisError::ItemCountMismatch { seed: 1, a_len, b_len, .. } if *a_len == N - 1 && *b_len == N),
        "{e}"
    );

    let mut study = default_study();
    model_mut(&mut study, 2, 0, "experts")
        .tasks
        .get_mut("nlvr2")
        .unwrap()
        .scores
        .insert("accuracy".into(), f64::NAN);
    let e = analyse(&study, dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("model `experts` (seed 2, arm 0), task `nlvr2`, score `accuracy`"),
        "{e}"
    );
}

/// Arms of shared-init and independent experts; in the independent arm the modality
/// arithmetic merges are aligned (quality `aligned_q`) and the interpolations are not (0.4);
/// every shared-init merge has quality 0.6.
fn alignment_finding(aligned_q: f64) -> Finding {
    let mut study = build(
        &[0, 1, 2],
        &[(0, "all_specific"), (0, "all_specific")],
        |_, arm, name| match (arm, name.starts_with("modality-arithmetic")) {
            (0, _) => 0.6,
            (_, true) => aligned_q,
            _ => 0.4,
        },
        default_dist,
    );
    study.arms[1].init = "independent".into();
    for m in &mut study.models {
        if let (1, Role::Merge(info)) = (m.arm, &mut m.role)
            && info.spec == "modality-arithmetic"
        {
            info.align = Some("weight_matching".into());
        }
    }
    let (_dir, r) = run(&study);
    finding(&r, "Aligning independently").clone()
}

#[test]
fn alignment_finding_follows_the_data() {
    let recovered = alignment_finding(0.6);
    assert_eq!(recovered.verdict, Verdict::Holds, "{}", recovered.evidence);
    assert!(
        recovered.evidence.contains("share of the gap closed: 100%"),
        "{}",
        recovered.evidence
    );
    let not = alignment_finding(0.45);
    assert_eq!(not.verdict, Verdict::DoesNotHold, "{}", not.evidence);
    assert!(
        not.evidence.contains("share of the gap closed: 43%"),
        "{}",
        not.evidence
    );
    // Without an independent arm there is no finding (f).
    let (_dir, r) = run(&default_study());
    assert!(r.findings.iter().all(|f| !f.claim.starts_with("Aligning")));
}
