//! The runner's store overhead on a fully cached plan: builds a 200-stage run store (each
//! stage a 4 MiB "checkpoint" and a small metrics file, its key chained on the previous
//! stages' keys as in a real DAG), then times 200 key computations plus 200 lookups, as the
//! runner does when everything is cached. Prints one JSON object. Target: under 1 s in all.
//!
//! `cargo run --release -p mmerge-experiments --example bench_store [-- <stages>]`

use std::time::Instant;

use mmerge_experiments::store::{Lookup, RunStore, StageKey, StageMeta, Verify};
use serde_json::{Value, json};

const KINDS: [&str; 9] = [
    "suite", "seed", "experts", "baseline", "merge", "distance", "finetune", "eval", "report",
];

fn config(i: usize) -> Value {
    json!({
        "name": format!("stage-{i}"),
        "seed": i as u64 * 7 + 1,
        "lr": 1e-4 * (1.0 + i as f64 / 10.0),
        "steps": 1000 + i,
        "model": {"layers": 12, "hidden": 768, "heads": 12, "dtype": "bf16"},
        "data": {"tasks": ["vqa", "retrieval", "nlvr2", "classification"], "batch": 64},
        "method": {"kind": "ties", "density": 0.2, "lambda": 1.0, "rescale": true},
    })
}

/// The plan: stage i of kind KINDS[i % 9], inputs the (up to) three previous stages.
fn plan(n: usize) -> Vec<(&'static str, Value, Vec<StageKey>, StageKey)> {
    let mut out: Vec<(&'static str, Value, Vec<StageKey>, StageKey)> = Vec::with_capacity(n);
    for i in 0..n {
        let kind = KINDS[i % KINDS.len()];
        let inputs: Vec<StageKey> = out[i.saturating_sub(3)..].iter().map(|s| s.3).collect();
        let c = config(i);
        let k = StageKey::compute(kind, &c, &inputs);
        out.push((kind, c, inputs, k));
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let root = tempfile::tempdir()?;
    let store = RunStore::open(root.path().join("runs"))?;
    let ckpt = vec![0x5au8; 4 << 20];
    for (kind, c, inputs, key) in plan(n) {
        let w = store.begin(kind, &key)?;
        std::fs::write(w.path().join("model.safetensors"), &ckpt)?;
        std::fs::write(w.path().join("metrics.json"), b"{\"acc\": 0.5}\n")?;
        w.finish(StageMeta {
            config: c,
            inputs,
            git_commit: Some("0000000".into()),
            command: vec!["mmerge".into(), "run".into()],
        })?;
    }

    let t0 = Instant::now();
    let planned = plan(n);
    let t_keys = t0.elapsed();
    let t1 = Instant::now();
    let mut done = 0;
    for (kind, _, _, key) in &planned {
        match store.lookup(kind, key)? {
            Lookup::Done(_) => done += 1,
            other => eprintln!("{kind}/{key}: {other:?}"),
        }
    }
    let t_lookups = t1.elapsed();
    assert_eq!(done, n, "every stage should be cached");
    let t2 = Instant::now();
    for (kind, _, _, key) in &planned {
        store.lookup_with(kind, key, Verify::Full)?;
    }
    let t_full = t2.elapsed();

    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let report = json!({
        "stages": n,
        "keys_ms": ms(t_keys),
        "lookups_quick_ms": ms(t_lookups),
        "total_ms": ms(t_keys + t_lookups),
        "target_ms": 1000.0,
        "lookups_full_verify_ms": ms(t_full),
        "bytes_per_stage": ckpt.len() + 13,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
