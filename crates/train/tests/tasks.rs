//! Every task kind end to end on a tiny synthetic suite and the `tiny` preset: build, items,
//! evaluation batches, a finite loss whose gradient reaches the head, and evaluation scores
//! (exactly the declared names, in [0, 1]); hand-worked checks where they prove behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use mmerge_data::formats::captions::RetrievalSplit;
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
use mmerge_train::tasks::{Task, TaskData, task_def};
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
/// in [0, 1].
fn check_evaluate(kind: TaskKind, name: &str) -> BTreeMap<String, f64> {
    let (net, task, _) = build(kind, name);
    let val = split(name, Split::Val);
    let scores = task.evaluate(&net, &eval_data(8), &val).unwrap();
    let mut want: Vec<&str> = task_def(kind).unwrap().scores.to_vec();
    want.sort();
    assert_eq!(scores.keys().map(String::as_str).collect::<Vec<_>>(), want);
    for (k, v) in &scores {
        assert!((0.0..=1.0).contains(v), "{name}: {k} = {v}");
    }
    scores
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
    let scores = task
        .evaluate(&net, &eval_data(8), &Examples::ImageCls(s))
        .unwrap();
    assert_eq!(scores["accuracy"], correct as f64 / 8.0);
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
    let scores = task.evaluate(&net, &eval_data(8), &one).unwrap();
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
    let s = check_evaluate(TaskKind::Retrieval, "retrieval");
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
    let scores = task
        .evaluate(&net, &eval_data(64), &Examples::Retrieval(same))
        .unwrap();
    for k in [1, 5, 10] {
        assert_eq!(
            scores[&format!("ir_r{k}")],
            recall_at_k(&ranks, k),
            "ir_r{k}"
        );
    }
    assert_eq!(scores["ir_r1"], 0.0);
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
