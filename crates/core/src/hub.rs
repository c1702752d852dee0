//! Resolving a Hugging Face hub id (`org/name`) to a folder of the local hub cache, offline.
//! Nothing is downloaded: the cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; a model lives in `models--org--name/snapshots/<commit>/`, and
//! `refs/<revision>` (default `main`) names the commit.

use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

/// The hub cache folder the environment points at.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/huggingface/hub")
}

/// `model` as a local folder: the path itself when it exists, else the cached snapshot of the
/// hub id `org/name[@revision]` in `cache`.
pub fn resolve(model: &str, cache: &Path) -> Result<PathBuf> {
    let direct = PathBuf::from(model);
    if direct.exists() {
        return Ok(direct);
    }
    let (id, revision) = model.split_once('@').unwrap_or((model, "main"));
    let not_found = || CoreError::NotInHubCache {
        model: model.to_string(),
        cache: cache.to_path_buf(),
    };
    if id.split('/').count() != 2 || id.contains("..") {
        return Err(not_found());
    }
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let refs = repo.join("refs").join(revision);
    let commit = match std::fs::read_to_string(&refs) {
        Ok(c) => c.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    let snap = snapshots.join(&commit);
    if snap.is_dir() {
        return Ok(snap);
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_refs_and_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--name");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(
            resolve("org/name", tmp.path()).unwrap(),
            repo.join("snapshots/abc123")
        );
        assert_eq!(
            resolve("org/name@abc123", tmp.path()).unwrap(),
            repo.join("snapshots/abc123")
        );
        let here = tmp.path().to_string_lossy().into_owned();
        assert_eq!(
            resolve(&here, Path::new("/nonexistent")).unwrap(),
            tmp.path()
        );
        let err = resolve("org/other", tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("`org/other` is neither a path nor a model in the local hub cache"),
            "{err}"
        );
        assert!(resolve("just-a-name", tmp.path()).is_err());
    }
}
