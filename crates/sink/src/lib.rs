//! The one logging sink of mmerge's training, evaluation and merge runs: progress bars,
//! messages, scalars, histograms, text, hyperparameters and final scores all go through one
//! [`Sink`], passed down as `&Sink` (it is `Send + Sync`; every method takes `&self`).
//!
//! **What goes where.** With [`SinkConfig::dir`] set to a run folder `<dir>` (created if
//! missing):
//!
//! ```text
//! <dir>/log.txt                        appended to: one line per message, scalar step or score
//! <dir>/metrics.json                   rewritten atomically by flush/finish: scores + last scalars
//! <dir>/tb/events.out.tfevents.*       TensorBoard events, when SinkConfig::tensorboard
//! ```
//!
//! Every line of `log.txt` starts with its UTC time, RFC 3339 to the second, and a space:
//! `2024-05-01T12:34:56Z <text>`, where `<text>` is a message ([`Sink::info`]; one line per
//! line of a multi-line message), `step <n> <tag>=<value> ...` ([`Sink::scalar`],
//! [`Sink::scalars`]), `score <name>=<value>` ([`Sink::score`]) or `hparams <name>=<value> ...`
//! ([`Sink::hparams`]). Values are printed as Rust's `{:?}` of an `f64`: the shortest text
//! that reads back as the same number (`0.25`, `1.0`, `1e-7`).
//!
//! `metrics.json` is, keys sorted:
//!
//! ```json
//! {"schema": "mmerge.metrics/1",
//!  "scores": {"<name>": <value>, ...},
//!  "last": {"<tag>": {"step": <n>, "value": <value>}, ...}}
//! ```
//!
//! `scores` holds [`Sink::score`]'s values, `last` the last (step, value) logged for each
//! scalar tag ([`Metrics`] reads it back). Without `dir` nothing is written to disk.
//!
//! **Terminal.** [`Sink::info`] also prints its message to stderr, through the active
//! progress bar (so the bar is not garbled); [`Sink::progress`] bars draw on stderr. Quiet
//! ([`SinkConfig::quiet`]) prints nothing, and bars are hidden when stderr is not a terminal.
//! [`Sink::hidden`] writes nothing and prints nothing (tests).
//!
//! **Refusals.** A NaN or infinite scalar is an error ([`SinkError::NotFinite`], naming the
//! tag and step): a diverged run must not be logged as if fine. Histograms refuse empty or
//! non-finite values, whether or not TensorBoard is on. A non-finite [`Sink::score`] is noted
//! in `log.txt` and left out of `metrics.json` (JSON has no NaN).
//!
//! **Writes.** `metrics.json` goes through [`mmerge_core::atomic::write_atomic`] (a reader sees
//! the old file or the new one). `log.txt` and the event file are logs that grow in place, the
//! project's one exception to atomic writes (`docs/architecture.md` §5): a crash costs at most
//! the records not yet flushed. TensorBoard stores scalars as `f32`; `metrics.json` and
//! `log.txt` keep the `f64`.
//!
//! Call [`Sink::finish`] at the end of a run: `metrics.json` is only written by
//! [`Sink::flush`] and [`Sink::finish`], not on drop.

pub mod error;
pub mod time;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, WeakProgressBar};
use mmerge_tensorboard::EventWriter;
use serde::{Deserialize, Serialize};

pub use error::{Result, SinkError};
pub use mmerge_tensorboard::HValue;

/// The log file's name in the run folder.
pub const LOG_FILE: &str = "log.txt";
/// The metrics file's name in the run folder.
pub const METRICS_FILE: &str = "metrics.json";
/// The TensorBoard folder's name in the run folder.
pub const TB_DIR: &str = "tb";
/// `metrics.json`'s `schema`.
pub const METRICS_SCHEMA: &str = "mmerge.metrics/1";
/// The progress bars' template (indicatif): name, bar, position/length, rate, time left.
pub const PROGRESS_TEMPLATE: &str = "{msg:>14} [{bar:40}] {pos}/{len} {per_sec} ({eta})";

/// Where a [`Sink`] writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkConfig {
    /// The run folder (created if missing); `None`: nothing is written to disk.
    pub dir: Option<PathBuf>,
    /// Write TensorBoard events under `<dir>/tb/` (ignored without `dir`).
    pub tensorboard: bool,
    /// Print nothing: no messages on stderr, hidden progress bars.
    pub quiet: bool,
}

/// `metrics.json` (see the crate doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Always [`METRICS_SCHEMA`].
    pub schema: String,
    /// Final scores by name ([`Sink::score`]).
    pub scores: BTreeMap<String, f64>,
    /// The last value logged for each scalar tag.
    pub last: BTreeMap<String, Last>,
}

/// The last value logged for a scalar tag.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Last {
    pub step: u64,
    pub value: f64,
}

/// The logging sink of one run (see the crate doc).
#[derive(Debug)]
pub struct Sink {
    dir: Option<PathBuf>,
    quiet: bool,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `<dir>/log.txt`, opened for appending.
    log: Option<(PathBuf, File)>,
    tb: Option<EventWriter>,
    scores: BTreeMap<String, f64>,
    last: BTreeMap<String, Last>,
    /// The most recent bar from [`Sink::progress`], to print messages through.
    bar: Option<WeakProgressBar>,
    /// The first error writing `log.txt` from a method that cannot return it
    /// ([`Sink::info`], [`Sink::score`]); returned by the next [`Sink::flush`].
    pending: Option<SinkError>,
}

/// A progress bar in the project's one style (name, bar, position / total, rate, ETA) of
/// `total` steps, hidden unless `show` and stderr is a terminal. [`Sink::progress`] makes its
/// bars with it; commands without a run folder (suite generation and checks) call it directly.
pub fn progress_bar(name: &str, total: u64, show: bool) -> ProgressBar {
    let bar = if !show || !std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
    } else {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(PROGRESS_TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    };
    bar.set_message(name.to_string());
    bar
}

impl Sink {
    /// A sink as `cfg` says. With a `dir`: creates it, opens `<dir>/log.txt` for appending
    /// and, with `tensorboard`, a new event file in `<dir>/tb/`.
    pub fn new(cfg: SinkConfig) -> Result<Sink> {
        let SinkConfig {
            dir,
            tensorboard,
            quiet,
        } = cfg;
        let (mut log, mut tb) = (None, None);
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
                path: dir.clone(),
                what: "creating the run folder",
                source,
            })?;
            let path = dir.join(LOG_FILE);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| SinkError::Io {
                    path: path.clone(),
                    what: "opening the log for appending",
                    source,
                })?;
            log = Some((path, file));
            if tensorboard {
                let tb_dir = dir.join(TB_DIR);
                tb = Some(EventWriter::create(&tb_dir).map_err(|source| {
                    SinkError::Tensorboard {
                        path: tb_dir,
                        what: "creating the event file",
                        source: Box::new(source),
                    }
                })?);
            }
        }
        Ok(Sink {
            dir,
            quiet,
            inner: Mutex::new(Inner {
                log,
                tb,
                scores: BTreeMap::new(),
                last: BTreeMap::new(),
                bar: None,
                pending: None,
            }),
        })
    }

    /// A sink that writes nothing and prints nothing (it still remembers scores and last
    /// scalars, see [`Sink::metrics`], and refuses non-finite scalars).
    pub fn hidden() -> Sink {
        Sink {
            dir: None,
            quiet: true,
            inner: Mutex::new(Inner {
                log: None,
                tb: None,
                scores: BTreeMap::new(),
                last: BTreeMap::new(),
                bar: None,
                pending: None,
            }),
        }
    }

    /// Whether this sink prints nothing.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// The run folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The TensorBoard event file, if any.
    pub fn event_file(&self) -> Option<PathBuf> {
        self.lock().tb.as_ref().map(|tb| tb.path().to_path_buf())
    }

    /// A progress bar of `total` steps labelled `name` ([`PROGRESS_TEMPLATE`]), on stderr;
    /// hidden when the sink is quiet or stderr is not a terminal. Until it is finished or
    /// dropped, [`Sink::info`] prints through it.
    pub fn progress(&self, name: &str, total: u64) -> ProgressBar {
        let bar = progress_bar(name, total, !self.quiet);
        self.lock().bar = Some(bar.downgrade());
        bar
    }

    /// Logs `msg`: one timestamped line per line of it in `log.txt`, and on stderr unless
    /// quiet. An error writing `log.txt` is returned by the next [`Sink::flush`].
    pub fn info(&self, msg: &str) {
        let mut inner = self.lock();
        let stamp = time::now_rfc3339();
        let mut text = String::new();
        for line in msg.lines() {
            text.push_str(&stamp);
            text.push(' ');
            text.push_str(line);
            text.push('\n');
        }
        if text.is_empty() {
            text = format!("{stamp} \n");
        }
        if let Err(e) = inner.append(&text) {
            inner.pending.get_or_insert(e);
        }
        if !self.quiet {
            inner.eprint(msg);
        }
    }

    /// Logs scalar `tag` at `step`: a TensorBoard scalar, the tag's last value in
    /// `metrics.json` and the line `step <step> <tag>=<value>` in `log.txt`. Refuses a NaN or
    /// infinite `value` ([`SinkError::NotFinite`]), writing nothing.
    pub fn scalar(&self, tag: &str, step: u64, value: f64) -> Result<()> {
        self.scalars(step, &[(tag, value)])
    }

    /// Logs several scalars of one step, as [`Sink::scalar`] each, but as ONE line
    /// `step <step> <tag>=<value> <tag>=<value> ...` in `log.txt`. Refuses them all, writing
    /// nothing, if one is not finite. No values: nothing is logged.
    pub fn scalars(&self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        for &(tag, value) in values {
            if !value.is_finite() {
                return Err(SinkError::NotFinite {
                    tag: tag.into(),
                    step,
                    value,
                });
            }
        }
        let Some(&(first, _)) = values.first() else {
            return Ok(());
        };
        let tb_step = tb_step(first, step)?;
        let mut inner = self.lock();
        let mut line = format!("step {step}");
        for &(tag, value) in values {
            if let Some(tb) = &mut inner.tb {
                tb.scalar(tag, tb_step, value as f32)
                    .map_err(|source| SinkError::Tensorboard {
                        path: tb.path().to_path_buf(),
                        what: "writing a scalar",
                        source: Box::new(source),
                    })?;
            }
            inner.last.insert(tag.into(), Last { step, value });
            line.push_str(&format!(" {tag}={value:?}"));
        }
        inner.append_line(&line)
    }

    /// A TensorBoard histogram of `values` (nothing without TensorBoard). Refuses no values
    /// or a non-finite one, with or without TensorBoard.
    pub fn histogram(&self, tag: &str, step: u64, values: &[f32]) -> Result<()> {
        if values.is_empty() {
            return Err(SinkError::EmptyHistogram {
                tag: tag.into(),
                step,
            });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SinkError::HistogramNotFinite {
                tag: tag.into(),
                step,
                index,
                value,
            });
        }
        let tb_step = tb_step(tag, step)?;
        let mut inner = self.lock();
        if let Some(tb) = &mut inner.tb {
            tb.histogram(tag, tb_step, values)
                .map_err(|source| SinkError::Tensorboard {
                    path: tb.path().to_path_buf(),
                    what: "writing a histogram",
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// A TensorBoard RGB image, `rgb` row by row, 3 bytes a pixel (nothing without
    /// TensorBoard).
    pub fn image(&self, tag: &str, step: u64, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
        let tb_step = tb_step(tag, step)?;
        let mut inner = self.lock();
        if let Some(tb) = &mut inner.tb {
            tb.image(tag, tb_step, width, height, rgb)
                .map_err(|source| SinkError::Tensorboard {
                    path: tb.path().to_path_buf(),
                    what: "writing an image",
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// TensorBoard markdown text (nothing without TensorBoard).
    pub fn text(&self, tag: &str, step: u64, markdown: &str) -> Result<()> {
        let tb_step = tb_step(tag, step)?;
        let mut inner = self.lock();
        if let Some(tb) = &mut inner.tb {
            tb.text(tag, tb_step, markdown)
                .map_err(|source| SinkError::Tensorboard {
                    path: tb.path().to_path_buf(),
                    what: "writing text",
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// The run's hyperparameters `config` and the scalar tags `metrics` to compare runs by:
    /// TensorBoard's HParams summaries ([`EventWriter::hparams`]) and the line
    /// `hparams <name>=<value> ...` in `log.txt`.
    pub fn hparams(&self, config: &BTreeMap<String, HValue>, metrics: &[&str]) -> Result<()> {
        let mut inner = self.lock();
        if let Some(tb) = &mut inner.tb {
            tb.hparams(config, metrics)
                .map_err(|source| SinkError::Tensorboard {
                    path: tb.path().to_path_buf(),
                    what: "writing the hparams",
                    source: Box::new(source),
                })?;
        }
        let mut line = String::from("hparams");
        for (name, value) in config {
            match value {
                HValue::Bool(b) => line.push_str(&format!(" {name}={b}")),
                HValue::Number(x) => line.push_str(&format!(" {name}={x:?}")),
                HValue::Text(s) => line.push_str(&format!(" {name}={s:?}")),
            }
        }
        inner.append_line(&line)
    }

    /// A final score `name` for `metrics.json` (a later one replaces it) and the line
    /// `score <name>=<value>` in `log.txt`. A NaN or infinite score is left out of
    /// `metrics.json` (and any earlier score of that name removed); the line then says so.
    pub fn score(&self, name: &str, value: f64) {
        let mut inner = self.lock();
        let line = if value.is_finite() {
            inner.scores.insert(name.into(), value);
            format!("score {name}={value:?}")
        } else {
            inner.scores.remove(name);
            format!("score {name}={value:?} (not finite: left out of {METRICS_FILE})")
        };
        if let Err(e) = inner.append_line(&line) {
            inner.pending.get_or_insert(e);
        }
    }

    /// The scores and last scalars so far, as `metrics.json` would hold them.
    pub fn metrics(&self) -> Metrics {
        self.lock().metrics()
    }

    /// Writes buffered TensorBoard records to the event file and rewrites `metrics.json`
    /// atomically (with a `dir`). Returns an earlier error writing `log.txt`, if any.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.lock();
        if let Some(e) = inner.pending.take() {
            return Err(e);
        }
        if let Some(tb) = &mut inner.tb {
            tb.flush().map_err(|source| SinkError::Tensorboard {
                path: tb.path().to_path_buf(),
                what: "flushing",
                source: Box::new(source),
            })?;
        }
        if let Some(dir) = &self.dir {
            let path = dir.join(METRICS_FILE);
            let bytes = mmerge_core::json::to_pretty(&inner.metrics()).map_err(|source| {
                SinkError::Encode {
                    path: path.clone(),
                    source,
                }
            })?;
            mmerge_core::atomic::write_atomic(&path, &bytes).map_err(|source| {
                SinkError::Write {
                    path,
                    source: Box::new(source),
                }
            })?;
        }
        Ok(())
    }

    /// Ends the run: [`Sink::flush`]. Calling it again rewrites the same files (idempotent);
    /// the sink stays usable.
    pub fn finish(&self) -> Result<()> {
        self.flush()
    }

    /// The state, even if a thread panicked while holding it (every update leaves it
    /// consistent: each field is replaced whole).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("log", &self.log)
            .field("tb", &self.tb)
            .field("scores", &self.scores)
            .field("last", &self.last)
            .field("bar", &self.bar.as_ref().map(|_| "WeakProgressBar"))
            .field("pending", &self.pending)
            .finish()
    }
}

impl Inner {
    /// Appends `text` (whole lines) to `log.txt`, if any.
    fn append(&mut self, text: &str) -> Result<()> {
        if let Some((path, file)) = &mut self.log {
            file.write_all(text.as_bytes())
                .map_err(|source| SinkError::Io {
                    path: path.clone(),
                    what: "appending to the log",
                    source,
                })?;
        }
        Ok(())
    }

    /// Appends `<time> <line>\n` to `log.txt`, if any.
    fn append_line(&mut self, line: &str) -> Result<()> {
        if self.log.is_none() {
            return Ok(());
        }
        self.append(&format!("{} {line}\n", time::now_rfc3339()))
    }

    /// Prints `msg` on stderr, through the active progress bar if there is one.
    fn eprint(&mut self, msg: &str) {
        let bar = self.bar.as_ref().and_then(WeakProgressBar::upgrade);
        match bar {
            Some(bar) if !bar.is_finished() && !bar.is_hidden() => {
                bar.suspend(|| eprintln!("{msg}"));
            }
            _ => {
                self.bar = None;
                eprintln!("{msg}");
            }
        }
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            schema: METRICS_SCHEMA.into(),
            scores: self.scores.clone(),
            last: self.last.clone(),
        }
    }
}

/// `step` as a TensorBoard step.
fn tb_step(tag: &str, step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| SinkError::StepTooLarge {
        tag: tag.into(),
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn sink_is_send_and_sync() {
        assert_send_sync::<Sink>();
    }

    #[test]
    fn hidden_remembers_but_is_quiet() -> Result<()> {
        let sink = Sink::hidden();
        assert!(sink.quiet());
        assert_eq!(sink.dir(), None);
        assert_eq!(sink.event_file(), None);
        sink.scalars(3, &[("a", 0.5), ("b", -2.0)])?;
        sink.scalar("a", 4, 0.25)?;
        sink.score("acc", 0.75);
        sink.score("bad", f64::NAN);
        let m = sink.metrics();
        assert_eq!(m.schema, "mmerge.metrics/1");
        assert_eq!(m.scores, BTreeMap::from([("acc".to_string(), 0.75)]));
        assert_eq!(
            m.last,
            BTreeMap::from([
                (
                    "a".to_string(),
                    Last {
                        step: 4,
                        value: 0.25
                    }
                ),
                (
                    "b".to_string(),
                    Last {
                        step: 3,
                        value: -2.0
                    }
                ),
            ])
        );
        Ok(())
    }

    #[test]
    fn step_beyond_i64_is_refused() {
        let sink = Sink::hidden();
        let step = i64::MAX as u64 + 1;
        match sink.scalar("loss", step, 1.0) {
            Err(SinkError::StepTooLarge { tag, step: s }) => {
                assert_eq!(tag, "loss");
                assert_eq!(s, step);
            }
            other => panic!("expected StepTooLarge, got {other:?}"),
        }
        assert!(sink.metrics().last.is_empty());
    }

    #[test]
    fn empty_scalars_log_nothing() -> Result<()> {
        let sink = Sink::hidden();
        sink.scalars(1, &[])?;
        assert!(sink.metrics().last.is_empty());
        Ok(())
    }
}
