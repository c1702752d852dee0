//! Task scores, in one place: what a model's predictions (or a text-only prior) score on a
//! split. The readers (`crate::formats`) only read; they keep what reading needs (answer
//! normalisation, the VQA soft targets, the retrieval hit sets).
//!
//! - VQA accuracy (Antol et al. 2015, arXiv:1505.00468; the official `vqaEval.py`): the mean
//!   over the ten leave-one-out subsets of the human answers of min(1, matches / 3)
//!   ([`vqa_score`], [`vqa_accuracy`]); answers are normalised by
//!   [`crate::formats::vqa::normalize_answer`].
//! - Retrieval recall@k (as in Karpathy & Fei-Fei 2015, arXiv:1412.2306): the fraction of
//!   queries with a hit among the top k ([`recall_at_k`]). Deviations: **duplicate captions
//!   count as hits** (the split's `equivalent` sets) and ties count against the query
//!   ([`text_to_image_ranks`]); [`chance_recall`] is the recall of a random ranking.
//! - Text-only priors ([`Prior`]): the most frequent training label per key (a question or
//!   statement string), the overall majority for unseen keys; ties go to the smallest label.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::formats::captions::{KarpathyImage, RetrievalSplit, caption_key};
use crate::formats::vqa::normalize_answer;

// ---------------------------------------------------------------------------------------
// VQA
// ---------------------------------------------------------------------------------------

/// The official accuracy of an answer given by `matches` of `n` humans: the mean, over the
/// `n` leave-one-out subsets of the human answers, of min(1, matches in the subset / 3).
/// A subset that leaves out a matching answer has `matches - 1` matches, the others
/// `matches`, so this is `(m·min(3, m-1) + (n-m)·min(3, m)) / (3n)`, computed exactly in
/// integers then divided. With `n = 10`: 0, 1, 2, 3, ≥ 4 matches → 0, 0.3, 0.6, 0.9, 1.
/// `n = 0` gives 0.
pub fn vqa_score(matches: usize, n: usize) -> f32 {
    if n == 0 || matches == 0 {
        return 0.0;
    }
    let m = matches.min(n);
    let num = m * (m - 1).min(3) + (n - m) * m.min(3);
    (num as f64 / (3 * n) as f64) as f32
}

/// The official accuracy of `predicted` (normalised here) against the human answers, which
/// must already be normalised (as in [`crate::formats::vqa::VqaExample::answers`]).
pub fn vqa_accuracy(predicted: &str, answers: &[String]) -> f32 {
    let p = normalize_answer(predicted);
    vqa_score(answers.iter().filter(|a| **a == p).count(), answers.len())
}

/// Each distinct answer among `answers` (normalised) with its [`vqa_score`], by answer text.
pub fn answer_scores(answers: &[String]) -> Vec<(String, f32)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers {
        *counts.entry(a.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(a, c)| (a.to_string(), vqa_score(c, answers.len())))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Retrieval
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Text-only priors
// ---------------------------------------------------------------------------------------

/// A label predicted from the text alone: the most frequent label per key on the training
/// split, the overall most frequent one for unseen keys (ties: the smaller label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorEntry {
    /// The predicted label.
    pub answer: String,
    /// How often it is the label of this key on the training split.
    pub count: usize,
    /// How often the key occurs on the training split.
    pub total: usize,
}

/// The per-key prior fitted on `(key, label)` pairs of a training split.
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    pub per_key: BTreeMap<String, PriorEntry>,
    /// The training majority (answer `""` and count 0 when there was no training pair).
    pub fallback: PriorEntry,
}

fn best(counts: &BTreeMap<&str, usize>) -> PriorEntry {
    let total = counts.values().sum();
    // BTreeMap order + strict `>` keeps the smallest label on ties.
    let mut out = PriorEntry {
        answer: String::new(),
        count: 0,
        total,
    };
    for (label, &c) in counts {
        if c > out.count {
            out.answer = (*label).to_string();
            out.count = c;
        }
    }
    out
}

/// The most frequent label (ties: the smallest), or `None` for no labels.
pub fn majority<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labels {
        *counts.entry(l).or_default() += 1;
    }
    let mut best: Option<(&str, usize)> = None;
    for (l, n) in counts {
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((l, n));
        }
    }
    best.map(|(l, _)| l)
}

impl Prior {
    /// Fits the prior on `(key, label)` pairs.
    pub fn fit<'s>(train: impl IntoIterator<Item = (&'s str, &'s str)>) -> Self {
        let mut per: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
        let mut all: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, label) in train {
            *per.entry(key).or_default().entry(label).or_default() += 1;
            *all.entry(label).or_default() += 1;
        }
        Self {
            per_key: per
                .iter()
                .map(|(k, c)| ((*k).to_string(), best(c)))
                .collect(),
            fallback: best(&all),
        }
    }

    /// The label predicted for `key`.
    pub fn predict(&self, key: &str) -> &str {
        self.per_key
            .get(key)
            .map_or(&self.fallback.answer, |e| &e.answer)
    }

    /// Accuracy on `(key, label)` pairs (0 when there are none).
    pub fn accuracy<'s>(&self, test: impl IntoIterator<Item = (&'s str, &'s str)>) -> f64 {
        let (mut hit, mut n) = (0usize, 0usize);
        for (key, label) in test {
            n += 1;
            hit += usize::from(self.predict(key) == label);
        }
        if n == 0 { 0.0 } else { hit as f64 / n as f64 }
    }

    /// Accuracy of always answering the training majority.
    pub fn majority_accuracy<'s>(&self, test: impl IntoIterator<Item = (&'s str, &'s str)>) -> f64 {
        let (mut hit, mut n) = (0usize, 0usize);
        for (_, label) in test {
            n += 1;
            hit += usize::from(self.fallback.answer == label);
        }
        if n == 0 { 0.0 } else { hit as f64 / n as f64 }
    }
}
