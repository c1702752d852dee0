//! Opening a whole suite: every task and split of `suite.json` through its format's reader,
//! with the example counts checked against the manifest and, when asked, every image decoded.
//! Also gathers a suite's training text, for the tokenizer.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{DataError, Result, io};
use crate::formats::captions::{
    KarpathyFile, KarpathySource, KarpathySplit, equivalent_groups_of, read_equivalent,
};
use crate::formats::image_folder::{ImageFolderOptions, read_image_folder};
use crate::formats::nlvr2::Nlvr2Source;
use crate::formats::segmentation::{SegExample, read_classes, read_segmentation};
use crate::formats::text_cls::read_text_cls;
use crate::formats::vqa::{AnswerVocab, VqaSource};
use crate::formats::{ReadOptions, read_json};
use crate::image::ImageRef;
use crate::suite::{Manifest, SCHEMA, TaskEntry, TaskKind};

/// What one split of one task holds (`images` counts a segmentation image and its mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSummary {
    pub task: String,
    pub kind: TaskKind,
    pub split: String,
    /// Questions (VQA), statements (NLVR2), images (retrieval, classification, segmentation)
    /// or sentences (text): what the manifest counts.
    pub examples: usize,
    /// Distinct image files referenced.
    pub images: usize,
    /// Images decoded (0 unless decoding was asked for).
    pub decoded: usize,
}

/// Reads `<root>/suite.json`, checking its schema tag.
pub fn read_manifest(root: &Path) -> Result<Manifest> {
    let path = root.join("suite.json");
    let m: Manifest = read_json(&path)?;
    if m.schema != SCHEMA {
        return Err(DataError::BadRecord {
            path,
            record: "schema".into(),
            reason: format!("`{}` is not `{SCHEMA}`", m.schema),
        });
    }
    Ok(m)
}

/// Reads every split of every task strictly (nothing skipped), checks the counts against the
/// manifest, and with `decode` decodes every image (in parallel). `progress` shows a bar.
pub fn check_suite(root: &Path, decode: bool, progress: bool) -> Result<Vec<SplitSummary>> {
    let manifest = read_manifest(root)?;
    let splits: usize = manifest.tasks.iter().map(|t| t.counts.len()).sum();
    let pb = crate::out::progress_bar(splits as u64, progress);
    let mut out = vec![];
    for task in &manifest.tasks {
        if task.kind == TaskKind::Retrieval {
            check_equivalent(&root.join(&task.root))?;
        }
        for (split, &want) in &task.counts {
            pb.set_message(format!("{} {split}", task.name));
            let Opened {
                examples,
                mut images,
                masks,
                classes,
            } = open_split(root, task, split)?;
            if examples != want {
                return Err(DataError::BadRecord {
                    path: root.join("suite.json"),
                    record: format!("task {} split {split}", task.name),
                    reason: format!("the manifest says {want} examples, the files hold {examples}"),
                });
            }
            images.sort();
            images.dedup();
            let decoded = if decode {
                let plain = images
                    .par_iter()
                    .map(|p| crate::image::decode_rgb(p).map(|_| 1))
                    .sum::<Result<usize>>()?;
                // An image and its mask: same size, 8-bit grey, classes or 255 only.
                let seg = masks
                    .par_iter()
                    .map(|m| m.load(classes).map(|_| 2))
                    .sum::<Result<usize>>()?;
                plain + seg
            } else {
                0
            };
            out.push(SplitSummary {
                task: task.name.clone(),
                kind: task.kind,
                split: split.clone(),
                examples,
                images: images.len() + 2 * masks.len(),
                decoded,
            });
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(out)
}

/// What one split holds: its example count, the image files it references, and (for
/// segmentation) the examples whose masks must be checked against the class list.
struct Opened {
    examples: usize,
    images: Vec<PathBuf>,
    masks: Vec<SegExample>,
    classes: usize,
}

fn open_split(root: &Path, task: &TaskEntry, split: &str) -> Result<Opened> {
    let dir = root.join(&task.root);
    let strict = ReadOptions::STRICT;
    let paths = |v: Vec<&ImageRef>| v.into_iter().map(|i| i.path.clone()).collect::<Vec<_>>();
    let plain = |examples: usize, images: Vec<PathBuf>| Opened {
        examples,
        images,
        masks: vec![],
        classes: 0,
    };
    Ok(match task.kind {
        TaskKind::Vqa => {
            let vocab = AnswerVocab::load(&dir.join("answers.json"))?;
            let ex = VqaSource::suite(&dir, split)
                .read(Some(&vocab), strict)?
                .examples;
            plain(ex.len(), paths(ex.iter().map(|e| &e.image).collect()))
        }
        TaskKind::Retrieval => {
            let s = karpathy_split(&dir, split)?;
            let r = KarpathySource::suite(&dir, s).read(strict)?.examples;
            plain(r.images.len(), paths(r.images.iter().collect()))
        }
        TaskKind::Nlvr2 => {
            let ex = Nlvr2Source::suite(&dir, split).read(strict)?.examples;
            let imgs = ex.iter().flat_map(|e| [&e.left, &e.right]).collect();
            plain(ex.len(), paths(imgs))
        }
        TaskKind::ImageCls => {
            // Our suites always list the classes, so labels mean the same in every split.
            let opts = ImageFolderOptions {
                classes: Some(read_classes(&dir.join("classes.txt"))?),
                allow_empty_class: true,
                ..Default::default()
            };
            let s = read_image_folder(&dir.join(split), &opts)?.examples;
            plain(
                s.examples.len(),
                paths(s.examples.iter().map(|e| &e.image).collect()),
            )
        }
        TaskKind::TextCls => {
            let labels = read_classes(&dir.join("classes.txt"))?;
            let file = dir.join(format!("{split}.jsonl"));
            let s = read_text_cls(&file, Some(&labels), strict)?.examples;
            plain(s.examples.len(), vec![])
        }
        TaskKind::Segmentation => {
            let s = read_segmentation(&dir, split, strict)?.examples;
            Opened {
                examples: s.examples.len(),
                images: vec![],
                classes: s.classes.len(),
                masks: s.examples,
            }
        }
    })
}

/// Checks `equivalent_captions.json` against the groups the task's `dataset.json` implies.
fn check_equivalent(dir: &Path) -> Result<()> {
    let file: KarpathyFile = read_json(&dir.join("dataset.json"))?;
    let path = dir.join("equivalent_captions.json");
    let listed = read_equivalent(&path)?;
    let want = equivalent_groups_of(&file.images);
    if listed != want {
        let first = want
            .iter()
            .zip(&listed)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(listed.len()));
        return Err(DataError::BadRecord {
            path,
            record: format!("group {first}"),
            reason: format!(
                "lists {} groups; dataset.json has {} captions shared by two or more images \
                 (first difference at group {first})",
                listed.len(),
                want.len()
            ),
        });
    }
    Ok(())
}

fn karpathy_split(dir: &Path, split: &str) -> Result<KarpathySplit> {
    KarpathySplit::parse(split).ok_or_else(|| DataError::BadRecord {
        path: dir.join("dataset.json"),
        record: format!("split {split}"),
        reason: "not a Karpathy split (train, restval, val, test)".into(),
    })
}

/// Every text of the suite's `train` splits (captions, questions, statements, sentences), in
/// manifest order: what a tokenizer for the suite is trained on.
pub fn train_texts(root: &Path) -> Result<Vec<String>> {
    let manifest = read_manifest(root)?;
    let strict = ReadOptions::STRICT;
    let mut out = vec![];
    for task in manifest
        .tasks
        .iter()
        .filter(|t| t.counts.contains_key("train"))
    {
        let dir = root.join(&task.root);
        match task.kind {
            TaskKind::Vqa => out.extend(
                VqaSource::suite(&dir, "train")
                    .read(
                        None,
                        ReadOptions {
                            skip_unknown: true,
                            ..strict
                        },
                    )?
                    .examples
                    .into_iter()
                    .map(|e| e.question),
            ),
            TaskKind::Retrieval => out.extend(
                KarpathySource::suite(&dir, KarpathySplit::Train)
                    .read(strict)?
                    .examples
                    .captions,
            ),
            TaskKind::Nlvr2 => out.extend(
                Nlvr2Source::suite(&dir, "train")
                    .read(strict)?
                    .examples
                    .into_iter()
                    .map(|e| e.sentence),
            ),
            TaskKind::TextCls => out.extend(
                read_text_cls(&dir.join("train.jsonl"), None, strict)?
                    .examples
                    .examples
                    .into_iter()
                    .map(|e| e.text),
            ),
            TaskKind::ImageCls | TaskKind::Segmentation => {}
        }
    }
    if out.is_empty() {
        return Err(DataError::EmptySplit {
            path: root.to_path_buf(),
            split: "train (no text in any task)".into(),
        });
    }
    Ok(out)
}

/// Trains the suite's WordPiece tokenizer (see [`crate::tokenize`]) and writes it to `out`.
pub fn write_suite_tokenizer(
    root: &Path,
    out: &Path,
    vocab_size: usize,
    min_frequency: u64,
) -> Result<crate::tokenize::Tokenizer> {
    let texts = train_texts(root)?;
    let tok = crate::tokenize::Tokenizer::train_wordpiece(texts.iter(), vocab_size, min_frequency)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        io(parent, std::fs::create_dir_all(parent))?;
    }
    tok.save(out)?;
    Ok(tok)
}
