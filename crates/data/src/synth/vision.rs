//! Image-only tasks:
//! - `segmentation` (kind `segmentation`): random scenes, `<split>/images/<stem>.png` and the
//!   class-index mask `<split>/masks/<stem>.png`; `classes.txt` is background, square, circle,
//!   triangle, cross (mask value = line number; no ignore pixels).
//! - `shape_cls` (kind `image_cls`): one object per image → its shape.
//! - `count_cls` (kind `image_cls`): `min_objects..=max_objects` objects → how many.
//!
//! Classes come from a balanced plan per split.

use std::collections::BTreeMap;

use super::scene::{Desc, Shape, Spec, sample};
use super::write::{Ctx, SceneRecord, Split, attempt, balanced};
use crate::error::Result;
use crate::layout::{CLASSES, image_cls_image, in_task, scene_mask, seg_image, seg_mask};
use crate::score::Prior;
use crate::suite::{TaskEntry, TaskKind, class_list};

/// Writes one image task; `spec(label)` says what a scene of that class looks like, `paths`
/// gives (image, mask) relative to the task folder for (split, class name, index).
fn write_task(
    ctx: &Ctx,
    task: &'static str,
    kind: TaskKind,
    classes: &[String],
    spec: impl Fn(usize) -> Spec + Sync + Send,
    paths: impl Fn(&str, &str, usize) -> (String, String) + Sync + Send,
    description: &str,
) -> Result<(TaskEntry, f64)> {
    let sizes = ctx.cfg.scale.sizes(task);
    let mut counts = BTreeMap::new();
    let mut labels: Vec<Vec<usize>> = Vec::new();
    let mut background = (0usize, 0usize);
    for split in Split::ALL {
        let s = split.name();
        let n = sizes[split.index()];
        let plan = balanced(n, classes.len(), &mut ctx.split_rng(task, split));
        let mut dirs = BTreeMap::new();
        for c in classes {
            let (image, mask) = paths(s, c, 0);
            for p in [image, mask] {
                if let Some((dir, _)) = p.rsplit_once('/') {
                    dirs.insert(format!("{task}/{dir}"), ());
                }
            }
        }
        ctx.mkdirs(&dirs.into_keys().collect::<Vec<_>>())?;
        let items = ctx.par(n, |i| {
            let mut rng = ctx.rng(task, split, i);
            let sp = spec(plan[i]);
            let scene = attempt("a scene", || sample(&mut rng, &ctx.knobs, &ctx.layout, &sp))?;
            let (image, mask) = paths(s, &classes[plan[i]], i);
            let bg = ctx.draw(
                &scene,
                &format!("{task}/{image}"),
                &format!("{task}/{mask}"),
                &mut rng,
            )?;
            Ok((
                SceneRecord {
                    image,
                    mask,
                    objects: scene.objects,
                },
                bg,
            ))
        })?;
        if split == Split::Test {
            let side = ctx.layout.image_size as usize;
            background = (items.iter().map(|(_, bg)| bg).sum(), n * side * side);
        }
        ctx.write_scenes(task, split, items.into_iter().map(|(r, _)| r).collect())?;
        counts.insert(s.to_string(), n);
        labels.push(plan);
    }
    let pairs = |l: &'_ [usize]| -> Vec<(&str, &str)> {
        l.iter().map(|&c| ("", classes[c].as_str())).collect()
    };
    let prior = Prior::fit(pairs(&labels[0]));
    let baselines = BTreeMap::from([
        (
            "majority".to_string(),
            prior.majority_accuracy(pairs(&labels[2])),
        ),
        ("chance".to_string(), 1.0 / classes.len() as f64),
    ]);
    let entry = TaskEntry {
        name: task.into(),
        kind,
        root: task.into(),
        official: None,
        counts,
        baselines,
        description: description.into(),
    };
    let bg = if background.1 == 0 {
        0.0
    } else {
        background.0 as f64 / background.1 as f64
    };
    Ok((entry, bg))
}

pub(crate) fn write(ctx: &Ctx) -> Result<Vec<TaskEntry>> {
    let (mut seg, background) = write_task(
        ctx,
        "segmentation",
        TaskKind::Segmentation,
        &["scene".to_string()],
        |_| Spec::default(),
        |s, _, i| {
            let file = format!("{i:06}.png");
            (seg_image(s, &file), seg_mask(s, &file))
        },
        "per-pixel shape class (0 background, 1 square, 2 circle, 3 triangle, 4 cross); \
         majority = pixel accuracy of predicting background everywhere",
    )?;
    seg.baselines = BTreeMap::from([("majority".to_string(), background)]);
    let seg_classes = std::iter::once("background").chain(Shape::ALL.iter().map(|s| s.name()));
    ctx.suite.write(
        &in_task("segmentation", CLASSES),
        class_list(seg_classes).as_bytes(),
    )?;

    let shapes: Vec<String> = Shape::ALL.iter().map(|s| s.name().to_string()).collect();
    let (shape, _) = write_task(
        ctx,
        "shape_cls",
        TaskKind::ImageCls,
        &shapes,
        |c| Spec {
            n: Some(1),
            required: vec![Desc::shape(Shape::ALL[c])],
            ..Spec::default()
        },
        |s, c, i| {
            let file = format!("{i:06}.png");
            (image_cls_image(s, c, &file), scene_mask(s, &file))
        },
        "the shape of the one object in the image",
    )?;
    let (lo, hi) = (ctx.knobs.min, ctx.knobs.max);
    let numbers: Vec<String> = (lo..=hi).map(|n| n.to_string()).collect();
    let (count, _) = write_task(
        ctx,
        "count_cls",
        TaskKind::ImageCls,
        &numbers,
        |c| Spec {
            n: Some(lo + c),
            ..Spec::default()
        },
        |s, c, i| {
            let file = format!("{i:06}.png");
            (image_cls_image(s, c, &file), scene_mask(s, &file))
        },
        "how many objects the image shows",
    )?;
    for (task, classes) in [("shape_cls", &shapes), ("count_cls", &numbers)] {
        ctx.suite.write(
            &in_task(task, CLASSES),
            class_list(classes.iter().map(String::as_str)).as_bytes(),
        )?;
    }
    Ok(vec![seg, shape, count])
}
