//! Semantic segmentation: a class for every pixel (the synthetic suite's `segmentation`;
//! PASCAL VOC / ADE20K-style image and mask folders).
//!
//! Input: image only (vision experts in every layer). Head: [`SegHead`] under
//! `heads.segmentation`: one linear map per patch token to C class logits (C = the training
//! split's `classes.txt`), bilinearly upsampled to the image, [B, C, H, W]. Loss: the mean
//! per-pixel cross-entropy over the pixels whose label is not ignored (mask value 255, which
//! the collator maps to −100), with P the set of such pixels:
//!   L = (1 / |P|) Σ_{p ∈ P} −log softmax(z_p)_{y_p}.
//! Prediction: the arg-max class of each pixel. Scores (`data::score::segment`, summed over
//! every pixel of the split): `miou`, the mean over the classes present in the labels or the
//! predictions of IoU_c = TP / (TP + FP + FN) (FCN, arXiv 1411.4038), and `pixel_accuracy`,
//! the share of counted pixels predicted right. Neither is a mean over images, so neither has
//! per-item values. The head is SETR's naive decoder (arXiv 2012.15840) reduced to one
//! linear layer.
//!
//! Deviation: BEiT / VLMo-style models segment with a UperNet decoder on multi-scale
//! features; here one linear layer on the last layer's patch tokens. Images and masks are not
//! resized or cropped: a mask must already have the model's image size (the loader refuses
//! others). A batch with every pixel ignored has an undefined (NaN) loss. An evaluation split
//! must have the training split's classes, in the same order.

use mmerge_data::score::Confusion;
use mmerge_data::score::segment::IGNORE;
use mmerge_data::suite::{Examples, TaskKind};
use mmerge_models::heads::SegHead;
use tch::Tensor;

use super::{Evaluated, InputKind, Task, TaskData, TaskDef, same_classes};
use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Item, ModelBatch, Target, Targets};
use crate::net::Net;

pub const TASK: TaskDef = TaskDef {
    kind: TaskKind::Segmentation,
    input: InputKind::Image,
    loss: "mean per-pixel cross-entropy over the pixels not ignored (label −100)",
    scores: &["miou", "pixel_accuracy"],
    build,
    source: include_str!("segmentation.rs"),
};

#[derive(Debug)]
struct Segmentation {
    head: SegHead,
    classes: Vec<String>,
}

fn build(net: &mut Net, data: &TaskData<'_>) -> Result<Box<dyn Task>> {
    let Examples::Segmentation(split) = data.train else {
        return Err(TrainError::Invalid(format!(
            "task `{}` is not a segmentation task",
            data.name
        )));
    };
    if split.classes.is_empty() || split.classes.len() >= usize::from(IGNORE) {
        return Err(TrainError::Invalid(format!(
            "task `{}`: {} segmentation classes, need 1 to {}",
            data.name,
            split.classes.len(),
            IGNORE - 1
        )));
    }
    let cfg = net.config().clone();
    let head = SegHead::new(
        &(net.heads() / TaskKind::Segmentation.name()),
        &cfg,
        split.classes.len() as i64,
    );
    Ok(Box::new(Segmentation {
        head,
        classes: split.classes.clone(),
    }))
}

impl Segmentation {
    fn masks<'a>(&self, batch: &'a ModelBatch) -> Result<&'a Tensor> {
        match &batch.targets {
            Targets::Mask(m) => Ok(m),
            _ => Err(TrainError::Invalid(
                "a segmentation batch without masks".into(),
            )),
        }
    }
}

impl Task for Segmentation {
    fn items(&self, examples: &Examples) -> Result<Vec<Item>> {
        let Examples::Segmentation(split) = examples else {
            return Err(TrainError::Invalid("not a segmentation split".into()));
        };
        same_classes("segmentation", &self.classes, &split.classes)?;
        Ok(split
            .examples
            .iter()
            .enumerate()
            .map(|(i, e)| Item {
                images: vec![e.image.clone()],
                texts: vec![],
                target: Target::MaskFile {
                    path: e.mask.clone(),
                    classes: self.classes.len(),
                },
                group: i,
            })
            .collect())
    }

    fn loss(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        let masks = self.masks(batch)?;
        let h = net.encoder.encode_image(batch.image()?, train)?;
        Ok(self.head.loss(&h, masks))
    }

    fn evaluate(&self, net: &Net, data: &EvalData, examples: &Examples) -> Result<Evaluated> {
        let mut confusion = Confusion::new(self.classes.len())?;
        data.for_each(self.items(examples)?, 0, |batch| {
            let h = net.encoder.encode_image(batch.image()?, false)?;
            let pred = self.head.forward(&h).argmax(1, false);
            let (pred, labels) = mask_bytes(&pred, self.masks(&batch)?)?;
            confusion.add(&pred, &labels)?;
            Ok(())
        })?;
        let mut e = Evaluated::default();
        e.insert_score("miou", confusion.mean_iou());
        e.insert_score("pixel_accuracy", confusion.pixel_accuracy());
        Ok(e)
    }
}

/// Predicted and true class maps as the bytes `Confusion::add` counts: −100 labels become
/// `IGNORE`.
fn mask_bytes(pred: &Tensor, labels: &Tensor) -> Result<(Vec<u8>, Vec<u8>)> {
    let to_vec = |t: &Tensor| -> Result<Vec<i64>> {
        Ok(Vec::try_from(t.to_device(tch::Device::Cpu).flatten(0, -1))?)
    };
    let byte = |v: i64| u8::try_from(v).unwrap_or(IGNORE);
    let pred = to_vec(pred)?.into_iter().map(byte).collect();
    let labels = to_vec(labels)?
        .into_iter()
        .map(|l| if l < 0 { IGNORE } else { byte(l) })
        .collect();
    Ok((pred, labels))
}
