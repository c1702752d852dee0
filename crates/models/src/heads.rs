//! Task heads on top of the multiway encoder. Each lives under `heads.<name>.*` and is created
//! only by the tasks that use it.
//!
//! | head | input | output |
//! |---|---|---|
//! | [`MlmHead`] masked language modelling | text tokens [B,T,D] | vocabulary logits [B,T,V] |
//! | [`MimHead`] masked image modelling | image tokens [B,1+N,D] | per-patch pixels [B,N,C·P²] |
//! | [`ItcHead`] image-text contrastive | text and image class tokens [B,D] | similarity logits [B,B] |
//! | [`Classifier`] ITM, VQA, NLVR2, image or text classification | pooled [B,D] (NLVR2: [B,2D]) | logits [B,K] |
//! | [`SegHead`] semantic segmentation | image tokens [B,1+N,D] | per-pixel logits [B,K,H,W] |

use tch::{Kind, Reduction, Tensor, nn};

use crate::config::MultiwayConfig;
use crate::multiway::layer_norm as ln;

/// Masked language modelling: dense, GELU, layer norm, decoder to the vocabulary (BERT style).
#[derive(Debug)]
pub struct MlmHead {
    dense: nn::Linear,
    norm: nn::LayerNorm,
    decoder: nn::Linear,
}

impl MlmHead {
    pub fn new(p: &nn::Path<'_>, cfg: &MultiwayConfig) -> Self {
        let d = cfg.hidden_size;
        MlmHead {
            dense: nn::linear(p / "dense", d, d, Default::default()),
            norm: ln(p / "norm", d, cfg.layer_norm_eps),
            decoder: nn::linear(p / "decoder", d, cfg.vocab_size, Default::default()),
        }
    }

    /// Vocabulary logits [B, T, V].
    pub fn forward(&self, h: &Tensor) -> Tensor {
        h.apply(&self.dense)
            .gelu("none")
            .apply(&self.norm)
            .apply(&self.decoder)
    }

    /// Cross-entropy over the positions where `labels` ≥ 0 (−100 elsewhere, as in BERT).
    pub fn loss(&self, h: &Tensor, labels: &Tensor) -> Tensor {
        let logits = self.forward(h);
        let v = logits.size()[2];
        logits.view([-1, v]).cross_entropy_loss::<Tensor>(
            &labels.view([-1]),
            None,
            Reduction::Mean,
            -100,
            0.0,
        )
    }
}

/// Cuts images [B, C, H, W] into patches [B, N, C·P·P] (row-major patches, channel-major
/// inside a patch, matching the patch embedding's convolution).
pub fn patchify(pixels: &Tensor, patch: i64) -> Tensor {
    let s = pixels.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    pixels
        .view([b, c, h / patch, patch, w / patch, patch])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, (h / patch) * (w / patch), c * patch * patch])
}

/// Masked image modelling: reconstructs each masked patch's pixels, normalised per patch
/// (mean 0, variance 1), from its token.
#[derive(Debug)]
pub struct MimHead {
    proj: nn::Linear,
    patch: i64,
}

impl MimHead {
    pub fn new(p: &nn::Path<'_>, cfg: &MultiwayConfig) -> Self {
        let out = cfg.num_channels * cfg.patch_size * cfg.patch_size;
        MimHead {
            proj: nn::linear(p / "proj", cfg.hidden_size, out, Default::default()),
            patch: cfg.patch_size,
        }
    }

    /// Predicted pixels [B, N, C·P²] (the class token is dropped).
    pub fn forward(&self, h: &Tensor) -> Tensor {
        let n = h.size()[1] - 1;
        h.narrow(1, 1, n).apply(&self.proj)
    }

    /// Mean squared error on the patches where `mask` [B, N] is true.
    pub fn loss(&self, h: &Tensor, pixels: &Tensor, mask: &Tensor) -> Tensor {
        let target = patchify(pixels, self.patch);
        let mean = target.mean_dim(-1, true, Kind::Float);
        let var = target.var_dim(-1, false, true);
        let target = (target - mean) / (var + 1e-6).sqrt();
        self.loss_against(h, &target, mask)
    }

    /// Mean squared error against given targets [B, N, C·P²] on the patches where `mask`
    /// [B, N] is true.
    pub fn loss_against(&self, h: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
        let per_patch = (self.forward(h) - target)
            .square()
            .mean_dim(-1, false, Kind::Float);
        let m = mask.to_kind(Kind::Float);
        (per_patch * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)
    }
}

/// Image-text contrastive: two projections to a shared space and a learnable temperature.
#[derive(Debug)]
pub struct ItcHead {
    text_proj: nn::Linear,
    image_proj: nn::Linear,
    logit_scale: Tensor,
}

impl ItcHead {
    pub fn new(p: &nn::Path<'_>, cfg: &MultiwayConfig, dim: i64) -> Self {
        let d = cfg.hidden_size;
        ItcHead {
            text_proj: nn::linear(p / "text_proj", d, dim, Default::default()),
            image_proj: nn::linear(p / "image_proj", d, dim, Default::default()),
            // CLIP's initial temperature 0.07.
            logit_scale: p.var("logit_scale", &[], nn::Init::Const((1.0f64 / 0.07).ln())),
        }
    }

    /// Text embeddings [B, dim]: the projected class tokens, L2-normalised.
    pub fn embed_text(&self, text_cls: &Tensor) -> Tensor {
        l2_normalize(&text_cls.apply(&self.text_proj))
    }

    /// Image embeddings [B, dim]: the projected class tokens, L2-normalised.
    pub fn embed_image(&self, image_cls: &Tensor) -> Tensor {
        l2_normalize(&image_cls.apply(&self.image_proj))
    }

    /// Text-to-image similarity logits [B_text, B_image]:
    /// exp(logit_scale) · `embed_text` · `embed_image`ᵀ.
    pub fn logits(&self, text_cls: &Tensor, image_cls: &Tensor) -> Tensor {
        let scale = self.logit_scale.clamp_max(100f64.ln()).exp();
        self.embed_text(text_cls)
            .matmul(&self.embed_image(image_cls).transpose(0, 1))
            * scale
    }

    /// The symmetric cross-entropy of matching pairs (row i matches column i).
    pub fn loss(&self, text_cls: &Tensor, image_cls: &Tensor) -> Tensor {
        let logits = self.logits(text_cls, image_cls);
        let target = Tensor::arange(logits.size()[0], (Kind::Int64, logits.device()));
        (logits.cross_entropy_for_logits(&target)
            + logits.transpose(0, 1).cross_entropy_for_logits(&target))
            / 2.0
    }
}

/// Rows divided by their L2 norm (clamped at 1e-12, so a zero row stays zero).
fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// A classifier: dense, GELU, layer norm, output (VQA, NLVR2, ITM, image or text classes).
#[derive(Debug)]
pub struct Classifier {
    dense: nn::Linear,
    norm: nn::LayerNorm,
    out: nn::Linear,
}

impl Classifier {
    /// `input` features in (D, or 2D for NLVR2 pairs), `classes` out.
    pub fn new(p: &nn::Path<'_>, input: i64, classes: i64, eps: f64) -> Self {
        Classifier {
            dense: nn::linear(p / "dense", input, 2 * input, Default::default()),
            norm: ln(p / "norm", 2 * input, eps),
            out: nn::linear(p / "out", 2 * input, classes, Default::default()),
        }
    }

    /// Logits [B, K].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.dense)
            .gelu("none")
            .apply(&self.norm)
            .apply(&self.out)
    }
}

/// Semantic segmentation: per-patch class logits, bilinearly upsampled to the image.
#[derive(Debug)]
pub struct SegHead {
    proj: nn::Linear,
    grid: i64,
    image: i64,
}

impl SegHead {
    pub fn new(p: &nn::Path<'_>, cfg: &MultiwayConfig, classes: i64) -> Self {
        SegHead {
            proj: nn::linear(p / "proj", cfg.hidden_size, classes, Default::default()),
            grid: cfg.image_size / cfg.patch_size,
            image: cfg.image_size,
        }
    }

    /// Per-pixel logits [B, K, H, W].
    pub fn forward(&self, h: &Tensor) -> Tensor {
        let n = h.size()[1] - 1;
        let b = h.size()[0];
        let logits = h.narrow(1, 1, n).apply(&self.proj); // [B, N, K]
        let k = logits.size()[2];
        logits
            .transpose(1, 2)
            .reshape([b, k, self.grid, self.grid])
            .upsample_bilinear2d([self.image, self.image], false, None, None)
    }

    /// Mean per-pixel cross-entropy against class indices [B, H, W].
    pub fn loss(&self, h: &Tensor, labels: &Tensor) -> Tensor {
        self.forward(h)
            .cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)
    }
}
