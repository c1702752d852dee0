//! The real `tensorboard` Python package (2.21, from `scripts/setup-tensorboard`) loads our
//! event files and finds every scalar, histogram, image, text and hparams record with the
//! tags, steps and values we wrote, and its HParams tab (the plugin's ListSessionGroups)
//! shows one session group per run with its hparams and final score
//! (`read_with_tensorboard.py` prints what it found).
//!
//! The interpreter is `$MMERGE_TB_PYTHON`, else `<cache>/tb-venv/bin/python`; without it
//! the test fails naming the set-up script (scripts/test runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use mmerge_tensorboard::{Clock, histogram};
use serde_json::{Value, json};

const T: f64 = 1_700_000_000.5;
const RUNS: [&str; 2] = ["run-a", "run-b"];

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MMERGE_TB_PYTHON") {
        return PathBuf::from(p);
    }
    let p = mmerge_testkit::cache_dir().join("tb-venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-tensorboard (scripts/test does), or set MMERGE_TB_PYTHON",
        p.display()
    );
    p
}

fn read_with_tensorboard(logdir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_with_tensorboard.py");
    let python = python();
    let out = Command::new(&python)
        .arg(&script)
        .arg(logdir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup-tensorboard)", python.display()));
    assert!(
        out.status.success(),
        "{} {} failed ({}; run scripts/setup-tensorboard):\n{}",
        python.display(),
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A float as the script prints it: its f64 bits.
fn b(x: f64) -> Value {
    json!(x.to_bits())
}

fn expected_run(run: u8) -> Value {
    let mut scalars = serde_json::Map::new();
    for &(tag, step, value) in SCALARS {
        let series = scalars.entry(tag).or_insert_with(|| json!([]));
        series
            .as_array_mut()
            .unwrap()
            .push(json!([step, b(f64::from(value))]));
    }
    scalars.insert(METRIC.into(), json!([[20, b(f64::from(score(run)))]]));

    let h = histogram::histogram("", &histogram_values()).unwrap();
    let (htag, hstep) = HISTOGRAM;
    let (itag, istep, width, height) = IMAGE;
    let (ttag, tstep) = TEXT;
    let hp = config(run);
    let number = |k: &str| match &hp[k] {
        mmerge_tensorboard::HValue::Number(x) => b(*x),
        other => panic!("{other:?}"),
    };
    json!({
        "scalars": scalars,
        "histograms": { htag: [{
            "step": hstep,
            "min": b(h.min), "max": b(h.max), "num": b(h.num), "sum": b(h.sum),
            "sum_squares": b(h.sum_squares),
            "bucket_limit": h.bucket_limit.iter().map(|&x| b(x)).collect::<Vec<_>>(),
            "bucket": h.bucket.iter().map(|&x| b(x)).collect::<Vec<_>>(),
        }]},
        "images": { itag: [{
            "step": istep, "width": width, "height": height, "format": "PNG", "mode": "RGB",
            "rgb": image_rgb(),
        }]},
        "text": { ttag: [[tstep, MARKDOWN]] },
        "hparams": {
            "tags": ["_hparams_/experiment", "_hparams_/session_end_info", "_hparams_/session_start_info"],
            "experiment": {
                "hparams": [["lr", 3], ["optimizer", 1], ["tied", 2]],
                "metrics": [["", METRIC]],
            },
            "session_start": {
                "lr": { "number_value": number("lr") },
                "optimizer": { "string_value": (["adamw", "sgd"][usize::from(run)]) },
                "tied": { "bool_value": run == 0 },
            },
            "session_end": { "status": 1 },
        },
    })
}

#[test]
fn tensorboard_reads_every_kind() {
    let logdir = tempfile::tempdir().unwrap();
    for (run, name) in RUNS.iter().enumerate() {
        write_run(
            &logdir.path().join(name),
            run as u8,
            Clock::Fixed(T + run as f64),
        )
        .unwrap();
    }
    let got = read_with_tensorboard(logdir.path());
    for (run, name) in RUNS.iter().enumerate() {
        let want = expected_run(run as u8);
        for kind in ["scalars", "histograms", "images", "text", "hparams"] {
            assert_eq!(got["runs"][name][kind], want[kind], "run {name}, {kind}");
        }
        assert_eq!(got["runs"][name], want, "run {name}");
    }
    assert_eq!(got["runs"].as_object().unwrap().len(), RUNS.len());
    // The HParams tab: one session group per run, its hparams and final score.
    let groups: Vec<Value> = RUNS
        .iter()
        .enumerate()
        .map(|(run, name)| {
            let want = expected_run(run as u8);
            json!({
                "name": name,
                "hparams": want["hparams"]["session_start"],
                "metrics": [["", METRIC, 20, b(f64::from(score(run as u8)))]],
                "sessions": [[name, 1]],
            })
        })
        .collect();
    assert_eq!(got["session_groups"], json!(groups));
}
