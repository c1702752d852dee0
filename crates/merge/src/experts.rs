//! The expert-into-shared merge: from one multiway checkpoint (arXiv 2304.14933, "Multimodal
//! model merging", its modality-specific model) to the modality-agnostic `shared` model, with
//! any registered merge method.
//!
//! Formula: for each output key `….layers.{i}.{module}.shared.{leaf}` of the shared model,
//! θ_shared = M(θ_e for each expert e of that key; base θ₀), where M is the method (linear,
//! task arithmetic with θ₀ the seed model W0, TIES, DARE, SLERP from θ₀ to one expert, …) with
//! per-expert weights w_e (default 1 for every expert) and the method's other parameters as
//! given once for all tensors. Which experts merge follows the keys: below the VL layers a
//! part's vision and text experts merge; in the VL layers the vision, text and vision-language
//! experts merge, as in the paper's code. Keys that are not expert keys (embeddings, LayerScale,
//! the final norm, parts already `shared`) are copied unchanged.
//!
//! Deviations: the paper merges by interpolation and task arithmetic only; here every
//! registered method applies. Methods that take one input per tensor (SLERP, passthrough) take
//! one chosen expert ([`ExpertOptions::only`]). A group left with one expert is copied unchanged
//! (its weight is not applied). The output's `config.json` and tokenizer files come from the
//! multiway checkpoint, with `sharing` (where the config has it) set to `shared`, so the result
//! loads as the `shared` model it is.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use mmerge_core::Checkpoint;
use mmerge_core::keys::{self, EXPERTS};

use crate::error::MergeError;
use crate::methods::{Inputs, MethodKind};
use crate::params::{ParamMap, ParamValue};
use crate::plan::{KeyGroup, MergePlan};

/// One output key of the shared model and the expert keys that make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertGroup {
    pub out: String,
    /// (expert, key) pairs in the order of [`EXPERTS`] (vision, text, vl, shared); a single
    /// `shared` entry means a plain copy (a key outside the grammar is its own `shared` entry).
    pub inputs: Vec<(&'static str, String)>,
}

fn expert_name(e: &str) -> &'static str {
    EXPERTS
        .iter()
        .copied()
        .find(|x| *x == e)
        .unwrap_or("shared")
}

fn rank(e: &str) -> usize {
    EXPERTS
        .iter()
        .position(|x| *x == e)
        .unwrap_or(EXPERTS.len())
}

/// Groups the keys of a multiway checkpoint (in the given order) into the keys of the shared
/// model. Keys that are not multiway expert keys are copied unchanged.
pub fn expert_groups<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<ExpertGroup> {
    let mut groups: Vec<ExpertGroup> = vec![];
    let mut index = HashMap::new();
    for name in names {
        let Some(k) = keys::multiway(name) else {
            groups.push(ExpertGroup {
                out: name.to_string(),
                inputs: vec![("shared", name.to_string())],
            });
            continue;
        };
        let expert = expert_name(k.expert);
        let prefix_end = name.len() - k.leaf.len() - k.expert.len() - 1;
        let out = format!("{}shared.{}", &name[..prefix_end], k.leaf);
        match index.get(&out) {
            Some(&g) => {
                let group: &mut ExpertGroup = &mut groups[g];
                group.inputs.push((expert, name.to_string()));
                group.inputs.sort_by_key(|(e, _)| rank(e));
            }
            None => {
                index.insert(out.clone(), groups.len());
                groups.push(ExpertGroup {
                    out,
                    inputs: vec![(expert, name.to_string())],
                });
            }
        }
    }
    groups
}

/// How to merge the experts.
#[derive(Debug, Default)]
pub struct ExpertOptions {
    /// Per-expert weights by name (vision, text, vl, shared); unset experts weigh 1.
    pub weights: BTreeMap<String, f64>,
    /// The method's parameters other than `weight` (e.g. `density`, `lambda`, `t`), for every
    /// tensor, as a config's top-level `parameters`.
    pub params: ParamMap,
    /// Only these experts merge (empty: all). Methods taking one input need exactly one.
    pub only: Vec<String>,
    /// The seed model W0 with the shared model's keys: the base of task-vector methods and
    /// SLERP's t = 0 end. Required exactly when the method needs a base.
    pub base: Option<Checkpoint>,
    /// Seed of DARE's random masks.
    pub seed: u64,
    /// For a data-dependent method: the statistics folder of the multiway checkpoint (under
    /// its expert keys) and of the base (under the shared keys).
    pub statistics: Option<PathBuf>,
    pub base_statistics: Option<PathBuf>,
}

/// Errors of the expert merge; each names the key, expert or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExpertsError {
    #[error("{method} needs a base (the seed model W0, with the shared model's keys); none given")]
    NeedsBase { method: &'static str },
    #[error("{method} takes no base; the experts alone merge")]
    UnusedBase { method: &'static str },
    #[error("unknown expert `{name}`; valid: vision, text, vl, shared")]
    UnknownExpert { name: String },
    #[error("unknown parameter `{name}` for {method}; valid: {valid}")]
    UnknownParam {
        name: String,
        method: &'static str,
        valid: String,
    },
    #[error("{method} merges one expert per tensor: choose exactly one (got {got:?})")]
    OneExpert {
        method: &'static str,
        got: Vec<String>,
    },
    #[error("shared key `{key}` has none of the experts {wanted:?} (it has {have:?})")]
    NoExpert {
        key: String,
        wanted: Vec<String>,
        have: Vec<&'static str>,
    },
    #[error("base {path} has no tensor `{key}` (a key of the shared model)")]
    BaseMissingKey { key: String, path: PathBuf },
    #[error("base {path}: tensor `{key}` has shape {got:?}, the shared model's is {want:?}")]
    BaseShape {
        key: String,
        path: PathBuf,
        want: Vec<usize>,
        got: Vec<usize>,
    },
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// Plans the merge of `multiway`'s experts into its `shared` keys with `method`. Run the plan
/// with [`crate::run`].
pub fn plan(
    multiway: Checkpoint,
    method: MethodKind,
    options: ExpertOptions,
) -> Result<MergePlan, ExpertsError> {
    let m = method.method();
    for name in options.weights.keys().chain(&options.only) {
        if !EXPERTS.contains(&name.as_str()) {
            return Err(ExpertsError::UnknownExpert { name: name.clone() });
        }
    }
    let declared: Vec<&str> = m.params.iter().map(|p| p.name).collect();
    if let Some(name) = options
        .params
        .keys()
        .find(|n| !declared.contains(&n.as_str()))
    {
        return Err(ExpertsError::UnknownParam {
            name: name.clone(),
            method: m.name,
            valid: declared.join(", "),
        });
    }
    if m.inputs == Inputs::One && options.only.len() != 1 {
        return Err(ExpertsError::OneExpert {
            method: m.name,
            got: options.only.clone(),
        });
    }
    match (&options.base, m.needs_base) {
        (None, true) => return Err(ExpertsError::NeedsBase { method: m.name }),
        (Some(_), false) => return Err(ExpertsError::UnusedBase { method: m.name }),
        _ => {}
    }
    let weigh = |e: &str| {
        let w = options.weights.get(e).copied().unwrap_or(1.0);
        ParamMap::from([("weight".to_string(), ParamValue::Number(w))])
    };
    let mut groups = vec![];
    for g in expert_groups(multiway.names().iter().map(String::as_str)) {
        let copy = matches!(g.inputs.as_slice(), [("shared", _)]);
        let have: Vec<&'static str> = g.inputs.iter().map(|(e, _)| *e).collect();
        let chosen: Vec<(&'static str, String)> = g
            .inputs
            .into_iter()
            .filter(|(e, _)| copy || options.only.is_empty() || options.only.iter().any(|o| o == e))
            .collect();
        if chosen.is_empty() {
            return Err(ExpertsError::NoExpert {
                key: g.out,
                wanted: options.only.clone(),
                have,
            });
        }
        let mut inputs: Vec<(usize, String, ParamMap)> = vec![];
        if !copy && options.base.is_some() {
            inputs.push((1, g.out.clone(), ParamMap::new()));
        }
        inputs.extend(chosen.into_iter().map(|(e, k)| (0, k, weigh(e))));
        groups.push(KeyGroup { out: g.out, inputs });
    }
    let mut models = vec![multiway];
    if let Some(base) = options.base {
        check_base(&models[0], &base, &groups)?;
        models.push(base);
    }
    let base = (models.len() == 2).then_some(1);
    let statistics = [options.statistics, options.base_statistics];
    let mut plan = MergePlan::from_groups(
        models,
        &statistics,
        method,
        base,
        &options.params,
        groups,
        options.seed,
    )?;
    plan.config_model = 0;
    plan.tokenizer_model = 0;
    // The result is the `shared` model of the same preset.
    plan.config_updates = vec![("sharing", "shared".into())];
    Ok(plan)
}

/// The base must hold every output key with the shape the merge makes.
fn check_base(
    multiway: &Checkpoint,
    base: &Checkpoint,
    groups: &[KeyGroup],
) -> Result<(), ExpertsError> {
    for g in groups {
        let Some((_, key, _)) = g.inputs.iter().find(|(m, _, _)| *m == 0) else {
            continue;
        };
        let want = multiway
            .require(key)
            .map_err(MergeError::from)?
            .shape
            .clone();
        let got = base
            .meta(&g.out)
            .ok_or_else(|| ExpertsError::BaseMissingKey {
                key: g.out.clone(),
                path: base.path().to_path_buf(),
            })?
            .shape
            .clone();
        if got != want {
            return Err(ExpertsError::BaseShape {
                key: g.out.clone(),
                path: base.path().to_path_buf(),
                want,
                got,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experts_merge_into_shared_keys() {
        let names = [
            "embeddings.word.weight",
            "encoder.layers.0.attn.vision.q.weight",
            "encoder.layers.0.attn.text.q.weight",
            "encoder.layers.0.ffn.shared.fc1.weight",
            "encoder.layers.1.attn.vl.q.weight",
            "encoder.layers.1.attn.vision.q.weight",
            "encoder.layers.1.attn.text.q.weight",
        ];
        let g = expert_groups(names);
        assert_eq!(g.len(), 4);
        assert_eq!(
            g[0].inputs,
            [("shared", "embeddings.word.weight".to_string())]
        );
        assert_eq!(g[1].out, "encoder.layers.0.attn.shared.q.weight");
        let experts = |i: usize| g[i].inputs.iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(experts(1), ["vision", "text"]);
        assert_eq!(g[2].out, "encoder.layers.0.ffn.shared.fc1.weight");
        assert_eq!(experts(2), ["shared"]);
        assert_eq!(g[3].out, "encoder.layers.1.attn.shared.q.weight");
        assert_eq!(experts(3), ["vision", "text", "vl"]);
    }
}
