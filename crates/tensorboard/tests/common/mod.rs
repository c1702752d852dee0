//! The runs both integration tests write: every summary kind with known tags, steps and
//! values, so each test checks what it reads back against these.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmerge_tensorboard::{Clock, EventWriter, HValue};

/// Scalars as (tag, step, value); `eval/score`'s value depends on the run.
pub const SCALARS: &[(&str, i64, f32)] = &[
    ("train/loss", 0, 2.5),
    ("train/loss", 10, 1.25),
    ("train/loss", 20, 0.625),
    ("train/lr", 0, 1e-3),
    ("train/lr", 20, 3.3e-4),
];
pub const METRIC: &str = "eval/score";
pub const HISTOGRAM: (&str, i64) = ("weights/layer0", 20);
pub const IMAGE: (&str, i64, u32, u32) = ("inputs/0", 20, 4, 3);
pub const TEXT: (&str, i64) = ("config", 0);
pub const MARKDOWN: &str = "# Config\n\n| key | value |\n|---|---|\n| lr | 0.001 |\n\nünïcode ✓";

/// The final score of run `run` (0 or 1).
pub fn score(run: u8) -> f32 {
    [0.75, 0.8125][usize::from(run)]
}

/// 1000 values in [−1, 1), with repeats and both range ends.
pub fn histogram_values() -> Vec<f32> {
    (0..1000)
        .map(|i| ((i * 37) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// The image's RGB bytes, row by row.
pub fn image_rgb() -> Vec<u8> {
    let (_, _, w, h) = IMAGE;
    (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| [(x * 60) as u8, (y * 100) as u8, (255 - x * y * 20) as u8])
        })
        .collect()
}

/// Run `run`'s hyperparameters.
pub fn config(run: u8) -> BTreeMap<String, HValue> {
    BTreeMap::from([
        (
            "lr".to_string(),
            HValue::Number([1e-3, 3e-4][usize::from(run)]),
        ),
        (
            "optimizer".to_string(),
            HValue::Text(["adamw", "sgd"][usize::from(run)].into()),
        ),
        ("tied".to_string(), HValue::Bool(run == 0)),
    ])
}

/// Writes run `run` into `dir` (every kind, in the order scalars, histogram, image, text,
/// final score, hparams) and returns the event file.
pub fn write_run(dir: &Path, run: u8, clock: Clock) -> anyhow::Result<PathBuf> {
    let mut w = EventWriter::with_clock(dir, clock)?;
    for &(tag, step, value) in SCALARS {
        w.scalar(tag, step, value)?;
    }
    w.histogram(HISTOGRAM.0, HISTOGRAM.1, &histogram_values())?;
    let (tag, step, width, height) = IMAGE;
    w.image(tag, step, width, height, &image_rgb())?;
    w.text(TEXT.0, TEXT.1, MARKDOWN)?;
    w.scalar(METRIC, 20, score(run))?;
    w.hparams(&config(run), &[METRIC])?;
    w.flush()?;
    Ok(w.path().to_path_buf())
}
