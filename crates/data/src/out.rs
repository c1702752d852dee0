//! Writing a whole suite atomically: everything goes into a hidden temporary folder beside the
//! destination ([`mmerge_core::atomic::AtomicDir`]), which is renamed into place only when the
//! suite is complete. A failure (or a panic) leaves nothing behind. Paths are relative to the
//! suite's root and come from [`crate::layout`]; JSON bytes from [`mmerge_core::json`].

use std::path::{Path, PathBuf};

use mmerge_core::atomic::AtomicDir;
use serde::Serialize;

use crate::error::{Result, encode, io};

/// A suite being written. Paths given to its methods are relative to the suite's root.
#[derive(Debug)]
pub struct SuiteDir {
    dir: AtomicDir,
}

impl SuiteDir {
    /// Starts writing the suite that will appear at `dst`. Fails
    /// ([`crate::DataError::OutputExists`]) if `dst` exists and `force` is false.
    pub fn create(dst: &Path, force: bool) -> Result<Self> {
        Ok(Self {
            dir: AtomicDir::create(dst, force)?,
        })
    }

    /// The temporary root, for writers that need a real path.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The absolute temporary path of `rel`, with its parent folders created.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.root().join(rel);
        if let Some(parent) = p.parent() {
            io(parent, std::fs::create_dir_all(parent))?;
        }
        Ok(p)
    }

    /// Writes `bytes` to `rel`.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(rel)?;
        io(&p, std::fs::write(&p, bytes))
    }

    /// Writes `value` as pretty-printed JSON with a trailing newline to `rel`.
    pub fn write_json<T: Serialize + ?Sized>(&self, rel: &str, value: &T) -> Result<()> {
        let bytes = mmerge_core::json::to_pretty(&value).map_err(|e| encode(rel, &e))?;
        self.write(rel, &bytes)
    }

    /// Writes one compact JSON object per line (JSON Lines) to `rel`.
    pub fn write_jsonl<T: Serialize>(&self, rel: &str, values: &[T]) -> Result<()> {
        let bytes = mmerge_core::json::to_lines(values).map_err(|e| encode(rel, &e))?;
        self.write(rel, &bytes)
    }

    /// Writes `value` as compact JSON on one line (as the official VQA and scene files are),
    /// with a trailing newline, to `rel`.
    pub fn write_compact<T: Serialize + ?Sized>(&self, rel: &str, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec(value).map_err(|e| encode(rel, &e))?;
        bytes.push(b'\n');
        self.write(rel, &bytes)
    }

    /// Renames the finished suite into place (replacing an old one when `force` was given).
    pub fn finish(self) -> Result<PathBuf> {
        Ok(self.dir.finish()?)
    }
}

/// How a JSON file is written: compact on one line (as the official VQA files are) or
/// pretty-printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    Compact,
    Pretty,
}

impl SuiteDir {
    /// Writes `value` to `rel` in `style`.
    pub fn write_styled<T: Serialize + ?Sized>(
        &self,
        rel: &str,
        value: &T,
        style: JsonStyle,
    ) -> Result<()> {
        match style {
            JsonStyle::Compact => self.write_compact(rel, value),
            JsonStyle::Pretty => self.write_json(rel, value),
        }
    }
}

/// One question of a built VQA split, whose ten human answers all give `answer` with
/// confidence `yes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnanimousQa<'a> {
    pub question_id: u64,
    pub image_id: u64,
    pub question: &'a str,
    pub answer: &'a str,
    pub question_type: &'a str,
    pub answer_type: &'a str,
}

/// Writes the questions and annotations files of split `split` of the VQA task `task`
/// ([`crate::layout::vqa_questions`], [`crate::layout::vqa_annotations`]), in VQA v2 format
/// with the given `task_type` and `data_type` (the data subtype is the split).
pub fn write_vqa_split(
    suite: &SuiteDir,
    task: &str,
    split: &str,
    (task_type, data_type): (&str, &str),
    qas: &[UnanimousQa<'_>],
    style: JsonStyle,
) -> Result<()> {
    use crate::formats::vqa::{Annotation, AnnotationsFile, HumanAnswer, Question, QuestionsFile};
    use crate::layout::{in_task, vqa_annotations, vqa_questions};
    let questions = QuestionsFile {
        task_type: task_type.into(),
        data_type: data_type.into(),
        data_subtype: split.into(),
        questions: qas
            .iter()
            .map(|q| Question {
                image_id: q.image_id,
                question: q.question.into(),
                question_id: q.question_id,
            })
            .collect(),
    };
    let annotations = AnnotationsFile {
        data_type: data_type.into(),
        data_subtype: split.into(),
        annotations: qas
            .iter()
            .map(|q| Annotation {
                question_type: q.question_type.into(),
                multiple_choice_answer: q.answer.into(),
                answers: (1..=10)
                    .map(|answer_id| HumanAnswer {
                        answer: q.answer.into(),
                        answer_confidence: "yes".into(),
                        answer_id,
                    })
                    .collect(),
                image_id: q.image_id,
                answer_type: q.answer_type.into(),
                question_id: q.question_id,
            })
            .collect(),
    };
    suite.write_styled(&in_task(task, &vqa_questions(split)), &questions, style)?;
    suite.write_styled(&in_task(task, &vqa_annotations(split)), &annotations, style)
}
