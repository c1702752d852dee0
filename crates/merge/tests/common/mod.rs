//! Helpers shared by the merge integration tests: seeded tensors, checkpoints on disk, and a
//! merge run from YAML text.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use mmerge_core::hash::SplitMix64;
use mmerge_core::{Checkpoint, Dtype};
use mmerge_merge::{MergeConfig, MergeOptions, MergePlan};

/// Test values from core's one ad-hoc random stream.
#[derive(Debug)]
pub struct Gen(SplitMix64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.signed_unit_f32() * scale).collect()
    }
}

/// Rounds values to what `dtype` stores.
pub fn quantize(v: &[f32], dtype: Dtype) -> Vec<f32> {
    let mut b = vec![0u8; v.len() * dtype.size()];
    dtype.encode_f32(v, &mut b);
    let mut out = vec![0f32; v.len()];
    dtype.decode_f32(&b, &mut out);
    out
}

pub type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

pub use mmerge_core::writer::write_model;

/// Runs a merge config given as text; returns the opened output.
pub fn merge(dir: &Path, yaml: &str, seed: u64) -> Result<Checkpoint, mmerge_merge::MergeError> {
    let cfg_path = dir.join("merge.yml");
    std::fs::write(&cfg_path, yaml).unwrap();
    let cfg = MergeConfig::from_yaml(yaml, &cfg_path)?;
    let plan = MergePlan::new(&cfg, &cfg_path, seed)?;
    let mut opts = MergeOptions::new(dir.join("out"));
    opts.force = true;
    opts.max_shard_bytes = 200_000;
    mmerge_merge::run(&plan, yaml, &opts, &ProgressBar::hidden())?;
    Ok(Checkpoint::open(dir.join("out")).unwrap())
}

pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Asserts |got − want| ≤ tol·max(|want|, floor) elementwise, naming the first failure.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(
            err <= tol * w.abs().max(floor),
            "{name}[{j}]: got {g}, want {w} (err {err:e})"
        );
    }
}

/// Weights of the given keys and shapes, uniform in [-1, 1) from core's random stream.
pub fn random_weights(keys: &[(String, Vec<usize>)], seed: u64) -> mmerge_merge::align::Weights {
    let mut rng = SplitMix64::new(seed);
    keys.iter()
        .map(|(k, s)| {
            let data = (0..s.iter().product())
                .map(|_| rng.signed_unit_f32())
                .collect();
            let shape = s.clone();
            (k.clone(), mmerge_merge::align::Tensor { shape, data })
        })
        .collect()
}

/// The largest |x − y| over all tensors (same keys and shapes asserted).
pub fn max_diff(x: &mmerge_merge::align::Weights, y: &mmerge_merge::align::Weights) -> f32 {
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    x.iter()
        .map(|(k, t)| {
            assert_eq!(t.shape, y[k].shape, "{k}");
            t.data
                .iter()
                .zip(&y[k].data)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}
