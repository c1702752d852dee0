//! `mmerge statistics MODEL --suite SUITE OUT`: the statistics that data-dependent merges read
//! (`mmerge_train::statistics`), written as a statistics folder:
//!
//! - `gram/`: a checkpoint with, under each linear weight's key, the mean Gram matrix of that
//!   layer's inputs (float32 `[in, in]`; RegMean);
//! - `fisher/`: a checkpoint with the diagonal Fisher of every parameter under its own key
//!   (float32; Fisher merging, gradient matching);
//! - `activations/`: for every expert-specific unit and every expert paired with the vision
//!   expert, the joint moments (count, Σ f, Σ f fᵀ in float64) of the two experts' features on
//!   the same tokens (activation matching, ZipIt, MuDSC in `mmerge align --experts`);
//! - `statistics.json`: what was collected, from which model, on how much data.
//!
//! With `--pair OTHER` it writes only `activations/` for two-checkpoint alignment: the joint
//! moments of MODEL's and OTHER's units (the residual stream's final hidden states, every
//! attention and FFN unit) on the same batches, under `model_units`' names.
//!
//! The experiment runner's `statistics` stage calls [`write`] into its stage folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mmerge_core::Dtype;
use mmerge_merge::align::JointStats;
use mmerge_models::Expert;
use mmerge_train::recipe::Recipe;
use mmerge_train::statistics::{Collected, FisherLabels, Moments, StatisticsConfig, collect};
use mmerge_train::trainer;
use serde_json::json;
use tch::{Kind, Tensor};

/// What to collect and how (the CLI's flags, the stage's config).
#[derive(Debug, Clone)]
pub struct Request {
    pub model: PathBuf,
    /// A second model of the same architecture: collect the two models' joint unit moments
    /// on the same batches instead (model-mode alignment), nothing else.
    pub pair: Option<PathBuf>,
    pub suite: PathBuf,
    /// Objective name → weight of the Fisher's loss (and the pairs' source).
    pub objectives: BTreeMap<String, f64>,
    pub batches: usize,
    pub fisher_batches: usize,
    pub fisher_labels: FisherLabels,
    pub batch_size: usize,
    pub seed: u64,
    pub threads: usize,
    pub device: String,
}

/// The reference expert activation units are paired with.
const REFERENCE: Expert = Expert::Vision;

/// Collects and writes the statistics of `r.model` into `out` (an existing, empty folder).
pub fn write(r: &Request, out: &Path, tick: &dyn Fn()) -> anyhow::Result<serde_json::Value> {
    let recipe: Recipe = serde_json::from_value(json!({
        "suite": r.suite,
        "seed": r.seed,
        "steps": 1,
        "batch_size": r.batch_size,
        "model": crate::train::checkpoint_model(&r.model)?,
        "pretrain": {"objectives": r.objectives},
        "eval": {"every": 0, "split": "val", "test": false},
        "checkpoint_every": 0,
        "threads": r.threads,
        "device": r.device,
        "tensorboard": false,
    }))
    .context("building the statistics recipe")?;
    let p = trainer::prepare(&recipe)?;
    if let Some(other) = &r.pair {
        let mut rb = recipe.clone();
        rb.model.init = mmerge_train::net::Init::Checkpoint(other.clone());
        let pb = trainer::prepare(&rb)?;
        let t0 = std::time::Instant::now();
        let moments = mmerge_train::statistics::collect_pair(&p, &pb, r.batches, tick)?;
        let seconds = t0.elapsed().as_secs_f64();
        let mut units = BTreeMap::new();
        for (name, m) in moments {
            // f = [f_A; f_B]: blocks 0 and 1 of width W/2.
            units.insert(name, joint(&m, m.width() / 2, [0, 1])?);
        }
        mmerge_merge::align::io::write_joint_stats(out, &units)?;
        let info = json!({
            "model": r.model,
            "pair": other,
            "suite": r.suite,
            "batches": r.batches,
            "batch_size": r.batch_size,
            "seed": r.seed,
            "seconds": seconds,
            "written": {"activations": units.len()},
        });
        mmerge_core::atomic::write_atomic(
            &out.join("statistics.json"),
            &mmerge_core::json::to_pretty(&info)?,
        )?;
        return Ok(info);
    }
    let cfg = StatisticsConfig {
        batches: r.batches,
        fisher_batches: r.fisher_batches,
        fisher_labels: r.fisher_labels,
    };
    let t0 = std::time::Instant::now();
    let c = collect(&p, &cfg, tick)?;
    let seconds = t0.elapsed().as_secs_f64();
    let summary = save(&c, out)?;
    let info = json!({
        "model": r.model,
        "suite": r.suite,
        "objectives": r.objectives,
        "batches": r.batches,
        "fisher_batches": r.fisher_batches,
        "fisher_labels": r.fisher_labels.name(),
        "batch_size": r.batch_size,
        "seed": r.seed,
        "fresh_heads": p.fresh_heads,
        "seconds": seconds,
        "written": summary,
    });
    mmerge_core::atomic::write_atomic(
        &out.join("statistics.json"),
        &mmerge_core::json::to_pretty(&info)?,
    )?;
    Ok(info)
}

fn f32_values(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.to_kind(Kind::Float)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )?)
}

fn f64_values(t: &Tensor) -> anyhow::Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )?)
}

/// A checkpoint of float32 tensors in `dir`.
fn save_f32(dir: &Path, tensors: &BTreeMap<String, Tensor>) -> anyhow::Result<usize> {
    let mut list = vec![];
    for (k, t) in tensors {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        list.push((k.clone(), shape, f32_values(t)?));
    }
    mmerge_core::writer::write_model(dir, Dtype::F32, &list, 1 << 30, &[])?;
    Ok(list.len())
}

/// The joint statistics of feature blocks `[a, b]` (each `w` wide) out of moments of
/// concatenated features.
fn joint(m: &Moments, w: usize, [a, b]: [usize; 2]) -> anyhow::Result<JointStats> {
    let sum = f64_values(&m.sum)?;
    let outer = f64_values(&m.outer)?;
    let n = m.width();
    let idx: Vec<usize> = (0..w)
        .map(|i| a * w + i)
        .chain((0..w).map(|i| b * w + i))
        .collect();
    let mut js = JointStats::new(w);
    js.count = m.count;
    js.sum = idx.iter().map(|&i| sum[i]).collect();
    js.outer = idx
        .iter()
        .flat_map(|&i| idx.iter().map(move |&j| (i, j)))
        .map(|(i, j)| outer[i * n + j])
        .collect();
    Ok(js)
}

/// Writes the folders of the module docs; returns what each holds.
fn save(c: &Collected, out: &Path) -> anyhow::Result<serde_json::Value> {
    let mut written = serde_json::Map::new();
    if !c.gram.is_empty() {
        written.insert("gram".into(), json!(save_f32(&out.join("gram"), &c.gram)?));
    }
    if !c.fisher.is_empty() {
        written.insert(
            "fisher".into(),
            json!(save_f32(&out.join("fisher"), &c.fisher)?),
        );
    }
    let mut units = BTreeMap::new();
    for ((part, kind), m) in &c.units {
        let Some(r) = m.experts.iter().position(|e| *e == REFERENCE) else {
            continue;
        };
        for (o, e) in m.experts.iter().enumerate().filter(|(o, _)| *o != r) {
            let name = format!("{part}.{}+{}.{}", REFERENCE.name(), e.name(), kind.name());
            units.insert(name, joint(&m.moments, m.width(), [r, o])?);
        }
    }
    if !units.is_empty() {
        written.insert("activations".into(), json!(units.len()));
        mmerge_merge::align::io::write_joint_stats(out, &units)?;
    }
    Ok(serde_json::Value::Object(written))
}

/// `mmerge statistics`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trained model (a folder with config.json and model.safetensors).
    model: PathBuf,
    /// The output statistics folder.
    out: PathBuf,
    /// The task suite whose pre-training pairs run through the model.
    #[arg(long)]
    suite: PathBuf,
    /// A second model of MODEL's architecture: write only the two models' joint activation
    /// moments on the same batches (for `mmerge align MODEL OTHER OUT --statistics OUT`).
    #[arg(long, value_name = "OTHER")]
    pair: Option<PathBuf>,
    /// Objectives of the Fisher's loss, NAME=WEIGHT (default itc=1, itm=1, mlm=1).
    #[arg(long = "objective", value_name = "NAME=WEIGHT")]
    objectives: Vec<String>,
    /// Batches for the Gram matrices and activation moments (0: none).
    #[arg(long, default_value_t = 32)]
    batches: usize,
    /// Batches for the Fisher (0: none).
    #[arg(long, default_value_t = 32)]
    fisher_batches: usize,
    /// The Fisher's targets: `data` (empirical Fisher) or `model` (sampled from the model's
    /// own predictions, the Monte-Carlo true Fisher).
    #[arg(long, default_value = "data", value_parser = ["data", "model"])]
    fisher_labels: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// libtorch threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut objectives = BTreeMap::new();
    for o in &a.objectives {
        let (name, w) = o
            .split_once('=')
            .with_context(|| format!("--objective `{o}` is not NAME=WEIGHT"))?;
        let w: f64 = w
            .parse()
            .with_context(|| format!("--objective `{o}`: `{w}` is not a number"))?;
        objectives.insert(name.to_string(), w);
    }
    if objectives.is_empty() {
        objectives = [("itc", 1.0), ("itm", 1.0), ("mlm", 1.0)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
    }
    let dir = mmerge_core::atomic::AtomicDir::create(&a.out, a.force)
        .map_err(|e| anyhow::anyhow!("{e} (pass --force to replace it)"))?;
    let request = Request {
        model: a.model,
        pair: a.pair,
        suite: a.suite,
        objectives,
        batches: a.batches,
        fisher_batches: a.fisher_batches,
        fisher_labels: FisherLabels::from_name(&a.fisher_labels)?,
        batch_size: a.batch_size,
        seed: a.seed,
        threads: a.threads,
        device: a.device,
    };
    let bar = indicatif::ProgressBar::new((a.batches + a.fisher_batches) as u64);
    let info = write(&request, dir.path(), &|| bar.inc(1))?;
    bar.finish_and_clear();
    let out = dir.finish()?;
    println!(
        "statistics of {} in {:.1} s: {} -> {}",
        request.model.display(),
        info["seconds"].as_f64().unwrap_or(0.0),
        info["written"],
        out.display()
    );
    Ok(())
}
