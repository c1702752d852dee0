//! Helpers shared by the data crate's integration tests: the fixtures folder, reading JSON and
//! JSON Lines files (panicking with the path), and every file of a folder for byte
//! comparisons.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmerge_data::DataError;
use mmerge_data::formats::ReadOptions;
use mmerge_data::formats::captions::{KarpathySource, KarpathySplit};

/// `datasets/fixtures`: the real-format fixtures (see its `make_fixtures.py`), also a suite
/// (`suite.json`).
pub fn fx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures")
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn err<T: std::fmt::Debug>(r: mmerge_data::Result<T>) -> DataError {
    r.expect_err("expected an error")
}

pub const SKIP_UNKNOWN: ReadOptions = ReadOptions {
    skip_bad: false,
    skip_unknown: true,
    keep_unknown_answers: false,
};

/// A split of the Karpathy COCO fixture.
pub fn coco_karpathy(split: KarpathySplit, fold_restval: bool) -> KarpathySource {
    KarpathySource {
        file: fx().join("captions/dataset_coco.json"),
        image_root: fx().join("captions/coco"),
        split,
        fold_restval,
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> T {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn read_jsonl<T: serde::de::DeserializeOwned>(p: &Path) -> Vec<T> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display())))
        .collect()
}

/// Every file under `root`, relative path → bytes.
pub fn all_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}
