#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The VQA v2 reader against the fixtures written by `datasets/fixtures/make_fixtures.py`
//! (exact official formats, tiny), and every bad-input case against small files written here.

mod common;

use common::{SKIP_UNKNOWN, err, fx, strings};
use mmerge_data::DataError;
use mmerge_data::formats::vqa::{
    AnnotationsFile, AnswerVocab, ImagePattern, QuestionsFile, VqaExample, VqaSource,
    normalize_answer,
};
use mmerge_data::formats::{ReadOptions, SkipKind, read_json, write_json};
use mmerge_data::image::ImageRef;
use mmerge_data::layout::SplitFiles;
use mmerge_data::suite::Suite;

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
    let suite = Suite::open(&fx()).unwrap();
    let Ok(SplitFiles::Vqa { source: src, .. }) = suite.task("vqa_suite").unwrap().files("train")
    else {
        panic!("not a VQA task")
    };
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
fn vqa_unknown_answer_is_an_error_or_skipped_or_kept() {
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
    // Kept: every question, targets from the in-vocabulary human answers only, human
    // answers intact for the official score.
    let keep = ReadOptions {
        keep_unknown_answers: true,
        ..SKIP_UNKNOWN
    };
    let got = src.read(Some(&vocab), keep).unwrap();
    let ids: Vec<u64> = got.examples.iter().map(|e| e.question_id).collect();
    assert_eq!(ids, [42000, 42001, 73000]);
    assert!(got.skipped.is_empty());
    let kept = &got.examples[2];
    assert!(kept.answers.iter().any(|a| a == "black and white"));
    assert!(
        kept.targets.iter().all(|&(i, _)| vocab
            .answer(i)
            .is_some_and(|a| kept.answers.iter().any(|h| h == a))),
        "{:?}",
        kept.targets
    );
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
