//! ITM, image-text matching with hard negatives (ALBEF, arXiv 2107.07651, §3.2; as VLMo
//! pre-trains it, arXiv 2111.02358).
//!
//! The ITC similarities s = ItcHead(text_cls, image_cls) of the step's unimodal class tokens
//! (image-only pass, text-only pass; detached, no gradient) give each image one negative text
//! and each text one negative image, drawn ∝ exp(s) over the non-positives
//! (`mmerge_models::itm::mine_hard_negatives` with the step's seed and step). A text is a
//! positive for an image when it is the image's own caption, an identical caption
//! (`caption_key`) or a caption of the same group (the same image). The 3B pairs (B matching,
//! 2B mined) are fused and a two-way classifier (`heads.itm`) on the first token of
//! `[text; image]` predicts matched (1) or not (0):
//!   L = −(1/3B) Σ_r log softmax(Classifier(h_r,0))[y_r].
//! With a classifier whose output is all zeros, L = ln 2.
//!
//! Deviation: shared captions and same-group captions are never negatives (ALBEF only
//! excludes the diagonal); negatives are drawn from the exact softmax by a SplitMix64 stream of
//! (seed, step), not `torch.multinomial` (see `mmerge_models::itm`). A batch in which some
//! image has no non-positive text (one image, or every caption shared) is an error. Builds the
//! ITC head (`heads.itc`) if ITC is not an objective of the run; it is then not trained.

use mmerge_data::formats::captions::caption_key;
use mmerge_models::heads::Classifier;
use mmerge_models::itm::{itm_logits, itm_loss, itm_pairs, mine_hard_negatives};
use tch::Tensor;

use super::{Objective, ObjectiveDef, StepCache};
use crate::error::{Result, TrainError};
use crate::input::ModelBatch;
use crate::net::Net;

pub const OBJECTIVE: ObjectiveDef = ObjectiveDef {
    name: "itm",
    formula: "−mean_{3B fused pairs} log softmax(Classifier(h_cls))[matched], negatives ∝ exp(ITC s)",
    build,
    source: include_str!("itm.rs"),
};

#[derive(Debug)]
struct Itm {
    head: Classifier,
}

fn build(net: &mut Net) -> Result<Box<dyn Objective>> {
    net.ensure_itc();
    let cfg = net.config().clone();
    let head = Classifier::new(
        &(net.heads() / "itm"),
        cfg.hidden_size,
        2,
        cfg.layer_norm_eps,
    );
    Ok(Box::new(Itm { head }))
}

/// `positive[i][j]`: text j is a positive for image i (same group, or the same caption after
/// [`caption_key`]); the diagonal is always true.
pub fn positives(texts: &[String], groups: &[usize]) -> Result<Vec<Vec<bool>>> {
    if texts.len() != groups.len() {
        return Err(TrainError::Invalid(format!(
            "{} texts but {} groups in the batch",
            texts.len(),
            groups.len()
        )));
    }
    let keys: Vec<String> = texts.iter().map(|t| caption_key(t)).collect();
    Ok((0..texts.len())
        .map(|i| {
            (0..texts.len())
                .map(|j| i == j || groups[i] == groups[j] || keys[i] == keys[j])
                .collect()
        })
        .collect())
}

impl Objective for Itm {
    fn loss(&self, net: &Net, batch: &ModelBatch, cache: &StepCache) -> Result<Tensor> {
        if batch.texts.len() != batch.len() {
            return Err(TrainError::Invalid(format!(
                "ITM: {} texts for a batch of {}",
                batch.texts.len(),
                batch.len()
            )));
        }
        let image = cache.image(net, batch)?.select(1, 0).detach();
        let text = cache.text(net, batch)?.select(1, 0).detach();
        let itc = net.itc()?;
        // Row = image, column = text, as mine_hard_negatives wants.
        let sim = tch::no_grad(|| itc.logits(&text, &image).transpose(0, 1));
        let positive = positives(&batch.texts, &batch.groups)?;
        let (text_for_image, image_for_text) =
            mine_hard_negatives(&sim, &positive, cache.seed, cache.step)?;
        let logits = if cache.shares_lower(net) {
            // The 3B pairs of `itm_pairs`, fused from the lower layers of the batch's images
            // and texts (StepCache::image_lower, text_lower) instead of encoding each pair's
            // image and text again: the same values as `itm_logits`.
            let (images, texts) = itm_pairs(&text_for_image, &image_for_text);
            let text = batch.text()?;
            let dev = text.ids.device();
            let images = Tensor::from_slice(&images).to_device(dev);
            let texts = Tensor::from_slice(&texts).to_device(dev);
            let i = cache.image_lower(net, batch)?.index_select(0, &images);
            let t = cache.text_lower(net, batch)?.index_select(0, &texts);
            let mask = text.mask.index_select(0, &texts);
            let h = net.encoder.fuse_first(t, i, &mask, 1, cache.train)?;
            self.head.forward(&h.select(1, 0))
        } else {
            itm_logits(
                &net.encoder,
                &self.head,
                batch.image()?,
                &batch.text()?.batch(),
                &text_for_image,
                &image_for_text,
                cache.train,
            )?
        };
        if cache.sampled_targets {
            // Matched or not drawn from the classifier's softmax (a Fisher with sampled
            // labels); the data's labels are not read.
            let unread = logits.zeros_like().select(1, 0).to_kind(tch::Kind::Int64);
            return Ok(cache.cross_entropy(&logits, &unread, "itm"));
        }
        Ok(itm_loss(&logits)?)
    }
}
