//! Readers (and the record types, for writers) of the standard dataset formats. Our built
//! suites are written in these same formats, so the same readers serve a real download and a
//! generated suite.
//!
//! Each submodule starts with the format's official records as serde types (field names as in
//! the official files), then the reader that validates them and turns them into typed examples.

pub mod captions;
pub mod image_folder;
pub mod nlvr2;
pub mod segmentation;
pub mod text_cls;
pub mod vqa;
