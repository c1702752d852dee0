#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Accuracy (`score::classify`) and the segmentation confusion matrix, IoU and mIoU
//! (`score::segment`) on hand-worked maps, against scalar set-counting on random maps, and
//! batch by batch.

use mmerge_core::hash::SplitMix64;
use mmerge_data::score::segment::IGNORE;
use mmerge_data::score::{Accuracy, Confusion, accuracy};

#[test]
fn accuracy_by_hand_and_in_batches() {
    assert_eq!(accuracy(&[1, 0, 2, 1], &[1, 1, 2, 0]).unwrap(), 0.5);
    // NLVR2: true / false statements.
    assert_eq!(
        accuracy(&[true, false, true], &[true, true, true]).unwrap(),
        2.0 / 3.0
    );
    assert_eq!(accuracy::<u8>(&[], &[]).unwrap(), 0.0);
    let mut a = Accuracy::default();
    a.add(&[1, 0], &[1, 1]).unwrap();
    a.add(&[2, 1], &[2, 0]).unwrap();
    assert_eq!(
        a,
        Accuracy {
            correct: 2,
            total: 4
        }
    );
    assert_eq!(a.value(), 0.5);
    assert_eq!(
        a.add(&[1, 2, 3], &[1, 2]).unwrap_err().to_string(),
        "accuracy: 3 predictions for 2 labels"
    );
    assert_eq!(a.total, 4, "a rejected batch counts nothing");
}

#[test]
fn miou_of_a_two_by_two_map() {
    // labels  0 1     predictions  0 0
    //         1 1                  1 1
    // Class 0: TP 1, FP 1 (the top-right pixel), FN 0 → 1/2.
    // Class 1: TP 2, FP 0, FN 1 → 2/3.  mIoU = (1/2 + 2/3) / 2 = 7/12; pixels 3/4.
    let mut c = Confusion::new(2).unwrap();
    c.add(&[0, 0, 1, 1], &[0, 1, 1, 1]).unwrap();
    assert_eq!(
        [c.count(0, 0), c.count(0, 1), c.count(1, 0), c.count(1, 1)],
        [1, 0, 1, 2]
    );
    assert_eq!(c.iou(), [Some(0.5), Some(2.0 / 3.0)]);
    assert!((c.mean_iou() - 7.0 / 12.0).abs() < 1e-15);
    assert_eq!(c.pixel_accuracy(), 0.75);
    // An ignored pixel changes nothing, whatever is predicted there.
    let mut d = Confusion::new(2).unwrap();
    d.add(&[0, 0, 1, 1, 1, 200], &[0, 1, 1, 1, IGNORE, IGNORE])
        .unwrap();
    assert_eq!(d, c);
}

#[test]
fn miou_of_three_classes_leaves_absent_classes_out() {
    // 4 classes; class 3 occurs in no label and in no counted prediction (only under an
    // ignored pixel). n[label][pred]: n00 1, n01 1, n11 2, n20 1, n22 1.
    // IoU0 = 1 / (1 + FP 1 (n20) + FN 1 (n01)) = 1/3; IoU1 = 2 / (2 + FP 1 (n01)) = 2/3;
    // IoU2 = 1 / (1 + FN 1 (n20)) = 1/2; IoU3 undefined → left out.
    // mIoU = (1/3 + 2/3 + 1/2) / 3 = 1/2 (it would be 3/8 if class 3 counted as 0).
    let labels = [0, 0, 1, 1, 2, 2, IGNORE];
    let preds = [0, 1, 1, 1, 2, 0, 3];
    let mut c = Confusion::new(4).unwrap();
    c.add(&preds, &labels).unwrap();
    let iou = c.iou();
    assert_eq!(iou[3], None);
    let want = [1.0 / 3.0, 2.0 / 3.0, 0.5];
    for (got, want) in iou.iter().zip(want) {
        assert!((got.unwrap() - want).abs() < 1e-15, "{got:?} vs {want}");
    }
    assert!((c.mean_iou() - 0.5).abs() < 1e-15);
    assert!((c.pixel_accuracy() - 4.0 / 6.0).abs() < 1e-15);
    // A class predicted on a counted pixel but never labelled has IoU 0 and counts:
    // one more pixel labelled 2, predicted 3 → IoU2 = 1/3, IoU3 = 0,
    // mIoU = (1/3 + 2/3 + 1/3 + 0) / 4 = 1/3.
    c.add(&[3], &[2]).unwrap();
    assert_eq!(c.iou()[3], Some(0.0));
    assert!((c.mean_iou() - 1.0 / 3.0).abs() < 1e-15);
    // Nothing counted: every class absent, mIoU 0.
    let empty = Confusion::new(3).unwrap();
    assert_eq!(empty.iou(), [None, None, None]);
    assert_eq!(empty.mean_iou(), 0.0);
}

/// IoU by the set definition, scalar: for class c over the non-ignored pixels,
/// |pred = c ∧ label = c| / |pred = c ∨ label = c|.
fn iou_by_sets(preds: &[u8], labels: &[u8], classes: usize) -> Vec<Option<f64>> {
    (0..classes as u8)
        .map(|c| {
            let kept = || preds.iter().zip(labels).filter(|&(_, &l)| l != IGNORE);
            let inter = kept().filter(|&(&p, &l)| p == c && l == c).count();
            let union = kept().filter(|&(&p, &l)| p == c || l == c).count();
            (union > 0).then(|| inter as f64 / union as f64)
        })
        .collect()
}

#[test]
fn batches_add_up_and_agree_with_set_counting() {
    let mut rng = SplitMix64::new(11);
    for classes in [1usize, 3, 7] {
        let n = 500;
        let labels: Vec<u8> = (0..n)
            .map(|_| match rng.next_u64() % 10 {
                0 => IGNORE,
                // Labels avoid the last class, so for 7 classes one class is only predicted.
                _ => (rng.next_u64() % classes.saturating_sub(1).max(1) as u64) as u8,
            })
            .collect();
        let preds: Vec<u8> = (0..n)
            .map(|_| (rng.next_u64() % classes as u64) as u8)
            .collect();
        let mut one = Confusion::new(classes).unwrap();
        one.add(&preds, &labels).unwrap();
        assert_eq!(one.iou(), iou_by_sets(&preds, &labels, classes));
        // Two batches, added to one matrix or merged from two, equal one batch.
        let cut = 137;
        let mut two = Confusion::new(classes).unwrap();
        two.add(&preds[..cut], &labels[..cut]).unwrap();
        two.add(&preds[cut..], &labels[cut..]).unwrap();
        assert_eq!(two, one);
        let mut other = Confusion::new(classes).unwrap();
        other.add(&preds[cut..], &labels[cut..]).unwrap();
        let mut merged = Confusion::new(classes).unwrap();
        merged.add(&preds[..cut], &labels[..cut]).unwrap();
        merged.merge(&other).unwrap();
        assert_eq!(merged, one);
        assert_eq!(merged.mean_iou(), one.mean_iou());
    }
}

#[test]
fn bad_segmentation_input_is_named() {
    let mut c = Confusion::new(3).unwrap();
    let e = |r: mmerge_data::Result<()>| r.unwrap_err().to_string();
    assert_eq!(
        e(c.add(&[0, 1], &[0])),
        "segmentation scores: 2 predicted pixels for 1 labelled pixels"
    );
    assert_eq!(
        e(c.add(&[0, 1, 2], &[0, 7, 1])),
        "segmentation pixel 1: label 7, prediction 1: labels 0..3 or 255 (ignore), predictions 0..3 where not ignored"
    );
    assert_eq!(
        e(c.add(&[0, 3], &[0, 1])),
        "segmentation pixel 1: label 1, prediction 3: labels 0..3 or 255 (ignore), predictions 0..3 where not ignored"
    );
    assert_eq!(
        c,
        Confusion::new(3).unwrap(),
        "rejected batches count nothing"
    );
    assert_eq!(
        Confusion::new(0).unwrap_err().to_string(),
        "segmentation with 0 classes: 1 to 255 classes (255 is the ignore index)"
    );
    assert!(Confusion::new(255).is_ok());
    assert!(Confusion::new(256).is_err());
    assert_eq!(
        e(c.merge(&Confusion::new(2).unwrap())),
        "segmentation scores: cannot add a 2-class confusion matrix to a 3-class one"
    );
}
