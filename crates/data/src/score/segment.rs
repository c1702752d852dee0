//! Semantic segmentation scores from a confusion matrix of class-index maps.
//!
//! **Formula** (Long, Shelhamer, Darrell 2015, "Fully Convolutional Networks", arXiv:1411.4038,
//! §5): with n_ij the number of pixels of true class i predicted as class j, summed over every
//! image of the split (not a mean of per-image scores),
//! IoU_c = n_cc / (Σ_j n_cj + Σ_i n_ic − n_cc) = TP / (TP + FN + FP),
//! mIoU = the mean of IoU_c over the classes counted, pixel accuracy = Σ_c n_cc / Σ_ij n_ij.
//! Pixels whose label is the ignore index ([`IGNORE`] = 255, as in PASCAL VOC) are skipped
//! whatever their prediction.
//!
//! **Absent classes.** A class that occurs neither in the labels nor in the predictions of any
//! counted pixel has TP + FP + FN = 0, an undefined IoU; it is **left out of the mean**, as
//! the common VOC / ADE20K evaluation does (mmsegmentation's `IoUMetric`,
//! `mmseg/evaluation/metrics/iou_metric.py`: area_intersect / area_union is NaN there and the
//! mean is `np.nanmean`). A class that is predicted but never labelled has IoU 0 and counts.
//! mIoU with no class counted is 0.

use crate::error::{DataError, Result};
pub use crate::formats::segmentation::IGNORE;

/// A `classes × classes` confusion matrix, added to batch by batch: `count(label, pred)`
/// pixels of true class `label` were predicted as `pred`. Adding two batches gives exactly
/// what adding their concatenation gives (integer counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: usize,
    /// Row-major, row = true class, column = predicted class.
    counts: Vec<u64>,
}

impl Confusion {
    /// An empty matrix for `classes` classes (1..=255; 255 is [`IGNORE`]).
    pub fn new(classes: usize) -> Result<Self> {
        if classes == 0 || classes > usize::from(IGNORE) {
            return Err(DataError::OutOfRange {
                what: format!("segmentation with {classes} classes"),
                allowed: format!("1 to {IGNORE} classes ({IGNORE} is the ignore index)"),
            });
        }
        Ok(Self {
            classes,
            counts: vec![0; classes * classes],
        })
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Pixels of true class `label` predicted as `pred` (0 out of range).
    pub fn count(&self, label: usize, pred: usize) -> u64 {
        if label < self.classes && pred < self.classes {
            self.counts[label * self.classes + pred]
        } else {
            0
        }
    }

    /// Counts one batch of class-index maps (any number of images, flattened): pixels whose
    /// label is [`IGNORE`] are skipped. A length mismatch, a label that is neither a class nor
    /// [`IGNORE`], or a prediction that is not a class (of a counted pixel) is an error, and
    /// then nothing of the batch is counted.
    pub fn add(&mut self, predictions: &[u8], labels: &[u8]) -> Result<()> {
        if predictions.len() != labels.len() {
            return Err(DataError::Shape {
                what: "segmentation scores",
                reason: format!(
                    "{} predicted pixels for {} labelled pixels",
                    predictions.len(),
                    labels.len()
                ),
            });
        }
        let n = self.classes;
        let bad = labels
            .iter()
            .zip(predictions)
            .position(|(&l, &p)| l != IGNORE && (usize::from(l) >= n || usize::from(p) >= n));
        if let Some(k) = bad {
            return Err(DataError::OutOfRange {
                what: format!(
                    "segmentation pixel {k}: label {}, prediction {}",
                    labels[k], predictions[k]
                ),
                allowed: format!(
                    "labels 0..{n} or {IGNORE} (ignore), predictions 0..{n} where not ignored"
                ),
            });
        }
        for (&l, &p) in labels.iter().zip(predictions) {
            if l != IGNORE {
                self.counts[usize::from(l) * n + usize::from(p)] += 1;
            }
        }
        Ok(())
    }

    /// Adds the counts of `other` (same number of classes, else [`DataError::Shape`]).
    pub fn merge(&mut self, other: &Confusion) -> Result<()> {
        if other.classes != self.classes {
            return Err(DataError::Shape {
                what: "segmentation scores",
                reason: format!(
                    "cannot add a {}-class confusion matrix to a {}-class one",
                    other.classes, self.classes
                ),
            });
        }
        self.counts
            .iter_mut()
            .zip(&other.counts)
            .for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// IoU of each class: `Some(TP / (TP + FP + FN))`, or `None` for a class absent from both
    /// the labels and the predictions of the counted pixels.
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|c| {
                let tp = self.count(c, c);
                let row: u64 = (0..self.classes).map(|j| self.count(c, j)).sum();
                let col: u64 = (0..self.classes).map(|i| self.count(i, c)).sum();
                let union = row + col - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// The mean IoU over the classes present in the labels or the predictions (0 if none).
    pub fn mean_iou(&self) -> f64 {
        let present: Vec<f64> = self.iou().into_iter().flatten().collect();
        if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        }
    }

    /// The fraction of counted pixels predicted correctly (0 if none was counted).
    pub fn pixel_accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        let tp: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        if total == 0 {
            0.0
        } else {
            tp as f64 / total as f64
        }
    }
}
