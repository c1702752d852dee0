//! Retrieval recall@k over a full score matrix (images × captions), and the recall of a
//! random ranking.
//!
//! - Recall@k (as in Karpathy & Fei-Fei 2015, arXiv:1412.2306): the fraction of queries whose
//!   best-ranked hit has 0-based rank < k ([`recall_at_k`]). The rank of a query is
//!   #{non-hits scoring ≥ the best hit}. Deviations: **duplicate captions count as hits** (the
//!   split's `equivalent` sets) and **ties count against the query** (the pessimistic rank:
//!   a hit tied with non-hits is ranked after them, so a collapsed model whose scores are all
//!   equal gets no credit, and the rank does not depend on the order of the gallery).
//! - [`chance_recall`]: the recall of a random ranking, 1 − C(N − h, k) / C(N, k) per caption.
//!
//! For embeddings, [`super::embedding`] computes the same ranks without the full matrix.

use std::collections::{HashMap, HashSet};

use crate::error::{DataError, Result};
use crate::formats::captions::{KarpathyImage, RetrievalSplit, caption_key};

fn check_scores(split: &RetrievalSplit, scores: &[f32]) -> Result<()> {
    let (n_i, n_c) = (split.images.len(), split.captions.len());
    if scores.len() != n_i * n_c {
        return Err(DataError::Shape {
            what: "score matrix",
            reason: format!(
                "{} scores, expected {n_i} images × {n_c} captions = {}",
                scores.len(),
                n_i * n_c
            ),
        });
    }
    if let Some(k) = scores.iter().position(|s| s.is_nan()) {
        return Err(DataError::NaN {
            what: "score matrix",
            at: format!("image {}, caption {}", k / n_c, k % n_c),
        });
    }
    Ok(())
}

/// For each caption, the 0-based rank of its best-scored hit image among all images;
/// `scores[image * captions.len() + caption]` (row-major, images × captions). Ties
/// count against the query: the rank is the number of non-hit images scoring at least
/// as high as the best hit.
pub fn text_to_image_ranks(split: &RetrievalSplit, scores: &[f32]) -> Result<Vec<usize>> {
    check_scores(split, scores)?;
    let n_c = split.captions.len();
    let mut is_hit = vec![false; split.images.len()];
    Ok(split
        .equivalent
        .iter()
        .enumerate()
        .map(|(c, hits)| {
            for &i in hits {
                is_hit[i] = true;
            }
            let best = hits
                .iter()
                .map(|&i| scores[i * n_c + c])
                .fold(f32::NEG_INFINITY, f32::max);
            let rank = (0..split.images.len())
                .filter(|&i| !is_hit[i] && scores[i * n_c + c] >= best)
                .count();
            for &i in hits {
                is_hit[i] = false;
            }
            rank
        })
        .collect())
}

/// For each image, the 0-based rank of its best-scored hit caption among all captions
/// (same layout and tie rule as [`text_to_image_ranks`]).
pub fn image_to_text_ranks(split: &RetrievalSplit, scores: &[f32]) -> Result<Vec<usize>> {
    check_scores(split, scores)?;
    let n_c = split.captions.len();
    let mut is_hit = vec![false; n_c];
    Ok(split
        .image_hits()
        .iter()
        .enumerate()
        .map(|(i, hits)| {
            let row = &scores[i * n_c..(i + 1) * n_c];
            for &c in hits {
                is_hit[c] = true;
            }
            let best = hits
                .iter()
                .map(|&c| row[c])
                .fold(f32::NEG_INFINITY, f32::max);
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(c, &s)| !is_hit[c] && s >= best)
                .count();
            for &c in hits {
                is_hit[c] = false;
            }
            rank
        })
        .collect())
}

/// Text → image recall@k for each k in `ks` (fraction of captions with a hit in the top
/// k images).
pub fn text_to_image_recall(
    split: &RetrievalSplit,
    scores: &[f32],
    ks: &[usize],
) -> Result<Vec<f64>> {
    let ranks = text_to_image_ranks(split, scores)?;
    Ok(ks.iter().map(|&k| recall_at_k(&ranks, k)).collect())
}

/// Image → text recall@k for each k in `ks` (fraction of images with a hit in the top
/// k captions).
pub fn image_to_text_recall(
    split: &RetrievalSplit,
    scores: &[f32],
    ks: &[usize],
) -> Result<Vec<f64>> {
    let ranks = image_to_text_ranks(split, scores)?;
    Ok(ks.iter().map(|&k| recall_at_k(&ranks, k)).collect())
}

/// The fraction of queries whose first hit has rank < `k` (0 for no queries).
pub fn recall_at_k(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

/// The text-to-image recall@k of a random ranking of the `split` images, when every image of
/// the split with the same caption counts as a hit: the mean over the split's captions of
/// 1 − C(N − h, k) / C(N, k), N images, h hits. (1/N when no caption is shared.)
pub fn chance_recall(images: &[KarpathyImage], split: &str, k: usize) -> f64 {
    let in_split: Vec<&KarpathyImage> = images.iter().filter(|i| i.split == split).collect();
    let n = in_split.len();
    let mut hits: HashMap<String, usize> = HashMap::new();
    for im in &in_split {
        let keys: HashSet<String> = im.sentences.iter().map(|s| caption_key(&s.raw)).collect();
        for key in keys {
            *hits.entry(key).or_default() += 1;
        }
    }
    // P(no hit in the top k) = Π_{j<k} (N − h − j) / (N − j).
    let miss = |h: usize| -> f64 {
        (0..k.min(n)).fold(1.0, |p, j| {
            if n - j == 0 || n < h + j {
                0.0
            } else {
                p * (n - h - j) as f64 / (n - j) as f64
            }
        })
    };
    let (mut sum, mut count) = (0.0, 0usize);
    for im in &in_split {
        for s in &im.sentences {
            sum += 1.0 - miss(hits[&caption_key(&s.raw)]);
            count += 1;
        }
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}
