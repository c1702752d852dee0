//! Atomic file writes: write a temporary sibling, then rename it over the target, so a reader
//! (or a crash) sees the old file or the new one, never half of one. The one place in mmerge
//! that names temporary files: `.<name>.mmerge-tmp-<pid>` beside the target (a folder's is
//! the same scheme, see [`temp_sibling`]).
//!
//! No fsync: the rename makes the file appear whole to other processes; a power failure may
//! need the write run again (the project's choice for all outputs, `docs/architecture.md`).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{CoreError, Result};

/// The temporary sibling of `path` that an atomic write goes through:
/// `<parent>/.<file name>.mmerge-tmp-<pid>`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.mmerge-tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes `path` atomically from a function that writes into a buffered file. On any error
/// the temporary file is removed and the target is left as it was.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    if path.file_name().is_none() {
        return Err(CoreError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        ));
    }
    let tmp = temp_sibling(path);
    let run = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut f)?;
        f.flush()?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    run().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CoreError::io(path, e)
    })
}

/// A folder built in a temporary sibling and renamed into place by [`AtomicDir::finish`];
/// dropped unfinished, it removes itself, so a failed run leaves nothing behind.
#[derive(Debug)]
pub struct AtomicDir {
    tmp: PathBuf,
    dst: PathBuf,
    force: bool,
    finished: bool,
}

impl AtomicDir {
    /// Starts building `dst` (in [`temp_sibling`]`(dst)`, emptied first). Refuses an existing
    /// `dst` unless `force`, both now and at [`AtomicDir::finish`].
    pub fn create(dst: &Path, force: bool) -> Result<Self> {
        if dst.exists() && !force {
            return Err(CoreError::OutputExists {
                path: dst.to_path_buf(),
            });
        }
        let tmp = temp_sibling(dst);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
        Ok(Self {
            tmp,
            dst: dst.to_path_buf(),
            force,
            finished: false,
        })
    }

    /// The temporary folder that is being filled.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn dst(&self) -> &Path {
        &self.dst
    }

    /// Renames the folder into place, replacing an existing `dst` when `force` was given
    /// (the old one is moved aside first and removed after the rename).
    pub fn finish(mut self) -> Result<PathBuf> {
        let io = |p: &Path, r: std::io::Result<()>| r.map_err(|e| CoreError::io(p, e));
        if self.dst.exists() {
            if !self.force {
                return Err(CoreError::OutputExists {
                    path: self.dst.clone(),
                });
            }
            let old = self.tmp.with_extension("old");
            io(&self.dst, std::fs::rename(&self.dst, &old))?;
            io(&self.dst, std::fs::rename(&self.tmp, &self.dst))?;
            io(&old, std::fs::remove_dir_all(&old))?;
        } else {
            io(&self.dst, std::fs::rename(&self.tmp, &self.dst))?;
        }
        self.finished = true;
        Ok(self.dst.clone())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a.json"), "{err}");
        // The old contents survive and no temporary file is left behind.
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn temp_sibling_is_hidden_beside_the_target() {
        let t = temp_sibling(Path::new("/x/y/model.safetensors"));
        assert_eq!(t.parent(), Some(Path::new("/x/y")));
        let n = t.file_name().unwrap().to_string_lossy().into_owned();
        assert!(n.starts_with(".model.safetensors.mmerge-tmp-"), "{n}");
    }

    #[test]
    fn atomic_dir_appears_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("out");
        {
            let d = AtomicDir::create(&dst, false).unwrap();
            std::fs::write(d.path().join("f"), b"x").unwrap();
            // Dropped unfinished: nothing is left.
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
        let d = AtomicDir::create(&dst, false).unwrap();
        std::fs::write(d.path().join("f"), b"1").unwrap();
        d.finish().unwrap();
        assert!(matches!(
            AtomicDir::create(&dst, false),
            Err(CoreError::OutputExists { .. })
        ));
        let d = AtomicDir::create(&dst, true).unwrap();
        std::fs::write(d.path().join("g"), b"2").unwrap();
        d.finish().unwrap();
        let names: Vec<_> = std::fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["g"]);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
