//! Training recipes: one YAML file says what to train, from what, on which data, how long and
//! how. Every field is typed; an unknown field, a wrong type or an out-of-range value is an
//! error naming the file and the line. Names (suite task, objectives, preset, sharing) are
//! checked against the suite and the registries by [`crate::trainer::prepare`], before any
//! training starts.
//!
//! ```yaml
//! suite: data/synthetic-small      # a suite folder (suite.json)
//! seed: 0
//! model:
//!   preset: small                  # tiny | small | medium | base, or `config: file.json`
//!   sharing: all_specific          # shared | all_specific | custom_attn | custom_ffn | custom_ln
//!   init: scratch                  # or {checkpoint: DIR} | {expand: SHARED_DIR} | {hf: {dir: DIR, expert: text}}
//! pretrain:                        # either pretrain ...
//!   objectives: {itc: 1, itm: 1, mlm: 1}
//! # finetune: {task: vqa}          # ... or finetune a suite task
//! steps: 300
//! batch_size: 64
//! optim: {lr: 1.0e-3, warmup: 0.1, decay: cosine, weight_decay: 0.01, betas: [0.9, 0.98], clip: 1.0}
//! eval: {every: 100, split: val}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmerge_core::yaml::{Seg, locate};
use mmerge_models::schedule::Decay;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::net::Init;

/// A training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The suite folder.
    pub suite: PathBuf,
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSpec,
    /// Pre-training on image-caption pairs ...
    #[serde(default)]
    pub pretrain: Option<Pretrain>,
    /// ... or fine-tuning on one suite task.
    #[serde(default)]
    pub finetune: Option<Finetune>,
    /// Optimiser updates.
    pub steps: u64,
    /// Examples per update (split into `grad_accum` micro-batches).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before each update.
    #[serde(default = "one")]
    pub grad_accum: usize,
    #[serde(default)]
    pub optim: Optim,
    #[serde(default)]
    pub eval: EvalSpec,
    /// Steps between resumable checkpoints (0: only the final model).
    #[serde(default = "default_checkpoint")]
    pub checkpoint_every: u64,
    /// Steps between logged training losses.
    #[serde(default = "default_log")]
    pub log_every: u64,
    /// Steps between weight histograms in TensorBoard (0: at the start and the end only).
    #[serde(default)]
    pub histogram_every: u64,
    /// A `tokenizer.json`; default: the init checkpoint's, else one trained on the suite.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Random resized crops and flips on training images.
    #[serde(default)]
    pub augment: bool,
    /// bf16 autocast (CUDA only). Refused for now: tch 0.26 cannot set autocast's dtype.
    #[serde(default)]
    pub bf16: bool,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Threads for libtorch and for decoding (0: libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// TensorBoard event files under the run's `tb/`.
    #[serde(default = "yes")]
    pub tensorboard: bool,
}

/// Which model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default)]
    pub preset: Option<String>,
    /// A `config.json` of the multiway model (instead of a preset).
    #[serde(default)]
    pub config: Option<PathBuf>,
    #[serde(default = "default_sharing")]
    pub sharing: String,
    #[serde(default = "scratch")]
    pub init: Init,
}

/// Pre-training on the image-caption pairs of a retrieval task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pretrain {
    /// The suite task with the pairs (default: the suite's retrieval task).
    #[serde(default)]
    pub task: Option<String>,
    /// Objective name → weight.
    pub objectives: BTreeMap<String, f64>,
    /// Share of text tokens masked for MLM.
    #[serde(default = "default_mask")]
    pub mask_prob: f64,
    /// Share of image patches masked for MIM.
    #[serde(default = "default_mim")]
    pub mim_ratio: f64,
    /// The split trained on (official downloads name theirs, e.g. `train2014`).
    #[serde(default = "default_train_split")]
    pub train_split: String,
}

/// Fine-tuning on one suite task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finetune {
    pub task: String,
    /// The split trained on (official downloads name theirs, e.g. `train2014`).
    #[serde(default = "default_train_split")]
    pub train_split: String,
}

/// AdamW, the schedule and clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optim {
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub min_lr: f64,
    /// Warm-up as a share of `steps`.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    #[serde(default)]
    pub decay: DecaySpec,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Global gradient-norm clipping (0: none).
    #[serde(default = "one_f")]
    pub clip: f64,
    /// Layer-wise rate decay: layer i of L gets lr · d^(L − i), the embeddings d^(L + 1),
    /// heads and the final norm 1 (none when absent).
    #[serde(default)]
    pub layer_decay: Option<f64>,
}

/// [`Decay`] as recipes spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecaySpec {
    #[default]
    Cosine,
    Linear,
    Constant,
}

impl DecaySpec {
    pub fn decay(self) -> Decay {
        match self {
            DecaySpec::Cosine => Decay::Cosine,
            DecaySpec::Linear => Decay::Linear,
            DecaySpec::Constant => Decay::Constant,
        }
    }
}

/// Evaluation during and after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Steps between evaluations on `split` (0: only at the end).
    #[serde(default)]
    pub every: u64,
    #[serde(default = "default_split")]
    pub split: String,
    /// Also score the test split at the end.
    #[serde(default = "yes")]
    pub test: bool,
    /// The test split's name (e.g. `test2015`, `dev`).
    #[serde(default = "default_test_split")]
    pub test_split: String,
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            lr: default_lr(),
            min_lr: 0.0,
            warmup: default_warmup(),
            decay: DecaySpec::default(),
            weight_decay: default_wd(),
            betas: default_betas(),
            eps: default_eps(),
            clip: 1.0,
            layer_decay: None,
        }
    }
}

impl Default for EvalSpec {
    fn default() -> Self {
        EvalSpec {
            every: 0,
            split: default_split(),
            test: true,
            test_split: default_test_split(),
            batch_size: default_eval_batch(),
        }
    }
}

fn default_batch() -> usize {
    64
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_checkpoint() -> u64 {
    100
}
fn default_log() -> u64 {
    10
}
fn default_device() -> String {
    "cpu".into()
}
fn default_sharing() -> String {
    "shared".into()
}
fn scratch() -> Init {
    Init::Scratch
}
fn default_mask() -> f64 {
    0.15
}
fn default_mim() -> f64 {
    0.4
}
fn default_lr() -> f64 {
    1e-3
}
fn default_warmup() -> f64 {
    0.1
}
fn default_wd() -> f64 {
    0.01
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.98]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_split() -> String {
    "val".into()
}
fn default_train_split() -> String {
    "train".into()
}
fn default_test_split() -> String {
    "test".into()
}
fn default_eval_batch() -> usize {
    256
}

impl Recipe {
    /// Reads and validates a recipe file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates recipe text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let recipe: Recipe = serde_yaml_ng::from_str(text).map_err(|e| TrainError::Recipe {
            path: path.to_path_buf(),
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })?;
        recipe
            .validate()
            .map_err(|(key, message)| TrainError::Recipe {
                path: path.to_path_buf(),
                line: line_of(text, key),
                message: format!("{key}: {message}"),
            })?;
        Ok(recipe)
    }

    /// The resolved recipe as YAML (what a run stores beside its results).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// Range checks that serde cannot express: (the dotted path of the key, what is wrong).
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let range = |key, ok: bool, want: &str, got: String| {
            if ok {
                Ok(())
            } else {
                Err((key, format!("must be {want}, got {got}")))
            }
        };
        match (&self.pretrain, &self.finetune) {
            (Some(_), Some(_)) => {
                return Err((
                    "finetune",
                    "give either `pretrain` or `finetune`, not both".into(),
                ));
            }
            (None, None) => {
                return Err((
                    "steps",
                    "give `pretrain: {objectives: ...}` or `finetune: {task: ...}`".into(),
                ));
            }
            _ => {}
        }
        if let Some(p) = &self.pretrain {
            if p.objectives.is_empty() {
                return Err(("pretrain.objectives", "name at least one objective".into()));
            }
            for (name, w) in &p.objectives {
                if !(w.is_finite() && *w >= 0.0) {
                    return Err((
                        "pretrain.objectives",
                        format!("weight of `{name}` must be ≥ 0, got {w}"),
                    ));
                }
            }
            range(
                "pretrain.mask_prob",
                p.mask_prob > 0.0 && p.mask_prob < 1.0,
                "in (0, 1)",
                p.mask_prob.to_string(),
            )?;
            range(
                "pretrain.mim_ratio",
                p.mim_ratio > 0.0 && p.mim_ratio < 1.0,
                "in (0, 1)",
                p.mim_ratio.to_string(),
            )?;
        }
        match (&self.model.preset, &self.model.config) {
            (Some(_), Some(_)) => {
                return Err(("model.config", "give `preset` or `config`, not both".into()));
            }
            (None, None) => return Err(("model", "give `preset: NAME` or `config: FILE`".into())),
            _ => {}
        }
        range(
            "steps",
            self.steps > 0,
            "at least 1",
            self.steps.to_string(),
        )?;
        range(
            "log_every",
            self.log_every > 0,
            "at least 1",
            self.log_every.to_string(),
        )?;
        range(
            "batch_size",
            self.batch_size > 0,
            "at least 1",
            self.batch_size.to_string(),
        )?;
        range(
            "grad_accum",
            self.grad_accum > 0 && self.batch_size.is_multiple_of(self.grad_accum),
            "at least 1 and divide batch_size",
            self.grad_accum.to_string(),
        )?;
        let o = &self.optim;
        range(
            "optim.lr",
            o.lr.is_finite() && o.lr > 0.0,
            "> 0",
            o.lr.to_string(),
        )?;
        range(
            "optim.min_lr",
            o.min_lr >= 0.0 && o.min_lr <= o.lr,
            "in [0, lr]",
            o.min_lr.to_string(),
        )?;
        range(
            "optim.warmup",
            (0.0..1.0).contains(&o.warmup),
            "in [0, 1)",
            o.warmup.to_string(),
        )?;
        range(
            "optim.weight_decay",
            o.weight_decay >= 0.0,
            "≥ 0",
            o.weight_decay.to_string(),
        )?;
        range(
            "optim.betas",
            o.betas.iter().all(|b| (0.0..1.0).contains(b)),
            "two values in [0, 1)",
            format!("{:?}", o.betas),
        )?;
        range("optim.eps", o.eps > 0.0, "> 0", o.eps.to_string())?;
        range(
            "optim.clip",
            o.clip >= 0.0 && o.clip.is_finite(),
            "≥ 0",
            o.clip.to_string(),
        )?;
        if let Some(d) = o.layer_decay {
            range(
                "optim.layer_decay",
                d > 0.0 && d <= 1.0,
                "in (0, 1]",
                d.to_string(),
            )?;
        }
        range(
            "eval.batch_size",
            self.eval.batch_size > 0,
            "at least 1",
            self.eval.batch_size.to_string(),
        )?;
        Ok(())
    }

    /// Warm-up steps.
    pub fn warmup_steps(&self) -> u64 {
        (self.optim.warmup * self.steps as f64).round() as u64
    }
}

/// The 1-based line of the node at the dotted `key` (`optim.warmup`), as the YAML parser
/// places it; if that node is absent (a default), the line of its nearest present parent.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let segs: Vec<Seg<'_>> = key.split('.').map(Seg::Key).collect();
    (1..=segs.len())
        .rev()
        .find_map(|n| locate(text, &segs[..n]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_range_error_names_the_line_of_its_own_key_not_a_namesake() {
        let text = "suite: s\nmodel: {preset: tiny}\nfinetune: {task: vqa}\nsteps: 3\n\
                    batch_size: 8\neval:\n  split: val\n  batch_size: 0\n";
        let e = Recipe::parse(text, Path::new("r.yml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r.yml:8: eval.batch_size: must be at least 1"),
            "{e}"
        );
        // A whole-recipe problem points at the nearest key it names.
        let text = "suite: s\nmodel: {preset: tiny}\nsteps: 3\n";
        let e = Recipe::parse(text, Path::new("r.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.yml:3: steps: give `pretrain"), "{e}");
    }
}
