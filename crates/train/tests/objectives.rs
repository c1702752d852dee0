//! The pre-training objectives on the tiny preset: the registry's documentation, finite losses
//! whose gradients reach their head and the encoder, hand-worked values, and determinism.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmerge_core::hash::SplitMix64;
use mmerge_models::heads::patchify;
use mmerge_models::{MultiwayConfig, Sharing};
use mmerge_train::input::{ModelBatch, Targets, Text};
use mmerge_train::net::Net;
use mmerge_train::objectives::itm::positives;
use mmerge_train::objectives::mim::patch_mask;
use mmerge_train::objectives::{OBJECTIVES, Objective, StepCache, objective_def};
use tch::{Device, Kind, Tensor};

const B: usize = 4;

fn config() -> MultiwayConfig {
    MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap()
}

fn net_with(names: &[&str]) -> (Net, Vec<Box<dyn Objective>>) {
    let mut net = Net::new(&config(), 11, Device::Cpu).unwrap();
    let objs = names
        .iter()
        .map(|n| (objective_def(n).unwrap().build)(&mut net).unwrap())
        .collect();
    (net, objs)
}

/// B pairs of random pixels and texts of 3 to 10 words ([CLS] … [SEP], padded), each its own
/// group, distinct captions.
fn batch(seed: u64) -> ModelBatch {
    let cfg = config();
    let mut rng = SplitMix64::new(seed);
    let side = cfg.image_size;
    let px: Vec<f32> = (0..B as i64 * 3 * side * side)
        .map(|_| rng.signed_unit_f32())
        .collect();
    let len = 12usize;
    let (mut ids, mut mask) = (vec![0i64; B * len], vec![0i64; B * len]);
    let mut texts = vec![];
    for r in 0..B {
        let words = 3 + (rng.next_u64() % 8) as usize;
        ids[r * len] = 2;
        for t in 1..=words {
            ids[r * len + t] = 5 + (rng.next_u64() % (cfg.vocab_size as u64 - 5)) as i64;
        }
        ids[r * len + words + 1] = 3;
        mask[r * len..r * len + words + 2].fill(1);
        texts.push(format!("caption {r}"));
    }
    ModelBatch {
        images: vec![Tensor::from_slice(&px).view([B as i64, 3, side, side])],
        text: Some(Text {
            ids: Tensor::from_slice(&ids).view([B as i64, len as i64]),
            mask: Tensor::from_slice(&mask).view([B as i64, len as i64]),
        }),
        texts,
        targets: Targets::None,
        groups: (0..B).collect(),
        indices: (0..B).collect(),
    }
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// Sum of |grad| over the variables whose name satisfies `pick`.
fn grad_mass(net: &Net, pick: impl Fn(&str) -> bool) -> f64 {
    net.named_parameters()
        .iter()
        .filter(|(n, _)| pick(n))
        .map(|(_, v)| {
            let g = v.grad();
            if g.defined() {
                value(&g.abs().sum(Kind::Double))
            } else {
                0.0
            }
        })
        .sum()
}

/// Overwrites the variable `name` with `f(shape)`.
fn set(net: &Net, name: &str, f: impl Fn(&[i64]) -> Tensor) {
    let vars = net.vs.variables();
    let mut v = vars[name].shallow_clone();
    let _g = tch::no_grad_guard();
    v.copy_(&f(&v.size()));
}

fn zeros(shape: &[i64]) -> Tensor {
    Tensor::zeros(shape, (Kind::Float, Device::Cpu))
}

#[test]
fn registry_entries_document_formula_paper_and_deviations() {
    let mut names: Vec<&str> = OBJECTIVES.iter().map(|o| o.name).collect();
    assert_eq!(names, ["itc", "itm", "mlm", "text_mlm", "mim"]);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), OBJECTIVES.len(), "duplicate names");
    for o in OBJECTIVES {
        let doc: Vec<&str> = o
            .source
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| l.trim_start_matches("//!").trim())
            .collect();
        assert!(!o.formula.is_empty(), "{}: empty formula", o.name);
        assert!(
            doc.iter().any(|l| l.starts_with("L = ")),
            "{}: no formula line `L = …` in the module doc",
            o.name
        );
        let text = doc.join(" ");
        let arxiv = text.match_indices("arXiv ").any(|(i, m)| {
            let id: String = text[i + m.len()..].chars().take(10).collect();
            let b = id.as_bytes();
            id.len() == 10
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[4] == b'.'
                && b[5..9].iter().all(u8::is_ascii_digit)
        });
        assert!(arxiv, "{}: no arXiv id in the module doc", o.name);
        assert!(
            doc.iter().any(|l| l.starts_with("Deviation")),
            "{}: no `Deviation` paragraph in the module doc",
            o.name
        );
    }
    assert!(objective_def("nope").is_err());
}

#[test]
fn every_objective_is_finite_and_reaches_its_head_and_the_encoder() {
    // (objective, its head's prefix, an expert its gradient must reach)
    let cases = [
        ("itc", "heads.itc.", ".vision."),
        ("itc", "heads.itc.", ".text."),
        ("itm", "heads.itm.", ".vl."),
        ("mlm", "heads.mlm.", ".vl."),
        ("mlm", "heads.mlm.", ".text."),
        ("text_mlm", "heads.mlm.", ".text."),
        ("mim", "heads.mim.", ".vision."),
    ];
    for (name, head, expert) in cases {
        let (net, objs) = net_with(&[name]);
        let b = batch(1);
        let cache = StepCache::new(5, 9, true);
        let loss = objs[0].loss(&net, &b, &cache).unwrap();
        assert!(value(&loss).is_finite() && value(&loss) > 0.0, "{name}");
        loss.backward();
        assert!(
            grad_mass(&net, |n| n.starts_with(head)) > 0.0,
            "{name}: {head}"
        );
        assert!(
            grad_mass(&net, |n| !n.starts_with("heads.") && n.contains(expert)) > 0.0,
            "{name}: no gradient in the {expert} experts"
        );
    }
    // MIM never touches the text experts, text MLM never the vision ones.
    for (name, expert) in [("mim", ".text."), ("text_mlm", ".vision.")] {
        let (net, objs) = net_with(&[name]);
        objs[0]
            .loss(&net, &batch(1), &StepCache::new(5, 9, true))
            .unwrap()
            .backward();
        assert_eq!(grad_mass(&net, |n| n.contains(expert)), 0.0, "{name}");
    }
}

#[test]
fn all_objectives_in_one_net_share_heads() {
    let (net, objs) = net_with(&["itc", "itm", "mlm", "text_mlm", "mim"]);
    let mut heads: Vec<String> = net
        .named_parameters()
        .into_iter()
        .filter_map(|(n, _)| {
            n.strip_prefix("heads.")
                .map(|s| s.split('.').next().unwrap().to_string())
        })
        .collect();
    heads.dedup();
    assert_eq!(heads, ["itc", "itm", "mim", "mlm"]);
    let b = batch(2);
    let cache = StepCache::new(1, 2, true);
    let total = objs
        .iter()
        .map(|o| o.loss(&net, &b, &cache).unwrap())
        .fold(Tensor::from(0f32), |a, l| a + l);
    assert!(value(&total).is_finite());
    total.backward();
}

#[test]
fn losses_are_a_function_of_seed_and_step() {
    let (net, objs) = net_with(&["itm", "mlm", "text_mlm", "mim"]);
    let b = batch(3);
    let run = |seed, step| -> Vec<f64> {
        let cache = StepCache::new(seed, step, false);
        objs.iter()
            .map(|o| value(&o.loss(&net, &b, &cache).unwrap()))
            .collect()
    };
    let a = run(1, 1);
    assert_eq!(a, run(1, 1));
    let c = run(1, 2);
    for (k, name) in ["mlm", "text_mlm", "mim"].iter().enumerate() {
        assert_ne!(a[k + 1], c[k + 1], "{name}: another step, the same loss");
    }
}

#[test]
fn itc_with_a_zero_projection_is_ln_b() {
    let (net, objs) = net_with(&["itc"]);
    set(&net, "heads.itc.text_proj.weight", zeros);
    set(&net, "heads.itc.text_proj.bias", zeros);
    let loss = value(
        &objs[0]
            .loss(&net, &batch(4), &StepCache::new(0, 0, false))
            .unwrap(),
    );
    assert!((loss - (B as f64).ln()).abs() < 1e-5, "{loss}");
}

#[test]
fn itm_with_a_zero_output_layer_is_ln_2() {
    let (net, objs) = net_with(&["itm"]);
    set(&net, "heads.itm.out.weight", zeros);
    set(&net, "heads.itm.out.bias", zeros);
    let loss = value(
        &objs[0]
            .loss(&net, &batch(4), &StepCache::new(0, 0, false))
            .unwrap(),
    );
    assert!((loss - 2f64.ln()).abs() < 1e-6, "{loss}");
}

#[test]
fn mlm_with_a_zero_decoder_is_ln_vocab() {
    for name in ["mlm", "text_mlm"] {
        let (net, objs) = net_with(&[name]);
        set(&net, "heads.mlm.decoder.weight", zeros);
        set(&net, "heads.mlm.decoder.bias", zeros);
        let loss = value(
            &objs[0]
                .loss(&net, &batch(4), &StepCache::new(0, 0, false))
                .unwrap(),
        );
        assert!((loss - 512f64.ln()).abs() < 1e-5, "{name}: {loss}");
    }
}

#[test]
fn mlm_rejects_a_bad_mask_prob() {
    let (net, objs) = net_with(&["mlm"]);
    let mut cache = StepCache::new(0, 0, false);
    cache.mask_prob = 1.5;
    assert!(objs[0].loss(&net, &batch(4), &cache).is_err());
}

#[test]
fn itm_positives_are_same_group_or_same_caption() {
    let texts: Vec<String> = ["A dog", " a  DOG ", "a cat", "a bird"]
        .map(String::from)
        .to_vec();
    let p = positives(&texts, &[0, 1, 2, 2]).unwrap();
    let t = true;
    let f = false;
    assert_eq!(
        p,
        [[t, t, f, f], [t, t, f, f], [f, f, t, t], [f, f, t, t]].map(|r| r.to_vec())
    );
    assert!(positives(&texts, &[0]).is_err());
}

/// Images whose every patch holds the same pattern; `other` patches (row-major) hold another.
fn tiled(other: &[usize]) -> Tensor {
    let cfg = config();
    let (side, p) = (cfg.image_size, cfg.patch_size);
    let g = side / p;
    let mut v = vec![0f32; B * 3 * (side * side) as usize];
    for b in 0..B {
        for c in 0..3 {
            for y in 0..side {
                for x in 0..side {
                    let patch = ((y / p) * g + x / p) as usize;
                    let k = (c * p * p + (y % p) * p + x % p) as f32;
                    let at = ((b as i64 * 3 + c) * side + y) * side + x;
                    v[at as usize] = if other.contains(&(b * 16 + patch)) {
                        (k * 0.37).cos()
                    } else {
                        (k * 0.11).sin()
                    };
                }
            }
        }
    }
    Tensor::from_slice(&v).view([B as i64, 3, side, side])
}

#[test]
fn mim_is_zero_when_the_head_predicts_the_masked_patches_and_ignores_the_others() {
    let cfg = config();
    let (seed, step) = (3, 8);
    let masked = patch_mask(B, 16, 0.4, seed, step);
    let unmasked: Vec<usize> = (0..B * 16).filter(|&i| !masked[i]).collect();
    let (net, objs) = net_with(&["mim"]);
    // The head predicts the normalised pattern for every patch, whatever its input.
    let target = patchify(&tiled(&[]), cfg.patch_size).get(0).get(0);
    let target = (&target - target.mean(Kind::Float)) / (target.var(false) + 1e-6).sqrt();
    set(&net, "heads.mim.proj.weight", zeros);
    set(&net, "heads.mim.proj.bias", |_| target.shallow_clone());
    let loss = |px: Tensor| {
        let mut b = batch(5);
        b.images = vec![px];
        value(
            &objs[0]
                .loss(&net, &b, &StepCache::new(seed, step, false))
                .unwrap(),
        )
    };
    assert!(loss(tiled(&[])) < 1e-10, "{}", loss(tiled(&[])));
    // Unmasked patches with another pattern do not count...
    assert!(loss(tiled(&unmasked)) < 1e-10);
    // ... a masked one does: 1 patch of the B·7 masked ones.
    let first = masked.iter().position(|&m| m).unwrap();
    let one = loss(tiled(&[first]));
    assert!(one > 1e-3, "{one}");
    let two = loss(tiled(&[first, masked.iter().rposition(|&m| m).unwrap()]));
    assert!((two - 2.0 * one).abs() < 1e-5, "{one} {two}");
}

mod zeroshot {
    use mmerge_data::formats::captions::RetrievalSplit;
    use mmerge_data::score::retrieval::{
        image_to_text_ranks, image_to_text_recall, text_to_image_ranks, text_to_image_recall,
    };
    use mmerge_data::suite::{Examples, Suite};
    use mmerge_data::synth::{Scale, SynthConfig, generate};
    use mmerge_data::tokenize::Tokenizer;
    use mmerge_data::transform::{ImageTransform, Normalize};
    use mmerge_train::eval::EvalData;
    use mmerge_train::input::{Collator, Item, Target};
    use mmerge_train::zeroshot::{HeldOut, Weighted, heldout_loss, retrieval_recall};

    use super::*;

    /// The tiny synthetic suite's retrieval validation split and evaluation batches for it.
    fn data() -> (tempfile::TempDir, RetrievalSplit, EvalData) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("suite");
        generate(&SynthConfig::new(3, Scale::Tiny), &root, false, false).unwrap();
        let suite = Suite::open(&root).unwrap();
        let Examples::Retrieval(split) = suite.task("retrieval").unwrap().split("val").unwrap()
        else {
            panic!("not a retrieval split")
        };
        let tokenizer = Tokenizer::train_wordpiece(split.captions.iter(), 512, 1).unwrap();
        let transform = ImageTransform {
            size: 32,
            normalize: Normalize::HALF,
            augment: None,
        };
        let data = EvalData {
            collator: Collator {
                tokenizer,
                max_len: 16,
                image_size: 32,
                soft_classes: 0,
                device: Device::Cpu,
            },
            transform,
            batch_size: 5,
            threads: Some(1),
        };
        (dir, split, data)
    }

    /// Class tokens of `items` (image-only or text-only pass), rows in item order.
    fn class_tokens(net: &Net, data: &EvalData, items: Vec<Item>, image: bool) -> Tensor {
        let mut rows = vec![];
        data.for_each(items, 0, |b| {
            let h = if image {
                net.encoder.encode_image(b.image()?, false)?
            } else {
                net.encoder.encode_text(&b.text()?.batch(), false)?
            };
            rows.push(h.select(1, 0));
            Ok(())
        })
        .unwrap();
        Tensor::cat(&rows, 0)
    }

    #[test]
    fn retrieval_recall_matches_the_full_itc_matrix() {
        let (_dir, split, data) = data();
        let (net, _) = net_with(&["itc"]);
        let e = retrieval_recall(&net, &data, &split).unwrap();
        let s = &e.scores;
        let names: Vec<&str> = s.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "ir_r1", "ir_r10", "ir_r5", "r_mean", "tr_r1", "tr_r10", "tr_r5"
            ]
        );
        // Oracle: the whole images × captions matrix of ItcHead::logits (caption × image).
        let img = |i: usize| Item {
            images: vec![split.images[i].clone()],
            texts: vec![],
            target: Target::None,
            group: i,
        };
        let txt = |c: usize| Item {
            images: vec![],
            texts: vec![split.captions[c].clone()],
            target: Target::None,
            group: split.caption_image[c],
        };
        let vi = class_tokens(
            &net,
            &data,
            (0..split.images.len()).map(img).collect(),
            true,
        );
        let vt = class_tokens(
            &net,
            &data,
            (0..split.captions.len()).map(txt).collect(),
            false,
        );
        let m = tch::no_grad(|| net.itc().unwrap().logits(&vt, &vi).transpose(0, 1));
        let m: Vec<f32> = Vec::try_from(m.contiguous().view([-1])).unwrap();
        let ks = [1, 5, 10];
        let ir = text_to_image_recall(&split, &m, &ks).unwrap();
        let tr = image_to_text_recall(&split, &m, &ks).unwrap();
        for (j, k) in ks.iter().enumerate() {
            assert_eq!(s[&format!("ir_r{k}")], ir[j], "ir_r{k}");
            assert_eq!(s[&format!("tr_r{k}")], tr[j], "tr_r{k}");
        }
        let mean = (ir.iter().sum::<f64>() + tr.iter().sum::<f64>()) / 6.0;
        assert!((s["r_mean"] - mean).abs() < 1e-12);
        // Per-item values: each query's hit within k, by the ranks on the same matrix.
        let ir_ranks = text_to_image_ranks(&split, &m).unwrap();
        let tr_ranks = image_to_text_ranks(&split, &m).unwrap();
        let hits = |ranks: &[usize], k: usize| -> Vec<f64> {
            ranks.iter().map(|&r| f64::from(u8::from(r < k))).collect()
        };
        let items: Vec<&str> = e.items.keys().map(String::as_str).collect();
        assert_eq!(
            items,
            ["ir_r1", "ir_r10", "ir_r5", "tr_r1", "tr_r10", "tr_r5"]
        );
        for k in ks {
            assert_eq!(e.items[&format!("ir_r{k}")], hits(&ir_ranks, k), "ir_r{k}");
            assert_eq!(e.items[&format!("tr_r{k}")], hits(&tr_ranks, k), "tr_r{k}");
        }
        assert_eq!(ir_ranks.len(), split.captions.len());
        assert_eq!(tr_ranks.len(), split.images.len());
        // No ITC head: an error, not a score.
        let (bare, _) = net_with(&["mim"]);
        assert!(retrieval_recall(&bare, &data, &split).is_err());
    }

    #[test]
    fn heldout_loss_is_the_weighted_sum_and_fixed_by_seed_and_step() {
        let (_dir, split, data) = data();
        let names = ["itc", "itm", "mlm", "text_mlm", "mim"];
        let (net, objs) = net_with(&names);
        let weights = [1.0, 0.5, 2.0, 0.25, 1.5];
        let w: Vec<Weighted<'_>> = names
            .iter()
            .zip(&weights)
            .zip(&objs)
            .map(|((&name, &weight), o)| Weighted {
                name,
                weight,
                objective: o.as_ref(),
            })
            .collect();
        let held = HeldOut::default();
        let a = heldout_loss(&net, &data, &split, &w, held).unwrap();
        assert_eq!(a, heldout_loss(&net, &data, &split, &w, held).unwrap());
        let total: f64 = names
            .iter()
            .zip(&weights)
            .map(|(n, w)| w * a[&format!("heldout_{n}")])
            .sum();
        assert!((a["heldout_total"] - total).abs() < 1e-12);
        assert!(a.values().all(|v| v.is_finite() && *v > 0.0), "{a:?}");
        let b = heldout_loss(&net, &data, &split, &w, HeldOut { seed: 1, ..held }).unwrap();
        for n in ["heldout_mlm", "heldout_text_mlm", "heldout_mim"] {
            assert_ne!(a[n], b[n], "{n}: another seed, the same loss");
        }
        // ITC has no randomness.
        assert_eq!(a["heldout_itc"], b["heldout_itc"]);
    }
}

/// Max |a − b|.
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    value(&(a - b).abs().max().to_kind(Kind::Double))
}

#[test]
fn sharing_the_lower_layers_keeps_the_losses_and_gradients() {
    // Without dropout the step's passes share the layers below the VL split (StepCache); the
    // losses and gradients must be those of encoding every pass from its inputs.
    let (net, objs) = net_with(&["itc", "mlm"]);
    let b = batch(4);
    let cache = StepCache::new(5, 9, true);
    assert!(cache.shares_lower(&net));
    let shared = objs
        .iter()
        .map(|o| o.loss(&net, &b, &cache).unwrap())
        .fold(Tensor::from(0f32), |a, l| a + l);
    let enc = &net.encoder;
    let (px, text) = (b.image().unwrap(), b.text().unwrap());
    let image = enc.encode_image(px, true).unwrap().select(1, 0);
    let text_cls = enc.encode_text(&text.batch(), true).unwrap().select(1, 0);
    let (ids, labels) = cache.masked_text(&net, &b).unwrap();
    let masked = mmerge_models::TextBatch {
        ids,
        mask: &text.mask,
    };
    let (h, _) = enc.encode_image_text(px, &masked, 1, true).unwrap();
    let t = ids.size()[1];
    let alone = net.itc().unwrap().loss(&text_cls, &image)
        + net.mlm().unwrap().loss(&h.narrow(1, 0, t), labels);
    assert!((value(&shared) - value(&alone)).abs() < 1e-5);
    let params: Vec<(String, Tensor)> = net.named_parameters();
    let vars: Vec<Tensor> = params.iter().map(|(_, v)| v.shallow_clone()).collect();
    let g1 = Tensor::f_run_backward(&[shared], &vars, false, false).unwrap();
    let g2 = Tensor::f_run_backward(&[alone], &vars, false, false).unwrap();
    for ((name, _), (a, b)) in params.iter().zip(g1.iter().zip(&g2)) {
        assert_eq!(a.defined(), b.defined(), "{name}");
        if a.defined() {
            assert!(max_diff(a, b) < 1e-5, "{name}: {}", max_diff(a, b));
        }
    }
    // ITM's pairs: fused from the lower layers, indexed, as from the indexed inputs.
    let pick = Tensor::from_slice(&[0i64, 1, 2, 3, 2, 0, 3, 1]);
    let lower_i = enc.image_lower(px, 1, true).unwrap().index_select(0, &pick);
    let lower_t = enc
        .text_lower(&text.batch(), true)
        .unwrap()
        .index_select(0, &pick);
    let mask = text.mask.index_select(0, &pick);
    let (fused, m1) = enc.fuse(lower_t, lower_i, &mask, true).unwrap();
    let ids = text.ids.index_select(0, &pick);
    let (direct, m2) = enc
        .encode_image_text(
            &px.index_select(0, &pick),
            &mmerge_models::TextBatch {
                ids: &ids,
                mask: &mask,
            },
            1,
            true,
        )
        .unwrap();
    assert!(max_diff(&fused, &direct) < 1e-5);
    assert_eq!(m1, m2);
    // Only the first tokens' outputs in the last layer: the same rows.
    let lower_i = enc.image_lower(px, 1, true).unwrap();
    let lower_t = enc.text_lower(&text.batch(), true).unwrap();
    let (full, _) = enc
        .fuse(
            lower_t.shallow_clone(),
            lower_i.shallow_clone(),
            &text.mask,
            true,
        )
        .unwrap();
    for keep in [1, 5, full.size()[1]] {
        let first = enc
            .fuse_first(
                lower_t.shallow_clone(),
                lower_i.shallow_clone(),
                &text.mask,
                keep,
                true,
            )
            .unwrap();
        assert!(
            max_diff(&first, &full.narrow(1, 0, keep)) < 1e-5,
            "keep {keep}"
        );
    }
}
