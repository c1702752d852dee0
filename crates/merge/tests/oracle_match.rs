//! Every method against its float64 oracle, through the whole pipeline (checkpoints on disk,
//! sharded output, chunked parallel kernels): several dtypes, tensors larger than a chunk,
//! gradients and filters, many ties at the TIES threshold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mmerge_core::Dtype;
use mmerge_merge::exec::CHUNK;
use mmerge_merge::methods::gta::{Gta, Sparsify};
use mmerge_merge::methods::{gta, linear, slerp};

const LAYERS: usize = 3;

/// Shapes: a pre tensor, per-layer attention and MLP tensors (one larger than two chunks),
/// a post tensor.
fn shapes() -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![7, 5])];
    for i in 0..LAYERS {
        v.push((
            format!("model.layers.{i}.self_attn.q_proj.weight"),
            vec![5, 5],
        ));
        let big = if i == 1 {
            vec![3, CHUNK * 2 / 3 + 11]
        } else {
            vec![4, 9]
        };
        v.push((format!("model.layers.{i}.mlp.up_proj.weight"), big));
    }
    v.push(("model.norm.weight".to_string(), vec![5]));
    v
}

fn depth_of(name: &str) -> f64 {
    match mmerge_core::keys::role(name) {
        mmerge_core::TensorRole::Layer(i) => i as f64 / (LAYERS - 1) as f64,
        mmerge_core::TensorRole::Pre => 0.0,
        mmerge_core::TensorRole::Post => 0.0,
    }
}

/// Writes base + 3 models; inputs are quantised to `dtype`; `levels` > 0 makes values come
/// from a small set (many exact ties in |τ|).
fn setup(dir: &std::path::Path, dtype: Dtype, seed: u64, levels: u32) -> Vec<Tensors> {
    let mut g = Gen::new(seed);
    let mut models = vec![];
    for m in 0..4 {
        let t: Tensors = shapes()
            .into_iter()
            .map(|(n, s)| {
                let numel = s.iter().product();
                let v = if levels > 0 {
                    (0..numel)
                        .map(|_| (g.next_u64() % u64::from(levels)) as f32 * 0.125 - 0.25)
                        .collect()
                } else {
                    g.vec(numel, if m == 0 { 1.0 } else { 0.3 })
                };
                (n, s, quantize(&v, dtype))
            })
            .collect();
        let t = if m == 0 || levels > 0 {
            t
        } else {
            // Experts = base + a perturbation, as fine-tunes are.
            t.into_iter()
                .zip(&models[0])
                .map(
                    |((n, s, v), (_, _, b)): (_, &(String, Vec<usize>, Vec<f32>))| {
                        let x: Vec<f32> = v.iter().zip(b).map(|(d, b)| b + d).collect();
                        (n, s, quantize(&x, dtype))
                    },
                )
                .collect()
        };
        write_model(&dir.join(["base", "a", "b", "c"][m]), dtype, &t, 1_000, &[]).unwrap();
        models.push(t);
    }
    models
}

fn out_tol(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 1e-6,
        Dtype::BF16 => 1.0 / 128.0,
        _ => 1.0 / 1024.0,
    }
}

#[test]
fn linear_with_gradients_and_filters() {
    for (seed, dtype) in [(1, Dtype::F32), (2, Dtype::BF16), (3, Dtype::F16)] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let m = setup(d, dtype, seed, 0);
        let yaml = format!(
            "merge_method: linear\nmodels:\n  - model: {a}\n    parameters:\n      weight: [0.2, 1.0]\n  - model: {b}\n    parameters:\n      weight:\n        - filter: self_attn\n          value: 0.7\n        - filter: mlp\n          value: [1, 0, 2]\n        - value: 0.1\n  - model: {c}\n    parameters: {{weight: 0.5}}\n",
            a = p(d, "a").display(),
            b = p(d, "b").display(),
            c = p(d, "c").display()
        );
        let out = merge(d, &yaml, 0).unwrap();
        for (i, (name, _, _)) in m[0].iter().enumerate() {
            let t = depth_of(name);
            let wa = 0.2 + 0.8 * t;
            let wb = if name.contains("self_attn") {
                0.7
            } else if name.contains("mlp") {
                if t <= 0.5 {
                    1.0 - 2.0 * t
                } else {
                    2.0 * (2.0 * t - 1.0)
                }
            } else {
                0.1
            };
            let inputs = [m[1][i].2.clone(), m[2][i].2.clone(), m[3][i].2.clone()];
            let want = linear::oracle(&inputs, &[wa, wb, 0.5], true);
            let want = quantize(&want.iter().map(|x| *x as f32).collect::<Vec<_>>(), dtype);
            let want: Vec<f64> = want.into_iter().map(f64::from).collect();
            assert_close(
                name,
                &out.read_f32(name).unwrap(),
                &want,
                out_tol(dtype),
                1e-3,
            );
            assert_eq!(out.meta(name).unwrap().dtype, dtype);
        }
    }
}

/// One task-vector case; the flags are (rescale, elect signs, normalize).
fn gta_case(
    method: &str,
    sparsify: Sparsify,
    (rescale, elect, normalize): (bool, bool, bool),
    levels: u32,
    dtype: Dtype,
) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let m = setup(d, dtype, 11 + levels as u64, levels);
    let extra = if method == "task_arithmetic" {
        ""
    } else {
        ", density: [0.3, 0.9]"
    };
    let yaml = format!(
        "merge_method: {method}\nbase_model: {base}\nmodels:\n  - model: {base}\n  - model: {a}\n    parameters: {{weight: 0.6{extra}}}\n  - model: {b}\n    parameters: {{weight: -0.4{extra}}}\n  - model: {c}\n    parameters: {{weight: 1.1{extra}}}\nparameters:\n  normalize: {normalize}\n  lambda: 0.9\n{rescale_line}dtype: float32\n",
        rescale_line = if method == "task_arithmetic" {
            String::new()
        } else {
            format!("  rescale: {rescale}\n")
        },
        base = p(d, "base").display(),
        a = p(d, "a").display(),
        b = p(d, "b").display(),
        c = p(d, "c").display()
    );
    let seed = 77;
    let out = merge(d, &yaml, seed).unwrap();
    for (i, (name, _, _)) in m[0].iter().enumerate() {
        let t = depth_of(name);
        let dens = if method == "task_arithmetic" {
            1.0
        } else {
            0.3 + 0.6 * t
        };
        let params = Gta {
            weights: vec![0.6, -0.4, 1.1],
            densities: vec![dens; 3],
            gammas: vec![],
            epsilons: vec![],
            shape: vec![],
            sparsify,
            rescale,
            elect_sign: elect,
            normalize,
            lambda: 0.9,
        };
        let inputs = [m[1][i].2.clone(), m[2][i].2.clone(), m[3][i].2.clone()];
        let want = gta::oracle(&params, name, seed, &m[0][i].2, &inputs);
        assert_close(
            &format!("{method} {name}"),
            &out.read_f32(name).unwrap(),
            &want,
            1e-6,
            1e-3,
        );
    }
}

#[test]
fn task_arithmetic_matches_oracle() {
    gta_case(
        "task_arithmetic",
        Sparsify::None,
        (false, false, false),
        0,
        Dtype::F32,
    );
    gta_case(
        "task_arithmetic",
        Sparsify::None,
        (false, false, true),
        0,
        Dtype::BF16,
    );
}

#[test]
fn ties_matches_oracle_including_ties_at_the_threshold() {
    gta_case(
        "ties",
        Sparsify::Magnitude,
        (false, true, true),
        0,
        Dtype::F32,
    );
    gta_case(
        "ties",
        Sparsify::Magnitude,
        (true, true, true),
        0,
        Dtype::BF16,
    );
    // Values from 5 levels: |τ| takes few values, so the threshold splits a run of equal
    // magnitudes, across chunk boundaries in the large tensor.
    gta_case(
        "ties",
        Sparsify::Magnitude,
        (false, true, false),
        5,
        Dtype::F32,
    );
}

#[test]
fn dare_matches_oracle() {
    gta_case(
        "dare_linear",
        Sparsify::Random,
        (true, false, false),
        0,
        Dtype::F32,
    );
    gta_case(
        "dare_ties",
        Sparsify::Random,
        (true, true, true),
        0,
        Dtype::F32,
    );
    gta_case(
        "dare_ties",
        Sparsify::Random,
        (false, true, false),
        0,
        Dtype::BF16,
    );
}

#[test]
fn slerp_matches_oracle_with_filtered_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let m = setup(d, Dtype::F32, 5, 0);
    let yaml = format!(
        "slices:\n  - sources:\n      - model: {base}\n        layer_range: [0, {LAYERS}]\n      - model: {a}\n        layer_range: [0, {LAYERS}]\nmerge_method: slerp\nbase_model: {base}\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\ndtype: float32\n",
        base = p(d, "base").display(),
        a = p(d, "a").display()
    );
    let out = merge(d, &yaml, 0).unwrap();
    for (i, (name, _, _)) in m[0].iter().enumerate() {
        let t = depth_of(name);
        let g = |v: [f64; 5]| mmerge_merge::params::interpolate(&v, t).unwrap();
        let tt = if name.contains("self_attn") {
            g([0.0, 0.5, 0.3, 0.7, 1.0])
        } else if name.contains("mlp") {
            g([1.0, 0.5, 0.7, 0.3, 0.0])
        } else {
            0.5
        };
        let want = slerp::oracle(&m[0][i].2, &m[1][i].2, tt);
        assert_close(name, &out.read_f32(name).unwrap(), &want, 1e-6, 1e-3);
    }
}
