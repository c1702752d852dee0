//! A suite on disk: a folder of tasks plus `suite.json`, the manifest that says which tasks
//! there are, where, in which layout, how many examples each split has, and the text-only
//! baselines a report should show beside a model's score.
//!
//! [`Suite`] is the one way in: `Suite::open(dir)?.task("vqa")?.split(Split::Train)?` gives
//! a split's typed [`Examples`], whatever the task's kind and whether its files are in our
//! layout or an official download's ([`crate::layout`] says where each file is). The
//! synthetic and real-asset suites, the real-format fixtures (`datasets/fixtures/suite.json`),
//! `mmerge data check` and the tokenizer all go through it.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::formats::captions::{RetrievalSplit, read_coco_captions};
use crate::formats::image_folder::{ImageFolderOptions, ImageFolderSplit, read_image_folder};
use crate::formats::nlvr2::Nlvr2Example;
use crate::formats::segmentation::{SegmentationSplit, read_classes};
use crate::formats::text_cls::{TextSplit, read_text_cls};
use crate::formats::vqa::{AnswerVocab, VqaExample};
use crate::formats::{Loaded, ReadOptions, read_json};
use crate::layout::{Layout, MANIFEST, Official, SplitFiles};

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

impl TaskKind {
    pub const ALL: [TaskKind; 6] = [
        TaskKind::Vqa,
        TaskKind::Retrieval,
        TaskKind::Nlvr2,
        TaskKind::ImageCls,
        TaskKind::TextCls,
        TaskKind::Segmentation,
    ];

    /// The name `suite.json` uses (`image_cls`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Vqa => "vqa",
            TaskKind::Retrieval => "retrieval",
            TaskKind::Nlvr2 => "nlvr2",
            TaskKind::ImageCls => "image_cls",
            TaskKind::TextCls => "text_cls",
            TaskKind::Segmentation => "segmentation",
        }
    }
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
    /// The official download layout the task's files are in; absent: ours (see
    /// [`crate::layout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub official: Option<Official>,
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

/// The three splits our built suites have, in the order they are written. (Official layouts
/// have their own split names, e.g. `val2014` or `dev`: [`Task::split`] takes any
/// [`SplitName`].)
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

/// A split's name: a [`Split`] or any string (`val2014`, `dev`, `train+restval`).
pub trait SplitName {
    fn split_name(&self) -> &str;
}

impl SplitName for Split {
    fn split_name(&self) -> &str {
        self.name()
    }
}

impl SplitName for &str {
    fn split_name(&self) -> &str {
        self
    }
}

impl SplitName for String {
    fn split_name(&self) -> &str {
        self
    }
}

impl SplitName for &String {
    fn split_name(&self) -> &str {
        self
    }
}

/// An opened suite: its root and manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    root: PathBuf,
    manifest: Manifest,
}

impl Suite {
    /// Reads `<root>/suite.json`, checking its schema tag and that task names are unique.
    pub fn open(root: &Path) -> Result<Self> {
        let path = root.join(MANIFEST);
        let manifest: Manifest = read_json(&path)?;
        if manifest.schema != SCHEMA {
            return Err(DataError::BadRecord {
                path,
                record: "schema".into(),
                reason: format!("`{}` is not `{SCHEMA}`", manifest.schema),
            });
        }
        let names: Vec<&str> = manifest.tasks.iter().map(|t| t.name.as_str()).collect();
        if let Some(name) = crate::formats::first_duplicate(&names) {
            return Err(DataError::BadTask {
                path,
                task: name.to_string(),
                reason: "two tasks have this name".into(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            manifest,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every task, in manifest order.
    pub fn tasks(&self) -> impl Iterator<Item = Task<'_>> {
        self.manifest
            .tasks
            .iter()
            .map(|entry| Task { suite: self, entry })
    }

    /// The task named `name` ([`DataError::UnknownName`] listing the suite's tasks otherwise).
    pub fn task(&self, name: &str) -> Result<Task<'_>> {
        self.tasks()
            .find(|t| t.entry.name == name)
            .ok_or_else(|| DataError::UnknownName {
                what: "task",
                name: name.to_string(),
                valid: self
                    .tasks()
                    .map(|t| t.entry.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// One task of an opened suite.
#[derive(Debug, Clone, Copy)]
pub struct Task<'a> {
    suite: &'a Suite,
    entry: &'a TaskEntry,
}

impl<'a> Task<'a> {
    pub fn entry(&self) -> &'a TaskEntry {
        self.entry
    }

    pub fn name(&self) -> &'a str {
        &self.entry.name
    }

    pub fn kind(&self) -> TaskKind {
        self.entry.kind
    }

    /// The task's folder.
    pub fn root(&self) -> PathBuf {
        self.suite.root.join(&self.entry.root)
    }

    pub fn layout(&self) -> Layout<'a> {
        match &self.entry.official {
            Some(o) => Layout::Official(o),
            None => Layout::Suite,
        }
    }

    /// The splits the manifest counts, in its (name) order.
    pub fn splits(&self) -> impl Iterator<Item = &'a str> {
        self.entry.counts.keys().map(String::as_str)
    }

    /// Where split `split`'s files are.
    pub fn files(&self, split: impl SplitName) -> Result<SplitFiles> {
        SplitFiles::new(
            &self.root(),
            &self.entry.name,
            self.entry.kind,
            self.layout(),
            split.split_name(),
        )
    }

    /// Reads split `split` strictly (the first bad record is an error).
    pub fn split(&self, split: impl SplitName) -> Result<Examples> {
        Ok(self.split_with(split, ReadOptions::STRICT)?.examples)
    }

    /// Reads split `split`, skipping (and listing) bad records as `opts` asks.
    pub fn split_with(&self, split: impl SplitName, opts: ReadOptions) -> Result<Loaded<Examples>> {
        fn wrap<T>(l: Loaded<T>, f: impl FnOnce(T) -> Examples) -> Loaded<Examples> {
            Loaded {
                examples: f(l.examples),
                skipped: l.skipped,
            }
        }
        Ok(match self.files(split)? {
            SplitFiles::Vqa { source, vocab } => {
                let vocab = vocab.map(|p| AnswerVocab::load(&p)).transpose()?;
                let l = source.read(vocab.as_ref(), opts)?;
                wrap(l, |examples| Examples::Vqa { examples, vocab })
            }
            SplitFiles::Karpathy(source) => wrap(source.read(opts)?, Examples::Retrieval),
            SplitFiles::CocoCaptions { file, images } => wrap(
                read_coco_captions(&file, &images, opts)?,
                Examples::Retrieval,
            ),
            SplitFiles::Nlvr2(source) => wrap(source.read(opts)?, Examples::Nlvr2),
            SplitFiles::ImageFolder { dir, classes } => {
                // A listed class may be missing from a split (labels mean the same in every
                // split); without a list, classes are the split's own folders.
                let opts = ImageFolderOptions {
                    allow_empty_class: classes.is_some(),
                    classes: classes.map(|p| read_classes(&p)).transpose()?,
                    read: opts,
                };
                wrap(read_image_folder(&dir, &opts)?, Examples::ImageCls)
            }
            SplitFiles::Text { file, classes } => {
                let labels = classes.map(|p| read_classes(&p)).transpose()?;
                wrap(
                    read_text_cls(&file, labels.as_deref(), opts)?,
                    Examples::TextCls,
                )
            }
            SplitFiles::Segmentation(source) => wrap(source.read(opts)?, Examples::Segmentation),
        })
    }
}

/// The typed examples of one split, by task kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Examples {
    /// Questions with their answers; `vocab` is the task's answer vocabulary when it has one
    /// (then each example has its soft targets).
    Vqa {
        examples: Vec<VqaExample>,
        vocab: Option<AnswerVocab>,
    },
    Retrieval(RetrievalSplit),
    Nlvr2(Vec<Nlvr2Example>),
    ImageCls(ImageFolderSplit),
    TextCls(TextSplit),
    Segmentation(SegmentationSplit),
}

impl Examples {
    pub fn kind(&self) -> TaskKind {
        match self {
            Examples::Vqa { .. } => TaskKind::Vqa,
            Examples::Retrieval(_) => TaskKind::Retrieval,
            Examples::Nlvr2(_) => TaskKind::Nlvr2,
            Examples::ImageCls(_) => TaskKind::ImageCls,
            Examples::TextCls(_) => TaskKind::TextCls,
            Examples::Segmentation(_) => TaskKind::Segmentation,
        }
    }

    /// What `suite.json` counts: questions (VQA), images (retrieval, classification,
    /// segmentation), statements (NLVR2) or sentences (text).
    pub fn len(&self) -> usize {
        match self {
            Examples::Vqa { examples, .. } => examples.len(),
            Examples::Retrieval(r) => r.images.len(),
            Examples::Nlvr2(v) => v.len(),
            Examples::ImageCls(s) => s.examples.len(),
            Examples::TextCls(s) => s.examples.len(),
            Examples::Segmentation(s) => s.examples.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every image file the split references, in example order, repeats included
    /// (segmentation: images only; its masks are in the examples).
    pub fn images(&self) -> Vec<&Path> {
        match self {
            Examples::Vqa { examples, .. } => {
                examples.iter().map(|e| e.image.path.as_path()).collect()
            }
            Examples::Retrieval(r) => r.images.iter().map(|i| i.path.as_path()).collect(),
            Examples::Nlvr2(v) => v
                .iter()
                .flat_map(|e| [e.left.path.as_path(), e.right.path.as_path()])
                .collect(),
            Examples::ImageCls(s) => s.examples.iter().map(|e| e.image.path.as_path()).collect(),
            Examples::TextCls(_) => vec![],
            Examples::Segmentation(s) => {
                s.examples.iter().map(|e| e.image.path.as_path()).collect()
            }
        }
    }

    /// The texts of the split (questions, captions, statements, sentences), in order.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Examples::Vqa { examples, .. } => {
                examples.iter().map(|e| e.question.as_str()).collect()
            }
            Examples::Retrieval(r) => r.captions.iter().map(String::as_str).collect(),
            Examples::Nlvr2(v) => v.iter().map(|e| e.sentence.as_str()).collect(),
            Examples::TextCls(s) => s.examples.iter().map(|e| e.text.as_str()).collect(),
            Examples::ImageCls(_) | Examples::Segmentation(_) => vec![],
        }
    }
}
