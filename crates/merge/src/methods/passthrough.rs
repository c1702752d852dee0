//! Passthrough (mergekit `passthrough`): one input per output tensor, copied unchanged; with
//! `scale` (per input, optional), multiplied by it: θ = s · θ₁. Used with `slices` to stack
//! layers of several models ("frankenmerges", as in SOLAR's depth up-scaling, arXiv
//! 2312.15166).
//!
//! Without `scale` the bytes are copied as they are (any dtype, bit-exact) when the output
//! dtype equals the input's.
//!
//! Deviations from mergekit: the product is computed in float64 and rounded once to the output
//! dtype (mergekit multiplies in the loaded dtype).

use std::sync::Arc;

use super::{
    Goldens, Inputs, Kernel, Method, ParamSpec, Planned, Reference, Scope, Statistics, TensorPlan,
};
use crate::error::Result;
use crate::exec::{Chunk, Passes};
use crate::methods::Kind;

/// The registry entry.
pub const PASSTHROUGH: Method = Method {
    name: "passthrough",
    reference: Reference::Arxiv("2312.15166"),
    needs_base: false,
    inputs: Inputs::One,
    statistics: Statistics::None,
    params: &[ParamSpec {
        name: "scale",
        scope: Scope::Input,
        kind: Kind::Number {
            default: None,
            required: false,
            range: None,
        },
    }],
    plan,
    oracle: |c| oracle(&c.inputs[0], c.values.model_number(0, "scale")),
    goldens: Goldens::Cases(&["passthrough", "passthrough_scale"]),
};

fn plan(t: &TensorPlan<'_>) -> Result<Planned> {
    let scale = t.values.model_number(0, "scale");
    Ok(Planned {
        statistics: vec![],
        base: None,
        inputs: vec![0],
        kernel: if scale.is_some() || t.cast {
            Some(Arc::new(Passthrough { scale }))
        } else {
            None
        },
    })
}

/// Evaluated parameters of a passthrough of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Passthrough {
    pub scale: Option<f64>,
}

impl Kernel for Passthrough {
    type Stats = ();
    const ELEMENTWISE: bool = true;

    fn stats(&self, _: &Passes<'_>) -> Result<()> {
        Ok(())
    }

    fn chunk(&self, _: &(), c: &Chunk<'_>, out: &mut [f32]) {
        let s = self.scale.unwrap_or(1.0);
        for (o, x) in out.iter_mut().zip(&c.inputs[0]) {
            *o = (f64::from(*x) * s) as f32;
        }
    }
}

/// The float64 oracle: s · x (x itself without a scale).
pub fn oracle(input: &[f32], scale: Option<f64>) -> Vec<f64> {
    input
        .iter()
        .map(|x| f64::from(*x) * scale.unwrap_or(1.0))
        .collect()
}
