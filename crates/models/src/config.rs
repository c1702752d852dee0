//! The multiway transformer's config: Hugging Face-style field names, unknown fields refused,
//! checked by [`MultiwayConfig::validate`], and the presets `tiny`, `small`, `medium`, `base`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ModelError, Result};

/// Which parts of a block are modality-specific (one copy per expert) and which are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Attention, FFN and both layer norms per modality ("no sharing").
    AllSpecific,
    /// Attention and its layer norm (norm1) per modality.
    CustomAttn,
    /// FFN and its layer norm (norm2) per modality.
    CustomFfn,
    /// Only the layer norms per modality.
    CustomLn,
    /// Nothing per modality: the modality-agnostic model, the merge target.
    Shared,
}

/// A part of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Attn,
    Ffn,
    Norm1,
    Norm2,
}

impl Part {
    /// All parts, in key order.
    pub const ALL: [Part; 4] = [Part::Attn, Part::Ffn, Part::Norm1, Part::Norm2];

    /// The key segment.
    pub fn name(self) -> &'static str {
        match self {
            Part::Attn => "attn",
            Part::Ffn => "ffn",
            Part::Norm1 => "norm1",
            Part::Norm2 => "norm2",
        }
    }
}

/// An expert: which modality's copy of a part processes the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expert {
    Vision,
    Text,
    Vl,
    Shared,
}

impl Expert {
    /// The key segment.
    pub fn name(self) -> &'static str {
        match self {
            Expert::Vision => "vision",
            Expert::Text => "text",
            Expert::Vl => "vl",
            Expert::Shared => "shared",
        }
    }

    /// Parses a key segment.
    pub fn from_name(s: &str) -> Option<Expert> {
        [Expert::Vision, Expert::Text, Expert::Vl, Expert::Shared]
            .into_iter()
            .find(|e| e.name() == s)
    }
}

impl Sharing {
    /// Every variant, the modality-agnostic one first.
    pub const ALL: [Sharing; 5] = [
        Sharing::Shared,
        Sharing::AllSpecific,
        Sharing::CustomAttn,
        Sharing::CustomFfn,
        Sharing::CustomLn,
    ];

    /// The variant's name in configs and recipes.
    pub fn name(self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::AllSpecific => "all_specific",
            Sharing::CustomAttn => "custom_attn",
            Sharing::CustomFfn => "custom_ffn",
            Sharing::CustomLn => "custom_ln",
        }
    }

    /// Whether `part` is modality-specific under this sharing.
    pub fn is_specific(self, part: Part) -> bool {
        match self {
            Sharing::AllSpecific => true,
            Sharing::CustomAttn => matches!(part, Part::Attn | Part::Norm1),
            Sharing::CustomFfn => matches!(part, Part::Ffn | Part::Norm2),
            Sharing::CustomLn => matches!(part, Part::Norm1 | Part::Norm2),
            Sharing::Shared => false,
        }
    }
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_channels() -> i64 {
    3
}
fn default_type_vocab() -> i64 {
    3
}
fn default_true() -> bool {
    true
}

/// A multiway transformer's shape and behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiwayConfig {
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// FFN width as a multiple of `hidden_size` (ignored when `intermediate_size` is set).
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub intermediate_size: Option<i64>,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    pub image_size: i64,
    pub patch_size: i64,
    #[serde(default = "default_channels")]
    pub num_channels: i64,
    pub vocab_size: i64,
    /// Longest text, in tokens.
    pub max_position_embeddings: i64,
    /// Token types: 0 text, 1 image, 2 second image (NLVR2).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    /// The top layers that also hold a vision-language expert; below them, image and text
    /// tokens of a fused input do not attend to each other.
    pub vl_layers: i64,
    pub sharing: Sharing,
    /// LayerScale: per-channel residual gains initialised to this value (none when absent).
    #[serde(default)]
    pub layer_scale_init: Option<f64>,
    /// Pre-LN blocks (true, ViT/BEiT style) or post-LN (false, BERT style).
    #[serde(default = "default_true")]
    pub pre_norm: bool,
}

impl MultiwayConfig {
    /// A preset: `tiny` (tests), `small` (CPU experiments), `medium`, `base` (ViT-B/16 size).
    pub fn preset(name: &str, sharing: Sharing) -> Option<Self> {
        let (hidden, layers, heads, vl, image, patch, vocab, text) = match name {
            "tiny" => (32, 2, 2, 1, 32, 8, 512, 16),
            "small" => (64, 4, 4, 2, 32, 8, 1000, 16),
            "medium" => (128, 4, 4, 2, 32, 8, 1000, 16),
            "base" => (768, 12, 12, 2, 224, 16, 30522, 40),
            _ => return None,
        };
        Some(MultiwayConfig {
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            mlp_ratio: 4.0,
            intermediate_size: None,
            layer_norm_eps: 1e-6,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            image_size: image,
            patch_size: patch,
            num_channels: 3,
            vocab_size: vocab,
            max_position_embeddings: text,
            type_vocab_size: 3,
            vl_layers: vl,
            sharing,
            layer_scale_init: if name == "base" { Some(0.1) } else { None },
            pre_norm: true,
        })
    }

    /// Names of the presets.
    pub const PRESETS: [&'static str; 4] = ["tiny", "small", "medium", "base"];

    /// Reads a JSON config file (as written by [`MultiwayConfig::to_json`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| mmerge_core::CoreError::io(path, e))?;
        let cfg: MultiwayConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("{e}"),
        })?;
        cfg.validate().map_err(|error| ModelError::InvalidConfig {
            path: Some(path.to_path_buf()),
            error,
        })?;
        Ok(cfg)
    }

    /// The config as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the fields are consistent; the error says which field and why.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("patch_size", self.patch_size),
            ("num_channels", self.num_channels),
            ("max_position_embeddings", self.max_position_embeddings),
            ("intermediate_size", self.intermediate_size()),
        ];
        for (field, value) in positive {
            if value <= 0 {
                return Err(ConfigError::NotPositive { field, value });
            }
        }
        // 0 means "no such input" for these.
        for (field, value) in [
            ("image_size", self.image_size),
            ("vocab_size", self.vocab_size),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value < 0 {
                return Err(ConfigError::Negative { field, value });
            }
        }
        if !self.has_images() && !self.has_text() {
            return Err(ConfigError::NoInput);
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(ConfigError::NotDivisible {
                field: "hidden_size",
                value: self.hidden_size,
                by: "num_attention_heads",
                divisor: self.num_attention_heads,
            });
        }
        if self.has_images() && self.image_size % self.patch_size != 0 {
            return Err(ConfigError::NotDivisible {
                field: "image_size",
                value: self.image_size,
                by: "patch_size",
                divisor: self.patch_size,
            });
        }
        if !(0..=self.num_hidden_layers).contains(&self.vl_layers) {
            return Err(ConfigError::VlLayers {
                vl_layers: self.vl_layers,
                layers: self.num_hidden_layers,
            });
        }
        for (field, value) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(ConfigError::NotAProbability { field, value });
            }
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(ConfigError::LayerNormEps(self.layer_norm_eps));
        }
        Ok(())
    }

    /// FFN width.
    pub fn intermediate_size(&self) -> i64 {
        self.intermediate_size
            .unwrap_or((self.hidden_size as f64 * self.mlp_ratio).round() as i64)
    }

    /// Whether the model takes images.
    pub fn has_images(&self) -> bool {
        self.image_size > 0
    }

    /// Whether the model takes text.
    pub fn has_text(&self) -> bool {
        self.vocab_size > 0
    }

    /// Patches per image.
    pub fn num_patches(&self) -> i64 {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Whether layer `i` holds a vision-language expert.
    pub fn is_vl_layer(&self, i: i64) -> bool {
        i >= self.num_hidden_layers - self.vl_layers
    }

    /// The experts layer `i` serves.
    pub fn layer_experts(&self, i: i64) -> &'static [Expert] {
        if self.is_vl_layer(i) {
            &[Expert::Vision, Expert::Text, Expert::Vl]
        } else {
            &[Expert::Vision, Expert::Text]
        }
    }

    /// The copy of `part` that `expert`'s tokens use (the shared copy when the part is shared).
    pub fn storage(&self, part: Part, expert: Expert) -> Expert {
        if self.sharing.is_specific(part) {
            expert
        } else {
            Expert::Shared
        }
    }

    /// The distinct copies of `part` stored in layer `i`.
    pub fn stored_experts(&self, part: Part, i: i64) -> Vec<Expert> {
        if self.sharing.is_specific(part) {
            self.layer_experts(i).to_vec()
        } else {
            vec![Expert::Shared]
        }
    }
}

#[cfg(test)]
mod sharing_names {
    use super::Sharing;

    #[test]
    fn names_are_the_serde_names() {
        for s in Sharing::ALL {
            let json = serde_json::to_value(s).ok();
            assert_eq!(json, Some(serde_json::Value::String(s.name().into())));
        }
    }
}
