//! The training loop and evaluation of a checkpoint.
//!
//! [`prepare`] resolves a recipe against its suite and the registries and builds the network,
//! its heads and the optimiser, so that every error of input (an unknown task, objective,
//! preset or field, a missing split, a checkpoint whose keys do not fit) comes before any
//! training. [`train`] then runs `steps` updates of `batch_size` examples (in `grad_accum`
//! micro-batches whose gradients are summed), each at the schedule's rate (linear warm-up,
//! then cosine / linear / constant), clipped to the global norm `clip`; logs the loss, rate
//! and gradient norm every `log_every` steps, evaluates every `eval.every` steps, writes a
//! resumable state every `checkpoint_every` steps, and at the end writes the model
//! (`model/`: weights, `config.json`, `tokenizer.json`) and scores it on the evaluation split
//! and the test split.
//!
//! Run folder: `recipe.yml` (the resolved recipe), `model/`, `state-<step>/` (while running),
//! `log.txt`, `metrics.json`, `tb/` (the sink's files).
//!
//! Determinism: same recipe, same seed, same numbers on CPU, whatever the thread count of the
//! data loader (the loader's batches are functions of (seed, epoch)); libtorch's own RNG is
//! reseeded from (seed, step) before every step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mmerge_core::hash::{fnv1a, splitmix64};
use mmerge_data::batch::{Loader, LoaderConfig};
use mmerge_data::check::train_texts;
use mmerge_data::formats::ReadOptions;
use mmerge_data::suite::{Examples, Split, Suite, TaskKind};
use mmerge_data::tokenize::Tokenizer;
use mmerge_data::transform::{Augment, ImageTransform, Normalize};
use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_models::optim::{AdamW, AdamWConfig, Group};
use mmerge_models::schedule::{Schedule, ScheduleConfig};
use mmerge_sink::Sink;
use tch::{Device, Tensor};

use crate::error::{Result, TrainError};
use crate::eval::EvalData;
use crate::input::{Collator, Item, ModelBatch, decoder};
use crate::net::{Init, Net};
use crate::objectives::{Objective, StepCache, objective_def};
use crate::recipe::Recipe;
use crate::state::{self, Meta};
use crate::tasks::{Evaluated, Scores, Task, TaskData, task_def};
use crate::zeroshot;

/// What the run trains on.
#[derive(Debug)]
pub enum Work {
    /// Pre-training objectives with their weights on the pairs of a retrieval task.
    Pretrain {
        task: String,
        objectives: Vec<(&'static str, f64, Box<dyn Objective>)>,
        mask_prob: f64,
        mim_ratio: f64,
    },
    /// Fine-tuning on one suite task.
    Finetune { task: String, head: Box<dyn Task> },
}

/// A recipe resolved and built, ready to train.
#[derive(Debug)]
pub struct Prepared {
    pub recipe: Recipe,
    pub recipe_hash: u64,
    pub net: Net,
    pub work: Work,
    pub tokenizer: Tokenizer,
    pub train_items: Vec<Item>,
    /// (split name, examples) scored during and after training.
    pub eval: Vec<(String, Examples)>,
    pub optimizer: AdamW,
    pub schedule: Schedule,
    /// Head variables that did not come from the init checkpoint.
    pub fresh_heads: Vec<String>,
}

/// Resolves `recipe` (see the module docs).
pub fn prepare(recipe: &Recipe) -> Result<Prepared> {
    let suite = Suite::open(&recipe.suite)?;
    let config = model_config(recipe)?;
    let device = parse_device(&recipe.device)?;
    if recipe.bf16 {
        // tch 0.26 exposes autocast only with libtorch's default CUDA dtype (float16) and no
        // way to ask for bfloat16; refusing beats silently training in another precision.
        return Err(TrainError::Invalid(format!(
            "bf16: autocast to bfloat16 is not available yet (tch 0.26 cannot set autocast's \
             dtype); remove `bf16: true` to train in float32{}",
            if device.is_cuda() {
                ""
            } else {
                " (and it is for CUDA devices only)"
            }
        )));
    }
    if recipe.threads > 0 {
        tch::set_num_threads(recipe.threads as i32);
    }
    // The task (or pairs) and its splits first: a missing split fails before anything is built.
    let (task_name, kind) = match (&recipe.pretrain, &recipe.finetune) {
        (Some(p), _) => {
            let name = match &p.task {
                Some(t) => t.clone(),
                None => suite
                    .tasks()
                    .find(|t| t.kind() == TaskKind::Retrieval)
                    .map(|t| t.name().to_string())
                    .ok_or_else(|| {
                        TrainError::Invalid(format!(
                            "{}: pre-training reads image-caption pairs, and the suite has no retrieval task",
                            recipe.suite.display()
                        ))
                    })?,
            };
            (name, TaskKind::Retrieval)
        }
        (None, Some(f)) => {
            let t = suite.task(&f.task)?;
            (f.task.clone(), t.kind())
        }
        (None, None) => return Err(TrainError::Invalid("neither pretrain nor finetune".into())),
    };
    let task = suite.task(&task_name)?;
    if task.kind() != kind {
        return Err(TrainError::Invalid(format!(
            "task `{task_name}` is {}, pre-training needs a retrieval task (image-caption pairs)",
            task.kind().name()
        )));
    }
    let def = task_def(kind)?;
    // A split the manifest does not list is named with the ones it does.
    let split = |name: &str| -> Result<Examples> {
        if !task.splits().any(|s| s == name) {
            return Err(TrainError::Unknown {
                what: "split",
                name: name.to_string(),
                valid: format!(
                    "{} (task `{task_name}` in {})",
                    task.splits().collect::<Vec<_>>().join(", "),
                    recipe.suite.join("suite.json").display()
                ),
            });
        }
        // VQA: a question whose most common answer is outside the vocabulary stays (targets
        // from its in-vocabulary answers; scored against all its human answers), as training
        // on and officially scoring VQA v2 need.
        let opts = ReadOptions {
            keep_unknown_answers: true,
            ..ReadOptions::STRICT
        };
        Ok(task.split_with(name, opts)?.examples)
    };
    let train = split(match (&recipe.pretrain, &recipe.finetune) {
        (Some(p), _) => &p.train_split,
        (None, Some(f)) => &f.train_split,
        (None, None) => Split::Train.name(),
    })?;
    let e = &recipe.eval;
    let mut eval = vec![(e.split.clone(), split(&e.split)?)];
    if e.test && e.split != e.test_split {
        eval.push((e.test_split.clone(), split(&e.test_split)?));
    }
    let tokenizer = tokenizer(recipe, &config)?;
    let mut net = Net::new(&config, recipe.seed, device)?;
    let (work, train_items) = match &recipe.pretrain {
        Some(p) => {
            let mut objectives = vec![];
            for (name, &w) in &p.objectives {
                let d = objective_def(name)?;
                objectives.push((d.name, w, (d.build)(&mut net)?));
            }
            let Examples::Retrieval(split) = &train else {
                return Err(TrainError::Invalid(format!(
                    "task `{task_name}`: pre-training pairs come from a retrieval split"
                )));
            };
            let pairs = crate::tasks::retrieval::pair_items(split);
            (
                Work::Pretrain {
                    task: task_name,
                    objectives,
                    mask_prob: p.mask_prob,
                    mim_ratio: p.mim_ratio,
                },
                pairs,
            )
        }
        None => {
            let head = (def.build)(
                &mut net,
                &TaskData {
                    name: &task_name,
                    train: &train,
                },
            )?;
            let items = head.items(&train)?;
            (
                Work::Finetune {
                    task: task_name,
                    head,
                },
                items,
            )
        }
    };
    // After the heads exist, so that the init checkpoint's heads (a fine-tuned model's
    // classifier, a pre-trained model's ITC projections) are loaded, and those it lacks are
    // reported as fresh.
    let fresh_heads = net.init(&recipe.model.init)?;
    let optimizer = optimizer(recipe, &net)?;
    let schedule = Schedule::new(ScheduleConfig {
        peak_lr: recipe.optim.lr,
        min_lr: recipe.optim.min_lr,
        warmup_steps: recipe.warmup_steps(),
        total_steps: recipe.steps,
        decay: recipe.optim.decay.decay(),
    })?;
    let yaml = recipe.to_yaml();
    Ok(Prepared {
        recipe: recipe.clone(),
        recipe_hash: fnv1a(yaml.as_bytes()),
        net,
        work,
        tokenizer,
        train_items,
        eval,
        optimizer,
        schedule,
        fresh_heads,
    })
}

/// The encoder's config from the recipe's preset or config file.
pub fn model_config(recipe: &Recipe) -> Result<MultiwayConfig> {
    let sharing: Sharing = serde_json::from_value(serde_json::Value::String(
        recipe.model.sharing.clone(),
    ))
    .map_err(|_| TrainError::Unknown {
        what: "sharing",
        name: recipe.model.sharing.clone(),
        valid: Sharing::ALL.map(Sharing::name).join(", "),
    })?;
    match (&recipe.model.preset, &recipe.model.config) {
        (Some(p), _) => MultiwayConfig::preset(p, sharing).ok_or_else(|| TrainError::Unknown {
            what: "preset",
            name: p.clone(),
            valid: MultiwayConfig::PRESETS.join(", "),
        }),
        (None, Some(path)) => Ok(MultiwayConfig::from_file(path)?),
        (None, None) => Err(TrainError::Invalid(
            "the model has neither preset nor config".into(),
        )),
    }
}

fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| TrainError::Unknown {
                what: "device",
                name: s.to_string(),
                valid: "cpu, cuda, cuda:N, auto".into(),
            }),
    }
}

/// The tokenizer: the recipe's, else the init checkpoint's, else the suite's
/// `tokenizer.json`, else one trained on the suite's train text (deterministic, so every run
/// on the suite trains the same one).
fn tokenizer(recipe: &Recipe, config: &MultiwayConfig) -> Result<Tokenizer> {
    let from_init = match &recipe.model.init {
        Init::Checkpoint(p) | Init::Expand(p) => Some(p.join("tokenizer.json")),
        Init::Hf { dir, .. } => Some(dir.join("tokenizer.json")),
        Init::Scratch => None,
    };
    let suite_file = recipe.suite.join("tokenizer.json");
    let tok = match (&recipe.tokenizer, from_init) {
        (Some(p), _) => Tokenizer::load(p)?,
        (None, Some(p)) if p.is_file() => Tokenizer::load(&p)?,
        _ if suite_file.is_file() => Tokenizer::load(&suite_file)?,
        _ => Tokenizer::train_wordpiece(
            train_texts(&recipe.suite)?.iter(),
            config.vocab_size as usize,
            1,
        )?,
    };
    if tok.vocab_size() as i64 > config.vocab_size {
        return Err(TrainError::Invalid(format!(
            "the tokenizer has {} tokens, the model's vocabulary {}",
            tok.vocab_size(),
            config.vocab_size
        )));
    }
    Ok(tok)
}

/// AdamW over every variable, in name order: no decay on biases, norms and 1-D tensors;
/// layer-wise rate decay when the recipe asks.
fn optimizer(recipe: &Recipe, net: &Net) -> Result<AdamW> {
    let layers = net.config().num_hidden_layers as i32;
    let params = net
        .named_parameters()
        .into_iter()
        .map(|(name, t)| {
            let mut g = Group::standard(&name, &t.size(), recipe.optim.weight_decay);
            if let Some(d) = recipe.optim.layer_decay {
                g.lr_scale = layer_scale(&name, layers, d);
            }
            (name, t, g)
        })
        .collect();
    let o = &recipe.optim;
    Ok(AdamW::with_groups(
        params,
        AdamWConfig {
            lr: o.lr,
            beta1: o.betas[0],
            beta2: o.betas[1],
            eps: o.eps,
            weight_decay: o.weight_decay,
        },
    )?)
}

/// Layer-wise rate decay (ELECTRA / BEiT): encoder layer i of L gets d^(L − i), the
/// embeddings d^(L + 1), everything else (final norm, heads) 1.
pub fn layer_scale(name: &str, layers: i32, decay: f64) -> f64 {
    if name.starts_with("embeddings.") {
        return decay.powi(layers + 1);
    }
    match mmerge_core::keys::layer_ref(name) {
        Some(l) if name.starts_with("encoder.") => decay.powi(layers - l.index as i32),
        _ => 1.0,
    }
}

/// How a run starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainOptions {
    /// Replace an existing run folder.
    pub force: bool,
    /// Continue from the newest state in the run folder.
    pub resume: bool,
}

/// Writes the network as it is (encoder and heads), its `config.json` and its
/// `tokenizer.json` into the folder `dir` (atomically, replacing it): the `model/` of a run,
/// which `init: {checkpoint: DIR}` loads.
pub fn save_model(p: &Prepared, dir: &Path) -> Result<()> {
    let tok = p.tokenizer.to_json()?;
    let config = p.net.config().to_json();
    let vars: BTreeMap<String, Tensor> = p.net.vs.variables().into_iter().collect();
    mmerge_models::io::write_folder(
        dir,
        &vars,
        &[
            ("config.json", config.as_bytes()),
            ("tokenizer.json", tok.as_bytes()),
        ],
        true,
    )?;
    Ok(())
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: u64,
    pub model: PathBuf,
    /// Split name → scores of the final model.
    pub scores: BTreeMap<String, Scores>,
    pub seconds: f64,
    pub examples_per_s: f64,
}

/// Trains `p` into the run folder `run` (see the module docs).
pub fn train(mut p: Prepared, run: &Path, sink: &Sink, opts: TrainOptions) -> Result<TrainReport> {
    let model_dir = run.join("model");
    if model_dir.exists() && !opts.force {
        return Err(TrainError::FinishedRun { path: model_dir });
    }
    let r = p.recipe.clone();
    let mut start = 0;
    if opts.resume {
        if let Some(meta) = state::load_latest(run, &mut p.net, &mut p.optimizer, p.recipe_hash)? {
            start = meta.step;
            sink.info(&format!("resumed at step {start}"));
        }
    } else if !state::states(run)?.is_empty() {
        if !opts.force {
            return Err(TrainError::UnfinishedRun {
                path: run.to_path_buf(),
            });
        }
        // Starting afresh: a later --resume must not find the old run's states.
        for old in state::states(run)? {
            state::remove_state(&old)?;
        }
    }
    // What a killed run may have left half-written (temporary siblings only: states and
    // the model appear by rename, whole).
    state::remove_leftovers(run)?;
    std::fs::create_dir_all(run).map_err(|e| TrainError::io(run, e))?;
    mmerge_core::atomic::write_atomic(&run.join("recipe.yml"), p.recipe.to_yaml().as_bytes())?;
    if !p.fresh_heads.is_empty() {
        sink.info(&format!(
            "freshly initialised: {}",
            p.fresh_heads.join(", ")
        ));
    }
    let (transform, collator) = data_setup(&p, r.augment);
    let threads = (r.threads > 0).then_some(r.threads);
    let micro = r.batch_size / r.grad_accum;
    let loader = Loader::new(
        std::mem::take(&mut p.train_items),
        decoder(transform),
        LoaderConfig {
            batch_size: micro,
            seed: r.seed,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
        },
        threads,
    )?;
    let per_epoch = loader.batches_per_epoch() as u64;
    if per_epoch == 0 {
        return Err(TrainError::Invalid(format!(
            "the train split has {} examples, fewer than one micro-batch of {micro}",
            loader.len()
        )));
    }
    let eval_data = eval_data(&p);
    let accum = r.grad_accum as u64;
    let micro_index = start * accum;
    let mut epoch = micro_index / per_epoch;
    let mut batches = loader.epoch_from(epoch, (micro_index % per_epoch) as usize);
    crate::logging::recipe(sink, &r, start)?;
    crate::logging::weights(sink, &p.net, start)?;
    let bar = sink.progress("train", r.steps);
    bar.set_position(start);
    let t0 = Instant::now();
    let mut logged_inputs = false;
    let mut window = (Instant::now(), start);
    let params: Vec<Tensor> = p
        .optimizer
        .params()
        .iter()
        .map(Tensor::shallow_clone)
        .collect();
    for step in start..r.steps {
        let lr = p.schedule.lr(step);
        let StepOutput {
            loss: total,
            parts,
            grad_norm: norm,
        } = train_step(
            &p.work,
            &p.net,
            &mut p.optimizer,
            &params,
            StepConfig {
                seed: r.seed,
                step,
                lr,
                clip: r.optim.clip,
                accum,
            },
            || {
                let batch = loop {
                    match batches.next() {
                        Some(b) => break b?,
                        None => {
                            epoch += 1;
                            batches = loader.epoch(epoch);
                        }
                    }
                };
                let batch = collator.collate(batch)?;
                if !logged_inputs {
                    crate::logging::inputs(sink, &batch, step)?;
                    logged_inputs = true;
                }
                Ok(batch)
            },
        )?;
        let done = step + 1;
        bar.inc(1);
        if done % r.log_every == 0 || done == r.steps {
            let per_s = ((done - window.1) * r.batch_size as u64) as f64
                / window.0.elapsed().as_secs_f64().max(1e-9);
            window = (Instant::now(), done);
            let mut values = vec![
                ("train/loss", total),
                ("train/lr", lr),
                ("train/examples_per_s", per_s),
            ];
            if norm.is_finite() {
                values.push(("train/grad_norm", norm));
            }
            let named: Vec<(String, f64)> = parts
                .iter()
                .map(|(k, v)| (format!("train/{k}"), *v))
                .collect();
            values.extend(named.iter().map(|(k, v)| (k.as_str(), *v)));
            sink.scalars(done, &values)?;
        }
        if r.histogram_every > 0 && done % r.histogram_every == 0 && done < r.steps {
            crate::logging::weights(sink, &p.net, done)?;
        }
        if r.eval.every > 0 && done % r.eval.every == 0 && done < r.steps {
            let (split, examples) = &p.eval[0];
            let s = evaluate_work(&p.work, &p.net, &eval_data, examples, r.seed)?;
            log_scores(sink, done, split, &s)?;
        }
        if r.checkpoint_every > 0 && done % r.checkpoint_every == 0 && done < r.steps {
            state::save(
                run,
                &p.net,
                &p.optimizer,
                Meta {
                    step: done,
                    adam_step: p.optimizer.steps(),
                    recipe_hash: p.recipe_hash,
                },
            )?;
        }
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let trained = r.steps - start;
    save_model(&p, &model_dir)?;
    for old in state::states(run)? {
        state::remove_state(&old)?;
    }
    let mut scores = BTreeMap::new();
    for (split, examples) in &p.eval {
        let s = evaluate_work(&p.work, &p.net, &eval_data, examples, r.seed)?;
        log_scores(sink, r.steps, split, &s)?;
        for (k, v) in &s {
            sink.score(&format!("{split}/{k}"), *v);
        }
        scores.insert(split.clone(), s);
    }
    crate::logging::weights(sink, &p.net, r.steps)?;
    crate::logging::hparams(sink, &r, &scores)?;
    sink.score("train/seconds", seconds);
    sink.finish()?;
    Ok(TrainReport {
        steps: r.steps,
        model: model_dir,
        scores,
        seconds,
        examples_per_s: (trained * r.batch_size as u64) as f64 / seconds.max(1e-9),
    })
}

/// What one optimiser step of [`train_step`] is run with.
#[derive(Debug, Clone, Copy)]
pub struct StepConfig {
    /// The run's seed and the step's index (from 0): libtorch's generator is reseeded from
    /// both, and the objectives draw their masks and negatives from them.
    pub seed: u64,
    pub step: u64,
    /// The base learning rate of this step.
    pub lr: f64,
    /// Global gradient-norm clipping (0: none).
    pub clip: f64,
    /// Micro-batches whose gradients are summed.
    pub accum: u64,
}

/// What one optimiser step reports.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The step's loss (the mean over its micro-batches).
    pub loss: f64,
    /// Each objective's unweighted loss (pre-training), averaged over the micro-batches.
    pub parts: BTreeMap<&'static str, f64>,
    /// The gradient norm before clipping (NaN without clipping).
    pub grad_norm: f64,
}

/// One optimiser step, the body of [`train`]'s loop: for each of `cfg.accum` micro-batches
/// from `next_batch`, the loss ([`work_loss`]) and its gradients with respect to `params`
/// (the optimiser's parameters, in its order), summed; then one AdamW update at `cfg.lr`,
/// clipped to the global norm `cfg.clip`. A non-finite loss is an error before any update.
pub fn train_step(
    work: &Work,
    net: &Net,
    optimizer: &mut AdamW,
    params: &[Tensor],
    cfg: StepConfig,
    mut next_batch: impl FnMut() -> Result<ModelBatch>,
) -> Result<StepOutput> {
    let StepConfig {
        seed,
        step,
        lr,
        clip,
        accum,
    } = cfg;
    tch::manual_seed(splitmix64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64);
    optimizer.set_lr(lr);
    let mut grads: Option<Vec<Tensor>> = None;
    let mut parts: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut total = 0f64;
    for _ in 0..accum {
        let batch = next_batch()?;
        let (loss, named) = work_loss(work, net, &batch, seed, step, true)?;
        let loss = loss / accum as f64;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::NotFinite {
                what: "training loss".into(),
                step,
                value,
            });
        }
        total += value;
        for (k, v) in named {
            *parts.entry(k).or_default() += v / accum as f64;
        }
        let g = Tensor::f_run_backward(&[loss], params, false, false)?;
        grads = Some(match grads {
            None => g,
            // A parameter the loss does not reach has an undefined gradient (the vision
            // experts of a text task): it stays undefined unless another micro-batch
            // reaches it.
            Some(acc) => acc
                .iter()
                .zip(&g)
                .map(|(a, b)| match (a.defined(), b.defined()) {
                    (true, true) => a + b,
                    (true, false) => a.shallow_clone(),
                    _ => b.shallow_clone(),
                })
                .collect(),
        });
    }
    let grads = grads.unwrap_or_default();
    let grad_norm = if clip > 0.0 {
        optimizer.step_clipped(&grads, clip)?
    } else {
        optimizer.step(&grads)?;
        f64::NAN
    };
    Ok(StepOutput {
        loss: total,
        parts,
        grad_norm,
    })
}

/// The image transform and collator of a prepared run.
pub fn data_setup(p: &Prepared, augment: bool) -> (ImageTransform, Collator) {
    let side = p.net.config().image_size as u32;
    let transform = ImageTransform {
        size: side,
        normalize: Normalize::HALF,
        augment: augment.then(Augment::default),
    };
    let soft = match &p.work {
        Work::Finetune { head, .. } => head.soft_classes(),
        Work::Pretrain { .. } => 0,
    };
    let collator = Collator {
        tokenizer: p.tokenizer.clone(),
        max_len: p.net.config().max_position_embeddings as usize,
        image_size: side as usize,
        soft_classes: soft,
        device: p.net.device(),
    };
    (transform, collator)
}

/// Evaluation batches of a prepared run.
pub fn eval_data(p: &Prepared) -> EvalData {
    let (transform, collator) = data_setup(p, false);
    EvalData {
        collator,
        transform,
        batch_size: p.recipe.eval.batch_size,
        threads: (p.recipe.threads > 0).then_some(p.recipe.threads),
    }
}

/// Scores the prepared network, as initialised, on the recipe's evaluation splits: split
/// name → scores ([`evaluate_detailed`] without the per-item values).
pub fn evaluate(p: &Prepared) -> Result<BTreeMap<String, Scores>> {
    Ok(evaluate_detailed(p)?
        .into_iter()
        .map(|(split, e)| (split, e.scores))
        .collect())
}

/// Evaluates the prepared network, as initialised, on the recipe's evaluation splits: split
/// name → its [`Evaluated`], the scores and, for each score that is a mean over the split's
/// items, the per-item values in the split's item order (for paired comparisons of two
/// models on one split). The scores are those [`evaluate`] returns, bit for bit.
pub fn evaluate_detailed(p: &Prepared) -> Result<BTreeMap<String, Evaluated>> {
    let data = eval_data(p);
    p.eval
        .iter()
        .map(|(split, ex)| {
            Ok((
                split.clone(),
                evaluate_work_detailed(&p.work, &p.net, &data, ex, p.recipe.seed)?,
            ))
        })
        .collect()
}

fn log_scores(sink: &Sink, step: u64, split: &str, s: &Scores) -> Result<()> {
    let tags: Vec<(String, f64)> = s
        .iter()
        .map(|(k, v)| (format!("{split}/{k}"), *v))
        .collect();
    let values: Vec<(&str, f64)> = tags.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    Ok(sink.scalars(step, &values)?)
}

/// The loss of one batch and its named parts (pre-training: each objective's unweighted loss).
pub fn work_loss(
    work: &Work,
    net: &Net,
    batch: &ModelBatch,
    seed: u64,
    step: u64,
    train: bool,
) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
    work_loss_with(work, net, batch, seed, step, train, false)
}

/// [`work_loss`], for pre-training optionally against targets sampled from the model's own
/// predictive distribution (`StepCache::sampled_targets`; a Fisher with sampled labels).
pub fn work_loss_with(
    work: &Work,
    net: &Net,
    batch: &ModelBatch,
    seed: u64,
    step: u64,
    train: bool,
    sampled_targets: bool,
) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
    match work {
        Work::Finetune { head, .. } => Ok((head.loss(net, batch, train)?, vec![])),
        Work::Pretrain {
            objectives,
            mask_prob,
            mim_ratio,
            ..
        } => {
            let mut cache = StepCache::new(seed, step, train);
            cache.mask_prob = *mask_prob;
            cache.mim_ratio = *mim_ratio;
            cache.sampled_targets = sampled_targets;
            let mut total: Option<Tensor> = None;
            let mut parts = vec![];
            for (name, w, o) in objectives {
                let l = o.loss(net, batch, &cache)?;
                parts.push((*name, l.double_value(&[])));
                let l = l * *w;
                total = Some(match total {
                    None => l,
                    Some(t) => t + l,
                });
            }
            total
                .map(|t| (t, parts))
                .ok_or_else(|| TrainError::Invalid("no objective".into()))
        }
    }
}

/// Scores of the network on a split: [`evaluate_work_detailed`] without the per-item values.
pub fn evaluate_work(
    work: &Work,
    net: &Net,
    data: &EvalData,
    examples: &Examples,
    seed: u64,
) -> Result<Scores> {
    Ok(evaluate_work_detailed(work, net, data, examples, seed)?.scores)
}

/// Evaluation of the network on a split: the task's evaluation, or for pre-training the
/// zero-shot signals (ITC retrieval recall when the run has the ITC head, with its per-query
/// items, and the held-out loss of every objective, which has none).
pub fn evaluate_work_detailed(
    work: &Work,
    net: &Net,
    data: &EvalData,
    examples: &Examples,
    seed: u64,
) -> Result<Evaluated> {
    match work {
        Work::Finetune { head, .. } => head.evaluate(net, data, examples),
        Work::Pretrain {
            objectives,
            mask_prob,
            mim_ratio,
            ..
        } => {
            let Examples::Retrieval(split) = examples else {
                return Err(TrainError::Invalid(
                    "pre-training is evaluated on a retrieval split".into(),
                ));
            };
            let mut e = Evaluated::default();
            if net.itc().is_ok() {
                e.extend(zeroshot::retrieval_recall(net, data, split)?);
            }
            let weighted: Vec<zeroshot::Weighted<'_>> = objectives
                .iter()
                .map(|(name, weight, o)| zeroshot::Weighted {
                    name,
                    weight: *weight,
                    objective: o.as_ref(),
                })
                .collect();
            e.extend_scores(zeroshot::heldout_loss(
                net,
                data,
                split,
                &weighted,
                zeroshot::HeldOut {
                    seed,
                    step: 0,
                    mask_prob: *mask_prob,
                    mim_ratio: *mim_ratio,
                },
            )?);
            Ok(e)
        }
    }
}
