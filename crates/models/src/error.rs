//! The error type of `mmerge-models`. A checkpoint that does not fit a model is reported in one
//! place ([`KeyReport`] → [`ModelError::Keys`]): every missing, unexpected and mis-shaped key at
//! once, whoever reads the checkpoint (our own [`crate::io::load`] or a Hugging Face import).

use std::path::{Path, PathBuf};

use mmerge_core::CoreError;

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// A key whose tensor has the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub key: String,
    pub expected: Vec<i64>,
    pub found: Vec<i64>,
}

/// Why a [`crate::MultiwayConfig`] is inconsistent (which field, and why).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("`{field}` must be positive, got {value}")]
    NotPositive { field: &'static str, value: i64 },
    /// For sizes where 0 means "no such input".
    #[error("`{field}` must be 0 (none) or positive, got {value}")]
    Negative { field: &'static str, value: i64 },
    #[error("the model needs images (`image_size` > 0) or text (`vocab_size` > 0)")]
    NoInput,
    #[error("`{field}` {value} is not divisible by `{by}` {divisor}")]
    NotDivisible {
        field: &'static str,
        value: i64,
        by: &'static str,
        divisor: i64,
    },
    #[error("`vl_layers` {vl_layers} must be between 0 and `num_hidden_layers` {layers}")]
    VlLayers { vl_layers: i64, layers: i64 },
    #[error("`{field}` must be in [0, 1), got {value}")]
    NotAProbability { field: &'static str, value: f64 },
    #[error("`layer_norm_eps` must be positive, got {0}")]
    LayerNormEps(f64),
}

/// Errors from building, loading and running models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A config file (ours or a Hugging Face `config.json`) that cannot be read as one.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A model config whose fields are inconsistent; `path` is the file it came from, if any.
    #[error("{}{error}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    InvalidConfig {
        path: Option<PathBuf>,
        error: ConfigError,
    },
    /// A checkpoint does not fit the model.
    #[error(
        "{path} does not fit the model:{}",
        describe(missing, unexpected, mismatched)
    )]
    Keys {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<ShapeMismatch>,
    },
    /// A Hugging Face tensor maps to a variable the model does not have (it was built for
    /// another architecture or expert layout).
    #[error("the model has no variable `{key}` (for the Hugging Face tensor `{hf_key}`)")]
    NoVariable { key: String, hf_key: String },
    /// A position-embedding table that is not [1, 1 + G², D].
    #[error("position embeddings {shape:?} are not [1, 1 + G², D]")]
    PositionTable { shape: Vec<i64> },
    /// libtorch reported an error (bad shapes, device problems).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Inputs that do not fit the model (shapes, token ids, missing modalities).
    #[error("bad input: {0}")]
    Input(String),
    /// `AdamW::step` was given a different number of gradients than it has parameters.
    #[error("AdamW::step got {got} gradients for {params} parameters")]
    GradientCount { got: usize, params: usize },
    /// A gradient that does not match its parameter (shape, dtype or device).
    #[error(
        "AdamW::step: gradient {index} is {kind:?} {shape:?} on {device:?}, parameter is \
         {param_shape:?} float on cpu"
    )]
    GradientMismatch {
        index: usize,
        kind: tch::Kind,
        shape: Vec<i64>,
        device: tch::Device,
        param_shape: Vec<i64>,
    },
    /// A parameter the fused AdamW cannot update in place.
    #[error(
        "AdamW: parameter {index} ({shape:?}, {kind:?} on {device:?}, contiguous: {contiguous}) \
         must be contiguous float32 on the CPU"
    )]
    UnsupportedParameter {
        index: usize,
        shape: Vec<i64>,
        kind: tch::Kind,
        device: tch::Device,
        contiguous: bool,
    },
}

/// Collects what does not fit while a checkpoint is matched against a model, and turns it into
/// one [`ModelError::Keys`].
#[derive(Debug, Default)]
pub struct KeyReport {
    missing: Vec<String>,
    unexpected: Vec<String>,
    mismatched: Vec<ShapeMismatch>,
}

impl KeyReport {
    /// A key the model needs that the checkpoint lacks.
    pub fn missing(&mut self, key: impl Into<String>) {
        self.missing.push(key.into());
    }

    /// A key of the checkpoint that the model does not have.
    pub fn unexpected(&mut self, key: impl Into<String>) {
        self.unexpected.push(key.into());
    }

    /// Whether `found` is the `expected` shape; records the mismatch when it is not.
    pub fn shape_fits(&mut self, key: &str, expected: &[i64], found: &[i64]) -> bool {
        let fits = expected == found;
        if !fits {
            self.mismatched.push(ShapeMismatch {
                key: key.to_string(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        fits
    }

    /// Ok when nothing was recorded, else every problem (sorted by key) for the checkpoint at
    /// `path`.
    pub fn finish(mut self, path: &Path) -> Result<()> {
        if self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty() {
            return Ok(());
        }
        self.missing.sort();
        self.unexpected.sort();
        self.mismatched.sort_by(|a, b| a.key.cmp(&b.key));
        Err(ModelError::Keys {
            path: path.to_path_buf(),
            missing: self.missing,
            unexpected: self.unexpected,
            mismatched: self.mismatched,
        })
    }
}

fn describe(missing: &[String], unexpected: &[String], mismatched: &[ShapeMismatch]) -> String {
    let mut s = String::new();
    if !missing.is_empty() {
        s.push_str(&format!(
            "\n  missing keys ({}): {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    if !unexpected.is_empty() {
        s.push_str(&format!(
            "\n  unexpected keys ({}): {}",
            unexpected.len(),
            unexpected.join(", ")
        ));
    }
    for m in mismatched {
        s.push_str(&format!(
            "\n  `{}`: expected shape {:?}, found {:?}",
            m.key, m.expected, m.found
        ));
    }
    s
}
