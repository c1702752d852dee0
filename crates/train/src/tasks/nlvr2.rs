//! NLVR2: is a statement true of a pair of images (arXiv 1811.00491)?
//!
//! Input: image-pair-text. The statement is fused with each image in turn (the second image
//! with token type 2) and the two fused first tokens are concatenated, [B, 2D]
//! (`MultiwayTransformer::encode_pair`, VLMo's "pair" method, arXiv 2111.02358). Head:
//! [`Classifier`] 2·hidden → 2 (false, true) under `heads.nlvr2`. Loss: the mean
//! cross-entropy against the label y ∈ {0 = false, 1 = true},
//!   L = mean_b [ −log softmax(z_b)_{y_b} ].
//! Prediction: the arg-max of the two logits. Score `accuracy`: #{b : ŷ_b = y_b} / n over
//! the statements (`data::score::classify`; per-item value: 1 if right, else 0), NLVR2's
//! reported metric.
//!
//! Deviation: NLVR2's consistency score (all statements about one image set right) is not
//! reported, and no extra pair pre-training stage (ALBEF's text assignment) is run.

use mmerge_data::suite::{Examples, TaskKind};
use mmerge_models::heads::Classifier;
use tch::Tensor;

use super::{Evaluated, InputKind, Task, TaskData, TaskDef, accuracy, class_loss};
use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Item, ModelBatch, Target};
use crate::net::Net;

pub const TASK: TaskDef = TaskDef {
    kind: TaskKind::Nlvr2,
    input: InputKind::ImagePairText,
    loss: "mean cross-entropy of the pair logits against true/false",
    scores: &["accuracy"],
    build,
    source: include_str!("nlvr2.rs"),
};

#[derive(Debug)]
struct Nlvr2 {
    head: Classifier,
}

fn build(net: &mut Net, data: &TaskData<'_>) -> Result<Box<dyn Task>> {
    let Examples::Nlvr2(_) = data.train else {
        return Err(TrainError::Invalid(format!(
            "task `{}` is not an NLVR2 task",
            data.name
        )));
    };
    let cfg = net.config().clone();
    let head = Classifier::new(
        &(net.heads() / TaskKind::Nlvr2.name()),
        2 * cfg.hidden_size,
        2,
        cfg.layer_norm_eps,
    );
    Ok(Box::new(Nlvr2 { head }))
}

impl Nlvr2 {
    /// Logits [B, 2] (false, true).
    fn logits(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        let [left, right] = batch.images.as_slice() else {
            return Err(TrainError::Invalid(format!(
                "NLVR2 needs two images per example, the batch has {}",
                batch.images.len()
            )));
        };
        let pooled = net
            .encoder
            .encode_pair(left, right, &batch.text()?.batch(), train)?;
        Ok(self.head.forward(&pooled))
    }
}

impl Task for Nlvr2 {
    fn items(&self, examples: &Examples) -> Result<Vec<Item>> {
        let Examples::Nlvr2(examples) = examples else {
            return Err(TrainError::Invalid("not an NLVR2 split".into()));
        };
        Ok(examples
            .iter()
            .enumerate()
            .map(|(i, e)| Item {
                images: vec![e.left.clone(), e.right.clone()],
                texts: vec![e.sentence.clone()],
                target: Target::Class(usize::from(e.label)),
                group: i,
            })
            .collect())
    }

    fn loss(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        class_loss(self.logits(net, batch, train)?, batch)
    }

    fn evaluate(&self, net: &Net, data: &EvalData, examples: &Examples) -> Result<Evaluated> {
        accuracy(data, self.items(examples)?, |batch| {
            self.logits(net, batch, false)
        })
    }
}
