//! Shared by the mergekit golden tests: run `mmerge merge` on a fixture case and compare its
//! output with what mergekit 0.1.5 wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmerge_core::Checkpoint;

/// `tests/fixtures/mergekit/<sub>` of the repository.
pub fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mergekit")
        .join(sub)
}

/// The case names (`cases/*.yml` stems) under `dir`, sorted.
pub fn cases(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `mmerge <args…>` run in `dir` (so the configs' relative model paths resolve as they did
/// for mergekit).
pub fn mmerge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// `mmerge merge CONFIG OUT EXTRA…` run in `dir` (a relative `config` is taken from `dir`).
pub fn merge(dir: &Path, config: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .current_dir(dir)
        .arg("merge")
        .arg(config)
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// `mmerge merge cases/<case>.yml OUT EXTRA…` in `dir`, which must succeed.
pub fn merge_case(dir: &Path, case: &str, out: &Path, extra: &[&str]) {
    let o = merge(dir, Path::new(&format!("cases/{case}.yml")), out, extra);
    assert!(
        o.status.success(),
        "{case}: mmerge failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Asserts that `ours` has mergekit's tensor names, shapes and dtypes, and every element
/// within |ours − mergekit| ≤ 1e-6 · max(1, |mergekit|); returns the largest scaled
/// difference and where it is.
pub fn assert_matches(case: &str, ours: &Path, theirs: &Path) -> (f64, String) {
    let ours = Checkpoint::open(ours).unwrap();
    let theirs = Checkpoint::open(theirs).unwrap();
    let mut a: Vec<&String> = ours.names().iter().collect();
    let mut b: Vec<&String> = theirs.names().iter().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{case}: tensor names differ");
    let mut worst = (0f64, String::new());
    for name in theirs.names() {
        let (m, t) = (ours.meta(name).unwrap(), theirs.meta(name).unwrap());
        assert_eq!(m.shape, t.shape, "{case} {name}");
        assert_eq!(m.dtype, t.dtype, "{case} {name}");
        let want = theirs.read_f32(name).unwrap();
        let got = ours.read_f32(name).unwrap();
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = f64::from((g - w).abs()) / f64::from(w.abs()).max(1.0);
            assert!(err <= 1e-6, "{case} {name}[{j}]: mmerge {g}, mergekit {w}");
            if err > worst.0 {
                worst = (err, format!("{case} {name}[{j}]"));
            }
        }
    }
    worst
}

/// A model folder's `config.json`.
pub fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}
