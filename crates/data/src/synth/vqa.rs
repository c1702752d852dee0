//! VQA (kind `vqa`): one question per image in the VQA v2 files, ten identical human answers.
//! Question type from a balanced plan, then the answer, then the wording, then the scene.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::grammar::Question;
use super::scene::{Colour, Desc, Rel, Scene, Shape, Size, Spec, pick, sample};
use super::write::{Ctx, QuestionPriorFile, SceneRecord, Split, attempt, balanced, str_pairs};
use crate::error::Result;
use crate::layout::{ANSWERS, QUESTION_PRIOR, in_task, vqa_image};
use crate::out::{JsonStyle, UnanimousQa, write_vqa_split};
use crate::score::Prior;
use crate::suite::{TaskEntry, TaskKind};

const TASK: &str = "vqa";

#[derive(Debug, Clone, Copy)]
enum Form {
    Colour,
    Shape,
    Count,
    Exists,
    Spatial,
}

/// One question with its answer and scene.
#[derive(Debug)]
struct Item {
    image_id: u64,
    question: Question,
    text: String,
    answer: String,
    scene: SceneRecord,
}

fn maybe_size(rng: &mut ChaCha8Rng) -> Option<Size> {
    rng.random_bool(0.3).then(|| pick(rng, &Size::ALL))
}

/// Draws the answer for `form`, then the question's other words, then a scene where the
/// answer is true.
fn make(ctx: &Ctx, form: Form, rng: &mut ChaCha8Rng) -> Result<(Question, String, Scene)> {
    let (knobs, layout) = (&ctx.knobs, &ctx.layout);
    let mut spec = Spec::default();
    let (question, answer, reverse) = match form {
        Form::Colour => {
            let answer = pick(rng, &Colour::ALL);
            let d = Desc {
                shape: Some(pick(rng, &Shape::ALL)),
                colour: None,
                size: maybe_size(rng),
            };
            let target = Desc {
                colour: Some(answer),
                ..d
            };
            spec.required = vec![target];
            spec.avoid = vec![d];
            spec.focus = vec![target];
            (Question::Colour(d), answer.name().to_string(), None)
        }
        Form::Shape => {
            let answer = pick(rng, &Shape::ALL);
            let d = Desc {
                shape: None,
                colour: Some(pick(rng, &Colour::ALL)),
                size: maybe_size(rng),
            };
            let target = Desc {
                shape: Some(answer),
                ..d
            };
            spec.required = vec![target];
            spec.avoid = vec![d];
            spec.focus = vec![target];
            (Question::Shape(d), answer.name().to_string(), None)
        }
        Form::Count => match rng.random_range(0..3) {
            0 => {
                let k = rng.random_range(knobs.min..=knobs.max);
                spec.n = Some(k);
                (Question::CountAll, k.to_string(), None)
            }
            sub => {
                let k = rng.random_range(0..=knobs.max.min(3));
                let d = if sub == 1 {
                    Desc::colour(pick(rng, &Colour::ALL))
                } else {
                    Desc::shape(pick(rng, &Shape::ALL))
                };
                spec.required = vec![d; k];
                spec.avoid = vec![d];
                spec.focus = vec![d];
                (Question::CountOf(d), k.to_string(), None)
            }
        },
        Form::Exists => {
            let yes = rng.random_bool(0.5);
            let d = Desc {
                shape: Some(pick(rng, &Shape::ALL)),
                colour: Some(pick(rng, &Colour::ALL)),
                size: maybe_size(rng),
            };
            if yes {
                spec.required = vec![d];
            } else {
                spec.avoid = vec![d];
            }
            spec.focus = vec![d];
            (
                Question::Exists(d),
                if yes { "yes" } else { "no" }.to_string(),
                None,
            )
        }
        Form::Spatial => {
            let yes = rng.random_bool(0.5);
            let rel = pick(rng, &Rel::ALL);
            let a = Desc {
                shape: Some(pick(rng, &Shape::ALL)),
                colour: Some(pick(rng, &Colour::ALL)),
                size: None,
            };
            let b = loop {
                let b = Desc {
                    shape: Some(pick(rng, &Shape::ALL)),
                    colour: Some(pick(rng, &Colour::ALL)),
                    size: None,
                };
                if b != a {
                    break b;
                }
            };
            spec.required = vec![a, b];
            spec.avoid = vec![a, b];
            spec.focus = vec![a, b];
            let answer = if yes { "yes" } else { "no" }.to_string();
            (Question::Rel(a, rel, b), answer, Some((a, rel, b, yes)))
        }
    };
    let scene = attempt(&question.text(), || {
        let scene = sample(rng, knobs, layout, &spec)?;
        if question.answer(layout, &scene).as_deref() != Some(answer.as_str()) {
            return None;
        }
        // A "no" to "is A left of B?" puts A right of B, never in the same column.
        if let Some((a, rel, b, false)) = reverse {
            let (x, y) = (scene.unique(&a)?, scene.unique(&b)?);
            if !rel.holds(layout, y, x) {
                return None;
            }
        }
        Some(scene)
    })?;
    Ok((question, answer, scene))
}

/// The answer vocabulary: yes, no, the counts, the colours, the shapes.
fn vocabulary(max_objects: usize) -> Vec<String> {
    let mut v: Vec<String> = vec!["yes".into(), "no".into()];
    v.extend((0..=max_objects).map(|n| n.to_string()));
    v.extend(Colour::ALL.map(|c| c.name().to_string()));
    v.extend(Shape::ALL.map(|s| s.name().to_string()));
    v
}

pub(crate) fn write(ctx: &Ctx) -> Result<TaskEntry> {
    let mut forms = vec![Form::Colour, Form::Shape, Form::Count, Form::Exists];
    if ctx.knobs.max >= 2 {
        forms.push(Form::Spatial);
    }
    let sizes = ctx.cfg.scale.sizes(TASK);
    let mut counts = BTreeMap::new();
    let mut splits: Vec<Vec<Item>> = Vec::new();
    let mut next_id = 1u64;
    for split in Split::ALL {
        let s = split.name();
        let n = sizes[split.index()];
        ctx.image_dirs(TASK, s)?;
        let plan = balanced(n, forms.len(), &mut ctx.split_rng(TASK, split));
        let base = next_id;
        let items = ctx.par(n, |i| {
            let mut rng = ctx.rng(TASK, split, i);
            let (question, answer, scene) = make(ctx, forms[plan[i]], &mut rng)?;
            let image_id = base + i as u64;
            let (image, mask) = ctx.draw_in(TASK, s, vqa_image(s, image_id), &scene, &mut rng)?;
            Ok(Item {
                image_id,
                text: question.text(),
                question,
                answer,
                scene: SceneRecord {
                    image,
                    mask,
                    objects: scene.objects,
                },
            })
        })?;
        next_id += n as u64;
        let qas: Vec<UnanimousQa> = items
            .iter()
            .map(|it| UnanimousQa {
                question_id: it.image_id * 10,
                image_id: it.image_id,
                question: &it.text,
                answer: &it.answer,
                question_type: it.question.question_type(),
                answer_type: it.question.answer_type(),
            })
            .collect();
        write_vqa_split(
            ctx.suite,
            TASK,
            s,
            ("OpenEnded", "synthetic"),
            &qas,
            JsonStyle::Compact,
        )?;
        ctx.write_scenes(
            TASK,
            split,
            items.iter().map(|it| it.scene.clone()).collect(),
        )?;
        counts.insert(s.to_string(), n);
        splits.push(items);
    }
    let vocab = vocabulary(ctx.knobs.max);
    ctx.suite.write_json(&in_task(TASK, ANSWERS), &vocab)?;

    let pairs = |items: &'_ [Item]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|it| (it.text.clone(), it.answer.clone()))
            .collect()
    };
    let (train, test) = (pairs(&splits[0]), pairs(&splits[2]));
    let as_refs = str_pairs;
    let prior = Prior::fit(as_refs(&train));
    let question_prior = prior.accuracy(as_refs(&test));
    let majority = prior.majority_accuracy(as_refs(&test));
    ctx.suite.write_json(
        &in_task(TASK, QUESTION_PRIOR),
        &QuestionPriorFile {
            fallback: prior.fallback.clone(),
            test_accuracy: question_prior,
            majority_test_accuracy: majority,
            questions: prior.per_key.clone(),
        },
    )?;
    let baselines = BTreeMap::from([
        ("question_prior".to_string(), question_prior),
        ("majority".to_string(), majority),
        ("chance".to_string(), 1.0 / vocab.len() as f64),
    ]);
    Ok(TaskEntry {
        name: TASK.into(),
        kind: TaskKind::Vqa,
        root: TASK.into(),
        official: None,
        counts,
        baselines,
        description:
            "answer a question about an image of shapes (colour, shape, count, existence, \
                      spatial relation); one question per image"
                .into(),
    })
}
