//! Resumable training state: every variable, the optimiser's moments and step count, and the
//! trainer's step, in one folder `state-<step>` written atomically (a new folder each time;
//! older ones are removed only after the new one is complete, so a kill at any moment leaves
//! a complete state behind). A resumed run loads the newest and continues bit-identically:
//! the schedule is a function of the step, the data order of (seed, epoch), masking and
//! negatives of (seed, step).
//!
//! A kill (SIGKILL, power) mid-write leaves the temporary sibling of the folder being written
//! (`core::atomic`), never a partial `state-<step>` or `model/`; [`remove_leftovers`] clears
//! such siblings when a run starts or resumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmerge_core::Checkpoint;
use mmerge_models::optim::{AdamW, AdamWState, ParamState};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Result, TrainError};
use crate::net::Net;

const PREFIX: &str = "state-";
const MODEL: &str = "model/";
const M: &str = "adam_m/";
const V: &str = "adam_v/";
const META: &str = "state.json";

/// The trainer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Updates done.
    pub step: u64,
    /// The optimiser's own step count.
    pub adam_step: i32,
    /// FNV-1a of the recipe's YAML: a state is resumed only by the recipe that wrote it.
    pub recipe_hash: u64,
}

/// Writes `run/state-<step>` and removes older states.
pub fn save(run: &Path, net: &Net, opt: &AdamW, meta: Meta) -> Result<PathBuf> {
    let out = run.join(format!("{PREFIX}{:08}", meta.step));
    let mut tensors: BTreeMap<String, Tensor> = net
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("{MODEL}{n}"), t))
        .collect();
    let state = opt.export_state();
    for p in &state.params {
        tensors.insert(
            format!("{M}{}", p.name),
            Tensor::from_slice(&p.m).view(p.shape.as_slice()),
        );
        tensors.insert(
            format!("{V}{}", p.name),
            Tensor::from_slice(&p.v).view(p.shape.as_slice()),
        );
    }
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| TrainError::Invalid(e.to_string()))?;
    mmerge_models::io::write_folder(&out, &tensors, &[(META, json.as_slice())], true)?;
    for old in states(run)? {
        if old != out {
            remove_state(&old)?;
        }
    }
    Ok(out)
}

/// Removes a state folder so that a kill at any moment leaves it whole or gone from the
/// states: it is first renamed to its temporary sibling (which [`remove_leftovers`] clears at
/// the next start), then deleted.
pub fn remove_state(dir: &Path) -> Result<()> {
    let aside = mmerge_core::atomic::temp_sibling(dir);
    std::fs::rename(dir, &aside).map_err(|e| TrainError::io(dir, e))?;
    std::fs::remove_dir_all(&aside).map_err(|e| TrainError::io(&aside, e))
}

/// Removes what killed runs left in `run`: the temporary siblings of `core::atomic` (their
/// process is gone, nothing will finish them). Returns how many.
pub fn remove_leftovers(run: &Path) -> Result<usize> {
    // The marker in the temporary names, taken from `core::atomic`, the one place that
    // names them: `.<name><marker><pid>`.
    let probe = mmerge_core::atomic::temp_sibling(Path::new("x"));
    let probe = probe.to_string_lossy();
    let marker = probe
        .strip_prefix(".x")
        .unwrap_or(&probe)
        .trim_end_matches(|c: char| c.is_ascii_digit());
    let entries = match std::fs::read_dir(run) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(TrainError::io(run, e)),
    };
    let mut n = 0;
    for e in entries {
        let e = e.map_err(|e| TrainError::io(run, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && !marker.is_empty() && name.contains(marker)) {
            continue;
        }
        let path = e.path();
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        gone.map_err(|e| TrainError::io(&path, e))?;
        n += 1;
    }
    Ok(n)
}

/// Complete state folders of a run, oldest first.
pub fn states(run: &Path) -> Result<Vec<PathBuf>> {
    let mut v = vec![];
    let entries = match std::fs::read_dir(run) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(TrainError::io(run, e)),
    };
    for e in entries {
        let e = e.map_err(|e| TrainError::io(run, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_prefix(PREFIX)
            .is_some_and(|s| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()))
            && e.path().join(META).is_file()
        {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// Loads the newest state of `run` into `net` and `opt`; `None` when there is none.
pub fn load_latest(
    run: &Path,
    net: &mut Net,
    opt: &mut AdamW,
    recipe_hash: u64,
) -> Result<Option<Meta>> {
    let Some(dir) = states(run)?.pop() else {
        return Ok(None);
    };
    let meta_path = dir.join(META);
    let bytes = std::fs::read(&meta_path).map_err(|e| TrainError::io(&meta_path, e))?;
    let meta: Meta = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", meta_path.display())))?;
    if meta.recipe_hash != recipe_hash {
        return Err(TrainError::Invalid(format!(
            "{} was written by a different recipe; resume with the recipe that started the run, or start afresh",
            dir.display()
        )));
    }
    let ck = Checkpoint::open(&dir)?;
    let read = |key: &str, shape: &[i64]| -> Result<Vec<f32>> {
        let m = ck
            .meta(key)
            .ok_or_else(|| TrainError::Invalid(format!("{}: no tensor `{key}`", dir.display())))?;
        let found: Vec<i64> = m.shape.iter().map(|&d| d as i64).collect();
        if found != shape {
            return Err(TrainError::Invalid(format!(
                "{}: `{key}` is {found:?}, the run's variable is {shape:?}",
                dir.display()
            )));
        }
        Ok(ck.read_f32(key)?)
    };
    {
        let _guard = tch::no_grad_guard();
        for (name, mut var) in net.vs.variables() {
            let values = read(&format!("{MODEL}{name}"), &var.size())?;
            var.f_copy_(
                &Tensor::from_slice(&values)
                    .view(var.size().as_slice())
                    .to_device(var.device()),
            )?;
        }
    }
    let params = opt
        .names()
        .iter()
        .zip(opt.params())
        .map(|(name, p)| {
            Ok(ParamState {
                name: name.clone(),
                shape: p.size(),
                m: read(&format!("{M}{name}"), &p.size())?,
                v: read(&format!("{V}{name}"), &p.size())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    opt.import_state(&AdamWState {
        step: meta.adam_step,
        params,
    })?;
    Ok(Some(meta))
}
