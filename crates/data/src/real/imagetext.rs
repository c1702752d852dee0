//! Tasks built from one image + text source (Tux Paint stamps or emoji): retrieval, VQA,
//! NLVR2-style pairs and image classification, all over the same normalised images (written
//! once under `<source>_retrieval/images/`; the other tasks hard-link them).
//!
//! - Retrieval: one caption per image (Karpathy `dataset.json`). `equivalent_captions.json`
//!   lists every caption shared by ≥ 2 images (compared as
//!   [`captions::caption_key`]: trimmed, lower-cased, whitespace collapsed) with their image
//!   ids, over all splits ([`captions::EquivalentGroup`]); a reader recomputes the sets
//!   within the split it reads.
//! - VQA: per image, "What category is this?" (answer: the category) and "Is this <phrase>?"
//!   for its own category (yes); then, per split and category, as many "Is this <phrase>?"
//!   questions with answer no, asked of randomly chosen images of other categories, as there
//!   are yes questions, so every yes/no question string is balanced within each split.
//!   All ten human answers are the answer.
//! - NLVR2: per split, `n / 2` (n images) statements of each template, each drawn once with a
//!   true and once with a false image pair: "Both images show <c>." (false: one image from
//!   c, the other not, random order) and "The left image shows <a> and the right one <b>."
//!   (false: the pair swapped, or the left or the right image from another category, equally
//!   often). Statements are shuffled before they get identifiers.
//! - Classification: `<split>/<category folder>/<image file>`, and `classes.txt` (the class
//!   folders in label order, one per line: a split may lack a small class).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::util::{
    Split, class_list, encode_png, fit_square, fraction, link_or_copy, majority_baseline,
    prior_baseline, rng, tokens,
};
use crate::error::{DataError, Result};
use crate::formats::{captions, nlvr2};
use crate::layout::{
    ANSWERS, CLASSES, EQUIVALENT_CAPTIONS, KARPATHY_FILE, image_cls_image, in_task, nlvr2_file,
    nlvr2_image, vqa_image,
};
use crate::out::{JsonStyle, SuiteDir, UnanimousQa, write_vqa_split};
use crate::score::chance_recall;
use crate::suite::{TaskEntry, TaskKind};

/// A category of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    /// As written in the source (folder name, `category` field).
    pub label: &'static str,
    /// The VQA answer to "What category is this?".
    pub answer: &'static str,
    /// A noun phrase for questions and statements ("an animal").
    pub phrase: &'static str,
    /// The class folder of the classification task.
    pub dir: &'static str,
}

impl Category {
    pub const fn new(
        label: &'static str,
        answer: &'static str,
        phrase: &'static str,
        dir: &'static str,
    ) -> Self {
        Self {
            label,
            answer,
            phrase,
            dir,
        }
    }
}

/// One image with its caption and category.
#[derive(Debug, Clone)]
pub struct Item {
    /// Unique within the source; decides the split.
    pub key: String,
    /// File name of the normalised image, e.g. `food-fruit-cherimoya.png`.
    pub file: String,
    /// Index into the source's categories.
    pub category: usize,
    pub caption: String,
    /// The original image.
    pub src: PathBuf,
    pub split: Split,
}

/// A whole image + text source. Items are sorted by key; an item's image id is its index + 1.
#[derive(Debug)]
pub struct Source {
    /// Prefix of the task names, e.g. `tuxpaint`.
    pub name: &'static str,
    /// In descriptions, e.g. `Tux Paint stamps`.
    pub title: &'static str,
    pub categories: &'static [Category],
    pub items: Vec<Item>,
}

impl Source {
    fn image_id(i: usize) -> u64 {
        i as u64 + 1
    }

    fn in_split(&self, split: Split) -> Vec<usize> {
        (0..self.items.len())
            .filter(|&i| self.items[i].split == split)
            .collect()
    }

    fn task(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.name)
    }
}

fn counts(pairs: impl IntoIterator<Item = (Split, usize)>) -> BTreeMap<String, usize> {
    pairs
        .into_iter()
        .map(|(s, n)| (s.name().to_string(), n))
        .collect()
}

/// The image folder of a source's retrieval task (its Karpathy `filepath`), which the other
/// tasks hard-link from.
const RETRIEVAL_IMAGES: &str = "images";

/// Decodes, normalises (`size`×`size`, white padding) and writes every item's image to
/// `<source>_retrieval/images/<file>`; returns their paths inside the suite being written.
pub fn write_images(suite: &SuiteDir, source: &Source, size: u32) -> Result<Vec<PathBuf>> {
    let root = in_task(&source.task("retrieval"), RETRIEVAL_IMAGES);
    let mut seen = std::collections::HashSet::new();
    for it in &source.items {
        if !seen.insert(it.file.as_str()) {
            return Err(DataError::BadRecord {
                path: it.src.clone(),
                record: it.key.clone(),
                reason: format!("image file name {} is used twice", it.file),
            });
        }
    }
    source
        .items
        .par_iter()
        .map(|it| {
            let img = fit_square(crate::image::decode_rgb(&it.src)?, size);
            let rel = format!("{root}/{}", it.file);
            let path = suite.path(&rel)?;
            let png = encode_png(&img, &path)?;
            suite.write(&rel, &png)?;
            Ok(path)
        })
        .collect()
}

/// Image ↔ caption retrieval.
pub fn retrieval(suite: &SuiteDir, source: &Source) -> Result<TaskEntry> {
    let name = source.task("retrieval");
    let mut images = Vec::with_capacity(source.items.len());
    for (i, it) in source.items.iter().enumerate() {
        let id = Source::image_id(i);
        images.push(captions::KarpathyImage {
            filepath: Some(RETRIEVAL_IMAGES.into()),
            filename: it.file.clone(),
            imgid: id,
            split: it.split.name().into(),
            sentences: vec![captions::KarpathySentence {
                tokens: tokens(&it.caption),
                raw: it.caption.clone(),
                imgid: id,
                sentid: id,
            }],
            sentids: vec![id],
            cocoid: None,
        });
    }
    let equivalent = captions::equivalent_groups_of(&images);
    let mut baselines = BTreeMap::new();
    for k in [1, 5, 10] {
        baselines.insert(format!("chance_r{k}"), chance_recall(&images, "test", k));
    }
    suite.write_json(
        &in_task(&name, KARPATHY_FILE),
        &captions::KarpathyFile {
            images,
            dataset: source.name.into(),
        },
    )?;
    suite.write_json(&in_task(&name, EQUIVALENT_CAPTIONS), &equivalent)?;
    Ok(TaskEntry {
        name: name.clone(),
        kind: TaskKind::Retrieval,
        root: name,
        official: None,
        counts: counts(Split::ALL.map(|s| (s, source.in_split(s).len()))),
        baselines,
        description: format!(
            "{}: image <-> caption retrieval, one caption per image ({} captions shared by >= 2 images)",
            source.title,
            equivalent.len()
        ),
    })
}

struct Qa {
    image: usize,
    question: String,
    answer: &'static str,
    question_type: &'static str,
    answer_type: &'static str,
}

/// VQA v2-style category questions.
pub fn vqa(suite: &SuiteDir, source: &Source, images: &[PathBuf]) -> Result<TaskEntry> {
    let name = source.task("vqa");
    let cats = source.categories;
    let mut per_split: Vec<(Split, Vec<Qa>)> = Vec::new();
    for split in Split::ALL {
        let idx = source.in_split(split);
        let mut qas = Vec::new();
        for &i in &idx {
            let c = &cats[source.items[i].category];
            qas.push(Qa {
                image: i,
                question: "What category is this?".into(),
                answer: c.answer,
                question_type: "what category is",
                answer_type: "other",
            });
            qas.push(Qa {
                image: i,
                question: format!("Is this {}?", c.phrase),
                answer: "yes",
                question_type: "is this",
                answer_type: "yes/no",
            });
        }
        for (ci, c) in cats.iter().enumerate() {
            let yes = idx
                .iter()
                .filter(|&&i| source.items[i].category == ci)
                .count();
            if yes == 0 {
                continue;
            }
            let mut others: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| source.items[i].category != ci)
                .collect();
            others.shuffle(&mut rng(&format!(
                "{}/vqa/{}/{}",
                source.name,
                split.name(),
                c.dir
            )));
            for &i in others.iter().take(yes) {
                qas.push(Qa {
                    image: i,
                    question: format!("Is this {}?", c.phrase),
                    answer: "no",
                    question_type: "is this",
                    answer_type: "yes/no",
                });
            }
        }
        qas.sort_by_key(|q| q.image);
        per_split.push((split, qas));
    }

    // The vocabulary: every answer of any split, by frequency in train, then alphabetically.
    let mut freq: BTreeMap<&str, usize> = BTreeMap::new();
    for (split, qas) in &per_split {
        for q in qas {
            *freq.entry(q.answer).or_insert(0) += usize::from(*split == Split::Train);
        }
    }
    let mut vocab: Vec<(&str, usize)> = freq.into_iter().collect();
    vocab.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let vocab: Vec<&str> = vocab.into_iter().map(|(a, _)| a).collect();
    suite.write_json(&in_task(&name, ANSWERS), &vocab)?;

    for (split, qas) in &per_split {
        let s = split.name();
        let mut records = Vec::with_capacity(qas.len());
        let mut last: Option<usize> = None;
        let mut k = 0u64;
        for q in qas {
            k = if last == Some(q.image) { k + 1 } else { 0 };
            last = Some(q.image);
            let image_id = Source::image_id(q.image);
            records.push(UnanimousQa {
                question_id: image_id * 100 + k,
                image_id,
                question: &q.question,
                answer: q.answer,
                question_type: q.question_type,
                answer_type: q.answer_type,
            });
        }
        let data_type = format!("mmerge-real-assets-{}", source.name);
        write_vqa_split(
            suite,
            &name,
            s,
            ("Open-Ended", &data_type),
            &records,
            JsonStyle::Pretty,
        )?;
        for i in source.in_split(*split) {
            let rel = in_task(&name, &vqa_image(s, Source::image_id(i)));
            link_or_copy(&images[i], &suite.root().join(rel))?;
        }
    }

    let pairs = |split: Split| -> Vec<(&str, &str)> {
        per_split
            .iter()
            .filter(|(s, _)| *s == split)
            .flat_map(|(_, qas)| qas.iter().map(|q| (q.question.as_str(), q.answer)))
            .collect()
    };
    let (train, test) = (pairs(Split::Train), pairs(Split::Test));
    let train_answers: Vec<&str> = train.iter().map(|p| p.1).collect();
    let test_answers: Vec<&str> = test.iter().map(|p| p.1).collect();
    let mut baselines = BTreeMap::new();
    baselines.insert(
        "majority".into(),
        majority_baseline(&train_answers, &test_answers),
    );
    baselines.insert("question_prior".into(), prior_baseline(&train, &test));
    Ok(TaskEntry {
        name: name.clone(),
        kind: TaskKind::Vqa,
        root: name,
        official: None,
        counts: counts(per_split.iter().map(|(s, q)| (*s, q.len()))),
        baselines,
        description: format!(
            "{}: \"What category is this?\" ({} answers) and balanced yes/no \"Is this <category>?\" questions",
            source.title,
            cats.len()
        ),
    })
}

struct Statement {
    template: u8,
    sentence: String,
    label: bool,
    left: usize,
    right: usize,
}

/// NLVR2-style statements about two images' categories.
pub fn nlvr2(suite: &SuiteDir, source: &Source, images: &[PathBuf]) -> Result<TaskEntry> {
    let name = source.task("nlvr2");
    let cats = source.categories;
    let mut all: Vec<(Split, Vec<Statement>)> = Vec::new();
    for split in Split::ALL {
        let idx = source.in_split(split);
        let mut by_cat: Vec<Vec<usize>> = vec![Vec::new(); cats.len()];
        for &i in &idx {
            by_cat[source.items[i].category].push(i);
        }
        let mut r = rng(&format!("{}/nlvr2/{}", source.name, split.name()));
        let m = idx.len() / 2;
        let mut st = Vec::new();
        let pick =
            |r: &mut rand_chacha::ChaCha8Rng, from: &[usize]| from[r.random_range(0..from.len())];
        let pick_not = |r: &mut rand_chacha::ChaCha8Rng, c: usize| loop {
            let i = idx[r.random_range(0..idx.len())];
            if source.items[i].category != c {
                break i;
            }
        };
        let both: Vec<usize> = (0..cats.len())
            .filter(|&c| by_cat[c].len() >= 2 && by_cat[c].len() < idx.len())
            .collect();
        if !both.is_empty() {
            for _ in 0..m {
                let c = both[r.random_range(0..both.len())];
                let sentence = format!("Both images show {}.", cats[c].phrase);
                let n = by_cat[c].len();
                let a = r.random_range(0..n);
                let mut b = r.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                st.push(Statement {
                    template: 0,
                    sentence: sentence.clone(),
                    label: true,
                    left: by_cat[c][a],
                    right: by_cat[c][b],
                });
                let x = pick(&mut r, &by_cat[c]);
                let y = pick_not(&mut r, c);
                let (left, right) = if r.random_bool(0.5) { (x, y) } else { (y, x) };
                st.push(Statement {
                    template: 0,
                    sentence,
                    label: false,
                    left,
                    right,
                });
            }
        }
        let present: Vec<usize> = (0..cats.len()).filter(|&c| !by_cat[c].is_empty()).collect();
        if present.len() >= 2 {
            for _ in 0..m {
                let ia = r.random_range(0..present.len());
                let mut ib = r.random_range(0..present.len() - 1);
                if ib >= ia {
                    ib += 1;
                }
                let (a, b) = (present[ia], present[ib]);
                let sentence = format!(
                    "The left image shows {} and the right one {}.",
                    cats[a].phrase, cats[b].phrase
                );
                let (l, rr) = (pick(&mut r, &by_cat[a]), pick(&mut r, &by_cat[b]));
                st.push(Statement {
                    template: 1,
                    sentence: sentence.clone(),
                    label: true,
                    left: l,
                    right: rr,
                });
                let (left, right) = match r.random_range(0..3) {
                    0 => (pick(&mut r, &by_cat[b]), pick(&mut r, &by_cat[a])),
                    1 => (pick_not(&mut r, a), pick(&mut r, &by_cat[b])),
                    _ => (pick(&mut r, &by_cat[a]), pick_not(&mut r, b)),
                };
                st.push(Statement {
                    template: 1,
                    sentence,
                    label: false,
                    left,
                    right,
                });
            }
        }
        st.shuffle(&mut r);
        all.push((split, st));
    }

    for (split, st) in &all {
        let s = split.name();
        let mut records = Vec::with_capacity(st.len());
        for (p, x) in st.iter().enumerate() {
            let prefix = format!("{s}-{}-{p}", x.template);
            for (k, img) in [x.left, x.right].into_iter().enumerate() {
                let rel = in_task(&name, &nlvr2_image(s, &prefix, k));
                link_or_copy(&images[img], &suite.root().join(rel))?;
            }
            records.push(nlvr2::Record::new(
                format!("{prefix}-0"),
                x.sentence.clone(),
                x.label,
            ));
        }
        suite.write_jsonl(&in_task(&name, &nlvr2_file(s)), &records)?;
    }

    let pairs = |split: Split| -> Vec<(&str, &str)> {
        all.iter()
            .filter(|(s, _)| *s == split)
            .flat_map(|(_, st)| {
                st.iter()
                    .map(|x| (x.sentence.as_str(), if x.label { "True" } else { "False" }))
            })
            .collect()
    };
    let (train, test) = (pairs(Split::Train), pairs(Split::Test));
    let tl: Vec<&str> = train.iter().map(|p| p.1).collect();
    let sl: Vec<&str> = test.iter().map(|p| p.1).collect();
    let mut baselines = BTreeMap::new();
    baselines.insert("majority".into(), majority_baseline(&tl, &sl));
    baselines.insert("statement_prior".into(), prior_baseline(&train, &test));
    Ok(TaskEntry {
        name: name.clone(),
        kind: TaskKind::Nlvr2,
        root: name,
        official: None,
        counts: counts(all.iter().map(|(s, st)| (*s, st.len()))),
        baselines,
        description: format!(
            "{}: true/false statements about two images' categories (\"Both images show ...\", \"The left image shows ... and the right one ...\"), balanced per statement",
            source.title
        ),
    })
}

/// Image classification by category.
pub fn classification(suite: &SuiteDir, source: &Source, images: &[PathBuf]) -> Result<TaskEntry> {
    let name = source.task("cls");
    let cats = source.categories;
    for (i, it) in source.items.iter().enumerate() {
        let rel = in_task(
            &name,
            &image_cls_image(it.split.name(), cats[it.category].dir, &it.file),
        );
        link_or_copy(&images[i], &suite.root().join(rel))?;
    }
    suite.write(
        &in_task(&name, CLASSES),
        class_list(cats.iter().map(|c| c.dir)).as_bytes(),
    )?;
    let labels = |split: Split| -> Vec<&str> {
        source
            .items
            .iter()
            .filter(|it| it.split == split)
            .map(|it| cats[it.category].dir)
            .collect()
    };
    let (train, test) = (labels(Split::Train), labels(Split::Test));
    let mut baselines = BTreeMap::new();
    baselines.insert("majority".into(), majority_baseline(&train, &test));
    baselines.insert("chance".into(), fraction(1, cats.len()));
    Ok(TaskEntry {
        name: name.clone(),
        kind: TaskKind::ImageCls,
        root: name,
        official: None,
        counts: counts(Split::ALL.map(|s| (s, source.in_split(s).len()))),
        baselines,
        description: format!(
            "{}: image -> category ({} classes; majority in train: {})",
            source.title,
            cats.len(),
            crate::score::majority(train.iter().copied()).unwrap_or("-")
        ),
    })
}
