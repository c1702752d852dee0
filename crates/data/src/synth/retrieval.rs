//! Captions for retrieval (kind `retrieval`): a random scene per image and five distinct
//! captions true of it, in Karpathy's `dataset.json`; `equivalent_captions.json`
//! (`formats::captions::EquivalentGroup`, over all splits, ids = `imgid`) lists every caption
//! that more than one image has.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::grammar::Claim;
use super::scene::{Desc, Layout, Object, Rel, Scene, Spec, sample};
use super::write::{Ctx, SceneRecord, Split, attempt};
use crate::error::Result;
use crate::formats::captions::{
    KarpathyFile, KarpathyImage, KarpathySentence, equivalent_groups_of,
};
use crate::layout::{EQUIVALENT_CAPTIONS, KARPATHY_FILE, in_task, split_image, split_images};
use crate::score::chance_recall;
use crate::suite::{TaskEntry, TaskKind};

const TASK: &str = "retrieval";
/// Captions per image.
pub const CAPTIONS: usize = 5;

/// How much of an object a description says: shape / colour / colour+shape / size+colour+shape.
fn describe(rng: &mut ChaCha8Rng, o: &Object, detail: usize) -> Desc {
    let full = Desc::of(o);
    match detail {
        0 => Desc::shape(o.shape),
        1 => Desc::colour(o.colour),
        2 => Desc { size: None, ..full },
        _ => {
            if rng.random_bool(0.3) {
                full
            } else {
                Desc { size: None, ..full }
            }
        }
    }
}

/// The caption families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Exists,
    And,
    Rel,
    CountAll,
    CountOf,
}

pub(crate) const FAMILIES: [Family; 5] = [
    Family::Exists,
    Family::And,
    Family::Rel,
    Family::CountAll,
    Family::CountOf,
];

/// A random claim of `family` about `scene` whose first mention is `first` (an object index;
/// random when `None`), or `None` when the scene has no such claim. `mentions` fixes how many
/// objects an `And` lists. The caller checks the claim holds.
pub(crate) fn claim(
    rng: &mut ChaCha8Rng,
    layout: &Layout,
    scene: &Scene,
    family: Family,
    first: Option<usize>,
    mentions: Option<usize>,
) -> Option<Claim> {
    let objs = &scene.objects;
    let n = objs.len();
    if n == 0 {
        return None;
    }
    let first = first.unwrap_or_else(|| rng.random_range(0..n));
    let o = objs.get(first)?;
    let others = |rng: &mut ChaCha8Rng, m: usize| -> Option<Vec<usize>> {
        let rest: Vec<usize> = (0..n).filter(|&j| j != first).collect();
        (rest.len() >= m).then(|| {
            index::sample(rng, rest.len(), m)
                .into_iter()
                .map(|k| rest[k])
                .collect()
        })
    };
    let c = match family {
        Family::Exists => Claim::Exists {
            d: {
                let detail = rng.random_range(0..4);
                describe(rng, o, detail)
            },
            there: rng.random_bool(0.5),
        },
        Family::And => {
            let m = mentions.unwrap_or(if n >= 3 && rng.random_bool(0.35) {
                3
            } else {
                2
            });
            let mut idx = vec![first];
            idx.extend(others(rng, m.checked_sub(1)?)?);
            let ds: Vec<Desc> = idx.iter().map(|&i| describe(rng, &objs[i], 3)).collect();
            if ds.iter().enumerate().any(|(i, d)| ds[..i].contains(d)) {
                return None;
            }
            Claim::And(ds)
        }
        Family::Rel => {
            let j = others(rng, 1)?[0];
            let rels: Vec<Rel> = Rel::ALL
                .into_iter()
                .filter(|r| r.holds(layout, o, &objs[j]))
                .collect();
            let rel = *rels.get(rng.random_range(0..rels.len().max(1)))?;
            let (a, b) = (describe(rng, o, 3), describe(rng, &objs[j], 3));
            if a == b {
                return None;
            }
            let long = matches!(rel, Rel::LeftOf | Rel::RightOf) && rng.random_bool(0.5);
            Claim::Rel { a, rel, b, long }
        }
        Family::CountAll => Claim::CountAll(n),
        Family::CountOf => {
            let detail = rng.random_range(0..2);
            let d = describe(rng, o, detail);
            Claim::CountOf(d, scene.count(&d))
        }
    };
    Some(c)
}

/// `CAPTIONS` distinct true captions of `scene`, families drawn uniformly.
fn captions(rng: &mut ChaCha8Rng, layout: &Layout, scene: &Scene) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(CAPTIONS);
    for _ in 0..CAPTIONS {
        let text = attempt("a new caption", || {
            let family = FAMILIES[rng.random_range(0..FAMILIES.len())];
            let c = claim(rng, layout, scene, family, None, None)?;
            let text = c.text();
            (c.holds(layout, scene) && !out.contains(&text)).then_some(text)
        })?;
        out.push(text);
    }
    Ok(out)
}

pub(crate) fn write(ctx: &Ctx) -> Result<TaskEntry> {
    let sizes = ctx.cfg.scale.sizes(TASK);
    let mut images = Vec::new();
    let mut scenes_by_split = Vec::new();
    let mut counts = BTreeMap::new();
    let mut next = 0u64;
    for split in Split::ALL {
        let s = split.name();
        let n = sizes[split.index()];
        ctx.image_dirs(TASK, s)?;
        let base = next;
        let items = ctx.par(n, |i| {
            let mut rng = ctx.rng(TASK, split, i);
            let scene = attempt("a scene", || {
                sample(&mut rng, &ctx.knobs, &ctx.layout, &Spec::default())
            })?;
            let caps = captions(&mut rng, &ctx.layout, &scene)?;
            let imgid = base + i as u64;
            let filename = format!("{imgid:06}.png");
            let (image, mask) =
                ctx.draw_in(TASK, s, split_image(s, &filename), &scene, &mut rng)?;
            let sentences: Vec<KarpathySentence> = caps
                .into_iter()
                .enumerate()
                .map(|(k, raw)| KarpathySentence {
                    tokens: raw
                        .replace(',', "")
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                    raw,
                    imgid,
                    sentid: imgid * CAPTIONS as u64 + k as u64,
                })
                .collect();
            let entry = KarpathyImage {
                filepath: Some(split_images(s)),
                filename,
                imgid,
                split: s.into(),
                sentids: sentences.iter().map(|x| x.sentid).collect(),
                sentences,
                cocoid: None,
            };
            Ok((
                entry,
                SceneRecord {
                    image,
                    mask,
                    objects: scene.objects,
                },
            ))
        })?;
        next += n as u64;
        let (entries, scenes): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        images.extend(entries);
        scenes_by_split.push((split, scenes));
        counts.insert(s.to_string(), n);
    }
    for (split, scenes) in scenes_by_split {
        ctx.write_scenes(TASK, split, scenes)?;
    }
    let groups = equivalent_groups_of(&images);
    let baselines: BTreeMap<String, f64> = [1, 5, 10]
        .map(|k| (format!("chance_r{k}"), chance_recall(&images, "test", k)))
        .into();
    ctx.suite
        .write_json(&in_task(TASK, EQUIVALENT_CAPTIONS), &groups)?;
    ctx.suite.write_compact(
        &in_task(TASK, KARPATHY_FILE),
        &KarpathyFile {
            images,
            dataset: "synthetic".into(),
        },
    )?;
    Ok(TaskEntry {
        name: TASK.into(),
        kind: TaskKind::Retrieval,
        root: TASK.into(),
        official: None,
        counts,
        baselines,
        description: format!(
            "image-text retrieval; {CAPTIONS} captions per image; captions shared by several images \
             are listed in equivalent_captions.json (chance_rK = text-to-image R@K of a random \
             ranking, counting every image with the same caption as a hit)"
        ),
    })
}
