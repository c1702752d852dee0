//! Moving a model's unit members into the aligned or merged space (MuDSC arXiv 2403.01753
//! `get_merged_state_dict`; Git Re-Basin arXiv 2209.04836 `apply_permutation`).
//!
//! With `×ₐ` = move axis a to the front, reshape to 2-D, left-multiply, reshape back:
//! - `Perm(σ)`: model A is unchanged; in model B every member axis (Out or In) is re-indexed,
//!   W′[…, i, …] = W[…, σ(i), …], so B's features stand in A's order.
//! - `Zip`: for model i, an Out axis becomes (N·merge_i)ᵀ ×ₐ W_i and an In axis unmerge_iᵀ ×ₐ W_i
//!   (N = 2), so the average of the two transformed models is ZipIt's merged model
//!   Σᵢ merge_iᵀ W_i unmerge_i.
//!
//! A tensor in several units (e.g. `fc2.weight`: Out of the residual unit on axis 0, In of the
//! MLP unit on axis 1) gets every one of its axes mapped.

use std::collections::BTreeMap;

use super::units::{Role, ShapeOf, Tensor, Unit, Weights, validate_units};
use super::{AlignError, Transform};

/// Which model's members to transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

/// The member tensors of `side` (`a` or `b` of every unit), with every unit axis mapped by its
/// unit's transform. Every unit needs a transform; Perm leaves model A's tensors as they are.
pub fn apply(
    weights: &Weights,
    units: &[Unit],
    side: Side,
    transforms: &BTreeMap<String, Transform>,
) -> Result<Weights, AlignError> {
    let shape_of = |k: &str| weights.get(k).map(|t| t.shape.clone());
    let shape_of: ShapeOf = &shape_of;
    validate_units(
        units,
        if side == Side::A {
            [Some(shape_of), None]
        } else {
            [None, Some(shape_of)]
        },
    )?;
    let mut ts = Vec::with_capacity(units.len());
    for u in units {
        let t = transforms.get(&u.name).ok_or_else(|| AlignError::Unit {
            unit: u.name.clone(),
            message: "no transform for this unit".into(),
        })?;
        t.check(u.width).map_err(|message| AlignError::Unit {
            unit: u.name.clone(),
            message,
        })?;
        ts.push(t);
    }
    let mut out = Weights::new();
    for (key, axes) in axes_by_key(units, side) {
        let t = weights.get(key).ok_or_else(|| AlignError::MissingKey {
            key: key.to_string(),
            model: side.name(),
        })?;
        let mut shape = t.shape.clone();
        let mut data: Vec<f64> = t.data.iter().map(|&x| f64::from(x)).collect();
        for (q, axis, role) in axes {
            if let Some(map) = ts[q].axis_map(side, role) {
                (shape, data) = map_axis(&shape, &data, axis, &map);
            }
        }
        let data = data.into_iter().map(|x| x as f32).collect();
        out.insert(key.to_string(), Tensor { shape, data });
    }
    Ok(out)
}

/// A linear map of one axis: new[…, j, …] = Σₖ m[k, j]·old[…, k, …].
pub(crate) enum AxisMap<'a> {
    /// m = one-hot: new[…, j, …] = old[…, idx[j], …].
    Select(&'a [usize]),
    /// m = scale·matrix, [old width, cols] row-major.
    Matrix {
        matrix: &'a [f64],
        cols: usize,
        scale: f64,
    },
}

impl Transform {
    /// Checks the transform fits a unit of width O: a permutation of 0..O, or [O, new_width]
    /// merge and unmerge matrices.
    pub fn check(&self, width: usize) -> Result<(), String> {
        match self {
            Transform::Perm(p) => {
                let mut seen = vec![false; width];
                if p.len() != width
                    || !p
                        .iter()
                        .all(|&k| k < width && !std::mem::replace(&mut seen[k], true))
                {
                    return Err(format!("{p:?} is not a permutation of 0..{width}"));
                }
            }
            Transform::Zip {
                merge,
                unmerge,
                new_width,
            } => {
                if merge
                    .iter()
                    .chain(unmerge)
                    .any(|m| m.len() != width * new_width)
                {
                    return Err(format!("zip matrices are not [{width}, {new_width}]"));
                }
            }
        }
        Ok(())
    }

    /// The map of a member axis of `side` with `role`; `None` is the identity.
    pub(crate) fn axis_map(&self, side: Side, role: Role) -> Option<AxisMap<'_>> {
        let i = usize::from(side == Side::B);
        match self {
            Transform::Perm(p) => (side == Side::B).then_some(AxisMap::Select(p)),
            Transform::Zip {
                merge,
                unmerge,
                new_width,
            } => Some(match role {
                Role::Out => AxisMap::Matrix {
                    matrix: &merge[i],
                    cols: *new_width,
                    scale: 2.0,
                },
                Role::In => AxisMap::Matrix {
                    matrix: &unmerge[i],
                    cols: *new_width,
                    scale: 1.0,
                },
            }),
        }
    }
}

/// Every member axis of `side`, by key: (unit index, axis, role), in unit order.
pub(crate) fn axes_by_key(units: &[Unit], side: Side) -> BTreeMap<&str, Vec<(usize, usize, Role)>> {
    let mut axes: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for (q, u) in units.iter().enumerate() {
        let members = if side == Side::A { &u.a } else { &u.b };
        for m in members {
            axes.entry(m.key.as_str())
                .or_default()
                .push((q, m.axis, m.role));
        }
    }
    axes
}

/// Maps `axis` of a row-major tensor; returns the new shape and data. The caller guarantees
/// `shape[axis]` is the map's input width.
pub(crate) fn map_axis(
    shape: &[usize],
    data: &[f64],
    axis: usize,
    map: &AxisMap,
) -> (Vec<usize>, Vec<f64>) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let width = shape[axis];
    let cols = match map {
        AxisMap::Select(idx) => idx.len(),
        AxisMap::Matrix { cols, .. } => *cols,
    };
    let mut out = vec![0.0; outer * cols * inner];
    for o in 0..outer {
        let src = &data[o * width * inner..(o + 1) * width * inner];
        let dst = &mut out[o * cols * inner..(o + 1) * cols * inner];
        match map {
            AxisMap::Select(idx) => {
                for (j, &k) in idx.iter().enumerate() {
                    dst[j * inner..(j + 1) * inner]
                        .copy_from_slice(&src[k * inner..(k + 1) * inner]);
                }
            }
            AxisMap::Matrix {
                matrix,
                cols,
                scale,
            } => {
                for k in 0..width {
                    for j in 0..*cols {
                        let w = scale * matrix[k * cols + j];
                        if w != 0.0 {
                            for x in 0..inner {
                                dst[j * inner + x] += w * src[k * inner + x];
                            }
                        }
                    }
                }
            }
        }
    }
    let mut new_shape = shape.to_vec();
    new_shape[axis] = cols;
    (new_shape, out)
}
