//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong writing or reading an event file. Reading errors name the file and
/// the byte offset of the record at fault.
#[derive(Debug, thiserror::Error)]
pub enum TensorboardError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: record at byte {offset}: length CRC mismatch (stored {stored:#010x}, computed {computed:#010x})",
        path.display()
    )]
    LengthCrc {
        path: PathBuf,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{}: record at byte {offset}: data CRC mismatch (stored {stored:#010x}, computed {computed:#010x})",
        path.display()
    )]
    DataCrc {
        path: PathBuf,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{}: record at byte {offset} is truncated: it needs {needed} bytes, the file has {available} left",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{}: record at byte {offset} is not an Event protobuf: {source}", path.display())]
    Decode {
        path: PathBuf,
        offset: u64,
        source: prost::DecodeError,
    },
    #[error("histogram {tag:?} has no values")]
    EmptyHistogram { tag: String },
    #[error("histogram {tag:?}: value {index} is not finite ({value})")]
    NonFinite {
        tag: String,
        index: usize,
        value: f32,
    },
    #[error("image {tag:?}: {len} bytes for a {width}×{height} RGB image (needs {expected})")]
    ImageSize {
        tag: String,
        width: u32,
        height: u32,
        len: usize,
        expected: usize,
    },
    #[error("image {tag:?}: {width}×{height} is larger than TensorBoard's i32 dimensions")]
    ImageTooLarge {
        tag: String,
        width: u32,
        height: u32,
    },
    #[error("image {tag:?}: PNG encoding failed: {source}")]
    Png {
        tag: String,
        source: image::ImageError,
    },
}

pub type Result<T> = std::result::Result<T, TensorboardError>;

impl TensorboardError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
