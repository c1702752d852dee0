//! Merging checkpoints: merge plans (groups of input tensors → one output tensor), the merge
//! methods (`methods`: one module each, with its float64 oracle, in one registry), mergekit-compatible YAML configs,
//! and a streaming executor that holds a few chunks per thread at a time.
//!
//! ```no_run
//! # fn main() -> Result<(), mmerge_merge::MergeError> {
//! let opts = mmerge_merge::MergeOptions::new("merged");
//! let summary = mmerge_merge::merge_file("config.yml".as_ref(), &opts, &indicatif::ProgressBar::hidden())?;
//! println!("{} tensors", summary.tensors);
//! # Ok(()) }
//! ```

pub mod align;
pub mod config;
pub mod error;
pub mod exec;
pub mod experts;
pub mod methods;
pub mod multi;
pub mod numerics;
pub mod params;
pub mod plan;
pub mod vocab;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use mmerge_core::{CheckpointWriter, CoreError};

pub use config::MergeConfig;
pub use error::{MergeError, Result};
pub use methods::MethodKind;
pub use numerics::Numerics;
pub use plan::MergePlan;

/// Tokenizer and generation files copied from the tokenizer model, when present.
pub const TOKENIZER_FILES: [&str; 11] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

/// Where and how to write a merge.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub out: PathBuf,
    /// Replace an existing output folder.
    pub force: bool,
    /// Largest shard, in bytes of tensor data.
    pub max_shard_bytes: usize,
    /// Seed of random methods (DARE).
    pub seed: u64,
    /// Copy tokenizer files to the output.
    pub copy_tokenizer: bool,
    /// Overrides the config's `numerics` (`None`: as the config says).
    pub numerics: Option<Numerics>,
}

impl MergeOptions {
    /// Defaults: no overwrite, 5 GB shards, seed 0, tokenizer copied.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        MergeOptions {
            out: out.into(),
            force: false,
            max_shard_bytes: 5_000_000_000,
            seed: 0,
            copy_tokenizer: true,
            numerics: None,
        }
    }
}

/// What a merge did.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    pub out: PathBuf,
    pub method: &'static str,
    pub tensors: usize,
    pub bytes_read: usize,
    pub bytes_written: usize,
    pub seconds: f64,
}

/// Reads a config file and merges into `opts.out`.
pub fn merge_file(
    config: &Path,
    opts: &MergeOptions,
    progress: &ProgressBar,
) -> Result<MergeSummary> {
    let text = std::fs::read_to_string(config).map_err(|e| CoreError::io(config, e))?;
    let docs = multi::split(&text);
    if docs.len() > 1 {
        return Err(MergeError::Config {
            path: config.to_path_buf(),
            line: Some(docs[1].0),
            message: format!(
                "{} merges in one file (a multi-document config); they need a folder for the named ones' outputs",
                docs.len()
            ),
        });
    }
    let mut cfg = MergeConfig::from_yaml(&text, config)?;
    if let Some(n) = opts.numerics {
        cfg = cfg.with_numerics(n, config)?;
    }
    let plan = MergePlan::new(&cfg, config, opts.seed)?;
    run(&plan, &text, opts, progress)
}

/// Executes a plan into `opts.out`, atomically: on any error nothing is left at `opts.out`.
pub fn run(
    plan: &MergePlan,
    config_text: &str,
    opts: &MergeOptions,
    progress: &ProgressBar,
) -> Result<MergeSummary> {
    let start = Instant::now();
    let outputs = plan.outputs();
    let writer = CheckpointWriter::create(&opts.out, &outputs, opts.max_shard_bytes, opts.force)?;
    write_side_files(plan, config_text, opts, &writer)?;
    let bytes_written: usize = outputs
        .iter()
        .map(|t| t.shape.iter().product::<usize>() * t.dtype.size())
        .sum();
    progress.set_length(bytes_written as u64);
    exec::execute(plan, &writer, progress)?;
    let out = writer.finish()?;
    progress.finish_and_clear();
    Ok(MergeSummary {
        out,
        method: plan.method.name(),
        tensors: outputs.len(),
        bytes_read: plan.input_bytes(),
        bytes_written,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn write_side_files(
    plan: &MergePlan,
    config_text: &str,
    opts: &MergeOptions,
    writer: &CheckpointWriter,
) -> Result<()> {
    let cfg_dir = plan.models[plan.config_model].dir();
    let cfg_json = cfg_dir.join("config.json");
    if cfg_json.is_file() {
        let text = std::fs::read_to_string(&cfg_json).map_err(|e| CoreError::io(&cfg_json, e))?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| MergeError::Config {
                path: cfg_json.clone(),
                line: Some(e.line()),
                message: e.to_string(),
            })?;
        if let Some(obj) = value.as_object_mut() {
            if let Some(n) = plan.out_layers {
                for key in ["num_hidden_layers", "n_layer", "num_layers"] {
                    if obj.get(key).is_some_and(serde_json::Value::is_u64) {
                        obj.insert(key.to_string(), n.into());
                    }
                }
            }
            if let Some(d) = plan.out_dtype_name {
                obj.insert("torch_dtype".to_string(), d.into());
            }
            for (key, v) in &plan.config_updates {
                if obj.contains_key(*key) {
                    obj.insert(key.to_string(), v.clone());
                }
            }
        }
        let pretty = serde_json::to_string_pretty(&value).unwrap_or(text);
        writer.write_file("config.json", pretty.as_bytes())?;
    }
    if opts.copy_tokenizer {
        let dir = plan.models[plan.tokenizer_model].dir();
        for f in TOKENIZER_FILES {
            let p = dir.join(f);
            if p.is_file() {
                writer.copy_file(&p, f)?;
            }
        }
    }
    let provenance = format!(
        "# written by mmerge {} (seed {})\n{config_text}",
        env!("CARGO_PKG_VERSION"),
        plan.seed
    );
    writer.write_file("mmerge_config.yml", provenance.as_bytes())?;
    Ok(())
}
