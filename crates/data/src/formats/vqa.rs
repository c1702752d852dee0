//! VQA v2: a questions file and an annotations file (official JSON layout,
//! <https://visualqa.org/download.html>), images named by id.
//!
//! [`VqaSource::read`] joins questions and annotations on `question_id` and checks that
//! every image exists. Image files are named by a pattern ([`ImagePattern`]): real COCO
//! images are `COCO_<subtype>_<id:012>.jpg` ([`COCO_PATTERN`]), our suites'
//! `images/<split>/<id:012>.png` (`crate::layout::VQA_IMAGE_PATTERN`).
//!
//! # Answers and scores
//!
//! Answers are normalised in the spirit of the official evaluation script (`vqaEval.py` in
//! <https://github.com/GT-Vision-Lab/VQA>; our own implementation, not a copy):
//! 1. newlines and tabs become spaces; leading and trailing whitespace is removed;
//!    everything is lower-cased (Unicode lower case);
//! 2. each of the 21 characters `;` `/` `[` `]` `"` `{` `}` `(` `)` `=` `+` `\` `_` `-`
//!    `>` `<` `@` `` ` `` `,` `?` `!` is deleted
//!    when, in the original answer, that character stands next to a space or the answer
//!    holds a digit-comma-digit sequence (`1,000` → `1000`), and otherwise replaced by a
//!    space (`t-shirt` → `t shirt`);
//! 3. a `.` is deleted unless a digit follows it (`1.5` stays, `yes.` → `yes`);
//! 4. the answer is split into words; `none` and `zero` … `ten` become `0` … `10`; the
//!    articles `a`, `an`, `the` are dropped; a subset of the script's apostrophe-less
//!    contractions is restored (`dont` → `don't`; the 45 single-apostrophe entries listed
//!    in `contraction`); the words are joined with single spaces.
//!
//! Not done (deviations): the script's double-contraction entries (`couldnt've`, ...) and
//! the rest of its table; its entries spelled with capitals (`Im`, `Ive`), which never match
//! after lower-casing there either, are left out on purpose. The script normalises human
//! answers only when they disagree, and the prediction always; we normalise every answer,
//! which gives the same scores whenever the humans agree on an already-normalised answer.
//!
//! The score of an answer is the official accuracy: the mean over the leave-one-out subsets
//! of the human answers of min(1, matches / 3) ([`crate::score::vqa_score`]). It is also the
//! training target of each candidate answer ([`soft_targets`]), restricted to the answer vocabulary
//! ([`AnswerVocab`]: the training set's normalised `multiple_choice_answer`s seen at least
//! `min_count` times, most frequent first, then by text; saved as `answers.json`).
//! A question whose `multiple_choice_answer` is outside the vocabulary is an error by
//! default, or is dropped and listed with [`ReadOptions::skip_unknown`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Loaded, ReadOptions, Skipper, bad, read_json, split_name, write_json};
use crate::error::{DataError, Result};
use crate::image::ImageRef;

/// `v2_OpenEnded_mscoco_<subtype>_questions.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionsFile {
    #[serde(default)]
    pub task_type: String,
    #[serde(default)]
    pub data_type: String,
    #[serde(default)]
    pub data_subtype: String,
    pub questions: Vec<Question>,
}

/// One question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub image_id: u64,
    pub question: String,
    pub question_id: u64,
}

/// `v2_mscoco_<subtype>_annotations.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotationsFile {
    #[serde(default)]
    pub data_type: String,
    #[serde(default)]
    pub data_subtype: String,
    pub annotations: Vec<Annotation>,
}

/// The ten human answers to one question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub question_type: String,
    pub multiple_choice_answer: String,
    pub answers: Vec<HumanAnswer>,
    pub image_id: u64,
    pub answer_type: String,
    pub question_id: u64,
}

/// One human answer (`answer_confidence` is "yes", "maybe" or "no"; `answer_id` 1..=10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanAnswer {
    pub answer: String,
    pub answer_confidence: String,
    pub answer_id: u32,
}

// ---------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------

/// The image pattern of the real COCO images (`COCO_val2014_000000000042.jpg`).
pub const COCO_PATTERN: &str = "COCO_{subtype}_{id:012}.jpg";

/// Where a VQA split lives: the questions file, the annotations file (absent for the test
/// split, which has no answers), and how image ids become image files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqaSource {
    pub questions: PathBuf,
    pub annotations: Option<PathBuf>,
    pub image_dir: PathBuf,
    /// See [`ImagePattern`]; e.g. [`COCO_PATTERN`] or `crate::layout::VQA_IMAGE_PATTERN`.
    pub image_pattern: String,
}

impl VqaSource {
    /// A real VQA v2 download: images `COCO_<subtype>_<id:012>.jpg` in `image_dir`, where
    /// `<subtype>` is the questions file's `data_subtype` (e.g. `val2014`).
    pub fn coco(questions: &Path, annotations: Option<&Path>, image_dir: &Path) -> Self {
        Self {
            questions: questions.to_path_buf(),
            annotations: annotations.map(Path::to_path_buf),
            image_dir: image_dir.to_path_buf(),
            image_pattern: COCO_PATTERN.to_string(),
        }
    }

    /// Reads, validates and joins the split. With annotations, each question gets its
    /// normalised human answers and, when `vocab` is given, its soft-score targets; a
    /// `multiple_choice_answer` outside `vocab` is [`DataError::UnknownAnswer`] (or skipped
    /// with [`ReadOptions::skip_unknown`], or kept with [`ReadOptions::keep_unknown_answers`]).
    /// Without `vocab`, no targets and no check.
    ///
    /// Errors: a duplicate question id in either file, or (unless skipped) a question without
    /// an annotation or an annotation without a question or with another image id, are
    /// [`DataError::BadRecord`] naming both files and the question id; a missing image is
    /// [`DataError::MissingImage`]; no examples is [`DataError::EmptySplit`].
    pub fn read(
        &self,
        vocab: Option<&AnswerVocab>,
        opts: ReadOptions,
    ) -> Result<Loaded<Vec<VqaExample>>> {
        let qpath = &self.questions;
        let pattern = ImagePattern::parse(&self.image_pattern)?;
        let qf: QuestionsFile = read_json(qpath)?;
        if pattern.uses_subtype() && qf.data_subtype.is_empty() {
            return Err(DataError::BadImagePattern {
                pattern: self.image_pattern.clone(),
                reason: format!(
                    "uses {{subtype}} but {} has no `data_subtype`",
                    qpath.display()
                ),
            });
        }
        let ann_file: Option<(&Path, AnnotationsFile)> = match &self.annotations {
            Some(p) => Some((p.as_path(), read_json(p)?)),
            None => None,
        };
        // Errors on one file name the other too.
        let with_annotations = match &self.annotations {
            Some(a) => format!(" (joined with {})", a.display()),
            None => String::new(),
        };
        let with_questions = format!(" (joined with {})", qpath.display());

        let mut qids: HashMap<u64, usize> = HashMap::with_capacity(qf.questions.len());
        for (i, q) in qf.questions.iter().enumerate() {
            if qids.insert(q.question_id, i).is_some() {
                return Err(bad(
                    qpath,
                    format!("question_id {}", q.question_id),
                    format!("question id appears more than once{with_annotations}"),
                ));
            }
        }
        let mut anns: HashMap<u64, &Annotation> = HashMap::new();
        if let Some((apath, af)) = &ann_file {
            anns.reserve(af.annotations.len());
            for a in &af.annotations {
                if anns.insert(a.question_id, a).is_some() {
                    return Err(bad(
                        apath,
                        format!("question_id {}", a.question_id),
                        format!("question id appears more than once{with_questions}"),
                    ));
                }
            }
        }

        let mut skipper = Skipper::new(opts);
        let mut image_exists: HashMap<u64, bool> = HashMap::new();
        let mut out = Vec::with_capacity(qf.questions.len());
        for q in &qf.questions {
            let record = format!("question_id {}", q.question_id);
            let r = self.example(
                q,
                &record,
                ann_file.as_ref().map(|(p, _)| *p),
                &anns,
                &pattern,
                &qf.data_subtype,
                vocab,
                opts.keep_unknown_answers,
                &mut image_exists,
            );
            if let Some(ex) = skipper.check(r)? {
                out.push(ex);
            }
        }
        if let Some((apath, af)) = &ann_file {
            for a in &af.annotations {
                if !qids.contains_key(&a.question_id) {
                    skipper.check::<()>(Err(bad(
                        apath,
                        format!("question_id {}", a.question_id),
                        format!("no question with this id in {}", qpath.display()),
                    )))?;
                }
            }
        }
        if out.is_empty() {
            return Err(DataError::EmptySplit {
                path: qpath.clone(),
                split: if qf.data_subtype.is_empty() {
                    split_name(qpath)
                } else {
                    qf.data_subtype.clone()
                },
            });
        }
        Ok(skipper.finish(out))
    }

    #[allow(clippy::too_many_arguments)]
    fn example(
        &self,
        q: &Question,
        record: &str,
        apath: Option<&Path>,
        anns: &HashMap<u64, &Annotation>,
        pattern: &ImagePattern,
        subtype: &str,
        vocab: Option<&AnswerVocab>,
        keep_unknown: bool,
        image_exists: &mut HashMap<u64, bool>,
    ) -> Result<VqaExample> {
        let qpath = &self.questions;
        let ann = match apath {
            None => None,
            Some(apath) => match anns.get(&q.question_id) {
                None => {
                    return Err(bad(
                        qpath,
                        record,
                        format!("no annotation with this id in {}", apath.display()),
                    ));
                }
                Some(a) if a.image_id != q.image_id => {
                    return Err(bad(
                        qpath,
                        record,
                        format!(
                            "image_id {} here but {} in {}",
                            q.image_id,
                            a.image_id,
                            apath.display()
                        ),
                    ));
                }
                Some(a) => Some((apath, *a)),
            },
        };
        let image_path = self.image_dir.join(pattern.render(q.image_id, subtype));
        let exists = *image_exists
            .entry(q.image_id)
            .or_insert_with(|| image_path.is_file());
        if !exists {
            return Err(DataError::MissingImage {
                path: qpath.clone(),
                record: format!("{record} (image_id {})", q.image_id),
                image: image_path,
            });
        }
        let mut ex = VqaExample {
            question_id: q.question_id,
            image_id: q.image_id,
            image: ImageRef::new(image_path),
            question: q.question.clone(),
            answer_type: None,
            question_type: None,
            multiple_choice_answer: None,
            answers: Vec::new(),
            targets: Vec::new(),
        };
        if let Some((apath, a)) = ann {
            if a.answers.is_empty() {
                return Err(bad(apath, record, "no human answers"));
            }
            let mc = normalize_answer(&a.multiple_choice_answer);
            ex.answers = a
                .answers
                .iter()
                .map(|h| normalize_answer(&h.answer))
                .collect();
            if let Some(vocab) = vocab {
                if vocab.get(&mc).is_none() && !keep_unknown {
                    return Err(DataError::UnknownAnswer {
                        path: apath.to_path_buf(),
                        record: record.to_string(),
                        answer: mc,
                    });
                }
                ex.targets = soft_targets(&ex.answers, vocab);
            }
            ex.answer_type = Some(a.answer_type.clone());
            ex.question_type = Some(a.question_type.clone());
            ex.multiple_choice_answer = Some(mc);
        }
        Ok(ex)
    }
}

/// One question with its image and, when the split has annotations, its answers.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaExample {
    pub question_id: u64,
    pub image_id: u64,
    pub image: ImageRef,
    pub question: String,
    /// `yes/no`, `number` or `other` (`None` without annotations).
    pub answer_type: Option<String>,
    /// The question's first words as the annotators classified them, e.g. `how many`.
    pub question_type: Option<String>,
    /// The normalised most common answer (`None` without annotations).
    pub multiple_choice_answer: Option<String>,
    /// The normalised human answers, in file order (empty without annotations).
    pub answers: Vec<String>,
    /// (vocabulary index, soft score > 0) for each distinct human answer in the vocabulary,
    /// by index (empty without annotations or vocabulary).
    pub targets: Vec<(usize, f32)>,
}

/// An image file-name pattern: literal text with the placeholders `{id}` (the image id in
/// decimal), `{id:0N}` (zero-padded to N digits, e.g. `{id:012}`) and `{subtype}` (the
/// questions file's `data_subtype`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePattern {
    parts: Vec<PatternPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternPart {
    Text(String),
    Id { width: usize },
    Subtype,
}

impl ImagePattern {
    /// Parses a pattern; an unknown or unclosed placeholder is [`DataError::BadImagePattern`].
    pub fn parse(pattern: &str) -> Result<Self> {
        let invalid = |reason: String| DataError::BadImagePattern {
            pattern: pattern.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(PatternPart::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| invalid("unclosed `{`".into()))?;
            let name = &rest[open + 1..open + close];
            let part = match name {
                "id" => PatternPart::Id { width: 0 },
                "subtype" => PatternPart::Subtype,
                _ => match name.strip_prefix("id:0").map(str::parse::<usize>) {
                    Some(Ok(width)) if width > 0 => PatternPart::Id { width },
                    _ => {
                        return Err(invalid(format!(
                            "unknown placeholder `{{{name}}}`; valid: {{id}}, {{id:0N}} \
                             (e.g. {{id:012}}), {{subtype}}"
                        )));
                    }
                },
            };
            parts.push(part);
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(invalid("`}` without `{`".into()));
        }
        if !rest.is_empty() {
            parts.push(PatternPart::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, PatternPart::Id { .. })) {
            return Err(invalid("has no {id} placeholder".into()));
        }
        Ok(Self { parts })
    }

    /// Whether the pattern has a `{subtype}` placeholder.
    pub fn uses_subtype(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, PatternPart::Subtype))
    }

    /// The file name of image `id`.
    pub fn render(&self, id: u64, subtype: &str) -> String {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                PatternPart::Text(t) => s.push_str(t),
                PatternPart::Id { width } => s.push_str(&format!("{id:0width$}")),
                PatternPart::Subtype => s.push_str(subtype),
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// Answer normalisation and training targets
// ---------------------------------------------------------------------------------------

/// The punctuation the official script treats (not `'`, `:`, `.`, `#`, `$`, `%`, `&`, `*`).
const PUNCTUATION: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// Normalises an answer as the official evaluation does (see the module doc for exactly
/// which steps): `"Two dogs!"` → `"2 dogs"`, `"the Frisbee."` → `"frisbee"`, `"dont"` →
/// `"don't"`. Idempotent.
pub fn normalize_answer(answer: &str) -> String {
    let text = answer.replace(['\n', '\t'], " ").trim().to_lowercase();
    let chars: Vec<char> = text.chars().collect();
    let digit_comma_digit = chars
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit());
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if PUNCTUATION.contains(&c) {
            // Decided per punctuation character over the whole (original) answer.
            let next_to_space = chars
                .windows(2)
                .any(|w| (w[0] == c && w[1] == ' ') || (w[0] == ' ' && w[1] == c));
            if !(next_to_space || digit_comma_digit) {
                out.push(' ');
            }
        } else if c == '.' {
            let before_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if before_digit {
                out.push('.');
            }
        } else {
            out.push(c);
        }
    }
    let mut words: Vec<&str> = Vec::new();
    for w in out.split_whitespace() {
        let w = number_word(w).unwrap_or(w);
        if matches!(w, "a" | "an" | "the") {
            continue;
        }
        words.push(contraction(w).unwrap_or(w));
    }
    words.join(" ")
}

fn number_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "none" | "zero" => "0",
        "one" => "1",
        "two" => "2",
        "three" => "3",
        "four" => "4",
        "five" => "5",
        "six" => "6",
        "seven" => "7",
        "eight" => "8",
        "nine" => "9",
        "ten" => "10",
        _ => return None,
    })
}

/// The apostrophe-less spellings we restore (a subset of the official table).
fn contraction(w: &str) -> Option<&'static str> {
    Some(match w {
        "aint" => "ain't",
        "arent" => "aren't",
        "cant" => "can't",
        "couldnt" => "couldn't",
        "couldve" => "could've",
        "didnt" => "didn't",
        "doesnt" => "doesn't",
        "dont" => "don't",
        "hadnt" => "hadn't",
        "hasnt" => "hasn't",
        "havent" => "haven't",
        "hes" => "he's",
        "hows" => "how's",
        "isnt" => "isn't",
        "itll" => "it'll",
        "mightnt" => "mightn't",
        "mightve" => "might've",
        "mustnt" => "mustn't",
        "mustve" => "must've",
        "neednt" => "needn't",
        "oclock" => "o'clock",
        "shant" => "shan't",
        "shes" => "she's",
        "shouldnt" => "shouldn't",
        "shouldve" => "should've",
        "thats" => "that's",
        "theres" => "there's",
        "theyd" => "they'd",
        "theyll" => "they'll",
        "theyre" => "they're",
        "theyve" => "they've",
        "wasnt" => "wasn't",
        "werent" => "weren't",
        "weve" => "we've",
        "whats" => "what's",
        "wheres" => "where's",
        "whos" => "who's",
        "wont" => "won't",
        "wouldnt" => "wouldn't",
        "wouldve" => "would've",
        "yall" => "y'all",
        "youd" => "you'd",
        "youll" => "you'll",
        "youre" => "you're",
        "youve" => "you've",
        _ => return None,
    })
}

/// The training target: (vocabulary index, [`crate::score::vqa_score`]) of each distinct human answer
/// (normalised) that is in `vocab` and scores above 0, sorted by index.
pub fn soft_targets(answers: &[String], vocab: &AnswerVocab) -> Vec<(usize, f32)> {
    let mut t: Vec<(usize, f32)> = crate::score::answer_scores(answers)
        .into_iter()
        .filter_map(|(a, s)| vocab.get(&a).map(|i| (i, s)))
        .filter(|&(_, s)| s > 0.0)
        .collect();
    t.sort_by_key(|&(i, _)| i);
    t
}

// ---------------------------------------------------------------------------------------
// Answer vocabulary
// ---------------------------------------------------------------------------------------

/// The answers a VQA head can give, by index; saved as `answers.json` (a JSON array of
/// strings, index = position).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnswerVocab {
    answers: Vec<String>,
    index: HashMap<String, usize>,
}

impl AnswerVocab {
    /// A vocabulary of these answers, in this order. Each must be non-empty, normalised
    /// ([`normalize_answer`] leaves it unchanged) and appear once.
    pub fn new(answers: Vec<String>) -> Result<Self> {
        Self::checked(answers, Path::new("answer vocabulary"))
    }

    fn checked(answers: Vec<String>, path: &Path) -> Result<Self> {
        let mut index = HashMap::with_capacity(answers.len());
        for (i, a) in answers.iter().enumerate() {
            let record = format!("answer {i} `{a}`");
            let n = normalize_answer(a);
            if a.is_empty() || n != *a {
                return Err(bad(
                    path,
                    record,
                    format!("not a normalised answer (normalised: `{n}`)"),
                ));
            }
            if let Some(j) = index.insert(a.clone(), i) {
                return Err(bad(path, record, format!("same as answer {j}")));
            }
        }
        Ok(Self { answers, index })
    }

    /// The normalised `multiple_choice_answer`s given at least `min_count` times (at least
    /// once when `min_count` is 0), most frequent first, ties by text (byte order).
    pub fn from_annotations(annotations: &[Annotation], min_count: usize) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for a in annotations {
            let n = normalize_answer(&a.multiple_choice_answer);
            if !n.is_empty() {
                *counts.entry(n).or_default() += 1;
            }
        }
        let mut v: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count.max(1))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let answers: Vec<String> = v.into_iter().map(|(a, _)| a).collect();
        let index = answers
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i))
            .collect();
        Self { answers, index }
    }

    /// [`AnswerVocab::from_annotations`] of an annotations file.
    pub fn build(annotations: &Path, min_count: usize) -> Result<Self> {
        let af: AnnotationsFile = read_json(annotations)?;
        Ok(Self::from_annotations(&af.annotations, min_count))
    }

    /// Reads `answers.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let answers: Vec<String> = read_json(path)?;
        Self::checked(answers, path)
    }

    /// Writes `answers.json` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, &self.answers)
    }

    /// The index of a normalised answer.
    pub fn get(&self, answer: &str) -> Option<usize> {
        self.index.get(answer).copied()
    }

    /// The answer at `index`.
    pub fn answer(&self, index: usize) -> Option<&str> {
        self.answers.get(index).map(String::as_str)
    }

    /// All answers, by index.
    pub fn answers(&self) -> &[String] {
        &self.answers
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}
