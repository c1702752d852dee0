//! Task data for mmerge: readers of the real dataset formats (VQA v2, COCO / Karpathy /
//! Flickr30k captions, NLVR2, image folders, GLUE-style text, segmentation masks), the
//! synthetic suite, the real-asset suite built from registry packages, tokenisation, image
//! preprocessing and batching. No libtorch here: batches are plain `Vec`s that the model
//! crate turns into tensors.

pub mod batch;
pub mod check;
pub mod error;
pub mod formats;
pub mod image;
pub mod layout;
pub mod out;
pub mod real;
pub mod score;
pub mod suite;
pub mod synth;
pub mod tokenize;
pub mod transform;
pub mod wordpiece;

pub use error::{DataError, Result};
