//! Image classification: the class of a whole image (the synthetic suite's `shape_cls` and
//! `count_cls`; ImageNet-style folders).
//!
//! Input: image only (vision experts in every layer). Head: [`Classifier`] on the class token
//! of the image encoding, hidden → C classes (the training split's class list), under
//! `heads.image_cls`. Loss: the mean cross-entropy of the logits z against the labels y,
//!   L = mean_b [ −log softmax(z_b)_{y_b} ].
//! Prediction: the arg-max class. Score `accuracy`: #{b : ŷ_b = y_b} / n over the split
//! (`data::score::classify`; per-item value: 1 if right, else 0). The recipe of ViT / BEiT
//! fine-tuning (arXiv 2010.11929, 2106.08254): a linear-style head on the class token.
//!
//! Deviation: the head is the shared [`Classifier`] (dense 2D, GELU, layer norm, output)
//! rather than one linear layer, and the class token is used rather than mean pooling of the
//! patch tokens (BEiT's choice); no label smoothing, mixup or cutmix. An evaluation split
//! must have the training split's classes, in the same order.

use mmerge_data::suite::{Examples, TaskKind};
use mmerge_models::heads::Classifier;
use tch::Tensor;

use super::{Evaluated, InputKind, Task, TaskData, TaskDef, accuracy, class_loss, same_classes};
use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Item, ModelBatch, Target};
use crate::net::Net;

pub const TASK: TaskDef = TaskDef {
    kind: TaskKind::ImageCls,
    input: InputKind::Image,
    loss: "mean cross-entropy of the class-token logits against the labels",
    scores: &["accuracy"],
    build,
    source: include_str!("image_cls.rs"),
};

#[derive(Debug)]
struct ImageCls {
    head: Classifier,
    classes: Vec<String>,
}

fn build(net: &mut Net, data: &TaskData<'_>) -> Result<Box<dyn Task>> {
    let Examples::ImageCls(split) = data.train else {
        return Err(TrainError::Invalid(format!(
            "task `{}` is not an image classification task",
            data.name
        )));
    };
    let cfg = net.config().clone();
    let head = Classifier::new(
        &(net.heads() / TaskKind::ImageCls.name()),
        cfg.hidden_size,
        split.classes.len() as i64,
        cfg.layer_norm_eps,
    );
    Ok(Box::new(ImageCls {
        head,
        classes: split.classes.clone(),
    }))
}

impl ImageCls {
    /// Class logits [B, C].
    fn logits(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        let h = net.encoder.encode_image(batch.image()?, train)?;
        Ok(self.head.forward(&h.select(1, 0)))
    }
}

impl Task for ImageCls {
    fn items(&self, examples: &Examples) -> Result<Vec<Item>> {
        let Examples::ImageCls(split) = examples else {
            return Err(TrainError::Invalid(
                "not an image classification split".into(),
            ));
        };
        same_classes("image classification", &self.classes, &split.classes)?;
        Ok(split
            .examples
            .iter()
            .enumerate()
            .map(|(i, e)| Item {
                images: vec![e.image.clone()],
                texts: vec![],
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
