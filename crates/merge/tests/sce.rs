//! SCE's top-k variance selection through the executor, where many elements tie at the k-th
//! largest variance and only some of them are kept (lowest index first, across chunk
//! boundaries), against the float64 oracle bit for bit in f32.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mmerge_core::Dtype;
use mmerge_merge::exec::CHUNK;
use mmerge_merge::methods::sce;

/// Task vectors from a few exact levels, so that variances tie exactly.
fn level(i: usize, j: usize) -> f32 {
    let h = mmerge_core::hash::splitmix64((i * 1_000_003 + j) as u64);
    let mag = ((h % 3) as f32 + 1.0) * 0.0625;
    if h >> 63 == 0 { mag } else { -mag }
}

fn sce_case(select_topk: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let shape = vec![3, CHUNK - 7];
    let numel: usize = shape.iter().product();
    let mut g = Gen::new(11);
    // bf16-precision base values: base + τ is exact, so the variances tie exactly.
    let base = quantize(&g.vec(numel, 1.0), Dtype::BF16);
    let name = "model.layers.0.mlp.up_proj.weight";
    let mut models = vec![base.clone()];
    for i in 0..2 {
        models.push((0..numel).map(|j| base[j] + level(i, j)).collect());
    }
    for (m, dir) in models.iter().zip(["base", "a", "b"]) {
        let t: Tensors = vec![(name.to_string(), shape.clone(), m.clone())];
        write_model(&p(d, dir), Dtype::F32, &t, 1 << 30, &[]).unwrap();
    }
    let yaml = format!(
        "merge_method: sce\nbase_model: {}\nmodels:\n  - model: {}\n  - model: {}\nparameters:\n  select_topk: {select_topk}\ndtype: float32\n",
        p(d, "base").display(),
        p(d, "a").display(),
        p(d, "b").display()
    );
    let out = merge(d, &yaml, 0).unwrap();
    let want = sce::oracle(&base, &models[1..], select_topk);
    let got = out.read_f32(name).unwrap();
    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(*g, *w as f32, "element {j}");
    }
}

#[test]
fn partial_ties_at_the_kth_variance_match_the_oracle() {
    // Two models, |τ| ∈ {1, 2, 3}/16 with random signs: six distinct variances, each shared
    // by thousands of elements, so the k-th largest has ties on both sides of the cut.
    let numel = 3 * (CHUNK - 7);
    let var: Vec<f64> = (0..numel)
        .map(|j| {
            let (a, b) = (f64::from(level(0, j)), f64::from(level(1, j)));
            (a - b) * (a - b) / 4.0
        })
        .collect();
    let nonzero = var.iter().filter(|v| **v != 0.0).count() as u64;
    let k = sce::select_count(nonzero, 0.3) as usize;
    let mut sorted = var.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    assert!(sorted[k] == kth && sorted[..k].iter().filter(|v| **v == kth).count() > 1);
    sce_case(0.3);
}

#[test]
fn select_all_and_none() {
    sce_case(1.0);
    sce_case(0.0);
}
