//! TensorBoard event files: a writer and a reader that checks every record.
//!
//! **Format.** TensorBoard reads every file whose name contains `tfevents` in a folder as
//! one *run*. A file is a sequence of TFRecords, each
//! `u64 length | u32 masked_crc32c(length) | data | u32 masked_crc32c(data)` (little-endian;
//! [`record`]), where CRC-32C is the Castagnoli CRC and the mask LevelDB's,
//! `rotate_right(crc, 15) + 0xA282EAD8`. Each `data` is one protobuf `tensorboard.Event`
//! ([`proto`]): `wall_time` (f64 seconds), `step` (i64) and a `Summary` of tagged values; the
//! first record holds `file_version: "brain.Event:2"` instead. What each summary kind
//! holds: scalars a `simple_value`; histograms a `HistogramProto` ([`histogram`] gives our
//! bucket edges); images a PNG in `Summary.Image`; text a rank-0 string tensor with plugin
//! `text`; hparams three metadata-only values of plugin `hparams` ([`hparams`]).
//!
//! **Sources.** `tensorflow/tensorboard`: `tensorboard/data/server/tf_record.rs` and
//! `masked_crc.rs` (framing, CRC and their test vectors, which our tests reproduce),
//! `tensorboard/compat/proto/{event,summary,tensor,tensor_shape,types}.proto`,
//! `tensorboard/plugins/hparams/{plugin_data,api,metadata.py}`,
//! `tensorboard/plugins/text/metadata.py`; notes in `../shared/reference/rust-ecosystem.md`
//! §2.2. The protobuf structs are written by hand as `prost` derives (no protoc).
//!
//! **Deviations.** Histogram buckets are 30 equal-width buckets over the values' range, not
//! TensorFlow's fixed exponential edges ([`histogram`]). The event file is appended to in
//! place, not written atomically ([`writer`]). [`read_events`] rejects a truncated last
//! record, which TensorBoard skips.
//!
//! The real `tensorboard` Python package reads what we write:
//! `tests/tensorboard_reads.rs` (set up by `scripts/setup-tensorboard`).

pub mod error;
pub mod histogram;
pub mod hparams;
pub mod proto;
pub mod reader;
pub mod record;
pub mod writer;

pub use error::{Result, TensorboardError};
pub use hparams::HValue;
pub use reader::{decode_events, read_events};
pub use record::masked_crc32c;
pub use writer::{Clock, EventWriter};
