//! [`EventWriter`]: appends summaries to one event file of a run folder.
//!
//! The file is `<run>/events.out.tfevents.<secs:010>.<hostname>.<pid>.<n>` (`n` counts the
//! writers this process made), created new (never overwritten); its first record is
//! `Event { file_version: "brain.Event:2" }`. Records go through a 64 KiB buffer and reach
//! the file on [`EventWriter::flush`], when the buffer fills, and on drop.
//!
//! Not an atomic write, unlike mmerge's other outputs: an event file is a log that
//! TensorBoard reads while it grows; it skips a truncated last record, so a crash costs at
//! most the unflushed records.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use image::ImageEncoder;
use prost::Message;

use crate::hparams::{self, HValue};
use crate::proto::{
    DT_STRING, Event, Image, PluginData, Summary, SummaryMetadata, SummaryValue, TensorProto,
    TensorShapeProto, event::What, summary_value::Value,
};
use crate::record::frame_into;
use crate::{Result, TensorboardError, histogram};

/// The `file_version` of the first record.
pub const FILE_VERSION: &str = "brain.Event:2";
/// `SummaryMetadata.data_class` of a tensor summary.
const DATA_CLASS_TENSOR: i32 = 2;

static FILES_MADE: AtomicU64 = AtomicU64::new(0);

/// Where event wall times come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clock {
    /// The system clock, seconds since the Unix epoch.
    System,
    /// Always this time: same calls, same bytes (tests, reproducible files).
    Fixed(f64),
}

impl Clock {
    fn now(self) -> f64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            Clock::Fixed(t) => t,
        }
    }
}

/// Writes one event file in a run folder (see the module doc).
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
    clock: Clock,
    created: f64,
    record: Vec<u8>,
}

impl EventWriter {
    /// A new event file in `run_dir` (created if missing), timed by the system clock.
    pub fn create(run_dir: &Path) -> Result<Self> {
        Self::with_clock(run_dir, Clock::System)
    }

    /// A new event file in `run_dir` whose events are timed by `clock`.
    pub fn with_clock(run_dir: &Path, clock: Clock) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(|e| TensorboardError::io(run_dir, e))?;
        let created = clock.now();
        let name = format!(
            "events.out.tfevents.{:010}.{}.{}.{}",
            created.max(0.0).floor() as u64,
            hostname(),
            std::process::id(),
            FILES_MADE.fetch_add(1, Ordering::Relaxed)
        );
        let path = run_dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| TensorboardError::io(&path, e))?;
        let mut writer = Self {
            path,
            file: BufWriter::with_capacity(1 << 16, file),
            clock,
            created,
            record: Vec::new(),
        };
        writer.write_event(&Event {
            wall_time: created,
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        })?;
        Ok(writer)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scalar (`simple_value`).
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        self.summary(step, vec![plain(tag, Value::SimpleValue(value))])
    }

    /// A histogram of `values` (buckets: see [`crate::histogram`]).
    pub fn histogram(&mut self, tag: &str, step: i64, values: &[f32]) -> Result<()> {
        let histo = histogram::histogram(tag, values)?;
        self.summary(step, vec![plain(tag, Value::Histo(histo))])
    }

    /// An RGB image, `rgb` holding `width × height` pixels row by row, 3 bytes each;
    /// stored as PNG.
    pub fn image(
        &mut self,
        tag: &str,
        step: i64,
        width: u32,
        height: u32,
        rgb: &[u8],
    ) -> Result<()> {
        let expected = width as usize * height as usize * 3;
        let (Ok(w), Ok(h)) = (i32::try_from(width), i32::try_from(height)) else {
            return Err(TensorboardError::ImageTooLarge {
                tag: tag.into(),
                width,
                height,
            });
        };
        if rgb.len() != expected {
            return Err(TensorboardError::ImageSize {
                tag: tag.into(),
                width,
                height,
                len: rgb.len(),
                expected,
            });
        }
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|source| TensorboardError::Png {
                tag: tag.into(),
                source,
            })?;
        let image = Image {
            height: h,
            width: w,
            colorspace: 3,
            encoded_image_string: png,
        };
        self.summary(step, vec![plain(tag, Value::Image(image))])
    }

    /// Markdown text (the text plugin: a rank-0 string tensor).
    pub fn text(&mut self, tag: &str, step: i64, markdown: &str) -> Result<()> {
        let value = SummaryValue {
            tag: tag.into(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "text".into(),
                    // TextPluginData { version: 0 } encodes to no bytes.
                    content: Vec::new(),
                }),
                data_class: DATA_CLASS_TENSOR,
                ..Default::default()
            }),
            value: Some(Value::Tensor(TensorProto {
                dtype: DT_STRING,
                tensor_shape: Some(TensorShapeProto::default()),
                string_val: vec![markdown.as_bytes().to_vec()],
                ..Default::default()
            })),
        };
        self.summary(step, vec![value])
    }

    /// This run as one HParams session: `config`'s values, and `metrics`, the tags of
    /// scalars this run logs (its final scores), to compare runs by (see
    /// [`crate::hparams`]). The session started when the writer was made and ends now.
    pub fn hparams(&mut self, config: &BTreeMap<String, HValue>, metrics: &[&str]) -> Result<()> {
        let now = self.clock.now();
        for value in hparams::summaries(config, metrics, self.created, now) {
            self.summary(0, vec![value])?;
        }
        Ok(())
    }

    /// Appends one event (buffered).
    pub fn write_event(&mut self, event: &Event) -> Result<()> {
        self.record.clear();
        frame_into(&event.encode_to_vec(), &mut self.record);
        self.file
            .write_all(&self.record)
            .map_err(|e| TensorboardError::io(&self.path, e))
    }

    /// Writes the buffered records to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| TensorboardError::io(&self.path, e))
    }

    fn summary(&mut self, step: i64, value: Vec<SummaryValue>) -> Result<()> {
        let event = Event {
            wall_time: self.clock.now(),
            step,
            what: Some(What::Summary(Summary { value })),
        };
        self.write_event(&event)
    }
}

impl Drop for EventWriter {
    /// Flushes; an error here is lost, so call [`EventWriter::flush`] to see it.
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

fn plain(tag: &str, value: Value) -> SummaryValue {
    SummaryValue {
        tag: tag.into(),
        metadata: None,
        value: Some(value),
    }
}

/// This machine's name for the file name (`localhost` when unknown); characters other than
/// ASCII letters, digits, `-`, `_` and `.` become `_`, so the name stays one path component.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
