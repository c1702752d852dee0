#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The text classification reader against the fixtures written by `datasets/fixtures/make_fixtures.py`
//! (exact official formats, tiny), and every bad-input case against small files written here.

mod common;

use common::{SKIP_UNKNOWN, err, fx, strings};
use mmerge_data::DataError;
use mmerge_data::formats::text_cls::{self, TextExample, read_text_cls};
use mmerge_data::formats::{ReadOptions, SkipKind, write_jsonl};

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
        DataError::DuplicateLabel { label, .. } if label == "a"
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
