//! Text-only tasks (kind `text_cls`) over the caption grammar, labels from a balanced plan:
//! - `caption_colour`: a caption → the colour of the object it mentions first;
//! - `caption_count`: a caption that lists objects → how many it mentions (1..=3).
//!
//! Each caption is made true of a sampled scene (not written: there are no images).

use std::collections::BTreeMap;

use rand::Rng;

use super::grammar::{Claim, first_colour};
use super::retrieval::{Family, claim};
use super::scene::{Colour, Desc, Spec, sample};
use super::write::{Ctx, Split, attempt, balanced};
use crate::error::Result;
use crate::formats::text_cls::Record;
use crate::layout::{CLASSES, in_task, text_cls_file};
use crate::score::Prior;
use crate::suite::{TaskEntry, TaskKind, class_list};

fn write_task(
    ctx: &Ctx,
    task: &'static str,
    labels: &[String],
    make: impl Fn(&mut rand_chacha::ChaCha8Rng, usize) -> Result<String> + Sync + Send,
    description: &str,
) -> Result<TaskEntry> {
    let sizes = ctx.cfg.scale.sizes(task);
    let mut counts = BTreeMap::new();
    let mut splits = Vec::new();
    for split in Split::ALL {
        let n = sizes[split.index()];
        let plan = balanced(n, labels.len(), &mut ctx.split_rng(task, split));
        let records = ctx.par(n, |i| {
            let mut rng = ctx.rng(task, split, i);
            Ok(Record {
                text: make(&mut rng, plan[i])?,
                label: labels[plan[i]].clone(),
            })
        })?;
        ctx.suite
            .write_jsonl(&in_task(task, &text_cls_file(split.name())), &records)?;
        counts.insert(split.name().to_string(), n);
        splits.push(records);
    }
    ctx.suite.write(
        &in_task(task, CLASSES),
        class_list(labels.iter().map(String::as_str)).as_bytes(),
    )?;
    fn pairs(r: &[Record]) -> Vec<(&str, &str)> {
        r.iter().map(|r| ("", r.label.as_str())).collect()
    }
    let prior = Prior::fit(pairs(&splits[0]));
    let baselines = BTreeMap::from([
        (
            "majority".to_string(),
            prior.majority_accuracy(pairs(&splits[2])),
        ),
        ("chance".to_string(), 1.0 / labels.len() as f64),
    ]);
    Ok(TaskEntry {
        name: task.into(),
        kind: TaskKind::TextCls,
        root: task.into(),
        official: None,
        counts,
        baselines,
        description: description.into(),
    })
}

pub(crate) fn write(ctx: &Ctx) -> Result<Vec<TaskEntry>> {
    let (k, layout) = (&ctx.knobs, &ctx.layout);
    let colours: Vec<String> = Colour::ALL.iter().map(|c| c.name().to_string()).collect();
    let colour_task = write_task(
        ctx,
        "caption_colour",
        &colours,
        |rng, label| {
            let colour = Colour::ALL[label];
            attempt("a caption", || {
                let spec = Spec {
                    required: vec![Desc::colour(colour)],
                    ..Spec::default()
                };
                let scene = sample(rng, k, layout, &spec)?;
                let firsts: Vec<usize> = (0..scene.objects.len())
                    .filter(|&i| scene.objects[i].colour == colour)
                    .collect();
                let first = firsts[rng.random_range(0..firsts.len())];
                let family = [Family::Exists, Family::And, Family::Rel, Family::CountOf]
                    [rng.random_range(0..4)];
                let c = claim(rng, layout, &scene, family, Some(first), None)?;
                (first_colour(&c) == Some(colour) && c.holds(layout, &scene)).then(|| c.text())
            })
        },
        "the colour of the first object a caption mentions",
    )?;
    let most = k.max.min(3);
    let numbers: Vec<String> = (1..=most).map(|n| n.to_string()).collect();
    let count_task = write_task(
        ctx,
        "caption_count",
        &numbers,
        |rng, label| {
            let m = label + 1;
            attempt("a caption", || {
                let spec = Spec {
                    required: vec![Desc::default(); m],
                    ..Spec::default()
                };
                let scene = sample(rng, k, layout, &spec)?;
                let family = match m {
                    1 => Family::Exists,
                    2 if rng.random_bool(0.5) => Family::Rel,
                    _ => Family::And,
                };
                let c = claim(rng, layout, &scene, family, None, Some(m))?;
                let mentioned = match &c {
                    Claim::Exists { .. } => 1,
                    Claim::Rel { .. } => 2,
                    Claim::And(ds) => ds.len(),
                    Claim::CountAll(_) | Claim::CountOf(..) => 0,
                };
                (mentioned == m && c.holds(layout, &scene)).then(|| c.text())
            })
        },
        "how many objects a caption mentions",
    )?;
    Ok(vec![colour_task, count_task])
}
