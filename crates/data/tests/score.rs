#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The task scores' (`mmerge_data::score`) reader against the fixtures written by `datasets/fixtures/make_fixtures.py`
//! (exact official formats, tiny), and every bad-input case against small files written here.

mod common;

use common::{coco_karpathy, err, strings};
use mmerge_data::formats::ReadOptions;
use mmerge_data::formats::captions::KarpathySplit;
use mmerge_data::formats::captions::{KarpathyImage, KarpathySentence, equivalent_groups_of};
use mmerge_data::formats::vqa::{AnswerVocab, normalize_answer, soft_targets};
use mmerge_data::score::{
    chance_recall, image_to_text_ranks, image_to_text_recall, recall_at_k, text_to_image_ranks,
    text_to_image_recall, vqa_accuracy, vqa_score,
};

#[test]
fn vqa_soft_scores_by_hand() {
    // Official accuracy with 10 human answers, m of them matching: mean over the 10
    // leave-one-out subsets of min(1, matches among the other 9 / 3).
    // m = 0: every subset has 0 matches → 0.
    // m = 1: the subset without the match has 0 → 0; the 9 others have 1 → 1/3;
    //        (9 · 1/3) / 10 = 0.3.
    // m = 2: 2 subsets with 1 match → 1/3, 8 with 2 → 2/3; (2/3 + 16/3) / 10 = 0.6.
    // m = 3: 3 subsets with 2 → 2/3, 7 with 3 → 1; (2 + 7) / 10 = 0.9.
    // m = 4: 4 subsets with 3 → 1, 6 with 4 → 1; 1.0. Likewise every m ≥ 4.
    let want = [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    for (m, w) in want.iter().enumerate() {
        assert_eq!(vqa_score(m, 10), *w, "{m} of 10");
    }
    assert_eq!(vqa_score(0, 0), 0.0);

    // "2"×3, "two"×4, "Two"×1 → "2"×8; "3"×1, "three"×1 → "3"×2.
    let raw = [
        "2", "2", "2", "two", "two", "two", "two", "Two", "3", "three",
    ];
    let answers: Vec<String> = raw.iter().map(|a| normalize_answer(a)).collect();
    assert_eq!(vqa_accuracy("two", &answers), 1.0);
    assert_eq!(vqa_accuracy("Three", &answers), 0.6);
    assert_eq!(vqa_accuracy("4", &answers), 0.0);
    // Targets restricted to the vocabulary: "3" has 2 matches → 0.6, "2" → 1.0; "4" is in
    // the vocabulary but no human gave it, so it has no entry.
    let vocab = AnswerVocab::new(strings(&["4", "3", "2"])).unwrap();
    assert_eq!(soft_targets(&answers, &vocab), vec![(1, 0.6), (2, 1.0)]);
    let vocab = AnswerVocab::new(strings(&["2"])).unwrap();
    assert_eq!(soft_targets(&answers, &vocab), vec![(0, 1.0)]);
}

/// Scores of the 3 Karpathy test images (rows) × 6 captions (columns).
const SCORES: [f32; 18] = [
    0.5, 0.8, 0.1, 0.2, 0.1, 0.9, // image 0
    0.2, 0.1, 0.3, 0.4, 0.5, 0.6, // image 1
    0.1, 0.2, 0.6, 0.7, 0.2, 0.1, // image 2
];

#[test]
fn recall_counts_duplicate_captions_as_hits() {
    let split = coco_karpathy(KarpathySplit::Test, false)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    // Text → image (column c, hits = equivalent[c]):
    // c0 [.5 .2 .1] hit {0}: .5 best → rank 0.   c1 [.8 .1 .2] {0} → 0.
    // c2 [.1 .3 .6] {1}: .3, image 2 higher → 1.
    // c3 [.2 .4 .7] {1,2}: .7 (image 2, the duplicate's owner) → 0 (1 without duplicates).
    // c4 [.1 .5 .2] {2}: .2, image 1 higher → 1.
    // c5 [.9 .6 .1] {1,2}: .6 (image 1), image 0 higher → 1 (2 without duplicates).
    let t2i = text_to_image_ranks(&split, &SCORES).unwrap();
    assert_eq!(t2i, [0, 0, 1, 0, 1, 1]);
    assert_eq!(
        text_to_image_recall(&split, &SCORES, &[1, 2, 5]).unwrap(),
        [0.5, 1.0, 1.0]
    );
    // Image → text (row i, hits = image_hits[i]):
    // image 0 {c0,c1}: best .8; c5 (.9) higher → 1.
    // image 1 {c2,c3,c5}: best .6 = c5, image 2's copy of its caption → 0 (2 without).
    // image 2 {c3,c4,c5}: best .7 = c3, image 1's copy → 0 (3 without).
    let i2t = image_to_text_ranks(&split, &SCORES).unwrap();
    assert_eq!(i2t, [1, 0, 0]);
    assert_eq!(
        image_to_text_recall(&split, &SCORES, &[1, 2]).unwrap(),
        [2.0 / 3.0, 1.0]
    );
    assert_eq!(recall_at_k(&i2t, 1), 2.0 / 3.0);
    assert_eq!(recall_at_k(&[], 1), 0.0);

    // Ties count against the query: with all scores equal, a caption's rank is the number
    // of images that are not hits for it.
    let flat = [0.0f32; 18];
    assert_eq!(
        text_to_image_ranks(&split, &flat).unwrap(),
        [2, 2, 2, 1, 2, 1]
    );
    assert_eq!(image_to_text_ranks(&split, &flat).unwrap(), [4, 3, 3]);

    let e = err(text_to_image_ranks(&split, &SCORES[..17]));
    assert_eq!(
        e.to_string(),
        "score matrix: 17 scores, expected 3 images × 6 captions = 18"
    );
    let mut nan = SCORES;
    nan[7] = f32::NAN;
    assert_eq!(
        err(image_to_text_ranks(&split, &nan)).to_string(),
        "score matrix: NaN at image 1, caption 1"
    );
}

#[test]
fn chance_recall_and_groups_count_shared_captions() {
    let img = |id: u64, split: &str, caps: &[&str]| KarpathyImage {
        filepath: None,
        filename: format!("{id}.png"),
        imgid: id,
        split: split.into(),
        sentences: caps
            .iter()
            .map(|c| KarpathySentence {
                tokens: vec![],
                raw: c.to_string(),
                imgid: id,
                sentid: id,
            })
            .collect(),
        sentids: vec![id],
        cocoid: None,
    };
    // Test split: N = 4 images; "A red" is shared by images 0 and 1 (h = 2), the others h = 1.
    let images = vec![
        img(0, "test", &["a red"]),
        img(1, "test", &["A  red"]),
        img(2, "test", &["b"]),
        img(3, "test", &["c"]),
        img(4, "train", &["b"]),
    ];
    // R@1: (2/4 + 2/4 + 1/4 + 1/4) / 4 = 0.375.
    assert!((chance_recall(&images, "test", 1) - 0.375).abs() < 1e-12);
    // R@2: h = 2 misses both with (2/4)(1/3) = 1/6, h = 1 with (3/4)(2/3) = 1/2:
    // (5/6 + 5/6 + 1/2 + 1/2) / 4 = 2/3.
    assert!((chance_recall(&images, "test", 2) - 2.0 / 3.0).abs() < 1e-12);
    assert!((chance_recall(&images, "test", 4) - 1.0).abs() < 1e-12);
    // Groups span splits ("b" in test and train), keyed by the normalised caption.
    let groups = equivalent_groups_of(&images);
    let got: Vec<(&str, &[u64])> = groups
        .iter()
        .map(|g| (g.caption.as_str(), g.images.as_slice()))
        .collect();
    assert_eq!(got, [("a red", &[0u64, 1][..]), ("b", &[2, 4][..])]);
}
