//! The merge config: mergekit's YAML format (`models` or `slices`, `merge_method`,
//! `base_model`, `parameters`, `dtype`, `out_dtype`, `tokenizer_source`), so existing mergekit
//! configs run unchanged. Every struct denies unknown fields.
//!
//! A config is parsed once, by [`MergeConfig::from_yaml`], into typed values: the method is a
//! [`MethodKind`], dtypes are [`Dtype`]s, and every check that needs only the config (method,
//! parameter names, slices, dtypes, model references, tokenizer source) runs here. Errors carry
//! the file and the YAML line of the offending node, which the YAML parser itself reports
//! ([`locate`]), and list the valid choices.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmerge_core::Dtype;
use serde::Deserialize;

use crate::error::{MergeError, Result};
use crate::methods::{MethodKind, Scope};
use crate::numerics::{self, Half, Numerics};
use crate::params::{ParamMap, ParamValue};

/// A parsed value and the 1-based YAML line it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub line: Option<usize>,
}

/// A whole merge config, parsed and checked.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    pub merge_method: Spanned<MethodKind>,
    pub models: Option<Vec<InputModel>>,
    pub slices: Option<Vec<OutputSlice>>,
    /// mergekit's per-module form: module name → its own models and parameters.
    pub modules: Option<BTreeMap<String, Module>>,
    pub base_model: Option<String>,
    pub parameters: ParamMap,
    pub dtype: Option<Spanned<Dtype>>,
    pub out_dtype: Option<Spanned<Dtype>>,
    /// The output vocabulary, from `tokenizer:` or `tokenizer_source:` (`crate::vocab`).
    pub tokenizer: Option<TokenizerSpec>,
    /// mmerge's extension: `numerics: mergekit` computes as mergekit does in a half `dtype`
    /// (`crate::numerics`); the default is float64 with one rounding.
    pub numerics: Spanned<Numerics>,
    pub name: Option<String>,
    /// Outputs of earlier documents of a multi-document config, by their `name`: a model
    /// reference equal to one of these names reads that output (set by `multi`).
    pub model_dirs: BTreeMap<String, PathBuf>,
    /// mmerge's extension for data-dependent methods: per model (as the config names it), the
    /// statistics folder collected on data (`mmerge-torch statistics`).
    pub statistics: Option<BTreeMap<String, String>>,
    /// mmerge's extension: align every merged model to the first (or to `base_model`) before
    /// merging (Git Re-Basin style, `mmerge align` in model mode).
    pub align: Option<AlignConfig>,
}

/// `align:` of a merge config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignConfig {
    /// An alignment method (`mmerge_merge::align::AlignMethod`); model mode takes
    /// `weight_matching`.
    pub method: String,
    /// MuDSC's λ, for its methods.
    #[serde(default)]
    pub lambda: Option<f64>,
    /// Seed of the unit order of the coordinate ascent.
    #[serde(default)]
    pub seed: u64,
    /// For activation-based methods (λ < 1): the folder with the two models' joint activation
    /// statistics (`mmerge statistics A OUT --suite S --pair B`).
    #[serde(default)]
    pub statistics: Option<String>,
}

/// The config as YAML spells it, before [`MergeConfig::from_yaml`] types and checks it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    merge_method: String,
    #[serde(default)]
    models: Option<Vec<InputModel>>,
    #[serde(default)]
    slices: Option<Vec<OutputSlice>>,
    #[serde(default)]
    modules: Option<BTreeMap<String, Module>>,
    #[serde(default)]
    base_model: Option<String>,
    #[serde(default)]
    parameters: ParamMap,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    out_dtype: Option<String>,
    #[serde(default)]
    numerics: Option<String>,
    #[serde(default)]
    tokenizer_source: Option<String>,
    #[serde(default)]
    tokenizer: Option<RawTokenizer>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    statistics: Option<BTreeMap<String, String>>,
    #[serde(default)]
    align: Option<AlignConfig>,
}

/// `tokenizer:` as YAML spells it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenizer {
    #[serde(default = "union_source")]
    source: String,
    #[serde(default)]
    tokens: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pad_to_multiple_of: Option<usize>,
}

/// mergekit's default `tokenizer.source`.
fn union_source() -> String {
    "union".into()
}

/// The output vocabulary of a merge (`crate::vocab`): `source` is `base`, `union` or a model
/// of the merge.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerSpec {
    pub source: String,
    pub pad_to_multiple_of: Option<usize>,
    /// The YAML line of the source.
    pub line: Option<usize>,
}

/// One entry of `models:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputModel {
    pub model: String,
    #[serde(default)]
    pub parameters: ParamMap,
}

/// One module of `modules:` (mergekit's per-module form). Module names are those mergekit
/// infers from the tensor names: every numbered stack by its prefix
/// (`vision_tower.convs`), the tensors outside the stacks as `default`; a checkpoint with one
/// stack is one module, `default`. Only the listed modules are written, as mergekit does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module {
    #[serde(default)]
    pub models: Option<Vec<InputModel>>,
    /// Accepted by the parser only to be refused by name (per-module slices).
    #[serde(default)]
    slices: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub parameters: ParamMap,
    /// The YAML line of the module's name (set by [`MergeConfig::from_yaml`]).
    #[serde(skip)]
    pub line: Option<usize>,
}

/// One entry of `slices:`: a run of output layers built from `sources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSlice {
    pub sources: Vec<InputSlice>,
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub parameters: ParamMap,
}

/// One source of a slice: layers `layer_range[0] .. layer_range[1]` of `model`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSlice {
    pub model: String,
    pub layer_range: [usize; 2],
    #[serde(default)]
    pub parameters: ParamMap,
    /// The YAML line of `layer_range` (set by [`MergeConfig::from_yaml`]).
    #[serde(skip)]
    pub layer_range_line: Option<usize>,
}

pub use mmerge_core::yaml::{Seg, locate};

/// Valid dtype names, for error messages.
const DTYPES: &str = "float32, bfloat16, float16, float64";

impl MergeConfig {
    /// Reads and checks a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MergeError::Core(mmerge_core::CoreError::io(path, e)))?;
        Self::from_yaml(&text, path)
    }

    /// Parses and checks config text; `path` is only used in error messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self> {
        use Seg::{Index, Key};
        let err = |line: Option<usize>, message: String| MergeError::Config {
            path: path.to_path_buf(),
            line,
            message,
        };
        let at = |p: &[Seg<'_>]| locate(text, p);
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let msg = e.to_string();
            // serde_yaml_ng appends " at line L column C"; the line is in our prefix already.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            err(line, msg)
        })?;
        let method_line = at(&[Key("merge_method")]);
        let method = MethodKind::from_name(&raw.merge_method).ok_or_else(|| {
            err(
                method_line,
                format!(
                    "unknown merge_method `{}`; valid: {}",
                    raw.merge_method,
                    MethodKind::NAMES.join(", ")
                ),
            )
        })?;
        let dtype = |key: &'static str, value: &Option<String>| -> Result<Option<Spanned<Dtype>>> {
            let Some(name) = value else { return Ok(None) };
            let line = at(&[Key(key)]);
            match Dtype::from_user(name) {
                Some(d) => Ok(Some(Spanned { value: d, line })),
                None => Err(err(
                    line,
                    format!("unknown {key} `{name}`; valid: {DTYPES}"),
                )),
            }
        };
        let dtype_v = dtype("dtype", &raw.dtype)?;
        let out_dtype = dtype("out_dtype", &raw.out_dtype)?;
        let numerics = match &raw.numerics {
            None => Spanned {
                value: Numerics::Float64,
                line: None,
            },
            Some(name) => {
                let line = at(&[Key("numerics")]);
                let value = Numerics::from_name(name).ok_or_else(|| {
                    err(
                        line,
                        format!("unknown numerics `{name}`; valid: {}", Numerics::NAMES),
                    )
                })?;
                Spanned { value, line }
            }
        };
        let forms = [
            ("models", raw.models.is_some()),
            ("slices", raw.slices.is_some()),
            ("modules", raw.modules.is_some()),
        ];
        let given: Vec<&str> = forms.iter().filter(|f| f.1).map(|f| f.0).collect();
        if given.len() > 1 {
            return Err(err(
                at(&[Key(given[1])]),
                format!(
                    "give one of `models`, `slices` or `modules`, not `{}`",
                    given.join("` and `")
                ),
            ));
        }
        let mut raw = raw;
        for (name, m) in raw.modules.iter_mut().flatten() {
            let line = at(&[Key("modules"), Key(name)]);
            m.line = line;
            if m.slices.is_some() {
                return Err(err(
                    at(&[Key("modules"), Key(name), Key("slices")]),
                    format!(
                        "module `{name}`: `slices` inside `modules` are not supported; give the module `models`"
                    ),
                ));
            }
            if m.models.as_ref().is_none_or(Vec::is_empty) {
                return Err(err(line, format!("module `{name}` has no `models`")));
            }
        }
        match (&raw.models, &raw.slices) {
            (None, None) if raw.modules.as_ref().is_some_and(|m| !m.is_empty()) => {}
            (None, None) => {
                return Err(err(
                    None,
                    "the config needs `models`, `slices` or `modules`".into(),
                ));
            }
            (Some(m), None) if m.is_empty() => {
                return Err(err(at(&[Key("models")]), "`models` is empty".into()));
            }
            (None, Some(s)) if s.is_empty() => {
                return Err(err(at(&[Key("slices")]), "`slices` is empty".into()));
            }
            _ => {}
        }
        let mut slices = raw.slices;
        for (i, s) in slices.iter_mut().flatten().enumerate() {
            if s.sources.is_empty() {
                return Err(err(
                    at(&[Key("slices"), Index(i), Key("sources")]),
                    format!("slice {i} has no sources"),
                ));
            }
            let span = s.sources[0].layer_range[1].saturating_sub(s.sources[0].layer_range[0]);
            for (j, src) in s.sources.iter_mut().enumerate() {
                let line = at(&[
                    Key("slices"),
                    Index(i),
                    Key("sources"),
                    Index(j),
                    Key("layer_range"),
                ]);
                src.layer_range_line = line;
                let [a, b] = src.layer_range;
                if a >= b {
                    return Err(err(
                        line,
                        format!(
                            "slice {i}: layer_range [{a}, {b}] of {} is empty",
                            src.model
                        ),
                    ));
                }
                if b - a != span {
                    return Err(err(
                        line,
                        format!("slice {i}: every source must span the same number of layers"),
                    ));
                }
            }
        }
        let tokenizer = match (raw.tokenizer_source, raw.tokenizer) {
            (Some(_), Some(_)) => {
                return Err(err(
                    at(&[Key("tokenizer")]),
                    "give `tokenizer` or `tokenizer_source`, not both".into(),
                ));
            }
            (Some(source), None) => Some(TokenizerSpec {
                source,
                pad_to_multiple_of: None,
                line: at(&[Key("tokenizer_source")]),
            }),
            (None, Some(t)) => {
                if t.tokens.is_some() {
                    return Err(err(
                        at(&[Key("tokenizer"), Key("tokens")]),
                        "`tokenizer.tokens` (per-token embedding sources) is not supported".into(),
                    ));
                }
                if t.pad_to_multiple_of == Some(0) {
                    return Err(err(
                        at(&[Key("tokenizer"), Key("pad_to_multiple_of")]),
                        "`pad_to_multiple_of` must be at least 1".into(),
                    ));
                }
                Some(TokenizerSpec {
                    source: t.source,
                    pad_to_multiple_of: t.pad_to_multiple_of,
                    line: at(&[Key("tokenizer"), Key("source")]).or(at(&[Key("tokenizer")])),
                })
            }
            (None, None) => None,
        };
        let cfg = MergeConfig {
            merge_method: Spanned {
                value: method,
                line: method_line,
            },
            models: raw.models,
            slices,
            modules: raw.modules,
            base_model: raw.base_model,
            parameters: raw.parameters,
            dtype: dtype_v,
            out_dtype,
            tokenizer,
            numerics,
            name: raw.name,
            model_dirs: BTreeMap::new(),
            statistics: raw.statistics,
            align: raw.align,
        };
        for (i, model) in cfg.model_refs().into_iter().enumerate() {
            if model.contains('+') {
                return Err(err(
                    cfg.model_path_line(text, i),
                    format!("`{model}`: LoRA references (`model+lora`) are not supported"),
                ));
            }
        }
        if let Some(t) = &cfg.tokenizer
            && !["base", "union"].contains(&t.source.as_str())
            && !cfg.model_refs().contains(&t.source.as_str())
        {
            return Err(err(
                t.line,
                format!(
                    "tokenizer source `{}` is not a model of this merge",
                    t.source
                ),
            ));
        }
        if method.needs_base() && cfg.base_model.is_none() {
            return Err(err(
                method_line,
                format!("merge_method `{}` needs `base_model`", method.name()),
            ));
        }
        cfg.check_statistics(text, path)?;
        cfg.check_numerics(path)?;
        if let Some(a) = &cfg.align {
            let line = at(&[Key("align"), Key("method")]);
            let (m, o) = crate::align::AlignMethod::from_name(&a.method)
                .and_then(|m| m.options(a.lambda).map(|o| (m, o)))
                .map_err(|e| err(line, e.to_string()))?;
            let pairwise = o.lambda < 1.0 || !matches!(o.solver, crate::align::Solver::Align);
            let others = cfg
                .model_refs()
                .len()
                .saturating_sub(if cfg.base_model.is_some() { 1 } else { 0 });
            if pairwise && !(others == 2 || (cfg.base_model.is_some() && others == 1)) {
                return Err(err(
                    line,
                    format!(
                        "align method `{}` aligns (or zips) one pair of models on their joint \
                         activations: give exactly two models (or one and `base_model`)",
                        m.name()
                    ),
                ));
            }
            if o.lambda < 1.0 && a.statistics.is_none() {
                return Err(err(
                    line,
                    format!(
                        "align method `{}` (λ = {}) reads the two models' joint activations: \
                         add `statistics: DIR` (made by `mmerge statistics A DIR --suite SUITE \
                         --pair B`)",
                        m.name(),
                        o.lambda
                    ),
                ));
            }
            if cfg.models.is_none() {
                return Err(err(
                    at(&[Key("align")]),
                    "`align` works with `models:`, not `slices:` or `modules:`".into(),
                ));
            }
        }
        cfg.check_param_names(text, path)?;
        Ok(cfg)
    }

    /// Sets the numerics (`mmerge merge --numerics`), overriding the config's, and checks them.
    pub fn with_numerics(mut self, numerics: Numerics, path: &Path) -> Result<Self> {
        if numerics != self.numerics.value {
            self.numerics = Spanned {
                value: numerics,
                line: None,
            };
        }
        self.check_numerics(path)?;
        Ok(self)
    }

    /// The half dtype that `numerics: mergekit` computes in (`None`: float64 numerics).
    pub fn mergekit_half(&self) -> Option<Half> {
        match self.numerics.value {
            Numerics::Float64 => None,
            Numerics::Mergekit => self.dtype.and_then(|d| Half::of(d.value)),
        }
    }

    /// `numerics: mergekit` needs a half `dtype` and a method it emulates.
    fn check_numerics(&self, path: &Path) -> Result<()> {
        if self.numerics.value == Numerics::Float64 {
            return Ok(());
        }
        let err = |message: String| MergeError::Config {
            path: path.to_path_buf(),
            line: self.numerics.line,
            message,
        };
        if self.mergekit_half().is_none() {
            let found = match self.dtype {
                None => "; the config sets no `dtype`".to_string(),
                Some(d) => format!(
                    ", not `dtype: {}`",
                    match d.value {
                        Dtype::F32 => "float32",
                        Dtype::F64 => "float64",
                        other => other.as_str(),
                    }
                ),
            };
            return Err(err(format!(
                "numerics `mergekit` reproduces mergekit's half-precision arithmetic: it needs \
                 `dtype: float16` or `dtype: bfloat16`{found}"
            )));
        }
        let method = self.method();
        if !numerics::supports(method) {
            return Err(err(format!(
                "numerics `mergekit` is implemented for {}, not for merge_method `{}`",
                numerics::METHODS.map(MethodKind::name).join(", "),
                method.name()
            )));
        }
        Ok(())
    }

    /// `statistics:` names models of this merge, and only for a method that reads them.
    fn check_statistics(&self, text: &str, path: &Path) -> Result<()> {
        let Some(stats) = &self.statistics else {
            return Ok(());
        };
        let method = self.method();
        let err = |line: Option<usize>, message: String| MergeError::Config {
            path: path.to_path_buf(),
            line,
            message,
        };
        if method.statistics().folder().is_none() {
            return Err(err(
                locate(text, &[Seg::Key("statistics")]),
                format!(
                    "merge_method `{}` reads no statistics; remove `statistics`",
                    method.name()
                ),
            ));
        }
        let refs = self.model_refs();
        for model in stats.keys() {
            if !refs.contains(&model.as_str()) {
                return Err(err(
                    locate(text, &[Seg::Key("statistics"), Seg::Key(model)]),
                    format!(
                        "statistics for `{model}`, which is not a model of this merge (models: {})",
                        refs.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The method.
    pub fn method(&self) -> MethodKind {
        self.merge_method.value
    }

    /// The output dtype: `out_dtype`, else `dtype`, else (`None`) the inputs'.
    pub fn output_dtype(&self) -> Option<Dtype> {
        self.out_dtype.or(self.dtype).map(|d| d.value)
    }

    /// Where a model reference of this config lives: an earlier document's output when the
    /// reference is its name, else the reference as a path (relative paths are taken from the
    /// current directory, as mergekit does).
    pub fn model_path(&self, model: &str) -> PathBuf {
        self.model_dirs
            .get(model)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(model))
    }

    /// Every model path the config names, base first, without repeats.
    pub fn model_refs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (m, _) in self.model_mentions() {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// Every mention of a model, in [`Self::model_refs`] order, with its YAML path.
    fn model_mentions(&self) -> Vec<(&str, Vec<Seg<'_>>)> {
        use Seg::{Index, Key};
        let mut all: Vec<(&str, Vec<Seg<'_>>)> = self
            .base_model
            .iter()
            .map(|b| (b.as_str(), vec![Key("base_model")]))
            .collect();
        for (i, m) in self.models.iter().flatten().enumerate() {
            all.push((&m.model, vec![Key("models"), Index(i), Key("model")]));
        }
        for (name, module) in self.modules.iter().flatten() {
            for (i, m) in module.models.iter().flatten().enumerate() {
                all.push((
                    &m.model,
                    vec![
                        Key("modules"),
                        Key(name),
                        Key("models"),
                        Index(i),
                        Key("model"),
                    ],
                ));
            }
        }
        for (i, s) in self.slices.iter().flatten().enumerate() {
            if let Some(b) = &s.base_model {
                all.push((b, vec![Key("slices"), Index(i), Key("base_model")]));
            }
            for (j, src) in s.sources.iter().enumerate() {
                all.push((
                    &src.model,
                    vec![
                        Key("slices"),
                        Index(i),
                        Key("sources"),
                        Index(j),
                        Key("model"),
                    ],
                ));
            }
        }
        all
    }

    /// The line of the first mention of model reference number `i`.
    fn model_path_line(&self, text: &str, i: usize) -> Option<usize> {
        let wanted = *self.model_refs().get(i)?;
        let (_, p) = self
            .model_mentions()
            .into_iter()
            .find(|(m, _)| *m == wanted)?;
        locate(text, &p)
    }

    /// Every parameter name is declared by the method, per-model ones only per model, and
    /// flags are never gradients.
    fn check_param_names(&self, text: &str, path: &Path) -> Result<()> {
        use Seg::{Index, Key};
        let method = self.method();
        let all: Vec<&str> = method.params().iter().map(|p| p.name).collect();
        // (parameter map, per-model only, YAML path of the map)
        let mut maps: Vec<(&ParamMap, bool, Vec<Seg<'_>>)> =
            vec![(&self.parameters, false, vec![Key("parameters")])];
        for (i, m) in self.models.iter().flatten().enumerate() {
            maps.push((
                &m.parameters,
                true,
                vec![Key("models"), Index(i), Key("parameters")],
            ));
        }
        for (name, module) in self.modules.iter().flatten() {
            maps.push((
                &module.parameters,
                false,
                vec![Key("modules"), Key(name), Key("parameters")],
            ));
            for (i, m) in module.models.iter().flatten().enumerate() {
                maps.push((
                    &m.parameters,
                    true,
                    vec![
                        Key("modules"),
                        Key(name),
                        Key("models"),
                        Index(i),
                        Key("parameters"),
                    ],
                ));
            }
        }
        for (i, s) in self.slices.iter().flatten().enumerate() {
            maps.push((
                &s.parameters,
                false,
                vec![Key("slices"), Index(i), Key("parameters")],
            ));
            for (j, src) in s.sources.iter().enumerate() {
                maps.push((
                    &src.parameters,
                    true,
                    vec![
                        Key("slices"),
                        Index(i),
                        Key("sources"),
                        Index(j),
                        Key("parameters"),
                    ],
                ));
            }
        }
        for (map, per_model, at) in maps {
            for (name, value) in map {
                let spec = method.params().iter().find(|p| p.name == name);
                let message = match spec {
                    Some(p) if per_model && p.scope == Scope::Shared => format!(
                        "parameter `{name}` is shared by all models of a merge; set it in the \
                         top-level or slice `parameters`, not per model"
                    ),
                    Some(p) if !p.gradient() && is_gradient(value) => format!(
                        "parameter `{name}` of merge_method `{}` is a flag; it cannot be a \
                         gradient over depth",
                        method.name()
                    ),
                    Some(_) => continue,
                    None => format!(
                        "unknown parameter `{name}` for merge_method `{}`; valid: {}",
                        method.name(),
                        all.join(", ")
                    ),
                };
                let mut key_path = at.clone();
                key_path.push(Key(name));
                return Err(MergeError::Config {
                    path: path.to_path_buf(),
                    line: locate(text, &key_path),
                    message,
                });
            }
        }
        Ok(())
    }
}

/// Whether a setting is, or holds, a gradient list.
fn is_gradient(v: &ParamValue) -> bool {
    match v {
        ParamValue::Gradient(_) => true,
        ParamValue::Filtered(entries) => entries.iter().any(|e| is_gradient(&e.value)),
        ParamValue::Bool(_) | ParamValue::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> std::result::Result<MergeConfig, String> {
        MergeConfig::from_yaml(y, Path::new("cfg.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn mergekit_slerp_config_parses() {
        let c = parse(
            "slices:\n  - sources:\n      - model: a\n        layer_range: [0, 4]\n      - model: b\n        layer_range: [0, 4]\nmerge_method: slerp\nbase_model: a\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - value: 0.5\ndtype: bfloat16\n",
        )
        .unwrap();
        assert_eq!(c.method(), MethodKind::Slerp);
        assert_eq!(c.merge_method.line, Some(7));
        assert_eq!(
            c.dtype.map(|d| (d.value, d.line)),
            Some((Dtype::BF16, Some(14)))
        );
        let s = &c.slices.as_ref().unwrap()[0].sources;
        assert_eq!(
            (s[0].layer_range_line, s[1].layer_range_line),
            (Some(4), Some(6))
        );
        assert_eq!(c.model_refs(), ["a", "b"]);
    }

    #[test]
    fn errors_name_the_line_and_the_valid_choices() {
        let e = parse("models:\n  - model: a\nmerge_method: tie\n").unwrap_err();
        assert!(
            e.starts_with("cfg.yml:3: unknown merge_method `tie`; valid: linear"),
            "{e}"
        );
        let e = parse("models:\n  - model: a\n    weight: 1\nmerge_method: linear\n").unwrap_err();
        assert!(e.starts_with("cfg.yml:3: "), "{e}");
        assert!(
            e.contains("unknown field `weight`, expected `model` or `parameters`"),
            "{e}"
        );
        let e = parse("models:\n  - model: a\nmerge_method: linear\ndtyp: float32\n").unwrap_err();
        assert!(e.contains("cfg.yml:4: unknown field `dtyp`"), "{e}");
        let e = parse("models:\n  - model: a\nmerge_method: linear\ndtype: int4\n").unwrap_err();
        assert!(e.contains("cfg.yml:4: unknown dtype `int4`"), "{e}");
        let e = parse("merge_method: linear\n").unwrap_err();
        assert!(e.contains("needs `models`, `slices` or `modules`"), "{e}");
    }

    #[test]
    fn numerics_mergekit_needs_a_half_dtype_and_an_emulated_method() {
        let m = "models:\n  - model: a\n    parameters: {weight: 1}\n";
        let c = parse(&format!(
            "{m}merge_method: linear\ndtype: bfloat16\nnumerics: mergekit\n"
        ))
        .unwrap();
        assert_eq!(c.numerics.line, Some(6));
        assert_eq!(c.mergekit_half(), Some(Half::BF16));
        let c = parse(&format!("{m}merge_method: linear\ndtype: float16\n")).unwrap();
        assert_eq!(c.numerics.value, Numerics::Float64);
        assert_eq!(c.mergekit_half(), None);
        let e = parse(&format!(
            "{m}merge_method: linear\ndtype: float16\nnumerics: half\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("cfg.yml:6: unknown numerics `half`; valid: float64, mergekit"),
            "{e}"
        );
        let e = parse(&format!(
            "{m}merge_method: linear\nnumerics: mergekit\ndtype: float32\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("cfg.yml:5: numerics `mergekit` reproduces") && e.contains("float32"),
            "{e}"
        );
        let e = parse(&format!("{m}merge_method: linear\nnumerics: mergekit\n")).unwrap_err();
        assert!(e.contains("bfloat16`; the config sets no `dtype`"), "{e}");
        let e = parse(
            "models:\n  - model: a\n  - model: b\nmerge_method: karcher\ndtype: float16\nnumerics: mergekit\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "cfg.yml:6: numerics `mergekit` is implemented for linear, task_arithmetic, \
                 ties, slerp, not for merge_method `karcher`"
            ),
            "{e}"
        );
    }

    #[test]
    fn lines_come_from_the_parser_not_from_a_text_search() {
        // `densty` appears first in a comment and in a model path: the error points at the key.
        let y = "# densty: 1\nmerge_method: ties\nbase_model: densty\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters:\n      weight: 1\n      densty: 0.5\n";
        let e = parse(y).unwrap_err();
        assert!(
            e.starts_with("cfg.yml:10: unknown parameter `densty` for merge_method `ties`"),
            "{e}"
        );
        let e = parse(
            "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1, t: 0.5}\n",
        )
        .unwrap_err();
        assert!(e.starts_with("cfg.yml:4: unknown parameter `t`"), "{e}");
        let e = parse(
            "models:\n  - model: a\nparameters:\n  normalize: [0, 1]\nmerge_method: linear\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("cfg.yml:4: parameter `normalize` of merge_method `linear` is a flag"),
            "{e}"
        );
        let e = parse("slices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n      - model: b\n        layer_range: [1, 4]\nmerge_method: slerp\nbase_model: a\nparameters: {t: 0.5}\n").unwrap_err();
        assert!(
            e.starts_with("cfg.yml:6: slice 0: every source must span"),
            "{e}"
        );
        let e = parse("merge_method: linear\nmodels:\n  - model: a\ntokenizer_source: c\n")
            .unwrap_err();
        assert!(
            e.starts_with("cfg.yml:4: tokenizer source `c` is not a model"),
            "{e}"
        );
        let e =
            parse("models:\n  - model: a\n  - model: x+lora\nmerge_method: linear\n").unwrap_err();
        assert!(e.starts_with("cfg.yml:3: `x+lora`: LoRA"), "{e}");
        assert_eq!(
            locate(
                "a: 1\nb:\n  - x\n  - {c: 2}\n",
                &[Seg::Key("b"), Seg::Index(1), Seg::Key("c")]
            ),
            Some(4)
        );
        assert_eq!(locate("a: 1\n", &[Seg::Key("b")]), None);
    }

    #[test]
    fn modules_form_is_checked_with_lines() {
        let y = "merge_method: linear\nmodules:\n  default:\n    models:\n      - model: a\n        parameters: {weight: 1, weigth: 2}\n";
        let e = parse(y).unwrap_err();
        assert!(
            e.starts_with("cfg.yml:6: unknown parameter `weigth`"),
            "{e}"
        );
        let y = "merge_method: linear\nmodules:\n  default:\n    slices: []\n";
        let e = parse(y).unwrap_err();
        assert!(
            e.starts_with("cfg.yml:4: module `default`: `slices` inside"),
            "{e}"
        );
        let y = "merge_method: linear\nmodels:\n  - model: a\nmodules:\n  default:\n    models:\n      - model: a\n";
        let e = parse(y).unwrap_err();
        assert!(e.starts_with("cfg.yml:4: give one of"), "{e}");
        let y = "merge_method: linear\nmodules:\n  x:\n    parameters: {weight: 1}\n";
        let e = parse(y).unwrap_err();
        assert!(
            e.starts_with("cfg.yml:3: module `x` has no `models`"),
            "{e}"
        );
        let c = parse("merge_method: linear\nmodules:\n  default:\n    models:\n      - model: a\n      - model: b\n").unwrap();
        assert_eq!(c.model_refs(), ["a", "b"]);
    }

    #[test]
    fn tokenizer_section_is_checked_with_lines() {
        let m = "merge_method: linear\nmodels:\n  - model: a\n";
        let e = parse(&format!(
            "{m}tokenizer:\n  source: base\n  tokens:\n    x: {{source: a}}\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("cfg.yml:6: `tokenizer.tokens`"), "{e}");
        let e = parse(&format!(
            "{m}tokenizer_source: base\ntokenizer:\n  source: base\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("cfg.yml:5: give `tokenizer` or `tokenizer_source`"),
            "{e}"
        );
        let e = parse(&format!("{m}tokenizer:\n  pad_to_multiple_of: 0\n")).unwrap_err();
        assert!(e.starts_with("cfg.yml:5: `pad_to_multiple_of`"), "{e}");
        let e = parse(&format!("{m}tokenizer:\n  source: c\n")).unwrap_err();
        assert!(
            e.starts_with("cfg.yml:5: tokenizer source `c` is not a model"),
            "{e}"
        );
        // mergekit's default source is `union`.
        let c = parse(&format!("{m}tokenizer:\n  pad_to_multiple_of: 8\n")).unwrap();
        let t = c.tokenizer.unwrap();
        assert_eq!(
            (t.source.as_str(), t.pad_to_multiple_of),
            ("union", Some(8))
        );
    }
}
