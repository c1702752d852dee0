//! RegMean, regression-mean merging (Jin et al., "Dataless Knowledge Fusion by Merging Weights
//! of Language Models", arXiv 2212.09849; config name `regmean`).
//!
//! For a linear layer with weight Wᵢ `[out, in]` in model i and the mean Gram matrix of that
//! layer's inputs Gᵢ = XᵢᵀXᵢ / nᵢ `[in, in]`:
//! G̃ᵢ = wᵢ (α Gᵢ + (1 − α) diag Gᵢ), θ = W* = (Σᵢ Wᵢ G̃ᵢ)(Σᵢ G̃ᵢ)⁻¹.
//! With α = 1 and equal wᵢ and nᵢ this is the W minimising Σᵢ ‖Xᵢ Wᵀ − Xᵢ Wᵢᵀ‖², the
//! least-squares fit to every model's outputs on its own inputs. α < 1 shrinks the Grams'
//! off-diagonals (RegMean's `reduce_non_diag`); α = 0 leaves a weighted average per input
//! feature, θ[r, c] = Σᵢ wᵢ Gᵢ[c, c] Wᵢ[r, c] / Σᵢ wᵢ Gᵢ[c, c], which is the plain average when
//! the models' Gram diagonals agree. Tensors without a Gram (biases, norms, embeddings) are
//! averaged, θ = Σᵢ wᵢ θᵢ / Σᵢ wᵢ.
//!
//! Parameters: `weight` per model (wᵢ, default 1; RegMean's model coefficients, which scale
//! the Grams), `alpha` shared in [0, 1] (default 0.9).
//!
//! Statistics: the `gram/` checkpoint of each model's statistics folder holds, under each
//! linear weight's own key, the mean Gram of that layer's inputs (`mmerge-torch statistics`).
//! In the expert-into-shared merge each expert's Gram comes from its own modality's tokens, as
//! in the code of arXiv 2304.14933.
//!
//! Deviations: the default α is 0.9, the RegMean paper's value for transformers (arXiv
//! 2304.14933's code uses 1, no shrinkage: set `alpha: 1`). The system is solved in float64 by
//! LU with partial pivoting and no ridge term, like both papers' exact inverse; a singular
//! Σ G̃ᵢ is an error naming the tensor. One tensor's weights and Grams are held in memory
//! whole (data-free methods stream chunks).

use std::sync::Arc;

use super::linear::Linear;
use super::{
    DynKernel, Goldens, Inputs, Method, ParamSpec, Planned, Reference, Scope, Statistics,
    TensorPlan,
};
use crate::error::{MergeError, Result};
use crate::exec::TensorExec;

/// The registry entry.
pub const REGMEAN: Method = Method {
    name: "regmean",
    reference: Reference::Arxiv("2212.09849"),
    needs_base: false,
    inputs: Inputs::Many,
    statistics: Statistics::Gram,
    params: &[
        ParamSpec::number("weight", Scope::Input, 1.0, 1e6),
        ParamSpec::number("alpha", Scope::Shared, 0.9, 1.0),
    ],
    plan,
    oracle: |c| {
        let n = c.inputs.len();
        let w = c.values.model_numbers(0..n, "weight", 1.0);
        if c.statistics.iter().all(Vec::is_empty) {
            return super::linear::oracle(c.inputs, &w, true);
        }
        oracle(
            c.inputs,
            &c.statistics[..n],
            &w,
            c.values.number("alpha").unwrap_or(0.9),
        )
    },
    goldens: Goldens::Unreproducible(
        "mergekit has no RegMean; the float64 least-squares fit on raw activations pins it \
         (tests/data_dependent.rs)",
    ),
};

fn plan(t: &TensorPlan<'_>) -> Result<Planned> {
    let members: Vec<usize> = (0..t.members).collect();
    let weights = t
        .values
        .model_numbers(members.iter().copied(), "weight", 1.0);
    let have = t.statistics.iter().filter(|s| s.is_some()).count();
    if have == 0 {
        return Ok(Planned {
            base: None,
            inputs: members,
            statistics: vec![],
            kernel: Some(Arc::new(Linear {
                weights,
                normalize: true,
            })),
        });
    }
    let param_err = |message: String| MergeError::Param {
        name: "statistics".into(),
        key: t.key.to_string(),
        message,
    };
    let [_, d_in] = t.shape else {
        return Err(param_err(format!(
            "a Gram matrix is given for a tensor of shape {:?}; RegMean needs a linear \
             weight [out, in]",
            t.shape
        )));
    };
    for (m, s) in t.statistics.iter().enumerate() {
        match s {
            None => {
                return Err(param_err(format!(
                    "model {m} has no Gram matrix for it while {have} others do"
                )));
            }
            Some(shape) if shape.as_slice() != [*d_in, *d_in] => {
                return Err(param_err(format!(
                    "model {m}'s Gram matrix has shape {shape:?}, the weight's input needs \
                     [{d_in}, {d_in}]"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Planned {
        base: None,
        inputs: members.clone(),
        statistics: members,
        kernel: Some(Arc::new(RegMean {
            weights,
            alpha: t.values.number("alpha").unwrap_or(0.9),
        })),
    })
}

/// One linear weight's RegMean merge: the inputs are the n weights, then their n Grams.
#[derive(Debug, Clone, PartialEq)]
pub struct RegMean {
    pub weights: Vec<f64>,
    pub alpha: f64,
}

impl RegMean {
    /// G̃ = w (α G + (1 − α) diag G), float64.
    fn shrunk(&self, g: &[f32], w: f64, d: usize) -> Vec<f64> {
        let mut out = vec![0f64; d * d];
        for r in 0..d {
            for c in 0..d {
                let scale = if r == c { 1.0 } else { self.alpha };
                out[r * d + c] = w * scale * f64::from(g[r * d + c]);
            }
        }
        out
    }
}

impl DynKernel for RegMean {
    fn execute(&self, t: &TensorExec<'_>) -> Result<()> {
        let n = self.weights.len();
        let (d_out, d_in) = (t.shape()[0], t.shape()[1]);
        // A = Σ G̃ᵢ [in, in]; B = Σ G̃ᵢ Wᵢᵀ [in, out].
        let mut a = vec![0f64; d_in * d_in];
        let mut b = vec![0f64; d_in * d_out];
        for i in 0..n {
            let w = t.read_whole(i)?;
            let g = self.shrunk(&t.read_whole(n + i)?, self.weights[i], d_in);
            a.iter_mut().zip(&g).for_each(|(a, g)| *a += g);
            for k in 0..d_in {
                let row = &g[k * d_in..(k + 1) * d_in];
                for r in 0..d_out {
                    let wr = &w[r * d_in..(r + 1) * d_in];
                    b[k * d_out + r] += row
                        .iter()
                        .zip(wr)
                        .map(|(g, w)| g * f64::from(*w))
                        .sum::<f64>();
                }
            }
        }
        let x = lu_solve(a, b, d_in, d_out).ok_or_else(|| MergeError::Param {
            name: "alpha".into(),
            key: t.tensor().to_string(),
            message: "the summed Gram matrix is singular (an input feature is never active \
                      in any model's data); collect statistics on more data or lower alpha"
                .into(),
        })?;
        let mut out = vec![0f32; d_out * d_in];
        for r in 0..d_out {
            for k in 0..d_in {
                out[r * d_in + k] = x[k * d_out + r] as f32;
            }
        }
        t.write_whole(&out)
    }
}

/// Solves A X = B (A `[d, d]`, B `[d, m]`, row-major) by LU with partial pivoting; `None` when
/// A is singular to working precision.
fn lu_solve(mut a: Vec<f64>, mut b: Vec<f64>, d: usize, m: usize) -> Option<Vec<f64>> {
    let scale = a.iter().fold(0f64, |s, x| s.max(x.abs()));
    for col in 0..d {
        let pivot =
            (col..d).max_by(|&i, &j| a[i * d + col].abs().total_cmp(&a[j * d + col].abs()))?;
        if a[pivot * d + col].abs() <= scale * 1e-13 || !a[pivot * d + col].is_finite() {
            return None;
        }
        if pivot != col {
            for c in 0..d {
                a.swap(col * d + c, pivot * d + c);
            }
            for c in 0..m {
                b.swap(col * m + c, pivot * m + c);
            }
        }
        let p = a[col * d + col];
        for r in col + 1..d {
            let f = a[r * d + col] / p;
            if f == 0.0 {
                continue;
            }
            for c in col..d {
                a[r * d + c] -= f * a[col * d + c];
            }
            for c in 0..m {
                b[r * m + c] -= f * b[col * m + c];
            }
        }
    }
    for col in (0..d).rev() {
        let p = a[col * d + col];
        for c in 0..m {
            let mut v = b[col * m + c];
            for k in col + 1..d {
                v -= a[col * d + k] * b[k * m + c];
            }
            b[col * m + c] = v / p;
        }
    }
    Some(b)
}

/// The float64 oracle, by another route than the kernel: the explicit inverse (Gauss–Jordan)
/// of Σ G̃ᵢ, then W* = (Σᵢ Wᵢ G̃ᵢ)(Σᵢ G̃ᵢ)⁻¹. Shapes come from the Grams (`[in, in]`).
pub fn oracle(weights: &[Vec<f32>], grams: &[Vec<f32>], w: &[f64], alpha: f64) -> Vec<f64> {
    let d = (grams[0].len() as f64).sqrt().round() as usize;
    let out = weights[0].len() / d;
    let shrunk = |g: &[f32], wi: f64| -> Vec<f64> {
        (0..d * d)
            .map(|j| wi * f64::from(g[j]) * if j / d == j % d { 1.0 } else { alpha })
            .collect()
    };
    let mut a = vec![0f64; d * d];
    let mut wg = vec![0f64; out * d];
    for ((wt, g), wi) in weights.iter().zip(grams).zip(w) {
        let g = shrunk(g, *wi);
        for j in 0..d * d {
            a[j] += g[j];
        }
        for r in 0..out {
            for c in 0..d {
                wg[r * d + c] += (0..d)
                    .map(|k| f64::from(wt[r * d + k]) * g[k * d + c])
                    .sum::<f64>();
            }
        }
    }
    // Gauss–Jordan on [A | I].
    let mut inv = vec![0f64; d * d];
    for i in 0..d {
        inv[i * d + i] = 1.0;
    }
    for col in 0..d {
        let p = (col..d)
            .max_by(|&i, &j| a[i * d + col].abs().total_cmp(&a[j * d + col].abs()))
            .unwrap_or(col);
        for c in 0..d {
            a.swap(col * d + c, p * d + c);
            inv.swap(col * d + c, p * d + c);
        }
        let pv = a[col * d + col];
        for c in 0..d {
            a[col * d + c] /= pv;
            inv[col * d + c] /= pv;
        }
        for r in (0..d).filter(|&r| r != col) {
            let f = a[r * d + col];
            for c in 0..d {
                a[r * d + c] -= f * a[col * d + c];
                inv[r * d + c] -= f * inv[col * d + c];
            }
        }
    }
    let mut result = vec![0f64; out * d];
    for r in 0..out {
        for c in 0..d {
            result[r * d + c] = (0..d).map(|k| wg[r * d + k] * inv[k * d + c]).sum();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lu_solves_and_refuses_singular_systems() {
        // A = [[2, 1], [1, 3]], B = [[3], [5]] → X = [[0.8], [1.4]].
        let x = lu_solve(vec![2.0, 1.0, 1.0, 3.0], vec![3.0, 5.0], 2, 1).unwrap();
        assert!(
            (x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12,
            "{x:?}"
        );
        // Needs a row swap: A = [[0, 1], [1, 0]].
        let x = lu_solve(vec![0.0, 1.0, 1.0, 0.0], vec![2.0, 7.0], 2, 1).unwrap();
        assert_eq!(x, vec![7.0, 2.0]);
        assert!(lu_solve(vec![1.0, 2.0, 2.0, 4.0], vec![1.0, 1.0], 2, 1).is_none());
    }
}
