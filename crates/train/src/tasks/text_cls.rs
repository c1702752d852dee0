//! Text classification: the label of a sentence (the synthetic suite's `caption_colour` and
//! `caption_count`; GLUE-style single-sentence tasks such as SST-2).
//!
//! Input: text only (text experts in every layer). Head: [`Classifier`] on the first token
//! ([CLS]) of the text encoding, hidden → C labels (the training split's label list), under
//! `heads.text_cls`. Loss: the mean cross-entropy of the logits z against the labels y,
//!   L = mean_b [ −log softmax(z_b)_{y_b} ].
//! Prediction: the arg-max label. Score `accuracy`: #{b : ŷ_b = y_b} / n over the split
//! (`data::score::classify`; per-item value: 1 if right, else 0). BERT's fine-tuning recipe
//! (arXiv 1810.04805): a classifier on the [CLS] token.
//!
//! Deviation: BERT classifies the pooled [CLS] (a dense tanh pooler, then one linear layer);
//! here the shared [`Classifier`] (dense 2D, GELU, layer norm, output) reads the [CLS] token
//! directly. Texts longer than the model's positions are truncated. An evaluation split must
//! have the training split's labels, in the same order.

use mmerge_data::suite::{Examples, TaskKind};
use mmerge_models::heads::Classifier;
use tch::Tensor;

use super::{Evaluated, InputKind, Task, TaskData, TaskDef, accuracy, class_loss, same_classes};
use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Item, ModelBatch, Target};
use crate::net::Net;

pub const TASK: TaskDef = TaskDef {
    kind: TaskKind::TextCls,
    input: InputKind::Text,
    loss: "mean cross-entropy of the first-token logits against the labels",
    scores: &["accuracy"],
    build,
    source: include_str!("text_cls.rs"),
};

#[derive(Debug)]
struct TextCls {
    head: Classifier,
    labels: Vec<String>,
}

fn build(net: &mut Net, data: &TaskData<'_>) -> Result<Box<dyn Task>> {
    let Examples::TextCls(split) = data.train else {
        return Err(TrainError::Invalid(format!(
            "task `{}` is not a text classification task",
            data.name
        )));
    };
    let cfg = net.config().clone();
    let head = Classifier::new(
        &(net.heads() / TaskKind::TextCls.name()),
        cfg.hidden_size,
        split.labels.len() as i64,
        cfg.layer_norm_eps,
    );
    Ok(Box::new(TextCls {
        head,
        labels: split.labels.clone(),
    }))
}

impl TextCls {
    /// Label logits [B, C].
    fn logits(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        let h = net.encoder.encode_text(&batch.text()?.batch(), train)?;
        Ok(self.head.forward(&h.select(1, 0)))
    }
}

impl Task for TextCls {
    fn items(&self, examples: &Examples) -> Result<Vec<Item>> {
        let Examples::TextCls(split) = examples else {
            return Err(TrainError::Invalid(
                "not a text classification split".into(),
            ));
        };
        same_classes("text classification", &self.labels, &split.labels)?;
        Ok(split
            .examples
            .iter()
            .enumerate()
            .map(|(i, e)| Item {
                images: vec![],
                texts: vec![e.text.clone()],
                target: Target::Class(e.label),
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
