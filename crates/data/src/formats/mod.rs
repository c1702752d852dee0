//! Readers (and the record types, for writers) of the standard dataset formats. Our built
//! suites are written in these same formats, so the same readers serve a real download and a
//! generated suite.
//!
//! Each submodule starts with the format's official records as serde types (field names as in
//! the official files), then the reader that validates them and turns them into typed examples.
//!
//! # Bad records and skipping
//!
//! Every reader takes [`ReadOptions`]. By default the first bad record is an error that names
//! the file and the record (question id, identifier, line, ...). Nothing is ever dropped
//! silently: with [`ReadOptions::skip_bad`] (or [`ReadOptions::skip_unknown`] for answers and
//! labels outside a given vocabulary) the reader drops the record and lists it in
//! [`Loaded::skipped`], with the message the error would have had, so callers can report it.
//!
//! What can be skipped: a malformed JSON Lines line, a record that parses but is wrong
//! ([`DataError::BadRecord`]), a record whose image is missing ([`DataError::MissingImage`]),
//! and (with `skip_unknown`) an answer or label outside the vocabulary
//! ([`DataError::UnknownAnswer`]). What never is: a file that cannot be read, a whole JSON
//! file that does not parse, ambiguous input (a duplicate id in a file that is joined on ids),
//! a bad option, and a split left empty ([`DataError::EmptySplit`]).
//!
//! Shared conventions: JSON errors carry the 1-based line and column in the file (for JSON
//! Lines, the file's line and the column within it); blank (whitespace-only) lines of JSON
//! Lines and TSV files are not records and are passed over; images are checked to exist
//! when the records are read and decoded only when used ([`crate::image::ImageRef`]).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DataError, Result, encode, io};
use crate::image::ImageRef;

pub mod captions;
pub mod image_folder;
pub mod nlvr2;
pub mod segmentation;
pub mod text_cls;
pub mod vqa;

/// What a reader does with a bad record. The default is strict: the first bad record is an
/// error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Drop records that are malformed, inconsistent or whose image is missing, and list them
    /// in [`Loaded::skipped`] instead of failing.
    pub skip_bad: bool,
    /// Drop records whose answer (VQA `multiple_choice_answer`) or label is not in the
    /// vocabulary given to the reader, and list them in [`Loaded::skipped`].
    pub skip_unknown: bool,
    /// Keep a VQA question whose `multiple_choice_answer` is not in the vocabulary (its soft
    /// targets are those of its human answers that are; possibly none): what training on, and
    /// the official scoring of, a real VQA v2 split need. Takes precedence over
    /// `skip_unknown` for answers.
    pub keep_unknown_answers: bool,
}

impl ReadOptions {
    /// Fail on the first bad record (the default).
    pub const STRICT: Self = Self {
        skip_bad: false,
        skip_unknown: false,
        keep_unknown_answers: false,
    };
    /// Skip (and list) bad records, but fail on unknown answers.
    pub const SKIP_BAD: Self = Self {
        skip_bad: true,
        skip_unknown: false,
        keep_unknown_answers: false,
    };
}

/// Why a record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipKind {
    /// A JSON Lines line that does not parse or lacks a field ([`DataError::Json`]).
    Malformed,
    /// A record that parses but is wrong ([`DataError::BadRecord`]).
    BadRecord,
    /// A record whose image (or mask) is not on disk ([`DataError::MissingImage`]).
    MissingImage,
    /// An answer or label outside the vocabulary given ([`DataError::UnknownAnswer`]).
    UnknownAnswer,
}

/// One skipped record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The record as the error names it (`question_id 42`, `line 7`, ...).
    pub record: String,
    pub kind: SkipKind,
    /// The full message the error would have had (it names the file and the record).
    pub reason: String,
}

/// What a reader returns: the examples, and the records it dropped because the options asked
/// for it (always empty with [`ReadOptions::STRICT`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    pub examples: T,
    pub skipped: Vec<Skipped>,
}

impl<T> Loaded<T> {
    /// How many records were skipped for the given reason.
    pub fn skipped_count(&self, kind: SkipKind) -> usize {
        self.skipped.iter().filter(|s| s.kind == kind).count()
    }
}

/// Applies [`ReadOptions`] to per-record results: a skippable error is recorded and turned
/// into `None`, anything else is returned.
#[derive(Debug)]
pub(crate) struct Skipper {
    opts: ReadOptions,
    skipped: Vec<Skipped>,
}

impl Skipper {
    pub(crate) fn new(opts: ReadOptions) -> Self {
        Self {
            opts,
            skipped: Vec::new(),
        }
    }

    /// `Ok(Some(x))` for a good record, `Ok(None)` for a skipped one, `Err` otherwise.
    pub(crate) fn check<T>(&mut self, r: Result<T>) -> Result<Option<T>> {
        let e = match r {
            Ok(x) => return Ok(Some(x)),
            Err(e) => e,
        };
        let (record, kind) = match &e {
            DataError::Json { line, .. } => (format!("line {line}"), SkipKind::Malformed),
            DataError::BadRecord { record, .. } => (record.clone(), SkipKind::BadRecord),
            DataError::MissingImage { record, .. } => (record.clone(), SkipKind::MissingImage),
            DataError::UnknownAnswer { record, .. } => (record.clone(), SkipKind::UnknownAnswer),
            _ => return Err(e),
        };
        let skip = match kind {
            SkipKind::UnknownAnswer => self.opts.skip_unknown,
            _ => self.opts.skip_bad,
        };
        if !skip {
            return Err(e);
        }
        self.skipped.push(Skipped {
            record,
            kind,
            reason: e.to_string(),
        });
        Ok(None)
    }

    pub(crate) fn finish<T>(self, examples: T) -> Loaded<T> {
        Loaded {
            examples,
            skipped: self.skipped,
        }
    }
}

/// serde_json's message without its trailing " at line L column C".
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&suffix) {
        Some(m) => m.to_string(),
        None => msg,
    }
}

/// A [`DataError::Json`] for `path`; `line` overrides serde's line (for JSON Lines, where
/// each line is parsed on its own).
pub(crate) fn json_error(path: &Path, e: &serde_json::Error, line: Option<usize>) -> DataError {
    DataError::Json {
        path: path.to_path_buf(),
        line: line.unwrap_or_else(|| e.line()),
        column: e.column(),
        reason: json_reason(e),
    }
}

/// The first value (in sorted order) that occurs more than once in `items`, if any.
pub(crate) fn first_duplicate<T: Ord + Clone>(items: &[T]) -> Option<T> {
    let mut sorted = items.to_vec();
    sorted.sort_unstable();
    sorted
        .windows(2)
        .find(|w| w[0] == w[1])
        .map(|w| w[0].clone())
}

/// Reads a whole JSON file into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = io(path, std::fs::read(path))?;
    serde_json::from_slice(strip_bom(&bytes)).map_err(|e| json_error(path, &e, None))
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// The non-blank lines of a text file as (1-based line number, bytes without the line end).
pub(crate) fn lines(path: &Path) -> Result<Vec<(usize, Vec<u8>)>> {
    let bytes = io(path, std::fs::read(path))?;
    let bytes = strip_bom(&bytes);
    Ok(bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(n, l)| (n, l.to_vec()))
        .collect())
}

/// Parses one JSON Lines line; errors point at the file's line and the column in it.
pub(crate) fn parse_json_line<T: DeserializeOwned>(
    path: &Path,
    line: usize,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| json_error(path, &e, Some(line)))
}

/// Reads every record of a JSON Lines file (each with its 1-based line number); malformed
/// lines are errors or, with `skip_bad`, listed as skipped.
pub fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    opts: ReadOptions,
) -> Result<Loaded<Vec<(usize, T)>>> {
    let mut skipper = Skipper::new(opts);
    let mut out = Vec::new();
    for (n, l) in lines(path)? {
        if let Some(r) = skipper.check(parse_json_line(path, n, &l))? {
            out.push((n, r));
        }
    }
    Ok(skipper.finish(out))
}

/// Writes `value` as pretty-printed JSON with a trailing newline
/// ([`mmerge_core::json::to_pretty`]), atomically ([`mmerge_core::atomic::write_atomic`]).
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let bytes = mmerge_core::json::to_pretty(&value).map_err(|e| encode(path, &e))?;
    Ok(mmerge_core::atomic::write_atomic(path, &bytes)?)
}

/// Writes one compact JSON object per line ([`mmerge_core::json::to_lines`]), atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, values: &[T]) -> Result<()> {
    let bytes = mmerge_core::json::to_lines(values).map_err(|e| encode(path, &e))?;
    Ok(mmerge_core::atomic::write_atomic(path, &bytes)?)
}

/// An [`ImageRef`] for `image`, or [`DataError::MissingImage`] naming the file `path` whose
/// record `record` refers to it.
pub(crate) fn existing_image(path: &Path, record: &str, image: PathBuf) -> Result<ImageRef> {
    if image.is_file() {
        Ok(ImageRef::new(image))
    } else {
        Err(DataError::MissingImage {
            path: path.to_path_buf(),
            record: record.to_string(),
            image,
        })
    }
}

/// A [`DataError::BadRecord`].
pub(crate) fn bad(path: &Path, record: impl Into<String>, reason: impl Into<String>) -> DataError {
    DataError::BadRecord {
        path: path.to_path_buf(),
        record: record.into(),
        reason: reason.into(),
    }
}

/// The name of a split for [`DataError::EmptySplit`]: the file's stem.
pub(crate) fn split_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
