//! The jobs of a merge plan: for each output tensor, the input tensors (members) that make it
//! and its depth, from a `models:`, `modules:` or `slices:` config.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mmerge_core::Checkpoint;
use mmerge_core::keys::{self, TensorRole};

use crate::config::{InputModel, MergeConfig, Module, OutputSlice};
use crate::error::{MergeError, Result};
use crate::params::ParamMap;

pub(super) struct Member<'a> {
    pub(super) model: usize,
    pub(super) key: String,
    pub(super) params: &'a ParamMap,
}

pub(super) struct Job<'a> {
    pub(super) out_key: String,
    pub(super) depth: f64,
    pub(super) members: Vec<Member<'a>>,
    pub(super) slice_params: &'a ParamMap,
}

pub(super) fn depth(j: usize, n: usize) -> f64 {
    if n > 1 {
        j as f64 / (n - 1) as f64
    } else {
        1.0
    }
}

/// mergekit gives every tensor outside the layers t = 0, those after the layers included.
pub(super) const OUTSIDE_DEPTH: f64 = 0.0;

pub(super) const EMPTY: &ParamMap = &ParamMap::new();

/// The jobs of a `models:` list over the tensors `names` (of the reference model) that `keep`
/// selects: every model's tensor of the same name, the base added when the list lacks it, with
/// `scope` as the parameters between the models' and the top level's (a module's).
pub(super) fn model_jobs<'a>(
    names: &[String],
    entries: &'a [InputModel],
    index: &HashMap<&str, usize>,
    base: Option<usize>,
    scope: &'a ParamMap,
    keep: impl Fn(&str) -> bool,
) -> Vec<Job<'a>> {
    let stacks = keys::stack_sizes(names.iter().map(String::as_str));
    names
        .iter()
        .filter(|name| keep(name))
        .map(|name| Job {
            out_key: name.clone(),
            depth: keys::stack_ref(name)
                .map_or(OUTSIDE_DEPTH, |s| depth(s.index, stacks[s.prefix])),
            members: base
                .filter(|b| !entries.iter().any(|e| index[e.model.as_str()] == *b))
                .map(|b| Member {
                    model: b,
                    key: name.clone(),
                    params: EMPTY,
                })
                .into_iter()
                .chain(entries.iter().map(|e| Member {
                    model: index[e.model.as_str()],
                    key: name.clone(),
                    params: &e.parameters,
                }))
                .collect(),
            slice_params: scope,
        })
        .collect()
}

/// The module of a tensor, as mergekit infers modules for a checkpoint without a template:
/// the prefix of its numbered stack when the checkpoint has several stacks, else `default`.
pub(super) fn module_of(name: &str, several_stacks: bool) -> &str {
    match keys::stack_ref(name) {
        Some(s) if several_stacks => s.prefix,
        _ => "default",
    }
}

/// The jobs of a `modules:` config: each listed module's tensors from its own models.
pub(super) fn module_jobs<'a>(
    cfg: &'a MergeConfig,
    modules: &'a BTreeMap<String, Module>,
    models: &[Checkpoint],
    index: &HashMap<&str, usize>,
    base: Option<usize>,
    cfg_err: &dyn Fn(Option<usize>, String) -> MergeError,
) -> Result<Vec<Job<'a>>> {
    let first = modules
        .values()
        .find_map(|m| m.models.as_ref()?.first())
        .ok_or_else(|| cfg_err(None, "`modules` lists no models".into()))?;
    let reference = base.unwrap_or(index[first.model.as_str()]);
    let names = models[reference].names();
    let several = keys::stack_sizes(names.iter().map(String::as_str)).len() > 1;
    let known: BTreeSet<&str> = names.iter().map(|n| module_of(n, several)).collect();
    let mut jobs = Vec::new();
    for (name, module) in modules {
        if !known.contains(name.as_str()) {
            return Err(cfg_err(
                module.line,
                format!(
                    "module `{name}` is not a module of {}; its modules: {}",
                    cfg.model_refs()
                        .into_iter()
                        .find(|r| index[r] == reference)
                        .unwrap_or("the base model"),
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let entries = module.models.as_deref().unwrap_or_default();
        jobs.extend(model_jobs(
            names,
            entries,
            index,
            base,
            &module.parameters,
            |n| module_of(n, several) == name,
        ));
    }
    Ok(jobs)
}

pub(super) fn slice_jobs<'a>(
    slices: &'a [OutputSlice],
    models: &[Checkpoint],
    index: &HashMap<&str, usize>,
    base: Option<usize>,
    cfg_err: &dyn Fn(Option<usize>, String) -> MergeError,
) -> Result<(Vec<Job<'a>>, Option<usize>)> {
    // mergekit plans slices for one module only; a checkpoint with several numbered stacks
    // (an encoder-decoder, a vision tower beside a language model) is refused there too.
    let first = &models[index[slices[0].sources[0].model.as_str()]];
    let stacks = keys::stack_sizes(first.names().iter().map(String::as_str));
    if stacks.len() > 1 {
        let mut names: Vec<&str> = stacks.keys().copied().collect();
        names.sort_unstable();
        return Err(cfg_err(
            slices[0].sources[0].layer_range_line,
            format!(
                "`slices` need a checkpoint with one numbered layer stack; {} has {}: {} \
                 (merge it with `models:` or `modules:`)",
                first.path().display(),
                names.len(),
                names.join(", ")
            ),
        ));
    }
    let mut layer_jobs = Vec::new();
    let mut offset = 0usize;
    for (si, slice) in slices.iter().enumerate() {
        // `MergeConfig::from_yaml` checked that every source spans the same number of layers.
        let n = slice.sources[0].layer_range[1] - slice.sources[0].layer_range[0];
        let slice_base = slice.base_model.as_deref().map(|b| index[b]).or(base);
        let reference = slice
            .sources
            .iter()
            .find(|s| Some(index[s.model.as_str()]) == slice_base)
            .unwrap_or(&slice.sources[0]);
        let ref_model = &models[index[reference.model.as_str()]];
        for s in &slice.sources {
            let have = keys::layer_count(
                models[index[s.model.as_str()]]
                    .names()
                    .iter()
                    .map(String::as_str),
            );
            if s.layer_range[1] > have {
                return Err(cfg_err(
                    s.layer_range_line,
                    format!(
                        "slice {si}: layer_range [{}, {}] of {} goes past its {have} layers",
                        s.layer_range[0], s.layer_range[1], s.model
                    ),
                ));
            }
        }
        for j in 0..n {
            let ref_layer = reference.layer_range[0] + j;
            for key in ref_model.names() {
                if keys::layer_ref(key).map(|l| l.index) != Some(ref_layer) {
                    continue;
                }
                layer_jobs.push(Job {
                    out_key: keys::with_layer(key, offset + j),
                    depth: depth(j, n),
                    members: slice_base
                        .filter(|b| !slice.sources.iter().any(|s| index[s.model.as_str()] == *b))
                        .map(|b| Member {
                            model: b,
                            key: keys::with_layer(key, reference.layer_range[0] + j),
                            params: EMPTY,
                        })
                        .into_iter()
                        .chain(slice.sources.iter().map(|s| Member {
                            model: index[s.model.as_str()],
                            key: keys::with_layer(key, s.layer_range[0] + j),
                            params: &s.parameters,
                        }))
                        .collect(),
                    slice_params: &slice.parameters,
                });
            }
        }
        offset += n;
    }
    // Tensors outside the layers: from the first slice's sources (before) or the last's (after).
    let edge = |slice: &'a OutputSlice, want: TensorRole| -> Vec<Job<'a>> {
        let slice_base = slice.base_model.as_deref().map(|b| index[b]).or(base);
        let reference = slice
            .sources
            .iter()
            .map(|s| index[s.model.as_str()])
            .find(|m| Some(*m) == slice_base)
            .unwrap_or(index[slice.sources[0].model.as_str()]);
        models[reference]
            .names()
            .iter()
            .filter(|k| keys::role(k) == want)
            .map(|k| Job {
                out_key: k.clone(),
                depth: OUTSIDE_DEPTH,
                members: slice_base
                    .filter(|b| !slice.sources.iter().any(|s| index[s.model.as_str()] == *b))
                    .map(|b| Member {
                        model: b,
                        key: k.clone(),
                        params: EMPTY,
                    })
                    .into_iter()
                    .chain(slice.sources.iter().map(|s| Member {
                        model: index[s.model.as_str()],
                        key: k.clone(),
                        params: &s.parameters,
                    }))
                    .collect(),
                slice_params: &slice.parameters,
            })
            .collect()
    };
    let mut jobs = edge(&slices[0], TensorRole::Pre);
    jobs.extend(layer_jobs);
    if let Some(last) = slices.last() {
        jobs.extend(edge(last, TensorRole::Post));
    }
    Ok((jobs, Some(offset)))
}
