//! TIES finds each threshold in one pass bracketed by a sample of |τ|; when the sample
//! misrepresents the tensor the bracket misses and the executor falls back to the two-pass radix
//! select. Both paths against the float64 oracle, bit for bit in f32, ties at the threshold
//! included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mmerge_core::Dtype;
use mmerge_merge::exec::CHUNK;
use mmerge_merge::methods::gta::{self, Gta, Sparsify, sample_runs};

/// Merges base + 2 models of one [2, CHUNK] tensor with TIES (density 0.5) and checks every
/// element against the oracle. `tau(i, j)` is input i's task vector at element j.
fn ties_case(tau: impl Fn(usize, usize) -> f32) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let numel = 2 * CHUNK;
    let mut g = Gen::new(5);
    // bf16-precision base values: base + τ (multiples of 1/16) is exact, so |τ| ties exactly.
    let base = quantize(&g.vec(numel, 1.0), Dtype::BF16);
    let name = "model.layers.0.mlp.up_proj.weight";
    let mut models = vec![base.clone()];
    for i in 0..2 {
        let m: Vec<f32> = (0..numel).map(|j| base[j] + tau(i, j)).collect();
        models.push(m);
    }
    for (m, dir) in models.iter().zip(["base", "a", "b"]) {
        let t: Tensors = vec![(name.to_string(), vec![2, CHUNK], m.clone())];
        write_model(&p(d, dir), Dtype::F32, &t, 1 << 30, &[]).unwrap();
    }
    let yaml = format!(
        "merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0, density: 0.5}}\n  - model: {b}\n    parameters: {{weight: 0.5, density: 0.5}}\ndtype: float32\n",
        base = p(d, "base").display(),
        a = p(d, "a").display(),
        b = p(d, "b").display()
    );
    let out = merge(d, &yaml, 0).unwrap();
    let params = Gta {
        weights: vec![1.0, 0.5],
        densities: vec![0.5; 2],
        gammas: vec![],
        epsilons: vec![],
        shape: vec![],
        sparsify: Sparsify::Magnitude,
        rescale: false,
        elect_sign: true,
        normalize: true,
        lambda: 1.0,
    };
    let want = gta::oracle(&params, name, 0, &base, &models[1..]);
    let got = out.read_f32(name).unwrap();
    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(*g, *w as f32, "element {j}");
    }
}

/// |τ| from a few levels (many exact ties at the threshold), signs mixed.
fn levels(i: usize, j: usize) -> f32 {
    let h = mmerge_core::hash::splitmix64((i * 1_000_003 + j) as u64);
    let mag = ((h % 7) as f32 + 1.0) * 0.0625;
    if h >> 63 == 0 { mag } else { -mag }
}

#[test]
fn bracketed_select_matches_oracle() {
    ties_case(levels);
}

#[test]
fn radix_fallback_matches_oracle_when_the_sample_misleads() {
    // Tiny |τ| exactly where the executor samples, large elsewhere: the sample's bracket lies
    // far below the true threshold, so the bracketed pass declines and the radix select runs.
    let sampled: Vec<bool> = {
        let mut s = vec![false; 2 * CHUNK];
        for c in 0..2 {
            for run in sample_runs(c, &(c * CHUNK..(c + 1) * CHUNK)) {
                s[run].iter_mut().for_each(|x| *x = true);
            }
        }
        s
    };
    assert!(sampled.iter().filter(|x| **x).count() < CHUNK / 100);
    ties_case(|i, j| {
        let t = levels(i, j);
        if sampled[j] { t * 1e-3 } else { t }
    });
}
