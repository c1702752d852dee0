//! The streaming executor: output tensors one after another, each in fixed-size element chunks
//! processed in parallel on rayon's pool. A chunk decodes its slice of every input from the
//! memory-mapped shards, merges it, checks it is finite and writes it in place in the output
//! file. Working memory is a few chunks per thread whatever the model's size; after a tensor,
//! its input pages are released from the resident set.
//!
//! Methods that need whole-tensor statistics make extra streaming passes first: SLERP sums
//! norms and the dot product; TIES finds each input's exact magnitude threshold with a two-pass
//! radix select (`mmerge_core::select`), plus a counting pass when entries tie at it.

use std::ops::Range;

use indicatif::ProgressBar;
use mmerge_core::CheckpointWriter;
use mmerge_core::select::{Pass, RadixSelect};
use rayon::prelude::*;

use crate::error::{MergeError, Result};
use crate::methods::Kernel;
use crate::methods::gta::{Gta, InputRule, KeepRule, Sparsify, keep_count, l1_scale};
use crate::methods::slerp::{Slerp, SlerpStats};
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

/// Input bytes of one tensor (all its inputs together) that may stay resident between the
/// passes over it. Larger tensors release every chunk after each pass and fault it back in on
/// the next: memory stays bounded whatever the model, at the price of page faults.
pub const RESIDENT_BUDGET: usize = 512 << 20;

/// Whether a read is a statistics pass (more passes follow) or the last pass over a chunk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    Stats,
    Last,
}

struct Ctx<'a> {
    plan: &'a MergePlan,
    group: &'a Group,
    /// Release chunks after statistics passes too (the tensor exceeds [`RESIDENT_BUDGET`]).
    release_stats: bool,
}

impl Ctx<'_> {
    fn read(&self, s: &Source, r: &Range<usize>, when: Read) -> Result<Vec<f32>> {
        let mut buf = vec![0f32; r.len()];
        let model = &self.plan.models[s.model];
        model.read_f32_into(&s.key, r.clone(), &mut buf)?;
        // Keep the resident set small, however large the tensor; but do not make later
        // passes fault the pages back in when the tensor fits the budget.
        if when == Read::Last || self.release_stats {
            model.release_range(&s.key, r.clone());
        }
        Ok(buf)
    }

    fn read_inputs(&self, r: &Range<usize>) -> Result<Vec<Vec<f32>>> {
        self.group
            .inputs
            .iter()
            .map(|s| self.read(s, r, Read::Last))
            .collect()
    }

    fn read_base(&self, r: &Range<usize>, when: Read) -> Result<Vec<f32>> {
        match &self.group.base {
            Some(b) => self.read(b, r, when),
            None => Err(MergeError::Param {
                name: "base_model".into(),
                key: self.group.out.name.clone(),
                message: "no base tensor".into(),
            }),
        }
    }
}

/// Runs every group of `plan` into `writer`, advancing `progress` by output bytes.
pub fn execute(plan: &MergePlan, writer: &CheckpointWriter, progress: &ProgressBar) -> Result<()> {
    for group in &plan.groups {
        let exec = Exec {
            ctx: Ctx {
                plan,
                group,
                release_stats: plan.group_input_bytes(group) > RESIDENT_BUDGET,
            },
            writer,
        };
        exec.run()?;
        for s in group.inputs.iter().chain(&group.base) {
            plan.models[s.model].release(&s.key);
        }
        let bytes = group.out.shape.iter().product::<usize>() * group.out.dtype.size();
        progress.inc(bytes as u64);
    }
    Ok(())
}

struct Exec<'a> {
    ctx: Ctx<'a>,
    writer: &'a CheckpointWriter,
}

impl Exec<'_> {
    fn numel(&self) -> usize {
        self.ctx.group.out.shape.iter().product()
    }

    fn name(&self) -> &str {
        &self.ctx.group.out.name
    }

    fn write(&self, first: usize, out: &[f32]) -> Result<()> {
        if let Some(j) = out.iter().position(|x| !x.is_finite()) {
            return Err(MergeError::NonFinite {
                key: self.name().to_string(),
                what: if out[j].is_nan() { "NaN" } else { "infinity" },
                index: first + j,
            });
        }
        Ok(self.writer.write_f32(self.name(), first, out)?)
    }

    fn run(&self) -> Result<()> {
        let g = self.ctx.group;
        match &g.kernel {
            None => {
                let s = &g.inputs[0];
                let bytes = self.ctx.plan.models[s.model].bytes(&s.key)?;
                Ok(self.writer.write_bytes(self.name(), 0, bytes)?)
            }
            Some(Kernel::Linear(k)) => chunks(self.numel()).try_for_each(|r| {
                let inputs = self.ctx.read_inputs(&r)?;
                let mut out = vec![0f32; r.len()];
                k.chunk(&inputs, &mut out);
                self.write(r.start, &out)
            }),
            Some(Kernel::Passthrough(k)) => chunks(self.numel()).try_for_each(|r| {
                let x = self.ctx.read(&g.inputs[0], &r, Read::Last)?;
                let mut out = vec![0f32; r.len()];
                k.chunk(&x, &mut out);
                self.write(r.start, &out)
            }),
            Some(Kernel::Slerp(k)) => self.slerp(k),
            Some(Kernel::Gta(k)) => self.gta(k),
        }
    }

    fn slerp(&self, k: &Slerp) -> Result<()> {
        let g = self.ctx.group;
        let stats = chunks(self.numel())
            .map(|r| {
                let mut s = SlerpStats::default();
                s.add(
                    &self.ctx.read_base(&r, Read::Stats)?,
                    &self.ctx.read(&g.inputs[0], &r, Read::Stats)?,
                );
                Ok::<_, MergeError>(s)
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            // Summed in chunk order: the same bits whatever the thread count.
            .fold(SlerpStats::default(), SlerpStats::merge);
        let coef = k.coefficients(stats);
        chunks(self.numel()).try_for_each(|r| {
            let v0 = self.ctx.read_base(&r, Read::Last)?;
            let v1 = self.ctx.read(&g.inputs[0], &r, Read::Last)?;
            let mut out = vec![0f32; r.len()];
            Slerp::chunk(coef, &v0, &v1, &mut out);
            self.write(r.start, &out)
        })
    }

    /// |input − base| of a chunk for each input in `which`, as f32 (the ranking TIES trims by);
    /// the base chunk is read once for all of them.
    fn magnitudes(&self, which: &[usize], r: &Range<usize>) -> Result<Vec<Vec<f32>>> {
        let b = self.ctx.read_base(r, Read::Stats)?;
        which
            .iter()
            .map(|&i| {
                let mut x = self.ctx.read(&self.ctx.group.inputs[i], r, Read::Stats)?;
                for (v, b) in x.iter_mut().zip(&b) {
                    *v = (*v - b).abs();
                }
                Ok(x)
            })
            .collect()
    }

    /// Per-chunk keep rules of every input under magnitude sparsification. The selections of
    /// all inputs advance together, so each pass reads the base once.
    fn keep_rules(&self, densities: &[f64]) -> Result<Vec<Vec<KeepRule>>> {
        let numel = self.numel();
        let n_chunks = numel.div_ceil(CHUNK);
        let ks: Vec<u64> = densities.iter().map(|d| keep_count(*d, numel)).collect();
        let mut rules: Vec<Vec<KeepRule>> = ks
            .iter()
            .map(|&k| match k {
                0 => vec![KeepRule::NONE; n_chunks],
                _ => vec![KeepRule::ALL; n_chunks],
            })
            .collect();
        // Inputs that keep some but not all entries need a threshold.
        let active: Vec<usize> = (0..ks.len())
            .filter(|&i| ks[i] > 0 && ks[i] < numel as u64)
            .collect();
        let mut sels: Vec<RadixSelect> = active.iter().map(|&i| RadixSelect::new(ks[i])).collect();
        while sels.iter().any(|s| s.pass() != Pass::Done) {
            // One histogram set per worker over a contiguous run of chunks: memory is bounded
            // by the thread count, and integer counts merge to the same result in any order.
            let workers = rayon::current_num_threads().max(1);
            let per = n_chunks.div_ceil(workers);
            let worker_parts = (0..workers)
                .into_par_iter()
                .map(|w| {
                    let mut f: Vec<RadixSelect> = sels.iter().map(RadixSelect::fork).collect();
                    for c in (w * per)..((w + 1) * per).min(n_chunks) {
                        let r = chunk_range(c, numel);
                        for (s, m) in f.iter_mut().zip(self.magnitudes(&active, &r)?) {
                            s.observe(&m);
                        }
                    }
                    Ok(f)
                })
                .collect::<Result<Vec<_>>>()?;
            for wp in &worker_parts {
                sels.iter_mut().zip(wp).for_each(|(a, b)| a.merge(b));
            }
            sels.iter_mut().for_each(RadixSelect::end_pass);
        }
        // Entries equal to the threshold that must partly go are kept lowest index first:
        // each chunk gets its share, from a count of equal entries per chunk.
        let mut need_count = vec![];
        for (a, s) in active.iter().zip(&sels) {
            let Some(th) = s.result() else { continue };
            let wanted = ks[*a] - th.greater;
            let rule = |ties_left| KeepRule {
                value: th.value,
                ties_left,
                keep_all: false,
                keep_none: false,
            };
            rules[*a] = vec![rule(u64::MAX); n_chunks];
            if wanted != th.equal {
                need_count.push((*a, th.value, wanted));
            }
        }
        if !need_count.is_empty() {
            let which: Vec<usize> = need_count.iter().map(|n| n.0).collect();
            let equal: Vec<Vec<u64>> = chunks(numel)
                .map(|r| {
                    let mags = self.magnitudes(&which, &r)?;
                    Ok(mags
                        .iter()
                        .zip(&need_count)
                        .map(|(m, n)| m.iter().filter(|v| **v == n.1).count() as u64)
                        .collect())
                })
                .collect::<Result<_>>()?;
            for (j, &(a, _, wanted)) in need_count.iter().enumerate() {
                let mut before = 0u64;
                for (c, counts) in equal.iter().enumerate() {
                    let e = counts[j];
                    rules[a][c].ties_left = wanted.saturating_sub(before).min(e);
                    before += e;
                }
            }
        }
        Ok(rules)
    }

    fn gta(&self, k: &Gta) -> Result<()> {
        let g = self.ctx.group;
        let n_chunks = self.numel().div_ceil(CHUNK);
        let keeps = if k.sparsify == Sparsify::Magnitude {
            self.keep_rules(&k.densities)?
        } else {
            vec![vec![KeepRule::ALL; n_chunks]; g.inputs.len()]
        };
        let mut rules: Vec<Vec<InputRule>> = Vec::with_capacity(g.inputs.len());
        for (i, keep) in keeps.into_iter().enumerate() {
            let stream = crate::methods::stream_id(self.ctx.plan.seed, self.name(), i);
            let mut r: Vec<InputRule> = keep
                .into_iter()
                .map(|keep| InputRule {
                    keep,
                    stream,
                    scale: 1.0,
                })
                .collect();
            if k.rescale && k.sparsify != Sparsify::None && k.densities[i] < 1.0 {
                // mergekit's L1 rescale needs both norms over the whole tensor first.
                let (full, kept) = chunks(self.numel())
                    .enumerate()
                    .map(|(c, range)| {
                        let base = self.ctx.read_base(&range, Read::Stats)?;
                        let x = self.ctx.read(&g.inputs[i], &range, Read::Stats)?;
                        let mut tau = vec![0f64; range.len()];
                        Ok::<_, MergeError>(k.sparsified(
                            i,
                            range.start,
                            &base,
                            &x,
                            &r[c],
                            &mut tau,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    // Summed in chunk order: the same bits whatever the thread count.
                    .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
                let scale = l1_scale(full, kept);
                r.iter_mut().for_each(|x| x.scale = scale);
            }
            rules.push(r);
        }
        chunks(self.numel()).enumerate().try_for_each(|(c, r)| {
            let base = self.ctx.read_base(&r, Read::Last)?;
            let inputs = self.ctx.read_inputs(&r)?;
            let chunk_rules: Vec<InputRule> = rules.iter().map(|v| v[c]).collect();
            let mut out = vec![0f32; r.len()];
            k.chunk(r.start, &base, &inputs, &chunk_rules, &mut out);
            self.write(r.start, &out)
        })
    }
}
