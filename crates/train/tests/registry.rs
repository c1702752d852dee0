//! The task registry: one entry per task kind, each documented in its module (the task, its
//! loss formula, its scores, its source, its deviations).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use mmerge_data::suite::TaskKind;
use mmerge_train::tasks::{InputKind, TASKS, TaskDef, task_def};

/// The module doc of an entry: its leading `//!` lines, prefix removed.
fn module_doc(def: &TaskDef) -> Vec<&'static str> {
    def.source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect()
}

#[test]
fn every_task_kind_has_exactly_one_entry() {
    assert_eq!(TASKS.len(), TaskKind::ALL.len());
    let names: BTreeSet<&str> = TASKS.iter().map(TaskDef::name).collect();
    assert_eq!(names.len(), TASKS.len(), "duplicate task names");
    for kind in TaskKind::ALL {
        let def = task_def(kind).unwrap();
        assert_eq!(def.kind, kind);
        assert_eq!(def.name(), kind.name());
    }
}

#[test]
fn inputs_and_scores_are_as_declared() {
    let got: Vec<(&str, InputKind, Vec<&str>)> = TASKS
        .iter()
        .map(|t| (t.name(), t.input, t.scores.to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            ("vqa", InputKind::ImageText, vec!["vqa_score"]),
            (
                "retrieval",
                InputKind::ImageText,
                vec![
                    "r_mean", "tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"
                ]
            ),
            ("nlvr2", InputKind::ImagePairText, vec!["accuracy"]),
            ("image_cls", InputKind::Image, vec!["accuracy"]),
            ("text_cls", InputKind::Text, vec!["accuracy"]),
            (
                "segmentation",
                InputKind::Image,
                vec!["miou", "pixel_accuracy"]
            ),
        ]
    );
}

#[test]
fn every_module_doc_states_its_loss_scores_source_and_deviations() {
    for def in TASKS {
        let name = def.name();
        let doc = module_doc(def);
        assert!(
            doc.len() >= 8,
            "{name}: a module doc of {} lines",
            doc.len()
        );
        let text = doc.join(" ");
        // The loss formula: a line `L = …`.
        assert!(
            doc.iter().any(|l| l.starts_with("L = ")),
            "{name}: no loss formula line `L = …`"
        );
        assert!(!def.loss.is_empty() && !def.loss.contains('\n'), "{name}");
        assert!(text.contains("Loss"), "{name}: no `Loss` sentence");
        assert!(text.contains("Input: "), "{name}: no `Input:` sentence");
        assert!(text.contains("Head: "), "{name}: no `Head:` sentence");
        assert!(text.contains("Prediction"), "{name}: no prediction");
        for score in def.scores {
            assert!(
                text.contains(&format!("`{score}`")),
                "{name}: score `{score}` is not in the module doc"
            );
        }
        assert!(text.contains("arXiv "), "{name}: no arXiv citation");
        let deviation: Vec<&&str> = doc
            .iter()
            .filter(|l| l.starts_with("Deviation: "))
            .collect();
        assert_eq!(deviation.len(), 1, "{name}: one `Deviation:` paragraph");
        // The head path names the kind (retrieval shares `heads.itc`).
        let head = if def.kind == TaskKind::Retrieval {
            "heads.itc".to_string()
        } else {
            format!("heads.{name}")
        };
        assert!(
            text.contains(&head),
            "{name}: the head `{head}` is not named"
        );
    }
}

#[test]
fn every_source_is_its_own_module() {
    for def in TASKS {
        assert!(
            def.source
                .contains(&format!("kind: TaskKind::{:?},", def.kind)),
            "{}: `source` is another module's",
            def.name()
        );
    }
}
