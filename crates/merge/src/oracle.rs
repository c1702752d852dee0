//! Plain float64 reference implementations of every method, written for obviousness, not
//! speed: whole tensors in memory, one loop per formula step. The streaming kernels are
//! tested against these (unit tests here and in `tests/`).

use crate::methods::gta::{Gta, Sparsify, keep_count};
use crate::methods::slerp::{DOT_THRESHOLD, EPS};
use crate::methods::uniform;

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| f64::from(*x)).collect()
}

/// Σ wᵢ xᵢ (/ Σ wᵢ when normalising).
pub fn linear(inputs: &[Vec<f32>], weights: &[f64], normalize: bool) -> Vec<f64> {
    let n = inputs[0].len();
    let mut out = vec![0f64; n];
    for (x, w) in inputs.iter().zip(weights) {
        for j in 0..n {
            out[j] += w * f64::from(x[j]);
        }
    }
    if normalize {
        let total: f64 = weights.iter().sum();
        for o in &mut out {
            *o /= total;
        }
    }
    out
}

/// Task arithmetic / TIES / DARE (see `methods::gta` for the formula). `streams[i]` is input
/// i's DARE random stream.
pub fn gta(p: &Gta, base: &[f32], inputs: &[Vec<f32>], streams: &[u64]) -> Vec<f64> {
    let n = base.len();
    let m = inputs.len();
    let b = to64(base);
    // Step 1: task vectors, sparsified, rescaled.
    let mut taus: Vec<Vec<f64>> = Vec::new();
    for (i, x) in inputs.iter().enumerate() {
        let full: Vec<f64> = (0..n).map(|j| f64::from(x[j]) - b[j]).collect();
        let mut keep = vec![true; n];
        match p.sparsify {
            Sparsify::None => {}
            Sparsify::Magnitude => {
                let k = keep_count(p.densities[i], n) as usize;
                // Rank by |τ| as stored (f32), largest first; equal magnitudes by index.
                let mag: Vec<f32> = (0..n).map(|j| (x[j] - base[j]).abs()).collect();
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &c| mag[c].total_cmp(&mag[a]).then(a.cmp(&c)));
                keep = vec![false; n];
                for &j in order.iter().take(k) {
                    keep[j] = true;
                }
            }
            Sparsify::Random => {
                if p.densities[i] < 1.0 {
                    for (j, k) in keep.iter_mut().enumerate() {
                        *k = uniform(streams[i], j as u64) < p.densities[i];
                    }
                }
            }
        }
        let mut tau: Vec<f64> = (0..n)
            .map(|j| if keep[j] { full[j] } else { 0.0 })
            .collect();
        if p.rescale && p.sparsify != Sparsify::None && p.densities[i] < 1.0 {
            let l1_full: f64 = full.iter().map(|v| v.abs()).sum();
            let l1_kept: f64 = tau.iter().map(|v| v.abs()).sum();
            if l1_full >= 1e-7 && l1_kept >= 1e-7 {
                for t in &mut tau {
                    *t *= l1_full / l1_kept;
                }
            }
        }
        taus.push(tau);
    }
    // Steps 2-4.
    let mut out = vec![0f64; n];
    for j in 0..n {
        let wd: Vec<f64> = (0..m).map(|i| p.weights[i] * taus[i][j]).collect();
        let mut mixed = 0.0;
        let mut divisor = 0.0;
        if p.elect_sign {
            let gamma = if wd.iter().sum::<f64>() >= 0.0 {
                1.0
            } else {
                -1.0
            };
            for (v, w) in wd.iter().zip(&p.weights) {
                let s = if *v > 0.0 {
                    1.0
                } else if *v < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                if s == gamma {
                    mixed += v;
                    divisor += w;
                }
            }
            if divisor == 0.0 {
                divisor = 1.0;
            }
        } else {
            mixed = wd.iter().sum();
            divisor = p.weights.iter().sum();
            if divisor.abs() < 1e-8 {
                divisor = 1.0;
            }
        }
        let delta = if p.normalize { mixed / divisor } else { mixed };
        out[j] = b[j] + p.lambda * delta;
    }
    out
}

/// SLERP between `v0` (t = 0) and `v1` (t = 1).
pub fn slerp(v0: &[f32], v1: &[f32], t: f64) -> Vec<f64> {
    let a = to64(v0);
    let b = to64(v1);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nb) = (norm(&a), norm(&b));
    let an: Vec<f64> = a
        .iter()
        .map(|x| if na > EPS { x / na } else { *x })
        .collect();
    let bn: Vec<f64> = b
        .iter()
        .map(|x| if nb > EPS { x / nb } else { *x })
        .collect();
    let dot: f64 = an
        .iter()
        .zip(&bn)
        .map(|(x, y)| x * y)
        .sum::<f64>()
        .clamp(-1.0, 1.0);
    if dot.abs() > DOT_THRESHOLD {
        return a
            .iter()
            .zip(&b)
            .map(|(x, y)| (1.0 - t) * x + t * y)
            .collect();
    }
    let theta = dot.acos();
    let s0 = (theta - theta * t).sin() / theta.sin();
    let s1 = (theta * t).sin() / theta.sin();
    a.iter().zip(&b).map(|(x, y)| s0 * x + s1 * y).collect()
}
