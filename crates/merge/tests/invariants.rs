//! Invariants every merge must keep, as property tests over random tensors and dtypes, and
//! DARE's statistics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mmerge_core::Dtype;
use proptest::prelude::*;

fn tensors(g: &mut Gen, shape: &[usize]) -> Tensors {
    let numel: usize = shape.iter().product();
    vec![
        (
            "model.embed_tokens.weight".into(),
            shape.to_vec(),
            g.vec(numel, 1.0),
        ),
        (
            "model.layers.0.mlp.w".into(),
            shape.to_vec(),
            g.vec(numel, 0.5),
        ),
        (
            "model.layers.1.mlp.w".into(),
            shape.to_vec(),
            g.vec(numel, 2.0),
        ),
    ]
}

fn dtype_of(i: u8) -> Dtype {
    [Dtype::F32, Dtype::BF16, Dtype::F16][usize::from(i % 3)]
}

fn assert_same(out: &mmerge_core::Checkpoint, want: &Tensors, what: &str) {
    for (n, _, v) in want {
        assert_eq!(&out.read_f32(n).unwrap(), v, "{what}: {n}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn n_copies_merge_to_the_copy(seed in any::<u64>(), rows in 1usize..40, cols in 1usize..40, dt in any::<u8>()) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let dtype = dtype_of(dt);
        let mut g = Gen::new(seed);
        let theta: Tensors = tensors(&mut g, &[rows, cols]).into_iter().map(|(n, s, v)| (n, s, quantize(&v, dtype))).collect();
        let base: Tensors = tensors(&mut g, &[rows, cols]).into_iter().map(|(n, s, v)| (n, s, quantize(&v, dtype))).collect();
        for name in ["x", "y", "z"] {
            write_model(&d.join(name), dtype, &theta, 1 << 20, &[]).unwrap();
        }
        write_model(&d.join("base"), dtype, &base, 1 << 20, &[]).unwrap();
        let models = format!("  - model: {x}\n    parameters: {{weight: 0.3, density: 1.0}}\n  - model: {y}\n    parameters: {{weight: 0.5, density: 1.0}}\n  - model: {z}\n    parameters: {{weight: 0.2, density: 1.0}}\n",
            x = p(d, "x").display(), y = p(d, "y").display(), z = p(d, "z").display());
        let linear = models.replace(", density: 1.0", "");
        let out = merge(d, &format!("merge_method: linear\nmodels:\n{linear}"), 0).unwrap();
        assert_same(&out, &theta, "linear");
        for method in ["ties", "dare_ties", "dare_linear"] {
            let norm = if method == "dare_linear" { "parameters: {normalize: true}\n" } else { "" };
            let out = merge(d, &format!("merge_method: {method}\nbase_model: {}\n{norm}models:\n{models}", p(d, "base").display()), seed).unwrap();
            assert_same(&out, &theta, method);
        }
        // Task arithmetic with weights summing to one.
        let out = merge(d, &format!("merge_method: task_arithmetic\nbase_model: {}\nmodels:\n{linear}", p(d, "base").display()), 0).unwrap();
        for (n, _, v) in &theta {
            let got = out.read_f32(n).unwrap();
            for (a, b) in got.iter().zip(v) {
                prop_assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "task_arithmetic {n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn weight_one_on_one_model_returns_it(seed in any::<u64>(), n in 1usize..300, dt in any::<u8>()) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let dtype = dtype_of(dt);
        let mut g = Gen::new(seed);
        let models: Vec<Tensors> = (0..3).map(|_| tensors(&mut g, &[n]).into_iter().map(|(k, s, v)| (k, s, quantize(&v, dtype))).collect()).collect();
        for (i, m) in models.iter().enumerate() {
            write_model(&d.join(format!("m{i}")), dtype, m, 1 << 20, &[]).unwrap();
        }
        let out = merge(d, &format!("merge_method: linear\nmodels:\n  - model: {}\n    parameters: {{weight: 0}}\n  - model: {}\n    parameters: {{weight: 1}}\n  - model: {}\n    parameters: {{weight: 0}}\n",
            p(d, "m0").display(), p(d, "m1").display(), p(d, "m2").display()), 0).unwrap();
        assert_same(&out, &models[1], "linear weight 1");
        // DARE with density 1 is the identity on task vectors: base + 1·(θ − base) = θ.
        let out = merge(d, &format!("merge_method: dare_linear\nbase_model: {b}\nmodels:\n  - model: {b}\n  - model: {x}\n    parameters: {{weight: 1, density: 1}}\n",
            b = p(d, "m0").display(), x = p(d, "m2").display()), seed).unwrap();
        assert_same(&out, &models[2], "dare density 1");
        // SLERP's ends.
        for (t, want) in [(0, &models[0]), (1, &models[1])] {
            let out = merge(d, &format!("merge_method: slerp\nbase_model: {b}\nmodels:\n  - model: {b}\n  - model: {x}\nparameters: {{t: {t}}}\n",
                b = p(d, "m0").display(), x = p(d, "m1").display()), 0).unwrap();
            assert_same(&out, want, &format!("slerp t={t}"));
        }
    }
}

/// Asserts that the kept (nonzero) entries of a sparsified merge `v` of task vector `tau` are
/// τ·s with one factor s per tensor, s = ‖τ‖₁/‖τ̂‖₁ with `rescale` (so the output keeps the L1
/// norm `l1` of τ), else 1; returns s.
fn assert_kept_entries_scaled(tau: &[f32], v: &[f32], l1: f64, rescale: bool) -> f64 {
    let kept_l1: f64 = tau
        .iter()
        .zip(v)
        .filter(|(_, o)| **o != 0.0)
        .map(|(t, _)| f64::from(t.abs()))
        .sum();
    let s = if rescale { l1 / kept_l1 } else { 1.0 };
    for (t, o) in tau.iter().zip(v) {
        if *o != 0.0 {
            assert!(
                (f64::from(*o) - f64::from(*t) * s).abs()
                    <= 1e-6 * f64::from(t.abs()).max(1e-3) * s
            );
        }
    }
    if rescale {
        let out_l1: f64 = v.iter().map(|x| f64::from(x.abs())).sum();
        assert!(
            (out_l1 / l1 - 1.0).abs() < 1e-5,
            "L1 norm preserved: {out_l1} vs {l1}"
        );
    }
    s
}

#[test]
fn dare_keeps_the_density_fraction_and_rescales_the_l1_norm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let n = 400_000;
    let mut g = Gen::new(3);
    let tau: Vec<f32> = g.vec(n, 1.0);
    let l1: f64 = tau.iter().map(|x| f64::from(x.abs())).sum();
    let base = vec![("model.layers.0.w".to_string(), vec![n], vec![0.0f32; n])];
    let x = vec![("model.layers.0.w".to_string(), vec![n], tau.clone())];
    write_model(&d.join("base"), Dtype::F32, &base, usize::MAX, &[]).unwrap();
    write_model(&d.join("x"), Dtype::F32, &x, usize::MAX, &[]).unwrap();
    let yaml = |density: f64, rescale: bool| {
        format!(
            "merge_method: dare_linear\nbase_model: {b}\nmodels:\n  - model: {x}\n    parameters: {{weight: 1, density: {density}}}\nparameters: {{rescale: {rescale}}}\n",
            b = p(d, "base").display(),
            x = p(d, "x").display()
        )
    };
    for (density, rescale) in [(0.1, true), (0.35, true), (0.7, false)] {
        let v = merge(d, &yaml(density, rescale), 9)
            .unwrap()
            .read_f32("model.layers.0.w")
            .unwrap();
        let kept = v.iter().filter(|x| **x != 0.0).count() as f64 / n as f64;
        // The binomial standard deviation is below 0.001 here; allow 4 of them.
        assert!(
            (kept - density).abs() < 0.004,
            "density {density}: kept {kept}"
        );
        let s = assert_kept_entries_scaled(&tau, &v, l1, rescale);
        if rescale {
            assert!(
                (s * density - 1.0).abs() < 0.02,
                "the factor is about 1/density: {s}"
            );
        }
    }
    // Same seed, same mask; another seed, another mask.
    let a = merge(d, &yaml(0.5, true), 1)
        .unwrap()
        .read_f32("model.layers.0.w")
        .unwrap();
    let b = merge(d, &yaml(0.5, true), 1)
        .unwrap()
        .read_f32("model.layers.0.w")
        .unwrap();
    let c = merge(d, &yaml(0.5, true), 2)
        .unwrap()
        .read_f32("model.layers.0.w")
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn della_keeps_large_entries_more_often_by_rank_and_rescales_the_l1_norm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Rows of 1000 do not divide a chunk: many rows cross a chunk boundary.
    let (rows, cols) = (240, 1000);
    let n = rows * cols;
    assert!(n > 3 * mmerge_merge::exec::CHUNK);
    let mut g = Gen::new(11);
    let tau: Vec<f32> = g.vec(n, 1.0);
    let l1: f64 = tau.iter().map(|x| f64::from(x.abs())).sum();
    let name = "model.layers.0.w";
    let base = vec![(name.to_string(), vec![rows, cols], vec![0.0f32; n])];
    let x = vec![(name.to_string(), vec![rows, cols], tau.clone())];
    write_model(&d.join("base"), Dtype::F32, &base, usize::MAX, &[]).unwrap();
    write_model(&d.join("x"), Dtype::F32, &x, usize::MAX, &[]).unwrap();
    let yaml = |density: f64, epsilon: f64, rescale: bool| {
        format!(
            "merge_method: della_linear\nbase_model: {b}\nmodels:\n  - model: {x}\n    parameters: {{weight: 1, density: {density}, epsilon: {epsilon}}}\nparameters: {{rescale: {rescale}}}\n",
            b = p(d, "base").display(),
            x = p(d, "x").display()
        )
    };
    // The ascending |τ| rank position of every entry within its row.
    let mut position = vec![0usize; n];
    for r in 0..rows {
        let mut order: Vec<usize> = (r * cols..(r + 1) * cols).collect();
        order.sort_by(|&a, &b| tau[a].abs().total_cmp(&tau[b].abs()));
        for (q, &j) in order.iter().enumerate() {
            position[j] = q;
        }
    }
    const BANDS: usize = 5;
    for (density, epsilon, rescale) in [(0.5, 0.3, true), (0.3, 0.1, false), (0.6, 0.0, true)] {
        let v = merge(d, &yaml(density, epsilon, rescale), 9)
            .unwrap()
            .read_f32(name)
            .unwrap();
        // Per band of rank positions: the kept fraction against the mean keep probability
        // density − ε + 2ε·q/(cols − 1) of its entries.
        let mut kept = [0usize; BANDS];
        let mut count = [0usize; BANDS];
        let mut want = [0f64; BANDS];
        for j in 0..n {
            let q = position[j];
            let band = q * BANDS / cols;
            count[band] += 1;
            want[band] += density - epsilon + 2.0 * epsilon * q as f64 / (cols - 1) as f64;
            kept[band] += usize::from(v[j] != 0.0);
        }
        let mut fractions = [0f64; BANDS];
        for b in 0..BANDS {
            let (c, p) = (count[b] as f64, want[b] / count[b] as f64);
            fractions[b] = kept[b] as f64 / c;
            // Four binomial standard deviations.
            let bound = 4.0 * (p * (1.0 - p) / c).sqrt();
            assert!(
                (fractions[b] - p).abs() < bound,
                "density {density} ε {epsilon} band {b}: kept {} want {p} (±{bound})",
                fractions[b]
            );
        }
        if epsilon > 0.0 {
            // Larger entries of a row survive more often.
            assert!(fractions.windows(2).all(|w| w[0] < w[1]), "{fractions:?}");
        }
        assert_kept_entries_scaled(&tau, &v, l1, rescale);
    }
    // mergekit's check: density ± epsilon must stay inside (0, 1).
    for (density, epsilon) in [(0.1, 0.15), (0.9, 0.15), (0.5, 0.5)] {
        let e = merge(d, &yaml(density, epsilon, true), 9)
            .err()
            .unwrap_or_else(|| panic!("density {density} ε {epsilon} must be refused"))
            .to_string();
        assert!(e.contains("epsilon") && e.contains("(0, 1)"), "{e}");
    }
    // Density 0 and 1 are not checked (mergekit returns zeros or τ first).
    let all = merge(d, &yaml(1.0, 0.3, true), 9)
        .unwrap()
        .read_f32(name)
        .unwrap();
    assert_eq!(all, tau);
}

#[test]
fn same_config_and_seed_give_the_same_bytes_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut g = Gen::new(5);
    let n = mmerge_merge::exec::CHUNK * 3 + 17;
    for name in ["base", "x", "y"] {
        let t = vec![
            ("model.layers.0.w".to_string(), vec![n], g.vec(n, 1.0)),
            ("model.norm.weight".to_string(), vec![7], g.vec(7, 1.0)),
        ];
        write_model(&d.join(name), Dtype::BF16, &t, usize::MAX, &[]).unwrap();
    }
    let models = format!(
        "  - model: {x}\n    parameters: {{weight: 0.7, density: 0.3}}\n  - model: {y}\n    parameters: {{weight: 0.4, density: 0.6}}\n",
        x = p(d, "x").display(),
        y = p(d, "y").display()
    );
    for method in ["ties", "dare_ties", "slerp", "breadcrumbs_ties", "della"] {
        let yaml = if method == "slerp" {
            format!(
                "merge_method: slerp\nbase_model: {}\nmodels:\n  - model: {}\nparameters: {{t: 0.3}}\n",
                p(d, "base").display(),
                p(d, "x").display()
            )
        } else {
            format!(
                "merge_method: {method}\nbase_model: {}\nparameters: {{rescale: true}}\nmodels:\n{models}",
                p(d, "base").display()
            )
        };
        let bytes = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| merge(d, &yaml, 42).unwrap());
            let mut files: Vec<_> = std::fs::read_dir(d.join("out"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files
                .iter()
                .map(|f| std::fs::read(f).unwrap())
                .collect::<Vec<_>>()
        };
        let one = bytes(1);
        assert_eq!(one, bytes(3), "{method}: 1 vs 3 threads");
        assert_eq!(one, bytes(2), "{method}: 1 vs 2 threads");
    }
}
