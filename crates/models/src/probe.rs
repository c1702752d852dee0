//! What a forward pass of the multiway transformer reports to a statistics collector
//! (`mmerge_train::statistics`): the inputs of every linear layer that ran (RegMean's Gram
//! matrices) and, for every attention and FFN part, the matching units' features of *every*
//! stored expert of that part on the same tokens (the activation similarity of permutation
//! alignment: between experts of one model, or between two models run on the same batch).
//!
//! A probe is attached with [`crate::MultiwayTransformer::set_probe`]; without one a forward
//! pass computes nothing extra. Padded text tokens are left out of every report (a padded
//! position's hidden state is computed but never attended to).

use tch::Tensor;

use crate::config::Expert;

/// The unit kinds of a part (arXiv 2403.01753's merging units of a transformer block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UnitKind {
    /// Query/key features: the key projection's output.
    Qk,
    /// Value/output features: the attention mix, the output projection's input.
    Vo,
    /// The FFN's hidden features: GELU(fc1 x), fc2's input.
    Mlp,
}

impl UnitKind {
    pub fn name(self) -> &'static str {
        match self {
            UnitKind::Qk => "qk",
            UnitKind::Vo => "vo",
            UnitKind::Mlp => "mlp",
        }
    }
}

/// Receives what a forward pass reports. Tensors are rows `[N, width]` of the pass's real
/// tokens, float32, on the model's device, without gradient.
pub trait Probe: Send {
    /// The inputs of a linear layer that ran: `weight` is its weight's key
    /// (`encoder.layers.3.attn.text.q.weight`).
    fn linear_input(&mut self, weight: &str, x: &Tensor);

    /// The features of one unit kind of a part (`part`: `encoder.layers.3.ffn`) for every
    /// stored expert of that part, computed on the same tokens, in expert order.
    fn unit_features(&mut self, part: &str, kind: UnitKind, features: &[(Expert, Tensor)]);
}

/// The rows of `x` [B, T, D] whose tokens are real: all of them without a mask, else those
/// where `mask` (B·T entries: a key mask [B, 1, 1, T] or a padding mask [B, T]) is non-zero.
/// `[N, D]`.
pub fn real_rows(x: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let d = x.size()[2];
    let flat = x.reshape([-1, d]);
    match mask {
        None => flat,
        Some(m) => {
            let keep = m.reshape([-1]).nonzero().squeeze_dim(1);
            flat.index_select(0, &keep)
        }
    }
}
