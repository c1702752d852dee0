//! Checkpoints for mmerge: safetensors files and sharded Hugging Face folders read through
//! `mmap` with zero copies, dtype conversion (compute is always `f32`), atomic sharded writing,
//! and the parameter-key grammar that gives every tensor its layer and depth.
//!
//! This crate knows nothing of tch modules or training: a merge works on names and tensors.

pub mod atomic;
pub mod checkpoint;
pub mod dtype;
pub mod error;
pub mod fs;
pub mod hash;
pub mod header;
pub mod hub;
pub mod imagenet;
pub mod json;
pub mod keys;
pub mod select;
pub mod simd;
pub mod writer;
pub mod yaml;

pub use checkpoint::{Checkpoint, TensorMeta};
pub use dtype::Dtype;
pub use error::{CoreError, Result};
pub use keys::{LayerRef, TensorRole};
pub use writer::{CheckpointWriter, OutputTensor};
