//! Checking a whole suite: every task and split of `suite.json` opened through
//! [`crate::suite::Suite`], with the example counts checked against the manifest and, when
//! asked, every image decoded. Also gathers a suite's training text, for the tokenizer.

use std::path::Path;

use rayon::prelude::*;

use crate::error::{DataError, Result, io};
use crate::formats::captions::{KarpathyFile, equivalent_groups_of, read_equivalent};
use crate::formats::{ReadOptions, read_json};
use crate::layout::{EQUIVALENT_CAPTIONS, KARPATHY_FILE, Layout, MANIFEST, SplitFiles};
use crate::suite::{Examples, Split, Suite, TaskKind};

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

/// Reads every split of every task strictly (nothing skipped), checks the counts against the
/// manifest, and with `decode` decodes every image (in parallel). `progress` shows a bar.
pub fn check_suite(root: &Path, decode: bool, progress: bool) -> Result<Vec<SplitSummary>> {
    let suite = Suite::open(root)?;
    let splits: usize = suite.tasks().map(|t| t.entry().counts.len()).sum();
    let pb = mmerge_sink::progress_bar("check", splits as u64, progress);
    let mut out = vec![];
    for task in suite.tasks() {
        if task.kind() == TaskKind::Retrieval && task.layout() == Layout::Suite {
            check_equivalent(&task.root())?;
        }
        for (split, &want) in &task.entry().counts {
            pb.set_message(format!("{} {split}", task.name()));
            let examples = task.split(split)?;
            if examples.len() != want {
                return Err(DataError::BadRecord {
                    path: root.join(MANIFEST),
                    record: format!("task {} split {split}", task.name()),
                    reason: format!(
                        "the manifest says {want} examples, the files hold {}",
                        examples.len()
                    ),
                });
            }
            // (images counted, images decoded): a segmentation example is an image and its
            // mask, decoded together (same size, 8-bit grey, classes or 255 only).
            let (images, decoded) = match &examples {
                Examples::Segmentation(s) => {
                    let decoded = if decode {
                        let classes = s.classes.len();
                        s.examples
                            .par_iter()
                            .map(|m| m.load(classes).map(|_| 2))
                            .sum::<Result<usize>>()?
                    } else {
                        0
                    };
                    (2 * s.examples.len(), decoded)
                }
                _ => {
                    let mut images = examples.images();
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
                    (images.len(), decoded)
                }
            };
            out.push(SplitSummary {
                task: task.name().to_string(),
                kind: task.kind(),
                split: split.clone(),
                examples: examples.len(),
                images,
                decoded,
            });
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Checks `equivalent_captions.json` against the groups the task's `dataset.json` implies.
fn check_equivalent(dir: &Path) -> Result<()> {
    let file: KarpathyFile = read_json(&dir.join(KARPATHY_FILE))?;
    let path = dir.join(EQUIVALENT_CAPTIONS);
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

/// Every text of the suite's `train` splits (captions, questions, statements, sentences), in
/// manifest order: what a tokenizer for the suite is trained on.
pub fn train_texts(root: &Path) -> Result<Vec<String>> {
    let suite = Suite::open(root)?;
    let mut out = vec![];
    for task in suite
        .tasks()
        .filter(|t| t.entry().counts.contains_key("train"))
    {
        match task.files(Split::Train)? {
            // Questions only: read without the answer vocabulary, so a question whose answers
            // are all outside `answers.json` still contributes its text.
            SplitFiles::Vqa { source, .. } => {
                let opts = ReadOptions {
                    skip_unknown: true,
                    ..ReadOptions::STRICT
                };
                out.extend(
                    source
                        .read(None, opts)?
                        .examples
                        .into_iter()
                        .map(|e| e.question),
                );
            }
            _ => {
                let examples = task.split(Split::Train)?;
                out.extend(examples.texts().into_iter().map(str::to_string));
            }
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

/// Builds a VQA task's answer vocabulary from the annotations of `split` (the normalised
/// `multiple_choice_answer`s given at least `min_count` times; VQA v2's usual 3,129 answers
/// are those given at least 9 times in train2014) and writes it as the task's `answers.json`.
/// Refuses to replace an existing one unless `force`.
pub fn write_answer_vocab(
    root: &Path,
    task: &str,
    split: &str,
    min_count: usize,
    force: bool,
) -> Result<(std::path::PathBuf, crate::formats::vqa::AnswerVocab)> {
    let suite = Suite::open(root)?;
    let t = suite.task(task)?;
    let SplitFiles::Vqa { source, .. } = t.files(split)? else {
        return Err(DataError::Shape {
            what: "answer vocabulary",
            reason: format!("task `{task}` is {}, not VQA", t.kind().name()),
        });
    };
    let Some(annotations) = source.annotations else {
        return Err(DataError::Shape {
            what: "answer vocabulary",
            reason: format!("split `{split}` of task `{task}` has no annotations"),
        });
    };
    let out = t.root().join(crate::layout::ANSWERS);
    if out.exists() && !force {
        return Err(DataError::OutputExists { path: out });
    }
    let vocab = crate::formats::vqa::AnswerVocab::build(&annotations, min_count)?;
    vocab.save(&out)?;
    Ok((out, vocab))
}
