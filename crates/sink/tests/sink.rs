//! A sink with a run folder writes exactly the documented files (log.txt lines, metrics.json,
//! TensorBoard events read back with `read_events`); a hidden or quiet sink writes and prints
//! nothing; non-finite values are refused; metrics.json is replaced atomically.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mmerge_sink::{HValue, Last, Metrics, Sink, SinkConfig, SinkError};
use mmerge_tensorboard::proto::{Event, SummaryValue, event::What, summary_value::Value};
use mmerge_tensorboard::{histogram, hparams, read_events};

fn run_sink(dir: &Path, tensorboard: bool) -> Sink {
    Sink::new(SinkConfig {
        dir: Some(dir.to_path_buf()),
        tensorboard,
        quiet: true,
    })
    .unwrap()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The lines of log.txt with their timestamps checked and removed.
fn log_lines(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| {
            let (stamp, rest) = line.split_at(20);
            let b = stamp.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                match i {
                    4 | 7 => assert_eq!(c, b'-', "{line}"),
                    10 => assert_eq!(c, b'T', "{line}"),
                    13 | 16 => assert_eq!(c, b':', "{line}"),
                    19 => assert_eq!(c, b'Z', "{line}"),
                    _ => assert!(c.is_ascii_digit(), "{line}"),
                }
            }
            rest.strip_prefix(' ').unwrap().to_string()
        })
        .collect()
}

fn read_metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

fn event_file(dir: &Path) -> PathBuf {
    let tb = dir.join("tb");
    let files = names(&tb);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("events.out.tfevents."), "{files:?}");
    tb.join(&files[0])
}

fn summary(event: &Event) -> &SummaryValue {
    match &event.what {
        Some(What::Summary(s)) => {
            assert_eq!(s.value.len(), 1);
            &s.value[0]
        }
        other => panic!("not a summary: {other:?}"),
    }
}

/// (tag, step, value) of every scalar event.
fn scalars_of(events: &[Event]) -> Vec<(String, i64, f32)> {
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => match s.value.as_slice() {
                [
                    SummaryValue {
                        tag,
                        value: Some(Value::SimpleValue(v)),
                        ..
                    },
                ] => Some((tag.clone(), e.step, *v)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn run_folder_gets_log_metrics_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run/a"); // created, parents too
    let sink = run_sink(&dir, true);
    assert_eq!(sink.dir(), Some(dir.as_path()));
    assert!(sink.quiet());

    sink.info("starting");
    sink.info("two\nlines");
    sink.scalar("train/loss", 1, 2.5).unwrap();
    sink.scalars(2, &[("train/loss", 1.25), ("train/lr", 1e-4)])
        .unwrap();
    sink.scalar("train/loss", 3, 0.5).unwrap();
    sink.histogram("w", 3, &[1.0, 2.0, 2.0, 4.0]).unwrap();
    sink.text("notes", 3, "**bold**").unwrap();
    let config = BTreeMap::from([
        ("lr".to_string(), HValue::Number(0.001)),
        ("method".to_string(), HValue::Text("ties".into())),
        ("shuffle".to_string(), HValue::Bool(true)),
    ]);
    sink.hparams(&config, &["eval/acc"]).unwrap();
    sink.score("eval/acc", 0.875);
    sink.score("eval/loss", 0.3);
    sink.score("eval/acc", 0.9375); // replaces
    sink.finish().unwrap();
    sink.finish().unwrap(); // idempotent

    assert_eq!(names(&dir), ["log.txt", "metrics.json", "tb"]);
    assert_eq!(
        log_lines(&dir),
        [
            "starting",
            "two",
            "lines",
            "step 1 train/loss=2.5",
            "step 2 train/loss=1.25 train/lr=0.0001",
            "step 3 train/loss=0.5",
            "hparams lr=0.001 method=\"ties\" shuffle=true",
            "score eval/acc=0.875",
            "score eval/loss=0.3",
            "score eval/acc=0.9375",
        ]
    );

    let m = read_metrics(&dir);
    assert_eq!(
        m,
        serde_json::json!({
            "schema": "mmerge.metrics/1",
            "scores": {"eval/acc": 0.9375, "eval/loss": 0.3},
            "last": {
                "train/loss": {"step": 3, "value": 0.5},
                "train/lr": {"step": 2, "value": 0.0001},
            },
        })
    );
    // Keys sorted, pretty, trailing newline; and the typed reader agrees.
    let bytes = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    assert!(bytes.ends_with("}\n"));
    let (acc, lossk) = (
        bytes.find("eval/acc").unwrap(),
        bytes.find("eval/loss").unwrap(),
    );
    assert!(acc < lossk);
    let typed: Metrics = serde_json::from_str(&bytes).unwrap();
    assert_eq!(typed, sink.metrics());
    assert_eq!(
        typed.last["train/loss"],
        Last {
            step: 3,
            value: 0.5
        }
    );

    let path = event_file(&dir);
    assert_eq!(sink.event_file(), Some(path.clone()));
    let events = read_events(&path).unwrap();
    // file version, 4 scalars, histogram, text, 3 hparams
    assert_eq!(events.len(), 10);
    assert_eq!(
        events[0].what,
        Some(What::FileVersion("brain.Event:2".into()))
    );
    assert_eq!(
        scalars_of(&events),
        [
            ("train/loss".to_string(), 1, 2.5f32),
            ("train/loss".to_string(), 2, 1.25),
            ("train/lr".to_string(), 2, 1e-4),
            ("train/loss".to_string(), 3, 0.5),
        ]
    );
    let h = summary(&events[5]);
    assert_eq!((h.tag.as_str(), events[5].step), ("w", 3));
    let want = histogram::histogram("w", &[1.0, 2.0, 2.0, 4.0]).unwrap();
    assert_eq!(h.value, Some(Value::Histo(want.clone())));
    assert_eq!(
        (want.min, want.max, want.num, want.sum),
        (1.0, 4.0, 4.0, 9.0)
    );
    let t = summary(&events[6]);
    assert_eq!((t.tag.as_str(), events[6].step), ("notes", 3));
    match &t.value {
        Some(Value::Tensor(tensor)) => {
            assert_eq!(tensor.string_val, [b"**bold**".to_vec()]);
        }
        other => panic!("not a text tensor: {other:?}"),
    }
    assert_eq!(
        t.metadata
            .as_ref()
            .unwrap()
            .plugin_data
            .as_ref()
            .unwrap()
            .plugin_name,
        "text"
    );
    let tags: Vec<&str> = events[7..]
        .iter()
        .map(|e| summary(e).tag.as_str())
        .collect();
    assert_eq!(
        tags,
        [
            hparams::EXPERIMENT_TAG,
            hparams::SESSION_START_TAG,
            hparams::SESSION_END_TAG
        ]
    );
}

#[test]
fn without_tensorboard_there_is_no_tb_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = run_sink(tmp.path(), false);
    assert_eq!(sink.event_file(), None);
    sink.scalar("loss", 7, 0.125).unwrap();
    sink.histogram("w", 7, &[1.0]).unwrap();
    sink.text("t", 7, "x").unwrap();
    sink.hparams(&BTreeMap::new(), &[]).unwrap();
    sink.finish().unwrap();
    assert_eq!(names(tmp.path()), ["log.txt", "metrics.json"]);
    assert_eq!(log_lines(tmp.path()), ["step 7 loss=0.125", "hparams"]);
    assert_eq!(
        read_metrics(tmp.path()),
        serde_json::json!({
            "schema": "mmerge.metrics/1",
            "scores": {},
            "last": {"loss": {"step": 7, "value": 0.125}},
        })
    );
}

#[test]
fn a_second_sink_appends_to_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let sink = run_sink(tmp.path(), true);
        sink.info("first run");
        sink.finish().unwrap();
    }
    let sink = run_sink(tmp.path(), true);
    sink.info("second run");
    sink.score("acc", 0.5);
    sink.finish().unwrap();
    assert_eq!(
        log_lines(tmp.path()),
        ["first run", "second run", "score acc=0.5"]
    );
    // Each sink made its own event file; metrics.json is the second run's.
    assert_eq!(names(&tmp.path().join("tb")).len(), 2);
    assert_eq!(
        read_metrics(tmp.path()),
        serde_json::json!({"schema": "mmerge.metrics/1", "scores": {"acc": 0.5}, "last": {}})
    );
}

#[test]
fn nan_and_infinite_scalars_are_refused_and_not_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = run_sink(tmp.path(), true);
    sink.scalar("loss", 1, 0.75).unwrap();

    let err = sink.scalar("loss", 2, f64::NAN).unwrap_err();
    match &err {
        SinkError::NotFinite { tag, step, value } => {
            assert_eq!((tag.as_str(), *step), ("loss", 2));
            assert!(value.is_nan());
        }
        other => panic!("expected NotFinite, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "scalar \"loss\" at step 2 is NaN, not a finite number; refusing to log it"
    );
    // One bad value refuses the whole step: nothing of it is logged.
    let err = sink
        .scalars(3, &[("loss", 0.5), ("grad_norm", f64::INFINITY)])
        .unwrap_err();
    match &err {
        SinkError::NotFinite { tag, step, value } => {
            assert_eq!(
                (tag.as_str(), *step, *value),
                ("grad_norm", 3, f64::INFINITY)
            );
        }
        other => panic!("expected NotFinite, got {other:?}"),
    }
    match sink.histogram("w", 3, &[1.0, f32::NAN]).unwrap_err() {
        SinkError::HistogramNotFinite {
            tag, step, index, ..
        } => assert_eq!((tag.as_str(), step, index), ("w", 3, 1)),
        other => panic!("expected HistogramNotFinite, got {other:?}"),
    }
    match sink.histogram("w", 4, &[]).unwrap_err() {
        SinkError::EmptyHistogram { tag, step } => assert_eq!((tag.as_str(), step), ("w", 4)),
        other => panic!("expected EmptyHistogram, got {other:?}"),
    }
    // A non-finite score is noted but kept out of metrics.json (and drops an earlier one).
    sink.score("acc", 0.5);
    sink.score("acc", f64::NAN);
    sink.score("f1", 0.25);
    sink.finish().unwrap();

    assert_eq!(
        log_lines(tmp.path()),
        [
            "step 1 loss=0.75",
            "score acc=0.5",
            "score acc=NaN (not finite: left out of metrics.json)",
            "score f1=0.25",
        ]
    );
    assert_eq!(
        read_metrics(tmp.path()),
        serde_json::json!({
            "schema": "mmerge.metrics/1",
            "scores": {"f1": 0.25},
            "last": {"loss": {"step": 1, "value": 0.75}},
        })
    );
    let events = read_events(&event_file(tmp.path())).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(scalars_of(&events), [("loss".to_string(), 1, 0.75f32)]);
}

#[test]
fn metrics_json_is_replaced_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = run_sink(tmp.path(), false);
    sink.score("acc", 0.5);
    sink.flush().unwrap();
    let first = std::fs::read(tmp.path().join("metrics.json")).unwrap();
    assert_eq!(
        read_metrics(tmp.path()),
        serde_json::json!({"schema": "mmerge.metrics/1", "scores": {"acc": 0.5}, "last": {}})
    );

    sink.score("acc", 0.625);
    sink.scalar("loss", 10, 0.0).unwrap();
    sink.finish().unwrap();
    assert_ne!(
        std::fs::read(tmp.path().join("metrics.json")).unwrap(),
        first
    );
    assert_eq!(
        read_metrics(tmp.path()),
        serde_json::json!({
            "schema": "mmerge.metrics/1",
            "scores": {"acc": 0.625},
            "last": {"loss": {"step": 10, "value": 0.0}},
        })
    );
    // No temporary sibling left behind.
    assert_eq!(names(tmp.path()), ["log.txt", "metrics.json"]);

    // finish twice gives the same bytes.
    let before = std::fs::read(tmp.path().join("metrics.json")).unwrap();
    sink.finish().unwrap();
    assert_eq!(
        std::fs::read(tmp.path().join("metrics.json")).unwrap(),
        before
    );
    assert_eq!(names(tmp.path()), ["log.txt", "metrics.json"]);
}

#[test]
fn a_metrics_write_failure_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = run_sink(tmp.path(), false);
    // A folder where metrics.json should go: the rename over it fails.
    std::fs::create_dir(tmp.path().join("metrics.json")).unwrap();
    std::fs::write(tmp.path().join("metrics.json/keep"), b"x").unwrap();
    let err = sink.finish().unwrap_err();
    match &err {
        SinkError::Write { path, .. } => assert_eq!(path, &tmp.path().join("metrics.json")),
        other => panic!("expected Write, got {other:?}"),
    }
    assert!(err.to_string().contains("metrics.json"), "{err}");
    // ... and leaves no temporary file.
    assert_eq!(names(tmp.path()), ["log.txt", "metrics.json"]);
}

#[test]
fn a_run_folder_that_is_a_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Sink::new(SinkConfig {
        dir: Some(file.clone()),
        tensorboard: true,
        quiet: true,
    })
    .unwrap_err();
    match &err {
        SinkError::Io { path, what, .. } => {
            assert_eq!(path, &file);
            assert_eq!(*what, "creating the run folder");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn quiet_sinks_hide_their_progress_bars() {
    let tmp = tempfile::tempdir().unwrap();
    let quiet = run_sink(tmp.path(), false);
    let bar = quiet.progress("merge", 12);
    assert!(bar.is_hidden());
    assert_eq!(bar.length(), Some(12));
    assert_eq!(bar.message(), "merge");
    bar.inc(5);
    assert_eq!(bar.position(), 5);
    quiet.info("through a hidden bar");
    bar.finish_and_clear();

    let hidden = Sink::hidden();
    assert!(hidden.quiet());
    assert!(hidden.progress("x", 3).is_hidden());

    // Not quiet, but stderr under `cargo test` is not a terminal (or is captured): the bar
    // is hidden only when stderr is not a terminal.
    let loud = Sink::new(SinkConfig::default()).unwrap();
    assert!(!loud.quiet());
    let bar = loud.progress("eval", 4);
    use std::io::IsTerminal;
    assert_eq!(bar.is_hidden(), !std::io::stderr().is_terminal());
    assert_eq!(bar.length(), Some(4));
}

#[test]
fn hidden_sink_writes_nothing() {
    let sink = Sink::hidden();
    assert_eq!(sink.dir(), None);
    assert_eq!(sink.event_file(), None);
    sink.info("x");
    sink.scalar("loss", 1, 0.5).unwrap();
    sink.histogram("w", 1, &[0.5]).unwrap();
    sink.text("t", 1, "x").unwrap();
    sink.hparams(&BTreeMap::new(), &["acc"]).unwrap();
    sink.score("acc", 1.0);
    sink.finish().unwrap();
    // What it would have written, in memory only.
    assert_eq!(
        sink.metrics(),
        Metrics {
            schema: "mmerge.metrics/1".into(),
            scores: BTreeMap::from([("acc".to_string(), 1.0)]),
            last: BTreeMap::from([(
                "loss".to_string(),
                Last {
                    step: 1,
                    value: 0.5
                }
            )]),
        }
    );
    // And nothing on disk or on stderr: see `child_process_output`.
}

/// Child mode for [`child_process_output`]: runs in a fresh empty working folder with
/// stderr a pipe; does nothing when run as an ordinary test.
#[test]
fn child() {
    let Ok(mode) = std::env::var("MMERGE_SINK_TEST_CHILD") else {
        return;
    };
    let sink = match mode.as_str() {
        "hidden" => Sink::hidden(),
        "quiet" => Sink::new(SinkConfig {
            dir: Some("run".into()),
            tensorboard: true,
            quiet: true,
        })
        .unwrap(),
        "loud" => Sink::new(SinkConfig::default()).unwrap(),
        other => panic!("unknown child mode {other}"),
    };
    let bar = sink.progress("steps", 2);
    sink.info("hello from the child");
    bar.inc(1);
    sink.scalar("loss", 1, 0.5).unwrap();
    sink.score("acc", 1.0);
    bar.finish();
    sink.info("after the bar");
    sink.finish().unwrap();
}

/// Runs [`child`] in a child process; returns (its stderr, the names in its working folder).
fn run_child(mode: &str) -> (String, Vec<String>) {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("MMERGE_SINK_TEST_CHILD", mode)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{mode}: {stdout}");
    assert!(stdout.contains("1 passed"), "{mode}: {stdout}");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        names(cwd.path()),
    )
}

#[test]
fn child_process_output() {
    // Loud: messages reach stderr (so the quiet checks below can fail), bar hidden (a pipe).
    let (stderr, files) = run_child("loud");
    assert_eq!(stderr, "hello from the child\nafter the bar\n");
    assert!(files.is_empty(), "{files:?}");

    // Quiet: nothing on stderr, files only in the run folder.
    let (stderr, files) = run_child("quiet");
    assert_eq!(stderr, "");
    assert_eq!(files, ["run"]);

    // Hidden: nothing on stderr, nothing on disk.
    let (stderr, files) = run_child("hidden");
    assert_eq!(stderr, "");
    assert!(files.is_empty(), "{files:?}");
}

#[test]
fn an_image_is_stored_as_a_png_of_its_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let sink = run_sink(&dir, true);
    let rgb: Vec<u8> = (0..2 * 3 * 3).map(|i| (i * 13) as u8).collect();
    sink.image("inputs/0", 4, 2, 3, &rgb).unwrap();
    assert!(sink.image("inputs/1", 4, 2, 2, &rgb).is_err(), "wrong size");
    sink.finish().unwrap();
    let events = read_events(&event_file(&dir)).unwrap();
    let s = summary(&events[1]);
    assert_eq!((s.tag.as_str(), events[1].step), ("inputs/0", 4));
    let Some(Value::Image(im)) = &s.value else {
        panic!("not an image: {:?}", s.value)
    };
    assert_eq!((im.width, im.height, im.colorspace), (2, 3, 3));
    let png = image::load_from_memory(&im.encoded_image_string)
        .unwrap()
        .to_rgb8();
    assert_eq!(png.into_raw(), rgb);
}
