//! Experiment files: one YAML file names a whole study (suite, seeds, the training budgets of
//! each profile, the merges, distances and tasks), typed and validated before any work starts.
//! [`crate::plan`] expands it into a DAG of stages.
//!
//! ```yaml
//! name: quickstart
//! suite: {synthetic: {scale: small, seed: 0}}   # or `real-assets`, or {path: DIR}
//! preset: small
//! seeds: [0, 1, 2]
//! profiles:
//!   quick: {seed_pretrain: 300, experts: 300, finetune: 300, finetune_tasks: {nlvr2: 450}}
//!   full:  {seed_pretrain: 3000, experts: 3000, finetune: 3000}
//! seed_pretrain: {objectives: {itc: 1, itm: 1, mlm: 1}}
//! experts: {sharing: all_specific, objectives: {itc: 1, itm: 1, mlm: 1}}
//! # Sweeps before the merge ("arms"): a profile's `seed_pretrain: [0, 100, 300]` runs one
//! # chain per seed budget; `experts: {sharing: [all_specific, custom_attn], ...}` one experts
//! # model per sharing variant from the same W0.
//! baseline: {}                                   # the shared model continued as long as the experts
//! merges:
//!   - {name: interpolation, method: linear, zip: true,
//!      weights: {vision: [0.25, 0.5, 0.75], text: [0.75, 0.5, 0.25]}}
//!   - {name: arithmetic, method: task_arithmetic, base: seed, params: {lambda: 1.0}}
//! distances: [l2, tssd]
//! tasks: [vqa, retrieval, nlvr2]
//! zero_shot: true
//! ```
//!
//! Errors: serde reports unknown fields and wrong types with the YAML line; names (methods,
//! distances, tasks, objectives, presets, sharing variants, profiles) are checked by
//! [`ExperimentFile::validate`] against the lists the caller passes in [`Known`] (the binary
//! passes the merge registry's and the train registries' names; this crate links neither),
//! with the line of the offending node and the valid choices.
//!
//! Line numbers of validated nodes come from the YAML parser itself
//! ([`mmerge_core::yaml::locate`], shared with merge configs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use mmerge_core::yaml::{Seg, locate};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The experts a merge's `weights` may name (`mmerge_core::keys::EXPERTS`).
pub use mmerge_core::keys::EXPERTS;

/// Errors of experiment files and plans; each names the file and, where known, the YAML line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A YAML syntax error, an unknown field or a wrong type (serde's message).
    #[error("{}{}: {message}", path.display(), line_suffix(*line))]
    Yaml {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A value serde accepted but the experiment cannot use (an unknown name, an empty list, a
    /// value out of range); the message lists the valid choices where there is a list.
    #[error("{}{}: {message}", path.display(), line_suffix(*line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{}: unknown profile `{name}`; valid: {valid}", path.display())]
    UnknownProfile {
        path: PathBuf,
        name: String,
        valid: String,
    },
}

/// serde's error as a [`ConfigError::Yaml`] of `path`.
fn yaml_error(e: serde_yaml_ng::Error, path: &Path) -> ConfigError {
    let msg = e.to_string();
    // serde_yaml_ng appends " at line L column C"; the line goes in our prefix.
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    ConfigError::Yaml {
        path: path.to_path_buf(),
        line: e.location().map(|l| l.line()),
        message: msg,
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

impl ConfigError {
    /// The YAML line the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Yaml { line, .. } | ConfigError::Invalid { line, .. } => *line,
            _ => None,
        }
    }
}

/// The result of this module and of [`crate::plan`].
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// One experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The experiment's name: its report goes to `results/<name>/`.
    pub name: String,
    /// The task suite every stage reads.
    pub suite: SuiteSpec,
    /// The model preset of every trained model (`tiny`, `small`, ...).
    pub preset: String,
    /// Training seeds: the whole chain from seed pre-training on is run once per seed.
    pub seeds: Vec<u64>,
    /// Training budgets by profile name; `--profile NAME` selects one.
    pub profiles: BTreeMap<String, Profile>,
    /// Modality-agnostic pre-training of the seed model W0 (`shared`, from scratch).
    pub seed_pretrain: Pretrain,
    /// The modality-specific model: W0 copied into every expert, pre-trained further.
    pub experts: Experts,
    /// The modality-agnostic baseline: W0 continued (`shared`) with the experts' objectives;
    /// absent: no baseline.
    #[serde(default)]
    pub baseline: Option<Baseline>,
    /// The expert-into-shared merges of the experts' model; lists in `params` / `weights`
    /// are sweeps.
    pub merges: Vec<MergeSpec>,
    /// Weight-distance metrics computed for each merge's inputs.
    #[serde(default)]
    pub distances: Vec<String>,
    /// Suite tasks every evaluated model (experts, baseline, each merge) is fine-tuned and
    /// scored on.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Zero-shot signals (retrieval without fine-tuning) of W0, the experts, the baseline and
    /// each merge.
    #[serde(default)]
    pub zero_shot: bool,
    /// Optimiser settings shared by every training stage.
    #[serde(default)]
    pub train: TrainSettings,
    /// How much data the statistics of data-dependent merges and alignment run through a
    /// model (`mmerge statistics`).
    #[serde(default)]
    pub statistics: StatisticsSettings,
}

/// The data of a `statistics` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatisticsSettings {
    /// Batches for the Gram matrices and expert activation moments.
    #[serde(default = "default_statistics_batches")]
    pub batches: usize,
    /// Batches for the diagonal Fisher.
    #[serde(default = "default_statistics_batches")]
    pub fisher_batches: usize,
    /// The Fisher's targets: `data` (empirical Fisher) or `model` (sampled from the model).
    #[serde(default = "default_fisher_labels")]
    pub fisher_labels: String,
}

fn default_fisher_labels() -> String {
    "data".into()
}

/// The Fisher's target choices.
pub const FISHER_LABELS: [&str; 2] = ["data", "model"];

impl Default for StatisticsSettings {
    fn default() -> Self {
        StatisticsSettings {
            batches: default_statistics_batches(),
            fisher_batches: default_statistics_batches(),
            fisher_labels: default_fisher_labels(),
        }
    }
}

fn default_statistics_batches() -> usize {
    32
}

/// How the experts' copies start.
pub const EXPERT_INITS: [&str; 2] = ["shared", "independent"];

/// Where the suite comes from.
///
/// - `{synthetic: {scale, seed}}`: generated (`mmerge data synth`), the `suite` stage builds it;
/// - `real-assets`: the real-asset suite built by `datasets/build-real-assets`, which lives in
///   `$MMERGE_CACHE/suites/real-assets` (default `~/.cache/mmerge/suites/real-assets`), see
///   [`SuiteSpec::resolve`];
/// - `{path: DIR}`: any suite folder (with `suite.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuiteSpec {
    Synthetic(Synthetic),
    #[serde(rename = "real-assets")]
    RealAssets,
    Path(PathBuf),
}

impl<'de> Deserialize<'de> for SuiteSpec {
    // By hand: serde_yaml_ng spells derived enums as tags (`!synthetic`); here they are a
    // plain string or a one-key mapping.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        const WANT: &str = "`real-assets`, `{synthetic: {scale, seed}}` or `{path: DIR}`";
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SuiteSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(WANT)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<SuiteSpec, E> {
                match v {
                    "real-assets" => Ok(SuiteSpec::RealAssets),
                    _ => Err(E::custom(format!("unknown suite `{v}`; valid: {WANT}"))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<SuiteSpec, A::Error> {
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom(format!("empty suite; valid: {WANT}")))?;
                let spec = match key.as_str() {
                    "synthetic" => SuiteSpec::Synthetic(map.next_value()?),
                    "path" => SuiteSpec::Path(map.next_value()?),
                    _ => {
                        return Err(de::Error::custom(format!(
                            "unknown suite kind `{key}`; valid: {WANT}"
                        )));
                    }
                };
                if let Some(k) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a suite has one kind, `{key}` or `{k}`, not both"
                    )));
                }
                Ok(spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// The synthetic suite's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synthetic {
    /// `tiny`, `small` or `full` (a profile may override it).
    pub scale: String,
    /// The generator's seed (independent of the training seeds).
    #[serde(default)]
    pub seed: u64,
}

/// Synthetic scales (`mmerge_data::synth::Scale`).
pub const SYNTH_SCALES: [&str; 3] = ["tiny", "small", "full"];

impl SuiteSpec {
    /// The suite folder for `real-assets` and `{path}` suites (`cache`: `$MMERGE_CACHE`);
    /// `None` for a synthetic suite, which the `suite` stage builds into the run store.
    pub fn resolve(&self, cache: &Path) -> Option<PathBuf> {
        match self {
            SuiteSpec::Synthetic(_) => None,
            SuiteSpec::RealAssets => Some(cache.join("suites").join("real-assets")),
            SuiteSpec::Path(p) => Some(p.clone()),
        }
    }
}

/// One profile's training budgets (optimiser updates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Steps of seed pre-training (0: W0 is the initialisation itself); a list is a sweep
    /// (the initialisation analysis: one chain per budget).
    pub seed_pretrain: OneOrMany<u64>,
    /// Steps of the experts' pre-training.
    pub experts: u64,
    /// Steps of the baseline (default: `experts`, the same budget).
    #[serde(default)]
    pub baseline: Option<u64>,
    /// Steps of fine-tuning on each task ...
    pub finetune: u64,
    /// ... except these tasks (task → steps).
    #[serde(default)]
    pub finetune_tasks: BTreeMap<String, u64>,
    /// Overrides the synthetic suite's scale.
    #[serde(default)]
    pub suite_scale: Option<String>,
    /// Examples per update of every training stage.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_batch() -> usize {
    64
}

/// A pre-training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pretrain {
    /// Objective name → weight (the train crate's objective registry).
    pub objectives: BTreeMap<String, f64>,
    /// Steps for every profile (default: the profile's).
    #[serde(default)]
    pub steps: Option<u64>,
}

/// The modality-specific model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experts {
    /// The sharing variant (`all_specific`, `custom_attn`, ...); a list is a sweep (the
    /// architecture analysis: one experts model per variant, all from the same W0).
    pub sharing: OneOrMany<String>,
    /// Objective name → weight.
    pub objectives: BTreeMap<String, f64>,
    /// Steps for every profile (default: the profile's).
    #[serde(default)]
    pub steps: Option<u64>,
    /// How the experts start: `shared` (W0 copied into every expert, the paper's shared
    /// initialisation) or `independent` (every expert's copy from its own random
    /// initialisation, no seed model); a list is a sweep (the alignment analysis).
    #[serde(default = "default_init")]
    pub init: OneOrMany<String>,
}

fn default_init() -> OneOrMany<String> {
    OneOrMany::One("shared".into())
}

/// The modality-agnostic baseline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Steps for every profile (default: the profile's `baseline`, else its `experts`).
    #[serde(default)]
    pub steps: Option<u64>,
}

/// Optimiser settings of the training stages (the train crate's recipe defaults otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Peak learning rate of pre-training (seed, experts, baseline).
    #[serde(default = "default_pretrain_lr")]
    pub pretrain_lr: f64,
    /// Peak learning rate of fine-tuning.
    #[serde(default = "default_finetune_lr")]
    pub finetune_lr: f64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            pretrain_lr: default_pretrain_lr(),
            finetune_lr: default_finetune_lr(),
        }
    }
}

fn default_pretrain_lr() -> f64 {
    1e-3
}
fn default_finetune_lr() -> f64 {
    5e-4
}

/// Where a merge's base comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseSpec {
    /// The seed model W0 (task-vector methods: task arithmetic, TIES, DARE).
    Seed,
}

/// One merge (or a sweep of merges) of the experts into the shared model, as `mmerge experts`
/// does it (`mmerge_merge::experts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    /// The merge's name in tables (a sweep appends `[param=value, ...]`).
    pub name: String,
    /// A registered merge method (`linear`, `task_arithmetic`, `ties`, ...).
    pub method: String,
    /// The method's parameters other than weights (`lambda`, `density`, `t`, ...).
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// Per-expert weights (`vision`, `text`, `vl`, `shared`); unset experts weigh 1.
    #[serde(default)]
    pub weights: BTreeMap<String, ParamSpec>,
    /// The base of task-vector methods.
    #[serde(default)]
    pub base: Option<BaseSpec>,
    /// Only these experts merge (methods that take one input need exactly one).
    #[serde(default)]
    pub only: Vec<String>,
    /// Sweeps advance together (all lists of equal length: one merge per position) instead of
    /// expanding to their Cartesian product: interpolation is
    /// `weights: {vision: [0.25, 0.75], text: [0.75, 0.25]}, zip: true`.
    #[serde(default)]
    pub zip: bool,
    /// Align the other experts' units to the vision expert's before merging (`mmerge align
    /// --experts`).
    #[serde(default)]
    pub align: Option<AlignSpec>,
}

/// The alignment before a merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignSpec {
    /// `weight_matching`, `activation_matching`, `zipit`, `mudsc_align`, `mudsc_zip`.
    pub method: String,
    /// MuDSC's balance λ of weight and activation similarity (its methods only).
    #[serde(default)]
    pub lambda: Option<f64>,
}

/// One value, or a list of values (a sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "one value or a list of values (a sweep)")]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The values, in the file's order.
    pub fn values(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A sweep's values must be non-empty and distinct.
fn sweep_ok<T: PartialEq + fmt::Debug + Clone>(
    at: At,
    values: &OneOrMany<T>,
) -> std::result::Result<(), Problem> {
    let v = values.values();
    if v.is_empty() {
        return Err((at, "a sweep needs at least one value".into()));
    }
    for (i, x) in v.iter().enumerate() {
        if v[..i].contains(x) {
            return Err((at.index(i), format!("{x:?} appears twice")));
        }
    }
    Ok(())
}

/// A parameter: one number, or a list of numbers (a sweep: one merge per value; several
/// sweeps in one merge expand to their Cartesian product).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamSpec {
    One(f64),
    Sweep(Vec<f64>),
}

impl ParamSpec {
    /// The values this parameter takes.
    pub fn values(&self) -> Vec<f64> {
        match self {
            ParamSpec::One(v) => vec![*v],
            ParamSpec::Sweep(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for ParamSpec {
    // By hand, not `untagged`: an untagged enum's error loses the element's line and type.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a list of numbers (a sweep)")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<ParamSpec, E> {
                Ok(ParamSpec::One(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<ParamSpec, E> {
                Ok(ParamSpec::One(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<ParamSpec, E> {
                Ok(ParamSpec::One(v as f64))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ParamSpec, A::Error> {
                let mut out = vec![];
                while let Some(v) = seq.next_element::<f64>()? {
                    out.push(v);
                }
                Ok(ParamSpec::Sweep(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The valid names, from the registries the caller links.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Merge methods (the merge registry).
    pub methods: Vec<String>,
    /// Distance metrics (`mmerge_distance::DISTANCES`).
    pub distances: Vec<String>,
    /// Fine-tuning tasks (the train crate's task registry, or the suite's tasks).
    pub tasks: Vec<String>,
    /// Pre-training objectives (the train crate's objective registry).
    pub objectives: Vec<String>,
    /// Model presets.
    pub presets: Vec<String>,
    /// Sharing variants.
    pub sharings: Vec<String>,
    /// Alignment methods (`mmerge_merge::align::AlignMethod`).
    pub align_methods: Vec<String>,
}

impl Known {
    fn from_strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A `Known` from string slices (tests, and binaries with static registries).
    pub fn new(
        methods: &[&str],
        distances: &[&str],
        tasks: &[&str],
        objectives: &[&str],
        presets: &[&str],
        sharings: &[&str],
    ) -> Known {
        Known {
            methods: Self::from_strs(methods),
            distances: Self::from_strs(distances),
            tasks: Self::from_strs(tasks),
            objectives: Self::from_strs(objectives),
            presets: Self::from_strs(presets),
            sharings: Self::from_strs(sharings),
            align_methods: Self::from_strs(&mmerge_merge::align::AlignMethod::NAMES),
        }
    }
}

/// A parsed experiment with the file and text it came from (for error lines).
#[derive(Debug, Clone)]
pub struct ExperimentFile {
    pub path: PathBuf,
    pub text: String,
    pub experiment: Experiment,
}

impl ExperimentFile {
    /// Reads and parses an experiment file (names are checked by [`Self::validate`]).
    pub fn load(path: &Path) -> Result<ExperimentFile> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(text, path)
    }

    /// Parses experiment text; `path` names it in errors.
    pub fn parse(text: String, path: &Path) -> Result<ExperimentFile> {
        let experiment: Experiment =
            serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(e, path))?;
        Ok(ExperimentFile {
            path: path.to_path_buf(),
            text,
            experiment,
        })
    }

    /// Reads, parses and validates.
    pub fn load_valid(path: &Path, known: &Known) -> Result<ExperimentFile> {
        let f = Self::load(path)?;
        f.validate(known)?;
        Ok(f)
    }

    /// Checks every name against `known` and every value serde cannot check: the first
    /// problem, with its line and the valid choices.
    pub fn validate(&self, known: &Known) -> Result<()> {
        self.experiment
            .problems(known)
            .map_err(|(at, message)| ConfigError::Invalid {
                path: self.path.clone(),
                line: locate(&self.text, &at.segs()),
                message,
            })
    }

    /// Lets `tasks` (and profiles' `finetune_tasks`) name task kinds: a name that is not a
    /// task of the suite but the kind of some (`vqa`, `retrieval`, `nlvr2`, `image_cls`,
    /// ...) stands for every task of that kind, in the suite's order. So one file runs on the
    /// synthetic suite (whose tasks are called by their kinds) and on the real-asset suite
    /// (`tuxpaint_vqa`, `emoji_vqa`, ...) by changing its `suite` line. `suite_tasks`: the
    /// suite's (name, kind) pairs.
    pub fn expand_task_kinds(&mut self, suite_tasks: &[(String, String)]) {
        let expand = |name: &String| -> Vec<String> {
            if suite_tasks.iter().any(|(n, _)| n == name) {
                return vec![name.clone()];
            }
            let of_kind: Vec<String> = suite_tasks
                .iter()
                .filter(|(_, k)| k == name)
                .map(|(n, _)| n.clone())
                .collect();
            if of_kind.is_empty() {
                vec![name.clone()] // validate() names it with the valid choices
            } else {
                of_kind
            }
        };
        let e = &mut self.experiment;
        let mut tasks: Vec<String> = vec![];
        for t in &e.tasks {
            for x in expand(t) {
                if !tasks.contains(&x) {
                    tasks.push(x);
                }
            }
        }
        e.tasks = tasks;
        for p in e.profiles.values_mut() {
            p.finetune_tasks = std::mem::take(&mut p.finetune_tasks)
                .into_iter()
                .flat_map(|(k, v)| expand(&k).into_iter().map(move |x| (x, v)))
                .collect();
        }
    }

    /// The profile named `name`, or an error listing the file's profiles.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.experiment
            .profiles
            .get(name)
            .ok_or_else(|| ConfigError::UnknownProfile {
                path: self.path.clone(),
                name: name.to_string(),
                valid: self
                    .experiment
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// A path into the document, owned (for errors).
#[derive(Debug, Clone, Default)]
struct At(Vec<OwnedSeg>);

#[derive(Debug, Clone)]
enum OwnedSeg {
    Key(String),
    Index(usize),
}

impl At {
    fn key(mut self, k: &str) -> At {
        self.0.push(OwnedSeg::Key(k.to_string()));
        self
    }
    fn index(mut self, i: usize) -> At {
        self.0.push(OwnedSeg::Index(i));
        self
    }
    fn segs(&self) -> Vec<Seg<'_>> {
        self.0
            .iter()
            .map(|s| match s {
                OwnedSeg::Key(k) => Seg::Key(k),
                OwnedSeg::Index(i) => Seg::Index(*i),
            })
            .collect()
    }
}

fn root(k: &str) -> At {
    At::default().key(k)
}

type Problem = (At, String);

fn one_of(at: &At, what: &str, name: &str, valid: &[String]) -> std::result::Result<(), Problem> {
    if valid.iter().any(|v| v == name) {
        Ok(())
    } else {
        Err((
            at.clone(),
            format!("unknown {what} `{name}`; valid: {}", valid.join(", ")),
        ))
    }
}

fn objectives(
    at: At,
    objs: &BTreeMap<String, f64>,
    known: &Known,
) -> std::result::Result<(), Problem> {
    if objs.is_empty() {
        return Err((at, "name at least one objective".into()));
    }
    for (name, w) in objs {
        let here = at.clone().key(name);
        one_of(&here, "objective", name, &known.objectives)?;
        if !(w.is_finite() && *w >= 0.0) {
            return Err((here, format!("weight of `{name}` must be ≥ 0, got {w}")));
        }
    }
    Ok(())
}

impl Experiment {
    fn problems(&self, known: &Known) -> std::result::Result<(), Problem> {
        let ok_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !ok_name(&self.name) {
            return Err((
                root("name"),
                format!(
                    "`{}` is not a valid experiment name (use letters, digits, '-', '_')",
                    self.name
                ),
            ));
        }
        if let SuiteSpec::Synthetic(s) = &self.suite {
            let v: Vec<String> = SYNTH_SCALES.iter().map(|s| s.to_string()).collect();
            one_of(
                &root("suite").key("synthetic").key("scale"),
                "scale",
                &s.scale,
                &v,
            )?;
        }
        one_of(&root("preset"), "preset", &self.preset, &known.presets)?;
        if self.seeds.is_empty() {
            return Err((root("seeds"), "name at least one seed".into()));
        }
        let mut seen = BTreeSet::new();
        for (i, s) in self.seeds.iter().enumerate() {
            if !seen.insert(s) {
                return Err((root("seeds").index(i), format!("seed {s} appears twice")));
            }
        }
        if self.profiles.is_empty() {
            return Err((root("profiles"), "define at least one profile".into()));
        }
        for (name, p) in &self.profiles {
            let at = root("profiles").key(name);
            for task in p.finetune_tasks.keys() {
                one_of(
                    &at.clone().key("finetune_tasks").key(task),
                    "task",
                    task,
                    &known.tasks,
                )?;
            }
            if let Some(s) = &p.suite_scale {
                let v: Vec<String> = SYNTH_SCALES.iter().map(|s| s.to_string()).collect();
                one_of(&at.clone().key("suite_scale"), "scale", s, &v)?;
            }
            sweep_ok(at.clone().key("seed_pretrain"), &p.seed_pretrain)?;
            if p.batch_size == 0 {
                return Err((at.key("batch_size"), "must be at least 1".into()));
            }
        }
        objectives(
            root("seed_pretrain").key("objectives"),
            &self.seed_pretrain.objectives,
            known,
        )?;
        objectives(
            root("experts").key("objectives"),
            &self.experts.objectives,
            known,
        )?;
        sweep_ok(root("experts").key("sharing"), &self.experts.sharing)?;
        let labels: Vec<String> = FISHER_LABELS.iter().map(|s| s.to_string()).collect();
        one_of(
            &root("statistics").key("fisher_labels"),
            "Fisher labels",
            &self.statistics.fisher_labels,
            &labels,
        )?;
        sweep_ok(root("experts").key("init"), &self.experts.init)?;
        let inits: Vec<String> = EXPERT_INITS.iter().map(|s| s.to_string()).collect();
        for (i, init) in self.experts.init.values().iter().enumerate() {
            let at = match &self.experts.init {
                OneOrMany::One(_) => root("experts").key("init"),
                OneOrMany::Many(_) => root("experts").key("init").index(i),
            };
            one_of(&at, "expert initialisation", init, &inits)?;
        }
        for (i, sharing) in self.experts.sharing.values().iter().enumerate() {
            let at = match &self.experts.sharing {
                OneOrMany::One(_) => root("experts").key("sharing"),
                OneOrMany::Many(_) => root("experts").key("sharing").index(i),
            };
            one_of(&at, "sharing variant", sharing, &known.sharings)?;
            if sharing == "shared" {
                return Err((
                    at,
                    "the experts' model must have experts (not `shared`)".into(),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.merges.iter().enumerate() {
            let at = root("merges").index(i);
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return Err((
                    at.key("name"),
                    format!("merge names must be non-empty and unique: `{}`", m.name),
                ));
            }
            one_of(
                &at.clone().key("method"),
                "method",
                &m.method,
                &known.methods,
            )?;
            let experts: Vec<String> = EXPERTS.iter().map(|s| s.to_string()).collect();
            for (table, map) in [("params", &m.params), ("weights", &m.weights)] {
                for (k, v) in map {
                    let here = at.clone().key(table).key(k);
                    if table == "weights" {
                        one_of(&here, "expert", k, &experts)?;
                    }
                    let vals = v.values();
                    if vals.is_empty() {
                        return Err((here, format!("sweep `{k}` has no values")));
                    }
                    if let Some(x) = vals.iter().find(|x| !x.is_finite()) {
                        return Err((here, format!("`{k}` must be finite, got {x}")));
                    }
                }
            }
            if m.zip {
                let lens: BTreeSet<usize> = m
                    .params
                    .values()
                    .chain(m.weights.values())
                    .filter_map(|v| match v {
                        ParamSpec::Sweep(l) => Some(l.len()),
                        ParamSpec::One(_) => None,
                    })
                    .collect();
                if lens.len() > 1 {
                    return Err((
                        at.key("zip"),
                        format!("`zip: true` needs sweeps of one length, got lengths {lens:?}"),
                    ));
                }
            }
            for (j, e) in m.only.iter().enumerate() {
                one_of(&at.clone().key("only").index(j), "expert", e, &experts)?;
            }
            if let Some(a) = &m.align {
                let here = at.clone().key("align");
                one_of(
                    &here.clone().key("method"),
                    "alignment method",
                    &a.method,
                    &known.align_methods,
                )?;
                if let Some(l) = a.lambda
                    && !(0.0..=1.0).contains(&l)
                {
                    return Err((
                        here.key("lambda"),
                        format!("`lambda` (MuDSC's λ) must be in [0, 1], got {l}"),
                    ));
                }
            }
        }
        for (i, d) in self.distances.iter().enumerate() {
            one_of(&root("distances").index(i), "distance", d, &known.distances)?;
        }
        let mut tasks = BTreeSet::new();
        for (i, t) in self.tasks.iter().enumerate() {
            one_of(&root("tasks").index(i), "task", t, &known.tasks)?;
            if !tasks.insert(t) {
                return Err((root("tasks").index(i), format!("task `{t}` appears twice")));
            }
        }
        let lr = |k: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err((root("train").key(k), format!("must be > 0, got {v}")))
            }
        };
        lr("pretrain_lr", self.train.pretrain_lr)?;
        lr("finetune_lr", self.train.finetune_lr)?;
        Ok(())
    }
}

/// A file that combines experiments (the distance-metric analysis reads the merges of the
/// other analyses): their plans' union under one name, with one report.
///
/// ```yaml
/// name: metrics-vs-score
/// combine: [initialization.yaml, architecture.yaml]   # relative to this file
/// ```
///
/// Every combined experiment must use the same suite and define the profile asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Combination {
    pub name: String,
    pub combine: Vec<PathBuf>,
}

/// A combination file with the experiment files it names.
#[derive(Debug, Clone)]
pub struct CombinationFile {
    pub path: PathBuf,
    pub text: String,
    pub combination: Combination,
    pub parts: Vec<ExperimentFile>,
}

/// What `mmerge run` reads: an experiment, or a combination of experiments.
#[derive(Debug, Clone)]
pub enum StudyFile {
    Experiment(Box<ExperimentFile>),
    Combination(CombinationFile),
}

impl StudyFile {
    /// Reads a study file: a combination when its top level has `combine`, else an
    /// experiment (parsed, not yet validated).
    pub fn load(path: &Path) -> Result<StudyFile> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let is_combination = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
            .ok()
            .and_then(|v| v.as_mapping().map(|m| m.contains_key("combine")))
            .unwrap_or(false);
        if !is_combination {
            return Ok(StudyFile::Experiment(Box::new(ExperimentFile::parse(
                text, path,
            )?)));
        }
        let combination: Combination =
            serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(e, path))?;
        let invalid = |at: At, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: locate(&text, &at.segs()),
            message,
        };
        if combination.combine.is_empty() {
            return Err(invalid(
                root("combine"),
                "name at least one experiment".into(),
            ));
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        let mut parts = vec![];
        for (i, p) in combination.combine.iter().enumerate() {
            let part = ExperimentFile::load(&dir.join(p)).map_err(|e| match e {
                ConfigError::Io {
                    path: missing,
                    source,
                } => invalid(
                    root("combine").index(i),
                    format!("{}: {source}", missing.display()),
                ),
                other => other,
            })?;
            if let Some(first) = parts.first().map(|f: &ExperimentFile| &f.experiment)
                && first.suite != part.experiment.suite
            {
                return Err(invalid(
                    root("combine").index(i),
                    format!(
                        "`{}` uses another suite than `{}`; combined experiments share one",
                        part.experiment.name, first.name
                    ),
                ));
            }
            parts.push(part);
        }
        Ok(StudyFile::Combination(CombinationFile {
            path: path.to_path_buf(),
            text,
            combination,
            parts,
        }))
    }

    /// The experiment files, to change (see [`ExperimentFile::expand_task_kinds`]).
    pub fn experiments_mut(&mut self) -> Vec<&mut ExperimentFile> {
        match self {
            StudyFile::Experiment(f) => vec![f.as_mut()],
            StudyFile::Combination(c) => c.parts.iter_mut().collect(),
        }
    }

    /// The experiment files (one, or the combined ones).
    pub fn experiments(&self) -> Vec<&ExperimentFile> {
        match self {
            StudyFile::Experiment(f) => vec![f.as_ref()],
            StudyFile::Combination(c) => c.parts.iter().collect(),
        }
    }

    /// The study's name (its report goes to `results/<name>/`).
    pub fn name(&self) -> &str {
        match self {
            StudyFile::Experiment(f) => &f.experiment.name,
            StudyFile::Combination(c) => &c.combination.name,
        }
    }

    /// The plan under `profile` (validate first).
    pub fn plan(&self, profile: &str) -> Result<crate::plan::Plan> {
        match self {
            StudyFile::Experiment(f) => crate::plan::Plan::build(f, profile),
            StudyFile::Combination(c) => {
                let plans = c
                    .parts
                    .iter()
                    .map(|f| crate::plan::Plan::build(f, profile))
                    .collect::<Result<Vec<_>>>()?;
                Ok(crate::plan::Plan::combine(
                    &c.combination.name,
                    profile,
                    &plans,
                ))
            }
        }
    }
}
