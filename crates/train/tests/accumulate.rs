//! Optimisation settings that must not change what is learned: gradient accumulation gives the
//! update of the whole batch (up to float rounding), also when parameters get no gradient, and layer-wise rate decay scales each
//! parameter's rate by the stated power of the decay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mmerge_core::Checkpoint;
use mmerge_data::check::write_suite_tokenizer;
use mmerge_data::synth::{Scale, SynthConfig, generate};
use mmerge_sink::Sink;
use mmerge_train::recipe::Recipe;
use mmerge_train::trainer::{self, TrainOptions, layer_scale};

/// Trains and returns the final model and the head's output weights before training.
fn train(suite: &Path, run: &Path, accum: usize) -> (Checkpoint, Vec<f32>) {
    let text = format!(
        "suite: {}\nmodel: {{preset: tiny, sharing: all_specific}}\nfinetune: {{task: caption_colour}}\n\
         steps: 3\nbatch_size: 16\ngrad_accum: {accum}\noptim: {{lr: 1.0, eps: 1.0, warmup: 0, clip: 0}}\n\
         eval: {{test: false}}\ncheckpoint_every: 0\ntensorboard: false\nthreads: 1\n",
        suite.display()
    );
    let p = trainer::prepare(&Recipe::parse(&text, Path::new("r.yml")).unwrap()).unwrap();
    let before = Vec::<f32>::try_from(
        p.net.vs.variables()[HEAD]
            .flatten(0, -1)
            .to_kind(tch::Kind::Float),
    )
    .unwrap();
    trainer::train(p, run, &Sink::hidden(), TrainOptions::default()).unwrap();
    (Checkpoint::open(run.join("model")).unwrap(), before)
}

const HEAD: &str = "heads.text_cls.out.weight";

#[test]
fn two_micro_batches_update_as_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    generate(&SynthConfig::new(5, Scale::Tiny), &suite, false, false).unwrap();
    write_suite_tokenizer(&suite, &suite.join("tokenizer.json"), 512, 1).unwrap();
    let (whole, before) = train(&suite, &tmp.path().join("a"), 1);
    let (split, _) = train(&suite, &tmp.path().join("b"), 2);
    let (four, _) = train(&suite, &tmp.path().join("c"), 4);
    assert_ne!(
        whole.read_f32(HEAD).unwrap(),
        before,
        "training moved the head"
    );
    let mut worst = (0f32, String::new());
    for name in whole.names() {
        let a = whole.read_f32(name).unwrap();
        for other in [&split, &four] {
            let b = other.read_f32(name).unwrap();
            for (x, y) in a.iter().zip(&b) {
                let d = (x - y).abs();
                if d > worst.0 {
                    worst = (d, name.clone());
                }
            }
        }
    }
    // Mean of the micro-batch means = mean over the batch: the same update up to rounding.
    // With eps = 1 AdamW's step is lr · m̂ / (√v̂ + 1), close to linear in the gradients, so
    // rounding differences stay rounding-sized (with a small eps, Adam turns a near-zero
    // gradient's rounding noise into a full step and the comparison says nothing).
    assert!(
        worst.0 < 1e-5,
        "largest difference {} in {}",
        worst.0,
        worst.1
    );
}

#[test]
fn layer_wise_decay_scales_by_depth() {
    let d: f64 = 0.5;
    assert_eq!(layer_scale("embeddings.word.weight", 4, d), d.powi(5));
    assert_eq!(
        layer_scale("encoder.layers.0.attn.text.q.weight", 4, d),
        d.powi(4)
    );
    assert_eq!(layer_scale("encoder.layers.3.ffn.vl.fc1.bias", 4, d), d);
    assert_eq!(layer_scale("encoder.norm.weight", 4, d), 1.0);
    assert_eq!(layer_scale("heads.vqa.out.weight", 4, d), 1.0);
}
