//! Accuracy of classification predictions (image and text classification, NLVR2's
//! true/false): the fraction of examples whose predicted label equals the true one,
//! #{j : ŷⱼ = yⱼ} / n. The standard top-1 accuracy (as NLVR2 reports it, Suhr et al. 2019,
//! arXiv:1811.00491); no deviation. No examples score 0, as [`super::recall_at_k`] does.

use crate::error::{DataError, Result};

/// Correct and total predictions, added to batch by batch; adding two batches gives what
/// adding their concatenation gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accuracy {
    pub correct: u64,
    pub total: u64,
}

impl Accuracy {
    /// Counts one batch of `predictions` against `labels` (same length, else
    /// [`DataError::Shape`], and nothing is counted).
    pub fn add<T: PartialEq>(&mut self, predictions: &[T], labels: &[T]) -> Result<()> {
        if predictions.len() != labels.len() {
            return Err(DataError::Shape {
                what: "accuracy",
                reason: format!(
                    "{} predictions for {} labels",
                    predictions.len(),
                    labels.len()
                ),
            });
        }
        self.correct += predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count() as u64;
        self.total += labels.len() as u64;
        Ok(())
    }

    /// correct / total (0 when nothing was counted).
    pub fn value(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// The accuracy of `predictions` against `labels` in one call.
pub fn accuracy<T: PartialEq>(predictions: &[T], labels: &[T]) -> Result<f64> {
    let mut a = Accuracy::default();
    a.add(predictions, labels)?;
    Ok(a.value())
}
