//! `mmerge experts` (alias `merge-experts`): merges the modality experts of one multiway
//! checkpoint into its `shared` keys with any registered method (`mmerge_merge::experts`),
//! written like `merge`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use mmerge_core::Checkpoint;
use mmerge_merge::MethodKind;
use mmerge_merge::experts::{self, ExpertOptions};
use mmerge_merge::params::ParamValue;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The multiway checkpoint (folder or .safetensors file).
    multiway: PathBuf,
    /// Output folder (safetensors shards, index, config.json copied from MULTIWAY).
    out_dir: PathBuf,
    /// The merge method (see `mmerge methods`).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(MethodKind::NAMES))]
    method: String,
    /// The seed model W0 with the shared model's keys: required by task_arithmetic, ties,
    /// dare_linear, dare_ties and slerp (its t = 0 end); refused by the others.
    #[arg(long)]
    base: Option<PathBuf>,
    /// An expert's weight, EXPERT=W (vision, text, vl, shared); unset experts weigh 1.
    #[arg(long = "weight", value_name = "EXPERT=W", value_parser = parse_pair)]
    weights: Vec<(String, f64)>,
    /// A method parameter for every tensor, NAME=VALUE (e.g. density=0.5, lambda=1, t=0.3).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_pair)]
    params: Vec<(String, f64)>,
    /// Merge only this expert (repeatable); slerp and passthrough take exactly one.
    #[arg(long = "expert", value_name = "EXPERT")]
    only: Vec<String>,
    /// For a data-dependent method (regmean, fisher, gradient_matching): the statistics folder
    /// of MULTIWAY (`mmerge statistics`).
    #[arg(long)]
    statistics: Option<PathBuf>,
    /// The statistics folder of --base (gradient_matching, unless base_scale=0).
    #[arg(long)]
    base_statistics: Option<PathBuf>,
    /// Seed of the random methods (dare_linear, dare_ties).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace OUT_DIR if it exists.
    #[arg(long)]
    force: bool,
    /// Largest output shard, e.g. 5GB, 500MB, 1000000.
    #[arg(long, default_value = "5GB", value_parser = crate::parse_size)]
    max_shard_size: usize,
}

fn parse_pair(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    let v: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` in `{s}` is not a number"))?;
    if !v.is_finite() {
        return Err(format!("`{s}`: the value must be finite"));
    }
    Ok((name.trim().to_string(), v))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let method = MethodKind::from_name(&a.method).context("unknown method")?;
    if method.needs_base() && a.base.is_none() {
        bail!(
            "{} needs --base (the seed model W0, with the shared model's keys)",
            method.name()
        );
    }
    if !method.needs_base() && a.base.is_some() {
        bail!("{} takes no --base; the experts alone merge", method.name());
    }
    let reads = method.statistics().folder();
    if reads.is_some() && a.statistics.is_none() {
        bail!(
            "{} reads statistics collected on data: give --statistics DIR (made by `mmerge statistics`)",
            method.name()
        );
    }
    if reads.is_none() && (a.statistics.is_some() || a.base_statistics.is_some()) {
        bail!(
            "{} is data-free: drop --statistics/--base-statistics",
            method.name()
        );
    }
    let multiway = Checkpoint::open(&a.multiway)?;
    let base = a.base.as_ref().map(Checkpoint::open).transpose()?;
    let opts = ExpertOptions {
        weights: a.weights.into_iter().collect(),
        params: a
            .params
            .into_iter()
            .map(|(n, v)| (n, ParamValue::Number(v)))
            .collect(),
        only: a.only,
        base,
        seed: a.seed,
        statistics: a.statistics,
        base_statistics: a.base_statistics,
    };
    let plan = experts::plan(multiway, method, opts)?;
    let mut run = mmerge_merge::MergeOptions::new(&a.out_dir);
    run.force = a.force;
    run.seed = a.seed;
    run.max_shard_bytes = a.max_shard_size;
    run.copy_tokenizer = true;
    let bar = crate::progress(0, "merging experts");
    let s = mmerge_merge::run(&plan, "", &run, &bar)?;
    println!(
        "{} (experts into shared): {} tensors, {:.1} MB written, {:.2} s -> {}",
        s.method,
        s.tensors,
        s.bytes_written as f64 / 1e6,
        s.seconds,
        s.out.display()
    );
    Ok(())
}
