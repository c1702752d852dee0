//! Writing a checkpoint atomically: every shard's header and size are fixed up front, tensor
//! data is written in place with positioned writes (so several threads can fill one file at
//! once, in any order), and the finished folder is renamed into place. Until
//! [`CheckpointWriter::finish`] succeeds, nothing exists at the output path; a writer dropped
//! early (an error, a panic) removes its temporary folder.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::atomic::AtomicDir;
use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};
use crate::dtype::Dtype;
use crate::error::{CoreError, Result};
use crate::header;

/// One tensor the output will hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl OutputTensor {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> Self {
        OutputTensor {
            name: name.into(),
            dtype,
            shape,
        }
    }

    fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

#[derive(Debug)]
struct Slot {
    file: usize,
    start: usize,
    numel: usize,
    dtype: Dtype,
    written: AtomicUsize,
}

/// An output checkpoint being written (see the module docs).
#[derive(Debug)]
pub struct CheckpointWriter {
    /// The folder being filled; renamed into place by [`CheckpointWriter::finish`].
    dir: AtomicDir,
    files: Vec<(String, File)>,
    slots: HashMap<String, Slot>,
    total_bytes: usize,
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| CoreError::io(path, e))
}

impl CheckpointWriter {
    /// Lays out `tensors` (in this order) into shards of at most `max_shard_bytes` of data each
    /// (a larger tensor gets a shard of its own) inside a temporary folder beside `out`.
    /// Refuses an existing `out` unless `force`.
    pub fn create(
        out: &Path,
        tensors: &[OutputTensor],
        max_shard_bytes: usize,
        force: bool,
    ) -> Result<Self> {
        let dir = AtomicDir::create(out, force)?;
        let mut w = CheckpointWriter {
            dir,
            files: Vec::new(),
            slots: HashMap::new(),
            total_bytes: 0,
        };
        w.lay_out(tensors, max_shard_bytes.max(1))?;
        Ok(w)
    }

    fn lay_out(&mut self, tensors: &[OutputTensor], max_shard_bytes: usize) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for t in tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(CoreError::BadWrite {
                    name: t.name.clone(),
                    reason: "appears twice in the output".into(),
                });
            }
        }
        let mut groups: Vec<Vec<&OutputTensor>> = vec![];
        let mut current = 0usize;
        for t in tensors {
            let n = t.nbytes();
            match groups.last_mut() {
                Some(g) if current + n <= max_shard_bytes => {
                    g.push(t);
                    current += n;
                }
                _ => {
                    groups.push(vec![t]);
                    current = n;
                }
            }
        }
        if groups.is_empty() {
            groups.push(vec![]);
        }
        let count = groups.len();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        for (i, group) in groups.into_iter().enumerate() {
            let fname = if count == 1 {
                SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{count:05}.safetensors", i + 1)
            };
            let entries: Vec<_> = group
                .iter()
                .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
                .collect();
            let (head, starts, total) = header::serialize(&entries, Some(&meta));
            let path = self.dir.path().join(&fname);
            let file = io(&path, File::create(&path))?;
            io(&path, file.set_len(total as u64))?;
            io(&path, file.write_all_at(&head, 0))?;
            for (t, start) in group.iter().zip(starts) {
                self.slots.insert(
                    t.name.clone(),
                    Slot {
                        file: i,
                        start,
                        numel: t.shape.iter().product(),
                        dtype: t.dtype,
                        written: AtomicUsize::new(0),
                    },
                );
                self.total_bytes += t.nbytes();
            }
            self.files.push((fname, file));
        }
        Ok(())
    }

    fn slot(&self, name: &str) -> Result<&Slot> {
        self.slots.get(name).ok_or_else(|| CoreError::BadWrite {
            name: name.to_string(),
            reason: "not part of the output layout".into(),
        })
    }

    /// The dtype a tensor is stored in.
    pub fn dtype_of(&self, name: &str) -> Result<Dtype> {
        Ok(self.slot(name)?.dtype)
    }

    /// Writes raw little-endian bytes of elements starting at `elem_offset` of tensor `name`.
    pub fn write_bytes(&self, name: &str, elem_offset: usize, bytes: &[u8]) -> Result<()> {
        let slot = self.slot(name)?;
        let size = slot.dtype.size();
        let n = bytes.len() / size;
        if !bytes.len().is_multiple_of(size) || elem_offset + n > slot.numel {
            return Err(CoreError::BadWrite {
                name: name.to_string(),
                reason: format!(
                    "{} bytes at element {elem_offset} do not fit {} elements of {}",
                    bytes.len(),
                    slot.numel,
                    slot.dtype
                ),
            });
        }
        let (fname, file) = &self.files[slot.file];
        let path = self.dir.path().join(fname);
        io(
            &path,
            file.write_all_at(bytes, (slot.start + elem_offset * size) as u64),
        )?;
        slot.written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Encodes `values` into the tensor's dtype and writes them at `elem_offset`.
    pub fn write_f32(&self, name: &str, elem_offset: usize, values: &[f32]) -> Result<()> {
        let dtype = self.slot(name)?.dtype;
        let mut buf = vec![0u8; values.len() * dtype.size()];
        dtype.encode_f32(values, &mut buf);
        self.write_bytes(name, elem_offset, &buf)
    }

    /// Copies a side file (e.g. `config.json`, tokenizer files) into the output.
    pub fn copy_file(&self, src: &Path, name: &str) -> Result<()> {
        let dst = self.dir.path().join(name);
        std::fs::copy(src, &dst).map_err(|e| CoreError::io(src, e))?;
        Ok(())
    }

    /// Writes a side file with the given contents into the output.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> Result<()> {
        let dst = self.dir.path().join(name);
        io(&dst, std::fs::write(&dst, contents))
    }

    /// Checks that every tensor was written in full, writes the index (for several shards), and
    /// renames the folder into place (replacing an old one when `force` was given).
    ///
    /// The rename makes the output appear whole or not at all to every process. The data is
    /// not fsynced (like mergekit, and `cp`): after a power failure, run the merge again.
    pub fn finish(self) -> Result<PathBuf> {
        let mut missing: Vec<_> = self
            .slots
            .iter()
            .filter(|(_, s)| s.written.load(Ordering::Relaxed) != s.numel)
            .map(|(n, _)| n.clone())
            .collect();
        if !missing.is_empty() {
            missing.sort();
            return Err(CoreError::BadWrite {
                name: missing.join(", "),
                reason: "not written in full".into(),
            });
        }
        if self.files.len() > 1 {
            let mut weight_map = BTreeMap::new();
            for (name, slot) in &self.slots {
                weight_map.insert(name.clone(), self.files[slot.file].0.clone());
            }
            let index = serde_json::json!({
                "metadata": {"total_size": self.total_bytes},
                "weight_map": weight_map,
            });
            let text = serde_json::to_string_pretty(&index).unwrap_or_default();
            self.write_file(INDEX_FILE, text.as_bytes())?;
        }
        self.dir.finish()
    }
}

/// Writes one safetensors file atomically (a sibling temporary file, then a rename), with
/// the given tensors as (name, dtype, shape, little-endian bytes).
pub fn write_file(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Result<()> {
    let entries: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, _)| (n.clone(), *d, s.clone()))
        .collect();
    for (n, d, s, b) in tensors {
        if b.len() != s.iter().product::<usize>() * d.size() {
            return Err(CoreError::BadWrite {
                name: n.clone(),
                reason: format!("{} bytes do not fit {d} {s:?}", b.len()),
            });
        }
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let (head, _, _) = header::serialize(&entries, Some(&meta));
    crate::atomic::write_atomic_with(path, |f| {
        f.write_all(&head)?;
        for (_, _, _, b) in tensors {
            f.write_all(b)?;
        }
        Ok(())
    })
}

/// Writes a model folder (`model.safetensors`, or shards of at most `shard_bytes` with an
/// index) from whole `f32` tensors given as (name, shape, values), stored as `dtype`, plus
/// extra files (name, contents) such as `config.json`. Replaces an existing folder.
pub fn write_model(
    dir: &Path,
    dtype: Dtype,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    shard_bytes: usize,
    files: &[(&str, &[u8])],
) -> Result<PathBuf> {
    let outs: Vec<OutputTensor> = tensors
        .iter()
        .map(|(n, s, _)| OutputTensor::new(n.clone(), dtype, s.clone()))
        .collect();
    let w = CheckpointWriter::create(dir, &outs, shard_bytes, true)?;
    for (n, _, v) in tensors {
        w.write_f32(n, 0, v)?;
    }
    for (name, contents) in files {
        w.write_file(name, contents)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_file_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.safetensors");
        let vals = [1.5f32, -2.0];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_file(&p, &[("a".into(), Dtype::F32, vec![2], bytes)]).unwrap();
        assert_eq!(
            crate::Checkpoint::open(&p).unwrap().read_f32("a").unwrap(),
            vals
        );
        let err = write_file(&p, &[("a".into(), Dtype::F32, vec![3], vec![0; 4])]).unwrap_err();
        assert!(
            err.to_string().contains("4 bytes do not fit F32 [3]"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_writer_leaves_nothing_and_existing_output_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("merged");
        let t = [OutputTensor::new("w", Dtype::F32, vec![2])];
        {
            let w = CheckpointWriter::create(&out, &t, 1 << 20, false).unwrap();
            w.write_f32("w", 0, &[1.0]).unwrap();
            let err = w.finish().unwrap_err().to_string();
            assert!(err.contains("`w`: not written in full"), "{err}");
        }
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "nothing left behind"
        );

        let w = CheckpointWriter::create(&out, &t, 1 << 20, false).unwrap();
        w.write_f32("w", 0, &[1.0, 2.0]).unwrap();
        let err = w.write_f32("w", 1, &[1.0, 2.0]).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        w.finish().unwrap();
        let err = CheckpointWriter::create(&out, &t, 1 << 20, false).unwrap_err();
        // The library's terms only: the CLI adds how to replace it (`--force`).
        assert_eq!(
            err.to_string(),
            format!("output {} already exists", out.display())
        );
        let w = CheckpointWriter::create(&out, &t, 1 << 20, true).unwrap();
        w.write_f32("w", 0, &[3.0, 4.0]).unwrap();
        w.finish().unwrap();
        let ck = crate::Checkpoint::open(&out).unwrap();
        assert_eq!(ck.read_f32("w").unwrap(), [3.0, 4.0]);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
