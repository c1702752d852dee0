//! Tests of the fast paths against the oracle, hand-worked cases and checkpoint comparisons.

mod checkpoints;
mod registry;
mod slices;

use crate::distance::{DISTANCES, Distances};

/// `|got − want| <= 1e-9 · max(|got|, |want|) + 1e-12` for each distance.
pub fn assert_close(got: &Distances, want: [f64; DISTANCES.len()], what: &str) {
    let names = DISTANCES.map(|d| d.name);
    for ((g, w), n) in got.0.into_iter().zip(want).zip(names) {
        let tol = 1e-9 * g.abs().max(w.abs()) + 1e-12;
        assert!((g - w).abs() <= tol, "{what}: {n} = {g}, oracle {w}");
    }
}
