//! `mmerge demo`: the quickstart until the experiment runner exists. Generates a small
//! LLaMA-shaped base model and three "fine-tuned" experts (base plus seeded, partly
//! conflicting updates), TIES-merges them, and prints the merge summary and the weight
//! distances of each expert and of the merge to the base.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mmerge_core::Dtype;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const HIDDEN: usize = 64;
const FFN: usize = 172;
const LAYERS: usize = 4;
const VOCAB: usize = 512;

fn shapes() -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            v.push((format!("{p}.self_attn.{m}.weight"), vec![HIDDEN, HIDDEN]));
        }
        v.push((format!("{p}.mlp.gate_proj.weight"), vec![FFN, HIDDEN]));
        v.push((format!("{p}.mlp.up_proj.weight"), vec![FFN, HIDDEN]));
        v.push((format!("{p}.mlp.down_proj.weight"), vec![HIDDEN, FFN]));
        v.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
    }
    v.push(("model.norm.weight".to_string(), vec![HIDDEN]));
    v.push(("lm_head.weight".to_string(), vec![VOCAB, HIDDEN]));
    v
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A LLaMA-shaped bf16 model folder (one safetensors file and its `config.json`).
fn write_model(dir: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> anyhow::Result<()> {
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": VOCAB,
        "torch_dtype": "bfloat16", "tie_word_embeddings": false
    });
    let config = serde_json::to_string_pretty(&config)?;
    mmerge_core::writer::write_model(
        dir,
        Dtype::BF16,
        tensors,
        usize::MAX,
        &[("config.json", config.as_bytes())],
    )?;
    Ok(())
}

/// Generates the models under `dir` (or a temporary folder), merges, prints.
pub fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = std::env::temp_dir().join(format!("mmerge-demo-{}", std::process::id()));
            tmp
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let base: Vec<(String, Vec<usize>, Vec<f32>)> = shapes()
        .into_iter()
        .map(|(n, s)| {
            let numel = s.iter().product();
            let v = if n.contains("norm") {
                vec![1.0; numel]
            } else {
                (0..numel).map(|_| 0.02 * normal(&mut rng)).collect()
            };
            (n, s, v)
        })
        .collect();
    write_model(&dir.join("base"), &base)?;
    // Each expert shares a common update direction (what all tasks learn) plus its own.
    let shared: Vec<Vec<f32>> = base
        .iter()
        .map(|(_, _, v)| v.iter().map(|_| normal(&mut rng)).collect())
        .collect();
    for (e, name) in ["expert_a", "expert_b", "expert_c"].iter().enumerate() {
        let tensors: Vec<_> = base
            .iter()
            .zip(&shared)
            .map(|((n, s, v), sh)| {
                let upd: Vec<f32> = v
                    .iter()
                    .zip(sh)
                    .map(|(x, c)| x + 0.004 * (0.6 * c + normal(&mut rng) * (1.0 + e as f32 * 0.2)))
                    .collect();
                (n.clone(), s.clone(), upd)
            })
            .collect();
        write_model(&dir.join(name), &tensors)?;
    }
    let d = dir.display();
    let config = format!(
        "# TIES merge of three experts onto their shared base (written by `mmerge demo`)\n\
         merge_method: ties\nbase_model: {d}/base\nmodels:\n\
         \x20 - model: {d}/expert_a\n    parameters: {{weight: 1.0, density: 0.5}}\n\
         \x20 - model: {d}/expert_b\n    parameters: {{weight: 1.0, density: 0.5}}\n\
         \x20 - model: {d}/expert_c\n    parameters: {{weight: [0.5, 1.0], density: 0.5}}\n\
         parameters:\n  normalize: true\ndtype: bfloat16\n"
    );
    let cfg_path = dir.join("ties.yml");
    std::fs::write(&cfg_path, &config)
        .with_context(|| format!("writing {}", cfg_path.display()))?;
    println!("config {}:\n{config}", cfg_path.display());
    let mut opts = mmerge_merge::MergeOptions::new(dir.join("merged"));
    opts.force = true;
    let bar = crate::progress(0, "merging");
    let s = mmerge_merge::merge_file(&cfg_path, &opts, &bar)?;
    println!(
        "merged {} tensors ({:.2} MB) with {} in {:.3} s -> {}\n",
        s.tensors,
        s.bytes_written as f64 / 1e6,
        s.method,
        s.seconds,
        s.out.display()
    );
    println!("task-vector distances to the base (aggregate over all tensors):");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "pair", "L2", "cosine", "sign", "SSD", "TSSD@20%"
    );
    let pairs = [
        ("expert_a", "expert_b"),
        ("expert_a", "expert_c"),
        ("expert_b", "expert_c"),
        ("expert_a", "merged"),
        ("expert_c", "merged"),
    ];
    for (x, y) in pairs {
        let r = crate::distance(&dir.join(x), &dir.join(y), Some(&dir.join("base")), 20.0)?;
        let m = r.to_json();
        let agg = &m["aggregate"];
        let f = |k: &str| agg[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<22} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
            format!("{x} vs {y}"),
            f("l2"),
            f("cosine"),
            f("sign"),
            f("soft_sign"),
            f("truncated_soft_sign")
        );
    }
    println!("\nfiles are in {d}; try `mmerge distance {d}/expert_a {d}/merged --base {d}/base`");
    Ok(())
}
