//! The merge config: mergekit's YAML format (`models` or `slices`, `merge_method`,
//! `base_model`, `parameters`, `dtype`, `out_dtype`, `tokenizer_source`), so existing mergekit
//! configs run unchanged. Every struct denies unknown fields; errors carry the YAML line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{MergeError, Result};
use crate::methods::MethodKind;
use crate::params::ParamMap;

/// A whole merge config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    pub merge_method: String,
    #[serde(default)]
    pub models: Option<Vec<InputModel>>,
    #[serde(default)]
    pub slices: Option<Vec<OutputSlice>>,
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub parameters: ParamMap,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub out_dtype: Option<String>,
    #[serde(default)]
    pub tokenizer_source: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One entry of `models:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputModel {
    pub model: String,
    #[serde(default)]
    pub parameters: ParamMap,
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
}

/// 1-based line of the first line of `text` containing `needle`.
pub(crate) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

impl MergeConfig {
    /// Reads and checks a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MergeError::Core(mmerge_core::CoreError::io(path, e)))?;
        Self::from_yaml(&text, path)
    }

    /// Parses and checks config text; `path` is only used in error messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self> {
        let err = |line: Option<usize>, message: String| MergeError::Config {
            path: path.to_path_buf(),
            line,
            message,
        };
        let cfg: MergeConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let msg = e.to_string();
            // serde_yaml_ng appends " at line L column C"; the line is in our prefix already.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            err(line, msg)
        })?;
        if MethodKind::from_name(&cfg.merge_method).is_none() {
            return Err(err(
                line_of(text, "merge_method"),
                format!(
                    "unknown merge_method `{}`; valid: {}",
                    cfg.merge_method,
                    MethodKind::NAMES.join(", ")
                ),
            ));
        }
        match (&cfg.models, &cfg.slices) {
            (Some(_), Some(_)) => {
                return Err(err(
                    line_of(text, "slices"),
                    "give `models` or `slices`, not both".into(),
                ));
            }
            (None, None) => return Err(err(None, "the config needs `models` or `slices`".into())),
            (Some(m), None) if m.is_empty() => {
                return Err(err(line_of(text, "models"), "`models` is empty".into()));
            }
            (None, Some(s)) if s.is_empty() => {
                return Err(err(line_of(text, "slices"), "`slices` is empty".into()));
            }
            _ => {}
        }
        for (i, s) in cfg.slices.iter().flatten().enumerate() {
            if s.sources.is_empty() {
                return Err(err(
                    line_of(text, "sources"),
                    format!("slice {i} has no sources"),
                ));
            }
            for src in &s.sources {
                let [a, b] = src.layer_range;
                if a >= b {
                    return Err(err(
                        line_of(text, "layer_range"),
                        format!(
                            "slice {i}: layer_range [{a}, {b}] of {} is empty",
                            src.model
                        ),
                    ));
                }
            }
        }
        for (key, value) in [("dtype", &cfg.dtype), ("out_dtype", &cfg.out_dtype)] {
            if let Some(d) = value
                && mmerge_core::Dtype::from_user(d).is_none()
            {
                return Err(err(
                    line_of(text, &format!("{key}:")),
                    format!("unknown {key} `{d}`; valid: float32, bfloat16, float16, float64"),
                ));
            }
        }
        for model in cfg.model_refs() {
            if model.contains('+') {
                return Err(err(
                    line_of(text, model),
                    format!("`{model}`: LoRA references (`model+lora`) are not supported"),
                ));
            }
        }
        if let Some(src) = &cfg.tokenizer_source
            && src == "union"
        {
            return Err(err(
                line_of(text, "tokenizer_source"),
                "tokenizer_source `union` is not supported; use `base` or a model path".into(),
            ));
        }
        Ok(cfg)
    }

    /// Every model path the config names, base first, without repeats.
    pub fn model_refs(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.base_model.iter().map(String::as_str).collect();
        all.extend(self.models.iter().flatten().map(|m| m.model.as_str()));
        for s in self.slices.iter().flatten() {
            all.extend(s.base_model.as_deref());
            all.extend(s.sources.iter().map(|src| src.model.as_str()));
        }
        let mut out: Vec<&str> = Vec::with_capacity(all.len());
        for m in all {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }
}

/// Resolves a model reference of a config: a path (relative paths are taken from the current
/// directory, as mergekit does).
pub fn model_path(model: &str) -> PathBuf {
    PathBuf::from(model)
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
        assert_eq!(c.merge_method, "slerp");
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
        assert!(e.contains("needs `models` or `slices`"), "{e}");
    }
}
