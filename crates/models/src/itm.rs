//! Image-text matching (ITM) with hard negatives mined from the ITC similarities.
//!
//! Source: ALBEF (Li et al., arXiv 2107.07651, §3.2). For a batch of B matching pairs and the
//! image→text contrastive similarities s[i, j] (image i, text j, already divided by the
//! temperature), each image i gets one negative text drawn with
//! P(j | i) = exp(s[i, j]) / Σ_{k ∉ pos(i)} exp(s[i, k]) over the texts k that are not positives
//! for it, and each text j one negative image drawn column-wise with
//! P(i | j) = exp(s[i, j]) / Σ_{k ∉ pos(j)} exp(s[k, j]). The ITM head classifies the 3B fused
//! pairs (B positives, then B image-with-negative-text, then B negative-image-with-text) as
//! matched (1) or not (0); the loss is the mean cross-entropy
//! L = −(1/3B) Σ_r log softmax(z_r)[y_r].
//!
//! Our deviations from ALBEF's code:
//! - Positives are the diagonal **and** shared captions (the caller's mask): a text that also
//!   describes image i is never its negative (ALBEF's pre-training only zeroes the diagonal).
//! - ALBEF adds 1e-4 to every weight before `torch.multinomial`; we sample the exact softmax
//!   over the non-positives, so a negative whose weight underflows is never drawn. A row with
//!   no non-positive at all is an error naming the row ([`ItmError::NoNegative`]).
//! - The draws do not use libtorch's RNG: one SplitMix64 stream per (seed, step)
//!   (`mmerge_core::hash`), inverse CDF in float64, images' rows first, then texts' columns.
//!   The same (seed, step) and similarities give the same negatives on any device or thread
//!   count.
//! - The ITM score is read from the first token of the fused `[text; image]` sequence (the
//!   text's class token), as ALBEF reads its fusion encoder's [CLS].

use mmerge_core::hash::{GOLDEN_GAMMA, SplitMix64, fnv1a, splitmix64, unit_f64};
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::heads::Classifier;
use crate::multiway::{MultiwayTransformer, TextBatch};

/// Which side of the batch a mined negative is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A row of the similarities: a negative text for an image.
    Image,
    /// A column of the similarities: a negative image for a text.
    Text,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Image => "image",
            Side::Text => "text",
        })
    }
}

/// Errors of hard-negative mining and the ITM forward pass.
#[derive(Debug, thiserror::Error)]
pub enum ItmError {
    /// Every candidate of this image (or text) is a positive: nothing to draw a negative from.
    #[error("{side} {index} has no negative: every candidate in the batch is a positive for it")]
    NoNegative { side: Side, index: usize },
    /// Similarities or mask that are not one B×B batch.
    #[error("bad ITM input: {0}")]
    Shape(String),
    /// A similarity that is NaN or infinite.
    #[error("similarity [{row}, {col}] is {value}, not finite")]
    NotFinite { row: usize, col: usize, value: f64 },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Draws one negative text per image and one negative image per text (see the module docs).
///
/// `sim` is the B×B image→text similarity (row = image, column = text;
/// [`crate::heads::ItcHead::logits`] is text×image, so pass its transpose). `positive[i][j]`
/// is true where text j is a positive for image i; the diagonal is a positive whatever the
/// mask says. Returns
/// (negative text of each image, negative image of each text).
pub fn mine_hard_negatives(
    sim: &Tensor,
    positive: &[Vec<bool>],
    seed: u64,
    step: u64,
) -> Result<(Vec<i64>, Vec<i64>), ItmError> {
    let size = sim.size();
    if size.len() != 2 || size[0] != size[1] {
        return Err(ItmError::Shape(format!(
            "similarities must be B×B, got {size:?}"
        )));
    }
    let b = size[0] as usize;
    if positive.len() != b || positive.iter().any(|r| r.len() != b) {
        return Err(ItmError::Shape(format!(
            "the positive mask must be {b}×{b} like the similarities"
        )));
    }
    let s: Vec<f64> = Vec::try_from(
        sim.detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .contiguous()
            .view([-1]),
    )?;
    if let Some(k) = s.iter().position(|v| !v.is_finite()) {
        return Err(ItmError::NotFinite {
            row: k / b,
            col: k % b,
            value: s[k],
        });
    }
    let is_pos = |i: usize, j: usize| i == j || positive[i][j];
    let mut rng = SplitMix64::new(splitmix64(
        seed ^ fnv1a(b"itm-hard-negatives") ^ step.wrapping_mul(GOLDEN_GAMMA),
    ));
    // Images' rows first, then texts' columns, from the one stream.
    let text_for_image = mine_side(Side::Image, b, &s, &is_pos, &mut rng)?;
    let image_for_text = mine_side(Side::Text, b, &s, &is_pos, &mut rng)?;
    Ok((text_for_image, image_for_text))
}

/// One negative per anchor of `side`: the rows (images) or the columns (texts) of the
/// row-major B×B similarities `s`.
fn mine_side(
    side: Side,
    b: usize,
    s: &[f64],
    is_pos: &dyn Fn(usize, usize) -> bool,
    rng: &mut SplitMix64,
) -> Result<Vec<i64>, ItmError> {
    (0..b)
        .map(|a| {
            // (image, text) of anchor a and candidate k.
            let cell = |k: usize| match side {
                Side::Image => (a, k),
                Side::Text => (k, a),
            };
            let cands: Vec<(usize, f64)> = (0..b)
                .filter(|&k| {
                    let (i, j) = cell(k);
                    !is_pos(i, j)
                })
                .map(|k| {
                    let (i, j) = cell(k);
                    (k, s[i * b + j])
                })
                .collect();
            draw(&cands, rng)
                .map(|k| k as i64)
                .ok_or(ItmError::NoNegative { side, index: a })
        })
        .collect()
}

/// One draw ∝ exp(score) among `cands` by inverse CDF in float64; `None` when empty.
fn draw(cands: &[(usize, f64)], rng: &mut SplitMix64) -> Option<usize> {
    let max = cands.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = cands.iter().map(|c| (c.1 - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let u = unit_f64(rng.next_u64()) * total;
    let mut acc = 0.0;
    for (c, w) in cands.iter().zip(&weights) {
        acc += w;
        if u < acc {
            return Some(c.0);
        }
    }
    // Rounding left u at the top of the CDF: the last candidate with a non-zero weight.
    cands
        .iter()
        .zip(&weights)
        .rev()
        .find(|(_, w)| **w > 0.0)
        .map(|(c, _)| c.0)
}

/// The 3B fused pairs as (image index, text index): B positives (i, i), then each image with its
/// negative text, then each text with its negative image.
pub fn itm_pairs(text_for_image: &[i64], image_for_text: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let b = text_for_image.len() as i64;
    let mut images: Vec<i64> = (0..b).collect();
    let mut texts: Vec<i64> = (0..b).collect();
    images.extend(0..b);
    texts.extend_from_slice(text_for_image);
    images.extend_from_slice(image_for_text);
    texts.extend(0..image_for_text.len() as i64);
    (images, texts)
}

/// The labels of the 3B pairs of [`itm_pairs`]: 1 (matched) for the first B, 0 for the 2B
/// negatives.
pub fn itm_labels(b: i64, device: Device) -> Tensor {
    Tensor::cat(
        &[
            Tensor::ones([b], (Kind::Int64, device)),
            Tensor::zeros([2 * b], (Kind::Int64, device)),
        ],
        0,
    )
}

/// Mean cross-entropy of ITM logits [3B, 2] (rows in the order of [`itm_pairs`]) against
/// [`itm_labels`].
pub fn itm_loss(logits: &Tensor) -> Result<Tensor, ItmError> {
    let size = logits.size();
    if size.len() != 2 || size[1] != 2 || size[0] % 3 != 0 || size[0] == 0 {
        return Err(ItmError::Shape(format!(
            "ITM logits must be [3B, 2], got {size:?}"
        )));
    }
    let labels = itm_labels(size[0] / 3, logits.device());
    Ok(logits.cross_entropy_for_logits(&labels))
}

/// ITM logits [3B, 2] of a batch of B matching (image, text) pairs and its mined negatives:
/// the 3B pairs of [`itm_pairs`] fused by the model, the first token through `head` (2 classes).
pub fn itm_logits(
    model: &MultiwayTransformer,
    head: &Classifier,
    pixels: &Tensor,
    text: &TextBatch<'_>,
    text_for_image: &[i64],
    image_for_text: &[i64],
    train: bool,
) -> Result<Tensor, ItmError> {
    let b = pixels.size().first().copied().unwrap_or(0);
    if text_for_image.len() as i64 != b || image_for_text.len() as i64 != b {
        return Err(ItmError::Shape(format!(
            "{b} images but {} and {} negatives",
            text_for_image.len(),
            image_for_text.len()
        )));
    }
    if let Some(&k) = text_for_image
        .iter()
        .chain(image_for_text)
        .find(|&&k| !(0..b).contains(&k))
    {
        return Err(ItmError::Shape(format!(
            "negative index {k} is outside the batch of {b}"
        )));
    }
    let (images, texts) = itm_pairs(text_for_image, image_for_text);
    let dev = pixels.device();
    let images = Tensor::from_slice(&images).to_device(dev);
    let texts = Tensor::from_slice(&texts).to_device(text.ids.device());
    let px = pixels.index_select(0, &images);
    let ids = text.ids.index_select(0, &texts);
    let mask = text.mask.index_select(0, &texts);
    let (h, _) = model.encode_image_text(
        &px,
        &TextBatch {
            ids: &ids,
            mask: &mask,
        },
        1,
        train,
    )?;
    Ok(head.forward(&h.select(1, 0)))
}
