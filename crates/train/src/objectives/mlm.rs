//! MLM, masked language modelling of the captions on the fused image-text pass (BERT, arXiv
//! 1810.04805; as VLMo pre-trains it, arXiv 2111.02358).
//!
//! A share p (`StepCache::mask_prob`, default 0.15) of each caption's word tokens is chosen;
//! each chosen token becomes [MASK] with probability 0.8, a random word with probability 0.1
//! and stays as it is with probability 0.1. The caption, so masked, is fused with its image
//! (text experts and vision experts below the VL split, VL experts above) and the MLM head
//! (`heads.mlm`) reads the text positions, the first T tokens of `[text; image]`. The loss is
//! the cross-entropy of the original tokens at the chosen positions M:
//!   L = −(1/|M|) Σ_{(b,t) ∈ M} log softmax(MlmHead(h_bt))[x_bt].
//!
//! Choosing (see [`mask_tokens`]): the candidates of a text are its real word tokens (ids ≥ 5:
//! never [PAD], [UNK], [CLS], [SEP] or [MASK], never padding); n = ⌊p·c + u⌋ of its c
//! candidates are chosen (u uniform in [0, 1): stochastic rounding, so E[n] = p·c exactly),
//! at least one, by a partial Fisher–Yates shuffle. Positions, replacements and random words
//! come from a SplitMix64 stream of (seed, step, "mlm", text index in the batch).
//!
//! Deviation: BERT draws each token independently with probability p (and may mask none of a
//! short text's tokens); we choose a count per text by stochastic rounding with at least one
//! per text that has a word, so every caption contributes to the loss. [UNK] is never masked.
//! The random replacement is uniform over the word ids [5, vocab) (BERT's over the whole
//! vocabulary, special tokens included). When both MLM objectives run, they read the same
//! masking and share `heads.mlm`.

use mmerge_core::hash::{GOLDEN_GAMMA, SplitMix64, fnv1a, splitmix64, unit_f64};
use mmerge_models::TextBatch;
use tch::{Device, Kind, Tensor};

use super::{Objective, ObjectiveDef, StepCache};
use crate::error::{Result, TrainError};
use crate::input::{ModelBatch, Text};
use crate::net::Net;

pub const OBJECTIVE: ObjectiveDef = ObjectiveDef {
    name: "mlm",
    formula: "−mean_{masked (b,t)} log softmax(MlmHead(fused h_bt))[x_bt]",
    build,
    source: include_str!("mlm.rs"),
};

/// Ids below this are special tokens ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4).
pub const FIRST_WORD_ID: i64 = 5;
/// The id of [MASK].
pub const MASK_ID: i64 = 4;
/// The label of a position that is not predicted.
pub const IGNORE: i64 = -100;

#[derive(Debug)]
struct Mlm;

fn build(net: &mut Net) -> Result<Box<dyn Objective>> {
    net.ensure_mlm();
    Ok(Box::new(Mlm))
}

impl Objective for Mlm {
    fn loss(&self, net: &Net, batch: &ModelBatch, cache: &StepCache) -> Result<Tensor> {
        let (ids, labels) = cache.masked_text(net, batch)?;
        let text = batch.text()?;
        let masked = TextBatch {
            ids,
            mask: &text.mask,
        };
        let t = ids.size()[1];
        let h = if cache.shares_lower(net) {
            // The image's lower layers are the image-only pass's (StepCache::image_lower);
            // only the text positions are read, so the last layer computes only theirs.
            let tl = net.encoder.text_lower(&masked, cache.train)?;
            let i = cache.image_lower(net, batch)?.shallow_clone();
            net.encoder.fuse_first(tl, i, &text.mask, t, cache.train)?
        } else {
            let (h, _) = net
                .encoder
                .encode_image_text(batch.image()?, &masked, 1, cache.train)?;
            h.narrow(1, 0, t)
        };
        mlm_loss(net, &h, labels, cache, "mlm")
    }
}

/// The MLM head's cross-entropy on the text positions `h` [B, T, D] against `labels`; 0
/// (still connected to the head) when no position is labelled (every text without a word).
/// With sampled targets (`cache.sampled_targets`), each masked position's token is drawn
/// from the head's softmax (`salt` names the objective's stream).
pub(crate) fn mlm_loss(
    net: &Net,
    h: &Tensor,
    labels: &Tensor,
    cache: &StepCache,
    salt: &str,
) -> Result<Tensor> {
    let head = net.mlm()?;
    if labels.ge(0).any().int64_value(&[]) == 0 {
        return Ok(head.forward(h).sum(Kind::Float) * 0.0);
    }
    if !cache.sampled_targets {
        return Ok(head.loss(h, labels));
    }
    let logits = head.forward(h);
    let v = logits.size()[2];
    let at = labels.reshape([-1]).ge(0).nonzero().squeeze_dim(1);
    let rows = logits.reshape([-1, v]).index_select(0, &at);
    let targets = labels.reshape([-1]).index_select(0, &at);
    Ok(cache.cross_entropy(&rows, &targets, salt))
}

/// BERT masking of a batch's tokens (see [`mask_tokens`]) as tensors [B, T] on the text's
/// device: (masked ids, labels).
pub(crate) fn masked_batch(
    text: &Text,
    prob: f64,
    vocab: i64,
    seed: u64,
    step: u64,
) -> Result<(Tensor, Tensor)> {
    let size = text.ids.size();
    let [_, len] = size[..] else {
        return Err(TrainError::Invalid(format!(
            "token ids must be [B, T], got {size:?}"
        )));
    };
    let host = |t: &Tensor| -> Result<Vec<i64>> {
        Ok(Vec::try_from(
            t.to_device(Device::Cpu)
                .to_kind(Kind::Int64)
                .contiguous()
                .view([-1]),
        )?)
    };
    let (ids, mask) = (host(&text.ids)?, host(&text.mask)?);
    let (masked, labels) = mask_tokens(&ids, &mask, len as usize, prob, vocab, seed, step);
    let dev = text.ids.device();
    Ok((
        Tensor::from_slice(&masked).view([-1, len]).to_device(dev),
        Tensor::from_slice(&labels).view([-1, len]).to_device(dev),
    ))
}

/// BERT masking on host vectors: `ids` and `mask` are row-major [B, `len`] (mask 1 = real
/// token). Returns (masked ids, labels): in each row, n = max(1, ⌊prob·c + u⌋) (at most c)
/// of its c word tokens (id ≥ [`FIRST_WORD_ID`], mask ≠ 0) are chosen; a chosen token is
/// replaced by [MASK] (80 %), a uniform word id in [5, `vocab`) (10 %) or kept (10 %), and its
/// label is the original id; every other label is [`IGNORE`]. A pure function of its
/// arguments: row r draws from the SplitMix64 stream of (seed, step, "mlm", r). With
/// `vocab` ≤ 5 there is no word to draw and the 10 % random replacements keep their token.
pub fn mask_tokens(
    ids: &[i64],
    mask: &[i64],
    len: usize,
    prob: f64,
    vocab: i64,
    seed: u64,
    step: u64,
) -> (Vec<i64>, Vec<i64>) {
    let mut masked = ids.to_vec();
    let mut labels = vec![IGNORE; ids.len()];
    if len == 0 {
        return (masked, labels);
    }
    let base = splitmix64(seed ^ fnv1a(b"mlm") ^ step.wrapping_mul(GOLDEN_GAMMA));
    let prob = prob.clamp(0.0, 1.0);
    for (r, (row, row_mask)) in ids.chunks(len).zip(mask.chunks(len)).enumerate() {
        let mut rng = row_stream(base, r);
        let mut cands: Vec<usize> = (0..row.len())
            .filter(|&t| row_mask.get(t).is_some_and(|&m| m != 0) && row[t] >= FIRST_WORD_ID)
            .collect();
        let c = cands.len();
        if c == 0 {
            continue;
        }
        let n = ((prob * c as f64 + unit_f64(rng.next_u64())).floor() as usize).clamp(1, c);
        // Partial Fisher–Yates: the first n entries become a uniform n-subset.
        for k in 0..n {
            let j = k + below(&mut rng, c - k);
            cands.swap(k, j);
        }
        for &t in &cands[..n] {
            let at = r * len + t;
            labels[at] = row[t];
            let u = unit_f64(rng.next_u64());
            let word =
                FIRST_WORD_ID + below(&mut rng, (vocab - FIRST_WORD_ID).max(0) as usize) as i64;
            masked[at] = if u < 0.8 {
                MASK_ID
            } else if u < 0.9 && vocab > FIRST_WORD_ID {
                word
            } else {
                row[t]
            };
        }
    }
    (masked, labels)
}

/// The stream of row `r` under the step's `base` seed.
pub(crate) fn row_stream(base: u64, r: usize) -> SplitMix64 {
    SplitMix64::new(splitmix64(
        base ^ (r as u64).wrapping_add(1).wrapping_mul(GOLDEN_GAMMA),
    ))
}

/// A uniform integer in [0, n) (0 when n = 0), by scaling a 53-bit uniform.
pub(crate) fn below(rng: &mut SplitMix64, n: usize) -> usize {
    let v = (unit_f64(rng.next_u64()) * n as f64) as usize;
    v.min(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` texts of random lengths in [1, 30) words, [CLS] w… [SEP], padded to 32 with
    /// [PAD]; some words are [UNK] (1) and a few [MASK] (4), which must never be chosen.
    fn texts(n: usize) -> (Vec<i64>, Vec<i64>, usize) {
        let len = 32;
        let mut rng = SplitMix64::new(99);
        let (mut ids, mut mask) = (vec![0; n * len], vec![0; n * len]);
        for r in 0..n {
            let words = 1 + below(&mut rng, 29);
            ids[r * len] = 2;
            for t in 1..=words {
                ids[r * len + t] = match below(&mut rng, 20) {
                    0 => 1,
                    1 => 4,
                    _ => 5 + below(&mut rng, 95) as i64,
                };
            }
            ids[r * len + words + 1] = 3;
            for t in 0..words + 2 {
                mask[r * len + t] = 1;
            }
        }
        (ids, mask, len)
    }

    #[test]
    fn masks_only_words_at_least_one_per_text_and_p_overall() {
        let (ids, mask, len) = texts(2000);
        let (masked, labels) = mask_tokens(&ids, &mask, len, 0.15, 100, 7, 3);
        let (mut chosen, mut words, mut as_mask, mut kept, mut random) = (0, 0, 0, 0, 0);
        for r in 0..ids.len() / len {
            let mut in_row = 0;
            for t in r * len..(r + 1) * len {
                let word = mask[t] != 0 && ids[t] >= FIRST_WORD_ID;
                words += usize::from(word);
                if labels[t] == IGNORE {
                    assert_eq!(masked[t], ids[t], "an unchosen token changed");
                    continue;
                }
                assert!(word, "special or padding token {} at {t} chosen", ids[t]);
                assert_eq!(labels[t], ids[t]);
                in_row += 1;
                match masked[t] {
                    MASK_ID => as_mask += 1,
                    m if m == ids[t] => kept += 1,
                    m => {
                        assert!((FIRST_WORD_ID..100).contains(&m), "{m}");
                        random += 1;
                    }
                }
            }
            let has_word = (r * len..(r + 1) * len).any(|t| mask[t] != 0 && ids[t] >= 5);
            assert_eq!(in_row >= 1, has_word, "row {r}");
            chosen += in_row;
        }
        let share = chosen as f64 / words as f64;
        // Stochastic rounding keeps the share at p but for the at-least-one rule on short texts.
        assert!((0.15..0.19).contains(&share), "share {share}");
        let f = |k: usize| k as f64 / chosen as f64;
        assert!((f(as_mask) - 0.8).abs() < 0.03, "[MASK] {}", f(as_mask));
        // A random word equal to the original counts as kept: 0.1·(1 + 1/95).
        assert!((f(kept) - 0.101).abs() < 0.02, "kept {}", f(kept));
        assert!((f(random) - 0.099).abs() < 0.02, "random {}", f(random));
    }

    #[test]
    fn a_pure_function_of_seed_and_step() {
        let (ids, mask, len) = texts(50);
        let a = mask_tokens(&ids, &mask, len, 0.15, 100, 7, 3);
        assert_eq!(a, mask_tokens(&ids, &mask, len, 0.15, 100, 7, 3));
        assert_ne!(a, mask_tokens(&ids, &mask, len, 0.15, 100, 7, 4));
        assert_ne!(a, mask_tokens(&ids, &mask, len, 0.15, 100, 8, 3));
        // A row's masking does not depend on the rows after it.
        let b = mask_tokens(&ids[..10 * len], &mask[..10 * len], len, 0.15, 100, 7, 3);
        assert_eq!(b.0[..], a.0[..10 * len]);
        assert_eq!(b.1[..], a.1[..10 * len]);
    }

    #[test]
    fn a_text_without_words_and_empty_input() {
        // [CLS] [UNK] [SEP] [PAD]: nothing to mask.
        let (m, l) = mask_tokens(&[2, 1, 3, 0], &[1, 1, 1, 0], 4, 0.5, 100, 1, 1);
        assert_eq!(m, vec![2, 1, 3, 0]);
        assert_eq!(l, vec![IGNORE; 4]);
        assert_eq!(mask_tokens(&[], &[], 0, 0.15, 100, 1, 1), (vec![], vec![]));
        // One word: always chosen.
        for step in 0..20 {
            let (_, l) = mask_tokens(&[2, 9, 3], &[1, 1, 1], 3, 0.15, 100, 1, step);
            assert_eq!(l, vec![IGNORE, 9, IGNORE]);
        }
    }
}
