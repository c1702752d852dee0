//! Task scores, in one place: what a model's predictions (or a text-only prior) score on a
//! split. Each is a pure function (or a counter that batches add to) whose module states its
//! formula and source. The readers (`crate::formats`) only read; they keep what reading
//! needs (answer normalisation, the VQA soft targets, the retrieval hit sets).
//!
//! - [`vqa`]: the official VQA accuracy ([`vqa_score`], [`vqa_accuracy`], [`answer_scores`]).
//! - [`retrieval`]: recall@k over a full images × captions score matrix, shared captions
//!   counted as hits and ties against the query ([`text_to_image_ranks`],
//!   [`image_to_text_ranks`], [`recall_at_k`]), and [`chance_recall`].
//! - [`embedding`]: the same ranks, both directions, from image and text embeddings in
//!   chunks, without the matrix ([`embedding_ranks`], [`embedding_recall`]).
//! - [`classify`]: accuracy of classification and NLVR2 predictions ([`accuracy`],
//!   [`Accuracy`]).
//! - [`segment`]: the confusion matrix of class-index maps with the ignore index, per-class
//!   IoU and mIoU ([`Confusion`]).
//! - [`prior`]: the text-only priors ([`Prior`], [`majority`]).

pub mod classify;
pub mod embedding;
pub mod prior;
pub mod retrieval;
pub mod segment;
pub mod vqa;

pub use classify::{Accuracy, accuracy};
pub use embedding::{
    EmbeddingRetrieval, RECALL_KS, RetrievalRanks, RetrievalRecall, Similarity, embedding_ranks,
    embedding_recall,
};
pub use prior::{Prior, PriorEntry, majority};
pub use retrieval::{
    chance_recall, image_to_text_ranks, image_to_text_recall, recall_at_k, text_to_image_ranks,
    text_to_image_recall,
};
pub use segment::Confusion;
pub use vqa::{answer_scores, vqa_accuracy, vqa_score};
