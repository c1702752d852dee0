//! Statistics for data-dependent merging (`mmerge_train::statistics`) at the `tiny` preset:
//! attaching the probe changes no output; every expert's Gram counts exactly the tokens routed
//! to it (image tokens twice below the VL layers: image-only and fused passes; real text tokens
//! only, padding excluded) and is symmetric with a non-negative diagonal; unit moments pair
//! every stored expert of a part on the same tokens; the Fisher covers every parameter, is
//! non-negative and zero where the loss does not reach; collecting twice gives the same bits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Mutex;

use mmerge_data::check::write_suite_tokenizer;
use mmerge_data::synth::{Scale, SynthConfig, generate};
use mmerge_models::probe::{Probe, UnitKind};
use mmerge_models::{Expert, TextBatch};
use mmerge_train::recipe::Recipe;
use mmerge_train::statistics::{Collected, FisherLabels, StatisticsConfig, collect};
use mmerge_train::trainer::{self, Prepared};
use tch::{Kind, Tensor};

/// One test at a time: `prepare` seeds libtorch's process-wide generator.
static SERIAL: Mutex<()> = Mutex::new(());

const BATCH: usize = 8;
const BATCHES: usize = 3;

fn prepared(suite: &Path, objectives: &str) -> Prepared {
    let text = format!(
        "suite: {}\nmodel: {{preset: tiny, sharing: all_specific}}\npretrain: {{objectives: {objectives}}}\n\
         steps: 1\nbatch_size: {BATCH}\neval: {{test: false}}\ncheckpoint_every: 0\ntensorboard: false\nthreads: 1\n",
        suite.display()
    );
    trainer::prepare(&Recipe::parse(&text, Path::new("r.yml")).unwrap()).unwrap()
}

fn suite(dir: &Path) -> std::path::PathBuf {
    let s = dir.join("suite");
    generate(&SynthConfig::new(3, Scale::Tiny), &s, false, false).unwrap();
    write_suite_tokenizer(&s, &s.join("tokenizer.json"), 512, 1).unwrap();
    s
}

fn run(p: &Prepared) -> Collected {
    let cfg = StatisticsConfig {
        batches: BATCHES,
        fisher_batches: 2,
        fisher_labels: FisherLabels::Data,
    };
    collect(p, &cfg, &|| {}).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

/// Counts the rows each linear input report carries.
struct Rows(std::sync::Arc<Mutex<Vec<(String, i64)>>>);

impl Probe for Rows {
    fn linear_input(&mut self, weight: &str, x: &Tensor) {
        self.0.lock().unwrap().push((weight.into(), x.size()[0]));
    }
    fn unit_features(&mut self, _: &str, _: UnitKind, _: &[(Expert, Tensor)]) {}
}

#[test]
fn the_probe_changes_no_output_and_sees_only_real_tokens() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let p = prepared(&suite(tmp.path()), "{itc: 1}");
    let enc = &p.net.encoder;
    let cfg = enc.config().clone();
    tch::manual_seed(5);
    let pixels = Tensor::randn(
        [2, cfg.num_channels, cfg.image_size, cfg.image_size],
        (Kind::Float, tch::Device::Cpu),
    );
    let ids = Tensor::from_slice2(&[[2i64, 7, 9, 3], [2, 5, 0, 0]]);
    let mask = Tensor::from_slice2(&[[1i64, 1, 1, 1], [1, 1, 0, 0]]);
    let text = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    let _ng = tch::no_grad_guard();
    let plain = (
        enc.encode_image(&pixels, false).unwrap(),
        enc.encode_text(&text, false).unwrap(),
        enc.encode_image_text(&pixels, &text, 1, false).unwrap().0,
    );
    let seen = std::sync::Arc::new(Mutex::new(vec![]));
    enc.set_probe(Some(Box::new(Rows(seen.clone()))));
    let probed = (
        enc.encode_image(&pixels, false).unwrap(),
        enc.encode_text(&text, false).unwrap(),
        enc.encode_image_text(&pixels, &text, 1, false).unwrap().0,
    );
    assert!(enc.set_probe(None).is_some());
    assert!(plain.0.equal(&probed.0) && plain.1.equal(&probed.1) && plain.2.equal(&probed.2));
    let seen = seen.lock().unwrap();
    let rows = |key: &str| -> Vec<i64> {
        seen.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .collect()
    };
    // The tiny preset: 2 layers, the top one VL; 16 patches + the class token per image.
    let image = 2 * (1 + cfg.num_patches());
    // Layer 0: vision on the image-only and the fused pass's image tokens; text on the 6 real
    // text tokens (not the 2 padded ones) of the text-only and the fused pass.
    assert_eq!(
        rows("encoder.layers.0.attn.vision.q.weight"),
        [image, image]
    );
    assert_eq!(rows("encoder.layers.0.ffn.text.fc2.weight"), [6, 6]);
    // Layer 1 (VL): vision and text on their own passes, the VL expert on the fused sequence.
    assert_eq!(rows("encoder.layers.1.attn.vision.out.weight"), [image]);
    assert_eq!(rows("encoder.layers.1.attn.text.k.weight"), [6]);
    assert_eq!(rows("encoder.layers.1.ffn.vl.fc1.weight"), [image + 6]);
}

#[test]
fn collected_statistics_are_consistent_and_deterministic() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let s = suite(tmp.path());
    let p = prepared(&s, "{itc: 1, itm: 1, mlm: 1}");
    let c = run(&p);
    let cfg = p.net.config().clone();
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size());
    // Every linear weight of every expert that ran: 2 layers, 6 linears, 2 + 3 experts.
    assert_eq!(c.gram.len(), 6 * (2 + 3));
    let image_rows = (BATCHES * BATCH) as f64 * (1 + cfg.num_patches()) as f64;
    assert_eq!(
        c.rows["encoder.layers.0.attn.vision.q.weight"],
        2.0 * image_rows
    );
    assert_eq!(c.rows["encoder.layers.1.ffn.vision.fc1.weight"], image_rows);
    for (key, g) in &c.gram {
        let n = if key.ends_with("fc2.weight") { f } else { d };
        assert_eq!(g.size(), [n, n], "{key}");
        let v = values(g);
        for i in 0..n as usize {
            assert!(v[i * n as usize + i] >= 0.0, "{key}: diagonal");
            for j in 0..i {
                let (a, b) = (v[i * n as usize + j], v[j * n as usize + i]);
                assert!(
                    (a - b).abs() <= 1e-6 * a.abs().max(1e-3),
                    "{key}: symmetric"
                );
            }
        }
    }
    // Units: per layer QK, VO and MLP of every stored expert on the same tokens.
    let mlp = &c.units[&("encoder.layers.1.ffn".to_string(), UnitKind::Mlp)];
    assert_eq!(mlp.experts, [Expert::Vision, Expert::Text, Expert::Vl]);
    assert_eq!(mlp.width(), f as usize);
    assert_eq!(mlp.moments.outer.size(), [3 * f, 3 * f]);
    let qk = &c.units[&("encoder.layers.0.attn".to_string(), UnitKind::Qk)];
    assert_eq!(qk.experts, [Expert::Vision, Expert::Text]);
    // Layer 0's units see the image tokens twice and the real text tokens twice.
    assert!(qk.moments.count > 2.0 * image_rows, "{}", qk.moments.count);
    assert_eq!(c.units.len(), 2 * 3);
    // The Fisher: every parameter, non-negative, some of it positive.
    assert_eq!(c.fisher.len(), p.net.named_parameters().len());
    let total: f64 = c
        .fisher
        .values()
        .map(|t| values(t).iter().sum::<f64>())
        .sum();
    assert!(
        c.fisher
            .values()
            .all(|t| values(t).iter().all(|x| *x >= 0.0))
    );
    assert!(total > 0.0);
    // Same recipe, same statistics, bit for bit.
    let again = run(&prepared(&s, "{itc: 1, itm: 1, mlm: 1}"));
    for (k, g) in &c.gram {
        assert!(g.equal(&again.gram[k]), "{k}");
    }
    for (k, t) in &c.fisher {
        assert!(t.equal(&again.fisher[k]), "{k}");
    }
}

#[test]
fn the_fisher_is_zero_where_the_loss_does_not_reach() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // ITC alone reads the image-only and text-only passes: the VL expert never runs.
    let p = prepared(&suite(tmp.path()), "{itc: 1}");
    let c = collect(
        &p,
        &StatisticsConfig {
            batches: 0,
            fisher_batches: 2,
            fisher_labels: FisherLabels::Model,
        },
        &|| {},
    )
    .unwrap();
    assert!(c.gram.is_empty() && c.units.is_empty());
    let sum = |k: &str| values(&c.fisher[k]).iter().sum::<f64>();
    assert_eq!(sum("encoder.layers.1.ffn.vl.fc1.weight"), 0.0);
    assert!(sum("encoder.layers.1.ffn.vision.fc1.weight") > 0.0);
    assert!(sum("encoder.layers.0.attn.text.q.weight") > 0.0);
}

#[test]
fn sampled_targets_follow_the_model_and_data_targets_the_data() {
    use mmerge_train::objectives::StepCache;
    let mut cache = StepCache::new(7, 3, false);
    // 4000 rows of p = (0.2, 0.3, 0.5): labels drawn from p give a mean −log p(y) of the
    // entropy H(p) = 1.0297 nats.
    let p = Tensor::from_slice(&[0.2f32, 0.3, 0.5]).log();
    let logits = p.unsqueeze(0).expand([4000, 3], false).contiguous();
    let target = Tensor::zeros([4000], (Kind::Int64, tch::Device::Cpu));
    let data = cache.cross_entropy(&logits, &target, "t").double_value(&[]);
    assert!((data - 0.2f64.ln().abs()).abs() < 1e-6, "data CE {data}");
    cache.sampled_targets = true;
    let sampled = cache.cross_entropy(&logits, &target, "t").double_value(&[]);
    let entropy = -(0.2f64 * 0.2f64.ln() + 0.3 * 0.3f64.ln() + 0.5 * 0.5f64.ln());
    assert!(
        (sampled - entropy).abs() < 0.03,
        "sampled CE {sampled} vs H = {entropy}"
    );
    // Deterministic in (seed, step, salt); another salt draws other labels.
    let again = cache.cross_entropy(&logits, &target, "t").double_value(&[]);
    assert_eq!(sampled, again);
    let other = cache.cross_entropy(&logits, &target, "u").double_value(&[]);
    assert_ne!(sampled, other);
    // A confident model samples its own answer: the loss is ~0 whatever the data says.
    let sure = Tensor::from_slice(&[-30.0f32, 30.0, -30.0])
        .unsqueeze(0)
        .expand([100, 3], false)
        .contiguous();
    let t = Tensor::zeros([100], (Kind::Int64, tch::Device::Cpu));
    assert!(cache.cross_entropy(&sure, &t, "t").double_value(&[]) < 1e-6);
    // Standard normal noise for regression targets: mean ≈ 0, variance ≈ 1.
    let z = cache.normal(&[20000], "mim", tch::Device::Cpu);
    let (m, v) = (
        z.mean(Kind::Double).double_value(&[]),
        z.var(true).double_value(&[]),
    );
    assert!(
        m.abs() < 0.03 && (v - 1.0).abs() < 0.05,
        "mean {m}, variance {v}"
    );
}
