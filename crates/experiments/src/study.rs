//! What an experiment's report is made from: every finished stage's results, collected by the
//! runner ([`crate::run::collect`]) into one [`Study`] and turned into tables, plots and findings by
//! [`crate::analysis`].
//!
//! The stage outputs these come from (written by the binary's stage executors):
//!
//! - an `eval` or `zeroshot` stage writes `evaluation.json`, an [`Evaluation`];
//! - a `distance` stage writes `distances.json`, a [`DistanceResult`]'s `raw` and
//!   `task_vector` maps;
//! - the suite's `suite.json` gives the text-only baselines of each task.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One model scored on one task's test split (after fine-tuning), or its zero-shot signals.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// Score name → value (`vqa_score`, `ir_r1`, `tr_r1`, `accuracy`, `miou`, ...).
    pub scores: BTreeMap<String, f64>,
    /// Score name → the per-item values whose mean is that score, in the test split's item
    /// order (the same order for every model of a suite, so two models pair item by item, key
    /// by key): VQA soft score per question, retrieval hit@K per query (`ir_*` one per caption,
    /// `tr_*` one per image), accuracy per example. Scores
    /// that are not a mean over items (mIoU) have none.
    #[serde(default)]
    pub items: BTreeMap<String, Vec<f64>>,
}

/// The weight distances between the vision and the text experts of one experts model (the
/// two weight sets a merge combines), per distance metric.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistanceResult {
    /// On raw weights: metric name → value.
    pub raw: BTreeMap<String, f64>,
    /// On task vectors (each expert minus the seed model W0): metric name → value.
    pub task_vector: BTreeMap<String, f64>,
}

/// One arm of an experiment: what differs between the chains of an experiment before the
/// merge (the initialisation and architecture analyses sweep these; most experiments have
/// one arm).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Arm {
    /// Optimiser steps of seed pre-training (0: W0 is the random initialisation).
    pub seed_steps: u64,
    /// The experts model's sharing variant (`all_specific`, `custom_attn`, ...).
    pub sharing: String,
    /// How the experts started: `shared` (W0 in every expert) or `independent` (each expert
    /// from its own random initialisation).
    #[serde(default = "shared_init")]
    pub init: String,
}

fn shared_init() -> String {
    "shared".into()
}

/// What a model of the experiment is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Role {
    /// The seed model W0 (zero-shot signals only).
    Seed,
    /// The unmerged modality-specific model.
    Experts,
    /// The modality-agnostic baseline (W0 continued as one shared model).
    Baseline,
    /// A merge of the experts into one shared model.
    Merge(MergeInfo),
}

/// A merge's method and its (single, resolved) parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeInfo {
    /// The merge spec's name in the experiment file, without the sweep suffix
    /// (`interpolation`).
    pub spec: String,
    /// The merge method (`linear`, `task_arithmetic`, `ties`, ...).
    pub method: String,
    /// The method's parameters (`lambda`, `density`, ...).
    pub params: Vec<(String, f64)>,
    /// Per-expert weights as given (`vision`, `text`, ...); unset experts weigh 1.
    pub weights: Vec<(String, f64)>,
    /// The alignment method applied before merging (`weight_matching`, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align: Option<String>,
}

/// One model of one seed and arm with everything measured on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// The training seed.
    pub seed: u64,
    /// Index into [`Study::arms`].
    pub arm: usize,
    /// The model's name in tables: `experts`, `baseline`, `seed`, or the merge's name with its
    /// sweep (`interpolation[weights.vision=0.25, weights.text=0.75]`). The same name in
    /// every seed and arm.
    pub name: String,
    pub role: Role,
    /// Task name → the fine-tuned model's test scores.
    pub tasks: BTreeMap<String, Evaluation>,
    /// Zero-shot signals (retrieval without fine-tuning), when the experiment asks for them.
    pub zero_shot: Option<Evaluation>,
}

/// Everything measured in one experiment, as the report needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// The experiment's name (`quickstart`).
    pub experiment: String,
    /// The profile it ran under (`quick`).
    pub profile: String,
    /// The git commit of the code that ran the report (None outside a git checkout).
    pub git_commit: Option<String>,
    /// The command that reproduces the report (`mmerge run experiments/quickstart.yaml
    /// --profile quick`).
    pub command: String,
    /// The suite's name and what it is (`synthetic small, generator seed 0`).
    pub suite: String,
    /// Task name → the suite's text-only / chance baselines of that task, as `suite.json`
    /// gives them (`question_prior`, `statement_prior`, `chance_r1`, ...).
    pub baselines: BTreeMap<String, BTreeMap<String, f64>>,
    /// The training seeds, in the file's order.
    pub seeds: Vec<u64>,
    /// The fine-tuning tasks, in the file's order.
    pub tasks: Vec<String>,
    /// Task name → its kind (`vqa`, `retrieval`, `nlvr2`, `image_cls`, `text_cls`,
    /// `segmentation`), which says which scores it has.
    pub task_kinds: BTreeMap<String, String>,
    /// The distance metrics computed, in the file's order.
    pub distances: Vec<String>,
    /// The arms, in plan order (at least one).
    pub arms: Vec<Arm>,
    /// Every model of every seed and arm, in plan order.
    pub models: Vec<ModelResult>,
    /// (seed, arm index) → distances between that experts model's vision and text experts.
    pub expert_distances: Vec<(u64, usize, DistanceResult)>,
}
