//! Downstream tasks: one registry, one module per task kind.
//!
//! A task kind (the data crate's [`TaskKind`]) is registered once, in [`TASKS`], as a
//! [`TaskDef`]: what its model input is, the loss, the scores it reports, and `build`, which
//! creates its head under `heads.<kind>.*` and returns the [`Task`] that turns a split into
//! [`Item`]s, computes the loss of a batch and evaluates a split. Every suite task of that
//! kind (e.g. the synthetic suite's `shape_cls` and `count_cls`, both `image_cls`) runs
//! through it. Adding a task kind is one module and one line in [`TASKS`];
//! `tests/registry.rs` fails for an entry without a module doc stating its loss and scores.
//!
//! An evaluation ([`Task::evaluate`]) returns an [`Evaluated`]: the scores, and for every
//! score that is a mean over the split's items (questions, queries, examples) those per-item
//! values, in the split's item order, so that two models scored on one split can be compared
//! item by item (a paired bootstrap). Such a score is computed from its items
//! ([`Evaluated::insert_mean`]), so the two cannot disagree.

use std::collections::BTreeMap;

use mmerge_data::suite::{Examples, TaskKind};
use tch::Tensor;

use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Item, ModelBatch};
use crate::net::Net;

pub mod image_cls;
pub mod nlvr2;
pub mod retrieval;
pub mod segmentation;
pub mod text_cls;
pub mod vqa;

/// Named scores of one evaluation (e.g. `vqa_score`, `tr_r1`: higher is better; the zero-shot
/// `heldout_*` losses: lower is better).
pub type Scores = BTreeMap<String, f64>;

/// What an evaluation of a split reports: its scores and, for the scores that are means over
/// the split's items, the per-item values.
///
/// `items[k]` holds one value per evaluated item (a VQA question, a retrieval caption query
/// for `ir_r*` or image query for `tr_r*`, a classification or NLVR2 example), in the item
/// order of the evaluated split (the same order for every model scored on that split), and
/// its arithmetic mean equals `scores[k]` exactly, up to the order of the float summation.
/// Scores that are not a mean over items have no entry: segmentation's `miou` and
/// `pixel_accuracy` (sums over pixels), retrieval's `r_mean` (a mean of means), the
/// zero-shot `heldout_*` losses (batch means).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluated {
    /// Score name → value.
    pub scores: Scores,
    /// Score name → per-item values whose mean is that score, in item order.
    pub items: BTreeMap<String, Vec<f64>>,
}

impl Evaluated {
    /// Records the score `name` as the mean of `values` ([`mean`]) together with the values.
    pub fn insert_mean(&mut self, name: impl Into<String>, values: Vec<f64>) {
        let name = name.into();
        self.scores.insert(name.clone(), mean(&values));
        self.items.insert(name, values);
    }

    /// Records a score that is not a mean over items (it gets no `items` entry; an entry of
    /// that name from before is removed, so the two never disagree).
    pub fn insert_score(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        self.items.remove(&name);
        self.scores.insert(name, value);
    }

    /// Adds every score and item list of `other` (replacing those of the same name).
    pub fn extend(&mut self, other: Evaluated) {
        for name in other.scores.keys() {
            self.items.remove(name);
        }
        self.scores.extend(other.scores);
        self.items.extend(other.items);
    }

    /// Adds `scores`, which have no items (replacing those of the same name).
    pub fn extend_scores(&mut self, scores: Scores) {
        for (name, value) in scores {
            self.insert_score(name, value);
        }
    }
}

/// The arithmetic mean of `values`, summed left to right from +0.0 (0 for none): the one
/// mean every per-item score is computed with.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().fold(0.0, |sum, v| sum + v) / values.len().max(1) as f64
}

/// What the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Image,
    Text,
    ImageText,
    ImagePairText,
}

impl InputKind {
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Image => "image",
            InputKind::Text => "text",
            InputKind::ImageText => "image-text",
            InputKind::ImagePairText => "image-pair-text",
        }
    }
}

/// What a task builds from: the suite task's name and its training split (class names,
/// answer vocabulary).
#[derive(Debug)]
pub struct TaskData<'a> {
    pub name: &'a str,
    pub train: &'a Examples,
}

/// A registered task kind.
#[derive(Debug)]
pub struct TaskDef {
    pub kind: TaskKind,
    pub input: InputKind,
    /// The loss, one line.
    pub loss: &'static str,
    /// The scores `evaluate` returns; the first is the task's headline score.
    pub scores: &'static [&'static str],
    /// Creates the head under `heads.<kind>` (or shares one, e.g. ITC) and the task.
    pub build: fn(&mut Net, &TaskData<'_>) -> Result<Box<dyn Task>>,
    /// The module's source, for the registry test's documentation check.
    pub source: &'static str,
}

impl TaskDef {
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// A task bound to a network's head.
pub trait Task: std::fmt::Debug {
    /// The split as loader items (training: every example; evaluation: see `evaluate`).
    fn items(&self, examples: &Examples) -> Result<Vec<Item>>;

    /// Width of the soft targets (VQA: the answer vocabulary), 0 if none.
    fn soft_classes(&self) -> usize {
        0
    }

    /// The mean loss of a batch.
    fn loss(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor>;

    /// Scores of the model on a split, with the per-item values of every score that is a mean
    /// over items (see [`Evaluated`]; no gradients; runs batches through `data`).
    fn evaluate(&self, net: &Net, data: &EvalData, examples: &Examples) -> Result<Evaluated>;
}

/// The registry: one line per task kind.
pub static TASKS: &[TaskDef] = &[
    vqa::TASK,
    retrieval::TASK,
    nlvr2::TASK,
    image_cls::TASK,
    text_cls::TASK,
    segmentation::TASK,
];

/// The task definition of a kind.
pub fn task_def(kind: TaskKind) -> Result<&'static TaskDef> {
    TASKS
        .iter()
        .find(|t| t.kind == kind)
        .ok_or_else(|| TrainError::Unknown {
            what: "task kind",
            name: kind.name().to_string(),
            valid: TASKS
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The arg-max class of each row of `logits` [B, C] and the batch's labels, on the CPU.
pub(crate) fn class_predictions(
    logits: &Tensor,
    batch: &ModelBatch,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let pred = logits.argmax(1, false).to_device(tch::Device::Cpu);
    let labels = batch.classes()?.to_device(tch::Device::Cpu);
    Ok((Vec::try_from(pred)?, Vec::try_from(labels)?))
}

/// Cross-entropy of class logits [B, C] against the batch's class targets.
pub(crate) fn class_loss(logits: Tensor, batch: &ModelBatch) -> Result<Tensor> {
    Ok(logits.cross_entropy_for_logits(batch.classes()?))
}

/// `accuracy`: the share of `items` whose arg-max class of `logits(batch)` is their label,
/// with each item's correctness (1 or 0) as its per-item value.
pub(crate) fn accuracy(
    data: &EvalData,
    items: Vec<Item>,
    logits: impl Fn(&ModelBatch) -> Result<Tensor>,
) -> Result<Evaluated> {
    let correct = per_item(data, items, 0, |batch| {
        let (pred, labels) = class_predictions(&logits(batch)?, batch)?;
        if pred.len() != labels.len() {
            return Err(TrainError::Invalid(format!(
                "accuracy: {} predictions for {} labels",
                pred.len(),
                labels.len()
            )));
        }
        Ok(pred
            .iter()
            .zip(&labels)
            .map(|(p, l)| if p == l { 1.0 } else { 0.0 })
            .collect())
    })?;
    let mut e = Evaluated::default();
    e.insert_mean("accuracy", correct);
    Ok(e)
}

/// One value per item of `items`, in item order: runs every batch through `data` and puts the
/// values `f` returns for it (one per batch row) at the rows' item indices. An error if `f`
/// returns the wrong number of values or some item gets none.
pub(crate) fn per_item(
    data: &EvalData,
    items: Vec<Item>,
    soft_classes: usize,
    mut f: impl FnMut(&ModelBatch) -> Result<Vec<f64>>,
) -> Result<Vec<f64>> {
    let n = items.len();
    let mut out: Vec<Option<f64>> = vec![None; n];
    data.for_each(items, soft_classes, |batch| {
        let values = f(&batch)?;
        if values.len() != batch.indices.len() {
            return Err(TrainError::Invalid(format!(
                "evaluation: {} values for a batch of {}",
                values.len(),
                batch.indices.len()
            )));
        }
        for (&i, v) in batch.indices.iter().zip(values) {
            match out.get_mut(i) {
                Some(slot @ None) => *slot = Some(v),
                _ => {
                    return Err(TrainError::Invalid(format!(
                        "evaluation: item {i} of {n} scored twice or out of range"
                    )));
                }
            }
        }
        Ok(())
    })?;
    out.into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| TrainError::Invalid(format!("evaluation: item {i} of {n} not scored")))
        })
        .collect()
}

/// Checks that a split has the classes the head was built for.
pub(crate) fn same_classes(what: &str, head: &[String], split: &[String]) -> Result<()> {
    if head == split {
        return Ok(());
    }
    Err(TrainError::Invalid(format!(
        "{what}: the split has {} classes ({}), the head was built for {} ({})",
        split.len(),
        split.join(", "),
        head.len(),
        head.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_sums_in_order_and_is_zero_for_no_items() {
        assert_eq!(mean(&[1.0, 0.0, 1.0]), 2.0 / 3.0);
        assert_eq!(mean(&[0.1, 0.2, 0.3]), ((0.1 + 0.2) + 0.3) / 3.0);
        // +0.0, not −0.0 (as an empty f64 `Sum` would give).
        assert_eq!(mean(&[]).to_bits(), 0f64.to_bits());
    }

    #[test]
    fn a_score_keeps_items_only_while_it_is_their_mean() {
        let mut e = Evaluated::default();
        e.insert_mean("accuracy", vec![1.0, 0.0, 0.0, 1.0]);
        e.insert_mean("vqa_score", vec![0.3, 0.9]);
        assert_eq!(e.scores["accuracy"], 0.5);
        assert_eq!(e.items["accuracy"], [1.0, 0.0, 0.0, 1.0]);
        // A plain score of the same name replaces the score and drops its items.
        e.insert_score("accuracy", 0.25);
        assert_eq!(e.scores["accuracy"], 0.25);
        assert!(!e.items.contains_key("accuracy"));

        let mut other = Evaluated::default();
        other.insert_mean("accuracy", vec![1.0]);
        other.insert_score("vqa_score", 0.7);
        e.extend(other);
        assert_eq!(e.scores["accuracy"], 1.0);
        assert_eq!(e.items["accuracy"], [1.0]);
        assert_eq!(e.scores["vqa_score"], 0.7);
        assert!(!e.items.contains_key("vqa_score"));

        e.extend_scores(Scores::from([("accuracy".to_string(), 0.5)]));
        assert_eq!(e.scores["accuracy"], 0.5);
        assert!(e.items.is_empty());
        assert_eq!(e.scores.len(), 2);
    }
}
