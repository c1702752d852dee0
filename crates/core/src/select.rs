//! Exact k-th largest value of a stream of non-negative `f32`s in bounded memory.
//!
//! For non-negative IEEE-754 floats the bit pattern, read as `u32`, orders like the value.
//! Pass 1 histograms the high 16 bits and finds the bucket holding the k-th largest; pass 2
//! histograms the low 16 bits of the values in that bucket and finds the exact value. Memory is
//! two 65,536-bin histograms whatever the stream's length, and each pass can be split across
//! threads ([`RadixSelect::merge`]). The oracle in the tests is a full sort.

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

    proptest! {
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
