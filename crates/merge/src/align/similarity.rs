//! Similarities of a unit's 2O features (model A's O, then model B's O), in float64.
//!
//! - Activation similarity S_A (ZipIt arXiv 2305.03053; MuDSC arXiv 2403.01753
//!   `CovarianceMetric`): from n joint samples f = [f_A; f_B], μ = Σf/n,
//!   C = Σ f fᵀ/n − μμᵀ, S_A = C / max(σσᵀ, 1e-7) with σ = √diag C.
//! - Weight similarity S_W (MuDSC `get_weight_vectors` + `_correlation`; the analogue of Git
//!   Re-Basin arXiv 2209.04836 `get_permuted_param`): every member tensor has its *other* axes
//!   mapped by the current transforms of their units (model A's side and model B's side
//!   alike), its unit axis moved to the front and is reshaped to [O, −1]; the members are
//!   concatenated along dim 1, A's and B's rows stacked to F = [2O, D], and S_W is the Pearson
//!   correlation of the rows across the D coordinates, normalised as S_A.
//!
//! Deviation: a diagonal of C below 0 (rounding) is taken as 0 before the square root (the
//! reference would give NaN).

use super::apply::{Side, axes_by_key, map_axis};
use super::units::{Unit, Weights};
use super::{AlignError, Transform};

/// Joint statistics of the two models' features of one unit on the same inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct JointStats {
    /// O, the features per model.
    pub width: usize,
    /// The number of samples.
    pub count: f64,
    /// Σ f over samples (2O).
    pub sum: Vec<f64>,
    /// Σ f fᵀ over samples ((2O)², row-major).
    pub outer: Vec<f64>,
}

impl JointStats {
    /// Empty statistics of O features per model.
    pub fn new(width: usize) -> Self {
        let n2 = 2 * width;
        JointStats {
            width,
            count: 0.0,
            sum: vec![0.0; n2],
            outer: vec![0.0; n2 * n2],
        }
    }

    /// Adds one sample: model A's and model B's features on the same input (O each).
    pub fn push(&mut self, a: &[f64], b: &[f64]) -> Result<(), AlignError> {
        if let Some(bad) = [a, b].into_iter().find(|f| f.len() != self.width) {
            return Err(AlignError::Param {
                name: "features",
                value: bad.len() as f64,
                expected: format!("{} per model", self.width),
            });
        }
        let f: Vec<f64> = a.iter().chain(b).copied().collect();
        for (i, &x) in f.iter().enumerate() {
            self.sum[i] += x;
            for (o, &y) in self.outer[i * f.len()..].iter_mut().zip(&f) {
                *o += x * y;
            }
        }
        self.count += 1.0;
        Ok(())
    }

    /// S_A, the (2O)² Pearson correlation.
    pub fn correlation(&self) -> Result<Vec<f64>, String> {
        let n2 = 2 * self.width;
        if self.sum.len() != n2 || self.outer.len() != n2 * n2 {
            return Err(format!(
                "statistics of width {} need {n2} sums and {} outer entries, got {} and {}",
                self.width,
                n2 * n2,
                self.sum.len(),
                self.outer.len()
            ));
        }
        if self.count.is_nan() || self.count <= 0.0 {
            return Err(format!("sample count is {}", self.count));
        }
        let mean: Vec<f64> = self.sum.iter().map(|s| s / self.count).collect();
        let cov = (0..n2 * n2)
            .map(|k| self.outer[k] / self.count - mean[k / n2] * mean[k % n2])
            .collect();
        Ok(normalise(cov, n2))
    }
}

/// S_W of `units[unit]` given the current transforms of all units (in unit order).
pub fn weight_similarity(
    weights: [&Weights; 2],
    units: &[Unit],
    unit: usize,
    transforms: &[Transform],
) -> Result<Vec<f64>, AlignError> {
    let u = &units[unit];
    let mut rows = vec![Vec::new(); 2 * u.width];
    for (s, side) in [Side::A, Side::B].into_iter().enumerate() {
        let axes = axes_by_key(units, side);
        let members = if s == 0 { &u.a } else { &u.b };
        for m in members {
            let t = weights[s]
                .get(&m.key)
                .ok_or_else(|| AlignError::MissingKey {
                    key: m.key.clone(),
                    model: side.name(),
                })?;
            let mut shape = t.shape.clone();
            let mut data: Vec<f64> = t.data.iter().map(|&x| f64::from(x)).collect();
            for &(q, axis, role) in axes.get(m.key.as_str()).into_iter().flatten() {
                if axis == m.axis {
                    continue;
                }
                if let Some(map) = transforms[q].axis_map(side, role) {
                    (shape, data) = map_axis(&shape, &data, axis, &map);
                }
            }
            let outer: usize = shape[..m.axis].iter().product();
            let inner: usize = shape[m.axis + 1..].iter().product();
            for (i, row) in rows[s * u.width..(s + 1) * u.width].iter_mut().enumerate() {
                for o in 0..outer {
                    let start = (o * u.width + i) * inner;
                    row.extend_from_slice(&data[start..start + inner]);
                }
            }
        }
    }
    let d = rows[0].len();
    if rows.iter().any(|r| r.len() != d) || d == 0 {
        return Err(AlignError::Unit {
            unit: u.name.clone(),
            message: "models A and B give weight vectors of different (or zero) lengths".into(),
        });
    }
    let centred: Vec<Vec<f64>> = rows
        .into_iter()
        .map(|r| {
            let mean = r.iter().sum::<f64>() / d as f64;
            r.into_iter().map(|x| x - mean).collect()
        })
        .collect();
    let n2 = centred.len();
    let mut cov = vec![0.0; n2 * n2];
    for i in 0..n2 {
        for j in i..n2 {
            let c = centred[i]
                .iter()
                .zip(&centred[j])
                .map(|(x, y)| x * y)
                .sum::<f64>()
                / d as f64;
            cov[i * n2 + j] = c;
            cov[j * n2 + i] = c;
        }
    }
    Ok(normalise(cov, n2))
}

/// cov / max(σσᵀ, 1e-7), σ = √max(diag cov, 0).
fn normalise(mut cov: Vec<f64>, n: usize) -> Vec<f64> {
    let sd: Vec<f64> = (0..n).map(|i| cov[i * n + i].max(0.0).sqrt()).collect();
    for (k, c) in cov.iter_mut().enumerate() {
        *c /= (sd[k / n] * sd[k % n]).max(1e-7);
    }
    cov
}
