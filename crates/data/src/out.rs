//! Writing a whole suite atomically: everything goes into a hidden temporary folder beside the
//! destination, which is renamed into place only when the suite is complete. A failure (or a
//! panic) leaves nothing behind but is cleaned up on drop.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{DataError, Result, io};

/// A suite being written. Paths given to its methods are relative to the suite's root.
#[derive(Debug)]
pub struct SuiteDir {
    dst: PathBuf,
    tmp: PathBuf,
    force: bool,
    finished: bool,
}

impl SuiteDir {
    /// Starts writing the suite that will appear at `dst`. Fails if `dst` exists and `force`
    /// is false.
    pub fn create(dst: &Path, force: bool) -> Result<Self> {
        if dst.exists() && !force {
            return Err(DataError::OutputExists {
                path: dst.to_path_buf(),
            });
        }
        let name = dst
            .file_name()
            .ok_or_else(|| DataError::Invalid {
                what: format!("output {}", dst.display()),
                reason: "must name a folder".into(),
            })?
            .to_string_lossy()
            .into_owned();
        let parent = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        io(&parent, std::fs::create_dir_all(&parent))?;
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            io(&tmp, std::fs::remove_dir_all(&tmp))?;
        }
        io(&tmp, std::fs::create_dir_all(&tmp))?;
        Ok(Self {
            dst: dst.to_path_buf(),
            tmp,
            force,
            finished: false,
        })
    }

    /// The temporary root, for writers that need a real path.
    pub fn root(&self) -> &Path {
        &self.tmp
    }

    /// The absolute temporary path of `rel`, with its parent folders created.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.tmp.join(rel);
        if let Some(parent) = p.parent() {
            io(parent, std::fs::create_dir_all(parent))?;
        }
        Ok(p)
    }

    /// Writes `bytes` to `rel`.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(rel)?;
        io(&p, std::fs::write(&p, bytes))
    }

    /// Writes `value` as pretty-printed JSON to `rel`.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        self.write(rel, &to_json(rel, value)?)
    }

    /// Writes one compact JSON object per line (JSON Lines) to `rel`.
    pub fn write_jsonl<T: Serialize>(&self, rel: &str, values: &[T]) -> Result<()> {
        let mut out = Vec::new();
        for v in values {
            serde_json::to_writer(&mut out, v).map_err(|e| DataError::Invalid {
                what: rel.to_string(),
                reason: e.to_string(),
            })?;
            out.push(b'\n');
        }
        self.write(rel, &out)
    }

    /// Renames the finished suite into place (replacing an old one when `force` was given).
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.dst.exists() {
            if !self.force {
                return Err(DataError::OutputExists {
                    path: self.dst.clone(),
                });
            }
            io(&self.dst, std::fs::remove_dir_all(&self.dst))?;
        }
        io(&self.dst, std::fs::rename(&self.tmp, &self.dst))?;
        self.finished = true;
        Ok(self.dst.clone())
    }
}

impl Drop for SuiteDir {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Pretty JSON bytes with a trailing newline (stable across runs: serde_json keeps field order).
pub fn to_json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(value).map_err(|e| DataError::Invalid {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    v.push(b'\n');
    Ok(v)
}

/// A progress bar of `len` steps labelled by its message, or a hidden one when `show` is false.
pub fn progress_bar(len: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}
