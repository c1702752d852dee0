//! The multiway transformer (VLMo-style, as in arXiv 2304.14933): one stack of blocks whose
//! attention, FFN and layer norms may hold one copy per modality expert (vision, text, and in
//! the top `vl_layers` layers vision-language), chosen by [`Sharing`].
//!
//! Paths through the stack:
//! - image only: patch embedding + class token, vision experts in every layer;
//! - text only: word + position + token-type embeddings, text experts in every layer;
//! - image + text: below the VL layers the text tokens go through the text experts and the
//!   image tokens through the vision experts *separately* (no cross-modal attention, as in the
//!   paper's code); the VL layers run the concatenation `[text; image]` through the VL expert;
//! - image pair + text (NLVR2): each image fused with the text (token types 1 and 2).
//!
//! Keys: `embeddings.*`, `encoder.layers.{i}.{attn|ffn|norm1|norm2}.{vision|text|vl|shared}.*`,
//! `encoder.layers.{i}.gamma{1,2}` (LayerScale, shared), `encoder.norm.*` (pre-LN only).

use std::collections::BTreeMap;

use tch::nn;
use tch::{Kind, Tensor};

use crate::config::{Expert, MultiwayConfig, Part, Sharing};
use crate::error::{ModelError, Result};
use crate::probe::{Probe, UnitKind, real_rows};

/// A layer norm over the last dimension `d`.
pub(crate) fn layer_norm(p: nn::Path<'_>, d: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![d],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

/// Multi-head self-attention with separate query, key, value and output projections.
#[derive(Debug)]
pub struct Attention {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    out: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl Attention {
    fn new(p: nn::Path<'_>, d: i64, heads: i64, dropout: f64) -> Self {
        let lin = |n: &str| nn::linear(&p / n, d, d, Default::default());
        Attention {
            q: lin("q"),
            k: lin("k"),
            v: lin("v"),
            out: lin("out"),
            heads,
            dropout,
        }
    }

    /// `x` [B, T, D]; `mask` bool [B, 1, 1, T], true where a key may be attended to.
    /// With `keep`, only the first `keep` tokens are queries (all tokens are keys and values):
    /// the first `keep` rows of the full output.
    fn forward_first(
        &self,
        x: &Tensor,
        keep: Option<i64>,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        self.mix(x, keep, mask, train).apply(&self.out)
    }

    /// The heads' attention-weighted values, concatenated [B, keep or T, D]: the output
    /// projection's input.
    fn mix(&self, x: &Tensor, keep: Option<i64>, mask: Option<&Tensor>, train: bool) -> Tensor {
        let (b, t, d) = (x.size()[0], x.size()[1], x.size()[2]);
        // One [D, 3D] projection instead of three [D, D] ones: larger matrix products run
        // faster on CPU. The parameters stay separate (q, k, v keys, as in Hugging Face).
        let w = Tensor::cat(&[&self.q.ws, &self.k.ws, &self.v.ws], 0);
        let bias = match (&self.q.bs, &self.k.bs, &self.v.bs) {
            (Some(a), Some(b2), Some(c)) => Some(Tensor::cat(&[a, b2, c], 0)),
            _ => None,
        };
        let qkv = x
            .linear(&w, bias.as_ref())
            .view([b, t, 3, self.heads, d / self.heads]);
        let qkv = qkv.permute([2, 0, 3, 1, 4]);
        let (mut q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let n = keep.unwrap_or(t);
        if n != t {
            q = q.narrow(2, 0, n);
        }
        let p = if train { self.dropout } else { 0.0 };
        let y =
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, p, false, None::<f64>, false);
        y.transpose(1, 2).contiguous().view([b, n, d])
    }
}

/// The feed-forward network: fc1, exact GELU, fc2.
#[derive(Debug)]
pub struct Ffn {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Ffn {
    fn new(p: nn::Path<'_>, d: i64, f: i64) -> Self {
        Ffn {
            fc1: nn::linear(&p / "fc1", d, f, Default::default()),
            fc2: nn::linear(&p / "fc2", f, d, Default::default()),
        }
    }

    /// No dropout inside: as in BERT and ViT, the block drops the FFN's output.
    fn forward(&self, x: &Tensor) -> Tensor {
        self.hidden(x).apply(&self.fc2)
    }

    /// GELU(fc1 x): fc2's input.
    fn hidden(&self, x: &Tensor) -> Tensor {
        x.apply(&self.fc1).gelu("none")
    }
}

/// One block, with a copy of each part per stored expert.
#[derive(Debug)]
pub struct Block {
    attn: BTreeMap<Expert, Attention>,
    ffn: BTreeMap<Expert, Ffn>,
    norm1: BTreeMap<Expert, nn::LayerNorm>,
    norm2: BTreeMap<Expert, nn::LayerNorm>,
    gamma1: Option<Tensor>,
    gamma2: Option<Tensor>,
    /// `encoder.layers.{i}`: the prefix of this block's keys, for a [`Probe`]'s reports.
    prefix: String,
}

impl Block {
    fn new(p: nn::Path<'_>, cfg: &MultiwayConfig, i: i64) -> Self {
        let d = cfg.hidden_size;
        let ex = |part: Part| cfg.stored_experts(part, i);
        let path = |part: Part, e: Expert| &p / part.name() / e.name();
        let gamma = |n: &str| {
            cfg.layer_scale_init
                .map(|g| p.var(n, &[d], nn::Init::Const(g)))
        };
        Block {
            attn: ex(Part::Attn)
                .into_iter()
                .map(|e| {
                    (
                        e,
                        Attention::new(
                            path(Part::Attn, e),
                            d,
                            cfg.num_attention_heads,
                            cfg.attention_probs_dropout_prob,
                        ),
                    )
                })
                .collect(),
            ffn: ex(Part::Ffn)
                .into_iter()
                .map(|e| (e, Ffn::new(path(Part::Ffn, e), d, cfg.intermediate_size())))
                .collect(),
            norm1: ex(Part::Norm1)
                .into_iter()
                .map(|e| (e, layer_norm(path(Part::Norm1, e), d, cfg.layer_norm_eps)))
                .collect(),
            norm2: ex(Part::Norm2)
                .into_iter()
                .map(|e| (e, layer_norm(path(Part::Norm2, e), d, cfg.layer_norm_eps)))
                .collect(),
            gamma1: gamma("gamma1"),
            gamma2: gamma("gamma2"),
            prefix: format!("encoder.layers.{i}"),
        }
    }

    fn forward(
        &self,
        cfg: &MultiwayConfig,
        x: &Tensor,
        mask: Option<&Tensor>,
        e: Expert,
        train: bool,
        probe: Option<&mut (dyn Probe + 'static)>,
    ) -> Tensor {
        match probe {
            None => self.forward_first(cfg, x, None, mask, e, train),
            Some(p) => self.forward_probed(cfg, x, mask, e, p),
        }
    }

    /// As `forward` in evaluation (no dropout, every token a query), reporting the linear
    /// layers' inputs and every stored expert's unit features on these tokens to `probe`.
    fn forward_probed(
        &self,
        cfg: &MultiwayConfig,
        x: &Tensor,
        mask: Option<&Tensor>,
        e: Expert,
        probe: &mut dyn Probe,
    ) -> Tensor {
        let pick = |part: Part| cfg.storage(part, e);
        let (ea, ef) = (pick(Part::Attn), pick(Part::Ffn));
        let (attn, ffn) = (&self.attn[&ea], &self.ffn[&ef]);
        let n1 = &self.norm1[&pick(Part::Norm1)];
        let n2 = &self.norm2[&pick(Part::Norm2)];
        let rows = |t: &Tensor| real_rows(t, mask);
        let key = |part: Part, ex: Expert, linear: &str| {
            format!(
                "{}.{}.{}.{linear}.weight",
                self.prefix,
                part.name(),
                ex.name()
            )
        };
        let a_in = if cfg.pre_norm {
            x.apply(n1)
        } else {
            x.shallow_clone()
        };
        let mixed = attn.mix(&a_in, None, mask, false);
        let a_rows = rows(&a_in);
        for linear in ["q", "k", "v"] {
            probe.linear_input(&key(Part::Attn, ea, linear), &a_rows);
        }
        probe.linear_input(&key(Part::Attn, ea, "out"), &rows(&mixed));
        {
            let part = format!("{}.{}", self.prefix, Part::Attn.name());
            let all = |f: &dyn Fn(&Attention) -> Tensor| -> Vec<(Expert, Tensor)> {
                self.attn.iter().map(|(ex, a)| (*ex, rows(&f(a)))).collect()
            };
            probe.unit_features(&part, UnitKind::Qk, &all(&|a| a_in.apply(&a.k)));
            probe.unit_features(
                &part,
                UnitKind::Vo,
                &all(&|a| a.mix(&a_in, None, mask, false)),
            );
        }
        let scale = |y: Tensor, g: &Option<Tensor>| match g {
            Some(g) => y * g,
            None => y,
        };
        let attn_out = scale(mixed.apply(&attn.out), &self.gamma1);
        let h = if cfg.pre_norm {
            x + attn_out
        } else {
            (x + attn_out).apply(n1)
        };
        let f_in = if cfg.pre_norm {
            h.apply(n2)
        } else {
            h.shallow_clone()
        };
        let hidden = ffn.hidden(&f_in);
        let f_rows = rows(&f_in);
        probe.linear_input(&key(Part::Ffn, ef, "fc1"), &f_rows);
        probe.linear_input(&key(Part::Ffn, ef, "fc2"), &rows(&hidden));
        {
            let part = format!("{}.{}", self.prefix, Part::Ffn.name());
            let all: Vec<(Expert, Tensor)> = self
                .ffn
                .iter()
                .map(|(ex, f)| (*ex, f.hidden(&f_rows)))
                .collect();
            probe.unit_features(&part, UnitKind::Mlp, &all);
        }
        let f = scale(hidden.apply(&ffn.fc2), &self.gamma2);
        if cfg.pre_norm {
            &h + f
        } else {
            (&h + f).apply(n2)
        }
    }

    /// As `forward`, computing only the first `keep` tokens' outputs (every token still
    /// attended to): the first `keep` rows of `forward`'s output, without dropout.
    fn forward_first(
        &self,
        cfg: &MultiwayConfig,
        x: &Tensor,
        keep: Option<i64>,
        mask: Option<&Tensor>,
        e: Expert,
        train: bool,
    ) -> Tensor {
        let first = |t: &Tensor| match keep {
            Some(n) => t.narrow(1, 0, n),
            None => t.shallow_clone(),
        };
        let pick = |part: Part| cfg.storage(part, e);
        // The experts exist by construction (`stored_experts` lists every `storage` result).
        let attn = &self.attn[&pick(Part::Attn)];
        let ffn = &self.ffn[&pick(Part::Ffn)];
        let n1 = &self.norm1[&pick(Part::Norm1)];
        let n2 = &self.norm2[&pick(Part::Norm2)];
        let drop = cfg.hidden_dropout_prob;
        let scale = |y: Tensor, g: &Option<Tensor>| match g {
            Some(g) => y * g,
            None => y,
        };
        if cfg.pre_norm {
            let h = first(x)
                + scale(
                    attn.forward_first(&x.apply(n1), keep, mask, train)
                        .dropout(drop, train),
                    &self.gamma1,
                );
            let f = ffn.forward(&h.apply(n2)).dropout(drop, train);
            &h + scale(f, &self.gamma2)
        } else {
            let h = (first(x)
                + scale(
                    attn.forward_first(x, keep, mask, train)
                        .dropout(drop, train),
                    &self.gamma1,
                ))
            .apply(n1);
            let f = ffn.forward(&h).dropout(drop, train);
            (&h + scale(f, &self.gamma2)).apply(n2)
        }
    }
}

/// Patch, class-token and position embeddings of images.
#[derive(Debug)]
struct ImageEmbeddings {
    patch: nn::Conv2D,
    cls_token: Tensor,
    image_pos: Tensor,
}

/// Word and position embeddings of text, and their layer norm.
#[derive(Debug)]
struct TextEmbeddings {
    word: nn::Embedding,
    text_pos: nn::Embedding,
    text_norm: nn::LayerNorm,
}

/// The embeddings. A model without images (`image_size: 0`) or without text (`vocab_size: 0`)
/// has no variables for that modality; `type_vocab_size: 0` adds no token-type embedding.
#[derive(Debug)]
struct Embeddings {
    image: Option<ImageEmbeddings>,
    text: Option<TextEmbeddings>,
    token_type: Option<nn::Embedding>,
}

impl Embeddings {
    fn new(p: nn::Path<'_>, cfg: &MultiwayConfig) -> Self {
        let d = cfg.hidden_size;
        let conv = nn::ConvConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Embeddings {
            image: cfg.has_images().then(|| ImageEmbeddings {
                patch: nn::conv2d(&p / "patch", cfg.num_channels, d, cfg.patch_size, conv),
                cls_token: p.var("cls_token", &[1, 1, d], init),
                image_pos: p.var("image_pos", &[1, cfg.num_patches() + 1, d], init),
            }),
            text: cfg.has_text().then(|| TextEmbeddings {
                word: nn::embedding(&p / "word", cfg.vocab_size, d, Default::default()),
                text_pos: nn::embedding(
                    &p / "text_pos",
                    cfg.max_position_embeddings,
                    d,
                    Default::default(),
                ),
                text_norm: layer_norm(&p / "text_norm", d, cfg.layer_norm_eps),
            }),
            token_type: (cfg.type_vocab_size > 0).then(|| {
                nn::embedding(
                    &p / "token_type",
                    cfg.type_vocab_size,
                    d,
                    Default::default(),
                )
            }),
        }
    }
}

/// The multiway transformer (see the module docs).
#[derive(Debug)]
pub struct MultiwayTransformer {
    cfg: MultiwayConfig,
    embeddings: Embeddings,
    layers: Vec<Block>,
    norm: Option<nn::LayerNorm>,
    probe: ProbeSlot,
}

/// Where a statistics collector's [`Probe`] is attached (see [`MultiwayTransformer::set_probe`]).
#[derive(Default)]
struct ProbeSlot(std::sync::Mutex<Option<Box<dyn Probe>>>);

impl std::fmt::Debug for ProbeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let attached = self.0.lock().map(|p| p.is_some()).unwrap_or(false);
        write!(
            f,
            "ProbeSlot({})",
            if attached { "attached" } else { "none" }
        )
    }
}

/// Text input: token ids [B, T] and the attention mask [B, T] (1 for real tokens, 0 padding).
#[derive(Debug)]
pub struct TextBatch<'a> {
    pub ids: &'a Tensor,
    pub mask: &'a Tensor,
}

impl MultiwayTransformer {
    /// Creates the variables under `p` (names as in the module docs).
    pub fn new(p: &nn::Path<'_>, cfg: &MultiwayConfig) -> Result<Self> {
        cfg.validate()
            .map_err(|error| ModelError::InvalidConfig { path: None, error })?;
        Ok(MultiwayTransformer {
            cfg: cfg.clone(),
            embeddings: Embeddings::new(p / "embeddings", cfg),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Block::new(p / "encoder" / "layers" / i, cfg, i))
                .collect(),
            norm: cfg
                .pre_norm
                .then(|| layer_norm(p / "encoder" / "norm", cfg.hidden_size, cfg.layer_norm_eps)),
            probe: ProbeSlot::default(),
        })
    }

    /// Attaches a statistics probe (or detaches it with `None`), returning the one attached
    /// before. While one is attached, every pass of [`Self::encode_image`],
    /// [`Self::encode_text`] and [`Self::encode_image_text`] reports to it and runs as in
    /// evaluation (dropout off); [`Self::fuse_first`] must not be used then.
    pub fn set_probe(&self, probe: Option<Box<dyn Probe>>) -> Option<Box<dyn Probe>> {
        let mut slot = self.probe.0.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, probe)
    }

    /// The config.
    pub fn config(&self) -> &MultiwayConfig {
        &self.cfg
    }

    fn check_pixels(&self, pixels: &Tensor) -> Result<()> {
        let c = &self.cfg;
        if !c.has_images() {
            return Err(ModelError::Input(
                "this model has no image input (image_size 0)".into(),
            ));
        }
        let want = [c.num_channels, c.image_size, c.image_size];
        let s = pixels.size();
        if s.len() != 4 || s[1..] != want {
            return Err(ModelError::Input(format!(
                "pixels must be [B, {}, {}, {}], got {s:?}",
                want[0], want[1], want[2]
            )));
        }
        Ok(())
    }

    fn check_text(&self, t: &TextBatch<'_>) -> Result<()> {
        if !self.cfg.has_text() {
            return Err(ModelError::Input(
                "this model has no text input (vocab_size 0)".into(),
            ));
        }
        let s = t.ids.size();
        if s.len() != 2 || t.mask.size() != s {
            return Err(ModelError::Input(format!(
                "token ids and mask must both be [B, T], got {s:?} and {:?}",
                t.mask.size()
            )));
        }
        if s[1] > self.cfg.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "text of {} tokens is longer than max_position_embeddings {}",
                s[1], self.cfg.max_position_embeddings
            )));
        }
        if s[1] > 0 {
            let (lo, hi) = (t.ids.min().int64_value(&[]), t.ids.max().int64_value(&[]));
            if lo < 0 || hi >= self.cfg.vocab_size {
                return Err(ModelError::Input(format!(
                    "token ids must be in [0, {}), got [{lo}, {hi}]",
                    self.cfg.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Image tokens [B, 1 + N, D] before the encoder (token type `type_id`).
    fn embed_image(&self, pixels: &Tensor, type_id: i64) -> Result<Tensor> {
        let Some(e) = &self.embeddings.image else {
            return Err(ModelError::Input("this model has no image input".into()));
        };
        let b = pixels.size()[0];
        let x = pixels.apply(&e.patch).flatten(2, 3).transpose(1, 2);
        let cls = e.cls_token.expand([b, 1, self.cfg.hidden_size], false);
        let x = Tensor::cat(&[cls, x], 1) + &e.image_pos;
        Ok(match &self.embeddings.token_type {
            Some(tt) => x + Tensor::from(type_id).to_device(pixels.device()).apply(tt),
            None => x,
        })
    }

    /// Text tokens [B, T, D] before the encoder.
    fn embed_text(&self, ids: &Tensor, train: bool) -> Result<Tensor> {
        let Some(e) = &self.embeddings.text else {
            return Err(ModelError::Input("this model has no text input".into()));
        };
        let t = ids.size()[1];
        let pos = Tensor::arange(t, (Kind::Int64, ids.device())).apply(&e.text_pos);
        let mut x = ids.apply(&e.word) + pos;
        if let Some(tt) = &self.embeddings.token_type {
            x += ids.zeros_like().apply(tt);
        }
        Ok(x.apply(&e.text_norm)
            .dropout(self.cfg.hidden_dropout_prob, train))
    }

    fn run(
        &self,
        mut x: Tensor,
        mask: Option<&Tensor>,
        layers: std::ops::Range<usize>,
        e: Expert,
        train: bool,
    ) -> Tensor {
        let mut probe = self.probe.0.lock().unwrap_or_else(|e| e.into_inner());
        for l in &self.layers[layers] {
            x = l.forward(&self.cfg, &x, mask, e, train, probe.as_deref_mut());
        }
        x
    }

    fn finish(&self, x: Tensor) -> Tensor {
        match &self.norm {
            Some(n) => x.apply(n),
            None => x,
        }
    }

    /// The attention mask [B, 1, 1, T] of a [B, T] padding mask, or none when nothing is
    /// padded (attention then takes libtorch's fastest kernel, as transformers arranges too).
    fn key_mask(mask: &Tensor) -> Option<Tensor> {
        let keep = mask.ne(0);
        if keep.all().int64_value(&[]) == 1 {
            return None;
        }
        let s = mask.size();
        Some(keep.view([s[0], 1, 1, s[1]]))
    }

    /// Image only: [B, 1 + N, D] (the class token first), vision experts in every layer.
    pub fn encode_image(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let lower = self.image_lower(pixels, 1, train)?;
        Ok(self.image_upper(lower, train))
    }

    /// Text only: [B, T, D], text experts in every layer; padded keys are masked out.
    pub fn encode_text(&self, text: &TextBatch<'_>, train: bool) -> Result<Tensor> {
        let lower = self.text_lower(text, train)?;
        Ok(self.text_upper(lower, text.mask, train))
    }

    /// The layers below the VL split of the image-only pass, which the fused pass shares:
    /// image tokens (token type `type_id`) through the vision experts of layers
    /// `0..L − vl_layers`, [B, 1 + N, D]. [`Self::encode_image`] is
    /// `image_upper(image_lower(pixels, 1))` and [`Self::encode_image_text`] is
    /// `fuse(text_lower(text), image_lower(pixels, type_id), text.mask)`, so a caller that
    /// needs several of them on the same inputs (and no dropout, which would draw new masks
    /// per pass) can run the lower layers once.
    pub fn image_lower(&self, pixels: &Tensor, type_id: i64, train: bool) -> Result<Tensor> {
        self.check_pixels(pixels)?;
        let x = self.embed_image(pixels, type_id)?;
        Ok(self.run(x, None, 0..self.split(), Expert::Vision, train))
    }

    /// The rest of the image-only pass on [`Self::image_lower`]'s output: the vision experts
    /// of the VL layers and the final norm.
    pub fn image_upper(&self, lower: Tensor, train: bool) -> Tensor {
        self.finish(self.run(
            lower,
            None,
            self.split()..self.layers.len(),
            Expert::Vision,
            train,
        ))
    }

    /// The layers below the VL split of the text-only pass (see [`Self::image_lower`]): text
    /// tokens through the text experts, padded keys masked out, [B, T, D].
    pub fn text_lower(&self, text: &TextBatch<'_>, train: bool) -> Result<Tensor> {
        self.check_text(text)?;
        let x = self.embed_text(text.ids, train)?;
        let m = Self::key_mask(text.mask);
        Ok(self.run(x, m.as_ref(), 0..self.split(), Expert::Text, train))
    }

    /// The rest of the text-only pass on [`Self::text_lower`]'s output (`mask` the text's
    /// padding mask [B, T]): the text experts of the VL layers and the final norm.
    pub fn text_upper(&self, lower: Tensor, mask: &Tensor, train: bool) -> Tensor {
        let m = Self::key_mask(mask);
        self.finish(self.run(
            lower,
            m.as_ref(),
            self.split()..self.layers.len(),
            Expert::Text,
            train,
        ))
    }

    /// The key mask [B, T + 1 + N] (i64, 1 = real token) of `[text; image]`, after checking
    /// that text [B, T, D], its mask [B, T] and image [B, 1 + N, D] fit together.
    fn fused_mask(text: &Tensor, image: &Tensor, text_mask: &Tensor) -> Result<Tensor> {
        let (ts, is) = (text.size(), image.size());
        if ts.len() != 3 || is.len() != 3 || ts[0] != is[0] || text_mask.size() != ts[..2] {
            return Err(ModelError::Input(format!(
                "fuse: text {ts:?} (mask {:?}) and image {is:?} do not fit",
                text_mask.size()
            )));
        }
        Ok(Tensor::cat(
            &[
                text_mask.to_kind(Kind::Int64),
                Tensor::ones([is[0], is[1]], (Kind::Int64, image.device())),
            ],
            1,
        ))
    }

    /// The VL layers on `[text; image]` of the lower layers' outputs ([`Self::text_lower`]
    /// [B, T, D] with its padding mask `text_mask` [B, T], [`Self::image_lower`] [B, 1 + N, D])
    /// and the final norm: as [`Self::encode_image_text`].
    pub fn fuse(
        &self,
        text: Tensor,
        image: Tensor,
        text_mask: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let mask = Self::fused_mask(&text, &image, text_mask)?;
        let x = Tensor::cat(&[text, image], 1);
        let km = Self::key_mask(&mask);
        let x = self.run(
            x,
            km.as_ref(),
            self.split()..self.layers.len(),
            Expert::Vl,
            train,
        );
        Ok((self.finish(x), mask))
    }

    /// The first `keep` tokens of [`Self::fuse`]'s encoding, [B, keep, D], for a caller that
    /// reads only those (a classifier on the first token, MLM on the text positions): the
    /// last layer computes only their outputs (queries), attending to every token. The same
    /// values as `fuse(...).0.narrow(1, 0, keep)`; with dropout in training it falls back to
    /// exactly that, so the dropout draws do not change.
    pub fn fuse_first(
        &self,
        text: Tensor,
        image: Tensor,
        text_mask: &Tensor,
        keep: i64,
        train: bool,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let dropout = c.hidden_dropout_prob > 0.0 || c.attention_probs_dropout_prob > 0.0;
        let total =
            text.size().get(1).copied().unwrap_or(0) + image.size().get(1).copied().unwrap_or(0);
        if !(1..=total).contains(&keep) {
            return Err(ModelError::Input(format!(
                "fuse_first: keep {keep} of {total} tokens"
            )));
        }
        if (train && dropout) || self.split() == self.layers.len() {
            let (h, _) = self.fuse(text, image, text_mask, train)?;
            return Ok(h.narrow(1, 0, keep));
        }
        let mask = Self::fused_mask(&text, &image, text_mask)?;
        let km = Self::key_mask(&mask);
        let last = self.layers.len() - 1;
        let x = self.run(
            Tensor::cat(&[text, image], 1),
            km.as_ref(),
            self.split()..last,
            Expert::Vl,
            train,
        );
        let x = self.layers[last].forward_first(
            &self.cfg,
            &x,
            Some(keep),
            km.as_ref(),
            Expert::Vl,
            train,
        );
        Ok(self.finish(x))
    }

    /// The index of the first VL layer.
    fn split(&self) -> usize {
        (self.cfg.num_hidden_layers - self.cfg.vl_layers) as usize
    }

    /// Image and text fused: [B, T + 1 + N, D] as `[text; image]`, and the key mask [B, T+1+N]
    /// (i64, 1 = real token). `type_id` is the image's token type (1, or 2 for a second image).
    pub fn encode_image_text(
        &self,
        pixels: &Tensor,
        text: &TextBatch<'_>,
        type_id: i64,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.check_pixels(pixels)?;
        self.check_text(text)?;
        if pixels.size()[0] != text.ids.size()[0] {
            return Err(ModelError::Input(format!(
                "{} images but {} texts",
                pixels.size()[0],
                text.ids.size()[0]
            )));
        }
        if self.cfg.type_vocab_size > 0 && !(1..self.cfg.type_vocab_size).contains(&type_id) {
            return Err(ModelError::Input(format!(
                "image token type {type_id} is out of range"
            )));
        }
        let t = self.text_lower(text, train)?;
        let i = self.image_lower(pixels, type_id, train)?;
        self.fuse(t, i, text.mask, train)
    }

    /// Image pair and text (NLVR2): the first token of each fused sequence, concatenated
    /// [B, 2D].
    pub fn encode_pair(
        &self,
        left: &Tensor,
        right: &Tensor,
        text: &TextBatch<'_>,
        train: bool,
    ) -> Result<Tensor> {
        let (a, _) = self.encode_image_text(left, text, 1, train)?;
        let (b, _) = self.encode_image_text(right, text, 2, train)?;
        Ok(Tensor::cat(&[a.select(1, 0), b.select(1, 0)], 1))
    }
}

/// Number of parameters of the encoder (embeddings, blocks, final norm) from the config alone:
/// the closed formula the tests check the built model against.
pub fn parameter_count(cfg: &MultiwayConfig) -> i64 {
    let d = cfg.hidden_size;
    let f = cfg.intermediate_size();
    let part = |p: Part| match p {
        Part::Attn => 4 * (d * d + d),
        Part::Ffn => d * f + f + f * d + d,
        Part::Norm1 | Part::Norm2 => 2 * d,
    };
    let mut blocks = 0;
    for i in 0..cfg.num_hidden_layers {
        let experts = if cfg.is_vl_layer(i) { 3 } else { 2 };
        for p in Part::ALL {
            let copies = if cfg.sharing.is_specific(p) {
                experts
            } else {
                1
            };
            blocks += copies * part(p);
        }
        if cfg.layer_scale_init.is_some() {
            blocks += 2 * d;
        }
    }
    let c = cfg.num_channels;
    let pp = cfg.patch_size;
    let image = if cfg.has_images() {
        c * pp * pp * d + d // patch conv
            + d + (cfg.num_patches() + 1) * d // class token, image positions
    } else {
        0
    };
    let text = if cfg.has_text() {
        (cfg.vocab_size + cfg.max_position_embeddings) * d + 2 * d // + text norm
    } else {
        0
    };
    let embeddings = image + text + cfg.type_vocab_size * d;
    let norm = if cfg.pre_norm { 2 * d } else { 0 };
    blocks + embeddings + norm
}

/// Whether a config's sharing keeps `part` per expert (re-exported for key mappings).
pub fn is_specific(sharing: Sharing, part: Part) -> bool {
    sharing.is_specific(part)
}
