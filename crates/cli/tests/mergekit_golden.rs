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

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_matches, config_json, fixtures, merge, merge_case};

/// Cases mmerge refuses on purpose, with the reason it gives: mergekit silently ignores a
/// per-model setting of a shared parameter, which hides a mistake in the config.
const REFUSED: [(&str, &str); 1] = [(
    "slerp_models_permodel_t",
    "parameter `t` is shared by all models of a merge; set it in the top-level or slice `parameters`",
)];

#[test]
fn every_case_matches_mergekit() {
    let dir = fixtures("");
    // Cases that compute in a half dtype are compared bit for bit by mergekit_numerics.rs.
    let cases: Vec<String> = common::cases(&dir)
        .into_iter()
        .filter(|c| !mmerge_merge::numerics::GOLDENS.contains(&c.as_str()))
        .collect();
    assert!(cases.len() >= 31, "fixture cases missing: {cases:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = (0f64, String::new());
    for case in &cases {
        let out = tmp.path().join(case);
        if let Some((_, why)) = REFUSED.iter().find(|(c, _)| c == case) {
            let o = merge(&dir, Path::new(&format!("cases/{case}.yml")), &out, &[]);
            assert!(
                !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(why),
                "{case}"
            );
            continue;
        }
        merge_case(&dir, case, &out, &[]);
        let expected = dir.join("expected").join(case);
        let w = assert_matches(case, &out, &expected);
        if w.0 > worst.0 {
            worst = w;
        }
        // Layer counts in config.json follow the slices, as mergekit writes them.
        assert_eq!(
            config_json(&out)["num_hidden_layers"],
            config_json(&expected)["num_hidden_layers"],
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
        .current_dir(fixtures(""))
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
        .current_dir(fixtures(""))
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
