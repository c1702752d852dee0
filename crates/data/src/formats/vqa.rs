//! VQA v2: a questions file and an annotations file (official JSON layout,
//! <https://visualqa.org/download.html>), images named by id.

use serde::{Deserialize, Serialize};

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
