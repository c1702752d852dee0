//! Exact k-th largest value of a stream of non-negative `f32`s in bounded memory.
//!
//! For non-negative IEEE-754 floats the bit pattern, read as `u32`, orders like the value
//! (NaNs, all exponent bits set, order above infinity). Two exact methods:
//!
//! - [`RadixSelect`], two passes: pass 1 histograms the high 16 bits and finds the bucket
//!   holding the k-th largest; pass 2 histograms the low 16 bits of the values in that bucket
//!   and finds the exact value. Memory is two 65,536-bin histograms whatever the stream's
//!   length, and each pass can be split across threads ([`RadixSelect::merge`]).
//! - [`Bracket`], one pass: a small sample of the stream gives a range of values that holds the
//!   k-th largest with high probability ([`Bracket::from_sample`]); one pass counts the values
//!   above the range and gathers those inside it, and the exact answer is selected among the
//!   gathered ones ([`Bracket::resolve`]). When the sample misled (the k-th largest is outside
//!   the range), `resolve` says so and the caller falls back to [`RadixSelect`]: the result is
//!   exact either way, only the work differs.
//!
//! The oracle in the tests is a full sort.

const BINS: usize = 1 << 16;

/// Which pass a [`RadixSelect`] expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    High,
    Low,
    Done,
}

/// The answer: the k-th largest value, how many values are strictly greater than it, and how
/// many equal it (so `greater < k <= greater + equal`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub value: f32,
    pub greater: u64,
    pub equal: u64,
}

/// Two-pass selector (see the module docs). Feed every value to [`RadixSelect::observe`] once
/// per pass, calling [`RadixSelect::end_pass`] after each, until [`RadixSelect::pass`] is
/// [`Pass::Done`].
#[derive(Debug, Clone)]
pub struct RadixSelect {
    k: u64,
    pass: Pass,
    hist: Vec<u64>,
    hi: u32,
    greater: u64,
    result: Option<Threshold>,
}

impl RadixSelect {
    /// Selects the `k`-th largest (1-based). `k == 0` or `k` past the end yields no threshold.
    pub fn new(k: u64) -> Self {
        RadixSelect {
            k,
            pass: if k == 0 { Pass::Done } else { Pass::High },
            hist: vec![0; BINS],
            hi: 0,
            greater: 0,
            result: None,
        }
    }

    /// A selector in the same pass with an empty histogram, for another thread to fill.
    pub fn fork(&self) -> Self {
        RadixSelect {
            hist: vec![0; BINS],
            ..self.clone()
        }
    }

    /// Adds another selector's histogram of the same pass into this one.
    pub fn merge(&mut self, other: &RadixSelect) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
    }

    /// The pass expected next.
    pub fn pass(&self) -> Pass {
        self.pass
    }

    /// Counts `values` (all `>= 0`) in the current pass.
    pub fn observe(&mut self, values: &[f32]) {
        match self.pass {
            Pass::High => {
                for v in values {
                    self.hist[(v.to_bits() >> 16) as usize] += 1;
                }
            }
            Pass::Low => {
                for v in values {
                    let b = v.to_bits();
                    if b >> 16 == self.hi {
                        self.hist[(b & 0xFFFF) as usize] += 1;
                    }
                }
            }
            Pass::Done => {}
        }
    }

    /// Closes the current pass.
    pub fn end_pass(&mut self) {
        match self.pass {
            Pass::High => match find(&self.hist, self.k) {
                Some((bin, above)) => {
                    self.hi = bin as u32;
                    self.greater = above;
                    self.pass = Pass::Low;
                }
                None => self.pass = Pass::Done,
            },
            Pass::Low => {
                if let Some((bin, above)) = find(&self.hist, self.k - self.greater) {
                    self.result = Some(Threshold {
                        value: f32::from_bits((self.hi << 16) | bin as u32),
                        greater: self.greater + above,
                        equal: self.hist[bin],
                    });
                }
                self.pass = Pass::Done;
            }
            Pass::Done => {}
        }
        self.hist.iter_mut().for_each(|h| *h = 0);
    }

    /// The threshold, once done (`None` when fewer than `k` values were seen or `k == 0`).
    pub fn result(&self) -> Option<Threshold> {
        self.result
    }
}

/// The bin (scanning from the top) where the running count reaches `k`, and the count above it.
fn find(hist: &[u64], k: u64) -> Option<(usize, u64)> {
    let mut above = 0u64;
    for bin in (0..hist.len()).rev() {
        if above + hist[bin] >= k {
            return Some((bin, above));
        }
        above += hist[bin];
    }
    None
}

/// A range `[lo, hi]` of non-negative `f32` bit patterns expected to hold a k-th largest value
/// (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bracket {
    pub lo: u32,
    pub hi: u32,
}

impl Bracket {
    /// A bracket for the `k`-th largest of `n` values, from `sample`, values drawn from the same
    /// stream (only read). The bracket spans the sample ranks where the k-th largest would
    /// fall, widened by six standard deviations of a sample quantile plus 0.1 % of the sample:
    /// a representative sample misses it with negligible probability. Open-ended (`lo = 0` or
    /// `hi = u32::MAX`) where that reaches past the sample's ends.
    pub fn from_sample(sample: &[f32], k: u64, n: u64) -> Bracket {
        let s = sample.len() as f64;
        if sample.is_empty() || n == 0 {
            return Bracket {
                lo: 0,
                hi: u32::MAX,
            };
        }
        let mut bits: Vec<u32> = sample.iter().map(|v| v.to_bits()).collect();
        bits.sort_unstable_by(|a, b| b.cmp(a));
        let q = (k as f64 / n as f64).clamp(0.0, 1.0);
        let rank = q * s; // the k-th largest sits near this 1-based rank of the sample
        let spread = 6.0 * (s * q * (1.0 - q)).sqrt() + 0.001 * s + 4.0;
        let hi_rank = (rank - spread).floor();
        let lo_rank = (rank + spread).ceil();
        let at = |r: f64| bits[(r as usize).clamp(1, bits.len()) - 1];
        Bracket {
            hi: if hi_rank < 1.0 { u32::MAX } else { at(hi_rank) },
            lo: if lo_rank > s { 0 } else { at(lo_rank) },
        }
    }

    /// Counts the `values` (all `>= 0`) above the bracket into `greater` and appends those inside
    /// it to `inside`, in order.
    #[inline]
    pub fn observe(&self, values: &[f32], greater: &mut u64, inside: &mut Vec<f32>) {
        let (lo, width, hi) = (self.lo, self.hi.wrapping_sub(self.lo), self.hi);
        let above: u32 = values.iter().map(|v| u32::from(v.to_bits() > hi)).sum();
        *greater += u64::from(above);
        // One unsigned comparison per value (`lo <= v <= hi`), true for the few inside: a branch
        // the CPU predicts, where two comparisons would each be a coin toss.
        inside.extend(
            values
                .iter()
                .filter(|v| v.to_bits().wrapping_sub(lo) <= width),
        );
    }

    /// The threshold of the `k` largest of a stream of which `greater` values lay above the
    /// bracket and the values in `inside` (slices in any order, values in any order) inside it;
    /// `None` when the k-th largest is not inside the bracket (or `k == 0`).
    pub fn resolve(&self, k: u64, greater: u64, inside: &[&[f32]]) -> Option<Threshold> {
        let n: usize = inside.iter().map(|s| s.len()).sum();
        if k <= greater || k - greater > n as u64 {
            return None;
        }
        let mut s = RadixSelect::new(k - greater);
        while s.pass() != Pass::Done {
            inside.iter().for_each(|v| s.observe(v));
            s.end_pass();
        }
        s.result().map(|t| Threshold {
            value: t.value,
            greater: greater + t.greater,
            equal: t.equal,
        })
    }
}

/// Convenience: the threshold of the `k` largest of an in-memory slice of non-negative values.
pub fn kth_largest(values: &[f32], k: u64) -> Option<Threshold> {
    let mut s = RadixSelect::new(k);
    while s.pass() != Pass::Done {
        s.observe(values);
        s.end_pass();
    }
    s.result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn oracle(values: &[f32], k: u64) -> Option<Threshold> {
        if k == 0 || k as usize > values.len() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        let value = v[k as usize - 1];
        let greater = v.iter().filter(|&&x| x > value).count() as u64;
        let equal = v.iter().filter(|&&x| x == value).count() as u64;
        Some(Threshold {
            value,
            greater,
            equal,
        })
    }

    #[test]
    fn hand_cases() {
        let v = [0.5f32, 3.0, 1.0, 3.0, 0.0, 2.0];
        let t = |value, greater, equal| {
            Some(Threshold {
                value,
                greater,
                equal,
            })
        };
        assert_eq!(kth_largest(&v, 1), t(3.0, 0, 2));
        assert_eq!(kth_largest(&v, 2), t(3.0, 0, 2));
        assert_eq!(kth_largest(&v, 3), t(2.0, 2, 1));
        assert_eq!(kth_largest(&v, 6), t(0.0, 5, 1));
        assert_eq!(kth_largest(&v, 7), None);
        assert_eq!(kth_largest(&v, 0), None);
    }

    #[test]
    fn split_passes_merge() {
        let v: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.001)
            .collect();
        let mut s = RadixSelect::new(100);
        while s.pass() != Pass::Done {
            let mut parts: Vec<_> = v
                .chunks(333)
                .map(|c| {
                    let mut f = s.fork();
                    f.observe(c);
                    f
                })
                .collect();
            for p in parts.drain(..) {
                s.merge(&p);
            }
            s.end_pass();
        }
        assert_eq!(s.result(), oracle(&v, 100));
    }

    /// The bracketed select over a stream seen in parts: its answer when it has one, and
    /// whether it had one.
    fn bracketed(v: &[f32], k: u64, b: Bracket, parts: usize) -> Option<Threshold> {
        let mut greater = 0u64;
        let inside: Vec<Vec<f32>> = v
            .chunks(v.len().div_ceil(parts).max(1))
            .map(|c| {
                let mut inside = vec![];
                b.observe(c, &mut greater, &mut inside);
                inside
            })
            .collect();
        let views: Vec<&[f32]> = inside.iter().map(Vec::as_slice).collect();
        b.resolve(k, greater, &views)
    }

    #[test]
    fn bracket_hand_cases() {
        let v = [0.5f32, 3.0, 1.0, 3.0, 0.0, 2.0, 2.0, 0.25];
        let b = |lo: f32, hi: f32| Bracket {
            lo: lo.to_bits(),
            hi: hi.to_bits(),
        };
        let t = |value, greater, equal| {
            Some(Threshold {
                value,
                greater,
                equal,
            })
        };
        // 3rd largest = 2.0, two above it, two equal.
        assert_eq!(bracketed(&v, 3, b(1.0, 2.0), 3), t(2.0, 2, 2));
        assert_eq!(bracketed(&v, 4, b(2.0, 2.0), 1), t(2.0, 2, 2));
        assert_eq!(bracketed(&v, 5, b(0.0, 1.0), 2), t(1.0, 4, 1));
        // The k-th largest above, or below, the bracket: no answer.
        assert_eq!(bracketed(&v, 2, b(1.0, 2.0), 2), None);
        assert_eq!(bracketed(&v, 6, b(1.0, 2.0), 2), None);
        assert_eq!(bracketed(&v, 0, b(0.0, 3.0), 1), None);
        // A NaN magnitude orders above everything, as in `RadixSelect`.
        let w = [1.0f32, f32::NAN, 2.0];
        let open = Bracket {
            lo: 0,
            hi: u32::MAX,
        };
        assert_eq!(bracketed(&w, 2, open, 1), kth_largest(&w, 2));
        assert_eq!(kth_largest(&w, 2), t(2.0, 1, 1));
    }

    #[test]
    fn bracket_from_sample_holds_the_answer() {
        // A value stream with structure (rows of different scales) and many exact ties.
        let n = 200_000usize;
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let h = crate::hash::splitmix64(i as u64);
                let scale = 1.0 + (i / 2048 % 7) as f32;
                ((h >> 40) % 512) as f32 * 0.01 * scale
            })
            .collect();
        for k in [1u64, 17, 1000, 100_000, 150_000, 199_999, 200_000] {
            let sample: Vec<f32> = v.iter().step_by(97).copied().collect();
            let b = Bracket::from_sample(&sample, k, n as u64);
            assert!(b.lo <= b.hi, "{b:?}");
            let got = bracketed(&v, k, b, 7);
            assert_eq!(got, oracle(&v, k), "k = {k}, {b:?}");
            let inside = v
                .iter()
                .filter(|x| (b.lo..=b.hi).contains(&x.to_bits()))
                .count();
            // A sample of 2,062 brackets ± 7 % of the ranks around the middle.
            assert!(
                k < 1000 || inside < n / 5,
                "k = {k}: {inside} values inside"
            );
        }
        // An empty sample brackets everything.
        assert_eq!(
            Bracket::from_sample(&[], 5, 10),
            Bracket {
                lo: 0,
                hi: u32::MAX
            }
        );
    }

    proptest! {
        #[test]
        fn bracketed_matches_sort_or_declines(
            v in proptest::collection::vec(0u16..2000, 1..300),
            k in 0u64..320,
            lo in 0u16..2000,
            width in 0u16..2000,
            parts in 1usize..5,
        ) {
            let v: Vec<f32> = v.into_iter().map(|x| f32::from(x) * 0.5).collect();
            let b = Bracket { lo: (f32::from(lo) * 0.5).to_bits(), hi: (f32::from(lo.saturating_add(width)) * 0.5).to_bits() };
            let want = oracle(&v, k);
            let got = bracketed(&v, k, b, parts);
            match got {
                Some(_) => prop_assert_eq!(got, want),
                // Declining is right only when the answer lies outside the bracket.
                None => prop_assert!(want.is_none_or(|t| !(b.lo..=b.hi).contains(&t.value.to_bits()))),
            }
        }

        #[test]
        fn matches_sort(v in proptest::collection::vec(0f32..1e6, 1..300), k in 0u64..320) {
            prop_assert_eq!(kth_largest(&v, k), oracle(&v, k));
        }

        #[test]
        fn matches_sort_with_many_ties(v in proptest::collection::vec(0u8..4, 1..300), k in 1u64..300) {
            let v: Vec<f32> = v.into_iter().map(|x| f32::from(x) * 0.25).collect();
            prop_assert_eq!(kth_largest(&v, k), oracle(&v, k));
        }
    }
}
