//! Reading checkpoints: a single `.safetensors` file, or a Hugging Face folder holding
//! `model.safetensors` or shards listed in `model.safetensors.index.json`.
//!
//! Every shard is memory-mapped; tensor bytes are borrowed from the map with no copy. Decoding
//! to `f32` works on element ranges, so a caller can stream a large tensor in chunks, and
//! [`Checkpoint::release`] drops a tensor's pages from this process's resident set once it has
//! been used (the kernel keeps them in the page cache), so reading a model never makes the
//! process hold the whole model in memory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::Dtype;
use crate::error::{CoreError, Result};
use crate::header;

/// Name of the index file of a sharded Hugging Face checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of a single-file Hugging Face checkpoint inside its folder.
pub const SINGLE_FILE: &str = "model.safetensors";

/// What a reader needs to know about one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    shard: usize,
    start: usize,
    end: usize,
}

impl TensorMeta {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: Mmap,
    /// The same file, for positioned reads that do not map its pages into this process.
    file: File,
}

/// An opened checkpoint: one or more memory-mapped safetensors shards.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: HashMap<String, TensorMeta>,
    order: Vec<String>,
}

fn map_file(path: &Path) -> Result<(Mmap, File)> {
    let file = File::open(path).map_err(|e| CoreError::io(path, e))?;
    // SAFETY: the map is read-only. Another process truncating the file while we read it
    // would fault; that is the documented hazard of every mmap-based safetensors reader.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| CoreError::io(path, e))?;
    Ok((map, file))
}

impl Checkpoint {
    /// Opens `path`: a `.safetensors` file, or a folder with `model.safetensors`, or with
    /// `model.safetensors.index.json` and its shards, or with exactly one `.safetensors` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| CoreError::io(path, e))?;
        if meta.is_file() {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return Self::from_files(path, dir, vec![path.to_path_buf()], None);
        }
        let index = path.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_indexed(path, &index);
        }
        let single = path.join(SINGLE_FILE);
        if single.is_file() {
            return Self::from_files(path, path.to_path_buf(), vec![single], None);
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CoreError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        if found.len() == 1 {
            let file = found.remove(0);
            return Self::from_files(path, path.to_path_buf(), vec![file], None);
        }
        Err(CoreError::NotACheckpoint {
            path: path.to_path_buf(),
        })
    }

    fn open_indexed(dir: &Path, index: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(index).map_err(|e| CoreError::io(index, e))?;
        let parsed: Index = serde_json::from_str(&text).map_err(|e| CoreError::BadIndex {
            path: index.to_path_buf(),
            reason: format!("{e} (line {}, column {})", e.line(), e.column()),
        })?;
        let mut files: Vec<String> = parsed.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        for f in &files {
            if f.contains('/') || f.contains('\\') || f == ".." {
                return Err(CoreError::BadIndex {
                    path: index.to_path_buf(),
                    reason: format!("shard name `{f}` must be a plain file name"),
                });
            }
        }
        let paths = files.iter().map(|f| dir.join(f)).collect();
        Self::from_files(
            dir,
            dir.to_path_buf(),
            paths,
            Some((index, parsed.weight_map)),
        )
    }

    fn from_files(
        path: &Path,
        dir: PathBuf,
        files: Vec<PathBuf>,
        weight_map: Option<(&Path, BTreeMap<String, String>)>,
    ) -> Result<Self> {
        let mut shards = Vec::with_capacity(files.len());
        let mut tensors = HashMap::new();
        let mut order = Vec::new();
        for (i, file) in files.into_iter().enumerate() {
            let (map, handle) = map_file(&file)?;
            let h = header::parse(&map).map_err(|reason| CoreError::BadSafetensors {
                path: file.clone(),
                reason,
            })?;
            let shard_name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            for t in h.tensors {
                if let Some((_, wm)) = &weight_map
                    && wm.get(&t.name) != shard_name.as_ref()
                {
                    continue; // the index is the truth for which shard holds a tensor
                }
                let m = TensorMeta {
                    dtype: t.dtype,
                    shape: t.shape,
                    shard: i,
                    start: t.start,
                    end: t.end,
                };
                if tensors.insert(t.name.clone(), m).is_some() {
                    return Err(CoreError::BadSafetensors {
                        path: file.clone(),
                        reason: format!("tensor `{}` appears in more than one shard", t.name),
                    });
                }
                order.push(t.name);
            }
            shards.push(Shard {
                path: file,
                map,
                file: handle,
            });
        }
        if let Some((index, wm)) = &weight_map {
            for (name, file) in wm {
                if !tensors.contains_key(name) {
                    return Err(CoreError::BadIndex {
                        path: index.to_path_buf(),
                        reason: format!("tensor `{name}` is mapped to {file}, which lacks it"),
                    });
                }
            }
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            dir,
            shards,
            tensors,
            order,
        })
    }

    /// The path this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder holding the checkpoint (where `config.json` and tokenizer files live).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensor names in storage order (shard by shard, by offset).
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Metadata of a tensor, if present.
    pub fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors.get(name)
    }

    /// Metadata of a tensor, or an error naming the checkpoint and the tensor.
    pub fn require(&self, name: &str) -> Result<&TensorMeta> {
        self.tensors
            .get(name)
            .ok_or_else(|| CoreError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> usize {
        self.tensors.values().map(|m| m.end - m.start).sum()
    }

    /// The raw little-endian bytes of a tensor, borrowed from the map.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let m = self.require(name)?;
        Ok(&self.shards[m.shard].map[m.start..m.end])
    }

    /// The file a tensor lives in.
    pub fn shard_path(&self, name: &str) -> Result<&Path> {
        let m = self.require(name)?;
        Ok(&self.shards[m.shard].path)
    }

    /// Decodes elements `range` of a float tensor into `out` (`out.len() == range.len()`), from a
    /// positioned read ([`Checkpoint::read_bytes_into`]).
    pub fn read_f32_into(&self, name: &str, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        let m = self.require(name)?;
        if !m.dtype.is_float() {
            return Err(CoreError::NotFloat {
                path: self.shards[m.shard].path.clone(),
                name: name.to_string(),
                dtype: m.dtype.to_string(),
            });
        }
        assert!(
            range.end <= m.numel() && out.len() == range.len(),
            "read_f32_into: range {range:?} of `{name}` ({} elements) into {} slots",
            m.numel(),
            out.len()
        );
        let mut bytes = Vec::new();
        self.read_bytes_into(name, range, &mut bytes)?;
        m.dtype.decode_f32(&bytes, out);
        Ok(())
    }

    /// Reads the stored bytes of elements `range` of a tensor into `out` (resized to fit) with a
    /// positioned read: unlike the memory map, the file's pages never enter this process's
    /// resident set, which stays bounded by the buffers however the kernel sizes its page-cache
    /// folios (a streamed chunk's fault can map megabytes around it).
    pub fn read_bytes_into(
        &self,
        name: &str,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let m = self.require(name)?;
        assert!(
            range.end <= m.numel(),
            "read_bytes_into: range {range:?} of `{name}` ({} elements)",
            m.numel()
        );
        let s = m.dtype.size();
        out.resize(range.len() * s, 0);
        let shard = &self.shards[m.shard];
        shard
            .file
            .read_exact_at(out, (m.start + range.start * s) as u64)
            .map_err(|e| CoreError::io(&shard.path, e))
    }

    /// Decodes a whole float tensor into a new `Vec<f32>`.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let n = self.require(name)?.numel();
        let mut out = vec![0f32; n];
        self.read_f32_into(name, 0..n, &mut out)?;
        Ok(out)
    }

    /// Decodes a whole float tensor into a new `Vec<f64>`: F64 bit-exactly (little-endian, as
    /// stored), the narrower float dtypes through [`Checkpoint::read_f32`].
    pub fn read_f64(&self, name: &str) -> Result<Vec<f64>> {
        if self.require(name)?.dtype != Dtype::F64 {
            return Ok(self.read_f32(name)?.into_iter().map(f64::from).collect());
        }
        let decode = |b: &[u8]| {
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            f64::from_le_bytes(le)
        };
        Ok(self.bytes(name)?.chunks_exact(8).map(decode).collect())
    }

    /// Tells the kernel this process is done with a tensor's pages, so they leave its resident
    /// set (they stay in the page cache). Reading the tensor again later is still valid.
    pub fn release(&self, name: &str) {
        if let Some(m) = self.tensors.get(name) {
            self.release_bytes(m.shard, m.start, m.end);
        }
    }

    fn release_bytes(&self, shard: usize, start: usize, end: usize) {
        let map = &self.shards[shard].map;
        let page = page_size();
        // Whole pages covering the range. A page shared with a neighbour that is still in use
        // is safe to drop too: the mapping is read-only and file-backed, so the next access
        // faults the same bytes back in from the page cache.
        let start = (start / page) * page;
        let end = end.div_ceil(page).saturating_mul(page).min(map.len());
        if end > start {
            // SAFETY: the range lies inside this read-only private mapping; for such a mapping
            // MADV_DONTNEED only drops pages, which are re-read from the file on next access.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{CheckpointWriter, OutputTensor};

    fn write(dir: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<f32>)], shard_bytes: usize) {
        let outs: Vec<OutputTensor> = tensors
            .iter()
            .map(|(n, d, s, _)| OutputTensor::new(*n, *d, s.clone()))
            .collect();
        let w = CheckpointWriter::create(dir, &outs, shard_bytes, false).unwrap();
        for (n, _, _, v) in tensors {
            w.write_f32(n, 0, v).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn sharded_folder_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("m");
        let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = vec![1.0, -2.0, 3.5];
        write(
            &out,
            &[
                ("a", Dtype::F32, vec![3, 4], a.clone()),
                ("b", Dtype::BF16, vec![3], b.clone()),
            ],
            40,
        );
        assert!(out.join(INDEX_FILE).is_file());
        let ck = Checkpoint::open(&out).unwrap();
        assert_eq!(ck.names(), ["a", "b"]);
        assert_eq!(ck.read_f32("a").unwrap(), a);
        assert_eq!(ck.read_f32("b").unwrap(), b);
        let mut part = [0f32; 2];
        ck.read_f32_into("a", 5..7, &mut part).unwrap();
        assert_eq!(part, [2.5, 3.0]);
        let mapped = ck.bytes("a").unwrap().to_vec();
        ck.release("a");
        assert_eq!(ck.bytes("a").unwrap(), mapped, "released pages read back");
        let err = ck.read_f32("zz").unwrap_err().to_string();
        assert!(err.contains("tensor `zz` not found"), "{err}");
    }

    #[test]
    fn read_f64_is_bit_exact_for_f64_and_widens_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("m");
        let x = [0.1f64, -1e300, f64::MIN_POSITIVE, -0.0, 1.0 / 3.0];
        let t = [
            OutputTensor::new("d", Dtype::F64, vec![5]),
            OutputTensor::new("h", Dtype::BF16, vec![2]),
        ];
        let w = CheckpointWriter::create(&out, &t, 1 << 20, false).unwrap();
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_bytes("d", 0, &bytes).unwrap();
        w.write_f32("h", 0, &[1.5, -2.0]).unwrap();
        w.finish().unwrap();
        let ck = Checkpoint::open(&out).unwrap();
        let got = ck.read_f64("d").unwrap();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(ck.read_f64("h").unwrap(), [1.5, -2.0]);
        assert!(ck.read_f64("zz").is_err());
    }

    #[test]
    fn bad_inputs_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("m");
        write(&out, &[("a", Dtype::F32, vec![4], vec![1.0; 4])], 1 << 30);
        let file = out.join(SINGLE_FILE);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 2]).unwrap();
        let err = Checkpoint::open(&out).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors: not a valid safetensors file: truncated"),
            "{err}"
        );

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = Checkpoint::open(&empty).unwrap_err().to_string();
        assert!(err.contains("no checkpoint found"), "{err}");
        let err = Checkpoint::open(tmp.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");

        std::fs::write(
            out.join(INDEX_FILE),
            "{\"weight_map\": {\"a\": \"model.safetensors\", \"q\": \"model.safetensors\"}}",
        )
        .unwrap();
        std::fs::write(&file, &bytes).unwrap();
        let err = Checkpoint::open(&out).unwrap_err().to_string();
        assert!(
            err.contains("tensor `q` is mapped to model.safetensors, which lacks it"),
            "{err}"
        );
    }
}
