//! The trainer reads the official formats too: a few steps of fine-tuning and a full
//! evaluation on every official-format fixture of `datasets/fixtures` (VQA v2, Karpathy
//! COCO and Flickr30k, NLVR2, GLUE SST-2, an image folder), through the same recipe route as
//! the synthetic suite. The fixtures are tiny, so this checks the route, not learning.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mmerge_sink::Sink;
use mmerge_train::recipe::Recipe;
use mmerge_train::trainer::{self, TrainOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures")
}

/// (suite task, train split, evaluation split, the scores its evaluation must report)
const CASES: &[(&str, &str, &str, &[&str])] = &[
    ("vqa_v2", "train2014", "val2014", &["vqa_score"]),
    ("coco_karpathy", "train", "val", &["ir_r1", "tr_r1"]),
    ("flickr30k", "train", "val", &["ir_r1", "tr_r1"]),
    ("nlvr2", "train", "dev", &["accuracy"]),
    ("sst2", "train", "dev", &["accuracy"]),
    ("image_folder", "train", "val", &["accuracy"]),
];

/// A copy of the fixtures with the VQA v2 task's answer vocabulary built from train2014 (a
/// real download has none: `mmerge data answers` makes it).
fn fixtures_with_answers(tmp: &Path) -> PathBuf {
    let dst = tmp.join("fixtures");
    copy_dir(&fixtures(), &dst);
    let (_, vocab) =
        mmerge_data::check::write_answer_vocab(&dst, "vqa_v2", "train2014", 1, false).unwrap();
    assert!(!vocab.answers().is_empty());
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    mmerge_core::fs::copy_tree(src, dst).unwrap();
}

#[test]
fn every_official_format_trains_and_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = fixtures_with_answers(tmp.path());
    for &(task, train, split, scores) in CASES {
        let text = format!(
            "suite: {}\nmodel: {{preset: tiny, sharing: all_specific}}\nfinetune: {{task: {task}, train_split: {train}}}\n\
             steps: 2\nbatch_size: 2\neval: {{split: {split}, test: false, batch_size: 2}}\n\
             checkpoint_every: 0\ntensorboard: false\nthreads: 1\n",
            suite.display()
        );
        let recipe = Recipe::parse(&text, Path::new("official.yml")).unwrap();
        let p = trainer::prepare(&recipe).unwrap_or_else(|e| panic!("{task}: {e}"));
        let run = tmp.path().join(task);
        let report = trainer::train(p, &run, &Sink::hidden(), TrainOptions::default())
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        let got = &report.scores[split];
        for s in scores {
            let v = got
                .get(*s)
                .unwrap_or_else(|| panic!("{task}: no `{s}` in {got:?}"));
            assert!((0.0..=1.0).contains(v), "{task}: {s} = {v}");
        }
        assert!(run.join("model/model.safetensors").is_file(), "{task}");
    }
}
