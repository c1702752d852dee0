//! The streaming engine: computes a [`TensorDistance`] from any [`PairSource`] chunk by chunk,
//! so a tensor is never materialised whole.
//!
//! Three passes over the source, each split into contiguous runs of chunks that run in
//! parallel (rayon):
//! 1. the [`Accumulator`] of every chunk, and the high-16-bit histogram of the joint
//!    magnitudes for the exact top-m threshold ([`RadixSelect`]);
//! 2. the low-16-bit histogram, which fixes the threshold value `t` and how many are above it;
//! 3. per chunk, the soft-sign sums over `μ_i > t` and over `μ_i ≥ t`, and the number of ties
//!    `μ_i = t`. A sequential scan then takes whole chunks' ties while they fit, and recomputes
//!    the one chunk where the tie budget runs out with an index-ordered cut.
//!
//! Partial sums are combined in chunk order whatever the number of threads, so results are
//! deterministic, and at k = 100 % the TSSD sums are the SSD sums bit for bit.

use std::ops::Range;

use mmerge_core::select::{Pass, RadixSelect};
use rayon::prelude::*;

use crate::distance::{
    Accumulator, DistanceOptions, SoftSignSums, TensorDistance, joint_magnitude, tssd_count,
};
use crate::error::{DistanceError, Result};

/// A pair of equally long `f32` vectors that can be read by element range, from any thread.
pub trait PairSource: Sync {
    /// The length d of both vectors.
    fn len(&self) -> usize;

    /// Whether d is 0.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `a` and `b` with elements `range` of the two vectors. `scratch` (same length) is
    /// free for the source to use, e.g. for a base when forming task vectors.
    fn read(
        &self,
        range: Range<usize>,
        a: &mut [f32],
        b: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()>;
}

/// Two in-memory vectors, or their task vectors `a − base`, `b − base` (formed in `f32`).
#[derive(Debug, Clone, Copy)]
pub struct SlicePair<'a> {
    a: &'a [f32],
    b: &'a [f32],
    base: Option<&'a [f32]>,
}

impl<'a> SlicePair<'a> {
    /// Checks that all inputs have the same length.
    pub fn new(a: &'a [f32], b: &'a [f32], base: Option<&'a [f32]>) -> Result<Self> {
        let check = |what, got: usize| {
            if got == a.len() {
                Ok(())
            } else {
                Err(DistanceError::LengthMismatch {
                    what,
                    got,
                    expected: a.len(),
                })
            }
        };
        check("b", b.len())?;
        if let Some(w) = base {
            check("base", w.len())?;
        }
        Ok(SlicePair { a, b, base })
    }
}

/// `x −= w` elementwise in `f32`: the task vector of a chunk.
pub(crate) fn subtract(x: &mut [f32], w: &[f32]) {
    for (x, w) in x.iter_mut().zip(w) {
        *x -= *w;
    }
}

impl PairSource for SlicePair<'_> {
    fn len(&self) -> usize {
        self.a.len()
    }

    fn read(&self, range: Range<usize>, a: &mut [f32], b: &mut [f32], _: &mut [f32]) -> Result<()> {
        a.copy_from_slice(&self.a[range.clone()]);
        b.copy_from_slice(&self.b[range.clone()]);
        if let Some(w) = self.base {
            subtract(a, &w[range.clone()]);
            subtract(b, &w[range]);
        }
        Ok(())
    }
}

/// Distances between two in-memory vectors (task vectors when `base` is given).
pub fn slice_distance(
    a: &[f32],
    b: &[f32],
    base: Option<&[f32]>,
    opts: &DistanceOptions,
) -> Result<TensorDistance> {
    pair_distance(&SlicePair::new(a, b, base)?, opts)
}

/// One chunk, read into the worker's buffers.
struct Chunk<'s> {
    a: &'s [f32],
    b: &'s [f32],
    keys: &'s mut [f32],
}

/// Runs `body` on every chunk of `src`: contiguous runs of chunks go to parallel workers, each
/// with its own state from `init`. Returns the workers' states and the per-chunk outputs in
/// chunk order.
fn chunked<S, St, T>(
    src: &S,
    chunk: usize,
    init: impl Fn() -> St + Sync,
    body: impl Fn(&mut St, Chunk<'_>) -> T + Sync,
) -> Result<(Vec<St>, Vec<T>)>
where
    S: PairSource + ?Sized,
    St: Send,
    T: Send,
{
    let d = src.len();
    let nchunks = d.div_ceil(chunk);
    let parts = nchunks.min(rayon::current_num_threads()).max(1);
    let per = nchunks.div_ceil(parts).max(1);
    let runs: Vec<Result<(St, Vec<T>)>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let mut state = init();
            let len = chunk.min(d);
            let (mut a, mut b, mut w, mut keys) = (
                vec![0f32; len],
                vec![0f32; len],
                vec![0f32; len],
                vec![0f32; len],
            );
            let mut out = Vec::with_capacity(per);
            for c in (p * per)..((p + 1) * per).min(nchunks) {
                let range = c * chunk..((c + 1) * chunk).min(d);
                let n = range.len();
                src.read(range, &mut a[..n], &mut b[..n], &mut w[..n])?;
                let (a, b) = (&a[..n], &b[..n]);
                let keys = &mut keys[..n];
                for ((k, &x), &y) in keys.iter_mut().zip(a).zip(b) {
                    *k = joint_magnitude(x, y);
                }
                out.push(body(&mut state, Chunk { a, b, keys }));
            }
            Ok((state, out))
        })
        .collect();
    let mut states = Vec::with_capacity(parts);
    let mut outs = Vec::with_capacity(nchunks);
    for run in runs {
        let (s, o) = run?;
        states.push(s);
        outs.extend(o);
    }
    Ok((states, outs))
}

/// Pass-3 sums of one chunk.
#[derive(Debug, Clone, Copy, Default)]
struct ChunkTail {
    above: SoftSignSums,
    at_or_above: SoftSignSums,
    ties: u64,
}

/// Soft-sign sums of a chunk over `μ > t`, plus the first `tie_limit` ties `μ = t` (all when
/// `None`), in index order; and the number of ties.
fn tail_sums(c: &Chunk<'_>, t: u32, tie_limit: Option<u64>) -> ChunkTail {
    let mut r = ChunkTail::default();
    for ((&k, &x), &y) in c.keys.iter().zip(c.a).zip(c.b) {
        let bits = k.to_bits();
        if bits > t {
            let p = f64::from(x) * f64::from(y);
            r.above.add(p);
            r.at_or_above.add(p);
        } else if bits == t {
            if tie_limit.is_none_or(|l| r.ties < l) {
                r.at_or_above.add(f64::from(x) * f64::from(y));
            }
            r.ties += 1;
        }
    }
    r
}

/// All distances between the two vectors of `src`, streamed in `opts.chunk_len` chunks.
pub fn pair_distance<S: PairSource + ?Sized>(
    src: &S,
    opts: &DistanceOptions,
) -> Result<TensorDistance> {
    opts.validate()?;
    let d = src.len();
    if d == 0 {
        return Ok(TensorDistance::default());
    }
    let chunk = opts.chunk_len;
    let m = tssd_count(d as u64, opts.tssd_top_k_percent);
    let mut select = RadixSelect::new(m);

    // Pass 1: accumulators and the high histogram.
    let (forks, accs) = chunked(
        src,
        chunk,
        || select.fork(),
        |sel, c| {
            sel.observe(c.keys);
            let mut acc = Accumulator::default();
            acc.observe(c.a, c.b);
            acc
        },
    )?;
    let mut acc = Accumulator::default();
    accs.iter().for_each(|x| acc.merge(x));
    forks.iter().for_each(|f| select.merge(f));
    select.end_pass();

    // Pass 2 (and any further radix pass): the exact threshold.
    while select.pass() != Pass::Done {
        let (forks, _) = chunked(src, chunk, || select.fork(), |sel, c| sel.observe(c.keys))?;
        forks.iter().for_each(|f| select.merge(f));
        select.end_pass();
    }
    let threshold = select.result().ok_or_else(|| {
        DistanceError::Internal(format!("no top-{m} threshold among {d} magnitudes"))
    })?;
    let t = threshold.value.to_bits();

    // Pass 3: sums above and at the threshold, then the index-ordered cut of the ties.
    let (_, tails) = chunked(src, chunk, || (), |_, c| tail_sums(&c, t, None))?;
    let mut ties_left = m - threshold.greater;
    let mut truncated = SoftSignSums::default();
    for (i, tail) in tails.iter().enumerate() {
        if tail.ties <= ties_left {
            truncated.merge(&tail.at_or_above);
            ties_left -= tail.ties;
        } else if ties_left == 0 {
            truncated.merge(&tail.above);
        } else {
            truncated.merge(&boundary_chunk(src, chunk, i, t, ties_left)?.at_or_above);
            ties_left = 0;
        }
    }
    Ok(TensorDistance {
        acc,
        truncated,
        tssd_count: m,
    })
}

/// Recomputes chunk `i`, keeping only its first `limit` ties.
fn boundary_chunk<S: PairSource + ?Sized>(
    src: &S,
    chunk: usize,
    i: usize,
    t: u32,
    limit: u64,
) -> Result<ChunkTail> {
    let range = i * chunk..((i + 1) * chunk).min(src.len());
    let n = range.len();
    let (mut a, mut b, mut w, mut keys) =
        (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    src.read(range, &mut a, &mut b, &mut w)?;
    for ((k, &x), &y) in keys.iter_mut().zip(&a).zip(&b) {
        *k = joint_magnitude(x, y);
    }
    Ok(tail_sums(
        &Chunk {
            a: &a,
            b: &b,
            keys: &mut keys,
        },
        t,
        Some(limit),
    ))
}
