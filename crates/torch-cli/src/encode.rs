//! `mmerge encode`: embeddings of sentences or images from an imported Hugging Face model
//! (BERT, DINOv2, ViT), so a user can compare our forward pass with another library's.
//!
//! Text: `tokenizer.json` from the model folder, its built-in padding and truncation turned
//! off (`mmerge_data::tokenize`), batches padded to the longest sentence, truncated to the
//! model's `max_position_embeddings` (keeping the final `[SEP]`, as Hugging Face does). Images: decoded (PNG/JPEG), resized to the
//! model's input size (bilinear), scaled to [0, 1] and normalised with the ImageNet mean and
//! standard deviation. Output: a safetensors file with `last_hidden_state` [B, T, D] and
//! `mean_pooled` [B, D] (mean over real text tokens, or over image patches), plus `input_ids`
//! and `attention_mask` for text and `cls` for images.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mmerge_core::Dtype;
use mmerge_data::tokenize::{Padding, Tokenizer};
use mmerge_models::config::Expert;
use mmerge_models::hf::{self, HfConfig, HfKind};
use mmerge_models::{MultiwayTransformer, TextBatch};
use tch::{Device, Kind, Tensor, nn};

const BATCH: usize = 32;

/// Where to run: `auto` (CUDA when available), `cpu`, `cuda`.
pub fn device(name: &str) -> anyhow::Result<Device> {
    Ok(match name {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => bail!("--device cuda: CUDA is not available (see `mmerge doctor`)"),
        other => bail!("--device `{other}`: expected auto, cpu or cuda"),
    })
}

/// Token ids and mask [B, T] for `lines`, as the module docs say, and how many lines were
/// truncated.
pub fn tokenize(
    tokenizer_json: &Path,
    lines: &[String],
    max_len: usize,
) -> anyhow::Result<(Tensor, Tensor, usize)> {
    let tok = Tokenizer::load(tokenizer_json)?;
    let b = tok.encode_batch(lines, max_len, Padding::Longest)?;
    let shape = [b.batch as i64, b.len as i64];
    Ok((
        Tensor::from_slice(&b.ids).view(shape),
        Tensor::from_slice(&b.mask).view(shape),
        b.truncated,
    ))
}

/// Pixels [3, size, size], normalised, of one image file.
pub fn load_image(path: &Path, size: u32) -> anyhow::Result<Tensor> {
    let img = image::open(path)
        .with_context(|| format!("decoding {}", path.display()))?
        .to_rgb8();
    let img = mmerge_data::transform::resize(&img, size);
    Ok(hf::pixels_from_rgb(
        &img.into_raw(),
        i64::from(size),
        i64::from(size),
    ))
}

fn to_bytes(t: &Tensor) -> anyhow::Result<(Vec<usize>, Vec<u8>, Dtype)> {
    let t = t.to_device(Device::Cpu).contiguous();
    let shape = t.size().iter().map(|&d| d as usize).collect();
    if t.kind() == Kind::Int64 {
        let v = Vec::<i64>::try_from(&t.view([-1]))?;
        return Ok((
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::I64,
        ));
    }
    let v = Vec::<f32>::try_from(&t.to_kind(Kind::Float).view([-1]))?;
    Ok((
        shape,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F32,
    ))
}

/// The `encode` command.
pub fn run(
    model: &str,
    text: Option<&Path>,
    images: Option<&Path>,
    out: &Path,
    image_size: Option<i64>,
    dev: &str,
) -> anyhow::Result<()> {
    let dir = mmerge_core::hub::resolve(model, &mmerge_core::hub::cache_dir())?;
    let hfc = HfConfig::read(&dir)?;
    let cfg = hfc.plain_config(image_size)?;
    let device = device(dev)?;
    let vs = nn::VarStore::new(device);
    let m = MultiwayTransformer::new(&vs.root(), &cfg)?;
    hf::import(&vs, &cfg, &dir, hfc.kind, Expert::Shared)?;
    let _guard = tch::no_grad_guard();
    let mut outputs: Vec<(String, Tensor)> = vec![];
    match (hfc.kind, text, images) {
        (HfKind::Bert, Some(file), None) => {
            let body = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let lines: Vec<String> = body
                .lines()
                .map(str::to_string)
                .filter(|l| !l.trim().is_empty())
                .collect();
            if lines.is_empty() {
                bail!("{}: no sentences (one per line expected)", file.display());
            }
            let (ids, mask, truncated) = tokenize(
                &dir.join("tokenizer.json"),
                &lines,
                cfg.max_position_embeddings as usize,
            )?;
            if truncated > 0 {
                eprintln!(
                    "note: {truncated} sentence(s) truncated to {} tokens",
                    cfg.max_position_embeddings
                );
            }
            let mut hidden = vec![];
            for start in (0..lines.len()).step_by(BATCH) {
                let n = BATCH.min(lines.len() - start) as i64;
                let (i, k) = (
                    ids.narrow(0, start as i64, n).to_device(device),
                    mask.narrow(0, start as i64, n).to_device(device),
                );
                hidden.push(
                    m.encode_text(&TextBatch { ids: &i, mask: &k }, false)?
                        .to_device(Device::Cpu),
                );
            }
            let h = Tensor::cat(&hidden, 0);
            let w = mask.to_kind(Kind::Float).unsqueeze(-1);
            let pooled = (&h * &w).sum_dim_intlist(1, false, Kind::Float)
                / w.sum_dim_intlist(1, false, Kind::Float);
            outputs.extend([
                ("last_hidden_state".into(), h),
                ("mean_pooled".into(), pooled),
                ("input_ids".into(), ids),
                ("attention_mask".into(), mask),
            ]);
        }
        (HfKind::Dinov2 | HfKind::Vit, None, Some(folder)) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
                .with_context(|| format!("reading {}", folder.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| {
                        ["png", "jpg", "jpeg"]
                            .contains(&x.to_string_lossy().to_lowercase().as_str())
                    })
                })
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{}: no .png or .jpg images", folder.display());
            }
            let mut hidden = vec![];
            for chunk in files.chunks(BATCH) {
                let px: Vec<Tensor> = chunk
                    .iter()
                    .map(|f| load_image(f, cfg.image_size as u32))
                    .collect::<anyhow::Result<_>>()?;
                hidden.push(
                    m.encode_image(&Tensor::stack(&px, 0).to_device(device), false)?
                        .to_device(Device::Cpu),
                );
            }
            let h = Tensor::cat(&hidden, 0);
            let n = h.size()[1] - 1;
            let pooled = h.narrow(1, 1, n).mean_dim(1, false, Kind::Float);
            outputs.extend([
                ("cls".into(), h.select(1, 0)),
                ("mean_pooled".into(), pooled),
                ("last_hidden_state".into(), h),
            ]);
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            eprintln!(
                "encoded {} images in name order: {}",
                names.len(),
                names.join(", ")
            );
        }
        (HfKind::Bert, _, _) => {
            bail!("{model} is a text model: give --text FILE (and no --images)")
        }
        (_, _, _) => bail!("{model} is an image model: give --images DIR (and no --text)"),
    }
    let tensors = outputs
        .iter()
        .map(|(n, t)| to_bytes(t).map(|(s, b, d)| (n.clone(), d, s, b)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    mmerge_core::writer::write_file(out, &tensors)?;
    println!(
        "wrote {} ({})",
        out.display(),
        tensors
            .iter()
            .map(|(n, _, s, _)| format!("{n} {s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
