//! Helpers shared by this crate's tests.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;

/// The names in a folder, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
