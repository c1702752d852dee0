//! Histograms of `f32` values as `HistogramProto`.
//!
//! Our bucket edges: [`BUCKETS`] (30, the default of TensorBoard's own
//! `tensorboard/plugins/histogram/summary_v2.py`) equal-width buckets spanning
//! `[min, max]` of the values, computed in `f64`:
//! `bucket_limit[i] = min + (i + 1)·(max − min)/30` for `i < 29`, `bucket_limit[29] = max`.
//! Bucket `i` counts the values in `(bucket_limit[i − 1], bucket_limit[i]]` (bucket 0 also
//! holds `min` itself), the `HistogramProto` convention; TensorBoard draws bucket 0 from
//! `min` and the last one up to `max`. All values equal: one bucket, `bucket_limit = [max]`.
//! `num`, `sum` and `sum_squares` are exact counts and `f64` sums over the values.
//!
//! Deviation from TensorFlow's legacy writer (`core/lib/histogram/histogram.cc`): that one
//! uses fixed exponential edges (±1e-12·1.1^k) and drops empty buckets; equal-width edges
//! over the data's range are what TensorBoard's TF2 summaries use and read better for
//! weights.

use crate::proto::HistogramProto;
use crate::{Result, TensorboardError};

/// Buckets per histogram (when the values are not all equal).
pub const BUCKETS: usize = 30;

/// The histogram of `values`; fails on no values or a non-finite one (a NaN has no bucket).
pub fn histogram(tag: &str, values: &[f32]) -> Result<HistogramProto> {
    if values.is_empty() {
        return Err(TensorboardError::EmptyHistogram { tag: tag.into() });
    }
    let (mut min, mut max, mut sum, mut sum_squares) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0);
    for (index, &v) in values.iter().enumerate() {
        if !v.is_finite() {
            return Err(TensorboardError::NonFinite {
                tag: tag.into(),
                index,
                value: v,
            });
        }
        let v = f64::from(v);
        min = min.min(v);
        max = max.max(v);
        sum += v;
        sum_squares += v * v;
    }
    let bucket_limit = bucket_limits(min, max);
    let mut bucket = vec![0.0; bucket_limit.len()];
    let width = (max - min) / BUCKETS as f64;
    for &v in values {
        bucket[bucket_index(&bucket_limit, min, width, f64::from(v))] += 1.0;
    }
    Ok(HistogramProto {
        min,
        max,
        num: values.len() as f64,
        sum,
        sum_squares,
        bucket_limit,
        bucket,
    })
}

/// The right edges of the buckets for values spanning `[min, max]` (see the module doc).
pub fn bucket_limits(min: f64, max: f64) -> Vec<f64> {
    if min >= max {
        return vec![max];
    }
    let width = (max - min) / BUCKETS as f64;
    let mut limits: Vec<f64> = (1..BUCKETS)
        .map(|i| (min + i as f64 * width).min(max))
        .collect();
    limits.push(max);
    limits
}

/// The bucket of `v` (`min ≤ v ≤ max`): the first `i` with `v ≤ limits[i]`, found from the
/// arithmetic guess and moved to where the edges, as rounded, put it.
fn bucket_index(limits: &[f64], min: f64, width: f64, v: f64) -> usize {
    let last = limits.len() - 1;
    let mut i = if width > 0.0 {
        (((v - min) / width).ceil() as usize)
            .saturating_sub(1)
            .min(last)
    } else {
        0
    };
    while i > 0 && v <= limits[i - 1] {
        i -= 1;
    }
    while i < last && v > limits[i] {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The oracle: each value's bucket by scanning the edges, sums in plain loops.
    fn oracle_counts(limits: &[f64], values: &[f32]) -> Vec<f64> {
        let mut counts = vec![0.0; limits.len()];
        for &v in values {
            let v = f64::from(v);
            let i = limits
                .iter()
                .position(|&l| v <= l)
                .unwrap_or(limits.len() - 1);
            counts[i] += 1.0;
        }
        counts
    }

    #[test]
    fn hand_worked_integers() {
        // 0..=30: width 1, edges 1..=30; bucket 0 = (−∞, 1] holds 0 and 1.
        let values: Vec<f32> = (0..=30).map(|i| i as f32).collect();
        let h = histogram("w", &values).unwrap();
        assert_eq!(h.bucket_limit, (1..=30).map(f64::from).collect::<Vec<_>>());
        let mut expect = vec![1.0; 30];
        expect[0] = 2.0;
        assert_eq!(h.bucket, expect);
        assert_eq!(
            (h.min, h.max, h.num, h.sum, h.sum_squares),
            (0.0, 30.0, 31.0, 465.0, 9455.0)
        );
    }

    #[test]
    fn equal_values_one_bucket() {
        let h = histogram("w", &[2.5; 4]).unwrap();
        assert_eq!((h.bucket_limit, h.bucket), (vec![2.5], vec![4.0]));
        assert_eq!((h.sum, h.sum_squares), (10.0, 25.0));
    }

    #[test]
    fn rejects_empty_and_non_finite() {
        assert!(
            matches!(histogram("w", &[]), Err(TensorboardError::EmptyHistogram { tag }) if tag == "w")
        );
        let err = histogram("w", &[1.0, f32::NAN]).unwrap_err();
        assert!(
            matches!(err, TensorboardError::NonFinite { index: 1, .. }),
            "{err}"
        );
        let err = histogram("w", &[f32::NEG_INFINITY]).unwrap_err();
        assert!(
            matches!(err, TensorboardError::NonFinite { index: 0, .. }),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn buckets_match_oracle(values in proptest::collection::vec(-1e6f32..1e6, 1..400), spread in 0u32..4) {
            // Some cases with values on the edges: integers over a range of 30·k.
            let values: Vec<f32> = if spread == 0 { values.iter().map(|v| (v % 61.0).round()).collect() } else { values };
            let h = histogram("w", &values).unwrap();
            let limits = bucket_limits(h.min, h.max);
            prop_assert_eq!(&h.bucket_limit, &limits);
            prop_assert!(limits.windows(2).all(|w| w[0] <= w[1]));
            prop_assert_eq!(h.bucket, oracle_counts(&limits, &values));
            let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
            prop_assert_eq!(h.sum, sum);
        }
    }
}
