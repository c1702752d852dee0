//! Pre-training objectives: one registry, one module per objective, mixed with a weight each.
//!
//! Pre-training reads image-caption pairs (a suite's retrieval task: each image with one of
//! its captions per epoch). Every objective computes its loss on the same batch; the step's
//! loss is Σ_k w_k L_k. Encodings that several objectives use (the image-only and text-only
//! passes, the ITC similarities that ITM mines its negatives from) are computed once per step
//! in a [`StepCache`]. Adding an objective is one module and one line in [`OBJECTIVES`];
//! `tests/registry.rs` fails for an entry without a module doc stating its formula.

use std::cell::OnceCell;

use tch::Tensor;

use crate::error::{Result, TrainError};
use crate::input::ModelBatch;
use crate::net::Net;

pub mod itc;

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
pub static OBJECTIVES: &[ObjectiveDef] = &[itc::OBJECTIVE];

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
#[derive(Debug)]
pub struct StepCache {
    pub seed: u64,
    pub step: u64,
    pub train: bool,
    /// Share of text tokens MLM masks.
    pub mask_prob: f64,
    /// Share of patches MIM masks.
    pub mim_ratio: f64,
    image: OnceCell<Tensor>,
    text: OnceCell<Tensor>,
}

impl StepCache {
    pub fn new(seed: u64, step: u64, train: bool) -> Self {
        StepCache {
            seed,
            step,
            train,
            mask_prob: 0.15,
            mim_ratio: 0.4,
            image: OnceCell::new(),
            text: OnceCell::new(),
        }
    }

    /// The image-only encoding [B, 1+N, D] (vision experts).
    pub fn image(&self, net: &Net, batch: &ModelBatch) -> Result<&Tensor> {
        if let Some(t) = self.image.get() {
            return Ok(t);
        }
        let t = net.encoder.encode_image(batch.image()?, self.train)?;
        Ok(self.image.get_or_init(|| t))
    }

    /// The text-only encoding [B, T, D] (text experts) of the unmasked text.
    pub fn text(&self, net: &Net, batch: &ModelBatch) -> Result<&Tensor> {
        if let Some(t) = self.text.get() {
            return Ok(t);
        }
        let t = net
            .encoder
            .encode_text(&batch.text()?.batch(), self.train)?;
        Ok(self.text.get_or_init(|| t))
    }
}
