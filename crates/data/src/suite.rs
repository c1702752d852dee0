//! A suite on disk: a folder of tasks in the standard formats plus `suite.json`, the manifest
//! that says which tasks there are, where, how many examples each split has, and the
//! text-only baselines a report should show beside a model's score.
//!
//! Layout of each task kind inside its folder (`TaskEntry::root`, relative to the suite):
//! - `vqa`: `questions_<split>.json` and `annotations_<split>.json` (VQA v2 format),
//!   images `images/<split>/<image_id:012>.png`; `answers.json`, the answer vocabulary.
//! - `retrieval`: `dataset.json` (Karpathy format; `filepath` is the image
//!   folder relative to the task root) and `equivalent_captions.json` (see
//!   `formats::captions`).
//! - `nlvr2`: `<split>.json` (NLVR2 JSON Lines), images `images/<split>/<prefix>-img{0,1}.png`.
//! - `image_cls`: `<split>/<class>/<name>.png`, and `classes.txt` (class names in label
//!   order; a small class may be missing from a split).
//! - `text_cls`: `<split>.jsonl` (`text`, `label`), and `classes.txt` (labels in order).
//! - `segmentation`: `<split>/images/<stem>.png`, `<split>/masks/<stem>.png`, `classes.txt`.
//!
//! The synthetic suite also writes, in every image task, `scenes/<split>.json` (each scene's
//! objects) and, where the task has no masks of its own (all but segmentation), the masks in
//! `scenes/masks/`, so that every answer can be recomputed from the pixels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest's schema tag.
pub const SCHEMA: &str = "mmerge.suite/1";

/// The kinds of task a suite holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Vqa,
    Retrieval,
    Nlvr2,
    ImageCls,
    TextCls,
    Segmentation,
}

/// `suite.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    /// `synthetic` or `real-assets`.
    pub name: String,
    /// The generator and its version, e.g. `mmerge 0.1.0 data synth`.
    pub generator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<String>,
    pub tasks: Vec<TaskEntry>,
    /// Where the data came from and under which licence (empty for generated data).
    #[serde(default)]
    pub sources: Vec<Source>,
}

/// One task of a suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    /// Unique within the suite, e.g. `vqa`, `shape_cls`, `caption_colour`.
    pub name: String,
    pub kind: TaskKind,
    /// The task's folder, relative to the suite root.
    pub root: String,
    /// Examples per split: questions (VQA), statements (NLVR2), images (retrieval,
    /// classification, segmentation) or sentences (text classification).
    pub counts: BTreeMap<String, usize>,
    /// Scores that need no model, on the test split (e.g. `majority`, `question_prior`,
    /// `statement_prior`, `chance`), each in [0, 1].
    #[serde(default)]
    pub baselines: BTreeMap<String, f64>,
    /// One line on what the task asks.
    pub description: String,
}

/// Provenance of real data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    /// The registry package it came from, with version, e.g. `deb:tuxpaint-stamps-default=2022.06.04-1`.
    pub package: String,
    pub licence: String,
}

/// The text of `classes.txt`: one class name per line, line number = label index.
pub fn class_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().flat_map(|n| [n, "\n"]).collect()
}

/// The three splits our built suites have, in the order they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The split's name in file names and records.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The position in [`Split::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
