//! Statistics for data-dependent merging, collected by running a suite's data through a
//! trained model: what RegMean, Fisher merging, gradient matching and activation-based
//! alignment read (`mmerge_merge::methods::{regmean, fisher, gradmatch}`,
//! `mmerge_merge::align`).
//!
//! - **Gram matrices** (RegMean, arXiv 2212.09849): for every linear layer that runs, the mean
//!   Gᵂ = XᵀX / n of its inputs X over the real tokens of `batches` batches. Each batch goes
//!   through the image-only, the text-only and the fused pass, so every expert's Gram comes
//!   from the tokens routed to it: vision experts from image tokens, text experts from text
//!   tokens, vision-language experts from the fused sequence (as arXiv 2304.14933's code
//!   hooks its experts).
//! - **Unit moments** (activation matching, ZipIt, MuDSC; arXiv 2403.01753): for every
//!   expert-specific attention and FFN part, the features of *every* stored expert on the
//!   same tokens (key projections, attention mixes, FFN hidden units), concatenated over the
//!   experts f = [f_vision; f_text; …], with their count, Σ f and Σ f fᵀ in float64.
//! - **Diagonal Fisher** (arXiv 2111.09832, 2310.12808): F = (1/K) Σₖ (∇θ Lₖ)² over
//!   `fisher_batches` batches, Lₖ the run's pre-training loss (its objectives' weighted sum)
//!   with the data's own targets (`FisherLabels::Data`: the empirical Fisher) or with targets
//!   drawn from the model's own predictive distribution (`FisherLabels::Model`: the
//!   Monte-Carlo true Fisher of the gradient-matching paper), from batch gradients as in the
//!   RegMean and MergeLM code bases' "Fisher on batch gradients". Deviation: not per-example
//!   gradients (the contrastive objectives have no per-example loss outside a batch), so it is
//!   scaled by the batch size B (F ≈ B·E[(∇L_B)²], unbiased for the per-example Fisher when
//!   the mean gradient is zero, biased upward by (B − 1)(E∇ℓ)² otherwise; with sampled
//!   targets the mean gradient is zero in expectation).
//!
//! Batches come from the recipe's train split in the loader's order for the recipe's seed
//! (epoch 0, then 1, …), so the same recipe gives the same statistics. No dropout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mmerge_data::batch::{Loader, LoaderConfig};
use mmerge_models::Expert;
use mmerge_models::probe::{Probe, UnitKind, real_rows};
use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};
use crate::input::{ModelBatch, decoder};
use crate::trainer::{Prepared, Work, data_setup, work_loss_with};

/// What to collect, and on how much data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatisticsConfig {
    /// Batches for the Gram matrices and unit moments (0: collect neither).
    pub batches: usize,
    /// Batches for the Fisher (0: none).
    pub fisher_batches: usize,
    /// The Fisher's targets: the data's (empirical Fisher) or sampled from the model.
    pub fisher_labels: FisherLabels,
}

/// Whose targets the Fisher's loss uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FisherLabels {
    /// The data's: the empirical Fisher.
    #[default]
    Data,
    /// Drawn from the model's own predictive distribution (classes from its softmax, MIM's
    /// pixels from a unit Gaussian around its prediction): the Monte-Carlo true Fisher of
    /// the gradient-matching paper (arXiv 2310.12808), one sample per target.
    Model,
}

impl FisherLabels {
    /// `data` or `model`.
    pub fn name(self) -> &'static str {
        match self {
            FisherLabels::Data => "data",
            FisherLabels::Model => "model",
        }
    }

    /// The labels called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "data" => Ok(FisherLabels::Data),
            "model" => Ok(FisherLabels::Model),
            other => Err(TrainError::Unknown {
                what: "Fisher labels",
                name: other.to_string(),
                valid: "data, model".into(),
            }),
        }
    }
}

/// Running float64 moments of feature rows f: their count, Σ f and Σ f fᵀ (a Gram sum is its
/// `outer`).
#[derive(Debug)]
pub struct Moments {
    pub count: f64,
    /// Σ f, float64 [W].
    pub sum: Tensor,
    /// Σ f fᵀ, float64 [W, W].
    pub outer: Tensor,
}

impl Moments {
    /// The moments of the rows of `f` [N, W].
    fn of(f: &Tensor) -> Self {
        let f = f.to_kind(Kind::Double);
        Moments {
            count: f.size()[0] as f64,
            sum: f.sum_dim_intlist(0, false, Kind::Double),
            outer: f.transpose(0, 1).mm(&f),
        }
    }

    /// W, the feature width.
    pub fn width(&self) -> usize {
        self.sum.size().first().map_or(0, |&w| w as usize)
    }
}

/// Adds the rows of `f` to the moments under `key`.
fn accumulate<K: Ord>(map: &mut BTreeMap<K, Moments>, key: K, f: &Tensor) {
    let add = Moments::of(f);
    match map.get_mut(&key) {
        Some(m) => {
            m.count += add.count;
            m.sum += add.sum;
            m.outer += add.outer;
        }
        None => {
            map.insert(key, add);
        }
    }
}

/// The moments of one unit's features concatenated over `experts`, f = [f_e₁; f_e₂; …].
#[derive(Debug)]
pub struct ExpertMoments {
    pub experts: Vec<Expert>,
    pub moments: Moments,
}

impl ExpertMoments {
    /// The width of one expert's features.
    pub fn width(&self) -> usize {
        self.moments.width() / self.experts.len().max(1)
    }
}

/// The collected statistics.
#[derive(Debug, Default)]
pub struct Collected {
    /// Weight key → mean Gram of that layer's inputs, float32 [in, in].
    pub gram: BTreeMap<String, Tensor>,
    /// `encoder.layers.{i}.{attn|ffn}` and the unit kind → its moments.
    pub units: BTreeMap<(String, UnitKind), ExpertMoments>,
    /// Parameter key → mean squared batch gradient times the batch size, float32.
    pub fisher: BTreeMap<String, Tensor>,
    /// Tokens seen per weight key (the Gram's n).
    pub rows: BTreeMap<String, f64>,
}

#[derive(Default)]
struct Sums {
    /// Weight key → the moments of its inputs.
    gram: BTreeMap<String, Moments>,
    units: BTreeMap<(String, UnitKind), Moments>,
    /// The experts of each unit, in feature order.
    experts: BTreeMap<(String, UnitKind), Vec<Expert>>,
}

/// The probe attached to the encoder while the Gram batches run: it adds into shared sums.
struct Accumulate(Arc<Mutex<Sums>>);

impl Probe for Accumulate {
    fn linear_input(&mut self, weight: &str, x: &Tensor) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        accumulate(&mut s.gram, weight.to_string(), x);
    }

    fn unit_features(&mut self, part: &str, kind: UnitKind, features: &[(Expert, Tensor)]) {
        let parts: Vec<&Tensor> = features.iter().map(|(_, t)| t).collect();
        let f = Tensor::cat(&parts, 1);
        let key = (part.to_string(), kind);
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.experts
            .entry(key.clone())
            .or_insert_with(|| features.iter().map(|(e, _)| *e).collect());
        accumulate(&mut s.units, key, &f);
    }
}

/// The first `n` batches of the train split in the loader's order (epochs 0, 1, … as needed).
fn batches(
    p: &Prepared,
    n: usize,
    mut each: impl FnMut(usize, &ModelBatch) -> Result<()>,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let r = &p.recipe;
    let (transform, collator) = data_setup(p, false);
    let loader = Loader::new(
        p.train_items.clone(),
        decoder(transform),
        LoaderConfig {
            batch_size: r.batch_size,
            seed: r.seed,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
        },
        (r.threads > 0).then_some(r.threads),
    )?;
    if loader.batches_per_epoch() == 0 {
        return Err(TrainError::Invalid(format!(
            "statistics: the train split has {} examples, fewer than one batch of {}",
            loader.len(),
            r.batch_size
        )));
    }
    let mut done = 0;
    let mut epoch = 0;
    while done < n {
        for b in loader.epoch(epoch) {
            each(done, &collator.collate(b?)?)?;
            done += 1;
            if done == n {
                break;
            }
        }
        epoch += 1;
    }
    Ok(())
}

/// Collects the statistics of the prepared run's network (see the module docs).
/// `tick` is called after every batch (`cfg.batches + cfg.fisher_batches` in all).
pub fn collect(p: &Prepared, cfg: &StatisticsConfig, tick: &dyn Fn()) -> Result<Collected> {
    if !matches!(p.work, Work::Pretrain { .. }) {
        return Err(TrainError::Invalid(
            "statistics are collected with a pre-training recipe (its pairs and objectives)".into(),
        ));
    }
    let sums = Arc::new(Mutex::new(Sums::default()));
    let enc = &p.net.encoder;
    if cfg.batches > 0 {
        let _guard = tch::no_grad_guard();
        enc.set_probe(Some(Box::new(Accumulate(Arc::clone(&sums)))));
        let run = batches(p, cfg.batches, |_, b| {
            let pixels = b.image()?;
            let text = b.text()?.batch();
            // The passes' outputs are not needed: the probe has seen every layer.
            let _ = enc.encode_image(pixels, false)?;
            let _ = enc.encode_text(&text, false)?;
            let _ = enc.encode_image_text(pixels, &text, 1, false)?;
            tick();
            Ok(())
        });
        enc.set_probe(None);
        run?;
    }
    let sums = std::mem::take(&mut *sums.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out = Collected::default();
    for (key, moments) in sums.units {
        let experts = sums.experts.get(&key).cloned().unwrap_or_default();
        out.units.insert(key, ExpertMoments { experts, moments });
    }
    for (key, m) in sums.gram {
        out.gram
            .insert(key.clone(), (m.outer / m.count).to_kind(Kind::Float));
        out.rows.insert(key, m.count);
    }
    if cfg.fisher_batches > 0 {
        out.fisher = fisher(p, cfg.fisher_batches, cfg.fisher_labels, tick)?;
    }
    Ok(out)
}

/// B/K Σₖ (∇ Lₖ)² per parameter over the first K batches.
fn fisher(
    p: &Prepared,
    k: usize,
    labels: FisherLabels,
    tick: &dyn Fn(),
) -> Result<BTreeMap<String, Tensor>> {
    let named = p.net.named_parameters();
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut acc: Vec<Tensor> = params
        .iter()
        .map(|t| Tensor::zeros_like(t).to_kind(Kind::Double))
        .collect();
    let seed = p.recipe.seed;
    batches(p, k, |i, b| {
        let sampled = labels == FisherLabels::Model;
        let (loss, _) = work_loss_with(&p.work, &p.net, b, seed, i as u64, false, sampled)?;
        let grads = Tensor::f_run_backward(&[loss], &params, false, false)?;
        for (a, g) in acc.iter_mut().zip(grads) {
            if g.defined() {
                *a += g.to_kind(Kind::Double).square();
            }
        }
        tick();
        Ok(())
    })?;
    let scale = p.recipe.batch_size as f64 / k as f64;
    Ok(named
        .into_iter()
        .zip(acc)
        .map(|((name, _), a)| (name, (a * scale).to_kind(Kind::Float)))
        .collect())
}

/// Records every unit's features, in report order.
struct Record(Arc<Mutex<Vec<(String, Tensor)>>>);

impl Probe for Record {
    fn linear_input(&mut self, _: &str, _: &Tensor) {}

    fn unit_features(&mut self, part: &str, kind: UnitKind, features: &[(Expert, Tensor)]) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (e, t) in features {
            v.push((
                format!("{part}.{}.{}", e.name(), kind.name()),
                t.shallow_clone(),
            ));
        }
    }
}

/// Every unit's features of `p`'s model on batch `b` (image-only, text-only and fused
/// passes), and its final hidden states' real rows as the unit `residual`.
fn features(p: &Prepared, b: &ModelBatch) -> Result<Vec<(String, Tensor)>> {
    let enc = &p.net.encoder;
    let seen = Arc::new(Mutex::new(Vec::new()));
    enc.set_probe(Some(Box::new(Record(Arc::clone(&seen)))));
    let run = (|| -> Result<Tensor> {
        let (pixels, text) = (b.image()?, b.text()?);
        let image = enc.encode_image(pixels, false)?;
        let words = enc.encode_text(&text.batch(), false)?;
        let (fused, mask) = enc.encode_image_text(pixels, &text.batch(), 1, false)?;
        Ok(Tensor::cat(
            &[
                real_rows(&image, None),
                real_rows(&words, Some(&text.mask)),
                real_rows(&fused, Some(&mask)),
            ],
            0,
        ))
    })();
    enc.set_probe(None);
    let residual = run?;
    let mut out = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    out.push(("residual".into(), residual));
    Ok(out)
}

/// The joint moments of every unit of two models of one architecture (`a` and `b`, prepared
/// from the same recipe but their init) over `n` batches of `a`'s recipe, both models seeing
/// the same batches: f = [f_A; f_B] per unit, each half one model's features; unit names as `mmerge_merge::align::model_units` gives them (`residual`,
/// `encoder.layers.{i}.attn.{expert}.qk` / `.vo`, `encoder.layers.{i}.ffn.{expert}.mlp`).
pub fn collect_pair(
    a: &Prepared,
    b: &Prepared,
    n: usize,
    tick: &dyn Fn(),
) -> Result<BTreeMap<String, Moments>> {
    let _guard = tch::no_grad_guard();
    let mut out: BTreeMap<String, Moments> = BTreeMap::new();
    batches(a, n, |_, batch| {
        let (fa, fb) = (features(a, batch)?, features(b, batch)?);
        if fa.len() != fb.len() {
            return Err(TrainError::Invalid(format!(
                "the two models report {} and {} units: not one architecture",
                fa.len(),
                fb.len()
            )));
        }
        for ((name, x), (name_b, y)) in fa.into_iter().zip(fb) {
            if name != name_b || x.size() != y.size() {
                return Err(TrainError::Invalid(format!(
                    "unit `{name}` ({:?}) of the first model meets `{name_b}` ({:?}) of the \
                     second: not one architecture",
                    x.size(),
                    y.size()
                )));
            }
            accumulate(&mut out, name, &Tensor::cat(&[x, y], 1));
        }
        tick();
        Ok(())
    })?;
    Ok(out)
}
