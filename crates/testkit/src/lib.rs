//! Test plumbing shared by mmerge's test suites: a dev-dependency only, so nothing here is part
//! of any library's public API.
//!
//! [`require_fetched`]: the pretrained weights that `scripts/fetch-weights` puts in the cache,
//! for the golden tests of imported models. A test that needs them fails, naming the script to
//! run, rather than passing without them.

use std::path::{Path, PathBuf};

/// The cache root (`mmerge_core::fs::cache_dir`).
pub use mmerge_core::fs::cache_dir;

/// The folder of the fetched model `name`, which must hold `file`.
///
/// # Panics
/// When `file` is not there, with its path and the script that fetches it.
pub fn require_fetched(name: &str, file: &str) -> PathBuf {
    require_in(&cache_dir(), name, file)
}

fn require_in(cache: &Path, name: &str, file: &str) -> PathBuf {
    let dir = cache.join("weights").join(name);
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-weights (scripts/test does)",
        path.display()
    );
    dir
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_missing_file_panics_with_its_path_and_the_script() {
        let cache = tempfile::tempdir().unwrap();
        let err = std::panic::catch_unwind(|| require_in(cache.path(), "m", "model.safetensors"))
            .expect_err("a model that was never fetched must panic");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        let want = cache.path().join("weights/m/model.safetensors");
        assert_eq!(
            msg,
            format!(
                "{} is missing: run scripts/fetch-weights (scripts/test does)",
                want.display()
            )
        );
    }

    #[test]
    fn a_present_file_gives_its_model_folder() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("weights/m");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
        assert_eq!(require_in(cache.path(), "m", "tokenizer.json"), dir);
    }
}
