//! Alignment on checkpoints, what `mmerge align` runs: loading weights, activation statistics
//! on disk, and the two modes.
//!
//! - Model mode ([`align_checkpoints`]): checkpoint B is permuted into checkpoint A's basis on
//!   [`model_units`] (heads: `num_attention_heads` of `config.json`), so that A and the output
//!   merge coordinate-wise; with λ < 1 the two models' joint activation statistics on the same
//!   batches (`mmerge statistics A OUT --pair B`) are read from a statistics folder. A zip
//!   ([`zip_checkpoints`]) writes both models transformed into the merged space.
//! - Expert mode ([`align_experts`]): inside one multiway checkpoint, each other expert is
//!   aligned to the reference expert on [`expert_units`] (activations from the statistics
//!   folder when λ < 1). Align: the other experts' tensors are permuted, all else is copied,
//!   so the output computes exactly what the input does and merges into the shared model with
//!   any method (`mmerge experts`). Zip: the first other expert is zipped with the reference
//!   and both are replaced by their transformed tensors (averaging them is ZipIt's merge);
//!   this needs r = 0.5, so that shapes stay. **Rule for a further expert** (the VL expert of
//!   the VL layers): it is first aligned to the reference with the align solver on the same
//!   similarity (same λ), then given the *reference's* side of the zip transform of the same
//!   layer part, since after the alignment it lives in the reference's basis. Where the zip
//!   partner is not stored, the further expert is only aligned.
//! - **Tied heads**: a head's queries and keys (unit QK) weight its values (unit VO), so the
//!   two units must move heads alike, or the attention of a permuted model changes. After
//!   [`align_units`] (which solves them independently) the QK and VO units of every attention
//!   expert are re-solved at the final similarities with one shared head assignment that
//!   maximises the sum of both units' head-pair scores (within-head assignments, and group zips
//!   per matched head pair, stay per unit).
//!
//! Activation statistics: `<statistics>/activations/` is a checkpoint holding, per unit name
//! U, `U.count` [1], `U.sum` [2O] and `U.outer` [2O, 2O] (float64; see [`JointStats`]).
//!
//! Outputs are written atomically (nothing is left at `out` on an error); tensors that the
//! alignment does not change are copied byte for byte, changed ones are stored in their dtype,
//! and `config.json` and tokenizer files are copied from the (B or multiway) source.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mmerge_core::{Checkpoint, CheckpointWriter, CoreError, Dtype, OutputTensor};

use super::lap::solve_max;
use super::matching::{AlignMethod, Options, Solver, align_units};
use super::similarity::{JointStats, weight_similarity};
use super::solve::zip;
use super::units::{Tensor, Unit, Weights, expert_units, model_units};
use super::{AlignError, Side, Transform, apply};
use crate::{MergeError, Result, TOKENIZER_FILES};

/// The checkpoint of a statistics folder that holds the joint activation statistics.
pub const ACTIVATIONS: &str = "activations";
const SHARD_BYTES: usize = 5_000_000_000;

/// What an alignment did.
#[derive(Debug, Clone)]
pub struct AlignSummary {
    pub method: &'static str,
    /// Units solved (all pairs of experts together in expert mode).
    pub units: usize,
    /// Tensors whose values changed.
    pub tensors_changed: usize,
    /// The mean over units of the mean matched similarity at the final transforms (the
    /// objective); `None` for zip methods.
    pub mean_similarity: Option<f64>,
    /// Every unit's transform, by unit name.
    pub transforms: BTreeMap<String, Transform>,
    pub seconds: f64,
    pub out: PathBuf,
}

/// Every float tensor of `ck` as f32; tensors of other dtypes (integer buffers) are left out,
/// and [`align_checkpoints`] / [`align_experts`] copy them unchanged.
pub fn load_weights(ck: &Checkpoint) -> Result<Weights> {
    let mut w = Weights::new();
    for name in ck.names() {
        let meta = ck.require(name)?;
        if !meta.dtype.is_float() {
            continue;
        }
        let shape = meta.shape.clone();
        let data = ck.read_f32(name)?;
        w.insert(name.clone(), Tensor { shape, data });
    }
    Ok(w)
}

/// The joint statistics of `units` found in `dir/activations/`; a unit without tensors there
/// is absent from the map (then [`align_units`] names it when λ < 1). A unit with only some
/// of its three tensors, or mis-shaped ones, is an error naming the key.
pub fn read_joint_stats(dir: &Path, units: &[Unit]) -> Result<BTreeMap<String, JointStats>> {
    let path = dir.join(ACTIVATIONS);
    let ck = Checkpoint::open(&path)?;
    let mut out = BTreeMap::new();
    for u in units {
        let n2 = 2 * u.width;
        let parts = [
            ("count", vec![1]),
            ("sum", vec![n2]),
            ("outer", vec![n2, n2]),
        ];
        let found = parts
            .iter()
            .filter(|(s, _)| ck.meta(&format!("{}.{s}", u.name)).is_some())
            .count();
        if found == 0 {
            continue;
        }
        let mut values = Vec::with_capacity(3);
        for (suffix, shape) in parts {
            let key = format!("{}.{suffix}", u.name);
            let bad = |message: String| MergeError::Statistics {
                path: path.clone(),
                message: format!("`{key}`: {message}"),
            };
            let meta = ck
                .meta(&key)
                .ok_or_else(|| bad("missing (the unit's other statistics are there)".into()))?;
            if meta.shape != shape {
                return Err(bad(format!(
                    "shape {:?}, expected {shape:?} for unit width {}",
                    meta.shape, u.width
                )));
            }
            values.push(ck.read_f64(&key)?);
        }
        let [count, sum, outer]: [Vec<f64>; 3] =
            values.try_into().unwrap_or_else(|_| Default::default());
        out.insert(
            u.name.clone(),
            JointStats {
                width: u.width,
                count: count.first().copied().unwrap_or(0.0),
                sum,
                outer,
            },
        );
    }
    Ok(out)
}

/// Writes `stats` as `dir/activations/` (float64, layout in the module doc), atomically,
/// replacing an earlier one.
pub fn write_joint_stats(dir: &Path, stats: &BTreeMap<String, JointStats>) -> Result<()> {
    let path = dir.join(ACTIVATIONS);
    let mut tensors = Vec::with_capacity(3 * stats.len());
    for (name, s) in stats {
        let n2 = 2 * s.width;
        if s.sum.len() != n2 || s.outer.len() != n2 * n2 {
            return Err(AlignError::Stats {
                unit: name.clone(),
                message: format!(
                    "{} sums and {} outer entries for width {}",
                    s.sum.len(),
                    s.outer.len(),
                    s.width
                ),
            }
            .into());
        }
        tensors.push((format!("{name}.count"), vec![1], vec![s.count]));
        tensors.push((format!("{name}.sum"), vec![n2], s.sum.clone()));
        tensors.push((format!("{name}.outer"), vec![n2, n2], s.outer.clone()));
    }
    let outs: Vec<OutputTensor> = tensors
        .iter()
        .map(|(n, s, _)| OutputTensor::new(n.clone(), Dtype::F64, s.clone()))
        .collect();
    let w = CheckpointWriter::create(&path, &outs, SHARD_BYTES, true)?;
    for (n, _, v) in &tensors {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_bytes(n, 0, &bytes)?;
    }
    w.finish()?;
    Ok(())
}

/// Model mode (see the module doc): writes checkpoint `b` permuted into `a`'s basis to `out`
/// (refused if it exists, unless `force`). `statistics`: a folder whose `activations/` holds
/// the two models' joint unit moments (`mmerge statistics A OUT --pair B`), needed when
/// λ < 1. Zip methods transform both models: see [`zip_checkpoints`].
pub fn align_checkpoints(
    a: &Path,
    b: &Path,
    out: &Path,
    force: bool,
    method: AlignMethod,
    opts: &Options,
    statistics: Option<&Path>,
) -> Result<AlignSummary> {
    if is_zip(opts) {
        return Err(AlignError::Mode {
            method: method.name(),
            message: "zip transforms both models; use `zip_checkpoints` (a merge config's \
                      `align:` does) or an align method (weight_matching, activation_matching, \
                      mudsc_align)"
                .into(),
        }
        .into());
    }
    pair(a, b, [None, Some(out)], force, method, opts, statistics)
}

/// Model mode with a zip method: both `a` and `b` transformed into the merged space, written
/// to `out_a` and `out_b`; averaging the two is ZipIt's (MuDSC-Zip's) merge.
#[allow(clippy::too_many_arguments)]
pub fn zip_checkpoints(
    a: &Path,
    b: &Path,
    out_a: &Path,
    out_b: &Path,
    force: bool,
    method: AlignMethod,
    opts: &Options,
    statistics: Option<&Path>,
) -> Result<AlignSummary> {
    pair(
        a,
        b,
        [Some(out_a), Some(out_b)],
        force,
        method,
        opts,
        statistics,
    )
}

/// Aligns (or zips) `b` to `a` and writes the sides given in `outs` ([A, B]).
fn pair(
    a: &Path,
    b: &Path,
    outs: [Option<&Path>; 2],
    force: bool,
    method: AlignMethod,
    opts: &Options,
    statistics: Option<&Path>,
) -> Result<AlignSummary> {
    let start = Instant::now();
    check_method(method, opts)?;
    let (ca, cb) = (Checkpoint::open(a)?, Checkpoint::open(b)?);
    let heads = heads_of(&ca)?;
    let heads_b = heads_of(&cb)?;
    if heads != heads_b {
        return Err(MergeError::Config {
            path: cb.dir().join("config.json"),
            line: None,
            message: format!("num_attention_heads = {heads_b}, but {heads} in model A"),
        });
    }
    let (wa, wb) = (load_weights(&ca)?, load_weights(&cb)?);
    let units = model_units(&keys_of(&wb), heads)?;
    let acts = match statistics {
        Some(dir) if opts.lambda < 1.0 => Some(read_joint_stats(dir, &units)?),
        None if opts.lambda < 1.0 => {
            return Err(AlignError::Mode {
                method: method.name(),
                message: format!(
                    "λ = {} < 1 needs the two models' joint activation statistics: \
                     `mmerge statistics A OUT --suite SUITE --pair B`, then give OUT",
                    opts.lambda
                ),
            }
            .into());
        }
        _ => None,
    };
    let (transforms, mean) = run_units(&wa, &wb, &units, acts.as_ref(), opts)?;
    let mut written = None;
    let mut tensors_changed = 0;
    for ((side, out), (ck, w)) in [Side::A, Side::B]
        .into_iter()
        .zip(outs)
        .zip([(&ca, &wa), (&cb, &wb)])
    {
        let Some(out) = out else { continue };
        let replaced = changed(w, apply(w, &units, side, &transforms)?);
        tensors_changed += replaced.len();
        written = Some(write_output(ck, &replaced, out, force)?);
    }
    Ok(AlignSummary {
        method: method.name(),
        units: units.len(),
        tensors_changed,
        mean_similarity: mean,
        transforms,
        seconds: start.elapsed().as_secs_f64(),
        out: written.unwrap_or_default(),
    })
}

/// Expert mode (see the module doc): aligns (or zips) `others` to `reference` inside the
/// multiway checkpoint `multiway` and writes the result to `out` (refused if it exists, unless
/// `force`). `statistics`: the folder holding `activations/`, needed when λ < 1.
#[allow(clippy::too_many_arguments)]
pub fn align_experts(
    multiway: &Path,
    out: &Path,
    force: bool,
    reference: &str,
    others: &[&str],
    method: AlignMethod,
    opts: &Options,
    statistics: Option<&Path>,
) -> Result<AlignSummary> {
    let start = Instant::now();
    check_method(method, opts)?;
    let ck = Checkpoint::open(multiway)?;
    let heads = heads_of(&ck)?;
    let w = load_weights(&ck)?;
    let keys = keys_of(&w);
    check_experts(&keys, reference, others)?;
    let unit_sets = others
        .iter()
        .map(|o| expert_units(&keys, heads, reference, o))
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<Unit> = unit_sets.iter().flatten().cloned().collect();
    let acts = match statistics {
        Some(dir) if opts.lambda < 1.0 && !all.is_empty() => Some(read_joint_stats(dir, &all)?),
        None if opts.lambda < 1.0 && !all.is_empty() => {
            return Err(AlignError::Mode {
                method: method.name(),
                message: format!(
                    "λ = {} < 1 needs activation statistics: give the statistics folder \
                     (with {ACTIVATIONS}/) of the multiway checkpoint",
                    opts.lambda
                ),
            }
            .into());
        }
        _ => None,
    };
    let mut replaced = Weights::new();
    let mut transforms = BTreeMap::new();
    let mut means = Vec::new();
    if !is_zip(opts) {
        for units in &unit_sets {
            let (t, mean) = run_units(&w, &w, units, acts.as_ref(), opts)?;
            replaced.extend(apply(&w, units, Side::B, &t)?);
            means.extend(mean.map(|m| (m, units.len())));
            transforms.extend(t);
        }
    } else if let Some((zip_units, further)) = unit_sets.split_first() {
        let (zt, _) = run_units(&w, &w, zip_units, acts.as_ref(), opts)?;
        for u in zip_units {
            let new = zt.get(&u.name).map_or(0, Transform::new_width);
            if new != u.width {
                return Err(AlignError::Mode {
                    method: method.name(),
                    message: format!(
                        "unit `{}` zips to width {new}, not {}: expert mode keeps shapes and \
                         needs r = 0.5",
                        u.name, u.width
                    ),
                }
                .into());
            }
        }
        replaced.extend(apply(&w, zip_units, Side::A, &zt)?);
        replaced.extend(apply(&w, zip_units, Side::B, &zt)?);
        let align_opts = Options {
            solver: Solver::Align,
            ..opts.clone()
        };
        for (units, third) in further.iter().zip(&others[1..]) {
            let (at, _) = run_units(&w, &w, units, acts.as_ref(), &align_opts)?;
            let aligned = apply(&w, units, Side::B, &at)?;
            // The reference's side of the zip, on the aligned third expert's keys.
            let (from, to) = (
                format!(".{reference}+{third}."),
                format!(".{reference}+{}.", others[0]),
            );
            let relabelled: Vec<Unit> = units
                .iter()
                .map(|u| Unit {
                    name: u.name.replacen(&from, &to, 1),
                    a: u.b.clone(),
                    ..u.clone()
                })
                .filter(|u| zt.contains_key(&u.name))
                .collect();
            let zipped = apply(&aligned, &relabelled, Side::A, &zt)?;
            replaced.extend(aligned);
            replaced.extend(zipped);
            transforms.extend(at);
        }
        transforms.extend(zt);
    }
    let replaced = changed(&w, replaced);
    let out = write_output(&ck, &replaced, out, force)?;
    let n: usize = means.iter().map(|(_, n)| n).sum();
    Ok(AlignSummary {
        method: method.name(),
        units: all.len(),
        tensors_changed: replaced.len(),
        mean_similarity: (!is_zip(opts) && n > 0)
            .then(|| means.iter().map(|(m, k)| m * *k as f64).sum::<f64>() / n as f64),
        transforms,
        seconds: start.elapsed().as_secs_f64(),
        out,
    })
}

fn is_zip(opts: &Options) -> bool {
    matches!(opts.solver, Solver::Zip { .. })
}

/// The method's solver kind must be the options'.
fn check_method(method: AlignMethod, opts: &Options) -> Result<(), AlignError> {
    let zip_method = matches!(method, AlignMethod::Zipit | AlignMethod::MudscZip);
    if zip_method != is_zip(opts) {
        return Err(AlignError::Mode {
            method: method.name(),
            message: format!(
                "the options' solver {:?} does not fit the method",
                opts.solver
            ),
        });
    }
    Ok(())
}

/// The experts stored in the layer parts: all named ones must be there, others distinct and
/// not the reference.
fn check_experts(
    keys: &[(String, Vec<usize>)],
    reference: &str,
    others: &[&str],
) -> Result<(), AlignError> {
    let stored: BTreeSet<&str> = keys
        .iter()
        .filter_map(|(k, _)| match k.split('.').collect::<Vec<_>>().as_slice() {
            [
                "encoder",
                "layers",
                _,
                "attn" | "ffn" | "norm1" | "norm2",
                e,
                ..,
            ] => Some(*e),
            _ => None,
        })
        .collect();
    let list = stored.iter().copied().collect::<Vec<_>>().join(", ");
    let bad = |name: &str, message: String| AlignError::Expert {
        name: name.to_string(),
        message,
    };
    if others.is_empty() {
        return Err(bad(reference, "no other expert to align to it".into()));
    }
    let mut seen = BTreeSet::new();
    for &e in std::iter::once(&reference).chain(others) {
        if !stored.contains(e) {
            return Err(bad(
                e,
                format!("not stored in this checkpoint (stored: {list})"),
            ));
        }
        if !seen.insert(e) {
            return Err(bad(e, "named twice (as reference or other)".into()));
        }
    }
    Ok(())
}

/// `num_attention_heads` of the checkpoint's `config.json`.
fn heads_of(ck: &Checkpoint) -> Result<usize> {
    let path = ck.dir().join("config.json");
    let bad = |message: String| MergeError::Config {
        path: path.clone(),
        line: None,
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad(format!(
            "cannot read it ({e}); alignment needs `num_attention_heads` from it"
        ))
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    match v
        .get("num_attention_heads")
        .and_then(serde_json::Value::as_u64)
    {
        Some(h) if h > 0 => Ok(h as usize),
        _ => Err(bad(
            "no positive integer `num_attention_heads` (alignment groups attention units by head)"
                .into(),
        )),
    }
}

fn keys_of(w: &Weights) -> Vec<(String, Vec<usize>)> {
    w.iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect()
}

/// The tensors of `new` whose values differ from `old`'s.
fn changed(old: &Weights, new: Weights) -> Weights {
    new.into_iter()
        .filter(|(k, t)| old.get(k) != Some(t))
        .collect()
}

/// [`align_units`], then the tied-heads re-solve (module doc), and the mean matched
/// similarity at the final transforms (`None` for zip).
fn run_units(
    wa: &Weights,
    wb: &Weights,
    units: &[Unit],
    acts: Option<&BTreeMap<String, JointStats>>,
    opts: &Options,
) -> Result<(BTreeMap<String, Transform>, Option<f64>), AlignError> {
    let mut found = align_units(wa, wb, units, acts, opts)?;
    let mut current = Vec::with_capacity(units.len());
    for u in units {
        current.push(found.remove(&u.name).ok_or_else(|| AlignError::Unit {
            unit: u.name.clone(),
            message: "no transform was found".into(),
        })?);
    }
    let lambda = opts.lambda;
    let similarity = |p: usize, current: &[Transform]| -> Result<Vec<f64>, AlignError> {
        let u = &units[p];
        let n2 = 2 * u.width;
        let mut s = if lambda > 0.0 {
            weight_similarity([wa, wb], units, p, current)?
        } else {
            vec![0.0; n2 * n2]
        };
        if lambda < 1.0 {
            let stats = acts.and_then(|a| a.get(&u.name));
            let sa = stats
                .ok_or_else(|| AlignError::NoActivations {
                    unit: u.name.clone(),
                    lambda,
                })?
                .correlation()
                .map_err(|message| AlignError::Stats {
                    unit: u.name.clone(),
                    message,
                })?;
            for (x, y) in s.iter_mut().zip(sa) {
                *x = lambda * *x + (1.0 - lambda) * y;
            }
        }
        Ok(s)
    };
    let mut sims: Vec<Option<Vec<f64>>> = vec![None; units.len()];
    for (q, u) in units.iter().enumerate() {
        let Some(prefix) = u.name.strip_suffix(".qk") else {
            continue;
        };
        let vo = format!("{prefix}.vo");
        let Some(v) = units.iter().position(|x| x.name == vo) else {
            continue;
        };
        if u.groups <= 1 || units[v].groups != u.groups {
            continue;
        }
        // QK's and VO's similarities read only the other units' axes (the residual stream),
        // so re-solving one of them leaves the other's similarity as it was.
        let (sq, sv) = (similarity(q, &current)?, similarity(v, &current)?);
        let [tq, tv] = tied_heads(
            [&sq, &sv],
            [u.width, units[v].width],
            u.groups,
            &opts.solver,
        )?;
        (current[q], current[v]) = (tq, tv);
        (sims[q], sims[v]) = (Some(sq), Some(sv));
    }
    let mut mean = None;
    if !matches!(opts.solver, Solver::Zip { .. }) && !units.is_empty() {
        let mut total = 0.0;
        for (p, u) in units.iter().enumerate() {
            let s = match sims[p].take() {
                Some(s) => s,
                None => similarity(p, &current)?,
            };
            if let Transform::Perm(perm) = &current[p] {
                let n2 = 2 * u.width;
                total += perm
                    .iter()
                    .enumerate()
                    .map(|(i, &j)| s[i * n2 + u.width + j])
                    .sum::<f64>()
                    / u.width.max(1) as f64;
            }
        }
        mean = Some(total / units.len() as f64);
    }
    let transforms = units.iter().map(|u| u.name.clone()).zip(current).collect();
    Ok((transforms, mean))
}

/// QK and VO solved with one head assignment: head pair (j, k) scores the sum over both units
/// of the mean matched similarity of its within-head assignment; then per unit the matched
/// pairs' within-head assignments (align) or per-pair zips (zip), as in the group solvers.
fn tied_heads(
    s: [&[f64]; 2],
    width: [usize; 2],
    groups: usize,
    solver: &Solver,
) -> Result<[Transform; 2], AlignError> {
    let mut within = [Vec::new(), Vec::new()];
    let mut score = vec![0.0; groups * groups];
    for u in 0..2 {
        let (o, og) = (width[u], width[u] / groups);
        for j in 0..groups {
            for k in 0..groups {
                let block: Vec<f64> = (0..og)
                    .flat_map(|a| (0..og).map(move |b| s[u][(j * og + a) * 2 * o + o + k * og + b]))
                    .collect();
                let perm = solve_max(&block, og)?;
                score[j * groups + k] += perm
                    .iter()
                    .enumerate()
                    .map(|(a, &b)| block[a * og + b])
                    .sum::<f64>()
                    / og.max(1) as f64;
                within[u].push(perm);
            }
        }
    }
    let heads = solve_max(&score, groups)?;
    let mut out = Vec::with_capacity(2);
    for u in 0..2 {
        let (o, og) = (width[u], width[u] / groups);
        out.push(match *solver {
            Solver::Align => Transform::Perm(
                heads
                    .iter()
                    .enumerate()
                    .flat_map(|(j, &k)| within[u][j * groups + k].iter().map(move |&x| k * og + x))
                    .collect(),
            ),
            Solver::Zip { r, a, b } => {
                let mut pairs = Vec::with_capacity(groups);
                for (j, &k) in heads.iter().enumerate() {
                    let f: Vec<usize> = (j * og..(j + 1) * og)
                        .chain(o + k * og..o + (k + 1) * og)
                        .collect();
                    let sub: Vec<f64> = f
                        .iter()
                        .flat_map(|&x| f.iter().map(move |&y| s[u][x * 2 * o + y]))
                        .collect();
                    pairs.push((j, k, zip(&sub, og, 1, [r, a, b])?.0));
                }
                assemble_zip(o, og, &pairs)
            }
        });
    }
    let [tq, tv]: [Transform; 2] = out
        .try_into()
        .map_err(|_| AlignError::Solver("tied heads".into()))?;
    Ok([tq, tv])
}

/// Per-head-pair zips (A head j with B head k, each [og, n]) placed into a unit's [O, Σn]
/// merge and unmerge matrices, pair after pair.
fn assemble_zip(o: usize, og: usize, pairs: &[(usize, usize, Transform)]) -> Transform {
    let new_width: usize = pairs.iter().map(|(_, _, t)| t.new_width()).sum();
    let mut merge = [vec![0.0; o * new_width], vec![0.0; o * new_width]];
    let mut unmerge = merge.clone();
    let mut col = 0;
    for (j, k, t) in pairs {
        if let Transform::Zip {
            merge: m,
            unmerge: um,
            new_width: n,
        } = t
        {
            for (side, head) in [(0, *j), (1, *k)] {
                for row in 0..og {
                    let dst = (head * og + row) * new_width + col;
                    merge[side][dst..dst + n].copy_from_slice(&m[side][row * n..(row + 1) * n]);
                    unmerge[side][dst..dst + n].copy_from_slice(&um[side][row * n..(row + 1) * n]);
                }
            }
            col += n;
        }
    }
    Transform::Zip {
        merge,
        unmerge,
        new_width,
    }
}

/// Writes `src` with the tensors of `replaced` substituted (same keys, shapes and dtypes),
/// plus `config.json` and tokenizer files from `src`'s folder.
fn write_output(src: &Checkpoint, replaced: &Weights, out: &Path, force: bool) -> Result<PathBuf> {
    let mut outs = Vec::with_capacity(src.len());
    for name in src.names() {
        let meta = src.require(name)?;
        if let Some(t) = replaced.get(name)
            && t.shape != meta.shape
        {
            return Err(CoreError::BadWrite {
                name: name.clone(),
                reason: format!("aligned to shape {:?}, stored {:?}", t.shape, meta.shape),
            }
            .into());
        }
        outs.push(OutputTensor::new(
            name.clone(),
            meta.dtype,
            meta.shape.clone(),
        ));
    }
    let w = CheckpointWriter::create(out, &outs, SHARD_BYTES, force)?;
    for name in src.names() {
        match replaced.get(name) {
            Some(t) => w.write_f32(name, 0, &t.data)?,
            None => w.write_bytes(name, 0, src.bytes(name)?)?,
        }
    }
    for file in std::iter::once("config.json").chain(TOKENIZER_FILES) {
        let path = src.dir().join(file);
        if path.is_file() {
            w.copy_file(&path, file)?;
        }
    }
    Ok(w.finish()?)
}
