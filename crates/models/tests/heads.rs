//! Every head: output shapes, losses against values worked out by hand (weights set so the
//! logits are known: equal logits give ln B, ignored labels count for nothing, per-patch
//! normalisation and masking of MIM), and that a few optimiser steps on a fixed tiny batch
//! lower its loss (the gradient reaches the encoder and the head).

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

/// A variable store holding only the head that `make` creates under `heads.<name>`.
fn head_only<H>(make: impl FnOnce(&nn::Path<'_>, &MultiwayConfig) -> H) -> (nn::VarStore, H) {
    let cfg = MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let head = make(&(vs.root() / "heads"), &cfg);
    (vs, head)
}

/// Overwrites the variable `name` of `vs` with `value`.
fn set(vs: &nn::VarStore, name: &str, value: &Tensor) {
    let _guard = tch::no_grad_guard();
    let mut v = vs.variables()[name].shallow_clone();
    assert_eq!(v.size(), value.size(), "{name}");
    v.copy_(value);
}

fn f32s(v: &[f64]) -> Tensor {
    Tensor::from_slice(&v.iter().map(|&x| x as f32).collect::<Vec<_>>())
}

fn close(got: &Tensor, want: f64) {
    let got = got.double_value(&[]);
    assert!((got - want).abs() < 1e-6, "loss {got}, by hand {want}");
}

#[test]
fn itc_loss_of_equal_logits_is_ln_b() {
    // Every text the same and every image the same: all B×B logits are equal, so each row
    // and column is a uniform distribution and each cross-entropy is ln B.
    let (_vs, itc) = head_only(|p, cfg| ItcHead::new(&(p / "itc"), cfg, 16));
    let d = 32;
    for b in [1i64, 3, 8] {
        let t = Tensor::randn([1, d], (Kind::Float, Device::Cpu)).expand([b, d], false);
        let i = Tensor::randn([1, d], (Kind::Float, Device::Cpu)).expand([b, d], false);
        close(&itc.loss(&t, &i), (b as f64).ln());
    }
}

#[test]
fn itc_loss_by_hand_on_two_pairs() {
    // Identity projections, temperature e^{ln 2} = 2. Texts t1 = e1, t2 = e2; images
    // i1 = e1, i2 = 0.6 e1 + 0.8 e2 (unit length), so the logits are 2·[[1, 0.6], [0, 0.8]].
    // Text→image rows: ln(1 + e^{-0.8}), ln(1 + e^{-1.6}); image→text columns [2, 0] and
    // [1.2, 1.6]: ln(1 + e^{-2}), ln(1 + e^{-0.4}). The loss is the mean of the two means.
    let (vs, itc) = head_only(|p, cfg| ItcHead::new(&(p / "itc"), cfg, 32));
    let eye = Tensor::eye(32, (Kind::Float, Device::Cpu));
    let zero = Tensor::zeros([32], (Kind::Float, Device::Cpu));
    for side in ["text_proj", "image_proj"] {
        set(&vs, &format!("heads.itc.{side}.weight"), &eye);
        set(&vs, &format!("heads.itc.{side}.bias"), &zero);
    }
    set(&vs, "heads.itc.logit_scale", &f32s(&[2f64.ln()]).view([]));
    let row = |v: &[f64]| {
        let mut r = vec![0.0; 32];
        r[..v.len()].copy_from_slice(v);
        r
    };
    let t = f32s(&[row(&[1.0, 0.0]), row(&[0.0, 1.0])].concat()).view([2, 32]);
    let i = f32s(&[row(&[1.0, 0.0]), row(&[0.6, 0.8])].concat()).view([2, 32]);
    let logits = itc.logits(&t, &i);
    let want = [2.0, 1.2, 0.0, 1.6];
    for (k, w) in want.iter().enumerate() {
        let got = logits.view([-1]).double_value(&[k as i64]);
        assert!((got - w).abs() < 1e-6, "logit {k}: {got} vs {w}");
    }
    let l = |x: f64| (1.0 + (-x).exp()).ln();
    close(&itc.loss(&t, &i), (l(0.8) + l(1.6) + l(2.0) + l(0.4)) / 4.0);
}

#[test]
fn mlm_loss_by_hand_and_ignored_labels_count_for_nothing() {
    let (vs, mlm) = head_only(|p, cfg| MlmHead::new(&(p / "mlm"), cfg));
    let labels = Tensor::from_slice(&[5i64, -100, 7, -100, 5, 5]).view([2, 3]);
    // Random head weights: changing the hidden states of the two ignored positions changes
    // their logits but not the loss.
    let h = Tensor::randn([2, 3, 32], (Kind::Float, Device::Cpu));
    let before = mlm.loss(&h, &labels).double_value(&[]);
    let h2 = h.copy();
    h2.narrow(1, 1, 1)
        .narrow(0, 0, 1)
        .copy_(&Tensor::randn([1, 1, 32], (Kind::Float, Device::Cpu)));
    h2.narrow(1, 0, 1)
        .narrow(0, 1, 1)
        .copy_(&Tensor::randn([1, 1, 32], (Kind::Float, Device::Cpu)));
    assert!(
        !mlm.forward(&h2).equal(&mlm.forward(&h)),
        "the ignored positions' logits did change"
    );
    assert_eq!(mlm.loss(&h2, &labels).double_value(&[]), before);
    // A zero decoder with bias ln(V − 1) for token 5 and 0 elsewhere: every position's logits
    // are that bias, Σ exp = 2(V − 1), so label 5 costs ln 2 and label 7 costs ln 2(V − 1);
    // the mean over the four real labels (5, 7, 5, 5) is (3 ln 2 + ln 2(V − 1)) / 4.
    let v = 512.0f64;
    set(
        &vs,
        "heads.mlm.decoder.weight",
        &Tensor::zeros([512, 32], (Kind::Float, Device::Cpu)),
    );
    let mut bias = vec![0.0; 512];
    bias[5] = (v - 1.0).ln();
    set(&vs, "heads.mlm.decoder.bias", &f32s(&bias));
    close(
        &mlm.loss(&h, &labels),
        (3.0 * 2f64.ln() + (2.0 * (v - 1.0)).ln()) / 4.0,
    );
}

#[test]
fn mim_loss_by_hand_normalises_each_patch_and_counts_masked_patches_only() {
    // A zero projection predicts 0 for every pixel; the target is each patch normalised to
    // mean 0, variance 1 (with ε = 1e-6), so a patch's squared error is σ²/(σ² + 1e-6):
    // 0 for a flat patch, 1/(1 + 1e-6) for a ±1 checkerboard (σ² = 1, whatever its offset).
    let (vs, mim) = head_only(|p, cfg| MimHead::new(&(p / "mim"), cfg));
    set(
        &vs,
        "heads.mim.proj.weight",
        &Tensor::zeros([192, 32], (Kind::Float, Device::Cpu)),
    );
    set(
        &vs,
        "heads.mim.proj.bias",
        &Tensor::zeros([192], (Kind::Float, Device::Cpu)),
    );
    // 32×32 pixels, 8×8 patches in a 4×4 grid: patch (0, 0) flat 3.0, patch (0, 1) a
    // checkerboard 5 ± 1, patch (0, 2) flat −2.0, all others a checkerboard 0 ± 1.
    let px: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| {
            let (y, x) = ((i / 32) % 32, i % 32);
            let sign = if (x + y) % 2 == 0 { 1.0 } else { -1.0 };
            match (y / 8, x / 8) {
                (0, 0) => 3.0,
                (0, 1) => 5.0 + sign,
                (0, 2) => -2.0,
                _ => sign,
            }
        })
        .collect();
    let px = Tensor::from_slice(&px).view([1, 3, 32, 32]);
    let h = Tensor::randn([1, 17, 32], (Kind::Float, Device::Cpu));
    let mask = |patches: &[usize]| {
        let mut m = vec![false; 16];
        for &p in patches {
            m[p] = true;
        }
        Tensor::from_slice(&m).view([1, 16])
    };
    let checker = 1.0 / (1.0 + 1e-6);
    close(&mim.loss(&h, &px, &mask(&[0, 1, 2])), checker / 3.0);
    close(&mim.loss(&h, &px, &mask(&[0, 2])), 0.0);
    close(&mim.loss(&h, &px, &mask(&[1, 5, 15])), checker);
    // No masked patch: 0, not a division by zero.
    close(&mim.loss(&h, &px, &mask(&[])), 0.0);
}

#[test]
fn segmentation_loss_by_hand_skips_ignored_pixels() {
    // A zero projection with bias (0, ln 2, 0): every pixel's logits are that bias (upsampling
    // a constant keeps it), Σ exp = 4, so class 1 costs ln 2 and classes 0 and 2 cost ln 4.
    // Half the pixels are class 1, a quarter class 0, a quarter ignored (−100): the mean over
    // the counted three quarters is (½ ln 2 + ¼ ln 4) / ¾ = (4/3) ln 2.
    let (vs, seg) = head_only(|p, cfg| SegHead::new(&(p / "seg"), cfg, 3));
    set(
        &vs,
        "heads.seg.proj.weight",
        &Tensor::zeros([3, 32], (Kind::Float, Device::Cpu)),
    );
    set(&vs, "heads.seg.proj.bias", &f32s(&[0.0, 2f64.ln(), 0.0]));
    let labels: Vec<i64> = (0..2 * 32 * 32)
        .map(|i| match (i % 32) / 8 {
            0 | 1 => 1,
            2 => 0,
            _ => -100,
        })
        .collect();
    let labels = Tensor::from_slice(&labels).view([2, 32, 32]);
    let h = Tensor::randn([2, 17, 32], (Kind::Float, Device::Cpu));
    close(&seg.loss(&h, &labels), 4.0 / 3.0 * 2f64.ln());
}
