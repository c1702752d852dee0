#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The NLVR2 reader against the fixtures written by `datasets/fixtures/make_fixtures.py`
//! (exact official formats, tiny), and every bad-input case against small files written here.

mod common;

use common::{err, fx};
use mmerge_data::DataError;
use mmerge_data::formats::nlvr2::{self, Nlvr2Example, Nlvr2Source, pair_prefix};
use mmerge_data::formats::{ReadOptions, SkipKind, read_jsonl, write_jsonl};
use mmerge_data::image::ImageRef;

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
