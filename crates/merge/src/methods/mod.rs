//! The merge methods. Each module opens with its formula, its paper and our deviations from
//! mergekit, and holds the chunk kernel the streaming executor calls; `crate::oracle` holds the
//! plain float64 reference each kernel is tested against.
//!
//! Methods are chosen by name (`merge_method: ties`); [`MethodKind::NAMES`] lists them.

pub mod gta;
pub mod linear;
pub mod passthrough;
pub mod slerp;

/// A merge method by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    Linear,
    TaskArithmetic,
    Ties,
    DareLinear,
    DareTies,
    Slerp,
    Passthrough,
}

impl MethodKind {
    /// Every method name, as written in configs.
    pub const NAMES: [&'static str; 7] = [
        "linear",
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "slerp",
        "passthrough",
    ];
    const ALL: [MethodKind; 7] = [
        MethodKind::Linear,
        MethodKind::TaskArithmetic,
        MethodKind::Ties,
        MethodKind::DareLinear,
        MethodKind::DareTies,
        MethodKind::Slerp,
        MethodKind::Passthrough,
    ];

    /// Looks a method up by its config name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|k| *k == self).unwrap_or(0)]
    }

    /// Whether the method needs `base_model` (it merges task vectors, or it is SLERP's t = 0 end).
    pub fn needs_base(self) -> bool {
        !matches!(self, MethodKind::Linear | MethodKind::Passthrough)
    }

    /// Parameters that may differ per input model (`models[i].parameters`).
    pub fn model_params(self) -> &'static [&'static str] {
        match self {
            MethodKind::Linear | MethodKind::TaskArithmetic => &["weight"],
            MethodKind::Ties | MethodKind::DareLinear | MethodKind::DareTies => {
                &["weight", "density"]
            }
            MethodKind::Slerp => &[],
            MethodKind::Passthrough => &["scale"],
        }
    }

    /// Parameters that hold for the whole merge of a tensor (top-level `parameters`).
    pub fn global_params(self) -> &'static [&'static str] {
        match self {
            MethodKind::Linear => &["normalize"],
            MethodKind::TaskArithmetic => &["normalize", "lambda"],
            MethodKind::Ties => &["normalize", "lambda", "int8_mask", "rescale"],
            MethodKind::DareLinear | MethodKind::DareTies => {
                &["normalize", "lambda", "int8_mask", "rescale"]
            }
            MethodKind::Slerp => &["t"],
            MethodKind::Passthrough => &[],
        }
    }
}

/// What a method does to one tensor, with every parameter evaluated for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Kernel {
    /// Weighted average of the inputs.
    Linear(linear::Linear),
    /// Task-vector methods: task arithmetic, TIES, DARE.
    Gta(gta::Gta),
    /// Spherical interpolation between the base (t = 0) and one other model (t = 1).
    Slerp(slerp::Slerp),
    /// One input, copied (optionally scaled).
    Passthrough(passthrough::Passthrough),
}

/// Deterministic per-element uniform numbers in [0, 1) for DARE: a SplitMix64 hash of
/// (seed, tensor, input, element). A pure function, so chunks may run in any order on any
/// thread and the oracle can draw the very same numbers.
pub fn uniform(stream: u64, index: u64) -> f64 {
    let mut z = stream ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The random stream of one input of one tensor: FNV-1a of the tensor name mixed with the seed
/// and the input's position.
pub fn stream_id(seed: u64, tensor: &str, input: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tensor.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.rotate_left(17) ^ (input as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in MethodKind::NAMES {
            assert_eq!(MethodKind::from_name(n).map(MethodKind::name), Some(n));
        }
        assert_eq!(MethodKind::from_name("tie"), None);
    }

    #[test]
    fn uniform_is_uniform_enough() {
        let s = stream_id(7, "layers.0.w", 1);
        let n = 200_000;
        let mean = (0..n).map(|i| uniform(s, i)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let below = (0..n).filter(|&i| uniform(s, i) < 0.3).count() as f64 / n as f64;
        assert!((below - 0.3).abs() < 0.005, "{below}");
        assert_ne!(stream_id(7, "a", 0), stream_id(7, "a", 1));
        assert_ne!(stream_id(7, "a", 0), stream_id(8, "a", 0));
    }
}
