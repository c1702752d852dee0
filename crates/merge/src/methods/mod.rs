//! The merge methods: one module each, one line each in the registry below.
//!
//! A method is a [`Method`]: a constant that declares its config name, its reference, whether
//! it needs `base_model`, how many inputs a tensor takes, its parameters ([`ParamSpec`]: per
//! model or shared, default, range, gradient or not), the golden fixtures made by mergekit
//! that pin it, and two functions: `plan`, which turns one tensor's evaluated parameters into a
//! chunk [`Kernel`] (with any whole-tensor statistics pass it needs), and `oracle`, a plain
//! float64 whole-tensor implementation the kernel is tested against.
//!
//! The planner (`crate::plan`) evaluates every declared parameter for every tensor, so a
//! method never parses a config; the executor (`crate::exec`) runs a kernel's statistics
//! passes and then its chunk function over fixed-size chunks. The chunk loop is generic over
//! the kernel type ([`Kernel`] has an associated statistics type), so each kernel's hot loop
//! is compiled for it: one dynamic call per tensor, none per chunk or element.
//!
//! **Adding a method** (`docs/architecture.md`, "How to add a merge method"): write
//! `methods/<name>.rs` opening with its formula, paper and deviations, holding a
//! `pub const <NAME>: Method`; add one line to `registry!` below; add a mergekit golden case
//! under `tests/fixtures/mergekit` (or say in `goldens` why mergekit's output cannot be
//! reproduced). The tests in `tests/registry.rs` check every registered method: its module
//! doc, its oracle against the streamed merge, its golden cases.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use mmerge_core::hash::{GOLDEN_GAMMA, fnv1a, splitmix64, unit_f64};

use crate::error::Result;
use crate::exec::{Chunk, Passes, TensorExec};

pub mod arcee_fusion;
pub mod fisher;
pub mod gradmatch;
pub mod gta;
pub mod karcher;
pub mod linear;
pub mod model_stock;
pub mod multislerp;
pub mod nearswap;
pub mod nuslerp;
pub mod passthrough;
pub mod ram;
pub mod regmean;
pub mod sce;
pub mod slerp;
pub mod sparsify;

/// Declares the registry: `Variant => module::CONST,` per method, in the order `mmerge methods`
/// lists them. Builds [`MethodKind`] (one variant per line), [`MethodKind::ALL`],
/// [`MethodKind::NAMES`] and each method's module name (for the doc checks).
macro_rules! registry {
    ($($variant:ident => $module:ident :: $item:ident,)+) => {
        /// A registered merge method.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MethodKind {
            $($variant,)+
        }

        impl MethodKind {
            /// Every method, in registry order.
            pub const ALL: &'static [MethodKind] = &[$(MethodKind::$variant,)+];
            /// Every method name, as written in configs, in registry order.
            pub const NAMES: &'static [&'static str] = &[$($module::$item.name,)+];

            /// The method's declaration.
            pub fn method(self) -> &'static Method {
                match self {
                    $(MethodKind::$variant => &$module::$item,)+
                }
            }

            /// The module that declares the method, `src/methods/<module>.rs` (its `//!` doc
            /// holds the formula, paper and deviations).
            pub fn module(self) -> &'static str {
                match self {
                    $(MethodKind::$variant => stringify!($module),)+
                }
            }
        }
    };
}

registry! {
    Linear => linear::LINEAR,
    TaskArithmetic => gta::TASK_ARITHMETIC,
    Ties => gta::TIES,
    DareLinear => gta::DARE_LINEAR,
    DareTies => gta::DARE_TIES,
    Slerp => slerp::SLERP,
    Passthrough => passthrough::PASSTHROUGH,
    RegMean => regmean::REGMEAN,
    Fisher => fisher::FISHER,
    GradientMatching => gradmatch::GRADIENT_MATCHING,
    NuSlerp => nuslerp::NUSLERP,
    NearSwap => nearswap::NEARSWAP,
    MultiSlerp => multislerp::MULTISLERP,
    ModelStock => model_stock::MODEL_STOCK,
    Karcher => karcher::KARCHER,
    Ram => ram::RAM,
    RamPlusTl => ram::RAMPLUS_TL,
    Breadcrumbs => gta::BREADCRUMBS,
    BreadcrumbsTies => gta::BREADCRUMBS_TIES,
    Della => gta::DELLA,
    DellaLinear => gta::DELLA_LINEAR,
    Sce => sce::SCE,
    ArceeFusion => arcee_fusion::ARCEE_FUSION,
}

impl MethodKind {
    /// Looks a method up by its config name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        self.method().name
    }

    /// Whether the method needs `base_model`.
    pub fn needs_base(self) -> bool {
        self.method().needs_base
    }

    /// The statistics the method reads besides the weights.
    pub fn statistics(self) -> Statistics {
        self.method().statistics
    }

    /// The declared parameters (per-model ones first).
    pub fn params(self) -> &'static [ParamSpec] {
        self.method().params
    }
}

/// One merge method: what it is called, what it takes, how it plans a tensor, and its oracle.
#[derive(Debug)]
pub struct Method {
    /// The config name (`merge_method: ties`).
    pub name: &'static str,
    /// Where the method comes from; its module doc must cite it.
    pub reference: Reference,
    /// Whether `base_model` is required (task vectors, or SLERP's t = 0 end).
    pub needs_base: bool,
    /// How many merged inputs (besides the base) one output tensor takes.
    pub inputs: Inputs,
    /// The statistics collected on data that the method reads (data-free methods: none).
    pub statistics: Statistics,
    /// Every parameter the method reads, per-model ones first. Others are config errors.
    pub params: &'static [ParamSpec],
    /// Builds one tensor's merge from its evaluated parameters.
    pub plan: fn(&TensorPlan<'_>) -> Result<Planned>,
    /// The plain float64 whole-tensor reference.
    pub oracle: fn(&OracleCase<'_>) -> Vec<f64>,
    /// The cases of `tests/fixtures/mergekit/cases` that pin this method to mergekit.
    pub goldens: Goldens,
}

/// Where a method comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// An arXiv identifier, e.g. `"2306.01708"`.
    Arxiv(&'static str),
    /// Anything else (a paper without an arXiv id, a tool); quoted in the module doc.
    Other(&'static str),
}

impl Reference {
    /// The text the module doc must contain: `arXiv <id>` or the quoted reference.
    pub fn cite(self) -> String {
        match self {
            Reference::Arxiv(id) => format!("arXiv {id}"),
            Reference::Other(text) => text.to_string(),
        }
    }
}

/// The mergekit golden fixtures of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goldens {
    /// Case names under `tests/fixtures/mergekit/cases` (`<case>.yml`, `expected/<case>`).
    Cases(&'static [&'static str]),
    /// mergekit's output cannot be reproduced, for this reason.
    Unreproducible(&'static str),
}

/// What a data-dependent method reads besides the weights: per model, a statistics folder
/// (`mmerge-torch statistics` writes one) whose `fisher/` or `gram/` checkpoint holds tensors
/// under the weights' own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistics {
    /// A data-free method.
    None,
    /// The diagonal Fisher of every parameter (same key, same shape).
    Fisher,
    /// For every linear layer's weight `[out, in]`, the mean Gram matrix `XᵀX / n` `[in, in]`
    /// of its inputs X (same key).
    Gram,
}

impl Statistics {
    /// The checkpoint inside a statistics folder that holds these statistics.
    pub fn folder(self) -> Option<&'static str> {
        match self {
            Statistics::None => None,
            Statistics::Fisher => Some("fisher"),
            Statistics::Gram => Some("gram"),
        }
    }
}

/// How many merged inputs one output tensor takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inputs {
    /// One or more.
    Many,
    /// Exactly one (besides the base when the method needs one).
    One,
    /// Exactly two besides the base (which may be absent when the method does not need it).
    Two,
}

/// Where a parameter is looked up (mergekit's scopes, `docs/mergekit-semantics.md` §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Per input model, for every input (the base too, when it is an input).
    Input,
    /// Per input model, for every input but the base.
    NonBase,
    /// One value for all models: slice or top-level `parameters` only.
    Shared,
}

/// A parameter's type and default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A number: a scalar, a gradient over depth or a filter list.
    Number {
        /// `Some`: used when unset. `None` and `required`: unset is an error. `None` and not
        /// required: unset means "absent" (the method decides).
        default: Option<f64>,
        required: bool,
        /// Inclusive bounds; a value outside is an error.
        range: Option<(f64, f64)>,
    },
    /// A boolean (never a gradient).
    Flag { default: bool },
}

/// One declared parameter of a method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub scope: Scope,
    pub kind: Kind,
}

impl ParamSpec {
    /// Whether a gradient (`[v0, v1, …]` over depth) may set it: numbers only.
    pub fn gradient(&self) -> bool {
        matches!(self.kind, Kind::Number { .. })
    }

    /// A required number with no default and no range.
    pub const fn required(name: &'static str, scope: Scope) -> Self {
        ParamSpec {
            name,
            scope,
            kind: Kind::Number {
                default: None,
                required: true,
                range: None,
            },
        }
    }

    /// A per-model weight with no default.
    pub const fn weight(scope: Scope) -> Self {
        Self::required("weight", scope)
    }

    /// An optional number with a default, in [0, `hi`].
    pub const fn number(name: &'static str, scope: Scope, default: f64, hi: f64) -> Self {
        ParamSpec {
            name,
            scope,
            kind: Kind::Number {
                default: Some(default),
                required: false,
                range: Some((0.0, hi)),
            },
        }
    }

    /// A shared flag with a default.
    pub const fn flag(name: &'static str, default: bool) -> Self {
        ParamSpec {
            name,
            scope: Scope::Shared,
            kind: Kind::Flag { default },
        }
    }
}

/// An evaluated parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Number(f64),
    Flag(bool),
}

/// Evaluated parameters of one tensor: the shared ones, and one map per model. For
/// [`TensorPlan`] the models are the tensor's members (sources); for [`OracleCase`] they are
/// the merged inputs, in input order. Unset optional parameters are absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    pub shared: BTreeMap<&'static str, Value>,
    pub models: Vec<BTreeMap<&'static str, Value>>,
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::Number(x)) => Some(*x),
        Some(Value::Flag(b)) => Some(if *b { 1.0 } else { 0.0 }),
        None => None,
    }
}

impl Values {
    /// A shared number (a flag reads as 1 or 0).
    pub fn number(&self, name: &str) -> Option<f64> {
        number(self.shared.get(name))
    }

    /// A shared flag (a number reads as `!= 0`).
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.shared.get(name).map(|v| match v {
            Value::Flag(b) => *b,
            Value::Number(x) => *x != 0.0,
        })
    }

    /// A per-model number of model `i`.
    pub fn model_number(&self, i: usize, name: &str) -> Option<f64> {
        number(self.models.get(i).and_then(|m| m.get(name)))
    }

    /// A per-model number of each of `models`, `default` where it is unset.
    pub fn model_numbers(
        &self,
        models: impl IntoIterator<Item = usize>,
        name: &str,
        default: f64,
    ) -> Vec<f64> {
        models
            .into_iter()
            .map(|i| self.model_number(i, name).unwrap_or(default))
            .collect()
    }
}

/// One output tensor as a method's `plan` sees it: every declared parameter is evaluated and
/// checked; the member count matches the method's [`Inputs`].
#[derive(Debug)]
pub struct TensorPlan<'a> {
    /// The output tensor's key.
    pub key: &'a str,
    /// The tensor's shape (every member's).
    pub shape: &'a [usize],
    /// The number of sources (members), base included.
    pub members: usize,
    /// Which member is the base, if any.
    pub base: Option<usize>,
    /// Whether the output dtype differs from the inputs'.
    pub cast: bool,
    /// The evaluated parameters; `models[i]` for member i.
    pub values: Values,
    /// For a method that reads statistics: per member, the shape of its statistics tensor
    /// for this key (`None`: that member's statistics do not hold the key, or it has none).
    pub statistics: Vec<Option<Vec<usize>>>,
}

impl TensorPlan<'_> {
    /// Members other than the base, in order.
    pub fn non_base(&self) -> Vec<usize> {
        (0..self.members)
            .filter(|m| Some(*m) != self.base)
            .collect()
    }

    /// A required per-model number (the planner has checked it is set).
    pub fn model_number(&self, member: usize, name: &str) -> f64 {
        self.values.model_number(member, name).unwrap_or(f64::NAN)
    }
}

/// What `plan` decides for one tensor: which members are the base and the merged inputs, and
/// the kernel (`None`: copy `inputs[0]`'s bytes unchanged). The kernel sees the inputs and
/// then, in order, the statistics tensors of the members listed in `statistics`.
#[derive(Debug)]
pub struct Planned {
    pub base: Option<usize>,
    pub inputs: Vec<usize>,
    pub kernel: Option<Arc<dyn DynKernel>>,
    /// Members whose statistics tensors follow the inputs (data-free methods: none).
    pub statistics: Vec<usize>,
}

/// One tensor handed to a method's oracle.
#[derive(Debug)]
pub struct OracleCase<'a> {
    /// The output tensor's name (DARE's random streams depend on it).
    pub tensor: &'a str,
    /// The tensor's shape (methods that work per row or column read it).
    pub shape: &'a [usize],
    /// The merge seed.
    pub seed: u64,
    pub base: Option<&'a [f32]>,
    /// The merged inputs (without the base), in order.
    pub inputs: &'a [Vec<f32>],
    /// Evaluated parameters; `models[i]` belongs to `inputs[i]`.
    pub values: &'a Values,
    /// For a method that reads statistics: the inputs' statistics tensors in input order, then
    /// the base's when the method reads it (empty where a tensor has none).
    pub statistics: &'a [Vec<f32>],
}

/// A chunk kernel: optional whole-tensor statistics, then an element-wise merge of aligned
/// chunks. The executor is generic over it, so `chunk` is called statically.
pub trait Kernel: Send + Sync + Debug + 'static {
    /// What the statistics passes find (per tensor, or per chunk).
    type Stats: Send + Sync;

    /// Whether `chunk` may be handed any run of consecutive elements of a chunk (it keeps no
    /// state across a chunk, e.g. a weighted sum): the executor then streams each chunk in
    /// blocks that stay in the core's cache. `Chunk::index` is still the chunk's.
    const ELEMENTWISE: bool = false;

    /// Runs the statistics passes the kernel needs (none: return `Ok(..)` at once).
    fn stats(&self, passes: &Passes<'_>) -> Result<Self::Stats>;

    /// Merges one chunk into `out` (the chunk's length).
    fn chunk(&self, stats: &Self::Stats, chunk: &Chunk<'_>, out: &mut [f32]);
}

/// A kernel behind a pointer: the executor's one dynamic call per tensor.
pub trait DynKernel: Send + Sync + Debug {
    /// Merges the whole tensor.
    fn execute(&self, t: &TensorExec<'_>) -> Result<()>;
}

impl<K: Kernel> DynKernel for K {
    fn execute(&self, t: &TensorExec<'_>) -> Result<()> {
        t.run(self)
    }
}

/// Deterministic per-element uniform numbers in [0, 1) for DARE: the SplitMix64 finaliser of
/// `stream ⊕ index·γ`, top 53 bits. A pure function, so chunks may run in any order on any
/// thread.
pub fn uniform(stream: u64, index: u64) -> f64 {
    unit_f64(splitmix64(stream ^ index.wrapping_mul(GOLDEN_GAMMA)))
}

/// The random stream of one input of one tensor: FNV-1a of the tensor name mixed with the seed
/// and the input's position.
pub fn stream_id(seed: u64, tensor: &str, input: usize) -> u64 {
    fnv1a(tensor.as_bytes()) ^ seed.rotate_left(17) ^ (input as u64).wrapping_mul(STREAM_MIX)
}

/// Odd constant spreading the input position in [`stream_id`].
pub const STREAM_MIX: u64 = 0xD6E8_FEB8_6659_FD93;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for n in MethodKind::NAMES {
            assert_eq!(MethodKind::from_name(n).map(MethodKind::name), Some(*n));
        }
        assert_eq!(MethodKind::from_name("tie"), None);
        let mut names = MethodKind::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MethodKind::ALL.len());
    }

    #[test]
    fn dare_numbers_are_unchanged() {
        // Pinned values of the former local SplitMix64/FNV-1a copies: masks must not move.
        // (Computed by an independent Python transcription of the old code.)
        assert_eq!(stream_id(7, "layers.0.w", 1), 0xc0c7_9893_0c79_3385);
        assert_eq!(
            uniform(0xc0c7_9893_0c79_3385, 5).to_bits(),
            0x3fc6_0cc1_81c0_addc
        );
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
