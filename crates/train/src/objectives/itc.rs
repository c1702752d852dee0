//! ITC, image-text contrastive learning (CLIP, arXiv 2103.00020; as ALBEF / VLMo pre-train).
//!
//! The class tokens of the image-only pass (vision experts) and of the text-only pass (text
//! experts) are projected, L2-normalised and compared with a learnable temperature τ
//! (`heads.itc.logit_scale` = ln(1/τ), initialised at τ = 0.07, clamped at 1/τ ≤ 100):
//! s_ij = exp(logit_scale) · ⟨t̂_i, v̂_j⟩. The loss is the symmetric cross-entropy of the B
//! matching pairs on the diagonal:
//!   L = ½ [ CE(s, diag) + CE(sᵀ, diag) ].
//! With all logits equal, L = ln B.
//!
//! Deviation: a caption identical to another pair's caption (the synthetic suite has such
//! shared captions) is still a negative for the other pair's image here; ITM's mining treats
//! it as a positive. ALBEF's momentum distillation is not used.

use tch::Tensor;

use super::{Objective, ObjectiveDef, StepCache};
use crate::error::Result;
use crate::input::ModelBatch;
use crate::net::Net;

pub const OBJECTIVE: ObjectiveDef = ObjectiveDef {
    name: "itc",
    formula: "½ [CE(s, diag) + CE(sᵀ, diag)], s = exp(logit_scale) · cos(text, image)",
    build,
    source: include_str!("itc.rs"),
};

#[derive(Debug)]
struct Itc;

fn build(net: &mut Net) -> Result<Box<dyn Objective>> {
    net.ensure_itc();
    Ok(Box::new(Itc))
}

impl Objective for Itc {
    fn loss(&self, net: &Net, batch: &ModelBatch, cache: &StepCache) -> Result<Tensor> {
        let image = cache.image(net, batch)?.select(1, 0);
        let text = cache.text(net, batch)?.select(1, 0);
        let head = net.itc()?;
        if !cache.sampled_targets {
            return Ok(head.loss(&text, &image));
        }
        // The same two cross-entropies with each row's and column's match drawn from the
        // model's softmax (a Fisher with sampled labels).
        let logits = head.logits(&text, &image);
        let diag = Tensor::arange(logits.size()[0], (tch::Kind::Int64, logits.device()));
        Ok((cache.cross_entropy(&logits, &diag, "itc-t2i")
            + cache.cross_entropy(&logits.transpose(0, 1), &diag, "itc-i2t"))
            / 2.0)
    }
}
