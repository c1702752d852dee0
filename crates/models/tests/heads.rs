//! Every head: output shapes, and that a few optimiser steps on a fixed tiny batch lower its
//! loss (the gradient reaches the encoder and the head).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_models::heads::{Classifier, ItcHead, MimHead, MlmHead, SegHead, patchify};
use mmerge_models::{MultiwayTransformer, TextBatch};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn setup() -> (nn::VarStore, MultiwayTransformer, MultiwayConfig) {
    tch::manual_seed(0);
    let cfg = MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = MultiwayTransformer::new(&vs.root(), &cfg).unwrap();
    (vs, m, cfg)
}

/// Runs `steps` AdamW steps of `loss`; returns (first, last) loss.
fn train(vs: &nn::VarStore, steps: usize, loss: impl Fn() -> Tensor) -> (f64, f64) {
    let mut opt = nn::AdamW::default().build(vs, 3e-3).unwrap();
    let first = loss().double_value(&[]);
    for _ in 0..steps {
        opt.backward_step(&loss());
    }
    (first, loss().double_value(&[]))
}

fn batch(cfg: &MultiwayConfig) -> (Tensor, Tensor, Tensor) {
    let px = Tensor::randn(
        [4, 3, cfg.image_size, cfg.image_size],
        (Kind::Float, Device::Cpu),
    );
    let ids = Tensor::randint(cfg.vocab_size, [4, 8], (Kind::Int64, Device::Cpu));
    let mask = ids.ones_like();
    (px, ids, mask)
}

#[test]
fn patchify_matches_the_patch_convolution() {
    let px = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([5, 3, 4, 4], (Kind::Float, Device::Cpu));
    let conv = px
        .conv2d(&w, None::<Tensor>, [4, 4], [0, 0], [1, 1], 1)
        .flatten(2, 3)
        .transpose(1, 2);
    let lin = patchify(&px, 4).matmul(&w.view([5, 48]).transpose(0, 1));
    assert!(conv.allclose(&lin, 1e-5, 1e-5, false));
}

#[test]
fn mlm_and_mim_learn() {
    let (vs, m, cfg) = setup();
    let (px, ids, mask) = batch(&cfg);
    let mlm = MlmHead::new(&(vs.root() / "heads" / "mlm"), &cfg);
    let labels = ids.shallow_clone();
    let tb = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    assert_eq!(
        mlm.forward(&m.encode_text(&tb, false).unwrap()).size(),
        [4, 8, cfg.vocab_size]
    );
    let (a, b) = train(&vs, 30, || {
        mlm.loss(&m.encode_text(&tb, true).unwrap(), &labels)
    });
    assert!(b < a * 0.7, "MLM loss {a} -> {b}");
    let mim = MimHead::new(&(vs.root() / "heads" / "mim"), &cfg);
    let pmask = Tensor::rand([4, cfg.num_patches()], (Kind::Float, Device::Cpu)).lt(0.5);
    assert_eq!(
        mim.forward(&m.encode_image(&px, false).unwrap()).size(),
        [4, 16, 192]
    );
    let (a, b) = train(&vs, 30, || {
        mim.loss(&m.encode_image(&px, true).unwrap(), &px, &pmask)
    });
    assert!(b < a * 0.9, "MIM loss {a} -> {b}");
}

#[test]
fn itc_itm_and_classifiers_learn() {
    let (vs, m, cfg) = setup();
    let (px, ids, mask) = batch(&cfg);
    let tb = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    let d = cfg.hidden_size;
    let itc = ItcHead::new(&(vs.root() / "heads" / "itc"), &cfg, 16);
    let itc_loss = || {
        itc.loss(
            &m.encode_text(&tb, true).unwrap().select(1, 0),
            &m.encode_image(&px, true).unwrap().select(1, 0),
        )
    };
    assert_eq!(
        itc.logits(
            &Tensor::zeros([3, d], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([5, d], (Kind::Float, Device::Cpu))
        )
        .size(),
        [3, 5]
    );
    let (a, b) = train(&vs, 30, itc_loss);
    assert!(b < a * 0.5, "ITC loss {a} -> {b}");
    let labels = Tensor::from_slice(&[0i64, 1, 2, 1]);
    let vqa = Classifier::new(&(vs.root() / "heads" / "vqa"), d, 3, cfg.layer_norm_eps);
    let fused = || {
        m.encode_image_text(&px, &tb, 1, true)
            .unwrap()
            .0
            .select(1, 0)
    };
    let (a, b) = train(&vs, 30, || {
        vqa.forward(&fused()).cross_entropy_for_logits(&labels)
    });
    assert!(b < a * 0.5, "VQA loss {a} -> {b}");
    let nlvr = Classifier::new(
        &(vs.root() / "heads" / "nlvr2"),
        2 * d,
        2,
        cfg.layer_norm_eps,
    );
    let pair = m.encode_pair(&px, &px.flip([3]), &tb, false).unwrap();
    assert_eq!(nlvr.forward(&pair).size(), [4, 2]);
}

#[test]
fn segmentation_learns_per_pixel_classes() {
    let (vs, m, cfg) = setup();
    let (px, _, _) = batch(&cfg);
    let seg = SegHead::new(&(vs.root() / "heads" / "seg"), &cfg, 3);
    assert_eq!(
        seg.forward(&m.encode_image(&px, false).unwrap()).size(),
        [4, 3, 32, 32]
    );
    // Left half class 1, right half class 2.
    let cols = Tensor::arange(32, (Kind::Int64, Device::Cpu))
        .ge(16)
        .to_kind(Kind::Int64)
        + 1;
    let labels = cols
        .view([1, 1, 32])
        .expand([4, 32, 32], false)
        .contiguous();
    let (a, b) = train(&vs, 30, || {
        seg.loss(&m.encode_image(&px, true).unwrap(), &labels)
    });
    assert!(b < a * 0.5, "segmentation loss {a} -> {b}");
}

#[test]
fn patchify_matches_the_data_crates_layout() {
    // The data pipeline can cut patches without libtorch; both must agree element for element.
    let (c, h, w, p) = (3usize, 8usize, 16usize, 4usize);
    let chw: Vec<f32> = (0..c * h * w).map(|i| i as f32 * 0.5 - 7.0).collect();
    let ours = mmerge_data::transform::patchify(&chw, c, h, w, p).unwrap();
    let pixels = Tensor::from_slice(&chw).view([1, c as i64, h as i64, w as i64]);
    let theirs = patchify(&pixels, p as i64);
    assert_eq!(
        theirs.size(),
        [1, ((h / p) * (w / p)) as i64, (c * p * p) as i64]
    );
    assert_eq!(Vec::<f32>::try_from(theirs.reshape([-1])).unwrap(), ours);
}
