//! `mmerge encode` against the Hugging Face golden outputs: our tokenisation (the
//! `tokenizers` crate) gives transformers' token ids, and the embeddings match.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mmerge_core::Checkpoint;
use mmerge_testkit::require_fetched;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf")
}

/// Runs `mmerge encode` (this crate's executable, which `mmerge` hands `encode` to); the
/// folder holding the output lives as long as the returned guard.
fn encode(args: &[&std::ffi::OsStr]) -> (tempfile::TempDir, Checkpoint) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("enc.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_mmerge-torch"))
        .arg("encode")
        .args(args)
        .args([
            "--device".as_ref(),
            "cpu".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = Checkpoint::open(&out).unwrap();
    (tmp, ck)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn text_encoding_and_token_ids_match_transformers() {
    // One encode run serves both checks. The model's own tokenizer.json pads to 128 by
    // default; encode must undo that and give transformers' ids, padded to the longest
    // sentence, and the same embeddings.
    let model = require_fetched("all-MiniLM-L6-v2", "model.safetensors");
    let sentences = fixtures().join("minilm_sentences.txt");
    let (_dir, got) = encode(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--text".as_ref(),
        sentences.as_os_str(),
    ]);
    let gold = Checkpoint::open(fixtures().join("minilm_golden.safetensors")).unwrap();
    assert_eq!(
        got.meta("input_ids").unwrap().shape,
        gold.meta("input_ids").unwrap().shape
    );
    assert_eq!(
        got.bytes("input_ids").unwrap(),
        gold.bytes("input_ids").unwrap()
    );
    assert_eq!(
        got.bytes("attention_mask").unwrap(),
        gold.bytes("attention_mask").unwrap()
    );
    let err = max_abs(
        &got.read_f32("mean_pooled").unwrap(),
        &gold.read_f32("mean_pooled").unwrap(),
    );
    assert!(err < 1e-4, "{err:e}");
}

#[test]
fn image_encoding_matches_transformers() {
    let model = require_fetched("dinov2-small", "model.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["dinov2_img0.png", "dinov2_img1.png"] {
        std::fs::copy(fixtures().join(f), tmp.path().join(f)).unwrap();
    }
    let (_dir, got) = encode(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--images".as_ref(),
        tmp.path().as_os_str(),
        "--image-size".as_ref(),
        "224".as_ref(),
    ]);
    let gold = Checkpoint::open(fixtures().join("dinov2_golden.safetensors")).unwrap();
    let err = max_abs(
        &got.read_f32("cls").unwrap(),
        &gold.read_f32("cls").unwrap(),
    );
    assert!(err < 2e-4, "{err:e}");
    let err = max_abs(
        &got.read_f32("mean_pooled").unwrap(),
        &gold.read_f32("pooled_mean_patch").unwrap(),
    );
    assert!(err < 2e-4, "{err:e}");
}
