//! Pre-training objectives: one registry, one module per objective, mixed with a weight each.
//!
//! Pre-training reads image-caption pairs (a suite's retrieval task: each image with one of
//! its captions per epoch). Every objective computes its loss on the same batch; the step's
//! loss is Σ_k w_k L_k. Encodings that several objectives use (the image-only and text-only
//! passes, the ITC similarities that ITM mines its negatives from) are computed once per step
//! in a [`StepCache`], as is the masked text that both MLM objectives read. Without dropout
//! (and always in evaluation) the layers below the VL split are shared too: the batch's images
//! and texts go through the vision and text experts of those layers once, and the image-only
//! and text-only passes, ITM's 3B fused pairs and MLM's fused pass continue from there (the
//! same function as encoding each pass from its inputs, a third less encoder work on the
//! `small` preset's ITC + ITM + MLM step). Adding an
//! objective is one module and one line in [`OBJECTIVES`]; `tests/objectives.rs` fails for an
//! entry without a module doc stating its formula, its paper (arXiv id) and its deviations.
//!
//! Every random choice (masked tokens and patches, hard negatives) is drawn from a
//! SplitMix64 stream (`mmerge_core::hash`) of (seed, step, objective, row), never from
//! libtorch's generator: the same [`StepCache`] gives the same loss on any device or thread
//! count, and a held-out loss can be compared between models.

use std::cell::OnceCell;

use mmerge_core::hash::{GOLDEN_GAMMA, SplitMix64, fnv1a, splitmix64, unit_f64};
use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};
use crate::input::ModelBatch;
use crate::net::Net;

pub mod itc;
pub mod itm;
pub mod mim;
pub mod mlm;
pub mod text_mlm;

/// A registered objective.
#[derive(Debug)]
pub struct ObjectiveDef {
    pub name: &'static str,
    /// The formula, one line.
    pub formula: &'static str,
    /// Creates the heads it needs (under `heads.*`) and the objective.
    pub build: fn(&mut Net) -> Result<Box<dyn Objective>>,
    /// The module's source, for the registry test's documentation check.
    pub source: &'static str,
}

/// An objective bound to a network's heads.
pub trait Objective: std::fmt::Debug {
    /// The loss of a batch of pairs.
    fn loss(&self, net: &Net, batch: &ModelBatch, cache: &StepCache) -> Result<Tensor>;
}

/// The registry: one line per objective.
pub static OBJECTIVES: &[ObjectiveDef] = &[
    itc::OBJECTIVE,
    itm::OBJECTIVE,
    mlm::OBJECTIVE,
    text_mlm::OBJECTIVE,
    mim::OBJECTIVE,
];

/// BERT's masking share, the default of [`StepCache::mask_prob`].
pub const DEFAULT_MASK_PROB: f64 = 0.15;
/// SimMIM's masking ratio for ViT, the default of [`StepCache::mim_ratio`].
pub const DEFAULT_MIM_RATIO: f64 = 0.4;

/// The objective called `name`.
pub fn objective_def(name: &str) -> Result<&'static ObjectiveDef> {
    OBJECTIVES
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| TrainError::Unknown {
            what: "objective",
            name: name.to_string(),
            valid: OBJECTIVES
                .iter()
                .map(|o| o.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Per-step context shared by the objectives of one step: the seed and step (for masking and
/// negative sampling, so both are functions of (seed, step)), whether this is training, and
/// the encodings computed at most once.
///
/// The trainer sets `mask_prob` and `mim_ratio` from the recipe (the defaults are
/// [`DEFAULT_MASK_PROB`] and [`DEFAULT_MIM_RATIO`]) before the first loss of the step.
#[derive(Debug)]
pub struct StepCache {
    pub seed: u64,
    pub step: u64,
    pub train: bool,
    /// The share of word tokens the MLM objectives mask, in (0, 1).
    pub mask_prob: f64,
    /// The share of patches MIM masks, in (0, 1).
    pub mim_ratio: f64,
    /// Targets drawn from the model's own predictive distribution instead of the data's (a
    /// Fisher "with labels sampled from the model", arXiv 2310.12808): see
    /// [`StepCache::cross_entropy`] and MIM's Gaussian targets.
    pub sampled_targets: bool,
    image: OnceCell<Tensor>,
    text: OnceCell<Tensor>,
    image_lower: OnceCell<Tensor>,
    text_lower: OnceCell<Tensor>,
    masked_text: OnceCell<(Tensor, Tensor)>,
}

impl StepCache {
    pub fn new(seed: u64, step: u64, train: bool) -> Self {
        StepCache {
            seed,
            step,
            train,
            mask_prob: DEFAULT_MASK_PROB,
            mim_ratio: DEFAULT_MIM_RATIO,
            sampled_targets: false,
            image: OnceCell::new(),
            text: OnceCell::new(),
            image_lower: OnceCell::new(),
            text_lower: OnceCell::new(),
            masked_text: OnceCell::new(),
        }
    }

    /// The batch's token ids with BERT masking applied and the MLM labels (both [B, T] i64
    /// on the text's device, labels −100 where not masked): [`mlm::mask_tokens`] with this
    /// step's seed, step and `mask_prob`. Both MLM objectives of a step read the same masking.
    pub fn masked_text(&self, net: &Net, batch: &ModelBatch) -> Result<&(Tensor, Tensor)> {
        if let Some(t) = self.masked_text.get() {
            return Ok(t);
        }
        if !(self.mask_prob > 0.0 && self.mask_prob < 1.0) {
            return Err(TrainError::Invalid(format!(
                "mask_prob must be in (0, 1), got {}",
                self.mask_prob
            )));
        }
        let text = batch.text()?;
        let t = mlm::masked_batch(
            text,
            self.mask_prob,
            net.config().vocab_size,
            self.seed,
            self.step,
        )?;
        Ok(self.masked_text.get_or_init(|| t))
    }

    /// Whether the passes of this step share the layers below the VL split (see
    /// [`StepCache::image_lower`]): always in evaluation, in training when the model has no
    /// dropout (with dropout, each pass draws its own masks, so sharing would change the
    /// step).
    pub fn shares_lower(&self, net: &Net) -> bool {
        let c = net.config();
        !self.train || (c.hidden_dropout_prob == 0.0 && c.attention_probs_dropout_prob == 0.0)
    }

    /// The layers below the VL split of the image-only pass, [B, 1+N, D] (vision experts,
    /// token type 1): computed once per step and shared by the image-only pass and every
    /// fused pass of the batch's images (ITM's pairs, MLM), when
    /// [`StepCache::shares_lower`]. The same values as each pass computing them itself
    /// (`MultiwayTransformer::image_lower`), and the same gradients (summed over the passes).
    pub fn image_lower(&self, net: &Net, batch: &ModelBatch) -> Result<&Tensor> {
        if let Some(t) = self.image_lower.get() {
            return Ok(t);
        }
        let t = net.encoder.image_lower(batch.image()?, 1, self.train)?;
        Ok(self.image_lower.get_or_init(|| t))
    }

    /// The layers below the VL split of the text-only pass of the unmasked text, [B, T, D]
    /// (text experts), shared as [`StepCache::image_lower`] (ITM's fused pairs).
    pub fn text_lower(&self, net: &Net, batch: &ModelBatch) -> Result<&Tensor> {
        if let Some(t) = self.text_lower.get() {
            return Ok(t);
        }
        let t = net.encoder.text_lower(&batch.text()?.batch(), self.train)?;
        Ok(self.text_lower.get_or_init(|| t))
    }

    /// The image-only encoding [B, 1+N, D] (vision experts).
    pub fn image(&self, net: &Net, batch: &ModelBatch) -> Result<&Tensor> {
        if let Some(t) = self.image.get() {
            return Ok(t);
        }
        let t = if self.shares_lower(net) {
            let lower = self.image_lower(net, batch)?.shallow_clone();
            net.encoder.image_upper(lower, self.train)
        } else {
            net.encoder.encode_image(batch.image()?, self.train)?
        };
        Ok(self.image.get_or_init(|| t))
    }

    /// The text-only encoding [B, T, D] (text experts) of the unmasked text.
    pub fn text(&self, net: &Net, batch: &ModelBatch) -> Result<&Tensor> {
        if let Some(t) = self.text.get() {
            return Ok(t);
        }
        let t = if self.shares_lower(net) {
            let lower = self.text_lower(net, batch)?.shallow_clone();
            net.encoder
                .text_upper(lower, &batch.text()?.mask, self.train)
        } else {
            net.encoder
                .encode_text(&batch.text()?.batch(), self.train)?
        };
        Ok(self.text.get_or_init(|| t))
    }

    /// A SplitMix64 stream of (seed, step, `salt`) for sampled targets.
    fn sample_stream(&self, salt: &str) -> SplitMix64 {
        let s = self.seed ^ fnv1a(salt.as_bytes()) ^ self.step.wrapping_mul(GOLDEN_GAMMA);
        SplitMix64::new(splitmix64(s))
    }

    /// Mean cross-entropy of `logits` [N, C] against `target` [N], the data's labels; with
    /// `sampled_targets`, against labels drawn from the model's own softmax (detached), by
    /// inverse CDF with one uniform per row from a SplitMix64 stream of (seed, step, `salt`).
    pub fn cross_entropy(&self, logits: &Tensor, target: &Tensor, salt: &str) -> Tensor {
        if !self.sampled_targets {
            return logits.cross_entropy_for_logits(target);
        }
        let n = logits.size()[0];
        let mut rng = self.sample_stream(salt);
        let u: Vec<f32> = (0..n).map(|_| unit_f64(rng.next_u64()) as f32).collect();
        let u = Tensor::from_slice(&u)
            .to_device(logits.device())
            .unsqueeze(1);
        let cdf = logits
            .detach()
            .softmax(-1, Kind::Float)
            .cumsum(-1, Kind::Float);
        let classes = logits.size()[1];
        let sampled = cdf
            .lt_tensor(&u)
            .sum_dim_intlist(1, false, Kind::Int64)
            .clamp_max(classes - 1);
        logits.cross_entropy_for_logits(&sampled)
    }

    /// Standard normal noise of `shape` (Box–Muller on the stream of (seed, step, `salt`)), for
    /// regression targets sampled from a unit-variance Gaussian around the prediction.
    pub fn normal(&self, shape: &[i64], salt: &str, device: tch::Device) -> Tensor {
        let n: i64 = shape.iter().product();
        let mut rng = self.sample_stream(salt);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let u1 = unit_f64(rng.next_u64()).max(f64::MIN_POSITIVE);
                let u2 = unit_f64(rng.next_u64());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Tensor::from_slice(&v).view(shape).to_device(device)
    }
}
