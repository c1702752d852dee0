//! Opening a whole suite: every task and split of `suite.json` through its format's reader,
//! with the example counts checked against the manifest and, when asked, every image decoded.
//! Also gathers a suite's training text, for the tokenizer.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{DataError, Result, io};
use crate::formats::captions::{KarpathySource, KarpathySplit};
use crate::formats::image_folder::{ImageFolderOptions, read_image_folder};
use crate::formats::nlvr2::Nlvr2Source;
use crate::formats::segmentation::{read_classes, read_segmentation};
use crate::formats::text_cls::read_text_cls;
use crate::formats::vqa::{AnswerVocab, VqaSource};
use crate::formats::{ReadOptions, read_json};
use crate::image::ImageRef;
use crate::suite::{Manifest, SCHEMA, TaskEntry, TaskKind};

/// What one split of one task holds.
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
        for (split, &want) in &task.counts {
            pb.set_message(format!("{} {split}", task.name));
            let (examples, mut images) = open_split(root, task, split)?;
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
                images
                    .par_iter()
                    .map(|p| crate::image::decode_rgb(p).map(|_| 1))
                    .sum::<Result<usize>>()?
            } else {
                0
            };
            out.push(SplitSummary {
                task: task.name.clone(),
                kind: task.kind,
                split: split.clone(),
                examples,
                images: images.len(),
                decoded,
            });
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(out)
}

/// The example count and image files of one split.
fn open_split(root: &Path, task: &TaskEntry, split: &str) -> Result<(usize, Vec<PathBuf>)> {
    let dir = root.join(&task.root);
    let strict = ReadOptions::STRICT;
    let paths = |v: Vec<&ImageRef>| v.into_iter().map(|i| i.path.clone()).collect::<Vec<_>>();
    Ok(match task.kind {
        TaskKind::Vqa => {
            let vocab = AnswerVocab::load(&dir.join("answers.json"))?;
            let ex = VqaSource::suite(&dir, split)
                .read(Some(&vocab), strict)?
                .examples;
            (ex.len(), paths(ex.iter().map(|e| &e.image).collect()))
        }
        TaskKind::Retrieval => {
            let s = karpathy_split(&dir, split)?;
            let r = KarpathySource::suite(&dir, s).read(strict)?.examples;
            (r.images.len(), paths(r.images.iter().collect()))
        }
        TaskKind::Nlvr2 => {
            let ex = Nlvr2Source::suite(&dir, split).read(strict)?.examples;
            let imgs = ex.iter().flat_map(|e| [&e.left, &e.right]).collect();
            (ex.len(), paths(imgs))
        }
        TaskKind::ImageCls => {
            let s = read_image_folder(&dir.join(split), &image_folder_options(&dir)?)?.examples;
            (
                s.examples.len(),
                paths(s.examples.iter().map(|e| &e.image).collect()),
            )
        }
        TaskKind::TextCls => {
            let s = read_text_cls(&dir.join(format!("{split}.jsonl")), None, strict)?.examples;
            (s.examples.len(), vec![])
        }
        TaskKind::Segmentation => {
            let s = read_segmentation(&dir, split, strict)?.examples;
            let mut imgs = paths(s.examples.iter().map(|e| &e.image).collect());
            imgs.extend(s.examples.iter().map(|e| e.mask.clone()));
            (s.examples.len(), imgs)
        }
    })
}

/// Our suites list an image-classification task's classes in `classes.txt`, so labels mean
/// the same in every split even when a small class is missing from one; without the file, the
/// subfolders of each split are the classes.
pub fn image_folder_options(task_root: &Path) -> Result<ImageFolderOptions> {
    let list = task_root.join("classes.txt");
    Ok(if list.exists() {
        ImageFolderOptions {
            classes: Some(read_classes(&list)?),
            allow_empty_class: true,
            ..Default::default()
        }
    } else {
        ImageFolderOptions::default()
    })
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
