//! From examples to the one input type the model consumes.
//!
//! A task turns its split into [`Item`]s (image references, a text, a target). The loader's
//! threads decode each item into a [`Sample`] (pixels normalised to `[3, S, S]`, the mask of
//! a segmentation item decoded); the consumer thread collates a batch of samples into a
//! [`ModelBatch`]: stacked pixels, tokenised text (padded to the longest text of the batch,
//! truncated at the model's `max_position_embeddings`) and stacked targets. [`Input`] is the
//! view the model runs on: image, text, image-text or image-pair-text.

use std::path::PathBuf;
use std::sync::Arc;

use mmerge_data::batch::{Batch, LoadFn};
use mmerge_data::formats::segmentation::{IGNORE, load_mask};
use mmerge_data::image::ImageRef;
use mmerge_data::tokenize::{Padding, Tokenizer};
use mmerge_data::transform::ImageTransform;
use mmerge_models::TextBatch;
use rand::Rng;
use tch::{Device, Tensor};

use crate::error::{Result, TrainError};

/// What an item is scored against.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Nothing (pre-training pairs; retrieval evaluation).
    None,
    /// A class index.
    Class(usize),
    /// VQA soft scores: (answer index, score in (0, 1]).
    Soft(Vec<(usize, f32)>),
    /// A segmentation mask file of `classes` classes.
    MaskFile { path: PathBuf, classes: usize },
}

/// One example as a task hands it to the loader.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 0, 1 or 2 images.
    pub images: Vec<ImageRef>,
    /// No text, one, or several alternatives (an image's captions during pre-training): the
    /// loader picks one per epoch with the item's own seeded generator.
    pub texts: Vec<String>,
    pub target: Target,
    /// The item's group: the image index of a caption (retrieval and pre-training pairs,
    /// so that shared captions can count as positives), else the item's own index.
    pub group: usize,
}

/// A decoded target.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleTarget {
    None,
    Class(usize),
    Soft(Vec<(usize, f32)>),
    /// Row-major class indices, `IGNORE` mapped to −100.
    Mask(Vec<i64>),
}

/// One decoded item.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub pixels: Vec<Vec<f32>>,
    pub text: Option<String>,
    pub target: SampleTarget,
    pub group: usize,
}

/// The load function of the loader: decodes images through `transform` (with the item's
/// own seeded generator for augmentation) and segmentation masks.
pub fn decoder(transform: ImageTransform) -> Arc<LoadFn<Item, Sample>> {
    Arc::new(move |item: &Item, rng| {
        let pixels = item
            .images
            .iter()
            .map(|im| transform.apply(&im.load_rgb()?, rng))
            .collect::<mmerge_data::Result<Vec<_>>>()?;
        let text = match item.texts.as_slice() {
            [] => None,
            [t] => Some(t.clone()),
            many => Some(many[rng.random_range(0..many.len())].clone()),
        };
        let target = match &item.target {
            Target::None => SampleTarget::None,
            Target::Class(c) => SampleTarget::Class(*c),
            Target::Soft(s) => SampleTarget::Soft(s.clone()),
            Target::MaskFile { path, classes } => {
                let m = load_mask(path, *classes)?;
                let side = transform.size;
                if m.width != side || m.height != side {
                    return Err(mmerge_data::DataError::Shape {
                        what: "segmentation mask",
                        reason: format!(
                            "{}: {}x{}, the model's images are {side}x{side} (masks are not resized)",
                            path.display(),
                            m.width,
                            m.height
                        ),
                    });
                }
                SampleTarget::Mask(
                    m.data
                        .iter()
                        .map(|&l| if l == IGNORE { -100 } else { i64::from(l) })
                        .collect(),
                )
            }
        };
        Ok(Sample {
            pixels,
            text,
            target,
            group: item.group,
        })
    })
}

/// Token ids and attention mask [B, T] on the model's device.
#[derive(Debug)]
pub struct Text {
    pub ids: Tensor,
    pub mask: Tensor,
}

impl Text {
    /// The model crate's view.
    pub fn batch(&self) -> TextBatch<'_> {
        TextBatch {
            ids: &self.ids,
            mask: &self.mask,
        }
    }
}

/// Targets of a batch.
#[derive(Debug)]
pub enum Targets {
    None,
    /// [B] i64.
    Class(Tensor),
    /// [B, K] f32 soft scores.
    Soft(Tensor),
    /// [B, H, W] i64 (−100 ignored).
    Mask(Tensor),
}

/// A collated batch.
#[derive(Debug)]
pub struct ModelBatch {
    /// One [B, 3, S, S] tensor per image slot (0, 1 or 2).
    pub images: Vec<Tensor>,
    pub text: Option<Text>,
    /// The texts before tokenisation (empty without text).
    pub texts: Vec<String>,
    pub targets: Targets,
    /// Each example's group (see [`Item::group`]).
    pub groups: Vec<usize>,
    /// Each example's index in the item list.
    pub indices: Vec<usize>,
}

/// The four inputs the model consumes.
#[derive(Debug)]
pub enum Input<'a> {
    Image(&'a Tensor),
    Text(&'a Text),
    ImageText(&'a Tensor, &'a Text),
    ImagePairText(&'a Tensor, &'a Tensor, &'a Text),
}

impl ModelBatch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The batch as a model input: whatever it holds (images and/or text).
    pub fn input(&self) -> Result<Input<'_>> {
        match (self.images.as_slice(), &self.text) {
            ([im], None) => Ok(Input::Image(im)),
            ([], Some(t)) => Ok(Input::Text(t)),
            ([im], Some(t)) => Ok(Input::ImageText(im, t)),
            ([l, r], Some(t)) => Ok(Input::ImagePairText(l, r, t)),
            (ims, t) => Err(TrainError::Invalid(format!(
                "a batch of {} images per example {} text is not a model input",
                ims.len(),
                if t.is_some() { "with" } else { "without" }
            ))),
        }
    }

    /// The pixels of the only image slot.
    pub fn image(&self) -> Result<&Tensor> {
        match self.images.as_slice() {
            [im] => Ok(im),
            ims => Err(TrainError::Invalid(format!(
                "expected one image per example, the batch has {}",
                ims.len()
            ))),
        }
    }

    /// The text.
    pub fn text(&self) -> Result<&Text> {
        self.text
            .as_ref()
            .ok_or_else(|| TrainError::Invalid("the batch has no text".into()))
    }

    /// Class indices [B].
    pub fn classes(&self) -> Result<&Tensor> {
        match &self.targets {
            Targets::Class(t) => Ok(t),
            _ => Err(TrainError::Invalid("the batch has no class targets".into())),
        }
    }
}

/// Turns batches of samples into [`ModelBatch`]es.
#[derive(Debug, Clone)]
pub struct Collator {
    pub tokenizer: Tokenizer,
    /// Texts are truncated to this many tokens (the model's `max_position_embeddings`).
    pub max_len: usize,
    /// Image side length.
    pub image_size: usize,
    /// Soft-target width (VQA answers); 0 when the task has none.
    pub soft_classes: usize,
    pub device: Device,
}

impl Collator {
    /// Collates one batch. Every sample must have the same number of images and either all
    /// or none a text.
    pub fn collate(&self, batch: Batch<Sample>) -> Result<ModelBatch> {
        let Batch { indices, examples } = batch;
        let b = examples.len();
        let first = examples
            .first()
            .ok_or_else(|| TrainError::Invalid("an empty batch".into()))?;
        let slots = first.pixels.len();
        let with_text = first.text.is_some();
        if let Some(k) = examples
            .iter()
            .position(|s| s.pixels.len() != slots || s.text.is_some() != with_text)
        {
            return Err(TrainError::Invalid(format!(
                "example {} of the batch differs from the first in images or text",
                indices.get(k).copied().unwrap_or(k)
            )));
        }
        let side = self.image_size as i64;
        let images = (0..slots)
            .map(|slot| {
                let mut flat = Vec::with_capacity(b * 3 * (side * side) as usize);
                for s in &examples {
                    flat.extend_from_slice(&s.pixels[slot]);
                }
                Tensor::from_slice(&flat)
                    .view([b as i64, 3, side, side])
                    .to_device(self.device)
            })
            .collect();
        let texts: Vec<String> = examples.iter().filter_map(|s| s.text.clone()).collect();
        let text = if with_text {
            let tb = self
                .tokenizer
                .encode_batch(&texts, self.max_len, Padding::Longest)?;
            let shape = [tb.batch as i64, tb.len as i64];
            Some(Text {
                ids: Tensor::from_slice(&tb.ids)
                    .view(shape)
                    .to_device(self.device),
                mask: Tensor::from_slice(&tb.mask)
                    .view(shape)
                    .to_device(self.device),
            })
        } else {
            None
        };
        let targets = self.targets(&examples, side)?;
        Ok(ModelBatch {
            images,
            text,
            texts,
            targets,
            groups: examples.iter().map(|s| s.group).collect(),
            indices,
        })
    }

    fn targets(&self, examples: &[Sample], side: i64) -> Result<Targets> {
        let b = examples.len() as i64;
        let mixed = || TrainError::Invalid("a batch mixes kinds of targets".into());
        Ok(match &examples[0].target {
            SampleTarget::None => Targets::None,
            SampleTarget::Class(_) => {
                let v = examples
                    .iter()
                    .map(|s| match s.target {
                        SampleTarget::Class(c) => Ok(c as i64),
                        _ => Err(mixed()),
                    })
                    .collect::<Result<Vec<i64>>>()?;
                Targets::Class(Tensor::from_slice(&v).to_device(self.device))
            }
            SampleTarget::Soft(_) => {
                let k = self.soft_classes;
                let mut v = vec![0f32; examples.len() * k];
                for (r, s) in examples.iter().enumerate() {
                    let SampleTarget::Soft(pairs) = &s.target else {
                        return Err(mixed());
                    };
                    for &(i, score) in pairs {
                        if i >= k {
                            return Err(TrainError::Invalid(format!(
                                "answer index {i} is outside the {k} answers"
                            )));
                        }
                        v[r * k + i] = score;
                    }
                }
                Targets::Soft(
                    Tensor::from_slice(&v)
                        .view([b, k as i64])
                        .to_device(self.device),
                )
            }
            SampleTarget::Mask(_) => {
                let mut v = Vec::with_capacity(examples.len() * (side * side) as usize);
                for s in examples {
                    let SampleTarget::Mask(m) = &s.target else {
                        return Err(mixed());
                    };
                    v.extend_from_slice(m);
                }
                Targets::Mask(
                    Tensor::from_slice(&v)
                        .view([b, side, side])
                        .to_device(self.device),
                )
            }
        })
    }
}
