//! The network a run trains: the multiway encoder at the root of one variable store, and the
//! heads that the run's tasks and objectives create under `heads.<name>.*`.
//!
//! Initialisation ([`Init`]): from scratch (libtorch's default initialisers after
//! `manual_seed(seed)`, so the same seed gives the same weights), from a checkpoint of the
//! same config (encoder keys strictly; heads by name where the checkpoint has them with the
//! same shape, the rest keep their fresh values and are listed), from a `shared` checkpoint
//! *expanded* into every expert (the modality-specific model starts as W0 copied into each
//! expert, so the experts are exactly equal at step 0), or from Hugging Face BERT / ViT /
//! DINOv2 weights imported into one expert path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmerge_core::Checkpoint;
use mmerge_core::keys;
use mmerge_models::MultiwayTransformer;
use mmerge_models::config::{Expert, MultiwayConfig};
use mmerge_models::error::KeyReport;
use mmerge_models::heads::{ItcHead, MlmHead};
use mmerge_models::hf::{HfConfig, import};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use crate::error::{Result, TrainError};

/// The prefix of every head variable.
pub const HEADS: &str = "heads";

/// How the encoder's weights start. In YAML: `scratch`, `{checkpoint: DIR}`,
/// `{expand: DIR}` or `{hf: {dir: DIR, expert: NAME}}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Fresh weights from the run's seed.
    Scratch,
    /// A checkpoint of the same config (a folder or `.safetensors` file).
    Checkpoint(PathBuf),
    /// A `shared` checkpoint copied into every expert of this config.
    Expand(PathBuf),
    /// Hugging Face weights (BERT, ViT, DINOv2) imported into one expert path
    /// (`expert: shared` for a plain model).
    Hf { dir: PathBuf, expert: String },
}

const INIT_FORMS: &[&str] = &["scratch", "checkpoint", "expand", "hf"];

/// `hf:`'s fields.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HfInit {
    dir: PathBuf,
    expert: String,
}

impl Serialize for Init {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, path) = match self {
            Init::Scratch => return s.serialize_str("scratch"),
            Init::Checkpoint(p) => ("checkpoint", p),
            Init::Expand(p) => ("expand", p),
            Init::Hf { dir, expert } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "hf",
                    &HfInit {
                        dir: dir.clone(),
                        expert: expert.clone(),
                    },
                )?;
                return m.end();
            }
        };
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(key, path)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for Init {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Init;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "`scratch`, {checkpoint: DIR}, {expand: DIR} or {hf: {dir: DIR, expert: NAME}}",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Init, E> {
                match v {
                    "scratch" => Ok(Init::Scratch),
                    _ => Err(E::unknown_variant(v, INIT_FORMS)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Init, A::Error> {
                use serde::de::Error;
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| A::Error::custom("an empty init; expected one of its forms"))?;
                let init = match key.as_str() {
                    "scratch" => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        Init::Scratch
                    }
                    "checkpoint" => Init::Checkpoint(map.next_value()?),
                    "expand" => Init::Expand(map.next_value()?),
                    "hf" => {
                        let h: HfInit = map.next_value()?;
                        Init::Hf {
                            dir: h.dir,
                            expert: h.expert,
                        }
                    }
                    other => return Err(A::Error::unknown_variant(other, INIT_FORMS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "init takes one form, found `{key}` and `{extra}`"
                    )));
                }
                Ok(init)
            }
        }
        d.deserialize_any(V)
    }
}

/// The encoder and its variable store.
#[derive(Debug)]
pub struct Net {
    pub vs: nn::VarStore,
    pub encoder: MultiwayTransformer,
    /// The image-text contrastive head (`heads.itc`), shared by the ITC and ITM objectives,
    /// retrieval and the zero-shot signals; created by the first that needs it.
    itc: Option<ItcHead>,
    /// The masked-language-modelling head (`heads.mlm`), shared by the MLM objectives on the
    /// fused and on the text-only pass; created by the first that needs it.
    mlm: Option<MlmHead>,
}

impl Net {
    /// A fresh encoder (seeded); heads are added by the caller under [`Net::heads`].
    pub fn new(config: &MultiwayConfig, seed: u64, device: Device) -> Result<Self> {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let encoder = MultiwayTransformer::new(&vs.root(), config)?;
        Ok(Net {
            vs,
            encoder,
            itc: None,
            mlm: None,
        })
    }

    /// The ITC head, created (projection width = hidden size) on first use.
    pub fn ensure_itc(&mut self) -> &ItcHead {
        let (vs, cfg) = (&self.vs, self.encoder.config());
        self.itc
            .get_or_insert_with(|| ItcHead::new(&(vs.root() / HEADS / "itc"), cfg, cfg.hidden_size))
    }

    /// The ITC head, if a task or objective created it.
    pub fn itc(&self) -> Result<&ItcHead> {
        self.itc.as_ref().ok_or_else(|| {
            TrainError::Invalid("no image-text contrastive head (heads.itc) in this run".into())
        })
    }

    /// The MLM head, created on first use.
    pub fn ensure_mlm(&mut self) -> &MlmHead {
        let (vs, cfg) = (&self.vs, self.encoder.config());
        self.mlm
            .get_or_insert_with(|| MlmHead::new(&(vs.root() / HEADS / "mlm"), cfg))
    }

    /// The MLM head, if an objective created it.
    pub fn mlm(&self) -> Result<&MlmHead> {
        self.mlm.as_ref().ok_or_else(|| {
            TrainError::Invalid("no masked-language-modelling head (heads.mlm) in this run".into())
        })
    }

    pub fn config(&self) -> &MultiwayConfig {
        self.encoder.config()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The path heads are created under.
    pub fn heads(&self) -> nn::Path<'_> {
        self.vs.root() / HEADS
    }

    /// Applies `init` to the encoder (and to heads the checkpoint has). Returns the names of
    /// the heads' variables that kept their fresh values.
    pub fn init(&mut self, init: &Init) -> Result<Vec<String>> {
        match init {
            Init::Scratch => Ok(self.head_names()),
            Init::Checkpoint(path) => self.load_from(path, |name| Some(name.to_string())),
            Init::Expand(path) => self.load_from(path, |name| match keys::multiway(name) {
                Some(k) if k.expert != Expert::Shared.name() => Some(name.replacen(
                    &format!(".{}.{}.", k.module, k.expert),
                    &format!(".{}.{}.", k.module, Expert::Shared.name()),
                    1,
                )),
                _ => Some(name.to_string()),
            }),
            Init::Hf { dir, expert } => {
                let e = Expert::from_name(expert).ok_or_else(|| TrainError::Unknown {
                    what: "expert",
                    name: expert.clone(),
                    valid: "vision, text, vl, shared".into(),
                })?;
                let hf = HfConfig::read(dir)?;
                import(&self.vs, self.config(), dir, hf.kind, e)?;
                Ok(self.head_names())
            }
        }
    }

    fn head_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .vs
            .variables()
            .into_keys()
            .filter(|n| n.starts_with(HEADS))
            .collect();
        v.sort();
        v
    }

    /// Loads every encoder variable from the key `source(name)` of the checkpoint (strict:
    /// all present, same shapes, reported together) and every head variable the checkpoint
    /// has under its own name with the same shape.
    fn load_from(
        &mut self,
        path: &Path,
        source: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>> {
        let ck = Checkpoint::open(path)?;
        let vars: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        let mut report = KeyReport::default();
        let mut plan = vec![];
        let mut fresh = vec![];
        for (name, var) in &vars {
            let head = name.starts_with(HEADS);
            let Some(src) = source(name) else { continue };
            match ck.meta(&src) {
                None if head => fresh.push(name.clone()),
                None => report.missing(&src),
                Some(m) => {
                    let shape: Vec<i64> = m.shape.iter().map(|&d| d as i64).collect();
                    if head && shape != var.size() {
                        fresh.push(name.clone());
                    } else if report.shape_fits(&src, &var.size(), &shape) {
                        plan.push((var.shallow_clone(), src));
                    }
                }
            }
        }
        report.finish(ck.path())?;
        let _guard = tch::no_grad_guard();
        for (mut var, src) in plan {
            let values = ck.read_f32(&src)?;
            let t = Tensor::from_slice(&values)
                .view(var.size().as_slice())
                .to_device(var.device());
            var.f_copy_(&t)?;
        }
        Ok(fresh)
    }

    /// Saves every variable (encoder and heads) with the encoder's config as `config.json`.
    pub fn save(&self, out: &Path, force: bool) -> Result<()> {
        mmerge_models::io::save(&self.vs, out, Some(&self.config().to_json()), force)?;
        Ok(())
    }

    /// The named trainable variables, sorted by name.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
