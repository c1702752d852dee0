#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The synthetic suite, checked from the files on disk: determinism across thread counts,
//! the truth of every answer, label and caption (recomputed from the scene descriptions and,
//! independently, from the mask and image pixels), the text-only priors, and bad input.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

mod common;

use common::{all_files, read_json, read_jsonl};
use mmerge_data::DataError;
use mmerge_data::formats::{captions, nlvr2, text_cls, vqa};
use mmerge_data::suite::{Manifest, TaskKind};
use mmerge_data::synth::{
    BACKGROUND, Colour, Layout, MAX_NOISE, QuestionPriorFile, Scale, ScenesFile, Shape, Size,
    SynthConfig, generate,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn run(cfg: &SynthConfig, out: &Path, threads: usize) -> Manifest {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| generate(cfg, out, false, false)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Scenes, from the description and from the pixels

/// An object as the checks see it: attributes and grid cell (row, column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Obj {
    row: u32,
    col: u32,
    shape: Shape,
    colour: Colour,
    size: Size,
}

fn shape_of_class(c: u8) -> Shape {
    Shape::ALL[usize::from(c) - 1]
}

/// Objects recovered from the mask (4-connected components of non-zero pixels: shape class,
/// bbox, centroid) and the image (the exact palette colour under each component). Also checks
/// that every background pixel is noisy grey. Returns objects with their bboxes.
fn from_pixels(layout: &Layout, image: &Path, mask: &Path) -> Vec<(Obj, [u32; 4])> {
    let img = image::open(image).unwrap().to_rgb8();
    let m = image::open(mask).unwrap();
    assert!(
        matches!(m.color(), image::ColorType::L8),
        "{}: mask must be 8-bit grey",
        mask.display()
    );
    let m = m.to_luma8();
    let s = layout.image_size;
    assert_eq!((img.width(), img.height()), (s, s));
    assert_eq!((m.width(), m.height()), (s, s));
    let mut seen = vec![false; (s * s) as usize];
    let mut out = Vec::new();
    for y in 0..s {
        for x in 0..s {
            let class = m.get_pixel(x, y)[0];
            let px = img.get_pixel(x, y).0;
            if class == 0 {
                assert!(
                    px[0] == px[1] && px[1] == px[2],
                    "{}: background pixel {x},{y} not grey",
                    image.display()
                );
                assert!(
                    px[0].abs_diff(BACKGROUND) <= MAX_NOISE,
                    "{}: background {px:?}",
                    image.display()
                );
                continue;
            }
            if seen[(y * s + x) as usize] {
                continue;
            }
            // Flood fill one component.
            let colour = Colour::ALL
                .into_iter()
                .find(|c| c.rgb() == px)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: pixel {x},{y} = {px:?} is no palette colour",
                        image.display()
                    )
                });
            let (mut x0, mut y0, mut x1, mut y1) = (x, y, x, y);
            let (mut sx, mut sy, mut n) = (0u64, 0u64, 0u64);
            let mut queue = VecDeque::from([(x, y)]);
            seen[(y * s + x) as usize] = true;
            while let Some((cx, cy)) = queue.pop_front() {
                assert_eq!(
                    m.get_pixel(cx, cy)[0],
                    class,
                    "{}: a component with two classes",
                    mask.display()
                );
                assert_eq!(
                    img.get_pixel(cx, cy).0,
                    colour.rgb(),
                    "{}: a component with two colours",
                    image.display()
                );
                (x0, y0, x1, y1) = (x0.min(cx), y0.min(cy), x1.max(cx), y1.max(cy));
                (sx, sy, n) = (sx + u64::from(cx), sy + u64::from(cy), n + 1);
                let mut push = |nx: u32, ny: u32| {
                    let i = (ny * s + nx) as usize;
                    if !seen[i] && m.get_pixel(nx, ny)[0] != 0 {
                        seen[i] = true;
                        queue.push_back((nx, ny));
                    }
                };
                if cx > 0 {
                    push(cx - 1, cy);
                }
                if cy > 0 {
                    push(cx, cy - 1);
                }
                if cx + 1 < s {
                    push(cx + 1, cy);
                }
                if cy + 1 < s {
                    push(cx, cy + 1);
                }
            }
            let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
            assert_eq!(w, h, "{}: component not square-bounded", mask.display());
            let size = if w == layout.large {
                Size::Large
            } else {
                assert_eq!(w, layout.small, "{}: object of width {w}", mask.display());
                Size::Small
            };
            // Grid cell from the centroid of the mask pixels.
            let (cx, cy) = ((sx as f64 / n as f64) as u32, (sy as f64 / n as f64) as u32);
            let (row, col) = layout.cell_of(cx, cy);
            let obj = Obj {
                row,
                col,
                shape: shape_of_class(class),
                colour,
                size,
            };
            out.push((obj, [x0, y0, w, h]));
        }
    }
    out
}

/// A scene both ways; asserts they agree (same objects, same bboxes).
#[derive(Debug, Clone)]
struct Both {
    described: Vec<Obj>,
    pixels: Vec<Obj>,
}

/// Reads every `scenes/<split>.json` of a task: image path → scene.
fn scenes(root: &Path) -> BTreeMap<String, Both> {
    let mut out = BTreeMap::new();
    for split in ["train", "val", "test"] {
        let file: ScenesFile = read_json(&root.join(format!("scenes/{split}.json")));
        let layout = file.layout;
        assert_eq!(layout, Layout::new(layout.image_size));
        for rec in file.scenes {
            let mut described: Vec<(Obj, [u32; 4])> = rec
                .objects
                .iter()
                .map(|o| {
                    let [x, y, w, h] = o.bbox;
                    let (row, col) = layout.cell_of(x + w / 2, y + h / 2);
                    let obj = Obj {
                        row,
                        col,
                        shape: o.shape,
                        colour: o.colour,
                        size: o.size,
                    };
                    (obj, o.bbox)
                })
                .collect();
            let mut pixels = from_pixels(&layout, &root.join(&rec.image), &root.join(&rec.mask));
            described.sort();
            pixels.sort();
            assert_eq!(
                described, pixels,
                "{}: scene description and pixels disagree",
                rec.image
            );
            let cells: BTreeSet<(u32, u32)> =
                described.iter().map(|(o, _)| (o.row, o.col)).collect();
            assert_eq!(
                cells.len(),
                described.len(),
                "{}: two objects in one cell",
                rec.image
            );
            let both = Both {
                described: described.into_iter().map(|(o, _)| o).collect(),
                pixels: pixels.into_iter().map(|(o, _)| o).collect(),
            };
            assert!(
                out.insert(rec.image, both).is_none(),
                "an image described twice"
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The test's own reading of the grammar

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct D {
    shape: Option<Shape>,
    colour: Option<Colour>,
    size: Option<Size>,
}

impl D {
    fn matches(&self, o: &Obj) -> bool {
        self.shape.is_none_or(|s| s == o.shape)
            && self.colour.is_none_or(|c| c == o.colour)
            && self.size.is_none_or(|z| z == o.size)
    }
}

fn count(objs: &[Obj], d: &D) -> usize {
    objs.iter().filter(|o| d.matches(o)).count()
}

fn unique<'a>(objs: &'a [Obj], d: &D) -> Option<&'a Obj> {
    let m: Vec<&Obj> = objs.iter().filter(|o| d.matches(o)).collect();
    (m.len() == 1).then(|| m[0])
}

fn rel(r: &str, a: &Obj, b: &Obj) -> bool {
    match r {
        "left" => a.col < b.col,
        "right" => a.col > b.col,
        "above" => a.row < b.row,
        "below" => a.row > b.row,
        _ => panic!("relation {r}"),
    }
}

fn distinct(objs: &[Obj], ds: &[D]) -> bool {
    fn go(objs: &[Obj], used: &mut Vec<usize>, ds: &[D]) -> bool {
        let Some((d, rest)) = ds.split_first() else {
            return true;
        };
        (0..objs.len()).any(|i| {
            if used.contains(&i) || !d.matches(&objs[i]) {
                return false;
            }
            used.push(i);
            let ok = go(objs, used, rest);
            used.pop();
            ok
        })
    }
    go(objs, &mut Vec::new(), ds)
}

fn number(w: &str) -> usize {
    [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ]
    .iter()
    .position(|x| *x == w)
    .unwrap_or_else(|| panic!("number word {w}"))
}

fn tokens(text: &str) -> Vec<String> {
    text.replace(',', " , ")
        .replace('?', " ? ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Parses `[a|an|the] [size] [colour] (shape|shape-word)` (or the plural) at `t[*i]`.
fn np(t: &[String], i: &mut usize, plural: bool) -> D {
    let mut d = D::default();
    if matches!(t[*i].as_str(), "a" | "an" | "the") {
        *i += 1;
    }
    if let Some(z) = Size::ALL.into_iter().find(|z| z.name() == t[*i]) {
        d.size = Some(z);
        *i += 1;
    }
    if let Some(c) = Colour::ALL.into_iter().find(|c| c.name() == t[*i]) {
        d.colour = Some(c);
        *i += 1;
    }
    let head = t[*i].as_str();
    *i += 1;
    let generic = if plural { "shapes" } else { "shape" };
    if head == generic || head == "object" {
        return d;
    }
    d.shape = Some(
        Shape::ALL
            .into_iter()
            .find(|s| (if plural { s.plural() } else { s.name() }) == head)
            .unwrap_or_else(|| panic!("head noun `{head}` in {t:?}")),
    );
    d
}

/// The relation word at `t[*i]` ("left of", "to the left of", "above", ...).
fn rel_word(t: &[String], i: &mut usize) -> Option<&'static str> {
    if t[*i] == "to" && t.get(*i + 1).map(String::as_str) == Some("the") {
        *i += 2;
    }
    let r = match t[*i].as_str() {
        "left" => "left",
        "right" => "right",
        "above" => "above",
        "below" => "below",
        _ => return None,
    };
    *i += 1;
    if matches!(r, "left" | "right") {
        assert_eq!(t[*i], "of");
        *i += 1;
    }
    Some(r)
}

/// Whether a caption is true of the objects.
fn caption_true(text: &str, objs: &[Obj]) -> bool {
    let t = tokens(text);
    if t[0] == "there" && t[2] != "a" && t[2] != "an" {
        // "there is one ..." / "there are N ..."
        let n = number(&t[2]);
        let mut i = 3;
        let d = np(&t, &mut i, n != 1);
        assert_eq!(i, t.len(), "trailing words: {text}");
        return if d == D::default() {
            objs.len() == n
        } else {
            count(objs, &d) == n
        };
    }
    let mut i = if t[0] == "there" { 2 } else { 0 };
    let first = np(&t, &mut i, false);
    if i == t.len() {
        return count(objs, &first) > 0;
    }
    if let Some(r) = rel_word(&t, &mut i) {
        let second = np(&t, &mut i, false);
        assert_eq!(i, t.len(), "trailing words: {text}");
        return objs.iter().enumerate().any(|(a, x)| {
            first.matches(x)
                && objs
                    .iter()
                    .enumerate()
                    .any(|(b, y)| a != b && second.matches(y) && rel(r, x, y))
        });
    }
    let mut ds = vec![first];
    while i < t.len() {
        assert!(
            t[i] == "," || t[i] == "and",
            "unexpected `{}` in {text}",
            t[i]
        );
        i += 1;
        ds.push(np(&t, &mut i, false));
    }
    distinct(objs, &ds)
}

/// The answer to a question, or `None` when a definite description fails.
fn answer(q: &str, objs: &[Obj]) -> Option<String> {
    let t = tokens(q);
    assert_eq!(t.last().map(String::as_str), Some("?"));
    let yn = |b: bool| Some(if b { "yes" } else { "no" }.to_string());
    match (t[0].as_str(), t[1].as_str()) {
        ("what", "colour") => {
            let mut i = 3;
            unique(objs, &np(&t, &mut i, false)).map(|o| o.colour.name().to_string())
        }
        ("what", "shape") => {
            let mut i = 3;
            unique(objs, &np(&t, &mut i, false)).map(|o| o.shape.name().to_string())
        }
        ("how", "many") => {
            let mut i = 2;
            let d = np(&t, &mut i, true);
            Some(count(objs, &d).to_string())
        }
        ("is", "there") => {
            let mut i = 2;
            yn(count(objs, &np(&t, &mut i, false)) > 0)
        }
        ("is", "the") => {
            let mut i = 1;
            let a = np(&t, &mut i, false);
            let r = rel_word(&t, &mut i).unwrap();
            let b = np(&t, &mut i, false);
            yn(rel(r, unique(objs, &a)?, unique(objs, &b)?))
        }
        _ => panic!("question form: {q}"),
    }
}

/// Whether an NLVR2 statement holds of (left, right).
fn statement_true(s: &str, left: &[Obj], right: &[Obj]) -> bool {
    let t = tokens(s);
    let w: Vec<&str> = t.iter().map(String::as_str).collect();
    let has = |objs: &[Obj], from: usize| {
        let mut i = from;
        let d = np(&t, &mut i, false);
        assert_eq!(i, t.len());
        count(objs, &d) > 0
    };
    match w.as_slice() {
        ["both", "images", "contain", ..] => has(left, 3) && has(right, 3),
        ["the", side, "image", "contains", ..] => {
            has(if *side == "left" { left } else { right }, 4)
        }
        ["exactly", "one", "image", "contains", ..] => has(left, 4) != has(right, 4),
        [
            "the",
            "left",
            "image",
            "has",
            "more",
            "shapes",
            "than",
            "the",
            "right",
            "image",
        ] => left.len() > right.len(),
        [
            "both",
            "images",
            "have",
            "the",
            "same",
            "number",
            "of",
            "shapes",
        ] => left.len() == right.len(),
        ["the", side, "image", "has", n, _shapes] => {
            (if *side == "left" { left } else { right }).len() == number(n)
        }
        ["there", _is, n, _shape, "in", "total"] => {
            let mut i = 3;
            let d = np(&t, &mut i, number(n) != 1);
            count(left, &d) + count(right, &d) == number(n)
        }
        _ => panic!("statement form: {s}"),
    }
}

/// The statement with its variable words (colours, shapes, sizes, numbers, articles) blanked.
fn template(s: &str) -> String {
    tokens(s)
        .iter()
        .filter(|w| !Size::ALL.iter().any(|z| z.name() == *w))
        .map(|w| {
            if Colour::ALL.iter().any(|c| c.name() == w) {
                "C"
            } else if Shape::ALL.iter().any(|x| x.name() == w || x.plural() == w) {
                "S"
            } else if [
                "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            ]
            .contains(&w.as_str())
            {
                "N"
            } else if w == "an" {
                "a"
            } else {
                w.as_str()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Train → test accuracy of the most frequent label per key (ties: smaller label; unseen:
/// the training majority).
fn prior(train: &[(String, String)], test: &[(String, String)]) -> (f64, f64) {
    fn best(m: &BTreeMap<&str, usize>) -> String {
        let mut out = ("", 0);
        for (l, &c) in m {
            if c > out.1 {
                out = (l, c);
            }
        }
        out.0.to_string()
    }
    let mut per: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut all: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, l) in train {
        *per.entry(k).or_default().entry(l).or_default() += 1;
        *all.entry(l).or_default() += 1;
    }
    let majority = best(&all);
    let per: BTreeMap<&str, String> = per.iter().map(|(k, m)| (*k, best(m))).collect();
    let n = test.len() as f64;
    let p = test
        .iter()
        .filter(|(k, l)| per.get(k.as_str()).unwrap_or(&majority) == l)
        .count() as f64
        / n;
    let m = test.iter().filter(|(_, l)| *l == majority).count() as f64 / n;
    (p, m)
}

// ---------------------------------------------------------------------------------------------
// Checks per task

fn task<'a>(m: &'a Manifest, name: &str) -> &'a mmerge_data::suite::TaskEntry {
    m.tasks
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no task {name}"))
}

const SPLITS: [&str; 3] = ["train", "val", "test"];

fn check_vqa(root: &Path, m: &Manifest) {
    let t = task(m, "vqa");
    assert_eq!(t.kind, TaskKind::Vqa);
    let dir = root.join(&t.root);
    let sc = scenes(&dir);
    let vocab: Vec<String> = read_json(&dir.join("answers.json"));
    let mut pairs: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for split in SPLITS {
        let qs: vqa::QuestionsFile = read_json(&dir.join(format!("questions_{split}.json")));
        let ans: vqa::AnnotationsFile = read_json(&dir.join(format!("annotations_{split}.json")));
        assert_eq!(qs.questions.len(), t.counts[split]);
        assert_eq!(ans.annotations.len(), qs.questions.len());
        for (q, a) in qs.questions.iter().zip(&ans.annotations) {
            assert_eq!((q.question_id, q.image_id), (a.question_id, a.image_id));
            assert!(
                vocab.contains(&a.multiple_choice_answer),
                "answer {} not in vocabulary",
                a.multiple_choice_answer
            );
            assert_eq!(a.answers.len(), 10);
            for (k, h) in a.answers.iter().enumerate() {
                assert_eq!(
                    (h.answer.as_str(), h.answer_confidence.as_str(), h.answer_id),
                    (a.multiple_choice_answer.as_str(), "yes", k as u32 + 1)
                );
            }
            let image = format!("images/{split}/{:012}.png", q.image_id);
            let s = &sc[&image];
            for objs in [&s.described, &s.pixels] {
                assert_eq!(
                    answer(&q.question, objs).as_deref(),
                    Some(a.multiple_choice_answer.as_str()),
                    "{image}: `{}`",
                    q.question
                );
            }
            // A "no" to a spatial question has the objects the other way round.
            if q.question.starts_with("is the ") && a.multiple_choice_answer == "no" {
                let flipped = q
                    .question
                    .replace(" left of ", " LEFT ")
                    .replace(" right of ", " left of ")
                    .replace(" LEFT ", " right of ")
                    .replace(" above ", " ABOVE ")
                    .replace(" below ", " above ")
                    .replace(" ABOVE ", " below ");
                assert_eq!(
                    answer(&flipped, &s.described).as_deref(),
                    Some("yes"),
                    "{image}: {}",
                    q.question
                );
            }
            pairs
                .entry(split)
                .or_default()
                .push((q.question.clone(), a.multiple_choice_answer.clone()));
        }
    }
    let (question_prior, majority) = prior(&pairs["train"], &pairs["test"]);
    println!(
        "vqa: question prior {question_prior:.3}, majority {majority:.3}, chance {:.3}",
        1.0 / vocab.len() as f64
    );
    assert!((t.baselines["question_prior"] - question_prior).abs() < 1e-12);
    assert!((t.baselines["majority"] - majority).abs() < 1e-12);
    let file: QuestionPriorFile = read_json(&dir.join("question_prior.json"));
    assert!((file.test_accuracy - question_prior).abs() < 1e-12);
    assert!((file.majority_test_accuracy - majority).abs() < 1e-12);
    let train_questions: BTreeSet<&str> = pairs["train"].iter().map(|(q, _)| q.as_str()).collect();
    assert_eq!(
        file.questions
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        train_questions
    );
    for (q, e) in &file.questions {
        let n = |want: Option<&str>| {
            pairs["train"]
                .iter()
                .filter(|(x, a)| x == q && want.is_none_or(|w| w == a))
                .count()
        };
        assert_eq!((e.count, e.total), (n(Some(&e.answer)), n(None)), "{q}");
    }
}

fn check_retrieval(root: &Path, m: &Manifest) {
    let t = task(m, "retrieval");
    assert_eq!(t.kind, TaskKind::Retrieval);
    let dir = root.join(&t.root);
    let sc = scenes(&dir);
    let data: captions::KarpathyFile = read_json(&dir.join("dataset.json"));
    let mut by_caption: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for split in SPLITS {
        assert_eq!(
            data.images.iter().filter(|i| i.split == split).count(),
            t.counts[split]
        );
    }
    for im in &data.images {
        let image = format!("{}/{}", im.filepath.as_deref().unwrap(), im.filename);
        assert!(dir.join(&image).is_file());
        assert_eq!(im.sentences.len(), 5);
        let texts: BTreeSet<&str> = im.sentences.iter().map(|s| s.raw.as_str()).collect();
        assert_eq!(texts.len(), 5, "captions of {image} not distinct");
        assert_eq!(
            im.sentids,
            im.sentences.iter().map(|s| s.sentid).collect::<Vec<_>>()
        );
        let s = &sc[&image];
        for sent in &im.sentences {
            assert_eq!(sent.imgid, im.imgid);
            assert_eq!(
                sent.tokens,
                sent.raw
                    .replace(',', "")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            );
            for objs in [&s.described, &s.pixels] {
                assert!(
                    caption_true(&sent.raw, objs),
                    "{image}: `{}` is false",
                    sent.raw
                );
            }
            by_caption
                .entry(sent.raw.clone())
                .or_default()
                .insert(im.imgid);
        }
    }
    // Read with the format's own reader (it checks ids are sorted and groups have two or more).
    let groups = captions::read_equivalent(&dir.join("equivalent_captions.json")).unwrap();
    let listed: BTreeMap<String, BTreeSet<u64>> = groups
        .iter()
        .map(|g| {
            assert!(
                g.images.windows(2).all(|w| w[0] < w[1]),
                "image ids sorted and distinct"
            );
            (g.caption.clone(), g.images.iter().copied().collect())
        })
        .collect();
    assert_eq!(listed.len(), groups.len(), "a caption listed twice");
    let shared: BTreeMap<String, BTreeSet<u64>> = by_caption
        .into_iter()
        .filter(|(_, ids)| ids.len() >= 2)
        .collect();
    assert_eq!(
        listed, shared,
        "equivalence groups must be exactly the shared captions"
    );
    assert!(!shared.is_empty());
}

fn check_nlvr2(root: &Path, m: &Manifest) {
    let t = task(m, "nlvr2");
    assert_eq!(t.kind, TaskKind::Nlvr2);
    let dir = root.join(&t.root);
    let sc = scenes(&dir);
    let mut by: BTreeMap<&str, Vec<(String, String, String)>> = BTreeMap::new();
    for split in SPLITS {
        let recs: Vec<nlvr2::Record> = read_jsonl(&dir.join(format!("{split}.json")));
        assert_eq!(recs.len(), t.counts[split]);
        let mut per_sentence: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in &recs {
            let (prefix, last) = r.identifier.rsplit_once('-').unwrap();
            assert_eq!(last, "0");
            let [l, rt] = [0, 1].map(|k| &sc[&format!("images/{split}/{prefix}-img{k}.png")]);
            let truth = match r.label.as_str() {
                "True" => true,
                "False" => false,
                other => panic!("label {other}"),
            };
            assert_eq!(
                statement_true(&r.sentence, &l.described, &rt.described),
                truth,
                "{}: {}",
                r.identifier,
                r.sentence
            );
            assert_eq!(
                statement_true(&r.sentence, &l.pixels, &rt.pixels),
                truth,
                "{}: {}",
                r.identifier,
                r.sentence
            );
            let e = per_sentence.entry(&r.sentence).or_default();
            if truth {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
            by.entry(split).or_default().push((
                template(&r.sentence),
                r.sentence.clone(),
                r.label.clone(),
            ));
        }
        for (s, (yes, no)) in per_sentence {
            assert_eq!(yes, no, "`{s}` is not balanced in {split}");
        }
    }
    let keyed = |split: &str, exact: bool| -> Vec<(String, String)> {
        by[split]
            .iter()
            .map(|(t, s, l)| (if exact { s } else { t }.clone(), l.clone()))
            .collect()
    };
    let (template_prior, majority) = prior(&keyed("train", false), &keyed("test", false));
    let (exact_prior, _) = prior(&keyed("train", true), &keyed("test", true));
    let templates: BTreeSet<&String> = by["train"].iter().map(|(t, _, _)| t).collect();
    println!(
        "nlvr2: statement-template prior {template_prior:.3} ({} templates), exact-statement prior {exact_prior:.3}, \
         majority {majority:.3}; manifest {:?}",
        templates.len(),
        t.baselines
    );
    assert!(
        template_prior <= 0.55,
        "statement template prior {template_prior}"
    );
    assert!(exact_prior <= 0.55, "exact statement prior {exact_prior}");
    assert!(t.baselines["statement_prior"] <= 0.55);
    assert!(t.baselines["exact_statement_prior"] <= 0.55);
}

fn check_images(root: &Path, m: &Manifest) {
    // Segmentation.
    let t = task(m, "segmentation");
    assert_eq!(t.kind, TaskKind::Segmentation);
    let dir = root.join(&t.root);
    let classes = std::fs::read_to_string(dir.join("classes.txt")).unwrap();
    let names: Vec<&str> = classes.lines().collect();
    assert_eq!(names[0], "background");
    for s in Shape::ALL {
        assert_eq!(names[usize::from(s as u8) + 1], s.name());
    }
    let sc = scenes(&dir);
    for split in SPLITS {
        let n = sc
            .keys()
            .filter(|k| k.starts_with(&format!("{split}/images/")))
            .count();
        assert_eq!(n, t.counts[split]);
    }
    for image in sc.keys() {
        assert!(dir.join(image.replace("/images/", "/masks/")).is_file());
    }
    // Shape and count classification.
    for (name, label) in [("shape_cls", true), ("count_cls", false)] {
        let t = task(m, name);
        assert_eq!(t.kind, TaskKind::ImageCls);
        let dir = root.join(&t.root);
        let sc = scenes(&dir);
        for split in SPLITS {
            let mut n = 0;
            for class_dir in std::fs::read_dir(dir.join(split)).unwrap() {
                let class_dir = class_dir.unwrap().path();
                let class = class_dir.file_name().unwrap().to_str().unwrap().to_string();
                for f in std::fs::read_dir(&class_dir).unwrap() {
                    let f = f.unwrap().path();
                    let rel = f.strip_prefix(&dir).unwrap().to_str().unwrap().to_string();
                    let s = &sc[&rel];
                    for objs in [&s.described, &s.pixels] {
                        let truth = if label {
                            assert_eq!(objs.len(), 1);
                            objs[0].shape.name().to_string()
                        } else {
                            objs.len().to_string()
                        };
                        assert_eq!(class, truth, "{rel}");
                    }
                    n += 1;
                }
            }
            assert_eq!(n, t.counts[split], "{name} {split}");
        }
    }
}

fn check_text(root: &Path, m: &Manifest) {
    for name in ["caption_colour", "caption_count"] {
        let t = task(m, name);
        assert_eq!(t.kind, TaskKind::TextCls);
        for split in SPLITS {
            let recs: Vec<text_cls::Record> =
                read_jsonl(&root.join(&t.root).join(format!("{split}.jsonl")));
            assert_eq!(recs.len(), t.counts[split]);
            for r in &recs {
                let toks = tokens(&r.text);
                let truth = if name == "caption_colour" {
                    toks.iter()
                        .find(|w| Colour::ALL.iter().any(|c| c.name() == *w))
                        .unwrap()
                        .clone()
                } else {
                    toks.iter()
                        .filter(|w| *w == "shape" || Shape::ALL.iter().any(|s| s.name() == *w))
                        .count()
                        .to_string()
                };
                assert_eq!(r.label, truth, "{name}: {}", r.text);
            }
        }
    }
}

fn check_suite(root: &Path) -> Manifest {
    let m: Manifest = read_json(&root.join("suite.json"));
    assert_eq!(m.schema, mmerge_data::suite::SCHEMA);
    let names: BTreeSet<&str> = m.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 8);
    for t in &m.tasks {
        for (k, v) in &t.baselines {
            assert!((0.0..=1.0).contains(v), "{} baseline {k} = {v}", t.name);
        }
        assert_eq!(
            t.counts.keys().collect::<Vec<_>>(),
            ["test", "train", "val"]
        );
    }
    check_vqa(root, &m);
    check_retrieval(root, &m);
    check_nlvr2(root, &m);
    check_images(root, &m);
    check_text(root, &m);
    m
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn same_seed_same_bytes_whatever_the_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig::new(7, Scale::Tiny);
    let a = run(&cfg, &tmp.path().join("a"), 1);
    let b = run(&cfg, &tmp.path().join("b"), 2);
    assert_eq!(a, b);
    let (fa, fb) = (
        all_files(&tmp.path().join("a")),
        all_files(&tmp.path().join("b")),
    );
    assert!(fa.len() > 1000, "{} files", fa.len());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (p, bytes) in &fa {
        assert!(
            bytes == &fb[p],
            "{} differs between 1 and 2 threads",
            p.display()
        );
    }
    let c = run(&SynthConfig::new(8, Scale::Tiny), &tmp.path().join("c"), 2);
    assert_ne!(a.seed, c.seed);
    let fc = all_files(&tmp.path().join("c"));
    let differ = fa
        .iter()
        .filter(|(p, bytes)| p.extension().is_some_and(|e| e == "png") && fc.get(*p) != Some(bytes))
        .count();
    let pngs = fa
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    assert!(
        differ * 10 > pngs * 9,
        "only {differ} of {pngs} images differ for another seed"
    );
    assert_ne!(
        fa[Path::new("vqa/questions_train.json")],
        fc[Path::new("vqa/questions_train.json")]
    );
}

#[test]
fn every_text_is_true_of_its_scene_default_knobs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    let returned = run(&SynthConfig::new(1, Scale::Tiny), &out, 2);
    let m = check_suite(&out);
    assert_eq!(m, returned);
    for t in &m.tasks {
        println!("{:>15} {:?} {:?}", t.name, t.counts, t.baselines);
    }
}

#[test]
fn every_text_is_true_of_its_scene_other_knobs() {
    let tmp = tempfile::tempdir().unwrap();
    for (k, cfg) in [
        SynthConfig {
            image_size: 48,
            min_objects: 2,
            max_objects: 4,
            distractors: 1.0,
            noise: MAX_NOISE,
            ..SynthConfig::new(2, Scale::Tiny)
        },
        SynthConfig {
            image_size: 24,
            min_objects: 3,
            max_objects: 9,
            distractors: 0.0,
            noise: 0,
            ..SynthConfig::new(3, Scale::Tiny)
        },
        SynthConfig {
            min_objects: 1,
            max_objects: 1,
            ..SynthConfig::new(4, Scale::Tiny)
        },
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("s{k}"));
        run(&cfg, &out, 2);
        check_suite(&out);
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let err = "huge".parse::<Scale>().unwrap_err().to_string();
    assert!(
        err.contains("huge") && err.contains("tiny, small, full"),
        "{err}"
    );
    assert_eq!("Small".parse::<Scale>().unwrap(), Scale::Small);

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    for (what, cfg) in [
        (
            "image size 0",
            SynthConfig {
                image_size: 0,
                ..SynthConfig::default()
            },
        ),
        (
            "image size 100000",
            SynthConfig {
                image_size: 100_000,
                ..SynthConfig::default()
            },
        ),
        (
            "objects per scene 0..=5",
            SynthConfig {
                min_objects: 0,
                ..SynthConfig::default()
            },
        ),
        (
            "objects per scene 3..=10",
            SynthConfig {
                min_objects: 3,
                max_objects: 10,
                ..SynthConfig::default()
            },
        ),
        (
            "distractors 1.5",
            SynthConfig {
                distractors: 1.5,
                ..SynthConfig::default()
            },
        ),
        (
            "noise 200",
            SynthConfig {
                noise: 200,
                ..SynthConfig::default()
            },
        ),
    ] {
        let err = generate(&cfg, &out, false, false).unwrap_err();
        assert!(matches!(err, DataError::OutOfRange { .. }), "{err:?}");
        assert!(err.to_string().contains(what), "{err}");
        assert!(
            leftovers(tmp.path()).is_empty(),
            "{what}: left {:?}",
            leftovers(tmp.path())
        );
    }

    // An existing output is kept unless forced.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine.txt"), b"keep").unwrap();
    let err = generate(&SynthConfig::default(), &out, false, false).unwrap_err();
    assert!(matches!(err, DataError::OutputExists { .. }), "{err:?}");
    // A library error speaks the library's terms: the CLI adds the advice (`--force`).
    assert_eq!(
        err.to_string(),
        format!("output {} already exists", out.display())
    );
    assert_eq!(std::fs::read(out.join("mine.txt")).unwrap(), b"keep");
    assert_eq!(leftovers(tmp.path()), ["suite"]);
    generate(&SynthConfig::default(), &out, true, false).unwrap();
    assert!(!out.join("mine.txt").exists());
    assert!(out.join("suite.json").is_file());
    assert_eq!(leftovers(tmp.path()), ["suite"]);
}

/// The `small` scale on 2 threads: time and image count, then every check. Slow (about a
/// minute in all): `cargo test --release --test synth -- --ignored --nocapture`.
#[test]
#[ignore = "slow: generates and checks the small scale"]
fn small_scale_on_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("small");
    let start = std::time::Instant::now();
    run(&SynthConfig::new(0, Scale::Small), &out, 2);
    let secs = start.elapsed().as_secs_f64();
    assert!(
        secs < 60.0,
        "small scale took {secs:.1} s; the target is under a minute"
    );
    let files = all_files(&out);
    let masks = files
        .keys()
        .filter(|p| p.to_string_lossy().contains("masks/"))
        .count();
    let pngs = files
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    let bytes: usize = files.values().map(Vec::len).sum();
    println!(
        "small: {} images (+ {masks} masks), {} files, {:.1} MB, generated in {secs:.1} s on 2 threads",
        pngs - masks,
        files.len(),
        bytes as f64 / 1e6
    );
    assert!(pngs - masks >= 10_000);
    check_suite(&out);
}
