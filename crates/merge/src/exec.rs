//! The streaming executor: output tensors one after another, each in fixed-size element chunks
//! processed in parallel on rayon's pool. A chunk reads its slice of every input with one
//! positioned read per input (`Checkpoint::read_bytes_into`: the file's pages stay in the page
//! cache and never enter this process's resident set), decodes, merges it, checks it is finite
//! and writes it in place in the output file. Working memory is a few chunks per thread
//! whatever the model's size; statistics passes read their chunks again from the page cache.
//!
//! A method's [`Kernel`] first runs the whole-tensor statistics passes it needs through
//! [`Passes`] (SLERP sums norms and the dot product; TIES finds each input's exact magnitude
//! threshold in one pass bracketed by a sample, with a radix select as the fallback; DARE sums
//! L1 norms), then [`TensorExec::run`] streams the chunks through its `chunk` function. `run`
//! is generic over the kernel type: one dynamic call per tensor, and each kernel's chunk loop
//! is compiled for it.

use std::ops::Range;

use indicatif::ProgressBar;
use mmerge_core::CheckpointWriter;
use rayon::prelude::*;

use crate::error::{MergeError, Result};
use crate::methods::Kernel;
use crate::plan::{Group, MergePlan, Source};

/// Elements per chunk. Fixed (not derived from the thread count), so results do not depend on
/// how many threads run.
pub const CHUNK: usize = 1 << 16;

/// Elements of chunk `c` of a tensor of `numel` elements.
fn chunk_range(c: usize, numel: usize) -> Range<usize> {
    c * CHUNK..((c + 1) * CHUNK).min(numel)
}

fn chunks(numel: usize) -> impl IndexedParallelIterator<Item = Range<usize>> {
    (0..numel.div_ceil(CHUNK))
        .into_par_iter()
        .map(move |c| chunk_range(c, numel))
}

/// The decoded base (if any) and inputs of one chunk.
type ChunkData = (Option<Vec<f32>>, Vec<Vec<f32>>);

struct Ctx<'a> {
    plan: &'a MergePlan,
    group: &'a Group,
}

impl Ctx<'_> {
    fn read(&self, s: &Source, r: &Range<usize>) -> Result<Vec<f32>> {
        let mut buf = vec![0f32; r.len()];
        self.plan.models[s.model].read_f32_into(&s.key, r.clone(), &mut buf)?;
        Ok(buf)
    }

    fn read_inputs(&self, r: &Range<usize>) -> Result<Vec<Vec<f32>>> {
        self.group.inputs.iter().map(|s| self.read(s, r)).collect()
    }

    fn read_base(&self, r: &Range<usize>) -> Result<Option<Vec<f32>>> {
        self.group
            .base
            .as_ref()
            .map(|b| self.read(b, r))
            .transpose()
    }

    /// The base (if any) and the inputs `which` of one chunk, for a statistics pass.
    fn read_stats(&self, which: &[usize], r: &Range<usize>) -> Result<ChunkData> {
        let base = self.read_base(r)?;
        let inputs = which
            .iter()
            .map(|&i| self.read(&self.group.inputs[i], r))
            .collect::<Result<_>>()?;
        Ok((base, inputs))
    }
}

/// One chunk of a tensor: its base and input elements, aligned.
#[derive(Debug)]
pub struct Chunk<'a> {
    /// The chunk's position among the tensor's chunks.
    pub index: usize,
    /// The tensor index of its first element.
    pub first: usize,
    /// The base's elements, when the group has a base.
    pub base: Option<&'a [f32]>,
    /// The inputs' elements: all inputs in the merge pass; in a statistics pass, the inputs
    /// the pass asked for, in that order.
    pub inputs: &'a [Vec<f32>],
}

/// Whole-tensor statistics passes, for a kernel's [`Kernel::stats`]. Every pass reads the
/// base (when there is one) and the inputs it names, chunk by chunk, in parallel.
pub struct Passes<'a> {
    ctx: &'a Ctx<'a>,
}

impl std::fmt::Debug for Passes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passes")
            .field("tensor", &self.name())
            .finish()
    }
}

impl Passes<'_> {
    /// Elements of the tensor.
    pub fn numel(&self) -> usize {
        self.ctx.group.out.shape.iter().product()
    }

    /// Chunks of the tensor.
    pub fn n_chunks(&self) -> usize {
        self.numel().div_ceil(CHUNK)
    }

    /// The output tensor's name.
    pub fn name(&self) -> &str {
        &self.ctx.group.out.name
    }

    /// The merge seed.
    pub fn seed(&self) -> u64 {
        self.ctx.plan.seed
    }

    /// One value per chunk, in chunk order (so sums folded over it do not depend on the
    /// thread count).
    pub fn map<T: Send>(
        &self,
        which: &[usize],
        f: impl Fn(&Chunk<'_>) -> T + Sync,
    ) -> Result<Vec<T>> {
        chunks(self.numel())
            .enumerate()
            .map(|(c, r)| {
                let (base, inputs) = self.ctx.read_stats(which, &r)?;
                Ok(f(&Chunk {
                    index: c,
                    first: r.start,
                    base: base.as_deref(),
                    inputs: &inputs,
                }))
            })
            .collect()
    }

    /// A sample: only the element ranges `runs(c, elements of chunk c)` of each chunk are read,
    /// and `f` sees each range as a [`Chunk`] (`first` = the range's first element). One `Vec`
    /// per chunk (one value per range), in chunk order.
    pub fn sample<T: Send>(
        &self,
        which: &[usize],
        runs: impl Fn(usize, &Range<usize>) -> Vec<Range<usize>> + Sync,
        f: impl Fn(&Chunk<'_>) -> T + Sync,
    ) -> Result<Vec<Vec<T>>> {
        chunks(self.numel())
            .enumerate()
            .map(|(c, r)| {
                let out = runs(c, &r)
                    .iter()
                    .map(|run| {
                        let (base, inputs) = self.ctx.read_stats(which, run)?;
                        Ok(f(&Chunk {
                            index: c,
                            first: run.start,
                            base: base.as_deref(),
                            inputs: &inputs,
                        }))
                    })
                    .collect::<Result<Vec<T>>>()?;
                Ok(out)
            })
            .collect()
    }

    /// One state per worker, each folded over a contiguous run of chunks: memory is bounded by
    /// the thread count. For states that merge to the same result in any order (counts).
    pub fn fold_runs<T: Send>(
        &self,
        which: &[usize],
        init: impl Fn() -> T + Sync,
        f: impl Fn(&mut T, &Chunk<'_>) + Sync,
    ) -> Result<Vec<T>> {
        let numel = self.numel();
        let n_chunks = self.n_chunks();
        let workers = rayon::current_num_threads().max(1);
        let per = n_chunks.div_ceil(workers);
        (0..workers)
            .into_par_iter()
            .map(|w| {
                let mut state = init();
                for c in (w * per)..((w + 1) * per).min(n_chunks) {
                    let r = chunk_range(c, numel);
                    let (base, inputs) = self.ctx.read_stats(which, &r)?;
                    f(
                        &mut state,
                        &Chunk {
                            index: c,
                            first: r.start,
                            base: base.as_deref(),
                            inputs: &inputs,
                        },
                    );
                }
                Ok(state)
            })
            .collect()
    }
}

/// Runs every group of `plan` into `writer`, advancing `progress` by output bytes.
pub fn execute(plan: &MergePlan, writer: &CheckpointWriter, progress: &ProgressBar) -> Result<()> {
    for group in &plan.groups {
        let exec = TensorExec {
            ctx: Ctx { plan, group },
            writer,
        };
        match &group.kernel {
            None => exec.copy()?,
            Some(k) => k.execute(&exec)?,
        }
        let bytes = group.out.shape.iter().product::<usize>() * group.out.dtype.size();
        progress.inc(bytes as u64);
    }
    Ok(())
}

/// The merge of one output tensor.
pub struct TensorExec<'a> {
    ctx: Ctx<'a>,
    writer: &'a CheckpointWriter,
}

impl std::fmt::Debug for TensorExec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorExec")
            .field("tensor", &self.name())
            .finish()
    }
}

impl TensorExec<'_> {
    fn numel(&self) -> usize {
        self.ctx.group.out.shape.iter().product()
    }

    fn name(&self) -> &str {
        &self.ctx.group.out.name
    }

    fn write(&self, first: usize, out: &[f32]) -> Result<()> {
        self.check_finite(first, out)?;
        Ok(self.writer.write_f32(self.name(), first, out)?)
    }

    /// Errors on the first element of `out` that is not finite (`first` = index of `out[0]`).
    fn check_finite(&self, first: usize, out: &[f32]) -> Result<()> {
        // Branch-free count of non-finite values (all exponent bits set), so that it vectorises.
        let bad = mmerge_core::simd::fast(
            #[inline(always)]
            || {
                out.iter()
                    .map(|x| u32::from(x.to_bits() & 0x7F80_0000 == 0x7F80_0000))
                    .sum::<u32>()
            },
        );
        if bad > 0
            && let Some(j) = out.iter().position(|x| !x.is_finite())
        {
            return Err(MergeError::NonFinite {
                key: self.name().to_string(),
                what: if out[j].is_nan() { "NaN" } else { "infinity" },
                index: first + j,
            });
        }
        Ok(())
    }

    /// The shape of input `i` of the group (statistics tensors included).
    pub fn input_shape(&self, i: usize) -> Result<Vec<usize>> {
        let s = &self.ctx.group.inputs[i];
        Ok(self.ctx.plan.models[s.model].require(&s.key)?.shape.clone())
    }

    /// The output tensor's shape.
    pub fn shape(&self) -> &[usize] {
        &self.ctx.group.out.shape
    }

    /// The output tensor's name.
    pub fn tensor(&self) -> &str {
        self.name()
    }

    /// The whole of input `i` (for kernels that are not element-wise, like RegMean's solve).
    pub fn read_whole(&self, i: usize) -> Result<Vec<f32>> {
        let s = &self.ctx.group.inputs[i];
        Ok(self.ctx.plan.models[s.model].read_f32(&s.key)?)
    }

    /// Checks and writes the whole output tensor.
    pub fn write_whole(&self, out: &[f32]) -> Result<()> {
        self.write(0, out)
    }

    /// A byte-exact copy of the first input, from the memory map; its pages are released
    /// afterwards.
    fn copy(&self) -> Result<()> {
        let s = &self.ctx.group.inputs[0];
        let model = &self.ctx.plan.models[s.model];
        self.writer
            .write_bytes(self.name(), 0, model.bytes(&s.key)?)?;
        model.release(&s.key);
        Ok(())
    }

    /// The kernel's statistics passes, then every chunk: decode the base and inputs, merge,
    /// check, write in place.
    pub fn run<K: Kernel>(&self, k: &K) -> Result<()> {
        let stats = k.stats(&Passes { ctx: &self.ctx })?;
        if K::ELEMENTWISE {
            return chunks(self.numel())
                .enumerate()
                .try_for_each(|(c, r)| self.run_blocks(k, &stats, c, &r));
        }
        chunks(self.numel()).enumerate().try_for_each(|(c, r)| {
            let base = self.ctx.read_base(&r)?;
            let inputs = self.ctx.read_inputs(&r)?;
            let mut out = vec![0f32; r.len()];
            let chunk = Chunk {
                index: c,
                first: r.start,
                base: base.as_deref(),
                inputs: &inputs,
            };
            k.chunk(&stats, &chunk, &mut out);
            self.write(r.start, &out)
        })
    }

    /// Chunk `c` (elements `r`) of an element-wise kernel, in blocks of [`BLOCK`] elements:
    /// each block's inputs are decoded into buffers that stay in the core's cache, merged,
    /// checked and encoded into the chunk's bytes, which are written with one positioned
    /// write.
    fn run_blocks<K: Kernel>(
        &self,
        k: &K,
        stats: &K::Stats,
        c: usize,
        r: &Range<usize>,
    ) -> Result<()> {
        let g = self.ctx.group;
        let dtype = self.writer.dtype_of(self.name())?;
        let size = dtype.size();
        let mut bytes = vec![0u8; r.len() * size];
        let mut base: Option<Vec<f32>> = g.base.as_ref().map(|_| Vec::with_capacity(BLOCK));
        let mut inputs: Vec<Vec<f32>> = vec![Vec::with_capacity(BLOCK); g.inputs.len()];
        let mut out = vec![0f32; BLOCK];
        // Each source's stored bytes of the chunk, by one positioned read (no mapped pages).
        let sources: Vec<&Source> = g.base.iter().chain(&g.inputs).collect();
        let mut raw: Vec<(Vec<u8>, mmerge_core::Dtype)> = Vec::with_capacity(sources.len());
        for s in &sources {
            let model = &self.ctx.plan.models[s.model];
            let mut bytes = Vec::new();
            model.read_bytes_into(&s.key, r.clone(), &mut bytes)?;
            raw.push((bytes, model.require(&s.key)?.dtype));
        }
        for first in r.clone().step_by(BLOCK) {
            let block = first..(first + BLOCK).min(r.end);
            let n = block.len();
            let bufs = base.iter_mut().chain(inputs.iter_mut());
            for ((bytes, dt), buf) in raw.iter().zip(bufs) {
                buf.resize(n, 0.0);
                let sz = dt.size();
                let at = (first - r.start) * sz;
                dt.decode_f32(&bytes[at..at + n * sz], buf);
            }
            let out = &mut out[..n];
            let chunk = Chunk {
                index: c,
                first,
                base: base.as_deref(),
                inputs: &inputs,
            };
            k.chunk(stats, &chunk, out);
            self.check_finite(first, out)?;
            let at = (first - r.start) * size;
            dtype.encode_f32(out, &mut bytes[at..at + n * size]);
        }
        Ok(self.writer.write_bytes(self.name(), r.start, &bytes)?)
    }
}

/// Elements per block of [`TensorExec::run_blocks`] (and of TIES' bracketed magnitude pass):
/// its decoded inputs (4 bytes each) stay in the core's cache.
pub(crate) const BLOCK: usize = 4096;
