//! The `mmerge` binary end to end: `distance --json` follows its schema and agrees with the
//! library, `demo` runs, a missing model is named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mergekit/models")
        .join(model)
}

fn mmerge(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn distance_json_follows_the_schema_and_matches_the_library() {
    let (a, b, base) = (fixture("a"), fixture("b"), fixture("base"));
    let out = mmerge(&[
        "distance".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--base".as_ref(),
        base.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "mmerge.distance/1");
    assert_eq!(json["mode"], "task_vectors");
    let layers: Vec<&str> = json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["pre", "0", "1", "2", "3", "post"]);
    let ca = mmerge_core::Checkpoint::open(&a).unwrap();
    let cb = mmerge_core::Checkpoint::open(&b).unwrap();
    let cw = mmerge_core::Checkpoint::open(&base).unwrap();
    let lib = mmerge_distance::compare(&ca, &cb, Some(&cw), &Default::default()).unwrap();
    // serde_json's default float parser may differ from the printed value in the last bit.
    let want = lib.to_json();
    for (k, v) in want["aggregate"].as_object().unwrap() {
        let (g, w) = (json["aggregate"][k].as_f64().unwrap(), v.as_f64().unwrap());
        assert!(
            (g - w).abs() <= 1e-14 * w.abs(),
            "aggregate {k}: {g} vs {w}"
        );
    }
    assert_eq!(json["tensors"].as_array().unwrap().len(), ca.len());
}

#[test]
fn demo_merges_and_prints_distances() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mmerge(&["demo".as_ref(), "--dir".as_ref(), tmp.path().as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("merged 39 tensors") && text.contains("with ties"),
        "{text}"
    );
    assert!(text.contains("expert_a vs merged"), "{text}");
    let merged = mmerge_core::Checkpoint::open(tmp.path().join("merged")).unwrap();
    assert_eq!(merged.len(), 39);
    assert!(tmp.path().join("merged/config.json").is_file());
}

#[test]
fn a_missing_model_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("m.yml");
    std::fs::write(
        &cfg,
        format!(
            "merge_method: linear\nmodels:\n  - model: {}\n    parameters: {{weight: 1}}\n  - model: /nonexistent/model\n    parameters: {{weight: 1}}\n",
            fixture("a").display()
        ),
    )
    .unwrap();
    let out = mmerge(&[
        "merge".as_ref(),
        cfg.as_os_str(),
        tmp.path().join("out").as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/model: No such file or directory"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn an_existing_output_gets_the_cli_advice_once() {
    // The libraries say the output exists; the CLI adds how to replace it, for merge and data
    // outputs alike, exactly once.
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("exists");
    std::fs::create_dir(&dst).unwrap();
    let cfg = tmp.path().join("m.yml");
    std::fs::write(
        &cfg,
        format!(
            "merge_method: linear\nmodels:\n  - model: {}\n    parameters: {{weight: 1}}\n",
            fixture("a").display()
        ),
    )
    .unwrap();
    let want = format!(
        "error: output {} already exists; pass --force to replace it\n",
        dst.display()
    );
    let merge = mmerge(&["merge".as_ref(), cfg.as_os_str(), dst.as_os_str()]);
    let synth = mmerge(&[
        "data".as_ref(),
        "synth".as_ref(),
        "--scale".as_ref(),
        "tiny".as_ref(),
        "--out".as_ref(),
        dst.as_os_str(),
    ]);
    for out in [merge, synth] {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    }
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
}
