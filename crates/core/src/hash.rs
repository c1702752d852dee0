//! The project's stable, non-cryptographic hashes: one home, so every seed derivation and
//! every "random" split in mmerge goes through the same two functions.
//!
//! - FNV-1a, 64 bit (Fowler, Noll, Vo): h₀ = 0xcbf29ce484222325,
//!   hᵢ₊₁ = (hᵢ ⊕ byteᵢ) · 0x100000001b3 (mod 2⁶⁴). Used to turn names into numbers.
//! - The SplitMix64 finaliser (Steele, Lea, Flood 2014; the constants of Vigna's
//!   `splitmix64.c`): z ← (z ⊕ z≫30)·0xbf58476d1ce4e5b9, z ← (z ⊕ z≫27)·0x94d049bb133111eb,
//!   z ⊕ z≫31. A bijection on u64 that spreads every input bit over the output, used to
//!   derive independent seeds from (seed, epoch, index)-like tuples.
//!
//! Changing either changes every generated suite, DARE mask and loader order: they are
//! pinned by the tests below.

/// The golden-ratio increment of SplitMix64 (⌊2⁶⁴/φ⌋), used to spread a counter before
/// [`splitmix64`].
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The SplitMix64 finaliser of `z`.
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 53 bits of `z` as a float in [0, 1) (every value a multiple of 2⁻⁵³).
pub fn unit_f64(z: u64) -> f64 {
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A SplitMix64 generator: the i-th output is `splitmix64(seed + i·γ)`. Small, fast and
/// statistically sound for test data and self-checks; the project's one ad-hoc random stream
/// (anything that must match a paper's or a crate's generator uses that one instead).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        splitmix64(self.state)
    }

    /// The next value in [-1, 1), a multiple of 2⁻²³ (exact in `f32`).
    pub fn signed_unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (64-bit FNV-1a).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix64_matches_the_reference_generator() {
        // splitmix64.c seeded with 1234567: its first outputs are splitmix64(seed + k·γ).
        let seed: u64 = 1_234_567;
        let want = [6_457_827_717_110_365_317u64, 3_203_168_211_198_807_973];
        for (k, w) in want.iter().enumerate() {
            let z = seed.wrapping_add(GOLDEN_GAMMA.wrapping_mul(k as u64 + 1));
            assert_eq!(splitmix64(z), *w);
        }
    }

    #[test]
    fn the_stream_is_splitmix64_of_the_counter() {
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
        let v: Vec<f32> = (0..10_000).map(|_| g.signed_unit_f32()).collect();
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03, "{mean}");
    }

    #[test]
    fn unit_f64_spans_zero_to_one() {
        assert_eq!(unit_f64(0), 0.0);
        assert_eq!(unit_f64(u64::MAX), 1.0 - 2f64.powi(-53));
    }
}
