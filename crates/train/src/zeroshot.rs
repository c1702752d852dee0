//! Zero-shot signals of a model (a merged checkpoint, before any fine-tuning): what it still
//! knows of pre-training, measured without training anything.
//!
//! - [`retrieval_recall`]: image–text retrieval by the ITC head (`heads.itc`, which the
//!   checkpoint must hold): each image's class token from the image-only pass (vision
//!   experts), each caption's from the text-only pass (text experts), both through the ITC
//!   projections; recall@1/5/10 in both directions from cosine similarity
//!   (`mmerge_data::score::embedding`: shared captions count as hits, ties count against the
//!   query). Scores `ir_r{1,5,10}` (text → image), `tr_r{1,5,10}` (image → text) and
//!   `r_mean`, their mean: the retrieval task's evaluation, `tasks::retrieval::recall`, with
//!   the same per-query hits as per-item values (`ir_r*`: one per caption, `tr_r*`: one per
//!   image; see [`Evaluated`]).
//! - [`heldout_loss`]: the pre-training loss Σ_k w_k L_k on a held-out split's pairs, with
//!   a fixed seed and step so that every compared model sees the same masks and draws its
//!   negatives from the same stream: `heldout_<objective>` per objective and `heldout_total`.

use mmerge_data::formats::captions::RetrievalSplit;

use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::net::Net;
use crate::objectives::{DEFAULT_MASK_PROB, DEFAULT_MIM_RATIO, Objective, StepCache};
use crate::tasks::retrieval::{pair_items, recall};
use crate::tasks::{Evaluated, Scores};

/// ITC retrieval recall@1/5/10 in both directions on `split`, with each query's hit as the
/// per-item values (see the module docs).
pub fn retrieval_recall(net: &Net, data: &EvalData, split: &RetrievalSplit) -> Result<Evaluated> {
    recall(net, data, split)
}

/// One weighted objective of [`heldout_loss`].
#[derive(Debug, Clone, Copy)]
pub struct Weighted<'a> {
    pub name: &'a str,
    pub weight: f64,
    pub objective: &'a dyn Objective,
}

/// The fixed randomness of a held-out loss: batch k of the split runs with
/// `StepCache::new(seed, step + k, false)` and these masking shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldOut {
    pub seed: u64,
    pub step: u64,
    pub mask_prob: f64,
    pub mim_ratio: f64,
}

impl Default for HeldOut {
    fn default() -> Self {
        HeldOut {
            seed: 0,
            step: 0,
            mask_prob: DEFAULT_MASK_PROB,
            mim_ratio: DEFAULT_MIM_RATIO,
        }
    }
}

/// The held-out pre-training loss on `split`'s pairs (no gradients, no dropout):
/// `heldout_<name>` = the pair-weighted mean of objective k's batch losses, and
/// `heldout_total` = Σ_k w_k · heldout_k. A batch on which ITM finds no negative (a last batch
/// of one image) is left out of that objective's mean only.
pub fn heldout_loss(
    net: &Net,
    data: &EvalData,
    split: &RetrievalSplit,
    objectives: &[Weighted<'_>],
    held: HeldOut,
) -> Result<Scores> {
    let mut sums = vec![(0f64, 0usize); objectives.len()];
    let mut k = 0u64;
    data.for_each(pair_items(split), 0, |batch| {
        let mut cache = StepCache::new(held.seed, held.step.wrapping_add(k), false);
        cache.mask_prob = held.mask_prob;
        cache.mim_ratio = held.mim_ratio;
        k += 1;
        for (o, sum) in objectives.iter().zip(sums.iter_mut()) {
            let loss = match o.objective.loss(net, &batch, &cache) {
                Err(TrainError::Itm(mmerge_models::itm::ItmError::NoNegative { .. })) => continue,
                r => r?.double_value(&[]),
            };
            if !loss.is_finite() {
                return Err(TrainError::NotFinite {
                    what: format!("held-out {} loss", o.name),
                    step: cache.step,
                    value: loss,
                });
            }
            sum.0 += loss * batch.len() as f64;
            sum.1 += batch.len();
        }
        Ok(())
    })?;
    let mut s = Scores::new();
    let mut total = 0.0;
    for (o, &(sum, n)) in objectives.iter().zip(&sums) {
        if n == 0 {
            return Err(TrainError::Invalid(format!(
                "held-out {} loss: no batch of the split could be scored",
                o.name
            )));
        }
        let mean = sum / n as f64;
        total += o.weight * mean;
        s.insert(format!("heldout_{}", o.name), mean);
    }
    s.insert("heldout_total".into(), total);
    Ok(s)
}
