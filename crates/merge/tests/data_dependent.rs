//! The data-dependent methods against what they claim to be, through `mmerge merge` configs:
//! RegMean is the float64 least-squares fit to every model's outputs on its raw activations;
//! with α = 0 it is a per-feature weighted average (the plain average when the Gram diagonals
//! agree); uncertainty-based gradient matching is task arithmetic when the task Fishers vanish
//! next to the base's, and Fisher averaging when the base's Fisher is dropped; Fisher averaging
//! with equal Fishers is the average. Bad statistics are errors naming what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use mmerge_core::Dtype;

const W: &str = "model.layers.0.mlp.down_proj.weight";
const B: &str = "model.layers.0.mlp.down_proj.bias";
const OUT: usize = 5;
const IN: usize = 6;
const ROWS: usize = 40;

/// Writes model `name` (a weight [OUT, IN] and a bias) and returns its weight.
fn model(g: &mut Gen, d: &Path, name: &str, base: Option<&[f32]>) -> Vec<f32> {
    let mut w = g.vec(OUT * IN, 0.5);
    if let Some(b) = base {
        w.iter_mut().zip(b).for_each(|(x, b)| *x += b);
    }
    let t: Tensors = vec![
        (W.into(), vec![OUT, IN], w.clone()),
        (B.into(), vec![OUT], g.vec(OUT, 0.5)),
    ];
    write_model(&d.join(name), Dtype::F32, &t, 1 << 20, &[]).unwrap();
    w
}

/// Writes a statistics folder: `gram/` (of the weight only) and `fisher/` (of both tensors).
fn statistics(d: &Path, name: &str, gram: &[f32], fisher_w: &[f32], fisher_b: &[f32]) {
    let dir = d.join(format!("stats-{name}"));
    let g: Tensors = vec![(W.into(), vec![IN, IN], gram.to_vec())];
    write_model(&dir.join("gram"), Dtype::F32, &g, 1 << 20, &[]).unwrap();
    let f: Tensors = vec![
        (W.into(), vec![OUT, IN], fisher_w.to_vec()),
        (B.into(), vec![OUT], fisher_b.to_vec()),
    ];
    write_model(&dir.join("fisher"), Dtype::F32, &f, 1 << 20, &[]).unwrap();
}

/// XᵀX / n of activations X [ROWS, IN] (row-major), in float64 then stored as f32.
fn gram(x: &[f64]) -> Vec<f32> {
    let mut g = vec![0f64; IN * IN];
    for r in 0..ROWS {
        for i in 0..IN {
            for j in 0..IN {
                g[i * IN + j] += x[r * IN + i] * x[r * IN + j];
            }
        }
    }
    g.iter().map(|v| (v / ROWS as f64) as f32).collect()
}

/// The least-squares W minimising Σᵢ ‖Xᵢ Wᵀ − Xᵢ Wᵢᵀ‖² over stacked rows, by Householder-free
/// modified Gram–Schmidt QR of the stacked X in float64: Wᵀ = R⁻¹ Qᵀ Y.
fn least_squares(xs: &[Vec<f64>], ws: &[Vec<f32>]) -> Vec<f64> {
    let rows = xs.len() * ROWS;
    // Stacked X [rows, IN] by columns, and Y [rows, OUT] = Xᵢ Wᵢᵀ.
    let mut q: Vec<Vec<f64>> = (0..IN)
        .map(|c| {
            xs.iter()
                .flat_map(|x| (0..ROWS).map(move |r| x[r * IN + c]))
                .collect()
        })
        .collect();
    let y: Vec<Vec<f64>> = (0..OUT)
        .map(|o| {
            xs.iter()
                .zip(ws)
                .flat_map(|(x, w)| {
                    (0..ROWS).map(move |r| {
                        (0..IN)
                            .map(|k| x[r * IN + k] * f64::from(w[o * IN + k]))
                            .sum::<f64>()
                    })
                })
                .collect()
        })
        .collect();
    let mut r = vec![0f64; IN * IN];
    for c in 0..IN {
        for p in 0..c {
            let dot: f64 = (0..rows).map(|i| q[p][i] * q[c][i]).sum();
            r[p * IN + c] = dot;
            let prev = q[p].clone();
            q[c].iter_mut().zip(&prev).for_each(|(v, u)| *v -= dot * u);
        }
        let norm = (0..rows).map(|i| q[c][i] * q[c][i]).sum::<f64>().sqrt();
        r[c * IN + c] = norm;
        q[c].iter_mut().for_each(|v| *v /= norm);
    }
    let mut w = vec![0f64; OUT * IN];
    for o in 0..OUT {
        let qty: Vec<f64> = (0..IN)
            .map(|c| (0..rows).map(|i| q[c][i] * y[o][i]).sum())
            .collect();
        for c in (0..IN).rev() {
            let s: f64 = (c + 1..IN).map(|k| r[c * IN + k] * w[o * IN + k]).sum();
            w[o * IN + c] = (qty[c] - s) / r[c * IN + c];
        }
    }
    w
}

fn stats_yaml(d: &Path, names: &[&str]) -> String {
    let mut y = "statistics:\n".to_string();
    for n in names {
        y += &format!(
            "  {}: {}\n",
            d.join(n).display(),
            d.join(format!("stats-{n}")).display()
        );
    }
    y
}

#[test]
fn regmean_is_the_least_squares_fit_on_raw_activations() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut g = Gen::new(21);
    let ws: Vec<Vec<f32>> = (0..3)
        .map(|i| model(&mut g, d, &format!("m{i}"), None))
        .collect();
    // Each model's own activations, on a different scale per feature and model.
    let xs: Vec<Vec<f64>> = (0..3)
        .map(|i| {
            g.vec(ROWS * IN, 1.0)
                .iter()
                .enumerate()
                .map(|(j, v)| f64::from(*v) * (1.0 + ((i + j % IN) % 4) as f64))
                .collect()
        })
        .collect();
    let ones = vec![1f32; OUT * IN];
    for (i, x) in xs.iter().enumerate() {
        statistics(d, &format!("m{i}"), &gram(x), &ones, &ones[..OUT]);
    }
    let names = ["m0", "m1", "m2"];
    let mut yaml = "merge_method: regmean\nparameters: {alpha: 1.0}\nmodels:\n".to_string();
    for n in names {
        yaml += &format!("  - model: {}\n", d.join(n).display());
    }
    yaml += &stats_yaml(d, &names);
    let out = merge(d, &yaml, 0).unwrap();
    let want = least_squares(&xs, &ws);
    assert_close(
        "regmean = lstsq",
        &out.read_f32(W).unwrap(),
        &want,
        1e-4,
        1e-2,
    );
    // Not the plain average: the fit weighs each model by its data.
    let avg: Vec<f64> = (0..OUT * IN)
        .map(|j| ws.iter().map(|w| f64::from(w[j])).sum::<f64>() / 3.0)
        .collect();
    let got = out.read_f32(W).unwrap();
    let far = got
        .iter()
        .zip(&avg)
        .map(|(g, a)| (f64::from(*g) - a).abs())
        .fold(0.0, f64::max);
    assert!(far > 1e-2, "regmean equals the average ({far})");
    // Tensors without a Gram are averaged.
    let biases: Vec<Vec<f32>> = names
        .iter()
        .map(|n| {
            mmerge_core::Checkpoint::open(d.join(n))
                .unwrap()
                .read_f32(B)
                .unwrap()
        })
        .collect();
    let want_b: Vec<f64> = (0..OUT)
        .map(|j| biases.iter().map(|b| f64::from(b[j])).sum::<f64>() / 3.0)
        .collect();
    assert_close(
        "bias averaged",
        &out.read_f32(B).unwrap(),
        &want_b,
        1e-6,
        1e-3,
    );

    // α = 0: a per-input-feature average weighted by the Gram diagonals.
    let yaml0 = yaml.replace("alpha: 1.0", "alpha: 0.0");
    let out0 = merge(d, &yaml0, 0).unwrap();
    let grams: Vec<Vec<f32>> = xs.iter().map(|x| gram(x)).collect();
    let want0: Vec<f64> = (0..OUT * IN)
        .map(|j| {
            let c = j % IN;
            let diag = |i: usize| f64::from(grams[i][c * IN + c]);
            (0..3).map(|i| diag(i) * f64::from(ws[i][j])).sum::<f64>()
                / (0..3).map(diag).sum::<f64>()
        })
        .collect();
    assert_close(
        "regmean α=0",
        &out0.read_f32(W).unwrap(),
        &want0,
        1e-5,
        1e-3,
    );
}

#[test]
fn regmean_with_equal_gram_diagonals_and_alpha_zero_is_the_average() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut g = Gen::new(4);
    let ws: Vec<Vec<f32>> = (0..2)
        .map(|i| model(&mut g, d, &format!("m{i}"), None))
        .collect();
    let ones = vec![1f32; OUT * IN];
    for i in 0..2 {
        // Same diagonal (2), different off-diagonals.
        let gr: Vec<f32> = (0..IN * IN)
            .map(|j| {
                if j / IN == j % IN {
                    2.0
                } else {
                    0.1 * (i + 1) as f32
                }
            })
            .collect();
        statistics(d, &format!("m{i}"), &gr, &ones, &ones[..OUT]);
    }
    let yaml = format!(
        "merge_method: regmean\nparameters: {{alpha: 0.0}}\nmodels:\n  - model: {}\n  - model: {}\n{}",
        d.join("m0").display(),
        d.join("m1").display(),
        stats_yaml(d, &["m0", "m1"])
    );
    let out = merge(d, &yaml, 0).unwrap();
    let avg: Vec<f64> = (0..OUT * IN)
        .map(|j| (f64::from(ws[0][j]) + f64::from(ws[1][j])) / 2.0)
        .collect();
    assert_close("average", &out.read_f32(W).unwrap(), &avg, 1e-6, 1e-3);
}

/// Base m0 and task models m1, m2 with the given Fishers (weight, then bias per model).
fn gradient_setup(d: &Path, fishers: [f32; 3]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut g = Gen::new(9);
    let base = model(&mut g, d, "m0", None);
    let tasks: Vec<Vec<f32>> = (1..3)
        .map(|i| model(&mut g, d, &format!("m{i}"), Some(&base)))
        .collect();
    let eye = vec![0f32; IN * IN];
    for (i, f) in fishers.iter().enumerate() {
        // A different Fisher per element: f · (1 + element index mod 3).
        let fw: Vec<f32> = (0..OUT * IN).map(|j| f * (1 + j % 3) as f32).collect();
        let fb: Vec<f32> = (0..OUT).map(|j| f * (1 + j % 3) as f32).collect();
        statistics(d, &format!("m{i}"), &eye, &fw, &fb);
    }
    (base, tasks)
}

fn tasks_yaml(d: &Path, method: &str, params: &str, weights: [f64; 2]) -> String {
    format!(
        "merge_method: {method}\nbase_model: {}\nparameters: {{{params}}}\nmodels:\n  - model: {}\n    parameters: {{weight: {}}}\n  - model: {}\n    parameters: {{weight: {}}}\n",
        d.join("m0").display(),
        d.join("m1").display(),
        weights[0],
        d.join("m2").display(),
        weights[1],
    )
}

#[test]
fn gradient_matching_is_task_arithmetic_when_task_fishers_vanish() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, tasks) = gradient_setup(d, [1.0, 1e-9, 1e-9]);
    let ws = [0.6, 0.9];
    let yaml =
        tasks_yaml(d, "gradient_matching", "delta: 0.0", ws) + &stats_yaml(d, &["m0", "m1", "m2"]);
    let got = merge(d, &yaml, 0).unwrap().read_f32(W).unwrap();
    let ta = merge(d, &tasks_yaml(d, "task_arithmetic", "lambda: 1.0", ws), 0)
        .unwrap()
        .read_f32(W)
        .unwrap();
    let want: Vec<f64> = (0..OUT * IN)
        .map(|j| {
            let b = f64::from(base[j]);
            b + (0..2)
                .map(|t| ws[t] * (f64::from(tasks[t][j]) - b))
                .sum::<f64>()
        })
        .collect();
    assert_close("gradient matching = TA formula", &got, &want, 1e-6, 1e-3);
    let ta64: Vec<f64> = ta.iter().map(|v| f64::from(*v)).collect();
    assert_close(
        "gradient matching = task_arithmetic",
        &got,
        &ta64,
        1e-6,
        1e-3,
    );
}

#[test]
fn gradient_matching_without_the_base_fisher_is_fisher_averaging() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (_, tasks) = gradient_setup(d, [5.0, 0.3, 2.0]);
    let yaml = tasks_yaml(
        d,
        "gradient_matching",
        "base_scale: 0.0, delta: 0.0",
        [1.0, 1.0],
    ) + &stats_yaml(d, &["m1", "m2"]);
    let got = merge(d, &yaml, 0).unwrap().read_f32(W).unwrap();
    let fisher = format!(
        "merge_method: fisher\nparameters: {{fisher_floor: 0.0}}\nmodels:\n  - model: {}\n  - model: {}\n{}",
        d.join("m1").display(),
        d.join("m2").display(),
        stats_yaml(d, &["m1", "m2"])
    );
    let want: Vec<f64> = merge(d, &fisher, 0)
        .unwrap()
        .read_f32(W)
        .unwrap()
        .iter()
        .map(|v| f64::from(*v))
        .collect();
    assert_close(
        "gradient matching (H0 = 0) = fisher",
        &got,
        &want,
        1e-6,
        1e-3,
    );
    // And Fisher averaging is the Fisher-weighted mean (0.3 vs 2.0 per element).
    let formula: Vec<f64> = (0..OUT * IN)
        .map(|j| {
            let k = (1 + j % 3) as f64;
            (0.3 * k * f64::from(tasks[0][j]) + 2.0 * k * f64::from(tasks[1][j])) / (2.3 * k)
        })
        .collect();
    assert_close("fisher formula", &got, &formula, 1e-6, 1e-3);
}

#[test]
fn bad_statistics_are_errors_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    gradient_setup(d, [1.0, 1.0, 1.0]);
    let two = |method: &str, extra: &str| {
        format!(
            "merge_method: {method}\nmodels:\n  - model: {}\n  - model: {}\n{extra}",
            d.join("m1").display(),
            d.join("m2").display(),
        )
    };
    // A data-free method given statistics.
    let e = merge(d, &two("linear", &stats_yaml(d, &["m1"])), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("reads no statistics") && e.contains("merge.yml:5"),
        "{e}"
    );
    // Statistics of a model that is not in the merge.
    let e = merge(d, &two("fisher", &stats_yaml(d, &["m0"])), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a model of this merge"), "{e}");
    // A model without statistics.
    let e = merge(d, &two("fisher", &stats_yaml(d, &["m1"])), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no Fisher") && (e.contains(W) || e.contains(B)),
        "{e}"
    );
    // A statistics folder without the method's checkpoint.
    std::fs::remove_dir_all(d.join("stats-m2/gram")).unwrap();
    let e = merge(d, &two("regmean", &stats_yaml(d, &["m1", "m2"])), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gram/") && e.contains("stats-m2"), "{e}");
    // Out-of-range hyper-parameters are named.
    let e = merge(
        d,
        &two(
            "regmean",
            &format!("parameters: {{alpha: 1.5}}\n{}", stats_yaml(d, &["m1"])),
        ),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("alpha"), "{e}");
}
