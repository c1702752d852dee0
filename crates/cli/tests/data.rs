//! `mmerge data`: the synthetic suite end to end through the binary (generate, check every
//! split and image, train the tokenizer), and its bad-input errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn mmerge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn synth_check_and_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    let s = suite.to_str().unwrap();
    let text = ok(&mmerge(&[
        "data", "synth", "--out", s, "--scale", "tiny", "--seed", "3",
    ]));
    for task in [
        "vqa",
        "retrieval",
        "nlvr2",
        "segmentation",
        "shape_cls",
        "caption_colour",
    ] {
        assert!(text.contains(task), "{task} missing from:\n{text}");
    }
    let check = ok(&mmerge(&["data", "check", s]));
    // 8 tasks × 3 splits, and the VQA train split: 160 questions, 160 images, all decoded.
    assert!(check.contains("ok: 24 splits"), "{check}");
    let vqa_train = check
        .lines()
        .find(|l| l.starts_with("vqa ") && l.contains(" train "))
        .unwrap();
    let cols: Vec<&str> = vqa_train.split_whitespace().collect();
    assert_eq!(&cols[3..], ["160", "160", "160"], "{vqa_train}");
    let tok = ok(&mmerge(&["data", "tokenizer", s, "--vocab-size", "300"]));
    assert!(tok.contains("tokenizer.json"), "{tok}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(suite.join("tokenizer.json")).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap();
    assert!(vocab.contains_key("circle") && vocab.contains_key("[MASK]"));
    assert!(vocab.len() <= 300);
    // Without --force an existing suite is kept.
    let again = mmerge(&["data", "synth", "--out", s, "--scale", "tiny"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn bad_scale_and_knobs_are_named_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let o = out.to_str().unwrap();
    let e = mmerge(&["data", "synth", "--out", o, "--scale", "huge"]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && err.contains("tiny, small, full"),
        "{err}"
    );
    let e = mmerge(&[
        "data",
        "synth",
        "--out",
        o,
        "--scale",
        "tiny",
        "--image-size",
        "8",
    ]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("image size 8"), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
    let e = mmerge(&["data", "check", o]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("suite.json"));
}

#[test]
fn check_names_the_file_and_record_of_each_defect() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    let s = suite.to_str().unwrap();
    ok(&mmerge(&["data", "synth", "--out", s, "--scale", "tiny"]));
    // Each defect is made, checked, and undone.
    let broken = |path: &std::path::Path, bytes: Vec<u8>, expect: &[&str]| {
        let keep = std::fs::read(path).unwrap();
        std::fs::write(path, bytes).unwrap();
        let out = mmerge(&["data", "check", s]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "accepted {}", path.display());
        for e in expect {
            assert!(err.contains(e), "expected `{e}` in: {err}");
        }
        std::fs::write(path, keep).unwrap();
    };
    // A mask value that is no class (5 classes: background + 4 shapes).
    let mask = suite.join("segmentation/train/masks/000000.png");
    let img = image::open(&mask).unwrap().to_luma8();
    let bad = image::GrayImage::from_fn(img.width(), img.height(), |_, _| image::Luma([9]));
    let mut png = vec![];
    bad.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    broken(&mask, png, &["000000.png", "9"]);
    // A text label outside classes.txt.
    let text = suite.join("caption_colour/train.jsonl");
    let mut lines = std::fs::read(&text).unwrap();
    lines.extend_from_slice(b"{\"text\":\"a pink circle\",\"label\":\"pink\"}\n");
    broken(&text, lines, &["train.jsonl", "pink"]);
    // Equivalence groups that do not match dataset.json.
    let eq = suite.join("retrieval/equivalent_captions.json");
    broken(&eq, b"[]\n".to_vec(), &["equivalent_captions.json"]);
    // Malformed JSON: file, line and column.
    let q = suite.join("vqa/questions_val.json");
    let mut bytes = std::fs::read(&q).unwrap();
    bytes.truncate(bytes.len() / 2);
    broken(&q, bytes, &["questions_val.json:1:"]);
    // After undoing every defect the suite checks again.
    ok(&mmerge(&["data", "check", s]));
}

#[test]
fn check_opens_the_real_format_fixtures_in_their_official_layouts() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures");
    let check = ok(&mmerge(&["data", "check", fixtures.to_str().unwrap()]));
    // 10 tasks, 22 splits: VQA v2 (train2014, val2014, test2015), Karpathy COCO (with
    // train+restval) and Flickr30k, COCO captions, NLVR2, ImageFolder, GLUE TSV, and ours.
    assert!(check.contains("ok: 22 splits"), "{check}");
    let row = check
        .lines()
        .find(|l| l.starts_with("coco_karpathy ") && l.contains(" train+restval "))
        .unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[3..], ["3", "3", "3"], "{row}");
}
