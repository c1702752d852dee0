//! Comparing two checkpoints tensor by tensor: the checks that they match, the parallel
//! streaming walk, and the [`DistanceReport`] with per-tensor, per-layer and overall distances.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use indicatif::ProgressBar;
use mmerge_core::keys::{self, TensorRole};
use mmerge_core::{Checkpoint, Dtype};
use rayon::prelude::*;

use crate::distance::{DistanceOptions, GroupStats, TensorDistance};
use crate::error::{DistanceError, Result};
use crate::stream::{PairSource, pair_distance, subtract};

/// What the distances are computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The raw weights a and b.
    Weights,
    /// The task vectors a − w0 and b − w0.
    TaskVectors,
}

impl Mode {
    /// The JSON spelling: `"weights"` or `"task_vectors"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Weights => "weights",
            Mode::TaskVectors => "task_vectors",
        }
    }
}

/// The label of a layer group: the layer index in decimal, `"pre"` or `"post"`.
pub fn role_label(role: TensorRole) -> String {
    match role {
        TensorRole::Pre => "pre".into(),
        TensorRole::Layer(i) => i.to_string(),
        TensorRole::Post => "post".into(),
    }
}

/// Sort key putting `pre` first, then layers by index, then `post`.
fn role_order(role: TensorRole) -> (u8, usize) {
    match role {
        TensorRole::Pre => (0, 0),
        TensorRole::Layer(i) => (1, i),
        TensorRole::Post => (2, 0),
    }
}

/// The distances of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    /// The tensor name.
    pub name: String,
    /// Its layer group ([`keys::role`]).
    pub role: TensorRole,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its distances.
    pub distance: TensorDistance,
}

/// The aggregate distances of one layer group.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// The group: a layer index, or the non-layer `pre`/`post` tensors.
    pub role: TensorRole,
    /// The aggregate of its tensors.
    pub stats: GroupStats,
}

/// A tensor left out because it is not floating point (in every checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTensor {
    /// The tensor name.
    pub name: String,
    /// Its dtype in `a`.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// The result of [`compare`]; see [`DistanceReport::to_json`] for its JSON schema.
#[derive(Debug, Clone, PartialEq)]
pub struct DistanceReport {
    /// Path of checkpoint a.
    pub a: PathBuf,
    /// Path of checkpoint b.
    pub b: PathBuf,
    /// Path of the base w0, in task-vector mode.
    pub base: Option<PathBuf>,
    /// Weights or task vectors.
    pub mode: Mode,
    /// `k` of the TSSD, in percent.
    pub tssd_top_k_percent: f64,
    /// All tensors together.
    pub aggregate: GroupStats,
    /// One entry per group present: `pre`, layers by index, `post`.
    pub layers: Vec<LayerReport>,
    /// One entry per compared tensor, in a's storage order.
    pub tensors: Vec<TensorReport>,
    /// Non-float tensors, in a's storage order.
    pub skipped: Vec<SkippedTensor>,
}

/// One tensor of three checkpoints as a [`PairSource`] (task vectors when `base` is given).
#[derive(Debug, Clone, Copy)]
struct CheckpointPair<'c> {
    a: &'c Checkpoint,
    b: &'c Checkpoint,
    base: Option<&'c Checkpoint>,
    name: &'c str,
    numel: usize,
}

impl PairSource for CheckpointPair<'_> {
    fn len(&self) -> usize {
        self.numel
    }

    fn read(&self, r: Range<usize>, a: &mut [f32], b: &mut [f32], w: &mut [f32]) -> Result<()> {
        // Positioned reads: the files' pages never enter the resident set, so memory stays at
        // a few chunks per worker however large the tensor.
        self.a.read_f32_into(self.name, r.clone(), a)?;
        self.b.read_f32_into(self.name, r.clone(), b)?;
        if let Some(base) = self.base {
            base.read_f32_into(self.name, r, w)?;
            subtract(a, w);
            subtract(b, w);
        }
        Ok(())
    }
}

/// Checks that `other` has exactly a's tensor names, with the same shapes and float-ness.
fn check_matches(a: &Checkpoint, other: &Checkpoint) -> Result<()> {
    for name in a.names() {
        let (ma, mo) = (a.require(name)?, other.meta(name));
        let mo = mo.ok_or_else(|| DistanceError::MissingTensor {
            name: name.clone(),
            present: a.path().to_path_buf(),
            missing: other.path().to_path_buf(),
        })?;
        if ma.shape != mo.shape {
            return Err(DistanceError::ShapeMismatch {
                name: name.clone(),
                path: a.path().to_path_buf(),
                shape: ma.shape.clone(),
                other_path: other.path().to_path_buf(),
                other_shape: mo.shape.clone(),
            });
        }
        if ma.dtype.is_float() != mo.dtype.is_float() {
            return Err(DistanceError::KindMismatch {
                name: name.clone(),
                path: a.path().to_path_buf(),
                dtype: ma.dtype.to_string(),
                other_path: other.path().to_path_buf(),
                other_dtype: mo.dtype.to_string(),
            });
        }
    }
    if let Some(extra) = other.names().iter().find(|n| a.meta(n).is_none()) {
        return Err(DistanceError::MissingTensor {
            name: extra.clone(),
            present: other.path().to_path_buf(),
            missing: a.path().to_path_buf(),
        });
    }
    Ok(())
}

/// Distances between checkpoints `a` and `b` (between their task vectors when `base` is
/// given), per tensor, per layer and overall. See [`compare_with_progress`].
pub fn compare(
    a: &Checkpoint,
    b: &Checkpoint,
    base: Option<&Checkpoint>,
    opts: &DistanceOptions,
) -> Result<DistanceReport> {
    compare_with_progress(a, b, base, opts, None)
}

/// [`compare`], advancing `progress` (if any) by each tensor's element count as it finishes;
/// its length is set to the total element count of the compared tensors.
///
/// Every tensor of `a` is compared, in a's storage order; `b` and `base` must hold exactly
/// the same names with the same shapes (else an error naming the key, the checkpoints and
/// both shapes). Non-float tensors are skipped and listed. Tensors run in parallel, each
/// streamed in `opts.chunk_len` chunks by positioned reads (nothing of the files stays resident).
pub fn compare_with_progress(
    a: &Checkpoint,
    b: &Checkpoint,
    base: Option<&Checkpoint>,
    opts: &DistanceOptions,
    progress: Option<&ProgressBar>,
) -> Result<DistanceReport> {
    opts.validate()?;
    check_matches(a, b)?;
    if let Some(w) = base {
        check_matches(a, w)?;
    }
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    for name in a.names() {
        let m = a.require(name)?;
        if m.dtype.is_float() {
            todo.push((name.as_str(), m.shape.clone(), m.numel()));
        } else {
            skipped.push(SkippedTensor {
                name: name.clone(),
                dtype: m.dtype,
                shape: m.shape.clone(),
            });
        }
    }
    if let Some(p) = progress {
        p.set_length(todo.iter().map(|t| t.2 as u64).sum());
    }
    let results: Vec<TensorDistance> = todo
        .par_iter()
        .map(|&(name, _, numel)| {
            let r = pair_distance(
                &CheckpointPair {
                    a,
                    b,
                    base,
                    name,
                    numel,
                },
                opts,
            );
            if let Some(p) = progress {
                p.inc(numel as u64);
            }
            r
        })
        .collect::<Result<_>>()?;

    let mut aggregate = GroupStats::default();
    let mut groups: BTreeMap<(u8, usize), LayerReport> = BTreeMap::new();
    let mut tensors = Vec::with_capacity(todo.len());
    for ((name, shape, _), dist) in todo.into_iter().zip(results) {
        let role = keys::role(name);
        aggregate.add(&dist);
        groups
            .entry(role_order(role))
            .or_insert_with(|| LayerReport {
                role,
                stats: GroupStats::default(),
            })
            .stats
            .add(&dist);
        tensors.push(TensorReport {
            name: name.to_string(),
            role,
            shape,
            distance: dist,
        });
    }
    Ok(DistanceReport {
        a: a.path().to_path_buf(),
        b: b.path().to_path_buf(),
        base: base.map(|w| w.path().to_path_buf()),
        mode: if base.is_some() {
            Mode::TaskVectors
        } else {
            Mode::Weights
        },
        tssd_top_k_percent: opts.tssd_top_k_percent,
        aggregate,
        layers: groups.into_values().collect(),
        tensors,
        skipped,
    })
}
