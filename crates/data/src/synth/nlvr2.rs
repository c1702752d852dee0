//! NLVR2-style (kind `nlvr2`): a statement about two images, True or False. A template from a
//! balanced plan and its words make a sentence; the sentence is used twice, once True and once
//! False, each time with its own pair of images sampled until the statement has that value.
//! Identifiers are `<split>-<sentence>-<pair>-0` (the NLVR2 shape), images
//! `images/<split>/<split>-<sentence>-<pair>-img{0,1}.png` (img0 is the left image).

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::grammar::Statement;
use super::scene::{Colour, Desc, Knobs, Scene, Shape, Size, Spec, pick, sample};
use super::write::{Ctx, SceneRecord, Split, attempt, balanced, str_pairs};
use crate::error::Result;
use crate::formats::nlvr2::Record;
use crate::layout::{in_task, nlvr2_file, nlvr2_image};
use crate::score::Prior;
use crate::suite::{TaskEntry, TaskKind};

const TASK: &str = "nlvr2";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Template {
    Both,
    Left,
    Right,
    LeftCount,
    RightCount,
    More,
    Same,
    ExactlyOne,
    Total,
}

/// The largest "N circles in total" a statement names.
fn total_cap(k: &Knobs) -> usize {
    (2 * k.max).min(4)
}

fn templates(k: &Knobs) -> Vec<Template> {
    let mut t = vec![
        Template::Both,
        Template::Left,
        Template::Right,
        Template::ExactlyOne,
        Template::Total,
    ];
    if k.max > k.min {
        t.extend([
            Template::LeftCount,
            Template::RightCount,
            Template::More,
            Template::Same,
        ]);
    }
    t
}

fn noun_phrase(rng: &mut ChaCha8Rng) -> Desc {
    Desc {
        shape: Some(pick(rng, &Shape::ALL)),
        colour: Some(pick(rng, &Colour::ALL)),
        size: rng.random_bool(0.25).then(|| pick(rng, &Size::ALL)),
    }
}

fn words(t: Template, k: &Knobs, rng: &mut ChaCha8Rng) -> Statement {
    match t {
        Template::Both => Statement::Both(noun_phrase(rng)),
        Template::Left => Statement::Left(noun_phrase(rng)),
        Template::Right => Statement::Right(noun_phrase(rng)),
        Template::ExactlyOne => Statement::ExactlyOne(noun_phrase(rng)),
        Template::LeftCount => Statement::LeftCount(rng.random_range(k.min..=k.max)),
        Template::RightCount => Statement::RightCount(rng.random_range(k.min..=k.max)),
        Template::More => Statement::More,
        Template::Same => Statement::Same,
        Template::Total => {
            Statement::Total(pick(rng, &Shape::ALL), rng.random_range(1..=total_cap(k)))
        }
    }
}

fn has(d: Desc) -> Spec {
    Spec {
        required: vec![d],
        focus: vec![d],
        ..Spec::default()
    }
}

fn lacks(d: Desc) -> Spec {
    Spec {
        avoid: vec![d],
        focus: vec![d],
        ..Spec::default()
    }
}

fn exactly(d: Desc, n: usize) -> Spec {
    Spec {
        required: vec![d; n],
        avoid: vec![d],
        focus: vec![d],
        ..Spec::default()
    }
}

fn of_size(n: usize) -> Spec {
    Spec {
        n: Some(n),
        ..Spec::default()
    }
}

/// A uniformly chosen `(a, b)` with both in `lo..=hi` and `keep(a, b)`.
fn pair_where(
    rng: &mut ChaCha8Rng,
    lo: usize,
    hi: usize,
    keep: impl Fn(usize, usize) -> bool,
) -> Option<(usize, usize)> {
    let all: Vec<(usize, usize)> = (lo..=hi)
        .flat_map(|a| (lo..=hi).map(move |b| (a, b)))
        .filter(|&(a, b)| keep(a, b))
        .collect();
    (!all.is_empty()).then(|| all[rng.random_range(0..all.len())])
}

/// Scene specs (left, right) aimed at `label`; the caller checks the result.
fn specs(st: &Statement, label: bool, k: &Knobs, rng: &mut ChaCha8Rng) -> Option<(Spec, Spec)> {
    let either = |rng: &mut ChaCha8Rng, d: Desc| {
        if rng.random_bool(0.5) {
            has(d)
        } else {
            lacks(d)
        }
    };
    Some(match (st, label) {
        (Statement::Both(d), true) => (has(*d), has(*d)),
        (Statement::Both(d), false) => match rng.random_range(0..3) {
            0 => (lacks(*d), has(*d)),
            1 => (has(*d), lacks(*d)),
            _ => (lacks(*d), lacks(*d)),
        },
        (Statement::Left(d), l) => (if l { has(*d) } else { lacks(*d) }, either(rng, *d)),
        (Statement::Right(d), l) => (either(rng, *d), if l { has(*d) } else { lacks(*d) }),
        (Statement::ExactlyOne(d), true) => {
            if rng.random_bool(0.5) {
                (has(*d), lacks(*d))
            } else {
                (lacks(*d), has(*d))
            }
        }
        (Statement::ExactlyOne(d), false) => {
            if rng.random_bool(0.5) {
                (has(*d), has(*d))
            } else {
                (lacks(*d), lacks(*d))
            }
        }
        (Statement::LeftCount(n) | Statement::RightCount(n), l) => {
            let m = if l {
                *n
            } else {
                let others: Vec<usize> = (k.min..=k.max).filter(|m| m != n).collect();
                *others.get(rng.random_range(0..others.len().max(1)))?
            };
            let other = of_size(rng.random_range(k.min..=k.max));
            if matches!(st, Statement::LeftCount(_)) {
                (of_size(m), other)
            } else {
                (other, of_size(m))
            }
        }
        (Statement::More, l) => {
            let (a, b) = pair_where(rng, k.min, k.max, |a, b| (a > b) == l)?;
            (of_size(a), of_size(b))
        }
        (Statement::Same, l) => {
            let (a, b) = pair_where(rng, k.min, k.max, |a, b| (a == b) == l)?;
            (of_size(a), of_size(b))
        }
        (Statement::Total(s, n), l) => {
            let d = Desc::shape(*s);
            let cap = total_cap(k);
            let total = if l {
                *n
            } else {
                let others: Vec<usize> = (0..=cap).filter(|m| m != n).collect();
                others[rng.random_range(0..others.len())]
            };
            let (a, b) = pair_where(rng, 0, k.max, |a, b| a + b == total)?;
            (exactly(d, a), exactly(d, b))
        }
    })
}

/// One example: the two scenes of a statement with the given label.
fn make(ctx: &Ctx, st: &Statement, label: bool, rng: &mut ChaCha8Rng) -> Result<(Scene, Scene)> {
    let (k, layout) = (&ctx.knobs, &ctx.layout);
    attempt(&format!("images for `{}` = {label}", st.text()), || {
        let (ls, rs) = specs(st, label, k, rng)?;
        let left = sample(rng, k, layout, &ls)?;
        let right = sample(rng, k, layout, &rs)?;
        (st.holds(&left, &right) == label).then_some((left, right))
    })
}

#[derive(Debug)]
struct Example {
    record: Record,
    template: &'static str,
    scenes: [SceneRecord; 2],
}

pub(crate) fn write(ctx: &Ctx) -> Result<TaskEntry> {
    let k = ctx.knobs;
    let temps = templates(&k);
    let sizes = ctx.cfg.scale.sizes(TASK);
    let mut counts = BTreeMap::new();
    let mut splits: Vec<Vec<Example>> = Vec::new();
    for split in Split::ALL {
        let s = split.name();
        let sentences = sizes[split.index()] / 2;
        ctx.image_dirs(TASK, s)?;
        let mut split_rng = ctx.split_rng(TASK, split);
        let plan = balanced(sentences, temps.len(), &mut split_rng);
        let pairs = ctx.par(sentences, |i| {
            let mut rng = ctx.rng(TASK, split, i);
            let st = words(temps[plan[i]], &k, &mut rng);
            let text = st.text();
            let true_first = rng.random_bool(0.5);
            let mut out = Vec::with_capacity(2);
            for pair in 0..2 {
                let label = (pair == 0) == true_first;
                let (left, right) = make(ctx, &st, label, &mut rng)?;
                let prefix = format!("{s}-{i}-{pair}");
                let mut draw = |side: usize, scene: Scene| -> Result<SceneRecord> {
                    let image = nlvr2_image(s, &prefix, side);
                    let (image, mask) = ctx.draw_in(TASK, s, image, &scene, &mut rng)?;
                    Ok(SceneRecord {
                        image,
                        mask,
                        objects: scene.objects,
                    })
                };
                let l = draw(0, left)?;
                let r = draw(1, right)?;
                out.push(Example {
                    record: Record::new(format!("{prefix}-0"), text.clone(), label),
                    template: st.template(),
                    scenes: [l, r],
                });
            }
            Ok(out)
        })?;
        let mut examples: Vec<Example> = pairs.into_iter().flatten().collect();
        // File order carries no information about the label or the pairing.
        examples.shuffle(&mut split_rng);
        let records: Vec<&Record> = examples.iter().map(|e| &e.record).collect();
        ctx.suite
            .write_jsonl(&in_task(TASK, &nlvr2_file(s)), &records)?;
        ctx.write_scenes(
            TASK,
            split,
            examples.iter().flat_map(|e| e.scenes.clone()).collect(),
        )?;
        counts.insert(s.to_string(), examples.len());
        splits.push(examples);
    }
    let by = |ex: &'_ [Example], key: fn(&Example) -> &str| -> Vec<(String, String)> {
        ex.iter()
            .map(|e| (key(e).to_string(), e.record.label.clone()))
            .collect()
    };
    let refs = str_pairs;
    fn template(e: &Example) -> &str {
        e.template
    }
    fn sentence(e: &Example) -> &str {
        &e.record.sentence
    }
    let (tr_t, te_t) = (by(&splits[0], template), by(&splits[2], template));
    let (tr_s, te_s) = (by(&splits[0], sentence), by(&splits[2], sentence));
    let template_prior = Prior::fit(refs(&tr_t));
    let sentence_prior = Prior::fit(refs(&tr_s));
    // Unseen sentences fall back to their template's prior.
    let mut hits = 0usize;
    for (e, (s, label)) in splits[2].iter().zip(&te_s) {
        let guess = match sentence_prior.per_key.get(s) {
            Some(p) => p.answer.as_str(),
            None => template_prior.predict(e.template),
        };
        hits += usize::from(guess == label);
    }
    let exact = if te_s.is_empty() {
        0.0
    } else {
        hits as f64 / te_s.len() as f64
    };
    let baselines = BTreeMap::from([
        (
            "statement_prior".to_string(),
            template_prior.accuracy(refs(&te_t)),
        ),
        ("exact_statement_prior".to_string(), exact),
        (
            "majority".to_string(),
            template_prior.majority_accuracy(refs(&te_t)),
        ),
        ("chance".to_string(), 0.5),
    ]);
    Ok(TaskEntry {
        name: TASK.into(),
        kind: TaskKind::Nlvr2,
        root: TASK.into(),
        official: None,
        counts,
        baselines,
        description: "is a statement about a pair of images true? every sentence occurs once True \
                      and once False"
            .into(),
    })
}
