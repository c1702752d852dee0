//! Text MLM, masked language modelling on the text-only pass (BERT, arXiv 1810.04805; VLMo's
//! text-only pre-training stage, arXiv 2111.02358).
//!
//! The caption is masked exactly as [`super::mlm`] masks it (same share p, same 80/10/10
//! replacements, same SplitMix64 stream of (seed, step, "mlm", text index), so both objectives
//! of a step see the same masked text), run through the text experts alone, and the MLM head
//! (`heads.mlm`, shared with the fused MLM objective) predicts the original tokens at the
//! chosen positions M:
//!   L = −(1/|M|) Σ_{(b,t) ∈ M} log softmax(MlmHead(h_bt))[x_bt].
//!
//! Deviation: VLMo runs text-only MLM on a separate text corpus; here it reads the pre-training
//! captions (the suite has no other text). The head is shared with the fused MLM objective
//! rather than being a second head. The masking deviations of [`super::mlm`] apply.

use mmerge_models::TextBatch;
use tch::Tensor;

use super::mlm::mlm_loss;
use super::{Objective, ObjectiveDef, StepCache};
use crate::error::Result;
use crate::input::ModelBatch;
use crate::net::Net;

pub const OBJECTIVE: ObjectiveDef = ObjectiveDef {
    name: "text_mlm",
    formula: "−mean_{masked (b,t)} log softmax(MlmHead(text-only h_bt))[x_bt]",
    build,
    source: include_str!("text_mlm.rs"),
};

#[derive(Debug)]
struct TextMlm;

fn build(net: &mut Net) -> Result<Box<dyn Objective>> {
    net.ensure_mlm();
    Ok(Box::new(TextMlm))
}

impl Objective for TextMlm {
    fn loss(&self, net: &Net, batch: &ModelBatch, cache: &StepCache) -> Result<Tensor> {
        let (ids, labels) = cache.masked_text(net, batch)?;
        let text = batch.text()?;
        let h = net.encoder.encode_text(
            &TextBatch {
                ids,
                mask: &text.mask,
            },
            cache.train,
        )?;
        mlm_loss(net, &h, labels, cache, "text_mlm")
    }
}
