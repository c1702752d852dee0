//! From a config to a merge plan: which input tensors make each output tensor, with every
//! parameter evaluated for it. The rules follow mergekit 0.1.5 (`docs/mergekit-semantics.md`).
//!
//! - **Depth t** (for gradient parameters): in a slice of n layers, layer j has t = j / (n − 1)
//!   (t = 1 when n = 1); the gradient restarts in each slice. A `models:` config is one slice
//!   over the layers of every numbered stack separately, as mergekit infers stacks for
//!   checkpoints without a template: the first `.N.` of a key splits it into a stack prefix and
//!   layer N (`keys::stack_ref`), so an encoder-decoder's `encoder.layers.N` and
//!   `decoder.layers.N` and a vision tower's `convs.N` each run from t = 0 to 1. Tensors outside
//!   every stack (embeddings, final norm, heads) have t = 0.
//! - **Slices**: output layers are numbered consecutively across slices; output layer j of a
//!   slice reads layer `layer_range[0] + j` of every source. Tensors before the layers are merged
//!   from the first slice's sources, those after from the last slice's.
//! - **Parameter scopes**: a per-model parameter (`weight`, `density`, `scale`) is looked up in
//!   the model's (or slice source's) `parameters`, then the slice's, then the top level, and its
//!   filters match the *input* tensor name. A shared parameter (`t`, `normalize`, `lambda`,
//!   `rescale`, `int8_mask`) is looked up in the slice's, then the top-level `parameters`, with
//!   filters matching the *output* name; setting one per model is an error here (mergekit
//!   silently ignores it).
//! - A `base_model` not listed among the models (or a slice's sources) is added as an input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mmerge_core::keys::{self, TensorRole};
use mmerge_core::{Checkpoint, Dtype, OutputTensor};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::MergeConfig;
use crate::error::{MergeError, Result};
use crate::methods::{
    DynKernel, Inputs, Kind, Method, MethodKind, ParamSpec, Scope, Statistics, TensorPlan, Value,
    Values,
};
use crate::params::{ParamMap, Scalar};

mod jobs;
use jobs::{EMPTY, Job, Member, OUTSIDE_DEPTH, depth, model_jobs, module_jobs, slice_jobs};

/// One input tensor: a model (index into [`MergePlan::models`]) and a key in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub model: usize,
    pub key: String,
}

/// How one output tensor is made.
#[derive(Debug, Clone)]
pub struct Group {
    pub out: OutputTensor,
    /// The merged inputs (for task-vector methods: without the base).
    pub inputs: Vec<Source>,
    /// The base tensor (task-vector methods; SLERP's t = 0 end).
    pub base: Option<Source>,
    /// `None`: a byte-exact copy of `inputs[0]` (non-float tensors, plain passthrough).
    pub kernel: Option<Arc<dyn DynKernel>>,
    /// Depth t at which parameters were evaluated.
    pub depth: f64,
}

/// One output tensor of an explicit plan ([`MergePlan::from_groups`]): its key and its inputs
/// as (model index, key, per-input parameters). A group with one input is copied unchanged.
#[derive(Debug, Clone)]
pub struct KeyGroup {
    pub out: String,
    pub inputs: Vec<(usize, String, ParamMap)>,
}

/// A checked, fully evaluated merge.
#[derive(Debug)]
pub struct MergePlan {
    pub method: MethodKind,
    pub models: Vec<Checkpoint>,
    pub groups: Vec<Group>,
    /// Model whose `config.json` is copied to the output.
    pub config_model: usize,
    /// Model whose tokenizer files are copied to the output.
    pub tokenizer_model: usize,
    /// Output layer count, when slices may have changed it (written into `config.json`).
    pub out_layers: Option<usize>,
    /// The `torch_dtype` to record in `config.json`, when the config sets a dtype.
    pub out_dtype_name: Option<&'static str>,
    /// Values replacing those of keys the copied `config.json` has (an expert-into-shared
    /// merge writes `sharing: shared`).
    pub config_updates: Vec<(&'static str, serde_json::Value)>,
    /// Seed of DARE's random masks.
    pub seed: u64,
    /// Aligned copies of input models (`align:`), removed when the plan is dropped.
    pub scratch: Option<Scratch>,
}

/// A temporary folder removed on drop (the aligned copies of a merge's inputs).
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Aligns every model of `models:` but the reference (the base, else the first) to the
/// reference, into a scratch folder; returns the paths to open per model reference.
fn align_models(
    cfg: &MergeConfig,
    refs: &[&str],
    scratch: &Path,
) -> Result<HashMap<String, PathBuf>> {
    let mut paths = HashMap::new();
    let (Some(a), Some(entries)) = (&cfg.align, &cfg.models) else {
        return Ok(paths);
    };
    let method = crate::align::AlignMethod::from_name(&a.method)?;
    let mut opts = method.options(a.lambda)?;
    opts.seed = a.seed;
    let reference = cfg
        .base_model
        .clone()
        .unwrap_or_else(|| entries[0].model.clone());
    let statistics = a.statistics.as_deref().map(Path::new);
    let others: Vec<&str> = refs
        .iter()
        .copied()
        .filter(|r| *r != reference && Some(*r) != cfg.base_model.as_deref())
        .collect();
    if !matches!(opts.solver, crate::align::Solver::Align) {
        // Zip: the reference and the one other model both move into the merged space.
        let [other] = others.as_slice() else {
            return Ok(paths);
        };
        let (out_a, out_b) = (scratch.join("reference"), scratch.join("other"));
        crate::align::io::zip_checkpoints(
            &cfg.model_path(&reference),
            &cfg.model_path(other),
            &out_a,
            &out_b,
            true,
            method,
            &opts,
            statistics,
        )?;
        paths.insert(reference, out_a);
        paths.insert(other.to_string(), out_b);
        return Ok(paths);
    }
    for (i, r) in others.iter().enumerate() {
        let out = scratch.join(format!("model-{i}"));
        crate::align::io::align_checkpoints(
            &cfg.model_path(&reference),
            &cfg.model_path(r),
            &out,
            true,
            method,
            &opts,
            statistics,
        )?;
        paths.insert(r.to_string(), out);
    }
    Ok(paths)
}

impl MergePlan {
    /// Opens the config's models and plans the merge. `cfg_path` names the config in errors.
    pub fn new(cfg: &MergeConfig, cfg_path: &Path, seed: u64) -> Result<Self> {
        let cfg_err = |line: Option<usize>, message: String| MergeError::Config {
            path: cfg_path.to_path_buf(),
            line,
            message,
        };
        let method = cfg.method();

        let refs = cfg.model_refs();
        let scratch = (cfg.align.is_some() || cfg.tokenizer.is_some()).then(|| {
            static PLANS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = PLANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Scratch(std::env::temp_dir().join(format!("mmerge-scratch-{}-{n}", std::process::id())))
        });
        let aligned = match &scratch {
            Some(s) if cfg.align.is_some() => align_models(cfg, &refs, &s.0)?,
            _ => HashMap::new(),
        };
        let mut models = Vec::with_capacity(refs.len());
        let mut index: HashMap<&str, usize> = HashMap::new();
        for r in &refs {
            index.insert(r, models.len());
            let path = aligned
                .get(*r)
                .cloned()
                .unwrap_or_else(|| cfg.model_path(r));
            models.push(Checkpoint::open(path)?);
        }
        let base = cfg.base_model.as_deref().map(|b| index[b]);
        let out_dtype = cfg.output_dtype();
        let mut stats = vec![None; models.len()];
        for (r, dir) in cfg.statistics.iter().flatten() {
            let model = index[r.as_str()];
            stats[model] = Some(models.len());
            models.push(open_statistics(method, Path::new(dir))?);
        }

        let (jobs, out_layers) = match (&cfg.models, &cfg.slices, &cfg.modules) {
            (Some(entries), _, _) => {
                let reference = base.unwrap_or(index[entries[0].model.as_str()]);
                let names = models[reference].names();
                let jobs = model_jobs(names, entries, &index, base, EMPTY, |_| true);
                (jobs, None)
            }
            (None, Some(slices), _) => slice_jobs(slices, &models, &index, base, &cfg_err)?,
            (None, None, Some(modules)) => (
                module_jobs(cfg, modules, &models, &index, base, &cfg_err)?,
                None,
            ),
            (None, None, None) => {
                return Err(cfg_err(None, "no models, slices or modules".into()));
            }
        };

        let first = refs
            .iter()
            .position(|r| Some(index[r]) != base)
            .unwrap_or(0);
        let config_model = base.unwrap_or(first);
        let mut reads = HashMap::new();
        let mut config_updates = vec![];
        let tokenizer_model = match (&cfg.tokenizer, &scratch) {
            (Some(spec), Some(s)) => {
                let n = refs.len();
                let v = crate::vocab::prepare(
                    spec,
                    &mut models,
                    n,
                    &index,
                    base,
                    first,
                    &s.0,
                    cfg_path,
                )?;
                reads = v.redirects;
                if let Some(rows) = v.vocab_size {
                    config_updates.push(("vocab_size", rows.into()));
                }
                v.source
            }
            _ => config_model,
        };
        let mut groups = Vec::with_capacity(jobs.len());
        for job in jobs {
            groups.push(plan_group(
                &cfg.parameters,
                method,
                (&models, &reads),
                &stats,
                base,
                Arithmetic {
                    out_dtype,
                    mergekit_half: cfg.mergekit_half(),
                },
                job,
            )?);
        }
        Ok(MergePlan {
            method,
            models,
            groups,
            config_model,
            tokenizer_model,
            out_layers,
            config_updates,
            out_dtype_name: out_dtype.map(|d| match d {
                Dtype::BF16 => "bfloat16",
                Dtype::F16 => "float16",
                Dtype::F64 => "float64",
                _ => "float32",
            }),
            seed,
            scratch,
        })
    }

    /// A plan over explicit key groups, e.g. the experts of a multiway checkpoint merging into
    /// its shared keys. `parameters` plays the top-level `parameters`; depth t comes from the
    /// output keys' layer indices as for a `models:` config.
    ///
    /// `statistics[i]`, for a method that reads statistics, is the statistics folder of model
    /// `i` (missing entries: none).
    pub fn from_groups(
        mut models: Vec<Checkpoint>,
        statistics: &[Option<PathBuf>],
        method: MethodKind,
        base: Option<usize>,
        parameters: &ParamMap,
        groups: Vec<KeyGroup>,
        seed: u64,
    ) -> Result<Self> {
        let mut stats = vec![None; models.len()];
        for (model, dir) in statistics.iter().enumerate() {
            if let Some(dir) = dir {
                stats[model] = Some(models.len());
                models.push(open_statistics(method, dir)?);
            }
        }
        let n_layers = keys::layer_count(groups.iter().map(|g| g.out.as_str()));
        let mut planned = Vec::with_capacity(groups.len());
        for g in &groups {
            let depth = match keys::role(&g.out) {
                TensorRole::Layer(i) => depth(i, n_layers),
                _ => OUTSIDE_DEPTH,
            };
            if let [(model, key, _)] = g.inputs.as_slice() {
                let meta = models[*model].require(key)?;
                planned.push(Group {
                    out: OutputTensor::new(g.out.clone(), meta.dtype, meta.shape.clone()),
                    inputs: vec![Source {
                        model: *model,
                        key: key.clone(),
                    }],
                    base: None,
                    kernel: None,
                    depth,
                });
                continue;
            }
            let job = Job {
                out_key: g.out.clone(),
                depth,
                members: g
                    .inputs
                    .iter()
                    .map(|(model, key, params)| Member {
                        model: *model,
                        key: key.clone(),
                        params,
                    })
                    .collect(),
                slice_params: EMPTY,
            };
            planned.push(plan_group(
                parameters,
                method,
                (&models, &HashMap::new()),
                &stats,
                base,
                Arithmetic::default(),
                job,
            )?);
        }
        Ok(MergePlan {
            method,
            models,
            groups: planned,
            config_model: base.unwrap_or(0),
            tokenizer_model: base.unwrap_or(0),
            out_layers: None,
            out_dtype_name: None,
            config_updates: vec![],
            seed,
            scratch: None,
        })
    }

    /// The output tensors, in output order.
    pub fn outputs(&self) -> Vec<OutputTensor> {
        self.groups.iter().map(|g| g.out.clone()).collect()
    }

    /// Bytes of tensor data the merge reads (every input and base, once per group).
    pub fn input_bytes(&self) -> usize {
        self.groups.iter().map(|g| self.group_input_bytes(g)).sum()
    }

    /// Bytes of tensor data of one group's inputs and base.
    pub fn group_input_bytes(&self, group: &Group) -> usize {
        group
            .inputs
            .iter()
            .chain(&group.base)
            .filter_map(|s| self.models[s.model].bytes(&s.key).ok().map(<[u8]>::len))
            .sum()
    }

    /// Path of a model of the plan.
    pub fn model_path(&self, i: usize) -> PathBuf {
        self.models[i].path().to_path_buf()
    }
}

/// Evaluates one declared parameter for tensor `key` at depth `t`: the first scope in `maps`
/// that sets it, else its default. `Ok(None)`: an optional parameter with no default, unset.
fn evaluate(
    spec: &ParamSpec,
    maps: &[&ParamMap],
    key: &str,
    t: f64,
    who: &dyn Fn() -> String,
) -> Result<Option<Value>> {
    let err = |message: String| MergeError::Param {
        name: spec.name.into(),
        key: key.into(),
        message,
    };
    let set = maps
        .iter()
        .find_map(|m| m.get(spec.name).and_then(|v| v.evaluate(key, t)));
    match spec.kind {
        Kind::Flag { default } => Ok(Some(Value::Flag(match set {
            Some(Scalar::Bool(b)) => b,
            Some(Scalar::Number(x)) => x != 0.0,
            None => default,
        }))),
        Kind::Number {
            default,
            required,
            range,
        } => {
            let x = match set {
                Some(Scalar::Number(x)) if x.is_finite() => x,
                Some(Scalar::Number(_)) => return Err(err("must be finite".into())),
                Some(Scalar::Bool(b)) => {
                    if b {
                        1.0
                    } else {
                        0.0
                    }
                }
                None => match default {
                    Some(d) => d,
                    None if required => {
                        return Err(err(format!("is required and not set for {}", who())));
                    }
                    None => return Ok(None),
                },
            };
            if let Some((lo, hi)) = range
                && !(lo..=hi).contains(&x)
            {
                return Err(err(format!("{x} is outside [{lo}, {hi}]")));
            }
            Ok(Some(Value::Number(x)))
        }
    }
}

/// Checks that a tensor's sources fit the method's [`Inputs`] and base.
fn check_sources(m: &Method, key: &str, members: usize, base: Option<usize>) -> Result<()> {
    let err = |name: &str, message: String| MergeError::Param {
        name: name.into(),
        key: key.into(),
        message,
    };
    match (m.inputs, m.needs_base) {
        (Inputs::One, true) if base.is_none() || members != 2 => Err(err(
            "base_model",
            format!(
                "{} merges exactly two models, the base and one other; this tensor has \
                 {members} sources",
                m.name
            ),
        )),
        (Inputs::One, false) if members != 1 => Err(err(
            m.name,
            format!("takes exactly one source per tensor, got {members}"),
        )),
        (Inputs::Two, _) if members - usize::from(base.is_some()) != 2 => Err(err(
            m.name,
            format!(
                "merges exactly two models besides the base; this tensor has {} sources{}",
                members,
                if base.is_some() {
                    ", the base included"
                } else {
                    ""
                }
            ),
        )),
        (Inputs::Two, true) if base.is_none() => Err(err(
            "base_model",
            "the base model is not among this tensor's sources".into(),
        )),
        (Inputs::Many, true) if base.is_none() => Err(err(
            "base_model",
            "the base model is not among this tensor's sources".into(),
        )),
        _ => Ok(()),
    }
}

/// Opens the checkpoint of a statistics folder that `method` reads.
fn open_statistics(method: MethodKind, dir: &Path) -> Result<Checkpoint> {
    let Some(folder) = method.statistics().folder() else {
        return Err(MergeError::Statistics {
            path: dir.to_path_buf(),
            message: format!("merge_method `{}` reads no statistics", method.name()),
        });
    };
    let path = dir.join(folder);
    if !path.exists() {
        return Err(MergeError::Statistics {
            path: dir.to_path_buf(),
            message: format!(
                "merge_method `{}` reads `{folder}/`, which this statistics folder lacks",
                method.name()
            ),
        });
    }
    Ok(Checkpoint::open(path)?)
}

/// The output dtype of a merge (`None`: the inputs') and the half dtype that
/// `numerics: mergekit` computes in (`None`: float64 numerics).
#[derive(Debug, Clone, Copy, Default)]
struct Arithmetic {
    out_dtype: Option<Dtype>,
    mergekit_half: Option<crate::numerics::Half>,
}

/// (model, tensor) → the checkpoint that holds the tensor's data instead of the model's own
/// (its re-indexed vocabulary, `crate::vocab`).
type Reads = HashMap<(usize, String), usize>;

/// Plans one output tensor. `models` are the plan's checkpoints with the [`Reads`] that
/// redirect some members' data; a member's `model` stays its identity (base, statistics).
fn plan_group<'a>(
    top: &'a ParamMap,
    method: MethodKind,
    (checkpoints, reads): (&[Checkpoint], &Reads),
    stats: &[Option<usize>],
    base: Option<usize>,
    arithmetic: Arithmetic,
    job: Job<'a>,
) -> Result<Group> {
    let Arithmetic {
        out_dtype,
        mergekit_half,
    } = arithmetic;
    let key = job.out_key.as_str();
    let t = job.depth;
    // The checkpoint a member's data is read from.
    let read = |m: &Member<'_>| {
        reads
            .get(&(m.model, m.key.clone()))
            .copied()
            .unwrap_or(m.model)
    };
    let models = checkpoints;
    // Every member must hold the tensor, with one shape.
    let first = &job.members[0];
    let first_meta =
        models[read(first)]
            .meta(&first.key)
            .ok_or_else(|| MergeError::MissingKey {
                key: first.key.clone(),
                model: models[first.model].path().to_path_buf(),
                other: models[job.members.last().map_or(0, |m| m.model)]
                    .path()
                    .to_path_buf(),
            })?;
    for m in &job.members[1..] {
        let meta = models[read(m)]
            .meta(&m.key)
            .ok_or_else(|| MergeError::MissingKey {
                key: m.key.clone(),
                model: models[m.model].path().to_path_buf(),
                other: models[first.model].path().to_path_buf(),
            })?;
        if meta.shape != first_meta.shape {
            return Err(MergeError::ShapeMismatch {
                key: m.key.clone(),
                model_a: models[first.model].path().to_path_buf(),
                shape_a: first_meta.shape.clone(),
                model_b: models[m.model].path().to_path_buf(),
                shape_b: meta.shape.clone(),
            });
        }
    }
    let base_member = job.members.iter().position(|m| Some(m.model) == base);
    let src = |i: usize| Source {
        model: read(&job.members[i]),
        key: job.members[i].key.clone(),
    };
    let mut group = Group {
        out: OutputTensor::new(
            key,
            out_dtype.unwrap_or(first_meta.dtype),
            first_meta.shape.clone(),
        ),
        inputs: vec![],
        base: None,
        kernel: None,
        depth: t,
    };
    if !first_meta.dtype.is_float() {
        // Integer or boolean buffers are carried over from the base (or first) model.
        group.out.dtype = first_meta.dtype;
        group.inputs = vec![src(base_member.unwrap_or(0))];
        return Ok(group);
    }
    let m = method.method();
    check_sources(m, key, job.members.len(), base_member)?;
    // Every declared parameter, evaluated: shared ones against the output key, per-model ones
    // against each member's input key.
    let mut values = Values::default();
    let globals = [job.slice_params, top];
    for spec in m.params.iter().filter(|p| p.scope == Scope::Shared) {
        if let Some(v) = evaluate(spec, &globals, key, t, &|| "the merge".to_string())? {
            values.shared.insert(spec.name, v);
        }
    }
    for (i, member) in job.members.iter().enumerate() {
        let maps = [member.params, job.slice_params, top];
        let who = || format!("model {}", models[member.model].path().display());
        let mut own = BTreeMap::new();
        for spec in m.params {
            let applies = match spec.scope {
                Scope::Input => true,
                Scope::NonBase => Some(i) != base_member,
                Scope::Shared => false,
            };
            if applies && let Some(v) = evaluate(spec, &maps, &member.key, t, &who)? {
                own.insert(spec.name, v);
            }
        }
        values.models.push(own);
    }
    let stat_source = |member: &Member<'_>| {
        let s = stats.get(member.model).copied().flatten()?;
        models[s].meta(&member.key).map(|meta| {
            let source = Source {
                model: s,
                key: member.key.clone(),
            };
            (source, meta.shape.clone())
        })
    };
    let statistics: Vec<Option<(Source, Vec<usize>)>> = match m.statistics {
        Statistics::None => vec![None; job.members.len()],
        _ => job.members.iter().map(stat_source).collect(),
    };
    let tensor_plan = TensorPlan {
        key,
        shape: &first_meta.shape,
        members: job.members.len(),
        base: base_member,
        cast: group.out.dtype != first_meta.dtype,
        values,
        statistics: statistics
            .iter()
            .map(|s| s.as_ref().map(|(_, shape)| shape.clone()))
            .collect(),
    };
    let planned = match mergekit_half {
        Some(half) => crate::numerics::plan(method, &tensor_plan, half)?,
        None => (m.plan)(&tensor_plan)?,
    };
    group.base = planned.base.map(src);
    group.inputs = planned.inputs.into_iter().map(src).collect();
    for i in planned.statistics {
        let Some((source, _)) = statistics.get(i).cloned().flatten() else {
            return Err(MergeError::Param {
                name: "statistics".into(),
                key: key.to_string(),
                message: format!(
                    "no {} statistics for member {i} ({})",
                    m.name,
                    models[job.members[i].model].path().display()
                ),
            });
        };
        group.inputs.push(source);
    }
    group.kernel = planned.kernel;
    Ok(group)
}
