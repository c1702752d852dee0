//! The stage executors of `mmerge run`: each kind of stage of an experiment plan
//! (`mmerge_experiments::plan`) as library calls into the data generator, the trainer, the
//! merge engine and the distance code. Each writes into `out`, the run store's temporary
//! folder of the stage, and reads its inputs' finished folders.
//!
//! | stage    | reads                        | writes                                             |
//! |----------|------------------------------|----------------------------------------------------|
//! | suite    | -                            | `suite/` (generated) or `source.json` (a folder)   |
//! | seed     | suite                        | a training run: `model/`, `metrics.json`, `log.txt`, `tb/` |
//! | experts  | suite, seed                  | the same (W0 expanded into every expert)           |
//! | baseline | suite, seed                  | the same (W0 continued as one shared model)        |
//! | merge    | experts [, seed] [, statistics of experts] [, of seed] | `model/` (the shared model; aligned first with `align`) |
//! | distance | seed, experts                | `distances.json` (vision vs text experts)          |
//! | finetune | suite, a model               | a training run                                     |
//! | eval     | suite, finetune              | `evaluation.json` (test scores and per-item values)|
//! | zeroshot | suite, a model               | `evaluation.json` (retrieval without fine-tuning)  |
//! | statistics | suite, a model             | a statistics folder (`mmerge statistics`)          |
//!
//! A training stage of 0 steps (a seed budget of 0) writes the initialised model untrained.
//! Training stages use the recipe defaults of `scripts/pipeline` (AdamW β = (0.9, 0.98),
//! weight decay 0.01, 10 % warm-up, cosine decay, clipping at 1) with the stage's learning
//! rate, and evaluate nothing during training: scores come from the eval stages.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mmerge_core::Checkpoint;
use mmerge_experiments::config::SuiteSpec;
use mmerge_experiments::plan::{Stage, StageKind};
use mmerge_experiments::run::{DISTANCES, EVALUATION, SUITE_SOURCE, suite_dir};
use mmerge_experiments::store::StageDir;
use mmerge_experiments::study::{DistanceResult, Evaluation};
use mmerge_merge::MethodKind;
use mmerge_merge::experts::{self, ExpertOptions};
use mmerge_merge::params::ParamValue;
use mmerge_sink::{Sink, SinkConfig};
use mmerge_train::recipe::Recipe;
use mmerge_train::trainer::{self, TrainOptions};
use serde_json::{Value, json};

/// What every stage of one run shares.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// libtorch threads of each stage.
    pub threads: usize,
    /// `cpu`, `cuda`, `auto`.
    pub device: String,
    /// `$MMERGE_CACHE` (where `real-assets` lives).
    pub cache: PathBuf,
    /// The experiment's suite.
    pub suite: SuiteSpec,
}

/// Runs `stage` into `out`.
pub fn execute(
    ctx: &StageContext,
    stage: &Stage,
    inputs: &[StageDir],
    out: &Path,
) -> anyhow::Result<()> {
    let c = &stage.config;
    match stage.kind {
        StageKind::Suite => suite(ctx, c, out),
        StageKind::Seed | StageKind::Experts | StageKind::Baseline => {
            let suite = suite_dir(&inputs[0])?;
            let init = match c["init"].as_str() {
                Some("scratch") => json!("scratch"),
                Some("expand") => json!({"expand": model_dir(&inputs[1])}),
                Some("checkpoint") => json!({"checkpoint": model_dir(&inputs[1])}),
                other => bail!("unknown init {other:?}"),
            };
            let recipe = json!({
                "model": {"preset": c["preset"], "sharing": c["sharing"], "init": init},
                "pretrain": {"objectives": c["objectives"]},
            });
            train(ctx, &suite, c, recipe, out)
        }
        StageKind::Finetune => {
            let suite = suite_dir(&inputs[0])?;
            let recipe = json!({
                "model": {
                    "preset": c["preset"],
                    "sharing": c["sharing"],
                    "init": {"checkpoint": model_dir(&inputs[1])},
                },
                "finetune": {"task": c["task"]},
            });
            train(ctx, &suite, c, recipe, out)
        }
        StageKind::Eval => {
            let suite = suite_dir(&inputs[0])?;
            let task = str_of(c, "task")?;
            evaluate(ctx, &suite, &model_dir(&inputs[1]), task, out)
        }
        StageKind::Zeroshot => {
            let suite = suite_dir(&inputs[0])?;
            let task = first_of_kind(&suite, "retrieval")?;
            evaluate(ctx, &suite, &model_dir(&inputs[1]), &task, out)
        }
        StageKind::Merge => merge(c, inputs, out),
        StageKind::Statistics => {
            let suite = suite_dir(&inputs[0])?;
            let objectives = c["objectives"]
                .as_object()
                .context("statistics: objectives")?
                .iter()
                .filter_map(|(k, v)| v.as_f64().map(|w| (k.clone(), w)))
                .collect();
            let number = |k: &str| c[k].as_u64().with_context(|| format!("statistics: `{k}`"));
            let request = crate::statistics::Request {
                model: model_dir(&inputs[1]),
                pair: None,
                suite,
                objectives,
                batches: number("batches")? as usize,
                fisher_batches: number("fisher_batches")? as usize,
                fisher_labels: mmerge_train::statistics::FisherLabels::from_name(
                    c["fisher_labels"].as_str().unwrap_or("data"),
                )?,
                batch_size: number("batch_size")? as usize,
                seed: number("seed")?,
                threads: ctx.threads,
                device: ctx.device.clone(),
            };
            crate::statistics::write(&request, out, &|| {})?;
            Ok(())
        }
        StageKind::Distance => distance(inputs, out),
        StageKind::Report => bail!("the report stage runs in the runner"),
    }
}

fn str_of<'a>(c: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    c[key]
        .as_str()
        .with_context(|| format!("the stage config has no string `{key}`: {c}"))
}

/// A model stage's model folder.
fn model_dir(stage: &StageDir) -> PathBuf {
    stage.file("model")
}

fn suite(ctx: &StageContext, c: &Value, out: &Path) -> anyhow::Result<()> {
    if let Some(s) = c.get("synthetic") {
        let scale: mmerge_data::synth::Scale = str_of(s, "scale")?.parse()?;
        let seed = s["seed"].as_u64().context("synthetic suite seed")?;
        let cfg = mmerge_data::synth::SynthConfig::new(seed, scale);
        mmerge_data::synth::generate(&cfg, &out.join("suite"), false, false)?;
        return Ok(());
    }
    let dir = ctx
        .suite
        .resolve(&ctx.cache)
        .context("a synthetic suite's stage config has no `synthetic` entry")?;
    let dir = std::path::absolute(&dir).with_context(|| format!("{}", dir.display()))?;
    // Fails here, with the suite's own error, when it is missing or broken.
    mmerge_data::suite::Suite::open(&dir).with_context(|| {
        format!(
            "the suite {} (real-assets: build it with datasets/build-real-assets)",
            dir.display()
        )
    })?;
    let bytes = mmerge_core::json::to_pretty(&json!({"path": dir}))?;
    mmerge_core::atomic::write_atomic(&out.join(SUITE_SOURCE), &bytes)?;
    Ok(())
}

/// The name of the suite's first task of `kind`.
fn first_of_kind(suite: &Path, kind: &str) -> anyhow::Result<String> {
    let s = mmerge_data::suite::Suite::open(suite)?;
    let name = s
        .tasks()
        .find(|t| t.kind().name() == kind)
        .map(|t| t.name().to_string());
    name.with_context(|| format!("the suite {} has no {kind} task", suite.display()))
}

/// A recipe from the stage's config and the kind-specific `extra` fields.
fn recipe(ctx: &StageContext, suite: &Path, c: &Value, extra: Value) -> anyhow::Result<Recipe> {
    let mut r = json!({
        "suite": suite,
        "seed": c["seed"],
        "steps": c["steps"],
        "batch_size": c["batch_size"],
        "optim": {
            "lr": c["lr"], "warmup": 0.1, "decay": "cosine", "betas": [0.9, 0.98],
            "weight_decay": 0.01, "clip": 1.0,
        },
        "eval": {"every": 0, "split": "val", "test": false},
        "checkpoint_every": 0,
        "threads": ctx.threads,
        "device": ctx.device,
        "tensorboard": true,
    });
    if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
        r.extend(extra);
    }
    serde_json::from_value(r).context("building the stage's training recipe")
}

fn train(
    ctx: &StageContext,
    suite: &Path,
    c: &Value,
    extra: Value,
    out: &Path,
) -> anyhow::Result<()> {
    if c["steps"].as_u64() == Some(0) {
        // No training (a seed budget of 0): the model is its initialisation.
        let mut c = c.clone();
        c["steps"] = json!(1);
        let prepared = trainer::prepare(&recipe(ctx, suite, &c, extra)?)?;
        trainer::save_model(&prepared, &out.join("model"))?;
        return Ok(());
    }
    let r = recipe(ctx, suite, c, extra)?;
    let prepared = trainer::prepare(&r)?;
    let sink = Sink::new(SinkConfig {
        dir: Some(out.to_path_buf()),
        tensorboard: r.tensorboard,
        quiet: true,
    })?;
    trainer::train(
        prepared,
        out,
        &sink,
        TrainOptions {
            force: false,
            resume: false,
        },
    )?;
    Ok(())
}

/// Scores `model` on `task`'s test split, without training.
fn evaluate(
    ctx: &StageContext,
    suite: &Path,
    model: &Path,
    task: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let c = json!({"seed": 0, "steps": 1, "batch_size": 64, "lr": 1e-4});
    let mut r = recipe(
        ctx,
        suite,
        &c,
        json!({
            "model": crate::train::checkpoint_model(model)?,
            "finetune": {"task": task},
            "tensorboard": false,
        }),
    )?;
    r.eval.split = "test".into();
    r.eval.test = false;
    let p = trainer::prepare(&r)?;
    if !p.fresh_heads.is_empty() {
        bail!(
            "{}: has no trained head for {task} ({} missing)",
            model.display(),
            p.fresh_heads.join(", ")
        );
    }
    let mut detailed = trainer::evaluate_detailed(&p)?;
    let test = detailed.remove("test").context("no test scores")?;
    let evaluation = Evaluation {
        scores: test.scores,
        items: test.items,
    };
    let bytes = mmerge_core::json::to_pretty(&evaluation)?;
    mmerge_core::atomic::write_atomic(&out.join(EVALUATION), &bytes)?;
    Ok(())
}

fn merge(c: &Value, inputs: &[StageDir], out: &Path) -> anyhow::Result<()> {
    let method_name = str_of(c, "method")?;
    let method = MethodKind::from_name(method_name)
        .with_context(|| format!("unknown merge method `{method_name}`"))?;
    let numbers = |key: &str| -> Vec<(String, f64)> {
        c[key]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
            .collect()
    };
    // Inputs: experts, then the seed model when there is a base, then the statistics of the
    // experts and of the seed model when the config says so (`plan::Plan::build`).
    let mut rest = inputs[1..].iter();
    let mut next = |what: &str| {
        rest.next()
            .with_context(|| format!("the merge stage has no {what} input"))
    };
    let base = match c["base"].as_str() {
        Some(_) => Some(Checkpoint::open(model_dir(next("seed model")?))?),
        None => None,
    };
    let flag = |k: &str| c[k].as_bool().unwrap_or(false);
    let statistics = if flag("statistics") {
        Some(next("statistics")?.path().to_path_buf())
    } else {
        None
    };
    let base_statistics = if flag("base_statistics") {
        Some(next("base statistics")?.path().to_path_buf())
    } else {
        None
    };
    let seed = c["seed"].as_u64().unwrap_or(0);
    let mut experts_dir = model_dir(&inputs[0]);
    let scratch = out.join("scratch");
    if let Some(align) = c.get("align").filter(|a| !a.is_null()) {
        let name = str_of(align, "method")?;
        let method = mmerge_merge::align::AlignMethod::from_name(name)?;
        let opts = method.options(align["lambda"].as_f64())?;
        let multiway = Checkpoint::open(&experts_dir)?;
        let others: Vec<&str> = ["text", "vl"]
            .into_iter()
            .filter(|e| {
                multiway
                    .names()
                    .iter()
                    .any(|k| k.contains(&format!(".{e}.")))
            })
            .collect();
        drop(multiway);
        let aligned = scratch.join("aligned");
        mmerge_merge::align::io::align_experts(
            &experts_dir,
            &aligned,
            true,
            "vision",
            &others,
            method,
            &opts,
            statistics.as_deref(),
        )?;
        experts_dir = aligned;
    }
    let opts = ExpertOptions {
        weights: numbers("weights").into_iter().collect(),
        params: numbers("params")
            .into_iter()
            .map(|(k, v)| (k, ParamValue::Number(v)))
            .collect(),
        only: c["only"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        base,
        seed,
        statistics: statistics.filter(|_| method.statistics().folder().is_some()),
        base_statistics,
    };
    let multiway = Checkpoint::open(&experts_dir)?;
    let plan = experts::plan(multiway, method, opts)?;
    let mut run = mmerge_merge::MergeOptions::new(out.join("model"));
    run.seed = seed;
    run.copy_tokenizer = true;
    mmerge_merge::run(&plan, "", &run, &indicatif::ProgressBar::hidden())?;
    drop(plan);
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("{}", scratch.display()))?;
    }
    Ok(())
}

/// One expert of a multiway model as a shared model (its weights copied into the shared
/// keys: a merge of that expert alone).
fn extract(multiway: &Path, expert: &str, out: &Path) -> anyhow::Result<Checkpoint> {
    let opts = ExpertOptions {
        only: vec![expert.to_string()],
        ..Default::default()
    };
    let linear = MethodKind::from_name("linear").context("the linear method")?;
    let plan = experts::plan(Checkpoint::open(multiway)?, linear, opts)?;
    let mut run = mmerge_merge::MergeOptions::new(out);
    run.force = true;
    mmerge_merge::run(&plan, "", &run, &indicatif::ProgressBar::hidden())?;
    Ok(Checkpoint::open(out)?)
}

fn distance(inputs: &[StageDir], out: &Path) -> anyhow::Result<()> {
    let w0 = Checkpoint::open(model_dir(&inputs[0]))?;
    let experts = model_dir(&inputs[1]);
    let scratch = out.join("scratch");
    let vision = extract(&experts, "vision", &scratch.join("vision"))?;
    let text = extract(&experts, "text", &scratch.join("text"))?;
    let opts = mmerge_distance::DistanceOptions::default();
    let named = |r: mmerge_distance::DistanceReport| {
        r.aggregate
            .distances()
            .named()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    };
    let result = DistanceResult {
        raw: named(mmerge_distance::compare(&vision, &text, None, &opts)?),
        task_vector: named(mmerge_distance::compare(&vision, &text, Some(&w0), &opts)?),
    };
    drop((vision, text));
    std::fs::remove_dir_all(&scratch).with_context(|| format!("{}", scratch.display()))?;
    let bytes = mmerge_core::json::to_pretty(&result)?;
    mmerge_core::atomic::write_atomic(&out.join(DISTANCES), &bytes)?;
    Ok(())
}
