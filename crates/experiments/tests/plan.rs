//! Experiment files → plans: the quickstart, keys that change exactly downstream of an edit,
//! sweeps, errors with lines and valid choices, and the dry run against a run store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mmerge_experiments::config::{ConfigError, ExperimentFile, Known, SuiteSpec};
use mmerge_experiments::plan::{Plan, StageKind};
use mmerge_experiments::store::{RunStore, StageKey, StageMeta};

fn quickstart_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/quickstart.yaml")
}

/// The quickstart with one seed (its three seeds multiply every per-seed count by 3).
fn quickstart_text() -> String {
    let text = std::fs::read_to_string(quickstart_path()).unwrap();
    assert!(
        text.contains("\nseeds: [0, 1, 2]\n"),
        "the quickstart runs 3 seeds"
    );
    text.replace("\nseeds: [0, 1, 2]\n", "\nseeds: [0]\n")
}

/// The names the binary passes: the merge and distance registries and the synthetic suite's
/// tasks from their crates; the train crate's objectives and the models' presets and sharing
/// variants (crates that link libtorch) as they are listed there.
fn known() -> Known {
    let distances: Vec<&str> = mmerge_distance::DISTANCES.iter().map(|d| d.name).collect();
    Known::new(
        mmerge_merge::MethodKind::NAMES,
        &distances,
        &mmerge_data::synth::TASKS,
        &["itc", "itm", "mlm", "text_mlm", "mim"],
        &["tiny", "small", "medium", "base"],
        &[
            "shared",
            "all_specific",
            "custom_attn",
            "custom_ffn",
            "custom_ln",
        ],
    )
}

fn parse(text: &str) -> Result<ExperimentFile, ConfigError> {
    let f = ExperimentFile::parse(text.to_string(), Path::new("exp.yaml"))?;
    f.validate(&known())?;
    Ok(f)
}

fn plan(text: &str) -> Plan {
    Plan::build(&parse(text).unwrap(), "quick").unwrap()
}

/// `text` with `from` replaced by `to` exactly once.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_with(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn index_of(plan: &Plan, name: &str) -> usize {
    plan.stages.iter().position(|s| s.name == name).unwrap()
}

/// Indices whose keys differ between two plans of the same shape.
fn changed(a: &Plan, b: &Plan) -> Vec<usize> {
    assert_eq!(a.stages.len(), b.stages.len());
    (0..a.stages.len())
        .filter(|&i| {
            assert_eq!(a.stages[i].name, b.stages[i].name);
            a.stages[i].key != b.stages[i].key
        })
        .collect()
}

fn mask_indices(mask: &[bool]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i]).collect()
}

#[test]
fn quickstart_parses_and_plans() {
    let three = ExperimentFile::load_valid(&quickstart_path(), &known()).unwrap();
    assert_eq!(
        Plan::build(&three, "quick").unwrap().stages.len(),
        1 + 3 * 51 + 1
    );
    let f = parse(&quickstart_text()).unwrap();
    f.validate(&known()).unwrap();
    let p = Plan::build(&f, "quick").unwrap();
    let counts: Vec<(StageKind, usize)> = StageKind::ALL.iter().map(|&k| (k, p.count(k))).collect();
    assert_eq!(
        counts,
        [
            (StageKind::Suite, 1),
            (StageKind::Seed, 1),
            (StageKind::Experts, 1),
            (StageKind::Baseline, 1),
            // interpolation × 3 (α sweep) + modality arithmetic
            (StageKind::Merge, 4),
            // the experts' vision vs text weights
            (StageKind::Distance, 1),
            // 6 models (experts, baseline, 4 merges) × 3 tasks
            (StageKind::Finetune, 18),
            (StageKind::Eval, 18),
            // W0 and the 6 models
            (StageKind::Zeroshot, 7),
            // no data-dependent merge
            (StageKind::Statistics, 0),
            (StageKind::Report, 1),
        ]
    );
    assert_eq!(p.stages.len(), 53);
    // Topological: every input comes before its reader; the report reads every leaf.
    for (i, s) in p.stages.iter().enumerate() {
        assert!(s.inputs.iter().all(|j| j.0 < i), "{}", s.name);
    }
    let report = p.stages.last().unwrap();
    assert_eq!(report.kind, StageKind::Report);
    assert_eq!(report.inputs.len(), 1 + 18 + 7);
    // The report's bookkeeping: W0 and 6 models, 18 evals, one distance.
    assert_eq!(p.models.len(), 7);
    assert_eq!(p.models.iter().map(|m| m.evals.len()).sum::<usize>(), 18);
    assert_eq!(p.distances.len(), 1);
    assert_eq!(p.arms.len(), 1);
    // No two stages share a key.
    let keys: BTreeSet<_> = p.stages.iter().map(|s| (s.kind, s.key)).collect();
    assert_eq!(keys.len(), p.stages.len());
    let keys: BTreeSet<_> = p.stages.iter().map(|s| s.key).collect();
    assert_eq!(keys.len(), p.stages.len());
    // The profile's budgets reach the configs.
    let nlvr = &p.stages[index_of(&p, "s0/finetune/baseline/nlvr2")];
    assert_eq!(nlvr.config["steps"], 300);
    let vqa = &p.stages[index_of(&p, "s0/finetune/baseline/vqa")];
    assert_eq!(vqa.config["steps"], 300);
    let full = Plan::build(&f, "full").unwrap();
    assert_eq!(
        full.stages[index_of(&full, "s0/seed")].config["steps"],
        3000
    );
    // Interpolation's α sweep is zipped: vision α with text 1 − α.
    let m = &p.stages[index_of(
        &p,
        "s0/merge/interpolation[weights.text=0.75, weights.vision=0.25]",
    )];
    assert_eq!(m.config["weights"]["vision"], 0.25);
    assert_eq!(m.config["weights"]["text"], 0.75);
    assert_eq!(m.inputs.len(), 1, "linear takes no base");
    let a = &p.stages[index_of(&p, "s0/merge/modality-arithmetic")];
    assert_eq!(a.config["base"], "seed");
    assert_eq!(a.inputs.len(), 2, "experts and W0");
}

#[test]
fn same_config_same_keys_golden() {
    let a = plan(&quickstart_text());
    let b = plan(&quickstart_text());
    assert_eq!(
        a.stages.iter().map(|s| s.key).collect::<Vec<_>>(),
        b.stages.iter().map(|s| s.key).collect::<Vec<_>>()
    );
    // The suite's key: a change here means every run store's stages are recomputed.
    assert_eq!(a.stages[0].kind, StageKind::Suite);
    assert_eq!(a.stages[0].key.hex(), GOLDEN_SUITE_KEY);
    assert_eq!(
        a.stages[0].key,
        StageKey::compute(
            "suite",
            &serde_json::json!({"synthetic": {"scale": "small", "seed": 0}}),
            &[]
        )
    );
    // A stage deep in the chain (suite → seed → experts → merge): pins every config's shape.
    let m = &a.stages[index_of(&a, "s0/merge/modality-arithmetic")];
    assert_eq!(m.key.hex(), GOLDEN_ARITHMETIC_KEY, "{}", m.config);
    // Names are not part of keys: renaming a merge keeps every key.
    let renamed = plan(&edit(
        &quickstart_text(),
        "name: modality-arithmetic",
        "name: arithmetic",
    ));
    assert!(
        a.stages
            .iter()
            .zip(&renamed.stages)
            .all(|(x, y)| x.key == y.key)
    );
}

const GOLDEN_SUITE_KEY: &str = "a127aef30545724827e96aaea36b7aae";
const GOLDEN_ARITHMETIC_KEY: &str = "3e2d20b455713dae51521d77a66e4f1d";

#[test]
fn one_merge_parameter_changes_exactly_its_downstream() {
    let text = quickstart_text();
    let a = plan(&text);
    let b = plan(&edit(
        &text,
        "params: {lambda: 0.5}",
        "params: {lambda: 0.7}",
    ));
    let merge = index_of(&a, "s0/merge/modality-arithmetic");
    let down = mask_indices(&a.downstream(mmerge_experiments::plan::StageId(merge)));
    assert_eq!(changed(&a, &b), down);
    let kinds: Vec<StageKind> = down.iter().map(|&i| a.stages[i].kind).collect();
    let count = |k| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(count(StageKind::Merge), 1);
    assert_eq!(
        count(StageKind::Distance),
        0,
        "distances are of the experts"
    );
    assert_eq!(count(StageKind::Zeroshot), 1);
    assert_eq!(count(StageKind::Finetune), 3);
    assert_eq!(count(StageKind::Eval), 3);
    assert_eq!(count(StageKind::Report), 1);
    assert_eq!(kinds.len(), 9);
}

#[test]
fn seed_steps_change_everything_downstream_of_seed() {
    let text = quickstart_text();
    let a = plan(&text);
    let b = plan(&edit(
        &text,
        "    seed_pretrain: 300\n",
        "    seed_pretrain: 301\n",
    ));
    let seed = index_of(&a, "s0/seed");
    let down = mask_indices(&a.downstream(mmerge_experiments::plan::StageId(seed)));
    assert_eq!(changed(&a, &b), down);
    // Everything but the suite.
    assert_eq!(down, (1..a.stages.len()).collect::<Vec<_>>());
}

#[test]
fn sweeps_expand() {
    let text = quickstart_text();
    // Cartesian: 3 λ × 2 densities = 6 TIES merges, plus the quickstart's 4.
    let ties = edit(
        &text,
        "distances:",
        "  - {name: ties, method: ties, base: seed, params: {lambda: [0.5, 1, 1.5], density: [0.2, 0.6]}}\ndistances:",
    );
    let p = plan(&ties);
    assert_eq!(p.count(StageKind::Merge), 10);
    assert!(
        p.stages
            .iter()
            .any(|s| s.name == "s0/merge/ties[density=0.6, lambda=1.5]")
    );
    // Seeds multiply the per-seed chain; the suite and the report are shared.
    let seeds = plan(&edit(&text, "seeds: [0]", "seeds: [0, 1, 2]"));
    assert_eq!(seeds.count(StageKind::Merge), 12);
    assert_eq!(seeds.count(StageKind::Suite), 1);
    assert_eq!(seeds.count(StageKind::Report), 1);
    assert_eq!(seeds.stages.len(), 1 + 3 * 51 + 1);
    // zip with unequal lengths is an error.
    let err = parse(&edit(&text, "text: [0.75, 0.5, 0.25]", "text: [0.75, 0.5]")).unwrap_err();
    assert!(err.to_string().contains("one length"), "{err}");
    assert_eq!(err.line(), Some(line_with(&text, "zip: true")));
}

#[test]
fn arms_sweep_seed_budgets_and_sharing_and_share_what_they_can() {
    let text = quickstart_text();
    // Three seed budgets: three chains, each with its own W0, experts, baseline.
    let t = edit(
        &text,
        "    seed_pretrain: 300\n",
        "    seed_pretrain: [0, 150, 300]\n",
    );
    let p = plan(&t);
    assert_eq!(p.arms.len(), 3);
    assert_eq!(p.count(StageKind::Seed), 3);
    assert_eq!(p.count(StageKind::Baseline), 3);
    assert_eq!(p.count(StageKind::Distance), 3);
    assert_eq!(p.stages.len(), 1 + 3 * 51 + 1);
    let w0 = &p.stages[index_of(&p, "s0/w0-150/seed")];
    assert_eq!(w0.config["steps"], 150);
    // The 300-step arm is the one-arm plan's chain, key for key.
    let one = plan(&text);
    assert_eq!(
        p.stages[index_of(&p, "s0/w0-300/merge/modality-arithmetic")].key,
        one.stages[index_of(&one, "s0/merge/modality-arithmetic")].key
    );
    // Two sharing variants: one W0 and one baseline, two experts models.
    let t = edit(
        &text,
        "sharing: all_specific",
        "sharing: [all_specific, custom_attn]",
    );
    let p = plan(&t);
    assert_eq!(p.arms.len(), 2);
    assert_eq!(p.count(StageKind::Seed), 1);
    assert_eq!(p.count(StageKind::Baseline), 1);
    assert_eq!(p.count(StageKind::Experts), 2);
    let e = &p.stages[index_of(&p, "s0/custom_attn/experts")];
    assert_eq!(e.config["sharing"], "custom_attn");
    // The shared baseline's models appear in both arms, reading one stage.
    let baselines: Vec<_> = p.models.iter().filter(|m| m.name == "baseline").collect();
    assert_eq!(baselines.len(), 2);
    assert_eq!(baselines[0].stage, baselines[1].stage);
    assert_ne!(baselines[0].arm, baselines[1].arm);
    // Every stage once, inputs before readers, the report reads each leaf once.
    let keys: BTreeSet<_> = p.stages.iter().map(|s| (s.kind, s.key)).collect();
    assert_eq!(keys.len(), p.stages.len());
    let report = p.stages.last().unwrap();
    let inputs: BTreeSet<_> = report.inputs.iter().collect();
    assert_eq!(inputs.len(), report.inputs.len());
    // A sweep value twice is an error at its line.
    let t = edit(
        &text,
        "sharing: all_specific",
        "sharing: [all_specific, all_specific]",
    );
    let err = parse(&t).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    let t = edit(
        &text,
        "sharing: all_specific",
        "sharing: [all_specific, shared]",
    );
    let err = parse(&t).unwrap_err();
    assert!(err.to_string().contains("not `shared`"), "{err}");
}

#[test]
fn one_line_switches_to_the_real_asset_suite() {
    let text = edit(
        &quickstart_text(),
        "suite: {synthetic: {scale: small, seed: 0}}",
        "suite: real-assets",
    );
    let f = parse(&text).unwrap();
    assert_eq!(f.experiment.suite, SuiteSpec::RealAssets);
    assert_eq!(
        f.experiment.suite.resolve(Path::new("/cache")),
        Some(PathBuf::from("/cache/suites/real-assets"))
    );
    let p = Plan::build(&f, "quick").unwrap();
    assert_eq!(p.stages.len(), 53);
}

#[test]
fn bad_input_names_the_line_and_the_choices() {
    let text = quickstart_text();
    // Unknown field: serde's error, with the line.
    let t = edit(
        &text,
        "zero_shot: true",
        "zero_shot: true\nzero_shots: false",
    );
    let err = parse(&t).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    assert!(err.to_string().contains("zero_shots"), "{err}");
    assert_eq!(err.line(), Some(line_with(&t, "zero_shots")));
    // Unknown method.
    let t = edit(&text, "method: task_arithmetic", "method: task_arith");
    let err = parse(&t).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("exp.yaml:{}:", line_with(&t, "task_arith"))),
        "{msg}"
    );
    assert!(msg.contains("unknown method `task_arith`"), "{msg}");
    assert!(
        msg.contains("valid: linear, task_arithmetic, ties"),
        "{msg}"
    );
    // Unknown task.
    let t = edit(
        &text,
        "tasks: [vqa, retrieval, nlvr2]",
        "tasks: [vqa,\n  retrieval, nlvr]",
    );
    let err = parse(&t).unwrap_err();
    assert_eq!(err.line(), Some(line_with(&t, "retrieval, nlvr]")));
    assert!(
        err.to_string()
            .contains("unknown task `nlvr`; valid: vqa, retrieval, nlvr2"),
        "{err}"
    );
    // Unknown distance.
    let t = edit(
        &text,
        "truncated_soft_sign, cosine",
        "truncated_soft_sign, cosin",
    );
    let err = parse(&t).unwrap_err();
    assert_eq!(err.line(), Some(line_with(&t, "cosin]")));
    assert!(
        err.to_string()
            .contains("unknown distance `cosin`; valid: l2, "),
        "{err}"
    );
    // Unknown objective and expert.
    let t = edit(
        &text,
        "experts:\n  sharing: all_specific\n  objectives: {itc: 1, itm: 1, mlm: 1}",
        "experts:\n  sharing: all_specific\n  objectives: {itc: 1, itm: 1, mlx: 1}",
    );
    let err = parse(&t).unwrap_err();
    assert_eq!(err.line(), Some(line_with(&t, "mlx")));
    assert!(
        err.to_string()
            .contains("unknown objective `mlx`; valid: itc, itm"),
        "{err}"
    );
    let t = edit(&text, "text: [0.75, 0.5, 0.25]", "txt: [0.75, 0.5, 0.25]");
    let err = parse(&t).unwrap_err();
    assert_eq!(err.line(), Some(line_with(&t, "txt:")));
    assert!(
        err.to_string().contains("valid: vision, text, vl, shared"),
        "{err}"
    );
    // A sweep value of the wrong type: serde's error at its line.
    let t = edit(
        &text,
        "vision: [0.25, 0.5, 0.75]",
        "vision: [0.25, 0.5,\n        high]",
    );
    let err = parse(&t).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    assert_eq!(err.line(), Some(line_with(&t, "high]")));
    assert!(err.to_string().contains("invalid type"), "{err}");
    // A parameter that is neither a number nor a list.
    let t = edit(&text, "params: {lambda: 0.5}", "params: {lambda: {x: 1}}");
    let err = parse(&t).unwrap_err();
    assert_eq!(err.line(), Some(line_with(&t, "lambda: {x")));
    assert!(
        err.to_string().contains("a number or a list of numbers"),
        "{err}"
    );
    // An unknown profile lists the file's.
    let f = parse(&text).unwrap();
    let err = Plan::build(&f, "fast").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown profile `fast`; valid: full, quick"),
        "{err}"
    );
}

#[test]
fn dry_run_reports_what_is_cached() {
    let p = plan(&quickstart_text());
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::open(root.path().join("runs")).unwrap();
    let out = p.dry_run(&store);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), p.stages.len() + 1);
    assert!(
        lines[..p.stages.len()]
            .iter()
            .all(|l| l.ends_with(" to run")),
        "{out}"
    );
    assert!(lines[0].starts_with("suite "), "{out}");
    assert!(lines[0].contains(&p.stages[0].key.hex()[..12]), "{out}");
    assert_eq!(
        lines[p.stages.len()],
        "53 stages: 0 cached, 53 to run, 0 corrupt (recomputed)"
    );

    // Write the seed stage.
    let seed = &p.stages[index_of(&p, "s0/seed")];
    let inputs: Vec<_> = seed.inputs.iter().map(|i| p.stage(*i).key).collect();
    let w = store.begin("seed", &seed.key).unwrap();
    std::fs::write(w.path().join("metrics.json"), b"{}\n").unwrap();
    w.finish(StageMeta {
        config: seed.config.clone(),
        inputs,
        git_commit: None,
        command: vec!["test".into()],
    })
    .unwrap();
    let out = p.dry_run(&store);
    let lines: Vec<&str> = out.lines().collect();
    for (i, s) in p.stages.iter().enumerate() {
        let want = if s.name == "s0/seed" {
            " cached"
        } else {
            " to run"
        };
        assert!(lines[i].ends_with(want), "{}", lines[i]);
    }
    assert!(
        out.ends_with("53 stages: 1 cached, 52 to run, 0 corrupt (recomputed)\n"),
        "{out}"
    );

    // A damaged output makes it corrupt, with the reason.
    let dir = store.stage_path("seed", &seed.key).unwrap();
    std::fs::write(dir.join("metrics.json"), b"{\"x\": 1}\n").unwrap();
    let out = p.dry_run(&store);
    let line = out.lines().nth(index_of(&p, "s0/seed")).unwrap();
    assert!(
        line.contains(" corrupt (") && line.contains("metrics.json"),
        "{line}"
    );
}

#[test]
fn the_repository_experiments_parse_and_combine() {
    let dir = quickstart_path().parent().unwrap().to_path_buf();
    let load = |name: &str| {
        let f = mmerge_experiments::config::StudyFile::load(&dir.join(name)).unwrap();
        for e in f.experiments() {
            e.validate(&known()).unwrap();
        }
        f
    };
    let plans: Vec<(String, Plan)> = [
        "quickstart.yaml",
        "merging-methods.yaml",
        "initialization.yaml",
        "architecture.yaml",
    ]
    .iter()
    .map(|n| (n.to_string(), load(n).plan("quick").unwrap()))
    .collect();
    let keys = |p: &Plan| -> BTreeSet<StageKey> { p.stages.iter().map(|s| s.key).collect() };
    let quick = keys(&plans[0].1);
    // The analyses reuse the quickstart's W0, experts and baseline (same configs); the
    // initialisation analysis has no baseline.
    for (name, p) in &plans[1..] {
        let has_baseline = p.count(StageKind::Baseline) > 0;
        assert_eq!(has_baseline, name != "initialization.yaml", "{name}");
        for s in plans[0].1.stages.iter().filter(|s| {
            matches!(s.kind, StageKind::Seed | StageKind::Experts)
                || (has_baseline && s.kind == StageKind::Baseline)
        }) {
            assert!(keys(p).contains(&s.key), "{name} lacks {}", s.name);
        }
    }
    // A per-task budget reaches its fine-tunings only.
    let mm = &plans[1].1;
    let steps = |name: &str| mm.stages[index_of(mm, name)].config["steps"].clone();
    assert_eq!(steps("s0/finetune/baseline/shape_cls"), 200);
    assert_eq!(steps("s0/finetune/baseline/vqa"), 300);
    let init = &plans[2].1;
    assert_eq!(init.arms.len(), 4);
    assert!(init.arms.iter().any(|a| a.seed_steps == 0));
    let arch = &plans[3].1;
    assert_eq!(arch.arms.len(), 4);
    assert_eq!(arch.count(StageKind::Seed), 3, "one W0 per seed");

    // The combination: the union of the three analyses, each stage once, one report.
    let combined = load("metrics-vs-score.yaml").plan("quick").unwrap();
    let parts: Vec<&Plan> = plans[1..].iter().map(|(_, p)| p).collect();
    let mut union: BTreeSet<StageKey> = BTreeSet::new();
    for p in &parts {
        union.extend(
            p.stages
                .iter()
                .filter(|s| s.kind != StageKind::Report)
                .map(|s| s.key),
        );
    }
    let mine: BTreeSet<StageKey> = combined
        .stages
        .iter()
        .filter(|s| s.kind != StageKind::Report)
        .map(|s| s.key)
        .collect();
    assert_eq!(mine, union);
    assert_eq!(combined.count(StageKind::Report), 1);
    assert_eq!(combined.stages.len(), union.len() + 1);
    // Arms: 4 seed budgets (all_specific) and 3 more sharing variants at 300 steps.
    assert_eq!(combined.arms.len(), 7);
    // Per (seed, arm) one distance stage: 3 seeds × 7 arms.
    assert_eq!(combined.distances.len(), 21);
    // A model measured by two analyses is one model with the union of their tasks.
    let experts_300 = combined
        .models
        .iter()
        .filter(|m| m.seed == 0 && m.name == "experts" && combined.arms[m.arm].seed_steps == 300)
        .filter(|m| combined.arms[m.arm].sharing == "all_specific")
        .collect::<Vec<_>>();
    assert_eq!(experts_300.len(), 1);
    assert_eq!(experts_300[0].evals.len(), 8, "merging-methods' 8 tasks");
    // Names are unique per (seed, arm).
    let mut seen = BTreeSet::new();
    for m in &combined.models {
        assert!(seen.insert((m.seed, m.arm, m.name.clone())), "{}", m.name);
    }
    assert_eq!(combined.tasks.len(), 8);
    // The quickstart's stages but its report are all in the combination's store.
    let report = plans[0].1.stages.last().unwrap().key;
    assert!(
        quick
            .iter()
            .filter(|k| **k != report)
            .all(|k| mine.contains(k))
    );
}

#[test]
fn task_kinds_select_the_suites_tasks_so_one_line_switches_suites() {
    let text = edit(
        &quickstart_text(),
        "suite: {synthetic: {scale: small, seed: 0}}",
        "suite: real-assets",
    );
    let raw = |t: &str| ExperimentFile::parse(t.to_string(), Path::new("exp.yaml")).unwrap();
    let mut f = raw(&text);
    // The real-asset suite's tasks are named by source (a subset, as `mmerge data real`
    // names them).
    let suite: Vec<(String, String)> = [
        ("tuxpaint_retrieval", "retrieval"),
        ("tuxpaint_vqa", "vqa"),
        ("emoji_retrieval", "retrieval"),
        ("emoji_nlvr2", "nlvr2"),
        ("fashion_cls", "image_cls"),
    ]
    .iter()
    .map(|(n, k)| (n.to_string(), k.to_string()))
    .collect();
    f.expand_task_kinds(&suite);
    assert_eq!(
        f.experiment.tasks,
        [
            "tuxpaint_vqa",
            "tuxpaint_retrieval",
            "emoji_retrieval",
            "emoji_nlvr2"
        ]
    );
    let mut known = known();
    known.tasks = suite.iter().map(|(n, _)| n.clone()).collect();
    f.validate(&known).unwrap();
    let p = Plan::build(&f, "full").unwrap();
    // The full profile's `nlvr2: 3000` reaches the NLVR2-kind task.
    assert_eq!(
        p.stages[index_of(&p, "s0/finetune/baseline/emoji_nlvr2")].config["steps"],
        3000
    );
    // A name that is a task of the suite stays itself; one that is neither is reported.
    let mut g = raw(&edit(
        &text,
        "tasks: [vqa, retrieval, nlvr2]",
        "tasks: [emoji_nlvr2, vqq]",
    ));
    g.expand_task_kinds(&suite);
    assert_eq!(g.experiment.tasks, ["emoji_nlvr2", "vqq"]);
    let err = g.validate(&known).unwrap_err();
    assert!(err.to_string().contains("unknown task `vqq`"), "{err}");
}

#[test]
fn data_dependent_merges_and_alignment_read_statistics_stages() {
    let text = quickstart_text().replace(
        "merges:",
        "merges:
  - name: regmean
    method: regmean
    params: {alpha: [0.5, 0.9]}
  - name: gm
    method: gradient_matching
    base: seed
  - name: gm-no-h0
    method: gradient_matching
    base: seed
    params: {base_scale: 0}
  - name: wm
    method: linear
    align: {method: weight_matching}
  - name: mudsc
    method: linear
    align: {method: mudsc_align, lambda: 0.5}",
    );
    let text = text.replace(
        "sharing: all_specific",
        "sharing: all_specific\n  init: [shared, independent]",
    );
    let f = parse(&text).unwrap();
    f.validate(&known()).unwrap();
    let p = Plan::build(&f, "quick").unwrap();
    let by_name = |n: &str| {
        p.stages
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no stage {n}"))
    };
    // Two arms (the init sweep); one statistics stage per model that a merge reads.
    assert_eq!(p.arms.len(), 2);
    assert_eq!(p.arms[1].init, "independent");
    let stats: Vec<&str> = p
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Statistics && s.seed == Some(0))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        stats,
        [
            "s0/shared/statistics/experts",
            "s0/shared/statistics/seed",
            "s0/independent/statistics/experts",
        ],
        "the independent arm's W0 statistics are the shared arm's (same key)"
    );
    let kinds = |s: &mmerge_experiments::plan::Stage| -> Vec<StageKind> {
        s.inputs.iter().map(|i| p.stages[i.0].kind).collect()
    };
    // RegMean reads the experts' statistics; gradient matching the seed model's too, unless
    // its H₀ is dropped; weight matching reads none, MuDSC (λ < 1) the experts' activations.
    let rm = by_name("s0/shared/merge/regmean[alpha=0.5]");
    assert_eq!(kinds(rm), [StageKind::Experts, StageKind::Statistics]);
    assert_eq!(rm.config["statistics"], true);
    let gm = by_name("s0/shared/merge/gm");
    assert_eq!(
        kinds(gm),
        [
            StageKind::Experts,
            StageKind::Seed,
            StageKind::Statistics,
            StageKind::Statistics
        ]
    );
    let gm0 = by_name("s0/shared/merge/gm-no-h0");
    assert_eq!(
        kinds(gm0),
        [StageKind::Experts, StageKind::Seed, StageKind::Statistics]
    );
    let wm = by_name("s0/shared/merge/wm");
    assert_eq!(kinds(wm), [StageKind::Experts]);
    assert_eq!(wm.config["align"]["method"], "weight_matching");
    assert_eq!(
        kinds(by_name("s0/independent/merge/mudsc")),
        [StageKind::Experts, StageKind::Statistics]
    );
    // Independent experts start from scratch: no W0 input; shared ones expand W0.
    let ind = by_name("s0/independent/experts");
    assert_eq!(kinds(ind), [StageKind::Suite]);
    assert_eq!(ind.config["init"], "scratch");
    assert_eq!(
        kinds(by_name("s0/shared/experts")),
        [StageKind::Suite, StageKind::Seed]
    );
    // An unaligned merge's key does not change with the alignment feature: no `align` key.
    let interp = by_name("s0/shared/merge/modality-arithmetic");
    assert!(interp.config.get("align").is_none());
    // Bad alignment settings are named.
    let bad = text.replace("lambda: 0.5", "lambda: 1.5");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.contains("lambda") && e.contains("1.5"), "{e}");
    let bad = text.replace("method: mudsc_align", "method: mudsc_alignn");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("mudsc_alignn") && e.contains("weight_matching"),
        "{e}"
    );
    // Model-sampled Fisher labels are part of the statistics stages' keys; others are named.
    let sampled = format!("{text}\nstatistics: {{fisher_labels: model}}\n");
    let ps = Plan::build(&parse(&sampled).unwrap(), "quick").unwrap();
    let st = ps
        .stages
        .iter()
        .find(|s| s.kind == StageKind::Statistics)
        .unwrap();
    assert_eq!(st.config["fisher_labels"], "model");
    let first = p
        .stages
        .iter()
        .find(|s| s.kind == StageKind::Statistics)
        .unwrap();
    assert!(first.config.get("fisher_labels").is_none());
    let e = parse(&format!(
        "{text}\nstatistics: {{fisher_labels: true_fisher}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("true_fisher") && e.contains("model"), "{e}");
    let bad = text.replace("init: [shared, independent]", "init: [shared, random]");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.contains("random") && e.contains("independent"), "{e}");
}
