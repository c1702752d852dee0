//! Image-text retrieval: find an image's captions among all captions, and a caption's image
//! among all images (COCO / Flickr30k Karpathy splits; the synthetic suite's `retrieval`).
//!
//! Input: training: image-text pairs (each image with one of its captions, drawn per epoch
//! by the loader), run as two unimodal passes, the image through the vision experts and the
//! caption through the text experts. Head: the shared image-text contrastive head
//! `heads.itc` ([`mmerge_models::heads::ItcHead`], created by the first task or objective that
//! needs it): a projection per modality, L2 normalisation and a learnable temperature. Loss
//! (ITC, CLIP arXiv 2103.00020, as VLMo fine-tunes retrieval, arXiv 2111.02358): with
//! s_ij = exp(logit_scale) · ⟨t̂_i, v̂_j⟩ over the B pairs of the batch,
//!   L = ½ [ CE(s, diag) + CE(sᵀ, diag) ].
//! Prediction: every image and every caption of the split is encoded alone, in batches, and
//! embedded (the ITC projections, L2-normalised); captions and images are ranked by the dot
//! product of the embeddings. Scores (`data::score::embedding`, Karpathy & Fei-Fei arXiv
//! 1412.2306): recall@1/5/10 image → text `tr_r1`, `tr_r5`, `tr_r10` (an image's query hits
//! when one of its captions, or a caption identical to one of them, ranks within k) and
//! text → image `ir_r1`, `ir_r5`, `ir_r10` (a caption hits at its image or any image with an
//! identical caption); ties count against the query. `r_mean` is the mean of the six. Per-item
//! values: for `ir_r{k}` one per caption query, for `tr_r{k}` one per image query, 1 when the
//! query hits within k, else 0; `r_mean` has none.
//!
//! Deviation: two captions in one batch that are identical (the synthetic suite has shared
//! captions) are still each other's negatives in the loss, as in ITC pre-training; they count
//! as hits in the scores. VLMo re-ranks the top candidates with the fused ITM head; here the
//! ranks are those of the unimodal embeddings only. One image is one training item (its
//! caption drawn per epoch), so an epoch sees each image once rather than each caption.

use mmerge_data::formats::captions::RetrievalSplit;
use mmerge_data::score::{EmbeddingRetrieval, RECALL_KS, Similarity, embedding_ranks};
use mmerge_data::suite::{Examples, TaskKind};
use tch::{Kind, Tensor};

use super::{Evaluated, InputKind, Task, TaskData, TaskDef, mean};
use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Item, ModelBatch, Target};
use crate::net::Net;

pub const TASK: TaskDef = TaskDef {
    kind: TaskKind::Retrieval,
    input: InputKind::ImageText,
    loss: "ITC: ½ [CE(s, diag) + CE(sᵀ, diag)] on the unimodal class tokens",
    scores: &[
        "r_mean", "tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10",
    ],
    build,
    source: include_str!("retrieval.rs"),
};

#[derive(Debug)]
struct Retrieval;

fn build(net: &mut Net, data: &TaskData<'_>) -> Result<Box<dyn Task>> {
    let Examples::Retrieval(_) = data.train else {
        return Err(TrainError::Invalid(format!(
            "task `{}` is not a retrieval task",
            data.name
        )));
    };
    net.ensure_itc();
    Ok(Box::new(Retrieval))
}

fn split(examples: &Examples) -> Result<&RetrievalSplit> {
    match examples {
        Examples::Retrieval(s) => Ok(s),
        _ => Err(TrainError::Invalid("not a retrieval split".into())),
    }
}

/// Evaluation items: every image alone (group = its index).
pub fn image_items(split: &RetrievalSplit) -> Vec<Item> {
    split
        .images
        .iter()
        .enumerate()
        .map(|(i, im)| Item {
            images: vec![im.clone()],
            texts: vec![],
            target: Target::None,
            group: i,
        })
        .collect()
}

/// Evaluation items: every caption alone (group = its image's index).
pub fn caption_items(split: &RetrievalSplit) -> Vec<Item> {
    split
        .captions
        .iter()
        .zip(&split.caption_image)
        .map(|(c, &i)| Item {
            images: vec![],
            texts: vec![c.clone()],
            target: Target::None,
            group: i,
        })
        .collect()
}

/// The ITC embeddings of a batch's image-only or text-only input [B, dim] (no gradients
/// needed by the caller; the encoder runs in evaluation mode).
pub fn embed(net: &Net, batch: &ModelBatch) -> Result<Tensor> {
    let itc = net.itc()?;
    match (batch.images.as_slice(), &batch.text) {
        ([im], None) => Ok(itc.embed_image(&net.encoder.encode_image(im, false)?.select(1, 0))),
        ([], Some(t)) => {
            Ok(itc.embed_text(&net.encoder.encode_text(&t.batch(), false)?.select(1, 0)))
        }
        _ => Err(TrainError::Invalid(
            "retrieval embeds image-only or text-only batches".into(),
        )),
    }
}

/// Embeds every item, in item order: n × dim, row-major.
fn embed_all(net: &Net, data: &EvalData, items: Vec<Item>) -> Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut dim = 0;
    data.for_each(items, 0, |batch| {
        let e = embed(net, &batch)?
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu);
        dim = e.size()[1] as usize;
        out.extend(Vec::<f32>::try_from(e.flatten(0, -1))?);
        Ok(())
    })?;
    Ok((out, dim))
}

/// Training pairs: one item per image with all its captions (the loader draws one per
/// epoch), grouped by image.
pub fn pair_items(split: &RetrievalSplit) -> Vec<Item> {
    let mut captions = vec![Vec::new(); split.images.len()];
    for (c, &i) in split.captions.iter().zip(&split.caption_image) {
        captions[i].push(c.clone());
    }
    split
        .images
        .iter()
        .zip(captions)
        .enumerate()
        .map(|(i, (im, texts))| Item {
            images: vec![im.clone()],
            texts,
            target: Target::None,
            group: i,
        })
        .collect()
}

/// Recall@1/5/10 both ways by the ITC embeddings (the task's evaluation, and the zero-shot
/// signal after a merge), with each query's hit (1 if its best hit ranks within k, else 0)
/// as the per-item values: see [`recall_from_embeddings`].
pub fn recall(net: &Net, data: &EvalData, split: &RetrievalSplit) -> Result<Evaluated> {
    let (images, dim) = embed_all(net, data, image_items(split))?;
    let (texts, _) = embed_all(net, data, caption_items(split))?;
    recall_from_embeddings(split, &images, &texts, dim)
}

/// The retrieval scores of `split` from its image embeddings (`images`, n_img × `dim`,
/// row-major, in image order) and caption embeddings (`texts`, n_txt × `dim`, in caption
/// order), ranked by their dot product (`mmerge_data::score::embedding_ranks`: shared
/// captions are hits, ties count against the query).
///
/// `ir_r{k}` has one item per caption query (text → image), in caption order, and `tr_r{k}`
/// one per image query (image → text), in image order: 1 when the query's rank is below k,
/// else 0; each score is their mean. `r_mean`, the mean of the six recalls, has no items.
pub fn recall_from_embeddings(
    split: &RetrievalSplit,
    images: &[f32],
    texts: &[f32],
    dim: usize,
) -> Result<Evaluated> {
    let ranks = embedding_ranks(
        split,
        images,
        texts,
        dim,
        EmbeddingRetrieval {
            similarity: Similarity::Dot,
            ..Default::default()
        },
    )?;
    let hits = |ranks: &[usize], k: usize| -> Vec<f64> {
        ranks
            .iter()
            .map(|&r| if r < k { 1.0 } else { 0.0 })
            .collect()
    };
    let mut e = Evaluated::default();
    let (mut tr, mut ir) = (vec![], vec![]);
    for k in RECALL_KS {
        let (t, i) = (hits(&ranks.image_to_text, k), hits(&ranks.text_to_image, k));
        tr.push(mean(&t));
        ir.push(mean(&i));
        e.insert_mean(format!("tr_r{k}"), t);
        e.insert_mean(format!("ir_r{k}"), i);
    }
    let all: Vec<f64> = tr.iter().chain(&ir).copied().collect();
    e.insert_score("r_mean", all.iter().sum::<f64>() / all.len() as f64);
    Ok(e)
}

impl Task for Retrieval {
    fn items(&self, examples: &Examples) -> Result<Vec<Item>> {
        Ok(pair_items(split(examples)?))
    }

    fn loss(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        let image = net
            .encoder
            .encode_image(batch.image()?, train)?
            .select(1, 0);
        let text = net
            .encoder
            .encode_text(&batch.text()?.batch(), train)?
            .select(1, 0);
        Ok(net.itc()?.loss(&text, &image))
    }

    fn evaluate(&self, net: &Net, data: &EvalData, examples: &Examples) -> Result<Evaluated> {
        recall(net, data, split(examples)?)
    }
}
