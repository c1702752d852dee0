//! AdamW with decoupled weight decay, fused into one pass over each parameter.
//!
//! Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101, in the form
//! PyTorch's `torch.optim.AdamW` uses. At step t (from 1), for each parameter p with gradient g:
//!
//! ```text
//! p ← p · (1 − lr·wd)
//! m ← β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! Why our own: libtorch's C++ `AdamW` (what `tch::nn::AdamW` runs) makes nine passes over
//! memory per parameter and allocates two temporaries the size of the parameter, and PyTorch's
//! default on CPU is the same loop of tensor ops. On a BERT-sized model the embedding and
//! output matrices make the optimiser memory-bound, so one fused pass (read p, g, m, v; write
//! p, m, v) is several times faster. The loop runs on rayon in fixed chunks, so results do
//! not depend on the thread count.
//!
//! **Parameter groups.** Each parameter has a [`Group`]: its own weight decay `wd` and a
//! multiplier `k` of the step's rate, so the update above runs with `lr·k` in place of `lr`
//! (as a PyTorch param group whose `lr` is `k` times the base rate; layer-wise lr decay is
//! `k = decayᵈᵉᵖᵗʰ`). [`Group::standard`] is the usual rule (BERT's `no_decay` list, timm's
//! `param_groups_weight_decay`): no decay on 1-D tensors (biases, LayerNorm weights and
//! biases, the embeddings' LayerNorm, LayerScale γ), on names ending in `bias` or containing
//! `norm`; decay on every matrix, embedding table and kernel. [`AdamW::set_lr`] sets the base
//! rate before a step (from [`crate::schedule::Schedule::lr`]).
//!
//! **Gradient clipping by global norm** ([`AdamW::step_clipped`]), as PyTorch's
//! `torch.nn.utils.clip_grad_norm_`: `N = ‖(g₁, …, gₙ)‖₂` over all gradients, every gradient
//! scaled by `min(1, max_norm / (N + 10⁻⁶))`. `N` is summed in float64 over fixed chunks (the
//! same bits for any thread count) in one read-only pass; the scale is applied inside the fused
//! update (`g ← g·scale` in float32, as PyTorch's `mul_`), not as a pass of its own.
//!
//! **State** ([`AdamW::export_state`], [`AdamW::import_state`]): the step count and `m`, `v` of
//! each parameter by name, as plain float32 vectors, so a checkpoint can hold it and a resumed
//! run continues bit for bit.
//!
//! Deviations: none in the arithmetic (float32 throughout, as PyTorch does for float32
//! parameters); no AMSGrad; parameters must be contiguous float32 on the CPU (others are
//! refused with an error, not silently skipped). A parameter whose gradient is undefined
//! (unused in the graph) is left alone, as PyTorch does for `grad is None`. A non-finite
//! gradient norm is refused before anything is updated (PyTorch's default scales by
//! `max_norm / inf = 0` or by NaN and steps anyway). The clipping norm is summed in float64
//! (PyTorch takes float32 norms per tensor, then their norm), so it can differ from PyTorch's
//! in the last float32 bits.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

/// Elements per parallel work item: large enough to amortise scheduling, small enough to
/// spread a 1M-element matrix over the cores.
const CHUNK: usize = 1 << 15;

/// The `ε` PyTorch's `clip_grad_norm_` adds to the norm.
const CLIP_EPS: f64 = 1e-6;

/// Hyper-parameters, with PyTorch's defaults. `weight_decay` is the decay of the groups that
/// [`AdamW::new`] and [`AdamW::named`] build; [`AdamW::with_groups`] takes each parameter's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// PyTorch's defaults with learning rate `lr`.
    pub fn with_lr(lr: f64) -> Self {
        Self {
            lr,
            ..Self::default()
        }
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The settings of one parameter group: weight decay, and the multiplier of the base rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    pub weight_decay: f64,
    pub lr_scale: f64,
}

impl Group {
    /// The usual rule (module doc): `weight_decay` for matrices, embedding tables and kernels;
    /// none for 1-D tensors and for names ending in `bias` or containing `norm` (any case).
    pub fn standard(name: &str, shape: &[i64], weight_decay: f64) -> Self {
        Self {
            weight_decay: if decays(name, shape) {
                weight_decay
            } else {
                0.0
            },
            lr_scale: 1.0,
        }
    }
}

/// Whether [`Group::standard`] decays a parameter of this name and shape.
pub fn decays(name: &str, shape: &[i64]) -> bool {
    let lower = name.to_ascii_lowercase();
    shape.len() >= 2 && !lower.ends_with("bias") && !lower.contains("norm")
}

/// Errors of the optimiser's clipping, grouping and state import.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("gradient clipping: `max_norm` must be finite and positive, got {0}")]
    MaxNorm(f64),
    #[error("gradient norm is {0}: not stepping")]
    NonFiniteGradNorm(f64),
    #[error("AdamW: two parameters are named `{0}`")]
    DuplicateName(String),
    #[error(
        "AdamW: parameter `{name}`: group weight decay {weight_decay} and lr scale {lr_scale} \
         must be finite and ≥ 0"
    )]
    BadGroup {
        name: String,
        weight_decay: f64,
        lr_scale: f64,
    },
    /// An imported state that does not fit the optimiser's parameters (all problems at once).
    #[error(
        "AdamW state does not fit: step {step}, missing {missing:?}, unexpected {unexpected:?}, \
         mis-shaped {mismatched:?}"
    )]
    State {
        step: i32,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<String>,
    },
}

/// The optimiser state of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamState {
    pub name: String,
    pub shape: Vec<i64>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// The whole optimiser state: steps taken and the moments of every parameter, in the
/// optimiser's parameter order.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWState {
    pub step: i32,
    pub params: Vec<ParamState>,
}

/// The optimiser: the parameters it updates, their groups, and their first and second moments.
#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Tensor>,
    names: Vec<String>,
    groups: Vec<Group>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: i32,
}

impl AdamW {
    /// An optimiser over `params` (e.g. `VarStore::trainable_variables()`), all in one group
    /// with `config.weight_decay`, named by their index ("0", "1", ...).
    pub fn new(params: Vec<Tensor>, config: AdamWConfig) -> Result<Self> {
        let group = Group {
            weight_decay: config.weight_decay,
            lr_scale: 1.0,
        };
        let n = params.len();
        Self::build(
            (0..n).map(|i| i.to_string()).collect(),
            params,
            vec![group; n],
            config,
        )
    }

    /// An optimiser over named parameters (e.g. `VarStore::variables()`), grouped by
    /// [`Group::standard`] with `config.weight_decay`.
    pub fn named(
        params: impl IntoIterator<Item = (String, Tensor)>,
        config: AdamWConfig,
    ) -> Result<Self, OptimError> {
        let named = params
            .into_iter()
            .map(|(name, p)| {
                let group = Group::standard(&name, &p.size(), config.weight_decay);
                (name, p, group)
            })
            .collect();
        Self::with_groups(named, config)
    }

    /// An optimiser over named parameters, each with its own group. Names must be distinct,
    /// and a group's weight decay and lr scale finite and ≥ 0.
    pub fn with_groups(
        params: Vec<(String, Tensor, Group)>,
        config: AdamWConfig,
    ) -> Result<Self, OptimError> {
        let mut seen = BTreeSet::new();
        for (name, _, g) in &params {
            if !seen.insert(name.as_str()) {
                return Err(OptimError::DuplicateName(name.clone()));
            }
            let ok = |x: f64| x.is_finite() && x >= 0.0;
            if !(ok(g.weight_decay) && ok(g.lr_scale)) {
                return Err(OptimError::BadGroup {
                    name: name.clone(),
                    weight_decay: g.weight_decay,
                    lr_scale: g.lr_scale,
                });
            }
        }
        let (mut names, mut tensors, mut groups) = (vec![], vec![], vec![]);
        for (name, p, group) in params {
            names.push(name);
            tensors.push(p);
            groups.push(group);
        }
        Ok(Self::build(names, tensors, groups, config)?)
    }

    fn build(
        names: Vec<String>,
        params: Vec<Tensor>,
        groups: Vec<Group>,
        config: AdamWConfig,
    ) -> Result<Self> {
        for (i, p) in params.iter().enumerate() {
            check_param(i, p)?;
        }
        let sizes: Vec<usize> = params.iter().map(Tensor::numel).collect();
        Ok(Self {
            config,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            params,
            names,
            groups,
            step: 0,
        })
    }

    /// The parameters, in the order `step` expects their gradients.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// The parameters' names, in the order of [`AdamW::params`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The parameters' groups, in the order of [`AdamW::params`].
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Sets the base learning rate of the next steps (each group runs at `lr · lr_scale`).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i32 {
        self.step
    }

    /// Backpropagates `loss` to the parameters (without touching their `.grad`) and updates them.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = Tensor::f_run_backward(&[loss], &self.params, false, false)?;
        self.step(&grads)
    }

    /// [`AdamW::backward_step`] with the gradients clipped to global norm `max_norm`; returns
    /// the norm before clipping.
    pub fn backward_step_clipped(
        &mut self,
        loss: &Tensor,
        max_norm: f64,
    ) -> Result<f64, OptimError> {
        let grads = Tensor::f_run_backward(&[loss], &self.params, false, false)
            .map_err(ModelError::from)?;
        self.step_clipped(&grads, max_norm)
    }

    /// One update with `grads[i]` the gradient of `params()[i]` (undefined = not used).
    /// Nothing is updated if a gradient is refused.
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        let grads = self.check_grads(grads)?;
        self.update(&grads, 1.0);
        Ok(())
    }

    /// One update with the gradients scaled by `min(1, max_norm / (N + 10⁻⁶))`, `N` their
    /// global norm, as `clip_grad_norm_` does; returns `N` (before clipping). Nothing is updated
    /// if `N` is not finite.
    pub fn step_clipped(&mut self, grads: &[Tensor], max_norm: f64) -> Result<f64, OptimError> {
        if !(max_norm.is_finite() && max_norm > 0.0) {
            return Err(OptimError::MaxNorm(max_norm));
        }
        let grads = self.check_grads(grads)?;
        let norm = global_norm(&grads);
        if !norm.is_finite() {
            return Err(OptimError::NonFiniteGradNorm(norm));
        }
        self.update(&grads, (max_norm / (norm + CLIP_EPS)).min(1.0) as f32);
        Ok(norm)
    }

    /// The step count and the moments of every parameter, by name.
    pub fn export_state(&self) -> AdamWState {
        AdamWState {
            step: self.step,
            params: (0..self.params.len())
                .map(|i| ParamState {
                    name: self.names[i].clone(),
                    shape: self.params[i].size(),
                    m: self.m[i].clone(),
                    v: self.v[i].clone(),
                })
                .collect(),
        }
    }

    /// Replaces the step count and moments with `state`'s, matched by name. Every parameter
    /// must be in `state` with its shape (and `m`, `v` of its size), and nothing else; if not,
    /// every problem is reported and nothing changes.
    pub fn import_state(&mut self, state: &AdamWState) -> Result<(), OptimError> {
        let mut by_name = BTreeMap::new();
        let mut unexpected = vec![];
        for s in &state.params {
            if by_name.insert(s.name.as_str(), s).is_some() || !self.names.contains(&s.name) {
                unexpected.push(s.name.clone());
            }
        }
        let (mut missing, mut mismatched) = (vec![], vec![]);
        for (name, p) in self.names.iter().zip(&self.params) {
            match by_name.get(name.as_str()) {
                None => missing.push(name.clone()),
                Some(s) => {
                    let n = p.numel();
                    if s.shape != p.size() || s.m.len() != n || s.v.len() != n {
                        mismatched.push(name.clone());
                    }
                }
            }
        }
        if state.step < 0 || !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty())
        {
            return Err(OptimError::State {
                step: state.step,
                missing,
                unexpected,
                mismatched,
            });
        }
        for (i, name) in self.names.iter().enumerate() {
            let s = by_name[name.as_str()];
            self.m[i].copy_from_slice(&s.m);
            self.v[i].copy_from_slice(&s.v);
        }
        self.step = state.step;
        Ok(())
    }

    /// Checks the gradients against the parameters; returns them contiguous.
    fn check_grads(&self, grads: &[Tensor]) -> Result<Vec<Option<Tensor>>> {
        if grads.len() != self.params.len() {
            return Err(ModelError::GradientCount {
                got: grads.len(),
                params: self.params.len(),
            });
        }
        let mut out = Vec::with_capacity(grads.len());
        for (i, (g, p)) in grads.iter().zip(&self.params).enumerate() {
            if !g.defined() {
                out.push(None);
                continue;
            }
            if g.size() != p.size() || g.kind() != Kind::Float || g.device() != Device::Cpu {
                return Err(ModelError::GradientMismatch {
                    index: i,
                    kind: g.kind(),
                    shape: g.size(),
                    device: g.device(),
                    param_shape: p.size(),
                });
            }
            out.push(Some(g.contiguous()));
        }
        Ok(out)
    }

    /// The fused update of every parameter with a gradient, gradients scaled by `scale`.
    fn update(&mut self, grads: &[Option<Tensor>], scale: f32) {
        self.step += 1;
        let c = &self.config;
        let t = self.step;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.params[i];
            let n = p.numel();
            let group = self.groups[i];
            let lr = c.lr * group.lr_scale;
            let k = Coefs {
                decay: (1.0 - lr * group.weight_decay) as f32,
                b1: c.beta1 as f32,
                b2: c.beta2 as f32,
                c1: (1.0 - c.beta1) as f32,
                c2: (1.0 - c.beta2) as f32,
                step_size: (lr / bc1) as f32,
                inv_bc2_sqrt: (1.0 / bc2.sqrt()) as f32,
                eps: c.eps as f32,
                scale,
            };
            // SAFETY: `check_param` (at construction) and `check_grads` make both tensors
            // contiguous float32 CPU buffers of `n` elements. `g` is a separate tensor returned
            // by autograd (or made contiguous here), so it does not alias `p`; no other code
            // runs on these buffers during the step (we hold `&mut self`, and libtorch only
            // touches a parameter's data when asked to).
            let (ps, gs) = unsafe {
                (
                    std::slice::from_raw_parts_mut(p.data_ptr().cast::<f32>(), n),
                    std::slice::from_raw_parts(g.data_ptr().cast::<f32>(), n),
                )
            };
            let (ms, vs) = (&mut self.m[i], &mut self.v[i]);
            ps.par_chunks_mut(CHUNK)
                .zip(gs.par_chunks(CHUNK))
                .zip(ms.par_chunks_mut(CHUNK))
                .zip(vs.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| k.update(p, g, m, v));
        }
    }
}

/// The global L2 norm of the (checked, contiguous) gradients, summed in float64 per fixed
/// chunk and then in order, so the result does not depend on the thread count.
fn global_norm(grads: &[Option<Tensor>]) -> f64 {
    let mut sum = 0.0f64;
    for g in grads.iter().flatten() {
        let n = g.numel();
        // SAFETY: `check_grads` made `g` a contiguous float32 CPU tensor of `n` elements;
        // it is only read here.
        let gs = unsafe { std::slice::from_raw_parts(g.data_ptr().cast::<f32>(), n) };
        let parts: Vec<f64> = gs.par_chunks(CHUNK).map(sum_of_squares).collect();
        sum += parts.iter().sum::<f64>();
    }
    sum.sqrt()
}

/// `Σ xᵢ²` in float64 over eight lanes (`i mod 8`, then the lanes in order): independent
/// accumulators let the loop vectorise instead of waiting on one chain of additions (the norm
/// pass took as long as the whole fused update with one accumulator).
fn sum_of_squares(x: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f64::from(x) * f64::from(x);
        }
    }
    for (l, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += f64::from(x) * f64::from(x);
    }
    lanes.iter().sum()
}

/// The per-step constants of the update of one parameter.
#[derive(Debug, Clone, Copy)]
struct Coefs {
    decay: f32,
    b1: f32,
    b2: f32,
    /// `1 − β₁` and `1 − β₂`, rounded once from float64 (as PyTorch passes `1 - beta2`); in
    /// float32, `1 − 0.999f32` is off by 1.3·10⁻⁵ relative.
    c1: f32,
    c2: f32,
    step_size: f32,
    inv_bc2_sqrt: f32,
    eps: f32,
    /// The clipping scale of the gradient (1 = none; exact in float32).
    scale: f32,
}

impl Coefs {
    #[inline]
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2, c1, c2) = (self.b1, self.b2, self.c1, self.c2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * self.scale;
            *p *= self.decay;
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * g * g;
            let denom = v.sqrt() * self.inv_bc2_sqrt + self.eps;
            *p -= self.step_size * *m / denom;
        }
    }
}

fn check_param(i: usize, p: &Tensor) -> Result<()> {
    if p.kind() != Kind::Float || p.device() != Device::Cpu || !p.is_contiguous() {
        return Err(ModelError::UnsupportedParameter {
            index: i,
            shape: p.size(),
            kind: p.kind(),
            device: p.device(),
            contiguous: p.is_contiguous(),
        });
    }
    Ok(())
}
