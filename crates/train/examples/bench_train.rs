//! Training-step throughput of our trainer: the Rust half of `scripts/bench-train`.
//!
//! ```text
//! cargo run --release -p mmerge-train --example bench_train -- THREADS --step pretrain|vqa
//!     [--batch 64] [--steps 20] [--warmup 3] [--answers 40] [--suite DIR] [--no-loader]
//!     [--profile]
//! ```
//!
//! Runs the real step of `mmerge train` ([`trainer::train_step`]: `work_loss` →
//! `Tensor::f_run_backward` → `AdamW::step_clipped`) on the network, objectives and task that
//! [`trainer::prepare`] builds from a [`Recipe`] of the `small` preset with `sharing:
//! all_specific`: `pretrain` is ITC + ITM + MLM on image-caption pairs, `vqa` fine-tunes the
//! VQA head (K = `--answers` answers). AdamW: lr 1e-3 (constant), betas (0.9, 0.98), eps 1e-8,
//! weight decay 0.01 (the standard groups), clipping 1.0 — as `scripts/bench/train_step_torch.py`.
//!
//! The recipe's suite is the synthetic `small` suite in `--suite DIR` (generated there when
//! missing; default `$TMPDIR/mmerge-bench-train-suite`). Its VQA answer vocabulary has 18
//! answers; so that the head has the torch script's K = 40 outputs, the bench pads the
//! suite's `answers.json` with unused answers (`unused answer k`) up to K.
//!
//! Two measurements in one run:
//! 1. *step*: `--warmup` untimed then `--steps` timed steps on one batch made beforehand as
//!    the torch script makes its batch (pixels N(0, 1); texts of 8–16 tokens, [CLS] random
//!    words [SEP] [PAD]…, padded to 16; VQA: one random answer per row with a score in
//!    {0.3, 0.6, 0.9, 1.0}), rebuilt as a `ModelBatch` every step: `samples_per_s`;
//! 2. *fed* (unless `--no-loader`): the same number of steps fed by the trainer's own loader
//!    (`data::batch::Loader` with prefetch 2, the trainer's decoder and `Collator`) over the
//!    suite's train split; `data_share` is the time the loop spends getting the next batch
//!    from the loader and collating it, over the time of the whole loop.
//!
//! `--profile` adds a third pass that times the parts of the step separately (loss forward,
//! backward, optimiser) as `profile_ms`.
//!
//! Prints one JSON line in the shape of train_step_torch.py's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mmerge_core::hash::SplitMix64;
use mmerge_data::batch::{Loader, LoaderConfig};
use mmerge_data::synth::{Scale, SynthConfig};
use mmerge_train::input::{ModelBatch, Targets, Text, decoder};
use mmerge_train::recipe::Recipe;
use mmerge_train::trainer::{self, Prepared, StepConfig, train_step, work_loss};
use tch::{Kind, Tensor};

const LR: f64 = 1e-3;
const CLIP: f64 = 1.0;
const SEED: u64 = 0;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} needs a value")),
    }
}

/// The synthetic `small` suite in `dir`, with a VQA answer vocabulary of `answers` entries.
fn suite(dir: &Path, answers: usize) -> anyhow::Result<()> {
    if !dir.join("suite.json").is_file() {
        mmerge_data::synth::generate(&SynthConfig::new(0, Scale::Small), dir, false, false)?;
    }
    let path = dir.join("vqa").join("answers.json");
    let mut vocab: Vec<String> = serde_json::from_slice(&std::fs::read(&path)?)?;
    if vocab.len() > answers {
        bail!(
            "{}: {} answers, more than --answers {answers}",
            path.display(),
            vocab.len()
        );
    }
    if vocab.len() < answers {
        let mut k = 0;
        while vocab.len() < answers {
            k += 1;
            vocab.push(format!("unused answer {k}"));
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&vocab)?)?;
    }
    Ok(())
}

fn recipe(suite: &Path, step: &str, batch: usize, threads: usize) -> anyhow::Result<Recipe> {
    let work = match step {
        "pretrain" => "pretrain: {objectives: {itc: 1, itm: 1, mlm: 1}}",
        "vqa" => "finetune: {task: vqa}",
        _ => bail!("--step is pretrain or vqa, not {step}"),
    };
    let yaml = format!(
        "suite: {suite}\nseed: {SEED}\nmodel: {{preset: small, sharing: all_specific}}\n{work}\n\
         steps: 1000\nbatch_size: {batch}\n\
         optim: {{lr: {LR:e}, warmup: 0, decay: constant, weight_decay: 0.01, betas: [0.9, 0.98], eps: 1.0e-8, clip: {CLIP:e}}}\n\
         threads: {threads}\ntensorboard: false\n",
        suite = serde_json::to_string(&suite.display().to_string())?,
    );
    Ok(Recipe::parse(&yaml, Path::new("bench_train.yml"))?)
}

/// The torch script's batch (see the module docs), as tensors kept for every step.
struct Fixed {
    px: Tensor,
    ids: Tensor,
    mask: Tensor,
    texts: Vec<String>,
    soft: Option<Tensor>,
}

impl Fixed {
    fn new(b: usize, len: usize, size: i64, vocab: i64, answers: Option<usize>) -> Self {
        tch::manual_seed(1);
        let px = Tensor::randn([b as i64, 3, size, size], (Kind::Float, tch::Device::Cpu));
        let mut rng = SplitMix64::new(1);
        let mut below = |n: u64| rng.next_u64() % n;
        let (mut ids, mut mask) = (vec![0i64; b * len], vec![0i64; b * len]);
        let mut texts = vec![];
        for r in 0..b {
            let l = 8 + below(len as u64 - 7) as usize;
            let row = &mut ids[r * len..(r + 1) * len];
            row[0] = 2;
            for t in row.iter_mut().take(l - 1).skip(1) {
                *t = 5 + below(vocab as u64 - 5) as i64;
            }
            row[l - 1] = 3;
            mask[r * len..r * len + l].fill(1);
            texts.push(format!("{:?}", &row[..l]));
        }
        let soft = answers.map(|k| {
            let mut v = vec![0f32; b * k];
            for r in 0..b {
                let a = below(k as u64) as usize;
                v[r * k + a] = [0.3, 0.6, 0.9, 1.0][below(4) as usize];
            }
            Tensor::from_slice(&v).view([b as i64, k as i64])
        });
        let shape = [b as i64, len as i64];
        Fixed {
            px,
            ids: Tensor::from_slice(&ids).view(shape),
            mask: Tensor::from_slice(&mask).view(shape),
            texts,
            soft,
        }
    }

    fn batch(&self) -> ModelBatch {
        let b = self.texts.len();
        ModelBatch {
            images: vec![self.px.shallow_clone()],
            text: Some(Text {
                ids: self.ids.shallow_clone(),
                mask: self.mask.shallow_clone(),
            }),
            texts: self.texts.clone(),
            targets: match &self.soft {
                Some(t) => Targets::Soft(t.shallow_clone()),
                None => Targets::None,
            },
            groups: (0..b).collect(),
            indices: (0..b).collect(),
        }
    }
}

fn ms(d: Duration, n: usize) -> f64 {
    (d.as_secs_f64() / n as f64 * 1e5).round() / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .context("usage: bench_train THREADS --step pretrain|vqa [--batch 64] [--steps 20]")?;
    let step_kind: String = arg(&args, "--step", String::new())?;
    let batch: usize = arg(&args, "--batch", 64)?;
    let steps: usize = arg(&args, "--steps", 20)?;
    let warmup: usize = arg(&args, "--warmup", 3)?;
    let answers: usize = arg(&args, "--answers", 40)?;
    let suite_dir: PathBuf = arg(
        &args,
        "--suite",
        std::env::temp_dir().join("mmerge-bench-train-suite"),
    )?;
    let loader_too = !args.iter().any(|a| a == "--no-loader");
    let profile = args.iter().any(|a| a == "--profile");
    if steps < 1 || batch < 2 {
        bail!("need --steps >= 1 and --batch >= 2");
    }
    tch::set_num_interop_threads(1);
    suite(&suite_dir, answers)?;
    let recipe = recipe(&suite_dir, &step_kind, batch, threads)?;
    let mut p: Prepared = trainer::prepare(&recipe)?;
    let params: Vec<Tensor> = p
        .optimizer
        .params()
        .iter()
        .map(Tensor::shallow_clone)
        .collect();
    let n_params: i64 = params.iter().map(Tensor::numel).map(|n| n as i64).sum();
    let cfg = p.net.config().clone();
    let vqa = step_kind == "vqa";
    let fixed = Fixed::new(
        batch,
        cfg.max_position_embeddings as usize,
        cfg.image_size,
        cfg.vocab_size,
        vqa.then_some(answers),
    );
    let step_cfg = |step: usize| StepConfig {
        seed: SEED,
        step: step as u64,
        lr: LR,
        clip: CLIP,
        accum: 1,
    };

    // 1. Steps on the fixed batch.
    let mut loss_first = None;
    let mut loss_last = f64::NAN;
    let mut t0 = Instant::now();
    for i in 0..warmup + steps {
        if i == warmup {
            t0 = Instant::now();
        }
        let out = train_step(
            &p.work,
            &p.net,
            &mut p.optimizer,
            &params,
            step_cfg(i),
            || Ok(fixed.batch()),
        )?;
        loss_first.get_or_insert(out.loss);
        loss_last = out.loss;
    }
    let elapsed = t0.elapsed();

    let mut out = serde_json::json!({
        "impl": "mmerge", "step": step_kind, "optim": "adamw_fused_ours", "threads": threads,
        "batch": batch, "steps": steps,
        "samples_per_s": ((batch * steps) as f64 / elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "ms_per_step": ms(elapsed, steps),
        "params": n_params,
        "loss_first": (loss_first.unwrap_or(f64::NAN) * 1e4).round() / 1e4,
        "loss_last": (loss_last * 1e4).round() / 1e4,
    });
    if vqa {
        out["answers"] = answers.into();
    }

    // 2. Steps fed by the trainer's loader and collator.
    if loader_too {
        let (transform, collator) = trainer::data_setup(&p, recipe.augment);
        let loader = Loader::new(
            std::mem::take(&mut p.train_items),
            decoder(transform),
            LoaderConfig {
                batch_size: batch,
                seed: SEED,
                shuffle: true,
                drop_last: true,
                prefetch: 2,
            },
            Some(threads),
        )?;
        if loader.batches_per_epoch() == 0 {
            bail!("{} training items make no batch of {batch}", loader.len());
        }
        let mut epoch = 0;
        let mut batches = loader.epoch(epoch);
        let mut wait = Duration::ZERO;
        let mut t0 = Instant::now();
        let first = warmup + steps;
        for i in first..first + warmup + steps {
            if i == first + warmup {
                t0 = Instant::now();
                wait = Duration::ZERO;
            }
            train_step(
                &p.work,
                &p.net,
                &mut p.optimizer,
                &params,
                step_cfg(i),
                || {
                    let w = Instant::now();
                    let b = loop {
                        match batches.next() {
                            Some(b) => break b?,
                            None => {
                                epoch += 1;
                                batches = loader.epoch(epoch);
                            }
                        }
                    };
                    let b = collator.collate(b);
                    wait += w.elapsed();
                    b
                },
            )?;
        }
        let fed = t0.elapsed();
        out["fed_ms_per_step"] = ms(fed, steps).into();
        let fed_rate = (batch * steps) as f64 / fed.as_secs_f64();
        out["fed_samples_per_s"] = ((fed_rate * 1000.0).round() / 1000.0).into();
        out["data_ms_per_step"] = ms(wait, steps).into();
        out["data_share"] = ((wait.as_secs_f64() / fed.as_secs_f64() * 1e4).round() / 1e4).into();
    }

    // 3. The parts of the step, timed separately.
    if profile {
        let (mut fwd, mut bwd, mut opt) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let base = 2 * (warmup + steps);
        for i in 0..steps {
            let step = (base + i) as u64;
            let b = fixed.batch();
            let t = Instant::now();
            let (loss, _) = work_loss(&p.work, &p.net, &b, SEED, step, true)?;
            let _ = loss.double_value(&[]);
            let t1 = Instant::now();
            let grads = Tensor::f_run_backward(&[loss], &params, false, false)?;
            let t2 = Instant::now();
            p.optimizer.step_clipped(&grads, CLIP)?;
            let t3 = Instant::now();
            fwd += t1 - t;
            bwd += t2 - t1;
            opt += t3 - t2;
        }
        out["profile_ms"] = serde_json::json!({
            "forward": ms(fwd, steps), "backward": ms(bwd, steps), "optimizer": ms(opt, steps),
        });
    }
    println!("{out}");
    Ok(())
}
