//! Where a suite's files are: the one place that names them. Writers (the synthetic and
//! real-asset suites) take the relative paths from here, and readers the split sources
//! ([`VqaSource`], [`KarpathySource`], ...) of [`SplitFiles`], so the two cannot drift apart.
//!
//! A suite is a folder with [`MANIFEST`] (`suite.json`, see [`crate::suite::Manifest`]) and one
//! folder per task (`TaskEntry::root`, relative to the suite). Inside a task folder, by kind,
//! our own layout ([`Layout::Suite`]):
//! - `vqa`: [`vqa_questions`] `questions_<split>.json` and [`vqa_annotations`]
//!   `annotations_<split>.json` (VQA v2 format), images [`vqa_image`]
//!   `images/<split>/<image_id:012>.png`; [`ANSWERS`] `answers.json`, the answer vocabulary;
//!   the synthetic suite adds [`QUESTION_PRIOR`].
//! - `retrieval`: [`KARPATHY_FILE`] `dataset.json` (Karpathy format; `filepath` is the image
//!   folder relative to the task root) and [`EQUIVALENT_CAPTIONS`]
//!   `equivalent_captions.json` (see `formats::captions`).
//! - `nlvr2`: [`nlvr2_file`] `<split>.json` (NLVR2 JSON Lines), images [`nlvr2_image`]
//!   `images/<split>/<prefix>-img{0,1}.png`.
//! - `image_cls`: [`image_cls_image`] `<split>/<class>/<name>.png`, and [`CLASSES`]
//!   `classes.txt` (class names in label order; a small class may be missing from a split).
//! - `text_cls`: [`text_cls_file`] `<split>.jsonl` (`text`, `label`), and `classes.txt`.
//! - `segmentation`: [`seg_image`] `<split>/images/<stem>.png`, [`seg_mask`]
//!   `<split>/masks/<stem>.png`, `classes.txt`.
//!
//! The synthetic suite also writes, in every image task, [`scenes_file`]
//! `scenes/<split>.json` (each scene's objects) and, where the task has no masks of its own
//! (all but segmentation), the masks under [`scene_masks`] `scenes/masks/<split>/`.
//!
//! A task may instead sit in an official download's layout ([`Layout::Official`], named in
//! `suite.json` as `"official": {"format": ...}`), so a real VQA v2, COCO, Karpathy,
//! Flickr30k, NLVR2, ImageFolder or GLUE download opens through the same entry point
//! ([`crate::suite::Suite`]) without being copied; [`Official`] says where each one's files are.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::formats::captions::{KarpathySource, KarpathySplit};
use crate::formats::nlvr2::Nlvr2Source;
use crate::formats::segmentation::SegmentationSource;
use crate::formats::vqa::{COCO_PATTERN, VqaSource};
use crate::suite::TaskKind;

/// The manifest of a suite, at its root.
pub const MANIFEST: &str = "suite.json";
/// Class names in label order, one per line (`image_cls`, `text_cls`, `segmentation`).
pub const CLASSES: &str = "classes.txt";
/// A VQA task's answer vocabulary (a JSON array of strings, index = position).
pub const ANSWERS: &str = "answers.json";
/// The synthetic VQA task's per-question prior.
pub const QUESTION_PRIOR: &str = "question_prior.json";
/// A retrieval task's Karpathy-format file.
pub const KARPATHY_FILE: &str = "dataset.json";
/// A retrieval task's groups of images that share a caption.
pub const EQUIVALENT_CAPTIONS: &str = "equivalent_captions.json";
/// The real-asset suite's copies of its sources' licences.
pub const LICENCES: &str = "licences";
/// The file-name pattern of a VQA task's images in our suites (see
/// `formats::vqa::ImagePattern`).
pub const VQA_IMAGE_PATTERN: &str = "{id:012}.png";

/// `rel` inside the task folder `task` (both relative to the suite root).
pub fn in_task(task: &str, rel: &str) -> String {
    format!("{task}/{rel}")
}

/// `questions_<split>.json`.
pub fn vqa_questions(split: &str) -> String {
    format!("questions_{split}.json")
}

/// `annotations_<split>.json`.
pub fn vqa_annotations(split: &str) -> String {
    format!("annotations_{split}.json")
}

/// `images/<split>`: the image folder of a VQA or NLVR2 split.
pub fn split_images(split: &str) -> String {
    format!("images/{split}")
}

/// `images/<split>/<file>`.
pub fn split_image(split: &str, file: &str) -> String {
    format!("images/{split}/{file}")
}

/// `images/<split>/<image_id:012>.png`.
pub fn vqa_image(split: &str, image_id: u64) -> String {
    split_image(split, &format!("{image_id:012}.png"))
}

/// `<split>.json` (NLVR2 JSON Lines).
pub fn nlvr2_file(split: &str) -> String {
    format!("{split}.json")
}

/// `images/<split>/<prefix>-img<side>.png` (side 0 is the left image).
pub fn nlvr2_image(split: &str, prefix: &str, side: usize) -> String {
    split_image(split, &format!("{prefix}-img{side}.png"))
}

/// `<split>/<class>/<file>`.
pub fn image_cls_image(split: &str, class: &str, file: &str) -> String {
    format!("{split}/{class}/{file}")
}

/// `<split>.jsonl`.
pub fn text_cls_file(split: &str) -> String {
    format!("{split}.jsonl")
}

/// `<split>/images`: a segmentation split's images.
pub fn seg_images(split: &str) -> String {
    format!("{split}/images")
}

/// `<split>/masks`: a segmentation split's masks (same file names as the images).
pub fn seg_masks(split: &str) -> String {
    format!("{split}/masks")
}

/// `<split>/images/<file>`.
pub fn seg_image(split: &str, file: &str) -> String {
    format!("{}/{file}", seg_images(split))
}

/// `<split>/masks/<file>`.
pub fn seg_mask(split: &str, file: &str) -> String {
    format!("{}/{file}", seg_masks(split))
}

/// `scenes/<split>.json` (synthetic suite).
pub fn scenes_file(split: &str) -> String {
    format!("scenes/{split}.json")
}

/// `scenes/masks/<split>`: the masks of a synthetic image task without masks of its own.
pub fn scene_masks(split: &str) -> String {
    format!("scenes/masks/{split}")
}

/// `scenes/masks/<split>/<file>`.
pub fn scene_mask(split: &str, file: &str) -> String {
    format!("{}/{file}", scene_masks(split))
}

/// The layout of an official download, as `suite.json` names it in a task's `official`
/// field. Folder fields are relative to the task root (`""`: the root itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum Official {
    /// VQA v2 (<https://visualqa.org/download.html>): the split is the data subtype
    /// (`train2014`, `val2014`, `test2015`): `v2_OpenEnded_mscoco_<split>_questions.json`,
    /// `v2_mscoco_<split>_annotations.json` (a split without it has no answers, like
    /// `test2015`), images `<images>/<split>/COCO_<split>_<id:012>.jpg`. The answer
    /// vocabulary is the task's `answers.json` when there is one (else no targets).
    VqaV2 { images: String },
    /// Karpathy's split file `file` (`dataset_coco.json`, `dataset_flickr30k.json`), images
    /// `<images>/<filepath>/<filename>` (or `<images>/<filename>` without `filepath`).
    /// Splits: `train`, `restval`, `val`, `test`, and `train+restval` (the usual "Karpathy
    /// train").
    Karpathy { file: String, images: String },
    /// COCO captions: `annotations/captions_<split>.json`, images `<images>/<split>/<file_name>`.
    CocoCaptions { images: String },
    /// NLVR2 (<https://github.com/lil-lab/nlvr>): `<split>.json`, images
    /// `<images>/<split>/` (train: in the numbered `directory` subfolders).
    Nlvr2 { images: String },
    /// torchvision's ImageFolder: `<split>/<class>/<image>`, classes the subfolder names of
    /// the split, sorted.
    ImageFolder,
    /// GLUE-style TSV with a header row: `<split>.tsv`; labels the file's distinct labels,
    /// sorted.
    GlueTsv,
}

impl Official {
    /// The task kind this layout holds.
    pub fn kind(&self) -> TaskKind {
        match self {
            Official::VqaV2 { .. } => TaskKind::Vqa,
            Official::Karpathy { .. } | Official::CocoCaptions { .. } => TaskKind::Retrieval,
            Official::Nlvr2 { .. } => TaskKind::Nlvr2,
            Official::ImageFolder => TaskKind::ImageCls,
            Official::GlueTsv => TaskKind::TextCls,
        }
    }
}

/// How a task's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout<'a> {
    /// Ours (module doc).
    Suite,
    /// An official download's.
    Official(&'a Official),
}

/// Where the files of one split of one task are: the source its format's reader reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitFiles {
    /// `vocab`: the answer vocabulary file, when the task has one.
    Vqa {
        source: VqaSource,
        vocab: Option<PathBuf>,
    },
    Karpathy(KarpathySource),
    /// A COCO captions file and its image folder.
    CocoCaptions {
        file: PathBuf,
        images: PathBuf,
    },
    Nlvr2(Nlvr2Source),
    /// The split's folder and, when the task lists them, the classes file.
    ImageFolder {
        dir: PathBuf,
        classes: Option<PathBuf>,
    },
    /// The split's file and, when the task lists them, the labels file.
    Text {
        file: PathBuf,
        classes: Option<PathBuf>,
    },
    Segmentation(SegmentationSource),
}

impl SplitFiles {
    /// The files of split `split` of a task of `kind` at `task_root` laid out as `layout`.
    /// A kind the layout does not hold is [`DataError::BadTask`] naming `task`.
    pub fn new(
        task_root: &Path,
        task: &str,
        kind: TaskKind,
        layout: Layout<'_>,
        split: &str,
    ) -> Result<Self> {
        let root = task_root;
        Ok(match layout {
            Layout::Suite => match kind {
                TaskKind::Vqa => SplitFiles::Vqa {
                    source: VqaSource {
                        questions: root.join(vqa_questions(split)),
                        annotations: Some(root.join(vqa_annotations(split))),
                        image_dir: root.join(split_images(split)),
                        image_pattern: VQA_IMAGE_PATTERN.to_string(),
                    },
                    vocab: Some(root.join(ANSWERS)),
                },
                TaskKind::Retrieval => SplitFiles::Karpathy(KarpathySource {
                    file: root.join(KARPATHY_FILE),
                    image_root: root.to_path_buf(),
                    split: karpathy_split(root, task, split)?,
                    fold_restval: false,
                }),
                TaskKind::Nlvr2 => SplitFiles::Nlvr2(Nlvr2Source {
                    file: root.join(nlvr2_file(split)),
                    image_dir: root.join(split_images(split)),
                }),
                TaskKind::ImageCls => SplitFiles::ImageFolder {
                    dir: root.join(split),
                    classes: Some(root.join(CLASSES)),
                },
                TaskKind::TextCls => SplitFiles::Text {
                    file: root.join(text_cls_file(split)),
                    classes: Some(root.join(CLASSES)),
                },
                TaskKind::Segmentation => SplitFiles::Segmentation(SegmentationSource {
                    classes: root.join(CLASSES),
                    images: root.join(seg_images(split)),
                    masks: root.join(seg_masks(split)),
                    split: split.to_string(),
                }),
            },
            Layout::Official(o) => {
                if o.kind() != kind {
                    return Err(DataError::BadTask {
                        path: root.to_path_buf(),
                        task: task.to_string(),
                        reason: format!(
                            "kind {kind:?} but official format {o:?} holds {:?} tasks",
                            o.kind()
                        ),
                    });
                }
                match o {
                    Official::VqaV2 { images } => {
                        let ann = root.join(format!("v2_mscoco_{split}_annotations.json"));
                        let answers = root.join(ANSWERS);
                        SplitFiles::Vqa {
                            source: VqaSource {
                                questions: root
                                    .join(format!("v2_OpenEnded_mscoco_{split}_questions.json")),
                                annotations: ann.is_file().then_some(ann),
                                image_dir: root.join(images).join(split),
                                image_pattern: COCO_PATTERN.to_string(),
                            },
                            vocab: answers.is_file().then_some(answers),
                        }
                    }
                    Official::Karpathy { file, images } => {
                        let (split, fold_restval) = match split {
                            "train+restval" => (KarpathySplit::Train, true),
                            s => (karpathy_split(root, task, s)?, false),
                        };
                        SplitFiles::Karpathy(KarpathySource {
                            file: root.join(file),
                            image_root: root.join(images),
                            split,
                            fold_restval,
                        })
                    }
                    Official::CocoCaptions { images } => SplitFiles::CocoCaptions {
                        file: root
                            .join("annotations")
                            .join(format!("captions_{split}.json")),
                        images: root.join(images).join(split),
                    },
                    Official::Nlvr2 { images } => SplitFiles::Nlvr2(Nlvr2Source {
                        file: root.join(nlvr2_file(split)),
                        image_dir: root.join(images).join(split),
                    }),
                    Official::ImageFolder => SplitFiles::ImageFolder {
                        dir: root.join(split),
                        classes: None,
                    },
                    Official::GlueTsv => SplitFiles::Text {
                        file: root.join(format!("{split}.tsv")),
                        classes: None,
                    },
                }
            }
        })
    }
}

fn karpathy_split(root: &Path, task: &str, split: &str) -> Result<KarpathySplit> {
    KarpathySplit::parse(split).ok_or_else(|| DataError::BadTask {
        path: root.join(KARPATHY_FILE),
        task: task.to_string(),
        reason: format!("split `{split}` is not a Karpathy split (train, restval, val, test)"),
    })
}
