//! Real pretrained weights in Hugging Face layouts: BERT (`BertModel`, e.g. all-MiniLM-L6-v2),
//! DINOv2 (`Dinov2Model`) and ViT (`ViTModel`). Each maps onto the multiway transformer:
//! as a *plain* model (one shared expert, no VL layers, only its own modality), or into one
//! expert path of a multiway model (BERT into the text path, DINOv2/ViT into the vision path).
//! [`export`] writes the plain model back under the Hugging Face names.
//!
//! BERT is post-LN (`pre_norm: false`), with word, position and token-type embeddings and
//! their layer norm; DINOv2 and ViT are pre-LN with a final layer norm, DINOv2 with
//! LayerScale. Position embeddings of an image model are resized to the target grid with
//! bicubic interpolation (`align_corners = false`, no antialias), as `transformers` does at
//! run time (`interpolate_pos_encoding`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmerge_core::{Checkpoint, imagenet};
use serde_json::Value;
use tch::{Kind, Tensor, nn};

use crate::config::{Expert, MultiwayConfig, Part, Sharing};
use crate::error::{KeyReport, ModelError, Result};

/// The Hugging Face architectures we import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfKind {
    Bert,
    Dinov2,
    Vit,
}

impl HfKind {
    /// From `config.json`'s `model_type`.
    pub fn from_model_type(t: &str) -> Option<HfKind> {
        match t {
            "bert" => Some(HfKind::Bert),
            "dinov2" => Some(HfKind::Dinov2),
            "vit" => Some(HfKind::Vit),
            _ => None,
        }
    }

    fn model_type(self) -> &'static str {
        match self {
            HfKind::Bert => "bert",
            HfKind::Dinov2 => "dinov2",
            HfKind::Vit => "vit",
        }
    }

    /// Whether the model reads images (else text).
    pub fn is_vision(self) -> bool {
        self != HfKind::Bert
    }
}

/// A Hugging Face `config.json`, read.
#[derive(Debug, Clone)]
pub struct HfConfig {
    pub kind: HfKind,
    pub json: Value,
}

fn cfg_err(path: &Path, message: String) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        message,
    }
}

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| mmerge_core::CoreError::io(&path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| cfg_err(&path, e.to_string()))?;
        let t = json["model_type"].as_str().unwrap_or_default();
        let kind = HfKind::from_model_type(t).ok_or_else(|| {
            cfg_err(
                &path,
                format!("model_type `{t}` is not supported; supported: bert, dinov2, vit"),
            )
        })?;
        Ok(HfConfig { kind, json })
    }

    fn int(&self, key: &str) -> Result<i64> {
        self.json[key].as_i64().ok_or_else(|| {
            cfg_err(
                Path::new("config.json"),
                format!("`{key}` is missing or not an integer"),
            )
        })
    }

    fn float(&self, key: &str, default: f64) -> f64 {
        self.json[key].as_f64().unwrap_or(default)
    }

    /// The plain model's config. `image_size` overrides the image models' input size (their
    /// position embeddings are interpolated to it).
    pub fn plain_config(&self, image_size: Option<i64>) -> Result<MultiwayConfig> {
        let act = self.json["hidden_act"].as_str().unwrap_or("gelu");
        if act != "gelu" {
            return Err(cfg_err(
                Path::new("config.json"),
                format!("hidden_act `{act}` is not supported (only exact gelu)"),
            ));
        }
        let hidden = self.int("hidden_size")?;
        let mut cfg = MultiwayConfig {
            hidden_size: hidden,
            num_hidden_layers: self.int("num_hidden_layers")?,
            num_attention_heads: self.int("num_attention_heads")?,
            mlp_ratio: self.float("mlp_ratio", 4.0),
            intermediate_size: self.json["intermediate_size"].as_i64(),
            layer_norm_eps: self.float("layer_norm_eps", 1e-12),
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            image_size: 0,
            patch_size: 1,
            num_channels: 3,
            vocab_size: 0,
            max_position_embeddings: 1,
            type_vocab_size: 0,
            vl_layers: 0,
            sharing: Sharing::Shared,
            layer_scale_init: None,
            pre_norm: true,
        };
        match self.kind {
            HfKind::Bert => {
                cfg.vocab_size = self.int("vocab_size")?;
                cfg.max_position_embeddings = self.int("max_position_embeddings")?;
                cfg.type_vocab_size = self.int("type_vocab_size")?;
                cfg.pre_norm = false;
            }
            HfKind::Dinov2 | HfKind::Vit => {
                cfg.patch_size = self.int("patch_size")?;
                cfg.num_channels = self.json["num_channels"].as_i64().unwrap_or(3);
                cfg.image_size = image_size.unwrap_or(self.int("image_size")?);
                if self.kind == HfKind::Dinov2 {
                    cfg.layer_scale_init = Some(self.float("layerscale_value", 1.0));
                    if self.json["use_swiglu_ffn"].as_bool() == Some(true) {
                        return Err(cfg_err(
                            Path::new("config.json"),
                            "use_swiglu_ffn is not supported".into(),
                        ));
                    }
                }
            }
        }
        cfg.validate().map_err(|error| ModelError::InvalidConfig {
            path: Some(PathBuf::from("config.json")),
            error,
        })?;
        Ok(cfg)
    }
}

/// Pixels [3, H, W] from interleaved RGB bytes (H × W × 3): scaled to [0, 1], then normalised
/// with the ImageNet mean and standard deviation, as the Hugging Face image processors do.
pub fn pixels_from_rgb(rgb: &[u8], height: i64, width: i64) -> Tensor {
    let raw: Vec<f32> = rgb.iter().map(|v| f32::from(*v) / 255.0).collect();
    let x = Tensor::from_slice(&raw)
        .view([height, width, 3])
        .permute([2, 0, 1]);
    (x - Tensor::from_slice(&imagenet::MEAN).view([3, 1, 1]))
        / Tensor::from_slice(&imagenet::STD).view([3, 1, 1])
}

/// How a Hugging Face tensor becomes ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transform {
    Copy,
    /// [1, 1 + G², D] position table, resized to the target grid.
    Positions,
}

/// (Hugging Face key, our key, transform) for every tensor of `kind` with `layers` layers,
/// loaded into `expert`'s path of a model with `cfg`'s sharing.
fn key_map(kind: HfKind, cfg: &MultiwayConfig, expert: Expert) -> Vec<(String, String, Transform)> {
    let mut m: Vec<(String, String, Transform)> = vec![];
    let mut add = |hf: String, ours: String| m.push((hf, ours, Transform::Copy));
    let part = |i: i64, p: Part, leaf: &str| {
        format!(
            "encoder.layers.{i}.{}.{}.{leaf}",
            p.name(),
            cfg.storage(p, expert).name()
        )
    };
    match kind {
        HfKind::Bert => {
            add(
                "embeddings.word_embeddings.weight".into(),
                "embeddings.word.weight".into(),
            );
            add(
                "embeddings.position_embeddings.weight".into(),
                "embeddings.text_pos.weight".into(),
            );
            add(
                "embeddings.token_type_embeddings.weight".into(),
                "embeddings.token_type.weight".into(),
            );
            for leaf in ["weight", "bias"] {
                add(
                    format!("embeddings.LayerNorm.{leaf}"),
                    format!("embeddings.text_norm.{leaf}"),
                );
            }
        }
        HfKind::Dinov2 | HfKind::Vit => {
            add("embeddings.cls_token".into(), "embeddings.cls_token".into());
            for leaf in ["weight", "bias"] {
                add(
                    format!("embeddings.patch_embeddings.projection.{leaf}"),
                    format!("embeddings.patch.{leaf}"),
                );
                add(format!("layernorm.{leaf}"), format!("encoder.norm.{leaf}"));
            }
        }
    }
    for i in 0..cfg.num_hidden_layers {
        let l = format!("encoder.layer.{i}");
        let (q, k, v, o, n1, n2, f1, f2) = match kind {
            HfKind::Bert => (
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "output.LayerNorm",
                "intermediate.dense",
                "output.dense",
            ),
            HfKind::Dinov2 => (
                "attention.attention.query",
                "attention.attention.key",
                "attention.attention.value",
                "attention.output.dense",
                "norm1",
                "norm2",
                "mlp.fc1",
                "mlp.fc2",
            ),
            HfKind::Vit => (
                "attention.attention.query",
                "attention.attention.key",
                "attention.attention.value",
                "attention.output.dense",
                "layernorm_before",
                "layernorm_after",
                "intermediate.dense",
                "output.dense",
            ),
        };
        for leaf in ["weight", "bias"] {
            add(
                format!("{l}.{q}.{leaf}"),
                part(i, Part::Attn, &format!("q.{leaf}")),
            );
            add(
                format!("{l}.{k}.{leaf}"),
                part(i, Part::Attn, &format!("k.{leaf}")),
            );
            add(
                format!("{l}.{v}.{leaf}"),
                part(i, Part::Attn, &format!("v.{leaf}")),
            );
            add(
                format!("{l}.{o}.{leaf}"),
                part(i, Part::Attn, &format!("out.{leaf}")),
            );
            add(format!("{l}.{n1}.{leaf}"), part(i, Part::Norm1, leaf));
            add(format!("{l}.{n2}.{leaf}"), part(i, Part::Norm2, leaf));
            add(
                format!("{l}.{f1}.{leaf}"),
                part(i, Part::Ffn, &format!("fc1.{leaf}")),
            );
            add(
                format!("{l}.{f2}.{leaf}"),
                part(i, Part::Ffn, &format!("fc2.{leaf}")),
            );
        }
        if kind == HfKind::Dinov2 {
            add(
                format!("{l}.layer_scale1.lambda1"),
                format!("encoder.layers.{i}.gamma1"),
            );
            add(
                format!("{l}.layer_scale2.lambda1"),
                format!("encoder.layers.{i}.gamma2"),
            );
        }
    }
    if kind.is_vision() {
        m.push((
            "embeddings.position_embeddings".into(),
            "embeddings.image_pos".into(),
            Transform::Positions,
        ));
    }
    m
}

/// Finds `key` in a checkpoint, allowing the `bert.` / `vit.` / `dinov2.` prefixes of
/// task-head checkpoints.
fn find(ck: &Checkpoint, key: &str) -> Option<String> {
    [
        String::new(),
        "bert.".into(),
        "vit.".into(),
        "dinov2.".into(),
    ]
    .into_iter()
    .map(|p| format!("{p}{key}"))
    .find(|k| ck.meta(k).is_some())
}

/// Resizes a [1, 1 + G², D] position table to `grid`² patches (bicubic, as transformers).
pub fn resize_positions(pos: &Tensor, grid: i64) -> Result<Tensor> {
    let s = pos.size();
    let n = s[1] - 1;
    let g = (n as f64).sqrt().round() as i64;
    if s.len() != 3 || s[0] != 1 || g * g != n {
        return Err(ModelError::PositionTable { shape: s });
    }
    if g == grid {
        return Ok(pos.shallow_clone());
    }
    let d = s[2];
    let cls = pos.narrow(1, 0, 1);
    let grid_pos = pos
        .narrow(1, 1, n)
        .reshape([1, g, g, d])
        .permute([0, 3, 1, 2]);
    let resized = grid_pos
        .to_kind(Kind::Float)
        .upsample_bicubic2d([grid, grid], false, None, None)
        .permute([0, 2, 3, 1])
        .reshape([1, grid * grid, d]);
    Ok(Tensor::cat(&[cls, resized], 1))
}

/// The model's variable `key`, which the Hugging Face tensor `hf_key` maps to.
fn variable<'a>(
    vars: &'a std::collections::HashMap<String, Tensor>,
    key: &str,
    hf_key: &str,
) -> Result<&'a Tensor> {
    vars.get(key).ok_or_else(|| ModelError::NoVariable {
        key: key.to_string(),
        hf_key: hf_key.to_string(),
    })
}

/// Copies the Hugging Face weights in `dir` into `expert`'s path of the model in `vs`
/// (built with `cfg`). Every tensor of the architecture must be present and fit; the error
/// lists what is missing or mis-shaped. Variables outside that path keep their values.
pub fn import(
    vs: &nn::VarStore,
    cfg: &MultiwayConfig,
    dir: &Path,
    kind: HfKind,
    expert: Expert,
) -> Result<()> {
    let ck = Checkpoint::open(dir)?;
    let vars = vs.variables();
    let map = key_map(kind, cfg, expert);
    let mut report = KeyReport::default();
    let mut plan = vec![];
    for (hf, ours, tr) in &map {
        let var = variable(&vars, ours, hf)?;
        let Some(key) = find(&ck, hf) else {
            report.missing(hf);
            continue;
        };
        let mut t = Tensor::from_slice(&ck.read_f32(&key)?).view(
            ck.require(&key)?
                .shape
                .iter()
                .map(|&d| d as i64)
                .collect::<Vec<_>>()
                .as_slice(),
        );
        if *tr == Transform::Positions {
            t = resize_positions(&t, cfg.image_size / cfg.patch_size)?;
        }
        if report.shape_fits(&key, &var.size(), &t.size()) {
            plan.push((var.shallow_clone(), t));
        }
    }
    report.finish(ck.path())?;
    let _guard = tch::no_grad_guard();
    for (mut var, t) in plan {
        var.f_copy_(&t.to_kind(var.kind()).to_device(var.device()))?;
    }
    // An imported image model has no token types: make the image's embedding neutral.
    if kind.is_vision()
        && let Some(mut tt) = vars
            .get("embeddings.token_type.weight")
            .map(Tensor::shallow_clone)
    {
        let _ = tt.f_zero_()?;
    }
    Ok(())
}

/// Writes the plain model in `vs` (built with `cfg` from `hf`) under Hugging Face names into
/// the folder `out`, with `hf`'s `config.json`, so `transformers` can load it. Atomic.
pub fn export(
    vs: &nn::VarStore,
    cfg: &MultiwayConfig,
    hf: &HfConfig,
    out: &Path,
    force: bool,
) -> Result<()> {
    let vars = vs.variables();
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (hf_key, ours, _) in key_map(hf.kind, cfg, Expert::Shared) {
        let t = variable(&vars, &ours, &hf_key)?.detach();
        tensors.insert(hf_key, t);
    }
    if hf.kind == HfKind::Dinov2 {
        tensors.insert(
            "embeddings.mask_token".into(),
            Tensor::zeros([1, cfg.hidden_size], (Kind::Float, tch::Device::Cpu)),
        );
    }
    let mut json = hf.json.clone();
    if hf.kind.is_vision() {
        // The exported positions are on the model's grid.
        json["image_size"] = Value::from(cfg.image_size);
    }
    json["model_type"] = Value::from(hf.kind.model_type());
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    crate::io::write_folder(out, &tensors, &[("config.json", text.as_bytes())], force)
}
