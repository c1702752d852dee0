//! A run can start from real pretrained weights: `init: {hf: {dir, expert}}` imports a Hugging
//! Face BERT (all-MiniLM-L6-v2, fetched by `scripts/fetch-weights`) into the encoder, takes the
//! model's own `tokenizer.json`, and fine-tunes it on a suite task.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mmerge_core::Checkpoint;
use mmerge_data::synth::{Scale, SynthConfig, generate};
use mmerge_models::hf::HfConfig;
use mmerge_sink::Sink;
use mmerge_testkit::require_fetched;
use mmerge_train::recipe::Recipe;
use mmerge_train::trainer::{self, TrainOptions};

#[test]
fn minilm_weights_start_a_text_classification_run() {
    let minilm = require_fetched("all-MiniLM-L6-v2", "model.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    generate(&SynthConfig::new(1, Scale::Tiny), &suite, false, false).unwrap();
    let cfg = HfConfig::read(&minilm).unwrap().plain_config(None).unwrap();
    let cfg_path = tmp.path().join("config.json");
    std::fs::write(&cfg_path, cfg.to_json()).unwrap();
    let text = format!(
        "suite: {}\nmodel: {{config: {}, sharing: shared, init: {{hf: {{dir: {}, expert: shared}}}}}}\n\
         finetune: {{task: caption_colour}}\nsteps: 30\nbatch_size: 16\noptim: {{lr: 1.0e-4}}\n\
         checkpoint_every: 0\ntensorboard: false\nthreads: 1\n",
        suite.display(),
        cfg_path.display(),
        minilm.display()
    );
    let p = trainer::prepare(&Recipe::parse(&text, Path::new("hf.yml")).unwrap()).unwrap();
    // The encoder holds MiniLM's weights and the run tokenises with MiniLM's vocabulary.
    let hf = Checkpoint::open(&minilm).unwrap();
    let vars = p.net.vs.variables();
    let word = Vec::<f32>::try_from(vars["embeddings.word.weight"].flatten(0, -1)).unwrap();
    assert_eq!(
        word,
        hf.read_f32("embeddings.word_embeddings.weight").unwrap()
    );
    assert_eq!(p.tokenizer.vocab_size(), 30522);
    let report = trainer::train(
        p,
        &tmp.path().join("run"),
        &Sink::hidden(),
        TrainOptions::default(),
    )
    .unwrap();
    let acc = report.scores["test"]["accuracy"];
    eprintln!("MiniLM, 30 steps on caption_colour: test accuracy {acc}");
    // Six colours, chance 1/6: the pretrained encoder learns the task in a few steps.
    assert!(acc > 0.5, "accuracy {acc}");
}
