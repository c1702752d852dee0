//! VQA: answer a question about an image, as classification over the answer vocabulary.
//!
//! Input: image-text (the question fused with the image). Head: [`Classifier`] on the first
//! token of the fused sequence, one logit per answer, under `heads.vqa`. Loss (VLMo / ViLT's
//! recipe, arXiv 2111.02358 / 2102.03334; VQA v2, arXiv 1612.00837): binary
//! cross-entropy with logits against the soft scores s_a (the official VQA accuracy answer a
//! would get, `data::score::vqa::answer_scores`), averaged over batch × answers and
//! multiplied by the number of answers K:
//!   L = K · mean_{b,a} [ −s_ba log σ(z_ba) − (1 − s_ba) log(1 − σ(z_ba)) ].
//! Prediction: the arg-max answer. Score `vqa_score`: the official VQA accuracy of that
//! answer against the human answers (min(1, matches / 3), averaged over the 10-choose-9
//! subsets as the official evaluator does: `data::score::vqa::vqa_accuracy`), averaged
//! over questions; that per-question soft score is the score's per-item value.
//!
//! Deviation: questions without an answer vocabulary entry keep their (all-zero) targets in
//! training and count in the score, as the official evaluation counts them.

use mmerge_data::score::vqa::vqa_accuracy;
use mmerge_data::suite::{Examples, TaskKind};
use mmerge_models::heads::Classifier;
use tch::{Reduction, Tensor};

use super::{Evaluated, InputKind, Task, TaskData, TaskDef, per_item};
use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Item, ModelBatch, Target, Targets};
use crate::net::Net;

pub const TASK: TaskDef = TaskDef {
    kind: TaskKind::Vqa,
    input: InputKind::ImageText,
    loss: "K · mean BCE-with-logits against the soft answer scores",
    scores: &["vqa_score"],
    build,
    source: include_str!("vqa.rs"),
};

#[derive(Debug)]
struct Vqa {
    head: Classifier,
    answers: Vec<String>,
}

fn build(net: &mut Net, data: &TaskData<'_>) -> Result<Box<dyn Task>> {
    let Examples::Vqa {
        vocab: Some(vocab), ..
    } = data.train
    else {
        return Err(TrainError::Invalid(format!(
            "task `{}`: VQA training needs an answer vocabulary (answers.json)",
            data.name
        )));
    };
    let answers = vocab.answers().to_vec();
    let cfg = net.config().clone();
    let head = Classifier::new(
        &(net.heads() / "vqa"),
        cfg.hidden_size,
        answers.len() as i64,
        cfg.layer_norm_eps,
    );
    Ok(Box::new(Vqa { head, answers }))
}

impl Vqa {
    fn logits(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        // Only the first token is read: the last layer computes only its output.
        let text = batch.text()?;
        let enc = &net.encoder;
        let t = enc.text_lower(&text.batch(), train)?;
        let i = enc.image_lower(batch.image()?, 1, train)?;
        let h = enc.fuse_first(t, i, &text.mask, 1, train)?;
        Ok(self.head.forward(&h.select(1, 0)))
    }
}

impl Task for Vqa {
    fn items(&self, examples: &Examples) -> Result<Vec<Item>> {
        let Examples::Vqa { examples, .. } = examples else {
            return Err(TrainError::Invalid("not a VQA split".into()));
        };
        Ok(examples
            .iter()
            .enumerate()
            .map(|(i, e)| Item {
                images: vec![e.image.clone()],
                texts: vec![e.question.clone()],
                target: Target::Soft(e.targets.clone()),
                group: i,
            })
            .collect())
    }

    fn soft_classes(&self) -> usize {
        self.answers.len()
    }

    fn loss(&self, net: &Net, batch: &ModelBatch, train: bool) -> Result<Tensor> {
        let Targets::Soft(targets) = &batch.targets else {
            return Err(TrainError::Invalid("VQA batch without soft targets".into()));
        };
        let logits = self.logits(net, batch, train)?;
        Ok(vqa_loss(&logits, targets))
    }

    fn evaluate(&self, net: &Net, data: &EvalData, examples: &Examples) -> Result<Evaluated> {
        let Examples::Vqa { examples: ex, .. } = examples else {
            return Err(TrainError::Invalid("not a VQA split".into()));
        };
        let scores = per_item(data, self.items(examples)?, self.soft_classes(), |batch| {
            let pred = self.logits(net, batch, false)?.argmax(1, false);
            let pred: Vec<i64> = Vec::try_from(pred.to_device(tch::Device::Cpu))?;
            batch
                .indices
                .iter()
                .zip(&pred)
                .map(|(&i, &p)| {
                    let answer = self
                        .answers
                        .get(p as usize)
                        .map(String::as_str)
                        .unwrap_or("");
                    let humans = ex.get(i).ok_or_else(|| {
                        TrainError::Invalid(format!("VQA item {i} of {} questions", ex.len()))
                    })?;
                    Ok(f64::from(vqa_accuracy(answer, &humans.answers)))
                })
                .collect()
        })?;
        let mut e = Evaluated::default();
        e.insert_mean("vqa_score", scores);
        Ok(e)
    }
}

/// K · mean BCE-with-logits of logits [B, K] against soft scores [B, K].
pub fn vqa_loss(logits: &Tensor, targets: &Tensor) -> Tensor {
    let k = logits.size().last().copied().unwrap_or(1) as f64;
    logits.binary_cross_entropy_with_logits::<Tensor>(targets, None, None, Reduction::Mean) * k
}
