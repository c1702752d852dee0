//! An experiment file and a profile, expanded into a DAG of stages, each keyed by
//! [`StageKey::compute`] of its kind, its fully resolved config and its inputs' keys.
//!
//! Per training seed `s` and arm `a` (a seed budget × an experts sharing variant; most
//! experiments have one arm; the suite is shared by all):
//!
//! ```text
//! suite ─▶ seed(s, budget) ─▶ experts(s, a) ─▶ merge(s, a, m) for each expanded merge m
//!            │                   │  (task-vector merges also read seed(s, budget))
//!            │                   └─▶ distance(s, a): vision vs text expert weights
//!            └──────────────────▶ baseline(s, budget)
//! models(s, a) = experts, baseline, each merge
//!   each model ─▶ finetune(s, a, model, task) ─▶ eval(s, a, model, task)   for each task
//!   seed and each model ─▶ zeroshot(s, a, model)                           when zero_shot
//! every eval, zeroshot and distance ─▶ report
//! ```
//!
//! Stages with the same kind and key are one stage: the arms of a sharing sweep share their
//! W0 and baseline.
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
use crate::study::{Arm, MergeInfo, Role};

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
    /// Statistics of one model on the suite's data (Gram matrices, Fisher, expert activations)
    /// for data-dependent merges and alignment.
    Statistics,
    /// Tables and plots of the whole experiment.
    Report,
}

impl StageKind {
    /// Every kind, in pipeline order.
    pub const ALL: [StageKind; 11] = [
        StageKind::Suite,
        StageKind::Seed,
        StageKind::Experts,
        StageKind::Baseline,
        StageKind::Merge,
        StageKind::Distance,
        StageKind::Finetune,
        StageKind::Eval,
        StageKind::Zeroshot,
        StageKind::Statistics,
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
            StageKind::Statistics => "statistics",
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
    /// The spec's name alone.
    pub spec: String,
    pub method: String,
    pub params: Vec<(String, f64)>,
    pub weights: Vec<(String, f64)>,
    pub base: Option<BaseSpec>,
    pub only: Vec<String>,
    /// The alignment before the merge (method, λ).
    pub align: Option<(String, Option<f64>)>,
}

/// Which statistics stages a merge reads.
struct Reads {
    /// The experts' statistics (a data-dependent method, or an alignment on activations).
    statistics: bool,
    /// The base's (a data-dependent method with a base: gradient matching's H₀).
    base_statistics: bool,
}

fn known_reads(m: &ResolvedMerge) -> Reads {
    let method = mmerge_merge::MethodKind::from_name(&m.method)
        .is_some_and(|k| k.statistics().folder().is_some());
    let align = m.align.as_ref().is_some_and(|(name, lambda)| {
        mmerge_merge::align::AlignMethod::from_name(name)
            .and_then(|a| a.options(*lambda))
            .is_ok_and(|o| o.lambda < 1.0)
    });
    let base_scale = m
        .params
        .iter()
        .find(|(k, _)| k == "base_scale")
        .map_or(1.0, |(_, v)| *v);
    Reads {
        statistics: method || align,
        base_statistics: method && base_scale > 0.0,
    }
}

impl ResolvedMerge {
    /// The merge as the report sees it.
    pub fn role(&self) -> Role {
        Role::Merge(MergeInfo {
            spec: self.spec.clone(),
            method: self.method.clone(),
            params: self.params.clone(),
            weights: self.weights.clone(),
            align: self.align.as_ref().map(|(m, _)| m.clone()),
        })
    }

    fn config(&self, seed: u64) -> Value {
        let obj = |v: &[(String, f64)]| {
            Value::Object(v.iter().map(|(k, x)| (k.clone(), json!(x))).collect())
        };
        let mut c = json!({
            "method": self.method,
            "params": obj(&self.params),
            "weights": obj(&self.weights),
            "base": self.base.map(|_| "seed"),
            "only": self.only,
            // DARE's masks; recorded for every method so that a merge belongs to its seed.
            "seed": seed,
        });
        // Only when set, so that the keys (and cached stages) of unaligned merges stay.
        if let Some((method, lambda)) = &self.align {
            c["align"] = json!({"method": method, "lambda": lambda});
        }
        c
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
            spec: spec.name.clone(),
            method: spec.method.clone(),
            params,
            weights,
            base: spec.base,
            only: spec.only.clone(),
            align: spec.align.as_ref().map(|a| (a.method.clone(), a.lambda)),
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

/// One model of the plan: a trained, merged or seed model of one seed and arm, with the
/// stages that score it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanModel {
    pub seed: u64,
    /// Index into [`Plan::arms`].
    pub arm: usize,
    /// The model's name in tables (`experts`, `baseline`, `seed`, or the merge's name).
    pub name: String,
    pub role: Role,
    /// The stage that makes the model.
    pub stage: StageId,
    /// (task, the eval stage of its fine-tuned model), in the file's task order.
    pub evals: Vec<(String, StageId)>,
    /// The zero-shot stage, when the experiment asks for zero-shot signals.
    pub zero_shot: Option<StageId>,
}

/// The stages of one experiment under one profile, in topological order, with what each
/// model and measurement is (for the report).
#[derive(Debug, Clone)]
pub struct Plan {
    pub experiment: String,
    pub profile: String,
    pub stages: Vec<Stage>,
    /// The arms (seed budget × experts sharing), budgets turning slowest.
    pub arms: Vec<Arm>,
    /// Every model of every seed and arm, in plan order (a stage shared by two arms, such as
    /// the baseline of a sharing sweep, appears once per arm).
    pub models: Vec<PlanModel>,
    /// (seed, arm, the distance stage of that arm's experts).
    pub distances: Vec<(u64, usize, StageId)>,
    /// The training seeds, the fine-tuning tasks and the distance metrics the report shows,
    /// in the file's order.
    pub seeds: Vec<u64>,
    pub tasks: Vec<String>,
    pub distance_metrics: Vec<String>,
}

struct Builder {
    stages: Vec<Stage>,
    index: std::collections::HashMap<(StageKind, StageKey), StageId>,
}

impl Builder {
    /// Adds a stage, or returns the one with the same kind and key (arms share their W0,
    /// baseline and suite).
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
        if let Some(id) = self.index.get(&(kind, key)) {
            return *id;
        }
        self.stages.push(Stage {
            kind,
            name,
            seed,
            config,
            inputs,
            key,
        });
        let id = StageId(self.stages.len() - 1);
        self.index.insert((kind, key), id);
        id
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
        let mut b = Builder {
            stages: vec![],
            index: Default::default(),
        };

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
        let budgets = p.seed_pretrain.values();
        let sharings = e.experts.sharing.values();
        let inits = e.experts.init.values();
        let arms: Vec<Arm> = budgets
            .iter()
            .flat_map(|&seed_steps| {
                let inits = &inits;
                sharings.iter().flat_map(move |s| {
                    inits.iter().map(move |init| Arm {
                        seed_steps,
                        sharing: s.clone(),
                        init: init.clone(),
                    })
                })
            })
            .collect();
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
        let mut models = vec![];
        let mut distances = vec![];
        for &s in &e.seeds {
            for (arm_index, arm) in arms.iter().enumerate() {
                // Names carry the arm's swept parts only.
                let budget_tag = if budgets.len() > 1 {
                    format!("/w0-{}", arm.seed_steps)
                } else {
                    String::new()
                };
                let sharing_tag = if sharings.len() > 1 {
                    format!("/{}", arm.sharing)
                } else {
                    String::new()
                };
                let init_tag = if inits.len() > 1 {
                    format!("/{}", arm.init)
                } else {
                    String::new()
                };
                let w0_tag = format!("s{s}{budget_tag}");
                let tag = format!("{w0_tag}{sharing_tag}{init_tag}");
                let w0 = b.add(
                    StageKind::Seed,
                    format!("{w0_tag}/seed"),
                    Some(s),
                    pretrain("shared", "scratch", &seed_objs, arm.seed_steps, s),
                    vec![suite],
                );
                // Independent experts: every expert's copy from its own random initialisation
                // (the experts model trained from scratch), no W0.
                let experts = match arm.init.as_str() {
                    "independent" => b.add(
                        StageKind::Experts,
                        format!("{tag}/experts"),
                        Some(s),
                        pretrain(&arm.sharing, "scratch", &expert_objs, expert_steps, s),
                        vec![suite],
                    ),
                    _ => b.add(
                        StageKind::Experts,
                        format!("{tag}/experts"),
                        Some(s),
                        pretrain(&arm.sharing, "expand", &expert_objs, expert_steps, s),
                        vec![suite, w0],
                    ),
                };
                // The statistics of a model (data-dependent merges, alignment), made once.
                let statistics = |b: &mut Builder, model: StageId, objs: &Value, name: &str| {
                    let mut config = json!({
                        "objectives": objs,
                        "batches": e.statistics.batches,
                        "fisher_batches": e.statistics.fisher_batches,
                        "batch_size": p.batch_size,
                        "seed": s,
                    });
                    // Only when not the default, so that earlier stages keep their keys.
                    if e.statistics.fisher_labels != "data" {
                        config["fisher_labels"] = json!(e.statistics.fisher_labels);
                    }
                    b.add(
                        StageKind::Statistics,
                        format!("{tag}/statistics/{name}"),
                        Some(s),
                        config,
                        vec![suite, model],
                    )
                };
                // (model stage, its name in tables, its role, its sharing variant)
                let mut arm_models = vec![(
                    experts,
                    "experts".to_string(),
                    Role::Experts,
                    arm.sharing.clone(),
                )];
                if e.baseline.is_some() {
                    let baseline = b.add(
                        StageKind::Baseline,
                        format!("{w0_tag}/baseline"),
                        Some(s),
                        pretrain("shared", "checkpoint", &expert_objs, baseline_steps, s),
                        vec![suite, w0],
                    );
                    arm_models.push((baseline, "baseline".into(), Role::Baseline, "shared".into()));
                }
                if !e.distances.is_empty() {
                    // Every metric of the distance registry is computed; the file's list
                    // says which the report shows, so it is not part of the key.
                    let d = b.add(
                        StageKind::Distance,
                        format!("{tag}/distance"),
                        Some(s),
                        json!({"between": ["vision", "text"], "modes": ["raw", "task_vector"]}),
                        vec![w0, experts],
                    );
                    report_inputs.push(d);
                    distances.push((s, arm_index, d));
                }
                for m in &merges {
                    let mut inputs = vec![experts];
                    let based = m.base == Some(BaseSpec::Seed);
                    if based {
                        inputs.push(w0);
                    }
                    let reads = known_reads(m);
                    let mut config = m.config(s);
                    if reads.statistics {
                        inputs.push(statistics(&mut b, experts, &expert_objs, "experts"));
                        config["statistics"] = json!(true);
                    }
                    if reads.base_statistics && based {
                        inputs.push(statistics(&mut b, w0, &seed_objs, "seed"));
                        config["base_statistics"] = json!(true);
                    }
                    let merge = b.add(
                        StageKind::Merge,
                        format!("{tag}/merge/{}", m.name),
                        Some(s),
                        config,
                        inputs,
                    );
                    arm_models.push((merge, m.name.clone(), m.role(), "shared".into()));
                }
                let mut all = vec![];
                if e.zero_shot {
                    all.push((w0, "seed".to_string(), Role::Seed, "shared".to_string()));
                }
                all.extend(arm_models);
                for (model, name, role, sharing) in all {
                    let zero_shot = e.zero_shot.then(|| {
                        let z = b.add(
                            StageKind::Zeroshot,
                            format!("{tag}/zeroshot/{name}"),
                            Some(s),
                            json!({"signals": "retrieval", "split": "test"}),
                            vec![suite, model],
                        );
                        report_inputs.push(z);
                        z
                    });
                    let mut evals = vec![];
                    if role != Role::Seed {
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
                                vec![suite, model],
                            );
                            let ev = b.add(
                                StageKind::Eval,
                                format!("{tag}/eval/{name}/{task}"),
                                Some(s),
                                json!({"task": task, "split": "test", "sharing": sharing}),
                                vec![suite, ft],
                            );
                            report_inputs.push(ev);
                            evals.push((task.clone(), ev));
                        }
                    }
                    models.push(PlanModel {
                        seed: s,
                        arm: arm_index,
                        name,
                        role,
                        stage: model,
                        evals,
                        zero_shot,
                    });
                }
            }
        }
        // A stage shared by arms is read once.
        let mut seen = std::collections::HashSet::new();
        report_inputs.retain(|id| seen.insert(*id));
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
            arms,
            models,
            distances,
            seeds: e.seeds.clone(),
            tasks: e.tasks.clone(),
            distance_metrics: e.distances.clone(),
        })
    }

    /// The union of several experiments' plans under one name (`combine:` files): every stage
    /// once (by kind and key), arms with equal seed budget and sharing made one, the models of
    /// each arm once (a name that two experiments give different models gets
    /// `@<experiment>`), seeds, tasks and metrics in first-seen order, and one report reading
    /// every leaf.
    pub fn combine(name: &str, profile: &str, plans: &[Plan]) -> Plan {
        let mut b = Builder {
            stages: vec![],
            index: Default::default(),
        };
        let mut arms: Vec<Arm> = vec![];
        let mut models: Vec<PlanModel> = vec![];
        let mut distances = vec![];
        let mut report_inputs = vec![];
        let (mut seeds, mut tasks, mut metrics) = (vec![], vec![], vec![]);
        fn push_new<T: PartialEq + Clone>(v: &mut Vec<T>, xs: &[T]) {
            for x in xs {
                if !v.contains(x) {
                    v.push(x.clone());
                }
            }
        }
        for p in plans {
            let mut map = vec![StageId(0); p.stages.len()];
            for (i, s) in p.stages.iter().enumerate() {
                if s.kind == StageKind::Report {
                    continue;
                }
                let inputs = s.inputs.iter().map(|j| map[j.0]).collect();
                map[i] = b.add(s.kind, s.name.clone(), s.seed, s.config.clone(), inputs);
            }
            let arm_map: Vec<usize> = p
                .arms
                .iter()
                .map(|a| match arms.iter().position(|x| x == a) {
                    Some(i) => i,
                    None => {
                        arms.push(a.clone());
                        arms.len() - 1
                    }
                })
                .collect();
            for m in &p.models {
                let mut m = PlanModel {
                    arm: arm_map[m.arm],
                    stage: map[m.stage.0],
                    evals: m
                        .evals
                        .iter()
                        .map(|(t, id)| (t.clone(), map[id.0]))
                        .collect(),
                    zero_shot: m.zero_shot.map(|id| map[id.0]),
                    ..m.clone()
                };
                let same = |x: &PlanModel| x.seed == m.seed && x.arm == m.arm && x.name == m.name;
                if let Some(prev) = models.iter_mut().find(|x| same(x)) {
                    if prev.stage == m.stage {
                        // One model: keep the evaluations either experiment asked for.
                        for e in m.evals {
                            if !prev.evals.contains(&e) {
                                prev.evals.push(e);
                            }
                        }
                        prev.zero_shot = prev.zero_shot.or(m.zero_shot);
                        continue;
                    }
                    m.name = format!("{}@{}", m.name, p.experiment);
                }
                models.push(m);
            }
            for (seed, arm, id) in &p.distances {
                let d = (*seed, arm_map[*arm], map[id.0]);
                if !distances.contains(&d) {
                    distances.push(d);
                }
            }
            if let Some(report) = p.stages.last() {
                for j in &report.inputs {
                    if !report_inputs.contains(&map[j.0]) {
                        report_inputs.push(map[j.0]);
                    }
                }
            }
            push_new(&mut seeds, &p.seeds);
            push_new(&mut tasks, &p.tasks);
            push_new(&mut metrics, &p.distance_metrics);
        }
        let parts: Vec<&str> = plans.iter().map(|p| p.experiment.as_str()).collect();
        b.add(
            StageKind::Report,
            "report".into(),
            None,
            json!({
                "experiment": name,
                "combine": parts,
                "seeds": seeds,
                "tasks": tasks,
                "distances": metrics,
            }),
            report_inputs,
        );
        Plan {
            experiment: name.to_string(),
            profile: profile.to_string(),
            stages: b.stages,
            arms,
            models,
            distances,
            seeds,
            tasks,
            distance_metrics: metrics,
        }
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
