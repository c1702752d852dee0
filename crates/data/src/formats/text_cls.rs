//! Text classification in GLUE style: a TSV with a header row (`sentence`/`text` and `label`
//! columns), or JSON Lines with `text` and `label` fields.
//!
//! Source: the GLUE tasks' TSV files (<https://gluebenchmark.com/tasks>; SST-2's
//! `train.tsv` / `dev.tsv` are `sentence<TAB>label` with a header row). Our suites write
//! `<split>.jsonl` with `text` and `label` ([`Record`]).
//!
//! Deviations: only files with a header row are read (CoLA's header-less files are not);
//! the test files' unlabelled rows are not supported (every row needs a label); fields are
//! split on tabs with no quoting or escapes (as GLUE writes them); the label is trimmed,
//! the text kept as is; labels are strings (`0`/`1` in SST-2) mapped to indices through a
//! label vocabulary.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Loaded, ReadOptions, Skipper, bad, lines, parse_json_line, split_name};
use crate::error::{DataError, Result};

/// One JSON Lines record (also the typed form of a TSV row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub text: String,
    pub label: String,
}

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// Tab-separated, with a header row.
    Tsv,
    /// One `{"text": ..., "label": ...}` object per line.
    JsonLines,
}

impl TextFormat {
    /// By extension: `.tsv`, or `.jsonl` / `.json`.
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("tsv") => Ok(Self::Tsv),
            Some("jsonl" | "json") => Ok(Self::JsonLines),
            _ => Err(DataError::UnknownExtension {
                path: path.to_path_buf(),
                expected: ".tsv, .jsonl or .json (text classification)",
            }),
        }
    }
}

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    pub text: String,
    /// Index into [`TextSplit::labels`].
    pub label: usize,
}

/// A split: the label vocabulary and the examples in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSplit {
    pub labels: Vec<String>,
    pub examples: Vec<TextExample>,
}

/// Reads the raw records of a GLUE-style TSV file. The header row must have a `label`
/// column and exactly one of `sentence` / `text`; other columns are ignored. Every row must
/// have as many fields as the header (no quoting: a field is everything between tabs).
/// Errors name the line and what was expected; an empty text is a bad record.
pub fn read_tsv(path: &Path, opts: ReadOptions) -> Result<Loaded<Vec<(usize, Record)>>> {
    let mut rows = lines(path)?.into_iter();
    let Some((hline, header)) = rows.next() else {
        return Err(DataError::EmptySplit {
            path: path.to_path_buf(),
            split: split_name(path),
        });
    };
    let header = utf8(path, hline, &header)?;
    let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
    let find = |name: &str| cols.iter().position(|c| *c == name);
    let expected = "a header row with a `label` column and a `sentence` or `text` column";
    let text_col = match (find("sentence"), find("text")) {
        (Some(i), None) | (None, Some(i)) => i,
        (Some(_), Some(_)) => {
            return Err(bad(
                path,
                format!("line {hline} (header)"),
                format!("has both `sentence` and `text` columns; expected {expected}"),
            ));
        }
        (None, None) => {
            return Err(bad(
                path,
                format!("line {hline} (header)"),
                format!("columns {cols:?}: no `sentence` or `text`; expected {expected}"),
            ));
        }
    };
    let label_col = find("label").ok_or_else(|| {
        bad(
            path,
            format!("line {hline} (header)"),
            format!("columns {cols:?}: no `label`; expected {expected}"),
        )
    })?;
    let mut skipper = Skipper::new(opts);
    let mut out = Vec::new();
    for (n, row) in rows {
        let r = utf8(path, n, &row).and_then(|row| {
            let fields: Vec<&str> = row.split('\t').collect();
            if fields.len() != cols.len() {
                return Err(bad(
                    path,
                    format!("line {n}"),
                    format!(
                        "{} tab-separated fields, expected {} as in the header {cols:?}",
                        fields.len(),
                        cols.len()
                    ),
                ));
            }
            Ok(Record {
                text: fields[text_col].to_string(),
                label: fields[label_col].trim().to_string(),
            })
        });
        if let Some(rec) = skipper.check(r.and_then(|rec| checked(path, n, rec)))? {
            out.push((n, rec));
        }
    }
    Ok(skipper.finish(out))
}

fn utf8<'a>(path: &Path, line: usize, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        bad(
            path,
            format!("line {line}"),
            format!("not UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
        )
    })
}

/// Rejects an empty text or label.
fn checked(path: &Path, line: usize, rec: Record) -> Result<Record> {
    if rec.text.trim().is_empty() {
        return Err(bad(path, format!("line {line}"), "empty text"));
    }
    if rec.label.is_empty() {
        return Err(bad(path, format!("line {line}"), "empty label"));
    }
    Ok(rec)
}

/// Reads the raw records of a JSON Lines file (`text` and `label`, both strings; other
/// fields are ignored). An empty text or label is a bad record.
pub fn read_text_jsonl(path: &Path, opts: ReadOptions) -> Result<Loaded<Vec<(usize, Record)>>> {
    let mut skipper = Skipper::new(opts);
    let mut out = Vec::new();
    for (n, l) in lines(path)? {
        let r = parse_json_line::<Record>(path, n, &l).and_then(|rec| checked(path, n, rec));
        if let Some(rec) = skipper.check(r)? {
            out.push((n, rec));
        }
    }
    Ok(skipper.finish(out))
}

/// Reads a text classification file (format by extension, see [`TextFormat::from_path`]).
/// Labels are `labels` when given (in that order; a label outside it is
/// [`DataError::UnknownAnswer`], skippable with [`ReadOptions::skip_unknown`]), else the
/// distinct labels of the file sorted by bytes (so `10` sorts before `2`). No examples is
/// [`DataError::EmptySplit`].
pub fn read_text_cls(
    path: &Path,
    labels: Option<&[String]>,
    opts: ReadOptions,
) -> Result<Loaded<TextSplit>> {
    let raw = match TextFormat::from_path(path)? {
        TextFormat::Tsv => read_tsv(path, opts)?,
        TextFormat::JsonLines => read_text_jsonl(path, opts)?,
    };
    let labels: Vec<String> = match labels {
        Some(l) => {
            if let Some(label) = super::first_duplicate(l) {
                return Err(DataError::DuplicateLabel {
                    list: "label list",
                    label,
                });
            }
            l.to_vec()
        }
        None => {
            let mut l: Vec<String> = raw.examples.iter().map(|(_, r)| r.label.clone()).collect();
            l.sort();
            l.dedup();
            l
        }
    };
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut skipper = Skipper::new(opts);
    skipper.skipped = raw.skipped;
    let mut examples = Vec::with_capacity(raw.examples.len());
    for (n, rec) in raw.examples {
        let r = match index.get(rec.label.as_str()) {
            Some(&label) => Ok(TextExample {
                text: rec.text,
                label,
            }),
            None => Err(DataError::UnknownAnswer {
                path: path.to_path_buf(),
                record: format!("line {n}"),
                answer: rec.label,
            }),
        };
        if let Some(ex) = skipper.check(r)? {
            examples.push(ex);
        }
    }
    if examples.is_empty() {
        return Err(DataError::EmptySplit {
            path: path.to_path_buf(),
            split: split_name(path),
        });
    }
    Ok(skipper.finish(TextSplit { labels, examples }))
}
