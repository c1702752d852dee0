//! What a run writes to its sink besides the loss lines: the resolved recipe as text, weight
//! histograms per layer, a few input images with their texts, and the hparams summary that
//! lets TensorBoard's HParams tab compare runs by their final scores.

use std::collections::BTreeMap;

use mmerge_core::keys::layer_ref;
use mmerge_sink::{HValue, Sink};
use tch::{Device, Kind};

use crate::error::Result;
use crate::input::ModelBatch;
use crate::net::{HEADS, Net};
use crate::recipe::Recipe;
use crate::tasks::Scores;

/// Images logged from the first batch.
pub const LOGGED_INPUTS: usize = 4;

/// The resolved recipe as TensorBoard text (`recipe`).
pub fn recipe(sink: &Sink, recipe: &Recipe, step: u64) -> Result<()> {
    Ok(sink.text("recipe", step, &format!("```yaml\n{}```", recipe.to_yaml()))?)
}

/// One histogram per encoder layer (`weights/layer_<i>`), one of everything before the
/// layers (`weights/embeddings`), one of the heads (`weights/heads`) and one of the rest
/// (`weights/other`: the final norm).
pub fn weights(sink: &Sink, net: &Net, step: u64) -> Result<()> {
    let mut groups: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (name, t) in net.named_parameters() {
        let group = if name.starts_with(HEADS) {
            "heads".to_string()
        } else if name.starts_with("embeddings.") {
            "embeddings".to_string()
        } else {
            match layer_ref(&name) {
                Some(l) => format!("layer_{:02}", l.index),
                None => "other".to_string(),
            }
        };
        let v: Vec<f32> = Vec::try_from(
            t.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .flatten(0, -1),
        )?;
        groups.entry(group).or_default().extend(v);
    }
    for (g, v) in groups {
        sink.histogram(&format!("weights/{g}"), step, &v)?;
    }
    Ok(())
}

/// The first [`LOGGED_INPUTS`] images of a batch (`inputs/<i>`, pixels un-normalised from
/// `Normalize::HALF`) and a markdown table of their texts (`inputs`).
pub fn inputs(sink: &Sink, batch: &ModelBatch, step: u64) -> Result<()> {
    let n = batch.len().min(LOGGED_INPUTS);
    for (slot, images) in batch.images.iter().enumerate() {
        for i in 0..n {
            let im = images.get(i as i64).to_device(Device::Cpu);
            let s = im.size();
            let (h, w) = (s[1] as u32, s[2] as u32);
            let chw: Vec<f32> = Vec::try_from(im.to_kind(Kind::Float).flatten(0, -1))?;
            let plane = (h * w) as usize;
            let mut rgb = vec![0u8; plane * 3];
            for p in 0..plane {
                for c in 0..3 {
                    let v = (chw[c * plane + p] * 0.5 + 0.5) * 255.0;
                    rgb[p * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
            let tag = if batch.images.len() > 1 {
                format!("inputs/{i}_{slot}")
            } else {
                format!("inputs/{i}")
            };
            sink.image(&tag, step, w, h, &rgb)?;
        }
    }
    if !batch.texts.is_empty() {
        let mut md = String::from("| # | text |\n|---|---|\n");
        for (i, t) in batch.texts.iter().take(n).enumerate() {
            md.push_str(&format!("| {i} | {} |\n", t.replace('|', "\\|")));
        }
        sink.text("inputs", step, &md)?;
    }
    Ok(())
}

/// The hparams summary: the recipe's main settings and the final scores' tags.
pub fn hparams(sink: &Sink, recipe: &Recipe, scores: &BTreeMap<String, Scores>) -> Result<()> {
    let mut config = BTreeMap::new();
    let text = |s: &str| HValue::Text(s.to_string());
    config.insert("seed".into(), HValue::Number(recipe.seed as f64));
    config.insert("steps".into(), HValue::Number(recipe.steps as f64));
    config.insert(
        "batch_size".into(),
        HValue::Number(recipe.batch_size as f64),
    );
    config.insert("lr".into(), HValue::Number(recipe.optim.lr));
    config.insert("sharing".into(), text(&recipe.model.sharing));
    if let Some(p) = &recipe.model.preset {
        config.insert("preset".into(), text(p));
    }
    let init = serde_yaml_ng::to_string(&recipe.model.init).unwrap_or_default();
    config.insert("init".into(), text(init.trim()));
    match (&recipe.pretrain, &recipe.finetune) {
        (Some(p), _) => {
            let o: Vec<String> = p
                .objectives
                .iter()
                .map(|(k, w)| format!("{k}:{w}"))
                .collect();
            config.insert("objectives".into(), text(&o.join(",")));
        }
        (None, Some(f)) => {
            config.insert("task".into(), text(&f.task));
        }
        (None, None) => {}
    }
    let tags: Vec<String> = scores
        .iter()
        .flat_map(|(split, s)| s.keys().map(move |k| format!("{split}/{k}")))
        .collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    Ok(sink.hparams(&config, &tags)?)
}
