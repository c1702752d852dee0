//! Same output as mergekit: every case under `tests/fixtures/mergekit/cases` is merged by the
//! `mmerge` binary (run from the fixture folder, so the configs' relative model paths resolve
//! as they did for mergekit) and compared, tensor by tensor, with what mergekit 0.1.5 wrote
//! (`tests/fixtures/mergekit/make_fixtures.py` made both).
//!
//! Tolerance: |ours − mergekit| ≤ 1e-6 · max(1, |mergekit|) per element (f32). A purely
//! relative bound is meaningless for entries near zero that come out of cancellation (mergekit
//! itself computes in f32; we compute in f64 and round once).
//!
//! Cases whose config sets a half `dtype` (`mmerge_merge::numerics::GOLDENS`) are left to
//! `mergekit_numerics.rs`, which compares them bit for bit under `numerics: mergekit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mmerge_core::Checkpoint;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mergekit")
}

/// Whether a case computes in a half dtype (compared in `mergekit_numerics.rs`).
fn is_half(case: &str) -> bool {
    mmerge_merge::numerics::GOLDENS.contains(&case)
}

fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|c| !is_half(c))
        .collect();
    v.sort();
    v
}

/// Cases mmerge refuses on purpose, with the reason it gives: mergekit silently ignores a
/// per-model setting of a shared parameter, which hides a mistake in the config.
const REFUSED: [(&str, &str); 1] = [(
    "slerp_models_permodel_t",
    "parameter `t` is shared by all models of a merge; set it in the top-level or slice `parameters`",
)];

fn merge(case: &str, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .current_dir(fixtures())
        .args(["merge", &format!("cases/{case}.yml")])
        .arg(out)
        .output()
        .unwrap()
}

fn run_case(case: &str, out: &Path) {
    let status = merge(case, out);
    assert!(
        status.status.success(),
        "{case}: mmerge failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn every_case_matches_mergekit() {
    let cases = cases();
    assert!(cases.len() >= 13, "fixture cases missing: {cases:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = (0f64, String::new());
    for case in &cases {
        let out = tmp.path().join(case);
        if let Some((_, why)) = REFUSED.iter().find(|(c, _)| c == case) {
            let o = merge(case, &out);
            assert!(
                !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(why),
                "{case}"
            );
            continue;
        }
        run_case(case, &out);
        let ours = Checkpoint::open(&out).unwrap();
        let theirs = Checkpoint::open(fixtures().join("expected").join(case)).unwrap();
        let mut a: Vec<&String> = ours.names().iter().collect();
        let mut b: Vec<&String> = theirs.names().iter().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{case}: tensor names differ");
        for name in theirs.names() {
            let want = theirs.read_f32(name).unwrap();
            let got = ours.read_f32(name).unwrap();
            assert_eq!(
                ours.meta(name).unwrap().shape,
                theirs.meta(name).unwrap().shape,
                "{case} {name}"
            );
            assert_eq!(
                ours.meta(name).unwrap().dtype,
                theirs.meta(name).unwrap().dtype,
                "{case} {name}"
            );
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = f64::from((g - w).abs()) / f64::from(w.abs()).max(1.0);
                assert!(err <= 1e-6, "{case} {name}[{j}]: mmerge {g}, mergekit {w}");
                if err > worst.0 {
                    worst = (err, format!("{case} {name}[{j}]"));
                }
            }
        }
        // Layer counts in config.json follow the slices, as mergekit writes them.
        let cfg = |dir: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap()
        };
        assert_eq!(
            cfg(&out)["num_hidden_layers"],
            cfg(&fixtures().join("expected").join(case))["num_hidden_layers"],
            "{case}: num_hidden_layers"
        );
    }
    eprintln!("largest scaled difference: {:.3e} at {}", worst.0, worst.1);
}

#[test]
fn bad_config_is_refused_with_its_line_and_output_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.yml");
    std::fs::write(&cfg, "merge_method: tie\nmodels:\n  - model: models/a\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .current_dir(fixtures())
        .args(["merge"])
        .arg(&cfg)
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yml:1: unknown merge_method `tie`; valid: linear, task_arithmetic, ties"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists());

    let dst = tmp.path().join("exists");
    std::fs::create_dir(&dst).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .current_dir(fixtures())
        .args(["merge", "cases/linear_weights.yml"])
        .arg(&dst)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists; pass --force"));
    assert_eq!(
        std::fs::read_dir(&dst).unwrap().count(),
        0,
        "existing output untouched"
    );
}
