//! Imports a Hugging Face BERT/DINOv2/ViT folder into our model and exports it back under
//! Hugging Face names, so the result can be loaded with `transformers` and compared:
//!
//! `cargo run --release -p mmerge-models --example hf_roundtrip -- SRC_DIR OUT_DIR`
//!
//! `tests/fixtures/hf/check_roundtrip.py OUT_DIR` then loads OUT_DIR with `transformers` and
//! checks it reproduces the golden outputs.

use std::path::PathBuf;

use mmerge_models::MultiwayTransformer;
use mmerge_models::config::Expert;
use mmerge_models::hf::{self, HfConfig};
use tch::{Device, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, out] = args.as_slice() else {
        return Err("usage: hf_roundtrip SRC_DIR OUT_DIR".into());
    };
    let hfc = HfConfig::read(src)?;
    let cfg = hfc.plain_config(None)?;
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = MultiwayTransformer::new(&vs.root(), &cfg)?;
    hf::import(&vs, &cfg, src, hfc.kind, Expert::Shared)?;
    hf::export(&vs, &cfg, &hfc, out, true)?;
    println!("exported {} -> {}", src.display(), out.display());
    Ok(())
}
