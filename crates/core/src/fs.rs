//! Folders: the project's cache root and copying a folder tree.

use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

/// The cache root: `$MMERGE_CACHE` unless unset or empty, else `$HOME/.cache/mmerge` (as
/// `scripts/env.sh` reads it: `${MMERGE_CACHE:-$HOME/.cache/mmerge}`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("MMERGE_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/mmerge"),
    }
}

/// Copies the folder `from` into `to` (created if needed), files and sub-folders, in name
/// order.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| CoreError::io(to, e))?;
    let mut entries = std::fs::read_dir(from)
        .and_then(|rd| rd.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| CoreError::io(from, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dst = to.join(e.file_name());
        let is_dir = e
            .file_type()
            .map_err(|err| CoreError::io(&src, err))?
            .is_dir();
        if is_dir {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|err| CoreError::io(&src, err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn copy_tree_copies_files_and_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::create_dir_all(a.join("sub/deeper")).unwrap();
        std::fs::write(a.join("x.txt"), b"x").unwrap();
        std::fs::write(a.join("sub/deeper/y.bin"), [1u8, 2, 3]).unwrap();
        let b = tmp.path().join("b");
        super::copy_tree(&a, &b).unwrap();
        assert_eq!(std::fs::read(b.join("x.txt")).unwrap(), b"x");
        assert_eq!(
            std::fs::read(b.join("sub/deeper/y.bin")).unwrap(),
            [1, 2, 3]
        );
        assert!(super::copy_tree(&tmp.path().join("missing"), &b).is_err());
    }
}
