//! Element types of safetensors tensors, and conversion of raw little-endian bytes to and from
//! `f32`, the type every merge computes in.
//!
//! Rounding to a narrower type is round-to-nearest-even, as PyTorch's `.to(dtype)` does.

use std::fmt;
use std::str::FromStr;

use half::f16;

/// A safetensors element type, spelled as in the safetensors header (`"BF16"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    BOOL,
    U8,
    I8,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::BOOL | Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// Whether values of this type can be merged (converted to `f32` and back).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
    }

    /// The header spelling, e.g. `"BF16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::BOOL => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Parses a user-facing dtype name as mergekit spells it (`float32`, `bfloat16`, `float16`,
    /// `float64`) or as safetensors does (`F32`, ...).
    pub fn from_user(name: &str) -> Option<Dtype> {
        match name {
            "float32" | "fp32" | "F32" => Some(Dtype::F32),
            "bfloat16" | "bf16" | "BF16" => Some(Dtype::BF16),
            "float16" | "fp16" | "half" | "F16" => Some(Dtype::F16),
            "float64" | "fp64" | "F64" => Some(Dtype::F64),
            _ => None,
        }
    }

    /// Decodes `out.len()` elements from little-endian `bytes` into `f32`.
    ///
    /// `bytes.len()` must be `out.len() * self.size()` and `self` a float type; callers check
    /// both (the checkpoint reader validates sizes when it opens a file).
    pub fn decode_f32(self, bytes: &[u8], out: &mut [f32]) {
        debug_assert_eq!(bytes.len(), out.len() * self.size());
        match self {
            Dtype::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::BF16 => crate::simd::fast(
                #[inline(always)]
                || {
                    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                        *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
                    }
                },
            ),
            Dtype::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            Dtype::F64 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    *o = f64::from_le_bytes(a) as f32;
                }
            }
            other => unreachable!("decode_f32 called on non-float dtype {other}"),
        }
    }

    /// Encodes `src` into little-endian `out` of this type (round-to-nearest-even).
    pub fn encode_f32(self, src: &[f32], out: &mut [u8]) {
        debug_assert_eq!(out.len(), src.len() * self.size());
        match self {
            Dtype::F32 => {
                for (b, v) in out.chunks_exact_mut(4).zip(src) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            }
            Dtype::BF16 => crate::simd::fast(
                #[inline(always)]
                || {
                    for (b, v) in out.chunks_exact_mut(2).zip(src) {
                        b.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
                    }
                },
            ),
            Dtype::F16 => {
                for (b, v) in out.chunks_exact_mut(2).zip(src) {
                    b.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
                }
            }
            Dtype::F64 => {
                for (b, v) in out.chunks_exact_mut(8).zip(src) {
                    b.copy_from_slice(&f64::from(*v).to_le_bytes());
                }
            }
            other => unreachable!("encode_f32 called on non-float dtype {other}"),
        }
    }
}

/// `half::bf16::from_f32(v).to_bits()` without branches, so that loops over it vectorise: a NaN
/// keeps its sign and high bits with the quiet bit set; every other value is rounded to nearest,
/// ties to even (carrying into the exponent rounds to the next binade or to infinity).
#[inline(always)]
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let rounded = x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16;
    let nan = (x >> 16) | 0x0040;
    (if x & 0x7FFF_FFFF > 0x7F80_0000 {
        nan
    } else {
        rounded
    }) as u16
}

/// The `f32` value of bf16 bits (exact).
#[inline(always)]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "BOOL" => Dtype::BOOL,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            other => return Err(format!("unknown dtype `{other}`")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn round_trips_are_exact_where_representable() {
        let vals = [0.0f32, -0.0, 1.0, -2.5, 0.15625, 65504.0, 1e-3];
        for dt in [Dtype::F32, Dtype::F64] {
            let mut bytes = vec![0u8; vals.len() * dt.size()];
            dt.encode_f32(&vals, &mut bytes);
            let mut back = vec![0f32; vals.len()];
            dt.decode_f32(&bytes, &mut back);
            assert_eq!(back, vals, "{dt}");
        }
        // 1.0, -2.5, 0.15625 are exact in bf16 and f16.
        let exact = [1.0f32, -2.5, 0.15625];
        for dt in [Dtype::BF16, Dtype::F16] {
            let mut bytes = vec![0u8; exact.len() * dt.size()];
            dt.encode_f32(&exact, &mut bytes);
            let mut back = vec![0f32; exact.len()];
            dt.decode_f32(&bytes, &mut back);
            assert_eq!(back, exact, "{dt}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies exactly between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        let x = 1.0f32 + 2f32.powi(-8);
        let mut b = [0u8; 2];
        Dtype::BF16.encode_f32(&[x], &mut b);
        let mut back = [0f32];
        Dtype::BF16.decode_f32(&b, &mut back);
        assert_eq!(back[0], 1.0);
        // Slightly above the midpoint rounds up.
        let y = 1.0f32 + 2f32.powi(-8) + 2f32.powi(-20);
        Dtype::BF16.encode_f32(&[y], &mut b);
        Dtype::BF16.decode_f32(&b, &mut back);
        assert_eq!(back[0], 1.0 + 2f32.powi(-7));
    }

    /// The branch-free bf16 rounding against `half` (the previous implementation): every
    /// low half-word pattern around a rounding boundary, for high half-words across every
    /// binade, both signs, zeros, subnormals, the largest finite values, infinities and NaNs.
    #[test]
    fn bf16_encoding_matches_half() {
        let mut highs: Vec<u32> = (0..=0xFFFFu32).step_by(97).collect();
        highs.extend([0, 1, 0x7F, 0x80, 0x7F7F, 0x7F80, 0x7F81, 0x7FC0, 0x7FFF]);
        highs.extend(highs.clone().iter().map(|h| h | 0x8000));
        let lows: Vec<u32> = (0..=0xFFFFu32)
            .step_by(251)
            .chain([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF])
            .collect();
        let mut checked = 0;
        for h in &highs {
            for l in &lows {
                let v = f32::from_bits((h << 16) | l);
                let want = bf16::from_f32(v).to_bits();
                assert_eq!(f32_to_bf16_bits(v), want, "{:#010x}", v.to_bits());
                checked += 1;
            }
        }
        assert!(checked > 300_000, "{checked}");
        for b in [0u16, 0x8000, 0x3F80, 0x7F7F, 0x7F80, 0xFF80, 0x0001] {
            assert_eq!(bf16_bits_to_f32(b), bf16::from_bits(b).to_f32());
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!(Dtype::from_user("bfloat16"), Some(Dtype::BF16));
        assert_eq!(Dtype::from_user("float32"), Some(Dtype::F32));
        assert_eq!(Dtype::from_user("int4"), None);
        assert_eq!("F16".parse::<Dtype>(), Ok(Dtype::F16));
        assert!("F8".parse::<Dtype>().is_err());
    }
}
