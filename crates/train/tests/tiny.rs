//! Acceptance of the training crate on the synthetic suite at the `tiny` preset, through the
//! public route a user takes (`Recipe::parse` → `trainer::prepare` → `trainer::train` /
//! `trainer::evaluate`):
//!
//! - every pre-training objective's held-out loss falls;
//! - fine-tuning beats each task's no-model baseline from `suite.json` by a stated margin,
//!   and the saved `model/` re-evaluated gives the run's final scores bit for bit;
//! - two runs of one recipe write byte-identical weights;
//! - `trainer::evaluate_detailed` gives `trainer::evaluate`'s scores bit for bit, with one
//!   per-item value per question / query / example for each score that is a mean over items;
//! - bad input fails in `parse` / `prepare`, before a run folder exists, naming what is wrong
//!   and what is valid.
//!
//! Data: the `tiny` synthetic suite (seed 3) for determinism and bad input; the `small` one
//! (seed 3, a few seconds to write) for the objectives (500 held-out images) and fine-tuning,
//! since the tiny suite's 32-image training splits are too small to learn from. NLVR2 is the
//! slow one: about 50 s of the file's ~100 s (3000 steps of 32; at 1000 steps of 16 it stays
//! at chance). Both suites get a WordPiece tokenizer (`tokenizer.json`, 512 entries, the tiny
//! preset's vocabulary) written once, which `prepare` picks up instead of training one per
//! run. Margins are set with headroom under the scores these fixed seeds give (runs are
//! deterministic on the CPU); the measured value is in every assertion message. Recipes name
//! no head (each task kind builds its own), so there is no unknown-head case to test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use mmerge_data::check::write_suite_tokenizer;
use mmerge_data::formats::segmentation::load_mask;
use mmerge_data::score::Confusion;
use mmerge_data::suite::{Examples, Split, Suite};
use mmerge_data::synth::{Scale, SynthConfig, generate};
use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_sink::Sink;
use mmerge_train::net::Net;
use mmerge_train::recipe::Recipe;
use mmerge_train::tasks::Scores;
use mmerge_train::trainer::{self, TrainOptions};
use tch::Device;

/// libtorch threads per run (tests run one at a time, see [`serial`]).
const THREADS: usize = 1;

/// One run at a time: `Net::new` and the trainer seed libtorch's process-wide generator and
/// then draw from it, so runs on parallel test threads would interleave their draws and lose
/// determinism.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Suites {
    _tmp: tempfile::TempDir,
    tiny: PathBuf,
    small: PathBuf,
}

/// The tiny and small synthetic suites, generated once per test binary.
fn suites() -> &'static Suites {
    static S: OnceLock<Suites> = OnceLock::new();
    S.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str, scale| {
            let dir = tmp.path().join(name);
            generate(&SynthConfig::new(3, scale), &dir, false, false).unwrap();
            write_suite_tokenizer(&dir, &dir.join("tokenizer.json"), 512, 1).unwrap();
            dir
        };
        let tiny = make("tiny", Scale::Tiny);
        let small = make("small", Scale::Small);
        Suites {
            _tmp: tmp,
            tiny,
            small,
        }
    })
}

/// A recipe for `suite` with the run-wide settings, `body` giving model, work and schedule.
fn recipe_text(suite: &Path, body: &str) -> String {
    format!(
        "suite: {}\nseed: 0\n{body}\ncheckpoint_every: 0\nlog_every: 1000\ntensorboard: false\nthreads: {THREADS}\n",
        suite.display()
    )
}

fn parse(text: &str) -> Recipe {
    Recipe::parse(text, Path::new("recipe.yml")).unwrap()
}

/// A baseline of a task from the suite's manifest.
fn baseline(suite: &Path, task: &str, name: &str) -> f64 {
    let s = Suite::open(suite).unwrap();
    let t = s.task(task).unwrap();
    *t.entry()
        .baselines
        .get(name)
        .unwrap_or_else(|| panic!("{task}: no baseline `{name}` in suite.json"))
}

/// Scores compared bit for bit.
fn bits(s: &BTreeMap<String, Scores>) -> BTreeMap<String, BTreeMap<String, u64>> {
    s.iter()
        .map(|(split, sc)| {
            (
                split.clone(),
                sc.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect(),
            )
        })
        .collect()
}

/// Fine-tunes a fresh tiny model on `task` of the small suite, checks that the saved model
/// re-evaluated (a recipe with `init: {checkpoint: model}`) scores exactly the run's final
/// scores, and returns the test scores.
fn finetune(task: &str, steps: u64, batch: usize, lr: &str) -> Scores {
    let suite = &suites().small;
    let body = format!(
        "model: {{preset: tiny, sharing: all_specific}}\nfinetune: {{task: {task}}}\nsteps: {steps}\nbatch_size: {batch}\noptim: {{lr: {lr}}}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let _g = serial();
    let t0 = std::time::Instant::now();
    let p = trainer::prepare(&parse(&recipe_text(suite, &body))).unwrap();
    let report = trainer::train(p, &run, &Sink::hidden(), TrainOptions::default()).unwrap();
    let trained = t0.elapsed().as_secs_f64();

    let again = format!(
        "model: {{preset: tiny, sharing: all_specific, init: {{checkpoint: {}}}}}\nfinetune: {{task: {task}}}\nsteps: 1",
        report.model.display()
    );
    let p = trainer::prepare(&parse(&recipe_text(suite, &again))).unwrap();
    assert!(
        p.fresh_heads.is_empty(),
        "{task}: the checkpoint lacks {:?}",
        p.fresh_heads
    );
    let scores = trainer::evaluate(&p).unwrap();
    assert_eq!(
        bits(&scores),
        bits(&report.scores),
        "{task}: re-evaluated {scores:?}, the run ended with {:?}",
        report.scores
    );
    eprintln!(
        "{task}: {steps} steps, {trained:.1} s (+{:.1} s re-evaluation): {:?}",
        t0.elapsed().as_secs_f64() - trained,
        report.scores
    );
    report.scores["test"].clone()
}

/// Asserts `score` ≥ `baseline` + `margin`.
fn beats(task: &str, what: &str, score: f64, base: &str, baseline: f64, margin: f64) {
    assert!(
        score >= baseline + margin,
        "{task}: test {what} {score:.4} does not beat {base} {baseline:.4} by {margin}"
    );
}

// ---------------------------------------------------------------- pre-training objectives

/// Pre-trains a fresh tiny model on one objective alone (small suite's retrieval pairs) and
/// returns its held-out loss on the validation pairs (fixed masks and negatives) before and
/// after training.
fn objective_losses(objective: &str, steps: u64) -> (f64, f64) {
    let body = format!(
        "model: {{preset: tiny, sharing: all_specific}}\npretrain: {{objectives: {{{objective}: 1}}}}\nsteps: {steps}\nbatch_size: 32\neval: {{test: false}}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let _g = serial();
    let p = trainer::prepare(&parse(&recipe_text(&suites().small, &body))).unwrap();
    let key = format!("heldout_{objective}");
    let before = trainer::evaluate(&p).unwrap()["val"][&key];
    let report = trainer::train(
        p,
        &tmp.path().join("run"),
        &Sink::hidden(),
        TrainOptions::default(),
    )
    .unwrap();
    let after = report.scores["val"][&key];
    eprintln!("{objective}: held-out loss {before:.4} → {after:.4} in {steps} steps");
    (before, after)
}

/// The held-out loss of `objective` falls to at most `ratio` of its step-0 value.
fn loss_falls(objective: &str, steps: u64, ratio: f64) {
    let (before, after) = objective_losses(objective, steps);
    assert!(
        before.is_finite() && after.is_finite() && after <= ratio * before,
        "{objective}: held-out loss {before:.4} → {after:.4} after {steps} steps, \
         want at most {ratio} × the step-0 loss"
    );
}

#[test]
fn itc_loss_falls() {
    loss_falls("itc", 600, 0.92);
}

/// ITM alone sees one matched pair and two mined non-matching pairs per example, so a model
/// that only learns the label prior reaches H(1/3) = 0.6365 nats; it must get below that.
#[test]
fn itm_loss_falls_below_the_label_prior() {
    let (before, after) = objective_losses("itm", 600);
    let prior = -(1.0 / 3.0f64) * (1.0 / 3.0f64).ln() - (2.0 / 3.0f64) * (2.0 / 3.0f64).ln();
    assert!(
        after <= 0.6 * before && after <= prior - 0.05,
        "itm: held-out loss {before:.4} → {after:.4} after 600 steps, want at most 0.6 × the \
         step-0 loss and at most the label prior's {prior:.4} − 0.05"
    );
}

#[test]
fn mlm_loss_falls() {
    loss_falls("mlm", 150, 0.6);
}

#[test]
fn text_mlm_loss_falls() {
    loss_falls("text_mlm", 150, 0.6);
}

#[test]
fn mim_loss_falls() {
    loss_falls("mim", 150, 0.5);
}

// ---------------------------------------------------------------- fine-tuning vs baselines

#[test]
fn vqa_beats_question_prior() {
    let s = finetune("vqa", 1000, 16, "1.0e-3");
    let b = baseline(&suites().small, "vqa", "question_prior");
    beats(
        "vqa",
        "vqa_score",
        s["vqa_score"],
        "question_prior",
        b,
        0.04,
    );
}

#[test]
fn retrieval_beats_chance() {
    let s = finetune("retrieval", 300, 16, "1.0e-3");
    for k in [1, 5, 10] {
        let b = baseline(&suites().small, "retrieval", &format!("chance_r{k}"));
        // chance_rK is text → image recall@K of a random ranking.
        beats(
            "retrieval",
            &format!("ir_r{k}"),
            s[&format!("ir_r{k}")],
            &format!("chance_r{k}"),
            b,
            0.05,
        );
    }
}

#[test]
fn nlvr2_beats_statement_prior() {
    let s = finetune("nlvr2", 3000, 32, "1.0e-3");
    let b = baseline(&suites().small, "nlvr2", "statement_prior");
    beats(
        "nlvr2",
        "accuracy",
        s["accuracy"],
        "statement_prior",
        b,
        0.03,
    );
}

#[test]
fn shape_cls_beats_majority() {
    let s = finetune("shape_cls", 300, 16, "1.0e-3");
    let b = baseline(&suites().small, "shape_cls", "majority");
    beats("shape_cls", "accuracy", s["accuracy"], "majority", b, 0.15);
}

#[test]
fn count_cls_beats_majority() {
    let s = finetune("count_cls", 300, 16, "1.0e-3");
    let b = baseline(&suites().small, "count_cls", "majority");
    beats("count_cls", "accuracy", s["accuracy"], "majority", b, 0.2);
}

#[test]
fn caption_colour_beats_majority() {
    let s = finetune("caption_colour", 300, 16, "1.0e-3");
    let b = baseline(&suites().small, "caption_colour", "majority");
    beats(
        "caption_colour",
        "accuracy",
        s["accuracy"],
        "majority",
        b,
        0.5,
    );
}

#[test]
fn caption_count_beats_majority() {
    let s = finetune("caption_count", 300, 16, "1.0e-3");
    let b = baseline(&suites().small, "caption_count", "majority");
    beats(
        "caption_count",
        "accuracy",
        s["accuracy"],
        "majority",
        b,
        0.5,
    );
}

/// mIoU of predicting background everywhere on the test split (the manifest's `majority` is
/// its pixel accuracy).
fn background_miou(suite: &Path) -> f64 {
    let Examples::Segmentation(test) = Suite::open(suite)
        .unwrap()
        .task("segmentation")
        .unwrap()
        .split(Split::Test)
        .unwrap()
    else {
        panic!("not a segmentation split")
    };
    let n = test.classes.len();
    let mut c = Confusion::new(n).unwrap();
    for e in &test.examples {
        let m = load_mask(&e.mask, n).unwrap();
        c.add(&vec![0; m.data.len()], &m.data).unwrap();
    }
    c.mean_iou()
}

#[test]
fn segmentation_beats_background() {
    let s = finetune("segmentation", 1000, 16, "1.0e-3");
    let suite = &suites().small;
    let b = background_miou(suite);
    eprintln!("segmentation: background-only mIoU {b:.4}");
    beats(
        "segmentation",
        "miou",
        s["miou"],
        "background-only mIoU",
        b,
        0.1,
    );
    let m = baseline(suite, "segmentation", "majority");
    beats(
        "segmentation",
        "pixel_accuracy",
        s["pixel_accuracy"],
        "majority",
        m,
        0.005,
    );
}

// ---------------------------------------------------------------- determinism

#[test]
fn same_recipe_same_bytes() {
    let text = recipe_text(
        &suites().tiny,
        "model: {preset: tiny, sharing: all_specific}\nfinetune: {task: shape_cls}\nsteps: 20\nbatch_size: 8",
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut weights = vec![];
    for i in 0..2 {
        let run = tmp.path().join(format!("run{i}"));
        let _g = serial();
        let p = trainer::prepare(&parse(&text)).unwrap();
        let report = trainer::train(p, &run, &Sink::hidden(), TrainOptions::default()).unwrap();
        weights.push(std::fs::read(report.model.join("model.safetensors")).unwrap());
    }
    assert!(!weights[0].is_empty());
    assert!(
        weights[0] == weights[1],
        "two runs of one recipe and seed wrote different model.safetensors"
    );
}

// ---------------------------------------------------------------- per-item values

/// `evaluate_detailed` of `body` (a recipe for the tiny suite, as initialised): its scores are
/// `evaluate`'s bit for bit, every split's items are exactly `want(examples)` (name → count)
/// and each such score is the mean of its items.
fn detailed(body: &str, want: impl Fn(&Examples) -> Vec<(String, usize)>) {
    let _g = serial();
    let p = trainer::prepare(&parse(&recipe_text(&suites().tiny, body))).unwrap();
    let e = trainer::evaluate_detailed(&p).unwrap();
    let scores: BTreeMap<String, Scores> = e
        .iter()
        .map(|(k, v)| (k.clone(), v.scores.clone()))
        .collect();
    assert_eq!(bits(&scores), bits(&trainer::evaluate(&p).unwrap()));
    let splits: Vec<&str> = p.eval.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(e.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut s = splits.clone();
        s.sort();
        s
    });
    for (split, examples) in &p.eval {
        let got: Vec<(String, usize)> = e[split]
            .items
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        assert_eq!(got, want(examples), "{split}");
        for (k, v) in &e[split].items {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let score = e[split].scores[k];
            assert!(
                (mean - score).abs() <= 1e-12,
                "{split}/{k}: {mean} vs {score}"
            );
        }
    }
}

#[test]
fn evaluate_detailed_gives_the_zero_shot_recall_items() {
    // Pre-training: the ITC recall has items (per caption for ir_*, per image for tr_*);
    // r_mean and the held-out losses have none.
    detailed(
        "model: {preset: tiny, sharing: all_specific}\npretrain: {objectives: {itc: 1, mlm: 1}}\nsteps: 1\nbatch_size: 8",
        |ex| {
            let Examples::Retrieval(s) = ex else {
                panic!("not a retrieval split")
            };
            let (c, i) = (s.captions.len(), s.images.len());
            ["ir_r1", "ir_r10", "ir_r5", "tr_r1", "tr_r10", "tr_r5"]
                .iter()
                .map(|k| (k.to_string(), if k.starts_with("ir") { c } else { i }))
                .collect()
        },
    );
}

#[test]
fn evaluate_detailed_gives_per_question_and_per_example_items() {
    for (task, key) in [("vqa", "vqa_score"), ("nlvr2", "accuracy")] {
        detailed(
            &format!(
                "model: {{preset: tiny, sharing: all_specific}}\nfinetune: {{task: {task}}}\nsteps: 1\nbatch_size: 8"
            ),
            |ex| vec![(key.to_string(), ex.len())],
        );
    }
    detailed(
        "model: {preset: tiny, sharing: all_specific}\nfinetune: {task: segmentation}\nsteps: 1\nbatch_size: 8",
        |_| vec![],
    );
}

// ---------------------------------------------------------------- bad input

/// Parses `text` (as `bad.yml`), prepares and trains it into a fresh run folder; the error
/// must come before the run folder exists and contain every one of `wants`.
fn fails_before_training(text: &str, wants: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let result = {
        let _g = serial();
        Recipe::parse(text, Path::new("bad.yml")).and_then(|r| {
            let p = trainer::prepare(&r)?;
            trainer::train(p, &run, &Sink::hidden(), TrainOptions::default())
        })
    };
    let err = match result {
        Ok(_) => panic!("trained on a bad recipe:\n{text}"),
        Err(e) => e.to_string(),
    };
    assert!(
        !run.exists(),
        "`{err}`: the run folder was created before the error"
    );
    for w in wants {
        assert!(err.contains(w), "error `{err}` does not name `{w}`");
    }
    eprintln!("rejected: {err}");
    err
}

/// A fine-tuning recipe on the tiny suite with `model` as the model line.
fn ft_text(suite: &Path, model: &str, task: &str) -> String {
    recipe_text(
        suite,
        &format!("model: {model}\nfinetune: {{task: {task}}}\nsteps: 5\nbatch_size: 8"),
    )
}

const TINY: &str = "{preset: tiny, sharing: all_specific}";

#[test]
fn unknown_field_names_file_line_and_fields() {
    // Line 1 suite, 2 seed, 3 model, 4 finetune, 5 steps, 6 batch_size, 7 optim.
    let text = ft_text(&suites().tiny, TINY, "shape_cls").replace(
        "batch_size: 8",
        "batch_size: 8\noptim: {lr: 1.0e-3, lr_max: 2.0}",
    );
    assert_eq!(
        text.lines().nth(6),
        Some("optim: {lr: 1.0e-3, lr_max: 2.0}")
    );
    fails_before_training(&text, &["bad.yml:7", "lr_max", "min_lr", "warmup"]);
    // A top-level typo.
    let text = ft_text(&suites().tiny, TINY, "shape_cls").replace("steps: 5", "step: 5");
    fails_before_training(&text, &["bad.yml:5", "`step`", "`steps`"]);
}

#[test]
fn out_of_range_names_key_and_line() {
    let text = ft_text(&suites().tiny, TINY, "shape_cls")
        .replace("batch_size: 8", "batch_size: 8\noptim: {warmup: 1.5}");
    fails_before_training(&text, &["bad.yml:7", "warmup", "[0, 1)", "1.5"]);
}

#[test]
fn unknown_task_lists_suite_tasks() {
    let text = ft_text(&suites().tiny, TINY, "shapes");
    fails_before_training(
        &text,
        &[
            "`shapes`",
            "vqa",
            "retrieval",
            "nlvr2",
            "segmentation",
            "shape_cls",
            "count_cls",
            "caption_colour",
            "caption_count",
        ],
    );
}

#[test]
fn unknown_objective_lists_objectives() {
    let text = recipe_text(
        &suites().tiny,
        "model: {preset: tiny}\npretrain: {objectives: {itc: 1, mln: 1}}\nsteps: 5\nbatch_size: 8",
    );
    fails_before_training(
        &text,
        &["objective", "`mln`", "itc", "itm", "mlm", "text_mlm", "mim"],
    );
}

#[test]
fn unknown_preset_and_sharing_list_valid_ones() {
    let text = ft_text(
        &suites().tiny,
        "{preset: huge, sharing: all_specific}",
        "shape_cls",
    );
    fails_before_training(&text, &["preset", "`huge`", "tiny, small, medium, base"]);
    let text = ft_text(&suites().tiny, "{preset: tiny, sharing: some}", "shape_cls");
    fails_before_training(
        &text,
        &[
            "sharing",
            "`some`",
            "shared, all_specific, custom_attn, custom_ffn, custom_ln",
        ],
    );
}

#[test]
fn checkpoint_of_another_preset_names_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("small-model");
    {
        let _g = serial();
        let cfg = MultiwayConfig::preset("small", Sharing::AllSpecific).unwrap();
        Net::new(&cfg, 0, Device::Cpu)
            .unwrap()
            .save(&ck, false)
            .unwrap();
    }
    let model = format!(
        "{{preset: tiny, sharing: all_specific, init: {{checkpoint: {}}}}}",
        ck.display()
    );
    let err = fails_before_training(
        &ft_text(&suites().tiny, &model, "shape_cls"),
        &[&ck.display().to_string(), "does not fit"],
    );
    // The small preset is 64 wide with 4 layers, the tiny one 32 wide with 2: the checkpoint
    // lacks the tiny preset's vl-expert keys and its tensors are twice as wide.
    for want in [
        "missing keys",
        "encoder.layers.1.attn.vl.k.bias",
        "`embeddings.patch.weight`: expected shape [32, 3, 8, 8], found [64, 3, 8, 8]",
    ] {
        assert!(err.contains(want), "`{err}` does not name `{want}`");
    }
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    mmerge_core::fs::copy_tree(from, to).unwrap();
}

#[test]
fn suite_missing_a_split_fails() {
    let tmp = tempfile::tempdir().unwrap();
    // The split's file is gone: the error names it.
    let suite = tmp.path().join("no-file");
    copy_tree(&suites().tiny, &suite);
    let gone = suite.join("caption_colour").join("val.jsonl");
    std::fs::remove_file(&gone).unwrap();
    fails_before_training(
        &ft_text(&suite, TINY, "caption_colour"),
        &[&gone.display().to_string()],
    );
    // The manifest does not list the split: the error lists the ones it does.
    let suite = tmp.path().join("no-entry");
    copy_tree(&suites().tiny, &suite);
    let manifest = suite.join("suite.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    for t in m["tasks"].as_array_mut().unwrap() {
        if t["name"] == "caption_colour" {
            t["counts"].as_object_mut().unwrap().remove("val").unwrap();
        }
    }
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    fails_before_training(
        &ft_text(&suite, TINY, "caption_colour"),
        &[
            "unknown split `val`",
            "valid: test, train",
            "caption_colour",
        ],
    );
    // The evaluation split the recipe names must exist too.
    let text = ft_text(&suites().tiny, TINY, "shape_cls")
        .replace("batch_size: 8", "batch_size: 8\neval: {split: dev}");
    fails_before_training(
        &text,
        &[
            "unknown split `dev`",
            "valid: test, train, val",
            "shape_cls",
        ],
    );
}
