//! Is data loading the bottleneck? The Rust half of `scripts/bench-data`.
//!
//! `cargo run --release -p mmerge-torch --example bench_data -- SUITE [--batch 64] [--steps 30]
//! [--threads 2]` reads the image-caption pairs of SUITE's retrieval task (train split), and
//! measures, in one run:
//! 1. the pipeline alone: PNG decode, random resized crop to 32×32, normalisation,
//!    tokenisation (trained WordPiece, fixed length 16) and BERT masking of 15 % of the
//!    tokens on the loader's rayon threads, plus the collation into tensors on the consumer
//!    thread: images/s;
//! 2. the vision-language training step of the `small` preset (all-specific multiway model;
//!    image-text contrastive loss on the unimodal encodings plus masked language modelling on
//!    the fused encoding, as VLMo trains its VL experts; fused AdamW) on batches prepared
//!    beforehand: step time;
//! 3. training fed by the loader (prefetch 2): the time the loop waits for data (and
//!    collates it) as a share of the whole step.
//!
//! Prints one JSON line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mmerge_data::batch::{Batch, Loader, LoaderConfig};
use mmerge_data::image::ImageRef;
use mmerge_data::suite::{Examples, Split, Suite, TaskKind};
use mmerge_data::tokenize::{Padding, Tokenizer};
use mmerge_data::transform::{Augment, ImageTransform, Normalize};
use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_models::heads::{ItcHead, MlmHead};
use mmerge_models::optim::{AdamW, AdamWConfig};
use mmerge_models::{MultiwayTransformer, TextBatch};
use rand::Rng;
use tch::{Device, Kind, Tensor, nn};

/// Pixels, token ids, attention mask, masked ids, MLM labels (−100 where not masked).
type Example = (Vec<f32>, Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>);

/// The first id that is not a special token ([PAD] [UNK] [CLS] [SEP] [MASK]).
const FIRST_WORD: i64 = 5;
const MASK_ID: i64 = 4;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pairs(suite: &std::path::Path) -> anyhow::Result<Vec<(ImageRef, String)>> {
    let suite = Suite::open(suite)?;
    let task = suite
        .tasks()
        .find(|t| t.kind() == TaskKind::Retrieval)
        .context("the suite has no retrieval task")?;
    let Examples::Retrieval(split) = task.split(Split::Train)? else {
        bail!("{}: not a retrieval split", task.name());
    };
    // The first caption of every image.
    let mut seen = vec![false; split.images.len()];
    let mut out = vec![];
    for (caption, &i) in split.captions.iter().zip(&split.caption_image) {
        if !std::mem::replace(&mut seen[i], true) {
            out.push((split.images[i].clone(), caption.clone()));
        }
    }
    if out.is_empty() {
        bail!("{}: no training pairs", task.root().display());
    }
    Ok(out)
}

struct Tensors {
    px: Tensor,
    ids: Tensor,
    mask: Tensor,
    masked: Tensor,
    labels: Tensor,
}

fn collate(b: &Batch<Example>, size: i64, len: i64) -> Tensors {
    let n = b.examples.len() as i64;
    let cat = |f: fn(&Example) -> &Vec<i64>| -> Tensor {
        let v: Vec<i64> = b
            .examples
            .iter()
            .flat_map(|e| f(e).iter().copied())
            .collect();
        Tensor::from_slice(&v).view([n, len])
    };
    let px: Vec<f32> = b
        .examples
        .iter()
        .flat_map(|e| e.0.iter().copied())
        .collect();
    Tensors {
        px: Tensor::from_slice(&px).view([n, 3, size, size]),
        ids: cat(|e| &e.1),
        mask: cat(|e| &e.2),
        masked: cat(|e| &e.3),
        labels: cat(|e| &e.4),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let suite = PathBuf::from(
        args.first()
            .context("usage: bench_data SUITE [--batch 64]")?,
    );
    let batch: usize = arg(&args, "--batch", 64);
    let steps: usize = arg(&args, "--steps", 30);
    let threads: usize = arg(&args, "--threads", 2);
    tch::set_num_threads(threads as i32);
    tch::set_num_interop_threads(1);
    tch::manual_seed(0);

    let cfg = MultiwayConfig::preset("small", Sharing::AllSpecific).context("preset")?;
    let (size, len) = (cfg.image_size, cfg.max_position_embeddings);
    let items = pairs(&suite)?;
    let tok = Arc::new(Tokenizer::train_wordpiece(
        items.iter().map(|p| p.1.as_str()),
        cfg.vocab_size as usize,
        1,
    )?);
    let transform = ImageTransform {
        size: size as u32,
        normalize: Normalize::HALF,
        augment: Some(Augment::default()),
    };
    let load_tok = Arc::clone(&tok);
    let load = Arc::new(
        move |(img, text): &(ImageRef, String), rng: &mut rand_chacha::ChaCha8Rng| {
            let px = transform.apply(&img.load_rgb()?, rng)?;
            let t = load_tok.encode_batch(&[text], len as usize, Padding::Fixed(len as usize))?;
            let (mut masked, mut labels) = (t.ids.clone(), vec![-100i64; t.ids.len()]);
            for (j, &id) in t.ids.iter().enumerate() {
                if id >= FIRST_WORD && rng.random_bool(0.15) {
                    labels[j] = id;
                    masked[j] = MASK_ID;
                }
            }
            Ok((px, t.ids, t.mask, masked, labels))
        },
    );
    let n_items = items.len();
    let loader = Loader::new(
        items,
        load,
        LoaderConfig {
            batch_size: batch,
            seed: 0,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
        },
        Some(threads),
    )?;
    let per_epoch = loader.batches_per_epoch();
    if per_epoch == 0 {
        bail!("{n_items} pairs make no batch of {batch}");
    }

    // 1. The pipeline alone.
    let want = steps.min(per_epoch * 4);
    let t0 = Instant::now();
    let mut seen = 0usize;
    let mut prepared = vec![];
    'outer: for epoch in 0.. {
        for b in loader.epoch(epoch) {
            let b = b?;
            seen += b.examples.len();
            prepared.push(collate(&b, size, len));
            if prepared.len() == want {
                break 'outer;
            }
        }
    }
    let pipeline_s = t0.elapsed().as_secs_f64();
    let images_per_s = seen as f64 / pipeline_s;

    // 2. Training on prepared batches.
    let vs = nn::VarStore::new(Device::Cpu);
    let model = MultiwayTransformer::new(&vs.root(), &cfg)?;
    let itc = ItcHead::new(&(vs.root() / "heads" / "itc"), &cfg, 64);
    let mlm = MlmHead::new(&(vs.root() / "heads" / "mlm"), &cfg);
    let mut opt = AdamW::new(vs.trainable_variables(), AdamWConfig::with_lr(1e-4))?;
    let mut step = |t: &Tensors| -> anyhow::Result<f64> {
        let image_cls = model.encode_image(&t.px, true)?.select(1, 0);
        let text = TextBatch {
            ids: &t.ids,
            mask: &t.mask,
        };
        let text_cls = model.encode_text(&text, true)?.select(1, 0);
        let masked = TextBatch {
            ids: &t.masked,
            mask: &t.mask,
        };
        let (fused, _) = model.encode_image_text(&t.px, &masked, 1, true)?;
        let text_h = fused.narrow(1, 0, len);
        let loss = itc.loss(&text_cls, &image_cls) + mlm.loss(&text_h, &t.labels);
        opt.backward_step(&loss)?;
        Ok(loss.double_value(&[]))
    };
    for t in prepared.iter().take(5) {
        step(t)?; // warm-up: the first steps allocate
    }
    let t0 = Instant::now();
    for t in &prepared {
        step(t)?;
    }
    let step_s = t0.elapsed().as_secs_f64() / prepared.len() as f64;

    // 3. Training fed by the loader.
    let mut wait = Duration::ZERO;
    let t0 = Instant::now();
    let mut done = 0;
    let mut loss = 0.0;
    'train: for epoch in 100.. {
        let mut batches = loader.epoch(epoch);
        loop {
            let w = Instant::now();
            let Some(b) = batches.next() else { break };
            let t = collate(&b?, size, len);
            wait += w.elapsed();
            loss = step(&t)?;
            done += 1;
            if done == prepared.len() {
                break 'train;
            }
        }
    }
    let fed_s = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "pairs": n_items, "batch": batch, "threads": threads, "image_size": size, "text_len": len,
            "pipeline_images_per_s": (images_per_s * 10.0).round() / 10.0,
            "pipeline_ms_per_batch": (pipeline_s / prepared.len() as f64 * 1e4).round() / 10.0,
            "step_ms_prepared": (step_s * 1e4).round() / 10.0,
            "train_samples_per_s_prepared": (batch as f64 / step_s * 10.0).round() / 10.0,
            "step_ms_fed": (fed_s / done as f64 * 1e4).round() / 10.0,
            "data_wait_ms_per_step": (wait.as_secs_f64() / done as f64 * 1e4).round() / 10.0,
            "data_share_of_step": ((wait.as_secs_f64() / fed_s) * 1e4).round() / 1e4,
            "loss_last": (loss * 1e4).round() / 1e4,
            "kind": format!("{:?}", Kind::Float),
        })
    );
    Ok(())
}
