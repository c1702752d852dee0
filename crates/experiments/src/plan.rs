//! An experiment file and a profile, expanded into a DAG of stages, each keyed by
//! [`StageKey::compute`] of its kind, its fully resolved config and its inputs' keys.
//!
//! Per training seed `s` (the suite is shared by all seeds):
//!
//! ```text
//! suite ─▶ seed(s) ─▶ experts(s) ─▶ merge(s, m) for each expanded merge m ─▶ distance(s, m)
//!            │            │              (task-vector merges also read seed(s))
//!            └──────────▶ baseline(s)
//! models(s) = experts, baseline, each merge
//!   each model ─▶ finetune(s, model, task) ─▶ eval(s, model, task)   for each task
//!   seed and each model ─▶ zeroshot(s, model)                        when zero_shot
//! every eval, zeroshot and distance ─▶ report
//! ```
//!
//! A stage's config holds everything that determines its output and nothing that does not
//! (no names, paths of the run store or thread counts): renaming a merge keeps its key;
//! changing one of its parameters changes its key and, through the input keys, the keys of
//! every stage downstream of it, and no others. Stages are listed in topological order
//! (every input before the stages that read it).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::config::{BaseSpec, ExperimentFile, MergeSpec, ParamSpec, Result, SuiteSpec};
use crate::store::{Lookup, RunStore, StageKey};

/// The kinds of stage, in pipeline order. `name()` is the run store's folder
/// (`runs/<kind>/<key>/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageKind {
    /// Builds (synthetic) or checks (real, a folder) the task suite.
    Suite,
    /// Seed pre-training of the modality-agnostic model W0.
    Seed,
    /// W0 expanded into every expert and pre-trained further.
    Experts,
    /// W0 continued as a `shared` model for the experts' budget.
    Baseline,
    /// One expert-into-shared merge.
    Merge,
    /// Weight distances of one merge's inputs.
    Distance,
    /// One model fine-tuned on one task.
    Finetune,
    /// A fine-tuned model scored on the test split.
    Eval,
    /// Zero-shot signals of one model.
    Zeroshot,
    /// Tables and plots of the whole experiment.
    Report,
}

impl StageKind {
    /// Every kind, in pipeline order.
    pub const ALL: [StageKind; 10] = [
        StageKind::Suite,
        StageKind::Seed,
        StageKind::Experts,
        StageKind::Baseline,
        StageKind::Merge,
        StageKind::Distance,
        StageKind::Finetune,
        StageKind::Eval,
        StageKind::Zeroshot,
        StageKind::Report,
    ];

    /// The kind's name (the run store's folder).
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Suite => "suite",
            StageKind::Seed => "seed",
            StageKind::Experts => "experts",
            StageKind::Baseline => "baseline",
            StageKind::Merge => "merge",
            StageKind::Distance => "distance",
            StageKind::Finetune => "finetune",
            StageKind::Eval => "eval",
            StageKind::Zeroshot => "zeroshot",
            StageKind::Report => "report",
        }
    }

    /// The kind called `name`.
    pub fn parse(name: &str) -> Option<StageKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A stage's index in [`Plan::stages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(pub usize);

/// One stage of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub kind: StageKind,
    /// For people: e.g. `s0/merge/interpolation[weights.vision=0.25]`; not part of the key.
    pub name: String,
    /// The training seed this stage belongs to (`None`: suite, report).
    pub seed: Option<u64>,
    /// Everything that determines the stage's output, fully resolved.
    pub config: Value,
    /// The stages whose outputs it reads, in the order their keys are hashed.
    pub inputs: Vec<StageId>,
    pub key: StageKey,
}

/// One merge with its sweeps expanded: single values only.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedMerge {
    /// The spec's name, with `[param=value, ...]` for swept parameters.
    pub name: String,
    pub method: String,
    pub params: Vec<(String, f64)>,
    pub weights: Vec<(String, f64)>,
    pub base: Option<BaseSpec>,
    pub only: Vec<String>,
}

impl ResolvedMerge {
    fn config(&self, seed: u64) -> Value {
        let obj = |v: &[(String, f64)]| {
            Value::Object(v.iter().map(|(k, x)| (k.clone(), json!(x))).collect())
        };
        json!({
            "method": self.method,
            "params": obj(&self.params),
            "weights": obj(&self.weights),
            "base": self.base.map(|_| "seed"),
            "only": self.only,
            // DARE's masks; recorded for every method so that a merge belongs to its seed.
            "seed": seed,
        })
    }
}

/// Expands one merge spec's sweeps: the Cartesian product of every list (the last key of
/// `weights` turning fastest; `params` before `weights`, keys sorted), or with `zip: true`
/// one merge per list position.
pub fn expand_merge(spec: &MergeSpec) -> Vec<ResolvedMerge> {
    // (is a weight, key, values, is a sweep)
    let axes: Vec<(bool, &String, Vec<f64>, bool)> = spec
        .params
        .iter()
        .map(|(k, v)| (false, k, v))
        .chain(spec.weights.iter().map(|(k, v)| (true, k, v)))
        .map(|(w, k, v)| (w, k, v.values(), matches!(v, ParamSpec::Sweep(_))))
        .collect();
    if axes.iter().any(|a| a.2.is_empty()) {
        return vec![];
    }
    let one = |idx: &dyn Fn(usize) -> usize| {
        let mut params = vec![];
        let mut weights = vec![];
        let mut tags = vec![];
        for (n, (is_weight, k, vals, sweep)) in axes.iter().enumerate() {
            let v = vals[idx(n)];
            if *is_weight {
                weights.push(((*k).clone(), v));
            } else {
                params.push(((*k).clone(), v));
            }
            if *sweep {
                let label = if *is_weight {
                    format!("weights.{k}")
                } else {
                    (*k).clone()
                };
                tags.push(format!("{label}={v}"));
            }
        }
        let name = if tags.is_empty() {
            spec.name.clone()
        } else {
            format!("{}[{}]", spec.name, tags.join(", "))
        };
        ResolvedMerge {
            name,
            method: spec.method.clone(),
            params,
            weights,
            base: spec.base,
            only: spec.only.clone(),
        }
    };
    if spec.zip {
        let len = axes
            .iter()
            .filter(|a| a.3)
            .map(|a| a.2.len())
            .min()
            .unwrap_or(1);
        return (0..len)
            .map(|i| one(&|n| if axes[n].3 { i } else { 0 }))
            .collect();
    }
    let mut out = vec![];
    let mut idx = vec![0usize; axes.len()];
    loop {
        out.push(one(&|n| idx[n]));
        // Odometer: the last axis turns fastest.
        let mut d = axes.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < axes[d].2.len() {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The stages of one experiment under one profile, in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub experiment: String,
    pub profile: String,
    pub stages: Vec<Stage>,
}

struct Builder {
    stages: Vec<Stage>,
}

impl Builder {
    fn add(
        &mut self,
        kind: StageKind,
        name: String,
        seed: Option<u64>,
        config: Value,
        inputs: Vec<StageId>,
    ) -> StageId {
        let keys: Vec<StageKey> = inputs.iter().map(|i| self.stages[i.0].key).collect();
        let key = StageKey::compute(kind.name(), &config, &keys);
        self.stages.push(Stage {
            kind,
            name,
            seed,
            config,
            inputs,
            key,
        });
        StageId(self.stages.len() - 1)
    }
}

fn objectives(o: &std::collections::BTreeMap<String, f64>) -> Value {
    Value::Object(
        o.iter()
            .map(|(k, w)| (k.clone(), json!(w)))
            .collect::<Map<_, _>>(),
    )
}

impl Plan {
    /// Expands `file` (validated by the caller with [`ExperimentFile::validate`]) under the
    /// profile called `profile`.
    pub fn build(file: &ExperimentFile, profile: &str) -> Result<Plan> {
        let e = &file.experiment;
        let p = file.profile(profile)?;
        let mut b = Builder { stages: vec![] };

        let suite_config = match &e.suite {
            SuiteSpec::Synthetic(s) => json!({"synthetic": {
                "scale": p.suite_scale.as_deref().unwrap_or(&s.scale),
                "seed": s.seed,
            }}),
            SuiteSpec::RealAssets => json!({"real_assets": true}),
            SuiteSpec::Path(dir) => json!({"path": dir.to_string_lossy()}),
        };
        let suite = b.add(StageKind::Suite, "suite".into(), None, suite_config, vec![]);

        let merges: Vec<ResolvedMerge> = e.merges.iter().flat_map(expand_merge).collect();
        let seed_steps = e.seed_pretrain.steps.unwrap_or(p.seed_pretrain);
        let expert_steps = e.experts.steps.unwrap_or(p.experts);
        let baseline_steps = e
            .baseline
            .as_ref()
            .and_then(|b| b.steps)
            .or(p.baseline)
            .unwrap_or(expert_steps);
        let pretrain = |sharing: &str, init: &str, objs: &Value, steps: u64, seed: u64| {
            json!({
                "preset": e.preset,
                "sharing": sharing,
                "init": init,
                "objectives": objs,
                "steps": steps,
                "seed": seed,
                "batch_size": p.batch_size,
                "lr": e.train.pretrain_lr,
            })
        };
        let seed_objs = objectives(&e.seed_pretrain.objectives);
        let expert_objs = objectives(&e.experts.objectives);

        let mut report_inputs = vec![];
        for &s in &e.seeds {
            let tag = format!("s{s}");
            let w0 = b.add(
                StageKind::Seed,
                format!("{tag}/seed"),
                Some(s),
                pretrain("shared", "scratch", &seed_objs, seed_steps, s),
                vec![suite],
            );
            let experts = b.add(
                StageKind::Experts,
                format!("{tag}/experts"),
                Some(s),
                pretrain(&e.experts.sharing, "expand", &expert_objs, expert_steps, s),
                vec![suite, w0],
            );
            // (model stage, its name in tables, its sharing variant)
            let mut models = vec![(experts, "experts".to_string(), e.experts.sharing.clone())];
            if e.baseline.is_some() {
                let baseline = b.add(
                    StageKind::Baseline,
                    format!("{tag}/baseline"),
                    Some(s),
                    pretrain("shared", "checkpoint", &expert_objs, baseline_steps, s),
                    vec![suite, w0],
                );
                models.push((baseline, "baseline".into(), "shared".into()));
            }
            for m in &merges {
                let mut inputs = vec![experts];
                if m.base == Some(BaseSpec::Seed) {
                    inputs.push(w0);
                }
                let merge = b.add(
                    StageKind::Merge,
                    format!("{tag}/merge/{}", m.name),
                    Some(s),
                    m.config(s),
                    inputs,
                );
                if !e.distances.is_empty() {
                    let d = b.add(
                        StageKind::Distance,
                        format!("{tag}/distance/{}", m.name),
                        Some(s),
                        json!({"metrics": e.distances}),
                        vec![w0, experts, merge],
                    );
                    report_inputs.push(d);
                }
                models.push((merge, m.name.clone(), "shared".into()));
            }
            if e.zero_shot {
                let all = std::iter::once((w0, "seed".to_string()))
                    .chain(models.iter().map(|(id, name, _)| (*id, name.clone())));
                for (id, name) in all {
                    let z = b.add(
                        StageKind::Zeroshot,
                        format!("{tag}/zeroshot/{name}"),
                        Some(s),
                        json!({"signals": "retrieval", "split": "test"}),
                        vec![suite, id],
                    );
                    report_inputs.push(z);
                }
            }
            for (model, name, sharing) in &models {
                for task in &e.tasks {
                    let steps = p.finetune_tasks.get(task).copied().unwrap_or(p.finetune);
                    let ft = b.add(
                        StageKind::Finetune,
                        format!("{tag}/finetune/{name}/{task}"),
                        Some(s),
                        json!({
                            "preset": e.preset,
                            "sharing": sharing,
                            "task": task,
                            "steps": steps,
                            "seed": s,
                            "batch_size": p.batch_size,
                            "lr": e.train.finetune_lr,
                        }),
                        vec![suite, *model],
                    );
                    let ev = b.add(
                        StageKind::Eval,
                        format!("{tag}/eval/{name}/{task}"),
                        Some(s),
                        json!({"task": task, "split": "test"}),
                        vec![suite, ft],
                    );
                    report_inputs.push(ev);
                }
            }
        }
        b.add(
            StageKind::Report,
            "report".into(),
            None,
            json!({
                "experiment": e.name,
                "seeds": e.seeds,
                "tasks": e.tasks,
                "distances": e.distances,
                "zero_shot": e.zero_shot,
            }),
            report_inputs,
        );
        Ok(Plan {
            experiment: e.name.clone(),
            profile: profile.to_string(),
            stages: b.stages,
        })
    }

    /// The stage with id `id`.
    pub fn stage(&self, id: StageId) -> &Stage {
        &self.stages[id.0]
    }

    /// How many stages of `kind`.
    pub fn count(&self, kind: StageKind) -> usize {
        self.stages.iter().filter(|s| s.kind == kind).count()
    }

    /// Every stage downstream of `id` (`id` included), as a mask over [`Self::stages`].
    pub fn downstream(&self, id: StageId) -> Vec<bool> {
        let mut hit = vec![false; self.stages.len()];
        hit[id.0] = true;
        for (i, s) in self.stages.iter().enumerate().skip(id.0 + 1) {
            if s.inputs.iter().any(|j| hit[j.0]) {
                hit[i] = true;
            }
        }
        hit
    }

    /// One line per stage: kind, name, the key's first 12 hex digits, and what the store holds
    /// (`cached`, `to run`, `corrupt (reason)`, or `unreadable (error)`), then a summary line.
    pub fn dry_run(&self, store: &RunStore) -> String {
        let mut out = String::new();
        let (mut cached, mut to_run, mut corrupt) = (0, 0, 0);
        let width = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &self.stages {
            let status = match store.lookup(s.kind.name(), &s.key) {
                Ok(Lookup::Done(_)) => {
                    cached += 1;
                    "cached".to_string()
                }
                Ok(Lookup::Missing) => {
                    to_run += 1;
                    "to run".to_string()
                }
                Ok(Lookup::Corrupt(r)) => {
                    corrupt += 1;
                    format!("corrupt ({r})")
                }
                Err(err) => {
                    corrupt += 1;
                    format!("unreadable ({err})")
                }
            };
            let hex = s.key.hex();
            let _ = writeln!(
                out,
                "{:<9} {:<width$} {} {}",
                s.kind.name(),
                s.name,
                &hex[..12],
                status
            );
        }
        let _ = writeln!(
            out,
            "{} stages: {cached} cached, {to_run} to run, {corrupt} corrupt (recomputed)",
            self.stages.len()
        );
        out
    }
}
