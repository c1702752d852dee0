//! Text-only priors: the most frequent training label per key (a question or statement
//! string), the overall majority for unseen keys; ties go to the smallest label. They are the
//! baselines a fine-tuned model must beat (`suite.json` records them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// The most frequent label and its count (ties: the smallest label), or `None` for none.
fn most_frequent<'a>(counts: &BTreeMap<&'a str, usize>) -> Option<(&'a str, usize)> {
    // BTreeMap order + strict `>` keeps the smallest label on ties.
    let mut best: Option<(&str, usize)> = None;
    for (&label, &n) in counts {
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((label, n));
        }
    }
    best
}

fn best(counts: &BTreeMap<&str, usize>) -> PriorEntry {
    let (answer, count) = most_frequent(counts).unwrap_or(("", 0));
    PriorEntry {
        answer: answer.to_string(),
        count,
        total: counts.values().sum(),
    }
}

/// The most frequent label (ties: the smallest), or `None` for no labels.
pub fn majority<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labels {
        *counts.entry(l).or_default() += 1;
    }
    most_frequent(&counts).map(|(l, _)| l)
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
