//! Downstream tasks: one registry, one module per task kind.
//!
//! A task kind (the data crate's [`TaskKind`]) is registered once, in [`TASKS`], as a
//! [`TaskDef`]: what its model input is, the loss, the scores it reports, and `build`, which
//! creates its head under `heads.<kind>.*` and returns the [`Task`] that turns a split into
//! [`Item`]s, computes the loss of a batch and evaluates a split. Every suite task of that
//! kind (e.g. the synthetic suite's `shape_cls` and `count_cls`, both `image_cls`) runs
//! through it. Adding a task kind is one module and one line in [`TASKS`];
//! `tests/registry.rs` fails for an entry without a module doc stating its loss and scores.

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

    /// Scores of the model on a split (no gradients; runs batches through `data`).
    fn evaluate(&self, net: &Net, data: &EvalData, examples: &Examples) -> Result<Scores>;
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

/// `accuracy`: the share of `items` whose arg-max class of `logits(batch)` is their label.
pub(crate) fn accuracy(
    data: &EvalData,
    items: Vec<Item>,
    logits: impl Fn(&ModelBatch) -> Result<Tensor>,
) -> Result<Scores> {
    let mut acc = mmerge_data::score::Accuracy::default();
    data.for_each(items, 0, |batch| {
        let (pred, labels) = class_predictions(&logits(&batch)?, &batch)?;
        acc.add(&pred, &labels)?;
        Ok(())
    })?;
    Ok(Scores::from([("accuracy".to_string(), acc.value())]))
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
