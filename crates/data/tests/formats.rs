#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The readers of the real dataset formats against the fixtures written by
//! `datasets/fixtures/make_fixtures.py` (exact official formats, tiny), and every bad-input
//! case against small files written here.

use std::path::{Path, PathBuf};

use mmerge_data::DataError;
use mmerge_data::formats::captions::{
    CocoCaptionsFile, EquivalentGroup, KarpathyFile, KarpathySource, KarpathySplit, RetrievalSplit,
    caption_key, read_coco_captions, read_equivalent, recall_at_k, write_equivalent,
};
use mmerge_data::formats::image_folder::{ImageExample, ImageFolderOptions, read_image_folder};
use mmerge_data::formats::nlvr2::{self, Nlvr2Example, Nlvr2Source, pair_prefix};
use mmerge_data::formats::segmentation::{
    IGNORE, Mask, SegExample, load_mask, read_classes, read_segmentation,
};
use mmerge_data::formats::text_cls::{self, TextExample, read_text_cls};
use mmerge_data::formats::vqa::{
    AnnotationsFile, AnswerVocab, ImagePattern, QuestionsFile, VqaExample, VqaSource,
    normalize_answer, soft_targets, vqa_accuracy, vqa_score,
};
use mmerge_data::formats::{ReadOptions, SkipKind, read_json, read_jsonl, write_json, write_jsonl};
use mmerge_data::image::ImageRef;

fn fx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn err<T: std::fmt::Debug>(r: mmerge_data::Result<T>) -> DataError {
    r.expect_err("expected an error")
}

const SKIP_UNKNOWN: ReadOptions = ReadOptions {
    skip_bad: false,
    skip_unknown: true,
};

// =========================================================================================
// VQA v2
// =========================================================================================

/// The vocabulary used to read the val fixture: every answer the tests look at.
fn val_vocab() -> AnswerVocab {
    AnswerVocab::new(strings(&[
        "2",
        "3",
        "black",
        "black and white",
        "frisbee",
        "disc",
    ]))
    .unwrap()
}

fn coco_val() -> VqaSource {
    let d = fx().join("vqa/coco");
    VqaSource::coco(
        &d.join("v2_OpenEnded_mscoco_val2014_questions.json"),
        Some(&d.join("v2_mscoco_val2014_annotations.json")),
        &d.join("val2014"),
    )
}

#[test]
fn vqa_normalisation_examples() {
    let cases = [
        ("Two", "2"),
        ("  Yes\n", "yes"),
        ("the Frisbee.", "frisbee"),
        ("Frisbee!", "frisbee"),
        ("t-shirt", "t shirt"),
        // A digit-comma-digit anywhere: all listed punctuation is deleted.
        ("1,000", "1000"),
        // `,` next to a space: deleted; not next to a space: becomes a space.
        ("red, white", "red white"),
        ("red,white", "red white"),
        ("3.5", "3.5"),
        ("dont know", "don't know"),
        ("an apple", "apple"),
        ("none", "0"),
        ("one two three", "1 2 3"),
        // `&`, `:` and `'` are not in the official punctuation list.
        ("black & white", "black & white"),
        ("10:30", "10:30"),
        ("it's", "it's"),
        // `(` not next to a space: space; `)` next to a space: deleted.
        ("(a) dog", "dog"),
        // The script's `Im` entry never matches after lower-casing; neither does ours.
        ("Im", "im"),
    ];
    for (raw, want) in cases {
        let got = normalize_answer(raw);
        assert_eq!(got, want, "normalize_answer({raw:?})");
        assert_eq!(normalize_answer(&got), got, "idempotent on {raw:?}");
    }
}

#[test]
fn vqa_soft_scores_by_hand() {
    // Official accuracy with 10 human answers, m of them matching: mean over the 10
    // leave-one-out subsets of min(1, matches among the other 9 / 3).
    // m = 0: every subset has 0 matches → 0.
    // m = 1: the subset without the match has 0 → 0; the 9 others have 1 → 1/3;
    //        (9 · 1/3) / 10 = 0.3.
    // m = 2: 2 subsets with 1 match → 1/3, 8 with 2 → 2/3; (2/3 + 16/3) / 10 = 0.6.
    // m = 3: 3 subsets with 2 → 2/3, 7 with 3 → 1; (2 + 7) / 10 = 0.9.
    // m = 4: 4 subsets with 3 → 1, 6 with 4 → 1; 1.0. Likewise every m ≥ 4.
    let want = [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    for (m, w) in want.iter().enumerate() {
        assert_eq!(vqa_score(m, 10), *w, "{m} of 10");
    }
    assert_eq!(vqa_score(0, 0), 0.0);

    // "2"×3, "two"×4, "Two"×1 → "2"×8; "3"×1, "three"×1 → "3"×2.
    let raw = [
        "2", "2", "2", "two", "two", "two", "two", "Two", "3", "three",
    ];
    let answers: Vec<String> = raw.iter().map(|a| normalize_answer(a)).collect();
    assert_eq!(vqa_accuracy("two", &answers), 1.0);
    assert_eq!(vqa_accuracy("Three", &answers), 0.6);
    assert_eq!(vqa_accuracy("4", &answers), 0.0);
    // Targets restricted to the vocabulary: "3" has 2 matches → 0.6, "2" → 1.0; "4" is in
    // the vocabulary but no human gave it, so it has no entry.
    let vocab = AnswerVocab::new(strings(&["4", "3", "2"])).unwrap();
    assert_eq!(soft_targets(&answers, &vocab), vec![(1, 0.6), (2, 1.0)]);
    let vocab = AnswerVocab::new(strings(&["2"])).unwrap();
    assert_eq!(soft_targets(&answers, &vocab), vec![(0, 1.0)]);
}

#[test]
fn vqa_val_fixture_reads_to_expected_examples() {
    let d = fx().join("vqa/coco/val2014");
    let got = coco_val()
        .read(Some(&val_vocab()), ReadOptions::STRICT)
        .unwrap();
    assert!(got.skipped.is_empty());
    let rep = |a: &str, n: usize| vec![a.to_string(); n];
    let want = vec![
        VqaExample {
            question_id: 42000,
            image_id: 42,
            image: ImageRef::new(d.join("COCO_val2014_000000000042.jpg")),
            question: "How many dogs are there?".into(),
            answer_type: Some("number".into()),
            question_type: Some("how many".into()),
            multiple_choice_answer: Some("2".into()),
            answers: [rep("2", 8), rep("3", 2)].concat(),
            // "2": 8 matches → 1.0; "3": 2 matches → 0.6.
            targets: vec![(0, 1.0), (1, 0.6)],
        },
        VqaExample {
            question_id: 42001,
            image_id: 42,
            image: ImageRef::new(d.join("COCO_val2014_000000000042.jpg")),
            question: "What is the man holding?".into(),
            answer_type: Some("other".into()),
            question_type: Some("what is the man".into()),
            multiple_choice_answer: Some("frisbee".into()),
            answers: [
                rep("frisbee", 7),
                strings(&["disc", "t shirt", "don't know"]),
            ]
            .concat(),
            // "frisbee" ×7 → 1.0, "disc" ×1 → 0.3; "t shirt", "don't know" not in vocab.
            targets: vec![(4, 1.0), (5, 0.3)],
        },
        VqaExample {
            question_id: 73000,
            image_id: 73,
            image: ImageRef::new(d.join("COCO_val2014_000000000073.jpg")),
            question: "What color is the cat?".into(),
            answer_type: Some("other".into()),
            question_type: Some("what color is the".into()),
            multiple_choice_answer: Some("black and white".into()),
            answers: [
                rep("black and white", 4),
                rep("black", 3),
                strings(&["gray", "grey", "black & white"]),
            ]
            .concat(),
            // "black" ×3 → 0.9, "black and white" ×4 → 1.0.
            targets: vec![(2, 0.9), (3, 1.0)],
        },
    ];
    assert_eq!(got.examples, want);
    // The images decode (the fixture's JPEGs come from the script's own encoder).
    let img = got.examples[0].image.load_rgb().unwrap();
    assert_eq!(img.dimensions(), (8, 8));
}

#[test]
fn vqa_test_split_has_no_answers() {
    let d = fx().join("vqa/coco");
    let src = VqaSource::coco(
        &d.join("v2_OpenEnded_mscoco_test2015_questions.json"),
        None,
        &d.join("test2015"),
    );
    let got = src.read(Some(&val_vocab()), ReadOptions::STRICT).unwrap();
    assert_eq!(
        got.examples,
        vec![VqaExample {
            question_id: 1000,
            image_id: 1,
            image: ImageRef::new(d.join("test2015/COCO_test2015_000000000001.jpg")),
            question: "What is on the table?".into(),
            answer_type: None,
            question_type: None,
            multiple_choice_answer: None,
            answers: vec![],
            targets: vec![],
        }]
    );
}

#[test]
fn vqa_vocabulary_from_training_annotations() {
    let ann = fx().join("vqa/coco/v2_mscoco_train2014_annotations.json");
    // multiple_choice_answer counts: yes 2; 2, black, frisbee 1 each (ties by text).
    let v = AnswerVocab::build(&ann, 1).unwrap();
    assert_eq!(v.answers(), strings(&["yes", "2", "black", "frisbee"]));
    assert_eq!(v.get("black"), Some(2));
    assert_eq!(v.answer(3), Some("frisbee"));
    assert_eq!(AnswerVocab::build(&ann, 2).unwrap().answers(), ["yes"]);
    assert!(AnswerVocab::build(&ann, 3).unwrap().is_empty());

    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("answers.json");
    v.save(&p).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "[\n  \"yes\",\n  \"2\",\n  \"black\",\n  \"frisbee\"\n]\n"
    );
    assert_eq!(AnswerVocab::load(&p).unwrap(), v);

    // A vocabulary file must hold distinct, normalised answers.
    std::fs::write(&p, r#"["yes", "Two"]"#).unwrap();
    let e = err(AnswerVocab::load(&p));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record answer 1 `Two`: not a normalised answer (normalised: `2`)",
            p.display()
        )
    );
    std::fs::write(&p, r#"["yes", "no", "yes"]"#).unwrap();
    assert!(
        err(AnswerVocab::load(&p))
            .to_string()
            .contains("same as answer 0")
    );
}

#[test]
fn vqa_suite_layout() {
    let root = fx().join("vqa/suite");
    let vocab = AnswerVocab::load(&root.join("answers.json")).unwrap();
    // The suite's answers.json is the vocabulary of its training annotations.
    assert_eq!(
        AnswerVocab::build(&root.join("annotations_train.json"), 1).unwrap(),
        vocab
    );
    let src = VqaSource::suite(&root, "train");
    assert_eq!(src.image_pattern, "{id:012}.png");
    let got = src.read(Some(&vocab), ReadOptions::STRICT).unwrap();
    let img = |id: &str| ImageRef::new(root.join(format!("images/train/{id}.png")));
    type Summary<'a> = (u64, ImageRef, &'a str, Vec<(usize, f32)>);
    let summary: Vec<Summary> = got
        .examples
        .iter()
        .map(|e| {
            (
                e.question_id,
                e.image.clone(),
                e.multiple_choice_answer.as_deref().unwrap(),
                e.targets.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1000, img("000000000001"), "circle", vec![(1, 1.0)]),
            (1001, img("000000000001"), "yes", vec![(2, 1.0)]),
            // "2" ×9 → 1.0; "3" ×1 would be 0.3 but is not in the vocabulary.
            (2000, img("000000000002"), "2", vec![(0, 1.0)]),
        ]
    );
}

#[test]
fn vqa_unknown_answer_is_an_error_or_skipped() {
    let vocab = AnswerVocab::build(
        &fx().join("vqa/coco/v2_mscoco_train2014_annotations.json"),
        1,
    )
    .unwrap();
    let src = coco_val();
    let e = err(src.read(Some(&vocab), ReadOptions::STRICT));
    assert!(matches!(e, DataError::UnknownAnswer { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record question_id 73000: answer `black and white` is not in the answer vocabulary",
            src.annotations.as_ref().unwrap().display()
        )
    );
    // skip_bad alone does not drop unknown answers.
    assert!(matches!(
        err(src.read(Some(&vocab), ReadOptions::SKIP_BAD)),
        DataError::UnknownAnswer { .. }
    ));
    let got = src.read(Some(&vocab), SKIP_UNKNOWN).unwrap();
    let ids: Vec<u64> = got.examples.iter().map(|e| e.question_id).collect();
    assert_eq!(ids, [42000, 42001]);
    assert_eq!(got.skipped_count(SkipKind::UnknownAnswer), 1);
    assert_eq!(got.skipped.len(), 1);
    assert_eq!(got.skipped[0].record, "question_id 73000");
    assert_eq!(got.skipped[0].reason, e.to_string());
    // Targets under the training vocabulary [yes, 2, black, frisbee].
    assert_eq!(got.examples[0].targets, vec![(1, 1.0)]);
    assert_eq!(got.examples[1].targets, vec![(3, 1.0)]);
    // Without a vocabulary: no check and no targets.
    let got = src.read(None, ReadOptions::STRICT).unwrap();
    assert_eq!(got.examples.len(), 3);
    assert!(got.examples.iter().all(|e| e.targets.is_empty()));
}

#[test]
fn vqa_round_trip_through_the_record_types() {
    let src = coco_val();
    let q: QuestionsFile = read_json(&src.questions).unwrap();
    let a: AnnotationsFile = read_json(src.annotations.as_ref().unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (qp, ap) = (tmp.path().join("q.json"), tmp.path().join("a.json"));
    write_json(&qp, &q).unwrap();
    write_json(&ap, &a).unwrap();
    let copy = VqaSource {
        questions: qp,
        annotations: Some(ap),
        ..src.clone()
    };
    let vocab = val_vocab();
    assert_eq!(
        copy.read(Some(&vocab), ReadOptions::STRICT).unwrap(),
        src.read(Some(&vocab), ReadOptions::STRICT).unwrap()
    );
}

/// Writes the val questions and annotations to a temporary folder after `edit`.
fn edited_val(
    edit: impl FnOnce(&mut QuestionsFile, &mut AnnotationsFile),
) -> (tempfile::TempDir, VqaSource) {
    let src = coco_val();
    let mut q: QuestionsFile = read_json(&src.questions).unwrap();
    let mut a: AnnotationsFile = read_json(src.annotations.as_ref().unwrap()).unwrap();
    edit(&mut q, &mut a);
    let tmp = tempfile::tempdir().unwrap();
    let (qp, ap) = (tmp.path().join("q.json"), tmp.path().join("a.json"));
    write_json(&qp, &q).unwrap();
    write_json(&ap, &a).unwrap();
    let s = VqaSource {
        questions: qp,
        annotations: Some(ap),
        ..src
    };
    (tmp, s)
}

#[test]
fn vqa_join_errors_name_both_files_and_the_question() {
    let vocab = val_vocab();
    // An annotation for another question id: the question lacks its annotation…
    let (_t, s) = edited_val(|_, a| a.annotations[1].question_id = 99);
    let (qp, ap) = (
        s.questions.display(),
        s.annotations.as_ref().unwrap().display(),
    );
    assert_eq!(
        err(s.read(Some(&vocab), ReadOptions::STRICT)).to_string(),
        format!("{qp}: record question_id 42001: no annotation with this id in {ap}")
    );
    // …and, skipping, the orphan annotation is reported too.
    let got = s.read(Some(&vocab), ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.len(), 2);
    assert_eq!(got.skipped_count(SkipKind::BadRecord), 2);
    assert_eq!(
        got.skipped[1].reason,
        format!("{ap}: record question_id 99: no question with this id in {qp}")
    );

    // Duplicates are never skipped.
    let (_t, s) = edited_val(|q, _| q.questions[2].question_id = 42000);
    let (qp, ap) = (
        s.questions.display(),
        s.annotations.as_ref().unwrap().display(),
    );
    assert_eq!(
        err(s.read(Some(&vocab), ReadOptions::SKIP_BAD)).to_string(),
        format!(
            "{qp}: record question_id 42000: question id appears more than once (joined with {ap})"
        )
    );
    let (_t, s) = edited_val(|_, a| a.annotations[0].question_id = 73000);
    let (qp, ap) = (
        s.questions.display(),
        s.annotations.as_ref().unwrap().display(),
    );
    assert_eq!(
        err(s.read(Some(&vocab), ReadOptions::SKIP_BAD)).to_string(),
        format!(
            "{ap}: record question_id 73000: question id appears more than once (joined with {qp})"
        )
    );
    // Another image id for the same question.
    let (_t, s) = edited_val(|_, a| a.annotations[2].image_id = 42);
    let (qp, ap) = (
        s.questions.display(),
        s.annotations.as_ref().unwrap().display(),
    );
    assert_eq!(
        err(s.read(Some(&vocab), ReadOptions::STRICT)).to_string(),
        format!("{qp}: record question_id 73000: image_id 73 here but 42 in {ap}")
    );
}

#[test]
fn vqa_missing_image() {
    let vocab = val_vocab();
    let tmp = tempfile::tempdir().unwrap();
    // Only image 73 is there.
    let name = "COCO_val2014_000000000073.jpg";
    std::fs::copy(
        fx().join("vqa/coco/val2014").join(name),
        tmp.path().join(name),
    )
    .unwrap();
    let s = VqaSource {
        image_dir: tmp.path().to_path_buf(),
        ..coco_val()
    };
    let e = err(s.read(Some(&vocab), ReadOptions::STRICT));
    assert!(matches!(e, DataError::MissingImage { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record question_id 42000 (image_id 42): image {} does not exist",
            s.questions.display(),
            tmp.path().join("COCO_val2014_000000000042.jpg").display()
        )
    );
    let got = s.read(Some(&vocab), ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.len(), 1);
    assert_eq!(got.examples[0].question_id, 73000);
    assert_eq!(got.skipped_count(SkipKind::MissingImage), 2);
    let recs: Vec<&str> = got.skipped.iter().map(|s| s.record.as_str()).collect();
    assert_eq!(
        recs,
        [
            "question_id 42000 (image_id 42)",
            "question_id 42001 (image_id 42)"
        ]
    );

    // No image at all: everything skipped leaves an empty split, which is an error.
    let s = VqaSource {
        image_dir: tmp.path().join("none"),
        ..coco_val()
    };
    assert_eq!(
        err(s.read(Some(&vocab), ReadOptions::SKIP_BAD)).to_string(),
        format!("{}: split `val2014` is empty", s.questions.display())
    );
}

#[test]
fn vqa_malformed_json_gives_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("questions.json");
    // Line 4 lacks the comma after `1`: the `"` at column 20 is unexpected (4 spaces,
    // `{` 5, `"image_id"` 6-15, `: ` 16-17, `1` 18, ` ` 19).
    std::fs::write(
        &p,
        "{\n  \"questions\": [\n    {\"image_id\": 1, \"question\": \"What?\", \"question_id\": 1000},\n    {\"image_id\": 1 \"question\": \"Why?\", \"question_id\": 1001}\n  ]\n}\n",
    )
    .unwrap();
    let s = VqaSource {
        questions: p.clone(),
        annotations: None,
        image_dir: tmp.path().to_path_buf(),
        image_pattern: "{id}.png".into(),
    };
    let e = err(s.read(None, ReadOptions::SKIP_BAD));
    assert!(
        matches!(
            e,
            DataError::Json {
                line: 4,
                column: 20,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{}:4:20: expected `,` or `}}`", p.display())
    );
    // A record without a required field: serde names it, at the object's closing `}`
    // (line 2, column 33: `{` 1, `"image_id"` 2-11, `: ` 12-13, `1` 14, `, ` 15-16,
    // `"question_id"` 17-29, `: ` 30-31, `7` 32).
    std::fs::write(
        &p,
        "{\"questions\": [\n{\"image_id\": 1, \"question_id\": 7}]}",
    )
    .unwrap();
    assert_eq!(
        err(s.read(None, ReadOptions::STRICT)).to_string(),
        format!("{}:2:33: missing field `question`", p.display())
    );
}

#[test]
fn vqa_image_patterns() {
    let p = ImagePattern::parse("COCO_{subtype}_{id:012}.jpg").unwrap();
    assert!(p.uses_subtype());
    assert_eq!(p.render(42, "val2014"), "COCO_val2014_000000000042.jpg");
    let p = ImagePattern::parse("{id}.png").unwrap();
    assert!(!p.uses_subtype());
    assert_eq!(p.render(42, "x"), "42.png");
    assert_eq!(
        ImagePattern::parse("img{id:05}").unwrap().render(7, ""),
        "img00007"
    );
    let e = err(ImagePattern::parse("{ident}.png"));
    assert_eq!(
        e.to_string(),
        "image pattern `{ident}.png`: unknown placeholder `{ident}`; valid: {id}, {id:0N} (e.g. {id:012}), {subtype}"
    );
    assert!(ImagePattern::parse("{id.png").is_err());
    assert!(ImagePattern::parse("fixed.png").is_err());
    // {subtype} needs the questions file's data_subtype.
    let (_t, s) = edited_val(|q, _| q.data_subtype.clear());
    assert!(
        err(s.read(None, ReadOptions::STRICT))
            .to_string()
            .contains("uses {subtype} but")
    );
}

// =========================================================================================
// Captions
// =========================================================================================

fn coco_karpathy(split: KarpathySplit, fold_restval: bool) -> KarpathySource {
    KarpathySource {
        file: fx().join("captions/dataset_coco.json"),
        image_root: fx().join("captions/coco"),
        split,
        fold_restval,
    }
}

#[test]
fn karpathy_coco_split_counts() {
    use KarpathySplit::*;
    // (split, fold restval, image ids) — the fixture has 2 train, 1 restval, 1 val, 3 test.
    let cases: [(KarpathySplit, bool, &[u64]); 6] = [
        (Train, false, &[5, 6]),
        (Train, true, &[4, 5, 6]),
        (Restval, false, &[4]),
        (Val, false, &[3]),
        (Val, true, &[3]),
        (Test, false, &[0, 1, 2]),
    ];
    for (split, fold, ids) in cases {
        let got = coco_karpathy(split, fold)
            .read(ReadOptions::STRICT)
            .unwrap();
        assert_eq!(got.examples.image_ids, ids, "{split:?} fold={fold}");
        assert_eq!(got.examples.captions.len(), 2 * ids.len());
    }
    let train = coco_karpathy(Train, true)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    assert_eq!(
        train.images[0],
        ImageRef::new(fx().join("captions/coco/val2014/COCO_val2014_000000554625.jpg"))
    );
    assert_eq!(
        train.images[1],
        ImageRef::new(fx().join("captions/coco/train2014/COCO_train2014_000000000009.jpg"))
    );
    assert_eq!("restval".parse::<KarpathySplit>().unwrap(), Restval);
    assert!("dev".parse::<KarpathySplit>().is_err());
}

fn coco_test_expected(root: &Path, ids: Vec<u64>) -> RetrievalSplit {
    let img = |n: &str| ImageRef::new(root.join(format!("COCO_val2014_000000{n}.jpg")));
    RetrievalSplit {
        images: vec![img("391895"), img("522418"), img("184613")],
        image_ids: ids,
        captions: strings(&[
            "A man with a red helmet on a small moped on a dirt road.",
            "Man riding a motor bike on a dirt road on the countryside.",
            "A woman wearing a net on her head cutting a cake.",
            "A dog sitting on a couch.",
            "A child holding a flowered umbrella and petting a yak.",
            "a dog  sitting on a Couch.",
        ]),
        caption_image: vec![0, 0, 1, 1, 2, 2],
        // Captions 3 and 5 are the same after trimming, lower-casing and collapsing
        // whitespace: either image is a hit for both.
        equivalent: vec![vec![0], vec![0], vec![1], vec![1, 2], vec![2], vec![1, 2]],
    }
}

#[test]
fn karpathy_coco_test_split_reads_to_expected() {
    let got = coco_karpathy(KarpathySplit::Test, false)
        .read(ReadOptions::STRICT)
        .unwrap();
    assert!(got.skipped.is_empty());
    let want = coco_test_expected(&fx().join("captions/coco/val2014"), vec![0, 1, 2]);
    assert_eq!(got.examples, want);
    assert_eq!(
        got.examples.image_hits(),
        vec![vec![0, 1], vec![2, 3, 5], vec![3, 4, 5]]
    );
    assert_eq!(
        got.examples.images[2].load_rgb().unwrap().dimensions(),
        (8, 8)
    );
}

#[test]
fn karpathy_flickr30k() {
    let root = fx().join("captions/flickr30k-images");
    let src = |split| KarpathySource {
        file: fx().join("captions/dataset_flickr30k.json"),
        image_root: root.clone(),
        split,
        fold_restval: true,
    };
    let train = src(KarpathySplit::Train).read(ReadOptions::STRICT).unwrap();
    assert_eq!(train.examples.image_ids, [0, 1]);
    assert_eq!(
        train.examples.images,
        [
            ImageRef::new(root.join("1000092795.jpg")),
            ImageRef::new(root.join("10002456.jpg"))
        ]
    );
    assert_eq!(
        train.examples.captions[1],
        "Two young, White males are outside near many bushes."
    );
    assert_eq!(train.examples.caption_image, [0, 0, 1, 1]);
    let test = src(KarpathySplit::Test).read(ReadOptions::STRICT).unwrap();
    assert_eq!(test.examples.image_ids, [3]);
    // No restval in Flickr30k: an empty split.
    let e = err(src(KarpathySplit::Restval).read(ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: split `restval` is empty",
            fx().join("captions/dataset_flickr30k.json").display()
        )
    );
}

#[test]
fn coco_captions_file() {
    let root = fx().join("captions/coco/val2014");
    let file = fx().join("captions/annotations/captions_val2014.json");
    let got = read_coco_captions(&file, &root, ReadOptions::STRICT).unwrap();
    // Captions regrouped by image (the file interleaves them); the same split as
    // Karpathy's test images, with COCO ids.
    assert_eq!(
        got.examples,
        coco_test_expected(&root, vec![391895, 522418, 184613])
    );

    // Round trip through the record types.
    let mut f: CocoCaptionsFile = read_json(&file).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("captions_val2014.json");
    write_json(&p, &f).unwrap();
    assert_eq!(
        read_coco_captions(&p, &root, ReadOptions::STRICT).unwrap(),
        got
    );

    // A caption of an unknown image.
    f.annotations[4].image_id = 5;
    write_json(&p, &f).unwrap();
    assert_eq!(
        err(read_coco_captions(&p, &root, ReadOptions::STRICT)).to_string(),
        format!(
            "{}: record annotation id 686718: image_id 5 is not among the images",
            p.display()
        )
    );
    let got = read_coco_captions(&p, &root, ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.skipped_count(SkipKind::BadRecord), 1);
    assert_eq!(got.examples.captions.len(), 5);
    // Caption 5 now has no twin.
    assert_eq!(got.examples.equivalent[4], [2]);
}

/// Scores of the 3 Karpathy test images (rows) × 6 captions (columns).
const SCORES: [f32; 18] = [
    0.5, 0.8, 0.1, 0.2, 0.1, 0.9, // image 0
    0.2, 0.1, 0.3, 0.4, 0.5, 0.6, // image 1
    0.1, 0.2, 0.6, 0.7, 0.2, 0.1, // image 2
];

#[test]
fn recall_counts_duplicate_captions_as_hits() {
    let split = coco_karpathy(KarpathySplit::Test, false)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    // Text → image (column c, hits = equivalent[c]):
    // c0 [.5 .2 .1] hit {0}: .5 best → rank 0.   c1 [.8 .1 .2] {0} → 0.
    // c2 [.1 .3 .6] {1}: .3, image 2 higher → 1.
    // c3 [.2 .4 .7] {1,2}: .7 (image 2, the duplicate's owner) → 0 (1 without duplicates).
    // c4 [.1 .5 .2] {2}: .2, image 1 higher → 1.
    // c5 [.9 .6 .1] {1,2}: .6 (image 1), image 0 higher → 1 (2 without duplicates).
    let t2i = split.text_to_image_ranks(&SCORES).unwrap();
    assert_eq!(t2i, [0, 0, 1, 0, 1, 1]);
    assert_eq!(
        split.text_to_image_recall(&SCORES, &[1, 2, 5]).unwrap(),
        [0.5, 1.0, 1.0]
    );
    // Image → text (row i, hits = image_hits[i]):
    // image 0 {c0,c1}: best .8; c5 (.9) higher → 1.
    // image 1 {c2,c3,c5}: best .6 = c5, image 2's copy of its caption → 0 (2 without).
    // image 2 {c3,c4,c5}: best .7 = c3, image 1's copy → 0 (3 without).
    let i2t = split.image_to_text_ranks(&SCORES).unwrap();
    assert_eq!(i2t, [1, 0, 0]);
    assert_eq!(
        split.image_to_text_recall(&SCORES, &[1, 2]).unwrap(),
        [2.0 / 3.0, 1.0]
    );
    assert_eq!(recall_at_k(&i2t, 1), 2.0 / 3.0);
    assert_eq!(recall_at_k(&[], 1), 0.0);

    // Ties count against the query: with all scores equal, a caption's rank is the number
    // of images that are not hits for it.
    let flat = [0.0f32; 18];
    assert_eq!(
        split.text_to_image_ranks(&flat).unwrap(),
        [2, 2, 2, 1, 2, 1]
    );
    assert_eq!(split.image_to_text_ranks(&flat).unwrap(), [4, 3, 3]);

    let e = err(split.text_to_image_ranks(&SCORES[..17]));
    assert_eq!(
        e.to_string(),
        "score matrix: 17 scores, expected 3 images × 6 captions = 18"
    );
    let mut nan = SCORES;
    nan[7] = f32::NAN;
    assert_eq!(
        err(split.image_to_text_ranks(&nan)).to_string(),
        "score matrix: NaN at image 1, caption 1"
    );
}

#[test]
fn equivalent_captions_json() {
    let split = coco_karpathy(KarpathySplit::Test, false)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    let groups = split.equivalent_groups();
    assert_eq!(
        groups,
        vec![EquivalentGroup {
            caption: "a dog sitting on a couch.".into(),
            images: vec![1, 2],
        }]
    );
    assert_eq!(caption_key("  A dog\t sitting  "), "a dog sitting");
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("equivalent_captions.json");
    write_equivalent(&p, &groups).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "[\n  {\n    \"caption\": \"a dog sitting on a couch.\",\n    \"images\": [\n      1,\n      2\n    ]\n  }\n]\n"
    );
    assert_eq!(read_equivalent(&p).unwrap(), groups);
    std::fs::write(&p, r#"[{"caption": "x", "images": [3]}]"#).unwrap();
    assert_eq!(
        err(read_equivalent(&p)).to_string(),
        format!(
            "{}: record group 0 (`x`): needs two or more image ids, sorted and distinct",
            p.display()
        )
    );
    // No duplicates in the train split: no groups.
    let train = coco_karpathy(KarpathySplit::Train, true)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    assert!(train.equivalent_groups().is_empty());
}

#[test]
fn karpathy_round_trip_through_the_record_types() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, root) in [
        ("dataset_coco.json", fx().join("captions/coco")),
        (
            "dataset_flickr30k.json",
            fx().join("captions/flickr30k-images"),
        ),
    ] {
        let file = fx().join("captions").join(name);
        let f: KarpathyFile = read_json(&file).unwrap();
        let copy = tmp.path().join(name);
        write_json(&copy, &f).unwrap();
        // Flickr30k entries keep having neither `filepath` nor `cocoid`.
        let text = std::fs::read_to_string(&copy).unwrap();
        assert_eq!(text.contains("\"filepath\""), name.contains("coco"));
        assert_eq!(text.contains("\"cocoid\""), name.contains("coco"));
        for split in [KarpathySplit::Train, KarpathySplit::Test] {
            let src = KarpathySource {
                file: file.clone(),
                image_root: root.clone(),
                split,
                fold_restval: true,
            };
            let back = KarpathySource {
                file: copy.clone(),
                ..src.clone()
            };
            assert_eq!(
                back.read(ReadOptions::STRICT).unwrap(),
                src.read(ReadOptions::STRICT).unwrap()
            );
        }
    }
}

#[test]
fn karpathy_bad_records() {
    let file = fx().join("captions/dataset_coco.json");
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("dataset.json");
    let src = KarpathySource {
        file: p.clone(),
        ..coco_karpathy(KarpathySplit::Test, false)
    };

    // A missing image.
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[1].filename = "COCO_val2014_000000000001.jpg".into();
    write_json(&p, &f).unwrap();
    let e = err(src.read(ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record imgid 1 (COCO_val2014_000000000001.jpg): image {} does not exist",
            p.display(),
            fx().join("captions/coco/val2014/COCO_val2014_000000000001.jpg")
                .display()
        )
    );
    let got = src.read(ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.skipped_count(SkipKind::MissingImage), 1);
    assert_eq!(got.examples.image_ids, [0, 2]);
    // The duplicate's twin is gone: caption 3 (image 2's) is its own group again.
    assert_eq!(
        got.examples.equivalent,
        [vec![0], vec![0], vec![1], vec![1]]
    );

    // An unknown split name, even in a split not read.
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[6].split = "dev".into();
    write_json(&p, &f).unwrap();
    assert_eq!(
        err(src.read(ReadOptions::STRICT)).to_string(),
        format!(
            "{}: record imgid 6 (COCO_train2014_000000000025.jpg): split `dev`: expected train, restval, val or test",
            p.display()
        )
    );

    // sentids that disagree with the sentences; a duplicate imgid.
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[0].sentids = vec![0, 7];
    write_json(&p, &f).unwrap();
    assert!(err(src.read(ReadOptions::STRICT))
        .to_string()
        .ends_with("record imgid 0 (COCO_val2014_000000391895.jpg): sentids [0, 7] but the sentences' ids are [0, 1]"));
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[2].imgid = 1;
    write_json(&p, &f).unwrap();
    assert!(
        err(src.read(ReadOptions::SKIP_BAD))
            .to_string()
            .ends_with("imgid appears more than once")
    );
}

// =========================================================================================
// NLVR2
// =========================================================================================

#[test]
fn nlvr2_dev_reads_to_expected() {
    let d = fx().join("nlvr2");
    let got = Nlvr2Source {
        file: d.join("dev.json"),
        image_dir: d.join("dev"),
    }
    .read(ReadOptions::STRICT)
    .unwrap();
    let img = |n: &str| ImageRef::new(d.join("dev").join(n));
    assert_eq!(
        got.examples,
        vec![
            Nlvr2Example {
                identifier: "dev-850-0-0".into(),
                sentence: "The left image contains twice the number of dogs as the right image."
                    .into(),
                label: false,
                left: img("dev-850-0-img0.png"),
                right: img("dev-850-0-img1.png"),
            },
            Nlvr2Example {
                identifier: "dev-850-0-1".into(),
                sentence: "There are exactly three dogs in total.".into(),
                label: true,
                left: img("dev-850-0-img0.png"),
                right: img("dev-850-0-img1.png"),
            },
            Nlvr2Example {
                identifier: "dev-12-3-0".into(),
                sentence: "One image shows a single bottle of beer.".into(),
                label: true,
                left: img("dev-12-3-img0.png"),
                right: img("dev-12-3-img1.png"),
            },
        ]
    );
    assert_eq!(
        got.examples[0].right.load_rgb().unwrap().dimensions(),
        (8, 8)
    );
}

#[test]
fn nlvr2_train_uses_directory() {
    let d = fx().join("nlvr2");
    let got = Nlvr2Source {
        file: d.join("train.json"),
        image_dir: d.join("train"),
    }
    .read(ReadOptions::STRICT)
    .unwrap();
    let summary: Vec<(&str, bool, ImageRef, ImageRef)> = got
        .examples
        .iter()
        .map(|e| {
            (
                e.identifier.as_str(),
                e.label,
                e.left.clone(),
                e.right.clone(),
            )
        })
        .collect();
    let img = |n: &str| ImageRef::new(d.join("train").join(n));
    assert_eq!(
        summary,
        vec![
            (
                "train-10171-0-0",
                true,
                img("74/train-10171-0-img0.png"),
                img("74/train-10171-0-img1.png")
            ),
            (
                "train-4100-1-2",
                false,
                img("5/train-4100-1-img0.png"),
                img("5/train-4100-1-img1.png")
            ),
        ]
    );
    assert_eq!(pair_prefix("dev-850-0-0"), Some("dev-850-0"));
    assert_eq!(pair_prefix("test1-0-1-12"), Some("test1-0-1"));
    assert_eq!(pair_prefix("dev850"), None);
    assert_eq!(pair_prefix("dev-850-x"), None);
    assert_eq!(pair_prefix("-0"), None);
    // The suite layout.
    let s = Nlvr2Source::suite(Path::new("task"), "dev");
    assert_eq!(s.file, Path::new("task/dev.json"));
    assert_eq!(s.image_dir, Path::new("task/images/dev"));
}

/// An NLVR2 split in a temporary folder whose images are the dev fixture's.
fn nlvr2_tmp(text: &str) -> (tempfile::TempDir, Nlvr2Source) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dev.json");
    std::fs::write(&file, text).unwrap();
    let s = Nlvr2Source {
        file,
        image_dir: fx().join("nlvr2/dev"),
    };
    (tmp, s)
}

const GOOD_LINE: &str =
    r#"{"identifier": "dev-850-0-0", "sentence": "Two dogs.", "label": "True"}"#;

#[test]
fn nlvr2_malformed_line_gives_line_and_column() {
    // Line 3 (after a blank line): `True` unquoted; its `T` is column 56 (`{` 1,
    // `"identifier"` 2-13, `: ` 14-15, `"dev-12-3-0"` 16-27, `, ` 28-29, `"sentence"` 30-39,
    // `: ` 40-41, `"x"` 42-44, `, ` 45-46, `"label"` 47-53, `: ` 54-55).
    let bad = r#"{"identifier": "dev-12-3-0", "sentence": "x", "label": True}"#;
    let (_t, s) = nlvr2_tmp(&format!("{GOOD_LINE}\n\n{bad}\n"));
    let e = err(s.read(ReadOptions::STRICT));
    assert!(
        matches!(
            e,
            DataError::Json {
                line: 3,
                column: 56,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{}:3:56: expected value", s.file.display())
    );
    let got = s.read(ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.len(), 1);
    assert_eq!(got.skipped_count(SkipKind::Malformed), 1);
    assert_eq!(got.skipped[0].record, "line 3");

    // A missing field: reported at the object's closing `}` (column 45).
    let (_t, s) = nlvr2_tmp(&format!(
        "{GOOD_LINE}\n{}\n",
        r#"{"identifier": "dev-12-3-0", "label": "True"}"#
    ));
    assert_eq!(
        err(s.read(ReadOptions::STRICT)).to_string(),
        format!("{}:2:45: missing field `sentence`", s.file.display())
    );
}

#[test]
fn nlvr2_bad_label_names_identifier_and_line() {
    let (_t, s) = nlvr2_tmp(&format!(
        "{GOOD_LINE}\n{}\n",
        r#"{"identifier": "dev-12-3-0", "sentence": "x", "label": "true"}"#
    ));
    let e = err(s.read(ReadOptions::STRICT));
    assert!(matches!(e, DataError::BadRecord { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record dev-12-3-0 (line 2): label `true`: expected `True` or `False`",
            s.file.display()
        )
    );
    let got = s.read(ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.len(), 1);
    assert_eq!(got.skipped_count(SkipKind::BadRecord), 1);
    assert_eq!(got.skipped[0].record, "dev-12-3-0 (line 2)");

    // A repeated identifier.
    let (_t, s) = nlvr2_tmp(&format!("{GOOD_LINE}\n{GOOD_LINE}\n"));
    assert_eq!(
        err(s.read(ReadOptions::STRICT)).to_string(),
        format!(
            "{}: record dev-850-0-0 (line 2): identifier appears more than once",
            s.file.display()
        )
    );
}

#[test]
fn nlvr2_missing_image_and_empty_split() {
    let (_t, s) = nlvr2_tmp(&format!(
        "{GOOD_LINE}\n{}\n",
        r#"{"identifier": "dev-9-9-0", "sentence": "x", "label": "False"}"#
    ));
    let e = err(s.read(ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record dev-9-9-0 (line 2): image {} does not exist",
            s.file.display(),
            fx().join("nlvr2/dev/dev-9-9-img0.png").display()
        )
    );
    let got = s.read(ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.skipped_count(SkipKind::MissingImage), 1);
    assert_eq!(got.examples.len(), 1);

    let (_t, s) = nlvr2_tmp("\n");
    let e = err(s.read(ReadOptions::STRICT));
    assert!(matches!(e, DataError::EmptySplit { .. }));
    assert_eq!(
        e.to_string(),
        format!("{}: split `dev` is empty", s.file.display())
    );
}

#[test]
fn nlvr2_round_trip_through_the_record_type() {
    let d = fx().join("nlvr2");
    let tmp = tempfile::tempdir().unwrap();
    for split in ["dev", "train"] {
        let src = Nlvr2Source {
            file: d.join(format!("{split}.json")),
            image_dir: d.join(split),
        };
        let records: Vec<nlvr2::Record> = read_jsonl(&src.file, ReadOptions::STRICT)
            .unwrap()
            .examples
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let copy = tmp.path().join(format!("{split}.json"));
        write_jsonl(&copy, &records).unwrap();
        let back = Nlvr2Source {
            file: copy,
            ..src.clone()
        };
        assert_eq!(
            back.read(ReadOptions::STRICT).unwrap(),
            src.read(ReadOptions::STRICT).unwrap()
        );
    }
}

// =========================================================================================
// Image folder
// =========================================================================================

#[test]
fn image_folder_reads_to_expected() {
    let d = fx().join("image_folder/train");
    let got = read_image_folder(&d, &ImageFolderOptions::default()).unwrap();
    assert!(got.skipped.is_empty());
    let ex = |f: &str, label| ImageExample {
        image: ImageRef::new(d.join(f)),
        label,
    };
    assert_eq!(got.examples.classes, ["cat", "dog"]);
    // Byte order: upper case before lower case.
    assert_eq!(
        got.examples.examples,
        vec![
            ex("cat/D.PNG", 0),
            ex("cat/a.png", 0),
            ex("cat/b.jpg", 0),
            ex("cat/c.jpeg", 0),
            ex("dog/x.png", 1),
            ex("dog/y.jpg", 1),
        ]
    );
    for e in &got.examples.examples {
        assert_eq!(e.image.load_rgb().unwrap().dimensions(), (8, 8));
    }
    // The script's JPEG of (30, 160, 60) decodes to about that colour.
    let px = got.examples.examples[2].image.load_rgb().unwrap()[(3, 3)];
    for (c, want) in px.0.iter().zip([30, 160, 60]) {
        assert!((i32::from(*c) - want).abs() <= 3, "{px:?}");
    }

    // A given class list sets the label order.
    let opts = ImageFolderOptions {
        classes: Some(strings(&["dog", "cat"])),
        ..Default::default()
    };
    let d = fx().join("image_folder/val");
    let got = read_image_folder(&d, &opts).unwrap();
    assert_eq!(got.examples.classes, ["dog", "cat"]);
    assert_eq!(
        got.examples.examples,
        vec![
            ImageExample {
                image: ImageRef::new(d.join("dog/v2.png")),
                label: 0
            },
            ImageExample {
                image: ImageRef::new(d.join("cat/v1.png")),
                label: 1
            },
        ]
    );
}

#[test]
fn image_folder_empty_class_and_split() {
    let d = fx().join("image_folder/val");
    let mut opts = ImageFolderOptions {
        classes: Some(strings(&["cat", "dog", "fish"])),
        ..Default::default()
    };
    assert_eq!(
        err(read_image_folder(&d, &opts)).to_string(),
        format!(
            "{}: record class `fish`: has no images (allow_empty_class is off)",
            d.join("fish").display()
        )
    );
    opts.allow_empty_class = true;
    let got = read_image_folder(&d, &opts).unwrap();
    assert_eq!(got.examples.classes, ["cat", "dog", "fish"]);
    assert_eq!(got.examples.examples.len(), 2);

    // A class folder that is not in the given list.
    opts.classes = Some(strings(&["cat"]));
    assert!(
        err(read_image_folder(&d, &opts))
            .to_string()
            .ends_with(r#"record class folder `dog`: not one of the given classes ["cat"]"#)
    );

    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("train");
    std::fs::create_dir_all(split.join("cat")).unwrap();
    let e = err(read_image_folder(&split, &ImageFolderOptions::default()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record class `cat`: has no images (allow_empty_class is off)",
            split.join("cat").display()
        )
    );
    let opts = ImageFolderOptions {
        allow_empty_class: true,
        ..Default::default()
    };
    let e = err(read_image_folder(&split, &opts));
    assert!(matches!(e, DataError::EmptySplit { .. }));
    assert_eq!(
        e.to_string(),
        format!("{}: split `train` is empty", split.display())
    );
}

#[test]
fn image_folder_non_images_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("train");
    std::fs::create_dir_all(split.join("cat")).unwrap();
    std::fs::copy(
        fx().join("image_folder/train/cat/a.png"),
        split.join("cat/a.png"),
    )
    .unwrap();
    std::fs::write(split.join("cat/notes.txt"), "x").unwrap();
    std::fs::write(split.join("cat/.DS_Store"), "x").unwrap();
    std::fs::write(split.join("README"), "x").unwrap();
    let e = err(read_image_folder(&split, &ImageFolderOptions::default()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record file `README`: not in a class folder of {}",
            split.join("README").display(),
            split.display()
        )
    );
    let opts = ImageFolderOptions {
        read: ReadOptions::SKIP_BAD,
        ..Default::default()
    };
    let got = read_image_folder(&split, &opts).unwrap();
    assert_eq!(got.examples.examples.len(), 1);
    // Hidden files are not records; the other two are listed.
    let recs: Vec<&str> = got.skipped.iter().map(|s| s.record.as_str()).collect();
    assert_eq!(recs, ["file `README`", "file `cat/notes.txt`"]);
}

// =========================================================================================
// Text classification
// =========================================================================================

#[test]
fn text_sst2_tsv_reads_to_expected() {
    let got = read_text_cls(
        &fx().join("text_cls/sst2/train.tsv"),
        None,
        ReadOptions::STRICT,
    )
    .unwrap();
    let ex = |t: &str, label| TextExample {
        text: t.into(),
        label,
    };
    assert_eq!(got.examples.labels, ["0", "1"]);
    assert_eq!(
        got.examples.examples,
        vec![
            ex("hide new secretions from the parental units ", 0),
            ex("contains no wit , only labored gags ", 0),
            ex(
                "that loves its characters and communicates something rather beautiful about human nature ",
                1
            ),
            ex(
                "remains utterly satisfied to remain the same throughout ",
                0
            ),
        ]
    );
    // dev has both labels too; with the train labels given, indices agree.
    let labels = got.examples.labels.clone();
    let dev = read_text_cls(
        &fx().join("text_cls/sst2/dev.tsv"),
        Some(&labels),
        ReadOptions::STRICT,
    )
    .unwrap();
    assert_eq!(dev.examples.examples[0].label, 1);
}

#[test]
fn text_jsonl_reads_to_expected() {
    let got = read_text_cls(
        &fx().join("text_cls/suite/train.jsonl"),
        None,
        ReadOptions::STRICT,
    )
    .unwrap();
    let ex = |t: &str, label| TextExample {
        text: t.into(),
        label,
    };
    assert_eq!(got.examples.labels, ["ham", "spam"]);
    assert_eq!(
        got.examples.examples,
        vec![
            ex("Win a FREE cruise, reply now!", 1),
            ex("Are we still meeting at noon?", 0),
            ex("Cheap meds, no prescription needed", 1),
        ]
    );
}

#[test]
fn text_unknown_label() {
    let p = fx().join("text_cls/suite/train.jsonl");
    let labels = strings(&["spam"]);
    let e = err(read_text_cls(&p, Some(&labels), ReadOptions::STRICT));
    assert!(matches!(e, DataError::UnknownAnswer { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record line 2: answer `ham` is not in the answer vocabulary",
            p.display()
        )
    );
    let got = read_text_cls(&p, Some(&labels), SKIP_UNKNOWN).unwrap();
    assert_eq!(got.examples.examples.len(), 2);
    assert_eq!(got.skipped_count(SkipKind::UnknownAnswer), 1);
    assert!(matches!(
        err(read_text_cls(
            &p,
            Some(&strings(&["a", "a"])),
            ReadOptions::STRICT
        )),
        DataError::Invalid { .. }
    ));
}

#[test]
fn text_tsv_errors_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("train.tsv");
    std::fs::write(&p, "sentence\tscore\ngood film\t1\n").unwrap();
    let e = err(read_text_cls(&p, None, ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record line 1 (header): columns [\"sentence\", \"score\"]: no `label`; expected a header row with a `label` column and a `sentence` or `text` column",
            p.display()
        )
    );
    std::fs::write(&p, "id\tlabel\n").unwrap();
    assert!(
        err(read_text_cls(&p, None, ReadOptions::STRICT))
            .to_string()
            .contains("no `sentence` or `text`")
    );

    // A row with a missing field (line 3), and one with an empty text (line 4).
    std::fs::write(
        &p,
        "sentence\tlabel\ngood film\t1\nbad film\n\t0\nok film\t1\n",
    )
    .unwrap();
    assert_eq!(
        err(read_text_cls(&p, None, ReadOptions::STRICT)).to_string(),
        format!(
            "{}: record line 3: 1 tab-separated fields, expected 2 as in the header [\"sentence\", \"label\"]",
            p.display()
        )
    );
    let got = read_text_cls(&p, None, ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.examples.len(), 2);
    let recs: Vec<&str> = got.skipped.iter().map(|s| s.record.as_str()).collect();
    assert_eq!(recs, ["line 3", "line 4"]);
    assert!(got.skipped[1].reason.ends_with("record line 4: empty text"));

    // Only a header: an empty split.
    std::fs::write(&p, "sentence\tlabel\n").unwrap();
    assert_eq!(
        err(read_text_cls(&p, None, ReadOptions::STRICT)).to_string(),
        format!("{}: split `train` is empty", p.display())
    );
}

#[test]
fn text_jsonl_malformed_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("dev.jsonl");
    // Line 2: the object is not closed; serde reports the EOF at the line's last
    // character, column 29 (`{` 1, `"text"` 2-7, `: ` 8-9, `"oops"` 10-15, `, ` 16-17,
    // `"label"` 18-24, `: ` 25-26, `"b"` 27-29).
    std::fs::write(
        &p,
        "{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"oops\", \"label\": \"b\"\n",
    )
    .unwrap();
    let e = err(read_text_cls(&p, None, ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!("{}:2:29: EOF while parsing an object", p.display())
    );
    let got = read_text_cls(&p, None, ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.labels, ["a"]);
    assert_eq!(got.skipped_count(SkipKind::Malformed), 1);
}

#[test]
fn text_round_trip_tsv_to_jsonl() {
    let tsv = fx().join("text_cls/sst2/train.tsv");
    let records: Vec<text_cls::Record> = text_cls::read_tsv(&tsv, ReadOptions::STRICT)
        .unwrap()
        .examples
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("train.jsonl");
    write_jsonl(&p, &records).unwrap();
    assert_eq!(
        read_text_cls(&p, None, ReadOptions::STRICT).unwrap(),
        read_text_cls(&tsv, None, ReadOptions::STRICT).unwrap()
    );
}

// =========================================================================================
// Segmentation
// =========================================================================================

#[test]
fn segmentation_reads_to_expected() {
    let root = fx().join("segmentation");
    let got = read_segmentation(&root, "train", ReadOptions::STRICT).unwrap();
    let d = root.join("train");
    assert_eq!(got.examples.classes, ["background", "circle", "square"]);
    assert_eq!(
        got.examples.examples,
        vec![
            SegExample {
                stem: "s0".into(),
                image: ImageRef::new(d.join("images/s0.png")),
                mask: d.join("masks/s0.png"),
            },
            SegExample {
                stem: "s1".into(),
                image: ImageRef::new(d.join("images/s1.jpg")),
                mask: d.join("masks/s1.png"),
            },
        ]
    );
    // s0: left half background, right half circle, top-left pixel ignored.
    let row = [0, 0, 0, 0, 1, 1, 1, 1];
    let mut data: Vec<u8> = row.repeat(8);
    data[0] = IGNORE;
    assert_eq!(
        load_mask(&d.join("masks/s0.png"), 3).unwrap(),
        Mask {
            width: 8,
            height: 8,
            data
        }
    );
    let (img, mask) = got.examples.examples[1].load(3).unwrap();
    assert_eq!(img.dimensions(), (8, 8));
    assert_eq!(mask.data, [[2u8; 56].as_slice(), &[IGNORE; 8]].concat());
    // With only 2 classes, s1's value 2 is out of range.
    assert_eq!(
        err(load_mask(&d.join("masks/s1.png"), 2)).to_string(),
        format!(
            "{}: image: pixel (0, 0) has value 2: not a class index (0..2) nor 255 (ignore)",
            d.join("masks/s1.png").display()
        )
    );
}

#[test]
fn segmentation_bad_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("classes.txt"), "background\nthing").unwrap();
    assert_eq!(
        read_classes(&root.join("classes.txt")).unwrap(),
        ["background", "thing"]
    );
    let images = root.join("train/images");
    let masks = root.join("train/masks");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("a.png"))
        .unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("b.png"))
        .unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("c.png"))
        .unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("d.png"))
        .unwrap();
    // a: RGB mask; b: a value 5 at (3, 2); c: 4x4; d: 16-bit grey.
    image::RgbImage::new(8, 8)
        .save(masks.join("a.png"))
        .unwrap();
    let mut b = image::GrayImage::new(8, 8);
    b.put_pixel(3, 2, image::Luma([5]));
    b.put_pixel(4, 2, image::Luma([255]));
    b.save(masks.join("b.png")).unwrap();
    image::GrayImage::new(4, 4)
        .save(masks.join("c.png"))
        .unwrap();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(8, 8)
        .save(masks.join("d.png"))
        .unwrap();
    let got = read_segmentation(root, "train", ReadOptions::STRICT).unwrap();
    let ex = &got.examples.examples;
    assert_eq!(ex.len(), 4);
    let msg = |i: usize| err(ex[i].load(2)).to_string();
    assert_eq!(
        msg(0),
        format!(
            "{}: image: a mask must be 8-bit greyscale, found Rgb8",
            masks.join("a.png").display()
        )
    );
    assert_eq!(
        msg(1),
        format!(
            "{}: image: pixel (3, 2) has value 5: not a class index (0..2) nor 255 (ignore)",
            masks.join("b.png").display()
        )
    );
    assert_eq!(
        msg(2),
        format!(
            "{}: image: mask is 4x4 but image {} is 8x8",
            masks.join("c.png").display(),
            images.join("c.png").display()
        )
    );
    assert_eq!(
        msg(3),
        format!(
            "{}: image: a mask must be 8-bit greyscale, found L16",
            masks.join("d.png").display()
        )
    );

    // A JPEG mask is rejected even with a .png name.
    std::fs::copy(
        fx().join("segmentation/train/images/s1.jpg"),
        masks.join("a.png"),
    )
    .unwrap();
    assert!(msg(0).ends_with("image: a mask must be a PNG file, found Some(Jpeg)"));

    // An image without a mask, a mask without an image.
    std::fs::remove_file(masks.join("b.png")).unwrap();
    std::fs::write(masks.join("z.png"), "").unwrap();
    let e = err(read_segmentation(root, "train", ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record mask `z.png`: no image `z.*` in {}",
            masks.join("z.png").display(),
            images.display()
        )
    );
    std::fs::remove_file(masks.join("z.png")).unwrap();
    let e = err(read_segmentation(root, "train", ReadOptions::STRICT));
    assert!(matches!(e, DataError::MissingImage { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record image `b`: image {} does not exist",
            images.join("b.png").display(),
            masks.join("b.png").display()
        )
    );
    let got = read_segmentation(root, "train", ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.examples.len(), 3);
    assert_eq!(got.skipped_count(SkipKind::MissingImage), 1);

    // classes.txt problems.
    std::fs::write(root.join("classes.txt"), "a\n\nb\n").unwrap();
    assert!(
        err(read_classes(&root.join("classes.txt")))
            .to_string()
            .ends_with("record line 2: empty class name")
    );
    std::fs::write(root.join("classes.txt"), "a\nb\na\n").unwrap();
    assert!(
        err(read_classes(&root.join("classes.txt")))
            .to_string()
            .ends_with("record line 3: class `a` repeats line 1")
    );
}

#[test]
fn segmentation_empty_split() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("classes.txt"), "background\n").unwrap();
    std::fs::create_dir_all(root.join("val/images")).unwrap();
    std::fs::create_dir_all(root.join("val/masks")).unwrap();
    let e = err(read_segmentation(root, "val", ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: split `val` is empty",
            root.join("val/images").display()
        )
    );
}

#[test]
fn suite_constructors_follow_the_suite_layout() {
    // The suite constructors follow crate::suite's layout.
    let s = KarpathySource::suite(Path::new("task"), KarpathySplit::Test);
    assert_eq!(s.file, Path::new("task/dataset.json"));
    assert_eq!(s.image_root, Path::new("task"));
    assert!(!s.fold_restval);
    let v = VqaSource::suite(Path::new("task"), "val");
    assert_eq!(v.questions, Path::new("task/questions_val.json"));
    assert_eq!(
        v.annotations.as_deref(),
        Some(Path::new("task/annotations_val.json"))
    );
    assert_eq!(v.image_dir, Path::new("task/images/val"));
}

#[test]
fn chance_recall_and_groups_count_shared_captions() {
    use mmerge_data::formats::captions::{
        KarpathyImage, KarpathySentence, chance_recall, equivalent_groups_of,
    };
    let img = |id: u64, split: &str, caps: &[&str]| KarpathyImage {
        filepath: None,
        filename: format!("{id}.png"),
        imgid: id,
        split: split.into(),
        sentences: caps
            .iter()
            .map(|c| KarpathySentence {
                tokens: vec![],
                raw: c.to_string(),
                imgid: id,
                sentid: id,
            })
            .collect(),
        sentids: vec![id],
        cocoid: None,
    };
    // Test split: N = 4 images; "A red" is shared by images 0 and 1 (h = 2), the others h = 1.
    let images = vec![
        img(0, "test", &["a red"]),
        img(1, "test", &["A  red"]),
        img(2, "test", &["b"]),
        img(3, "test", &["c"]),
        img(4, "train", &["b"]),
    ];
    // R@1: (2/4 + 2/4 + 1/4 + 1/4) / 4 = 0.375.
    assert!((chance_recall(&images, "test", 1) - 0.375).abs() < 1e-12);
    // R@2: h = 2 misses both with (2/4)(1/3) = 1/6, h = 1 with (3/4)(2/3) = 1/2:
    // (5/6 + 5/6 + 1/2 + 1/2) / 4 = 2/3.
    assert!((chance_recall(&images, "test", 2) - 2.0 / 3.0).abs() < 1e-12);
    assert!((chance_recall(&images, "test", 4) - 1.0).abs() < 1e-12);
    // Groups span splits ("b" in test and train), keyed by the normalised caption.
    let groups = equivalent_groups_of(&images);
    let got: Vec<(&str, &[u64])> = groups
        .iter()
        .map(|g| (g.caption.as_str(), g.images.as_slice()))
        .collect();
    assert_eq!(got, [("a red", &[0u64, 1][..]), ("b", &[2, 4][..])]);
}
