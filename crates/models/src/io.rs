//! Checkpoint I/O for `tch` variable stores through mmerge's own safetensors reader and atomic
//! writer: a load checks every key and shape first and reports all problems at once (missing,
//! unexpected, mis-shaped keys), so nothing is half-loaded.

use std::collections::BTreeMap;
use std::path::Path;

use mmerge_core::{Checkpoint, CheckpointWriter, Dtype, OutputTensor};
use tch::{Kind, Tensor, nn};

use crate::error::{KeyReport, Result};

/// Saves every variable of `vs` as F32 safetensors (keys = variable names, sorted) into the
/// folder `out`, with `config_json` as `config.json`. Atomic: nothing exists at `out` until
/// the write is complete. Refuses an existing `out` unless `force`.
pub fn save(vs: &nn::VarStore, out: &Path, config_json: Option<&str>, force: bool) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let files: Vec<(&str, &[u8])> = config_json
        .map(|c| ("config.json", c.as_bytes()))
        .into_iter()
        .collect();
    write_folder(out, &vars, &files, force)
}

/// Writes named tensors as F32 safetensors into the folder `out` (atomically, see
/// [`save`]), with `files` (name, bytes) beside them (`config.json`, `tokenizer.json`, ...).
pub fn write_folder(
    out: &Path,
    tensors: &BTreeMap<String, Tensor>,
    files: &[(&str, &[u8])],
    force: bool,
) -> Result<()> {
    let shape = |t: &Tensor| t.size().iter().map(|&d| d as usize).collect();
    let outs: Vec<OutputTensor> = tensors
        .iter()
        .map(|(n, t)| OutputTensor::new(n.clone(), Dtype::F32, shape(t)))
        .collect();
    let w = CheckpointWriter::create(out, &outs, 5_000_000_000, force)?;
    for (name, t) in tensors {
        let flat = t
            .detach()
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous()
            .view([-1]);
        w.write_f32(name, 0, &Vec::<f32>::try_from(&flat)?)?;
    }
    for (name, bytes) in files {
        w.write_file(name, bytes)?;
    }
    w.finish()?;
    Ok(())
}

/// Checks that `ck` holds exactly the variables of `vs` with their shapes; the error lists
/// every missing, unexpected and mis-shaped key.
pub fn check_keys(vs: &nn::VarStore, ck: &Checkpoint) -> Result<()> {
    let vars = vs.variables();
    let mut report = KeyReport::default();
    for (name, t) in &vars {
        match ck.meta(name) {
            None => report.missing(name),
            Some(m) => {
                let found: Vec<i64> = m.shape.iter().map(|&d| d as i64).collect();
                report.shape_fits(name, &t.size(), &found);
            }
        }
    }
    for name in ck.names().iter().filter(|n| !vars.contains_key(*n)) {
        report.unexpected(name);
    }
    report.finish(ck.path())
}

/// Loads a checkpoint (file or folder) into `vs`, strictly: see [`check_keys`].
pub fn load(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    let ck = Checkpoint::open(path)?;
    check_keys(vs, &ck)?;
    let vars = vs.variables();
    let _guard = tch::no_grad_guard();
    for (name, mut t) in vars {
        let values = ck.read_f32(&name)?;
        let src = Tensor::from_slice(&values)
            .view(t.size().as_slice())
            .to_kind(t.kind())
            .to_device(t.device());
        t.f_copy_(&src)?;
    }
    Ok(())
}
