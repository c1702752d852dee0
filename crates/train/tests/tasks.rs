//! Every task kind end to end on a tiny synthetic suite and the `tiny` preset: build, items,
//! evaluation batches, a finite loss whose gradient reaches the head, and evaluation scores
//! (exactly the declared names, in [0, 1]) with their per-item values (one per question,
//! query or example, whose mean is the score); hand-worked checks where they prove behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use mmerge_data::formats::captions::RetrievalSplit;
use mmerge_data::image::ImageRef;
use mmerge_data::score::segment::IGNORE;
use mmerge_data::score::{Confusion, recall_at_k};
use mmerge_data::suite::{Examples, Split, Suite, TaskKind};
use mmerge_data::synth::{Scale, SynthConfig, generate};
use mmerge_data::tokenize::Tokenizer;
use mmerge_data::transform::{ImageTransform, Normalize};
use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_train::eval::EvalData;
use mmerge_train::input::{Collator, Item, ModelBatch, Targets};
use mmerge_train::net::Net;
use mmerge_train::tasks::retrieval::recall_from_embeddings;
use mmerge_train::tasks::{Evaluated, Task, TaskData, mean, task_def};
use tch::{Device, Kind, Tensor};

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tokenizer: Tokenizer,
}

/// The tiny synthetic suite (generated once) and a WordPiece tokenizer of ≤ 512 entries (the
/// tiny preset's vocabulary) trained on its training texts.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("suite");
        generate(&SynthConfig::new(3, Scale::Tiny), &dir, false, false).unwrap();
        let suite = Suite::open(&dir).unwrap();
        let mut texts: Vec<String> = vec![];
        for t in suite.tasks() {
            let ex = t.split(Split::Train).unwrap();
            texts.extend(ex.texts().into_iter().map(str::to_string));
        }
        let tokenizer = Tokenizer::train_wordpiece(texts.iter(), 512, 1).unwrap();
        assert!(tokenizer.vocab_size() <= 512);
        Fixture {
            _tmp: tmp,
            dir,
            tokenizer,
        }
    })
}

fn config() -> MultiwayConfig {
    MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap()
}

fn split(task: &str, split: Split) -> Examples {
    Suite::open(&fixture().dir)
        .unwrap()
        .task(task)
        .unwrap()
        .split(split)
        .unwrap()
}

fn eval_data(batch_size: usize) -> EvalData {
    let cfg = config();
    EvalData {
        collator: Collator {
            tokenizer: fixture().tokenizer.clone(),
            max_len: cfg.max_position_embeddings as usize,
            image_size: cfg.image_size as usize,
            soft_classes: 0,
            device: Device::Cpu,
        },
        transform: ImageTransform {
            size: cfg.image_size as u32,
            normalize: Normalize::HALF,
            augment: None,
        },
        batch_size,
        threads: Some(1),
    }
}

/// A fresh tiny network and the task `name` (of kind `kind`) built on its training split.
fn build(kind: TaskKind, name: &str) -> (Net, Box<dyn Task>, Examples) {
    let mut net = Net::new(&config(), 0, Device::Cpu).unwrap();
    let train = split(name, Split::Train);
    let task = (task_def(kind).unwrap().build)(
        &mut net,
        &TaskData {
            name,
            train: &train,
        },
    )
    .unwrap();
    (net, task, train)
}

/// The first batch of `items` (a batch of 8).
fn first_batch(task: &dyn Task, items: Vec<Item>) -> ModelBatch {
    let data = eval_data(8);
    let items: Vec<Item> = items.into_iter().take(data.batch_size).collect();
    let mut out = None;
    data.for_each(items, task.soft_classes(), |b| {
        out.get_or_insert(b);
        Ok(())
    })
    .unwrap();
    out.unwrap()
}

/// The head's variables (name → tensor) under `heads.<head>.`.
fn head_vars(net: &Net, head: &str) -> BTreeMap<String, Tensor> {
    let prefix = format!("heads.{head}.");
    net.named_parameters()
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(&prefix).map(|s| (s.to_string(), t)))
        .collect()
}

/// Runs the training loss on the first training batch and checks it is finite and that every
/// variable of the head `head` (and no other head) gets a non-zero gradient. Returns the loss.
fn check_loss(kind: TaskKind, name: &str, head: &str, names: &[&str]) -> f64 {
    let (net, task, train) = build(kind, name);
    let items = task.items(&train).unwrap();
    assert_eq!(items.len(), train.len());
    let batch = first_batch(task.as_ref(), items);
    assert_eq!(batch.len(), 8);
    let loss = task.loss(&net, &batch, true).unwrap();
    assert_eq!(loss.size(), Vec::<i64>::new());
    let value = loss.double_value(&[]);
    assert!(value.is_finite() && value > 0.0, "{name}: loss {value}");
    loss.backward();
    let all: Vec<String> = net
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("heads."))
        .collect();
    let want: Vec<String> = names.iter().map(|n| format!("heads.{head}.{n}")).collect();
    assert_eq!(all, want, "{name}: head variables");
    for (n, v) in head_vars(&net, head) {
        let g = v.grad();
        assert!(g.defined(), "{name}: no gradient at heads.{head}.{n}");
        let s = g.abs().sum(Kind::Double).double_value(&[]);
        assert!(s.is_finite() && s > 0.0, "{name}: gradient {s} at {n}");
    }
    value
}

/// Evaluates a fresh network on the validation split: exactly the declared score names, each
/// in [0, 1], and the per-item values [`check_items`] expects.
fn check_evaluate(kind: TaskKind, name: &str) -> Evaluated {
    let (net, task, _) = build(kind, name);
    let val = split(name, Split::Val);
    let e = task.evaluate(&net, &eval_data(8), &val).unwrap();
    let mut want: Vec<&str> = task_def(kind).unwrap().scores.to_vec();
    want.sort();
    assert_eq!(
        e.scores.keys().map(String::as_str).collect::<Vec<_>>(),
        want
    );
    for (k, v) in &e.scores {
        assert!((0.0..=1.0).contains(v), "{name}: {k} = {v}");
    }
    check_items(&val, &e);
    e
}

/// The per-item values of an evaluation of `split`: exactly the scores that are means over
/// items (VQA: `vqa_score` per question; retrieval: `ir_r*` per caption, `tr_r*` per image;
/// classification and NLVR2: `accuracy` per example; segmentation: none), one value per
/// item, each in [0, 1] (0 or 1 where it is a hit or a correct answer), with the score as
/// their mean.
fn check_items(split: &Examples, e: &Evaluated) {
    let want: Vec<(&str, usize)> = match split {
        Examples::Vqa { examples, .. } => vec![("vqa_score", examples.len())],
        Examples::Retrieval(s) => {
            let (c, i) = (s.captions.len(), s.images.len());
            vec![
                ("ir_r1", c),
                ("ir_r10", c),
                ("ir_r5", c),
                ("tr_r1", i),
                ("tr_r10", i),
                ("tr_r5", i),
            ]
        }
        Examples::Nlvr2(_) | Examples::ImageCls(_) | Examples::TextCls(_) => {
            vec![("accuracy", split.len())]
        }
        Examples::Segmentation(_) => vec![],
    };
    let got: Vec<(&str, usize)> = e.items.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    assert_eq!(got, want);
    for (k, v) in &e.items {
        assert!(!v.is_empty(), "{k}: no items");
        let m = v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            (m - e.scores[k]).abs() <= 1e-12,
            "{k}: mean {m}, score {}",
            e.scores[k]
        );
        assert_eq!(mean(v), e.scores[k], "{k}");
        if k == "vqa_score" {
            assert!(v.iter().all(|x| (0.0..=1.0).contains(x)), "{k}: {v:?}");
        } else {
            assert!(v.iter().all(|&x| x == 0.0 || x == 1.0), "{k}: {v:?}");
        }
    }
    if let Examples::Retrieval(_) = split {
        // A query that hits within 1 hits within 5 and 10.
        for dir in ["ir", "tr"] {
            let r = |k: usize| &e.items[&format!("{dir}_r{k}")];
            for q in 0..r(1).len() {
                assert!(r(1)[q] <= r(5)[q] && r(5)[q] <= r(10)[q], "{dir} query {q}");
            }
        }
    }
}

const CLASSIFIER: [&str; 6] = [
    "dense.bias",
    "dense.weight",
    "norm.bias",
    "norm.weight",
    "out.bias",
    "out.weight",
];

/// The classifier under `heads.<head>` applied by hand: dense, GELU, layer norm, output.
fn classifier_by_hand(net: &Net, head: &str, x: &Tensor) -> Tensor {
    let v = head_vars(net, head);
    let h = (x.matmul(&v["dense.weight"].tr()) + &v["dense.bias"]).gelu("none");
    let d = h.size()[1];
    let h = h.layer_norm(
        [d],
        Some(&v["norm.weight"]),
        Some(&v["norm.bias"]),
        config().layer_norm_eps,
        false,
    );
    h.matmul(&v["out.weight"].tr()) + &v["out.bias"]
}

/// Mean cross-entropy by hand: −log softmax(z)_y averaged over rows.
fn cross_entropy_by_hand(logits: &Tensor, labels: &Tensor) -> f64 {
    let nll = -logits
        .to_kind(Kind::Double)
        .log_softmax(1, Kind::Double)
        .gather(1, &labels.unsqueeze(1), false);
    nll.mean(Kind::Double).double_value(&[])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

// ---- image classification ----

#[test]
fn image_cls_loss_reaches_its_head() {
    check_loss(TaskKind::ImageCls, "shape_cls", "image_cls", &CLASSIFIER);
}

#[test]
fn image_cls_evaluates_accuracy() {
    check_evaluate(TaskKind::ImageCls, "count_cls");
}

#[test]
fn image_cls_loss_and_accuracy_match_the_class_token_by_hand() {
    let (net, task, train) = build(TaskKind::ImageCls, "shape_cls");
    let batch = first_batch(task.as_ref(), task.items(&train).unwrap());
    let logits = {
        let _g = tch::no_grad_guard();
        let h = net
            .encoder
            .encode_image(batch.image().unwrap(), false)
            .unwrap();
        classifier_by_hand(&net, "image_cls", &h.select(1, 0))
    };
    let labels = batch.classes().unwrap();
    let loss = tch::no_grad(|| task.loss(&net, &batch, false).unwrap());
    assert!(close(
        loss.double_value(&[]),
        cross_entropy_by_hand(&logits, labels)
    ));
    // Accuracy on exactly this batch: a split of its 8 examples.
    let pred: Vec<i64> = Vec::try_from(logits.argmax(1, false)).unwrap();
    let lab: Vec<i64> = Vec::try_from(labels).unwrap();
    let correct = pred.iter().zip(&lab).filter(|(p, l)| p == l).count();
    let Examples::ImageCls(mut s) = train else {
        unreachable!()
    };
    s.examples.truncate(8);
    let e = task
        .evaluate(&net, &eval_data(8), &Examples::ImageCls(s))
        .unwrap();
    assert_eq!(e.scores["accuracy"], correct as f64 / 8.0);
    // Per example, in split order: 1 where the arg-max class is the label.
    let right: Vec<f64> = pred
        .iter()
        .zip(&lab)
        .map(|(p, l)| if p == l { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(e.items["accuracy"], right);
}

#[test]
fn image_cls_refuses_a_split_with_other_classes() {
    let (_net, task, train) = build(TaskKind::ImageCls, "shape_cls");
    let Examples::ImageCls(mut s) = train else {
        unreachable!()
    };
    s.classes.reverse();
    let err = task.items(&Examples::ImageCls(s)).unwrap_err().to_string();
    assert!(
        err.starts_with("image classification: the split has"),
        "{err}"
    );
    let vqa = split("vqa", Split::Val);
    assert_eq!(
        task.items(&vqa).unwrap_err().to_string(),
        "not an image classification split"
    );
}

// ---- text classification ----

#[test]
fn text_cls_loss_reaches_its_head() {
    check_loss(TaskKind::TextCls, "caption_colour", "text_cls", &CLASSIFIER);
}

#[test]
fn text_cls_evaluates_accuracy() {
    check_evaluate(TaskKind::TextCls, "caption_count");
}

#[test]
fn text_cls_loss_matches_the_first_token_by_hand() {
    let (net, task, train) = build(TaskKind::TextCls, "caption_colour");
    let batch = first_batch(task.as_ref(), task.items(&train).unwrap());
    assert!(batch.images.is_empty());
    let logits = tch::no_grad(|| {
        let h = net
            .encoder
            .encode_text(&batch.text().unwrap().batch(), false)
            .unwrap();
        classifier_by_hand(&net, "text_cls", &h.select(1, 0))
    });
    let loss = tch::no_grad(|| task.loss(&net, &batch, false).unwrap());
    assert!(close(
        loss.double_value(&[]),
        cross_entropy_by_hand(&logits, batch.classes().unwrap())
    ));
}

// ---- NLVR2 ----

#[test]
fn nlvr2_loss_reaches_its_head() {
    check_loss(TaskKind::Nlvr2, "nlvr2", "nlvr2", &CLASSIFIER);
}

#[test]
fn nlvr2_evaluates_accuracy() {
    check_evaluate(TaskKind::Nlvr2, "nlvr2");
}

#[test]
fn nlvr2_reads_both_images_and_the_statement() {
    let (net, task, train) = build(TaskKind::Nlvr2, "nlvr2");
    let items = task.items(&train).unwrap();
    let Examples::Nlvr2(ex) = &train else {
        unreachable!()
    };
    assert_eq!(items[0].images, [ex[0].left.clone(), ex[0].right.clone()]);
    assert_eq!(items[0].texts, [ex[0].sentence.clone()]);
    let batch = first_batch(task.as_ref(), items);
    assert_eq!(batch.images.len(), 2);
    // The head reads [fused(left, text) first token; fused(right, text) first token].
    let logits = tch::no_grad(|| {
        let t = batch.text().unwrap();
        let (a, _) = net
            .encoder
            .encode_image_text(&batch.images[0], &t.batch(), 1, false)
            .unwrap();
        let (b, _) = net
            .encoder
            .encode_image_text(&batch.images[1], &t.batch(), 2, false)
            .unwrap();
        let x = Tensor::cat(&[a.select(1, 0), b.select(1, 0)], 1);
        assert_eq!(x.size(), [8, 2 * config().hidden_size]);
        classifier_by_hand(&net, "nlvr2", &x)
    });
    assert_eq!(logits.size(), [8, 2]);
    let loss = tch::no_grad(|| task.loss(&net, &batch, false).unwrap());
    assert!(close(
        loss.double_value(&[]),
        cross_entropy_by_hand(&logits, batch.classes().unwrap())
    ));
}

// ---- segmentation ----

#[test]
fn segmentation_loss_reaches_its_head() {
    check_loss(
        TaskKind::Segmentation,
        "segmentation",
        "segmentation",
        &["proj.bias", "proj.weight"],
    );
}

#[test]
fn segmentation_evaluates_miou_and_pixel_accuracy() {
    check_evaluate(TaskKind::Segmentation, "segmentation");
}

/// Per-pixel logits [B, K, H, W] of the segmentation head by hand.
fn seg_logits_by_hand(net: &Net, batch: &ModelBatch) -> Tensor {
    let cfg = config();
    let v = head_vars(net, "segmentation");
    let h = net
        .encoder
        .encode_image(batch.image().unwrap(), false)
        .unwrap();
    let n = h.size()[1] - 1;
    let z = h.narrow(1, 1, n).matmul(&v["proj.weight"].tr()) + &v["proj.bias"];
    let (b, k, g) = (z.size()[0], z.size()[2], cfg.image_size / cfg.patch_size);
    z.transpose(1, 2).reshape([b, k, g, g]).upsample_bilinear2d(
        [cfg.image_size, cfg.image_size],
        false,
        None,
        None,
    )
}

#[test]
fn segmentation_loss_skips_ignored_pixels() {
    let (net, task, train) = build(TaskKind::Segmentation, "segmentation");
    let mut batch = first_batch(task.as_ref(), task.items(&train).unwrap());
    let Targets::Mask(mask) = &batch.targets else {
        panic!("no masks")
    };
    let mask = mask.shallow_clone();
    // Ignore the left half of every image.
    let side = config().image_size;
    let ignored = mask.copy();
    let _ = ignored.narrow(2, 0, side / 2).fill_(-100);
    let loss_of = |batch: &ModelBatch| {
        tch::no_grad(|| task.loss(&net, batch, false).unwrap()).double_value(&[])
    };
    let full = loss_of(&batch);
    batch.targets = Targets::Mask(ignored.copy());
    let half = loss_of(&batch);
    // The loss is the mean cross-entropy over the right halves only, by hand.
    let logits = tch::no_grad(|| seg_logits_by_hand(&net, &batch));
    let right = logits.narrow(3, side / 2, side / 2);
    let k = right.size()[1];
    let flat = right.permute([0, 2, 3, 1]).reshape([-1, k]);
    let labels = mask.narrow(2, side / 2, side / 2).reshape([-1]);
    assert!(close(half, cross_entropy_by_hand(&flat, &labels)), "{half}");
    assert_ne!(half, full);
}

#[test]
fn segmentation_scores_match_a_confusion_matrix_by_hand() {
    let (net, task, train) = build(TaskKind::Segmentation, "segmentation");
    let Examples::Segmentation(mut s) = train else {
        unreachable!()
    };
    s.examples.truncate(8);
    let one = Examples::Segmentation(s.clone());
    let batch = first_batch(task.as_ref(), task.items(&one).unwrap());
    let pred = tch::no_grad(|| seg_logits_by_hand(&net, &batch)).argmax(1, false);
    let Targets::Mask(mask) = &batch.targets else {
        panic!("no masks")
    };
    let pred: Vec<i64> = Vec::try_from(pred.flatten(0, -1)).unwrap();
    let labels: Vec<i64> = Vec::try_from(mask.flatten(0, -1)).unwrap();
    let mut c = Confusion::new(s.classes.len()).unwrap();
    let bytes = |v: &[i64]| -> Vec<u8> {
        v.iter()
            .map(|&x| if x < 0 { IGNORE } else { x as u8 })
            .collect()
    };
    c.add(&bytes(&pred), &bytes(&labels)).unwrap();
    let e = task.evaluate(&net, &eval_data(8), &one).unwrap();
    // Neither score is a mean over images: no per-item values.
    assert!(e.items.is_empty(), "{:?}", e.items.keys());
    let scores = e.scores;
    assert_eq!(scores["miou"], c.mean_iou());
    assert_eq!(scores["pixel_accuracy"], c.pixel_accuracy());
    // Pixel accuracy from the raw maps, without the confusion matrix.
    let (right, counted) = pred
        .iter()
        .zip(&labels)
        .filter(|(_, l)| **l >= 0)
        .fold((0usize, 0usize), |(r, n), (p, l)| {
            (r + usize::from(p == l), n + 1)
        });
    assert_eq!(scores["pixel_accuracy"], right as f64 / counted as f64);
}

// ---- retrieval ----

#[test]
fn retrieval_loss_reaches_the_itc_head() {
    let loss = check_loss(
        TaskKind::Retrieval,
        "retrieval",
        "itc",
        &[
            "image_proj.bias",
            "image_proj.weight",
            "logit_scale",
            "text_proj.bias",
            "text_proj.weight",
        ],
    );
    // A fresh model is near chance: ln 8 for a batch of 8 give or take.
    assert!(loss < 3.0 * 8f64.ln(), "{loss}");
}

#[test]
fn retrieval_evaluates_recall_both_ways() {
    let s = check_evaluate(TaskKind::Retrieval, "retrieval").scores;
    let six = ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"];
    let mean = six.iter().map(|k| s[*k]).sum::<f64>() / 6.0;
    assert!(close(s["r_mean"], mean));
    assert!(s["tr_r1"] <= s["tr_r5"] && s["tr_r5"] <= s["tr_r10"]);
    assert!(s["ir_r1"] <= s["ir_r5"] && s["ir_r5"] <= s["ir_r10"]);
}

#[test]
fn retrieval_training_items_hold_every_caption_of_an_image() {
    let (_net, task, train) = build(TaskKind::Retrieval, "retrieval");
    let Examples::Retrieval(s) = &train else {
        unreachable!()
    };
    let items = task.items(&train).unwrap();
    assert_eq!(items.len(), s.images.len());
    let total: usize = items.iter().map(|i| i.texts.len()).sum();
    assert_eq!(total, s.captions.len());
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item.group, i);
        assert_eq!(item.images, [s.images[i].clone()]);
        let own: Vec<String> = s
            .captions
            .iter()
            .zip(&s.caption_image)
            .filter(|(_, o)| **o == i)
            .map(|(c, _)| c.clone())
            .collect();
        assert_eq!(item.texts, own);
    }
}

#[test]
fn itc_embeddings_are_unit_rows_and_make_the_logits() {
    let (net, task, train) = build(TaskKind::Retrieval, "retrieval");
    let batch = first_batch(task.as_ref(), task.items(&train).unwrap());
    tch::no_grad(|| {
        let itc = net.itc().unwrap();
        let i = net
            .encoder
            .encode_image(batch.image().unwrap(), false)
            .unwrap()
            .select(1, 0);
        let t = net
            .encoder
            .encode_text(&batch.text().unwrap().batch(), false)
            .unwrap()
            .select(1, 0);
        let (ei, et) = (itc.embed_image(&i), itc.embed_text(&t));
        for e in [&ei, &et] {
            let norms: Vec<f32> = Vec::try_from(e.norm_scalaropt_dim(2, [1], false)).unwrap();
            assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
        }
        // CLIP's initial temperature 0.07: logits = ⟨t̂, v̂⟩ / 0.07.
        let want = et.matmul(&ei.tr()) / 0.07;
        let got = itc.logits(&t, &i);
        let diff = (got - want).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{diff}");
    });
}

#[test]
fn retrieval_of_indistinguishable_images_ranks_every_hit_after_the_ties() {
    // Every image of the split is the same picture: all image embeddings are equal, so for a
    // caption every image ties, and ties count against the query: its rank is the number of
    // non-hit images, n_img − |H(t)|.
    let (net, task, _) = build(TaskKind::Retrieval, "retrieval");
    let Examples::Retrieval(s) = split("retrieval", Split::Val) else {
        unreachable!()
    };
    let same = RetrievalSplit {
        images: vec![s.images[0].clone(); s.images.len()],
        ..s.clone()
    };
    let ranks: Vec<usize> = same
        .equivalent
        .iter()
        .map(|h| same.images.len() - h.len())
        .collect();
    // One batch, so that equal inputs give bit-equal rows.
    let same = Examples::Retrieval(same);
    let e = task.evaluate(&net, &eval_data(64), &same).unwrap();
    check_items(&same, &e);
    for k in [1, 5, 10] {
        let name = format!("ir_r{k}");
        assert_eq!(e.scores[&name], recall_at_k(&ranks, k), "{name}");
        // Each caption query hits within k exactly when its tie-broken rank is below k.
        let hits: Vec<f64> = ranks
            .iter()
            .map(|&r| if r < k { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(e.items[&name], hits, "{name}");
    }
    assert_eq!(e.scores["ir_r1"], 0.0);
    assert!(e.items["ir_r1"].iter().all(|&x| x == 0.0));
}

/// A retrieval split of `owners.len()` captions (caption c belongs to image `owners[c]`,
/// with text `texts[c]`) over `n` images (never read: the scores come from embeddings).
fn hand_split(n: usize, texts: &[&str], owners: &[usize]) -> RetrievalSplit {
    RetrievalSplit::new(
        (0..n).map(|i| ImageRef::new(format!("{i}.png"))).collect(),
        (0..n as u64).collect(),
        texts.iter().map(|t| t.to_string()).collect(),
        owners.to_vec(),
    )
    .unwrap()
}

#[test]
fn retrieval_items_are_each_querys_hit_with_ties_against_it() {
    // Images i0 = (1, 0), i1 = (0, 1), i2 = (1, 0): i0 and i2 are indistinguishable.
    // Captions c0 = (1, 0) of i0, c1 = (0, 1) of i1, c2 = (−1, 0) of i2, all distinct.
    // Dot products s(c, i):      i0   i1   i2
    //                      c0     1    0    1
    //                      c1     0    1    0
    //                      c2    −1    0   −1
    // Text → image: c0's hit i0 ties with the non-hit i2 (the tie counts against it): rank 1;
    // c1: rank 0; c2's hit i2 (−1) is beaten or tied by i1 (0) and i0 (−1): rank 2.
    // Image → text: i0's hit c0 (1) beats c1 (0), c2 (−1): rank 0; i1's c1 (1): rank 0; i2's
    // hit c2 (−1) is beaten by c0 (1) and c1 (0): rank 2.
    let images = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    let texts = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
    let s = hand_split(
        3,
        &["a red square", "a blue disc", "a green star"],
        &[0, 1, 2],
    );
    let e = recall_from_embeddings(&s, &images, &texts, 2).unwrap();
    check_items(&Examples::Retrieval(s), &e);
    assert_eq!(e.items["ir_r1"], [0.0, 1.0, 0.0]);
    assert_eq!(e.items["ir_r5"], [1.0, 1.0, 1.0]);
    assert_eq!(e.items["tr_r1"], [1.0, 1.0, 0.0]);
    assert_eq!(e.items["tr_r5"], [1.0, 1.0, 1.0]);
    assert_eq!(e.scores["ir_r1"], 1.0 / 3.0);
    assert_eq!(e.scores["tr_r1"], 2.0 / 3.0);
    assert_eq!(e.scores["ir_r10"], 1.0);
    // The mean of tr_r1, tr_r5, tr_r10, ir_r1, ir_r5, ir_r10, summed in that order.
    let six = 2.0 / 3.0 + 1.0 + 1.0 + 1.0 / 3.0 + 1.0 + 1.0;
    assert_eq!(e.scores["r_mean"], six / 6.0);
    assert!(!e.items.contains_key("r_mean"));

    // The same embeddings, but c2 is c0's text ("A  red square" is the same caption after
    // trimming, lower-casing and collapsing spaces): i0 and i2 are hits of both captions.
    // Text → image: c0's best hit (1, at i0 and i2) is beaten by no non-hit: rank 0; c1:
    // rank 0; c2's best hit (−1) is beaten by the non-hit i1 (0): rank 1. Image → text: i0
    // and i2 have hits {c0, c2}, best 1: rank 0; i1: rank 0.
    let s = hand_split(
        3,
        &["a red square", "a blue disc", "A  red square"],
        &[0, 1, 2],
    );
    assert_eq!(s.equivalent, [vec![0, 2], vec![1], vec![0, 2]]);
    let e = recall_from_embeddings(&s, &images, &texts, 2).unwrap();
    check_items(&Examples::Retrieval(s), &e);
    assert_eq!(e.items["ir_r1"], [1.0, 1.0, 0.0]);
    assert_eq!(e.items["ir_r5"], [1.0, 1.0, 1.0]);
    assert_eq!(e.items["tr_r1"], [1.0, 1.0, 1.0]);
}

#[test]
fn retrieval_without_the_itc_head_is_an_error() {
    let (_, task, _) = build(TaskKind::Retrieval, "retrieval");
    let other = Net::new(&config(), 0, Device::Cpu).unwrap();
    let val = split("retrieval", Split::Val);
    let err = task.evaluate(&other, &eval_data(8), &val).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no image-text contrastive head (heads.itc) in this run"
    );
}

// ---- VQA ----

#[test]
fn vqa_evaluates_the_soft_score_per_question() {
    let e = check_evaluate(TaskKind::Vqa, "vqa");
    let Examples::Vqa { examples, .. } = split("vqa", Split::Val) else {
        unreachable!()
    };
    assert_eq!(e.items["vqa_score"].len(), examples.len());
}

#[test]
fn vqa_items_are_the_official_soft_score_of_each_question() {
    let (net, task, train) = build(TaskKind::Vqa, "vqa");
    let Examples::Vqa {
        vocab: Some(vocab), ..
    } = &train
    else {
        panic!("no answer vocabulary")
    };
    let answer = vocab.answers()[0].clone();
    // Make the head answer `answer` to every question: a zero output weight and a bias that
    // is 10 at `answer` and 0 elsewhere.
    tch::no_grad(|| {
        let v = head_vars(&net, "vqa");
        let _ = v["out.weight"].shallow_clone().zero_();
        let mut bias = v["out.bias"].shallow_clone();
        let _ = bias.zero_();
        let _ = bias.get(0).fill_(10.0);
    });
    let Examples::Vqa {
        mut examples,
        vocab,
    } = split("vqa", Split::Val)
    else {
        unreachable!()
    };
    // Ten human answers with m of them `answer`: the official accuracy averages
    // min(1, matches / 3) over the ten leave-one-out subsets of nine, which is
    // (m · min(m − 1, 3) + (10 − m) · min(m, 3)) / 30.
    //   m = 10: 1;  m = 2: (2·1 + 8·2) / 30 = 0.6;  m = 1: (0 + 9·1) / 30 = 0.3;
    //   m = 0: 0;   m = 3: (3·2 + 7·3) / 30 = 0.9.  No answers at all: 0.
    let humans = |m: usize, n: usize| -> Vec<String> {
        (0..n)
            .map(|j| {
                if j < m {
                    answer.clone()
                } else {
                    format!("other {j}")
                }
            })
            .collect()
    };
    let cases = [(10, 10), (2, 10), (1, 10), (0, 10), (3, 10), (0, 0)];
    assert!(examples.len() >= cases.len());
    examples.truncate(cases.len());
    for (ex, &(m, n)) in examples.iter_mut().zip(&cases) {
        ex.answers = humans(m, n);
    }
    let e = task
        .evaluate(&net, &eval_data(4), &Examples::Vqa { examples, vocab })
        .unwrap();
    let want = [
        1.0,
        f64::from(0.6f32),
        f64::from(0.3f32),
        0.0,
        f64::from(0.9f32),
        0.0,
    ];
    assert_eq!(e.items["vqa_score"], want);
    let m = (1.0 + 0.6 + 0.3 + 0.0 + 0.9 + 0.0) / 6.0;
    assert!(
        (e.scores["vqa_score"] - m).abs() < 1e-7,
        "{}",
        e.scores["vqa_score"]
    );
    assert_eq!(e.scores["vqa_score"], mean(&want));
}
