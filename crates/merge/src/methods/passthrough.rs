//! Passthrough (mergekit `passthrough`): one input per output tensor, copied unchanged; with
//! `scale`, multiplied by it. Used with `slices` to stack layers of several models
//! ("frankenmerges").
//!
//! Without `scale` the bytes are copied as they are (any dtype, bit-exact) when the output
//! dtype equals the input's.

/// Evaluated parameters of a passthrough of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Passthrough {
    pub scale: Option<f64>,
}

impl Passthrough {
    /// Copies (and scales) a chunk.
    pub fn chunk(&self, input: &[f32], out: &mut [f32]) {
        let s = self.scale.unwrap_or(1.0);
        for (o, x) in out.iter_mut().zip(input) {
            *o = (f64::from(*x) * s) as f32;
        }
    }
}
