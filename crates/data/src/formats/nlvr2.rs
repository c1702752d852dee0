//! NLVR2: JSON Lines, one statement about a pair of images per line, label "True"/"False"
//! (<https://github.com/lil-lab/nlvr/tree/master/nlvr2>). The pair's images are
//! `<identifier without its last -N>-img0.png` and `-img1.png` (train images sit in the
//! numbered subfolder given by `directory`).
//!
//! Deviations: fields we do not use (`validation`, `extra_validations`, ...) are ignored;
//! the label must be exactly `True` or `False` (any other spelling is a bad record); a
//! repeated identifier is a bad record; blank lines are passed over. The images' extension
//! is always `.png`, as in the official release (where some `.png` files hold JPEG data;
//! [`crate::image::decode_rgb`] picks the decoder from the bytes, so those decode too).

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    Loaded, ReadOptions, Skipper, bad, existing_image, lines, parse_json_line, split_name,
};
use crate::error::{DataError, Result};
use crate::image::ImageRef;

/// One line of `train.json` / `dev.json` / `test1.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub identifier: String,
    pub sentence: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

impl Record {
    /// A record with only the fields our built suites fill in.
    pub fn new(identifier: String, sentence: String, label: bool) -> Self {
        Self {
            identifier,
            sentence,
            label: if label { "True" } else { "False" }.into(),
            directory: None,
            left_url: None,
            right_url: None,
            synset: None,
            query: None,
            writer: None,
        }
    }
}

/// Where an NLVR2 split lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nlvr2Source {
    /// The JSON Lines file (`dev.json`, `train.json`, ...).
    pub file: PathBuf,
    /// The folder of the split's images (for train: the folder holding the numbered
    /// `directory` subfolders).
    pub image_dir: PathBuf,
}

impl Nlvr2Source {
    /// Reads the split in file order.
    ///
    /// Errors (all skippable but the last): a line that is not a JSON record with the
    /// required fields ([`DataError::Json`], file line and column); a label other than
    /// `True`/`False`, an identifier without a final `-N`, or a repeated identifier
    /// ([`DataError::BadRecord`] naming identifier and line); a missing image; no records
    /// ([`DataError::EmptySplit`]).
    pub fn read(&self, opts: ReadOptions) -> Result<Loaded<Vec<Nlvr2Example>>> {
        let path = &self.file;
        let mut skipper = Skipper::new(opts);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (line, bytes) in lines(path)? {
            let r = parse_json_line::<Record>(path, line, &bytes)
                .and_then(|rec| self.example(line, rec, &mut seen));
            if let Some(ex) = skipper.check(r)? {
                out.push(ex);
            }
        }
        if out.is_empty() {
            return Err(DataError::EmptySplit {
                path: path.clone(),
                split: split_name(path),
            });
        }
        Ok(skipper.finish(out))
    }

    fn example(
        &self,
        line: usize,
        rec: Record,
        seen: &mut HashSet<String>,
    ) -> Result<Nlvr2Example> {
        let path = &self.file;
        let record = format!("{} (line {line})", rec.identifier);
        let label = match rec.label.as_str() {
            "True" => true,
            "False" => false,
            other => {
                return Err(bad(
                    path,
                    record,
                    format!("label `{other}`: expected `True` or `False`"),
                ));
            }
        };
        let prefix = pair_prefix(&rec.identifier).ok_or_else(|| {
            bad(
                path,
                &record,
                "identifier does not end in `-N` (expected e.g. `dev-850-0-0`)",
            )
        })?;
        if !seen.insert(rec.identifier.clone()) {
            return Err(bad(path, record, "identifier appears more than once"));
        }
        let mut dir = self.image_dir.clone();
        if let Some(d) = rec.directory {
            dir.push(d.to_string());
        }
        let left = existing_image(path, &record, dir.join(format!("{prefix}-img0.png")))?;
        let right = existing_image(path, &record, dir.join(format!("{prefix}-img1.png")))?;
        Ok(Nlvr2Example {
            identifier: rec.identifier,
            sentence: rec.sentence,
            label,
            left,
            right,
        })
    }
}

/// The image-pair prefix of an identifier: the identifier without its last `-N` (`N`
/// decimal digits), e.g. `dev-850-0-0` → `dev-850-0`.
pub fn pair_prefix(identifier: &str) -> Option<&str> {
    let (prefix, n) = identifier.rsplit_once('-')?;
    (!prefix.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(prefix)
}

/// One statement about an image pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nlvr2Example {
    pub identifier: String,
    pub sentence: String,
    /// Whether the statement is true of the pair.
    pub label: bool,
    pub left: ImageRef,
    pub right: ImageRef,
}
