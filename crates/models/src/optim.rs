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
//! Deviations: none in the arithmetic (float32 throughout, as PyTorch does for float32
//! parameters); no AMSGrad; parameters must be contiguous float32 on the CPU (others are
//! refused with an error, not silently skipped). A parameter whose gradient is undefined
//! (unused in the graph) is left alone, as PyTorch does for `grad is None`.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

/// Elements per parallel work item: large enough to amortise scheduling, small enough to
/// spread a 1M-element matrix over the cores.
const CHUNK: usize = 1 << 15;

/// Hyper-parameters, with PyTorch's defaults.
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

/// The optimiser: the parameters it updates and their first and second moments.
#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Tensor>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: i32,
}

impl AdamW {
    /// An optimiser over `params` (e.g. `VarStore::trainable_variables()`).
    pub fn new(params: Vec<Tensor>, config: AdamWConfig) -> Result<Self> {
        for (i, p) in params.iter().enumerate() {
            check_param(i, p)?;
        }
        let sizes: Vec<usize> = params.iter().map(Tensor::numel).collect();
        Ok(Self {
            config,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            params,
            step: 0,
        })
    }

    /// The parameters, in the order `step` expects their gradients.
    pub fn params(&self) -> &[Tensor] {
        &self.params
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

    /// One update with `grads[i]` the gradient of `params()[i]` (undefined = not used).
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(ModelError::GradientCount {
                got: grads.len(),
                params: self.params.len(),
            });
        }
        self.step += 1;
        let c = &self.config;
        let t = self.step;
        let k = Coefs {
            decay: (1.0 - c.lr * c.weight_decay) as f32,
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            step_size: (c.lr / (1.0 - c.beta1.powi(t))) as f32,
            inv_bc2_sqrt: (1.0 / (1.0 - c.beta2.powi(t)).sqrt()) as f32,
            eps: c.eps as f32,
        };
        for (i, g) in grads.iter().enumerate() {
            if !g.defined() {
                continue;
            }
            let p = &self.params[i];
            let n = p.numel();
            if g.size() != p.size() || g.kind() != Kind::Float || g.device() != Device::Cpu {
                return Err(ModelError::GradientMismatch {
                    index: i,
                    kind: g.kind(),
                    shape: g.size(),
                    device: g.device(),
                    param_shape: p.size(),
                });
            }
            let g = g.contiguous();
            // SAFETY: `check_param` (at construction) and the checks above make both tensors
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
        Ok(())
    }
}

/// The per-step constants of the update.
#[derive(Debug, Clone, Copy)]
struct Coefs {
    decay: f32,
    b1: f32,
    b2: f32,
    step_size: f32,
    inv_bc2_sqrt: f32,
    eps: f32,
}

impl Coefs {
    #[inline]
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2) = (self.b1, self.b2);
        let (c1, c2) = (1.0 - b1, 1.0 - b2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
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
