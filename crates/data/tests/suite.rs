#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The one entry point, `Suite::open(dir)?.task(name)?.split(split)?`: it opens every split of
//! the real-format fixtures (official VQA v2, Karpathy COCO / Flickr30k, COCO captions,
//! NLVR2, ImageFolder and GLUE layouts, and our own) and of a generated synthetic suite; the
//! real-asset suite's test (`real_assets.rs`) opens every split of that suite the same way.
//! Also the layout (`mmerge_data::layout`) and the entry point's errors.

mod common;

use std::path::Path;

use common::{err, fx};
use mmerge_data::DataError;
use mmerge_data::formats::ReadOptions;
use mmerge_data::formats::captions::KarpathySplit;
use mmerge_data::layout::{Layout, Official, SplitFiles};
use mmerge_data::suite::{Examples, Split, Suite, TaskKind};
use mmerge_data::synth::{Scale, SynthConfig, generate};

/// Opens every split of every task of `suite`; checks kind and count against the manifest.
/// Returns (task, split, examples, images) per split.
fn open_all(suite: &Suite) -> Vec<(String, String, usize, usize)> {
    let mut out = vec![];
    for task in suite.tasks() {
        assert!(task.splits().count() > 0, "{} has no splits", task.name());
        for split in task.splits() {
            let ex = task.split(split).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(ex.kind(), task.kind(), "{} {split}", task.name());
            assert_eq!(
                ex.len(),
                task.entry().counts[split],
                "{} {split}",
                task.name()
            );
            for p in ex.images() {
                assert!(p.is_file(), "{}", p.display());
            }
            out.push((
                task.name().to_string(),
                split.to_string(),
                ex.len(),
                ex.images().len(),
            ));
        }
    }
    out
}

#[test]
fn every_split_of_the_real_format_fixtures_opens() {
    let suite = Suite::open(&fx()).unwrap();
    let got = open_all(&suite);
    let row = |t: &str, s: &str, n: usize, i: usize| (t.to_string(), s.to_string(), n, i);
    assert_eq!(
        got,
        [
            row("vqa_v2", "test2015", 1, 1),
            row("vqa_v2", "train2014", 5, 5),
            row("vqa_v2", "val2014", 3, 3),
            row("vqa_suite", "train", 3, 3),
            row("coco_karpathy", "restval", 1, 1),
            row("coco_karpathy", "test", 3, 3),
            row("coco_karpathy", "train", 2, 2),
            row("coco_karpathy", "train+restval", 3, 3),
            row("coco_karpathy", "val", 1, 1),
            row("flickr30k", "test", 1, 1),
            row("flickr30k", "train", 2, 2),
            row("flickr30k", "val", 1, 1),
            row("coco_captions", "val2014", 3, 3),
            row("nlvr2", "dev", 3, 6),
            row("nlvr2", "train", 2, 4),
            row("image_folder", "train", 6, 6),
            row("image_folder", "val", 2, 2),
            row("sst2", "dev", 2, 0),
            row("sst2", "train", 4, 0),
            row("text_suite", "train", 3, 0),
            row("segmentation", "train", 2, 2),
            row("segmentation", "val", 1, 1),
        ]
    );

    // The official VQA layout: COCO image names, no answers in test2015, no vocabulary
    // (so no targets); our layout: the vocabulary of answers.json and its targets.
    let Examples::Vqa { examples, vocab } = suite.task("vqa_v2").unwrap().split("val2014").unwrap()
    else {
        panic!("not VQA")
    };
    assert!(vocab.is_none());
    let image = &examples[0].image.path;
    assert!(
        image.parent().unwrap().ends_with("vqa/coco/val2014"),
        "{}",
        image.display()
    );
    let name = image.file_name().unwrap().to_string_lossy();
    assert!(name.starts_with("COCO_val2014_") && name.len() == "COCO_val2014_.jpg".len() + 12);
    assert_eq!(examples[0].answers.len(), 10);
    let Examples::Vqa { examples, .. } = suite.task("vqa_v2").unwrap().split("test2015").unwrap()
    else {
        panic!("not VQA")
    };
    assert!(examples[0].answers.is_empty() && examples[0].multiple_choice_answer.is_none());
    let Examples::Vqa { examples, vocab } = suite
        .task("vqa_suite")
        .unwrap()
        .split(Split::Train)
        .unwrap()
    else {
        panic!("not VQA")
    };
    assert_eq!(vocab.unwrap().answers(), ["2", "circle", "yes"]);
    assert_eq!(examples[0].targets, [(1, 1.0)]);

    // Karpathy train+restval is train's images then restval's, in file order.
    let task = suite.task("coco_karpathy").unwrap();
    let ids = |s: &str| match task.split(s).unwrap() {
        Examples::Retrieval(r) => r.image_ids,
        _ => panic!("not retrieval"),
    };
    let mut both = ids("train");
    both.extend(ids("restval"));
    both.sort_unstable();
    let mut folded = ids("train+restval");
    folded.sort_unstable();
    assert_eq!(folded, both);

    // GLUE TSV labels are the file's, sorted; ImageFolder classes its folders, sorted.
    let Examples::TextCls(t) = suite.task("sst2").unwrap().split("train").unwrap() else {
        panic!("not text")
    };
    assert_eq!(t.labels, ["0", "1"]);
    let Examples::ImageCls(c) = suite.task("image_folder").unwrap().split("val").unwrap() else {
        panic!("not image classification")
    };
    assert_eq!(c.classes, ["cat", "dog"]);
}

#[test]
fn every_split_of_a_synthetic_suite_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("suite");
    let m = generate(&SynthConfig::new(1, Scale::Tiny), &dir, false, false).unwrap();
    let suite = Suite::open(&dir).unwrap();
    assert_eq!(suite.manifest(), &m);
    let got = open_all(&suite);
    assert_eq!(got.len(), 3 * m.tasks.len());
    // Tiny sizes (`Scale::sizes`): VQA 160 / 40 / 80 questions, one image each.
    let vqa: Vec<(usize, usize)> = got
        .iter()
        .filter(|r| r.0 == "vqa")
        .map(|r| (r.2, r.3))
        .collect();
    assert_eq!(vqa, [(80, 80), (160, 160), (40, 40)]);
    // Every split name is one of ours.
    for task in suite.tasks() {
        let names: Vec<&str> = task.splits().collect();
        assert_eq!(names, ["test", "train", "val"], "{}", task.name());
        for s in Split::ALL {
            assert!(!task.split(s).unwrap().is_empty());
        }
    }
}

#[test]
fn the_suite_layout_names_every_file_in_one_place() {
    let root = Path::new("task");
    let files = |kind: TaskKind, split: &str| {
        SplitFiles::new(root, "t", kind, Layout::Suite, split).unwrap()
    };
    let SplitFiles::Vqa { source, vocab } = files(TaskKind::Vqa, "val") else {
        panic!()
    };
    assert_eq!(source.questions, Path::new("task/questions_val.json"));
    assert_eq!(
        source.annotations.as_deref(),
        Some(Path::new("task/annotations_val.json"))
    );
    assert_eq!(source.image_dir, Path::new("task/images/val"));
    assert_eq!(source.image_pattern, "{id:012}.png");
    assert_eq!(vocab.as_deref(), Some(Path::new("task/answers.json")));
    let SplitFiles::Karpathy(k) = files(TaskKind::Retrieval, "test") else {
        panic!()
    };
    assert_eq!(k.file, Path::new("task/dataset.json"));
    assert_eq!(k.image_root, root);
    assert_eq!((k.split, k.fold_restval), (KarpathySplit::Test, false));
    let SplitFiles::Nlvr2(n) = files(TaskKind::Nlvr2, "dev") else {
        panic!()
    };
    assert_eq!(n.file, Path::new("task/dev.json"));
    assert_eq!(n.image_dir, Path::new("task/images/dev"));
    assert_eq!(
        files(TaskKind::TextCls, "train"),
        SplitFiles::Text {
            file: "task/train.jsonl".into(),
            classes: Some("task/classes.txt".into()),
        }
    );
    assert_eq!(
        files(TaskKind::ImageCls, "train"),
        SplitFiles::ImageFolder {
            dir: "task/train".into(),
            classes: Some("task/classes.txt".into()),
        }
    );
    let SplitFiles::Segmentation(s) = files(TaskKind::Segmentation, "val") else {
        panic!()
    };
    assert_eq!(
        (s.images, s.masks, s.classes),
        (
            "task/val/images".into(),
            "task/val/masks".into(),
            "task/classes.txt".into()
        )
    );
    // The writers' relative paths are the same strings.
    use mmerge_data::layout::*;
    assert_eq!(vqa_image("val", 42), "images/val/000000000042.png");
    assert_eq!(
        nlvr2_image("dev", "dev-1-0", 1),
        "images/dev/dev-1-0-img1.png"
    );
    assert_eq!(seg_image("val", "a.png"), "val/images/a.png");
    assert_eq!(seg_mask("val", "a.png"), "val/masks/a.png");
    assert_eq!(image_cls_image("val", "cat", "a.png"), "val/cat/a.png");
    assert_eq!(in_task("vqa", ANSWERS), "vqa/answers.json");
}

#[test]
fn entry_point_errors_name_what_is_wrong() {
    let suite = Suite::open(&fx()).unwrap();
    let e = err(suite.task("nope").map(|t| t.name().to_string()));
    assert!(
        matches!(&e, DataError::UnknownName { what: "task", name, .. } if name == "nope"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("vqa_v2, vqa_suite, coco_karpathy"),
        "{e}"
    );
    // A split that is not in the files: the reader's error names the missing file.
    let e = err(suite.task("nlvr2").unwrap().split("test1"));
    assert!(e.to_string().contains("test1.json"), "{e}");
    // Karpathy split names are checked.
    let e = err(suite.task("flickr30k").unwrap().split("dev"));
    assert!(matches!(e, DataError::BadTask { .. }), "{e:?}");
    assert!(e.to_string().contains("split `dev`"), "{e}");
    // An official layout must hold the task's kind.
    let o = Official::GlueTsv;
    let e = err(SplitFiles::new(
        Path::new("t"),
        "t",
        TaskKind::Vqa,
        Layout::Official(&o),
        "train",
    ));
    assert!(matches!(e, DataError::BadTask { .. }), "{e:?}");
    // Skipping goes through the same entry point.
    let l = suite
        .task("text_suite")
        .unwrap()
        .split_with("train", ReadOptions::SKIP_BAD)
        .unwrap();
    assert!(l.skipped.is_empty());
    // Not a suite.
    let tmp = tempfile::tempdir().unwrap();
    let e = err(Suite::open(tmp.path()));
    assert!(e.to_string().contains("suite.json"), "{e}");
}
