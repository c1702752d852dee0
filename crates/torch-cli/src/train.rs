//! `mmerge train RECIPE.yml --out RUN` and `mmerge eval`: the training crate from the
//! command line. The library says what went wrong; the advice (`--force`, `--resume`) is
//! added here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mmerge_data::suite::Suite;
use mmerge_sink::{Sink, SinkConfig};
use mmerge_train::TrainError;
use mmerge_train::net::Init;
use mmerge_train::recipe::Recipe;
use mmerge_train::trainer::{self, TrainOptions};

/// Trains as the recipe says into `out`.
pub fn train(
    recipe: &Path,
    out: &Path,
    force: bool,
    resume: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let r = Recipe::load(recipe)?;
    let prepared = trainer::prepare(&r)?;
    let sink = Sink::new(SinkConfig {
        dir: Some(out.to_path_buf()),
        tensorboard: r.tensorboard,
        quiet,
    })?;
    sink.info(&format!(
        "training {} → {}",
        recipe.display(),
        out.display()
    ));
    let report = trainer::train(prepared, out, &sink, TrainOptions { force, resume })
        .map_err(|e| advise(e, out))?;
    print_scores(&report.scores);
    println!(
        "model: {}  ({} steps, {:.1} s, {:.0} examples/s)",
        report.model.display(),
        report.steps,
        report.seconds,
        report.examples_per_s
    );
    Ok(())
}

fn advise(e: TrainError, out: &Path) -> anyhow::Error {
    let msg = e.to_string();
    let hint = match &e {
        TrainError::FinishedRun { .. } => " (pass --force to train it again)",
        TrainError::UnfinishedRun { .. } => {
            " (pass --resume to continue it, or --force to start afresh)"
        }
        _ => "",
    };
    anyhow::anyhow!("{msg}{hint}").context(format!("training into {}", out.display()))
}

/// Fine-tunes nothing: scores a checkpoint on a task's split (the recipe route), or, with
/// `--checkpoint --task --suite`, builds that recipe itself.
pub struct EvalArgs {
    pub recipe: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub task: Option<String>,
    pub suite: Option<PathBuf>,
    pub split: String,
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let mut r = match (&a.recipe, &a.checkpoint, &a.task, &a.suite) {
        (Some(p), _, _, _) => Recipe::load(p)?,
        (None, Some(ck), Some(task), Some(suite)) => {
            let model = checkpoint_model(ck)?;
            Suite::open(suite)?;
            // Only what differs from the recipe defaults.
            serde_json::from_value(serde_json::json!({
                "suite": suite,
                "model": model,
                "finetune": {"task": task},
                "steps": 1,
                "device": "auto",
                "tensorboard": false,
            }))?
        }
        _ => anyhow::bail!("give a RECIPE, or --checkpoint, --task and --suite"),
    };
    r.eval.split = a.split.clone();
    r.eval.test = false;
    let p = trainer::prepare(&r)?;
    if let Init::Checkpoint(ck) = &r.model.init
        && !p.fresh_heads.is_empty()
    {
        anyhow::bail!(
            "{}: has no trained head for this task ({} missing): fine-tune it first",
            ck.display(),
            p.fresh_heads.join(", ")
        );
    }
    let scores = trainer::evaluate(&p)?;
    print_scores(&scores);
    Ok(())
}

/// A recipe's `model` section for a saved checkpoint: its `config.json`, its sharing, and the
/// checkpoint as the init.
pub fn checkpoint_model(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let config = mmerge_models::MultiwayConfig::from_file(&dir.join("config.json"))
        .with_context(|| format!("{}: the checkpoint's config", dir.display()))?;
    Ok(serde_json::json!({
        "config": dir.join("config.json"),
        "sharing": config.sharing,
        "init": {"checkpoint": dir},
    }))
}

fn print_scores(scores: &std::collections::BTreeMap<String, mmerge_train::tasks::Scores>) {
    for (split, s) in scores {
        for (k, v) in s {
            println!("{split}/{k}\t{v:.4}");
        }
    }
}
