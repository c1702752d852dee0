//! Tests of the fast paths against the oracle, hand-worked cases and checkpoint comparisons.

mod checkpoints;
mod slices;

use crate::distance::Metrics;

/// The metrics in oracle order.
pub fn as_array(m: &Metrics) -> [f64; 6] {
    [
        m.l2,
        m.l2_normalized,
        m.cosine,
        m.sign,
        m.soft_sign,
        m.truncated_soft_sign,
    ]
}

/// `|got − want| <= 1e-9 · max(|got|, |want|) + 1e-12` for each metric.
pub fn assert_close(got: &Metrics, want: [f64; 6], what: &str) {
    let names = ["l2", "l2_normalized", "cosine", "sign", "soft_sign", "tssd"];
    for ((g, w), n) in as_array(got).into_iter().zip(want).zip(names) {
        let tol = 1e-9 * g.abs().max(w.abs()) + 1e-12;
        assert!((g - w).abs() <= tol, "{what}: {n} = {g}, oracle {w}");
    }
}
