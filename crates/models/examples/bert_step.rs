//! Training-step throughput of our BERT on all-MiniLM-L6-v2's shape, the Rust half of
//! `scripts/bench-step` (the PyTorch half is `scripts/bench/bert_step_torch.py`, whose
//! docstring defines the step this mirrors: 6 layers, hidden 384, 12 heads, FFN 1536, dropout
//! 0.1, an untied Linear(384 → 30522) MLM head on 10 masked positions of each 64-token row,
//! cross-entropy, AdamW(lr 1e-4, weight decay 0.01)). The optimiser is our fused AdamW
//! (`mmerge_models::optim`), the one mmerge trains with.
//!
//! `cargo run --release -p mmerge-models --example bert_step -- [THREADS] [--batches 8,32]
//! [--seq 64] [--warmup 3] [--steps 10]` prints one JSON line per batch size.

use std::time::Instant;

use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_models::optim::{AdamW, AdamWConfig};
use mmerge_models::{MultiwayTransformer, TextBatch};
use tch::nn;
use tch::{Device, Kind, Tensor};

const MASK_ID: i64 = 103;

fn config() -> MultiwayConfig {
    MultiwayConfig {
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        mlp_ratio: 4.0,
        intermediate_size: Some(1536),
        layer_norm_eps: 1e-12,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        image_size: 0,
        patch_size: 1,
        num_channels: 3,
        vocab_size: 30522,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        vl_layers: 0,
        sharing: Sharing::Shared,
        layer_scale_init: None,
        pre_norm: false,
    }
}

struct Batch {
    ids: Tensor,
    mask: Tensor,
    positions: Tensor,
    labels: Tensor,
}

fn batches(b: i64, seq: i64, n: usize, seed: i64) -> Vec<Batch> {
    tch::manual_seed(seed);
    let m = (0.15 * seq as f64).round() as i64;
    (0..n)
        .map(|_| {
            let mut ids = Tensor::randint_low(1000, 30522, [b, seq], (Kind::Int64, Device::Cpu));
            let positions = Tensor::stack(
                &(0..b)
                    .map(|_| Tensor::randperm(seq, (Kind::Int64, Device::Cpu)).narrow(0, 0, m))
                    .collect::<Vec<_>>(),
                0,
            );
            let labels = ids.gather(1, &positions, false);
            let _ = ids.scatter_(1, &positions, &positions.full_like(MASK_ID));
            Batch {
                mask: ids.ones_like(),
                ids,
                positions,
                labels,
            }
        })
        .collect()
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: i32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    let seq: i64 = arg(&args, "--seq", 64);
    let warmup: usize = arg(&args, "--warmup", 3);
    let steps: usize = arg(&args, "--steps", 10);
    let sizes: String = arg(&args, "--batches", "8,32".to_string());
    for b in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<i64>().ok())
    {
        tch::manual_seed(0);
        let cfg = config();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = MultiwayTransformer::new(&vs.root(), &cfg)?;
        let head = nn::linear(
            vs.root() / "heads" / "mlm",
            cfg.hidden_size,
            cfg.vocab_size,
            Default::default(),
        );
        let mut opt = AdamW::new(vs.trainable_variables(), AdamWConfig::with_lr(1e-4))?;
        let data = batches(b, seq, warmup + steps, 1 + b);
        let step = |opt: &mut AdamW, x: &Batch| -> Result<f64, Box<dyn std::error::Error>> {
            let h = model.encode_text(
                &TextBatch {
                    ids: &x.ids,
                    mask: &x.mask,
                },
                true,
            )?;
            let d = cfg.hidden_size;
            let idx = x
                .positions
                .unsqueeze(-1)
                .expand([b, x.positions.size()[1], d], false);
            let picked = h.gather(1, &idx, false).view([-1, d]);
            let loss = picked
                .apply(&head)
                .cross_entropy_for_logits(&x.labels.view([-1]));
            opt.backward_step(&loss)?;
            Ok(loss.double_value(&[]))
        };
        for x in &data[..warmup] {
            step(&mut opt, x)?;
        }
        let start = Instant::now();
        let mut last = 0.0;
        for x in &data[warmup..] {
            last = step(&mut opt, x)?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{{\"impl\":\"tch\",\"batch\":{b},\"seq\":{seq},\"threads\":{threads},\"samples_per_s\":{:.2},\"step_ms\":{:.1},\"loss_last\":{last:.4},\"libtorch\":\"2.13.0\"}}",
            b as f64 * steps as f64 / secs,
            secs / steps as f64 * 1000.0
        );
    }
    Ok(())
}
