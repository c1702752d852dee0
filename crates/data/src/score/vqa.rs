//! The official VQA accuracy (Antol et al. 2015, arXiv:1505.00468; the official
//! `vqaEval.py`): the mean over the ten leave-one-out subsets of the human answers of
//! min(1, matches / 3). Answers are normalised by [`crate::formats::vqa::normalize_answer`].
//! No deviation from the official script, whose per-question value this reproduces exactly.

use std::collections::BTreeMap;

use crate::formats::vqa::normalize_answer;

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
