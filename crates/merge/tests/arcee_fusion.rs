//! Arcee Fusion through the executor against its float64 oracle: softmax rows that span chunk
//! boundaries, a 1-D tensor longer than a chunk (one row), and importances with many exact ties
//! at the quantiles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mmerge_core::Dtype;
use mmerge_merge::exec::CHUNK;
use mmerge_merge::methods::arcee_fusion;

/// Merges base + one model of one tensor and checks it against the oracle bit for bit in f32;
/// returns how many elements took the other model's value.
fn fusion_case(shape: Vec<usize>, diff: impl Fn(&mut Gen, usize) -> f32) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let numel: usize = shape.iter().product();
    let mut g = Gen::new(21);
    let base = quantize(&g.vec(numel, 1.0), Dtype::BF16);
    let other: Vec<f32> = (0..numel).map(|j| base[j] + diff(&mut g, j)).collect();
    let name = "model.layers.0.mlp.up_proj.weight";
    for (m, dir) in [&base, &other].into_iter().zip(["base", "a"]) {
        let t: Tensors = vec![(name.to_string(), shape.clone(), m.clone())];
        write_model(&p(d, dir), Dtype::F32, &t, 1 << 30, &[]).unwrap();
    }
    let yaml = format!(
        "merge_method: arcee_fusion\nbase_model: {}\nmodels:\n  - model: {}\ndtype: float32\n",
        p(d, "base").display(),
        p(d, "a").display()
    );
    let out = merge(d, &yaml, 0).unwrap();
    let want = arcee_fusion::oracle(&base, &other, &shape);
    let got = out.read_f32(name).unwrap();
    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(*g, *w as f32, "element {j}");
    }
    (0..numel).filter(|&j| got[j] != base[j]).count()
}

/// A heavy-tailed difference (0.2·u⁵, u uniform): about one element in six is an outlier above
/// median + 1.5 IQR.
fn heavy(g: &mut Gen, _: usize) -> f32 {
    0.2 * g.vec(1, 1.0)[0].powi(5)
}

#[test]
fn rows_across_chunks_match_the_oracle() {
    let numel = 5 * (CHUNK / 2 + 3);
    let taken = fusion_case(vec![5, CHUNK / 2 + 3], heavy);
    assert!(taken > 0 && taken < numel / 4, "{taken}");
}

#[test]
fn one_row_longer_than_a_chunk_matches_the_oracle() {
    let numel = 2 * CHUNK + 5;
    let taken = fusion_case(vec![numel], heavy);
    assert!(taken > 0 && taken < numel / 4, "{taken}");
}

#[test]
fn tied_importances_match_the_oracle() {
    // |θ₁ − θ₀| from three exact levels within rows of 64: importances repeat exactly.
    let taken = fusion_case(vec![40, 64], |_, j| {
        let h = mmerge_core::hash::splitmix64(j as u64);
        ((h % 3) as f32 + 1.0) * 0.125 * if h >> 63 == 0 { 1.0 } else { -1.0 }
    });
    assert!(taken < 40 * 64, "{taken}");
}
